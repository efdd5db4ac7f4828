"""Downsampling: old raw blocks become 5-minute aggregates, old 5-minute blocks 1-hour ones.

As in Thanos, each window of a series keeps ``count``, ``sum``, ``min``, ``max`` and a
reset-adjusted ``counter`` of the samples in it (``storage.aggregate``), so that
``rate``, ``*_over_time`` and plain selectors over weeks read one sample per window
instead of every scrape. Stale markers are left out of every aggregate.

A raw block is downsampled to 5 minutes once it ends ``after_5m_ms`` before the
reference time (Thanos: 40 hours), a 5-minute block to 1 hour once it ends
``after_1h_ms`` before it (Thanos: 10 days); 1-hour windows are built from the 5-minute
aggregates, so they do not need raw data that retention may already have deleted.
A downsampled block has its source's time range and sources, so a block already
downsampled is recognised, and when compaction later merges raw blocks that were
downsampled one by one, the merge is downsampled again and replaces their aggregates.

``downsample_due`` is the step the block maintainer runs after compaction; ``retain``
applies the downsampled tiers' own retention.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
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
from storage.downsampled import RESOLUTION_1H, RESOLUTION_5M, DownsampledStore

__all__ = ["DownsampleOptions", "downsample_block", "downsample_due", "retain"]

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_ALL = (np.iinfo(np.int64).min, np.iinfo(np.int64).max)
_SERIES_PER_SLICE = 1 << 14  # series decoded at once, to bound memory on large blocks


@dataclass(frozen=True)
class DownsampleOptions:
    """When blocks are downsampled and how long the aggregates are kept (0 = forever,
    Thanos's default). Ages count back from the reference time the maintainer passes
    (the newest sample in the store, as raw retention counts)."""

    after_5m_ms: int = 40 * HOUR_MS
    after_1h_ms: int = 10 * DAY_MS
    retention_5m_ms: int = 0
    retention_1h_ms: int = 0


def _covered(block: Block, tier: Sequence[Block]) -> bool:
    mine = set(block.meta.sources or (block.meta.ulid,))
    return any(mine <= set(other.meta.sources) for other in tier)


def downsample_due(db: Any, store: DownsampledStore, options: DownsampleOptions,
                   now_ms: int) -> list[BlockMeta]:
    """Downsample every block old enough and not yet downsampled: raw blocks of ``db``
    (anything with a ``blocks`` list, such as ``storage.db.DB``) to 5 minutes, then
    5-minute blocks to 1 hour. Returns the new blocks' metas. Each new block is durable
    and served before anything it replaces is deleted."""
    made = []
    for block in db.blocks:
        if block.meta.max_time <= now_ms - options.after_5m_ms \
                and not _covered(block, store.blocks(RESOLUTION_5M)):
            made.append(downsample_block(block, 0, RESOLUTION_5M, store))
    for block in store.blocks(RESOLUTION_5M):
        if block.meta.max_time <= now_ms - options.after_1h_ms \
                and not _covered(block, store.blocks(RESOLUTION_1H)):
            made.append(downsample_block(block, RESOLUTION_5M, RESOLUTION_1H, store))
    return made


def retain(store: DownsampledStore, options: DownsampleOptions, now_ms: int
           ) -> list[BlockMeta]:
    """Delete downsampled blocks past their tier's retention; return their metas."""
    return store.apply_retention(now_ms, {RESOLUTION_5M: options.retention_5m_ms,
                                          RESOLUTION_1H: options.retention_1h_ms})


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
                     store: DownsampledStore) -> BlockMeta:
    """Write the ``resolution`` aggregates of ``block`` (raw when ``source_resolution``
    is 0, else aggregates of that resolution) into ``store``."""
    if (block.meta.max_time - block.meta.min_time) // resolution + 1 >= MAX_SAMPLES_PER_CHUNK:
        raise ValueError(f"block {block.meta.ulid} spans too many windows for one chunk")
    parts: list[tuple[np.ndarray, ...]] = []
    for lo in range(0, block.n_series, _SERIES_PER_SLICE):
        ids = np.arange(lo, min(lo + _SERIES_PER_SLICE, block.n_series), dtype=np.int64)
        chunks = block.chunks(ids, *_ALL)
        if source_resolution:
            win = _aggregate_windows(chunks, ids, resolution, block.meta.max_time)
        else:
            win = _raw_windows(chunks, ids, resolution, block.meta.max_time)
        if len(win.series) == 0:
            continue
        blob, offsets = encode_aggregates(win.window_t, *win.columns, win.window_starts,
                                          win.counter_t, win.counter_v, win.counter_starts,
                                          win.last_raw)
        mint = np.minimum(win.window_t[win.window_starts[:-1]],
                          win.counter_t[win.counter_starts[:-1]])
        maxt = np.maximum(win.window_t[win.window_starts[1:] - 1],
                          win.counter_t[win.counter_starts[1:] - 1])
        parts.append((win.series, mint, maxt, blob, np.diff(offsets)))
    series = np.concatenate([p[0] for p in parts] or [np.empty(0, np.int64)])
    keys_blob, keys_offsets = block.series_keys(series)
    offsets = np.zeros(len(series) + 1, np.int64)
    np.cumsum(np.concatenate([p[4] for p in parts] or [np.empty(0, np.int64)]), out=offsets[1:])
    meta = store.write(
        resolution,
        keys_blob=keys_blob, keys_offsets=keys_offsets,
        chunk_series=np.arange(len(series), dtype=np.int64),
        chunk_mint=np.concatenate([p[1] for p in parts] or [np.empty(0, np.int64)]),
        chunk_maxt=np.concatenate([p[2] for p in parts] or [np.empty(0, np.int64)]),
        chunk_encoding=np.full(len(series), ENCODING_AGGREGATE, np.uint8),
        chunk_blob=np.concatenate([p[3] for p in parts] or [np.empty(0, np.uint8)]),
        chunk_offsets=offsets,
        mint=block.meta.min_time, maxt=block.meta.max_time, level=block.meta.level,
        sources=block.meta.sources or (block.meta.ulid,),
    )
    log.info("downsampled block %s to %d ms windows: %s, %d series, %d windows",
             block.meta.ulid, resolution, meta.ulid, meta.num_series, meta.num_samples)
    return meta


