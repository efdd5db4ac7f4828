"""The contracts between the storage engine and its users.

The HTTP write handler sees only an ``Appendable``; the metadata API (and later
PromQL and remote_read) see only an ``IndexReader``. The head implements both.

Series are named by a *series ref*: a dense non-negative integer, stable for the
life of the process (and across restarts for series that the WAL replays).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .batch import WriteBatch
from .matchers import Matcher
from .series_set import SeriesSet

__all__ = ["AppendResult", "Appendable", "IndexReader", "Queryable", "RejectReason", "Selectable",
           "Shard"]


class RejectReason:
    """Why a sample was not stored. Values are the label values of the self-metrics."""

    OUT_OF_ORDER = "out_of_order"
    DUPLICATE_TIMESTAMP = "duplicate_timestamp"  # same timestamp, different value
    OUT_OF_BOUNDS = "out_of_bounds"  # older than the head accepts
    INVALID_LABELS = "invalid_labels"
    LIMIT = "limit"  # a per-series limit (labels per series, name/value length)
    TOO_MANY_SERIES = "too_many_series"


@dataclass(slots=True)
class AppendResult:
    """What became of one batch.

    ``accepted`` counts samples stored (durable when ``append`` returns), ``duplicates``
    samples identical to one already stored (accepted silently, not stored twice),
    ``rejected`` maps a ``RejectReason`` to a count, ``errors`` holds the first few
    human-readable messages naming the series and the reason.
    """

    accepted: int = 0
    duplicates: int = 0
    new_series: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())


class Appendable(Protocol):
    """Something that stores write batches.

    ``append`` is thread-safe and synchronous (call it from a worker thread). It stores
    every valid sample of the batch and returns only once those samples are durable
    (in the WAL, fsynced according to the configured policy). Invalid samples and series
    are skipped and reported in the result; they never prevent the valid rest from being
    stored. It raises ``StorageError`` only when nothing could be made durable.

    ``append_then`` does the same without keeping its thread until the fsync: it calls
    ``done(result, None)`` once the samples are durable, or ``done(None, error)`` instead
    of returning or raising, exactly once, from any thread (possibly before it returns).
    """

    def append(self, batch: WriteBatch) -> AppendResult: ...

    def append_then(self, batch: WriteBatch,
                    done: Callable[[AppendResult | None, BaseException | None], None]
                    ) -> None: ...


class IndexReader(Protocol):
    """Read access to series and labels over a time range.

    Time bounds are inclusive milliseconds. A series is in range when it holds at least
    one sample in ``[mint, maxt]``. Matchers follow Prometheus: a matcher that matches the
    empty string also matches series that lack the label. Thread-safe; results are
    snapshots that later appends do not change.
    """

    def select_series(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> np.ndarray:
        """Refs (int64, sorted ascending, unique) of series matching all ``matchers``;
        with no matchers, every series in the time range."""
        ...

    def series_labels(self, refs: np.ndarray) -> list[dict[str, str]]:
        """Label sets of ``refs``, in the same order; each dict in label-name order."""
        ...

    def label_names(self, refs: np.ndarray | None = None) -> list[str]:
        """Sorted distinct label names of ``refs`` (of all series when None)."""
        ...

    def label_values(self, name: str, refs: np.ndarray | None = None) -> list[str]:
        """Sorted distinct values of label ``name`` in ``refs`` (all series when None)."""
        ...


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` disjoint parts of a store's series, by the hash of their
    label sets (the same in every part of the store), for evaluating a query over a
    large fleet a part at a time."""

    index: int
    count: int

    @staticmethod
    def owners(hashes: np.ndarray, count: int) -> np.ndarray:
        """The shard (of ``count``) each of the label-set ``hashes`` belongs to."""
        return hashes % np.uint64(count)

    def holds(self, hashes: np.ndarray) -> np.ndarray:
        """Which of the label-set ``hashes`` belong to this shard."""
        return self.owners(hashes, self.count) == np.uint64(self.index)


class Selectable(Protocol):
    """Series with their samples, for PromQL and remote read.

    ``select`` returns the series matching all ``matchers`` that hold samples in
    ``[mint, maxt]`` (inclusive milliseconds), with exactly those samples, merged over
    every part of the store and de-duplicated, sorted by labels; only those of
    ``shard`` when one is given. Thread-safe.
    """

    def select(self, matchers: Sequence[Matcher], mint: int, maxt: int,
               shard: Shard | None = None) -> SeriesSet: ...


@runtime_checkable
class Queryable(Protocol):
    """A store that hands out readers: ``querier(mint, maxt)`` returns an object that is
    both an ``IndexReader`` and a ``Selectable`` over every part of the store that may
    hold data in ``[mint, maxt]``, valid for one request."""

    def querier(self, mint: int, maxt: int) -> IndexReader: ...
