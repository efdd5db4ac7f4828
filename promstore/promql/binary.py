"""Binary operators: arithmetic, comparisons (filtering or ``bool``), ``atan2`` and the
set operators ``and``, ``or``, ``unless``, between scalars and instant vectors.

Between two vectors, series are matched by a signature (their ``on`` labels, or all
labels but the ``ignoring`` ones and the metric name), per step. The "one" side may
hold each signature once per step; a one-to-one match may pair each signature once;
a many-to-one match must give every result its own label set. Breaking these rules
gives Prometheus's errors, reported for the earliest step where one happens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._binary_kernels import ARITHMETIC, COMPARISONS, OPERATORS, apply, match_vectors
from .errors import EvaluationError
from .labels import METRIC_NAME, Labels, StringPool, format_labels, group_rows
from .parser import Binary, Cardinality
from .values import Grid, Scalar, Value, Vector, merge_same_labels

if TYPE_CHECKING:
    from .engine import Evaluator

__all__ = ["eval_binary"]

_SET_OPERATORS = frozenset(("and", "or", "unless"))


def _apply(op: str, lhs: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    shape = np.broadcast_shapes(lhs.shape, rhs.shape)
    a = np.ascontiguousarray(np.broadcast_to(lhs, shape), dtype=np.float64).reshape(-1)
    b = np.ascontiguousarray(np.broadcast_to(rhs, shape), dtype=np.float64).reshape(-1)
    out = np.empty(a.shape)
    keep = np.empty(a.shape, dtype=bool)
    apply(OPERATORS[op], a, b, out, keep)
    return out.reshape(shape), keep.reshape(shape)


def eval_binary(ev: Evaluator, node: Binary, grid: Grid) -> Value:
    lhs, rhs = ev.eval(node.lhs, grid), ev.eval(node.rhs, grid)
    if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        value, keep = _apply(node.op, lhs.values, rhs.values)
        return Scalar(keep.astype(np.float64) if node.op in COMPARISONS else value)
    if isinstance(lhs, Vector) and isinstance(rhs, Scalar):
        return _vector_scalar(node, lhs, rhs.values, swap=False)
    if isinstance(lhs, Scalar) and isinstance(rhs, Vector):
        return _vector_scalar(node, rhs, lhs.values, swap=True)
    assert isinstance(lhs, Vector) and isinstance(rhs, Vector)
    if node.op in _SET_OPERATORS:
        return _set_operation(node, lhs, rhs, grid)
    return _vector_vector(ev.pool, node, lhs, rhs, grid)


def _finish(node: Binary, labels: Labels, values: np.ndarray, present: np.ndarray) -> Vector:
    if node.op in ARITHMETIC or node.return_bool:
        labels = labels.drop((METRIC_NAME,))
    return merge_same_labels(Vector(labels, values, present).prune())


def _vector_scalar(node: Binary, vec: Vector, scalar: np.ndarray, swap: bool) -> Vector:
    s = scalar[None, :]
    value, keep = _apply(node.op, s, vec.values) if swap else _apply(node.op, vec.values, s)
    if node.op in COMPARISONS:
        value = vec.values  # a filter keeps the vector's own value, whichever side it is
    if node.return_bool:
        value, keep = keep.astype(np.float64), np.ones_like(keep)
    return _finish(node, vec.labels, value, vec.present & keep)


def _signatures(node: Binary, left: Labels, right: Labels) -> tuple[np.ndarray, np.ndarray, int]:
    """Signature ids of the left and right series, equal where they match."""
    if node.on:
        names = list(node.matching)
    else:
        ignored = {*node.matching, METRIC_NAME}
        names = sorted((set(left.names) | set(right.names)) - ignored)
    ids = np.concatenate([left.project(names), right.project(names)], axis=0)
    sig, first = group_rows(ids)
    return sig[:left.n], sig[left.n:], len(first)


def _set_operation(node: Binary, lhs: Vector, rhs: Vector, grid: Grid) -> Vector:
    lsig, rsig, n_sigs = _signatures(node, lhs.labels, rhs.labels)

    def seen(sig: np.ndarray, vec: Vector) -> np.ndarray:
        has = np.zeros((n_sigs, grid.n), dtype=bool)
        rows, steps = np.nonzero(vec.present)
        has[sig[rows], steps] = True
        return has

    if node.op == "and":
        return Vector(lhs.labels, lhs.values, lhs.present & seen(rsig, rhs)[lsig]).prune()
    if node.op == "unless":
        return Vector(lhs.labels, lhs.values, lhs.present & ~seen(rsig, rhs)[lsig]).prune()
    rhs_kept = rhs.present & ~seen(lsig, lhs)[rsig]
    both = Vector(Labels.concat([lhs.labels, rhs.labels]),
                  np.concatenate([lhs.values, rhs.values]),
                  np.concatenate([lhs.present, rhs_kept]))
    return merge_same_labels(both.prune())


def _matched_labels(node: Binary, labels: dict[str, str]) -> dict[str, str]:
    if node.on:
        return {k: v for k, v in labels.items() if k in node.matching}
    return {k: v for k, v in labels.items() if k not in node.matching and k != METRIC_NAME}


def _result_labels(node: Binary, many: Labels, one: Labels) -> Labels:
    """Prometheus's ``resultMetric`` for each pair of matched series."""
    labels = many
    if node.op in ARITHMETIC:
        labels = labels.drop((METRIC_NAME,))
    if node.card == Cardinality.ONE_TO_ONE:
        labels = labels.keep(node.matching) if node.on else labels.drop(node.matching)
    for name in node.include:
        labels = labels.with_column(name, one.column(name))
    if node.return_bool:
        labels = labels.drop((METRIC_NAME,))
    return labels.compact()


