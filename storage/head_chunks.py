"""HeadChunks: the head's in-order samples as XOR chunks, one open chunk per series.

Each series appends to an *open* chunk kept encoded in a slot of the open arena (slots
come in sizes of 64 B to 8 KiB and a chunk moves to a bigger slot as it grows, so a
series costs about its chunk's size). When Prometheus would cut a head chunk (at a
``chunk_range`` boundary, at the end predicted for ~120 samples, or at 240 samples),
the open chunk is *sealed*: its bytes are copied to an append-only page of sealed
chunks and a row is added to the sealed table (series, min and max time, location,
length, previous chunk of the same series). Chunks never cross a ``chunk_range``
boundary, so cutting blocks of that range never splits one.

Sealed and open chunks are bit-identical to the chunks a Prometheus 2.x head builds
from the same samples, so reads, blocks and remote read can pass them on unchanged.

Not thread-safe: the head's lock guards every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _head_chunk_kernels as k
from ._read_kernels import decode_xor_range
from ._xor_kernels import ST_NUM, ST_T, STATE_LEN
from .errors import CorruptionError
from .head_pages import SealedPages
from .xor import decode_xor_many

__all__ = ["ChunkBatch", "HeadChunks"]


@dataclass(frozen=True)
class ChunkBatch:
    """Chunks of several series, oldest first per series: chunk ``c`` belongs to the
    series at position ``pos[c]`` of the request and is
    ``blob[offsets[c]:offsets[c + 1]]`` (XOR, without the encoding byte)."""

    pos: np.ndarray  # int64
    mint: np.ndarray  # int64
    maxt: np.ndarray  # int64
    blob: np.ndarray  # uint8
    offsets: np.ndarray  # int64 [n + 1]

    @property
    def n_chunks(self) -> int:
        return len(self.pos)

    def decode(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples of every chunk: ``(timestamps, values, sample_starts)``."""
        return decode_xor_many(self.blob, self.offsets)

    def samples_in(self, mint: int, maxt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples of every chunk in ``[mint, maxt]``, a run per chunk: ``(timestamps,
        values, run starts)``, decoded and cut in one kernel call."""
        ts, vs, starts, ok = decode_xor_range(self.blob, self.offsets, mint, maxt)
        if not ok:
            self.decode()  # raises the CorruptionError naming the malformed chunk
            raise CorruptionError("a head chunk is malformed")
        return ts, vs, starts


def _grow(arr: np.ndarray, need: int, fill: int) -> np.ndarray:
    if need <= len(arr):
        return arr
    out = np.full((max(need, 2 * len(arr)), *arr.shape[1:]), fill, dtype=arr.dtype)
    out[:len(arr)] = arr
    return out


class HeadChunks:
    """Open and sealed XOR chunks of every head series; see the module docstring."""

    def __init__(self, chunk_range: int, directory: Path) -> None:
        self.chunk_range = chunk_range
        self.xstate = np.zeros((0, STATE_LEN), np.uint64)
        self.slot_off = np.empty(0, np.int64)
        self.slot_class = np.empty(0, np.int8)
        self.c_mint = np.empty(0, np.int64)
        self.next_at = np.empty(0, np.int64)
        self.last_sealed = np.empty(0, np.int64)
        self.arena = np.empty(1 << 16, np.uint8)
        self.alloc = np.full(1 + k.N_CLASSES, -1, np.int64)
        self.alloc[k.A_BUMP] = 0
        self.pages = SealedPages(directory)
        self.tab_n = np.zeros(1, np.int64)
        self.tab_ref = np.empty(1024, np.int32)
        self.tab_mint = np.empty(1024, np.int64)
        self.tab_maxt = np.empty(1024, np.int64)
        self.tab_loc = np.empty(1024, np.int64)
        self.tab_len = np.empty(1024, np.int32)
        self.tab_prev = np.empty(1024, np.int64)

    def reserve(self, n_series: int) -> None:
        """Make room for series refs below ``n_series``."""
        if n_series <= len(self.slot_off):
            return
        self.xstate = _grow(self.xstate, n_series, 0)
        self.slot_off = _grow(self.slot_off, n_series, -1)
        self.slot_class = _grow(self.slot_class, n_series, 0)
        self.c_mint = _grow(self.c_mint, n_series, 0)
        self.next_at = _grow(self.next_at, n_series, 0)
        self.last_sealed = _grow(self.last_sealed, n_series, -1)

    @property
    def n_sealed(self) -> int:
        return int(self.tab_n[0])

    def append(self, refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> None:
        """Append samples, each newer than its series' last one (checked by the caller)."""
        if len(refs) == 0:
            return
        ts = np.ascontiguousarray(timestamps, np.int64)
        vs = np.ascontiguousarray(values, np.float64)
        refs = np.ascontiguousarray(refs, np.int64)
        j = 0
        while True:
            status, j = k.append(
                refs, ts, ts.view(np.uint64), vs.view(np.uint64), j, self.chunk_range,
                self.xstate, self.slot_off, self.slot_class, self.c_mint, self.next_at,
                self.last_sealed, self.arena, self.alloc, self.pages.room(),
                self.pages.page, self.pages.base, self.pages.fill, self.tab_ref, self.tab_mint,
                self.tab_maxt, self.tab_loc, self.tab_len, self.tab_prev, self.tab_n)
            if status == k.OK:
                self.pages.flush()
                return
            if status == k.NEED_ARENA:
                self.arena = _grow(self.arena, 2 * len(self.arena), 0)
            elif status == k.NEED_PAGE:
                self.pages.flush()
            else:
                cap = 2 * len(self.tab_ref)
                for name in ("tab_ref", "tab_mint", "tab_maxt", "tab_loc", "tab_len", "tab_prev"):
                    setattr(self, name, _grow(getattr(self, name), cap, 0))

    def gather(self, refs: np.ndarray, mint: int, maxt: int) -> ChunkBatch:
        """Copies of the chunks of ``refs`` (sorted unique) overlapping ``[mint, maxt]``."""
        refs = np.ascontiguousarray(refs, np.int64)
        refs = refs[refs < len(self.slot_off)]
        current = self.pages.page
        pos, cmin, cmax, offsets, blob, page, src = k.plan_copies(
            refs, mint, maxt, self.xstate, self.slot_off, self.c_mint, self.last_sealed,
            self.tab_mint, self.tab_maxt, self.tab_prev, self.tab_len, self.tab_loc,
            self.arena, current, self.pages.view(current))
        if len(page) and page.max() >= 0:  # sealed chunks in older pages
            lengths = np.diff(offsets)
            sealed = np.flatnonzero(page >= 0)
            for p in np.unique(page[sealed]):
                k.copy_chunks(self.pages.view(p), src, lengths, blob, offsets,
                              sealed[page[sealed] == p])
        return ChunkBatch(pos, cmin, cmax, blob, offsets)

    def truncate(self, before: int) -> int:
        """Drop every chunk whose samples are all older than ``before``; return how many
        samples went with them."""
        n = self.n_sealed
        keep = self.tab_maxt[:n] >= before
        dropped = self._sealed_counts(np.flatnonzero(~keep)).sum()
        self.last_sealed[:] = -1
        if n:
            rows = np.flatnonzero(keep)
            old_to_new = np.full(n, -1, np.int64)
            old_to_new[rows] = np.arange(len(rows))
            loc = self.tab_loc[rows]
            prev = k.relink(self.tab_ref[rows], self.tab_prev[rows], old_to_new,
                            self.last_sealed)
            for name, col in (("tab_ref", self.tab_ref[rows]), ("tab_mint", self.tab_mint[rows]),
                              ("tab_maxt", self.tab_maxt[rows]), ("tab_len", self.tab_len[rows]),
                              ("tab_loc", loc), ("tab_prev", prev)):
                arr = np.empty(max(1024, 2 * len(rows)), col.dtype)
                arr[:len(rows)] = col
                setattr(self, name, arr)
            self.tab_n[0] = len(rows)
            self.pages.keep_only(np.unique(loc >> k.PAGE_BITS))
        stale = np.flatnonzero((self.slot_off >= 0) & (self.xstate[:, ST_NUM] > 0)
                               & (self.xstate[:, ST_T].view(np.int64) < before))
        dropped += self.xstate[stale, ST_NUM].astype(np.int64).sum()
        k.free_slots(self.arena, self.alloc, self.slot_class[stale], self.slot_off[stale])
        self.slot_off[stale] = -1
        self.xstate[stale] = 0
        return int(dropped)

    def _sealed_counts(self, rows: np.ndarray) -> np.ndarray:
        """Sample counts of sealed chunks ``rows``, from their 2-byte headers."""
        counts = np.zeros(len(rows), np.int64)
        loc = self.tab_loc[rows]
        page_of = loc >> k.PAGE_BITS
        off = loc & (k.PAGE_SIZE - 1)
        for p in np.unique(page_of):
            mine = page_of == p
            page = self.pages.view(p)
            counts[mine] = (page[off[mine]].astype(np.int64) << 8) | page[off[mine] + 1]
        return counts

    def min_times(self, n_series: int) -> np.ndarray:
        """Oldest chunk start per series (int64 max where a series holds no chunk)."""
        out = np.full(n_series, np.iinfo(np.int64).max, np.int64)
        n = self.n_sealed
        np.minimum.at(out, self.tab_ref[:n].astype(np.int64), self.tab_mint[:n])
        has_open = np.flatnonzero((self.slot_off[:n_series] >= 0)
                                  & (self.xstate[:n_series, ST_NUM] > 0))
        out[has_open] = np.minimum(out[has_open], self.c_mint[has_open])
        return out

    def close(self) -> None:
        """Close the page files (the directory stays until the next start)."""
        self.pages.close()

    def memory_bytes(self) -> int:
        """Bytes in use in memory: open arena up to its high-water mark, the staging
        area, the sealed table and per-series columns (sealed chunks are in files)."""
        n = self.n_sealed
        pages = len(self.pages.staging)
        table = n * (4 + 8 + 8 + 8 + 4 + 8)
        series = sum(a.nbytes for a in (self.xstate, self.slot_off, self.slot_class,
                                        self.c_mint, self.next_at, self.last_sealed))
        return int(self.alloc[k.A_BUMP]) + pages + table + series
