"""The PromQL function table: every function of Prometheus 2.42, by name.

``FUNCTIONS`` maps a name to its implementation, ``(evaluator, call, grid) -> value``.
Functions of a range vector live in ``range_functions``; the rest are here: element-wise
math, clamping and rounding, time and date, ``label_replace``/``label_join``,
``histogram_quantile`` over classic buckets, ``absent``, ``sort``, ``scalar``,
``vector``, ``timestamp``. Element-wise functions drop the metric name; results that
end up with two series of one label set at one step are an error, as in Prometheus.

Arithmetic follows Go's ``math`` package where it differs from C's (``log2``,
``log10``, ``deg``, ``rad`` are computed by Go's formulas, so the last bits agree).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from storage.errors import BadDataError
from storage.matchers import Matcher, MatchType

from ._aggregate_kernels import bucket_quantiles
from .errors import EvaluationError
from .labels import METRIC_NAME, Labels, group_rows
from .parser import Call, StringLiteral, VectorSelector
from .range_functions import RANGE_FUNCTIONS, absent_labels, eval_range_function
from .selectors import select_instant
from .values import Grid, Scalar, Value, Vector, merge_same_labels

if TYPE_CHECKING:
    from .engine import Evaluator

__all__ = ["FUNCTIONS", "Function"]

Function = Callable[["Evaluator", Call, Grid], Value]

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _vector(ev: Evaluator, call: Call, grid: Grid, k: int = 0) -> Vector:
    value = ev.eval(call.args[k], grid)
    assert isinstance(value, Vector)
    return value


def _string(call: Call, k: int) -> str:
    arg = call.args[k]
    assert isinstance(arg, StringLiteral)
    return arg.value


def _mapped(vec: Vector, values: np.ndarray) -> Vector:
    """``vec`` with new values and without metric names, duplicates checked per step."""
    return merge_same_labels(Vector(vec.labels.drop((METRIC_NAME,)), values, vec.present))


def _elementwise(f: Callable[[np.ndarray], np.ndarray]) -> Function:
    def call(ev: Evaluator, node: Call, grid: Grid) -> Value:
        vec = _vector(ev, node, grid)
        with np.errstate(all="ignore"):
            return _mapped(vec, f(vec.values))
    return call


def _go_log2(x: np.ndarray) -> np.ndarray:
    frac, exp = np.frexp(x)
    out = np.log(frac) * (1 / math.log(2)) + exp
    return np.where(frac == 0.5, (exp - 1).astype(np.float64), out)


def _go_log10(x: np.ndarray) -> np.ndarray:
    return np.log(x) * (1 / math.log(10))


def _sgn(x: np.ndarray) -> np.ndarray:
    return np.where(x < 0, -1.0, np.where(x > 0, 1.0, x))


# -- clamping and rounding ---------------------------------------------------------------


def _clamp(ev: Evaluator, node: Call, grid: Grid) -> Value:
    vec = _vector(ev, node, grid)
    lo, hi = ev.eval_scalar(node.args[1], grid), ev.eval_scalar(node.args[2], grid)
    out = _mapped(vec, np.maximum(lo, np.minimum(hi, vec.values)))
    if (hi < lo).any():  # Prometheus returns nothing at steps where max < min
        out = Vector(out.labels, out.values, out.present & ~(hi < lo)).prune()
    return out


def _clamp_max(ev: Evaluator, node: Call, grid: Grid) -> Value:
    vec = _vector(ev, node, grid)
    return _mapped(vec, np.minimum(ev.eval_scalar(node.args[1], grid), vec.values))


def _clamp_min(ev: Evaluator, node: Call, grid: Grid) -> Value:
    vec = _vector(ev, node, grid)
    return _mapped(vec, np.maximum(ev.eval_scalar(node.args[1], grid), vec.values))


def _round(ev: Evaluator, node: Call, grid: Grid) -> Value:
    vec = _vector(ev, node, grid)
    to_nearest = ev.eval_scalar(node.args[1], grid) if len(node.args) > 1 else np.ones(grid.n)
    with np.errstate(all="ignore"):
        inverse = 1.0 / to_nearest
        return _mapped(vec, np.floor(vec.values * inverse + 0.5) / inverse)


# -- scalars and vectors -----------------------------------------------------------------


def _scalar(ev: Evaluator, node: Call, grid: Grid) -> Value:
    vec = _vector(ev, node, grid)
    one = vec.present.sum(axis=0) == 1
    if vec.n == 0:
        return Scalar(np.full(grid.n, np.nan))
    picked = vec.values[vec.present.argmax(axis=0), np.arange(grid.n)]
    return Scalar(np.where(one, picked, np.nan))


def _vector_fn(ev: Evaluator, node: Call, grid: Grid) -> Value:
    values = ev.eval_scalar(node.args[0], grid)
    return Vector(Labels.empty(1), values[None, :].copy(), np.ones((1, grid.n), dtype=bool))


def _time(ev: Evaluator, node: Call, grid: Grid) -> Value:
    return Scalar(grid.times / 1000)


def _pi(ev: Evaluator, node: Call, grid: Grid) -> Value:
    return Scalar(np.full(grid.n, math.pi))


def _timestamp(ev: Evaluator, node: Call, grid: Grid) -> Value:
    arg = node.args[0]
    if isinstance(arg, VectorSelector):  # the samples' own times, not the steps'
        vec, times = select_instant(ev, arg, grid, with_times=True)
        assert times is not None
        return _mapped(vec, times / 1000)
    vec = _vector(ev, node, grid)
    return _mapped(vec, np.broadcast_to(grid.times / 1000, vec.values.shape).copy())


def _absent(ev: Evaluator, node: Call, grid: Grid) -> Value:
    vec = _vector(ev, node, grid)
    missing = np.logical_not(vec.present.any(axis=0))
    return Vector(absent_labels(ev, node.args[0]), np.ones((1, grid.n)),
                  missing[None, :]).prune()


def _sorter(descending: bool) -> Function:
    def call(ev: Evaluator, node: Call, grid: Grid) -> Value:
        vec = _vector(ev, node, grid)
        if grid.n != 1 or vec.n < 2:
            return vec  # order only shows in an instant query
        v = vec.values[:, 0]
        key = -v if descending else v
        order = np.lexsort((key, np.isnan(v)))  # NaN last either way
        return vec.take(order)
    return call


def _histogram_native_only(ev: Evaluator, node: Call, grid: Grid) -> Value:
    """``histogram_count``/``_sum``/``_fraction`` read native histograms, which are not
    stored; on float samples they return nothing, as in Prometheus."""
    for arg in node.args:
        ev.eval(arg, grid)
    return Vector.empty(grid.n)


# -- time and date -----------------------------------------------------------------------


_DAYS_BEFORE = np.array([0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365])
_UNIX_TO_ABSOLUTE = np.uint64(9223372028715321600)  # Go: unixToInternal + internalToAbsolute
_ABSOLUTE_ZERO_YEAR = -292277022399


def _civil(secs: np.ndarray) -> dict[str, np.ndarray]:
    """UTC calendar fields of unix seconds, computed as Go's ``time`` package does
    (unsigned seconds since its absolute zero, 400/100/4/1-year cycles), so that even
    times far outside any calendar wrap around exactly as in Prometheus."""
    with np.errstate(over="ignore"):
        abs_s = secs.astype(np.int64).view(np.uint64) + _UNIX_TO_ABSOLUTE
    d = abs_s // np.uint64(86400)
    n = d // np.uint64(146097)
    y = n * np.uint64(400)
    d -= n * np.uint64(146097)
    n = d // np.uint64(36524)
    n -= n >> np.uint64(2)
    y += n * np.uint64(100)
    d -= n * np.uint64(36524)
    n = d // np.uint64(1461)
    y += n * np.uint64(4)
    d -= n * np.uint64(1461)
    n = d // np.uint64(365)
    n -= n >> np.uint64(2)
    y += n
    d -= n * np.uint64(365)
    year = y.astype(np.int64) + _ABSOLUTE_ZERO_YEAR
    yday = d.astype(np.int64)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    leap_day = leap & (yday == 59)
    day = yday - (leap & (yday > 59))
    month = day // 31
    end = _DAYS_BEFORE[month + 1]
    later = day >= end
    begin = np.where(later, end, _DAYS_BEFORE[month])
    month = month + later + 1
    day_of_month = day - begin + 1
    month = np.where(leap_day, 2, month)
    day_of_month = np.where(leap_day, 29, day_of_month)
    in_month = _DAYS_BEFORE[month] - _DAYS_BEFORE[month - 1] + ((month == 2) & leap)
    seconds = abs_s % np.uint64(86400)
    return {
        "year": year, "month": month, "day_of_month": day_of_month,
        "day_of_year": yday + 1,
        "day_of_week": ((abs_s + np.uint64(86400)) % np.uint64(604800)) // np.uint64(86400),
        "hour": seconds // np.uint64(3600), "minute": seconds % np.uint64(3600) // np.uint64(60),
        "days_in_month": in_month,
    }


def _to_unix_seconds(values: np.ndarray) -> np.ndarray:
    """Go's ``int64(v)`` on amd64: truncation, and the minimum int64 for NaN or overflow."""
    ok = np.isfinite(values) & (np.abs(values) < 2.0**63)
    return np.where(ok, np.trunc(np.where(ok, values, 0)), -(2**63)).astype(np.int64)


