"""The framing of streamed remote-read responses (``STREAMED_XOR_CHUNKS``).

A streamed response body is a run of frames, each one serialized
``prometheus.ChunkedReadResponse`` wrapped as::

    uvarint length | uint32 big-endian CRC-32C (Castagnoli) of the message | message

There is no end marker: the body ends after the last whole frame. Prometheus never
sends an empty frame, and a frame may hold part of a series' chunks, the next frame
repeating the series' labels with the rest.

Frames carry whole chunks (hundreds of samples each), so walking them in Python and
parsing them with the reference protobuf classes costs little next to decoding the
chunks themselves, which is left to ``storage.xor``.
"""

from __future__ import annotations

from collections.abc import Iterator

import crc32c
from google.protobuf.message import DecodeError

from promstore.remote.pb import remote_pb2
from storage.errors import BadDataError

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_MAX_FRAME",
    "decode_frames",
    "decode_responses",
    "encode_frame",
]

CONTENT_TYPE = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
"""The ``Content-Type`` of a streamed remote-read response."""

DEFAULT_MAX_FRAME = 50_000_000
"""The largest frame a reader accepts unless told otherwise, in bytes: the default of
Prometheus's remote-read client (``chunked_read_limit``). Servers aim at 1 MiB frames
but may exceed that by one chunk, so readers must allow some slack."""

_CRC_BYTES = 4
_MAX_UVARINT_BYTES = 10  # 64 bits in groups of 7


def encode_frame(message: bytes | bytearray | memoryview) -> bytes:
    """Wrap one serialized ``ChunkedReadResponse`` as a frame of a streamed response.

    An empty message gives no bytes at all: it would decode to an empty response, and
    Prometheus does not send one either.
    """
    size = len(message)
    if size == 0:
        return b""
    return _uvarint(size) + crc32c.crc32c(message).to_bytes(_CRC_BYTES, "big") + bytes(message)


def decode_frames(data: bytes | bytearray | memoryview, max_frame: int) -> Iterator[bytes]:
    """Yield the message of every frame of a whole streamed response body, in order.

    Each frame's declared length is checked against ``max_frame`` (bytes) before the
    message is touched. Raises ``BadDataError`` naming the frame and its byte offset
    for a length varint that overflows or runs past the body, a length over
    ``max_frame``, a frame cut short, or a checksum that does not match. Frames before
    the bad one have already been yielded.
    """
    if max_frame < 0:
        raise ValueError("max_frame must not be negative")
    view = memoryview(data).cast("B")
    pos, end, index = 0, len(view), 0
    while pos < end:
        start = pos
        size, pos = _read_uvarint(view, pos, index, start)
        if size > max_frame:
            raise BadDataError(
                f"remote read frame {index} at byte {start}: length {size} exceeds the "
                f"limit of {max_frame} bytes"
            )
        if end - pos < _CRC_BYTES + size:
            raise BadDataError(
                f"remote read frame {index} at byte {start}: truncated, {size} message "
                f"bytes declared but {max(end - pos - _CRC_BYTES, 0)} left"
            )
        expected = int.from_bytes(view[pos : pos + _CRC_BYTES], "big")
        pos += _CRC_BYTES
        message = bytes(view[pos : pos + size])
        pos += size
        actual = crc32c.crc32c(message)
        if actual != expected:
            raise BadDataError(
                f"remote read frame {index} at byte {start}: checksum mismatch "
                f"(frame says {expected:#010x}, message has {actual:#010x})"
            )
        yield message
        index += 1


def decode_responses(
    data: bytes | bytearray | memoryview, max_frame: int = DEFAULT_MAX_FRAME
) -> Iterator[remote_pb2.ChunkedReadResponse]:
    """Yield every frame of a streamed response body parsed as a ``ChunkedReadResponse``.

    Raises ``BadDataError`` as ``decode_frames`` does, and for a message that is not
    valid protobuf.
    """
    for index, message in enumerate(decode_frames(data, max_frame)):
        response = remote_pb2.ChunkedReadResponse()
        try:
            response.ParseFromString(message)
        except DecodeError as exc:
            raise BadDataError(
                f"remote read frame {index}: not a valid ChunkedReadResponse: {exc}"
            ) from None
        yield response


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_uvarint(view: memoryview, pos: int, index: int, start: int) -> tuple[int, int]:
    """Read a frame's length varint at ``pos``; return ``(value, position after it)``."""
    value = 0
    for i in range(_MAX_UVARINT_BYTES):
        if pos + i >= len(view):
            raise BadDataError(
                f"remote read frame {index} at byte {start}: length varint truncated"
            )
        byte = view[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if value >> 64:
                break
            return value, pos + i + 1
    raise BadDataError(
        f"remote read frame {index} at byte {start}: length varint overflows 64 bits"
    )
