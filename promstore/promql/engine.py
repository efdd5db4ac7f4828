"""The PromQL engine: instant and range queries over a ``Selectable`` store.

``Engine.instant_query`` and ``Engine.range_query`` parse the text and evaluate the tree
on a grid of steps (one step for an instant query). Every node is evaluated for all
steps at once, so the work per node is a few numpy operations or one kernel call, not a
Python loop per step or per series.

Semantics are Prometheus 2.42's: a range query's steps are ``start, start + step, …``
up to ``end``; an instant selector shows the newest sample within the lookback delta
(5 minutes by default) unless that sample is a stale marker; ``offset`` and ``@``
(``start()``/``end()`` being the query's) move the time a selector looks at; subqueries
evaluate on steps aligned to multiples of their step.

A query has a deadline, a cancel flag and a maximum number of samples; running past any
of them stops it at the next node with ``QueryTimeoutError``, ``QueryCanceledError`` or
``TooManySamplesError``. Engines are thread-safe: each query has its own evaluator.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Literal

import numpy as np

from storage.interface import Selectable, Shard

from .aggregations import eval_aggregate
from .binary import eval_binary
from .errors import (
    EvaluationError,
    ParseError,
    QueryCanceledError,
    QueryTimeoutError,
    TooManySamplesError,
)
from .functions import FUNCTIONS
from .labels import METRIC_NAME, Labels, StringPool, group_rows
from .parser import (
    Aggregate,
    At,
    Binary,
    Call,
    MatrixSelector,
    Node,
    NumberLiteral,
    StringLiteral,
    Subquery,
    Unary,
    ValueType,
    VectorSelector,
    parse,
)
from .resolution import AUTO
from .selectors import range_source, select_instant, window_matrix
from .sharding import ShardUnsupportedError, finish, fold, partials, selectors, shardable
from .values import Grid, Scalar, String, Value, Vector, align_up, merge_same_labels

__all__ = ["MAX_STEPS", "Engine", "EngineOptions", "Evaluator", "QueryResult", "SliceUse",
           "check_range_type"]

# Prometheus's API refuses range queries of more points than this per series; subqueries
# get the same bound, so that no grid can exhaust memory on its own.
MAX_STEPS = 11_000

_DOCUMENTED = {ValueType.SCALAR: "scalar", ValueType.VECTOR: "instant vector",
               ValueType.MATRIX: "range vector", ValueType.STRING: "string"}


@dataclass(frozen=True)
class EngineOptions:
    """Limits and defaults of query evaluation (Prometheus's flags in brackets)."""

    lookback_delta_ms: int = 5 * 60_000  # --query.lookback-delta
    timeout_s: float = 120.0  # --query.timeout
    max_samples: int = 50_000_000  # --query.max-samples
    default_subquery_step_ms: int = 60_000  # the global evaluation_interval
    # A range query is evaluated in slices of steps holding about this many
    # (series by step) cells in any intermediate value, to bound memory (~9 bytes a cell),
    # and selecting about this many samples: the store needs around a hundred bytes per
    # sample while it reads and merges them.
    max_cells: int = 8_000_000
    max_slice_samples: int = 2_000_000
    # An aggregation over at least ``shard_from_series`` series is evaluated
    # ``shard_series`` series at a time (``sharding``), so that each slice covers hours
    # of their data within ``shard_slice_samples``.
    shard_from_series: int = 4_000
    shard_series: int = 250
    # Samples a slice of one shard selects: about 4,000 per series, two compacted chunks
    # (17 h at a 15 s interval). A chunk that straddles two slices is decoded by both:
    # at one chunk a slice, a week over 100,000 series took a quarter more CPU; at four,
    # a third more memory.
    shard_slice_samples: int = 1_000_000
    # Shards evaluated at once, each on a thread of its own (the machine's cores).
    shard_workers: int = field(default_factory=lambda: min(os.cpu_count() or 1, 4))


@dataclass(frozen=True)
class QueryResult:
    """The value of a query and what is needed to print it.

    ``kind`` is how to show it: ``vector``, ``scalar``, ``string`` or ``matrix`` for an
    instant query (a ``Matrix`` value there is a range selector's samples), ``matrix``
    for every range query.
    """

    value: Value
    grid: Grid
    pool: StringPool
    kind: Literal["vector", "scalar", "string", "matrix"]


class Evaluator:
    """The state of one query's evaluation: store, string pool, limits, query range."""

    def __init__(self, store: Selectable, options: EngineOptions, start: int, end: int,
                 deadline: float, cancel: threading.Event | None,
                 max_resolution: int | None = AUTO, pool: StringPool | None = None) -> None:
        self.store = store
        self.options = options
        self.max_resolution = max_resolution  # ms, or AUTO (see resolution.py)
        self.pool = StringPool() if pool is None else pool
        self.start = start
        self.end = end
        self._deadline = deadline
        self._cancel = cancel
        self._subqueries: list[Subquery] = []  # those being evaluated, outermost first
        # Where Prometheus's evaluator for the current grid would start: the query start,
        # or within subqueries the start of their grid (a range query's slices do not
        # move it).
        self._origins = [start]
        self.slice = SliceUse()
        self.shard: Shard | None = None  # the part of the series being evaluated
        self._stop: threading.Event | None = None  # set when a sibling shard failed

    def fork(self, shard: Shard, options: EngineOptions, stop: threading.Event) -> Evaluator:
        """An evaluator of one shard of this query, for another thread: the same store,
        string pool, range and limits, slices of its own, and ``stop`` to end it early."""
        child = Evaluator(self.store, options, self.start, self.end, self._deadline,
                          self._cancel, self.max_resolution, self.pool)
        child.shard = shard
        child._stop = stop
        return child

    # -- limits ---------------------------------------------------------------------------

    def check(self) -> None:
        """Stop the query if it was canceled or ran out of time."""
        if self._cancel is not None and self._cancel.is_set():
            raise QueryCanceledError()
        if self._stop is not None and self._stop.is_set():
            raise QueryCanceledError()
        if time.monotonic() > self._deadline:
            raise QueryTimeoutError()

    def count_samples(self, n: int) -> None:
        """Account for ``n`` samples produced at once."""
        self.slice.cells = max(self.slice.cells, n)
        if n > self.options.max_samples:
            raise TooManySamplesError()

    def count_selected(self, n: int, span_ms: int, series: int) -> None:
        """Account for ``n`` samples of ``series`` series selected, found over
        ``span_ms`` milliseconds."""
        self.slice.selected += n
        self.slice.selected_ms += span_ms
        self.slice.selected_series += series
        self.slice.selections += 1
        if n > self.options.max_samples:
            raise TooManySamplesError()

    def check_steps(self, n: int) -> None:
        if n > MAX_STEPS:
            raise EvaluationError(f"a subquery would evaluate {n} steps; at most {MAX_STEPS} "
                                  "are allowed (use a larger subquery step)")

    # -- time ------------------------------------------------------------------------------

    def ref_times(self, grid: Grid, offset: int, at: At) -> np.ndarray:
        """The time a selector looks at in each step: the step's time (or the ``@``
        time) minus the offset."""
        if at is None:
            return grid.times - offset
        return np.full(grid.n, self.pinned(at) - offset, dtype=np.int64)

    def pinned(self, at: int | str) -> int:
        """The time of an ``@`` modifier: its timestamp, or the query's start or end."""
        return self.start if at == "start" else self.end if at == "end" else int(at)

    @property
    def origin(self) -> int:
        return self._origins[-1]

    @contextlib.contextmanager
    def inside(self, node: Subquery, step: int) -> Iterator[None]:
        """Evaluate within subquery ``node`` (for ``load_range`` and ``origin``)."""
        ref = (self.origin if node.at is None else self.pinned(node.at)) - node.offset
        self._subqueries.append(node)
        self._origins.append(align_up(ref - node.range, step))
        try:
            yield
        finally:
            self._subqueries.pop()
            self._origins.pop()

    def load_range(self, node: VectorSelector, range_ms: int) -> tuple[int, int]:
        """The time range Prometheus loads for a selector before evaluating, from the
        query's range, the enclosing subqueries' offsets and ranges (counted from the
        innermost one with ``@``), the selector's ``@``, offset and range (or lookback).

        Evaluation normally stays inside it; where Prometheus's does not (arguments
        with ``@`` of functions that are not step-invariant), it sees no samples outside
        it, and neither does ours.
        """
        start, end = self.start, self.end
        offset = span = 0
        for sq in self._subqueries:
            if sq.at is not None:
                start = end = self.pinned(sq.at)
                offset, span = sq.offset, sq.range
            else:
                offset += sq.offset
                span += sq.range
        if node.at is not None:
            start = end = self.pinned(node.at)
        else:
            start, end = start - offset - span, end - offset
        start -= range_ms or self.options.lookback_delta_ms
        return start - node.offset, end - node.offset

    # -- evaluation ------------------------------------------------------------------------

    def eval(self, node: Node, grid: Grid) -> Value:
        """The value of ``node`` at every step of ``grid``."""
        value = self._eval(node, grid)
        if isinstance(value, Vector):
            self.slice.cells = max(self.slice.cells, value.values.size)
        return value

    def _eval(self, node: Node, grid: Grid) -> Value:
        self.check()
        if isinstance(node, NumberLiteral):
            return Scalar(np.full(grid.n, node.value))
        if isinstance(node, StringLiteral):
            return String(node.value)
        if isinstance(node, VectorSelector):
            vec, _ = select_instant(self, node, grid)
            self.count_samples(vec.n_points)
            return vec
        if isinstance(node, MatrixSelector | Subquery):
            return window_matrix(range_source(self, node, grid))
        if isinstance(node, Call):
            return FUNCTIONS[node.name](self, node, grid)
        if isinstance(node, Aggregate):
            return eval_aggregate(self, node, grid)
        if isinstance(node, Binary):
            return eval_binary(self, node, grid)
        if isinstance(node, Unary):
            return self._negate(node, grid)
        raise EvaluationError(f"unsupported expression {type(node).__name__}")

    def eval_scalar(self, node: Node, grid: Grid) -> np.ndarray:
        value = self.eval(node, grid)
        assert isinstance(value, Scalar)
        return value.values

    def _negate(self, node: Unary, grid: Grid) -> Value:
        value = self.eval(node.expr, grid)
        if isinstance(value, Scalar):
            return Scalar(-value.values)
        assert isinstance(value, Vector)
        vec = Vector(value.labels.drop((METRIC_NAME,)), -value.values, value.present)
        return merge_same_labels(vec, whole_range=True)


class Engine:
    """Runs PromQL queries against ``store``."""

    def __init__(self, store: Selectable, options: EngineOptions | None = None) -> None:
        self.store = store
        self.options = options or EngineOptions()

    def _evaluator(self, start: int, end: int, timeout_s: float | None,
                   cancel: threading.Event | None, max_resolution: int | None) -> Evaluator:
        limit = self.options.timeout_s if timeout_s is None else \
            min(timeout_s, self.options.timeout_s)
        return Evaluator(self.store, self.options, start, end, time.monotonic() + limit, cancel,
                         max_resolution)

    def instant_query(self, query: str | Node, t: int, timeout_s: float | None = None,
                      cancel: threading.Event | None = None,
                      max_source_resolution: int | None = AUTO) -> QueryResult:
        """Evaluate ``query`` at ``t`` (ms); ``ParseError`` for invalid text.
        ``max_source_resolution`` (ms, or ``AUTO``) bounds the downsampled data read,
        where the store keeps some (``resolution.py``)."""
        node = parse(query) if isinstance(query, str) else query
        ev = self._evaluator(t, t, timeout_s, cancel, max_source_resolution)
        grid = Grid.instant(t)
        value = ev.eval(node, grid)
        kind: Literal["vector", "scalar", "string", "matrix"]
        if isinstance(value, Vector):
            kind = "vector"
        elif isinstance(value, Scalar):
            kind = "scalar"
        elif isinstance(value, String):
            kind = "string"
        else:
            kind = "matrix"
        return QueryResult(value, grid, ev.pool, kind)

    def range_query(self, query: str | Node, start: int, end: int, step: int,
                    timeout_s: float | None = None,
                    cancel: threading.Event | None = None,
                    max_source_resolution: int | None = AUTO) -> QueryResult:
        """Evaluate ``query`` at ``start, start + step, …, ≤ end`` (ms); for
        ``max_source_resolution`` see ``instant_query``."""
        node = parse(query) if isinstance(query, str) else query
        check_range_type(node)
        if step <= 0:
            raise ParseError("zero or negative query resolution step widths are not accepted")
        ev = self._evaluator(start, end, timeout_s, cancel, max_source_resolution)
        grid = Grid.between(start, end, step)
        shards = self._shards(ev, node, grid)
        value = self._sharded(ev, node, grid, shards) if shards > 1 else \
            self._sliced(ev, node, grid)
        ev.count_samples(value.n_points)
        order = value.labels.sort_order(ev.pool)
        return QueryResult(value.take(order), grid, ev.pool, "matrix")

    def _shards(self, ev: Evaluator, node: Node, grid: Grid) -> int:
        """How many shards to evaluate ``node`` in: one unless it is a ``shardable``
        aggregation whose selectors match at least ``shard_from_series`` series in some
        part of the store (as the store estimates from its index, before any sample is
        read)."""
        estimate = getattr(ev.store, "estimate_series", None)
        if estimate is None or not shardable(node):
            return 1
        lo = grid.start - self.options.lookback_delta_ms
        end = grid.start + (grid.n - 1) * grid.step
        series = max((estimate(list(sel.matchers), lo - reach, end)
                      for sel, reach in selectors(node)), default=0)
        if series < self.options.shard_from_series:
            return 1
        return -(-series // self.options.shard_series)

    def _sliced(self, ev: Evaluator, node: Node, grid: Grid) -> Vector:
        """``node`` over ``grid``, a slice of steps at a time. Steps are independent, so
        slices evaluate separately. The first slice spans a few minutes, however long
        the steps; what it selected and held sizes the next ones."""
        parts: list[Vector] = []
        step = grid.step
        done, size = 0, max(1, min(_FIRST_SLICE, _FIRST_SPAN_MS // step))
        while done < grid.n:
            piece = Grid(grid.start + done * step, step, min(size, grid.n - done))
            ev.slice = SliceUse()
            value = ev.eval(node, piece)
            if isinstance(value, Scalar):
                value = Vector(Labels.empty(1), value.values[None, :],
                               np.ones((1, piece.n), dtype=bool))
            assert isinstance(value, Vector)
            parts.append(value)
            done += piece.n
            size = ev.slice.next_size(piece.n, step, ev.options)
        return _join_slices(parts, grid)

    def _sharded(self, ev: Evaluator, node: Node, grid: Grid, count: int) -> Vector:
        """``node`` from the partial aggregates of ``count`` shards of its series, each
        evaluated over the whole grid, ``shard_workers`` at a time on threads of their
        own (decoding and the kernels release the GIL), each within
        ``shard_slice_samples`` and its part of ``max_cells``; an unsharded evaluation
        where a shard would read downsampled data (its store does not shard). Partials
        are folded in shard order, so that the answer does not depend on which thread
        finishes first."""
        assert isinstance(node, Aggregate)
        workers = max(1, min(self.options.shard_workers, count))
        budget = replace(self.options, max_cells=self.options.max_cells // workers,
                         max_slice_samples=self.options.shard_slice_samples)
        stop = threading.Event()

        def shard(index: int) -> list[Vector]:
            child = ev.fork(Shard(index, count), budget, stop)
            return partials(node, self._sliced(child, node.expr, grid))

        folded: list[Vector] | None = None
        indices = iter(range(count))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="shard")
        try:
            # A few shards ahead of the fold, not all: partials wait in memory until then.
            running = deque(pool.submit(shard, i) for i in islice(indices, 2 * workers))
            while running:
                mine = running.popleft().result()
                running.extend(pool.submit(shard, i) for i in islice(indices, 1))
                folded = mine if folded is None else fold(node, folded, mine)
        except ShardUnsupportedError:
            folded = None
        finally:
            stop.set()
            pool.shutdown(cancel_futures=True)
        if folded is None:
            return self._sliced(ev, node, grid)
        return finish(node, folded)


_FIRST_SLICE = 64  # steps evaluated before the size of a step is known
_FIRST_SPAN_MS = 10 * 60_000  # and the time they may span at most
# A slice has at most this many times the steps of the one before, so that an estimate
# made from unusual data (series that appear later in the range) is soon corrected.
_GROWTH = 64
_MIN_SERIES_SAMPLES = 64  # samples per selected series a slice may read in any case


@dataclass
class SliceUse:
    """What one slice of a range query held and selected: the largest value (cells, or
    samples produced) and the samples its selectors read, with the time they spanned."""

    cells: int = 0
    selected: int = 0
    selected_ms: int = 0
    selected_series: int = 0
    selections: int = 0

    def next_size(self, steps: int, step: int, options: EngineOptions) -> int:
        """Steps for the next slice, so that it holds about ``max_cells`` cells and
        selects about ``max_slice_samples`` samples, or ``_MIN_SERIES_SAMPLES`` per
        series selected where that is more: the store's cost of a selection grows with
        its series (postings, label sets, chunk index) before it reads a sample, and
        thousands of slices over a large fleet would pay it again and again.

        Cells grow with the steps. A selector's span is its window (range or lookback)
        plus the steps it covers, so the samples it reads are estimated from this
        slice's density (samples per millisecond of the time the selected data covered,
        which is less than asked for where a range starts before the data) over that
        span.
        """
        size = max(1, min(_GROWTH * steps, int(options.max_cells / max(self.cells / steps, 1.0))))
        if self.selected:
            density = self.selected / self.selected_ms
            windows = self.selected_ms - self.selections * (steps - 1) * step
            budget = max(options.max_slice_samples,
                         _MIN_SERIES_SAMPLES * self.selected_series)
            room = budget / density - windows
            size = min(size, max(1, int(room / (self.selections * step)) + 1))
        return size


def _join_slices(parts: list[Vector], grid: Grid) -> Vector:
    """One vector over ``grid`` from vectors over consecutive slices of it, a series
    being one row wherever it appears."""
    if len(parts) == 1:
        return parts[0]
    labels = Labels.concat([p.labels for p in parts])
    rows, first = group_rows(labels.ids)
    values = np.zeros((len(first), grid.n))
    present = np.zeros((len(first), grid.n), dtype=bool)
    row = col = 0
    for part in parts:
        at = rows[row:row + part.n]
        values[at, col:col + part.values.shape[1]] = part.values
        present[at, col:col + part.values.shape[1]] = part.present
        row += part.n
        col += part.values.shape[1]
    return Vector(labels.take(first).compact(), values, present)


def check_range_type(node: Node) -> None:
    """Refuse what a range query cannot return, with Prometheus's message."""
    if node.type not in (ValueType.SCALAR, ValueType.VECTOR):
        raise ParseError(f'invalid expression type "{_DOCUMENTED[node.type]}" for range '
                         "query, must be Scalar or instant Vector")

