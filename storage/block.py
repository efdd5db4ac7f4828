"""Blocks: immutable directories holding the series and chunks of one time range.

A block is laid out exactly as Prometheus 2.x lays it out, so Prometheus and its tools
open ours and we open theirs::

    <parent>/<ULID>/
        meta.json      time range, stats, compaction level and sources (written last)
        index          symbols, series, postings (``storage.block_index``)
        chunks/000001  chunk segments (``storage.block_chunks``)
        tombstones     deleted intervals per series (``storage.tombstones``)

``write_block`` builds a block in ``<ULID>.tmp-for-creation`` and renames it into
place, so a block directory either is complete or does not exist under its final
name. ``Block`` reads one through memory maps. Byte layouts are in ``docs/format.md``
("Blocks"). Time ranges in ``meta.json`` are half-open: ``minTime <= t < maxTime``.

Only the tombstones file and ``meta.json`` ever change after a block is written: a
deletion (``Block.delete``) replaces both, each atomically, tombstones first, and hands
back a new ``Block`` value that shares the memory maps of the old one; readers holding
the old value keep the deletions they started with.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Self

import numpy as np

from . import chunkenc
from . import tombstones as tomb
from ._registry_kernels import gather_ranges
from .block_chunks import MAX_SEGMENT_SIZE, ChunkSegments, write_segments
from .block_index import ChunkMetas, DecodedSeries, IndexFile, SeriesLayout, write_index
from .errors import CorruptionError
from .matchers import Matcher
from .postings import MatchersKey, SelectionCache, matchers_key, select
from .series import SymbolLabels
from .series_set import FEW_SERIES, LabelTable, symbol_label_table
from .tombstones import Tombstones
from .ulid import is_ulid, new_ulid

__all__ = [
    "META_VERSION",
    "TMP_SUFFIX",
    "Block",
    "BlockMeta",
    "ChunkSet",
    "Selection",
    "read_meta",
    "remove_block_dir",
    "write_block",
]

META_VERSION = 1
TMP_SUFFIX = ".tmp-for-creation"
_MAX_META_BYTES = 64 << 20


@dataclass(frozen=True)
class BlockMeta:
    """What ``meta.json`` says about a block. ``max_time`` is exclusive."""

    ulid: str
    min_time: int
    max_time: int
    num_samples: int
    num_series: int
    num_chunks: int
    level: int
    sources: tuple[str, ...]
    path: Path
    num_tombstones: int = 0

    def to_json(self) -> str:
        """``meta.json`` as Prometheus writes it (same keys, order and indentation;
        ``numTombstones`` only when there are some, as Prometheus omits a zero)."""
        stats = {"numSamples": self.num_samples, "numSeries": self.num_series,
                 "numChunks": self.num_chunks}
        if self.num_tombstones:
            stats["numTombstones"] = self.num_tombstones
        doc = {
            "ulid": self.ulid,
            "minTime": self.min_time,
            "maxTime": self.max_time,
            "stats": stats,
            "compaction": {"level": self.level, "sources": list(self.sources)},
            "version": META_VERSION,
        }
        return json.dumps(doc, indent="\t")


def read_meta(path: Path) -> BlockMeta:
    """The ``meta.json`` of the block directory ``path``; ``CorruptionError`` when it
    is missing (a block whose creation never finished) or malformed."""
    file = path / "meta.json"
    try:
        with open(file, "rb") as f:
            text = f.read(_MAX_META_BYTES + 1)
    except FileNotFoundError:
        raise CorruptionError(f"{path}: no meta.json, the block was not completely written"
                              ) from None
    except OSError as e:
        raise CorruptionError(f"{file}: cannot read: {e}") from None
    if len(text) > _MAX_META_BYTES:
        raise CorruptionError(f"{file}: larger than {_MAX_META_BYTES} bytes")
    try:
        doc = json.loads(text)
        meta = _meta_from_doc(doc, path)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise CorruptionError(f"{file}: {e}") from None
    return meta


def _meta_from_doc(doc: Any, path: Path) -> BlockMeta:
    def integer(value: Any, what: str, low: int = -(1 << 63)) -> int:
        if type(value) is not int or not low <= value < (1 << 63):
            raise ValueError(f"{what} must be an integer >= {low}, not {value!r}")
        return value

    if doc["version"] != META_VERSION:
        raise ValueError(f"unsupported version {doc['version']!r}")
    ulid = doc["ulid"]
    if not isinstance(ulid, str) or not is_ulid(ulid):
        raise ValueError(f"bad ulid {ulid!r}")
    stats, compaction = doc["stats"], doc["compaction"]
    sources = compaction.get("sources") or []
    if not isinstance(sources, list) or not all(isinstance(s, str) and is_ulid(s)
                                                for s in sources):
        raise ValueError("compaction sources must be a list of ulids")
    meta = BlockMeta(
        ulid=ulid,
        min_time=integer(doc["minTime"], "minTime"),
        max_time=integer(doc["maxTime"], "maxTime"),
        num_samples=integer(stats.get("numSamples", 0), "numSamples", 0),
        num_series=integer(stats.get("numSeries", 0), "numSeries", 0),
        num_chunks=integer(stats.get("numChunks", 0), "numChunks", 0),
        level=integer(compaction["level"], "compaction level", 1),
        sources=tuple(sources),
        path=path,
        num_tombstones=integer(stats.get("numTombstones", 0), "numTombstones", 0),
    )
    if meta.min_time > meta.max_time:
        raise ValueError(f"minTime {meta.min_time} is after maxTime {meta.max_time}")
    return meta


@dataclass(frozen=True)
class ChunkSet:
    """Chunks of some series, in (series, mint) order.

    Chunk ``c`` belongs to ``series[c]`` (a position in the ids asked for), covers
    ``[mint[c], maxt[c]]`` (inclusive), has encoding byte ``encoding[c]`` and data
    ``blob[offsets[c]:offsets[c+1]]`` (without the encoding byte), so XOR chunks go
    straight to ``storage.xor.decode_xor_many(blob, offsets)``.
    """

    series: np.ndarray
    mint: np.ndarray
    maxt: np.ndarray
    encoding: np.ndarray
    blob: np.ndarray
    offsets: np.ndarray

    @property
    def n_chunks(self) -> int:
        return len(self.series)


class FewChunks(NamedTuple):
    """Every chunk of a few series, as ``Block.few_samples`` reads them: chunk ``c`` of
    series ``series[c]`` (a position in the selection) covers ``[mint[c], maxt[c]]`` and
    lies at ``offsets[c]`` in segment ``segment`` (-1 when they lie in several)."""

    series: np.ndarray
    mint: np.ndarray
    maxt: np.ndarray
    offsets: np.ndarray
    segment: int

    @classmethod
    def of(cls, d: DecodedSeries) -> FewChunks:
        refs = d.chunk_ref
        segment = int(refs[0] >> 32) if len(refs) else -1
        if len(refs) and (int(refs.min() >> 32) != segment or int(refs.max() >> 32) != segment):
            segment = -1
        return cls(d.chunk_series, d.chunk_mint, d.chunk_maxt, refs & 0xFFFFFFFF, segment)


@dataclass(frozen=True)
class Selection:
    """The series of a block matching some matchers that have samples no tombstone
    deletes: their ids (sorted; shared, not to be written into) and, for at most
    ``FEW_SERIES`` of them, their label sets over a copy of only the strings they
    use, their label table and their chunk metas (``None`` for more, whose labels are
    read in parts as they are needed)."""

    ids: np.ndarray
    labels: SymbolLabels | None
    table: LabelTable | None  # of ``labels``, when they are here
    chunks: FewChunks | None  # every chunk of the series, with ``labels``

    @property
    def nbytes(self) -> int:
        held = [self.ids]
        if self.labels is not None:
            held += [getattr(self.labels, f.name) for f in dataclasses.fields(SymbolLabels)]
        if self.table is not None:
            held += [self.table.label_ids, self.table.order]
        if self.chunks is not None:
            held += [self.chunks.series, self.chunks.mint, self.chunks.maxt,
                     self.chunks.offsets]
        return sum(a.nbytes for a in held)


# --------------------------------------------------------------------------- writing


def _array(values: Any, dtype: type, what: str) -> np.ndarray:
    arr: np.ndarray = np.ascontiguousarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-d array")
    return arr


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_block_dir(path: Path) -> None:
    """Delete a block directory so that no half of it is ever read as a block: first
    rename it to an unfinished block's name (which opening a store deletes), then
    delete that."""
    doomed = path.with_name(path.name + ".deleting" + TMP_SUFFIX)
    try:
        os.rename(path, doomed)
        _fsync_dir(path.parent)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_block(
    parent: Path,
    *,
    keys_blob: np.ndarray,
    keys_offsets: np.ndarray,
    chunk_series: np.ndarray,
    chunk_mint: np.ndarray,
    chunk_maxt: np.ndarray,
    chunk_encoding: np.ndarray,
    chunk_blob: np.ndarray,
    chunk_offsets: np.ndarray,
    mint: int,
    maxt: int,
    level: int = 1,
    sources: Sequence[str] | None = None,
    segment_size: int = MAX_SEGMENT_SIZE,
    compact_index: bool = False,
) -> BlockMeta:
    """Write a new block under the existing directory ``parent`` and return its meta.

    Series ``i`` has the canonical key ``keys_blob[keys_offsets[i]:keys_offsets[i+1]]``
    (``name 0xFF value 0xFF`` per label, names sorted; series distinct, in any order).
    Chunk ``c`` belongs to series ``chunk_series[c]``, covers ``[chunk_mint[c],
    chunk_maxt[c]]``, has encoding byte ``chunk_encoding[c]`` and data
    ``chunk_blob[chunk_offsets[c]:chunk_offsets[c+1]]``, which starts with the
    big-endian uint16 sample count (as every Prometheus chunk encoding does). Chunks of
    a series come sorted by time and do not overlap; series without chunks are left out.
    Every chunk lies in ``[mint, maxt)``. ``sources`` defaults to the new block's own id.
    Chunk segments are cut at ``segment_size`` bytes (Prometheus's 512 MiB by default).
    ``compact_index`` writes the index in promstore's compact format
    (``storage.block_index``), for blocks Prometheus cannot read anyway (dense chunks);
    otherwise in Prometheus's format 2.

    The block is complete and fsynced when this returns; on any error nothing is left
    under its final name. ``ValueError`` for inputs that break these rules.
    """
    if not isinstance(mint, int | np.integer) or not isinstance(maxt, int | np.integer) \
            or mint > maxt:
        raise ValueError(f"block range [{mint}, {maxt}) is not a time range")
    if level < 1:
        raise ValueError(f"compaction level {level} must be at least 1")
    if sources is not None and not all(isinstance(s, str) and is_ulid(s) for s in sources):
        raise ValueError("sources must be ulids")
    keys_blob = _array(keys_blob, np.uint8, "keys_blob")
    keys_offsets = _array(keys_offsets, np.int64, "keys_offsets")
    series = _array(chunk_series, np.int64, "chunk_series")
    c_mint = _array(chunk_mint, np.int64, "chunk_mint")
    c_maxt = _array(chunk_maxt, np.int64, "chunk_maxt")
    encoding = _array(chunk_encoding, np.int64, "chunk_encoding")
    blob = _array(chunk_blob, np.uint8, "chunk_blob")
    offsets = _array(chunk_offsets, np.int64, "chunk_offsets")
    n_chunks = len(series)
    n_series = len(keys_offsets) - 1
    if not len(c_mint) == len(c_maxt) == len(encoding) == n_chunks == len(offsets) - 1:
        raise ValueError("chunk arrays disagree in length")
    sizes = np.diff(offsets)
    if n_chunks and (offsets[0] < 0 or offsets[-1] > len(blob) or np.any(sizes < 2)):
        raise ValueError("chunk_offsets must ascend inside chunk_blob, 2 bytes or more apart")
    if np.any((series < 0) | (series >= n_series)):
        raise ValueError("chunk_series names a series that does not exist")
    if np.any((encoding < 0) | (encoding > 0xFF)):
        raise ValueError("chunk encodings must be bytes")
    if np.any(c_mint > c_maxt) or np.any(c_mint < mint) or np.any(c_maxt >= maxt):
        raise ValueError(f"every chunk must lie in the block range [{mint}, {maxt})")

    used = np.bincount(series, minlength=n_series) > 0
    if not np.all(used):
        kept = np.flatnonzero(used)
        new_id = np.cumsum(used) - 1
        keys_blob = gather_ranges(keys_offsets, keys_blob, kept)
        keys_offsets = np.concatenate(([0], np.cumsum(np.diff(keys_offsets)[kept])))
        series = new_id[series]
    layout = SeriesLayout.from_keys(keys_blob, keys_offsets)
    ordinal = np.empty(layout.n_series, dtype=np.int64)
    ordinal[layout.order] = np.arange(layout.n_series)
    chunk_ordinal = ordinal[series]
    order = np.argsort(chunk_ordinal, kind="stable")
    same = chunk_ordinal[order][1:] == chunk_ordinal[order][:-1]
    if np.any(same & (c_mint[order][1:] <= c_maxt[order][:-1])):
        raise ValueError("chunks of a series must be sorted by time and must not overlap")

    num_samples = int(((blob[offsets[:-1]].astype(np.int64) << 8)
                       | blob[offsets[:-1] + 1]).sum()) if n_chunks else 0
    ulid = new_ulid()
    final = parent / ulid
    tmp = parent / (ulid + TMP_SUFFIX)
    meta = BlockMeta(ulid, int(mint), int(maxt), num_samples, layout.n_series, n_chunks,
                     int(level), tuple(sources) if sources is not None else (ulid,), final)
    tmp.mkdir()
    try:
        (tmp / "chunks").mkdir()
        refs = write_segments(tmp / "chunks", blob, offsets, encoding.astype(np.uint8), order,
                              segment_size)
        chunk_start = np.zeros(layout.n_series + 1, dtype=np.int64)
        np.cumsum(np.bincount(chunk_ordinal, minlength=layout.n_series),
                  out=chunk_start[1:])
        write_index(tmp / "index", layout,
                    ChunkMetas(chunk_start, c_mint[order], c_maxt[order], refs),
                    compact=compact_index)
        _write_file(tmp / tomb.FILENAME, tomb.encode(Tombstones.empty()))
        _fsync_dir(tmp / "chunks")
        _write_file(tmp / "meta.json", meta.to_json().encode())
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


# --------------------------------------------------------------------------- reading


class Block:
    """A block directory opened for reading (``Block.open``).

    Series are named by block-local ids: their ordinal in label order, 0 … n-1. Every
    read leaves out the samples the block's tombstones delete. Every method is
    synchronous, thread-safe and returns fresh arrays, except that the answers of
    ``selection`` (which ``select_series`` hands on for the block's whole range) are
    kept and shared, not to be written into; ``close`` must not race with them. Malformed data
    raises ``CorruptionError`` naming file and offset.
    """

    def __init__(self, meta: BlockMeta, index: IndexFile, segments: ChunkSegments,
                 tombstones: Tombstones) -> None:
        self.meta = meta
        self._index = index
        self._segments = segments
        self.tombstones = tombstones  # keyed by ordinal
        self._selections: SelectionCache[Selection] = SelectionCache()

    @classmethod
    def open(cls, path: Path) -> Block:
        """Map the block at ``path``: checks meta.json, tombstones, the index's header,
        tables and checksums and every segment header, without reading series or
        chunks."""
        path = Path(path)
        meta = read_meta(path)
        stones = tomb.read_file(path)
        try:
            index = IndexFile(path / "index")
        except FileNotFoundError:
            raise CorruptionError(f"{path}: no index file") from None
        try:
            if index.n_series != meta.num_series:
                raise CorruptionError(f"{path}: index holds {index.n_series} series, "
                                      f"meta.json says {meta.num_series}")
            segments = ChunkSegments(path / "chunks")
        except BaseException:
            index.close()
            raise
        return cls(meta, index, segments, _by_ordinal(index, stones))

    # -- deletion -------------------------------------------------------------------

    def delete(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> Block:
        """Delete the samples in ``[mint, maxt]`` of the series matching ``matchers``:
        each such series with a chunk there gets that interval, clamped to its own
        time span, as a tombstone (as Prometheus does). Returns the block with its new
        tombstones (itself when nothing changed)."""
        ids = select(self._index, matchers) if mint <= maxt else np.empty(0, np.int64)
        d = self._index.decode(ids, mint, maxt, labels=False)
        if len(d.chunk_series) == 0:
            return self
        hit = np.unique(d.chunk_series)  # positions in ids, ascending
        span = self._index.decode(ids[hit], labels=False)  # every chunk, for the series' time span
        first = np.searchsorted(span.chunk_series, np.arange(len(hit)))
        last = np.searchsorted(span.chunk_series, np.arange(len(hit)), side="right") - 1
        new = Tombstones.of(ids[hit], np.maximum(mint, span.chunk_mint[first]),
                            np.minimum(maxt, span.chunk_maxt[last]))
        return self.with_tombstones(self.tombstones.add(new))

    def with_tombstones(self, stones: Tombstones) -> Block:
        """Make ``stones`` (keyed by ordinal) the block's tombstones on disk: the
        tombstones file, then ``meta.json``'s count, each replaced atomically. Returns
        the new value; this one keeps reading as before."""
        refs = _index_refs(self._index)
        tomb.write_file(self.meta.path, Tombstones(refs[stones.refs], stones.mint,
                                                   stones.maxt))
        meta = dataclasses.replace(self.meta, num_tombstones=len(stones))
        tmp = self.meta.path / "meta.json.tmp"
        _write_file(tmp, meta.to_json().encode())
        os.replace(tmp, self.meta.path / "meta.json")
        _fsync_dir(self.meta.path)
        return Block(meta, self._index, self._segments, stones)

    @property
    def n_series(self) -> int:
        return self._index.n_series

    def select_series(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> np.ndarray:
        """Sorted ids of the series matching every matcher (all series with none) that
        have a sample in ``[mint, maxt]`` (inclusive) that no tombstone deletes."""
        if mint > maxt or maxt < self.meta.min_time or mint >= self.meta.max_time:
            return np.empty(0, dtype=np.int64)
        ids = self.selection(matchers).ids
        if mint <= self.meta.min_time and maxt >= self.meta.max_time - 1:
            return ids
        decoded = self._index.decode(ids, mint, maxt, labels=False)
        return self._undeleted(ids[np.unique(decoded.chunk_series)], mint, maxt)

    def selection(self, matchers: Sequence[Matcher], key: MatchersKey | None = None
                  ) -> Selection:
        """The series matching every matcher that have a sample in the block that no
        tombstone deletes, with the label sets of a few (see ``Selection``). Recent
        answers are kept: dashboards ask for the same selectors on every refresh.
        ``key`` is ``matchers_key(matchers)`` when the caller has it at hand."""
        if key is None:
            key = matchers_key(matchers)
        found = self._selections.get(key)
        if found is None:
            # Every series has a chunk, and every chunk is inside the block.
            ids = self._undeleted(select(self._index, matchers), self.meta.min_time,
                                  self.meta.max_time - 1)
            if len(ids) <= FEW_SERIES:
                decoded = self._index.decode(ids)
                labels = self._index.symbol_labels(decoded).detached()
                found = Selection(ids, labels, symbol_label_table(labels), FewChunks.of(decoded))
            else:
                found = Selection(ids, None, None, None)
            self._selections.put(key, found, found.nbytes)
        return found

    def _undeleted(self, ids: np.ndarray, mint: int, maxt: int) -> np.ndarray:
        """The series of ``ids`` (each with a chunk overlapping ``[mint, maxt]``) with a
        sample there that no tombstone deletes."""
        touched = np.flatnonzero(self.tombstones.overlap(ids, mint, maxt)) \
            if len(self.tombstones) else ()
        if len(touched) == 0:
            return ids
        left = self.chunks(ids[touched], mint, maxt)
        ts, _, starts = chunkenc.decode_many(left.encoding, left.blob, left.offsets)
        inside = (ts >= mint) & (ts <= maxt)
        owner = np.repeat(left.series, np.diff(starts))[inside]
        keep = np.ones(len(ids), bool)
        keep[touched] = False
        keep[touched[np.unique(owner)]] = True
        return ids[keep]

    def _labels(self, ids: np.ndarray) -> DecodedSeries:
        # An empty time range: labels only, no chunk metas.
        return self._index.decode(np.asarray(ids, dtype=np.int64), 0, -1)

    def series_keys(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical keys (``name 0xFF value 0xFF`` …) of ``ids`` as blob and offsets."""
        return self._index.keys(self._labels(ids))

    def symbol_labels(self, ids: np.ndarray) -> SymbolLabels:
        """Label sets of ``ids`` in the block's own symbols
        (``SeriesRegistry.resolve_labels`` interns them)."""
        return self._index.symbol_labels(self._labels(ids))

    def series_labels(self, ids: np.ndarray) -> list[dict[str, str]]:
        """Label sets of ``ids``, in that order, each in label-name order."""
        d = self._labels(ids)
        syms, inverse = np.unique(np.concatenate((d.lab_name, d.lab_value)),
                                  return_inverse=True)
        text = self._index.symbols(syms)
        n_labels = len(d.lab_name)
        names = [text[i] for i in inverse[:n_labels].tolist()]
        values = [text[i] for i in inverse[n_labels:].tolist()]
        bounds = d.lab_start.tolist()
        return [dict(zip(names[a:b], values[a:b])) for a, b in itertools.pairwise(bounds)]

    def label_names(self, ids: np.ndarray | None = None) -> list[str]:
        """Sorted distinct label names of ``ids`` (of every series when None)."""
        if ids is None:
            return self._index.symbols(np.unique(self._index.pair_names()))
        return self._index.symbols(np.unique(self._labels(ids).lab_name))

    def label_values(self, name: str, ids: np.ndarray | None = None) -> list[str]:
        """Sorted distinct values of label ``name`` in ``ids`` (every series when None)."""
        if ids is None:
            pairs = self._index.pairs_with_name(name)
            return self._index.symbols(self._index.pair_values()[pairs])
        sym = self._index.symbol_id(name)
        if sym < 0:
            return []
        d = self._labels(ids)
        return self._index.symbols(np.unique(d.lab_value[d.lab_name == sym]))

    def chunks(self, ids: np.ndarray, mint: int, maxt: int) -> ChunkSet:
        """Chunks of the series ``ids`` that overlap ``[mint, maxt]`` (inclusive), bytes
        copied out of the segments with their checksums verified, without the samples
        the tombstones delete (see ``tombstones.trim_chunks``)."""
        ids = np.asarray(ids, dtype=np.int64)
        d = self._index.decode(ids, mint, maxt, labels=False)
        encoding, blob, offsets = self._segments.gather(d.chunk_ref)
        stones = self.tombstones
        if len(stones):
            t = tomb.trim_chunks(stones, ids[d.chunk_series], d.chunk_mint, d.chunk_maxt,
                                 encoding, blob, offsets)
            return ChunkSet(d.chunk_series[t.source], t.mint, t.maxt, t.encoding, t.blob,
                            t.offsets)
        return ChunkSet(d.chunk_series, d.chunk_mint, d.chunk_maxt, encoding, blob, offsets)

    def few_samples(self, selection: Selection, mint: int, maxt: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The samples in ``[mint, maxt]`` of a selection of a few series (one with
        ``chunks``), a run per chunk: ``(position in the selection of each run's series,
        run starts, timestamps, values)``, read in one kernel call. None when the block
        has tombstones or the chunks are not all XOR chunks in one segment: ``chunks``
        then reads them."""
        few = selection.chunks
        if few is None or few.segment < 0 or len(self.tombstones):
            return None
        return self._segments.read_xor_range(few.segment, few.series, few.mint, few.maxt,
                                             few.offsets, mint, maxt)

    def close(self) -> None:
        """Unmap the files; arrays already returned stay valid."""
        self._selections = SelectionCache()
        self._index.close()
        self._segments.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _index_refs(index: IndexFile) -> np.ndarray:
    """Index reference (entry offset / 16) of each series ordinal: the names Prometheus
    gives series in a block's tombstones file."""
    return index._series_refs  # the index keeps them in ordinal order


def _by_ordinal(index: IndexFile, stones: Tombstones) -> Tombstones:
    """Tombstones read from the file (keyed by index reference) keyed by ordinal;
    intervals of references that name no series are dropped (they delete nothing)."""
    known = _index_refs(index)
    if len(known) == 0 or len(stones) == 0:
        return Tombstones.empty()
    ords = np.minimum(np.searchsorted(known, stones.refs), len(known) - 1)
    real = known[ords] == stones.refs
    return Tombstones.of(ords[real], stones.mint[real], stones.maxt[real])
