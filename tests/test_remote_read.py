"""Remote read (``POST /api/v1/read``): the encoders against the reference protobuf
classes, the request decoder, the handler over a real server (both response types,
limits, bad input), and a real Prometheus 2.42 reading promstore through ``remote_read``.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import struct
import threading
import time
import urllib.parse
from pathlib import Path

import crc32c
import numpy as np
import pytest
import snappy
from aiohttp import ClientPayloadError, ClientSession, web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from promstore.metrics import ServerMetrics
from promstore.remote import _read_kernels
from promstore.remote.pb import remote_pb2, types_pb2
from promstore.remote.read_handler import (
    SAMPLES,
    STREAMED_XOR_CHUNKS,
    LabelTable,
    ReadHandler,
    ReadLimits,
    chunk_sample_count,
    decode_read_request,
    encode_frames,
    encode_read_response,
    frame_batches,
)
from promstore.remote.read_stream import CONTENT_TYPE, decode_responses, encode_frame
from promstore.remote.wire import WireLimits, decode_write_request
from storage.db import DB, DBOptions
from storage.errors import BadDataError, LimitExceededError, TooLargeError
from storage.head import HeadOptions
from storage.matchers import MatchType
from storage.series_set import ChunkSeriesSet, SeriesSet, label_sort_key
from storage.xor import decode_xor, encode_xor_many
from tests.helpers import (
    PROM_NAN_BITS,
    STALE_NAN_BITS,
    encode_write_request,
    f64,
    free_port,
    http_request,
)
from tests.test_prometheus_e2e import prometheus_binary

# -- data ------------------------------------------------------------------------------------

LabelKey = tuple[tuple[str, str], ...]
Expected = dict[LabelKey, list[tuple[int, int]]]  # label set -> (timestamp, value bits)

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
_samples = st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**64 - 1)),
                    max_size=300, unique_by=lambda s: s[0])
_series = st.tuples(st.dictionaries(_text.filter(bool), _text, max_size=4), _samples)


def series_set(raw: list[tuple[dict[str, str], list[tuple[int, int]]]]) -> SeriesSet:
    """A SeriesSet of series given as labels and ``(timestamp, value bits)`` samples."""
    rows = []
    for labels, samples in raw:
        samples = sorted(samples)
        rows.append((labels, [t for t, _ in samples], [f64(b) for _, b in samples]))
    return SeriesSet.from_series(rows)


def proto_labels(ss: SeriesSet, i: int) -> list[types_pb2.Label]:
    return [types_pb2.Label(name=n, value=v) for n, v in ss.labels(i).items()]


def key(labels) -> LabelKey:
    return tuple((label.name, label.value) for label in labels)


# -- SAMPLES encoder -------------------------------------------------------------------------


def reference_read_response(sets: list[SeriesSet]) -> bytes:
    response = remote_pb2.ReadResponse()
    for ss in sets:
        result = response.results.add()
        for i in range(ss.n_series):
            ts, vs = ss.series_samples(i)
            result.timeseries.add(
                labels=proto_labels(ss, i),
                samples=[types_pb2.Sample(timestamp=t, value=v)
                         for t, v in zip(ts.tolist(), vs.tolist())])
    return response.SerializeToString()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_series, max_size=5), min_size=1, max_size=3))
def test_samples_response_is_byte_for_byte_the_reference(queries) -> None:
    sets = [series_set(q) for q in queries]
    assert bytes(encode_read_response(sets)) == reference_read_response(sets)


def test_samples_response_keeps_value_bits() -> None:
    special = [STALE_NAN_BITS, PROM_NAN_BITS, 0x8000000000000000, 0, 0x7FF0000000000000]
    ss = series_set([({"__name__": "x"}, [(i - 2, b) for i, b in enumerate(special)])])
    parsed = remote_pb2.ReadResponse.FromString(bytes(encode_read_response([ss])))
    got = [struct.unpack("<Q", struct.pack("<d", s.value))[0]
           for s in parsed.results[0].timeseries[0].samples]
    assert got == special
    assert [s.timestamp for s in parsed.results[0].timeseries[0].samples] == [-2, -1, 0, 1, 2]


# -- chunks and frames ---------------------------------------------------------------------


def chunk_set(ss: SeriesSet, per_chunk: int) -> ChunkSeriesSet:
    """``ss`` with every series' samples cut into XOR chunks of ``per_chunk`` samples."""
    per_series = -(-np.diff(ss.starts) // per_chunk)
    chunk_starts = np.zeros(ss.n_series + 1, np.int64)
    np.cumsum(per_series, out=chunk_starts[1:])
    within = np.arange(chunk_starts[-1]) - np.repeat(chunk_starts[:-1], per_series)
    firsts = np.repeat(ss.starts[:-1], per_series) + per_chunk * within
    bounds = np.append(firsts, ss.n_samples).astype(np.int64)
    blob, offsets = encode_xor_many(ss.timestamps, ss.samples, bounds)
    return ChunkSeriesSet(ss.names, ss.values, ss.label_ids, chunk_starts,
                          ss.timestamps[bounds[:-1]], ss.timestamps[bounds[1:] - 1], blob,
                          offsets)


def frames(chunks: ChunkSeriesSet, query_index: int, max_bytes: int, lo: int = 0,
           hi: int | None = None) -> bytes:
    labels = LabelTable.of(chunks.names, chunks.values, chunks.label_ids)
    return bytes(encode_frames(chunks, labels, query_index, max_bytes, lo, hi))


def reference_frames(chunks: ChunkSeriesSet, query_index: int, max_bytes: int) -> bytes:
    """Frames cut as Prometheus cuts them: one series per frame, a frame closed once
    its chunks reach ``max_bytes`` less the size of the labels."""
    out = b""
    for i in range(chunks.n_series):
        labels = proto_labels(chunks, i)
        budget = max_bytes - sum(label.ByteSize() for label in labels)
        left, pending = budget, []
        mine = range(chunks.chunk_starts[i], chunks.chunk_starts[i + 1])
        for n, c in enumerate(mine):
            chunk = types_pb2.Chunk(min_time_ms=int(chunks.mint[c]),
                                    max_time_ms=int(chunks.maxt[c]), type=types_pb2.Chunk.XOR,
                                    data=chunks.blob[chunks.offsets[c]:chunks.offsets[c + 1]]
                                    .tobytes())
            pending.append(chunk)
            left -= chunk.ByteSize()
            if left > 0 and n + 1 < len(mine):
                continue
            message = remote_pb2.ChunkedReadResponse(
                chunked_series=[types_pb2.ChunkedSeries(labels=labels, chunks=pending)],
                query_index=query_index)
            out += encode_frame(message.SerializeToString())
            left, pending = budget, []
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(_series, max_size=5), st.integers(1, 200), st.integers(0, 2**40),
       st.integers(1, 3000))
