"""SeriesRegistry: every label set the head knows, interned into flat arrays.

A series is a dense ref (0, 1, 2, …, in creation order). Its labels are a run of *pair
ids* in ``lab_pair[lab_start[ref]:lab_start[ref+1]]``, sorted by label name; a pair is a
(name symbol, value symbol) packed into one int64; a symbol is a byte string in one
arena. Memory per series is therefore a handful of integers plus whatever strings are
new to it, and no Python object exists per series, label or string.

Writers (``resolve``) must hold the head's lock. Readers take a ``RegistryView``
snapshot: every array entry below the snapshot's counts is immutable, and growing an
array replaces it (the old one stays valid for readers that hold it), so reads need no
lock. The slot tables are the exception: a writer adds slots in place, so a reader
passes over refs its snapshot does not count. ``published`` is a snapshot the last
writer left, for finding known series before taking the lock.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import _registry_kernels as k
from ._block_kernels import gather_strings
from .batch import WriteBatch
from .labels import Canonical, LabelLimits
from .series_set import distinct_ids

__all__ = ["RegistryView", "SeriesRegistry", "SymbolLabels", "symbol_strings"]

_EMPTY = -1
_KEPT_PAIR_IDS = 4096  # pair look-ups a registry keeps the answers of
_RESOLVE_PART = 4096  # series interned per kernel call (see ``SeriesRegistry.resolve``)


def _grown(arr: np.ndarray, need: int, used: int, fill: int | None = None) -> np.ndarray:
    """``arr`` if it holds ``need`` entries, else a copy with doubled capacity."""
    if need <= len(arr):
        return arr
    cap = max(need, 2 * len(arr), 16)
    out = np.empty(cap, dtype=arr.dtype) if fill is None else np.full(cap, fill, dtype=arr.dtype)
    out[:used] = arr[:used]
    return out


def _table_size(items: int) -> int:
    """Slot-table size keeping the load factor at or below one half."""
    size = 16
    while size < 2 * items:
        size *= 2
    return size


def symbol_strings(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, ids: np.ndarray
                   ) -> list[str]:
    """The strings ``ids`` of a symbol table (``buf[offsets[s]:offsets[s]+lengths[s]]``);
    ``UnicodeDecodeError`` for one that is not UTF-8."""
    blob, bounds = gather_strings(buf, offsets, lengths, np.asarray(ids, np.int64))
    raw = blob.tobytes()
    return [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(bounds.tolist())]


@dataclass(frozen=True)
class SymbolLabels:
    """Label sets as another index holds them: set ``i`` is labels
    ``lab_start[i]:lab_start[i+1]`` in label-name order, each a name and a value symbol
    id, symbol ``s`` being the bytes ``buf[sym_off[s]:sym_off[s]+sym_len[s]]``. A block's
    index and the head's registry both read out this way, so a reader interns their
    series by symbol ids rather than by label bytes."""

    buf: np.ndarray  # uint8
    sym_off: np.ndarray
    sym_len: np.ndarray
    lab_start: np.ndarray  # int64 [n_sets + 1]
    lab_name: np.ndarray
    lab_value: np.ndarray

    @property
    def n_symbols(self) -> int:
        return len(self.sym_off)

    def strings(self, ids: np.ndarray) -> list[str]:
        """The text of symbols ``ids``."""
        return symbol_strings(self.buf, self.sym_off, self.sym_len, ids)

    def compacted(self) -> SymbolLabels:
        """The same sets over a table of only the symbols they use: translating a few
        sets of a large index then costs what they hold, not what the index holds."""
        n = len(self.lab_name)
        used, at = distinct_ids(
            np.concatenate((self.lab_name, self.lab_value)).astype(np.int64, copy=False),
            self.n_symbols)
        return SymbolLabels(self.buf, self.sym_off[used], self.sym_len[used], self.lab_start,
                            at[:n], at[n:])

    def detached(self) -> SymbolLabels:
        """``compacted``, with its strings copied out of ``buf``: what a cache keeps of a
        block's label sets then holds no view of the block's mapped file."""
        c = self.compacted()
        buf, bounds = gather_strings(c.buf, c.sym_off, c.sym_len, np.arange(c.n_symbols))
        return SymbolLabels(buf, bounds[:-1], np.diff(bounds), c.lab_start, c.lab_name,
                            c.lab_value)


class RegistryView(NamedTuple):
    """An immutable snapshot of the registry for lock-free reads (a named tuple: a
    small query takes several, and a tuple is made in a fraction of a dataclass's
    time)."""

    n_series: int
    n_pairs: int
    arena: np.ndarray
    sym_off: np.ndarray
    sym_len: np.ndarray
    sym_hash: np.ndarray
    sym_slots: np.ndarray
    n_symbols: int
    pair_key: np.ndarray  # [:n_pairs]
    pair_slots: np.ndarray
    lab_start: np.ndarray  # [:n_series + 1]
    lab_pair: np.ndarray
    ser_hash: np.ndarray
    ser_slots: np.ndarray
    found_pairs: dict[tuple[str, str], int]  # the registry's, see ``pair_id``

    def find_sent(self, batch: WriteBatch, limits: LabelLimits) -> np.ndarray:
        """Refs of the batch's series whose labels, exactly as sent, are those of a series
        in this snapshot; -1 for the others. Needs no lock."""
        refs = np.empty(batch.n_series, dtype=np.int64)
        k.find_sent(batch.buf, batch.label_start, batch.name_off, batch.name_len,
                    batch.value_off, batch.value_len, limits.max_labels,
                    limits.max_name_length, limits.max_value_length,
                    np.arange(len(batch.name_off), dtype=np.int64),
                    self.arena, self.sym_off, self.sym_len, self.pair_key, self.lab_start,
                    self.lab_pair, self.ser_hash, self.ser_slots, self.n_series, refs)
        return refs

    def symbol(self, s: int) -> str:
        off = int(self.sym_off[s])
        return self.arena[off:off + int(self.sym_len[s])].tobytes().decode("utf-8")

    def symbols(self, ids: np.ndarray) -> list[str]:
        return symbol_strings(self.arena, self.sym_off, self.sym_len, ids)

    def symbol_id(self, text: str) -> int:
        """Symbol id of ``text``, or -1 when no series in this snapshot uses it."""
        raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        s = k.lookup_symbol(raw, 0, len(raw), self.arena, self.sym_off, self.sym_len,
                            self.sym_hash, self.sym_slots)
        return s if s < self.n_symbols else _EMPTY

    def pair_id(self, name: str, value: str) -> int:
        """Pair id of label ``name=value``, or -1 when no series in this snapshot has
        it. Pairs found are remembered registry-wide (their ids never change): the
        same few selectors are asked for again and again."""
        p = self.found_pairs.get((name, value))
        if p is None:
            ns, vs = self.symbol_id(name), self.symbol_id(value)
            if ns < 0 or vs < 0:
                return _EMPTY
            p = k.lookup_pair(ns, vs, self.pair_key, self.pair_slots)
            if p < 0:
                return _EMPTY
            if len(self.found_pairs) >= _KEPT_PAIR_IDS:
                self.found_pairs.clear()  # what any queries may ask stays bounded
            self.found_pairs[(name, value)] = p
        return p if p < self.n_pairs else _EMPTY

    def pair_names(self) -> np.ndarray:
        return (self.pair_key >> 32).astype(np.int64)

    def pair_values(self) -> np.ndarray:
        return (self.pair_key & 0xFFFFFFFF).astype(np.int64)

    def pairs_with_name(self, name: str) -> np.ndarray:
        """Pair ids whose label name is ``name`` (ascending)."""
        ns = self.symbol_id(name)
        if ns < 0:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(self.pair_names() == ns)

    def labels(self, ref: int) -> dict[str, str]:
        pairs = self.lab_pair[self.lab_start[ref]:self.lab_start[ref + 1]]
        keys = self.pair_key[pairs]
        return {self.symbol(int(p >> 32)): self.symbol(int(p & 0xFFFFFFFF)) for p in keys}

    def symbol_labels(self, refs: np.ndarray) -> SymbolLabels:
        """The label sets of ``refs`` in this snapshot's symbols."""
        refs = np.asarray(refs, np.int64)
        keys = self.pair_key[self.pairs_of(refs)]
        starts = np.zeros(len(refs) + 1, np.int64)
        np.cumsum(self.lab_start[refs + 1] - self.lab_start[refs], out=starts[1:])
        return SymbolLabels(self.arena, self.sym_off[:self.n_symbols],
                            self.sym_len[:self.n_symbols], starts, keys >> 32,
                            keys & 0xFFFFFFFF)

    def pairs_of(self, refs: np.ndarray) -> np.ndarray:
        """All pair ids carried by the series ``refs`` (with repeats)."""
        return k.gather_ranges(self.lab_start, self.lab_pair, refs.astype(np.int64))


