"""Request parameters of the Prometheus HTTP API, read as Prometheus reads them.

Parameters come from the query string and, for a form POST, from the body; both are
merged, body values first (Go's ``Request.FormValue`` gives the body precedence).
Times are RFC 3339 or unix seconds, durations are Prometheus durations (``1h30m``) or
seconds, ``match[]`` holds series selectors. Error messages follow Prometheus's wording,
so that clients and people see the same text from both.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

import promql_parser
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from storage.errors import BadDataError
from storage.matchers import Matcher, MatchType

from .envelope import ApiError, ErrorType

__all__ = [
    "MAX_TIME_MS",
    "MIN_TIME_MS",
    "invalid_param",
    "parse_duration",
    "parse_limit_param",
    "parse_match_params",
    "parse_selector",
    "parse_time",
    "parse_time_param",
    "quoted",
    "request_params",
]

# Prometheus's defaults for an absent start/end (what its web API calls minTime and
# maxTime): far enough out for any data, close enough to int64 to stay exact.
MIN_TIME_MS = -9_223_309_901_257_974_000
MAX_TIME_MS = 9_223_309_901_257_974_999
# The same instants as Go prints them; clients echo them back (e.g. client_golang).
_MIN_TIME_TEXT = "-292273086-05-16T16:47:06Z"
_MAX_TIME_TEXT = "292277025-08-18T07:12:54.999999999Z"

_INT64_MAX = 2**63 - 1
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def quoted(s: str) -> str:
    """``s`` double-quoted for an error message, as Go's ``%q`` does."""
    return json.dumps(s, ensure_ascii=False)


def invalid_param(name: str, reason: str) -> ApiError:
    """The ``bad_data`` error Prometheus gives for a parameter it cannot use."""
    return ApiError(ErrorType.BAD_DATA, f"invalid parameter {quoted(name)}: {reason}")


async def request_params(request: web.Request) -> MultiDictProxy[str]:
    """The request's parameters: form body (for a form POST) first, then query string."""
    params: MultiDict[str] = MultiDict()
    if request.method == "POST" and request.content_type in _FORM_TYPES:
        try:
            form = await request.post()
        except web.HTTPException:
            raise  # e.g. 413 for a body over the server's size limit
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(ErrorType.BAD_DATA, f"error parsing form values: {exc}") from None
        params.extend((k, v) for k, v in form.items() if isinstance(v, str))
    params.extend(request.query)
    return MultiDictProxy(params)


# -- times --------------------------------------------------------------------------------

_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year, unlike datetime)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _rfc3339_ms(s: str) -> int | None:
    m = _RFC3339.fullmatch(s)
    if m is None:
        return None
    y, mo, d, h, mi, sec = (int(m[k]) for k in range(1, 7))
    if not (1 <= mo <= 12 and 1 <= d <= _days_in_month(y, mo) and h < 24 and mi < 60 and sec < 60):
        return None
    offset = 0
    if m[8] != "Z":
        oh, om = int(m[8][1:3]), int(m[8][4:6])
        if oh >= 24 or om >= 60:
            return None
        offset = (oh * 3600 + om * 60) * (1 if m[8][0] == "+" else -1)
    seconds = _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset
    nanos = int((m[7] or "")[:9].ljust(9, "0"))  # Go keeps nanoseconds, drops the rest
    return (seconds * 1_000_000_000 + nanos) // 1_000_000


def _unix_seconds_ms(s: str) -> int | None:
    if _DECIMAL.fullmatch(s) is None:
        return None
    t = float(s)
    if not math.isfinite(t):
        return None
    frac, whole = math.modf(t)
    # Prometheus rounds to milliseconds half away from zero, then truncates to nanoseconds.
    frac = math.copysign(math.floor(abs(frac) * 1000 + 0.5), frac) / 1000
    return (int(whole) * 1_000_000_000 + int(frac * 1e9)) // 1_000_000


