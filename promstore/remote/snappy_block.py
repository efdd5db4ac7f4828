"""Bounded decompression of the snappy block format used by remote write bodies.

Remote write sends the snappy *block* format (not the framed/stream format): a
little-endian base-128 varint holding the uncompressed length, then the compressed
elements. The length header is read and checked against the caller's limit before
anything is allocated, so a tiny body that declares gigabytes (a "snappy bomb")
is rejected at the cost of reading a few bytes.

The decompression itself is done by cramjam (the engine under python-snappy),
which releases the GIL, so this is safe and useful to call from a worker thread.
"""

from __future__ import annotations

import cramjam

from storage.errors import BadDataError, TooLargeError

__all__ = ["decompress"]

# The format stores the length as a uint32, so its varint is at most 5 bytes.
_MAX_HEADER_BYTES = 5
_MAX_FORMAT_LENGTH = 0xFFFF_FFFF
# Best case for the format: a 3-byte copy element yields 64 bytes. A declared length
# beyond 22 bytes per body byte cannot be honest, whatever the limit says.
_MAX_EXPANSION = 22


def _decoded_length(body: bytes | memoryview) -> tuple[int, int]:
    """Return ``(uncompressed length, header size)`` read from a block's varint header.

    Raises BadDataError if the header is missing, runs past the body, is longer than
    five bytes or declares more than the format's 4 GiB - 1.
    """
    length = 0
    for i in range(min(len(body), _MAX_HEADER_BYTES)):
        byte = body[i]
        length |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if length > _MAX_FORMAT_LENGTH:
                raise BadDataError(
                    f"invalid snappy block: declared length {length} exceeds the format's "
                    f"maximum {_MAX_FORMAT_LENGTH}"
                )
            return length, i + 1
    if len(body) < _MAX_HEADER_BYTES:
        raise BadDataError("invalid snappy block: length header truncated")
    raise BadDataError(
        f"invalid snappy block: length header longer than {_MAX_HEADER_BYTES} bytes"
    )


def decompress(body: bytes | memoryview, max_decoded: int) -> bytearray:
    """Decompress one snappy block, refusing to produce more than ``max_decoded`` bytes.

    Raises TooLargeError when the declared length exceeds ``max_decoded`` (checked
    before any allocation) and BadDataError when the header or the compressed
    elements are malformed or do not produce exactly the declared length.
    """
    length, header_size = _decoded_length(body)
    if length > max_decoded:
        raise TooLargeError(
            f"snappy block declares {length} decompressed bytes, limit is {max_decoded}"
        )
    if length > (len(body) - header_size) * _MAX_EXPANSION:
        raise BadDataError(
            f"invalid snappy block: declared length {length} is impossible for "
            f"{len(body)} compressed bytes"
        )
    # Straight into a buffer of the declared size: half the time of decompressing into
    # cramjam's own buffer and copying that out.
    out = bytearray(length)
    try:
        written = cramjam.snappy.decompress_raw_into(body, out)
    except cramjam.DecompressionError as exc:
        raise BadDataError(f"invalid snappy block: {exc}") from None
    if written != length:
        raise BadDataError(
            f"invalid snappy block: decompressed to {written} bytes, header declares {length}"
        )
    return out
