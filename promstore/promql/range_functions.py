"""The functions that take a range vector: ``rate``, ``*_over_time``, ``deriv``….

Each folds the window of every series at every step in one kernel call
(``_range_kernels``). The result drops the metric name (except ``last_over_time``, which
acts like an offset), and, as in Prometheus, two result series with the same label set
are an error even when they never have a value at the same step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from storage.downsampled import Aggregate, Part
from storage.matchers import MatchType

from ._range_kernels import CODES, COUNT, INCREASE, IRATE, MAX, MIN, RATE, SUM, range_function
from .errors import EvaluationError
from .labels import METRIC_NAME, Labels
from .parser import Call, MatrixSelector, Subquery, ValueType, step_invariant
from .resolution import plan_parts
from .selectors import Downsampled, RangeSource, range_source
from .values import Grid, Vector, merge_same_labels

if TYPE_CHECKING:
    from .engine import Evaluator

__all__ = ["AGGREGATED", "RANGE_FUNCTIONS", "absent_labels", "eval_range_function"]

RANGE_FUNCTIONS = frozenset(CODES) | {"absent_over_time"}

AGGREGATED: dict[str, tuple[Aggregate, int]] = {
    "rate": (Aggregate.COUNTER, RATE), "increase": (Aggregate.COUNTER, INCREASE),
    "irate": (Aggregate.COUNTER, IRATE),
    "min_over_time": (Aggregate.MIN, MIN), "max_over_time": (Aggregate.MAX, MAX),
    "sum_over_time": (Aggregate.SUM, SUM), "count_over_time": (Aggregate.COUNT, SUM),
    "avg_over_time": (Aggregate.SUM, SUM),  # divided by the summed counts
}
"""The functions that may read downsampled data: the aggregate they read and how they
fold it. ``count_over_time`` adds up the windows' counts (Thanos counts the windows);
``avg_over_time`` divides the sums' total by the counts' total. Every other function
needs samples an aggregate cannot give back (``resets`` every drop, which the adjusted
counter hides) and reads raw data only."""


def _range_seconds(range_ms: int) -> float:
    """Go's ``Duration.Seconds()`` of the range: whole seconds plus the fraction."""
    return float(range_ms // 1000) + float((range_ms % 1000) * 1_000_000) / 1e9


def _fold(code: int, source: RangeSource, grid: Grid, p1: np.ndarray,
          p2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = source.samples
    values = np.zeros((m.n, grid.n))
    present = np.zeros((m.n, grid.n), dtype=bool)
    range_function(code, m.starts, m.times, m.values, source.refs, source.range,
                   _range_seconds(source.range), grid.times, p1, p2, values, present)
    return values, present


def _check_holt_winters(source: RangeSource, grid: Grid, sf: np.ndarray,
                        tf: np.ndarray) -> None:
    """Prometheus refuses bad factors at steps where some series has samples."""
    bad_sf = (sf <= 0) | (sf >= 1)  # NaN passes, as in Prometheus
    bad_tf = (tf <= 0) | (tf >= 1)
    if not (bad_sf | bad_tf).any():
        return
    _, present = _fold(COUNT, source, grid, sf, tf)
    busy = present.any(axis=0)
    for s in np.flatnonzero(busy & (bad_sf | bad_tf)):
        if bad_sf[s]:
            raise EvaluationError("invalid smoothing factor. Expected: 0 < sf < 1, "
                                  f"got: {_go_f(sf[s])}")
        raise EvaluationError(f"invalid trend factor. Expected: 0 < tf < 1, got: {_go_f(tf[s])}")


def _go_f(x: float) -> str:
    """Go's ``%f``."""
    if np.isnan(x):
        return "NaN"
    if np.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return f"{x:f}"


def absent_labels(ev: Evaluator, node: object) -> Labels:
    """The label set ``absent()`` reports for its argument: the labels that equality
    matchers pin down (a name matched in any other way, or twice, is left out)."""
    if isinstance(node, MatrixSelector):
        node = node.selector
    matchers = getattr(node, "matchers", ())
    pinned: dict[str, str] = {}
    loose: set[str] = set()
    for m in matchers:
        if m.name == METRIC_NAME:
            continue
        if m.type == MatchType.EQ and m.name not in pinned:
            pinned[m.name] = m.value
        else:
            loose.add(m.name)
    kept = {k: v for k, v in pinned.items() if k not in loose and v}
    names = tuple(sorted(kept))
    ids = np.array([[ev.pool.intern(kept[k]) for k in names]], dtype=np.int32)
    return Labels(names, ids.reshape(1, len(names)))


def eval_range_function(ev: Evaluator, node: Call, grid: Grid) -> Vector:
    """Evaluate a call whose argument list holds one range vector."""
    k = next(i for i, a in enumerate(node.args) if a.type == ValueType.MATRIX)
    arg = node.args[k]
    assert isinstance(arg, MatrixSelector | Subquery)
    scalars = [ev.eval_scalar(a, grid) for i, a in enumerate(node.args) if i != k]
    p1 = scalars[0] if scalars else np.zeros(grid.n)
    p2 = scalars[1] if len(scalars) > 1 else np.zeros(grid.n)
    if isinstance(arg, MatrixSelector) and node.name in AGGREGATED:
        parts = plan_parts(ev, arg.selector, arg.range, grid, instant=False)
        if parts:
            return _downsampled(ev, node, arg, grid, parts)
    source = range_source(ev, arg, grid, drifting=not step_invariant(node))
    if node.name == "absent_over_time":
        _, present = _fold(COUNT, source, grid, p1, p2)
        missing = np.logical_not(present.any(axis=0))
        return Vector(absent_labels(ev, arg), np.ones((1, grid.n)), missing[None, :]).prune()
    if node.name == "holt_winters":
        _check_holt_winters(source, grid, p1, p2)
    values, present = _fold(CODES[node.name], source, grid, p1, p2)
    return _result(ev, node, source.samples.labels, values, present)


def _result(ev: Evaluator, node: Call, labels: Labels, values: np.ndarray,
            present: np.ndarray) -> Vector:
    if node.name != "last_over_time":
        labels = labels.drop((METRIC_NAME,))
    vec = Vector(labels, values, present).prune()
    ev.count_samples(vec.n_points)
    return merge_same_labels(vec, whole_range=True)


def _downsampled(ev: Evaluator, node: Call, arg: MatrixSelector, grid: Grid,
                 parts: list[Part]) -> Vector:
    """A function of ``AGGREGATED`` over downsampled data (raw data where ``parts``
    say so, read as windows of one sample)."""
    aggregate, code = AGGREGATED[node.name]
    zeros = np.zeros(grid.n)
    source = range_source(ev, arg, grid, read=Downsampled(aggregate, parts))
    values, present = _fold(code, source, grid, zeros, zeros)
    if node.name == "avg_over_time":
        counts = range_source(ev, arg, grid, read=Downsampled(Aggregate.COUNT, parts))
        if not np.array_equal(counts.samples.labels.ids, source.samples.labels.ids):
            raise EvaluationError("downsampled sums and counts disagree on their series")
        total, _ = _fold(SUM, counts, grid, zeros, zeros)
        with np.errstate(all="ignore"):
            values = values / total
    return _result(ev, node, source.samples.labels, values, present)
