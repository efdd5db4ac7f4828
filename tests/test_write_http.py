"""Remote write through the real server process: status codes, read-back through the
metadata API, bit-exact samples after a clean shutdown, restart, partial acceptance,
duplicates and the self-metrics that count them."""

from __future__ import annotations

import contextlib
import math
import random
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from promstore.remote.pb import remote_pb2
from storage.head import HeadOptions
from tests.helpers import (
    PROM_NAN_BITS,
    STALE_NAN_BITS,
    ServerProcess,
    bits,
    encode_write_request,
    f64,
    metric_value,
    read_data_dir,
    snappy_write_body,
)

T0 = 1_700_000_000_000  # ms

# Label sets as the sender wrote them (the second one unsorted), samples chosen for the
# bit patterns that arithmetic or a careless float conversion would change.
DATA = [
    ({"__name__": "http_requests_total", "job": "api", "instance": "a:9090"},
     [(T0, 1.0), (T0 + 15_000, 2.5), (T0 + 30_000, f64(STALE_NAN_BITS))]),
    ([("job", "api"), ("__name__", "http_requests_total"), ("instance", "b:9090")],
     [(T0, f64(PROM_NAN_BITS)), (T0 + 15_000, -0.0), (T0 + 30_000, math.inf),
      (T0 + 45_000, -math.inf)]),
    ({"__name__": "node_load1", "host": "h1", "note": "✓ é"},
     [(T0, 0.0), (T0 + 1, 5e-324), (T0 + 2, 1.7976931348623157e308),
      (T0 + 3, f64(0xFFF0000000000001)), (T0 + 4, f64(0x7FF8DEADBEEF0001))]),
]


def key(labels) -> tuple[tuple[str, str], ...]:
    """The stored form of a label set: sorted, labels with empty values dropped."""
    items = labels.items() if isinstance(labels, dict) else labels
    return tuple(sorted((n, v) for n, v in items if v != ""))


def expected(data) -> dict:
    return {key(labels): [(t, bits(v)) for t, v in samples] for labels, samples in data}


def api_series(data) -> list[dict[str, str]]:
    return sorted((dict(key(labels)) for labels, _ in data), key=lambda s: sorted(s.items()))


def test_encoder_matches_reference_classes():
    """The hand-written encoder the tests use produces what the reference classes read."""
    parsed = remote_pb2.WriteRequest.FromString(encode_write_request(DATA))
    assert len(parsed.timeseries) == len(DATA)
    for ts, (labels, samples) in zip(parsed.timeseries, DATA):
        items = list(labels.items() if isinstance(labels, dict) else labels)
        assert [(lbl.name, lbl.value) for lbl in ts.labels] == items
        assert [(s.timestamp, bits(s.value)) for s in ts.samples] == \
            [(t, bits(v)) for t, v in samples]
    negative = remote_pb2.WriteRequest.FromString(encode_write_request([({"a": "b"}, [(-5, 1.0)])]))
    assert negative.timeseries[0].samples[0].timestamp == -5


@pytest.fixture(scope="module")
def loaded_server(tmp_path_factory):
    """One server holding ``DATA``, for tests that only read."""
    tmp = tmp_path_factory.mktemp("loaded")
    server = ServerProcess(tmp / "data", log_path=tmp / "server.log")
    try:
        server.start()
        resp = server.write(DATA)
        assert resp.status == 204, resp.text
        yield server
    finally:
        server.kill()


def test_series_api_lists_written_series(loaded_server):
    assert loaded_server.series() == api_series(DATA)
    assert loaded_server.series('http_requests_total{instance="b:9090"}') == [
        {"__name__": "http_requests_total", "instance": "b:9090", "job": "api"}]
    assert loaded_server.series("node_load1") == [
        {"__name__": "node_load1", "host": "h1", "note": "✓ é"}]


def test_labels_api_lists_label_names(loaded_server):
    assert loaded_server.api("/api/v1/labels") == ["__name__", "host", "instance", "job", "note"]


def test_label_values_api_lists_metric_names(loaded_server):
    assert loaded_server.api("/api/v1/label/__name__/values") == \
        ["http_requests_total", "node_load1"]
    assert loaded_server.api("/api/v1/label/instance/values") == ["a:9090", "b:9090"]
    assert loaded_server.api("/api/v1/label/note/values") == ["✓ é"]


def test_sigterm_then_reopen_and_restart(tmp_path, start_server):
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    resp = server.write(DATA)
    assert resp.status == 204, resp.text
    assert server.stop(timeout=10) == 0, server.log()

    stored = read_data_dir(data_dir)
    assert stored.samples == expected(DATA)
    assert stored.rows == stored.n_samples == sum(len(s) for _, s in DATA)

    again = start_server(data_dir)
    assert again.series() == api_series(DATA)
    more = [({"__name__": "http_requests_total", "job": "api", "instance": "a:9090"},
             [(T0 + 45_000, 3.0)])]
    assert again.write(more).status == 204
    assert again.stop(timeout=10) == 0, again.log()
    want = expected(DATA)
    want[key(more[0][0])].append((T0 + 45_000, bits(3.0)))
    assert read_data_dir(data_dir).samples == want