def _date(field: str) -> Function:
    def call(ev: Evaluator, node: Call, grid: Grid) -> Value:
        if not node.args:
            t = grid.times
            secs = np.where(t >= 0, t // 1000, -((-t) // 1000))  # Go truncates
            return Vector(Labels.empty(1), _civil(secs)[field][None, :].astype(np.float64),
                          np.ones((1, grid.n), dtype=bool))
        vec = _vector(ev, node, grid)
        return _mapped(vec, _civil(_to_unix_seconds(vec.values))[field].astype(np.float64))
    return call


# -- labels ------------------------------------------------------------------------------


def _go_expand(template: str, match: re.Match[str], names: Mapping[str, int]) -> str:
    """Go's ``Regexp.ExpandString``: ``$1``, ``${1}``, ``$name``, ``$$``; a reference
    takes the longest run of letters, digits and ``_`` (so ``$1x`` names group "1x")."""
    out: list[str] = []
    rest = template
    while True:
        before, dollar, rest = rest.partition("$")
        out.append(before)
        if not dollar:
            return "".join(out)
        if rest.startswith("$"):
            out.append("$")
            rest = rest[1:]
            continue
        brace = rest.startswith("{")
        body = rest[1:] if brace else rest
        m = re.match(r"[^\W]+", body)  # letters, digits, _ (Unicode, as Go's extract)
        if m is None or (brace and body[m.end():m.end() + 1] != "}"):
            out.append("$")
            continue
        name = m.group()
        rest = body[m.end() + (1 if brace else 0):]
        if name.isdigit() and name.isascii() and not (name[0] == "0" and len(name) > 1) \
                and int(name) < 10**8:
            group: int | None = int(name)
        else:
            group = names.get(name)
        if group is not None and group <= (match.re.groups or 0):
            out.append(match.group(group) or "")


def _compile_go_regex(pattern: str) -> tuple[Matcher, re.Pattern[str]]:
    """The pattern as a matcher (RE2's syntax, matching in linear time) and as a Python
    regex for its capture groups, which only ever runs on values known to match: a
    backtracking engine is fast on those, slow only on values that fail."""
    try:
        return Matcher(MatchType.RE, "x", pattern), re.compile(f"(?:{pattern})", re.ASCII)
    except (BadDataError, re.error):
        raise EvaluationError(f"invalid regular expression in label_replace(): {pattern}"
                              ) from None


def _relabel(vec: Vector, labels: Labels) -> Vector:
    return merge_same_labels(Vector(labels, vec.values, vec.present))


def _label_replace(ev: Evaluator, node: Call, grid: Grid) -> Value:
    dst, repl, src, pattern = (_string(node, k) for k in (1, 2, 3, 4))
    matcher, regex = _compile_go_regex(pattern)
    if not _LABEL_NAME.fullmatch(dst):
        raise EvaluationError(f"invalid destination label name in label_replace(): {dst}")
    vec = _vector(ev, node, grid)
    if vec.n == 0:
        return vec
    source = vec.labels.column(src)
    current = vec.labels.column(dst)
    distinct, inverse = np.unique(np.stack([source, current], axis=1), axis=0,
                                  return_inverse=True)
    strings = ev.pool.strings
    group_names = regex.groupindex
    replaced = np.empty(len(distinct), dtype=np.int32)
    for k, (src_id, dst_id) in enumerate(distinct.tolist()):  # per distinct value pair
        value = strings[src_id]
        m = regex.fullmatch(value) if matcher.matches(value) else None
        replaced[k] = dst_id if m is None else ev.pool.intern(_go_expand(repl, m, group_names))
    labels = vec.labels.with_column(dst, replaced[inverse.reshape(-1)]).compact()
    return _relabel(vec, labels)


def _label_join(ev: Evaluator, node: Call, grid: Grid) -> Value:
    dst, sep = _string(node, 1), _string(node, 2)
    sources = [_string(node, k) for k in range(3, len(node.args))]
    for name in sources:
        if not _LABEL_NAME.fullmatch(name):
            raise EvaluationError(f"invalid source label name in label_join(): {name}")
    if not _LABEL_NAME.fullmatch(dst):
        raise EvaluationError(f"invalid destination label name in label_join(): {dst}")
    vec = _vector(ev, node, grid)
    if vec.n == 0:
        return vec
    parts = vec.labels.project(sources)
    distinct, inverse = np.unique(parts, axis=0, return_inverse=True)
    strings = ev.pool.strings
    joined = np.array([ev.pool.intern(sep.join(strings[i] for i in row))
                       for row in distinct.tolist()], dtype=np.int32)  # per distinct value set
    labels = vec.labels.with_column(dst, joined[inverse.reshape(-1)]).compact()
    return _relabel(vec, labels)


# -- histogram_quantile ------------------------------------------------------------------

_GO_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|"
                       r"[+-]?(?:inf|infinity)|nan", re.IGNORECASE)
