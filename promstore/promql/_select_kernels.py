"""Kernels of instant-vector selection: the sample each series shows at each step.

Used through ``selectors.py``; synchronous, GIL-free, safe to call from worker threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["STALE_NAN_BITS", "instant_select"]

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
