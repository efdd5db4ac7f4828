"""The downsampled store: blocks of 5-minute and 1-hour aggregates, and reads that mix
them with raw data.

Downsampled blocks are Prometheus-format blocks (``storage.block``) whose chunks are
aggregate chunks (``storage.aggregate``), kept apart from the raw store so that it never
sees them::

    DATA_DIR/downsampled/5m/<ULID>/     meta.json carries
    DATA_DIR/downsampled/1h/<ULID>/     "thanos": {"downsample": {"resolution": 300000}}
    DATA_DIR/downsampled/<res>/corrupted/<ULID>/   blocks that failed to open

A block is created under a ``*.tmp-for-creation`` name (``stage_block``, which the
compaction worker process may run) and renamed into place once complete (``publish``);
leftovers of a crash are deleted on open, as are blocks replaced by another block of
the same resolution (one holding more of their sources, more of their time, or the same
at a higher level): it replaced them, and the crash came before they were deleted.

Deletions reach downsampled blocks as tombstones widened to whole windows: a window
that overlaps a deleted interval is dropped entirely, in every column, so that no
aggregate keeps anything of a deleted sample. They are kept in each block's
``window-tombstones`` file (the tombstones file format, series named by ordinal) rather
than in ``tombstones``, which ``storage.block.Block`` would apply as if aggregate
chunks held samples; this store applies them to the decoded columns instead.

``DownsampledStore.select`` reads one aggregate of one resolution. ``TieredStore``
puts the raw store and this one side by side for the PromQL engine: ``plan`` splits a
time range between resolutions and ``select_aggregate`` reads every part as the same
aggregate (raw samples become windows of one sample) and joins them per series.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ._downsampled_kernels import copy_runs
from ._merge_kernels import trim_runs
from .aggregate import (
    ENCODING_AGGREGATE,
    STALE_NAN_BITS,
    Column,
    adjust_counters,
    decode_column,
    stitch_counters,
)
from .block import TMP_SUFFIX, Block, BlockMeta, remove_block_dir, write_block
from .errors import CorruptionError, StorageError
from .interface import Shard
from .matchers import Matcher
from .series import SeriesRegistry
from .series_set import SeriesSet, label_table
from .tombstones import Tombstones, read_file, write_file
from .wal import fsync_dir

__all__ = [
    "RESOLUTIONS",
    "RESOLUTION_1H",
    "RESOLUTION_5M",
    "WINDOW_TOMBSTONES",
    "Aggregate",
    "AggregateSet",
    "DownsampledStore",
    "Part",
    "TieredStore",
    "holds",
    "read_resolution",
    "stage_block",
    "surviving",
]

log = logging.getLogger(__name__)

RESOLUTION_5M = 300_000
RESOLUTION_1H = 3_600_000
RESOLUTIONS = (RESOLUTION_5M, RESOLUTION_1H)
_DIR_NAMES = {RESOLUTION_5M: "5m", RESOLUTION_1H: "1h"}
_BLOCK_NAME = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
_MAX_META_BYTES = 64 << 20
_NO_IDS = np.empty(0, np.int64)
_I64 = np.iinfo(np.int64)

WINDOW_TOMBSTONES = "window-tombstones"
"""The file of a downsampled block's deleted windows (see the module docstring)."""

_NOTHING_DELETED = Tombstones.empty()


class Aggregate(StrEnum):
    """What a downsampled read returns per window: one stored column, or ``avg``
    (sum / count)."""

    COUNT = "count"
    SUM = "sum"
    MIN = "min"
    MAX = "max"
    COUNTER = "counter"
    AVG = "avg"


_COLUMN = {Aggregate.COUNT: Column.COUNT, Aggregate.SUM: Column.SUM,
           Aggregate.MIN: Column.MIN, Aggregate.MAX: Column.MAX,
           Aggregate.COUNTER: Column.COUNTER}


@dataclass(frozen=True)
class AggregateSet:
    """Series with one aggregate's samples; for ``counter``, also the raw counter values
    at each series' first and last sample (NaN where a chunk was cut by the time
    range), which joining with later data needs to see resets."""

    series: SeriesSet
    first_raw: np.ndarray
    last_raw: np.ndarray


