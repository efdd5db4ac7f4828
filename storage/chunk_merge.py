"""Rebuilding the chunks of some series: when out-of-order samples join a range being
written to a block, or when blocks that overlap in time are compacted together.

Chunks are columns (``series``, ``mint``, ``maxt``, and bytes ``blob[offsets[c]:
offsets[c+1]]``, XOR without the encoding byte). Series that need no rebuilding keep
their chunks byte for byte; the others are decoded, merged in time order with the first
copy of a timestamp winning (earlier chunks in the input first, extra samples last),
and re-encoded 120 samples a chunk.
"""

from __future__ import annotations

import numpy as np

from .samples import SampleSet
from .xor import decode_xor_many, encode_xor_many

__all__ = ["SAMPLES_PER_CHUNK", "rebuild_chunks", "take_chunks"]

SAMPLES_PER_CHUNK = 120


def take_chunks(blob: np.ndarray, offsets: np.ndarray, which: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """The chunks ``which`` of ``blob`` laid back to back, with their new offsets."""
    lengths = (offsets[1:] - offsets[:-1])[which]
    out_offsets = np.zeros(len(which) + 1, np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    total = int(out_offsets[-1])
    index = np.repeat(offsets[:-1][which] - out_offsets[:-1], lengths) + np.arange(total)
    return blob[index], out_offsets


def rebuild_chunks(series: np.ndarray, cmin: np.ndarray, cmax: np.ndarray,
                   blob: np.ndarray, offsets: np.ndarray, touched: np.ndarray,
                   extra: SampleSet | None = None) -> tuple[np.ndarray, ...]:
    """Chunks with those of the ``touched`` chunks' series merged (plus ``extra``
    samples, whose ``refs`` name series) and re-encoded; all sorted by (series, mint).
    Returns ``(series, mint, maxt, blob, offsets)``."""
    touched = touched | np.isin(series, series[touched])  # a series is rebuilt whole
    redo_blob, redo_offsets = take_chunks(blob, offsets, np.flatnonzero(touched))
    ts, vs, starts = decode_xor_many(redo_blob, redo_offsets)
    r = np.repeat(series[touched], np.diff(starts))
    if extra is not None and len(extra.refs):
        r = np.concatenate([r, extra.refs])
        ts = np.concatenate([ts, extra.timestamps])
        vs = np.concatenate([vs, extra.values])
    order = np.lexsort((np.arange(len(ts)), ts, r))
    r, ts, vs = r[order], ts[order], vs[order]
    first = np.ones(len(ts), bool)
    first[1:] = (r[1:] != r[:-1]) | (ts[1:] != ts[:-1])
    r, ts, vs = r[first], ts[first], vs[first]
    new_series = np.ones(len(r), bool)
    new_series[1:] = r[1:] != r[:-1]
    run_start = np.maximum.accumulate(np.where(new_series, np.arange(len(r)), 0))
    cut = new_series | ((np.arange(len(r)) - run_start) % SAMPLES_PER_CHUNK == 0)
    bounds = np.append(np.flatnonzero(cut), len(r))
    new_blob, new_offsets = encode_xor_many(ts, vs, bounds)
    kept = np.flatnonzero(~touched)
    kept_blob, kept_offsets = take_chunks(blob, offsets, kept)
    all_series = np.concatenate([series[kept], r[bounds[:-1]]])
    all_min = np.concatenate([cmin[kept], ts[bounds[:-1]]])
    all_max = np.concatenate([cmax[kept], ts[bounds[1:] - 1]])
    joined = np.concatenate([kept_blob, new_blob])
    joined_offsets = np.concatenate([kept_offsets[:-1], len(kept_blob) + new_offsets])
    order = np.lexsort((all_min, all_series))
    out_blob, out_offsets = take_chunks(joined, joined_offsets, order)
    return all_series[order], all_min[order], all_max[order], out_blob, out_offsets
