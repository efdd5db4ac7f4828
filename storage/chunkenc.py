"""Chunk codecs, registered by the encoding byte every stored chunk carries.

A codec is a small object: an ``encoding`` byte, a ``name``, and ``encode``/``decode``
for one chunk plus bulk forms for many chunks laid back to back. Readers look the codec
up by the byte they find next to the chunk (``codec_for``) and never assume one
encoding, so denser encodings written by compaction can sit beside Prometheus's.

Encoding bytes follow Prometheus where it defines them (``EncXOR`` = 1); bytes of
encodings Prometheus does not know must stay clear of the ones it does (dense chunks,
``storage.dense``, are 0x81).

``decode_many`` decodes a batch of chunks of mixed encodings in one call per encoding.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from storage._registry_kernels import gather_ranges
from storage.dense import DenseCodec
from storage.errors import CorruptionError
from storage.xor import ENCODING_XOR, XorCodec

__all__ = ["ChunkCodec", "codec_for", "decode_many", "register", "registered"]

ChunkData = bytes | bytearray | memoryview | np.ndarray


class ChunkCodec(Protocol):
    """What every chunk encoding provides.

    ``encode`` takes int64 timestamps and float64 values of one series; ``decode``
    returns them. ``encode_many(timestamps, values, starts)`` encodes chunk ``i`` from
    samples ``starts[i]:starts[i+1]`` and returns ``(blob, offsets)``;
    ``decode_many(blob, offsets)`` returns ``(timestamps, values, sample_starts)``.
    Decoders raise ``CorruptionError`` on malformed chunks and never read outside them.
    Codecs hold no mutable state and are safe to share between threads.
    """

    encoding: int
    name: str

    def encode(self, timestamps: npt.ArrayLike, values: npt.ArrayLike) -> bytes: ...

    def decode(self, data: ChunkData) -> tuple[np.ndarray, np.ndarray]: ...

    def encode_many(
        self, timestamps: npt.ArrayLike, values: npt.ArrayLike, starts: npt.ArrayLike
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def decode_many(
        self, blob: ChunkData, offsets: npt.ArrayLike
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


_CODECS: dict[int, ChunkCodec] = {}


def register(codec: ChunkCodec) -> None:
    """Make ``codec`` the reader and writer of its encoding byte (0..255, used once)."""
    if not 0 <= codec.encoding <= 0xFF:
        raise ValueError(f"chunk encoding {codec.encoding} does not fit in a byte")
    if codec.encoding in _CODECS:
        raise ValueError(f"chunk encoding {codec.encoding} is already registered")
    _CODECS[codec.encoding] = codec


def codec_for(encoding: int) -> ChunkCodec:
    """The codec for an encoding byte read from storage; ``CorruptionError`` if unknown."""
    try:
        return _CODECS[encoding]
    except KeyError:
        raise CorruptionError(f"unknown chunk encoding {encoding}") from None


def registered() -> dict[int, ChunkCodec]:
    """A copy of the registry, encoding byte to codec (for conformance tests)."""
    return dict(_CODECS)


def decode_many(
    encodings: npt.ArrayLike, blob: ChunkData, offsets: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode chunks of any registered encodings: chunk ``i`` is
    ``blob[offsets[i]:offsets[i+1]]`` in encoding ``encodings[i]``.

    Returns ``(timestamps, values, sample_starts)`` as a codec's ``decode_many`` does,
    chunk ``i``'s samples being ``sample_starts[i]:sample_starts[i+1]``. Chunks are
    grouped by encoding, each group decoded in one call (copying its chunks together
    when encodings are mixed) and the samples put back in chunk order. Raises
    ``CorruptionError`` for an unknown encoding or a malformed chunk, naming its index.
    """
    enc = np.ascontiguousarray(encodings, dtype=np.uint8)
    bounds = np.ascontiguousarray(offsets, dtype=np.int64)
    if enc.ndim != 1 or bounds.ndim != 1 or len(bounds) != len(enc) + 1:
        raise ValueError("encodings must be 1-d with one entry per chunk of offsets")
    if len(enc) == 0 or enc.min() == enc.max():  # one encoding: no regrouping
        return codec_for(int(enc[0]) if len(enc) else ENCODING_XOR).decode_many(blob, bounds)
    codecs = [codec_for(int(kind)) for kind in np.unique(enc)]  # unknown bytes fail first
    data = blob if isinstance(blob, np.ndarray) else np.frombuffer(blob, np.uint8)
    if bounds[0] < 0 or bounds[-1] > len(data) or np.any(np.diff(bounds) < 0):
        raise ValueError("offsets must be non-decreasing and inside the blob")
    lengths = np.diff(bounds)
    groups = []
    for codec in codecs:  # a handful of encodings, not a loop over chunks
        ids = np.flatnonzero(enc == codec.encoding)
        group_offsets = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(lengths[ids], out=group_offsets[1:])
        group_blob = gather_ranges(bounds, data, ids)
        try:
            groups.append((ids, *codec.decode_many(group_blob, group_offsets)))
        except CorruptionError:
            raise _locate(codec, ids, group_blob, group_offsets) from None
    counts = np.zeros(len(enc), np.int64)
    for ids, _, _, starts in groups:
        counts[ids] = np.diff(starts)
    sample_starts = np.zeros(len(bounds), np.int64)
    np.cumsum(counts, out=sample_starts[1:])
    ts = np.empty(int(sample_starts[-1]), np.int64)
    vs = np.empty(len(ts), np.float64)
    for ids, group_ts, group_vs, starts in groups:
        # Sample s of the group's chunk j goes to sample_starts[ids[j]] + s - starts[j].
        shift = np.repeat(sample_starts[ids] - starts[:-1], np.diff(starts))
        where = shift + np.arange(len(group_ts))
        ts[where] = group_ts
        vs.view(np.uint64)[where] = group_vs.view(np.uint64)
    return ts, vs, sample_starts


def _locate(
    codec: ChunkCodec, ids: np.ndarray, blob: np.ndarray, offsets: np.ndarray
) -> CorruptionError:
    """The error of the first chunk of a failed group, named by its index in the batch
    (an error path, so one chunk at a time)."""
    for j, chunk in enumerate(ids.tolist()):
        try:
            codec.decode_many(
                blob[offsets[j] : offsets[j + 1]], np.array([0, offsets[j + 1] - offsets[j]])
            )
        except CorruptionError as exc:
            return CorruptionError(f"chunk {chunk} ({codec.name}): {exc}")
    return CorruptionError(f"{codec.name} chunks: cannot decode")


register(XorCodec())
register(DenseCodec())