def test_sigterm_while_a_request_body_is_arriving(tmp_path, start_server):
    """A stop never hangs on a request in flight: the server exits 0 within seconds, and
    whatever it acknowledged is stored."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    body = snappy_write_body(DATA)
    head = ("POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(head + body[:5])
        time.sleep(0.3)  # the handler is now waiting for the rest of the body
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # and the server is shutting down
        with contextlib.suppress(OSError):  # a reset here means nothing was acknowledged
            sock.sendall(body[5:])
        try:
            code = server.proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not exit within 10 s of SIGTERM")
        try:  # the server is gone: whatever it answered is in the socket buffer
            status_line = sock.makefile("rb").readline()
        except OSError:
            status_line = b""
    assert code == 0, server.log()
    if status_line.startswith(b"HTTP/1.1 2"):
        assert read_data_dir(data_dir).samples == expected(DATA)


def test_partial_acceptance_names_out_of_order_series(tmp_path, start_server):
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    a = {"__name__": "temperature", "room": "kitchen"}
    b = {"__name__": "temperature", "room": "hall"}
    assert server.write([(a, [(T0, 20.0), (T0 + 2000, 21.0)])]).status == 204

    resp = server.write([(a, [(T0 + 1000, 99.0), (T0 + 3000, 22.0)]), (b, [(T0, 18.0)])])
    assert resp.status == 400
    assert "out of order" in resp.text
    assert 'room="kitchen"' in resp.text and "temperature" in resp.text
    assert 'room="hall"' not in resp.text
    assert server.stop(timeout=10) == 0

    assert read_data_dir(data_dir).samples == {
        key(a): [(T0, bits(20.0)), (T0 + 2000, bits(21.0)), (T0 + 3000, bits(22.0))],
        key(b): [(T0, bits(18.0))],
    }


def test_partial_acceptance_with_invalid_series(tmp_path, start_server):
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    good = {"__name__": "ok_metric", "x": "1"}
    resp = server.write([({"__name__": "ok_metric", "bad-name": "1"}, [(T0, 1.0)]),
                         (good, [(T0, 2.0)])])
    assert resp.status == 400
    assert "invalid label name" in resp.text and "bad-name" in resp.text
    assert server.series() == [good]
    assert server.stop(timeout=10) == 0
    assert read_data_dir(data_dir).samples == {key(good): [(T0, bits(2.0))]}


def test_duplicates(tmp_path, start_server):
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    s = {"__name__": "dup", "k": "v"}
    assert server.write([(s, [(T0, 1.5), (T0 + 1, f64(STALE_NAN_BITS))])]).status == 204
    # The newest sample again (same timestamp, same bits): accepted, not stored twice.
    resp = server.write([(s, [(T0 + 1, f64(STALE_NAN_BITS))])])
    assert resp.status == 204, resp.text
    # Same timestamp, different value: rejected as Prometheus does.
    resp = server.write([(s, [(T0 + 1, 7.0)])])
    assert resp.status == 400
    assert "duplicate sample for timestamp" in resp.text and 'k="v"' in resp.text
    # A NaN with another payload is another value.
    resp = server.write([(s, [(T0 + 1, f64(PROM_NAN_BITS))])])
    assert resp.status == 400
    # An older sample, even one already stored, is out of order (Prometheus without an
    # out-of-order window says the same).
    resp = server.write([(s, [(T0, 1.5)])])
    assert resp.status == 400 and "out of order" in resp.text
    assert server.stop(timeout=10) == 0
    stored = read_data_dir(data_dir)
    assert stored.samples == {key(s): [(T0, bits(1.5)), (T0 + 1, STALE_NAN_BITS)]}
    assert stored.rows == 2


def test_out_of_order_window_retry_is_not_stored_twice(tmp_path, start_server):
    """Within the out-of-order window a sample already stored is not stored again: a
    retried request is a duplicate and, as in Prometheus, the first value at a timestamp
    stays."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir, "--out-of-order-window", "1h")
    s = {"__name__": "late", "k": "v"}
    assert server.write([(s, [(T0, 1.0), (T0 + 60_000, 2.0)])]).status == 204
    late = [(s, [(T0 + 30_000, 5.0)])]
    assert server.write(late).status == 204
    assert server.write(late).status == 204  # the sender retried
    server.write([(s, [(T0 + 30_000, 6.0)])])  # same timestamp, other value
    assert server.stop(timeout=10) == 0
    stored = read_data_dir(data_dir, HeadOptions(out_of_order_window_ms=3_600_000))
    assert stored.samples == {key(s): [(T0, bits(1.0)), (T0 + 30_000, bits(5.0)),
                                       (T0 + 60_000, bits(2.0))]}
    assert stored.rows == 3