_GO_HEX_FLOAT = re.compile(r"[+-]?0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)p[+-]?[0-9]+",
                           re.IGNORECASE)


def _parse_go_float(s: str) -> float | None:
    """Go's ``strconv.ParseFloat(s, 64)``, or None where it fails (for bucket bounds)."""
    if _GO_FLOAT.fullmatch(s):
        return float(s)
    if _GO_HEX_FLOAT.fullmatch(s):
        return float.fromhex(s)
    return None


def _histogram_quantile(ev: Evaluator, node: Call, grid: Grid) -> Value:
    qs = ev.eval_scalar(node.args[0], grid)
    vec = _vector(ev, node, grid, 1)
    le = vec.labels.column("le")
    distinct = np.unique(le)
    parsed = [_parse_go_float(s) for s in ev.pool.lookup(distinct)]  # per distinct bound
    bounds = np.array([math.nan if b is None else b for b in parsed])
    valid = np.array([b is not None for b in parsed], dtype=bool)
    at = np.searchsorted(distinct, le)
    usable = valid[at] if len(distinct) else np.zeros(0, dtype=bool)
    vec, upper = vec.take(np.flatnonzero(usable)), bounds[at][usable]
    if vec.n == 0:
        return Vector.empty(grid.n)
    # One histogram per label set without "le"; the name stays in the key, so that two
    # histograms differing only by name are not mixed (their results then collide).
    key = vec.labels.drop(("le",))
    groups, first = group_rows(key.ids)
    order = np.lexsort((upper, groups))
    starts = np.searchsorted(groups[order], np.arange(len(first) + 1))
    values = np.zeros((len(first), grid.n))
    present = np.zeros((len(first), grid.n), dtype=bool)
    bucket_quantiles(vec.values, vec.present, upper, order, starts, qs, values, present)
    out = Vector(key.take(first).drop((METRIC_NAME,)), values, present).prune()
    return merge_same_labels(out)


