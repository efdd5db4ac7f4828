"""Dense chunks: the lossless, columnar chunk encoding compaction writes for old data.

A dense chunk holds up to 65535 samples of one series, usually far more than an XOR
chunk's 120 (``TARGET_SAMPLES_PER_CHUNK``). Timestamps are delta-of-delta varints, so
regular scrapes cost almost nothing. Values are written one of two ways, chosen per
chunk for size: when they are decimal-like (integers, counters, gauges printed with a
few decimals, i.e. ``v == q / 10**k`` exactly for an integer q and a small k) as scaled
integers under first or second differences, with the few values that do not fit (NaN,
the stale marker, infinities, -0.0…) kept raw in an exception list; otherwise as the XOR
of consecutive values' bits in byte planes. The differences are written as zigzagged
varints, as byte planes, or split: a one-byte token per difference (its magnitude) that
zstd compresses with the timestamps, and the remaining low bits raw behind it (noisy
counters and gauges, whose low bits zstd cannot shrink anyway). The body is compressed
with zstd when that makes it smaller. Every value comes back bit for bit. Layout:
``docs/format.md`` ("Dense chunk").

Like every Prometheus chunk, the data starts with the big-endian uint16 sample count;
the encoding byte ``ENCODING_DENSE`` is stored next to it, as for XOR chunks.

The bulk functions are the hot path: chunk ``i`` is ``blob[offsets[i]:offsets[i+1]]``
and one call handles any number of chunks (numba kernels and zstd's bulk calls, which
all release the GIL; the Python side touches each chunk only to hand zstd its frame).
Functions hold no state and are safe to call from worker threads. Decoding is safe on
hostile input: every length is bounded by the chunk's sample count and by its own
bytes, and a malformed chunk raises ``CorruptionError`` naming the chunk.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import zstandard

from storage import _dense_kernels as _k
from storage.errors import CorruptionError

__all__ = [
    "DEFAULT_LEVEL",
    "ENCODING_DENSE",
    "MAX_SAMPLES_PER_CHUNK",
    "TARGET_SAMPLES_PER_CHUNK",
    "DenseCodec",
    "decode_dense",
    "decode_dense_many",
    "encode_dense",
    "encode_dense_many",
]

ENCODING_DENSE = 0x81
"""The chunk encoding byte of dense chunks.

Prometheus numbers its encodings upwards from 1 (XOR 1, histogram 2, float histogram 3,
XOR2 4 in 3.x) and rejects any byte it does not know, so a block holding dense chunks
fails loudly in Prometheus instead of being misread. The high bit is what Prometheus
sets on out-of-order chunks in its head chunk files only, never in a block.
"""

MAX_SAMPLES_PER_CHUNK = 0xFFFF
"""The 2-byte sample count in the chunk header caps a chunk at this many samples."""

TARGET_SAMPLES_PER_CHUNK = 2048
"""Samples a dense chunk should hold: cut a series into ``ceil(n / 2048)`` near-equal
chunks. Larger chunks gain little and cost short reads more (``docs/format.md``)."""

DEFAULT_LEVEL = 19
"""zstd level of ``encode_dense_many``: the smallest chunks, about 4 M samples/s a core.
Level 9 encodes four times faster for 2-9 % more bytes; decoding speed does not change."""

_ZSTD_MAGIC = np.frombuffer(zstandard.MAGIC_NUMBER.to_bytes(4, "little"), np.uint8)

_DECODE_ERRORS = {
    _k.TRUNCATED: "truncated",
    _k.BAD_VARINT: "varint overflows 64 bits",
    _k.BAD_LAYOUT: "unknown layout",
    _k.BAD_LENGTH: "body length does not fit the sample count or the chunk",
    _k.UNORDERED: "timestamps do not increase",
    _k.BAD_EXCEPTIONS: "exception list out of range",
    _k.TRAILING: "bytes left after the last sample",
    _k.BAD_TOKEN: "residual token out of range",
}

ChunkData = bytes | bytearray | memoryview | np.ndarray


def encode_dense(
    timestamps: npt.ArrayLike, values: npt.ArrayLike, *, level: int = DEFAULT_LEVEL
) -> bytes:
    """Encode one series' samples (at most 65535, timestamps increasing) as one chunk."""
    ts, vs = _samples(timestamps, values)
    blob, _ = encode_dense_many(ts, vs, np.array([0, len(ts)], np.int64), level=level)
    return blob.tobytes()


def decode_dense(data: ChunkData) -> tuple[np.ndarray, np.ndarray]:
    """Decode one dense chunk (without the encoding byte) into int64 and float64 arrays."""
    blob = _as_bytes(data)
    ts, vs, _ = decode_dense_many(blob, np.array([0, len(blob)], np.int64))
    return ts, vs


