"""Chunk segment files of a block: ``chunks/000001``, ``chunks/000002``, …

Each segment starts with an 8-byte header (magic, version, three zero bytes) followed by
chunk records: uvarint data length, encoding byte, data, CRC32-C of encoding and data.
A chunk is addressed by a 64-bit ref: segment index (0 for ``000001``) in the upper 32
bits, byte offset in the segment in the lower 32. Byte layout in ``docs/format.md``
("Blocks").

Reading maps every segment and copies chunk bytes out in one kernel call per segment,
checking each chunk's checksum on the way.
"""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path

import numpy as np

from . import _block_kernels as k
from . import _read_kernels as rk
from .block_index import _unmap, drop_pages
from .errors import CorruptionError

__all__ = [
    "CHUNKS_FORMAT_V1",
    "MAGIC_CHUNKS",
    "MAX_SEGMENT_SIZE",
    "SEGMENT_HEADER_SIZE",
    "ChunkSegments",
    "write_segments",
]

MAGIC_CHUNKS = 0x85BD40DD
CHUNKS_FORMAT_V1 = 1
SEGMENT_HEADER_SIZE = 8
MAX_SEGMENT_SIZE = 512 * 1024 * 1024
_HEADER = MAGIC_CHUNKS.to_bytes(4, "big") + bytes([CHUNKS_FORMAT_V1, 0, 0, 0])
_WRITE_PIECE = 1 << 26  # bytes of chunk records built in memory at a time
_DROP_AFTER = 4 << 20
"""Bytes of mapped pages a read touches, about, between drops of its pages."""
_FAULT_AROUND = 64 << 10  # bytes the kernel maps around a touched page
_SMALL_READS_HELD = 4 << 20
"""Bytes of pages that small reads (``read_xor_range``) leave mapped, about, before all
are dropped at once: dropping after each read made the next read of the same few
series fault its pages in again, tens of microseconds once a heavy query has pushed
the kernel's page tables out of the processor's caches."""


def _segment_name(index: int) -> str:
    return f"{index + 1:06d}"


def write_segments(
    directory: Path, blob: np.ndarray, offsets: np.ndarray, encoding: np.ndarray,
    order: np.ndarray, max_segment_size: int = MAX_SEGMENT_SIZE,
) -> np.ndarray:
    """Write the chunks ``order`` (chunk c's data is ``blob[offsets[c]:offsets[c+1]]``)
    into new segment files in ``directory``, fsynced, in that order.

    Returns each written chunk's ref (int64, in ``order`` order), so refs ascend.
    """
    sizes = np.diff(offsets)[order]
    varint_sizes = np.ones(len(sizes), dtype=np.int64)
    for shift in (7, 14, 21, 28, 35):
        varint_sizes += sizes >= (1 << shift)
    record = varint_sizes + 1 + sizes + 4
    seg, off = k.assign_segments(record, SEGMENT_HEADER_SIZE, max_segment_size)
    positions = np.arange(len(order))
    for run in np.split(positions, np.flatnonzero(np.diff(seg)) + 1) if len(seg) else []:
        with open(directory / _segment_name(int(seg[run[0]])), "wb") as f:
            f.write(_HEADER)
            # Build records piece by piece so a 512 MiB segment never sits in memory.
            piece = off[run] // _WRITE_PIECE
            for part in np.split(order[run], np.flatnonzero(np.diff(piece)) + 1):
                f.write(k.encode_chunk_records(blob, offsets, encoding, part).data)
            f.flush()
            os.fsync(f.fileno())
    return (seg << 32) | off


