"""One kernel call for the samples of a few series in a time range: their chunk records
read and checked (``_block_kernels.read_chunks``; the head copies its chunks out
itself), decoded (``_xor_kernels``) and cut to the range (``_merge_kernels.trim_runs``).
For a query over one series, the calls between these steps cost more than the steps
themselves."""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _block_kernels as bk
from . import _merge_kernels as mk
from . import _xor_kernels as xk
from .xor import ENCODING_XOR

__all__ = ["decode_xor_range", "read_xor_range", "series_of_runs"]


@njit(cache=True, nogil=True)
def read_xor_range(seg, series, cmin, cmax, offs, mint, maxt):  # pragma: no cover - compiled
    """The samples in ``[mint, maxt]`` of those of the XOR chunk records at ``offs`` in
    one segment (of series ``series``, covering ``[cmin, cmax]``) that overlap it, a
    run per chunk, and the span of bytes read (as ``read_chunks``). Returns
    ``(run_series, starts, ts, vs, first, end, ok)``; ``ok`` is False, with nothing
    read, when a record is damaged or in another encoding: the caller then reads them
    the general way, which names the damage."""
    n = 0
    for i in range(len(offs)):
        if cmin[i] <= maxt and cmax[i] >= mint:
            n += 1
    picked = np.empty(n, np.int64)
    n = 0
    for i in range(len(offs)):
        if cmin[i] <= maxt and cmax[i] >= mint:
            picked[n] = i
            n += 1
    encoding, blob, at, first, end, status, _ = bk.read_chunks(seg, offs[picked])
    if status != bk.OK:
        return series[picked], at, np.empty(0, np.int64), np.empty(0, np.float64), 0, 0, False
    for i in range(n):
        if encoding[i] != ENCODING_XOR:
            return (series[picked], at, np.empty(0, np.int64), np.empty(0, np.float64), first,
                    end, False)
    ts, vs, starts, ok = decode_xor_range(blob, at, mint, maxt)
    return series[picked], starts, ts, vs, first, end, ok


@njit(cache=True, nogil=True)
def decode_xor_range(blob, at, mint, maxt):  # pragma: no cover - compiled
    """The samples in ``[mint, maxt]`` of the XOR chunks ``blob[at[i]:at[i+1]]``, a run
    per chunk. Returns ``(ts, vs, starts, ok)``; ``ok`` is False, with nothing decoded,
    for a malformed chunk (``xor.decode_xor_many`` names the problem)."""
    n = len(at) - 1
    starts = np.zeros(n + 1, np.int64)
    counts, status, _ = xk.header_counts(blob, at)
    if status != xk.OK:
        return np.empty(0, np.int64), np.empty(0, np.float64), starts, False
    for i in range(n):
        starts[i + 1] = starts[i] + counts[i]
    ts = np.empty(starts[n], np.int64)
    vs = np.empty(starts[n], np.float64)
    status, _, _ = xk.decode_many(blob, at, counts, starts, ts.view(np.uint64),
                                  vs.view(np.uint64))
    if status != xk.OK:
        return np.empty(0, np.int64), np.empty(0, np.float64), starts, False
    lo, hi = mk.trim_runs(ts, starts[:-1], starts[1:], mint, maxt)
    kept = np.zeros(n + 1, np.int64)
    for i in range(n):
        kept[i + 1] = kept[i] + hi[i] - lo[i]
    if kept[n] == starts[n]:
        return ts, vs, starts, True
    out_ts, out_vs = mk.gather_runs(ts, vs, lo, hi - lo)
    return out_ts, out_vs, kept, True


@njit(cache=True, nogil=True)
def series_of_runs(pos, starts):  # pragma: no cover - compiled
    """Runs ``starts[c]:starts[c+1]`` of the chunks of the series at positions ``pos``
    (chunks grouped by series, in time order) as runs per series: the positions of the
    series that have samples, and where each one's samples begin (and the last end)."""
    n = len(pos)
    present = np.empty(n, np.int64)
    bounds = np.empty(n + 1, np.int64)
    k = 0
    for c in range(n):
        if starts[c + 1] > starts[c] and (k == 0 or present[k - 1] != pos[c]):
            present[k] = pos[c]
            bounds[k] = starts[c]
            k += 1
    bounds[k] = starts[n]
    return present[:k], bounds[:k + 1]
