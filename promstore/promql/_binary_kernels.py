"""Kernels of the binary operators: element-wise arithmetic with Go's semantics and the
per-step matching of two instant vectors.

``apply`` computes an operator over flat arrays. ``^`` replays Go's ``math.Pow`` (its
repeated squaring for integer exponents gives results that differ from C's ``pow`` in
the last bit); ``%`` is ``fmod``, as Go's ``math.Mod``.

Kernels use IEEE float semantics (``error_model="numpy"``): x/0 is ±Inf or NaN, never an
exception. Used through ``binary.py``; synchronous, GIL-free, safe from worker threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["ARITHMETIC", "COMPARISONS", "OPERATORS", "apply", "match_vectors"]

ADD, SUB, MUL, DIV, POW, MOD, ATAN2 = 0, 1, 2, 3, 4, 5, 6
EQ, NE, GT, LT, GE, LE = 7, 8, 9, 10, 11, 12
OPERATORS = {"+": ADD, "-": SUB, "*": MUL, "/": DIV, "^": POW, "%": MOD, "atan2": ATAN2,
             "==": EQ, "!=": NE, ">": GT, "<": LT, ">=": GE, "<=": LE}
ARITHMETIC = frozenset(("+", "-", "*", "/", "^", "%"))  # these drop the metric name
COMPARISONS = frozenset(("==", "!=", ">", "<", ">=", "<="))


@njit(cache=True, nogil=True, error_model="numpy")
def _is_odd_int(x):  # pragma: no cover - compiled
    if abs(x) >= 2.0**53:
        return False  # every float this large is an even integer
    xi = math.trunc(x)
    return x == xi and (np.int64(xi) & 1) == 1


@njit(cache=True, nogil=True, error_model="numpy")
def _pow_zero(x, y):  # pragma: no cover - compiled
    """Go's ``Pow`` for ``x == ±0`` and ``y`` neither 0 nor NaN."""
    if y < 0:
        if math.copysign(1.0, x) < 0 and _is_odd_int(y):
            return -math.inf
        return math.inf
    if math.copysign(1.0, x) < 0 and _is_odd_int(y):
        return x
    return 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def go_pow(x, y):  # pragma: no cover - compiled
    """Go's ``math.Pow``, special cases and algorithm alike."""
    if y == 0 or x == 1:
        return 1.0
    if y == 1:
        return x
    if math.isnan(x) or math.isnan(y):
        return math.nan
    if x == 0:
        return _pow_zero(x, y)
    if math.isinf(y):
        if x == -1:
            return 1.0
        if (abs(x) < 1) == (y > 0):
            return 0.0
        return math.inf
    if math.isinf(x):
        if x < 0:
            return _pow_zero(-0.0, -y)  # Go: Pow(1/x, -y)
        if y < 0:
            return 0.0
        return math.inf
    if y == 0.5:
        return math.sqrt(x)
    if y == -0.5:
        return 1 / math.sqrt(x)
    yi = math.floor(abs(y))  # Go's Modf of a non-negative number
    yf = abs(y) - yi
    if yf != 0 and x < 0:
        return math.nan
    if yi >= 2.0**63:
        if x == -1:
            return 1.0
        if (abs(x) < 1) == (y > 0):
            return 0.0
        return math.inf
    a1 = 1.0
    ae = 0
    if yf != 0:
        if yf > 0.5:
            yf -= 1
            yi += 1
        a1 = math.exp(yf * math.log(x))
    x1, xe = math.frexp(x)
    i = np.int64(yi)
    while i != 0:
        if xe < -(1 << 12) or (1 << 12) < xe:
            ae += xe
            break
        if i & 1 == 1:
            a1 *= x1
            ae += xe
        x1 *= x1
        xe <<= 1
        if x1 < 0.5:
            x1 += x1
            xe -= 1
        i >>= 1
    if y < 0:
        a1 = 1 / a1
        ae = -ae
    return math.ldexp(a1, ae)


@njit(cache=True, nogil=True, error_model="numpy")
def _one(op, a, b):  # pragma: no cover - compiled
    """(value, keep) of ``a op b``; comparisons keep ``a`` when true."""
    if op == ADD:
        return a + b, True
    if op == SUB:
        return a - b, True
    if op == MUL:
        return a * b, True
    if op == DIV:
        return a / b, True
    if op == POW:
        return go_pow(a, b), True
    if op == MOD:
        if b == 0 or math.isinf(a) or math.isnan(a) or math.isnan(b):
            return math.nan, True
        if math.isinf(b):
            return a, True
        return np.fmod(a, b), True
    if op == ATAN2:
        return math.atan2(a, b), True
    if op == EQ:
        return a, a == b
    if op == NE:
        return a, a != b
    if op == GT:
        return a, a > b
    if op == LT:
        return a, a < b
    if op == GE:
        return a, a >= b
    return a, a <= b


@njit(cache=True, nogil=True, error_model="numpy")
def apply(op, lhs, rhs, out, keep):  # pragma: no cover - compiled
    """``out[k], keep[k] = lhs[k] op rhs[k]`` over flat arrays of equal length."""
    for k in range(len(lhs)):
        out[k], keep[k] = _one(op, lhs[k], rhs[k])


@njit(cache=True, nogil=True, error_model="numpy")
def match_vectors(lsig, lpresent, rsig, rpresent, n_sigs, out_match):  # pragma: no cover
    """Pair each present left series with the right series of its signature, per step.

    ``out_match[i, s]`` becomes the row of the right series matching left series ``i``
    at step ``s`` (-1 for none). At steps where both sides have series, two right series
    with one signature are an error: the first such step and the two rows are returned
    as ``(step, later_row, earlier_row)``, ``(-1, -1, -1)`` when there is none. Steps
    where either side is empty match nothing, as in Prometheus.
    """
    n_left, steps = lpresent.shape
    n_right = rpresent.shape[0]
    slot = np.full(n_sigs, -1, dtype=np.int64)
    for s in range(steps):
        any_left = False
        for i in range(n_left):
            if lpresent[i, s]:
                any_left = True
                break
        if not any_left:
            continue
        for r in range(n_right):
            if rpresent[r, s]:
                g = rsig[r]
                if slot[g] >= 0:
                    return s, r, slot[g]
                slot[g] = r
        for i in range(n_left):
            if lpresent[i, s]:
                out_match[i, s] = slot[lsig[i]]
        for r in range(n_right):
            if rpresent[r, s]:
                slot[rsig[r]] = -1
    return -1, -1, -1