def encode_dense_many(
    timestamps: npt.ArrayLike,
    values: npt.ArrayLike,
    starts: npt.ArrayLike,
    *,
    level: int = DEFAULT_LEVEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode many chunks in one call: chunk ``i`` holds samples ``starts[i]:starts[i+1]``.

    ``starts`` is non-decreasing, inside ``[0, len(timestamps)]``, with at most 65535
    samples between neighbours; timestamps strictly increase inside each chunk
    (``ValueError`` otherwise). Values are any float64 bits. Returns ``(blob, offsets)``:
    uint8 chunk bytes back to back and int64 offsets, chunk ``i`` being
    ``blob[offsets[i]:offsets[i+1]]``.

    Every chunk is written in each way its values allow (scaled integers as varints, as
    byte planes and split; XOR planes too unless the values are all integers with few
    decimals), each compressed at zstd ``level``, and the smallest of these, compressed
    or not, is kept. Temporary memory is a few times the input.
    """
    ts, vs = _samples(timestamps, values)
    bounds = _chunk_bounds(starts, len(ts))
    _check_increasing(ts, bounds)
    nch = len(bounds) - 1
    if nch == 0:  # e.g. a compaction slice whose every sample is deleted
        return np.empty(0, np.uint8), np.zeros(1, np.int64)
    counts = np.diff(bounds)
    decimals, order, width, coding, base, raw_len, sizes = _k.plan(ts, vs, bounds)

    # Every candidate body of every chunk in one buffer, kind after kind; the raw bits
    # of split bodies in another.
    slots = np.zeros(_k.N_BODY_KINDS * nch + 1, np.int64)
    np.cumsum(sizes.ravel(), out=slots[1:])
    bodies = np.empty(int(slots[-1]), np.uint8)
    raw_len = np.where(sizes[_k.BODY_SPLIT] > 0, raw_len, 0)
    raw_slots = np.zeros(nch + 1, np.int64)
    np.cumsum(raw_len, out=raw_slots[1:])
    raw = np.empty(int(raw_slots[-1]), np.uint8)
    for kind in range(_k.N_BODY_KINDS):
        kind_slots = slots[kind * nch : (kind + 1) * nch + 1]
        kind_raw = raw_slots if kind == _k.BODY_SPLIT else np.zeros(nch + 1, np.int64)
        bad = _k.write_bodies(
            ts, vs, vs.view(np.uint64), bounds, kind, decimals, order, width, coding, base,
            kind_slots, bodies, kind_raw, raw,
        )  # fmt: skip
        if bad >= 0:
            raise AssertionError(f"dense chunk {bad}: body size differs from its plan")

    frame_len, frames, frame_start = _compress(bodies, slots, level)
    never = np.iinfo(np.int64).max // 2
    stored = sizes.ravel()
    zipped = np.where(frame_len > 0, frame_len - len(_ZSTD_MAGIC), never)
    stored = np.where(stored > 0, stored, never)
    # Candidate j of chunk c: kind j // 2, compressed when j is odd; ties keep the first.
    choices = np.stack([stored.reshape(-1, nch), zipped.reshape(-1, nch)], axis=1)
    choices = choices.reshape(2 * _k.N_BODY_KINDS, nch)
    costs = choices.copy()  # a split body adds its raw bits and their length
    costs[2 * _k.BODY_SPLIT : 2 * _k.BODY_SPLIT + 2] += raw_len + _uvarint_sizes(raw_len)
    best = np.argmin(costs, axis=0)
    kind = best // 2
    compress = (best % 2).astype(bool)
    flat = kind * nch + np.arange(nch)
    split = kind == _k.BODY_SPLIT

    body_len = sizes[kind, np.arange(nch)]
    pool = np.concatenate([bodies, frames])
    src_start = np.where(compress, len(bodies) + frame_start[flat] + len(_ZSTD_MAGIC), slots[flat])
    src_len = choices[best, np.arange(nch)]
    src_len = np.where(counts > 0, src_len, 0)
    values = np.where(kind == _k.BODY_XOR, _k.VALUES_XOR, order)
    layout = np.where(split, _k.VALUES_SPLIT, values)
    layout |= np.where(kind == _k.BODY_INT_PLANES, _k.FLAG_PLANES, 0)
    layout |= np.where(compress, _k.FLAG_ZSTD, 0)
    layout = np.where(counts > 0, layout, 0)
    decimals = np.where(kind == _k.BODY_XOR, 0, decimals)
    raw_len = np.where(split & (counts > 0), raw_len, 0)
    return _k.assemble(
        pool, src_start, src_len, counts, layout, decimals, body_len, raw, raw_slots[:-1], raw_len
    )


def decode_dense_many(
    blob: ChunkData, offsets: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the chunks ``blob[offsets[i]:offsets[i+1]]`` in one call.

    Returns ``(timestamps int64, values float64, sample_starts int64)`` where chunk
    ``i``'s samples are ``sample_starts[i]:sample_starts[i+1]``. Raises
    ``CorruptionError`` for a malformed chunk (header checked before anything is
    allocated for it; a body must hold exactly its samples and nothing more).
    """
    data = _as_bytes(blob)
    bounds = np.ascontiguousarray(offsets, dtype=np.int64)
    if bounds.ndim != 1 or len(bounds) < 1:
        raise ValueError("offsets must be a 1-d array with at least one entry")
    if len(bounds) > 1 and (bounds[0] < 0 or bounds[-1] > len(data) or np.any(np.diff(bounds) < 0)):
        raise ValueError("offsets must be non-decreasing and inside the blob")
    status, chunk, counts, layout, decimals, body_len, raw_len, payload = _k.read_headers(
        data, bounds
    )
    if status != _k.OK:
        raise CorruptionError(f"dense chunk {chunk}: header: {_DECODE_ERRORS[status]}")

    zipped = np.flatnonzero(layout & _k.FLAG_ZSTD)
    # Split chunks end with their raw bits; the rest is the payload.
    payload_end = bounds[1:] - raw_len
    inflated = _inflate(data, payload_end, payload, body_len, zipped)
    # Stored bodies and raw bits are read where they are, behind the inflated bodies.
    bodies = np.concatenate([inflated, data])
    body_start = payload + len(inflated)
    body_start[zipped] = np.cumsum(body_len[zipped]) - body_len[zipped]
    raw_start = payload_end + len(inflated)

    sample_starts = np.zeros(len(bounds), np.int64)
    np.cumsum(counts, out=sample_starts[1:])
    ts = np.empty(int(sample_starts[-1]), np.int64)
    vs = np.empty(len(ts), np.float64)
    status, chunk, sample = _k.decode_bodies(
        bodies,
        body_start,
        counts,
        layout,
        decimals,
        body_len,
        raw_start,
        raw_len,
        sample_starts,
        ts,
        vs,
        vs.view(np.uint64),
    )
    if status != _k.OK:
        raise CorruptionError(f"dense chunk {chunk}: sample {sample}: {_DECODE_ERRORS[status]}")
    return ts, vs, sample_starts


class DenseCodec:
    """The dense chunk codec for the ``storage.chunkenc`` registry (encoding byte 0x81)."""

    encoding = ENCODING_DENSE
    name = "dense"

    def encode(self, timestamps: npt.ArrayLike, values: npt.ArrayLike) -> bytes:
        """Encode one chunk; see ``encode_dense``."""
        return encode_dense(timestamps, values)

    def decode(self, data: ChunkData) -> tuple[np.ndarray, np.ndarray]:
        """Decode one chunk; see ``decode_dense``."""
        return decode_dense(data)

    def encode_many(
        self, timestamps: npt.ArrayLike, values: npt.ArrayLike, starts: npt.ArrayLike
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode many chunks in one call; see ``encode_dense_many``."""
        return encode_dense_many(timestamps, values, starts)

    def decode_many(
        self, blob: ChunkData, offsets: npt.ArrayLike
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode many chunks in one call; see ``decode_dense_many``."""
        return decode_dense_many(blob, offsets)


def _compress(
    bodies: np.ndarray, slots: np.ndarray, level: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """zstd frames of the non-empty bodies ``bodies[slots[i]:slots[i+1]]``.

    Returns ``(frame_len, frames, frame_start)`` per slot (length 0 for empty slots).
    """
    lengths = np.diff(slots)
    frame_len = np.zeros(len(lengths), np.int64)
    frame_start = np.zeros(len(lengths), np.int64)
    full = np.flatnonzero(lengths)
    if not len(full):
        return frame_len, np.zeros(0, np.uint8), frame_start
    params = zstandard.ZstdCompressionParameters.from_level(
        level, write_content_size=False, write_checksum=False, write_dict_id=False
    )
    segments = np.stack([slots[full], lengths[full]], axis=1).astype(np.uint64)
    out = zstandard.ZstdCompressor(compression_params=params).multi_compress_to_buffer(
        zstandard.BufferWithSegments(bodies.data, segments.data)
    )
    frames, lengths = _joined(out)
    frame_len[full] = lengths
    frame_start[full] = np.cumsum(lengths) - lengths
    return frame_len, frames, frame_start


def _joined(out: zstandard.BufferWithSegmentsCollection) -> tuple[np.ndarray, np.ndarray]:
    """The pieces of a zstd bulk result back to back, and their lengths.

    One Python step per chunk (not per sample): the result offers no single buffer.
    """
    parts = [out[i] for i in range(len(out))]
    lengths = np.fromiter((len(p) for p in parts), np.int64, len(parts))
    # BufferSegment has the buffer protocol; zstandard's stubs do not say so.
    return np.frombuffer(b"".join(parts), np.uint8), lengths  # type: ignore[arg-type]


def _inflate(
    data: np.ndarray,
    payload_end: np.ndarray,
    payload: np.ndarray,
    body_len: np.ndarray,
    zipped: np.ndarray,
) -> np.ndarray:
    """The bodies of chunks ``zipped`` (frames ``data[payload[c]:payload_end[c]]``) back
    to back, decompressed and length-checked."""
    if not len(zipped):
        return np.zeros(0, np.uint8)
    frames, segments = _k.framed_payloads(data, payload, payload_end, zipped, _ZSTD_MAGIC)
    sizes = body_len[zipped]
    try:
        return _inflate_frames(frames, segments, sizes)
    except zstandard.ZstdError:
        pass
    # Find the chunk at fault (an error path: one chunk at a time).
    for i, chunk in enumerate(zipped.tolist()):
        try:
            _inflate_frames(frames, segments[i : i + 1], sizes[i : i + 1])
        except zstandard.ZstdError as exc:
            raise CorruptionError(f"dense chunk {chunk}: compressed body: {exc}") from None
    raise AssertionError("zstd refused the frames together but accepted each one")


def _inflate_frames(frames: np.ndarray, segments: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Inflate the frames ``segments`` (rows of offset, length) of ``frames``, each into
    exactly ``sizes[i]`` bytes, back to back; ``ZstdError`` otherwise.

    zstd writes into buffers of the given sizes, whatever a frame header claims.
    """
    out = zstandard.ZstdDecompressor().multi_decompress_to_buffer(
        zstandard.BufferWithSegments(frames.data, np.ascontiguousarray(segments).data),
        decompressed_sizes=sizes.astype(np.uint64).data,
    )
    bodies, lengths = _joined(out)
    if not np.array_equal(lengths, sizes):
        raise zstandard.ZstdError(f"inflated to {lengths.tolist()} bytes, not {sizes.tolist()}")
    return bodies


def _uvarint_sizes(x: np.ndarray) -> np.ndarray:
    """Bytes of the uvarint of each non-negative ``x``."""
    size = np.ones(len(x), np.int64)
    for k in range(1, 10):
        size += x >= 1 << (7 * k)
    return size


def _samples(timestamps: npt.ArrayLike, values: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    vs = np.ascontiguousarray(values, dtype=np.float64)
    if ts.ndim != 1 or ts.shape != vs.shape:
        raise ValueError("timestamps and values must be 1-d arrays of the same length")
    return ts, vs


def _chunk_bounds(starts: npt.ArrayLike, n_samples: int) -> np.ndarray:
    bounds = np.ascontiguousarray(starts, dtype=np.int64)
    if bounds.ndim != 1 or len(bounds) < 1:
        raise ValueError("starts must be a 1-d array with at least one entry")
    sizes = np.diff(bounds)
    if bounds[0] < 0 or bounds[-1] > n_samples or np.any(sizes < 0):
        raise ValueError("starts must be non-decreasing and inside the sample arrays")
    if np.any(sizes > MAX_SAMPLES_PER_CHUNK):
        raise ValueError(f"a chunk holds at most {MAX_SAMPLES_PER_CHUNK} samples")
    return bounds


def _check_increasing(ts: np.ndarray, bounds: np.ndarray) -> None:
    """Timestamps must strictly increase inside every chunk (the decoder relies on it)."""
    lo, hi = bounds[0], bounds[-1]
    if hi - lo < 2:
        return
    falls = ts[lo + 1 : hi] <= ts[lo : hi - 1]
    inner = bounds[(bounds > lo) & (bounds < hi)]
    falls[inner - lo - 1] = False  # pairs that straddle two chunks
    bad = np.flatnonzero(falls) + lo
    if len(bad):
        raise ValueError(
            f"timestamps must increase inside a chunk: sample {bad[0] + 1} "
            f"({ts[bad[0] + 1]}) follows {ts[bad[0]]}"
        )


def _as_bytes(data: ChunkData) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError("chunk data must be a 1-d uint8 array or a bytes-like object")
        return np.ascontiguousarray(data)
    return np.frombuffer(data, dtype=np.uint8)