def test_replay_keeps_out_of_order_samples_after_the_window_shrinks(tmp_path, start_server):
    """A sample acknowledged under an out-of-order window is durable: restarting with a
    smaller window (here the default, none) must not lose it."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir, "--out-of-order-window", "1h")
    s = {"__name__": "late", "k": "v"}
    assert server.write([(s, [(T0 + 60_000, 2.0)])]).status == 204
    assert server.write([(s, [(T0, 1.0)])]).status == 204
    assert server.stop(timeout=10) == 0
    assert read_data_dir(data_dir).samples == {key(s): [(T0, bits(1.0)),
                                                        (T0 + 60_000, bits(2.0))]}


def test_extreme_timestamps(tmp_path, start_server):
    """Every acknowledged sample is stored, whatever its timestamp; pre-1970 ones too."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    lo, hi = -(2**63), 2**63 - 1
    pre_epoch = {"__name__": "pre_epoch"}
    assert server.write([(pre_epoch, [(-86_400_000, 1.0), (0, 2.0)])]).status == 204
    acked = {}
    for name, samples in (("far_past_zero", [(lo, 0.0)]), ("far_past_one", [(lo, 1.0)]),
                          ("far_future", [(hi, 1.0)])):
        resp = server.write([({"__name__": name}, samples)])
        assert resp.status in (204, 400), resp.text
        if resp.status == 204:
            acked[(("__name__", name),)] = [(t, bits(v)) for t, v in samples]
        else:
            assert str(samples[0][0]) in resp.text
    assert server.stop(timeout=10) == 0
    stored = read_data_dir(data_dir).samples
    assert stored[key(pre_epoch)] == [(-86_400_000, bits(1.0)), (0, bits(2.0))]
    for series, samples in acked.items():
        assert stored.get(series) == samples, series


def test_small_wal_segments_replay_after_kill(tmp_path, start_server):
    """Many small WAL segments (records larger than a segment among them) replay whole."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir, "--wal-segment-size", "4KiB")
    want: dict = {}
    rng = random.Random(0)
    for i in range(40):
        # incompressible, so records outgrow segments; the first is empty, so no label
        pad = rng.randbytes(i * 50).hex()
        series = [({"__name__": "seg", "i": str(i), "pad": pad},
                   [(T0 + i, float(i)), (T0 + i + 1000, f64(STALE_NAN_BITS))])]
        assert server.write(series).status == 204
        want.setdefault(key(series[0][0]), []).extend(
            (t, bits(v)) for t, v in series[0][1])
    server.kill()
    assert len(list((data_dir / "wal").iterdir())) > 5
    again = start_server(data_dir, "--wal-segment-size", "4KiB")
    assert len(again.series("seg")) == len(want)
    assert again.stop(timeout=10) == 0
    stored = read_data_dir(data_dir)
    assert stored.samples == want
    assert stored.rows == stored.n_samples


def test_series_without_samples_are_not_created(start_server):
    server = start_server()
    resp = server.write([({"__name__": "has_samples", "a": "1"}, [(T0, 1.0)]),
                         ({"__name__": "no_samples", "ghost": "x"}, [])])
    assert resp.status == 204, resp.text
    assert server.series() == [{"__name__": "has_samples", "a": "1"}]
    assert server.api("/api/v1/labels") == ["__name__", "a"]
    assert server.api("/api/v1/label/__name__/values") == ["has_samples"]
    assert metric_value(server.metrics(), "promstore_head_series") == 1


def test_concurrent_identical_requests(tmp_path, start_server):
    """Senders retrying in parallel: one series each, every copy acknowledged, one row."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    data = [({"__name__": "same", "i": str(i)}, [(T0, float(i)), (T0 + 1, f64(PROM_NAN_BITS))])
            for i in range(300)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: server.write(data).status, range(16)))
    # The first copy to land stores both samples; a later copy is a duplicate only if it
    # arrives after that one, otherwise its first sample is out of order.
    assert statuses.count(204) >= 1 and set(statuses) <= {204, 400}, statuses
    assert metric_value(server.metrics(), "promstore_head_series") == 300
    assert server.stop(timeout=10) == 0
    stored = read_data_dir(data_dir)
    assert stored.samples == expected(data)
    assert stored.rows == 600


