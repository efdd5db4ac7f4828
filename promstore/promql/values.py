"""The values an expression evaluates to, as dense arrays over the evaluation steps.

Every expression is evaluated at all steps of a ``Grid`` at once:

- a ``Scalar`` is one float per step;
- a ``Vector`` (an instant vector at every step) is a ``Labels`` table plus a
  ``values`` matrix ``[series, steps]`` and a ``present`` mask of the same shape, since
  a series can have a sample at some steps and none at others (and NaN is a value);
- a ``Matrix`` (a range vector: the result of ``x[5m]`` or of a subquery) holds raw
  samples per series, concatenated, as a ``SeriesSet`` does;
- a ``String`` is a string.

An instant query is a grid of one step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import EvaluationError
from .labels import Labels, group_rows

__all__ = ["Grid", "Matrix", "Scalar", "String", "Value", "Vector", "align_up", "merge_same_labels"]

_SAME_LABELSET = "vector cannot contain metrics with the same labelset"


@dataclass(frozen=True)
class Grid:
    """Evaluation timestamps ``start, start + step, …`` (``n`` of them), in ms."""

    start: int
    step: int
    n: int

    @staticmethod
    def between(start: int, end: int, step: int) -> Grid:
        """The grid Prometheus evaluates a range query on: every step up to ``end``."""
        return Grid(start, step, (end - start) // step + 1)

    @staticmethod
    def instant(t: int) -> Grid:
        return Grid(t, 1, 1)

    @cached_property
    def times(self) -> np.ndarray:
        return self.start + self.step * np.arange(self.n, dtype=np.int64)


@dataclass(frozen=True)
class Scalar:
    values: np.ndarray  # float64 [steps]


@dataclass(frozen=True)
class String:
    value: str


@dataclass(frozen=True)
class Vector:
    """Series with a value at some of the steps; rows in output order."""

    labels: Labels
    values: np.ndarray  # float64 [series, steps]
    present: np.ndarray  # bool [series, steps]

    @property
    def n(self) -> int:
        return self.labels.n

    @staticmethod
    def empty(steps: int) -> Vector:
        return Vector(Labels.empty(0), np.zeros((0, steps)), np.zeros((0, steps), dtype=bool))

    def take(self, rows: np.ndarray) -> Vector:
        return Vector(self.labels.take(rows), self.values[rows], self.present[rows])

    def prune(self) -> Vector:
        """The vector without series that have no value at any step."""
        alive = self.present.any(axis=1)
        if alive.all():
            return self
        return self.take(np.flatnonzero(alive))

    @property
    def n_points(self) -> int:
        return int(np.count_nonzero(self.present))


@dataclass(frozen=True)
class Matrix:
    """Samples per series: ``times``/``values`` of series ``i`` are ``[starts[i]:starts[i+1]]``."""

    labels: Labels
    starts: np.ndarray  # int64 [series + 1]
    times: np.ndarray  # int64
    values: np.ndarray  # float64

    @property
    def n(self) -> int:
        return self.labels.n

    @property
    def n_points(self) -> int:
        return int(self.starts[-1])

    @staticmethod
    def from_vector(vec: Vector, times: np.ndarray) -> Matrix:
        """The present points of ``vec`` as samples at the grid ``times``."""
        counts = vec.present.sum(axis=1)
        starts = np.zeros(vec.n + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        rows, steps = np.nonzero(vec.present)  # row-major: by series, then time
        return Matrix(vec.labels, starts, times[steps], vec.values[rows, steps])


Value = Scalar | String | Vector | Matrix


def align_up(t: int, step: int) -> int:
    """The first multiple of ``step`` at or after ``t``, computed as Prometheus does for
    a subquery's first step (Go's division truncates towards zero)."""
    aligned = (abs(t) // step) * step * (1 if t >= 0 else -1)
    return aligned + step if aligned < t else aligned


def merge_same_labels(vec: Vector, whole_range: bool = False) -> Vector:
    """``vec`` with series of identical label sets merged into one, as Prometheus does.

    Operations that drop or rewrite labels can give two series the same label set.
    Prometheus refuses that when both have a value at the same step; series that take
    turns become one series. ``whole_range`` refuses any such pair, as Prometheus does
    for the results of range-vector functions and negation. Series without values must
    be pruned first.
    """
    if vec.n <= 1:
        return vec
    inverse, first = group_rows(vec.labels.ids)
    if len(first) == vec.n:
        return vec
    if whole_range:
        raise EvaluationError(_SAME_LABELSET)
    n_groups, steps = len(first), vec.values.shape[1]
    rows, cols = np.nonzero(vec.present)
    cells = inverse[rows] * steps + cols
    if len(np.unique(cells)) != len(cells):
        raise EvaluationError(_SAME_LABELSET)
    values = np.zeros(n_groups * steps)
    present = np.zeros(n_groups * steps, dtype=bool)
    values[cells] = vec.values[rows, cols]
    present[cells] = True
    return Vector(vec.labels.take(first), values.reshape(n_groups, steps),
                  present.reshape(n_groups, steps))
