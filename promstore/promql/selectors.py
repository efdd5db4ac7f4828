"""Series selection: instant selectors, range selectors and subqueries.

A selector is evaluated for all steps with one ``select`` on the store, covering the
time every step needs (its reference time is the step's time, or the ``@`` time, minus
the offset; an instant selector looks back ``lookback_delta``, a range selector its
range), then one kernel pass picks each step's samples.

Range selectors and subqueries become a ``RangeSource``: samples per series plus the
window end of every step. Range-vector functions fold those windows; an instant query
of a bare range outputs the one window as a matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from storage.downsampled import Aggregate, Part
from storage.series_set import SeriesSet

from ._select_kernels import (
    STALE_NAN_BITS,
    instant_select,
    pool_ids,
    sample_span,
    window_holds_all,
)
from .labels import Labels
from .parser import MatrixSelector, Subquery, VectorSelector
from .resolution import plan_parts
from .sharding import ShardUnsupportedError
from .values import Grid, Matrix, Vector, align_up

if TYPE_CHECKING:
    from .engine import Evaluator

__all__ = ["Downsampled", "RangeSource", "range_source", "select_instant", "window_matrix"]


@dataclass(frozen=True)
class Downsampled:
    """How a selector reads downsampled data: which aggregate, over which parts of
    time at which resolution (``resolution.plan_parts``)."""

    aggregate: Aggregate
    parts: list[Part]


@dataclass(frozen=True)
class RangeSource:
    """The samples behind a range vector and where each step's window ends.

    The window of step ``s`` is ``refs[s] - range <= t <= refs[s]``; stale markers are
    already removed (Prometheus skips them inside ranges).
    """

    samples: Matrix
    refs: np.ndarray  # int64 [steps], non-decreasing
    range: int


def _labels(ev: Evaluator, ss: SeriesSet) -> Labels:
    return Labels(tuple(ss.names), pool_ids(ss.label_ids, ev.pool.intern_many(ss.values)))


def _select(ev: Evaluator, node: VectorSelector, mint: int, maxt: int,
            range_ms: int = 0, read: Downsampled | None = None) -> SeriesSet:
    """The series of ``node`` with their samples in ``[mint, maxt]`` (raw, or the
    aggregate of ``read``), cut to the time range Prometheus would load for the
    selector (which only matters where its evaluation looks beyond that range, see
    ``Evaluator.load_range``)."""
    ev.check()
    lo, hi = ev.load_range(node, range_ms)
    mint, maxt = max(mint, lo), min(maxt, hi)
    if mint > maxt:
        return SeriesSet.empty()
    if read is None:
        ss = ev.store.select(list(node.matchers), mint, maxt, shard=ev.shard) \
            if ev.shard is not None else ev.store.select(list(node.matchers), mint, maxt)
    else:
        if ev.shard is not None:
            raise ShardUnsupportedError()
        parts = [Part(p.resolution, max(p.mint, mint), min(p.maxt, maxt)) for p in read.parts
                 if p.mint <= maxt and p.maxt >= mint]
        ss = ev.store.select_aggregate(  # type: ignore[attr-defined]  # plan_parts checked
            list(node.matchers), parts, read.aggregate)
    if ss.n_samples:
        first, last = sample_span(ss.starts, ss.timestamps)
        ev.count_selected(ss.n_samples, min(maxt, last) - max(mint, first) + 1, ss.n_series)
    ev.check()
    return ss


def select_instant(ev: Evaluator, node: VectorSelector, grid: Grid,
                   with_times: bool = False) -> tuple[Vector, np.ndarray | None]:
    """The selector's value at every step; with ``with_times`` also the timestamps of
    the samples shown (``timestamp()`` reports those, not the step times).

    ``with_times`` reproduces how Prometheus 2.42 evaluates ``timestamp()`` of a
    selector with ``@``: it looks at the ``@`` time itself, ignoring the offset (among
    the samples loaded for the offset time only).
    """
    refs = ev.ref_times(grid, node.offset, node.at)
    lookback = ev.options.lookback_delta_ms
    if with_times and node.at is not None:
        refs = ev.ref_times(grid, 0, node.at)
    parts = None if with_times else plan_parts(ev, node, lookback, grid, instant=True)
    read = Downsampled(Aggregate.AVG, parts) if parts else None
    ss = _select(ev, node, int(refs[0]) - lookback, int(refs[-1]), read=read)
    n, steps = ss.n_series, grid.n
    values = np.zeros((n, steps))
    present = np.zeros((n, steps), dtype=bool)
    times = np.zeros((n, steps), dtype=np.int64)
    samples = np.ascontiguousarray(ss.samples, dtype=np.float64)
    instant_select(np.asarray(ss.starts, dtype=np.int64),
                   np.asarray(ss.timestamps, dtype=np.int64), samples,
                   samples.view(np.uint64), refs, lookback, values, present, times)
    vec = Vector(_labels(ev, ss), values, present)
    alive = present.any(axis=1)
    if not alive.all():
        keep = np.flatnonzero(alive)
        vec, times = vec.take(keep), times[keep]
    return vec, (times if with_times else None)


def _without_stale(ss: SeriesSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    samples = np.asarray(ss.samples, dtype=np.float64)
    times = np.asarray(ss.timestamps, dtype=np.int64)
    starts = np.asarray(ss.starts, dtype=np.int64)
    fresh = samples.view(np.uint64) != STALE_NAN_BITS
    if fresh.all():
        return starts, times, samples
    kept = np.zeros(len(fresh) + 1, dtype=np.int64)  # fresh samples before each index
    np.cumsum(fresh, out=kept[1:])
    return kept[starts], times[fresh], samples[fresh]


def range_source(ev: Evaluator, node: MatrixSelector | Subquery, grid: Grid,
                 drifting: bool = False, read: Downsampled | None = None) -> RangeSource:
    """The samples and windows of a range selector or subquery over ``grid`` (for a
    range selector, the aggregate of ``read`` where given).

    ``drifting`` reproduces how Prometheus 2.42 evaluates an argument with ``@`` of a
    function that is not step-invariant (``predict_linear(x[5m] @ t, …)``): the window
    moves on with the steps, from the ``@`` time at the evaluation's start (seeing only
    the samples loaded for the ``@`` window).
    """
    at = node.at if isinstance(node, Subquery) else node.selector.at
    drift = grid.times - ev.origin if drifting and at is not None else None
    if isinstance(node, Subquery):
        return _subquery(ev, node, grid, drift)
    sel = node.selector
    refs = ev.ref_times(grid, sel.offset, sel.at)
    if drift is not None:
        refs = refs + drift
    ss = _select(ev, sel, int(refs[0]) - node.range, int(refs[-1]), node.range, read)
    starts, times, values = _without_stale(ss)
    return RangeSource(Matrix(_labels(ev, ss), starts, times, values), refs, node.range)


def _subquery(ev: Evaluator, node: Subquery, grid: Grid,
              drift: np.ndarray | None) -> RangeSource:
    """Evaluate the inner expression on its own grid: steps that are multiples of the
    subquery's step (counted from the epoch, as Prometheus does), from the first one
    inside the earliest window to the last window's end."""
    step = node.step or ev.options.default_subquery_step_ms
    refs = ev.ref_times(grid, node.offset, node.at)
    if drift is not None:
        refs = refs + drift
    lo, hi = int(refs[0]) - node.range, int(refs[-1])
    start = align_up(lo, step)
    if hi < start:
        empty = Matrix(Labels.empty(0), np.zeros(1, dtype=np.int64),
                       np.zeros(0, dtype=np.int64), np.zeros(0))
        return RangeSource(empty, refs, node.range)
    inner = Grid.between(start, hi, step)
    ev.check_steps(inner.n)
    with ev.inside(node, step):
        value = ev.eval(node.expr, inner)
    assert isinstance(value, Vector)
    return RangeSource(Matrix.from_vector(value, inner.times), refs, node.range)


def window_matrix(source: RangeSource) -> Matrix:
    """The samples of the first step's window, as an instant query of a range shows it."""
    m = source.samples
    maxt = int(source.refs[0])
    if window_holds_all(m.starts, m.times, maxt - source.range, maxt):
        return m  # what was read is the window (one step), and no series is empty
    inside = (m.times >= maxt - source.range) & (m.times <= maxt)
    series = np.repeat(np.arange(m.n), np.diff(m.starts))
    counts = np.bincount(series[inside], minlength=m.n)
    keep = np.flatnonzero(counts > 0)
    starts = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(counts[keep], out=starts[1:])
    return Matrix(m.labels.take(keep), starts, m.times[inside], m.values[inside])
