"""Numbers as Go prints them, where Prometheus shows them to clients.

``count_values`` labels are Go's ``strconv.FormatFloat(v, 'f', -1, 64)``: the shortest
digits that read back to the same float (as Python's ``repr``), always in positional
notation (``1e-07`` is ``0.0000001``), and ``NaN``, ``+Inf``, ``-Inf``. Sample values in
API answers are the same except that magnitudes below 1e-6 or from 1e21 up use the
exponent form (``1e+300``), as Prometheus's JSON writer does. Timestamps are seconds
with up to three decimals, as that writer prints milliseconds.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np

__all__ = ["format_timestamps", "format_values", "go_float", "go_float_v"]

_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}


def go_float(v: float) -> str:
    """``strconv.FormatFloat(v, 'f', -1, 64)``."""
    r = repr(float(v))
    special = _SPECIAL.get(r)
    if special is not None:
        return special
    if "e" in r:
        return format(Decimal(r), "f")
    return r[:-2] if r.endswith(".0") else r


def go_float_v(v: float) -> str:
    """Go's ``%v`` of a float64: shortest digits, exponent form outside [1e-4, 1e6)."""
    r = repr(float(v))
    special = _SPECIAL.get(r)
    if special is not None:
        return special
    sign, digits, exp = Decimal(r).normalize().as_tuple()
    assert isinstance(exp, int)
    exp10 = len(digits) + exp - 1
    if -4 <= exp10 < 6:
        return go_float(v)
    mantissa = "".join(map(str, digits))
    mantissa = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"


def format_values(values: np.ndarray, positional: bool = False) -> list[str]:
    """Sample values as Prometheus's API writes them, or with ``positional`` as
    ``go_float`` writes them.

    Integral values (the common case for counters) print as integers and other values
    in the ranges where Python's ``repr`` is already positional print with ``repr``,
    each group in one C-level pass; only the rest (exponents, NaN, ±Inf, -0) goes value
    by value.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.empty(len(values), dtype=object)
    with np.errstate(invalid="ignore"):
        mag = np.abs(values)
        whole = values == np.trunc(values)
        # Below 2**53 every integer is a float, so its digits are the shortest ones.
        integral = whole & (mag < 2.0**53) & ~((values == 0) & np.signbit(values))
        plain = ~whole & (mag >= 1e-4) & (mag < 1e16)
    other = ~(integral | plain)
    out[integral] = list(map(str, values[integral].astype(np.int64).tolist()))
    out[plain] = list(map(repr, values[plain].tolist()))
    one = go_float if positional else _json_value
    out[other] = [one(v) for v in values[other].tolist()]
    return out.tolist()


def _json_value(v: float) -> str:
    r = repr(v)
    special = _SPECIAL.get(r)
    if special is not None:
        return special
    if v == 0 or 1e-6 <= abs(v) < 1e21:
        return go_float(v)
    return r  # Go's exponent form, which Python's repr shares


_FRACTIONS = [""] + [f".{k:03d}" for k in range(1, 1000)]


def format_timestamps(ms: np.ndarray) -> list[str]:
    """Unix seconds of millisecond timestamps, as Prometheus's JSON writer prints them:
    the whole seconds, then ``.`` and three digits unless the milliseconds are zero."""
    ms = np.asarray(ms, dtype=np.int64)
    whole, frac = np.divmod(np.abs(ms), 1000)
    out = list(map(str.__add__, map(str, whole.tolist()), map(_FRACTIONS.__getitem__,
                                                              frac.tolist())))
    for k in np.flatnonzero(ms < 0).tolist():
        out[k] = "-" + out[k]
    return out