def parse_time(s: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 time or unix seconds (a float).

    Raises ``BadDataError`` with Prometheus's message when ``s`` is neither.
    """
    ms = _unix_seconds_ms(s)
    if ms is None:
        ms = _rfc3339_ms(s)
    if ms is None:
        ms = {_MIN_TIME_TEXT: MIN_TIME_MS, _MAX_TIME_TEXT: MAX_TIME_MS}.get(s)
    if ms is None or not -_INT64_MAX - 1 <= ms <= _INT64_MAX:
        raise BadDataError(f"cannot parse {quoted(s)} to a valid timestamp")
    return ms


def parse_time_param(params: MultiDictProxy[str], name: str, default: int) -> int:
    """Parameter ``name`` as milliseconds, ``default`` when absent or empty."""
    value = params.get(name, "")
    if value == "":
        return default
    try:
        return parse_time(value)
    except BadDataError as exc:
        raise invalid_param(name, f"Invalid time value for '{name}': {exc}") from None


# -- durations ----------------------------------------------------------------------------

_DURATION = re.compile(
    r"(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?"
    r"(?:([0-9]+)s)?(?:([0-9]+)ms)?"
)
_UNIT_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)


def parse_duration(s: str) -> int:
    """Nanoseconds (like Go's ``time.Duration``) of ``1h30m``-style text or float seconds.

    Units must come in the order y, w, d, h, m, s, ms. Raises ``BadDataError`` with
    Prometheus's message for anything else or for durations beyond int64 nanoseconds.
    """
    if _DECIMAL.fullmatch(s) is not None:
        ns = float(s) * 1e9
        if not -(2.0**63) <= ns <= 2.0**63:
            raise BadDataError(f"cannot parse {quoted(s)} to a valid duration. It overflows int64")
        return int(ns)
    m = _DURATION.fullmatch(s)
    if s and m is not None:
        ms = sum(int(n) * unit for n, unit in zip(m.groups(), _UNIT_MS) if n is not None)
        if ms * 1_000_000 <= _INT64_MAX:
            return ms * 1_000_000
    raise BadDataError(f"cannot parse {quoted(s)} to a valid duration")


# -- limit --------------------------------------------------------------------------------


def parse_limit_param(params: MultiDictProxy[str]) -> int:
    """The ``limit`` parameter (Prometheus 2.49 and later); 0 when absent: no limit."""
    value = params.get("limit", "")
    if value == "":
        return 0
    if re.fullmatch(r"[+-]?[0-9]{1,18}", value) is None:
        raise invalid_param("limit", f"cannot parse {quoted(value)} to a valid limit")
    limit = int(value)
    if limit < 0:
        raise invalid_param("limit", "limit must be non-negative")
    return limit


# -- series selectors ---------------------------------------------------------------------

# The PromQL parser recurses on nesting and crashes the process on very deep input, so a
# selector must first look like one: an optional metric name and one flat {…} block.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', re.DOTALL)
_SELECTOR_SHAPE = re.compile(r"\s*(?:[a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(?:\{[^{}()]*\})?\s*")

_MATCH_TYPES = {  # MatchOp is not hashable; its name is
    str(promql_parser.MatchOp.Equal): MatchType.EQ,
    str(promql_parser.MatchOp.NotEqual): MatchType.NEQ,
    str(promql_parser.MatchOp.Re): MatchType.RE,
    str(promql_parser.MatchOp.NotRe): MatchType.NRE,
}


def parse_selector(selector: str) -> list[list[Matcher]]:
    """The matcher sets of one series selector like ``up{job=~"api|web"}``.

    One set, or one per ``or`` branch of ``{a="1" or b="2"}``; the metric name becomes
    a ``__name__`` equality matcher. Raises ``BadDataError`` for anything but a plain
    series selector (no functions, ranges, offsets or ``@``).
    """
    if not _SELECTOR_SHAPE.fullmatch(_STRING.sub('""', selector)):
        raise BadDataError('parse error: expected a series selector like metric{label="value"}')
    try:
        expr = promql_parser.parse(selector)
    except ValueError as exc:
        raise BadDataError(f"parse error: {exc}") from None
    if not isinstance(expr, promql_parser.VectorSelector):
        raise BadDataError(f"parse error: expected a series selector, got {type(expr).__name__}")
    groups = expr.matchers.or_matchers or [expr.matchers.matchers]
    name = [Matcher(MatchType.EQ, "__name__", expr.name)] if expr.name else []
    return [
        name + [Matcher(_MATCH_TYPES[str(m.op)], m.name, m.value) for m in group]
        for group in groups
    ]


def parse_match_params(selectors: Sequence[str]) -> list[list[Matcher]]:
    """The matcher sets of all ``match[]`` values; a series matching any set is selected.

    Like Prometheus, every set needs a matcher that does not match the empty string,
    so that a selector cannot select every series by accident.
    """
    sets = [ms for s in selectors for ms in parse_selector(s)]
    for ms in sets:
        if all(m.matches_empty for m in ms):
            raise BadDataError("match[] must contain at least one non-empty matcher")
    return sets