def _raw_windows(chunks: Any, ids: np.ndarray, resolution: int, block_end: int) -> _Windows:
    """Windows of raw samples: every sample counts once, stale markers not at all."""
    ts, vs, starts = chunkenc.decode_many(chunks.encoding, chunks.blob, chunks.offsets)
    owner = np.repeat(chunks.series, np.diff(starts))
    fresh = vs.view(np.uint64) != STALE_NAN_BITS
    owner, ts, vs = owner[fresh], ts[fresh], vs[fresh]
    run_starts = _run_starts(owner)
    counter = adjust_counters(run_starts, vs)
    last_raw = vs[run_starts[1:] - 1] if len(vs) else np.empty(0)
    return _windows(ids, owner, ts, (np.ones(len(vs)), vs, vs, vs), owner, ts, counter,
                    last_raw, resolution, block_end)


def _aggregate_windows(chunks: Any, ids: np.ndarray, resolution: int, block_end: int
                       ) -> _Windows:
    """Coarser windows of finer aggregates: counts and sums add up, minima and maxima
    of minima and maxima, the counter is read through (stitched across chunks)."""
    blob, offsets = chunks.blob, chunks.offsets
    cols = []
    for column in (Column.COUNT, Column.SUM, Column.MIN, Column.MAX):
        ts, vs, starts, _ = decode_column(blob, offsets, column)
        cols.append(vs)
    owner = np.repeat(chunks.series, np.diff(starts))
    c_ts, c_vs, c_starts, chunk_last = decode_column(blob, offsets, Column.COUNTER)
    c_owner = np.repeat(chunks.series, np.diff(c_starts))
    same = np.zeros(len(chunks.series), bool)
    same[1:] = chunks.series[1:] == chunks.series[:-1]
    first = c_vs[np.minimum(c_starts[:-1], max(len(c_vs) - 1, 0))] if len(c_vs) else \
        np.empty(0)
    stitch_counters(c_starts, same, first, chunk_last, c_vs)
    series_last_chunk = np.append(~same[1:], True)
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