class SeriesRegistry:
    """Interning tables for label sets; see the module docstring for the layout."""

    def __init__(self, max_series: int = 2**31 - 2) -> None:
        self.max_series = max_series
        self.counters = np.zeros(5, dtype=np.int64)
        self.arena = np.empty(1 << 16, dtype=np.uint8)
        self.sym_off = np.empty(1024, dtype=np.int64)
        self.sym_len = np.empty(1024, dtype=np.int32)
        self.sym_hash = np.empty(1024, dtype=np.uint64)
        self.sym_slots = np.full(2048, _EMPTY, dtype=np.int32)
        self.pair_key = np.empty(1024, dtype=np.int64)
        self.pair_slots = np.full(2048, _EMPTY, dtype=np.int32)
        self.lab_start = np.zeros(1025, dtype=np.int64)
        self.lab_pair = np.empty(8192, dtype=np.int32)
        self.ser_hash = np.empty(1024, dtype=np.uint64)
        self.ser_slots = np.full(2048, _EMPTY, dtype=np.int32)
        self._found_pairs: dict[tuple[str, str], int] = {}
        self.published = self.snapshot()

    @property
    def n_series(self) -> int:
        return int(self.counters[k.N_SERIES])

    @property
    def n_symbols(self) -> int:
        return int(self.counters[k.N_SYMBOLS])

    @property
    def n_pairs(self) -> int:
        return int(self.counters[k.N_PAIRS])

    def resolve(self, canon: Canonical, known: np.ndarray | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
        """Refs of the batch's series (-1 invalid, -2 over the series limit) and a mask of
        the series created by this call. ``known`` holds refs already found (by
        ``RegistryView.find_sent``) or -1; only the others are looked up. Caller holds the
        head's lock."""
        n_batch = len(canon.hashes)
        if known is None:
            known = np.full(n_batch, -1, dtype=np.int64)
        refs = np.where(known >= 0, known, -1)
        created = np.zeros(n_batch, dtype=np.uint8)
        todo = (known < 0) & (canon.status == 0)
        if not todo.any():
            return refs, created.view(bool)
        starts = canon.canon_start
        b = canon.batch
        used = canon.order[:int(starts[-1])]
        label_bytes = np.zeros(len(used) + 1, dtype=np.int64)
        np.cumsum(b.name_len[used] + b.value_len[used], out=label_bytes[1:])
        # Room is made for the worst case (every label of every series left to resolve is
        # new), so a large batch goes in parts: a reader interning 100,000 label sets
        # would otherwise reserve symbol tables for millions of strings it never adds.
        new_series = np.concatenate(([0], np.cumsum(todo)))
        new_labels = np.concatenate(([0], np.cumsum(np.where(todo, np.diff(starts), 0))))
        new_bytes = np.concatenate(([0], np.cumsum(
            np.where(todo, label_bytes[starts[1:]] - label_bytes[starts[:-1]], 0))))
        for lo in range(0, n_batch, _RESOLVE_PART):
            hi = min(lo + _RESOLVE_PART, n_batch)
            self._reserve(int(new_series[hi] - new_series[lo]),
                          int(new_labels[hi] - new_labels[lo]),
                          int(new_bytes[hi] - new_bytes[lo]))
            k.get_or_create(
                b.buf, b.name_off, b.name_len, b.value_off, b.value_len,
                canon.order, starts[lo:hi + 1], canon.status[lo:hi], canon.hashes[lo:hi],
                self.arena, self.sym_off, self.sym_len, self.sym_hash, self.sym_slots,
                self.pair_key, self.pair_slots,
                self.lab_start, self.lab_pair, self.ser_hash, self.ser_slots,
                self.counters, self.max_series, known[lo:hi], refs[lo:hi], created[lo:hi],
            )
        created_mask = created.view(bool)
        if created_mask.any():
            self.published = self.snapshot()
        return refs, created_mask

    def resolve_labels(self, labels: SymbolLabels, symbol_map: np.ndarray) -> np.ndarray:
        """Refs of label sets another index holds (a block's, a head's), creating the new
        ones. ``symbol_map`` (int32, one entry per symbol of that index, -1 at first)
        translates its symbol ids into this registry's; it is filled in here, for the
        caller to keep for the next call over the same index. The sets must be valid and
        in label-name order, as stored sets are. Caller holds the head's lock."""
        n_sets = len(labels.lab_start) - 1
        refs = np.empty(n_sets, np.int64)
        created = np.zeros(n_sets, np.uint8)
        starts = labels.lab_start
        for lo in range(0, n_sets, _RESOLVE_PART):
            hi = min(lo + _RESOLVE_PART, n_sets)
            a, b = int(starts[lo]), int(starts[hi])
            # Room for the strings of this part not met yet, and no more: a reader
            # interning a fleet's series would otherwise reserve tables for every label.
            count, size = k.unmapped_symbols(symbol_map, labels.lab_name[a:b],
                                             labels.lab_value[a:b], labels.sym_len)
            self._reserve(hi - lo, b - a, size, symbols=count)
            k.resolve_labels(
                labels.buf, labels.sym_off, labels.sym_len, starts[lo:hi + 1] - a,
                labels.lab_name[a:b], labels.lab_value[a:b], symbol_map,
                self.arena, self.sym_off, self.sym_len, self.sym_hash, self.sym_slots,
                self.pair_key, self.pair_slots,
                self.lab_start, self.lab_pair, self.ser_hash, self.ser_slots,
                self.counters, refs[lo:hi], created[lo:hi],
            )
        if created.any():
            self.published = self.snapshot()
        return refs

    def _reserve(self, series: int, labels: int, label_bytes: int,
                 symbols: int | None = None) -> None:
        """Make room for ``series`` new series carrying ``labels`` labels in all, whose
        new strings are at most ``symbols`` (two per label unless told)."""
        c = self.counters
        n_sym, used, n_ser, n_lab, n_pair = (int(x) for x in c)
        new_syms = 2 * labels if symbols is None else symbols
        self.arena = _grown(self.arena, used + label_bytes, used)
        for name in ("sym_off", "sym_len", "sym_hash"):
            setattr(self, name, _grown(getattr(self, name), n_sym + new_syms, n_sym))
        self.pair_key = _grown(self.pair_key, n_pair + labels, n_pair)
        self.lab_start = _grown(self.lab_start, n_ser + series + 1, n_ser + 1)
        self.lab_pair = _grown(self.lab_pair, n_lab + labels, n_lab)
        self.ser_hash = _grown(self.ser_hash, n_ser + series, n_ser)
        if len(self.sym_slots) < 2 * (n_sym + new_syms):
            slots = np.empty(_table_size(n_sym + new_syms), dtype=np.int32)
            k.rehash_by_hash(self.sym_hash, n_sym, slots)
            self.sym_slots = slots
        if len(self.pair_slots) < 2 * (n_pair + labels):
            slots = np.empty(_table_size(n_pair + labels), dtype=np.int32)
            k.rehash_pairs(self.pair_key, n_pair, slots)
            self.pair_slots = slots
        if len(self.ser_slots) < 2 * (n_ser + series):
            slots = np.empty(_table_size(n_ser + series), dtype=np.int32)
            k.rehash_by_hash(self.ser_hash, n_ser, slots)
            self.ser_slots = slots

    def snapshot(self) -> RegistryView:
        """A view of everything created so far. Take it under the head's lock."""
        n_ser, n_pair = self.n_series, self.n_pairs
        return RegistryView(
            n_series=n_ser,
            n_pairs=n_pair,
            arena=self.arena,
            sym_off=self.sym_off,
            sym_len=self.sym_len,
            sym_hash=self.sym_hash,
            sym_slots=self.sym_slots,
            n_symbols=self.n_symbols,
            pair_key=self.pair_key[:n_pair],
            pair_slots=self.pair_slots,
            lab_start=self.lab_start[:n_ser + 1],
            lab_pair=self.lab_pair,
            ser_hash=self.ser_hash,
            ser_slots=self.ser_slots,
            found_pairs=self._found_pairs,
        )

    def keys(self, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical keys of ``refs`` (name 0xFF value 0xFF …) as a blob and offsets, for
        WAL series records."""
        return k.series_keys(
            refs.astype(np.int64), self.lab_start, self.lab_pair, self.pair_key,
            self.arena, self.sym_off, self.sym_len,
        )

    def memory_bytes(self) -> int:
        """Bytes held by the registry's arrays (capacity, not just use)."""
        return sum(a.nbytes for a in (
            self.arena, self.sym_off, self.sym_len, self.sym_hash, self.sym_slots,
            self.pair_key, self.pair_slots, self.lab_start, self.lab_pair, self.ser_hash,
            self.ser_slots,
        ))
