"""Kernels that write query answers: sample values and timestamps as Prometheus prints
them, assembled into the JSON of a vector or matrix result in one pass.

A value is printed with the shortest digits that read back to the same float (as Go's
``strconv`` and Python's ``repr`` choose them), found with the Ryū algorithm (Ulf Adams,
PLDI 2018) on 64-bit integer halves; positional between 1e-6 and 1e21, exponent form
(``1e-07``, ``1.5e+300``) outside, ``NaN``, ``+Inf``, ``-Inf``, ``-0``. A timestamp is
whole seconds, then ``.`` and three digits unless the milliseconds are zero.

Used through ``encoding.py``; synchronous, GIL-free, safe to call from worker threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["MAX_POINT_BYTES", "MAX_SERIES_BYTES", "format_value", "write_answer"]

# Longest text of one point: '[' + '-9223372036854775.808' + ',"' + 24-byte value + '"]' + ','.
MAX_POINT_BYTES = 56
MAX_SERIES_BYTES = 32  # what surrounds one series' metric and points

_BITS = 125  # bits of the powers of five in the tables (Ryū's DOUBLE_POW5_*BITCOUNT)
_MASK64 = (1 << 64) - 1


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """``5**-q`` and ``5**i`` as 125-bit fixed-point numbers, low and high 64 bits."""
    inverse = np.zeros((342, 2), dtype=np.uint64)
    for q in range(342):
        power = 5**q
        value = (1 << (power.bit_length() - 1 + _BITS)) // power + 1
        inverse[q] = (value & _MASK64, value >> 64)
    powers = np.zeros((326, 2), dtype=np.uint64)
    for i in range(326):
        power = 5**i
        shift = power.bit_length() - _BITS
        value = power >> shift if shift >= 0 else power << -shift
        powers[i] = (value & _MASK64, value >> 64)
    return inverse, powers


_POW5_INV, _POW5 = _tables()

_U32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U4 = np.uint64(4)
_U5 = np.uint64(5)
_U10 = np.uint64(10)
_U100 = np.uint64(100)
_U64 = np.uint64(64)
_MANTISSA = np.uint64((1 << 52) - 1)
_EXACT_INTEGERS = float(1 << 53)
_HIDDEN = np.uint64(1 << 52)

_NAN = np.frombuffer(b"NaN", dtype=np.uint8)
_POS_INF = np.frombuffer(b"+Inf", dtype=np.uint8)
_NEG_INF = np.frombuffer(b"-Inf", dtype=np.uint8)
_OPEN_METRIC = np.frombuffer(b'{"metric":', dtype=np.uint8)
_OPEN_VALUES = np.frombuffer(b',"values":[', dtype=np.uint8)
_OPEN_VALUE = np.frombuffer(b',"value":', dtype=np.uint8)

_QUOTE = 34
_COMMA = 44
_DOT = 46
_ZERO = 48
_MINUS = 45
_PLUS = 43
_LETTER_E = 101
_LBRACKET = 91
_RBRACKET = 93
_RBRACE = 125


@njit(cache=True, nogil=True, inline="always")
def _mul_high(m, lo, hi, shift):  # pragma: no cover - compiled
    """``(m * (hi * 2**64 + lo)) >> shift`` for ``64 < shift < 128``, on 32-bit halves."""
    m_lo = m & _U32
    m_hi = m >> _S32
    # m * lo: only the high 64 bits are needed
    a = m_lo * (lo & _U32)
    b = m_lo * (lo >> _S32)
    c = m_hi * (lo & _U32)
    d = m_hi * (lo >> _S32)
    mid = (a >> _S32) + (b & _U32) + (c & _U32)
    high0 = d + (b >> _S32) + (c >> _S32) + (mid >> _S32)
    # m * hi, all 128 bits
    a = m_lo * (hi & _U32)
    b = m_lo * (hi >> _S32)
    c = m_hi * (hi & _U32)
    d = m_hi * (hi >> _S32)
    mid = (a >> _S32) + (b & _U32) + (c & _U32)
    low1 = (a & _U32) | ((mid & _U32) << _S32)
    high1 = d + (b >> _S32) + (c >> _S32) + (mid >> _S32)
    total = high0 + low1
    if total < high0:
        high1 += _U1
    dist = shift - _U64
    return (high1 << (_U64 - dist)) | (total >> dist)


@njit(cache=True, nogil=True, inline="always")
def _pow5_factor(value):  # pragma: no cover - compiled
    count = 0
    while value % _U5 == 0:
        value //= _U5
        count += 1
    return count


@njit(cache=True, nogil=True)
def _shortest(mantissa, exponent):  # pragma: no cover - compiled
    """Ryū's ``d2d``: the shortest ``digits * 10**exp`` inside the rounding interval of
    the finite, non-zero float with these IEEE fields (ties to the nearest, then even)."""
    if exponent == 0:
        e2 = 1 - 1023 - 52 - 2
        m2 = mantissa
    else:
        e2 = exponent - 1023 - 52 - 2
        m2 = _HIDDEN | mantissa
    accept_bounds = (m2 & _U1) == 0
    mv = _U4 * m2
    mm_shift = np.uint64(1 if (mantissa != 0 or exponent <= 1) else 0)
    vm_trailing_zeros = False
    vr_trailing_zeros = False
    if e2 >= 0:
        q = ((e2 * 78913) >> 18) - (1 if e2 > 3 else 0)
        e10 = q
        k = _BITS + (((q * 1217359) >> 19) + 1) - 1
        i = np.uint64(-e2 + q + k)
        lo, hi = _POW5_INV[q, 0], _POW5_INV[q, 1]
        vr = _mul_high(mv, lo, hi, i)
        vp = _mul_high(mv + _U2, lo, hi, i)
        vm = _mul_high(mv - _U1 - mm_shift, lo, hi, i)
        if q <= 21:
            if mv % _U5 == 0:
                vr_trailing_zeros = _pow5_factor(mv) >= q
            elif accept_bounds:
                vm_trailing_zeros = _pow5_factor(mv - _U1 - mm_shift) >= q
            elif _pow5_factor(mv + _U2) >= q:
                vp -= _U1
    else:
        q = ((-e2 * 732923) >> 20) - (1 if -e2 > 1 else 0)
        e10 = q + e2
        i = -e2 - q
        k = (((i * 1217359) >> 19) + 1) - _BITS
        j = np.uint64(q - k)
        lo, hi = _POW5[i, 0], _POW5[i, 1]
        vr = _mul_high(mv, lo, hi, j)
        vp = _mul_high(mv + _U2, lo, hi, j)
        vm = _mul_high(mv - _U1 - mm_shift, lo, hi, j)
        if q <= 1:
            vr_trailing_zeros = True
            if accept_bounds:
                vm_trailing_zeros = mm_shift == _U1
            else:
                vp -= _U1
        elif q < 63:
            vr_trailing_zeros = (mv & ((_U1 << np.uint64(q)) - _U1)) == 0
    removed = 0
    last = np.uint64(0)
    if vm_trailing_zeros or vr_trailing_zeros:
        while vp // _U10 > vm // _U10:
            vm_trailing_zeros = vm_trailing_zeros and vm % _U10 == 0
            vr_trailing_zeros = vr_trailing_zeros and last == 0
            last = vr % _U10
            vr //= _U10
            vp //= _U10
            vm //= _U10
            removed += 1
        if vm_trailing_zeros:
            while vm % _U10 == 0:
                vr_trailing_zeros = vr_trailing_zeros and last == 0
                last = vr % _U10
                vr //= _U10
                vp //= _U10
                vm //= _U10
                removed += 1
        if vr_trailing_zeros and last == _U5 and vr % _U2 == 0:
            last = np.uint64(4)  # exactly halfway: round to even
        up = (vr == vm and (not accept_bounds or not vm_trailing_zeros)) or last >= _U5
    else:
        up = False
        if vp // _U100 > vm // _U100:
            up = vr % _U100 >= np.uint64(50)
            vr //= _U100
            vp //= _U100
            vm //= _U100
            removed += 2
        while vp // _U10 > vm // _U10:
            up = vr % _U10 >= _U5
            vr //= _U10
            vp //= _U10
            vm //= _U10
            removed += 1
        up = vr == vm or up
    return vr + (_U1 if up else np.uint64(0)), e10 + removed


@njit(cache=True, nogil=True, inline="always")
def _put(out, pos, text):  # pragma: no cover - compiled
    for k in range(len(text)):
        out[pos + k] = text[k]
    return pos + len(text)


@njit(cache=True, nogil=True, inline="always")
def _put_uint(out, pos, n):  # pragma: no cover - compiled
    """Decimal digits of the non-negative int64 ``n``: the width found by comparisons,
    then one pass of unsigned divisions writing from the last digit."""
    u = np.uint64(n)
    width = 1
    bound = _U10
    while width < 19 and u >= bound:
        width += 1
        bound *= _U10
    at = pos + width
    while at > pos:
        at -= 1
        out[at] = _ZERO + np.uint8(u % _U10)
        u //= _U10
    return pos + width


@njit(cache=True, nogil=True)
def format_value(v, bits, buf, out, pos):  # pragma: no cover - compiled
    """Write ``v`` (whose IEEE bits are ``bits``) as Prometheus's API prints a sample
    value at ``out[pos:]``, using ``buf`` (17 bytes) for its digits; return the position
    after it (at most 24 bytes on)."""
    if v != v:
        return _put(out, pos, _NAN)
    if v == np.inf:
        return _put(out, pos, _POS_INF)
    if v == -np.inf:
        return _put(out, pos, _NEG_INF)
    if bits >> np.uint64(63):
        out[pos] = _MINUS
        pos += 1
    if v == 0:
        out[pos] = _ZERO
        return pos + 1
    if abs(v) < _EXACT_INTEGERS and v == np.floor(v):
        # A whole number below 2**53 (a counter, a count) prints as its decimal digits:
        # its rounding interval is at most a unit wide, and any shorter decimal is
        # another whole number, a unit or more away.
        return _put_uint(out, pos, np.int64(abs(v)))
    exponent = np.int64((bits >> np.uint64(52)) & np.uint64(0x7FF))
    digits, exp10 = _shortest(bits & _MANTISSA, exponent)
    n = 0
    while digits:
        buf[16 - n] = _ZERO + np.uint8(digits % _U10)
        digits //= _U10
        n += 1
    first = 17 - n
    point = n + exp10  # digits before the decimal point
    size = abs(v)
    if 1e-6 <= size < 1e21:
        if point <= 0:
            out[pos] = _ZERO
            out[pos + 1] = _DOT
            pos += 2
            for _ in range(-point):
                out[pos] = _ZERO
                pos += 1
            for k in range(first, 17):
                out[pos] = buf[k]
                pos += 1
        elif point >= n:
            for k in range(first, 17):
                out[pos] = buf[k]
                pos += 1
            for _ in range(point - n):
                out[pos] = _ZERO
                pos += 1
        else:
            for k in range(first, first + point):
                out[pos] = buf[k]
                pos += 1
            out[pos] = _DOT
            pos += 1
            for k in range(first + point, 17):
                out[pos] = buf[k]
                pos += 1
        return pos
    out[pos] = buf[first]
    pos += 1
    if n > 1:
        out[pos] = _DOT
        pos += 1
        for k in range(first + 1, 17):
            out[pos] = buf[k]
            pos += 1
    out[pos] = _LETTER_E
    exp = point - 1
    out[pos + 1] = _MINUS if exp < 0 else _PLUS
    pos += 2
    exp = abs(exp)
    if exp < 10:
        out[pos] = _ZERO
        pos += 1
    return _put_uint(out, pos, exp)


@njit(cache=True, nogil=True, inline="always")
def _format_time(ms, out, pos):  # pragma: no cover - compiled
    if ms < 0:
        out[pos] = _MINUS
        pos += 1
        ms = -ms
    pos = _put_uint(out, pos, ms // 1000)
    frac = ms % 1000
    if frac:
        out[pos] = _DOT
        out[pos + 1] = _ZERO + frac // 100
        out[pos + 2] = _ZERO + frac // 10 % 10
        out[pos + 3] = _ZERO + frac % 10
        pos += 4
    return pos


@njit(cache=True, nogil=True)
def write_answer(before, metrics, metric_lengths, starts, times, values, bits, single,
                 after):  # pragma: no cover - compiled
    """``before``, then series ``i`` as ``{"metric":M,"values":[[t,"v"],…]}`` (or with
    ``single``, ``{"metric":M,"value":[t,"v"]}`` from its one point), comma-separated,
    then ``after``; ``M`` is series ``i``'s piece of ``metrics`` (``metric_lengths``
    bytes each) and its points are ``starts[i]:starts[i+1]`` of ``times`` (ms) and
    ``values`` (whose IEEE bits are ``bits``). One buffer, sized for the longest
    texts (``MAX_SERIES_BYTES`` a series, ``MAX_POINT_BYTES`` a point) and cut."""
    n_series = len(starts) - 1
    n_points = starts[n_series] - starts[0] if n_series > 0 else 0
    out = np.empty(len(before) + len(metrics) + MAX_SERIES_BYTES * n_series
                   + MAX_POINT_BYTES * n_points + len(after), dtype=np.uint8)
    pos = _put(out, 0, before)
    buf = np.empty(17, dtype=np.uint8)
    m = 0
    for i in range(n_series):
        if i:
            out[pos] = _COMMA
            pos += 1
        pos = _put(out, pos, _OPEN_METRIC)
        for k in range(m, m + metric_lengths[i]):
            out[pos] = metrics[k]
            pos += 1
        m += metric_lengths[i]
        pos = _put(out, pos, _OPEN_VALUE if single else _OPEN_VALUES)
        for p in range(starts[i], starts[i + 1]):
            if p > starts[i]:
                out[pos] = _COMMA
                pos += 1
            out[pos] = _LBRACKET
            pos = _format_time(times[p], out, pos + 1)
            out[pos] = _COMMA
            out[pos + 1] = _QUOTE
            pos = format_value(values[p], bits[p], buf, out, pos + 2)
            out[pos] = _QUOTE
            out[pos + 1] = _RBRACKET
            pos += 2
        if not single:
            out[pos] = _RBRACKET
            pos += 1
        out[pos] = _RBRACE
        pos += 1
    pos = _put(out, pos, after)
    return out[:pos]
