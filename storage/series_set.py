"""SeriesSet: what a select over the store returns, as columns.

Series are sorted by label set (Prometheus order: label by label, name then value,
byte-wise; a set that is a prefix of another sorts first). Labels are a table, not a
Python object per series: ``label_ids[i, j]`` is the index into ``values`` of series
``i``'s value for label ``names[j]``, or -1 when the series lacks that label. That is
the shape PromQL grouping wants (``by (job)`` is one column; ``without`` drops columns).
Samples of series ``i`` are ``timestamps[starts[i]:starts[i+1]]`` (ascending, unique)
and the matching ``values`` (float64, bit patterns kept: stale markers survive).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from . import _registry_kernels as rk

if TYPE_CHECKING:
    from .series import RegistryView, SymbolLabels

__all__ = ["FEW_SERIES", "ChunkSeriesSet", "LabelTable", "SeriesSet", "distinct_ids", "from_table",
           "label_sort_key", "label_table", "symbol_label_table", "without_empty"]

FEW_SERIES = 64
"""Series up to which a block or the head keeps the label table of a selection, and the
querier merges a read without interning its label sets."""


@dataclass(frozen=True)
class _Labelled:
    """The label table shared by sample and chunk results."""

    names: list[str]  # sorted distinct label names
    values: list[str]  # distinct label values; label_ids index into it
    label_ids: np.ndarray  # int32 [n_series, len(names)], -1 = label absent

    @property
    def n_series(self) -> int:
        return len(self.label_ids)

    def labels(self, i: int) -> dict[str, str]:
        """Label set of series ``i`` in name order (for output, not for hot loops)."""
        row = self.label_ids[i]
        return {n: self.values[v] for n, v in zip(self.names, row) if v >= 0}

    def column(self, name: str) -> np.ndarray:
        """Value ids of label ``name`` per series (-1 where absent)."""
        try:
            j = self.names.index(name)
        except ValueError:
            return np.full(self.n_series, -1, dtype=np.int32)
        return self.label_ids[:, j]


@dataclass(frozen=True)
class SeriesSet(_Labelled):
    """Series with their labels and samples, sorted by labels."""

    starts: np.ndarray  # int64 [n_series + 1]
    timestamps: np.ndarray  # int64
    samples: np.ndarray  # float64

    @property
    def n_samples(self) -> int:
        return int(self.starts[-1])

    def series_samples(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self.starts[i]), int(self.starts[i + 1])
        return self.timestamps[lo:hi], self.samples[lo:hi]

    @staticmethod
    def empty() -> SeriesSet:
        return SeriesSet([], [], np.empty((0, 0), np.int32), np.zeros(1, np.int64),
                         np.empty(0, np.int64), np.empty(0, np.float64))

    @staticmethod
    def from_series(series: Iterable[tuple[dict[str, str], Sequence[int], Sequence[float]]]
                    ) -> SeriesSet:
        """Build a set from Python objects, sorting series by labels and samples by time;
        for tests and small tools, not the hot path."""
        rows = sorted(series, key=lambda s: label_sort_key(s[0]))
        names = sorted({n for labels, _, _ in rows for n in labels})
        values = sorted({v for labels, _, _ in rows for v in labels.values()})
        vid = {v: i for i, v in enumerate(values)}
        ids = np.full((len(rows), len(names)), -1, dtype=np.int32)
        for i, (labels, _, _) in enumerate(rows):
            for j, n in enumerate(names):
                if n in labels:
                    ids[i, j] = vid[labels[n]]
        starts = np.zeros(len(rows) + 1, np.int64)
        starts[1:] = np.cumsum([len(ts) for _, ts, _ in rows])
        ts = np.concatenate([np.asarray(t, np.int64) for _, t, _ in rows]
                            or [np.empty(0, np.int64)])
        vs = np.concatenate([np.asarray(v, np.float64) for _, _, v in rows]
                            or [np.empty(0, np.float64)])
        return SeriesSet(names, values, ids, starts, ts, vs)


def label_sort_key(labels: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    """Sort key giving Prometheus's label-set order."""
    return tuple((n.encode(), v.encode()) for n, v in sorted(labels.items()))


@dataclass(frozen=True)
class ChunkSeriesSet(_Labelled):
    """Series with their labels and their stored chunks, sorted by labels: series ``i``
    owns chunks ``chunk_starts[i]:chunk_starts[i+1]`` (in time order, not overlapping),
    chunk ``c`` covering ``[mint[c], maxt[c]]`` with bytes
    ``blob[offsets[c]:offsets[c+1]]`` (XOR, without the encoding byte). Chunks are whole:
    they may hold samples outside the range asked for."""

    chunk_starts: np.ndarray  # int64 [n_series + 1]
    mint: np.ndarray  # int64
    maxt: np.ndarray  # int64
    blob: np.ndarray  # uint8
    offsets: np.ndarray  # int64 [n_chunks + 1]