class ChunkSegments:
    """The memory-mapped segment files of one block's ``chunks`` directory.

    Thread-safe for reads; ``close`` must not race with them.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._maps: list[mmap.mmap] = []
        self._views: list[np.ndarray] = []
        self._held: list[tuple[int, int, int]] = []  # small reads' spans still mapped
        self._held_bytes = 0
        self._held_lock = threading.Lock()
        try:
            names = sorted(p.name for p in directory.iterdir())
        except OSError as e:
            raise CorruptionError(f"{directory}: cannot list chunk segments: {e}") from None
        try:
            for name in names:
                if not (len(name) == 6 and name.isdigit()):
                    raise CorruptionError(f"{directory / name}: not a chunk segment name")
                self._open(directory / name)
        except BaseException:
            self.close()
            raise

    def _open(self, path: Path) -> None:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < SEGMENT_HEADER_SIZE:
                raise CorruptionError(f"{path}: {size} bytes, shorter than the segment header")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps.append(mm)
        view = np.frombuffer(mm, dtype=np.uint8)
        self._views.append(view)
        magic = int.from_bytes(view[:4].tobytes(), "big")
        if magic != MAGIC_CHUNKS:
            raise CorruptionError(f"{path}: offset 0: bad magic {magic:#010x}")
        if view[4] != CHUNKS_FORMAT_V1:
            raise CorruptionError(f"{path}: offset 4: unsupported version {view[4]}")

    @property
    def n_segments(self) -> int:
        return len(self._views)

    def gather(self, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Encoding bytes, data blob and offsets of the chunks ``refs``, in that order;
        each chunk's checksum is verified. ``CorruptionError`` names a bad chunk."""
        refs = np.asarray(refs, dtype=np.int64)
        if len(refs) == 0:
            return np.empty(0, np.uint8), np.empty(0, np.uint8), np.zeros(1, np.int64)
        seg = refs >> 32
        off = refs & 0xFFFFFFFF
        first, last = int(seg.min()), int(seg.max())
        if first < 0 or last >= len(self._views):
            bad = np.flatnonzero((seg < 0) | (seg >= len(self._views)))
            raise CorruptionError(f"{self.directory}: chunk ref {int(refs[bad[0]]):#x} "
                                  f"names segment {int(seg[bad[0]]) + 1}, which does not exist")
        # A segment's chunks are read a batch at a time, its pages dropped after each:
        # touching a mapped page maps the 64 KiB around it, so a few hundred chunks
        # scattered over a segment would otherwise hold tens of megabytes at once.
        if first == last and len(refs) * _FAULT_AROUND <= _DROP_AFTER:
            return self._read(first, off, refs)  # one batch (see ``_batches``), in order
        batches = [part for s in np.unique(seg)
                   for part in _batches(np.flatnonzero(seg == s), off)]
        # Each batch is measured and copied out while its pages are mapped, then put in
        # place: reading a batch twice would fault its pages in twice.
        read = [self._read(int(seg[idx[0]]), off[idx], refs[idx]) for idx in batches]
        if len(read) == 1:  # one batch, in order
            return read[0]
        encoding = np.empty(len(refs), dtype=np.uint8)
        lengths = np.empty(len(refs), dtype=np.int64)
        for idx, (enc, _, at) in zip(batches, read):
            encoding[idx] = enc
            lengths[idx] = np.diff(at)
        offsets = np.zeros(len(refs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        blob = np.empty(int(offsets[-1]), dtype=np.uint8)
        for idx, (_, part, _) in zip(batches, read):
            k.place_chunks(part, offsets[idx], lengths[idx], blob)
        return encoding, blob, offsets

    def read_xor_range(self, segment: int, series: np.ndarray, cmin: np.ndarray,
                       cmax: np.ndarray, offsets: np.ndarray, mint: int, maxt: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The samples in ``[mint, maxt]`` of those of the chunks at ``offsets`` in
        ``segment`` (of a few series ``series``, covering ``[cmin, cmax]``) that overlap
        it, a run per chunk: ``(series of each run, run starts, timestamps, values)``,
        read and decoded in one kernel call. None when they are not all XOR or are
        damaged: ``gather`` and the codecs then read them, and name any damage."""
        if segment >= len(self._views):
            return None
        run_series, starts, ts, vs, first, end, ok = rk.read_xor_range(
            self._views[segment], series, cmin, cmax, offsets, mint, maxt)
        if end > first:
            self._hold(segment, first, end)
        return (run_series, starts, ts, vs) if ok else None

    def _hold(self, segment: int, first: int, end: int) -> None:
        """Leave the pages of a small read mapped, dropping every such span at once when
        they add up to ``_SMALL_READS_HELD``."""
        with self._held_lock:
            self._held.append((segment, first, end))
            self._held_bytes += max(end - first, _FAULT_AROUND)
            if self._held_bytes < _SMALL_READS_HELD:
                return
            held, self._held, self._held_bytes = self._held, [], 0
        for s, a, b in held:
            drop_pages(self._maps[s], a, b)

    def _read(self, segment: int, off: np.ndarray, refs: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``gather`` for chunks of one segment at offsets ``off``, whose pages are
        dropped after."""
        encoding, blob, at, first, end, status, i = k.read_chunks(self._views[segment], off)
        self._checked((None, status, i), refs)
        drop_pages(self._maps[segment], first, end)
        return encoding, blob, at

    def _checked(self, result: tuple, refs: np.ndarray) -> np.ndarray:
        values, status, i = result
        if status != k.OK:
            ref = int(refs[i])
            path = self.directory / _segment_name(ref >> 32)
            raise CorruptionError(f"{path}: offset {ref & 0xFFFFFFFF}: chunk "
                                  f"{_CHUNK_ERRORS.get(status, 'is malformed')}")
        return values

    def close(self) -> None:
        self._views.clear()
        self._held.clear()
        for mm in self._maps:
            _unmap(mm)
        self._maps.clear()


def _batches(idx: np.ndarray, off: np.ndarray) -> list[np.ndarray]:
    """``idx`` (chunks of one segment, in reading order) cut each time the pages touched
    add up to another ``_DROP_AFTER``: a chunk costs the bytes from the one
    before it, or the fault-around span when it lies farther (the records' own lengths
    are not known yet, so neighbours' distance stands for them)."""
    if len(idx) * _FAULT_AROUND <= _DROP_AFTER:
        return [idx]
    at = off[idx]
    step = np.minimum(np.abs(np.diff(at, prepend=at[:1])), _FAULT_AROUND)
    step[0] = _FAULT_AROUND
    batch = (np.cumsum(step) - 1) // _DROP_AFTER
    cuts = np.flatnonzero(np.diff(batch)) + 1
    return np.split(idx, cuts)


_CHUNK_ERRORS = {
    k.TRUNCATED: "runs past the end of the segment",
    k.BAD_VARINT: "length varint is malformed",
    k.BAD_CHECKSUM: "checksum mismatch",
}
