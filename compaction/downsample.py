"""Downsampling: old raw blocks become 5-minute aggregates, old 5-minute blocks 1-hour ones.

As in Thanos, each window of a series keeps ``count``, ``sum``, ``min``, ``max`` and a
reset-adjusted ``counter`` of the samples in it (``storage.aggregate``), so that
``rate``, ``*_over_time`` and plain selectors over weeks read one sample per window
instead of every scrape. Stale markers are left out of every aggregate.

A raw block is downsampled to 5 minutes once it ends ``after_5m_ms`` before the
reference time, a 5-minute block to 1 hour once it ends ``after_1h_ms`` before it; a
block that has ended and spans that long already is downsampled at once (Thanos's own
rule: 40 hours, 10 days). 1-hour windows are built from the 5-minute aggregates, so they
do not need raw data that retention may already have deleted.
A downsampled block has its source's time range and sources, so a block already
downsampled is recognised, and when compaction later merges raw blocks that were
downsampled one by one, the merge is downsampled again and replaces their aggregates.

Until a raw block is due, its part older than the age is downsampled ``step_ms`` at a
time, each step a 5-minute block of that part of the range with the raw block's
sources: otherwise a long query would read a whole block's span beyond the age raw
(up to 54 hours with 30 days of retention). The whole block's aggregates replace these
parts when it becomes due (``storage.downsampled.holds``); 5-minute parts wait for it
before becoming 1-hour windows.

Deleted data stays deleted: raw blocks are read without their deleted samples, 5-minute
blocks without their deleted windows, and a new block is served only if its source did
not get a deletion while it was made (``still_current``).

``downsample_due`` is the step the block maintainer runs after compaction (building the
blocks in its paced worker process), with ``rewrite_deleted`` (the compaction planner's
rule for blocks with many tombstones, applied to deleted windows); ``retain`` applies
the downsampled tiers' own retention; ``clean_tombstones`` rewrites every downsampled
block with deleted windows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from storage import chunkenc
from storage.aggregate import (
    ENCODING_AGGREGATE,
    STALE_NAN_BITS,
    Column,
    adjust_counters,
    decode_column,
    encode_aggregates,
    stitch_counters,
)
from storage.block import Block, BlockMeta
from storage.dense import MAX_SAMPLES_PER_CHUNK
from storage.downsampled import (
    RESOLUTION_1H,
    RESOLUTION_5M,
    RESOLUTIONS,
    DownsampledStore,
    holds,
    stage_block,
    surviving,
)
from storage.errors import StorageError
from storage.tombstones import Tombstones

from .planner import BlockSpan, tombstoned

__all__ = [
    "Builder",
    "DownsampleJob",
    "DownsampleOptions",
    "build_block",
    "clean_tombstones",
    "downsample_block",
    "downsample_due",
    "due",
    "retain",
    "rewrite_deleted",
    "still_current",
]

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_ALL = (np.iinfo(np.int64).min, np.iinfo(np.int64).max)
# Samples read at once: bounds memory on large blocks, and is the grain at which a
# metered block paces the work.
SLICE_SAMPLES = 1 << 20
_MAX_SERIES_PER_SLICE = 1 << 14
_NOTHING = Tombstones.empty()


@dataclass(frozen=True)
class DownsampleOptions:
    """When blocks are downsampled and how long the aggregates are kept (0 = forever,
    Thanos's default). Ages count back from the reference time the maintainer passes
    (the newest sample in the store, as raw retention counts)."""

    after_5m_ms: int = 12 * HOUR_MS  # Thanos: 40 h (see docs/downsampling.md)
    after_1h_ms: int = 10 * DAY_MS
    # Until a raw block is due, its part older than the age is downsampled in steps of
    # this (aligned to it): a long query reads raw data up to the age plus a step.
    # 0: whole blocks only.
    step_ms: int = 2 * HOUR_MS
    retention_5m_ms: int = 0
    retention_1h_ms: int = 0

    def __post_init__(self) -> None:
        if self.step_ms < 0:
            raise ValueError(f"downsampling step must not be negative: {self.step_ms} ms")


@dataclass(frozen=True)
class DownsampleJob:
    """A block to downsample: ``source`` (raw when ``source_resolution`` is 0) to
    ``resolution``, leaving out ``deleted``, the windows deleted from a downsampled
    source (a raw source's own tombstones apply as it is read). ``part``, for a raw
    source, is the time range ``[mint, maxt)`` to downsample, None for all of it."""

    source: Block
    source_resolution: int
    resolution: int
    deleted: Tombstones
    part: tuple[int, int] | None = None


Builder = Callable[[DownsampleJob], BlockMeta]
"""Stages the block of a job (``storage.downsampled.stage_block``) and returns its meta."""


def due(db: Any, store: DownsampledStore, options: DownsampleOptions, now_ms: int,
        resolution: int) -> list[DownsampleJob]:
    """The blocks old enough to become ``resolution`` windows and not yet downsampled:
    raw blocks of ``db`` (anything with a ``blocks`` list, such as ``storage.db.DB``)
    for 5 minutes, and the part older than the age of the raw blocks not yet due;
    5-minute blocks for 1 hour, but for parts of raw blocks still to be done whole."""
    tier = store.blocks(resolution)
    if resolution == RESOLUTION_5M:
        step = options.step_ms
        cut = (now_ms - options.after_5m_ms) // step * step if step else None
        jobs = []
        for b in db.blocks:
            if any(holds(o.meta, b.meta) for o in tier):
                continue
            if _old_enough(b.meta, now_ms, options.after_5m_ms):
                jobs.append(DownsampleJob(b, 0, resolution, _NOTHING))
            elif cut is not None and (start := _downsampled_until(b.meta, tier)) < cut:
                jobs.append(DownsampleJob(b, 0, resolution, _NOTHING, (start, cut)))
        return jobs
    raw = [b.meta for b in db.blocks]
    return [DownsampleJob(b, RESOLUTION_5M, resolution, store.deletions(b))
            for b in store.blocks(RESOLUTION_5M)
            if _old_enough(b.meta, now_ms, options.after_1h_ms)
            and not any(holds(o.meta, b.meta) for o in tier)
            and not any(_part_of(b.meta, m) for m in raw)]


def _downsampled_until(meta: BlockMeta, tier: Sequence[Block]) -> int:
    """Where the downsampled blocks of ``tier`` stop covering the raw block of
    ``meta`` without a gap, from its start."""
    cursor = meta.min_time
    for o in tier:  # oldest first
        if o.meta.min_time <= cursor < o.meta.max_time:
            cursor = o.meta.max_time
    return cursor


def _part_of(part: BlockMeta, raw: BlockMeta) -> bool:
    """Whether ``part`` holds only a part of the raw block ``raw``, which will replace
    it once due."""
    return holds(raw, part) and raw.max_time - raw.min_time > part.max_time - part.min_time


def _old_enough(meta: BlockMeta, now_ms: int, age: int) -> bool:
    """Whether a block is due: it ended ``age`` before ``now_ms``, or it has ended and
    spans ``age`` or more (Thanos's rule: compaction made it as large as the aggregates
    need, so waiting for its end to age only keeps its data raw longer; with blocks a
    couple of days wide that wait is most of the young data a long query reads raw)."""
    return meta.max_time <= now_ms - age \
        or (meta.max_time <= now_ms and meta.max_time - meta.min_time >= age)


def still_current(job: DownsampleJob, db: Any, store: DownsampledStore) -> bool:
    """Whether ``job``'s source is served as it was when the job was made: no deletion
    and no rewrite since (a deletion serves a new raw ``Block`` value, a new
    ``deletions`` value for a downsampled one)."""
    if job.source_resolution == 0:
        return any(b is job.source for b in db.blocks)
    return any(b is job.source for b in store.blocks(job.source_resolution)) \
        and store.deletions(job.source) is job.deleted


def downsample_due(db: Any, store: DownsampledStore, options: DownsampleOptions,
                   now_ms: int, build: Builder | None = None) -> list[BlockMeta]:
    """Downsample every block old enough and not yet downsampled: raw blocks to 5
    minutes, then 5-minute blocks (those just made included) to 1 hour. Returns the new
    blocks' metas.

    ``build`` stages each block (by default ``build_block`` in this thread; the
    maintainer runs it in its paced worker process). A block is served only if its
    source did not change while it was built, so that a deletion coming in meanwhile
    is never undone; otherwise it is dropped and made again on the next call. Each new
    block is durable and served before anything it replaces is deleted."""
    build = build or _builder(store)
    return [meta for resolution in RESOLUTIONS
            for meta in _serve(due(db, store, options, now_ms, resolution), db, store, build)]


def rewrite_deleted(db: Any, store: DownsampledStore, block_ranges: Sequence[int],
                    build: Builder | None = None) -> list[BlockMeta]:
    """Rewrite without their deleted windows the downsampled blocks that the compaction
    planner would rewrite for their tombstones if they were raw (``planner.tombstoned``,
    given its ``block_ranges``), so that deleted data leaves the disk without waiting
    for ``clean_tombstones``. Built and served as ``downsample_due`` does, one level up;
    returns the new blocks' metas."""
    jobs = []
    for resolution in RESOLUTIONS:
        for b in store.blocks(resolution):
            stones = store.deletions(b)
            span = BlockSpan(b.meta.ulid, b.meta.min_time, b.meta.max_time,
                             b.meta.num_series, len(stones))
            if len(stones) and tombstoned(span, block_ranges):
                jobs.append(DownsampleJob(b, resolution, resolution, stones))
    return _serve(jobs, db, store, build or _builder(store))


def _builder(store: DownsampledStore) -> Builder:
    return lambda job: build_block(job.source, job.source_resolution, job.resolution,
                                   store.directory, deleted=job.deleted, part=job.part)


def _serve(jobs: Sequence[DownsampleJob], db: Any, store: DownsampledStore,
           build: Builder) -> list[BlockMeta]:
    """Build each job's block and serve it if its source is still current."""
    made = []
    for job in jobs:
        def current(job: DownsampleJob = job) -> bool:
            return still_current(job, db, store)

        try:
            staged = build(job)
        except StorageError:
            if current():
                raise
            continue  # the source was replaced while it was read: its successor is due
        meta = store.publish(staged, job.resolution, current)
        if meta is not None:
            made.append(meta)
    return made


def retain(store: DownsampledStore, options: DownsampleOptions, now_ms: int
           ) -> list[BlockMeta]:
    """Delete downsampled blocks past their tier's retention; return their metas."""
    return store.apply_retention(now_ms, {RESOLUTION_5M: options.retention_5m_ms,
                                          RESOLUTION_1H: options.retention_1h_ms})


def clean_tombstones(store: DownsampledStore) -> int:
    """Rewrite every downsampled block with deleted windows without them (in this
    thread, as ``clean_tombstones`` of the raw store); return how many."""
    return store.clean_tombstones(lambda block, resolution, deleted: build_block(
        block, resolution, resolution, store.directory, deleted=deleted))


@dataclass
class _Windows:
    """Aggregates of one slice of series: windows and counter samples per series."""

    series: np.ndarray  # int64, block-local ids, one per output chunk
    window_t: np.ndarray
    columns: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    window_starts: np.ndarray
    counter_t: np.ndarray
    counter_v: np.ndarray
    counter_starts: np.ndarray
    last_raw: np.ndarray


def downsample_block(block: Block, source_resolution: int, resolution: int,
                     store: DownsampledStore) -> BlockMeta | None:
    """Write the ``resolution`` aggregates of ``block`` (raw when ``source_resolution``
    is 0, else aggregates of that resolution, without their deleted windows) into
    ``store`` and serve them."""
    deleted = store.deletions(block) if source_resolution else _NOTHING
    return store.publish(build_block(block, source_resolution, resolution, store.directory,
                                     deleted=deleted), resolution)


def build_block(block: Block, source_resolution: int, resolution: int, directory: Path, *,
                deleted: Tombstones = _NOTHING, part: tuple[int, int] | None = None,
                slice_samples: int = SLICE_SAMPLES) -> BlockMeta:
    """Stage (``storage.downsampled.stage_block``) the ``resolution`` aggregates of
    ``block`` (raw when ``source_resolution`` is 0, else aggregates of that resolution)
    for the store at ``directory``, leaving out the windows ``deleted`` names (series by
    ordinal). At the source's own resolution this rewrites it without them, one
    compaction level up (so that after a crash the original is the one deleted).
    ``part = (mint, maxt)`` (raw blocks only) limits it to the samples in
    ``[mint, maxt)``, which becomes the new block's range.

    Series are read in slices of about ``slice_samples`` samples, which bounds memory
    and lets a metered block pace the work slice by slice."""
    start, end = part or (block.meta.min_time, block.meta.max_time)
    if part is not None and (source_resolution or not
                             block.meta.min_time <= start < end <= block.meta.max_time):
        raise ValueError(f"part [{start}, {end}) of block {block.meta.ulid} cannot be "
                         "downsampled on its own")
    if (end - start) // resolution + 1 >= MAX_SAMPLES_PER_CHUNK:
        raise ValueError(f"block {block.meta.ulid} spans too many windows for one chunk")
    per_series = block.meta.num_samples / max(block.meta.num_series, 1)
    step = max(1, min(_MAX_SERIES_PER_SLICE, int(slice_samples / max(per_series, 1.0))))
    slices: list[tuple[np.ndarray, ...]] = []
    for lo in range(0, block.n_series, step):
        ids = np.arange(lo, min(lo + step, block.n_series), dtype=np.int64)
        if source_resolution:
            win = _aggregate_windows(block.chunks(ids, *_ALL), ids, resolution, end, deleted)
        else:
            win = _raw_windows(block.chunks(ids, start, end - 1), ids, resolution, start, end)
        if len(win.series) == 0:
            continue
        blob, offsets = encode_aggregates(win.window_t, *win.columns, win.window_starts,
                                          win.counter_t, win.counter_v, win.counter_starts,
                                          win.last_raw)
        mint = np.minimum(win.window_t[win.window_starts[:-1]],
                          win.counter_t[win.counter_starts[:-1]])
        maxt = np.maximum(win.window_t[win.window_starts[1:] - 1],
                          win.counter_t[win.counter_starts[1:] - 1])
        slices.append((win.series, mint, maxt, blob, np.diff(offsets)))
    series = np.concatenate([p[0] for p in slices] or [np.empty(0, np.int64)])
    keys_blob, keys_offsets = block.series_keys(series)
    offsets = np.zeros(len(series) + 1, np.int64)
    np.cumsum(np.concatenate([p[4] for p in slices] or [np.empty(0, np.int64)]), out=offsets[1:])
    meta = stage_block(
        directory, resolution,
        keys_blob=keys_blob, keys_offsets=keys_offsets,
        chunk_series=np.arange(len(series), dtype=np.int64),
        chunk_mint=np.concatenate([p[1] for p in slices] or [np.empty(0, np.int64)]),
        chunk_maxt=np.concatenate([p[2] for p in slices] or [np.empty(0, np.int64)]),
        chunk_encoding=np.full(len(series), ENCODING_AGGREGATE, np.uint8),
        chunk_blob=np.concatenate([p[3] for p in slices] or [np.empty(0, np.uint8)]),
        chunk_offsets=offsets,
        mint=start, maxt=end, level=block.meta.level + (source_resolution == resolution),
        sources=block.meta.sources or (block.meta.ulid,),
    )
    log.info("downsampled block %s to %d ms windows: %s, %d series, %d windows",
             block.meta.ulid, resolution, meta.ulid, meta.num_series, meta.num_samples)
    return meta


def _raw_windows(chunks: Any, ids: np.ndarray, resolution: int, mint: int, maxt: int
                 ) -> _Windows:
    """Windows of the raw samples in ``[mint, maxt)``: every sample counts once, stale
    markers not at all."""
    ts, vs, starts = chunkenc.decode_many(chunks.encoding, chunks.blob, chunks.offsets)
    owner = np.repeat(chunks.series, np.diff(starts))
    keep = (vs.view(np.uint64) != STALE_NAN_BITS) & (ts >= mint) & (ts < maxt)
    owner, ts, vs = owner[keep], ts[keep], vs[keep]
    run_starts = _run_starts(owner)
    counter = adjust_counters(run_starts, vs)
    last_raw = vs[run_starts[1:] - 1] if len(vs) else np.empty(0)
    return _windows(ids, owner, ts, (np.ones(len(vs)), vs, vs, vs), owner, ts, counter,
                    last_raw, resolution, maxt)


def _aggregate_windows(chunks: Any, ids: np.ndarray, resolution: int, block_end: int,
                       deleted: Tombstones) -> _Windows:
    """Coarser windows of finer aggregates, the ``deleted`` windows left out: counts and
    sums add up, minima and maxima of minima and maxima, the counter is read through
    (stitched across chunks)."""
    blob, offsets = chunks.blob, chunks.offsets
    refs = ids[chunks.series]
    cols = []
    for column in (Column.COUNT, Column.SUM, Column.MIN, Column.MAX):
        ts, vs, starts, _ = decode_column(blob, offsets, column)
        cols.append(vs)
    c_ts, c_vs, c_starts, chunk_last = decode_column(blob, offsets, Column.COUNTER)
    first = np.where(c_starts[1:] > c_starts[:-1],
                     c_vs[np.minimum(c_starts[:-1], max(len(c_vs) - 1, 0))], np.nan) \
        if len(c_vs) else np.full(len(chunk_last), np.nan)
    if len(deleted):
        alive, starts, _, _ = surviving(deleted, refs, ts, starts)
        ts, cols = ts[alive], [v[alive] for v in cols]
        alive, c_starts, first_kept, last_kept = surviving(deleted, refs, c_ts, c_starts)
        c_ts, c_vs = c_ts[alive], c_vs[alive]
        first = np.where(first_kept, first, np.nan)
        chunk_last = np.where(last_kept, chunk_last, np.nan)
    owner = np.repeat(chunks.series, np.diff(starts))
    c_owner = np.repeat(chunks.series, np.diff(c_starts))
    same = np.zeros(len(chunks.series), bool)
    same[1:] = chunks.series[1:] == chunks.series[:-1]
    stitch_counters(c_starts, same, first, chunk_last, c_vs)
    # The header of a series' new chunk keeps the raw value its last source chunk ends
    # with (NaN, unknown, when that chunk's last window was deleted).
    with_samples = c_starts[1:] > c_starts[:-1]
    ends = np.flatnonzero(with_samples)
    series_last_chunk = ends[np.append(chunks.series[ends][1:] != chunks.series[ends][:-1],
                                       True)] if len(ends) else ends
    return _windows(ids, owner, ts, (cols[0], cols[1], cols[2], cols[3]), c_owner, c_ts, c_vs,
                    chunk_last[series_last_chunk], resolution, block_end)


def _run_starts(owner: np.ndarray) -> np.ndarray:
    """Starts of the runs of equal values in ``owner``, with the end appended."""
    brk = np.ones(len(owner), bool)
    brk[1:] = owner[1:] != owner[:-1]
    return np.append(np.flatnonzero(brk), len(owner)).astype(np.int64)


def _windows(ids: np.ndarray, owner: np.ndarray, ts: np.ndarray,
             columns: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
             c_owner: np.ndarray, c_ts: np.ndarray, c_vs: np.ndarray, last_raw: np.ndarray,
             resolution: int, block_end: int) -> _Windows:
    """Aggregate samples grouped by series (``owner``, positions in ``ids``) into
    windows: one chunk per series. The window column is stamped at the window's last
    millisecond (inside the block); the counter keeps each series' first sample and the
    last one of every window."""
    if len(ts) == 0:
        empty = np.empty(0, np.int64)
        zero = np.zeros(1, np.int64)
        return _Windows(empty, empty, (np.empty(0),) * 4, zero, empty, np.empty(0), zero,
                        np.empty(0))
    window = ts // resolution
    brk = np.ones(len(ts), bool)
    brk[1:] = (owner[1:] != owner[:-1]) | (window[1:] != window[:-1])
    at = np.flatnonzero(brk)
    window_t = np.minimum(window[at] * resolution + resolution - 1, block_end - 1)
    count, total, low, high = columns
    aggregated = (np.add.reduceat(count, at), np.add.reduceat(total, at),
                  np.fmin.reduceat(low, at), np.fmax.reduceat(high, at))
    window_starts = _run_starts(owner[at])
    c_window = c_ts // resolution
    c_brk = np.ones(len(c_ts), bool)
    c_brk[1:] = (c_owner[1:] != c_owner[:-1]) | (c_window[1:] != c_window[:-1])
    series_last = _run_starts(c_owner)[1:] - 1
    picks = np.union1d(np.flatnonzero(c_brk), series_last)
    counter_starts = _run_starts(c_owner[picks])
    return _Windows(ids[owner[at][window_starts[:-1]]], window_t, aggregated, window_starts,
                    c_ts[picks], c_vs[picks], counter_starts, last_raw)
