"""Kernels for merging runs of samples (``storage.querier``): trimming each run to a
time range and laying runs out back to back in a new order, one pass each."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["gather_runs", "ordered_runs", "trim_runs"]


@njit(cache=True, nogil=True)
def trim_runs(ts, lo, hi, mint, maxt):  # pragma: no cover - compiled
    """Narrow each run ``ts[lo[r]:hi[r]]`` (sorted) to its samples in ``[mint, maxt]``
    (binary search at both ends); returns the new bounds."""
    out_lo = np.empty_like(lo)
    out_hi = np.empty_like(hi)
    for r in range(len(lo)):
        a, b = lo[r], hi[r]
        if a < b and ts[a] < mint:
            a = a + np.searchsorted(ts[a:b], mint)
        if a < b and ts[b - 1] > maxt:
            b = a + np.searchsorted(ts[a:b], maxt, side="right")
        out_lo[r] = a
        out_hi[r] = b
    return out_lo, out_hi


@njit(cache=True, nogil=True)
def gather_runs(ts, vs, lo, lengths):  # pragma: no cover - compiled
    """Samples of the runs starting at ``lo`` with ``lengths``, back to back in the order
    given."""
    n = 0
    for r in range(len(lo)):
        n += lengths[r]
    out_ts = np.empty(n, np.int64)
    out_vs = np.empty(n, np.float64)
    at = 0
    for r in range(len(lo)):
        k = lengths[r]
        out_ts[at:at + k] = ts[lo[r]:lo[r] + k]
        out_vs[at:at + k] = vs[lo[r]:lo[r] + k]
        at += k
    return out_ts, out_vs


@njit(cache=True, nogil=True)
def ordered_runs(ts, vs, rank, lo, hi, runs, n_series):  # pragma: no cover - compiled
    """The runs ``ts[lo[r]:hi[r]]`` (of the series ranked ``rank[r]``) in the order
    ``runs`` (by rank, then start) laid out back to back; the samples per series rank;
    and whether two runs of a series overlap in time (sorted by start, they do
    somewhere iff neighbours do)."""
    n = 0
    for r in runs:
        n += hi[r] - lo[r]
    out_ts = np.empty(n, np.int64)
    out_vs = np.empty(n, np.float64)
    per_series = np.zeros(n_series, np.int64)
    clash = False
    at = 0
    for j in range(len(runs)):
        r = runs[j]
        k = hi[r] - lo[r]
        out_ts[at:at + k] = ts[lo[r]:hi[r]]
        out_vs[at:at + k] = vs[lo[r]:hi[r]]
        if j and rank[runs[j - 1]] == rank[r] and out_ts[at] <= out_ts[at - 1]:
            clash = True
        at += k
        per_series[rank[r]] += k
    return out_ts, out_vs, per_series, clash
