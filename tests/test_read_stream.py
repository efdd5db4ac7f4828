"""Framing of streamed remote-read responses."""

from __future__ import annotations

import struct

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promstore.remote.pb import remote_pb2, types_pb2
from promstore.remote.read_stream import (
    DEFAULT_MAX_FRAME,
    decode_frames,
    decode_responses,
    encode_frame,
)
from storage.errors import BadDataError


def response(name: str, *chunks: bytes, query_index: int = 0) -> bytes:
    series = types_pb2.ChunkedSeries(
        labels=[types_pb2.Label(name="__name__", value=name)],
        chunks=[types_pb2.Chunk(min_time_ms=-5, max_time_ms=10, type=types_pb2.Chunk.XOR,
                                data=c) for c in chunks])
    return remote_pb2.ChunkedReadResponse(chunked_series=[series],
                                          query_index=query_index).SerializeToString()


MESSAGES = [response("up", b"\x00\x01" + bytes(9)), response("a" * 300, bytes(200) * 3,
                                                              query_index=2)]
BODY = b"".join(encode_frame(m) for m in MESSAGES)


def test_layout_is_length_crc_message() -> None:
    message = MESSAGES[0]
    frame = encode_frame(message)
    assert frame[0] == len(message) < 0x80
    assert frame[1:5] == struct.pack(">I", crc32c.crc32c(message))
    assert frame[5:] == message
    # Lengths of 128 and more take a multi-byte varint.
    long = encode_frame(MESSAGES[1])
    assert long[:2] == bytes([len(MESSAGES[1]) & 0x7F | 0x80, len(MESSAGES[1]) >> 7])


def test_crc_is_castagnoli() -> None:
    # The check value of CRC-32C over "123456789".
    assert encode_frame(b"123456789")[1:5] == bytes.fromhex("e3069283")


def test_round_trip_and_parse() -> None:
    assert list(decode_frames(BODY, DEFAULT_MAX_FRAME)) == MESSAGES
    assert list(decode_frames(memoryview(BODY), DEFAULT_MAX_FRAME)) == MESSAGES
    parsed = list(decode_responses(BODY))
    assert [r.query_index for r in parsed] == [0, 2]
    assert parsed[1].chunked_series[0].labels[0].value == "a" * 300
    assert parsed[1].chunked_series[0].chunks[0].data == bytes(200) * 3


def test_empty_body_and_empty_message() -> None:
    assert list(decode_frames(b"", 10)) == []
    assert encode_frame(b"") == b""
    # A peer may still send a zero-length frame; its checksum is that of nothing.
    assert list(decode_frames(b"\x00" + bytes(4), 10)) == [b""]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=400), max_size=6))
def test_round_trip_any_messages(messages: list[bytes]) -> None:
    body = b"".join(encode_frame(m) for m in messages)
    assert list(decode_frames(body, 400)) == messages


def test_limit_is_inclusive_and_checked_before_reading() -> None:
    size = len(MESSAGES[0])
    assert list(decode_frames(encode_frame(MESSAGES[0]), size)) == [MESSAGES[0]]
    with pytest.raises(BadDataError, match=f"frame 0 at byte 0: length {size} exceeds "
                                           f"the limit of {size - 1} bytes"):
        list(decode_frames(encode_frame(MESSAGES[0]), size - 1))
    # A huge declared length with nothing behind it is refused for its size.
    with pytest.raises(BadDataError, match="exceeds the limit"):
        list(decode_frames(b"\xff\xff\xff\xff\x0f", DEFAULT_MAX_FRAME))


def test_every_truncation_is_rejected_after_the_whole_frames() -> None:
    first = len(encode_frame(MESSAGES[0]))
    for cut in range(1, len(BODY)):
        if cut == first:
            continue
        frames = decode_frames(BODY[:cut], DEFAULT_MAX_FRAME)
        if cut > first:
            assert next(frames) == MESSAGES[0]
        with pytest.raises(BadDataError, match="truncated"):
            next(frames)


def test_bad_checksum_names_the_frame() -> None:
    body = bytearray(BODY)
    body[-1] ^= 0x01
    frames = decode_frames(bytes(body), DEFAULT_MAX_FRAME)
    assert next(frames) == MESSAGES[0]
    offset = len(encode_frame(MESSAGES[0]))
    with pytest.raises(BadDataError, match=f"frame 1 at byte {offset}: checksum mismatch"):
        next(frames)


@pytest.mark.parametrize("prefix", [b"\x80" * 10 + b"\x01", b"\xff" * 9 + b"\x02"])
def test_overflowing_length_varint(prefix: bytes) -> None:
    with pytest.raises(BadDataError, match="overflows 64 bits"):
        list(decode_frames(prefix + bytes(8), DEFAULT_MAX_FRAME))


def test_message_that_is_not_protobuf() -> None:
    with pytest.raises(BadDataError, match="frame 0: not a valid ChunkedReadResponse"):
        list(decode_responses(encode_frame(b"\x0a\xff\x01")))


def test_negative_limit_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        list(decode_frames(BODY, -1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_escapes_as_another_error(data: bytes) -> None:
    try:
        for message in decode_frames(data, 1000):
            assert len(message) <= 1000
    except BadDataError:
        pass
