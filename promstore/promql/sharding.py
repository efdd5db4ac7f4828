"""Evaluating an aggregation over a large fleet shard by shard.

A range query is evaluated in slices of time so that what it holds stays bounded
(``engine.SliceUse``). Over a hundred thousand series that bound leaves each slice a
few minutes of data, which costs twice: the store's per-series work of a selection
(postings, label sets, chunk index) is paid for every slice, and a compacted chunk
(thousands of samples, hours long) is decoded again by every slice it overlaps.

For ``sum``, ``min``, ``max``, ``count``, ``group`` and ``avg`` of an expression in
which every output series depends on one input series only (functions of a selector,
arithmetic with scalars), the series can be split instead: each shard of the series
(by a hash of their labels, ``Selectable.select(..., shard=)``) is evaluated over the
whole range, with slices of hours, and is reduced to partial aggregates per group,
which are folded into those of the shards before it. Only the order of floating-point
additions differs from an unsharded evaluation (``sum`` and ``avg`` agree to rounding).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from storage.matchers import MatchType

from ._aggregate_kernels import CODES, aggregate
from .aggregations import _grouping_key
from .labels import METRIC_NAME, Labels, group_rows
from .parser import (
    Aggregate,
    Binary,
    Call,
    MatrixSelector,
    Node,
    NumberLiteral,
    StringLiteral,
    Subquery,
    Unary,
    VectorSelector,
)
from .values import Vector

__all__ = ["SHARDED_OPS", "ShardUnsupportedError", "finish", "fold", "partials", "selectors",
           "shardable"]

class ShardUnsupportedError(Exception):
    """A shard would read data its store cannot split into shards (downsampled data)."""


# An aggregation and the partial aggregates of a shard it is made from.
SHARDED_OPS: dict[str, tuple[str, ...]] = {
    "sum": ("sum",), "min": ("min",), "max": ("max",), "count": ("count",),
    "group": ("group",), "avg": ("sum", "count"),
}
# How partials of the same group from different shards are folded together.
_FOLD = {"sum": "sum", "min": "min", "max": "max", "count": "sum", "group": "group"}

# Functions whose output series each depend on one input series (and on scalars).
_SERIES_LOCAL = frozenset({
    "rate", "irate", "increase", "delta", "idelta", "deriv", "resets", "changes",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "present_over_time", "stddev_over_time", "stdvar_over_time",
    "quantile_over_time", "predict_linear", "holt_winters",
    "abs", "ceil", "floor", "exp", "sqrt", "ln", "log2", "log10", "sgn", "deg", "rad",
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh",
    "atanh", "round", "clamp", "clamp_min", "clamp_max", "timestamp",
    "year", "month", "day_of_month", "day_of_year", "day_of_week", "hour", "minute",
    "days_in_month",
})
_SET_OPERATORS = frozenset({"and", "or", "unless"})


def shardable(node: Node) -> bool:
    """Whether ``node`` is an aggregation that :func:`partials`, :func:`fold` and
    :func:`finish` can evaluate shard by shard with the same answer."""
    return (isinstance(node, Aggregate) and node.op in SHARDED_OPS and node.param is None
            and _series_local(node.expr))


def _series_local(node: Node) -> bool:
    """Every output series depends on one input series; selectors pin the metric name,
    so that series of one labelset (once functions drop the name) share a shard."""
    if isinstance(node, Unary):
        return _series_local(node.expr)
    if isinstance(node, MatrixSelector):
        return _series_local(node.selector)
    if isinstance(node, VectorSelector):
        return any(m.name == METRIC_NAME and m.type == MatchType.EQ for m in node.matchers)
    if isinstance(node, Call):
        vectors = [a for a in node.args if not _constant(a)]
        return node.name in _SERIES_LOCAL and len(vectors) == 1 and _series_local(vectors[0])
    if isinstance(node, Binary):
        if node.op in _SET_OPERATORS:
            return False
        if _constant(node.lhs):
            return _series_local(node.rhs)
        return _constant(node.rhs) and _series_local(node.lhs)
    return False


def _constant(node: Node) -> bool:
    """A scalar or string that reads no series (a literal, ``time()``, arithmetic of
    those): the same in every shard."""
    if isinstance(node, NumberLiteral | StringLiteral):
        return True
    if isinstance(node, Unary):
        return _constant(node.expr)
    if isinstance(node, Binary):
        return _constant(node.lhs) and _constant(node.rhs)
    if isinstance(node, Call):
        return node.name in ("time", "pi") and not node.args
    return False


def _fold(op: str, values: np.ndarray, present: np.ndarray,
          rows: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((n_groups, values.shape[1]))
    seen = np.zeros((n_groups, values.shape[1]), dtype=bool)
    aggregate(CODES[op], values, present, rows, n_groups, out, seen)
    return out, seen


def partials(node: Aggregate, inner: Vector) -> list[Vector]:
    """The partial aggregates (``SHARDED_OPS[node.op]``) of one shard's values of
    ``node.expr``, one vector each, rows being the shard's groups."""
    if inner.n == 0:
        return [Vector.empty(inner.values.shape[1]) for _ in SHARDED_OPS[node.op]]
    key = _grouping_key(node, inner.labels)
    rows, first = group_rows(key.ids)
    labels = key.take(first).compact()
    return [Vector(labels, *_fold(op, inner.values, inner.present, rows, len(first)))
            for op in SHARDED_OPS[node.op]]


def fold(node: Aggregate, a: list[Vector], b: list[Vector]) -> list[Vector]:
    """The partials of two sets of shards together, from the partials of each (so that
    shards are folded in one by one and only two sets are held at once). Takes over
    ``a``'s arrays."""
    out = []
    for k, op in enumerate(SHARDED_OPS[node.op]):
        parts = [p[k] for p in (a, b) if p[k].n]
        if len(parts) < 2:
            out.append(parts[0] if parts else a[k])
            continue
        labels = Labels.concat([p.labels for p in parts])
        rows, first = group_rows(labels.ids)
        held, new = parts
        if len(first) == held.n:
            # Every group of the new partial is one the fold holds (so after the first
            # shards): fold it in place, without copying the fold's cells.
            aggregate(CODES[_FOLD[op]], new.values, new.present, rows[held.n:], held.n,
                      held.values, held.present)
            out.append(held)
            continue
        values = np.concatenate([p.values for p in parts])
        present = np.concatenate([p.present for p in parts])
        out.append(Vector(labels.take(first).compact(),
                          *_fold(_FOLD[op], values, present, rows, len(first))))
    return out


def finish(node: Aggregate, folded: list[Vector]) -> Vector:
    """The aggregation from the partials of every shard folded together."""
    if node.op != "avg":
        return folded[0]
    total, count = folded
    with np.errstate(divide="ignore", invalid="ignore"):
        return Vector(total.labels, total.values / count.values, total.present)


def selectors(node: Node) -> Iterator[tuple[VectorSelector, int]]:
    """Every vector selector in ``node`` with the range (ms) it is read over, if any."""
    if isinstance(node, VectorSelector):
        yield node, 0
    elif isinstance(node, MatrixSelector):
        yield node.selector, node.range
    else:
        for child in _children(node):
            yield from selectors(child)


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Binary):
        return node.lhs, node.rhs
    if isinstance(node, Aggregate | Unary | Subquery):
        return (node.expr,)
    return ()
