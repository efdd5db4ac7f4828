"""Our XOR codec against the chunks a real Prometheus cuts, byte for byte.

Hostile series are remote-written into a Prometheus 2.42 (Debian package ``prometheus``)
and read back with remote read as ``STREAMED_XOR_CHUNKS``. Every chunk it returns must
decode with ``storage.xor`` to exactly the samples written (timestamps and float bits),
and re-encoding those samples must give Prometheus's bytes back. The data starts at
negative timestamps, which Prometheus 2.42 accepts like any other.

Skipped without the binary, except under CI (``CI=true``), where its absence fails.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import pytest
import snappy

from benchmarks.peers import PROMETHEUS, Server, running
from promstore.remote.pb import remote_pb2, types_pb2
from promstore.remote.read_stream import CONTENT_TYPE, decode_responses
from storage.xor import decode_xor, encode_xor
from tests.helpers import (
    PROM_NAN_BITS,
    STALE_NAN_BITS,
    WRITE_HEADERS,
    http_request,
    snappy_write_body,
)

pytestmark = pytest.mark.slow

READY_S = 30.0
REQUEST_S = 10.0
STEP_MS = 10_000
# Prometheus refuses samples older than an hour before the newest it has (half its 2 h
# block range) and compacts its head once it spans 3 h; the data stays within both, so
# every chunk comes from the head and no write is refused for its age.
START_MS = -45 * 60_000
SLICE_MS = 10 * 60_000

READ_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}

# Float bit patterns every codec path must carry unchanged.
SPECIAL_BITS = np.array([
    STALE_NAN_BITS, PROM_NAN_BITS,
    0x7FF8000000000000, 0xFFF8000000000000,  # quiet NaNs, both signs
    0x7FF4000000000000, 0x7FFFFFFFFFFFFFFF,  # signalling NaN, all-ones payload
    0x7FF0000000000000, 0xFFF0000000000000,  # +Inf, -Inf
    0x0000000000000000, 0x8000000000000000,  # +0.0, -0.0
    0x0000000000000001, 0x000FFFFFFFFFFFFF,  # smallest and largest subnormal
    0x8000000000000001, 0x0010000000000000,  # negative subnormal, smallest normal
    0x7FEFFFFFFFFFFFFF, 0xFFEFFFFFFFFFFFFF,  # largest finite, both signs
    0x3FF0000000000000, 0x3FF0000000000001,  # 1.0 and the next float up
], dtype=np.uint64)

Samples = tuple[np.ndarray, np.ndarray]  # int64 timestamps, uint64 value bits


def regular(n: int, start: int = START_MS, step: int = STEP_MS) -> np.ndarray:
    return start + step * np.arange(n, dtype=np.int64)


def hostile_series(rng: np.random.Generator) -> dict[str, Samples]:
    """Series named by shape: values and timestamps chosen to reach every encoding case."""
    n = 600
    # Random bits anywhere (64 significant bits), special values, repeats (xor 0) and
    # neighbours differing in low bits (inside the previous leading/trailing window).
    hostile = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    pick = rng.random(n)
    special = pick < 0.35
    hostile[special] = rng.choice(SPECIAL_BITS, int(special.sum()))
    nudge = (pick >= 0.5) & (pick < 0.6)
    hostile[nudge] ^= rng.integers(1, 256, int(nudge.sum()), dtype=np.uint64)
    for i in np.flatnonzero((pick >= 0.35) & (pick < 0.5))[1:]:
        hostile[i] = hostile[i - 1]

    counter = np.cumsum(rng.poisson(30, n)).astype(np.float64)
    counter[n // 2:] -= counter[n // 2]  # a reset
    gauge = np.round(50 + 10 * np.sin(np.arange(n) / 20) + rng.normal(0, 1, n), 2)
    stale = gauge.view(np.uint64).copy()
    stale[rng.random(n) < 0.1] = STALE_NAN_BITS

    # Deltas whose delta-of-delta sits on each edge of the 14, 17 and 20-bit widths and
    # just past it, both signs; 8.7-minute and 50-minute gaps (64-bit width) early, so
    # that they fall inside the first chunk rather than between chunks.
    wiggle = np.array([1, 8193, 1, 8194, 1, 65537, 1, 65538, 1, 15_000, 15_000, 14_999,
                       15_001, 7], dtype=np.int64)
    gaps = np.array([1, 524_289, 1, 524_290, 1, 3_000_000, 2], dtype=np.int64)
    jumpy_ts = START_MS + np.cumsum(np.concatenate([[0], np.tile(wiggle, 2), gaps,
                                                    np.tile(wiggle, 8)]))
    jumpy = rng.normal(0, 1e6, len(jumpy_ts))

    negative_ts = regular(200, START_MS, 13_000)  # ends before 0
    return {
        "hostile": (regular(n), hostile),
        "constant": (regular(400), np.full(400, 42.0).view(np.uint64)),
        "counter": (regular(n), counter.view(np.uint64)),
        "gauge_with_stale": (regular(n), stale),
        "jumpy": (jumpy_ts, jumpy.view(np.uint64)),
        "negative": (negative_ts, rng.normal(-1e300, 1e299, 200).view(np.uint64)),
        "one_sample": (np.array([START_MS + 1], np.int64), SPECIAL_BITS[:1]),
        "two_samples": (np.array([START_MS + 5, START_MS + 6], np.int64), SPECIAL_BITS[4:6]),
    }


def write_requests(data: dict[str, Samples]) -> list[bytes]:
    """Remote-write bodies in time slices, oldest first, each holding every series' samples
    of its slice, so that no request is older than Prometheus's out-of-bounds window."""
    end = max(int(ts[-1]) for ts, _ in data.values()) + 1
    bodies = []
    for lo in range(START_MS, end, SLICE_MS):
        series = []
        for shape, (ts, vbits) in data.items():
            keep = (ts >= lo) & (ts < lo + SLICE_MS)
            if keep.any():
                labels = {"__name__": "chunk_check", "shape": shape}
                values = vbits[keep].view(np.float64).tolist()
                series.append((labels, list(zip(ts[keep].tolist(), values))))
        bodies.append(snappy_write_body(series))
    return bodies


