"""The functions that take a range vector: ``rate``, ``*_over_time``, ``deriv``….

Each folds the window of every series at every step in one kernel call
(``_range_kernels``). The result drops the metric name (except ``last_over_time``, which
acts like an offset), and, as in Prometheus, two result series with the same label set
are an error even when they never have a value at the same step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from storage.matchers import MatchType

from ._range_kernels import CODES, COUNT, range_function
from .errors import EvaluationError
from .labels import METRIC_NAME, Labels
from .parser import Call, MatrixSelector, Subquery, ValueType, step_invariant
from .selectors import RangeSource, range_source
from .values import Grid, Vector, merge_same_labels

if TYPE_CHECKING:
    from .engine import Evaluator

__all__ = ["RANGE_FUNCTIONS", "absent_labels", "eval_range_function"]

RANGE_FUNCTIONS = frozenset(CODES) | {"absent_over_time"}


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
    source = range_source(ev, arg, grid, drifting=not step_invariant(node))
    if node.name == "absent_over_time":
        _, present = _fold(COUNT, source, grid, p1, p2)
        missing = np.logical_not(present.any(axis=0))
        return Vector(absent_labels(ev, arg), np.ones((1, grid.n)), missing[None, :]).prune()
    if node.name == "holt_winters":
        _check_holt_winters(source, grid, p1, p2)
    values, present = _fold(CODES[node.name], source, grid, p1, p2)
    labels = source.samples.labels
    if node.name != "last_over_time":
        labels = labels.drop((METRIC_NAME,))
    vec = Vector(labels, values, present).prune()
    ev.count_samples(vec.n_points)
    return merge_same_labels(vec, whole_range=True)
