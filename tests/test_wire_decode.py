"""The remote write 1.0 decoder, cross-checked against the reference protobuf classes."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promstore.remote import _wire_kernels, wire
from promstore.remote.pb import remote_pb2
from promstore.remote.wire import WireLimits, decode_write_request
from storage.batch import WriteBatch
from storage.errors import BadDataError, LimitExceededError

LIMITS = WireLimits()


@pytest.fixture(autouse=True, params=["one-pass", "two-pass", "one-pass-out-of-room"])
def decoding_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs against every decoding path: small bodies in one pass into
    arrays of a guessed size, large ones counted first, and small ones whose items
    outnumber the guess started in one pass and counted again."""
    if request.param == "two-pass":
        monkeypatch.setattr(wire, "SINGLE_PASS_MAX_BYTES", 0)
    elif request.param == "one-pass-out-of-room":
        monkeypatch.setattr(wire, "GUESS_ITEM_BYTES", 1 << 20)


STALE_NAN = 0x7FF0000000000002
PROM_NAN = 0x7FF8000000000001
INT64 = st.integers(-(2**63), 2**63 - 1)

Parsed = tuple[list[tuple[list[tuple[bytes, bytes]], list[tuple[int, int]]]], tuple[int, int, int]]


def f64(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def bits_of(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


# --- raw protobuf building blocks, for inputs the reference classes cannot produce ---

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def len_field(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


def varint_field(field: int, n: int) -> bytes:
    return key(field, 0) + varint(n)


def double_field(field: int, bits: int) -> bytes:
    return key(field, 1) + struct.pack("<Q", bits)


def label(name: bytes, value: bytes) -> bytes:
    return len_field(1, len_field(1, name) + len_field(2, value))


def sample(ts: int, bits: int) -> bytes:
    return len_field(2, double_field(1, bits) + varint_field(2, ts))


def series(*fields: bytes) -> bytes:
    return len_field(1, b"".join(fields))


# --- comparison helpers ---

def ours(batch: WriteBatch) -> Parsed:
    buf = batch.buf.tobytes()
    out = []
    for i in range(batch.n_series):
        ls = range(batch.label_start[i], batch.label_start[i + 1])
        labels = [(buf[batch.name_off[j]:batch.name_off[j] + batch.name_len[j]],
                   buf[batch.value_off[j]:batch.value_off[j] + batch.value_len[j]]) for j in ls]
        ss = range(batch.sample_start[i], batch.sample_start[i + 1])
        samples = [(int(batch.timestamps[j]), int(batch.values.view(np.uint64)[j])) for j in ss]
        out.append((labels, samples))
    return out, (batch.n_histograms, batch.n_exemplars, batch.n_metadata)


def reference(data: bytes) -> Parsed:
    req = remote_pb2.WriteRequest.FromString(data)
    out = []
    for ts in req.timeseries:
        labels = [(lb.name.encode(), lb.value.encode()) for lb in ts.labels]
        samples = [(s.timestamp, bits_of(s.value)) for s in ts.samples]
        out.append((labels, samples))
    n_hist = sum(len(ts.histograms) for ts in req.timeseries)
    n_ex = sum(len(ts.exemplars) for ts in req.timeseries)
    return out, (n_hist, n_ex, len(req.metadata))


def reference_or_none(data: bytes) -> Parsed | None:
    try:
        return reference(data)
    except DecodeError:
        return None


def decode_or_none(data: bytes) -> WriteBatch | None:
    try:
        batch = decode_write_request(data, LIMITS)
    except BadDataError:
        return None
    check_contract(batch, len(data))
    return batch


def check_contract(batch: WriteBatch, size: int) -> None:
    """The WriteBatch contract holds for any batch the decoder returns."""
    for starts, total in ((batch.label_start, len(batch.name_off)),
                          (batch.sample_start, batch.n_samples)):
        assert starts.dtype == np.int64 and starts[0] == 0 and starts[-1] == total
        assert np.all(np.diff(starts) >= 0)
    for off, ln in ((batch.name_off, batch.name_len), (batch.value_off, batch.value_len)):
        assert np.all(off >= 0) and np.all(ln >= 0) and np.all(off + ln <= size)
    assert batch.timestamps.dtype == np.int64 and batch.values.dtype == np.float64
    assert len(batch.values) == batch.n_samples and len(batch.buf) == size


# --- strategies ---

SPECIAL_BITS = [STALE_NAN, PROM_NAN, 0x7FF8000000000000, 0xFFF8000000000000,
                0x7FF0000000000000, 0xFFF0000000000000, 0x8000000000000000, 0,
                0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF]
value_bits = st.one_of(st.sampled_from(SPECIAL_BITS), st.integers(0, 2**64 - 1))
label_text = st.one_of(st.text(max_size=20), st.sampled_from(["", "__name__", "job", "é€😀"]))


@st.composite
def write_requests(draw: st.DrawFn) -> tuple[bytes, list]:
    """A serialized WriteRequest and the (labels, samples) it was built from."""
    req = remote_pb2.WriteRequest()
    expected = []
    for _ in range(draw(st.integers(0, 6))):
        ts = req.timeseries.add()
        labels = draw(st.lists(st.tuples(label_text, label_text), max_size=5))
        samples = draw(st.lists(st.tuples(INT64, value_bits), max_size=5))
        for name, value in labels:
            ts.labels.add(name=name, value=value)
        for t, bits in samples:
            ts.samples.add(timestamp=t, value=f64(bits))
        for _ in range(draw(st.integers(0, 2))):
            ex = ts.exemplars.add(value=1.5, timestamp=draw(INT64))
            ex.labels.add(name="trace_id", value=draw(label_text))
        for _ in range(draw(st.integers(0, 2))):
            h = ts.histograms.add(count_int=7, sum=2.5, schema=-2, timestamp=draw(INT64))
            h.positive_spans.add(offset=-1, length=2)
            h.positive_deltas.extend([3, -1])
        expected.append(([(n.encode(), v.encode()) for n, v in labels], samples))
    for _ in range(draw(st.integers(0, 2))):
        req.metadata.add(type=1, metric_family_name="up", help=draw(label_text))
    return req.SerializeToString(), expected


# --- valid requests ---

@settings(max_examples=200, deadline=None)
@given(write_requests())
def test_matches_reference_and_keeps_value_bits(case: tuple[bytes, list]) -> None:
    data, expected = case
    got = ours(decode_write_request(data, LIMITS))
    assert got == reference(data)
    assert got[0] == expected  # bit-exact against the generated bits, not only the reference


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(write_requests())
def test_every_truncation_decodes_like_reference_or_fails(case: tuple[bytes, list]) -> None:
    data, _ = case
    for cut in range(len(data)):
        prefix = data[:cut]
        expected = reference_or_none(prefix)
        if expected is None:
            with pytest.raises(BadDataError):
                decode_write_request(prefix, LIMITS)
        else:
            assert ours(decode_write_request(prefix, LIMITS)) == expected


def test_special_values_and_timestamps_survive() -> None:
    bits = SPECIAL_BITS
    stamps = [-(2**63), -1, 0, 1, 2**63 - 1, -1_000] * 2
    data = series(label(b"__name__", b"x"),
                  *(sample(t, b) for t, b in zip(stamps, bits, strict=True)))
    batch = decode_write_request(data, LIMITS)
    assert batch.values.view(np.uint64).tolist() == bits
    assert batch.timestamps.tolist() == stamps


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    unknown = (varint_field(15, 2**64 - 1) + double_field(16, 1) + len_field(1000, b"\x08\x01")
               + key(2**29 - 1, 5) + b"\x00\x00\x00\x00")
    lab = len_field(1, unknown + len_field(1, b"job") + unknown + len_field(2, b"api") + unknown)
    smp = len_field(2, unknown + double_field(1, STALE_NAN) + unknown + varint_field(2, 42))
    ts = len_field(1, unknown + lab + unknown + smp + unknown)
    data = unknown + len_field(2, b"reserved") + ts + unknown
    assert ours(decode_write_request(data, LIMITS)) == reference(data)
    assert ours(decode_write_request(data, LIMITS))[0] == [([(b"job", b"api")], [(42, STALE_NAN)])]


def test_field_order_last_one_wins_and_defaults() -> None:
    lab = len_field(1, len_field(2, b"v1") + len_field(1, b"n1") + len_field(2, b"v2"))
    smp = len_field(2, varint_field(2, 5) + double_field(1, 1) + varint_field(2, 6)
                    + double_field(1, PROM_NAN))
    empty_label = len_field(1, b"")
    empty_sample = len_field(2, b"")
    data = series(smp, lab, empty_sample, empty_label) + series()
    got = ours(decode_write_request(data, LIMITS))
    assert got == reference(data)
    assert got[0] == [([(b"n1", b"v2"), (b"", b"")], [(6, PROM_NAN), (0, 0)]), ([], [])]


def test_input_buffer_types_and_zero_copy() -> None:
    data = series(label(b"a", b"b"), sample(1, 2))
    expected = ours(decode_write_request(data, LIMITS))
    for view in (memoryview(data), bytearray(data), memoryview(b"xx" + data)[2:]):
        assert ours(decode_write_request(view, LIMITS)) == expected
    assert ours(decode_write_request(b"", LIMITS)) == ([], (0, 0, 0))


def test_realistic_one_mebibyte_request() -> None:
    rng = np.random.default_rng(7)
    req = remote_pb2.WriteRequest()
    for i in range(2000):
        ts = req.timeseries.add()
        ts.labels.add(name="__name__", value=f"http_server_requests_seconds_bucket_{i % 50}")
        for j in range(9):
            ts.labels.add(name=f"label_{j}", value=f"value-{rng.integers(1 << 40):x}-{i}")
        ts.samples.add(timestamp=1_700_000_000_000 + i, value=float(rng.random()))
    data = req.SerializeToString()
    assert len(data) > 500_000
    batch = decode_write_request(data, LIMITS)
    assert (batch.n_series, len(batch.name_off), batch.n_samples) == (2000, 20000, 2000)
    assert ours(batch) == reference(data)


# --- limits ---

@pytest.mark.parametrize("limits, what", [
    (WireLimits(max_series=2), "series"),
    (WireLimits(max_labels=5), "labels"),
    (WireLimits(max_samples=3), "samples"),
])
def test_count_limits(limits: WireLimits, what: str) -> None:
    one = series(label(b"a", b"b"), label(b"c", b"d"), sample(1, 0), sample(2, 0))
    assert decode_write_request(one * 2, WireLimits(2, 4, 4)).n_series == 2
    with pytest.raises(LimitExceededError, match=what):
        decode_write_request(one * 3, limits)


# --- hostile input ---

HUGE = [2**64 - 1, 2**63, 2**63 - 1, 2**62, 2**32, 100]


@pytest.mark.parametrize("declared", HUGE)
@pytest.mark.parametrize("wrap", [
    lambda p: p,  # a TimeSeries at the top level
    lambda p: len_field(1, p),  # a Label inside a TimeSeries
    lambda p: len_field(1, len_field(1, p)),  # a name inside a Label
])
def test_huge_declared_lengths(declared: int, wrap: Callable[[bytes], bytes]) -> None:
    inner = key(1, 2) + varint(declared) + b"abc"
    with pytest.raises(BadDataError, match=r"declared length .* runs past the end"):
        decode_write_request(wrap(inner), LIMITS)


@pytest.mark.parametrize("data, fragment", [
    (b"\x80" * 10 + b"\x01", "varint longer than 10 bytes"),  # 11-byte key
    (key(1, 2) + b"\xff" * 10 + b"\x01", "varint longer than 10 bytes"),  # 11-byte length
    (series(len_field(2, key(2, 0) + b"\xff" * 10 + b"\x01")), "varint longer than 10"),
    (series(len_field(2, key(2, 0) + b"\xff\xff")), "varint runs past the end"),
    (key(1, 2) + b"\x85", "varint runs past the end"),
    (b"\x0a", "varint runs past the end"),
    (series(len_field(2, key(1, 1) + b"\x00" * 7)), "fixed64 value runs past the end"),
    (key(9, 5) + b"\x00\x00\x00", "fixed32 value runs past the end"),
    (key(9, 3), "wire type 3 .start group. is not supported"),
    (series(key(9, 4)), "wire type 4 .end group. is not supported"),
    (key(9, 6), "wire type 6 does not exist"),
    (series(label(b"a", b"b") + key(9, 7)), "wire type 7 does not exist"),
    (b"\x00", "field number 0 is invalid"),
    (varint(2**32 | 2), "does not fit in 32 bits"),
])
def test_malformed_structure(data: bytes, fragment: str) -> None:
    with pytest.raises(BadDataError, match=fragment):
        decode_write_request(data, LIMITS)
    assert reference_or_none(data) is None


@pytest.mark.parametrize("data, where", [
    (varint_field(1, 3), "byte 0: WriteRequest field 1 (timeseries)"),
    (double_field(3, 0), "byte 0: WriteRequest field 3 (metadata)"),
    (series(label(b"a", b"b"), varint_field(2, 1)), "byte 10: TimeSeries field 2 (samples)"),
    (series(len_field(1, varint_field(2, 1))), "byte 4: Label field 2 (value)"),
    (series(len_field(2, len_field(1, b"12345678"))), "byte 4: Sample field 1 (value)"),
    (series(len_field(2, double_field(2, 1))), "byte 4: Sample field 2 (timestamp)"),
    (series(key(4, 5) + b"\x00" * 4), "byte 2: TimeSeries field 4 (histograms)"),
])
def test_wrong_wire_type_for_known_field(data: bytes, where: str) -> None:
    with pytest.raises(BadDataError, match=rf"{re.escape(where)}: has wire type \d .*expected"):
        decode_write_request(data, LIMITS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_crash(data: bytes) -> None:
    batch = decode_or_none(data)
    expected = reference_or_none(data)
    if batch is not None and expected is not None:
        assert ours(batch) == expected


@st.composite
def fuzzy_messages(draw: st.DrawFn, depth: int = 3) -> bytes:
    """Protobuf-shaped bytes: small field numbers, any wire type, nested payloads."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 4))):
        field = draw(st.one_of(st.integers(1, 4), st.integers(0, 2**29 - 1)))
        # Mostly a wire type some message of ours gives this field, sometimes any.
        fitting = [2, 1] if field == 1 else [2, 0] if field == 2 else [2]
        wire_type = draw(st.one_of(st.sampled_from(fitting), st.integers(0, 7)))
        out += key(field, wire_type)
        if wire_type == 0:
            out += varint(draw(st.integers(0, 2**64 - 1)))
        elif wire_type in (1, 5):
            out += draw(st.binary(min_size=8 if wire_type == 1 else 4,
                                  max_size=8 if wire_type == 1 else 4))
        elif wire_type == 2:
            nested = depth > 0 and draw(st.integers(0, 3)) > 0
            payload = draw(fuzzy_messages(depth - 1)) if nested else draw(st.binary(max_size=6))
            out += varint(len(payload)) + payload
    return bytes(out)


def check_against_reference(data: bytes) -> None:
    """Decode like the reference, or fail only on a rule stricter than the reference's."""
    batch = decode_or_none(data)
    expected = reference_or_none(data)
    if expected is None:
        return  # the reference also checks UTF-8 and skipped submessages; we need not
    if batch is None:
        with pytest.raises(BadDataError, match="wire type"):
            decode_write_request(data, LIMITS)
    else:
        assert ours(batch) == expected


@settings(max_examples=300, deadline=None)
@given(fuzzy_messages())
def test_protobuf_shaped_garbage(data: bytes) -> None:
    check_against_reference(data)


@settings(max_examples=300, deadline=None)
@given(write_requests(), st.lists(st.tuples(st.integers(0), st.integers(0, 255),
                                            st.sampled_from(["set", "insert", "delete"])),
                                  min_size=1, max_size=3))
def test_mutated_requests(case: tuple[bytes, list], edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(case[0])
    for where, byte, how in edits:
        i = where % (len(data) + 1)
        if how == "insert":
            data.insert(i, byte)
        elif i < len(data):
            if how == "set":
                data[i] = byte
            else:
                del data[i]
    check_against_reference(bytes(data))


def test_valid_prefix_then_garbage_names_the_offset() -> None:
    good = series(label(b"a", b"b"), sample(1, 0))
    with pytest.raises(BadDataError, match=rf"byte {len(good)}: "):
        decode_write_request(good + key(1, 2) + varint(50), LIMITS)


def test_bytes_changing_between_passes_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # An unknown field 5 holding what would be a series; flipping its key to field 1
    # between the counting and the filling pass adds a series the arrays have no room for.
    data = bytearray(series(label(b"a", b"b")) + len_field(5, len_field(1, b"")))
    walk = _wire_kernels.walk_write_request

    def flip_after_counting(buf: np.ndarray, fill: bool, *args: np.ndarray) -> int:
        code = walk(buf, fill, *args)
        data[10] = 0x0A
        return code

    monkeypatch.setattr(_wire_kernels, "walk_write_request", flip_after_counting)
    monkeypatch.setattr(wire, "SINGLE_PASS_MAX_BYTES", 0)  # only two passes can disagree
    with pytest.raises(BadDataError, match="changed while it was being decoded"):
        decode_write_request(data, LIMITS)
