"""XOR (Gorilla) chunks, byte for byte as Prometheus writes them.

A chunk holds up to 65535 samples of one series: delta-of-delta timestamps and XOR'd
float bits, laid out in ``docs/format.md`` ("XOR chunk"). Chunks in this encoding can
be handed to Prometheus unchanged (remote read ``STREAMED_XOR_CHUNKS``) and chunks
from Prometheus decode here.

The bulk functions are the hot path: one kernel call encodes or decodes any number of
chunks laid back to back in one byte buffer, chunk ``i`` being
``blob[offsets[i]:offsets[i + 1]]``. All functions are synchronous, hold no state and
release the GIL inside the kernels, so they are safe to call from worker threads.

Decoding is safe on hostile input: every read is bounded by its chunk, and a truncated
or malformed chunk raises ``CorruptionError`` naming the chunk and the sample.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from storage import _xor_kernels as _k
from storage.errors import CorruptionError

__all__ = [
    "ENCODING_XOR",
    "MAX_SAMPLES_PER_CHUNK",
    "XorCodec",
    "decode_xor",
    "decode_xor_many",
    "encode_xor",
    "encode_xor_many",
]

ENCODING_XOR = 1
"""The chunk encoding byte of XOR chunks, as in Prometheus (``EncXOR``)."""

MAX_SAMPLES_PER_CHUNK = 0xFFFF
"""The 2-byte sample count in the chunk header caps a chunk at this many samples."""

_DECODE_ERRORS = {
    _k.TRUNCATED: "truncated",
    _k.VARINT_OVERFLOW: "timestamp varint overflows 64 bits",
    _k.BAD_WINDOW: "xor window wider than 64 bits",
}


def encode_xor(
    timestamps: npt.ArrayLike, values: npt.ArrayLike, *, legacy_padding: bool = True
) -> bytes:
    """Encode one series' samples (at most 65535) as one XOR chunk.

    Timestamps are int64 milliseconds in any order (the format stores any int64 delta);
    values are float64, stored bit for bit. ``legacy_padding`` is explained in
    ``encode_xor_many``.
    """
    ts, vs = _samples(timestamps, values)
    blob, offsets = encode_xor_many(
        ts, vs, np.array([0, len(ts)], np.int64), legacy_padding=legacy_padding
    )
    return blob[: offsets[1]].tobytes()


def decode_xor(data: bytes | bytearray | memoryview | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode one XOR chunk (without the encoding byte) into int64 and float64 arrays."""
    blob = _as_bytes(data)
    ts, vs, _ = decode_xor_many(blob, np.array([0, len(blob)], np.int64))
    return ts, vs