# -- the table ---------------------------------------------------------------------------

_ELEMENTWISE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "exp": np.exp, "sqrt": np.sqrt,
    "ln": np.log, "log2": _go_log2, "log10": _go_log10,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh,
    "deg": lambda v: v * 180 / math.pi, "rad": lambda v: v * math.pi / 180, "sgn": _sgn,
}

FUNCTIONS: dict[str, Function] = {
    **{name: _elementwise(f) for name, f in _ELEMENTWISE.items()},
    **{name: eval_range_function for name in RANGE_FUNCTIONS},
    **{name: _date(name) for name in ("year", "month", "day_of_month", "day_of_year",
                                       "day_of_week", "hour", "minute", "days_in_month")},
    "clamp": _clamp, "clamp_max": _clamp_max, "clamp_min": _clamp_min, "round": _round,
    "scalar": _scalar, "vector": _vector_fn, "time": _time, "pi": _pi,
    "timestamp": _timestamp, "absent": _absent,
    "sort": _sorter(descending=False), "sort_desc": _sorter(descending=True),
    "label_replace": _label_replace, "label_join": _label_join,
    "histogram_quantile": _histogram_quantile,
    "histogram_count": _histogram_native_only, "histogram_sum": _histogram_native_only,
    "histogram_fraction": _histogram_native_only,
}