def test_frames_are_byte_for_byte_the_reference(raw, per_chunk, query_index, max_bytes
                                                ) -> None:
    chunks = chunk_set(series_set(raw), per_chunk)
    assert frames(chunks, query_index, max_bytes) == \
        reference_frames(chunks, query_index, max_bytes)
    assert chunk_sample_count(chunks) == sum(len(samples) for _, samples in raw)


@settings(max_examples=50, deadline=None)
@given(st.lists(_series, max_size=8), st.integers(1, 5000))
def test_frame_batches_cover_the_series_once(raw, batch_bytes) -> None:
    chunks = chunk_set(series_set(raw), 120)
    bounds = frame_batches(chunks, batch_bytes)
    assert bounds[0] == 0 and bounds[-1] == chunks.n_series
    assert np.all(np.diff(bounds) > 0) or chunks.n_series == 0
    pieces = b"".join(frames(chunks, 1, 500, int(lo), int(hi))
                      for lo, hi in itertools.pairwise(bounds))
    assert pieces == frames(chunks, 1, 500)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=100), st.integers(0, 20))
def test_crc32c_kernel_is_castagnoli(data, skip) -> None:
    buf = np.frombuffer(b"\xff" * skip + data, np.uint8)
    assert _read_kernels.crc32c(buf, skip, len(buf), _read_kernels.CRC32C_TABLE) == \
        crc32c.crc32c(data)


# -- request decoding ----------------------------------------------------------------------


def read_body(*queries: tuple[int, int, list[tuple[int, str, str]]],
              accepted: tuple[int, ...] = ()) -> bytes:
    """A snappy-compressed ReadRequest of ``(start, end, [(type, name, value)])`` queries."""
    request = remote_pb2.ReadRequest(accepted_response_types=list(accepted))
    for start, end, matchers in queries:
        q = request.queries.add(start_timestamp_ms=start, end_timestamp_ms=end)
        for kind, name, value in matchers:
            q.matchers.add(type=kind, name=name, value=value)
    return snappy.compress(request.SerializeToString())


