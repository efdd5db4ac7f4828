"""The ``index`` file of a block: format version 2 as Prometheus 2.x writes it, or the
compact format of dense blocks.

Format 2 sections, in file order: header (magic, version), symbol table (every label
name and value, sorted, plus the empty string), series (16-byte aligned entries holding
symbol refs and chunk metas; a series is named by its offset / 16), label indices (one
per label name, kept for older readers), postings (per label pair, the sorted series
refs that carry it, led by the list of all series), label offset table, postings offset
table, and the table of contents.

The compact format (version ``INDEX_FORMAT_COMPACT``) is what compaction writes beside
dense chunks, which Prometheus cannot read anyway. It keeps the same sections and
look-ups (postings stay lists of big-endian uint32, binary-searched in place) but drops
what only costs bytes in a long block of many small series: series entries are not
padded (a series is named by its offset), the first chunk's mint is stored relative to
a time base in the header, the label indices and label offset table (which no reader of
ours uses) are left out, and the postings offset table names pairs by symbol ids
instead of repeating their strings. Byte layouts in ``docs/format.md`` ("Blocks").

``SeriesLayout.from_keys`` and ``write_index`` build the file from canonical series
keys; ``IndexFile`` maps one and answers look-ups without loading it. Series are
addressed by *ordinal*: their position in label order (0 … n-1), which is also the
order of their offsets in the file.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _block_kernels as k
from .errors import CorruptionError
from .labels import batch_from_keys
from .postings import MatchersKey, contained
from .series import SymbolLabels, symbol_strings

__all__ = [
    "INDEX_FORMAT_COMPACT",
    "INDEX_FORMAT_V2",
    "MAGIC_INDEX",
    "ChunkMetas",
    "DecodedSeries",
    "IndexFile",
    "SeriesLayout",
    "section_sizes",
    "write_index",
]

MAGIC_INDEX = 0xBAAAD700
INDEX_FORMAT_V2 = 2
INDEX_FORMAT_COMPACT = 0x81
"""Version byte of the compact index. Prometheus knows versions 1 and 2 and refuses any
other, so a dense block fails loudly there; the high bit marks it as promstore's own,
like the dense chunk encoding byte."""
HEADER_SIZE = 5
COMPACT_HEADER_SIZE = HEADER_SIZE + 12  # and the time base (BE int64) and its CRC32-C
TOC_SIZE = 6 * 8 + 4
SERIES_ALIGN = 16
_MAX_REF = 1 << 32  # postings hold series refs as uint32
# A binary search in a postings list's bytes costs about this many list entries read
# in order: looking refs up is cheaper than reading the lists below that ratio.
_PROBE_COST = 16
_RELEASE_FROM = 100  # series decoded at once from which their entries' pages are dropped
_KEPT_SYMBOL_IDS = 4096  # symbol look-ups an index keeps the answers of

_ERRORS = {
    k.TRUNCATED: "runs past the end of its section",
    k.BAD_VARINT: "malformed varint",
    k.BAD_CHECKSUM: "checksum mismatch",
    k.BAD_SYMBOL: "symbol reference out of range",
    k.BAD_LENGTH: "length or count does not match the bytes",
    k.UNSORTED: "entries out of order",
    k.BAD_ENTRY: "offset table entry with an unexpected key count",
}


def _be32(x: int) -> bytes:
    return int(x).to_bytes(4, "big")


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class SeriesLayout:
    """Series in index order with their labels as symbol ids.

    ``order[i]`` is the caller's index of the series with ordinal ``i``; its labels are
    ``lab_name/lab_value[lab_start[i]:lab_start[i+1]]``. Symbol ``s`` is
    ``symbols_blob[symbols_offsets[s]:symbols_offsets[s+1]]``; symbols are sorted, so
    comparing ids compares strings.
    """

    symbols_blob: np.ndarray
    symbols_offsets: np.ndarray
    order: np.ndarray
    lab_start: np.ndarray
    lab_name: np.ndarray
    lab_value: np.ndarray

    @property
    def n_series(self) -> int:
        return len(self.order)

    @staticmethod
    def from_keys(keys_blob: np.ndarray, keys_offsets: np.ndarray) -> SeriesLayout:
        """Intern and sort the symbols of canonical keys (``name 0xFF value 0xFF`` …,
        labels sorted by name) and sort the series in Prometheus label order.

        ``ValueError`` for malformed keys, empty names or values, unsorted or repeated
        label names within a key, and repeated series.
        """
        offs = np.ascontiguousarray(keys_offsets, dtype=np.int64)
        blob = np.ascontiguousarray(keys_blob, dtype=np.uint8)
        if offs.ndim != 1 or len(offs) < 1 or np.any(np.diff(offs) < 0) \
                or offs[0] < 0 or offs[-1] > len(blob):
            raise ValueError("keys_offsets must be non-decreasing and inside keys_blob")
        blob = blob[offs[0]:offs[-1]]
        offs = offs - offs[0]
        n = len(offs) - 1
        key_len = np.diff(offs)
        if np.any(key_len == 0):
            raise ValueError(f"series {int(np.argmax(key_len == 0))} has no labels")
        if n and np.any(blob[offs[1:] - 1] != 0xFF):
            raise ValueError("every key must end with the 0xFF separator")
        seps_before = np.searchsorted(np.flatnonzero(blob == 0xFF), offs)
        if np.any(np.diff(seps_before) % 2):
            raise ValueError("a key holds a name without a value")
        b = batch_from_keys(blob, offs)
        n_labels = len(b.name_off)
        if np.any(b.name_len == 0) or np.any(b.value_len == 0):
            raise ValueError("label names and values must not be empty")
        # Every string once, plus the empty string Prometheus always lists.
        starts = np.concatenate((b.name_off, b.value_off, [0])).astype(np.int64)
        lens = np.concatenate((b.name_len, b.value_len, [0])).astype(np.int64)
        ids, first = k.intern_strings(blob, starts, lens)
        sorted_ids = k.lex_argsort(blob, starts[first], starts[first] + lens[first])
        rank = np.empty(len(first), dtype=np.int64)
        rank[sorted_ids] = np.arange(len(first))
        sym = rank[ids]
        name, value = sym[:n_labels], sym[n_labels:2 * n_labels]
        label_start = b.label_start
        later = np.ones(n_labels, dtype=bool)
        later[label_start[:-1]] = False
        if np.any(later[1:] & (name[1:] <= name[:-1])):
            raise ValueError("label names within a key must be sorted and distinct")
        seq = np.empty(2 * n_labels, dtype=np.int64)
        seq[0::2], seq[1::2] = name, value
        seq_start, seq_end = 2 * label_start[:-1], 2 * label_start[1:]
        order = k.lex_argsort(seq, seq_start, seq_end)
        repeat = k.first_repeat(seq, seq_start, seq_end, order)
        if repeat >= 0:
            raise ValueError(f"series {int(order[repeat])} repeats series "
                             f"{int(order[repeat - 1])}")
        counts = np.diff(label_start)[order]
        lab_start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=lab_start[1:])
        within = np.arange(n_labels) - np.repeat(lab_start[:-1], counts)
        moved = np.repeat(label_start[:-1][order], counts) + within
        sym_blob, sym_offsets = k.gather_strings(blob, starts[first], lens[first], sorted_ids)
        return SeriesLayout(sym_blob, sym_offsets, order, lab_start, name[moved].copy(),
                            value[moved].copy())


@dataclass(frozen=True)
class ChunkMetas:
    """Chunk metas grouped by series ordinal: series ``i`` owns entries
    ``start[i]:start[i+1]`` (sorted by time), each ``[mint, maxt]`` and a chunk ref."""

    start: np.ndarray
    mint: np.ndarray
    maxt: np.ndarray
    ref: np.ndarray


class _Out:
    """An index file being written, tracking the position for the table of contents."""

    def __init__(self, f) -> None:  # type: ignore[no-untyped-def]
        self.f = f
        self.pos = 0

    def write(self, data: bytes | np.ndarray) -> None:
        view = data.data if isinstance(data, np.ndarray) else data
        self.f.write(view)
        self.pos += len(data)

    def section(self, body: np.ndarray) -> None:
        """BE32 length, body, BE32 CRC32-C of the body."""
        self.write(_be32(len(body)))
        self.write(body)
        self.write(_be32(k.crc32c(body, 0, len(body))))


def write_index(path: Path, layout: SeriesLayout, chunks: ChunkMetas, *,
                compact: bool = False) -> None:
    """Write and fsync the index file for ``layout`` whose series ``i`` owns the chunk
    metas ``chunks.start[i]:chunks.start[i+1]``: format 2, or with ``compact`` the
    compact format (format 2 still when unpadded series would not fit uint32 refs)."""
    sym_blob, sym_off = layout.symbols_blob, layout.symbols_offsets
    sym_start, sym_len = sym_off[:-1], np.diff(sym_off)
    n = layout.n_series
    pair_key = (layout.lab_name << 32) | layout.lab_value
    pairs, pair_of_label = np.unique(pair_key, return_inverse=True)
    pair_name, pair_value = pairs >> 32, pairs & 0xFFFFFFFF
    names, name_first = np.unique(pair_name, return_index=True)
    seq = np.empty(2 * len(layout.lab_name), dtype=np.int64)
    seq[0::2], seq[1::2] = layout.lab_name, layout.lab_value
    symbols = np.concatenate((np.frombuffer(_be32(len(sym_start)), np.uint8),
                              k.encode_strings(sym_blob, sym_start, sym_len)))
    time_base = int(chunks.mint.min()) if compact and len(chunks.mint) else 0
    header = _be32(MAGIC_INDEX) + bytes([INDEX_FORMAT_V2])
    if compact:
        base = np.frombuffer(time_base.to_bytes(8, "big", signed=True), np.uint8)
        header = (_be32(MAGIC_INDEX) + bytes([INDEX_FORMAT_COMPACT]) + base.tobytes()
                  + _be32(k.crc32c(base, 0, 8)))
    series_at = len(header) + 8 + len(symbols)
    align = 1 if compact else SERIES_ALIGN
    series, entry = k.encode_series(series_at, layout.lab_start, seq, chunks.start,
                                    chunks.mint, chunks.maxt, chunks.ref, align, time_base)
    if compact and series_at + len(series) >= _MAX_REF:
        write_index(path, layout, chunks)
        return
    series_ref = entry // align
    with open(path, "wb") as f:
        out = _Out(f)
        out.write(header)
        toc_symbols = out.pos
        out.section(symbols)
        toc_series = out.pos
        out.write(series)

        toc_label_indices = 0
        if not compact:
            toc_label_indices = out.pos
            index_start = np.append(name_first, len(pairs))
            label_indices, label_index_pos = k.encode_u32_lists(out.pos, index_start,
                                                                pair_value, True)
            out.write(label_indices)

        toc_postings = out.pos
        owner = np.repeat(series_ref, np.diff(layout.lab_start))
        by_pair = owner[np.argsort(pair_of_label, kind="stable")]
        list_start = np.zeros(len(pairs) + 2, dtype=np.int64)
        list_start[1] = n
        np.cumsum(np.bincount(pair_of_label, minlength=len(pairs)), out=list_start[2:])
        list_start[2:] += n
        postings, postings_pos = k.encode_u32_lists(
            out.pos, list_start, np.concatenate((series_ref, by_pair)), False)
        out.write(postings)

        toc_label_table = 0
        if not compact:
            toc_label_table = out.pos
            empty = np.zeros(0, dtype=np.int64)
            entries = k.encode_offset_entries(sym_blob, sym_start[names], sym_len[names],
                                              empty, empty, label_index_pos, 1)
            out.section(np.concatenate((np.frombuffer(_be32(len(names)), np.uint8),
                                        entries)))

        toc_postings_table = out.pos
        # The list of all series is keyed by the empty name and value (symbol 0 is "").
        keyed_name = np.concatenate(([0], pair_name))
        keyed_value = np.concatenate(([0], pair_value))
        if compact:
            entries = k.encode_pair_entries(keyed_name, keyed_value, postings_pos)
        else:
            entries = k.encode_offset_entries(sym_blob, sym_start[keyed_name],
                                              sym_len[keyed_name], sym_start[keyed_value],
                                              sym_len[keyed_value], postings_pos, 2)
        out.section(np.concatenate((np.frombuffer(_be32(len(pairs) + 1), np.uint8), entries)))

        toc = b"".join(int(x).to_bytes(8, "big") for x in (
            toc_symbols, toc_series, toc_label_indices, toc_label_table, toc_postings,
            toc_postings_table))
        out.write(toc + _be32(k.crc32c(np.frombuffer(toc, np.uint8), 0, len(toc))))
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class DecodedSeries:
    """Labels and chunk metas of some series (see ``IndexFile.decode``)."""

    lab_start: np.ndarray  # [len(ids) + 1]
    lab_name: np.ndarray  # symbol ids
    lab_value: np.ndarray
    chunk_series: np.ndarray  # position in ids
    chunk_mint: np.ndarray
    chunk_maxt: np.ndarray
    chunk_ref: np.ndarray


class IndexFile:
    """A memory-mapped index file.

    Opening checks the header, table of contents, symbol table and postings offset
    table (checksums and structure) and reads the list of all series; everything else
    is read on demand, with each entry's checksum verified when it is read. Any
    malformed byte raises ``CorruptionError`` naming the file and offset.

    Also the postings view that ``storage.postings.select`` runs on: pairs are the
    entries of the postings offset table (label name and value, ascending), numbered
    from 0, and series refs are ordinals. Thread-safe for reads.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._symbol_ids: dict[str, int] = {}
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < HEADER_SIZE + TOC_SIZE:
                raise CorruptionError(f"{path}: {size} bytes, too short for an index")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._buf = np.frombuffer(self._mm, dtype=np.uint8)
            self._open()
        except BaseException:
            self.close()
            raise

    def _fail(self, offset: int, what: str) -> CorruptionError:
        return CorruptionError(f"{self.path}: offset {offset}: {what}")

    def _check(self, status: int, offset: int, what: str) -> None:
        if status != k.OK:
            raise self._fail(int(offset), f"{what}: {_ERRORS.get(status, 'malformed')}")

    def _u32(self, offset: int) -> int:
        return int.from_bytes(self._buf[offset:offset + 4].tobytes(), "big")

    def _section(self, offset: int, what: str) -> tuple[int, int]:
        """Start and end of the body of the length-prefixed, checksummed section at
        ``offset``."""
        if not self._header_size <= offset <= self._limit - 8:
            raise self._fail(offset, f"{what} section starts outside the file")
        length = self._u32(offset)
        start, end = offset + 4, offset + 4 + length
        if end + 4 > self._limit:
            raise self._fail(offset, f"{what} section of {length} bytes runs past the file")
        if k.crc32c(self._buf, start, end) != self._u32(end):
            raise self._fail(offset, f"{what} checksum mismatch")
        if length < 4:
            raise self._fail(offset, f"{what} section too short for its count")
        return start, end

    def _open(self) -> None:
        buf = self._buf
        magic = self._u32(0)
        if magic != MAGIC_INDEX:
            raise self._fail(0, f"bad magic {magic:#010x}")
        self.version = int(buf[4])
        if self.version not in (INDEX_FORMAT_V2, INDEX_FORMAT_COMPACT):
            raise self._fail(4, f"unsupported index version {self.version}")
        compact = self.version == INDEX_FORMAT_COMPACT
        self._header_size = COMPACT_HEADER_SIZE if compact else HEADER_SIZE
        if len(buf) < self._header_size + TOC_SIZE:
            raise self._fail(0, f"{len(buf)} bytes, too short for an index")
        self._time_base = 0
        if compact:
            base_end = HEADER_SIZE + 8
            if k.crc32c(buf, HEADER_SIZE, base_end) != self._u32(base_end):
                raise self._fail(HEADER_SIZE, "time base checksum mismatch")
            self._time_base = int.from_bytes(buf[HEADER_SIZE:base_end].tobytes(), "big",
                                             signed=True)
        self._limit = len(buf) - TOC_SIZE
        toc_crc = k.crc32c(buf, self._limit, len(buf) - 4)
        if toc_crc != self._u32(len(buf) - 4):
            raise self._fail(self._limit, "table of contents checksum mismatch")
        toc = [int.from_bytes(buf[self._limit + 8 * i:self._limit + 8 * i + 8].tobytes(), "big")
               for i in range(6)]
        symbols_at, postings_table_at = toc[0], toc[5]

        start, end = self._section(symbols_at, "symbol table")
        count = self._u32(start)
        if count > end - start - 4:
            raise self._fail(start, f"symbol count {count} does not fit the table")
        self._sym_off, self._sym_len, status, pos = k.parse_symbols(buf, start + 4, end, count)
        self._check(status, pos, "symbol table")

        start, end = self._section(postings_table_at, "postings offset table")
        count = self._u32(start)
        if not 1 <= count <= (end - start - 4) // (3 if compact else 4):
            raise self._fail(start, f"postings offset table count {count} does not fit")
        if compact:
            names, values, offsets = self._pair_entries(start + 4, end, count)
        else:
            names, values, offsets = self._offset_entries(start + 4, end, count)
        self._pair_key = (names << 32) | values
        if np.any(np.diff(self._pair_key) <= 0):
            raise self._fail(start, "postings offset table entries out of order")
        self._pair_offset = offsets
        self._checksummed = np.zeros(len(self._pair_offset), dtype=bool)  # postings lists

        refs, _, status, pos = k.read_postings(buf, self._limit, self._all_series_at)
        self._check(status, pos, "postings of all series")
        self._series_refs = refs
        self._entry_off = refs * (1 if compact else SERIES_ALIGN)

    def _offset_entries(self, start: int, end: int, count: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs (name and value symbol ids) and postings offsets of a format 2 postings
        offset table, whose entries hold the strings; remembers the list of all series."""
        buf = self._buf
        name_off, name_len, value_off, value_len, offsets, status, pos = \
            k.parse_offset_table(buf, start, end, count, 2)
        self._check(status, pos, "postings offset table")
        if name_len[0] or value_len[0]:
            raise self._fail(start, "postings offset table does not start with all series")
        names = k.find_symbols(buf, self._sym_off, self._sym_len, buf, name_off[1:],
                               name_len[1:])
        values = k.find_symbols(buf, self._sym_off, self._sym_len, buf, value_off[1:],
                                value_len[1:])
        unknown = np.flatnonzero((names < 0) | (values < 0))
        if len(unknown):
            raise self._fail(int(name_off[unknown[0] + 1]),
                             "postings offset table names a string missing from the symbols")
        self._all_series_at = offsets[:1]
        return names, values, offsets[1:]

    def _pair_entries(self, start: int, end: int, count: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The same for a compact postings offset table, whose entries hold symbol ids."""
        n_symbols = len(self._sym_off)
        names, values, offsets, status, pos = k.parse_pair_entries(self._buf, start, end,
                                                                   count, n_symbols)
        self._check(status, pos, "postings offset table")
        if names[0] or values[0] or n_symbols == 0 or self._sym_len[0]:
            raise self._fail(start, "postings offset table does not start with all series")
        self._all_series_at = offsets[:1]
        return names[1:], values[1:], offsets[1:]

    # -- the postings view ------------------------------------------------------------

    @property
    def view(self) -> IndexFile:
        """The pair and symbol look-ups ``storage.postings.select`` expects."""
        return self

    @property
    def n_series(self) -> int:
        return len(self._series_refs)

    def symbol_id(self, text: str) -> int:
        """Symbol id of ``text``, or -1 when no series uses it. Answers are kept (the
        file never changes): dashboards ask for the same few label values again and
        again, and a look-up in the table costs more than a query's other steps."""
        found = self._symbol_ids.get(text)
        if found is None:
            raw = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
            found = int(k.find_symbols(self._buf, self._sym_off, self._sym_len, raw,
                                       np.zeros(1, np.int64),
                                       np.full(1, len(raw), np.int64))[0])
            if len(self._symbol_ids) >= _KEPT_SYMBOL_IDS:
                self._symbol_ids.clear()  # what any queries may ask stays bounded
            self._symbol_ids[text] = found
        return found

    def symbols(self, ids: np.ndarray) -> list[str]:
        """The strings of symbol ids ``ids``."""
        try:
            return symbol_strings(self._buf, self._sym_off, self._sym_len, ids)
        except UnicodeDecodeError:
            raise CorruptionError(f"{self.path}: a symbol is not valid UTF-8") from None

    def pair_id(self, name: str, value: str) -> int:
        """Pair id of label ``name=value``, or -1 when no series carries it."""
        ns, vs = self.symbol_id(name), self.symbol_id(value)
        if ns < 0 or vs < 0:
            return -1
        key = (ns << 32) | vs
        p = int(np.searchsorted(self._pair_key, key))
        return p if p < len(self._pair_key) and self._pair_key[p] == key else -1

    def pairs_with_name(self, name: str) -> np.ndarray:
        """Pair ids of label ``name`` (ascending, so by value)."""
        ns = self.symbol_id(name)
        if ns < 0:
            return np.empty(0, dtype=np.int64)
        lo, hi = np.searchsorted(self._pair_key, [ns << 32, (ns + 1) << 32])
        return np.arange(lo, hi, dtype=np.int64)

    def pair_names(self) -> np.ndarray:
        return self._pair_key >> 32

    def pair_values(self) -> np.ndarray:
        return self._pair_key & 0xFFFFFFFF

    def refs_for_pairs(self, pairs: np.ndarray) -> np.ndarray:
        """Sorted unique ordinals of the series carrying any of the pairs."""
        pairs = np.asarray(pairs, dtype=np.int64)
        refs, _, status, pos = k.read_postings(self._buf, self._limit, self._pair_offset[pairs])
        self._check(status, pos, "postings")
        ords = np.searchsorted(self._series_refs, refs)
        known = ords < len(self._series_refs)
        if not np.all(known) or np.any(self._series_refs[ords] != refs):
            raise CorruptionError(f"{self.path}: postings name a series that does not exist")
        return np.unique(ords) if len(pairs) > 1 else ords

    def all_refs(self) -> np.ndarray:
        return np.arange(self.n_series, dtype=np.int64)

    def postings_size(self, pairs: np.ndarray) -> int:
        return int(self._postings_counts(pairs).sum())

    def carrying(self, refs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """Which of the sorted ordinals ``refs`` carry any of the pairs. A few series
        are looked up in the lists' bytes (a binary search each), so that a selective
        matcher does not cost decoding the list of every series of a job; each list's
        checksum is still verified once."""
        pairs = np.asarray(pairs, dtype=np.int64)
        counts = self._postings_counts(pairs)
        if len(refs) * len(pairs) * _PROBE_COST > counts.sum():
            return contained(refs, self.refs_for_pairs(pairs))
        offsets = self._pair_offset[pairs]
        unchecked = ~self._checksummed[pairs]
        if unchecked.any():
            status, pos = k.postings_checksums(self._buf, offsets[unchecked], counts[unchecked])
            self._check(status, pos, "postings")
            self._checksummed[pairs] = True
        return k.postings_contain(self._buf, offsets, counts, self._series_refs[refs])

    def remembered(self, key: MatchersKey) -> np.ndarray | None:
        return None  # a block keeps its answers itself (``Block.selection``)

    def remember(self, key: MatchersKey, refs: np.ndarray) -> None:
        pass

    def _postings_counts(self, pairs: np.ndarray) -> np.ndarray:
        counts, status, pos = k.postings_counts(self._buf, self._limit,
                                                self._pair_offset[np.asarray(pairs, np.int64)])
        self._check(status, pos, "postings")
        return counts

    # -- series ---------------------------------------------------------------------

    def decode(self, ids: np.ndarray, mint: int = -(1 << 63), maxt: int = (1 << 63) - 1,
               labels: bool = True) -> DecodedSeries:
        """Labels of the series ``ids`` (ordinals; none unless ``labels``) and their
        chunk metas overlapping ``[mint, maxt]`` (none when ``mint > maxt``)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.n_series):
            raise ValueError(f"series ids must be in [0, {self.n_series})")
        *arrays, status, pos = k.decode_series(self._buf, self._limit, self._entry_off, ids,
                                               len(self._sym_off), mint, maxt,
                                               self._time_base, labels)
        self._check(status, pos, "series")
        if len(ids) > _RELEASE_FROM:
            # Decoded into arrays: a query over a large fleet reads the entries of every
            # series again for each slice, so their pages need not stay mapped.
            after = int(ids.max()) + 1
            end = int(self._entry_off[after]) if after < self.n_series else self._limit
            drop_pages(self._mm, int(self._entry_off[ids.min()]), end)
        return DecodedSeries(*arrays)

    def symbol_labels(self, decoded: DecodedSeries) -> SymbolLabels:
        """Decoded series' label sets in this file's symbols, for interning by symbol."""
        return SymbolLabels(self._buf, self._sym_off, self._sym_len, decoded.lab_start,
                            decoded.lab_name, decoded.lab_value)

    def keys(self, decoded: DecodedSeries) -> tuple[np.ndarray, np.ndarray]:
        """Canonical keys (``name 0xFF value 0xFF`` …) of decoded series."""
        return k.keys_from_symbols(self._buf, self._sym_off, self._sym_len,
                                   decoded.lab_start, decoded.lab_name, decoded.lab_value)

    def close(self) -> None:
        """Unmap the file. Arrays handed out are copies and stay valid."""
        self.__dict__.pop("_buf", None)
        _unmap(self._mm)

    def __enter__(self) -> IndexFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SECTIONS = ("symbols", "series", "label_indices", "label_offset_table", "postings",
             "postings_offset_table")


def section_sizes(path: Path) -> dict[str, int]:
    """Bytes of each section of the index file at ``path`` (header and table of
    contents included), in file order: where a block's index bytes go.
    ``CorruptionError`` when the table of contents is unreadable."""
    with IndexFile(path) as index:
        buf, limit = index._buf, index._limit
        starts = [int.from_bytes(buf[limit + 8 * i:limit + 8 * i + 8].tobytes(), "big")
                  for i in range(len(_SECTIONS))]
        # A section the file leaves out (the compact format's label indices) is at 0.
        bounds = sorted((at, name) for at, name in zip(starts, _SECTIONS) if at)
        bounds.append((limit, "toc"))
        sizes = dict.fromkeys(_SECTIONS, 0) | {"header": bounds[0][0]}
        sizes |= {name: end - start for (start, name), (end, _) in itertools.pairwise(bounds)}
        sizes["toc"] = len(buf) - limit
        sizes = {name: sizes[name] for name in ("header", *_SECTIONS, "toc")}
    return sizes


def drop_pages(mm: mmap.mmap, start: int, end: int) -> None:
    """Drop the pages of ``mm[start:end]`` from this process's mapping once their bytes
    were copied out: the page cache keeps them for the next read, and the process's
    resident memory shows what queries hold rather than every block page they have
    ever read."""
    start -= start % mmap.PAGESIZE
    with contextlib.suppress(OSError, ValueError):
        mm.madvise(mmap.MADV_DONTNEED, start, min(end, len(mm)) - start)


def _unmap(mm: mmap.mmap) -> None:
    """Close ``mm``; while a view of it is still alive (an exception's traceback can
    hold one) the mapping is left to be released with the last view."""
    with contextlib.suppress(BufferError):
        mm.close()
