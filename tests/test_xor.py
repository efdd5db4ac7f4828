"""XOR chunk codec: golden bytes, a bit-level reference model, round trips, hostile input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import _xor_kernels as kernels
from storage.chunkenc import codec_for, register, registered
from storage.errors import CorruptionError
from storage.xor import (
    ENCODING_XOR,
    MAX_SAMPLES_PER_CHUNK,
    XorCodec,
    decode_xor,
    decode_xor_many,
    encode_xor,
    encode_xor_many,
)

U64 = (1 << 64) - 1
STALE_NAN = 0x7FF0000000000002
PROM_NAN = 0x7FF8000000000001


def floats_from_bits(bits: list[int]) -> np.ndarray:
    return np.array(bits, dtype=np.uint64).view(np.float64)


def bits_of(values: np.ndarray) -> list[int]:
    return np.asarray(values, dtype=np.float64).view(np.uint64).tolist()


# --------------------------------------------------------------------------- reference model


class RefBitStream:
    """Prometheus's bit stream, modelled byte by byte; ``spare_byte`` keeps the 2.x habit
    of appending two bytes when a whole byte is written on a byte boundary."""

    def __init__(self, spare_byte: bool) -> None:
        self.data = bytearray(2)
        self.free = 0  # unwritten bits in the last byte
        self.spare_byte = spare_byte

    def bit(self, b: int) -> None:
        if self.free == 0:
            self.data.append(0)
            self.free = 8
        if b:
            self.data[-1] |= 1 << (self.free - 1)
        self.free -= 1

    def byte(self, b: int) -> None:
        if self.free == 0:
            if not self.spare_byte:
                self.data.append(b)
                return
            self.data.append(0)
            self.free = 8
        self.data[-1] |= b >> (8 - self.free)
        self.data.append((b << self.free) & 0xFF)

    def bits(self, u: int, n: int) -> None:
        while n >= 8:
            n -= 8
            self.byte((u >> n) & 0xFF)
        while n > 0:
            n -= 1
            self.bit((u >> n) & 1)


def ref_varint_bytes(u: int) -> list[int]:
    out = []
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return out


def ref_encode(ts: list[int], vbits: list[int], spare_byte: bool) -> bytes:
    """The XOR chunk of the samples, straight from the format description."""
    s = RefBitStream(spare_byte)
    t_prev = v_prev = delta_prev = 0
    leading, trailing = 0xFF, 0
    for i, (t, v) in enumerate(zip(ts, vbits)):
        if i == 0:
            for b in ref_varint_bytes(((t << 1) ^ (t >> 63)) & U64):
                s.byte(b)
            s.bits(v, 64)
        else:
            delta = (t - t_prev) & U64
            if i == 1:
                for b in ref_varint_bytes(delta):
                    s.byte(b)
            else:
                dod = (delta - delta_prev) & U64
                signed = dod - (1 << 64) if dod >> 63 else dod
                for prefix, plen, width in ((0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)):
                    if signed != 0 and -(2 ** (width - 1) - 1) <= signed <= 2 ** (width - 1):
                        s.bits(prefix, plen)
                        s.bits(dod & ((1 << width) - 1), width)
                        break
                else:
                    if signed == 0:
                        s.bit(0)
                    else:
                        s.bits(0b1111, 4)
                        s.bits(dod, 64)
            delta_prev = delta
            x = v ^ v_prev
            if x == 0:
                s.bit(0)
            else:
                s.bit(1)
                lz = min(64 - x.bit_length(), 31)
                tz = (x & -x).bit_length() - 1
                if leading != 0xFF and lz >= leading and tz >= trailing:
                    s.bit(0)
                    s.bits(x >> trailing, 64 - leading - trailing)
                else:
                    leading, trailing = lz, tz
                    sig = 64 - lz - tz
                    s.bit(1)
                    s.bits(lz, 5)
                    s.bits(sig & 63, 6)
                    s.bits(x >> tz, sig)
        t_prev, v_prev = t, v
    s.data[0:2] = len(ts).to_bytes(2, "big")
    return bytes(s.data)


# --------------------------------------------------------------------------- strategies

SPECIAL_BITS = [
    STALE_NAN,
    PROM_NAN,
    0x7FF0000000000000,  # +Inf
    0xFFF0000000000000,  # -Inf
    0x8000000000000000,  # -0.0
    0x0,
    0x1,  # smallest subnormal
    0x000FFFFFFFFFFFFF,  # largest subnormal
    0x7FFFFFFFFFFFFFFF,  # NaN with every payload bit set
    0xFFFFFFFFFFFFFFFF,
    0x3FF0000000000000,  # 1.0
    0x4000000000000000,  # 2.0
]

value_bits = st.one_of(
    st.sampled_from(SPECIAL_BITS),
    st.integers(0, U64),
    st.integers(0, 1000).map(lambda n: bits_of(np.array([n / 4]))[0]),
)

int64s = st.integers(-(1 << 63), (1 << 63) - 1)
steps = st.one_of(
    st.just(15_000),
    st.integers(14_900, 15_100),
    st.integers(-3, 3),
    st.integers(-(1 << 20), 1 << 20),
    int64s,
)


@st.composite
def chunks(draw: st.DrawFn, max_size: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Samples of one chunk: any int64 timestamps (equal, decreasing, wrapping jumps)."""
    n = draw(st.integers(0, max_size))
    t = draw(int64s)
    ts = []
    for _ in range(n):
        ts.append(t)
        t = ((t + draw(steps) + (1 << 63)) & U64) - (1 << 63)
    vs = draw(st.lists(value_bits, min_size=n, max_size=n))
    return np.array(ts, dtype=np.int64), floats_from_bits(vs)


