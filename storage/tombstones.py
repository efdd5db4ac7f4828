"""Tombstones: deleted time intervals per series, and the ``tombstones`` file of a block.

Deleting samples does not rewrite anything at once. The head and every block keep, per
series, a list of closed intervals ``[mint, maxt]`` whose samples count as gone; reads
drop those samples, writing the head's range to a block leaves them out, and compaction
(or ``clean_tombstones``) rewrites blocks without them. Intervals of one series that
overlap or touch are merged, as Prometheus merges them.

``Tombstones`` holds the intervals as three sorted columns, so that applying them is a
kernel pass over sample or chunk arrays, never a Python loop per sample.

The file is Prometheus's (``docs/format.md``, "Tombstones"): big-endian magic
``0x0130BA30``, format byte 1, then one entry per interval — uvarint series ref, zigzag
varints mint and maxt (both inclusive, absolute) — and a big-endian CRC32-C of the
entries (the format byte excluded). A block names series by their index reference
(``storage.block`` converts to and from ordinals).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _tombstone_kernels as k
from . import chunkenc
from ._block_kernels import crc32c
from .chunk_merge import take_chunks
from .errors import CorruptionError
from .wal import fsync_dir
from .xor import ENCODING_XOR, encode_xor_many

__all__ = [
    "FILENAME",
    "MAGIC_TOMBSTONES",
    "TOMBSTONES_FORMAT_V1",
    "Tombstones",
    "TrimmedChunks",
    "decode",
    "encode",
    "read_file",
    "trim_chunks",
    "write_file",
]

FILENAME = "tombstones"
MAGIC_TOMBSTONES = 0x0130BA30
TOMBSTONES_FORMAT_V1 = 1
_HEADER = 5  # magic and format byte
_CRC = 4
MAX_FILE_BYTES = 1 << 30  # bounds what a damaged or hostile file can make us allocate

_I64 = np.int64
_EMPTY = np.empty(0, _I64)


@dataclass(frozen=True)
class Tombstones:
    """Deleted intervals: interval ``i`` removes samples of series ``refs[i]`` with
    ``mint[i] <= t <= maxt[i]``. Sorted by (ref, mint); the intervals of one series
    are disjoint and never adjacent. Immutable: every change returns a new value."""

    refs: np.ndarray
    mint: np.ndarray
    maxt: np.ndarray

    @staticmethod
    def empty() -> Tombstones:
        return Tombstones(_EMPTY, _EMPTY, _EMPTY)

    @staticmethod
    def of(refs: np.ndarray, mint: np.ndarray | int, maxt: np.ndarray | int) -> Tombstones:
        """Intervals in any order, merged; inverted ones (mint > maxt) delete nothing
        and are dropped."""
        r = np.ascontiguousarray(refs, _I64)
        lo = np.ascontiguousarray(np.broadcast_to(np.asarray(mint, _I64), r.shape))
        hi = np.ascontiguousarray(np.broadcast_to(np.asarray(maxt, _I64), r.shape))
        keep = lo <= hi
        r, lo, hi = r[keep], lo[keep], hi[keep]
        order = np.lexsort((lo, r))
        return Tombstones(*k.merge(r[order], lo[order], hi[order]))

    def __len__(self) -> int:
        """Number of intervals (Prometheus's ``numTombstones``)."""
        return len(self.refs)

    def add(self, other: Tombstones) -> Tombstones:
        """The union of both."""
        if not len(other):
            return self
        if not len(self):
            return other
        return Tombstones.of(np.concatenate((self.refs, other.refs)),
                             np.concatenate((self.mint, other.mint)),
                             np.concatenate((self.maxt, other.maxt)))

    def where(self, keep: np.ndarray) -> Tombstones:
        """The intervals selected by the boolean mask ``keep`` (still sorted)."""
        return Tombstones(self.refs[keep], self.mint[keep], self.maxt[keep])

    def truncated_before(self, t: int) -> Tombstones:
        """Without intervals that end before ``t`` (their samples are gone anyway)."""
        return self.where(self.maxt >= t) if len(self) else self

    def deleted(self, refs: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        """Boolean mask: which samples ``(refs[i], timestamps[i])`` are deleted."""
        out = np.zeros(len(timestamps), bool)
        if len(self) and len(timestamps):
            k.deleted(self.refs, self.mint, self.maxt, np.ascontiguousarray(refs, _I64),
                      np.ascontiguousarray(timestamps, _I64), out)
        return out

    def overlap(self, refs: np.ndarray, lo: np.ndarray | int, hi: np.ndarray | int
                ) -> np.ndarray:
        """Per closed range ``[lo[i], hi[i]]`` of series ``refs[i]`` (``lo`` and ``hi``
        may be one time for all): 0 when no interval meets it, 1 when some do, 2 when
        one contains it."""
        out = np.zeros(len(refs), np.uint8)
        if len(self) and len(refs):
            r = np.ascontiguousarray(refs, _I64)
            k.overlap(self.refs, self.mint, self.maxt, r,
                      np.ascontiguousarray(np.broadcast_to(np.asarray(lo, _I64), r.shape)),
                      np.ascontiguousarray(np.broadcast_to(np.asarray(hi, _I64), r.shape)),
                      out)
        return out


# --------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class TrimmedChunks:
    """Chunks with deleted samples taken out: output chunk ``c`` comes from input chunk
    ``source[c]`` (same order), covers ``[mint[c], maxt[c]]`` and is
    ``blob[offsets[c]:offsets[c+1]]`` in encoding ``encoding[c]``."""

    source: np.ndarray
    mint: np.ndarray
    maxt: np.ndarray
    encoding: np.ndarray
    blob: np.ndarray
    offsets: np.ndarray


def trim_chunks(stones: Tombstones, refs: np.ndarray, mint: np.ndarray, maxt: np.ndarray,
                encoding: np.ndarray, blob: np.ndarray, offsets: np.ndarray) -> TrimmedChunks:
    """Chunks of series ``refs[c]`` without the samples ``stones`` delete.

    Chunks no interval meets pass through byte for byte; chunks an interval contains
    are dropped without decoding; the few others are decoded, filtered and re-encoded
    as XOR (dropped when nothing is left), so the result stays readable by Prometheus.
    """
    kind = stones.overlap(refs, mint, maxt)
    if not kind.any():
        return TrimmedChunks(np.arange(len(refs)), mint, maxt, encoding, blob, offsets)
    partial = np.flatnonzero(kind == k.PARTIAL)
    p_blob, p_offsets = take_chunks(blob, offsets, partial)
    ts, vs, starts = chunkenc.decode_many(encoding[partial], p_blob, p_offsets)
    chunk_of = np.repeat(np.arange(len(partial)), np.diff(starts))
    alive = ~stones.deleted(refs[partial][chunk_of], ts)
    counts = np.bincount(chunk_of[alive], minlength=len(partial))
    bounds = np.zeros(len(partial) + 1, _I64)
    np.cumsum(counts, out=bounds[1:])
    ts, vs = ts[alive], vs[alive]
    new_blob, new_offsets = encode_xor_many(ts, vs, bounds)
    rebuilt = partial[counts > 0]
    new_mint = ts[bounds[:-1][counts > 0]]
    new_maxt = ts[bounds[1:][counts > 0] - 1]
    new_blob, new_offsets = take_chunks(new_blob, new_offsets, np.flatnonzero(counts > 0))

    kept = np.flatnonzero(kind == k.NONE)
    kept_blob, kept_offsets = take_chunks(blob, offsets, kept)
    source = np.concatenate((kept, rebuilt))
    order = np.argsort(source, kind="stable")
    joined = np.concatenate((kept_blob, new_blob))
    joined_offsets = np.concatenate((kept_offsets[:-1], len(kept_blob) + new_offsets))
    out_blob, out_offsets = take_chunks(joined, joined_offsets, order)
    new_encoding = np.full(len(rebuilt), ENCODING_XOR, np.uint8)
    return TrimmedChunks(source[order],
                         np.concatenate((mint[kept], new_mint))[order],
                         np.concatenate((maxt[kept], new_maxt))[order],
                         np.concatenate((np.asarray(encoding, np.uint8)[kept],
                                         new_encoding))[order],
                         out_blob, out_offsets)


# --------------------------------------------------------------------------- the file


def encode(stones: Tombstones) -> bytes:
    """The bytes of a ``tombstones`` file holding ``stones`` (refs as written)."""
    body = np.concatenate((np.array([TOMBSTONES_FORMAT_V1], np.uint8),
                           k.encode(stones.refs, stones.mint, stones.maxt)))
    crc = crc32c(body, 1, len(body))
    return (MAGIC_TOMBSTONES.to_bytes(4, "big") + body.tobytes()
            + int(crc).to_bytes(4, "big"))


def decode(data: bytes | np.ndarray, name: str = FILENAME) -> Tombstones:
    """The intervals of a ``tombstones`` file's bytes; ``CorruptionError`` naming
    ``name`` and the offset when they are malformed."""
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data
    if len(buf) < _HEADER + _CRC:
        raise CorruptionError(f"{name}: {len(buf)} bytes, too short for a tombstones file")
    if int.from_bytes(buf[:4].tobytes(), "big") != MAGIC_TOMBSTONES:
        raise CorruptionError(f"{name}: offset 0: bad magic")
    if buf[4] != TOMBSTONES_FORMAT_V1:
        raise CorruptionError(f"{name}: offset 4: unsupported format {buf[4]}")
    end = len(buf) - _CRC
    if crc32c(buf, _HEADER, end) != int.from_bytes(buf[end:].tobytes(), "big"):
        raise CorruptionError(f"{name}: offset {end}: checksum mismatch")
    refs, mint, maxt, status, pos = k.decode(buf, _HEADER, end)
    if status != k.OK:
        what = "truncated" if status == k.TRUNCATED else "malformed"
        raise CorruptionError(f"{name}: offset {pos}: {what} varint")
    return Tombstones.of(refs, mint, maxt)


def read_file(directory: Path, name: str = FILENAME) -> Tombstones:
    """The tombstones of a block directory (in its file ``name``); none when it has no
    such file (as Prometheus)."""
    path = Path(directory) / name
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CorruptionError(f"{path}: {size} bytes, more than {MAX_FILE_BYTES}")
        data = path.read_bytes()
    except FileNotFoundError:
        return Tombstones.empty()
    except OSError as e:
        raise CorruptionError(f"{path}: cannot read: {e}") from None
    return decode(data, str(path))


def write_file(directory: Path, stones: Tombstones, name: str = FILENAME) -> int:
    """Replace the tombstones file ``name`` of ``directory`` atomically and durably (a
    crash leaves the old file or the new one); return its size."""
    path = Path(directory) / name
    tmp = path.with_name(name + ".tmp")
    data = encode(stones)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return len(data)