def test_decode_queries_and_matchers() -> None:
    body = read_body((-5, 10, [(0, "__name__", "up"), (3, "job", "a|b")]), (7, 8, []))
    queries, kind = decode_read_request(body, ReadLimits())
    assert kind == SAMPLES
    assert [(q.mint, q.maxt) for q in queries] == [(-5, 10), (7, 8)]
    assert [(m.type, m.name, m.value) for m in queries[0].matchers] == \
        [(MatchType.EQ, "__name__", "up"), (MatchType.NRE, "job", "a|b")]
    assert queries[1].matchers == ()


@pytest.mark.parametrize("accepted, expected", [
    ((), SAMPLES), ((1,), STREAMED_XOR_CHUNKS), ((1, 0), STREAMED_XOR_CHUNKS),
    ((0, 1), SAMPLES), ((7, 1), STREAMED_XOR_CHUNKS), ((9, 0), SAMPLES),
])
def test_response_type_is_the_first_supported(accepted, expected) -> None:
    assert decode_read_request(read_body(accepted=accepted), ReadLimits())[1] == expected


@pytest.mark.parametrize("body, error, words", [
    (b"\x04not snappy", BadDataError, "snappy"),
    (snappy.compress(b"\x0a\x05\x08"), BadDataError, "ReadRequest"),
    (read_body((0, 1, [(2, "job", "(")])), BadDataError, "query 0"),
    (read_body((0, 1, [(9, "job", "x")])), BadDataError, "unknown type 9"),
    (read_body(accepted=(5,)), BadDataError, "response types"),
    (b"\xff\xff", BadDataError, "snappy"),
    (b"\xff\xff\xff\xff\x0f" + bytes(10), TooLargeError, "limit"),
    (snappy.compress(bytes(200)), TooLargeError, "limit"),
])
def test_bad_requests(body, error, words) -> None:
    with pytest.raises(error, match=words):
        decode_read_request(body, ReadLimits(max_decoded_bytes=100))


def test_too_many_queries() -> None:
    with pytest.raises(LimitExceededError, match="3 queries"):
        decode_read_request(read_body(*[(0, 1, [])] * 3), ReadLimits(max_queries=2))


def test_wrong_encoding_is_named() -> None:
    with pytest.raises(BadDataError, match="Content-Encoding is 'gzip'"):
        decode_read_request(b"\x1f\x8b\x08\x00 gzip", ReadLimits(), "gzip")


# -- over HTTP -------------------------------------------------------------------------------

NOW = 1_700_000_000_000


def sample_data() -> tuple[list, Expected]:
    """Three series of the ``rr`` metric (150 samples each, at 15 s) and one other, as
    a remote-write payload and as expected back."""
    rng = np.random.default_rng(7)
    written: Expected = {}
    payload = []
    for labels, n in (({"__name__": "rr", "job": "a", "instance": "i1"}, 150),
                      ({"__name__": "rr", "job": "b", "instance": "i1"}, 150),
                      ({"__name__": "rr", "job": "b", "instance": "ü/2"}, 150),
                      ({"__name__": "other", "job": "a"}, 10)):
        ts = NOW + 15_000 * np.arange(n)
        vs = rng.normal(0, 1e6, n).round(int(rng.integers(0, 6)))
        vs[3] = f64(STALE_NAN_BITS)
        samples = list(zip(ts.tolist(), vs.tolist()))
        payload.append((labels, samples))
        written[tuple(sorted(labels.items()))] = [(t, struct.unpack("<Q", struct.pack(
            "<d", v))[0]) for t, v in samples]
    return payload, written


def write_data(server) -> Expected:
    payload, written = sample_data()
    assert server.write(payload).status == 204
    return written


def post_read(server, body: bytes, headers=None):
    return server.request("POST", "/api/v1/read", body,
                          {"Content-Encoding": "snappy",
                           "Content-Type": "application/x-protobuf", **(headers or {})})


def read_samples(server, *queries) -> list[Expected]:
    resp = post_read(server, read_body(*queries))
    assert resp.status == 200, resp.text
    assert resp.headers["content-type"] == "application/x-protobuf"
    assert resp.headers["content-encoding"] == "snappy"
    parsed = remote_pb2.ReadResponse.FromString(snappy.uncompress(resp.body))
    out = []
    for result in parsed.results:
        labels = [key(ts.labels) for ts in result.timeseries]
        assert labels == sorted(labels, key=lambda k: label_sort_key(dict(k)))
        out.append({key(ts.labels): [(s.timestamp, struct.unpack("<Q", struct.pack(
            "<d", s.value))[0]) for s in ts.samples] for ts in result.timeseries})
    return out