def encode_xor_many(
    timestamps: npt.ArrayLike,
    values: npt.ArrayLike,
    starts: npt.ArrayLike,
    *,
    legacy_padding: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode many chunks in one call: chunk ``i`` holds samples ``starts[i]:starts[i+1]``.

    ``starts`` is non-decreasing, inside ``[0, len(timestamps)]``, with at most 65535
    samples between neighbours (an empty range gives the empty 2-byte chunk). Returns
    ``(blob, offsets)``: uint8 chunk bytes back to back and int64 offsets, chunk ``i``
    being ``blob[offsets[i]:offsets[i+1]]``.

    With ``legacy_padding`` (the default) the bytes are those of Prometheus 2.x, which
    leaves one spare zero byte at the end of a chunk whose last write was whole bytes on
    a byte boundary (every one-sample chunk, about 1 in 64 others). Prometheus 3.0
    stopped doing that; ``legacy_padding=False`` gives its bytes. Every reader decodes
    both forms to the same samples.
    """
    ts, vs = _samples(timestamps, values)
    bounds = np.ascontiguousarray(starts, dtype=np.int64)
    if bounds.ndim != 1 or len(bounds) < 1:
        raise ValueError("starts must be a 1-d array with at least one entry")
    if len(bounds) > 1:
        sizes = np.diff(bounds)
        if bounds[0] < 0 or bounds[-1] > len(ts) or np.any(sizes < 0):
            raise ValueError("starts must be non-decreasing and inside the sample arrays")
        if np.any(sizes > MAX_SAMPLES_PER_CHUNK):
            raise ValueError(f"a chunk holds at most {MAX_SAMPLES_PER_CHUNK} samples")
    out, offsets = _k.encode_many(
        ts.view(np.uint64), vs.view(np.uint64), bounds, bool(legacy_padding)
    )
    return out[: offsets[-1]].copy(), offsets


def decode_xor_many(
    blob: bytes | bytearray | memoryview | np.ndarray, offsets: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the chunks ``blob[offsets[i]:offsets[i+1]]`` in one call.

    Returns ``(timestamps int64, values float64, sample_starts int64)`` where chunk
    ``i``'s samples are ``sample_starts[i]:sample_starts[i+1]``. Bytes after a chunk's
    last sample (padding) are ignored, as Prometheus does. Raises ``CorruptionError``
    for a chunk that is shorter than its header says, before allocating for it.
    """
    data = _as_bytes(blob)
    bounds = np.ascontiguousarray(offsets, dtype=np.int64)
    if bounds.ndim != 1 or len(bounds) < 1:
        raise ValueError("offsets must be a 1-d array with at least one entry")
    counts, problem, i = _k.header_counts(data, bounds)
    if problem == _k.BAD_OFFSETS:
        raise ValueError("offsets must be non-decreasing and inside the blob")
    if problem == _k.SHORT:
        raise CorruptionError(f"xor chunk {i}: shorter than its 2-byte header")
    if problem == _k.TOO_MANY:
        raise CorruptionError(f"xor chunk {i}: {bounds[i + 1] - bounds[i]} bytes cannot hold "
                              f"the {counts[i]} samples it claims")
    sample_starts = np.zeros(len(bounds), np.int64)
    np.cumsum(counts, out=sample_starts[1:])
    total = int(sample_starts[-1])
    ts = np.empty(total, np.int64)
    vs = np.empty(total, np.float64)
    status, chunk, sample = _k.decode_many(
        data, bounds, counts, sample_starts, ts.view(np.uint64), vs.view(np.uint64)
    )
    if status != _k.OK:
        raise CorruptionError(f"xor chunk {chunk}: sample {sample}: {_DECODE_ERRORS[status]}")
    return ts, vs, sample_starts


class XorCodec:
    """The XOR chunk codec for the ``storage.chunkenc`` registry (encoding byte 1)."""

    encoding = ENCODING_XOR
    name = "XOR"

    def encode(self, timestamps: npt.ArrayLike, values: npt.ArrayLike) -> bytes:
        """Encode one chunk; see ``encode_xor``."""
        return encode_xor(timestamps, values)

    def decode(
        self, data: bytes | bytearray | memoryview | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode one chunk; see ``decode_xor``."""
        return decode_xor(data)

    def encode_many(
        self, timestamps: npt.ArrayLike, values: npt.ArrayLike, starts: npt.ArrayLike
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode many chunks in one call; see ``encode_xor_many``."""
        return encode_xor_many(timestamps, values, starts)

    def decode_many(
        self, blob: bytes | bytearray | memoryview | np.ndarray, offsets: npt.ArrayLike
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode many chunks in one call; see ``decode_xor_many``."""
        return decode_xor_many(blob, offsets)


def _samples(timestamps: npt.ArrayLike, values: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    vs = np.ascontiguousarray(values, dtype=np.float64)
    if ts.ndim != 1 or ts.shape != vs.shape:
        raise ValueError("timestamps and values must be 1-d arrays of the same length")
    return ts, vs


def _as_bytes(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError("chunk data must be a 1-d uint8 array or a bytes-like object")
        return np.ascontiguousarray(data)
    return np.frombuffer(data, dtype=np.uint8)
