"""Test support: an in-memory store and a runner for PromQL test scripts.

``MemoryStore`` is a ``Selectable`` over series given as Python objects, for unit tests
of the engine without the storage engine.

``run_script`` runs scripts in the format of Prometheus's ``promql/testdata/*.test``
files, so that cases translate directly::

    load 5m
        http_requests{job="api", instance="0"}  0+10x10
        other{a="b"}  1 _ 3 stale 5

    eval instant at 50m sum by (job) (http_requests)
        {job="api"} 50

    eval range from 0 to 10m step 5m http_requests{instance="0"}
        http_requests{job="api", instance="0"} 0 10 20

    eval_fail instant at 0m foo * on(a) bar

    clear

Sample series notation: ``a+bxn`` is ``n+1`` values from ``a`` stepping by ``b``
(``a-bxn`` steps down), ``_`` is a missing sample, ``_xn`` ``n`` of them, ``stale`` a
stale marker; values may be ``NaN``, ``Inf``, ``-Inf``. Expected values compare with a
relative tolerance of 1e-9 (NaN equals NaN); an instant ``eval`` compares as a set
unless the line says ``eval_ordered``. An instant query of a range (``x[5m]``) lists
the samples of each series in order; their timestamps are not compared.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from storage.batch import WriteBatch
from storage.interface import Shard
from storage.labels import NO_LIMITS, canonicalise
from storage.matchers import Matcher
from storage.series_set import SeriesSet

from .engine import Engine, EngineOptions, QueryResult
from .parser import VectorSelector, parse
from .values import Matrix, Scalar, String, Vector

__all__ = ["STALE_NAN", "MemoryStore", "ScriptError", "run_script"]

STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


def _label_hash(labels: dict[str, str]) -> np.ndarray:
    """The label-set hash stores shard by (``labels.canonicalise``), as a 1-array."""
    return canonicalise(WriteBatch.from_series([(labels, [])]), NO_LIMITS).hashes


@dataclass
class MemoryStore:
    """Series held as ``(labels, timestamps, values)``; ``select`` filters them."""

    series: list[tuple[dict[str, str], list[int], list[float]]] = field(default_factory=list)

    def add(self, labels: dict[str, str], timestamps: Sequence[int],
            values: Sequence[float]) -> None:
        for i, (existing, ts, vs) in enumerate(self.series):
            if existing == labels:
                merged = dict(zip(ts, vs)) | dict(zip(timestamps, values))
                keys = sorted(merged)
                self.series[i] = (existing, keys, [merged[k] for k in keys])
                return
        order = np.argsort(np.asarray(timestamps, dtype=np.int64), kind="stable")
        self.series.append((dict(labels), [int(timestamps[k]) for k in order],
                            [float(values[k]) for k in order]))

    def select(self, matchers: Sequence[Matcher], mint: int, maxt: int,
               shard: Shard | None = None) -> SeriesSet:
        out = []
        for labels, ts, vs in self.series:
            if not all(m.matches(labels.get(m.name, "")) for m in matchers):
                continue
            if shard is not None and not shard.holds(_label_hash(labels))[0]:
                continue
            keep = [k for k, t in enumerate(ts) if mint <= t <= maxt]
            if keep:
                out.append((labels, [ts[k] for k in keep], [vs[k] for k in keep]))
        return SeriesSet.from_series(out)


# -- scripts ------------------------------------------------------------------------------


class ScriptError(AssertionError):
    """A script's expectation did not hold (or the script is malformed)."""


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
            "w": 604_800_000, "y": 31_536_000_000}
_NUMBER = r"[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|inf|NaN|nan)"
_EXPANDING = re.compile(rf"({_NUMBER})([-+])({_NUMBER})x(\d+)")


def _duration(text: str) -> int:
    if text.lstrip("-").isdigit():
        return int(text) * 1000
    total, pos = 0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            raise ScriptError(f"bad duration {text!r}")
        total += int(m[1]) * _UNIT_MS[m[2]]
        pos = m.end()
    if pos != len(text) or not text:
        raise ScriptError(f"bad duration {text!r}")
    return total


def _number(text: str) -> float:
    if text == "stale":
        return STALE_NAN
    return float(text)


def _series_values(items: Sequence[str]) -> list[float | None]:
    out: list[float | None] = []
    for item in items:
        m = _EXPANDING.fullmatch(item)
        if m:
            start, sign, step, times = float(m[1]), m[2], float(m[3]), int(m[4])
            step = -step if sign == "-" else step
            out.extend(start + step * k for k in range(times + 1))
        elif item.startswith("_x"):
            out.extend([None] * int(item[2:]))
        elif item == "_":
            out.append(None)
        elif "x" in item and not item.lower().startswith(("inf", "nan")):
            value, repeat = item.split("x")
            out.extend([_number(value)] * (int(repeat) + 1))
        else:
            out.append(_number(item))
    return out


def _split_series_line(line: str) -> tuple[str, list[str]]:
    """``metric{labels} values…`` (the label part may contain spaces)."""
    depth = 0
    for k, ch in enumerate(line):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return line[:k + 1], line[k + 1:].split()
        elif ch.isspace() and depth == 0:
            return line[:k], line[k:].split()
    return line, []


def _labels_of(selector: str) -> dict[str, str]:
    node = parse(selector)
    if not isinstance(node, VectorSelector):
        raise ScriptError(f"not a series: {selector!r}")
    return {m.name: m.value for m in node.matchers}


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