def remote_read(server: Server, mint: int, maxt: int) -> bytes:
    query = remote_pb2.Query(
        start_timestamp_ms=mint, end_timestamp_ms=maxt,
        matchers=[types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.EQ, name="__name__",
                                         value="chunk_check")])
    request = remote_pb2.ReadRequest(
        queries=[query], accepted_response_types=[remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS])
    resp = http_request(server.port, "POST", "/api/v1/read",
                        snappy.compress(request.SerializeToString()), READ_HEADERS,
                        timeout=REQUEST_S)
    assert resp.status == 200, resp.text
    assert resp.headers["content-type"] == CONTENT_TYPE
    return resp.body


@pytest.fixture(scope="module")
def prometheus():
    if not PROMETHEUS.available():
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is not installed (.ci/run installs the Debian package)")
        pytest.skip("prometheus is not installed")
    with running(PROMETHEUS, ready_timeout_s=READY_S) as server:
        yield server


def test_prometheus_chunks_decode_and_reencode_byte_for_byte(prometheus: Server) -> None:
    data = hostile_series(np.random.default_rng(20240229))
    for body in write_requests(data):
        resp = http_request(prometheus.port, "POST", "/api/v1/write", body, WRITE_HEADERS,
                            timeout=REQUEST_S)
        assert resp.status // 100 == 2, (resp.status, resp.text, prometheus.log_tail())

    chunks: dict[str, list[types_pb2.Chunk]] = defaultdict(list)
    body = remote_read(prometheus, START_MS - 1, 10 * 3_600_000)
    for response in decode_responses(body):
        assert response.query_index == 0
        for series in response.chunked_series:
            labels = {label.name: label.value for label in series.labels}
            assert labels["__name__"] == "chunk_check"
            chunks[labels["shape"]].extend(series.chunks)
    assert sorted(chunks) == sorted(data)

    for shape, (want_ts, want_bits) in data.items():
        got_ts, got_bits = [], []
        for i, chunk in enumerate(chunks[shape]):
            where = f"{shape} chunk {i}"
            assert chunk.type == types_pb2.Chunk.XOR, where
            ts, vs = decode_xor(chunk.data)
            assert (chunk.min_time_ms, chunk.max_time_ms) == (ts[0], ts[-1]), where
            reencoded = encode_xor(ts, vs)
            assert reencoded == chunk.data, (
                f"{where}: {len(ts)} samples re-encode differently\n"
                f"  timestamps={ts.tolist()}\n  bits={vs.view(np.uint64).tolist()}\n"
                f"  prometheus={chunk.data.hex()}\n  ours      ={reencoded.hex()}")
            got_ts.append(ts)
            got_bits.append(vs.view(np.uint64))
        np.testing.assert_array_equal(np.concatenate(got_ts), want_ts, err_msg=shape)
        np.testing.assert_array_equal(np.concatenate(got_bits), want_bits, err_msg=shape)

    # Enough samples went in for Prometheus to cut several chunks per long series.
    assert all(len(chunks[shape]) >= 3 for shape in ("hostile", "counter"))
