"""Dense chunk codec: golden bytes, lossless round trips, layout choice, hostile input,
and the registry's mixed-encoding bulk decode."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import _dense_kernels as kernels
from storage.chunkenc import codec_for, decode_many, registered
from storage.dense import (
    ENCODING_DENSE,
    MAX_SAMPLES_PER_CHUNK,
    DenseCodec,
    decode_dense,
    decode_dense_many,
    encode_dense,
    encode_dense_many,
)
from storage.errors import CorruptionError
from storage.xor import ENCODING_XOR, decode_xor_many, encode_xor_many

U64 = (1 << 64) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
STALE_NAN = 0x7FF0000000000002
PROM_NAN = 0x7FF8000000000001

SPECIAL_BITS = [
    STALE_NAN,
    PROM_NAN,
    0x7FF0000000000000,  # +Inf
    0xFFF0000000000000,  # -Inf
    0x8000000000000000,  # -0.0
    0x0,
    0x1,  # smallest subnormal
    0x000FFFFFFFFFFFFF,  # largest subnormal
    0x0010000000000000,  # smallest normal
    0x7FEFFFFFFFFFFFFF,  # largest finite
    0x7FFFFFFFFFFFFFFF,  # NaN with every payload bit set
    0xFFFFFFFFFFFFFFFF,
    0x3FD3333333333334,  # 0.1 + 0.2
    0x4340000000000001,  # 2**53 + 2
]


def floats_from_bits(bits: list[int]) -> np.ndarray:
    return np.array(bits, dtype=np.uint64).view(np.float64)


def bits_of(values: np.ndarray) -> list[int]:
    return np.asarray(values, dtype=np.float64).view(np.uint64).tolist()


def assert_same(got: tuple[np.ndarray, ...], ts: np.ndarray, vs: np.ndarray) -> None:
    assert got[0].dtype == np.int64 and got[1].dtype == np.float64
    assert got[0].tolist() == np.asarray(ts).tolist()
    assert bits_of(got[1]) == bits_of(vs)


def layout_of(chunk: bytes) -> int:
    return chunk[2]


def scrapes(
    n: int, *, start: int = 1_700_000_000_000, jitter: int = 0, seed: int = 0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return start + 15_000 * np.arange(n, dtype=np.int64) + rng.integers(-jitter, jitter + 1, n)


# --------------------------------------------------------------------------- golden bytes


def test_golden_scaled_integers() -> None:
    # count 3 | layout 01 (deltas, varints, stored) | decimals 0 | body 9 bytes:
    # t0 zigzag(1000) d0 0f | Δ1 15000 98 75 | dod 0 | no exceptions | q0 zigzag(1) 02 |
    # deltas zigzag(1) 02 02.
    chunk = encode_dense([1000, 16000, 31000], [1.0, 2.0, 3.0])
    assert chunk.hex() == "0003010009d00f98750000020202"
    assert_same(decode_dense(chunk), np.array([1000, 16000, 31000]), np.array([1.0, 2.0, 3.0]))


def test_golden_exception_list() -> None:
    # decimals 2 | t0 zigzag(-5) 09, Δ1 05, dods 00 00 | one exception, gap 1 (sample 1),
    # its bits little-endian | q0 zigzag(25) 32 | deltas zigzag(50) 64 64.
    vs = floats_from_bits([0x3FD0000000000000, STALE_NAN, 0x3FE8000000000000, 0x3FF4000000000000])
    chunk = encode_dense([-5, 0, 5, 10], vs)
    assert chunk.hex() == "0004010211090500000101020000000000f07f326464"
    assert_same(decode_dense(chunk), np.array([-5, 0, 5, 10]), vs)


def test_golden_xor_planes_and_empty() -> None:
    # layout 00 | body 9: t0 zigzag(7) 0e | the bits of -0.0, plane by plane (low first).
    assert encode_dense([7], [-0.0]).hex() == "00010000090e0000000000000080"
    assert encode_dense([], []).hex() == "0000000000"
    assert_same(decode_dense(bytes.fromhex("0000000000")), np.array([]), np.array([]))


def test_no_chunks_at_all() -> None:
    # What compacting a slice whose every sample is deleted asks for.
    blob, offsets = encode_dense_many(np.empty(0, np.int64), np.empty(0), np.zeros(1, np.int64))
    assert len(blob) == 0 and offsets.tolist() == [0]
    ts, vs, starts = decode_dense_many(blob, offsets)
    assert len(ts) == len(vs) == 0 and starts.tolist() == [0]


def test_golden_compressed_chunk() -> None:
    # count 300 | layout 82 (zstd, second differences) | decimals 2 | body 649 bytes |
    # a zstd frame without its magic number. Only the decoding is pinned: zstd versions
    # may compress differently.
    chunk = bytes.fromhex("012c820289050000c500006080a0abfef96298750032ab0203004a2b0a81c050542007")
    ts = 1_700_000_000_000 + 15_000 * np.arange(300)
    vs = np.cumsum(np.arange(300) % 7) / 4
    assert_same(decode_dense(chunk), ts, vs)
    again = encode_dense(ts, vs)
    assert again[:6] == chunk[:6]
    assert_same(decode_dense(again), ts, vs)


def test_golden_split() -> None:
    # count 3 | layout 03 (split, stored) | decimals 0 | body 12 bytes | raw 1 byte:
    # timestamps d00f 9875 00 | coding 05 (first differences minus the base, as they
    # are) | base zigzag(10) 14 | no exceptions | q0 zigzag(100) c8 01 | tokens 00 (u 0)
    # and 04 (u 5 = 0b101: bit length 3, bit below the leading one 0, one raw bit) |
    # raw bits: 1.
    chunk = bytes.fromhex("000303000c01" "d00f987500" "0514" "00" "c801" "0004" "01")
    assert_same(decode_dense(chunk), np.array([1000, 16000, 31000]), np.array([100.0, 110, 125]))


def test_tokens_cover_every_bit_length() -> None:
    for u in [0, 1, 2, 3, 4, 5, 6, 7, 8, 255, 256, 2**32 - 1, 2**32, 2**62 + 5, U64]:
        token, extra = kernels._token(np.uint64(u))
        assert token <= kernels.MAX_TOKEN and extra == max(u.bit_length() - 2, 0)
        if u >= 2:  # the leading one and the bit below it are in the token
            top = (2 | token & 1) << extra
            assert top == u >> extra << extra and token >> 1 == u.bit_length() - 1


# --------------------------------------------------------------------------- round trips

int64s = st.integers(INT64_MIN, INT64_MAX)
value_bits = st.one_of(
    st.sampled_from(SPECIAL_BITS),
    st.integers(0, U64),
    st.integers(-(10**6), 10**6).map(lambda n: bits_of(np.array([n / 100]))[0]),
)


@st.composite
def timestamps(draw: st.DrawFn, max_size: int = 300) -> np.ndarray:
    """Strictly increasing int64s: regular, jittered, huge jumps, anywhere in the range."""
    n = draw(st.integers(0, max_size))
    kind = draw(st.sampled_from(["regular", "jitter", "any"]))
    if kind == "any":
        drawn = draw(st.lists(int64s, min_size=n, max_size=n, unique=True))
        return np.array(sorted(drawn), dtype=np.int64)
    step = draw(st.sampled_from([1, 1000, 15_000, 1 << 40]))
    start = draw(st.integers(INT64_MIN + 5, INT64_MAX - step * (n + 1)))  # room for jitter
    ts = start + step * np.arange(n, dtype=np.int64)
    if kind == "jitter" and step > 10:
        ts += np.array(draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)), np.int64)
    return ts


@st.composite
def decimal_values(draw: st.DrawFn, n: int) -> np.ndarray:
    """Counters and gauges with k decimals, a few special values sprinkled in."""
    k = draw(st.integers(0, 12))
    start = draw(st.integers(-(10**12), 10**12))
    steps = draw(st.lists(st.integers(-(10**6), 10**6), min_size=n, max_size=n))
    vs = (start + np.cumsum(np.array(steps, dtype=np.int64))) / 10.0**k
    for _ in range(draw(st.integers(0, 3)) if n else 0):
        vs[draw(st.integers(0, n - 1))] = floats_from_bits([draw(st.sampled_from(SPECIAL_BITS))])[0]
    return vs


@st.composite
def chunks(draw: st.DrawFn, max_size: int = 300) -> tuple[np.ndarray, np.ndarray]:
    ts = draw(timestamps(max_size))
    n = len(ts)
    if draw(st.booleans()):
        vs = draw(decimal_values(n))
    else:
        vs = floats_from_bits(draw(st.lists(value_bits, min_size=n, max_size=n)))
    return ts, vs


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks())
def test_round_trip(sample: tuple[np.ndarray, np.ndarray]) -> None:
    ts, vs = sample
    chunk = encode_dense(ts, vs)
    assert int.from_bytes(chunk[:2], "big") == len(ts)
    assert_same(decode_dense(chunk), ts, vs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(chunks(max_size=120), min_size=1, max_size=6))
def test_bulk_equals_single(samples: list[tuple[np.ndarray, np.ndarray]]) -> None:
    ts = np.concatenate([s[0] for s in samples])
    vs = np.concatenate([s[1] for s in samples])
    starts = np.concatenate([[0], np.cumsum([len(s[0]) for s in samples])])
    blob, offsets = encode_dense_many(ts, vs, starts)
    for i, (t, v) in enumerate(samples):
        assert blob[offsets[i] : offsets[i + 1]].tobytes() == encode_dense(t, v)
    got_ts, got_vs, sample_starts = decode_dense_many(blob, offsets)
    assert sample_starts.tolist() == starts.tolist()
    assert_same((got_ts, got_vs), ts, vs)


def uvarint(x: int) -> bytes:
    out = b""
    while x >= 0x80:
        out += bytes([x & 0x7F | 0x80])
        x >>= 7
    return out + bytes([x])


def forced_split(ts: np.ndarray, vs: np.ndarray, *, compress: bool) -> bytes | None:
    """The chunk in the split layout, whether or not the encoder would pick it (None when
    no value is decimal-like)."""
    bounds = np.array([0, len(ts)], np.int64)
    decimals, order, width, coding, base, raw_len, sizes = kernels.plan(ts, vs, bounds)
    size = int(sizes[kernels.BODY_SPLIT, 0])
    if size == 0:
        return None
    body = np.empty(size, np.uint8)
    raw = np.empty(raw_len[0], np.uint8)
    bad = kernels.write_bodies(
        ts, vs, vs.view(np.uint64), bounds, kernels.BODY_SPLIT, decimals, order, width, coding,
        base, np.array([0, size]), body, np.array([0, len(raw)]), raw,
    )  # fmt: skip
    assert bad == -1
    layout = kernels.VALUES_SPLIT | (kernels.FLAG_ZSTD if compress else 0)
    payload = zstd_payload(body.tobytes()) if compress else body.tobytes()
    head = header(len(ts), layout, int(decimals[0]), size) + uvarint(len(raw))
    return head + payload + raw.tobytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks(), st.booleans())
def test_split_layout_round_trips_whatever_the_encoder_picks(
    sample: tuple[np.ndarray, np.ndarray], compress: bool
) -> None:
    ts, vs = sample
    chunk = forced_split(ts, vs, compress=compress)
    if chunk is not None:
        assert_same(decode_dense(chunk), ts, vs)


def test_split_layout_wins_on_noisy_counters_and_gauges() -> None:
    n = 2048
    ts = scrapes(n)
    rng = np.random.default_rng(5)
    counter = np.cumsum(np.floor(rng.gamma(4.0, 2500.0, n))) / 100
    gauge = np.cumsum(np.rint(rng.standard_normal(n) * 3e6))
    for vs in (counter, gauge):
        chunk = encode_dense(ts, vs)
        assert layout_of(chunk) & kernels.VALUES_MASK == kernels.VALUES_SPLIT
        assert_same(decode_dense(chunk), ts, vs)


def test_special_values_survive_in_every_layout() -> None:
    specials = floats_from_bits(SPECIAL_BITS)
    n = 2000
    ts = scrapes(n, jitter=3)
    counter = np.cumsum(np.arange(n) % 13) / 100.0
    random = np.random.default_rng(1).random(n)
    for vs in (counter, random, np.full(n, np.nan)):
        vs = vs.copy()
        vs[7 : 7 + len(specials)] = specials
        vs[-1] = floats_from_bits([STALE_NAN])[0]
        chunk = encode_dense(ts, vs)
        assert_same(decode_dense(chunk), ts, vs)


def test_extreme_timestamps_and_integers() -> None:
    ts = np.array([INT64_MIN, INT64_MIN + 1, 0, INT64_MAX - 1, INT64_MAX], np.int64)
    for vs in (
        np.array([-(2.0**62), 2.0**62, -(2.0**62), 2.0**62, 0.0]),  # differences wrap
        np.array([1e300, -1e-300, 5e-324, 1e20, 123456789.123456789]),
    ):
        assert_same(decode_dense(encode_dense(ts, vs)), ts, vs)


def test_every_chunk_size_up_to_the_limit() -> None:
    for n in (0, 1, 2, 3, 119, 120, 2048, MAX_SAMPLES_PER_CHUNK):
        ts = scrapes(n)
        vs = np.arange(n) * 0.5
        chunk = encode_dense(ts, vs)
        assert int.from_bytes(chunk[:2], "big") == n
        assert_same(decode_dense(chunk), ts, vs)


# --------------------------------------------------------------------------- layout choice


def test_layout_follows_the_values() -> None:
    n = 2048
    ts = scrapes(n)
    rng = np.random.default_rng(3)
    counter = np.cumsum(rng.integers(0, 500, n)) / 100.0
    constant = np.full(n, 42.0)
    noise = rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)  # no decimals
    stale_tail = counter.copy()
    stale_tail[-1] = floats_from_bits([STALE_NAN])[0]
    assert layout_of(encode_dense(ts, counter)) & kernels.VALUES_MASK != kernels.VALUES_XOR
    assert encode_dense(ts, counter)[3] == 2  # two decimals
    assert layout_of(encode_dense(ts, noise)) & kernels.VALUES_MASK == kernels.VALUES_XOR
    # One stale marker does not cost the integer layout: it goes to the exception list.
    assert layout_of(encode_dense(ts, stale_tail)) & kernels.VALUES_MASK != kernels.VALUES_XOR
    assert layout_of(encode_dense(ts, constant)) & kernels.FLAG_ZSTD
    assert len(encode_dense(ts, constant)) < 40
    xor = encode_xor_many(ts, counter, np.arange(0, n + 1, 128))[0]
    assert len(encode_dense(ts, counter)) < len(xor) / 2


def test_level_changes_size_not_samples() -> None:
    ts = scrapes(3000, jitter=2)
    vs = np.cumsum(np.random.default_rng(4).integers(0, 100, 3000)).astype(float)
    for level in (1, 3, 19):
        assert_same(decode_dense(encode_dense(ts, vs, level=level)), ts, vs)


def test_timestamps_must_increase_inside_a_chunk() -> None:
    with pytest.raises(ValueError, match="increase"):
        encode_dense([1, 2, 2, 3], [0.0] * 4)
    with pytest.raises(ValueError, match="sample 2"):
        encode_dense([1, 5, 3], [0.0] * 3)
    # Neighbouring chunks may overlap; only order inside a chunk matters.
    blob, offsets = encode_dense_many([1, 2, 1, 2], [0.0] * 4, [0, 2, 4])
    assert decode_dense_many(blob, offsets)[0].tolist() == [1, 2, 1, 2]
    # Samples outside every chunk are not looked at.
    encode_dense_many([9, 1, 2, 0], [0.0] * 4, [1, 3])


def test_bad_encode_arguments() -> None:
    with pytest.raises(ValueError, match="at most 65535"):
        encode_dense(np.arange(MAX_SAMPLES_PER_CHUNK + 1), np.zeros(MAX_SAMPLES_PER_CHUNK + 1))
    with pytest.raises(ValueError):
        encode_dense([1, 2], [1.0])
    for starts in ([0, 3], [2, 1], [-1, 1], []):
        with pytest.raises(ValueError):
            encode_dense_many([1, 2], [1.0, 2.0], starts)


# --------------------------------------------------------------------------- hostile input


def realistic_chunks() -> list[bytes]:
    n = 500
    ts = scrapes(n, jitter=20)
    counter = np.cumsum(np.arange(n) % 11) / 10.0
    counter[17] = floats_from_bits([STALE_NAN])[0]
    noisy = np.cumsum(np.floor(np.random.default_rng(6).gamma(4.0, 2500.0, n)))
    noisy[17] = floats_from_bits([STALE_NAN])[0]
    split = forced_split(ts[:40], noisy[:40], compress=False)
    assert split is not None
    chunks = [
        encode_dense(ts[:40], counter[:40]),  # stored
        encode_dense(ts, counter),  # compressed integers
        encode_dense(ts, np.sin(np.arange(n))),  # compressed XOR planes
        encode_dense(scrapes(n), noisy),  # compressed split
        split,  # stored split
    ]
    assert [layout_of(c) for c in chunks[-2:]] == [0x83, 0x03]
    return chunks


def test_every_truncation_is_detected() -> None:
    for chunk in realistic_chunks():
        for cut in range(len(chunk)):
            with pytest.raises(CorruptionError):
                decode_dense(chunk[:cut])
        blob = np.frombuffer(chunk + chunk[: len(chunk) - 1], np.uint8)
        with pytest.raises(CorruptionError, match="dense chunk 1"):
            decode_dense_many(blob, [0, len(chunk), len(blob)])


def test_trailing_bytes_are_rejected() -> None:
    chunk = bytearray(encode_dense([1, 2], [1.0, 2.0]))
    with pytest.raises(CorruptionError, match="body length"):
        decode_dense(bytes(chunk) + b"\x00")
    # A body that holds more than its samples: the length grows by one, a byte is added.
    chunk[4] += 1
    with pytest.raises(CorruptionError, match="left after the last sample"):
        decode_dense(bytes(chunk) + b"\x00")


def header(count: int, layout: int, decimals: int, body_len: int) -> bytes:
    out = count.to_bytes(2, "big") + bytes([layout, decimals])
    while body_len >= 0x80:
        out += bytes([body_len & 0x7F | 0x80])
        body_len >>= 7
    return out + bytes([body_len])


def zstd_payload(body: bytes) -> bytes:
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(body)
    assert frame[:4] == zstandard.MAGIC_NUMBER.to_bytes(4, "little")
    return frame[4:]


def test_hostile_headers() -> None:
    cases = [
        ("truncated", b"\x00\x01\x00\x00"),
        ("unknown layout", header(1, 0x10, 0, 9) + bytes(9)),  # a bit no layout uses
        ("unknown layout", header(1, 0x03 | kernels.FLAG_PLANES, 0, 9) + bytes(9)),  # split
        ("unknown layout", header(1, 0x01, 19, 9) + bytes(9)),  # 19 decimals
        ("unknown layout", header(1, kernels.FLAG_PLANES, 0, 9) + bytes(9)),  # XOR + planes
        ("unknown layout", header(1, 0x00, 3, 9) + bytes(9)),  # XOR with decimals
        ("overflows", b"\x00\x01\x00\x00" + b"\xff" * 10 + b"\x01"),
        ("body length", header(0xFFFF, 0x00, 0, 32 * 0xFFFF + 33) + b"\x00"),
        ("body length", header(1, 0x00, 0, 9) + bytes(8)),
        ("body length", header(1, kernels.FLAG_ZSTD, 0, 9)),
        ("body length", header(1, kernels.FLAG_ZSTD, 0, 0) + b"\x00"),
        # Split: the raw stream is longer than 8 bytes a sample, or than the chunk.
        ("body length", header(1, 0x03, 0, 2) + b"\x09" + bytes(11)),
        ("body length", header(2, 0x03, 0, 2) + b"\x05" + bytes(6)),
        ("body length", header(2, 0x03 | kernels.FLAG_ZSTD, 0, 5) + b"\x02" + bytes(2)),
        ("truncated", header(2, 0x03, 0, 2)),
    ]
    for message, chunk in cases:
        with pytest.raises(CorruptionError, match=f"header: .*{message}"):
            decode_dense(chunk)


def test_hostile_bodies() -> None:
    regular = bytes([0x02, 0x02, 0x00])  # t0 1, Δ1 1, dod 0 (t = 1, 2, 3)
    cases = [
        ("do not increase", header(2, 0, 0, 2 + 16) + bytes([0x02, 0x00]) + bytes(16)),
        ("do not increase", header(3, 0, 0, 3 + 24) + bytes([0x02, 0x02, 0x03]) + bytes(24)),
        ("truncated", header(3, 0, 0, 3 + 23) + regular + bytes(23)),
        ("exception list", header(3, 1, 0, 5) + regular + b"\x03\x00"),  # 3 of 3 samples
        ("exception list", header(3, 1, 0, 14) + regular + b"\x01\x03" + bytes(9)),  # at 3
        ("exception list", header(3, 1, 0, 23) + regular + b"\x02\x01\x01" + bytes(17)),
        ("unknown layout", header(3, 1 | kernels.FLAG_PLANES, 0, 6) + regular + b"\x00\x00\x09"),
        ("truncated", header(3, 1 | kernels.FLAG_PLANES, 0, 7) + regular + b"\x00\x00\x08\x00"),
        ("left after", header(3, 1, 0, 8) + regular + b"\x00\x00\x00\x00\x00"),
        ("overflows", header(1, 0, 0, 19) + b"\xff" * 10 + b"\x02" + bytes(8)),
    ]
    # Split bodies: timestamps, coding byte, base, exceptions, q0, tokens; raw bits apart.
    def split(coding: bytes, tokens: bytes, raw: bytes) -> bytes:
        body = regular + coding + b"\x00\x00\x02" + tokens
        return header(3, 0x03, 0, len(body)) + bytes([len(raw)]) + body + raw

    cases += [
        ("unknown layout", split(b"\x00", b"\x00\x00", b"")),  # order 0
        ("unknown layout", split(b"\x03", b"\x00", b"")),  # order 3
        ("unknown layout", split(b"\x09", b"\x00\x00", b"")),  # an unknown bit
        ("residual token", split(b"\x01", b"\x00\x80", bytes(8))),
        ("truncated", split(b"\x01", b"\x00", b"")),  # one token of two
        ("truncated", split(b"\x01", b"\x00\x14", b"\x00")),  # 9 raw bits in 1 byte
        ("left after", split(b"\x01", b"\x00\x04", b"\x01\x00")),  # a raw byte too many
        ("left after", split(b"\x01", b"\x00\x04", b"\x03")),  # padding not zero
        ("left after", split(b"\x01", b"\x00\x00", b"\x00")),  # raw bits nobody reads
    ]
    for message, chunk in cases:
        with pytest.raises(CorruptionError, match=f"dense chunk 0: sample .*{message}"):
            decode_dense(chunk)
    # The same bodies, well formed, decode.
    ts = np.array([1, 3, 5])
    # Zigzagged: token 04 and raw bit 1 are 5, the difference -3.
    assert_same(decode_dense(split(b"\x01", b"\x00\x04", b"\x01")), ts, np.array([1.0, 1, -2]))
    # Token 127: a 64-bit residual, 62 bits of it raw; the sum wraps.
    top = split(b"\x05", b"\x7f\x00", b"\xff" * 7 + b"\x3f")
    assert_same(decode_dense(top), ts, np.array([1.0, 0.0, 0.0]))


def test_compressed_body_must_inflate_to_its_length() -> None:
    body = bytes([0x02, 0x02, 0x00]) + b"\x00\x02\x02\x02"
    good = header(3, 1 | kernels.FLAG_ZSTD, 0, len(body)) + zstd_payload(body)
    assert decode_dense(good)[1].tolist() == [1.0, 2.0, 3.0]
    for claimed in (len(body) - 1, len(body) + 1):
        bad = header(3, 1 | kernels.FLAG_ZSTD, 0, claimed) + zstd_payload(body)
        blob = np.frombuffer(good + bad, np.uint8)
        with pytest.raises(CorruptionError, match="dense chunk 1: compressed body"):
            decode_dense_many(blob, [0, len(good), len(blob)])
    with pytest.raises(CorruptionError, match="compressed body"):
        decode_dense(header(3, 1 | kernels.FLAG_ZSTD, 0, len(body)) + b"\x12\x34\x56")


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda n, lay, k, body: header(n, lay, k, len(body)) + body,
            st.integers(0, 60),
            st.sampled_from([0, 1, 2, 3, 1 | kernels.FLAG_PLANES, 2 | kernels.FLAG_PLANES]).flatmap(
                lambda lay: st.sampled_from([lay, lay | kernels.FLAG_ZSTD])
            ),
            st.integers(0, 18),
            st.binary(max_size=200),
        ),
    )
)
def test_garbage_never_crashes(data: bytes) -> None:
    try:
        ts, vs = decode_dense(data)
    except CorruptionError:
        return
    assert len(ts) == len(vs) == int.from_bytes(data[:2], "big")
    assert np.all(np.diff(ts) > 0)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupted_chunks_never_crash(data: st.DataObject) -> None:
    chunk = bytearray(data.draw(st.sampled_from(realistic_chunks())))
    for _ in range(data.draw(st.integers(1, 4))):
        chunk[data.draw(st.integers(0, len(chunk) - 1))] = data.draw(st.integers(0, 255))
    try:
        ts, vs = decode_dense(bytes(chunk))
    except CorruptionError:
        return
    assert len(ts) == len(vs) == int.from_bytes(chunk[:2], "big")


def test_bad_offsets_rejected() -> None:
    blob = np.zeros(5, np.uint8)
    for offsets in ([0, 6], [2, 0], [-1, 2], []):
        with pytest.raises(ValueError):
            decode_dense_many(blob, offsets)
    with pytest.raises(ValueError):
        decode_dense(np.zeros(5, np.int64))


# --------------------------------------------------------------------------- registry


def test_registered_by_its_encoding_byte() -> None:
    codec = codec_for(0x81)
    assert isinstance(codec, DenseCodec) and codec.encoding == ENCODING_DENSE
    assert set(registered()) >= {ENCODING_XOR, ENCODING_DENSE}


def mixed_batch() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Chunks of both encodings interleaved, and the samples they hold in chunk order."""
    ts = scrapes(1000, jitter=4)
    vs = np.cumsum(np.arange(1000) % 5) / 2.0
    vs[500] = floats_from_bits([STALE_NAN])[0]
    xor_blob, xor_off = encode_xor_many(ts, vs, [0, 120, 240, 360])
    dense_blob, dense_off = encode_dense_many(ts, vs, [360, 700, 700, 1000])
    pieces = [  # (encoding, chunk bytes, first sample, end sample)
        (ENCODING_DENSE, dense_blob[dense_off[0] : dense_off[1]], 360, 700),
        (ENCODING_XOR, xor_blob[xor_off[0] : xor_off[1]], 0, 120),
        (ENCODING_DENSE, dense_blob[dense_off[1] : dense_off[2]], 700, 700),
        (ENCODING_XOR, xor_blob[xor_off[2] : xor_off[3]], 240, 360),
        (ENCODING_DENSE, dense_blob[dense_off[2] : dense_off[3]], 700, 1000),
        (ENCODING_XOR, xor_blob[xor_off[1] : xor_off[2]], 120, 240),
    ]
    encodings = np.array([p[0] for p in pieces], np.uint8)
    blob = np.concatenate([p[1] for p in pieces])
    offsets = np.concatenate([[0], np.cumsum([len(p[1]) for p in pieces])])
    order = np.concatenate([np.arange(p[2], p[3]) for p in pieces])
    return encodings, blob, offsets, ts[order], vs[order]