def assert_same_samples(got: tuple[np.ndarray, np.ndarray], ts: np.ndarray, vs: np.ndarray) -> None:
    assert got[0].dtype == np.int64 and got[1].dtype == np.float64
    assert got[0].tolist() == ts.tolist()
    assert bits_of(got[1]) == bits_of(vs)


# --------------------------------------------------------------------------- golden vectors


def test_golden_hand_computed() -> None:
    # count 3 | varint zigzag(1000) d0 0f | 1.0 | uvarint 1000 e8 07 | v '0' | dod '0' |
    # v 1.0^2.0 = 0x7ff0.. : '11' leading 00001 sig 001011 then 11 ones | 6 pad bits.
    assert encode_xor([1000, 2000, 3000], [1.0, 1.0, 2.0]).hex() == (
        "0003d00f3ff0000000000000e8073097ffc0"
    )
    # varint(-1) = 01 | uvarint 15000 = 98 75 | 1.5^1.0 = 0x0008..: '11' 01100 000001 '1' |
    # dod -9 in 14 bits: '10' 11111111110111 | 1.0^1.5 reuses the window: '1' '0' '1'.
    assert encode_xor([-1, 14999, 29990], [1.0, 1.5, 1.0]).hex() == (
        "0003013ff00000000000009875d80effde80"
    )
    # A negative first delta is a uvarint of the wrapped uint64: 10 bytes.
    assert encode_xor([1000, 0], [1.0, 1.0]).hex() == (
        "0002d00f3ff000000000000098f8ffffffffffffff0100"
    )


def test_golden_spare_byte() -> None:
    one = "0001d00f3ff0000000000000"
    assert encode_xor([1000], [1.0]).hex() == one + "00"
    assert encode_xor([1000], [1.0], legacy_padding=False).hex() == one
    # '11' 01000 001000 11111111 | '0' '10' 11111111: 32 bits ending on a whole byte.
    vs = floats_from_bits([0, 0x00FF000000000000, 0])
    body = "0003000000000000000000e807d047faff"
    assert encode_xor([0, 1000, 2000], vs).hex() == body + "00"
    assert encode_xor([0, 1000, 2000], vs, legacy_padding=False).hex() == body
    assert encode_xor([], []).hex() == "0000"


