"""Rebuilding the chunks of some series: when out-of-order samples join a range being
written to a block, when blocks that overlap in time are compacted together, when
compaction re-encodes densely, or when dense chunks must be served as XOR.

Chunks are columns (``series``, ``mint``, ``maxt``, and bytes ``blob[offsets[c]:
offsets[c+1]]`` without the encoding byte, XOR unless an ``encoding`` column says
otherwise). Series that need no rebuilding keep their chunks byte for byte; the others
are decoded, merged in time order with the first copy of a timestamp winning (earlier
chunks in the input first, extra samples last), and re-encoded: XOR 120 samples a chunk,
or dense in near-equal chunks of up to 2048.
"""

from __future__ import annotations

import numpy as np

from . import chunkenc
from .dense import ENCODING_DENSE, TARGET_SAMPLES_PER_CHUNK, encode_dense_many
from .samples import SampleSet
from .xor import ENCODING_XOR, encode_xor_many

__all__ = ["SAMPLES_PER_CHUNK", "encode_series", "rebuild_chunks", "take_chunks"]

# zstd level of dense chunks written by compaction: near the best size at several times
# the encoding speed of the highest levels (see docs/format.md, "Dense chunk").
DENSE_LEVEL = 9

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
                   extra: SampleSet | None = None, encoding: np.ndarray | None = None
                   ) -> tuple[np.ndarray, ...]:
    """Chunks with those of the ``touched`` chunks' series merged (plus ``extra``
    samples, whose ``refs`` name series) and re-encoded as XOR; all sorted by (series,
    mint). ``encoding`` gives each input chunk's encoding (XOR when None). Returns
    ``(series, mint, maxt, blob, offsets)``; every output chunk is XOR when the untouched
    input chunks are."""
    touched = touched | np.isin(series, series[touched])  # a series is rebuilt whole
    which = np.flatnonzero(touched)
    redo_blob, redo_offsets = take_chunks(blob, offsets, which)
    kinds = np.full(len(which), ENCODING_XOR, np.uint8) if encoding is None else encoding[which]
    ts, vs, starts = chunkenc.decode_many(kinds, redo_blob, redo_offsets)
    r = np.repeat(series[touched], np.diff(starts))
    if extra is not None and len(extra.refs):
        r = np.concatenate([r, extra.refs])
        ts = np.concatenate([ts, extra.timestamps])
        vs = np.concatenate([vs, extra.values])
    r, ts, vs = merge_samples(r, ts, vs)
    new_series, new_min, new_max, _, new_blob, new_offsets = encode_series(r, ts, vs, dense=False)
    kept = np.flatnonzero(~touched)
    kept_blob, kept_offsets = take_chunks(blob, offsets, kept)
    all_series = np.concatenate([series[kept], new_series])
    all_min = np.concatenate([cmin[kept], new_min])
    all_max = np.concatenate([cmax[kept], new_max])
    joined = np.concatenate([kept_blob, new_blob])
    joined_offsets = np.concatenate([kept_offsets[:-1], len(kept_blob) + new_offsets])
    order = np.lexsort((all_min, all_series))
    out_blob, out_offsets = take_chunks(joined, joined_offsets, order)
    return all_series[order], all_min[order], all_max[order], out_blob, out_offsets


def merge_samples(series: np.ndarray, ts: np.ndarray, vs: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples sorted by (series, timestamp), the first copy of a timestamp kept."""
    order = np.lexsort((np.arange(len(ts)), ts, series))
    series, ts, vs = series[order], ts[order], vs[order]
    first = np.ones(len(ts), bool)
    first[1:] = (series[1:] != series[:-1]) | (ts[1:] != ts[:-1])
    return series[first], ts[first], vs[first]


def encode_series(series: np.ndarray, ts: np.ndarray, vs: np.ndarray, *, dense: bool
                  ) -> tuple[np.ndarray, ...]:
    """Chunks of samples sorted by (series, timestamp): XOR 120 samples a chunk, or dense
    in near-equal chunks of up to 2048 samples. Returns ``(series, mint, maxt,
    encoding, blob, offsets)``."""
    n = len(ts)
    new_series = np.ones(n, bool)
    new_series[1:] = series[1:] != series[:-1]
    run_start = np.flatnonzero(new_series)
    run_len = np.diff(np.append(run_start, n))
    target = TARGET_SAMPLES_PER_CHUNK if dense else SAMPLES_PER_CHUNK
    pieces = -(-run_len // target)  # chunks per series
    size = -(-run_len // pieces) if dense else np.full(len(run_len), target)
    # Within a series, chunk k starts at k * size (the last one shorter).
    first_piece = np.cumsum(pieces) - pieces
    piece_series = np.repeat(np.arange(len(run_len)), pieces)
    k = np.arange(int(pieces.sum())) - first_piece[piece_series]
    starts = run_start[piece_series] + k * size[piece_series]
    bounds = np.append(starts, n).astype(np.int64)
    if dense:
        blob, offsets = encode_dense_many(ts, vs, bounds, level=DENSE_LEVEL)
        kind = ENCODING_DENSE
    else:
        blob, offsets = encode_xor_many(ts, vs, bounds)
        kind = ENCODING_XOR
    return (series[starts], ts[starts], ts[bounds[1:] - 1],
            np.full(len(starts), kind, np.uint8), blob, offsets)
