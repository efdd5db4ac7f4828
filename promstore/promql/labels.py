"""Label sets as a table of string ids, shared by every value of one query.

A query never holds a Python object per series: the label sets of a value are a
``Labels`` table, one column per label name (names sorted), one row per series, cells
holding ids into the query's ``StringPool``. Id 0 is the empty string, and in Prometheus
an empty label value and an absent label are the same thing, so 0 also means "absent".
Because every value of a query shares one pool, equal label sets are equal id rows, and
grouping, matching and de-duplication are numpy operations on id matrices.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "METRIC_NAME",
    "Labels",
    "StringPool",
    "format_labels",
    "group_rows",
]

METRIC_NAME = "__name__"

_EMPTY_IDS = np.zeros((0, 0), dtype=np.int32)


class StringPool:
    """Interned strings of one query, shared by the threads evaluating its shards."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {"": 0}
        self.strings: list[str] = [""]
        self._rank: np.ndarray | None = None
        self._lock = threading.Lock()

    def intern(self, s: str) -> int:
        with self._lock:
            i = self._ids.setdefault(s, len(self.strings))
            if i == len(self.strings):
                self.strings.append(s)
                self._rank = None
        return i

    def intern_many(self, values: Sequence[str]) -> np.ndarray:
        """Ids (int32) of ``values``, interning new ones in one C-level pass.

        A new string gets the id of its position in this call, so the pool may keep
        unused duplicate slots; ``rank`` gives equal strings equal ranks regardless.
        """
        with self._lock:
            n0, n = len(self.strings), len(values)
            ids = np.fromiter(map(self._ids.setdefault, values, range(n0, n0 + n)),
                              dtype=np.int32, count=n)
            if n and int(ids.max()) >= n0:
                self.strings.extend(values)
                self._rank = None
        return ids

    def lookup(self, ids: np.ndarray) -> list[str]:
        strings = self.strings
        return [strings[i] for i in ids.tolist()]

    def rank(self) -> np.ndarray:
        """Byte-order rank of every id (equal strings share a rank; "" ranks lowest)."""
        with self._lock:
            if self._rank is None or len(self._rank) != len(self.strings):
                # Code-point order of str is the byte order of its UTF-8 encoding.
                arr = np.array(self.strings, dtype=object)
                _, inverse = np.unique(arr, return_inverse=True)
                self._rank = inverse.astype(np.int64).reshape(-1)
            return self._rank


