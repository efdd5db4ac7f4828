"""Chunk codecs, registered by the encoding byte every stored chunk carries.

A codec is a small object: an ``encoding`` byte, a ``name``, and ``encode``/``decode``
for one chunk plus bulk forms for many chunks laid back to back. Readers look the codec
up by the byte they find next to the chunk (``codec_for``) and never assume one
encoding, so denser encodings written by compaction can sit beside Prometheus's.

Encoding bytes follow Prometheus where it defines them (``EncXOR`` = 1); bytes of
encodings Prometheus does not know must stay clear of the ones it does.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from storage.errors import CorruptionError
from storage.xor import XorCodec

__all__ = ["ChunkCodec", "codec_for", "register", "registered"]

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


register(XorCodec())
