"""Head: the in-memory, WAL-backed part of the store that receives every write.

The head owns the series registry (``series.py``), the postings index
(``postings.py``), per-series state in columnar arrays (last timestamp and value bits,
first timestamp) and the samples themselves: in-order samples in XOR chunks
(``head_chunks.py``), the rare samples accepted inside the out-of-order window raw
(``samples.py``). It implements ``Appendable`` (see ``head_append.py``),
``IndexReader`` and ``Selectable``. Deleted intervals (``delete``) are kept as
tombstones, logged to the WAL, and left out of every read; the samples themselves go
when their range is written to a block.

Concurrency: one lock serialises appends (registry changes, sample checks, WAL writes
in a consistent order); the expensive parts run in numba kernels that release the GIL,
and the WAL fsync happens after the lock is released so that concurrent appends share
it (group commit). Readers work on snapshots without taking the lock for long.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from . import _append_kernels as ak
from . import record
from ._read_kernels import series_of_runs
from .batch import WriteBatch
from .errors import StorageError, UnavailableError
from .head_append import append, append_then
from .head_chunks import ChunkBatch, HeadChunks
from .head_wal import replay
from .interface import AppendResult, Shard
from .labels import LabelLimits
from .matchers import Matcher
from .postings import Postings, SelectionCache, select
from .samples import SampleLog, SampleSet
from .series import RegistryView, SeriesRegistry, SymbolLabels
from .series_set import (
    FEW_SERIES,
    LabelTable,
    SeriesSet,
    from_table,
    label_table,
    symbol_label_table,
)
from .tombstones import Tombstones, trim_chunks
from .wal import WAL
from .xor import ENCODING_XOR

__all__ = ["Head", "HeadOptions", "lock_directory", "without_deleted"]

log = logging.getLogger(__name__)

_NO_TIME = np.iinfo(np.int64).min
_MAX_TIME = np.iinfo(np.int64).max
_NO_REFS = np.empty(0, np.int64)


@dataclass(frozen=True)
class HeadOptions:
    """Settings of the head and its WAL."""

    labels: LabelLimits = field(default_factory=LabelLimits)
    max_series: int = 2**31 - 2
    out_of_order_window_ms: int = 0
    wal_fsync: Literal["always", "interval"] = "always"
    wal_fsync_interval: float = 1.0
    wal_segment_size: int = 128 << 20
    # Chunks never cross a multiple of this; blocks cover one such range.
    block_range_ms: int = 2 * 3600 * 1000


class _SeriesState:
    """Per-series columns, indexed by ref, grown together."""

    _FILLS = (("last_t", _NO_TIME), ("last_v", 0), ("first_t", _MAX_TIME), ("unlogged", False))

    def __init__(self) -> None:
        self.last_t = np.full(1024, _NO_TIME, dtype=np.int64)
        self.last_v = np.zeros(1024, dtype=np.uint64)
        self.first_t = np.full(1024, _MAX_TIME, dtype=np.int64)
        # Series left out of the last WAL checkpoint: their series record must be
        # written again before their next samples.
        self.unlogged = np.zeros(1024, dtype=bool)
        self.any_unlogged = False

    def reserve(self, n: int) -> None:
        if n <= len(self.last_t):
            return
        cap = max(n, 2 * len(self.last_t))
        for name, fill in self._FILLS:
            old = getattr(self, name)
            new = np.full(cap, fill, dtype=old.dtype)
            new[:len(old)] = old
            setattr(self, name, new)

    def memory_bytes(self) -> int:
        return sum(getattr(self, name).nbytes for name, _ in self._FILLS)


def lock_directory(directory: Path) -> int:
    """Hold an exclusive lock on the data directory (creating it) and return the lock's
    file descriptor: two processes sharing one WAL would corrupt it."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageError(f"data directory {directory} is in use by another "
                           "process (lock file held)") from None
    return fd