@dataclass(frozen=True, slots=True)
class Labels:
    """Label sets of ``n`` series: ``ids[i, j]`` is series ``i``'s value of ``names[j]``.

    ``names`` is sorted and holds no duplicates; a column may be all zeros (no series has
    that label), which ``compact`` removes. Tables are immutable; every operation returns
    a new one (sharing arrays where it can).
    """

    names: tuple[str, ...]
    ids: np.ndarray  # int32 [n, len(names)]

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    @staticmethod
    def empty(n: int = 0) -> Labels:
        """``n`` series without labels (``vector(1)``, aggregations without grouping)."""
        return Labels((), np.zeros((n, 0), dtype=np.int32))

    def column(self, name: str) -> np.ndarray:
        try:
            return self.ids[:, self.names.index(name)]
        except ValueError:
            return np.zeros(self.n, dtype=np.int32)

    def project(self, names: Sequence[str]) -> np.ndarray:
        """The ids of ``names`` (in that order) per series, 0 where a name is absent."""
        out = np.zeros((self.n, len(names)), dtype=np.int32)
        index = {name: j for j, name in enumerate(self.names)}
        for k, name in enumerate(names):
            j = index.get(name)
            if j is not None:
                out[:, k] = self.ids[:, j]
        return out

    def take(self, rows: np.ndarray) -> Labels:
        return Labels(self.names, self.ids[rows])

    def keep(self, names: Iterable[str]) -> Labels:
        wanted = set(names)
        cols = [j for j, name in enumerate(self.names) if name in wanted]
        return Labels(tuple(self.names[j] for j in cols), self.ids[:, cols])

    def drop(self, names: Iterable[str]) -> Labels:
        unwanted = set(names)
        cols = [j for j, name in enumerate(self.names) if name not in unwanted]
        if len(cols) == len(self.names):
            return self
        return Labels(tuple(self.names[j] for j in cols), self.ids[:, cols])

    def with_column(self, name: str, ids: np.ndarray) -> Labels:
        """The table with label ``name`` set to ``ids`` per series (0 removes it)."""
        if name in self.names:
            out = self.ids.copy()
            out[:, self.names.index(name)] = ids
            return Labels(self.names, out)
        names = tuple(sorted((*self.names, name)))
        j = names.index(name)
        out = np.empty((self.n, len(names)), dtype=np.int32)
        out[:, :j] = self.ids[:, :j]
        out[:, j] = ids
        out[:, j + 1:] = self.ids[:, j:]
        return Labels(names, out)

    def compact(self) -> Labels:
        """The table without columns that no series uses."""
        if self.n == 0:
            return Labels.empty(0)
        used = (self.ids != 0).any(axis=0)
        if used.all():
            return self
        return Labels(tuple(n for n, u in zip(self.names, used) if u), self.ids[:, used])

    @staticmethod
    def concat(parts: Sequence[Labels]) -> Labels:
        """The rows of all ``parts`` in order, over the union of their names."""
        if not parts:
            return Labels((), _EMPTY_IDS)
        names = tuple(sorted({name for p in parts for name in p.names}))
        return Labels(names, np.concatenate([p.project(names) for p in parts], axis=0))

    def sort_order(self, pool: StringPool) -> np.ndarray:
        """The permutation putting the series in Prometheus's label-set order.

        Label sets compare pair by pair in name order; a set that is a prefix of another
        sorts first. In a column, an absent label therefore sorts after every value when
        the series has more labels further right, and before every value when it has not.
        """
        if self.n <= 1 or not self.names:
            return np.arange(self.n)
        present = self.ids != 0
        more = np.zeros_like(present)
        # more[:, j]: the series has some label in a column right of j
        more[:, :-1] = np.flip(np.logical_or.accumulate(np.flip(present[:, 1:], axis=1),
                                                        axis=1), axis=1)
        rank = pool.rank()[self.ids] + 1
        big = np.int64(len(pool.strings) + 2)
        keys = np.where(present, rank, np.where(more, big, 0))
        return np.lexsort(keys.T[::-1])

    def to_dicts(self, pool: StringPool) -> list[dict[str, str]]:
        """The label sets as dicts in name order, for output (one dict per series)."""
        strings = pool.strings
        names = self.names
        return [{names[j]: strings[v] for j, v in enumerate(row) if v}
                for row in self.ids.tolist()]


def group_rows(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Groups of equal rows of an id matrix, numbered in order of first appearance.

    Returns ``(inverse, first)``: ``inverse[i]`` is row ``i``'s group, ``first[g]`` the
    first row of group ``g`` (ascending).
    """
    n = ids.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if ids.shape[1] == 0:
        return np.zeros(n, dtype=np.int64), np.zeros(1, dtype=np.int64)
    if ids.shape[1] == 1:
        _, first, inverse = np.unique(ids[:, 0], return_index=True, return_inverse=True)
    else:
        _, first, inverse = np.unique(ids, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    # np.unique numbers groups in sort order; renumber them by first appearance.
    order = np.argsort(first, kind="stable")
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    return renumber[inverse].astype(np.int64), first[order].astype(np.int64)


def _quote(s: str) -> str:
    """Go's ``strconv.Quote`` for the printable text label values usually are."""
    out = []
    for ch in s:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def format_labels(labels: dict[str, str]) -> str:
    """A label set as Prometheus prints it in messages: ``{a="1", b="2"}``."""
    return "{" + ", ".join(f"{k}={_quote(v)}" for k, v in sorted(labels.items())) + "}"
