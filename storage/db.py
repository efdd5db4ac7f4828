"""DB: a data directory's blocks and head as one store.

Layout of a data directory, as Prometheus lays out its own::

    lock                      held while a process has the directory open
    wal/                      the head's write-ahead log (and its checkpoint)
    01JD…/                    one immutable block per directory (storage.block)
    corrupted/01JD…/          blocks that failed to open, kept for inspection

The DB appends to the head, reads through a ``Querier`` over head and blocks, and in a
background thread writes the head's oldest block range to a block once the head spans
one and a half ranges (as Prometheus does). Persisting a range is a sequence of steps
each safe to interrupt with ``kill -9``:

1. raise the head's minimum valid time to the range's end, so that no sample for the
   range can arrive after it has been read;
2. write the block (atomic: it appears complete or not at all) and start serving it;
3. drop the range from the head's memory;
4. write a WAL checkpoint of what the head still holds and delete the WAL segments it
   replaces (``storage.checkpoint``).

On start the newest block's end is the head's minimum valid time, so replaying a WAL
whose range is already in a block skips those samples instead of duplicating them.

Deleting (``delete``) adds tombstones to the blocks and the head that hold matching
series in the range (``storage.tombstones``); reads leave those samples out at once,
persisting the head does not write them, and rewriting blocks (compaction,
``clean_tombstones``) drops them for good. ``snapshot`` hard-links the blocks into a
directory of its own, with the head written beside them as one more block.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint, record
from .batch import WriteBatch
from .block import Block, BlockMeta, remove_block_dir, write_block
from .chunk_merge import rebuild_chunks, take_chunks
from .errors import CorruptionError, StorageError
from .head import Head, HeadOptions, lock_directory, without_deleted
from .head_chunks import ChunkBatch
from .interface import AppendResult, Shard
from .matchers import Matcher
from .querier import Querier
from .rwlock import RWLock
from .samples import SampleSet
from .series_set import SeriesSet
from .tombstones import Tombstones
from .wal import fsync_dir
from .xor import ENCODING_XOR

__all__ = ["DB", "DBOptions"]

log = logging.getLogger(__name__)

_BLOCK_NAME = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
_CREATING = ".tmp-for-creation"
_MIN_TIME = np.iinfo(np.int64).min
_MAX_TIME = np.iinfo(np.int64).max
_SERIES_PER_RECORD = 50_000
_SAMPLES_PER_RECORD = 1 << 20
_CHUNKS_PER_RECORD = 50_000
_SERIES_PER_SLICE = 1 << 16  # series copied per hold of the head's lock


@dataclass(frozen=True)
class DBOptions:
    """Settings of the store: the head's, and how often to look for a range to persist
    (0 turns the background thread off; ``compact_head`` still works)."""

    head: HeadOptions = field(default_factory=HeadOptions)
    compaction_interval: float = 60.0


class DB:
    """The store of one data directory. Build with ``DB.open``."""

    def __init__(self, directory: Path, options: DBOptions, head: Head,
                 blocks: list[Block], problems: list[str]) -> None:
        self.directory = directory
        self.options = options
        self.head = head
        self._blocks = blocks
        self._blocks_lock = threading.Lock()
        self._compact_lock = threading.Lock()
        # Held by every change to the set of blocks or their tombstones, so that a
        # deletion never lands on a block while it is being replaced.
        self._maintenance = threading.RLock()
        self._read_lock = RWLock()  # see Querier: publish-and-truncate is exclusive
        self.open_report = problems
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def open(cls, directory: str | os.PathLike[str], options: DBOptions | None = None) -> DB:
        """Open the blocks (moving corrupt ones aside), replay the WAL, start the
        background persister."""
        options = options or DBOptions()
        path = Path(directory)
        fd = lock_directory(path)
        try:
            blocks, problems = _open_blocks(path)
            newest = max((b.meta.max_time for b in blocks), default=None)
            head = Head.open(path, options.head, min_valid_time=newest, lock_fd=fd)
        except BaseException:
            os.close(fd)
            raise
        db = cls(path, options, head, blocks, problems)
        if head.renumbered:
            # The WAL names some series by refs they no longer have; new records will
            # name them by today's. A checkpoint now leaves only today's on disk.
            db._checkpoint()
            log.info("wal checkpointed at start: replay gave some series new refs")
        if options.compaction_interval > 0:
            db._thread = threading.Thread(target=db._run, name="head-persister", daemon=True)
            db._thread.start()
        return db

    def close(self) -> None:
        """Stop the persister (letting a running persist finish), close the head and
        the blocks."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.head.close()
        with self._blocks_lock:
            for block in self._blocks:
                block.close()
            self._blocks = []

    # -- writing and reading ------------------------------------------------------------

    def append(self, batch: WriteBatch) -> AppendResult:
        """Store the valid samples of ``batch`` durably; see ``interface.Appendable``."""
        result = self.head.append(batch)
        if self.head.compactable():
            self._wake.set()
        return result

    def append_then(self, batch: WriteBatch,
                    done: Callable[[AppendResult | None, BaseException | None], None]) -> None:
        """``append`` without waiting for the fsync; see ``interface.Appendable``."""
        self.head.append_then(batch, done)
        if self.head.compactable():
            self._wake.set()

    @property
    def blocks(self) -> list[Block]:
        with self._blocks_lock:
            return list(self._blocks)

    def replace_blocks(self, new: BlockMeta | None, old: Sequence[Block]) -> None:
        """Serve the (durable) block ``new`` instead of the blocks ``old``, then delete
        those. Queries already reading an old block finish on it: its files are unlinked
        but stay mapped until the last reader lets go.

        ``new`` must have been made from ``old`` as they are now: when one of them got
        tombstones (or was replaced) since it was taken from ``blocks``, ``new`` may
        still hold deleted samples, so it is deleted instead and ``StorageError`` asks
        the caller to try again."""
        with self._maintenance:
            with self._blocks_lock:
                current = {id(b) for b in self._blocks}
            if new is not None and not all(id(b) in current for b in old):
                remove_block_dir(new.path)
                raise StorageError(f"blocks {', '.join(b.meta.ulid for b in old)} changed "
                                   f"while {new.ulid} was made from them (a deletion or "
                                   "another compaction); discarded it, try again")
            block = Block.open(new.path) if new is not None else None
            gone = {b.meta.ulid for b in old}
            with self._blocks_lock:
                kept = [b for b in self._blocks if b.meta.ulid not in gone]
                if block is not None:
                    kept.append(block)
                kept.sort(key=lambda b: (b.meta.min_time, b.meta.ulid))
                self._blocks = kept
            for b in old:
                remove_block_dir(b.meta.path)

    # -- deleting -----------------------------------------------------------------------

    def delete(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> None:
        """Delete the samples in ``[mint, maxt]`` (inclusive) of the series matching
        ``matchers``, in the blocks and in the head. Durable when this returns: block
        tombstones are written, head tombstones logged and synced."""
        if mint > maxt:
            return
        # Not while a head range is being written to a block (its tombstones would be
        # read before and truncated after) nor while blocks are being replaced.
        with self._compact_lock, self._maintenance:
            for block in self.blocks:
                if block.meta.min_time <= maxt and mint < block.meta.max_time:
                    after = block.delete(matchers, mint, maxt)
                    if after is not block:  # serve each block's new tombstones at once
                        with self._blocks_lock:
                            self._blocks = [after if b is block else b for b in self._blocks]
            if self.head.n_samples and self.head.min_time <= maxt \
                    and mint <= self.head.max_time:
                self.head.delete(matchers, mint, maxt)

    def clean_tombstones(self, rewrite: Callable[[Block], BlockMeta]) -> int:
        """Rewrite every block that has tombstones without its deleted samples and
        serve the result instead; return how many blocks were rewritten.

        ``rewrite(block)`` writes the new block (a compaction of that block alone: one
        level up with the same sources, so that after a crash the old block is the one
        deleted on start). A result without samples is dropped with the old block."""
        done = 0
        with self._maintenance:
            for block in self.blocks:
                if not len(block.tombstones):
                    continue
                meta = rewrite(block)
                if meta.num_samples == 0:
                    remove_block_dir(meta.path)
                    self.replace_blocks(None, [block])
                else:
                    self.replace_blocks(meta, [block])
                done += 1
                log.info("rewrote block %s without its deleted samples as %s", block.meta.ulid,
                         meta.ulid if meta.num_samples else "nothing")
        return done

    # -- snapshots ----------------------------------------------------------------------

    def snapshot(self, directory: str | os.PathLike[str], *, with_head: bool = True) -> None:
        """Make ``directory`` (new or empty) a data directory holding the store as it
        is: every block hard-linked (instant, no extra space), and unless ``with_head``
        is false the head's samples written as one more block, as Prometheus does."""
        target = Path(directory)
        if target.resolve() == self.directory.resolve():
            raise StorageError("cannot snapshot into the data directory itself")
        target.mkdir(parents=True, exist_ok=True)
        with self._compact_lock, self._maintenance:
            for block in self.blocks:
                _link_tree(block.meta.path, target / block.meta.ulid)
            fsync_dir(target)
            if not with_head:
                return
            head = self.head
            with head.lock:
                mint, maxt, empty = head.min_time, head.max_time, head.n_samples == 0
            if empty:
                return
            parts = _range_parts(head, mint, maxt + 1)
            if len(parts["chunk_mint"]):
                write_block(target, mint=mint, maxt=maxt + 1, **parts)

    def querier(self, mint: int = _MIN_TIME, maxt: int = _MAX_TIME) -> Querier:
        """A reader over the head and the blocks overlapping ``[mint, maxt]``."""
        return Querier(self.head, lambda: self.blocks, self._read_lock, mint, maxt)

    def select(self, matchers: Sequence[Matcher], mint: int, maxt: int,
               shard: Shard | None = None) -> SeriesSet:
        return self.querier(mint, maxt).select(matchers, mint, maxt, shard)

    # -- persisting the head ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.options.compaction_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.compact_head()
            except Exception:
                log.exception("writing the head's oldest range to a block failed; "
                              "will retry")

    def compact_head(self) -> list[BlockMeta]:
        """Persist the head's oldest block ranges while it spans more than one and a
        half ranges; return the new blocks."""
        made = []
        with self._compact_lock:
            while self.head.compactable() and not self._stop.is_set():
                made.append(self.persist_oldest_range())
        return made

    def persist_oldest_range(self) -> BlockMeta:
        """Write the head's oldest block range to a block, drop it from the head and
        checkpoint the WAL (steps 1 to 4 of the module docstring)."""
        head = self.head
        span = head.options.block_range_ms
        with head.lock:
            mint = head.min_time
            maxt = (mint // span + 1) * span
            head.min_valid_time = max(head.min_valid_time, maxt)
        parts = _range_parts(head, mint, maxt)
        meta = write_block(self.directory, mint=mint, maxt=maxt, **parts)
        block = Block.open(meta.path)
        with self._read_lock.exclusive():
            with self._blocks_lock:
                self._blocks.append(block)
                self._blocks.sort(key=lambda b: (b.meta.min_time, b.meta.ulid))
            head.truncate(maxt)
        self._checkpoint()
        log.info("wrote block %s [%d, %d): %d series, %d samples", meta.ulid, meta.min_time,
                 meta.max_time, meta.num_series, meta.num_samples)
        return meta

    def _checkpoint(self) -> None:
        head = self.head
        wal_dir = head.directory / "wal"
        with head.lock:
            if head.wal is None:
                return
            # Everything logged so far is in segments up to ``last``, and in the head.
            last = head.wal.cut_segment() - 1
            n_series = head.registry.n_series
            refs = head.series_to_checkpoint()
            keys = head.registry.keys(refs)
            stones = head.tombstones
        chunks, late = _gather(head, n_series, _MIN_TIME, _MAX_TIME)
        kept = np.zeros(n_series, dtype=bool)
        kept[refs] = True
        # A series idle at the cut that got samples since is logged again after it, with
        # those samples: its copies here would have no series record to belong to.
        chunks, late, stones = _of_series(kept, chunks, late, stones)
        checkpoint.write(wal_dir, last, _checkpoint_records(refs, keys, chunks, late, stones))
        head.wal.truncate_before(last + 1)
        checkpoint.remove_leftovers(wal_dir)


def _gather(head: Head, n_series: int, mint: int, maxt: int) -> tuple[ChunkBatch, SampleSet]:
    """Copies of the chunks and out-of-order samples of head series ``0 … n_series-1`` in
    ``[mint, maxt]``, taking the head's lock for one slice of series at a time so that
    appends wait for a slice, not for the whole head. ``pos`` in the result is the ref.

    Slices may be copied at different moments; that is safe for both callers: a range
    being persisted takes no more samples (its end is the head's minimum valid time), and
    a checkpoint needs only what was logged before it began."""
    parts: list[tuple[ChunkBatch, SampleSet]] = []
    for lo in range(0, n_series, _SERIES_PER_SLICE):
        refs = np.arange(lo, min(lo + _SERIES_PER_SLICE, n_series), dtype=np.int64)
        with head.lock:
            batch = head.chunks.gather(refs, mint, maxt)
            late = head.out_of_order.read(refs, mint, maxt)
        parts.append((ChunkBatch(refs[batch.pos], batch.mint, batch.maxt, batch.blob,
                                 batch.offsets), late))
    if not parts:
        empty = np.empty(0, np.int64)
        return (ChunkBatch(empty, empty, empty, np.empty(0, np.uint8), np.zeros(1, np.int64)),
                SampleSet(empty, empty, np.empty(0)))
    blob_sizes = [len(b.blob) for b, _ in parts]
    shift = np.cumsum([0] + blob_sizes[:-1])
    offsets = np.concatenate([np.zeros(1, np.int64)]
                             + [b.offsets[1:] + d for (b, _), d in zip(parts, shift)])
    batch = ChunkBatch(np.concatenate([b.pos for b, _ in parts]),
                       np.concatenate([b.mint for b, _ in parts]),
                       np.concatenate([b.maxt for b, _ in parts]),
                       np.concatenate([b.blob for b, _ in parts]), offsets)
    late = SampleSet(*(np.concatenate([getattr(x, f) for _, x in parts])
                       for f in ("refs", "timestamps", "values")))
    return batch, late


def _range_parts(head: Head, mint: int, maxt: int) -> dict[str, Any]:
    """The head's data in ``[mint, maxt)`` as ``write_block`` arguments, without deleted
    samples. Chunks never cross a block-range boundary, so a block range's chunks are
    taken whole (chunks reaching past another range, as a snapshot's, are cut); series
    with out-of-order samples in the range get their chunks rebuilt with those merged
    in."""
    with head.lock:
        n_series = head.registry.n_series
        stones = head.tombstones
    chunks, late = _gather(head, n_series, mint, maxt - 1)
    outside = (chunks.mint < mint) | (chunks.maxt >= maxt)
    if outside.any():
        edge = np.unique(chunks.pos[outside])
        n = len(edge)
        stones = stones.add(Tombstones.of(
            np.concatenate((edge, edge)),
            np.concatenate((np.full(n, _MIN_TIME), np.full(n, maxt))),
            np.concatenate((np.full(n, mint - 1), np.full(n, _MAX_TIME)))))
    chunks, late = without_deleted(stones, chunks.pos, chunks, late)
    series = chunks.pos
    blob, offsets = chunks.blob, chunks.offsets
    cmin, cmax = chunks.mint, chunks.maxt
    if len(late.refs):
        series, cmin, cmax, blob, offsets = rebuild_chunks(
            series, cmin, cmax, blob, offsets, np.isin(series, late.refs), late)
    present, chunk_series = np.unique(series, return_inverse=True)
    keys_blob, keys_offsets = head.registry_keys(present)
    return {
        "keys_blob": keys_blob, "keys_offsets": keys_offsets,
        "chunk_series": chunk_series.astype(np.int64), "chunk_mint": cmin, "chunk_maxt": cmax,
        "chunk_encoding": np.full(len(cmin), ENCODING_XOR, np.uint8),
        "chunk_blob": blob, "chunk_offsets": offsets,
    }


def _of_series(kept: np.ndarray, chunks: ChunkBatch, late: SampleSet, stones: Tombstones
               ) -> tuple[ChunkBatch, SampleSet, Tombstones]:
    """The chunks, out-of-order samples and tombstones of the series ``kept`` (a mask
    by ref)."""
    which = np.flatnonzero(kept[chunks.pos])
    if len(which) < chunks.n_chunks:
        blob, offsets = take_chunks(chunks.blob, chunks.offsets, which)
        chunks = ChunkBatch(chunks.pos[which], chunks.mint[which], chunks.maxt[which],
                            blob, offsets)
    keep = kept[late.refs]
    if not keep.all():
        late = SampleSet(late.refs[keep], late.timestamps[keep], late.values[keep])
    return chunks, late, stones.where(kept[stones.refs]) if len(stones) else stones


def _checkpoint_records(refs: np.ndarray, keys: tuple[np.ndarray, np.ndarray],
                        chunks: ChunkBatch, late: SampleSet, stones: Tombstones
                        ) -> Iterator[tuple[int, bytes]]:
    """SERIES records for every head series, then the head's chunks as CHUNKS records,
    its out-of-order samples as SAMPLES records and its tombstones as TOMBSTONES
    records, in slices that keep records moderate."""
    blob, offsets = keys
    for lo in range(0, len(refs), _SERIES_PER_RECORD):
        hi = min(lo + _SERIES_PER_RECORD, len(refs))
        yield record.SERIES, record.encode_series(refs[lo:hi], blob, offsets[lo:hi + 1])
    for lo in range(0, chunks.n_chunks, _CHUNKS_PER_RECORD):
        hi = min(lo + _CHUNKS_PER_RECORD, chunks.n_chunks)
        yield record.CHUNKS, record.encode_chunks(chunks.pos[lo:hi], chunks.blob,
                                                  chunks.offsets[lo:hi + 1])
    for lo in range(0, len(late.refs), _SAMPLES_PER_RECORD):
        sl = slice(lo, lo + _SAMPLES_PER_RECORD)
        yield record.SAMPLES, record.encode_samples(late.refs[sl], late.timestamps[sl],
                                                    late.values[sl])
    for lo in range(0, len(stones), _SAMPLES_PER_RECORD):
        sl = slice(lo, lo + _SAMPLES_PER_RECORD)
        yield record.TOMBSTONES, record.encode_tombstones(stones.refs[sl], stones.mint[sl],
                                                          stones.maxt[sl])


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every file under ``source`` to the same place under ``target``."""
    for root, _, files in os.walk(source):
        into = target / Path(root).relative_to(source)
        into.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.link(Path(root) / name, into / name)
        fsync_dir(into)


def _drop_compacted(blocks: list[Block]) -> list[Block]:
    """Blocks left over from a compaction that finished writing its result: every
    source of such a block is also a source of a later-level block, which replaces it."""
    kept = []
    for b in blocks:
        mine = set(b.meta.sources) or {b.meta.ulid}
        covered = any(o is not b and o.meta.level > b.meta.level
                      and mine <= set(o.meta.sources) for o in blocks)
        if covered:
            log.info("block %s was compacted into a later block; deleting it", b.meta.ulid)
            b.close()
            remove_block_dir(b.meta.path)
        else:
            kept.append(b)
    return kept


def _open_blocks(directory: Path) -> tuple[list[Block], list[str]]:
    """Open every complete block; delete unfinished ones (their data is still in the
    WAL or in the blocks they were compacted from) and those already compacted into
    another, and move corrupt ones to ``corrupted/``."""
    blocks: list[Block] = []
    problems: list[str] = []
    for name in sorted(os.listdir(directory)):
        path = directory / name
        if name.endswith(_CREATING) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            continue
        if not _BLOCK_NAME.fullmatch(name) or not path.is_dir():
            continue
        try:
            blocks.append(Block.open(path))
        except (CorruptionError, StorageError, OSError) as exc:
            aside = directory / "corrupted" / name
            problems.append(f"block {name} cannot be read ({exc}); moved to {aside}")
            log.error("%s", problems[-1])
            try:
                aside.parent.mkdir(exist_ok=True)
                os.rename(path, aside)
            except OSError as move_exc:
                raise StorageError(f"cannot move corrupt block {path} aside: {move_exc}") \
                    from move_exc
    blocks = _drop_compacted(blocks)
    blocks.sort(key=lambda b: (b.meta.min_time, b.meta.ulid))
    return blocks, problems