@dataclass(frozen=True)
class _Runs:
    """Runs of samples of labelled series, not yet gathered: run ``r`` belongs to series
    ``series[r]`` (a row of ``label_ids``, whose rows are in label order) and is
    ``timestamps[k][src[r]:src[r] + lengths[r]]`` with ``k = source[r]`` (one pair of
    arrays per block decoded), with the raw counter values at its ends (NaN where
    unknown). Runs are in series order, each series' runs in time order."""

    names: list[str]
    values: list[str]
    label_ids: np.ndarray
    series: np.ndarray
    timestamps: list[np.ndarray]
    samples: list[np.ndarray]
    source: np.ndarray
    src: np.ndarray
    lengths: np.ndarray
    first_raw: np.ndarray
    last_raw: np.ndarray

    @classmethod
    def empty(cls) -> _Runs:
        none = np.zeros(0, np.int64)
        return cls([], [], np.zeros((0, 0), np.int32), none, [], [], none, none, none,
                   np.zeros(0), np.zeros(0))

    @property
    def n_series(self) -> int:
        return len(self.label_ids)

    def placed(self) -> bool:
        """Whether the runs are already a ``SeriesSet``'s samples: one per series, back
        to back, filling one pair of arrays."""
        ends = self.src + self.lengths
        return len(self.timestamps) == 1 and len(self.src) == self.n_series \
            and np.array_equal(self.series, np.arange(self.n_series)) \
            and (len(self.src) == 0 or (self.src[0] == 0 and ends[-1] == len(self.timestamps[0])
                                        and np.array_equal(self.src[1:], ends[:-1])))


# --------------------------------------------------------------------------- blocks


def read_resolution(path: Path) -> int:
    """The ``thanos.downsample.resolution`` of the block at ``path`` (0 for raw
    blocks); ``CorruptionError`` when meta.json is unreadable or the value malformed."""
    file = path / "meta.json"
    try:
        with open(file, "rb") as f:
            doc = json.loads(f.read(_MAX_META_BYTES + 1))
    except (OSError, ValueError) as e:
        raise CorruptionError(f"{file}: {e}") from None
    res = (doc.get("thanos") or {}).get("downsample", {}).get("resolution", 0) \
        if isinstance(doc, dict) else None
    if type(res) is not int or res < 0:
        raise CorruptionError(f"{file}: bad downsample resolution {res!r}")
    return res


def _meta_with_resolution(meta: BlockMeta, resolution: int) -> bytes:
    doc = json.loads(meta.to_json())
    doc["thanos"] = {"labels": {}, "downsample": {"resolution": resolution},
                     "source": "compactor"}
    return json.dumps(doc, indent="\t").encode()


def holds(outer: BlockMeta, inner: BlockMeta) -> bool:
    """Whether ``outer`` holds all that ``inner`` holds: its sources and its time range
    (a block made from part of a raw block holds only that part)."""
    return set(inner.sources or (inner.ulid,)) <= set(outer.sources or (outer.ulid,)) \
        and outer.min_time <= inner.min_time and inner.max_time <= outer.max_time


def _replaces(outer: Block, inner: Block) -> bool:
    """Whether ``outer`` was written to replace ``inner``: made from a merge holding
    more of their sources, from more of the same raw block (its part older than the
    age grew, or the whole block became due), or from the same sources rewritten one
    level up (without deleted windows). Never both ways, so that a crash between
    serving a block and deleting what it replaces leaves one to keep."""
    if outer is inner or not holds(outer.meta, inner.meta):
        return False
    return _precedence(outer.meta) > _precedence(inner.meta)


def _precedence(meta: BlockMeta) -> tuple[int, int, int]:
    return len(meta.sources), meta.max_time - meta.min_time, meta.level


