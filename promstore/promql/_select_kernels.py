"""Kernels of instant-vector selection: the sample each series shows at each step.

Used through ``selectors.py``; synchronous, GIL-free, safe to call from worker threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["STALE_NAN_BITS", "instant_select", "pool_ids", "sample_span", "window_holds_all"]

STALE_NAN_BITS = np.uint64(0x7FF0000000000002)


@njit(cache=True, nogil=True, error_model="numpy")
def instant_select(starts, times, values, bits, refs, lookback, out_values, out_present,
                   out_times):  # pragma: no cover - compiled
    """For series ``i`` and step ``s``, the last sample at or before ``refs[s]`` that is
    no older than ``refs[s] - lookback`` (both ends included, as in Prometheus 2.x),
    unless that sample is a stale marker. ``refs`` must not decrease.
    Fills ``out_values``/``out_present``/``out_times`` (``[series, steps]``)."""
    n = len(starts) - 1
    steps = len(refs)
    for i in range(n):
        lo = starts[i]
        hi = starts[i + 1]
        j = lo
        for s in range(steps):
            r = refs[s]
            while j < hi and times[j] <= r:
                j += 1
            k = j - 1
            if k >= lo and times[k] >= r - lookback and bits[k] != STALE_NAN_BITS:
                out_values[i, s] = values[k]
                out_present[i, s] = True
                out_times[i, s] = times[k]


@njit(cache=True, nogil=True)
def sample_span(starts, times):  # pragma: no cover - compiled
    """The earliest and latest sample time of the series ``times[starts[i]:starts[i+1]]``
    (each in time order); ``(0, -1)`` when there is none."""
    first, last, seen = 0, -1, False
    for i in range(len(starts) - 1):
        if starts[i] < starts[i + 1]:
            a, b = times[starts[i]], times[starts[i + 1] - 1]
            first = a if not seen or a < first else first
            last = b if not seen or b > last else last
            seen = True
    return first, last


@njit(cache=True, nogil=True)
def window_holds_all(starts, times, lo, hi):  # pragma: no cover - compiled
    """Whether every series has a sample and every sample lies in ``[lo, hi]``."""
    for i in range(len(starts) - 1):
        if starts[i] >= starts[i + 1]:
            return False
    for t in times:
        if t < lo or t > hi:
            return False
    return True


@njit(cache=True, nogil=True)
def pool_ids(label_ids, pooled):  # pragma: no cover - compiled
    """``label_ids`` (value ids of a ``SeriesSet``, -1 where absent) as string-pool ids
    (``pooled[value id]``; 0, the empty string, where absent)."""
    out = np.zeros(label_ids.shape, np.int32)
    for i in range(label_ids.shape[0]):
        for j in range(label_ids.shape[1]):
            if label_ids[i, j] >= 0:
                out[i, j] = pooled[label_ids[i, j]]
    return out
