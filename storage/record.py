"""What is inside WAL records: series, samples, chunks and tombstones, encoded a whole
batch at a time.

``storage.wal`` frames, checksums and (with zstd) compresses records; this module only
turns numpy columns into payload bytes and back, without a Python loop per item. The
layouts are drawn in ``docs/format.md`` (section "WAL", "Record payloads").

Every record starts with an 8-byte header (encoding, three reserved zero bytes, item
count). Integer columns (series refs, timestamps) are stored as zigzag-encoded deltas
split into byte planes: neighbouring refs and timestamps differ by little, so whole planes
are zero and zstd all but erases them. Sample values are stored as their raw float64 bits,
so every NaN payload (stale markers included) survives exactly.

Decoders check every count and length against the payload size and raise
``CorruptionError``; the arrays they return are new, writable and aligned, except
``keys_blob``, a read-only view into the payload.
"""

from __future__ import annotations

import struct

import numpy as np

from storage.errors import CorruptionError

__all__ = [
    "CHUNKS",
    "COLUMNS_V1",
    "SAMPLES",
    "SERIES",
    "TOMBSTONES",
    "decode_chunks",
    "decode_samples",
    "decode_series",
    "decode_tombstones",
    "encode_chunks",
    "encode_samples",
    "encode_series",
    "encode_tombstones",
]

# Record types (the WAL's type byte), numbered as Prometheus numbers its records. 0 is
# invalid in the framing; 4 exemplars, 5 metadata and 6 histogram samples are reserved.
SERIES = 1
SAMPLES = 2
TOMBSTONES = 3  # deleted intervals of head series
CHUNKS = 7  # whole XOR chunks: how a checkpoint carries the head's samples compactly

COLUMNS_V1 = 1  # payload encoding: the column layout described in the module docstring

_HEADER = struct.Struct("<B3sI")  # encoding, reserved, count
_RESERVED = b"\x00\x00\x00"
_MAX_COUNT = 2**32 - 1
_I64 = np.dtype("<i8")
_U64 = np.dtype("<u8")
_F64 = np.dtype("<f8")
_U32 = np.dtype("<u4")


def encode_series(refs: np.ndarray, keys_blob: bytes | bytearray | memoryview | np.ndarray,
                  key_offsets: np.ndarray) -> bytes:
    """Payload of a SERIES record: series ``refs[i]`` has key ``keys_blob[off[i]:off[i+1]]``.

    A key is opaque bytes (the head's canonical label encoding). ``key_offsets`` has
    ``len(refs) + 1`` non-decreasing entries within ``keys_blob``; it need not start at 0.
    """
    refs = _column(refs, _I64, "refs")
    offsets = _column(key_offsets, _I64, "key_offsets")
    blob = np.frombuffer(keys_blob, np.uint8) if not isinstance(keys_blob, np.ndarray) \
        else _column(keys_blob, np.dtype(np.uint8), "keys_blob")
    n = _count(len(refs))
    if len(offsets) != n + 1:
        raise ValueError(f"series record: {len(offsets)} key offsets for {n} series, "
                         f"expected {n + 1}")
    lengths = np.diff(offsets)
    if n and (offsets[0] < 0 or offsets[-1] > len(blob) or (lengths < 0).any()):
        raise ValueError("series record: key offsets must be non-decreasing within keys_blob")
    if n and lengths.max() > _MAX_COUNT:
        raise ValueError("series record: a key is longer than 4 GiB")
    keys = blob[offsets[0]:offsets[-1]] if n else blob[:0]
    return b"".join((_HEADER.pack(COLUMNS_V1, _RESERVED, n), _pack_ints(refs),
                     lengths.astype(_U32).tobytes(), keys.tobytes()))