def test_decode_many_mixes_encodings_in_chunk_order() -> None:
    encodings, blob, offsets, ts, vs = mixed_batch()
    got_ts, got_vs, sample_starts = decode_many(encodings, blob, offsets)
    assert sample_starts.tolist() == [0, 340, 460, 460, 580, 880, 1000]
    assert_same((got_ts, got_vs), ts, vs)
    # One encoding only: handed straight to its codec.
    only_xor = encodings == ENCODING_XOR
    xor_ids = np.flatnonzero(only_xor)
    sub = np.concatenate([blob[offsets[i] : offsets[i + 1]] for i in xor_ids])
    sub_off = np.concatenate([[0], np.cumsum(np.diff(offsets)[xor_ids])])
    assert_same(
        decode_many(encodings[only_xor], sub, sub_off)[:2], *decode_xor_many(sub, sub_off)[:2]
    )
    empty = decode_many(np.zeros(0, np.uint8), b"", [0])
    assert len(empty[0]) == 0 and empty[2].tolist() == [0]


def test_decode_many_names_the_bad_chunk_of_the_batch() -> None:
    encodings, blob, offsets, _, _ = mixed_batch()
    broken = blob.copy()
    broken[offsets[4] + 4 : offsets[5]] = 0xFF  # chunk 4 (dense): body length overflows
    with pytest.raises(CorruptionError, match="chunk 4 \\(dense\\)"):
        decode_many(encodings, broken, offsets)
    unknown = encodings.copy()
    unknown[0] = 7
    with pytest.raises(CorruptionError, match="unknown chunk encoding 7"):
        decode_many(unknown, blob, offsets)
    with pytest.raises(ValueError):
        decode_many(encodings[:-1], blob, offsets)


# --------------------------------------------------------------------------- benchmark


def test_codec_benchmark_runs(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from benchmarks import codecs

    assert codecs.chunk_starts(np.array([0, 5, 5, 12]), 4).tolist() == [0, 4, 5, 9, 12]
    args = ["--datasets", "synthetic", "--hours", "0.5", "--repeat", "1", "--out", str(tmp_path)]
    assert codecs.main([*args, "--dense-sizes", "60"]) == 0
    out = capsys.readouterr().out
    assert "synthetic  dense (zstd 19)  60" in out
    assert len(list(tmp_path.glob("codecs-*.json"))) == 1


def test_timestamps_at_the_ends_of_int64_round_trip() -> None:
    # Steps of 2**63 and more: the decoder's sums must wrap as the encoder's did.
    for ts in ([-(2**63), 0], [-(2**63), 2**63 - 1], [-(2**63), -(2**63) + 1, 2**63 - 1],
               [5, 2**62, 2**63 - 1]):
        times = np.array(ts, np.int64)
        values = np.arange(len(times), dtype=np.float64)
        assert_same(decode_dense(encode_dense(times, values)), times, values)