def _merged(refs: np.ndarray, batch: ChunkBatch, late: SampleSet | None, stones: Tombstones,
            mint: int, maxt: int) -> SampleSet:
    """The samples in ``[mint, maxt]`` of ``batch`` (chunks of ``refs``) and ``late``
    (out-of-order samples), without those ``stones`` delete, sorted by (ref, time)."""
    ts, vs, starts = batch.samples_in(mint, maxt)
    owner = np.repeat(refs[batch.pos], np.diff(starts))
    if len(stones):
        alive = ~stones.deleted(owner, ts)
        owner, ts, vs = owner[alive], ts[alive], vs[alive]
        if late is not None:
            alive = ~stones.deleted(late.refs, late.timestamps)
            late = SampleSet(late.refs[alive], late.timestamps[alive], late.values[alive])
    if late is not None and len(late.refs):
        # Chunk samples first: on equal timestamps the in-order sample was stored first.
        owner = np.concatenate([owner, late.refs])
        ts = np.concatenate([ts, late.timestamps])
        vs = np.concatenate([vs, late.values])
        order = np.lexsort((ts, owner))
        owner, ts, vs = owner[order], ts[order], vs[order]
        first = np.ones(len(ts), bool)
        first[1:] = (owner[1:] != owner[:-1]) | (ts[1:] != ts[:-1])
        owner, ts, vs = owner[first], ts[first], vs[first]
    return SampleSet(owner, ts, vs)