def read_streamed(server, *queries) -> list[Expected]:
    """The streamed answer to ``queries``, checked for framing and order, with the
    chunks' samples trimmed to each query's range as clients do (chunks come whole)."""
    resp = post_read(server, read_body(*queries, accepted=(STREAMED_XOR_CHUNKS, SAMPLES)))
    assert resp.status == 200, resp.text
    assert resp.headers["content-type"] == CONTENT_TYPE
    out: list[Expected] = [{} for _ in queries]
    order: list[list[LabelKey]] = [[] for _ in queries]
    for frame in decode_responses(resp.body):
        assert len(frame.chunked_series) == 1
        series = frame.chunked_series[0]
        q, k = frame.query_index, key(series.labels)
        if not order[q] or order[q][-1] != k:
            assert k not in out[q], "a series came back in two runs"
            order[q].append(k)
        lo, hi, _ = queries[q]
        for chunk in series.chunks:
            assert chunk.type == types_pb2.Chunk.XOR
            assert chunk.min_time_ms <= hi and chunk.max_time_ms >= lo
            ts, vs = decode_xor(chunk.data)
            assert (int(ts[0]), int(ts[-1])) == (chunk.min_time_ms, chunk.max_time_ms)
            out[q].setdefault(k, []).extend(
                (t, v) for t, v in zip(ts.tolist(), vs.view(np.uint64).tolist())
                if lo <= t <= hi)
    for keys in order:
        assert keys == sorted(keys, key=lambda k: label_sort_key(dict(k)))
    return out


def in_range(data: Expected, lo: int, hi: int, keep=lambda k: True) -> Expected:
    out = {k: [s for s in v if lo <= s[0] <= hi] for k, v in data.items() if keep(dict(k))}
    return {k: v for k, v in out.items() if v}


def test_both_response_types_return_exactly_what_was_written(start_server) -> None:
    server = start_server()
    written = write_data(server)
    everything = (NOW - 1, NOW + 10**9, [(2, "__name__", ".+")])
    rr_b = (NOW + 15_000 * 10, NOW + 15_000 * 130, [(0, "__name__", "rr"), (0, "job", "b")])
    nothing = (NOW, NOW + 10**9, [(0, "__name__", "absent")])
    expected = [written,
                in_range(written, NOW + 150_000, NOW + 1_950_000,
                         lambda ls: ls["__name__"] == "rr" and ls["job"] == "b"),
                {}]
    assert read_samples(server, everything, rr_b, nothing) == expected
    assert read_streamed(server, everything, rr_b, nothing) == expected
    # A query without matchers selects nothing, as in Prometheus.
    assert read_samples(server, (NOW, NOW + 10**9, [])) == [{}]
    assert read_streamed(server, (NOW, NOW + 10**9, [])) == [{}]


def test_reads_span_blocks_and_head(start_server, tmp_path) -> None:
    # Cut the data into one-minute blocks before the server starts, so that no read
    # races the head moving its old ranges to blocks.
    payload, written = sample_data()
    options = DBOptions(head=HeadOptions(block_range_ms=60_000), compaction_interval=0)
    db = DB.open(tmp_path / "data", options)
    try:
        db.append(decode_write_request(encode_write_request(payload), WireLimits()))
        assert len(db.compact_head()) > 30
    finally:
        db.close()
    server = start_server()
    everything = (NOW - 1, NOW + 10**9, [(2, "__name__", ".+")])
    middle = (NOW + 600_000, NOW + 1_200_000, [(0, "__name__", "rr")])
    expected = [written, in_range(written, NOW + 600_000, NOW + 1_200_000,
                                  lambda ls: ls["__name__"] == "rr")]
    assert read_samples(server, everything, middle) == expected
    assert read_streamed(server, everything, middle) == expected


def test_small_frames_split_series_and_repeat_labels(start_server) -> None:
    server = start_server(None, "--remote-read-max-bytes-in-frame", "100")
    written = write_data(server)
    query = (NOW, NOW + 10**9, [(0, "job", "a")])
    resp = post_read(server, read_body(query, accepted=(STREAMED_XOR_CHUNKS,)))
    labels = [key(f.chunked_series[0].labels) for f in decode_responses(resp.body)
              if len(f.chunked_series[0].chunks) == 1]
    assert len(labels) > len(set(labels)) == 2  # every frame one chunk, a series split
    assert read_streamed(server, query) == [in_range(written, NOW, NOW + 10**9,
                                                     lambda ls: ls["job"] == "a")]