# Chunks written by Prometheus 2.42 (remote read, STREAMED_XOR_CHUNKS) from samples we sent.
PROMETHEUS_CHUNKS = {
    "counter": (
        "0075e0fda5fbbf684014000000000000a775d42ce0047491cf7fcd04c00842d000b1fdfe7c177fe5"
        "b84f8014d83637fffa87ef005fb859c001c5bfb7910051b45bc00d43bfc8401b6c1fbdfe4c460072"
        "1d003b30bfd68a4001c1affef58ff600920d7fb50c803c825fea6d1f9c0012000a3f000f3cbffd84"
        "dffec46009f611e77fe30b5fffc077ff1195ffd4097fd30e401ac077fab02dff64fd006703dfe443"
        "d007302dff641f7fb11d5ffd40d00430f5fef682bff8009e02fe007b78dec012c35febcf400e42c0"
        "04c1dffc6e1ffdff8412ffc631000d0cbfec9ac009c0effda2d7fedb48f5803c86afec231800787e"
        "00227f803f84affaa35800f82eff2610802ad837f7fc7c04b800ade3677fb3170065310023b86eef"
        "fca2eff5f985c00fcdff5710b8039de1fbff9e41dbfc8e025c00d4b0047b48f7bff885affd63bbff"
        "a83eff421080399ceffaa15bfe181a003232801880a003e14bfefd65ffb8008816c00ac016ffc601"
        "d7fcd01c8017804dffe41caff620397ff90038031803dff5402600460797fd5007bff880f5ffd43c"
        "2004a021004903bbfde8035fff405a0042019004306e"
    ),
    "irregular": (
        "001fe0fda5fbbf683fe550fc2dd52c27c0cf24d5aecfbcd1fe486bffffffffffffdb611f0ffff5a9"
        "79bd5eeec0effeb07ffecb96170f48af2fc0000000000249eff001012c17687d9104b3ffffffffff"
        "fedb08f4014667be79be8285ffd40058173c7b759cbbc222df40103eaf1a59658af8000000000040"
        "b2840043de1fed7fb9effffffffffffedb08f4008a8d18ac5250e70fde4d00194c6e403c544da2b4"
        "100071407d822eeabf7774bd00fdd7ca94e58b58a01694daebd144039003989b0b21cdee370fde4d"
        "00a6b0b5941f0c4dce57e1402f3b4169ecce3fffffffffffffb896c400dbcc6500c768195121401f"
        "c26a06fea726eee6ccffd90b8842f91317c222df7ff333b79beb9f5077793c500095594f9325c1fc"
        "21b1140032420df146205688dc500179b49978a473d2ee1401f39c2766af75366b6c5000a579f7db"
        "8abaddde4f10003672515fd0780a0060ceb1c86c68aebc19a0195e6d1aafc2cc78445be8028323c9"
        "6413678cea60a0024fdbd3b945d440"
    ),
    "pair": "0002e0fda5fbbf683ff00000000000009875c25fff",
    "spare_byte": "0003e0fda5fbbf680000000000000000e807d047faff00",
    "single": "0001e0fda5fbbf683ff000000000000000",
    "special": (
        "0004e0fda5fbbf680000000000000001a81ec267ffdc2760fe001ffffffffffffc2af6003fffffffffffffffc0"
    ),
}


@pytest.mark.parametrize("name", sorted(PROMETHEUS_CHUNKS))
def test_prometheus_chunks_reencode_identically(name: str) -> None:
    data = bytes.fromhex(PROMETHEUS_CHUNKS[name])
    ts, vs = decode_xor(data)
    assert len(ts) == int.from_bytes(data[:2], "big")
    assert encode_xor(ts, vs) == data
    assert len(encode_xor(ts, vs, legacy_padding=False)) == len(data) - (
        name in ("spare_byte", "single")
    )


def test_prometheus_chunks_decode_to_what_was_sent() -> None:
    ts, vs = decode_xor(bytes.fromhex(PROMETHEUS_CHUNKS["counter"]))
    assert np.all(np.abs(np.diff(ts) - 15_000) <= 40)  # 15 s scrapes with jitter
    assert np.all(np.diff(vs) >= 0) and np.all(vs == np.round(vs))
    ts, vs = decode_xor(bytes.fromhex(PROMETHEUS_CHUNKS["irregular"]))
    assert np.any(np.abs(np.diff(np.diff(ts))) > 1 << 19)  # exercises the 64-bit bucket
    ts, vs = decode_xor(bytes.fromhex(PROMETHEUS_CHUNKS["special"]))
    assert set(bits_of(vs)) >= {1, 0xFFFFFFFFFFFFFFFF}


