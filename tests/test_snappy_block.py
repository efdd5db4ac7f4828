"""Bounded snappy block decompression."""

from __future__ import annotations

import cramjam
import pytest
import snappy
from hypothesis import given, settings
from hypothesis import strategies as st

from promstore.remote import snappy_block
from promstore.remote.snappy_block import decompress
from storage.errors import BadDataError, TooLargeError

LIMIT = 32 << 20
TEXT = b"http_requests_total{job=\"api\",instance=\"10.0.0.1:9090\"} 1027\n" * 500


def compress(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=5000), st.just(TEXT), st.just(b"")))
def test_round_trip(data: bytes) -> None:
    assert decompress(compress(data), LIMIT) == data
    assert decompress(memoryview(compress(data)), LIMIT) == data


def test_reads_what_python_snappy_writes() -> None:
    assert decompress(snappy.compress(TEXT), LIMIT) == TEXT


def test_limit_is_inclusive() -> None:
    body = compress(TEXT)
    assert decompress(body, len(TEXT)) == TEXT
    with pytest.raises(TooLargeError, match=f"declares {len(TEXT)} .* limit is {len(TEXT) - 1}"):
        decompress(body, len(TEXT) - 1)


def test_every_truncation_is_rejected() -> None:
    body = compress(TEXT[:3000] + bytes(range(256)))
    for cut in range(len(body)):
        with pytest.raises(BadDataError, match="invalid snappy block"):
            decompress(body[:cut], LIMIT)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_escapes_as_another_error(data: bytes) -> None:
    try:
        out = decompress(data, LIMIT)
    except (BadDataError, TooLargeError):
        return
    assert out == bytes(cramjam.snappy.decompress_raw(data))


@pytest.mark.parametrize("header, problem", [
    (b"", "length header truncated"),
    (b"\x80\x80", "length header truncated"),
    (b"\x80\x80\x80\x80\x80\x01", "longer than 5 bytes"),
    (b"\xff\xff\xff\xff\x1f", "exceeds the format's maximum"),
])
def test_bad_headers(header: bytes, problem: str) -> None:
    with pytest.raises(BadDataError, match=problem):
        decompress(header, LIMIT)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


@pytest.mark.parametrize("declared", [len(TEXT) - 1, len(TEXT) + 1])
def test_header_must_match_contents(declared: int) -> None:
    elements = compress(TEXT)[len(uvarint(len(TEXT))):]
    with pytest.raises(BadDataError, match="invalid snappy block"):
        decompress(uvarint(declared) + elements, LIMIT)


def test_bomb_is_rejected_without_decompressing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_: bytes) -> bytes:
        raise AssertionError("decompression must not start")

    monkeypatch.setattr(snappy_block.cramjam.snappy, "decompress_raw", refuse)
    four_gib = b"\xff\xff\xff\xff\x0f"  # 2**32 - 1 bytes declared
    with pytest.raises(TooLargeError, match="declares 4294967295"):
        decompress(four_gib + b"\x00" * 64, LIMIT)
    # Within the limit but impossible for the body's size: still never decompressed.
    with pytest.raises(BadDataError, match="impossible for"):
        decompress(b"\x80\x80\x80\x01" + b"\xfe\x00\x00", LIMIT)
