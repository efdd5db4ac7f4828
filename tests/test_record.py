"""Series and samples record payloads: exact round trips, pinned bytes, and bounded decoding."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from storage.errors import CorruptionError
from storage.record import (
    CHUNKS,
    SAMPLES,
    SERIES,
    decode_chunks,
    decode_samples,
    decode_series,
    encode_chunks,
    encode_samples,
    encode_series,
)
from storage.xor import decode_xor_many, encode_xor_many

STALE_NAN = 0x7FF0000000000002
PROMETHEUS_NAN = 0x7FF8000000000001

uint64_bits = st.integers(0, 2**64 - 1)


def test_record_types_are_distinct_wal_types() -> None:
    assert (SERIES, SAMPLES, CHUNKS) == (1, 2, 7)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(0, 200))
def test_samples_round_trip_bit_exact(data: st.DataObject, n: int) -> None:
    refs = data.draw(hnp.arrays(np.int64, n))
    timestamps = data.draw(hnp.arrays(np.int64, n))
    bits = data.draw(hnp.arrays(np.uint64, n, elements=uint64_bits))
    values = bits.view(np.float64)
    got_refs, got_ts, got_values = decode_samples(encode_samples(refs, timestamps, values))
    assert got_refs.dtype == np.int64 and got_ts.dtype == np.int64
    np.testing.assert_array_equal(got_refs, refs)
    np.testing.assert_array_equal(got_ts, timestamps)
    np.testing.assert_array_equal(got_values.view(np.uint64), bits)


def test_samples_keep_nan_payloads_and_extremes() -> None:
    bits = np.array([STALE_NAN, PROMETHEUS_NAN, 0x8000000000000000, 0x7FF0000000000000,
                     0xFFFFFFFFFFFFFFFF], np.uint64)
    extremes = np.array([2**63 - 1, -(2**63), 0, -1, 2**63 - 1], np.int64)
    refs, ts, values = decode_samples(encode_samples(extremes, extremes[::-1].copy(),
                                                     bits.view(np.float64)))
    np.testing.assert_array_equal(values.view(np.uint64), bits)
    np.testing.assert_array_equal(refs, extremes)
    np.testing.assert_array_equal(ts, extremes[::-1])


def test_decoded_arrays_are_writable_and_aligned() -> None:
    payload = memoryview(encode_samples(np.arange(3), np.arange(3), np.ones(3))).toreadonly()
    for array in decode_samples(payload):
        assert array.flags.writeable and array.flags.aligned and array.flags.c_contiguous


def test_golden_samples_payload() -> None:
    """Pins the samples layout of docs/format.md."""
    payload = encode_samples(np.array([10, 11]), np.array([1000, 999]),
                             np.array([1.0, 2.0]))
    assert payload.hex() == (
        "01" "000000" "02000000"                                  # encoding, reserved, count
        "1402" "0000" "0000" "0000" "0000" "0000" "0000" "0000"   # refs: zigzag deltas 10, +1
        "d001" "0700" "0000" "0000" "0000" "0000" "0000" "0000"   # timestamps: 1000, -1
        "000000000000f03f" "0000000000000040"                     # values: float64 bits
    )


keys_lists = st.lists(st.binary(max_size=40), max_size=60)


@settings(max_examples=200, deadline=None)
@given(keys=keys_lists, refs_seed=st.integers(0, 2**32), lead=st.binary(max_size=5))
def test_series_round_trip(keys: list[bytes], refs_seed: int, lead: bytes) -> None:
    refs = np.random.default_rng(refs_seed).integers(-(2**63), 2**63 - 1, len(keys),
                                                     dtype=np.int64)
    blob = lead + b"".join(keys)  # offsets need not start at 0
    offsets = np.cumsum([len(lead)] + [len(k) for k in keys], dtype=np.int64)
    got_refs, got_blob, got_offsets = decode_series(encode_series(refs, blob, offsets))
    np.testing.assert_array_equal(got_refs, refs)
    assert got_offsets[0] == 0 and got_offsets[-1] == len(got_blob)
    got = got_blob.tobytes()
    assert [got[a:b] for a, b in itertools.pairwise(got_offsets)] == keys


def test_series_accepts_a_numpy_blob() -> None:
    blob = np.frombuffer(b"abcdef", np.uint8)
    _, got_blob, offsets = decode_series(encode_series(np.array([4, 2]), blob,
                                                       np.array([0, 2, 6])))
    assert got_blob.tobytes() == b"abcdef" and offsets.tolist() == [0, 2, 6]


def test_golden_series_payload() -> None:
    """Pins the series layout of docs/format.md."""
    payload = encode_series(np.array([5, 3]), b"ab\x00c", np.array([0, 2, 4]))
    assert payload.hex() == (
        "01" "000000" "02000000"                                  # encoding, reserved, count
        "0a03" "0000" "0000" "0000" "0000" "0000" "0000" "0000"   # refs: zigzag deltas 5, -2
        "02000000" "02000000"                                     # key lengths
        "6162" "0063"                                             # keys
    )


@pytest.mark.parametrize("call", [
    lambda: encode_samples(np.arange(3), np.arange(2), np.ones(3)),
    lambda: encode_samples(np.arange(3), np.arange(3), np.ones(3, np.complex128)),
    lambda: encode_samples(np.arange(3.0), np.arange(3), np.ones(3)),
    lambda: encode_samples(np.zeros((2, 2), np.int64), np.arange(2), np.ones(2)),
    lambda: encode_series(np.arange(2), b"abc", np.array([0, 1])),
    lambda: encode_series(np.arange(2), b"abc", np.array([0, 2, 1])),
    lambda: encode_series(np.arange(2), b"abc", np.array([0, 1, 4])),
    lambda: encode_series(np.arange(1), b"abc", np.array([-1, 1])),
])
def test_encoders_refuse_inconsistent_columns(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_every_truncation_is_a_corruption_error() -> None:
    samples = encode_samples(np.arange(4), np.arange(4), np.ones(4))
    series = encode_series(np.arange(3), b"abcdef", np.array([0, 1, 3, 6]))
    chunks = encode_chunks(np.array([5, 9]), np.arange(7, dtype=np.uint8), np.array([0, 3, 7]))
    for payload, decode in ((samples, decode_samples), (series, decode_series),
                            (chunks, decode_chunks)):
        for size in range(len(payload)):
            with pytest.raises(CorruptionError):
                decode(payload[:size])
        with pytest.raises(CorruptionError):
            decode(payload + b"\x00")


@pytest.mark.parametrize("header", [
    b"\x02\x00\x00\x00\x00\x00\x00\x00",     # unknown encoding
    b"\x01\x00\x01\x00\x00\x00\x00\x00",     # nonzero reserved byte
    b"\x01\x00\x00\x00\xff\xff\xff\xff",     # count far beyond the payload
])
def test_bad_headers_are_corruption_errors(header: bytes) -> None:
    for decode in (decode_samples, decode_series, decode_chunks):
        with pytest.raises(CorruptionError):
            decode(header + bytes(64))


def test_key_lengths_beyond_the_payload_are_a_corruption_error() -> None:
    payload = bytearray(encode_series(np.arange(2), b"abcd", np.array([0, 2, 4])))
    payload[8 + 16:8 + 20] = (2**32 - 1).to_bytes(4, "little")
    with pytest.raises(CorruptionError, match="keys take"):
        decode_series(bytes(payload))


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_corruption_error(payload: bytes) -> None:
    for decode in (decode_samples, decode_series, decode_chunks):
        with contextlib.suppress(CorruptionError):
            decode(payload)


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(0, 130), max_size=12), seed=st.integers(0, 2**32),
       lead=st.integers(0, 5))
def test_chunks_round_trip(sizes: list[int], seed: int, lead: int) -> None:
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    ts = np.cumsum(rng.integers(1, 60_000, int(starts[-1])))
    vs = rng.integers(0, 2**64, int(starts[-1]), dtype=np.uint64).view(np.float64)
    blob, offsets = encode_xor_many(ts, vs, starts)
    blob = np.concatenate([np.zeros(lead, np.uint8), blob])  # offsets need not start at 0
    refs = rng.integers(0, 2**31, len(sizes))
    got_refs, got_blob, got_offsets = decode_chunks(encode_chunks(refs, blob, offsets + lead))
    assert np.array_equal(got_refs, refs)
    got_ts, got_vs, got_starts = decode_xor_many(got_blob, got_offsets)
    assert np.array_equal(got_starts, starts) and np.array_equal(got_ts, ts)
    assert np.array_equal(got_vs.view(np.uint64), vs.view(np.uint64))
