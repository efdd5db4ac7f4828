"""Merging blocks into one.

Series are matched across the source blocks by their label sets. With ``dense`` (the
default for compacted data), every series is decoded, merged in time order with the
first copy of a timestamp kept (sources in time order), and re-encoded in the dense
chunk encoding (``storage.dense``), several times smaller than XOR on typical metrics,
under the compact index format (``storage.block_index``): Prometheus cannot read such a
block whatever its index, so the index need not be Prometheus's either. Without it, a
series' XOR chunks are carried over byte for byte where the sources do not overlap for
it, and re-encoded as XOR where they do, so the block (index format 2) stays readable by
Prometheus and its tools. The result is written as a new block whose level is one above
its highest source and whose sources are theirs together; deleting the sources is the
caller's job, once the new block is durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from storage import chunkenc
from storage.block import Block, BlockMeta, ChunkSet, write_block
from storage.chunk_merge import encode_series, merge_samples, rebuild_chunks, take_chunks
from storage.series import SeriesRegistry
from storage.xor import ENCODING_XOR

__all__ = ["compact"]

_ALL = (np.iinfo(np.int64).min, np.iinfo(np.int64).max)

# Samples decoded at once while merging: series are merged in slices of about this many
# samples, so that compacting a day of a large fleet (hundreds of millions of samples)
# holds a few hundred MiB of decoded samples rather than the whole range.
SLICE_SAMPLES = 8_000_000


def compact(parent: Path, blocks: Sequence[Block], *, dense: bool = True,
            slice_samples: int = SLICE_SAMPLES) -> BlockMeta:
    """Write one block holding every sample of ``blocks`` under ``parent``."""
    ordered = sorted(blocks, key=lambda b: (b.meta.min_time, b.meta.ulid))
    registry = SeriesRegistry()
    members: list[np.ndarray] = []  # per block: the merged id of each of its series
    for block in ordered:
        ids = np.arange(block.n_series, dtype=np.int64)
        labels = block.symbol_labels(ids)
        members.append(registry.resolve_labels(labels, np.full(labels.n_symbols, -1, np.int32)))
    n_series = registry.n_series
    per_series = sum(b.meta.num_samples for b in ordered) / max(n_series, 1)
    step = max(1, int(slice_samples / max(per_series, 1.0)))
    parts = [_merge_slice(ordered, members, lo, min(lo + step, n_series), dense)
             for lo in range(0, n_series, step)]
    s = np.concatenate([p.series for p in parts] or [np.empty(0, np.int64)])
    blob = np.concatenate([p.blob for p in parts] or [np.empty(0, np.uint8)])
    lengths = np.concatenate([np.diff(p.offsets) for p in parts] or [np.empty(0, np.int64)])
    offsets = np.zeros(len(s) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    present, chunk_series = np.unique(s, return_inverse=True)
    keys_blob, keys_offsets = registry.keys(present)
    return write_block(
        parent, keys_blob=keys_blob, keys_offsets=keys_offsets,
        chunk_series=chunk_series.astype(np.int64),
        chunk_mint=np.concatenate([p.mint for p in parts] or [np.empty(0, np.int64)]),
        chunk_maxt=np.concatenate([p.maxt for p in parts] or [np.empty(0, np.int64)]),
        chunk_encoding=np.concatenate([p.encoding for p in parts] or [np.empty(0, np.uint8)]),
        chunk_blob=blob, chunk_offsets=offsets,
        mint=min(b.meta.min_time for b in ordered),
        maxt=max(b.meta.max_time for b in ordered),
        level=max(b.meta.level for b in ordered) + 1,
        sources=sorted({s for b in ordered for s in (b.meta.sources or (b.meta.ulid,))}),
        compact_index=dense)


def _merge_slice(blocks: Sequence[Block], members: Sequence[np.ndarray], first: int,
                 stop: int, dense: bool) -> ChunkSet:
    """The merged chunks of the series with merged ids in ``[first, stop)`` (their
    ``series`` are those ids, ascending)."""
    series, cmin, cmax, enc, blobs, lengths = [], [], [], [], [], []
    for block, merged in zip(blocks, members):
        local = np.flatnonzero((merged >= first) & (merged < stop))
        if len(local) == 0:
            continue
        chunks = block.chunks(local, *_ALL)
        series.append(merged[local][chunks.series])
        cmin.append(chunks.mint)
        cmax.append(chunks.maxt)
        enc.append(chunks.encoding)
        blobs.append(chunks.blob)
        lengths.append(np.diff(chunks.offsets))
    s = np.concatenate(series or [np.empty(0, np.int64)])
    lo = np.concatenate(cmin or [np.empty(0, np.int64)])
    hi = np.concatenate(cmax or [np.empty(0, np.int64)])
    kinds = np.concatenate(enc or [np.empty(0, np.uint8)])
    blob = np.concatenate(blobs or [np.empty(0, np.uint8)])
    offsets = np.zeros(len(s) + 1, np.int64)
    np.cumsum(np.concatenate(lengths or [np.empty(0, np.int64)]), out=offsets[1:])
    order = np.lexsort((lo, s))  # stable: sources in time order for equal starts
    s, lo, hi, kinds = s[order], lo[order], hi[order], kinds[order]
    blob, offsets = take_chunks(blob, offsets, order)
    if dense:
        ts, vs, starts = chunkenc.decode_many(kinds, blob, offsets)
        owner, ts, vs = merge_samples(np.repeat(s, np.diff(starts)), ts, vs)
        return ChunkSet(*encode_series(owner, ts, vs, dense=True))
    # Sorted by start, a series' chunks overlap somewhere iff two neighbours do.
    redo = np.zeros(len(s), bool)
    redo[1:] = (s[1:] == s[:-1]) & (lo[1:] <= hi[:-1])
    redo |= kinds != ENCODING_XOR
    if redo.any():
        s, lo, hi, blob, offsets = rebuild_chunks(s, lo, hi, blob, offsets, redo,
                                                  encoding=kinds)
    return ChunkSet(s, lo, hi, np.full(len(lo), ENCODING_XOR, np.uint8), blob, offsets)
