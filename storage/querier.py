"""Querier: blocks and the head read as one store, for one request.

Each part of the store names its series by its own ids (block ordinals, head refs). A
querier gives every series it meets an id of its own, by interning the series' label
sets into a private registry, so one series found in several blocks and in the head is
one series here. Label sets are interned by the symbol ids of the part that holds them
(``SeriesRegistry.resolve_labels``): each string of a part is translated once per
querier, and a series costs a few integer look-ups rather than hashing its labels' bytes
string by string. It implements ``IndexReader`` and ``Selectable`` over those ids.

Samples from several parts are merged per series in time order; where parts overlap
(a block and the head after a crash between writing the block and truncating the head,
or blocks not yet compacted together) the first copy of a timestamp wins, taking parts
oldest block first and the head last. Deleted samples never reach the merge: each part
leaves out what its own tombstones delete (``Block.chunks``, ``Head.read_samples``…).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from . import _merge_kernels as mk
from . import chunkenc
from .chunk_merge import rebuild_chunks, take_chunks
from .interface import Shard
from .matchers import Matcher
from .postings import MatchersKey, matchers_key
from .rwlock import RWLock
from .samples import SampleSet
from .series import RegistryView, SeriesRegistry, SymbolLabels
from .series_set import (
    FEW_SERIES,
    ChunkSeriesSet,
    LabelTable,
    SeriesSet,
    distinct_ids,
    label_table,
    without_empty,
)
from .xor import ENCODING_XOR

if TYPE_CHECKING:
    from .block import Block, ChunkSet, Selection
    from .head import Head

__all__ = ["Querier"]

_NO_IDS = np.empty(0, np.int64)

_INTERN_PART = 8192  # series whose label sets are interned at once
_KEEP_SYMBOL_MAP = 8
"""A part's symbol translation is kept for the querier's life when the sets interned at
once carry at least one label per this many of the part's symbols; for fewer, only the
symbols they use are translated."""

_DECODE_CHUNKS = 256
"""Chunks of a block decoded at once, then trimmed to the range asked for: a long query
reads in time slices that cut through chunks (a dense chunk holds about 2,048 samples),
so decoding all of them first would hold several times the samples selected."""


@dataclass(frozen=True)
class _Runs:
    """Samples of one part of the store as runs: run ``r`` holds series ``owner[r]``'s
    samples ``ts[starts[r]:starts[r+1]]`` in time order."""

    owner: np.ndarray
    starts: np.ndarray
    ts: np.ndarray
    vs: np.ndarray


def _first_copies(ts: np.ndarray, vs: np.ndarray, rank: np.ndarray, src: np.ndarray,
                  lengths: np.ndarray, dirty: np.ndarray, n_series: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort the samples of the ``dirty`` series (ranks) by time, keeping for each
    timestamp the copy of the earliest part (lowest source position); returns the
    samples and the count per series."""
    out_start = np.cumsum(lengths) - lengths
    source = np.repeat(src - out_start, lengths) + np.arange(len(ts))
    owner = np.repeat(rank, lengths)
    at = np.flatnonzero(np.isin(owner, dirty))
    local = np.lexsort((source[at], ts[at], owner[at]))
    ts[at], vs[at] = ts[at][local], vs[at][local]
    first = np.ones(len(ts), bool)
    first[1:] = (owner[1:] != owner[:-1]) | (ts[1:] != ts[:-1])
    return ts[first], vs[first], np.bincount(owner[first], minlength=n_series)


def _decoded(chunks: ChunkSet, qids: np.ndarray, mint: int, maxt: int) -> Iterator[_Runs]:
    """The samples of ``chunks`` in ``[mint, maxt]``, a run per chunk (owned by the
    querier ids ``qids`` of the chunks' series), decoding ``_DECODE_CHUNKS`` at a time."""
    for first in range(0, chunks.n_chunks, _DECODE_CHUNKS):  # a loop over batches
        last = min(first + _DECODE_CHUNKS, chunks.n_chunks)
        bounds = chunks.offsets[first:last + 1]
        ts, vs, starts = chunkenc.decode_many(chunks.encoding[first:last],
                                              chunks.blob[bounds[0]:bounds[-1]],
                                              bounds - bounds[0])
        lo, hi = mk.trim_runs(ts, starts[:-1], starts[1:], mint, maxt)
        kept = hi - lo
        if kept.sum() < len(ts):  # some chunk reaches past the range
            ts, vs = mk.gather_runs(ts, vs, lo, kept)
            starts = np.zeros(len(lo) + 1, np.int64)
            np.cumsum(kept, out=starts[1:])
        yield _Runs(qids[chunks.series[first:last]], starts, ts, vs)


