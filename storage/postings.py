"""The inverted index: from a label pair to the sorted refs of the series that carry it.

Series only ever get added, so the index is a CSR table (built by a counting sort in one
kernel call) over the first ``built`` series, plus a scan of the few series added since.
The table is rebuilt when that unindexed tail grows past a fraction of the whole, so
the rebuild cost is amortised over many new series.

``select`` evaluates Prometheus matchers over it: matchers that match the empty string
also match series without the label, which is expressed as "all series minus those
whose value for the label does not match".
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from . import _registry_kernels as k
from .matchers import Matcher, MatchType
from .series import RegistryView

__all__ = ["LabelIndex", "MatchersKey", "Postings", "PostingsReader", "SelectionCache", "contained",
           "matchers_key", "select"]

_NO_REFS = np.empty(0, dtype=np.int64)
MatchersKey = tuple[tuple[str, str, int], ...]
_LOOKED_UP_TO = 64
"""Series up to which ``PostingsReader.carrying`` looks at their own labels rather than
reading the pairs' postings (which for a job's label hold every series of the job)."""


class _Pairs(Protocol):
    """Label pairs by id: what matchers are evaluated against."""

    def pair_id(self, name: str, value: str) -> int: ...
    def pairs_with_name(self, name: str) -> np.ndarray: ...
    def pair_values(self) -> np.ndarray: ...
    def symbols(self, ids: np.ndarray) -> list[str]: ...


class LabelIndex(Protocol):
    """What ``select`` needs of an index: the head's ``PostingsReader`` and a block's
    index file both provide it."""

    @property
    def view(self) -> _Pairs: ...
    def refs_for_pairs(self, pairs: np.ndarray) -> np.ndarray: ...
    def all_refs(self) -> np.ndarray: ...

    def postings_size(self, pairs: np.ndarray) -> int:
        """About how many refs ``refs_for_pairs(pairs)`` returns (without reading them)."""
        ...

    def carrying(self, refs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """Which of the sorted ``refs`` carry any of the pairs."""
        ...

    def remembered(self, key: MatchersKey) -> np.ndarray | None:
        """``select``'s answer for the matchers of ``key`` kept from an earlier call, if
        still right for this index."""
        ...

    def remember(self, key: MatchersKey, refs: np.ndarray) -> None:
        """Keep ``select``'s answer for the matchers of ``key`` (or not)."""
        ...


@dataclass(frozen=True)
class _Table:
    built_series: int
    built_pairs: int
    offsets: np.ndarray  # [built_pairs + 1]
    refs: np.ndarray  # int32


class Postings:
    """Keeps a CSR postings table fresh enough for the registry it indexes."""

    def __init__(self, min_tail: int = 256, tail_fraction: float = 0.125) -> None:
        self._table = _Table(0, 0, np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.int32))
        self._lock = threading.Lock()
        self._min_tail = min_tail
        self._tail_fraction = tail_fraction
        # Answers of ``select`` with the series count they were found at: they stay
        # right while no series is added (then no pair gains a series), as when the
        # same fleet is scraped round after round.
        self._answers: SelectionCache[tuple[int, np.ndarray]] = SelectionCache()

    def reader(self, view: RegistryView) -> PostingsReader:
        if self._stale(self._table, view):
            with self._lock:
                if self._stale(self._table, view):
                    self._table = self._build(view)
        return PostingsReader(view, self._table, self._answers)

    def _stale(self, table: _Table, view: RegistryView) -> bool:
        tail = view.n_series - table.built_series
        return tail > max(self._min_tail, int(table.built_series * self._tail_fraction))

    @staticmethod
    def _build(view: RegistryView) -> _Table:
        n_labels = int(view.lab_start[view.n_series])
        offsets = np.empty(view.n_pairs + 1, dtype=np.int64)
        refs = np.empty(n_labels, dtype=np.int32)
        k.build_postings(view.lab_pair, view.lab_start, view.n_series, view.n_pairs,
                         offsets, refs)
        return _Table(view.n_series, view.n_pairs, offsets, refs)