def decode_series(payload: bytes | bytearray | memoryview,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of ``encode_series``:
    ``(refs int64[n], keys_blob uint8[m], key_offsets int64[n+1])``.

    ``key_offsets`` starts at 0 and ends at ``m``.
    """
    n, size = _read_header(payload, "series")
    fixed = _HEADER.size + 12 * n
    if size < fixed:
        raise CorruptionError(f"series record: {size} bytes cannot hold {n} series")
    refs = _unpack_ints(payload, _HEADER.size, n)
    lengths = np.frombuffer(payload, _U32, count=n, offset=_HEADER.size + 8 * n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, dtype=np.int64, out=offsets[1:])
    if fixed + int(offsets[-1]) != size:
        raise CorruptionError(f"series record: keys take {int(offsets[-1])} bytes, "
                              f"payload has {size - fixed}")
    keys = np.frombuffer(payload, np.uint8, offset=fixed)
    return refs, keys, offsets


def encode_samples(refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> bytes:
    """Payload of a SAMPLES record: sample ``i`` is ``(refs[i], timestamps[i], values[i])``.

    Values are kept bit for bit; timestamps are milliseconds (any int64 round-trips).
    """
    refs = _column(refs, _I64, "refs")
    timestamps = _column(timestamps, _I64, "timestamps")
    values = _column(values, _F64, "values")
    n = _count(len(refs))
    if len(timestamps) != n or len(values) != n:
        raise ValueError(f"samples record: {n} refs, {len(timestamps)} timestamps, "
                         f"{len(values)} values")
    return b"".join((_HEADER.pack(COLUMNS_V1, _RESERVED, n), _pack_ints(refs),
                     _pack_ints(timestamps), values.tobytes()))


def decode_samples(payload: bytes | bytearray | memoryview,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of ``encode_samples``:
    ``(refs int64[n], timestamps int64[n], values float64[n])``."""
    n, size = _read_header(payload, "samples")
    if size != _HEADER.size + 24 * n:
        raise CorruptionError(f"samples record: {size} bytes do not hold {n} samples "
                              f"({_HEADER.size + 24 * n} expected)")
    refs = _unpack_ints(payload, _HEADER.size, n)
    timestamps = _unpack_ints(payload, _HEADER.size + 8 * n, n)
    values = np.frombuffer(payload, _F64, count=n, offset=_HEADER.size + 16 * n).copy()
    return refs, timestamps, values


def encode_chunks(refs: np.ndarray, blob: np.ndarray, offsets: np.ndarray) -> bytes:
    """Payload of a CHUNKS record: XOR chunk ``i`` (without its encoding byte) is
    ``blob[offsets[i]:offsets[i+1]]`` and belongs to series ``refs[i]``.

    Layout: header, refs as packed ints, chunk lengths as packed ints, the chunk bytes.
    """
    refs = _column(refs, _I64, "refs")
    offsets = _column(offsets, _I64, "offsets")
    n = _count(len(refs))
    if len(offsets) != n + 1:
        raise ValueError(f"chunks record: {n} refs but {len(offsets)} offsets")
    data = np.asarray(blob, np.uint8)[offsets[0]:offsets[-1]]
    return b"".join((_HEADER.pack(COLUMNS_V1, _RESERVED, n), _pack_ints(refs),
                     _pack_ints(np.diff(offsets)), data.tobytes()))


def decode_chunks(payload: bytes | bytearray | memoryview,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of ``encode_chunks``: ``(refs int64[n], blob uint8, offsets int64[n+1])``;
    ``blob`` is a read-only view into the payload."""
    n, size = _read_header(payload, "chunks")
    fixed = _HEADER.size + 16 * n
    if size < fixed:
        raise CorruptionError(f"chunks record: {size} bytes do not hold {n} chunk headers")
    refs = _unpack_ints(payload, _HEADER.size, n)
    lengths = _unpack_ints(payload, _HEADER.size + 8 * n, n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if np.any(lengths < 0) or offsets[-1] != size - fixed:
        raise CorruptionError(f"chunks record: chunk lengths do not add up to the "
                              f"{size - fixed} bytes that follow them")
    return refs, np.frombuffer(payload, np.uint8, offset=fixed), offsets


def encode_tombstones(refs: np.ndarray, mint: np.ndarray, maxt: np.ndarray) -> bytes:
    """Payload of a TOMBSTONES record: series ``refs[i]`` lost its samples in
    ``[mint[i], maxt[i]]`` (inclusive). Layout: header, then refs, mint and maxt as
    packed ints."""
    refs = _column(refs, _I64, "refs")
    mint = _column(mint, _I64, "mint")
    maxt = _column(maxt, _I64, "maxt")
    n = _count(len(refs))
    if len(mint) != n or len(maxt) != n:
        raise ValueError(f"tombstones record: {n} refs, {len(mint)} mint, {len(maxt)} maxt")
    return b"".join((_HEADER.pack(COLUMNS_V1, _RESERVED, n), _pack_ints(refs),
                     _pack_ints(mint), _pack_ints(maxt)))


def decode_tombstones(payload: bytes | bytearray | memoryview,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of ``encode_tombstones``: ``(refs, mint, maxt)``, int64[n] each."""
    n, size = _read_header(payload, "tombstones")
    if size != _HEADER.size + 24 * n:
        raise CorruptionError(f"tombstones record: {size} bytes do not hold {n} intervals "
                              f"({_HEADER.size + 24 * n} expected)")
    return (_unpack_ints(payload, _HEADER.size, n),
            _unpack_ints(payload, _HEADER.size + 8 * n, n),
            _unpack_ints(payload, _HEADER.size + 16 * n, n))


def _column(array: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """``array`` as a 1-D little-endian column of ``dtype``, refusing lossy conversions."""
    array = np.asarray(array)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.can_cast(array.dtype, dtype, "safe"):
        raise ValueError(f"{name} of dtype {array.dtype} cannot be stored as {dtype}")
    return array.astype(dtype, copy=False)


def _count(n: int) -> int:
    if n > _MAX_COUNT:
        raise ValueError(f"record of {n} items exceeds {_MAX_COUNT}")
    return n


def _read_header(payload: bytes | bytearray | memoryview, what: str) -> tuple[int, int]:
    """Item count and byte size of a payload whose header is valid."""
    size = memoryview(payload).nbytes
    if size < _HEADER.size:
        raise CorruptionError(f"{what} record: {size} bytes is shorter than its header")
    encoding, reserved, n = _HEADER.unpack_from(payload)
    if encoding != COLUMNS_V1:
        raise CorruptionError(f"{what} record: unknown encoding {encoding}")
    if reserved != _RESERVED:
        raise CorruptionError(f"{what} record: nonzero reserved header bytes")
    return n, size


def _pack_ints(column: np.ndarray) -> bytes:
    """Zigzag deltas of an int64 column as 8 byte planes (all low bytes first)."""
    deltas = np.diff(column, prepend=np.int64(0))  # wraps on overflow; the decoder wraps back
    zigzag = (deltas << 1) ^ (deltas >> 63)
    return zigzag.astype(_I64, copy=False).view(np.uint8).reshape(-1, 8).T.tobytes()


def _unpack_ints(payload: bytes | bytearray | memoryview, offset: int, n: int) -> np.ndarray:
    """Inverse of ``_pack_ints`` for ``n`` values starting at ``offset``."""
    planes = np.frombuffer(payload, np.uint8, count=8 * n, offset=offset).reshape(8, n)
    zigzag = planes.T.copy().view(_U64).reshape(n)
    deltas = (zigzag >> np.uint64(1)) ^ (np.uint64(0) - (zigzag & np.uint64(1)))
    return np.cumsum(deltas.view(_I64), dtype=np.int64)