def _concatenated(parts: list[_Runs]) -> tuple[np.ndarray, ...]:
    """Parts' runs (samples of one series in time order, already within the range read:
    ``_decoded``, ``Head.series_runs``) as one list: each run's owner, bounds ``lo``,
    ``hi`` in the samples ``ts``, ``vs``; empty runs left out. Empties ``parts``, so that
    their own copies go before the merged one is made."""
    base = np.cumsum([0] + [len(p.ts) for p in parts[:-1]])
    run_owner = np.concatenate([p.owner for p in parts])
    lo = np.concatenate([p.starts[:-1] + b for p, b in zip(parts, base)])
    hi = np.concatenate([p.starts[1:] + b for p, b in zip(parts, base)])
    ts = parts[0].ts if len(parts) == 1 else np.concatenate([p.ts for p in parts])
    vs = parts[0].vs if len(parts) == 1 else np.concatenate([p.vs for p in parts])
    parts.clear()
    held = hi > lo
    if not held.all():
        run_owner, lo, hi = run_owner[held], lo[held], hi[held]
    return run_owner, lo, hi, ts, vs


def _ranks(order: np.ndarray) -> np.ndarray:
    """The row of each series in a label table whose ``order`` is given."""
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _in_label_order(table: LabelTable, run_rank: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    ts: np.ndarray, vs: np.ndarray) -> SeriesSet:
    """The series of ``table`` with the samples of the runs ``lo:hi`` of ``ts``/``vs``,
    run ``r`` belonging to the series in row ``run_rank[r]``. Runs are put in label
    order (older parts first for a series) and copied once; only series whose runs
    overlap in time are sorted sample by sample, the first copy of a timestamp winning.
    Rows left without samples are dropped."""
    n_series = len(table.label_ids)
    runs = np.lexsort((ts[lo], run_rank))  # older parts first among equal starts
    out_ts, out_vs, per_series, clash = mk.ordered_runs(ts, vs, run_rank, lo, hi, runs,
                                                        n_series)
    if clash:
        r_rank, r_lo, r_hi = run_rank[runs], lo[runs], hi[runs]
        overlap = (r_rank[1:] == r_rank[:-1]) & (ts[r_lo[1:]] <= ts[r_hi[:-1] - 1])
        out_ts, out_vs, per_series = _first_copies(out_ts, out_vs, r_rank, r_lo,
                                                   r_hi - r_lo, r_rank[1:][overlap], n_series)
    if not per_series.all():
        table = without_empty(table, per_series)
        per_series = per_series[per_series > 0]
    starts = np.zeros(len(per_series) + 1, np.int64)
    np.cumsum(per_series, out=starts[1:])
    return SeriesSet(table.names, table.values, table.label_ids, starts, out_ts, out_vs)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _read(method: _Method) -> _Method:
    """Run ``method`` holding the store's lock shared, over the blocks there now that
    overlap the querier's range (``Querier._blocks``)."""

    @functools.wraps(method)
    def wrapped(self: Querier, *args: Any, **kwargs: Any) -> Any:
        self._lock.acquire_shared()
        try:
            self._blocks = [b for b in self._all_blocks()
                            if b.meta.min_time <= self.maxt and b.meta.max_time > self.mint]
            return method(self, *args, **kwargs)
        finally:
            self._lock.release_shared()

    return wrapped  # type: ignore[return-value]