class Head:
    """The in-memory head over a WAL directory. Build with ``Head.open``."""

    def __init__(self, directory: Path, options: HeadOptions) -> None:
        self.directory = directory
        self.options = options
        self.registry = SeriesRegistry(max_series=options.max_series)
        self.postings = Postings()
        self.state = _SeriesState()
        self.chunks = HeadChunks(options.block_range_ms, self.directory / "chunks_head")
        self.out_of_order = SampleLog()
        self._tables: SelectionCache[LabelTable] = SelectionCache()
        self.tombstones = Tombstones.empty()  # replaced, never changed, under the lock
        self.n_samples = 0  # samples held (in chunks and out of order)
        self.min_time = _MAX_TIME  # oldest sample held
        self.lock = threading.Lock()
        self.min_valid_time = _NO_TIME + 1  # INT64_MIN itself marks "no sample yet"
        self.max_time = _NO_TIME
        self.wal: WAL | None = None
        self.replay_report: list[str] = []
        self.renumbered = False  # replay gave some series other refs than the WAL's
        self._lock_fd: int | None = None
        self.failed: str | None = None  # set when the WAL failed: writes refused until restart

    @classmethod
    def open(cls, directory: str | os.PathLike[str], options: HeadOptions | None = None, *,
             min_valid_time: int | None = None, lock_fd: int | None = None) -> Head:
        """Open the head stored under ``directory``: replay its WAL, then accept writes.

        Samples older than ``min_valid_time`` (the end of the newest block) are already
        in blocks: replay skips them and appends reject them. ``lock_fd`` is the
        directory lock when the caller took it (see ``lock_directory``); the head
        releases it on close.
        """
        head = cls(Path(directory), options or HeadOptions())
        head._lock_fd = lock_directory(head.directory) if lock_fd is None else lock_fd
        try:
            if min_valid_time is not None:
                head.min_valid_time = max(head.min_valid_time, min_valid_time)
            wal_dir = head.directory / "wal"
            replay(head, wal_dir)
            head.wal = WAL(wal_dir, segment_size=head.options.wal_segment_size,
                           fsync=head.options.wal_fsync,
                           fsync_interval=head.options.wal_fsync_interval)
        except BaseException:
            head.close()
            raise
        return head

    def close(self) -> None:
        """Sync and close the WAL and release the directory. Appends after this fail."""
        with self.lock:
            try:
                if self.wal is not None:
                    self.wal.close()
            finally:
                self.wal = None
                self.chunks.close()
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    # -- writing ------------------------------------------------------------------------

    def append(self, batch: WriteBatch) -> AppendResult:
        """Store the valid samples of ``batch`` durably; see ``interface.Appendable``."""
        return append(self, batch)

    def append_then(self, batch: WriteBatch,
                    done: Callable[[AppendResult | None, BaseException | None], None]) -> None:
        """``append`` without waiting for the fsync; see ``interface.Appendable``."""
        append_then(self, batch, done)

    def delete(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> int:
        """Delete the samples in ``[mint, maxt]`` of the series matching ``matchers``;
        return how many series got a tombstone. Each interval is clamped to the series'
        samples (later samples are not deleted), logged to the WAL and synced before
        this returns, as Prometheus does."""
        if mint > maxt:
            return 0
        refs = self.select_series(matchers, mint, maxt)
        with self.lock:
            if self.wal is None or self.failed is not None:
                raise UnavailableError(self.failed or "storage is closed")
            lo = np.maximum(mint, self.state.first_t[refs])
            hi = np.minimum(maxt, self.state.last_t[refs])
            keep = lo <= hi
            refs, lo, hi = refs[keep], lo[keep], hi[keep]
            if len(refs) == 0:
                return 0
            try:
                position = self.wal.log([(record.TOMBSTONES,
                                          record.encode_tombstones(refs, lo, hi))])
            except OSError as exc:
                self.failed = f"write-ahead log write failed: {exc}"
                raise StorageError(self.failed) from exc
            self.tombstones = self.tombstones.add(Tombstones.of(refs, lo, hi))
        try:
            self.wal.sync(position)
        except StorageError as exc:
            self.failed = f"write-ahead log sync failed: {exc}"
            raise
        return len(refs)

    # -- reading (IndexReader) ------------------------------------------------------------

    def _view(self) -> RegistryView:
        with self.lock:  # the registry's snapshot contract
            return self.registry.snapshot()

    def select_series(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> np.ndarray:
        with self.lock:
            view = self.registry.snapshot()
            first_t, last_t = self.state.first_t, self.state.last_t
            stones = self.tombstones
        refs = select(self.postings.reader(view), matchers)
        if len(refs) and (mint > _NO_TIME or maxt < _MAX_TIME):
            refs = refs[(first_t[refs] <= maxt) & (last_t[refs] >= mint)]
        if not len(stones):
            return refs
        touched = stones.overlap(refs, mint, maxt)
        if touched.any():
            # A series whose every sample in range is deleted is not in range.
            left = self.read_samples(refs[touched > 0], mint, maxt)
            keep = touched == 0
            keep[np.searchsorted(refs, np.unique(left.refs))] = True
            refs = refs[keep]
        return refs

    def series_hashes(self, refs: np.ndarray) -> np.ndarray:
        """Label-set hashes of ``refs``, as ``labels.canonicalise`` computes them."""
        with self.lock:
            return self.registry.ser_hash[np.asarray(refs, np.int64)]

    def registry_keys(self, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical label keys of ``refs`` (blob and offsets)."""
        with self.lock:
            return self.registry.keys(np.asarray(refs, np.int64))

    def symbol_labels(self, refs: np.ndarray) -> SymbolLabels:
        """Label sets of ``refs`` in the registry's symbols."""
        return self._view().symbol_labels(np.asarray(refs, np.int64))

    def querier(self, mint: int, maxt: int) -> Head:
        """The head reads as a store of its own (a ``DB`` adds blocks)."""
        return self

    def series_labels(self, refs: np.ndarray) -> list[dict[str, str]]:
        view = self._view()
        return [view.labels(int(r)) for r in refs]

    def label_names(self, refs: np.ndarray | None = None) -> list[str]:
        view = self._view()
        pairs = np.arange(view.n_pairs) if refs is None else view.pairs_of(refs)
        names = np.unique(view.pair_names()[pairs])
        return sorted(view.symbols(names))

    def label_values(self, name: str, refs: np.ndarray | None = None) -> list[str]:
        view = self._view()
        pairs = view.pairs_with_name(name)
        if refs is not None and len(pairs):
            pairs = np.intersect1d(pairs, view.pairs_of(refs))
        values = np.unique(view.pair_values()[pairs])
        return sorted(view.symbols(values))

    def read_samples(self, refs: np.ndarray, mint: int, maxt: int) -> SampleSet:
        """Samples of ``refs`` (sorted unique) in ``[mint, maxt]`` sorted by (ref,
        timestamp)."""
        refs = np.asarray(refs, dtype=np.int64)
        batch, late, stones = self._gathered(refs, mint, maxt)
        return _merged(refs, batch, late, stones, mint, maxt)

    def _gathered(self, refs: np.ndarray, mint: int, maxt: int
                  ) -> tuple[ChunkBatch, SampleSet | None, Tombstones]:
        """Copies of the chunks of ``refs`` overlapping ``[mint, maxt]``, their
        out-of-order samples there (None when the head holds none) and the tombstones,
        taken together under the lock."""
        with self.lock:
            batch = self.chunks.gather(refs, mint, maxt)
            late = self.out_of_order.read(refs, mint, maxt) if self.out_of_order.n_samples \
                else None
            return batch, late, self.tombstones

    def read_chunks(self, refs: np.ndarray, mint: int, maxt: int
                    ) -> tuple[ChunkBatch, SampleSet]:
        """Copies of the chunks of ``refs`` (sorted unique) overlapping ``[mint, maxt]``,
        and the out-of-order samples of ``refs`` in that range (not in any chunk), all
        without deleted samples."""
        refs = np.asarray(refs, dtype=np.int64)
        with self.lock:
            batch = self.chunks.gather(refs, mint, maxt)
            late = self.out_of_order.read(refs, mint, maxt)
            stones = self.tombstones
        return without_deleted(stones, refs[batch.pos], batch, late)

    def label_table(self, refs: np.ndarray) -> LabelTable:
        """The label table of ``refs`` (sorted unique). That of at most ``FEW_SERIES`` is
        kept, keyed by the refs: a series' labels never change, and dashboards read the
        same few series on every refresh."""
        if len(refs) > FEW_SERIES:
            return label_table(self._view(), refs)
        key = refs.tobytes()
        table = self._tables.get(key)
        if table is None:
            table = symbol_label_table(self.symbol_labels(refs))
            size = table.label_ids.nbytes + sum(map(len, table.values + table.names))
            self._tables.put(key, table, size)
        return table

    def select(self, matchers: Sequence[Matcher], mint: int, maxt: int,
               shard: Shard | None = None) -> SeriesSet:
        """Series matching ``matchers`` with their samples in ``[mint, maxt]``."""
        refs = self.select_series(matchers, mint, maxt)
        if shard is not None:
            refs = refs[shard.holds(self.series_hashes(refs))]
        if len(refs) == 0:
            return SeriesSet.empty()
        present, bounds, ts, vs = self.series_runs(refs, mint, maxt)
        if len(present) == 0:
            return SeriesSet.empty()
        return from_table(self.label_table(refs[present]), bounds, ts, vs)

    def series_runs(self, refs: np.ndarray, mint: int, maxt: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The samples of ``refs`` (sorted unique) in ``[mint, maxt]`` as a run per
        series: the positions in ``refs`` of the series that have any, where each one's
        samples begin (and the last end), their timestamps and values."""
        refs = np.asarray(refs, dtype=np.int64)
        batch, late, stones = self._gathered(refs, mint, maxt)
        if late is None and not len(stones):  # the chunks' runs are the series' samples
            ts, vs, starts = batch.samples_in(mint, maxt)
            present, bounds = series_of_runs(batch.pos, starts)
            return present, bounds, ts, vs
        got = _merged(refs, batch, late, stones, mint, maxt)
        if len(got.refs) == 0:
            return _NO_REFS, np.zeros(1, np.int64), got.timestamps, got.values
        bounds = np.flatnonzero(np.diff(got.refs, prepend=-1, append=-1))
        return np.searchsorted(refs, got.refs[bounds[:-1]]), bounds, got.timestamps, got.values

    def holds_samples_in(self, mint: int, maxt: int) -> bool:
        """Whether the head may hold samples in ``[mint, maxt]`` (it holds none of a
        past range, or when just opened)."""
        return bool(self.n_samples) and self.min_time <= maxt and self.max_time >= mint

    # -- truncation -----------------------------------------------------------------------

    def compactable(self) -> bool:
        """Whether the head spans more than one and a half block ranges, the point at
        which Prometheus writes its oldest range to a block."""
        span = self.options.block_range_ms
        return self.n_samples > 0 and self.max_time - self.min_time > span // 2 * 3

    def truncate(self, before: int) -> None:
        """Forget every sample older than ``before`` (now held by a block) and refuse
        such samples from now on."""
        with self.lock:
            self.min_valid_time = max(self.min_valid_time, before)
            self.n_samples -= self.chunks.truncate(before)
            self.n_samples -= self.out_of_order.drop_before(before)
            self.tombstones = self.tombstones.truncated_before(before)
            n = self.registry.n_series
            first = self.chunks.min_times(n)
            if self.out_of_order.n_samples:
                late = self.out_of_order.read(np.arange(n), before, _MAX_TIME)
                np.minimum.at(first, late.refs, late.timestamps)
            self.state.first_t[:n] = first
            self.min_time = int(first.min()) if n else _MAX_TIME

    def series_to_checkpoint(self) -> np.ndarray:
        """Refs of the series holding samples, the ones a WAL checkpoint keeps (call
        under the lock, with the WAL cut). The others, idle since their samples went to
        blocks, are left out, so that a restart forgets them; they are marked, so that
        the first samples they get again are logged after a new series record for them."""
        n = self.registry.n_series
        # A sample at the largest timestamp leaves ``first_t`` at its "none" value, and
        # can never have gone to a block.
        holding = ((self.state.first_t[:n] != _MAX_TIME)
                   | (self.state.last_t[:n] == _MAX_TIME))
        idle = ~holding
        self.state.unlogged[:n] = idle
        self.state.any_unlogged = bool(idle.any())
        return np.flatnonzero(holding)

    def series_to_log_again(self, refs: np.ndarray) -> np.ndarray:
        """Those of ``refs`` (-1 for none) left out of the last checkpoint, which must be
        logged again before samples of theirs are; they are then no longer marked.
        Call under the lock."""
        known = refs[refs >= 0]
        again = np.unique(known[self.state.unlogged[known]])
        self.state.unlogged[again] = False
        return again

    def settle_out_of_order(self, refs: np.ndarray, timestamps: np.ndarray,
                            value_bits: np.ndarray, outcome: np.ndarray) -> None:
        """Turn out-of-order samples that repeat a stored timestamp (or an earlier sample
        of the same batch) into duplicates when the value bits are equal, and into
        duplicate-timestamp errors otherwise, as for in-order samples."""
        late = np.flatnonzero(outcome == ak.ACCEPTED_OUT_OF_ORDER)
        if len(late) == 0:
            return
        r, t = refs[late], timestamps[late]
        stored = self._read_locked(np.unique(r), int(t.min()), int(t.max()))
        # Stored samples first, then the batch's in arrival order; a sample repeats the
        # first one of its (series, timestamp) run.
        all_r = np.concatenate([stored.refs, r])
        all_t = np.concatenate([stored.timestamps, t])
        all_bits = np.concatenate([stored.values.view(np.uint64), value_bits[late]])
        order = np.lexsort((np.arange(len(all_r)), all_t, all_r))
        all_r, all_t, all_bits = all_r[order], all_t[order], all_bits[order]
        starts_run = np.ones(len(order), bool)
        starts_run[1:] = (all_r[1:] != all_r[:-1]) | (all_t[1:] != all_t[:-1])
        run_first = np.maximum.accumulate(np.where(starts_run, np.arange(len(order)), 0))
        mine = order >= len(stored.refs)
        repeats = mine & ~starts_run
        which = late[order[repeats] - len(stored.refs)]
        same = all_bits[repeats] == all_bits[run_first[repeats]]
        outcome[which] = np.where(same, ak.DUPLICATE, ak.DUPLICATE_TIMESTAMP)

    def store(self, refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray,
              outcome: np.ndarray) -> None:
        """Keep the samples that ``outcome`` accepts: in order to chunks, late ones raw."""
        in_order = outcome == ak.ACCEPTED
        late = outcome == ak.ACCEPTED_OUT_OF_ORDER
        self.chunks.reserve(self.registry.n_series)
        self.chunks.append(refs[in_order], timestamps[in_order], values[in_order])
        if late.any():
            self.out_of_order.append(refs[late], timestamps[late], values[late])
        kept = in_order | late
        n = int(kept.sum())
        if n:
            self.n_samples += n
            self.min_time = min(self.min_time, int(timestamps[kept].min()))

    def _read_locked(self, refs: np.ndarray, mint: int, maxt: int) -> SampleSet:
        batch = self.chunks.gather(refs, mint, maxt)
        ts, vs, starts = batch.decode()
        owner = np.repeat(refs[batch.pos], np.diff(starts))
        parts = [(owner, ts, vs)]
        if self.out_of_order.n_samples:
            late = self.out_of_order.read(refs, mint, maxt)
            parts.append((late.refs, late.timestamps, late.values))
        owner, ts, vs = (np.concatenate(p) for p in zip(*parts))
        order = np.lexsort((ts, owner))
        return SampleSet(owner[order], ts[order], vs[order])

    # -- stats ----------------------------------------------------------------------------

    @property
    def n_series(self) -> int:
        return self.registry.n_series

    def memory_bytes(self) -> int:
        """Bytes held by the head's arrays (capacity), for self-metrics."""
        return self.registry.memory_bytes() + self.state.memory_bytes() + \
            self.chunks.memory_bytes() + self.out_of_order.memory_bytes()


def without_deleted(stones: Tombstones, owners: np.ndarray, batch: ChunkBatch,
                    late: SampleSet) -> tuple[ChunkBatch, SampleSet]:
    """Head chunks (of series ``owners[c]``) and out-of-order samples without the
    samples ``stones`` delete; chunks an interval cuts into are re-encoded."""
    if not len(stones):
        return batch, late
    t = trim_chunks(stones, owners, batch.mint, batch.maxt,
                    np.full(batch.n_chunks, ENCODING_XOR, np.uint8), batch.blob, batch.offsets)
    alive = ~stones.deleted(late.refs, late.timestamps)
    return (ChunkBatch(batch.pos[t.source], t.mint, t.maxt, t.blob, t.offsets),
            SampleSet(late.refs[alive], late.timestamps[alive], late.values[alive]))