class LabelTable(NamedTuple):
    """The label table of some series (see the module docstring) and ``order``, which
    puts them, as they were given, into label order: row ``r`` of ``label_ids`` is that
    of series ``order[r]``."""

    names: list[str]
    values: list[str]
    label_ids: np.ndarray
    order: np.ndarray

    def same_series(self, other: LabelTable) -> bool:
        """Whether ``other`` lists the same label sets in the same order."""
        return (self.names == other.names and self.values == other.values
                and self.label_ids.shape == other.label_ids.shape
                and self.label_ids.tobytes() == other.label_ids.tobytes())


def label_table(view: RegistryView, refs: np.ndarray) -> LabelTable:
    """The label table of the series ``refs`` of ``view``.

    Strings are decoded once per distinct symbol; everything per series or per label is
    array work.
    """
    pair_keys = view.pair_key[rk.gather_ranges(view.lab_start, view.lab_pair, refs)]
    return _table(view.symbols, view.n_symbols, view.lab_start, refs, pair_keys >> 32,
                  pair_keys & 0xFFFFFFFF)


def symbol_label_table(labels: SymbolLabels) -> LabelTable:
    """The label table of the label sets ``labels`` (a few sets read out of a block or
    the head), without interning them anywhere."""
    n_sets = len(labels.lab_start) - 1
    return _table(labels.strings, labels.n_symbols, labels.lab_start,
                  np.arange(n_sets, dtype=np.int64), labels.lab_name, labels.lab_value)


def _table(strings: Callable[[np.ndarray], list[str]], n_symbols: int, lab_start: np.ndarray,
           refs: np.ndarray, name_syms: np.ndarray, value_syms: np.ndarray) -> LabelTable:
    """The label table of sets ``refs`` of ``lab_start``, whose labels are the symbols
    ``name_syms``/``value_syms`` back to back (each set in name order)."""
    names, name_rank = _ranked(strings, n_symbols, name_syms)
    values, value_rank = _ranked(strings, n_symbols, value_syms)
    ids, key = rk.label_rows(lab_start, refs, name_rank, value_rank, len(names), len(values))
    order = np.lexsort(key.T[::-1]) if len(refs) > 1 and key.shape[1] else np.arange(len(refs))
    return LabelTable(names, values, ids[order], order)


def from_table(table: LabelTable, starts: np.ndarray, timestamps: np.ndarray,
               samples: np.ndarray) -> SeriesSet:
    """The set of the series of ``table`` (as they were given to it) whose samples are
    ``timestamps[starts[i]:starts[i+1]]`` for series ``i``, sorted into label order."""
    order = table.order
    lengths = np.diff(starts)[order]
    new_starts = np.zeros(len(order) + 1, np.int64)
    np.cumsum(lengths, out=new_starts[1:])
    if len(order) > 1:
        take = np.repeat(starts[:-1][order] - new_starts[:-1], lengths) \
            + np.arange(new_starts[-1])
        timestamps, samples = timestamps[take], samples[take]
    else:
        lo, hi = int(starts[0]), int(starts[-1])
        timestamps, samples = timestamps[lo:hi], samples[lo:hi]
    return SeriesSet(table.names, table.values, table.label_ids, new_starts, timestamps,
                     samples)


def without_empty(table: LabelTable, per_series: np.ndarray) -> LabelTable:
    """``table`` (in label order, ``order`` unused) without the rows whose count in
    ``per_series`` is zero, and without the names and values only they used."""
    ids = table.label_ids[per_series > 0]
    names_used = (ids >= 0).any(axis=0)
    ids = ids[:, names_used]
    values_used = np.zeros(len(table.values) + 1, bool)
    values_used[ids] = True  # -1 marks the extra last entry
    values_used = values_used[:-1]
    renumbered = np.cumsum(values_used, dtype=np.int32) - 1
    ids = np.where(ids >= 0, renumbered[ids], -1).astype(np.int32)
    names = [n for n, used in zip(table.names, names_used.tolist()) if used]
    values = [v for v, used in zip(table.values, values_used.tolist()) if used]
    return LabelTable(names, values, ids, np.arange(len(ids)))


def distinct_ids(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``ids`` (each in ``[0, n)``), ascending, and the position
    of each entry's value among them: by marking the values when the entries are many
    for ``n``, else by sorting the entries."""
    if len(ids) * 8 < n:
        return np.unique(ids, return_inverse=True)
    return rk.mark_distinct(ids, n)


def _ranked(strings: Callable[[np.ndarray], list[str]], n_symbols: int, syms: np.ndarray
            ) -> tuple[list[str], np.ndarray]:
    """Distinct strings of symbol ids ``syms`` (of ``n_symbols``, read by ``strings``) in
    byte order, and each id's rank."""
    distinct, inverse = distinct_ids(syms, n_symbols)
    texts = strings(distinct)
    order = sorted(range(len(texts)), key=texts.__getitem__)
    rank = np.empty(len(texts), np.int64)
    rank[order] = np.arange(len(texts))
    return [texts[i] for i in order], rank[inverse]
