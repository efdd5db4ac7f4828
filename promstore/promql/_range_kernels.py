"""Kernels of the range-vector functions: one pass over all series and steps.

For series ``i`` and step ``s`` the window holds the samples with
``refs[s] - range <= t <= refs[s]`` (both ends included, as in Prometheus 2.x; stale
markers are removed beforehand). Windows of consecutive steps are found with two
moving pointers, so a series costs O(samples + steps) plus the function's own work.
The arithmetic follows Prometheus 2.42 operation by operation (order of additions,
Kahan-compensated sums, extrapolation), so that results match it bit for bit.

Used through ``range_functions.py``; synchronous, GIL-free, safe from worker threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["CODES", "range_function"]

RATE, INCREASE, DELTA, IRATE, IDELTA = 0, 1, 2, 3, 4
CHANGES, RESETS, DERIV, PREDICT_LINEAR = 5, 6, 7, 8
AVG, MIN, MAX, SUM, COUNT, LAST, PRESENT = 9, 10, 11, 12, 13, 14, 15
STDDEV, STDVAR, QUANTILE, HOLT_WINTERS = 16, 17, 18, 19

CODES = {
    "rate": RATE, "increase": INCREASE, "delta": DELTA, "irate": IRATE, "idelta": IDELTA,
    "changes": CHANGES, "resets": RESETS, "deriv": DERIV, "predict_linear": PREDICT_LINEAR,
    "avg_over_time": AVG, "min_over_time": MIN, "max_over_time": MAX, "sum_over_time": SUM,
    "count_over_time": COUNT, "last_over_time": LAST, "present_over_time": PRESENT,
    "stddev_over_time": STDDEV, "stdvar_over_time": STDVAR,
    "quantile_over_time": QUANTILE, "holt_winters": HOLT_WINTERS,
}


@njit(cache=True, nogil=True, error_model="numpy")
def _kahan_inc(inc, total, c):  # pragma: no cover - compiled
    t = total + inc
    if abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


@njit(cache=True, nogil=True, error_model="numpy")
def _extrapolated_rate(times, values, a, b, range_start, range_end, range_seconds,
                       is_counter, is_rate):  # pragma: no cover - compiled
    result = values[b - 1] - values[a]
    if is_counter:
        prev = values[a]
        for k in range(a + 1, b):
            if values[k] < prev:
                result += prev
            prev = values[k]
    first_t = times[a]
    last_t = times[b - 1]
    duration_to_start = float(first_t - range_start) / 1000
    duration_to_end = float(range_end - last_t) / 1000
    sampled = float(last_t - first_t) / 1000
    average = sampled / float(b - a - 1)
    if is_counter and result > 0 and values[a] >= 0:
        duration_to_zero = sampled * (values[a] / result)
        if duration_to_zero < duration_to_start:
            duration_to_start = duration_to_zero
    threshold = average * 1.1
    interval = sampled
    if duration_to_start < threshold:
        interval += duration_to_start
    else:
        interval += average / 2
    if duration_to_end < threshold:
        interval += duration_to_end
    else:
        interval += average / 2
    factor = interval / sampled
    if is_rate:
        factor /= range_seconds
    return result * factor


@njit(cache=True, nogil=True, error_model="numpy")
def _linear_regression(times, values, a, b, intercept_time):  # pragma: no cover
    n = 0.0
    sum_x = c_x = sum_y = c_y = sum_xy = c_xy = sum_x2 = c_x2 = 0.0
    init_y = values[a]
    const_y = True
    for k in range(a, b):
        v = values[k]
        if const_y and k > a and v != init_y:
            const_y = False
        n += 1.0
        x = float(times[k] - intercept_time) / 1e3
        sum_x, c_x = _kahan_inc(x, sum_x, c_x)
        sum_y, c_y = _kahan_inc(v, sum_y, c_y)
        sum_xy, c_xy = _kahan_inc(x * v, sum_xy, c_xy)
        sum_x2, c_x2 = _kahan_inc(x * x, sum_x2, c_x2)
    if const_y:
        if math.isinf(init_y):
            return math.nan, math.nan
        return 0.0, init_y
    sum_x += c_x
    sum_y += c_y
    sum_xy += c_xy
    sum_x2 += c_x2
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope = cov_xy / var_x
    intercept = sum_y / n - slope * sum_x / n
    return slope, intercept


@njit(cache=True, nogil=True, error_model="numpy")
def sorted_nan_first(buf, m):  # pragma: no cover - compiled
    """Sort ``buf[:m]`` ascending with NaNs first, as Go's sort with Prometheus's
    ``vectorByValueHeap`` order leaves it."""
    nans = 0
    for k in range(m):
        if math.isnan(buf[k]):
            nans += 1
    rest = np.empty(m - nans)
    j = 0
    for k in range(m):
        if not math.isnan(buf[k]):
            rest[j] = buf[k]
            j += 1
    rest.sort()
    for k in range(nans):
        buf[k] = math.nan
    buf[nans:m] = rest


@njit(cache=True, nogil=True, error_model="numpy")
def quantile_of_sorted(q, buf, m):  # pragma: no cover - compiled
    """Prometheus's ``quantile`` over ``buf[:m]``, already in ``sorted_nan_first`` order."""
    if m == 0 or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    n = float(m)
    rank = q * (n - 1)
    lower = max(0.0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return buf[int(lower)] * (1 - weight) + buf[int(upper)] * weight


@njit(cache=True, nogil=True, error_model="numpy")
def _over_time(code, values, a, b, q, buf):  # pragma: no cover - compiled
    if code == AVG:
        mean = 0.0
        count = 0.0
        c = 0.0
        for k in range(a, b):
            v = values[k]
            count += 1
            if math.isinf(mean):
                if math.isinf(v) and (mean > 0) == (v > 0):
                    continue
                if not math.isinf(v) and not math.isnan(v):
                    continue
            mean, c = _kahan_inc(v / count - mean / count, mean, c)
        if math.isinf(mean):
            return mean
        return mean + c
    if code == MIN:
        m = values[a]
        for k in range(a, b):
            if values[k] < m or math.isnan(m):
                m = values[k]
        return m
    if code == MAX:
        m = values[a]
        for k in range(a, b):
            if values[k] > m or math.isnan(m):
                m = values[k]
        return m
    if code == SUM:
        total = 0.0
        c = 0.0
        for k in range(a, b):
            total, c = _kahan_inc(values[k], total, c)
        if math.isinf(total):
            return total
        return total + c
    if code == COUNT:
        return float(b - a)
    if code == LAST:
        return values[b - 1]
    if code == PRESENT:
        return 1.0
    if code == STDDEV or code == STDVAR:
        count = 0.0
        mean = c_mean = aux = c_aux = 0.0
        for k in range(a, b):
            v = values[k]
            count += 1
            delta = v - (mean + c_mean)
            mean, c_mean = _kahan_inc(delta / count, mean, c_mean)
            aux, c_aux = _kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux)
        if code == STDDEV:
            return math.sqrt((aux + c_aux) / count)
        return (aux + c_aux) / count
    # QUANTILE
    m = b - a
    buf[:m] = values[a:b]
    sorted_nan_first(buf, m)
    return quantile_of_sorted(q, buf, m)