def _first_repeated_step(keys: np.ndarray, steps: np.ndarray) -> int:
    """The earliest step at which some key occurs twice (-1 if none does)."""
    if len(keys) < 2:
        return -1
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    repeated = counts[inverse.reshape(-1)] > 1
    return int(steps[repeated].min()) if repeated.any() else -1


def _vector_vector(pool: StringPool, node: Binary, lhs: Vector, rhs: Vector,
                   grid: Grid) -> Vector:
    if lhs.n == 0 or rhs.n == 0:
        return Vector.empty(grid.n)
    swapped = node.card == Cardinality.ONE_TO_MANY
    many, one = (rhs, lhs) if swapped else (lhs, rhs)  # the "one" side is matched into
    msig, osig, n_sigs = _signatures(node, many.labels, one.labels)
    match = np.full(many.present.shape, -1, dtype=np.int64)
    dup_step, late, early = match_vectors(msig, many.present, osig, one.present, n_sigs, match)
    errors: list[tuple[int, str]] = []
    if dup_step >= 0:
        late_labels, early_labels = one.labels.take(np.array([late, early])).to_dicts(pool)
        side = "left" if swapped else "right"
        errors.append((int(dup_step),
                       "found duplicate series for the match group "
                       f"{format_labels(_matched_labels(node, late_labels))} on the {side} "
                       "hand-side of the operation: "
                       f"[{format_labels(late_labels)}, {format_labels(early_labels)}]"
                       ";many-to-many matching not allowed: matching labels must be unique "
                       "on one side"))
    steps = np.arange(grid.n)
    one_values = one.values[np.maximum(match, 0), steps[None, :]]
    a, b = (one_values, many.values) if swapped else (many.values, one_values)
    value, keep = _apply(node.op, a, b)
    matched = match >= 0
    if node.return_bool:
        value, active = keep.astype(np.float64), matched
    else:
        active = matched & keep
    rows, cols = np.nonzero(active)
    if node.card == Cardinality.ONE_TO_ONE:
        step = _first_repeated_step(msig[rows] * grid.n + cols, cols)
        if step >= 0:
            errors.append((step, "multiple matches for labels: many-to-one matching must be "
                                 "explicit (group_left/group_right)"))
    partner = match[rows, cols]
    pairs, pair_of = np.unique(rows * max(one.n, 1) + partner, return_inverse=True)
    pair_of = pair_of.reshape(-1)
    pair_many, pair_one = pairs // max(one.n, 1), pairs % max(one.n, 1)
    labels = _result_labels(node, many.labels.take(pair_many), one.labels.take(pair_one))
    if node.card != Cardinality.ONE_TO_ONE:
        same, _ = group_rows(labels.ids)
        step = _first_repeated_step(same[pair_of] * grid.n + cols, cols)
        if step >= 0:
            errors.append((step, "multiple matches for labels: grouping labels must ensure "
                                 "unique matches"))
    if errors:
        raise EvaluationError(min(errors, key=lambda e: e[0])[1])
    values = np.zeros((len(pairs), grid.n))
    present = np.zeros((len(pairs), grid.n), dtype=bool)
    values[pair_of, cols] = value[rows, cols]
    present[pair_of, cols] = True
    return merge_same_labels(Vector(labels, values, present))