class Querier:
    """A read view over the blocks and the head for ``[mint, maxt]``.

    Every read holds ``lock`` shared and takes the current blocks (from ``blocks``)
    inside it, so it sees a range either in the head or in its new block, never in
    neither (the persister publishes a block and truncates the head under the lock held
    exclusively).
    """

    def __init__(self, head: Head, blocks: Callable[[], Sequence[Block]], lock: RWLock,
                 mint: int, maxt: int) -> None:
        self._head = head
        self._all_blocks = blocks
        self._lock = lock
        self.mint, self.maxt = mint, maxt
        self._made_registry: SeriesRegistry | None = None  # see ``_registry``
        self._ids_lock = threading.Lock()  # shards of a query read on several threads
        self._blocks: list[Block] = []
        self._symbol_maps: dict[object, np.ndarray] = {}  # per part, see ``_intern``
        self._selected: dict[tuple[Block, MatchersKey], tuple[np.ndarray, np.ndarray]] = {}
        self._partitions: dict[tuple[Block, MatchersKey, int],
                               tuple[np.ndarray, np.ndarray]] = {}

    @property
    def head(self) -> Head:
        return self._head

    @property
    def blocks(self) -> list[Block]:
        """The store's blocks now (each read takes them anew)."""
        return list(self._all_blocks())

    # -- ids ----------------------------------------------------------------------------

    @property
    def _registry(self) -> SeriesRegistry:
        """The querier's ids, made when first needed (a read of a few series needs none).
        Taken holding ``_ids_lock``."""
        if self._made_registry is None:
            self._made_registry = SeriesRegistry()
        return self._made_registry

    def _intern(self, part: object, labels: SymbolLabels) -> np.ndarray:
        """Querier ids of label sets that ``part`` (a block, the head) holds."""
        if len(labels.lab_start) <= 1:
            return _NO_IDS
        if labels.n_symbols > _KEEP_SYMBOL_MAP * len(labels.lab_name):
            return self._intern_own(labels.compacted())
        with self._ids_lock:
            known = self._symbol_maps.get(part)
            if known is None or len(known) < labels.n_symbols:  # the head's strings grow
                grown = np.full(labels.n_symbols, -1, np.int32)
                if known is not None:
                    grown[:len(known)] = known
                known = self._symbol_maps[part] = grown
            return self._registry.resolve_labels(labels, known)

    def _intern_own(self, labels: SymbolLabels) -> np.ndarray:
        """Querier ids of label sets over a symbol table of their own (``compacted``)."""
        with self._ids_lock:
            return self._registry.resolve_labels(labels, np.full(labels.n_symbols, -1,
                                                                 np.int32))

    def _view(self) -> RegistryView:
        """The label sets of the ids given so far."""
        with self._ids_lock:
            return self._registry.snapshot()

    def _head_parts(self, matchers: Sequence[Matcher], mint: int, maxt: int,
                    shard: Shard | None = None) -> tuple[np.ndarray, np.ndarray]:
        refs = self._head.select_series(matchers, mint, maxt)
        if shard is not None and len(refs):
            refs = refs[shard.holds(self._head.series_hashes(refs))]
        if len(refs) == 0:
            return refs, _NO_IDS
        return refs, self._intern(self._head, self._head.symbol_labels(refs))

    def _head_samples(self, matchers: Sequence[Matcher], mint: int, maxt: int,
                      shard: Shard | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``_head_parts`` for reading samples, sparing the look-up when the head holds
        none in ``[mint, maxt]`` (a query of a past range, or a store just opened)."""
        if not self._head.holds_samples_in(mint, maxt):
            return _NO_IDS, _NO_IDS
        return self._head_parts(matchers, mint, maxt, shard)

    # -- IndexReader ----------------------------------------------------------------------

    @_read
    def select_series(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> np.ndarray:
        parts = [self._head_parts(matchers, mint, maxt)[1]]
        for block in self._blocks:
            ids = block.select_series(matchers, mint, maxt)
            if len(ids):
                parts.append(self._intern(block, block.symbol_labels(ids)))
        return np.unique(np.concatenate(parts))

    def series_labels(self, refs: np.ndarray) -> list[dict[str, str]]:
        view = self._view()
        return [view.labels(int(r)) for r in refs]

    @_read
    def label_names(self, refs: np.ndarray | None = None) -> list[str]:
        if refs is not None:
            view = self._view()
            pairs = view.pairs_of(np.asarray(refs, np.int64))
            return sorted(view.symbols(np.unique(view.pair_names()[pairs])))
        names = set(self._head.label_names())
        for block in self._blocks:
            names.update(block.label_names())
        return sorted(names)

    @_read
    def label_values(self, name: str, refs: np.ndarray | None = None) -> list[str]:
        if refs is not None:
            view = self._view()
            pairs = view.pairs_with_name(name)
            if len(pairs):
                pairs = np.intersect1d(pairs, view.pairs_of(np.asarray(refs, np.int64)))
            return sorted(view.symbols(np.unique(view.pair_values()[pairs])))
        values = set(self._head.label_values(name))
        for block in self._blocks:
            values.update(block.label_values(name))
        return sorted(values)

    # -- Selectable -----------------------------------------------------------------------

    def _block_series(self, block: Block, matchers: Sequence[Matcher], key: MatchersKey
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Ids in ``block`` of the series matching ``matchers`` (whose ``matchers_key`` is
        ``key``) anywhere in it, with their querier ids. Kept for the querier's life: a
        range query selects again for every slice of its steps, and over a large fleet
        finding and interning the series would otherwise cost more than reading their
        samples."""
        found = self._selected.get((block, key))
        if found is None:
            selection = block.selection(matchers, key)
            ids = selection.ids
            if selection.labels is not None:  # a few series, their labels at hand
                qids = self._intern_own(selection.labels)
            else:
                # In parts: the label sets of a fleet's series, decoded, keyed and sorted
                # at once, would take hundreds of bytes each for a moment.
                qids = np.concatenate([
                    self._intern(block, block.symbol_labels(ids[lo:lo + _INTERN_PART]))
                    for lo in range(0, len(ids), _INTERN_PART)])
            found = self._selected[(block, key)] = (ids, qids)
        return found

    def _shard_rows(self, block: Block, key: MatchersKey, qids: np.ndarray, shard: Shard
                    ) -> np.ndarray:
        """Rows of ``_block_series(block, …, key)`` in ``shard``, in order. The rows are
        partitioned into all ``shard.count`` shards at once, for the querier's life: a
        sharded query selects from every block for every slice of every shard."""
        partition = self._partitions.get((block, key, shard.count))
        if partition is None:
            with self._ids_lock:
                hashes = self._registry.ser_hash[qids]
            owner = Shard.owners(hashes, shard.count)
            order = np.argsort(owner, kind="stable")
            bounds = np.searchsorted(owner[order], np.arange(shard.count + 1, dtype=np.uint64))
            partition = self._partitions[(block, key, shard.count)] = (order, bounds)
        order, bounds = partition
        return order[bounds[shard.index]:bounds[shard.index + 1]]

    @_read
    def estimate_series(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> int:
        """The most series matching ``matchers`` in one part of the store (a block, the
        head) that overlaps ``[mint, maxt]``: found from indexes alone, a lower bound
        of how many ``select`` would return, for sizing work before reading samples."""
        key = matchers_key(matchers)
        counts = [len(self._block_series(b, matchers, key)[0]) for b in self._blocks
                  if b.meta.min_time <= maxt and b.meta.max_time > mint]
        counts.append(len(self._head.select_series(matchers, mint, maxt)))
        return max(counts)

    @_read
    def select(self, matchers: Sequence[Matcher], mint: int, maxt: int,
               shard: Shard | None = None) -> SeriesSet:
        """Series matching ``matchers`` with their samples in ``[mint, maxt]``, merged
        over blocks and head."""
        blocks = [b for b in self._blocks
                  if b.meta.min_time <= maxt and b.meta.max_time > mint]
        if not blocks:
            return self._head.select(matchers, mint, maxt, shard)
        key = matchers_key(matchers)
        if shard is None:
            few = self._select_few(blocks, matchers, key, mint, maxt)
            if few is not None:
                return few
        runs: list[_Runs] = []
        for block in blocks:
            ids, qids = self._block_series(block, matchers, key)
            if shard is not None:
                mine = self._shard_rows(block, key, qids, shard)
                ids, qids = ids[mine], qids[mine]
            if len(ids) == 0:
                continue
            runs.extend(_decoded(block.chunks(ids, mint, maxt), qids, mint, maxt))
        refs, qids = self._head_samples(matchers, mint, maxt, shard)
        if len(refs):
            runs.append(self._head_runs(refs, qids, mint, maxt))
        if not runs:
            return SeriesSet.empty()
        return self._merge(runs)

    def _select_few(self, blocks: list[Block], matchers: Sequence[Matcher], key: MatchersKey,
                    mint: int, maxt: int) -> SeriesSet | None:
        """``select`` when every part holding any of the series selected holds the same
        few (at most ``FEW_SERIES``): a dashboard's panel over a few series, or a
        single one. Their label table is then the one each part keeps for them, and
        nothing is interned. None when that is not so."""
        found: list[tuple[Block, Selection, LabelTable]] = []
        for block in blocks:
            selection = block.selection(matchers, key)
            if len(selection.ids) == 0:
                continue
            if selection.table is None:
                return None
            found.append((block, selection, selection.table))
        refs, head_table = _NO_IDS, None
        head = self._head
        if head.holds_samples_in(mint, maxt):
            refs = head.select_series(matchers, mint, maxt)
            if len(refs) > FEW_SERIES:
                return None
            if len(refs):
                head_table = head.label_table(refs)
        tables = [table for _, _, table in found]
        if head_table is not None:
            tables.append(head_table)
        if not tables:
            return SeriesSet.empty()
        table = tables[0]
        if not all(table.same_series(other) for other in tables[1:]):
            return None
        runs: list[_Runs] = []  # each part lists the series in its own order
        for block, selection, own in found:
            rank = _ranks(own.order)
            got = block.few_samples(selection, mint, maxt)
            if got is None:
                runs.extend(_decoded(block.chunks(selection.ids, mint, maxt), rank, mint,
                                     maxt))
            else:
                series, starts, ts, vs = got
                runs.append(_Runs(rank[series], starts, ts, vs))
        if head_table is not None:
            runs.append(self._head_runs(refs, _ranks(head_table.order), mint, maxt))
        if not runs:
            return SeriesSet.empty()
        return _in_label_order(table, *_concatenated(runs))

    def _head_runs(self, refs: np.ndarray, owners: np.ndarray, mint: int, maxt: int) -> _Runs:
        """The head's samples of ``refs`` in ``[mint, maxt]``, a run per series, owned by
        ``owners`` (one per ref)."""
        present, bounds, ts, vs = self._head.series_runs(refs, mint, maxt)
        return _Runs(owners[present], bounds, ts, vs)

    def _merge(self, parts: list[_Runs]) -> SeriesSet:
        """One SeriesSet from parts' runs of the querier's series (``_concatenated``)."""
        run_owner, lo, hi, ts, vs = _concatenated(parts)
        if len(lo) == 0:
            return SeriesSet.empty()
        view = self._view()
        present, run_series = distinct_ids(run_owner, view.n_series)
        table = label_table(view, present)
        return _in_label_order(table, _ranks(table.order)[run_series], lo, hi, ts, vs)

    @_read
    def select_chunks(self, matchers: Sequence[Matcher], mint: int, maxt: int
                      ) -> ChunkSeriesSet:
        """Series matching ``matchers`` with their chunks overlapping ``[mint, maxt]``,
        as stored: XOR chunks pass through byte for byte, except for series whose chunks
        from different parts overlap, that hold out-of-order samples in the head or that
        are stored in another encoding, which are merged and re-encoded as XOR."""
        parts: tuple[list[np.ndarray], ...] = ([], [], [], [], [], [])
        series, cmin, cmax, blobs, lengths, kinds = parts
        for block in self._blocks:
            ids = block.select_series(matchers, mint, maxt)
            if len(ids) == 0:
                continue
            qids = self._intern(block, block.symbol_labels(ids))
            chunks = block.chunks(ids, mint, maxt)
            for out, part in zip(parts, (qids[chunks.series], chunks.mint, chunks.maxt,
                                         chunks.blob, np.diff(chunks.offsets),
                                         chunks.encoding)):
                out.append(part)
        refs, qids = self._head_samples(matchers, mint, maxt)
        late = SampleSet(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
        if len(refs):
            batch, late = self._head.read_chunks(refs, mint, maxt)
            for out, part in zip(parts, (qids[batch.pos], batch.mint, batch.maxt, batch.blob,
                                         np.diff(batch.offsets),
                                         np.full(batch.n_chunks, ENCODING_XOR, np.uint8))):
                out.append(part)
            late = SampleSet(qids[np.searchsorted(refs, late.refs)], late.timestamps,
                             late.values)
        if not series:
            return ChunkSeriesSet([], [], np.empty((0, 0), np.int32), np.zeros(1, np.int64),
                                  _NO_IDS, _NO_IDS, np.empty(0, np.uint8), np.zeros(1, np.int64))
        s, lo, hi = np.concatenate(series), np.concatenate(cmin), np.concatenate(cmax)
        blob = np.concatenate(blobs)
        offsets = np.zeros(len(s) + 1, np.int64)
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
        order = np.lexsort((lo, s))
        encoding = np.concatenate(kinds)[order]
        s, lo, hi = s[order], lo[order], hi[order]
        blob, offsets = take_chunks(blob, offsets, order)
        redo = np.zeros(len(s), bool)
        redo[1:] = (s[1:] == s[:-1]) & (lo[1:] <= hi[:-1])
        redo |= np.isin(s, late.refs) | (encoding != ENCODING_XOR)  # served as XOR
        if redo.any() or len(late.refs):
            s, lo, hi, blob, offsets = rebuild_chunks(s, lo, hi, blob, offsets, redo, late,
                                                      encoding)
        present, chunk_series = np.unique(s, return_inverse=True)
        names, values, ids, order = label_table(self._view(), present)
        per_series = np.bincount(chunk_series, minlength=len(present))[order]
        rank = np.empty(len(present), np.int64)
        rank[order] = np.arange(len(present))
        by_label = np.lexsort((lo, rank[chunk_series]))
        blob, offsets = take_chunks(blob, offsets, by_label)
        starts = np.zeros(len(present) + 1, np.int64)
        np.cumsum(per_series, out=starts[1:])
        return ChunkSeriesSet(names, values, ids, starts, lo[by_label], hi[by_label], blob,
                              offsets)