@njit(cache=True, nogil=True, error_model="numpy")
def _holt_winters(values, a, b, sf, tf):  # pragma: no cover - compiled
    s0 = 0.0
    s1 = values[a]
    trend = values[a + 1] - values[a]
    for i in range(1, b - a):
        x = sf * values[a + i]
        if i - 1 != 0:
            trend = tf * (s1 - s0) + (1 - tf) * trend
        y = (1 - sf) * (s1 + trend)
        s0 = s1
        s1 = x + y
    return s1


@njit(cache=True, nogil=True, error_model="numpy")
def range_function(code, starts, times, values, refs, range_ms, range_seconds, eval_times,
                   p1, p2, out_values, out_present):  # pragma: no cover - compiled
    """Evaluate function ``code`` over the window of every series at every step.

    ``refs`` (non-decreasing) are the window ends, ``eval_times`` the steps' own times
    (they differ by the selector's offset or ``@``); ``p1``/``p2`` hold the function's
    scalar arguments per step (the quantile, the prediction horizon, the smoothing and
    trend factors). Cells stay absent where a function has too few samples.
    """
    n = len(starts) - 1
    steps = len(refs)
    longest = 0
    for i in range(n):
        longest = max(longest, starts[i + 1] - starts[i])
    buf = np.empty(longest)
    for i in range(n):
        lo_i = starts[i]
        hi_i = starts[i + 1]
        a = lo_i
        b = lo_i
        for s in range(steps):
            maxt = refs[s]
            mint = maxt - range_ms
            while a < hi_i and times[a] < mint:
                a += 1
            if b < a:
                b = a
            while b < hi_i and times[b] <= maxt:
                b += 1
            m = b - a
            if m == 0:
                continue
            if code <= DELTA:
                if m < 2:
                    continue
                v = _extrapolated_rate(times, values, a, b, mint, maxt, range_seconds,
                                       code != DELTA, code == RATE)
            elif code == IRATE or code == IDELTA:
                if m < 2:
                    continue
                last = values[b - 1]
                prev = values[b - 2]
                if code == IRATE and last < prev:
                    v = last
                else:
                    v = last - prev
                interval = times[b - 1] - times[b - 2]
                if interval == 0:
                    continue
                if code == IRATE:
                    v /= float(interval) / 1000
            elif code == CHANGES or code == RESETS:
                count = 0
                prev = values[a]
                for k in range(a + 1, b):
                    cur = values[k]
                    if code == CHANGES:
                        if cur != prev and not (math.isnan(cur) and math.isnan(prev)):
                            count += 1
                    elif cur < prev:
                        count += 1
                    prev = cur
                v = float(count)
            elif code == DERIV:
                if m < 2:
                    continue
                v = _linear_regression(times, values, a, b, times[a])[0]
            elif code == PREDICT_LINEAR:
                if m < 2:
                    continue
                slope, intercept = _linear_regression(times, values, a, b, eval_times[s])
                v = slope * p1[s] + intercept
            elif code == HOLT_WINTERS:
                if m < 2:
                    continue
                v = _holt_winters(values, a, b, p1[s], p2[s])
            else:
                v = _over_time(code, values, a, b, p1[s], buf)
            out_values[i, s] = v
            out_present[i, s] = True
