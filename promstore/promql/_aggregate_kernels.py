"""Kernels of the aggregation operators over all groups and steps.

At each step the series are visited in row order and folded into their group exactly
as Prometheus 2.42 folds the samples of an instant vector (same first value, same update
formulas, same order), so sums and means agree bit for bit when the input order agrees.
``topk``/``bottomk`` replay Go's ``container/heap`` so that ties pick the same series.

Used through ``aggregations.py``; synchronous, GIL-free, safe from worker threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._range_kernels import quantile_of_sorted, sorted_nan_first

__all__ = ["CODES", "aggregate", "bucket_quantiles", "quantiles", "select_k"]

SUM, AVG, MIN, MAX, COUNT, GROUP, STDDEV, STDVAR = 0, 1, 2, 3, 4, 5, 6, 7
CODES = {"sum": SUM, "avg": AVG, "min": MIN, "max": MAX, "count": COUNT, "group": GROUP,
         "stddev": STDDEV, "stdvar": STDVAR}


@njit(cache=True, nogil=True, error_model="numpy")
def aggregate(code, values, present, groups, n_groups, out_values,
              out_present):  # pragma: no cover - compiled
    """Fold the present cells of ``values`` ``[series, steps]`` into ``n_groups`` groups
    (``groups[i]`` is series ``i``'s) with operator ``code``.

    Series by series, each along its steps: rows are read in memory order and a
    group's cells for every step sit side by side, where going step by step would jump
    a whole row between neighbouring cells. Each (group, step) still sees its series in
    row order, so the result is the same to the bit. The operators without a running
    mean (all but ``avg``, ``stddev``, ``stdvar``) fold straight into the output, which
    may already hold a fold of earlier rows (absent cells are empty): that is how
    shards' partial aggregates are folded together."""
    if code == AVG or code == STDDEV or code == STDVAR:
        _mean_based(code, values, present, groups, n_groups, out_values, out_present)
        return
    for i in range(values.shape[0]):
        g = groups[i]
        # One loop per operator: a test of the operator in every cell costs more than
        # the cell's own work.
        if code == SUM:
            _sum_row(values[i], present[i], out_values[g], out_present[g])
        elif code == COUNT or code == GROUP:
            _count_row(values[i], present[i], out_values[g], out_present[g], code == COUNT)
        else:
            _extreme_row(values[i], present[i], out_values[g], out_present[g], code == MAX)


@njit(cache=True, nogil=True, inline="always")
def _sum_row(vv, pp, ov, op):  # pragma: no cover - compiled
    for s in range(len(vv)):
        if pp[s]:
            if op[s]:
                ov[s] += vv[s]
            else:
                op[s] = True
                ov[s] = vv[s]


@njit(cache=True, nogil=True, inline="always")
def _count_row(vv, pp, ov, op, counting):  # pragma: no cover - compiled
    for s in range(len(vv)):
        if pp[s]:
            if not op[s]:
                op[s] = True
                ov[s] = 1.0
            elif counting:
                ov[s] += 1.0


@njit(cache=True, nogil=True, inline="always")
def _extreme_row(vv, pp, ov, op, largest):  # pragma: no cover - compiled
    for s in range(len(vv)):
        if not pp[s]:
            continue
        v = vv[s]
        if not op[s]:
            op[s] = True
            ov[s] = v
        elif math.isnan(ov[s]) or (ov[s] < v if largest else ov[s] > v):
            ov[s] = v


@njit(cache=True, nogil=True, error_model="numpy")
def _mean_based(code, values, present, groups, n_groups, out_values,
                out_present):  # pragma: no cover - compiled
    n, steps = values.shape
    count = np.zeros((n_groups, steps), dtype=np.int64)
    acc = np.zeros((n_groups, steps))
    mean = np.zeros((n_groups, steps))
    for i in range(n):
        g = groups[i]
        for s in range(steps):
            if not present[i, s]:
                continue
            v = values[i, s]
            if count[g, s] == 0:
                count[g, s] = 1
                mean[g, s] = v
                continue
            count[g, s] += 1
            if code == AVG:
                m = mean[g, s]
                if math.isinf(m):
                    if math.isinf(v) and (m > 0) == (v > 0):
                        continue
                    if not math.isinf(v) and not math.isnan(v):
                        continue
                c = float(count[g, s])
                mean[g, s] = m + (v / c - m / c)
            else:
                delta = v - mean[g, s]
                mean[g, s] += delta / float(count[g, s])
                acc[g, s] += delta * (v - mean[g, s])
    for g in range(n_groups):
        for s in range(steps):
            c = count[g, s]
            if c == 0:
                continue
            out_present[g, s] = True
            if code == AVG:
                out_values[g, s] = mean[g, s]
            elif code == STDVAR:
                out_values[g, s] = acc[g, s] / float(c)
            else:
                out_values[g, s] = math.sqrt(acc[g, s] / float(c))


@njit(cache=True, nogil=True, error_model="numpy")
def _less(heap_values, i, j, top):  # pragma: no cover - compiled
    # Prometheus's vectorByValueHeap (topk) and vectorByReverseValueHeap (bottomk).
    a = heap_values[i]
    if math.isnan(a):
        return True
    if top:
        return a < heap_values[j]
    return a > heap_values[j]


@njit(cache=True, nogil=True, error_model="numpy")
def _swap(hv, hr, i, j):  # pragma: no cover - compiled
    hv[i], hv[j] = hv[j], hv[i]
    hr[i], hr[j] = hr[j], hr[i]


@njit(cache=True, nogil=True, error_model="numpy")
def _up(hv, hr, j, top):  # pragma: no cover - compiled
    while True:
        i = (j - 1) // 2 if j > 0 else 0
        if i == j or not _less(hv, j, i, top):
            break
        _swap(hv, hr, i, j)
        j = i


@njit(cache=True, nogil=True, error_model="numpy")
def _down(hv, hr, i0, n, top):  # pragma: no cover - compiled
    i = i0
    while True:
        j1 = 2 * i + 1
        if j1 >= n or j1 < 0:
            break
        j = j1
        j2 = j1 + 1
        if j2 < n and _less(hv, j2, j1, top):
            j = j2
        if not _less(hv, j, i, top):
            break
        _swap(hv, hr, i, j)
        i = j


@njit(cache=True, nogil=True, error_model="numpy")
def select_k(values, present, groups, group_sizes, ks, top, out_selected):  # pragma: no cover
    """Mark in ``out_selected`` the series ``topk`` (``top``) or ``bottomk`` keeps in each
    group at each step, ``ks[s]`` of them, by replaying Go's heap operations."""
    n, steps = values.shape
    n_groups = len(group_sizes)
    offsets = np.zeros(n_groups + 1, dtype=np.int64)
    for g in range(n_groups):
        offsets[g + 1] = offsets[g] + group_sizes[g]
    heap_values = np.empty(offsets[n_groups])
    heap_rows = np.empty(offsets[n_groups], dtype=np.int64)
    size = np.zeros(n_groups, dtype=np.int64)
    for s in range(steps):
        k = ks[s]
        if k < 1:
            continue
        size[:] = 0
        for i in range(n):
            if not present[i, s]:
                continue
            g = groups[i]
            v = values[i, s]
            o = offsets[g]
            hv = heap_values[o:offsets[g + 1]]
            hr = heap_rows[o:offsets[g + 1]]
            m = size[g]
            if m == 0:
                hv[0] = v
                hr[0] = i
                size[g] = 1
                continue
            top_v = hv[0]
            better = v > top_v if top else v < top_v
            if m < k or better or math.isnan(top_v):
                if m == k:
                    if k == 1:
                        hv[0] = v
                        hr[0] = i
                        continue
                    # heap.Pop: move the root to the end, restore the heap on the rest.
                    _swap(hv, hr, 0, m - 1)
                    _down(hv, hr, 0, m - 1, top)
                    m -= 1
                hv[m] = v
                hr[m] = i
                _up(hv, hr, m, top)
                size[g] = m + 1
        for g in range(n_groups):
            o = offsets[g]
            for j in range(size[g]):
                out_selected[heap_rows[o + j], s] = True


@njit(cache=True, nogil=True, error_model="numpy")
def quantiles(values, present, order, group_starts, qs, out_values,
              out_present):  # pragma: no cover - compiled
    """``quantile(qs[s], …)`` per group and step; ``order`` lists the series grouped
    (group ``g`` is ``order[group_starts[g]:group_starts[g+1]]``, in row order)."""
    steps = values.shape[1]
    n_groups = len(group_starts) - 1
    longest = 0
    for g in range(n_groups):
        longest = max(longest, group_starts[g + 1] - group_starts[g])
    buf = np.empty(longest)
    for s in range(steps):
        for g in range(n_groups):
            m = 0
            for j in range(group_starts[g], group_starts[g + 1]):
                i = order[j]
                if present[i, s]:
                    buf[m] = values[i, s]
                    m += 1
            if m == 0:
                continue
            sorted_nan_first(buf, m)
            out_values[g, s] = quantile_of_sorted(qs[s], buf, m)
            out_present[g, s] = True


@njit(cache=True, nogil=True, error_model="numpy")
def bucket_quantiles(values, present, upper, order, group_starts, qs, out_values,
                     out_present):  # pragma: no cover - compiled
    """``histogram_quantile`` over classic buckets: group ``g``'s bucket series are
    ``order[group_starts[g]:group_starts[g+1]]``, sorted by upper bound ``upper``."""
    steps = values.shape[1]
    n_groups = len(group_starts) - 1
    longest = 0
    for g in range(n_groups):
        longest = max(longest, group_starts[g + 1] - group_starts[g])
    bounds = np.empty(longest)
    counts = np.empty(longest)
    for s in range(steps):
        q = qs[s]
        for g in range(n_groups):
            m = 0
            for j in range(group_starts[g], group_starts[g + 1]):
                i = order[j]
                if not present[i, s]:
                    continue
                ub = upper[i]
                if m > 0 and bounds[m - 1] == ub:  # coalesce equal bounds
                    counts[m - 1] += values[i, s]
                else:
                    bounds[m] = ub
                    counts[m] = values[i, s]
                    m += 1
            if m == 0:
                continue
            out_present[g, s] = True
            out_values[g, s] = _bucket_quantile(q, bounds, counts, m)


@njit(cache=True, nogil=True, error_model="numpy")
def _bucket_quantile(q, bounds, counts, m):  # pragma: no cover - compiled
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if not (math.isinf(bounds[m - 1]) and bounds[m - 1] > 0):
        return math.nan
    top = -math.inf
    for j in range(m):  # make the counts monotonic
        if counts[j] > top:
            top = counts[j]
        elif counts[j] < top:
            counts[j] = top
    if m < 2:
        return math.nan
    observations = counts[m - 1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = m - 1
    for j in range(m - 1):  # sort.Search over all but the +Inf bucket
        if counts[j] >= rank:
            b = j
            break
    if b == m - 1:
        return bounds[m - 2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0
    end = bounds[b]
    count = counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)
