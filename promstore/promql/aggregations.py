"""The aggregation operators: ``sum``, ``avg``, ``min``, ``max``, ``count``, ``group``,
``stddev``, ``stdvar``, ``topk``, ``bottomk``, ``quantile``, ``count_values``.

Series are grouped once (by their ``by`` labels, or all labels but the ``without`` ones
and the metric name), then one kernel call folds every group at every step. Groups are
numbered by first appearance, which is the order Prometheus outputs them in.
``topk``/``bottomk`` return input series (name included), not groups.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from ._aggregate_kernels import CODES, aggregate, quantiles, select_k
from .errors import EvaluationError
from .formatting import format_values, go_float_v
from .labels import METRIC_NAME, Labels, group_rows
from .parser import Aggregate, StringLiteral
from .values import Grid, Vector

if TYPE_CHECKING:
    from .engine import Evaluator

__all__ = ["eval_aggregate"]

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MAX_INT64_FLOAT = 9223372036854774784.0  # the largest float64 below 2**63


def _grouping_key(node: Aggregate, labels: Labels) -> Labels:
    if node.without:
        return labels.drop((*node.grouping, METRIC_NAME))
    return labels.keep(node.grouping)


def eval_aggregate(ev: Evaluator, node: Aggregate, grid: Grid) -> Vector:
    vec = ev.eval(node.expr, grid)
    assert isinstance(vec, Vector)
    if node.op == "count_values":
        assert isinstance(node.param, StringLiteral)
        return _count_values(ev, node, node.param.value, vec, grid)
    param = ev.eval_scalar(node.param, grid) if node.param is not None else None
    if node.op in ("topk", "bottomk"):
        assert param is not None
        return _select_k(node, vec, param, grid)
    if vec.n == 0:
        return Vector.empty(grid.n)
    key = _grouping_key(node, vec.labels)
    groups, first = group_rows(key.ids)
    out_labels = key.take(first).compact()
    values = np.zeros((len(first), grid.n))
    present = np.zeros((len(first), grid.n), dtype=bool)
    if node.op == "quantile":
        assert param is not None
        order = np.argsort(groups, kind="stable")
        starts = np.searchsorted(groups[order], np.arange(len(first) + 1))
        quantiles(vec.values, vec.present, order, starts, param, values, present)
    else:
        aggregate(CODES[node.op], vec.values, vec.present, groups, len(first), values, present)
    return Vector(out_labels, values, present)


def _select_k(node: Aggregate, vec: Vector, param: np.ndarray, grid: Grid) -> Vector:
    bad = ~((param <= _MAX_INT64_FLOAT) & (param >= -(2.0**63)))
    if bad.any():
        raise EvaluationError(f"Scalar value {go_float_v(param[np.argmax(bad)])} "
                              "overflows int64")
    if vec.n == 0:
        return vec
    ks = np.trunc(param).astype(np.int64)
    groups, _ = group_rows(_grouping_key(node, vec.labels).ids)
    selected = np.zeros(vec.present.shape, dtype=bool)
    top = node.op == "topk"
    select_k(vec.values, vec.present, groups, np.bincount(groups), ks, top, selected)
    out = Vector(vec.labels, vec.values, selected).prune()
    if grid.n == 1 and out.n > 1:
        # An instant query shows each group's series best first, NaN last.
        v = out.values[:, 0]
        kept_groups = groups[selected.any(axis=1)]
        order = np.lexsort((-v if top else v, np.isnan(v), kept_groups))
        out = out.take(order)
    return out


def _count_values(ev: Evaluator, node: Aggregate, label: str, vec: Vector,
                  grid: Grid) -> Vector:
    """Count the series per distinct value (printed as Go prints floats) and group."""
    if not _LABEL_NAME.fullmatch(label):
        raise EvaluationError(f'invalid label name "{label}"')
    if vec.n == 0:
        return Vector.empty(grid.n)
    rows, steps = np.nonzero(vec.present)
    cells = vec.values[rows, steps]
    bits = np.where(np.isnan(cells), np.nan, cells).view(np.uint64)
    distinct, inverse = np.unique(bits, return_inverse=True)
    texts = format_values(distinct.view(np.float64), positional=True)
    value_ids = ev.pool.intern_many(texts)[inverse.reshape(-1)]
    if node.without:
        base = vec.labels.drop((*node.grouping, METRIC_NAME, label))
        cell_labels = base.take(rows)
        if label not in node.grouping:
            cell_labels = cell_labels.with_column(label, value_ids)
    else:
        base = vec.labels.keep(node.grouping).drop((label,))
        cell_labels = base.take(rows).with_column(label, value_ids)
    groups, first = group_rows(cell_labels.ids)
    counts = np.bincount(groups * grid.n + steps, minlength=len(first) * grid.n)
    counts = counts.reshape(len(first), grid.n).astype(np.float64)
    return Vector(cell_labels.take(first).compact(), counts, counts > 0)