Key = tuple[tuple[str, str], ...]


def _result_series(result: QueryResult) -> list[tuple[Key, list[tuple[int, float]]]]:
    """The result as (labels, [(t, v)…]) per series, in output order."""
    value, pool = result.value, result.pool
    if isinstance(value, Scalar):
        return [((), [(int(result.grid.times[0]), float(value.values[0]))])]
    if isinstance(value, String):
        raise ScriptError("string results are not comparable in scripts")
    dicts = value.labels.to_dicts(pool)
    out = []
    if isinstance(value, Vector):
        times = result.grid.times
        for i, labels in enumerate(dicts):
            pts = [(int(times[s]), float(value.values[i, s]))
                   for s in np.flatnonzero(value.present[i])]
            out.append((tuple(sorted(labels.items())), pts))
    else:
        assert isinstance(value, Matrix)
        for i, labels in enumerate(dicts):
            lo, hi = value.starts[i], value.starts[i + 1]
            out.append((tuple(sorted(labels.items())),
                        list(zip(value.times[lo:hi].tolist(), value.values[lo:hi].tolist()))))
    return out


@dataclass
class _Eval:
    line: str
    kind: str  # "instant" or "range"
    ordered: bool
    fail: bool
    query: str
    start: int
    end: int = 0
    step: int = 0
    expected: list[tuple[str, list[float | None]]] = field(default_factory=list)


_EVAL = re.compile(r"eval(_ordered|_fail)? instant at (\S+) (.+)")
_EVAL_RANGE = re.compile(r"eval(_fail)? range from (\S+) to (\S+) step (\S+) (.+)")


def _check(ev: _Eval, engine: Engine) -> None:
    try:
        if ev.kind == "instant":
            result = engine.instant_query(ev.query, ev.start)
        else:
            result = engine.range_query(ev.query, ev.start, ev.end, ev.step)
    except Exception as exc:
        if ev.fail:
            return
        raise ScriptError(f"{ev.line}: unexpected error {type(exc).__name__}: {exc}") from exc
    if ev.fail:
        raise ScriptError(f"{ev.line}: expected an error")
    got = _result_series(result)
    if isinstance(result.value, Scalar) and ev.expected and ev.expected[0][0] == "":
        want_scalar = ev.expected[0][1][0]
        if want_scalar is None or not _close(got[0][1][0][1], want_scalar):
            raise ScriptError(f"{ev.line}: expected {want_scalar}, got {got[0][1][0][1]}")
        return
    want: list[tuple[Key, list[tuple[int, float]]]] = []
    for selector, values in ev.expected:
        labels = tuple(sorted(_labels_of(selector).items())) if selector != "{}" else ()
        if ev.kind == "instant":
            pts = [(ev.start, v) for v in values if v is not None]
        else:
            pts = [(ev.start + k * ev.step, v) for k, v in enumerate(values) if v is not None]
        want.append((labels, pts))
    if isinstance(result.value, Matrix):  # sample times are not written in scripts
        got = [(k, [(0, v) for _, v in pts]) for k, pts in got]
        want = [(k, [(0, v) for _, v in pts]) for k, pts in want]
    if not ev.ordered:
        got.sort()
        want.sort()
    if [k for k, _ in got] != [k for k, _ in want]:
        raise ScriptError(f"{ev.line}: series differ\n got: {[k for k, _ in got]}\n"
                          f"want: {[k for k, _ in want]}")
    for (key, gp), (_, wp) in zip(got, want):
        if len(gp) != len(wp) or any(gt != wt or not _close(gv, wv)
                                     for (gt, gv), (wt, wv) in zip(gp, wp)):
            raise ScriptError(f"{ev.line}: values of {dict(key)} differ\n got: {gp}\n"
                              f"want: {wp}")


def run_script(script: str, options: EngineOptions | None = None) -> int:
    """Run a test script; returns the number of evaluations checked. Raises
    ``ScriptError`` at the first expectation that does not hold."""
    store = MemoryStore()
    engine = Engine(store, options)
    pending: _Eval | None = None
    checked = 0

    def flush() -> None:
        nonlocal pending, checked
        if pending is not None:
            _check(pending, engine)
            checked += 1
            pending = None

    lines = iter(script.splitlines())
    interval = 0
    loading = False
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        indented = raw[:1].isspace()
        if indented and loading:
            selector, items = _split_series_line(line)
            labels = _labels_of(selector)
            values = _series_values(items)
            ts = [k * interval for k, v in enumerate(values) if v is not None]
            store.add(labels, ts, [v for v in values if v is not None])
            continue
        if indented and pending is not None:
            selector, items = _split_series_line(line)
            if not items:  # a bare number: a scalar result
                pending.expected.append(("", [_number(selector)]))
            else:
                pending.expected.append((selector, _series_values(items)))
            continue
        flush()
        loading = False
        if line.startswith("load "):
            interval = _duration(line.split()[1])
            loading = True
        elif line == "clear":
            store.series.clear()
        elif m := _EVAL.fullmatch(line):
            pending = _Eval(line, "instant", m[1] == "_ordered", m[1] == "_fail", m[3],
                            _duration(m[2]))
        elif m := _EVAL_RANGE.fullmatch(line):
            pending = _Eval(line, "range", False, m[1] == "_fail", m[5], _duration(m[2]),
                            _duration(m[3]), _duration(m[4]))
        else:
            raise ScriptError(f"cannot read script line {line!r}")
    flush()
    return checked
