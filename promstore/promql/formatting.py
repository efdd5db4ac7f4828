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


def format_values(values: np.ndarray) -> list[str]:
    """Sample values as Prometheus's API writes them; the common case stays in C-level
    passes."""
    out = list(map(repr, values.tolist()))
    for k, r in enumerate(out):
        if r.endswith(".0"):
            out[k] = r[:-2]
        elif "n" in r:  # nan, inf
            out[k] = _SPECIAL[r]
        elif "e" in r and 1e-6 <= abs(values[k]) < 1e21:
            out[k] = go_float(values[k])  # Python's repr switches to exponents earlier
    return out


def format_timestamps(ms: np.ndarray) -> list[str]:
    """Unix seconds of millisecond timestamps, as Prometheus's JSON writer prints them:
    the whole seconds, then ``.`` and three digits unless the milliseconds are zero."""
    ms = np.asarray(ms, dtype=np.int64)
    neg = ms < 0
    mag = np.abs(ms)
    whole, frac = np.divmod(mag, 1000)
    out = []
    for w, f, n in zip(whole.tolist(), frac.tolist(), neg.tolist()):
        s = f"{w}.{f:03d}" if f else str(w)
        out.append("-" + s if n else s)
    return out