def test_bad_input_gets_4xx_and_changes_nothing(start_server) -> None:
    server = start_server(None, "--remote-read-sample-limit", "400")
    written = write_data(server)
    rr_a = (NOW, NOW + 10**9, [(0, "__name__", "rr"), (0, "job", "a")])
    assert read_samples(server, rr_a) == [in_range(written, NOW, NOW + 10**9,
                                                   lambda ls: ls["job"] == "a"
                                                   and ls["__name__"] == "rr")]
    good = read_body(rr_a)
    cases = [
        (b"garbage", {}, 400, "snappy"),
        (good[: len(good) // 2], {}, 400, "snappy"),
        (snappy.compress(b"\x0a\xff\xff\x01"), {}, 400, "ReadRequest"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", {"Content-Encoding": "gzip"}, 400, "gzip"),
        (read_body((0, 1, [(2, "job", "a(")])), {}, 400, "query 0"),
        (read_body((0, 1, [(0, "job", "a")]), accepted=(3,)), {}, 400, "response types"),
        (b"\xff\xff\xff\xff\x0f", {}, 413, "limit"),
    ]
    over = (NOW, NOW + 10**9, [(2, "__name__", "rr")])  # 450 samples
    for accepted in ((), (STREAMED_XOR_CHUNKS,)):
        cases.append((read_body(over, accepted=accepted), {}, 400, "limit of 400 samples"))
    cases.append((read_body(rr_a, rr_a, rr_a), {}, 400, "query 2 brings it to 450"))
    for body, headers, status, words in cases:
        resp = post_read(server, body, headers)
        assert (resp.status, words in resp.text) == (status, True), (body[:20], resp.text)
    # Streamed, the first two queries are on their way when the third one goes over.
    with pytest.raises(http.client.IncompleteRead):
        post_read(server, read_body(rr_a, rr_a, rr_a, accepted=(STREAMED_XOR_CHUNKS,)))
    assert server.get("/-/ready").status == 200
    within = (NOW - 1, NOW + 10**9, [(2, "__name__", "rr|other"), (1, "job", "b")])
    assert read_streamed(server, within) == [in_range(written, NOW - 1, NOW + 10**9,
                                                      lambda ls: ls["job"] != "b")]
    assert 'code="400",handler="read"' in server.metrics()


# -- in-process: failures mid-stream, the concurrency gate ---------------------------------


class FakeStore:
    """A store whose querier returns ``series`` and counts selects running at once;
    ``fail_after`` selects, it raises."""

    def __init__(self, series: SeriesSet, fail_after: int | None = None) -> None:
        self.series, self.fail_after = series, fail_after
        self.calls = self.running = self.most = 0
        self._lock = threading.Lock()

    def querier(self, mint: int, maxt: int) -> FakeStore:
        return self

    def select(self, matchers, mint: int, maxt: int) -> SeriesSet:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
            fail = self.fail_after is not None and self.calls > self.fail_after
        time.sleep(0.02)  # gives overlapping requests the chance to overlap
        with self._lock:
            self.running -= 1
        if fail:
            raise RuntimeError("disk on fire")
        return self.series

    def select_chunks(self, matchers, mint: int, maxt: int) -> ChunkSeriesSet:
        return chunk_set(self.select(matchers, mint, maxt), 120)


async def post_in_process(store: FakeStore, limits: ReadLimits, bodies: list[bytes]) -> list:
    app = web.Application()
    handler = ReadHandler(lambda: store, limits, ServerMetrics(lambda: None))
    app.router.add_post("/api/v1/read", handler.__call__)
    async with TestServer(app) as server, ClientSession() as session:
        async def one(body: bytes):
            try:
                async with session.post(server.make_url("/api/v1/read"), data=body) as r:
                    return r.status, await r.read()
            except ClientPayloadError as exc:
                return "incomplete", exc
        return await asyncio.gather(*(one(b) for b in bodies))


BIG = SeriesSet.from_series([({"__name__": "x", "i": f"{i:05}"}, range(240), [1.5] * 240)
                             for i in range(3000)])


async def test_failure_mid_stream_closes_the_connection() -> None:
    body = read_body(*[(0, 10**6, [(0, "__name__", "x")])] * 2,
                     accepted=(STREAMED_XOR_CHUNKS,))
    [(status, _)] = await post_in_process(FakeStore(BIG, fail_after=1), ReadLimits(), [body])
    assert status == "incomplete"
    # The same failure before the stream starts is a plain 500.
    [(status, text)] = await post_in_process(FakeStore(BIG, fail_after=0), ReadLimits(),
                                             [body])
    assert (status, text) == (500, b"internal error reading samples\n")


async def test_requests_beyond_the_concurrency_limit_wait() -> None:
    store = FakeStore(SeriesSet.from_series([({"a": "b"}, [1], [2.0])]))
    bodies = [read_body((0, 10, [(0, "a", "b")]), accepted=kind)
              for kind in ((), (STREAMED_XOR_CHUNKS,)) * 3]
    results = await post_in_process(store, ReadLimits(concurrency=1), bodies)
    assert [status for status, _ in results] == [200] * 6
    assert (store.calls, store.most) == (6, 1)


# -- a real Prometheus reading promstore ---------------------------------------------------

PROMETHEUS_CONFIG = """\
global:
  evaluation_interval: 1m
remote_read:
  - url: http://127.0.0.1:{port}/api/v1/read
    read_recent: true
    remote_timeout: 30s
"""
WAIT_S = 60


class Prometheus:
    """A Prometheus 2.42 with no scrape targets whose only data is what it reads remotely."""

    def __init__(self, directory: Path, promstore_port: int) -> None:
        import subprocess

        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(PROMETHEUS_CONFIG.format(port=promstore_port))
        self.log_path = directory / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [prometheus_binary(), f"--config.file={config}",
                 f"--storage.tsdb.path={directory / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=directory)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log()}"
            try:
                if http_request(self.port, "GET", "/-/ready", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"prometheus not ready within {WAIT_S}s:\n{self.log()}")

    def api(self, path: str, **params: str):
        resp = http_request(self.port, "GET", f"{path}?{urllib.parse.urlencode(params)}",
                            timeout=WAIT_S)
        assert resp.status == 200, resp.text
        payload = resp.json()
        assert payload["status"] == "success", payload
        return payload["data"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except Exception:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def as_text(v: float) -> str:
    """A value in a form that compares equal to how Prometheus prints it, once parsed."""
    return "NaN" if v != v else repr(v)


def points_by_series(result: list[dict]) -> dict[LabelKey, list[tuple[int, str]]]:
    """A matrix result as label set -> ``(milliseconds, as_text(value))``."""
    return {tuple(sorted(r["metric"].items())):
            [(round(float(t) * 1000), as_text(float(v))) for t, v in r["values"]]
            for r in result}


@pytest.mark.slow
def test_prometheus_reads_promstore_through_remote_read(tmp_path, start_server) -> None:
    server = start_server()
    step = 15_000
    start = (int(time.time() * 1000) - 3_600_000) // step * step
    rng = np.random.default_rng(3)
    payload = []
    for labels in ({"__name__": "rr_remote", "job": "a"}, {"__name__": "rr_remote", "job": "b"},
                   {"__name__": "rr_other", "job": "a"}):
        values = rng.normal(0, 1000, 200).round(int(rng.integers(0, 4)))
        values[5], values[6] = float("inf"), float("nan")
        payload.append((labels, list(zip((start + step * np.arange(200)).tolist(),
                                         values.tolist()))))
    assert server.write(payload).status == 204
    expected = {tuple(sorted(labels.items())): samples for labels, samples in payload
                if labels["__name__"] == "rr_remote"}

    expected = {k: [(t, as_text(v)) for t, v in samples] for k, samples in expected.items()}
    key_b = (("__name__", "rr_remote"), ("job", "b"))
    end = start + step * 199
    prometheus = Prometheus(tmp_path, server.port)
    try:
        # A range selector returns the raw samples.
        raw = prometheus.api("/api/v1/query", query="rr_remote[1h]", time=str(end / 1000))
        assert points_by_series(raw["result"]) == expected
        # A range query at the samples' own timestamps evaluates to them.
        matrix = prometheus.api("/api/v1/query_range", query='rr_remote{job="b"}',
                                start=str(start / 1000), end=str(end / 1000), step="15")
        assert points_by_series(matrix["result"]) == {key_b: expected[key_b]}
        instant = prometheus.api("/api/v1/query", query="count(rr_remote)",
                                 time=str(end / 1000))
        assert instant["result"][0]["value"][1] == "2"
    finally:
        prometheus.stop()
    assert server.get("/-/ready").status == 200