def test_torn_wal_tail_is_cut_and_reported(tmp_path, start_server):
    """Garbage after the last record (a write torn by a crash) never stops a start."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    assert server.write(DATA).status == 204
    server.kill()
    last = max((data_dir / "wal").iterdir())
    with open(last, "ab") as f:
        f.write(b"\x01\x00\xff\xff\x00\x00garbage" * 10)
    again = start_server(data_dir)
    assert again.series() == api_series(DATA)
    assert metric_value(again.metrics(), "promstore_wal_replay_problems") >= 1
    assert again.write([(DATA[0][0], [(T0 + 99_000, 1.0)])]).status == 204
    assert again.stop(timeout=10) == 0
    want = expected(DATA)
    want[key(DATA[0][0])].append((T0 + 99_000, bits(1.0)))
    assert read_data_dir(data_dir).samples == want


def test_second_server_on_the_same_directory_is_refused(tmp_path, start_server):
    data_dir = tmp_path / "data"
    first = start_server(data_dir)
    assert first.write(DATA).status == 204
    second = ServerProcess(data_dir, log_path=tmp_path / "second.log")
    with pytest.raises(RuntimeError, match="in use by another process"):
        second.start(timeout=30)
    assert second.proc.returncode not in (0, None)
    assert first.series() == api_series(DATA)
    assert first.stop(timeout=10) == 0
    assert read_data_dir(data_dir).samples == expected(DATA)


def test_metrics_count_ingested_and_rejected(tmp_path, start_server):
    server = start_server()
    before = server.metrics()
    assert metric_value(before, "promstore_samples_ingested_total") == 0
    s = {"__name__": "counted"}
    assert server.write([(s, [(T0, 1.0), (T0 + 1, 2.0), (T0 + 2, 3.0)])]).status == 204
    assert server.write([(s, [(T0 + 1, 9.0), (T0 + 5, 4.0)])]).status == 400  # 1 ooo, 1 new
    assert server.write([(s, [(T0 + 5, 4.0)])]).status == 204  # duplicate
    assert server.write([({"__name__": "1bad"}, [(T0, 1.0), (T0 + 1, 1.0)])]).status == 400
    after = server.metrics()
    assert metric_value(after, "promstore_samples_ingested_total") == 4
    assert metric_value(after, "promstore_samples_duplicate_total") == 1
    assert metric_value(after, "promstore_samples_rejected_total", {"reason": "out_of_order"}) == 1
    assert metric_value(after, "promstore_samples_rejected_total",
                        {"reason": "invalid_labels"}) == 2
    assert metric_value(after, "promstore_series_created_total") == 1
    assert metric_value(after, "promstore_head_series") == 1
    assert metric_value(after, "promstore_http_requests_total",
                        {"handler": "write", "code": "204"}) == 2
    assert metric_value(after, "promstore_http_requests_total",
                        {"handler": "write", "code": "400"}) == 2


def test_wal_fsync_interval(tmp_path, start_server):
    data_dir = tmp_path / "data"
    server = start_server(data_dir, "--wal-fsync", "interval", "--wal-fsync-interval", "200ms")
    assert server.write(DATA).status == 204
    assert server.series() == api_series(DATA)
    assert server.stop(timeout=10) == 0, server.log()
    assert read_data_dir(data_dir).samples == expected(DATA)


def test_native_histograms_are_refused_but_floats_stored(start_server):
    """Histogram samples cannot be stored yet: the sender hears so (400), floats are kept."""
    import snappy

    from promstore.remote.pb import remote_pb2

    server = start_server()
    request = remote_pb2.WriteRequest()
    series = request.timeseries.add()
    series.labels.add(name="__name__", value="with_histogram")
    series.samples.add(value=1.0, timestamp=T0)
    histogram = series.histograms.add()
    histogram.count_int = 3
    histogram.timestamp = T0
    resp = server.write(body=snappy.compress(request.SerializeToString()))
    assert resp.status == 400
    assert "1 native histogram samples were not stored" in resp.text
    assert len(server.series("with_histogram")) == 1


def test_writes_beyond_the_in_flight_limit_get_503(start_server):
    """Overload is answered with a retryable 503, never by queueing without bound."""
    import concurrent.futures

    server = start_server(None, "--workers", "1",
                          env={"PROMSTORE_MAX_IN_FLIGHT_WRITES": "1"})
    body = snappy_write_body([({"__name__": "load", "i": str(i)}, [(T0, 1.0)])
                              for i in range(20_000)])
    # Encoded once and sent together: encoding in each thread would space the requests
    # out so that, on a busy machine, each could be done before the next arrives.
    start = threading.Barrier(8)

    def send() -> int:
        start.wait()
        return server.write(body=body).status

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = [f.result() for f in [pool.submit(send) for _ in range(8)]]
    assert set(statuses) <= {204, 503}, statuses
    assert 503 in statuses and 204 in statuses
    assert server.get("/-/healthy").status == 200