def _window_bounds(mint: int, maxt: int, resolution: int) -> tuple[int, int]:
    """The closed range of the whole ``resolution`` windows that ``[mint, maxt]``
    overlaps, clamped to int64."""
    lo = int(mint) // resolution * resolution
    hi = (int(maxt) // resolution + 1) * resolution - 1
    return max(lo, int(_I64.min)), min(hi, int(_I64.max))


def surviving(stones: Tombstones, refs: np.ndarray, ts: np.ndarray, starts: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Which samples of the runs ``ts[starts[i]:starts[i+1]]`` (of series ``refs[i]``)
    ``stones`` leave, as a mask; where the runs start once the others are gone; and per
    run, whether its first and its last sample are left (a run's raw values at its ends
    are unknown where they are not)."""
    alive = ~stones.deleted(np.repeat(refs, np.diff(starts)), ts)
    kept = np.zeros(len(ts) + 1, np.int64)
    np.cumsum(alive, out=kept[1:])
    nonempty = starts[1:] > starts[:-1]
    if len(ts) == 0:
        return alive, kept[starts], nonempty, nonempty
    first = nonempty & alive[np.minimum(starts[:-1], len(ts) - 1)]
    last = nonempty & alive[np.maximum(starts[1:] - 1, 0)]
    return alive, kept[starts], first, last


def stage_block(directory: Path, resolution: int, **block: Any) -> BlockMeta:
    """Write a complete block of ``resolution`` (arguments as ``storage.block.write_block``
    takes them, chunks being aggregate chunks) for the store at ``directory``, not yet
    served: under a ``*.tmp-for-creation`` directory of its tier, which ``publish``
    moves into place and opening the store deletes. Needs no open store, so the
    compaction worker process can run it."""
    tier_dir = Path(directory) / _DIR_NAMES[resolution]
    staging = tier_dir / (f"staging-{os.urandom(8).hex()}" + TMP_SUFFIX)
    staging.mkdir()
    try:
        meta = write_block(staging, **block)
        tmp_meta = meta.path / "meta.json.tmp"
        with open(tmp_meta, "wb") as f:
            f.write(_meta_with_resolution(meta, resolution))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp_meta, meta.path / "meta.json")
        fsync_dir(meta.path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


class DownsampledStore:
    """The downsampled blocks of one data directory, by resolution, with their deleted
    windows. Build with ``open``; thread-safe (readers take a snapshot of the block
    lists; changes to blocks and deletions exclude one another)."""

    def __init__(self, directory: Path, tiers: dict[int, list[Block]],
                 deleted: dict[str, Tombstones], problems: list[str]) -> None:
        self.directory = directory
        self._tiers = tiers
        self._deleted = deleted  # by block ulid; blocks without deletions are absent
        self._lock = threading.Lock()
        # Held by every change to the blocks or their deletions: a deletion never lands
        # on a block while it is replaced, nor a block built before it on top of it.
        self._maintenance = threading.RLock()
        self.open_report = problems

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> DownsampledStore:
        """Open ``directory`` (``DATA_DIR/downsampled``), creating it if needed."""
        path = Path(directory)
        tiers: dict[int, list[Block]] = {}
        deleted: dict[str, Tombstones] = {}
        problems: list[str] = []
        for res in RESOLUTIONS:
            tier_dir = path / _DIR_NAMES[res]
            tier_dir.mkdir(parents=True, exist_ok=True)
            tiers[res] = _open_tier(tier_dir, res, deleted, problems)
        return cls(path, tiers, deleted, problems)

    def close(self) -> None:
        with self._lock:
            for blocks in self._tiers.values():
                for block in blocks:
                    block.close()
                blocks.clear()

    def blocks(self, resolution: int) -> list[Block]:
        """The blocks of ``resolution``, oldest first."""
        with self._lock:
            return list(self._tiers[resolution])

    def deletions(self, block: Block) -> Tombstones:
        """The deleted windows of ``block`` (series by ordinal). A new value after every
        deletion, so that comparing identities tells whether one came in between."""
        with self._lock:
            return self._deleted.get(block.meta.ulid, _NOTHING_DELETED)

    def coverage_end(self, resolution: int) -> int | None:
        """The end (exclusive) of the newest block of ``resolution``, None if none."""
        blocks = self.blocks(resolution)
        return max(b.meta.max_time for b in blocks) if blocks else None

    # -- writing ----------------------------------------------------------------------

    def publish(self, staged: BlockMeta, resolution: int,
                current: Callable[[], bool] | None = None) -> BlockMeta | None:
        """Serve the block ``stage_block`` wrote and delete the blocks of the same
        resolution it ``holds`` (it was made from a merge of theirs, from more of the
        same raw block, or rewrites them without deleted windows).

        ``current()``, when given, is asked first, while no deletion can come in: it
        says whether what the block was made from is unchanged. When it is not (a
        deletion came in meanwhile), the block may hold deleted samples, so it is
        deleted instead and None returned."""
        with self._maintenance:
            if current is not None and not current():
                shutil.rmtree(staged.path.parent, ignore_errors=True)
                log.info("downsampled block %s discarded: its source changed while it was "
                         "made", staged.ulid)
                return None
            tier_dir = self.directory / _DIR_NAMES[resolution]
            final = tier_dir / staged.ulid
            os.rename(staged.path, final)
            fsync_dir(tier_dir)
            shutil.rmtree(staged.path.parent, ignore_errors=True)
            new = Block.open(final)
            with self._lock:
                tier = self._tiers[resolution]
                replaced = [b for b in tier if holds(new.meta, b.meta)]
                tier[:] = sorted([b for b in tier if b not in replaced] + [new],
                                 key=lambda b: (b.meta.min_time, b.meta.ulid))
                for b in replaced:
                    self._deleted.pop(b.meta.ulid, None)
            for b in replaced:
                remove_block_dir(b.meta.path)
            return new.meta

    def remove(self, resolution: int, ulids: Sequence[str]) -> list[BlockMeta]:
        """Stop serving and delete the blocks ``ulids`` of ``resolution``; queries
        already reading them finish on them (their files stay mapped)."""
        gone = set(ulids)
        with self._maintenance:
            with self._lock:
                tier = self._tiers[resolution]
                doomed = [b for b in tier if b.meta.ulid in gone]
                tier[:] = [b for b in tier if b.meta.ulid not in gone]
                for ulid in gone:
                    self._deleted.pop(ulid, None)
            for b in doomed:
                remove_block_dir(b.meta.path)
        return [b.meta for b in doomed]

    def apply_retention(self, newest_ms: int, retention_ms: dict[int, int]) -> list[BlockMeta]:
        """Delete the blocks whose every sample is older than ``newest_ms`` minus their
        resolution's retention (0 keeps them forever), as raw retention does."""
        removed: list[BlockMeta] = []
        for res, keep in retention_ms.items():
            if keep > 0:
                old = [b.meta.ulid for b in self.blocks(res) if newest_ms - b.meta.max_time > keep]
                removed += self.remove(res, old)
        return removed

    # -- deleting ----------------------------------------------------------------------

    def delete(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> int:
        """Delete every window (of every resolution) that overlaps ``[mint, maxt]``
        (inclusive) of the series matching ``matchers``; return how many blocks got
        deletions. Durable when this returns. Call it after deleting from the raw
        store, so that a block made from raw data meanwhile is either refused by
        ``publish`` or served in time to get these deletions too."""
        changed = 0
        if mint > maxt:
            return changed
        with self._maintenance:
            for res in RESOLUTIONS:
                lo, hi = _window_bounds(mint, maxt, res)
                for block in self.blocks(res):
                    if not (block.meta.min_time <= hi and lo < block.meta.max_time):
                        continue
                    ids = block.select_series(matchers, lo, hi)
                    if len(ids) == 0:
                        continue
                    stones = self.deletions(block).add(Tombstones.of(ids, lo, hi))
                    write_file(block.meta.path, stones, WINDOW_TOMBSTONES)
                    with self._lock:
                        self._deleted[block.meta.ulid] = stones
                    changed += 1
        return changed

    def clean_tombstones(self, rewrite: Callable[[Block, int, Tombstones], BlockMeta]) -> int:
        """Rewrite every block with deleted windows without them; return how many.

        ``rewrite(block, resolution, deleted)`` stages the new block (``stage_block``):
        the same sources one level up, so that after a crash the old block is the one
        deleted on open. A block left without windows stays, empty, so that its sources
        still count as downsampled. Deletions wait meanwhile."""
        done = 0
        with self._maintenance:
            for res in RESOLUTIONS:
                for block in self.blocks(res):
                    stones = self.deletions(block)
                    if not len(stones):
                        continue
                    staged = rewrite(block, res, stones)
                    self.publish(staged, res)
                    done += 1
                    log.info("rewrote downsampled block %s without its deleted windows as %s",
                             block.meta.ulid, staged.ulid)
        return done

    def snapshot(self, directory: str | os.PathLike[str]) -> None:
        """Hard-link every block (with its deleted windows) into ``directory``, laid out
        as this store is, so that a snapshot of the data directory holds it under
        ``downsampled/``."""
        target = Path(directory)
        with self._maintenance:
            for res in RESOLUTIONS:
                tier = target / _DIR_NAMES[res]
                tier.mkdir(parents=True, exist_ok=True)
                for block in self.blocks(res):
                    shutil.copytree(block.meta.path, tier / block.meta.ulid,
                                    copy_function=os.link)
                    for root, _, _ in os.walk(tier / block.meta.ulid):
                        fsync_dir(Path(root))
                fsync_dir(tier)
            fsync_dir(target)

    # -- reading -----------------------------------------------------------------------

    def select(self, matchers: Sequence[Matcher], mint: int, maxt: int, aggregate: Aggregate,
               resolution: int) -> AggregateSet:
        """Series matching ``matchers`` with ``aggregate`` of their windows of
        ``resolution`` stamped in ``[mint, maxt]``, sorted by labels; counter samples
        reset-adjusted across the chunks read (see ``AggregateSet``). Deleted windows
        are left out."""
        return _join([self._runs(matchers, mint, maxt, aggregate, resolution)],
                     aggregate == Aggregate.COUNTER)

    def _runs(self, matchers: Sequence[Matcher], mint: int, maxt: int, aggregate: Aggregate,
              resolution: int) -> _Runs:
        """What ``select`` returns, as runs of windows (a series' chunk in one block)
        not yet gathered nor stitched, so that joining them with other resolutions
        copies every window once."""
        blocks = [b for b in self.blocks(resolution)
                  if b.meta.min_time <= maxt and b.meta.max_time > mint]
        registry = SeriesRegistry()
        times: list[np.ndarray] = []
        values: list[np.ndarray] = []
        runs = []
        for block in blocks:
            ids = block.select_series(matchers, mint, maxt)
            if len(ids) == 0:
                continue
            labels = block.symbol_labels(ids)
            qids = registry.resolve_labels(labels, np.full(labels.n_symbols, -1, np.int32))
            chunks = block.chunks(ids, mint, maxt)
            if np.any(chunks.encoding != ENCODING_AGGREGATE):
                raise CorruptionError(f"{block.meta.path}: a chunk is not an aggregate chunk")
            # Decoded block by block: small arrays, whose memory the next block reuses
            # (all blocks' windows at once would take fresh pages on every query).
            ts, vs, starts, last_raw = _decode(chunks.blob, chunks.offsets, aggregate)
            first_raw = np.where(starts[1:] > starts[:-1],
                                 vs[np.minimum(starts[:-1], max(len(vs) - 1, 0))], np.nan) \
                if len(vs) else np.full(len(starts) - 1, np.nan)
            stones = self.deletions(block)
            if len(stones):
                alive, starts, first_kept, last_kept = surviving(stones, ids[chunks.series],
                                                                 ts, starts)
                ts, vs = ts[alive], vs[alive]
                first_raw = np.where(first_kept, first_raw, np.nan)
                last_raw = np.where(last_kept, last_raw, np.nan)
            # Runs of a block reaching past the range are cut to it.
            lo, hi = trim_runs(ts, starts[:-1], starts[1:], mint, maxt)
            # A run's raw value at an end is unknown once that end is cut.
            first_raw = np.where(lo > starts[:-1], np.nan, first_raw)
            last_raw = np.where(hi < starts[1:], np.nan, last_raw)
            some = hi > lo
            runs.append((qids[chunks.series][some], np.full(np.count_nonzero(some), len(times)),
                         lo[some], (hi - lo)[some], first_raw[some], last_raw[some]))
            times.append(ts)
            values.append(vs)
        if not runs:
            return _Runs.empty()
        owner, source, src, lengths, first_raw, last_raw = (np.concatenate(c)
                                                           for c in zip(*runs))
        if len(owner) == 0:
            return _Runs.empty()
        # Runs in output order: series in label order, each series' runs in time order
        # (blocks are in time order and do not overlap, a block's chunks of a series too).
        present, series = np.unique(owner, return_inverse=True)
        names, label_values, label_ids, by_label = label_table(registry.snapshot(), present)
        rank = np.empty(len(present), np.int64)
        rank[by_label] = np.arange(len(present))
        run_rank = rank[series]
        order = np.lexsort((src, source, run_rank))
        return _Runs(names, label_values, label_ids, run_rank[order], times, values,
                     source[order], src[order], lengths[order], first_raw[order],
                     last_raw[order])


def _decode(blob: np.ndarray, offsets: np.ndarray, aggregate: Aggregate
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if aggregate == Aggregate.AVG:
        ts, total, starts, last_raw = decode_column(blob, offsets, Column.SUM)
        _, count, _, _ = decode_column(blob, offsets, Column.COUNT)
        with np.errstate(all="ignore"):
            return ts, total / count, starts, last_raw
    return decode_column(blob, offsets, _COLUMN[aggregate])


def _open_tier(directory: Path, resolution: int, deleted: dict[str, Tombstones],
               problems: list[str]) -> list[Block]:
    """Open the complete blocks of one resolution, with their deleted windows (into
    ``deleted``): delete unfinished ones and those a later block replaced, move
    unreadable ones to ``corrupted/``."""
    blocks: list[Block] = []
    for name in sorted(os.listdir(directory)):
        path = directory / name
        if name.endswith(TMP_SUFFIX):
            shutil.rmtree(path, ignore_errors=True)
            continue
        if not _BLOCK_NAME.fullmatch(name) or not path.is_dir():
            continue
        try:
            found = read_resolution(path)
            if found != resolution:
                raise CorruptionError(f"resolution {found}, expected {resolution}")
            stones = read_file(path, WINDOW_TOMBSTONES)
            blocks.append(Block.open(path))
            if len(stones):
                deleted[name] = stones
        except (CorruptionError, StorageError, OSError) as exc:
            aside = directory / "corrupted" / name
            problems.append(f"downsampled block {name} cannot be read ({exc}); moved to {aside}")
            log.error("%s", problems[-1])
            aside.parent.mkdir(exist_ok=True)
            os.rename(path, aside)
    kept = []
    for b in blocks:
        if any(_replaces(o, b) for o in blocks):
            log.info("downsampled block %s was replaced by a later one; deleting it",
                     b.meta.ulid)
            b.close()
            remove_block_dir(b.meta.path)
            deleted.pop(b.meta.ulid, None)
        else:
            kept.append(b)
    kept.sort(key=lambda b: (b.meta.min_time, b.meta.ulid))
    return kept


# --------------------------------------------------------------------------- tiers


@dataclass(frozen=True)
class Part:
    """A piece of a time range and the resolution it is read at (0 = raw)."""

    resolution: int
    mint: int
    maxt: int


class RawStore(Protocol):
    """What ``TieredStore`` needs of the raw store (``storage.db.DB`` has it)."""

    @property
    def blocks(self) -> list[Block]: ...

    @property
    def head(self) -> Any: ...

    def select(self, matchers: Sequence[Matcher], mint: int, maxt: int,
               shard: Shard | None = None) -> SeriesSet: ...


class TieredStore:
    """The raw store and the downsampled store read together by PromQL.

    ``select`` is the raw store's. ``plan`` says which resolution serves which part of a
    time range; ``select_aggregate`` reads the parts as one aggregate and joins them.
    """

    def __init__(self, raw: RawStore, downsampled: DownsampledStore) -> None:
        self.raw = raw
        self.downsampled = downsampled

    @property
    def head(self) -> Any:
        return self.raw.head

    def select(self, matchers: Sequence[Matcher], mint: int, maxt: int,
               shard: Shard | None = None) -> SeriesSet:
        return self.raw.select(matchers, mint, maxt, shard)

    def estimate_series(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> int:
        """The raw store's estimate (``Querier.estimate_series``); 0 when it has none,
        so that queries are not sharded."""
        estimate = getattr(self.raw, "estimate_series", None)
        return estimate(matchers, mint, maxt) if estimate is not None else 0

    def raw_start(self) -> int:
        """The oldest time raw data may exist for (the oldest block's start, or the
        head's oldest sample)."""
        blocks = self.raw.blocks
        if blocks:
            return min(b.meta.min_time for b in blocks)
        return int(self.raw.head.min_time)

    def plan(self, resolution: int, mint: int, maxt: int, prefer_raw: bool) -> list[Part]:
        """Split ``[mint, maxt]`` between resolutions up to ``resolution``: from the
        oldest end, the coarsest resolution where its blocks reach, then finer ones,
        raw data for the rest. With ``prefer_raw``, downsampled data serves only times
        before the raw data begins (it has been deleted by retention)."""
        cursor = mint
        parts = []
        raw_start = self.raw_start()
        for res in sorted((r for r in RESOLUTIONS if r <= resolution), reverse=True):
            end = self.downsampled.coverage_end(res)
            if end is None:
                continue
            if prefer_raw:
                end = min(end, raw_start)
            if end > cursor and cursor <= maxt:
                parts.append(Part(res, cursor, min(end - 1, maxt)))
                cursor = end
        if cursor <= maxt:
            parts.append(Part(0, cursor, maxt))
        return parts

    def select_aggregate(self, matchers: Sequence[Matcher], parts: Sequence[Part],
                         aggregate: Aggregate) -> SeriesSet:
        """Series matching ``matchers`` with ``aggregate`` over ``parts`` (in time
        order), sorted by labels. Raw samples count as windows of one sample: 1 for
        ``count``, their value for the others; counters are reset-adjusted throughout."""
        # Raw parts are read first: decoding them takes the most memory for a while,
        # which the aggregates, decoded block by block, then reuse (read after them,
        # the raw part would take fresh pages on every query).
        read: dict[int, _Runs] = {}
        for i in sorted(range(len(parts)), key=lambda i: parts[i].resolution > 0):
            part = parts[i]
            read[i] = self.downsampled._runs(
                matchers, part.mint, part.maxt, aggregate, part.resolution) if part.resolution \
                else _raw_as(self.raw.select(matchers, part.mint, part.maxt), aggregate)
        return _join([read[i] for i in range(len(parts))], aggregate == Aggregate.COUNTER).series


def _raw_as(ss: SeriesSet, aggregate: Aggregate) -> _Runs:
    """Raw samples as windows of one sample each, a run per series."""
    bits = np.asarray(ss.samples, np.float64).view(np.uint64)
    stale = bits == STALE_NAN_BITS
    starts, ts, values = np.asarray(ss.starts, np.int64), ss.timestamps, ss.samples
    first = last = np.full(ss.n_series, np.nan)
    if aggregate == Aggregate.COUNT:
        values = np.where(stale, values, 1.0)
    elif aggregate == Aggregate.COUNTER:
        raw = np.asarray(values, np.float64)
        if stale.any():
            fresh = np.zeros(len(stale) + 1, np.int64)
            np.cumsum(~stale, out=fresh[1:])
            starts, ts, raw = fresh[starts], ts[~stale], raw[~stale]
        if len(raw):
            empty = starts[1:] == starts[:-1]
            first = np.where(empty, np.nan, raw[np.minimum(starts[:-1], len(raw) - 1)])
            last = np.where(empty, np.nan, raw[np.maximum(starts[1:] - 1, 0)])
        values = adjust_counters(starts, raw)
    return _Runs(ss.names, ss.values, ss.label_ids, np.arange(ss.n_series), [ts], [values],
                 np.zeros(ss.n_series, np.int64), starts[:-1], np.diff(starts), first, last)


def _join(pieces: list[_Runs], counter: bool) -> AggregateSet:
    """One set from runs covering consecutive time ranges, in time order: a series is
    the concatenation of its runs in every piece, each sample copied once to its place
    (counters stitched across runs). First and last raw values are per series."""
    pieces = [p for p in pieces if p.n_series]
    if not pieces:
        return AggregateSet(SeriesSet.empty(), np.empty(0), np.empty(0))
    if len(pieces) == 1 and pieces[0].placed():
        p = pieces[0]
        series = SeriesSet(p.names, p.values, p.label_ids,
                           np.append(p.src, len(p.timestamps[0])), p.timestamps[0], p.samples[0])
        return AggregateSet(series, p.first_raw, p.last_raw)
    names, values, label_ids, ranks = _joined_labels(pieces)
    run_rank = np.concatenate([rank[p.series] for p, rank in zip(pieces, ranks)])
    order = np.argsort(run_rank, kind="stable")  # pieces are in time order
    run_rank = run_rank[order]
    lengths = np.concatenate([p.lengths for p in pieces])
    dest = np.empty(len(order), np.int64)
    dest[order] = np.cumsum(lengths[order]) - lengths[order]
    ts = np.empty(int(lengths.sum()), np.int64)
    vs = np.empty(len(ts), np.float64)
    first_run = 0
    for p in pieces:  # a handful of pieces, one per resolution
        piece_dest = dest[first_run:first_run + len(p.src)]
        first_run += len(p.src)
        for k, (times, samples) in enumerate(zip(p.timestamps, p.samples)):  # per block
            runs = np.flatnonzero(p.source == k) if len(p.timestamps) > 1 else slice(None)
            copy_runs(np.asarray(times, np.int64), p.src[runs], p.lengths[runs],
                      piece_dest[runs], ts)
            copy_runs(np.asarray(samples, np.float64), p.src[runs], p.lengths[runs],
                      piece_dest[runs], vs)
    first = np.concatenate([p.first_raw for p in pieces])[order]
    last = np.concatenate([p.last_raw for p in pieces])[order]
    run_starts = np.append(dest[order], len(ts))
    series_first = np.ones(len(order), bool)
    series_first[1:] = run_rank[1:] != run_rank[:-1]
    if counter:
        stitch_counters(run_starts, ~series_first, first, last, vs)
    series_last = np.append(series_first[1:], True)
    starts = np.append(run_starts[:-1][series_first], len(ts))
    series = SeriesSet(names, values, label_ids, starts, ts, vs)
    return AggregateSet(series, first[series_first], last[series_last])


def _joined_labels(pieces: list[_Runs]) -> tuple[list[str], list[str], np.ndarray,
                                                  list[np.ndarray]]:
    """The label sets of every piece's series, each once, in label order (names,
    values, label ids as ``SeriesSet`` has them), and per piece the rank there of
    each of its series."""
    first = pieces[0]
    if all(p.names == first.names and p.values == first.values
           and np.array_equal(p.label_ids, first.label_ids) for p in pieces):
        # The same series in every piece (the usual case): nothing to merge.
        return first.names, first.values, first.label_ids, \
            [np.arange(p.n_series) for p in pieces]
    names = sorted(set().union(*(p.names for p in pieces)))
    texts = np.array([v for p in pieces for v in p.values] or [""], dtype=object)
    values, inverse = np.unique(texts, return_inverse=True)
    rows, value_base = [], 0
    for p in pieces:
        row = np.full((p.n_series, len(names)), -1, np.int64)
        if p.names:
            cols = np.searchsorted(names, p.names)
            ids = p.label_ids.astype(np.int64)
            row[:, cols] = np.where(ids >= 0, inverse[value_base + np.maximum(ids, 0)], -1)
        value_base += len(p.values)
        rows.append(row)
    distinct, series_of_row = np.unique(np.concatenate(rows), axis=0, return_inverse=True)
    order = _label_order(distinct)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    ranks = np.split(rank[series_of_row.reshape(-1)], np.cumsum([p.n_series for p in pieces])[:-1])
    return names, [str(v) for v in values], distinct[order].astype(np.int32), ranks


def _label_order(table: np.ndarray) -> np.ndarray:
    """Prometheus's order of label sets given as rows of value ranks per (sorted) name,
    -1 where absent: label by label, name then value; a set that is a prefix of
    another first."""
    n, width = table.shape
    if n == 0 or width == 0:
        return np.arange(n)
    present = table >= 0
    counts = present.sum(axis=1)
    owner, name = np.nonzero(present)  # row-major: names ascending within a row
    within = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    key = np.full((n, 2 * width), -1, np.int64)
    key[owner, 2 * within] = name
    key[owner, 2 * within + 1] = table[owner, name]
    return np.lexsort(key.T[::-1])