class PostingsReader:
    """Postings lookups against one registry snapshot."""

    def __init__(self, view: RegistryView, table: _Table,
                 answers: SelectionCache[tuple[int, np.ndarray]]) -> None:
        self.view = view
        self._table = table
        self._answers = answers

    def remembered(self, key: MatchersKey) -> np.ndarray | None:
        found = self._answers.get(key)
        return found[1] if found is not None and found[0] == self.view.n_series else None

    def remember(self, key: MatchersKey, refs: np.ndarray) -> None:
        self._answers.put(key, (self.view.n_series, refs), refs.nbytes)

    def refs_for_pairs(self, pairs: np.ndarray) -> np.ndarray:
        """Sorted unique refs of the series carrying any of the label pairs ``pairs``."""
        if len(pairs) == 0:
            return _NO_REFS
        t = self._table
        pairs = np.asarray(pairs, dtype=np.int64)
        indexed = pairs[pairs < t.built_pairs]
        parts = [k.gather_ranges(t.offsets, t.refs, indexed).astype(np.int64)]
        v = self.view
        if v.n_series > t.built_series:
            lo, hi = int(v.lab_start[t.built_series]), int(v.lab_start[v.n_series])
            tail_pairs = v.lab_pair[lo:hi]
            owners = np.repeat(np.arange(t.built_series, v.n_series, dtype=np.int64),
                               np.diff(v.lab_start[t.built_series:v.n_series + 1]))
            parts.append(owners[np.isin(tail_pairs, pairs)])
        out = np.concatenate(parts)
        if t.built_series > v.n_series:  # the table is newer than this snapshot
            out = out[out < v.n_series]
        if len(pairs) == 1 and len(parts) == 1:
            return out  # one pair's postings are already sorted and unique
        return np.unique(out)

    def all_refs(self) -> np.ndarray:
        return np.arange(self.view.n_series, dtype=np.int64)

    def postings_size(self, pairs: np.ndarray) -> int:
        t = self._table
        if len(pairs) == 1:  # an equality matcher's
            p = int(pairs[0])
            return int(t.offsets[p + 1] - t.offsets[p]) if p < t.built_pairs else 0
        indexed = np.asarray(pairs, dtype=np.int64)
        indexed = indexed[indexed < t.built_pairs]
        return int((t.offsets[indexed + 1] - t.offsets[indexed]).sum())

    def carrying(self, refs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        if len(refs) <= _LOOKED_UP_TO:
            v = self.view
            return k.carrying(v.lab_start, v.lab_pair, np.asarray(refs, np.int64),
                              np.asarray(pairs, np.int64))
        return contained(refs, self.refs_for_pairs(pairs))


def _pairs_matching(reader: LabelIndex, m: Matcher, want_match: bool) -> np.ndarray:
    """Pair ids of label ``m.name`` whose value satisfies ``m`` (or fails it, if not
    ``want_match``), looking values up where the pattern is a finite set of literals."""
    v = reader.view
    literals = m.literal_set()
    accepts_literals = m.type in (MatchType.EQ, MatchType.RE)
    if literals is not None and accepts_literals == want_match:
        found = (v.pair_id(m.name, value) for value in literals if value)
        return np.array(sorted(p for p in found if p >= 0), dtype=np.int64)
    if not want_match and m.is_match_all:
        return _NO_REFS
    pairs = v.pairs_with_name(m.name)
    if len(pairs) == 0 or (want_match and m.is_match_nonempty):
        return pairs
    mask = m.values_matching(v.symbols(v.pair_values()[pairs]))
    return pairs[mask if want_match else ~mask]


def matchers_key(matchers: Sequence[Matcher]) -> MatchersKey:
    """The matchers as a key of plain strings and ints: a query looks its selectors up
    in several caches, and hashing these costs a fraction of hashing ``Matcher``s."""
    return tuple([(m.name, m.value, int(m.type)) for m in matchers])


def select(reader: LabelIndex, matchers: Sequence[Matcher]) -> np.ndarray:
    """Sorted refs of the series that satisfy every matcher.

    Only the smallest set of postings is read; the series in it are then checked
    against the other matchers' postings, so that a query for one series of a large
    job costs about the size of that series' rarest label, not of the job. The index
    may keep the answer for the next call (``LabelIndex.remember``): callers must not
    write into it. (It is not flagged read-only: numba compiles a kernel once more for
    read-only arrays, which costs memory in every kernel the answer reaches.)"""
    key = matchers_key(matchers)
    found = reader.remembered(key)
    if found is None:
        found = _select(reader, matchers)
        reader.remember(key, found)
    return found


def _select(reader: LabelIndex, matchers: Sequence[Matcher]) -> np.ndarray:
    include: list[np.ndarray] = []
    exclude: list[np.ndarray] = []
    for m in matchers:
        if m.matches_empty:
            # Absent labels match; drop series whose value for the label fails the matcher.
            bad = _pairs_matching(reader, m, want_match=False)
            if len(bad):
                exclude.append(bad)
            continue
        pairs = _pairs_matching(reader, m, want_match=True)
        if len(pairs) == 0:
            return _NO_REFS
        include.append(pairs)
    include.sort(key=reader.postings_size)
    result = reader.refs_for_pairs(include[0]) if include else reader.all_refs()
    for pairs in include[1:]:
        result = result[reader.carrying(result, pairs)] if len(result) else result
    for pairs in exclude:
        result = result[~reader.carrying(result, pairs)] if len(result) else result
    return result


def contained(refs: np.ndarray, sorted_refs: np.ndarray) -> np.ndarray:
    """Which of ``refs`` are in the sorted array ``sorted_refs`` (a binary search each)."""
    if len(sorted_refs) == 0:
        return np.zeros(len(refs), bool)
    at = np.minimum(np.searchsorted(sorted_refs, refs), len(sorted_refs) - 1)
    return sorted_refs[at] == refs


_Answer = TypeVar("_Answer")


class SelectionCache(Generic[_Answer]):
    """Recent answers of an immutable index to sets of matchers, least recently used
    first out. Dashboards ask for the same selectors on every refresh, and in a large
    block finding a few series costs more than reading their samples. Bounded in
    entries and in bytes (as the caller counts them); an answer over ``max_item_bytes``
    is not kept. Thread-safe."""

    def __init__(self, max_entries: int = 256, max_bytes: int = 1 << 20,
                 max_item_bytes: int = 64 << 10) -> None:
        self._entries: OrderedDict[Hashable, tuple[_Answer, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.max_item_bytes = min(max_item_bytes, max_bytes)

    def get(self, key: Hashable) -> _Answer | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: Hashable, answer: _Answer, nbytes: int) -> None:
        if nbytes > self.max_item_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (answer, nbytes)
            self._bytes += nbytes
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, size) = self._entries.popitem(last=False)
                self._bytes -= size

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes of the answers held, as their callers counted them."""
        return self._bytes