# --------------------------------------------------------------------------- model and round trips


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks())
def test_matches_reference_model(sample: tuple[np.ndarray, np.ndarray]) -> None:
    ts, vs = sample
    for legacy in (True, False):
        want = ref_encode(ts.tolist(), bits_of(vs), spare_byte=legacy)
        assert encode_xor(ts, vs, legacy_padding=legacy) == want


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks())
def test_round_trip(sample: tuple[np.ndarray, np.ndarray]) -> None:
    ts, vs = sample
    for legacy in (True, False):
        assert_same_samples(decode_xor(encode_xor(ts, vs, legacy_padding=legacy)), ts, vs)


def realistic(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A counter growing by small integers, scraped every 15 s with a little jitter."""
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000_000 + np.cumsum(15_000 + rng.integers(-5, 6, n))
    vs = np.cumsum(rng.integers(0, 10, n)).astype(np.float64)
    return ts, vs


@pytest.mark.parametrize("n", [1, 2, 3, 120, MAX_SAMPLES_PER_CHUNK])
def test_sizes(n: int) -> None:
    ts, vs = realistic(n)
    vs[::7] = floats_from_bits([STALE_NAN])[0]
    data = encode_xor(ts, vs)
    assert int.from_bytes(data[:2], "big") == n
    assert_same_samples(decode_xor(data), ts, vs)
    assert_same_samples(decode_xor(np.frombuffer(data, np.uint8)), ts, vs)


def test_too_many_samples_rejected() -> None:
    ts, vs = realistic(MAX_SAMPLES_PER_CHUNK + 1)
    with pytest.raises(ValueError, match="65535"):
        encode_xor(ts, vs)


def test_bad_encode_arguments() -> None:
    with pytest.raises(ValueError):
        encode_xor([1, 2], [1.0])
    with pytest.raises(ValueError):
        encode_xor_many([1, 2], [1.0, 2.0], [0, 3])
    with pytest.raises(ValueError):
        encode_xor_many([1, 2], [1.0, 2.0], [2, 1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(chunks(max_size=40), max_size=8))
def test_bulk_equals_single(samples: list[tuple[np.ndarray, np.ndarray]]) -> None:
    ts = np.concatenate([s[0] for s in samples] + [np.zeros(0, np.int64)])
    vs = np.concatenate([s[1] for s in samples] + [np.zeros(0, np.float64)])
    starts = np.cumsum([0] + [len(s[0]) for s in samples])
    blob, offsets = encode_xor_many(ts, vs, starts)
    singles = [encode_xor(*s) for s in samples]
    assert blob.dtype == np.uint8 and offsets.dtype == np.int64
    assert blob.tobytes() == b"".join(singles)
    assert np.diff(offsets).tolist() == [len(c) for c in singles]

    got_ts, got_vs, sample_starts = decode_xor_many(blob, offsets)
    assert sample_starts.tolist() == starts.tolist()
    assert_same_samples((got_ts, got_vs), ts, vs)


def test_bulk_chunks_may_start_anywhere() -> None:
    ts, vs = realistic(300)
    blob, offsets = encode_xor_many(ts, vs, [10, 130, 130, 250])
    assert blob[offsets[1] : offsets[2]].tobytes() == b"\x00\x00"
    got_ts, got_vs, sample_starts = decode_xor_many(blob, offsets)
    assert sample_starts.tolist() == [0, 120, 120, 240]
    assert_same_samples((got_ts, got_vs), ts[10:250], vs[10:250])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks(max_size=60), st.data())
def test_encoding_resumes_from_saved_state(
    sample: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    ts, vs = sample
    legacy = data.draw(st.booleans())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ts)), max_size=4)))
    state = np.empty(kernels.STATE_LEN, np.uint64)
    kernels.reset_state(state)
    out = np.empty(kernels.CHUNK_OVERHEAD_BYTES + kernels.MAX_BYTES_PER_SAMPLE * len(ts), np.uint8)
    n = 0
    for lo, hi in zip([0, *cuts], [*cuts, len(ts)]):
        n = kernels.append_samples(
            ts.view(np.uint64), vs.view(np.uint64), lo, hi, state, out, 0, legacy
        )
        assert out[:n].tobytes() == encode_xor(ts[:hi], vs[:hi], legacy_padding=legacy)


# --------------------------------------------------------------------------- hostile input


def test_every_truncation_is_detected() -> None:
    ts, vs = realistic(120)
    vs[5] = math.inf
    vs[6] = floats_from_bits([PROM_NAN])[0]
    ts[50] = ts[49] - 1_000_000_000  # forces the 64-bit delta-of-delta bucket
    for legacy in (True, False):
        data = encode_xor(ts, vs, legacy_padding=legacy)
        for cut in range(len(encode_xor(ts, vs, legacy_padding=False))):
            with pytest.raises(CorruptionError):
                decode_xor(data[:cut])
        for cut in (2, 7, 11, 100, 200):  # bulk too, with a good chunk before it
            blob = np.frombuffer(data + data[:cut], np.uint8)
            with pytest.raises(CorruptionError, match="xor chunk 1"):
                decode_xor_many(blob, [0, len(data), len(blob)])


def test_spare_byte_is_optional_for_readers() -> None:
    data = encode_xor([5], [2.5])
    assert_same_samples(decode_xor(data[:-1]), np.array([5]), np.array([2.5]))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(lambda n, body: n.to_bytes(2, "big") + body, st.integers(0, 80), st.binary()),
    )
)
def test_garbage_never_crashes(data: bytes) -> None:
    try:
        ts, vs = decode_xor(data)
    except CorruptionError:
        return
    assert len(ts) == len(vs) == int.from_bytes(data[:2], "big")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupted_chunks_never_crash(data: st.DataObject) -> None:
    ts, vs = realistic(data.draw(st.integers(1, 130)), seed=data.draw(st.integers(0, 9)))
    chunk = bytearray(encode_xor(ts, vs))
    for _ in range(data.draw(st.integers(1, 4))):
        chunk[data.draw(st.integers(0, len(chunk) - 1))] = data.draw(st.integers(0, 255))
    try:
        got_ts, got_vs = decode_xor(bytes(chunk))
    except CorruptionError:
        return
    assert len(got_ts) == len(got_vs) == int.from_bytes(chunk[:2], "big")


def test_impossible_counts_fail_before_allocating() -> None:
    with pytest.raises(CorruptionError, match="cannot hold"):
        decode_xor(b"\xff\xff" + b"\x00" * 20)
    with pytest.raises(CorruptionError, match="2-byte header"):
        decode_xor(b"\x00")
    blob = np.frombuffer(b"\x00\x00" * 4, np.uint8)
    with pytest.raises(CorruptionError, match="xor chunk 2"):
        decode_xor_many(blob, [0, 2, 4, 5])


def test_varint_overflow_and_bad_window() -> None:
    with pytest.raises(CorruptionError, match="overflows"):
        decode_xor(b"\x00\x01" + b"\xff" * 10 + b"\x01" + b"\x00" * 8)
    # '11', leading 31, 40 significant bits: 71 > 64.
    bad = bytes.fromhex("000200000000000000000001") + bytes([0b11111111, 0b01000000]) + bytes(8)
    with pytest.raises(CorruptionError, match="window"):
        decode_xor(bad)


def test_bad_offsets_rejected() -> None:
    blob = np.zeros(4, np.uint8)
    for offsets in ([0, 5], [2, 0], [-1, 2], []):
        with pytest.raises(ValueError):
            decode_xor_many(blob, offsets)
    with pytest.raises(ValueError):
        decode_xor(np.zeros(4, np.int64))


# --------------------------------------------------------------------------- registry


def test_registry_dispatches_on_the_encoding_byte() -> None:
    codec = codec_for(ENCODING_XOR)
    assert isinstance(codec, XorCodec) and codec.encoding == 1 and codec.name == "XOR"
    with pytest.raises(CorruptionError, match="unknown chunk encoding 77"):
        codec_for(77)
    with pytest.raises(ValueError, match="already registered"):
        register(XorCodec())


@pytest.mark.parametrize("encoding", sorted(registered()))
def test_every_codec_round_trips(encoding: int) -> None:
    codec = registered()[encoding]
    ts, vs = realistic(250)
    vs[3] = floats_from_bits([STALE_NAN])[0]
    assert_same_samples(codec.decode(codec.encode(ts[:120], vs[:120])), ts[:120], vs[:120])
    blob, offsets = codec.encode_many(ts, vs, [0, 120, 240, 250])
    got_ts, got_vs, sample_starts = codec.decode_many(blob, offsets)
    assert sample_starts.tolist() == [0, 120, 240, 250]
    assert_same_samples((got_ts, got_vs), ts, vs)
