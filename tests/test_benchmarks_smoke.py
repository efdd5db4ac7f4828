"""Smoke tests of the benchmark load generator and corpus against an in-process
remote-write stub."""

from __future__ import annotations

import asyncio
import json
import math
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import snappy  # type: ignore[import-untyped]
from aiohttp import web

from benchmarks import loadgen
from benchmarks.corpus import Capture, StretchedCorpus, capture_synthetic
from benchmarks.workloads import Kind, make_workload
from promstore.remote.pb import remote_pb2


@dataclass
class Received:
    """What the stub saw: every sample as (labels, timestamp, value), in arrival order."""

    requests: int = 0
    samples: list[tuple[tuple[tuple[str, str], ...], int, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _stub_app(received: Received, status: Callable[[int], int], delay_s: float) -> web.Application:
    async def write(request: web.Request) -> web.Response:
        received.requests += 1
        n = received.requests
        headers = request.headers
        expected = {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
            "User-Agent": loadgen.DEFAULT_USER_AGENT,
        }
        for key, value in expected.items():
            if headers.get(key) != value:
                received.problems.append(f"header {key}={headers.get(key)!r}")
        req = remote_pb2.WriteRequest()
        req.ParseFromString(snappy.uncompress(await request.read()))
        for ts in req.timeseries:
            names = [label.name for label in ts.labels]
            if names != sorted(set(names)) or any(not label.value for label in ts.labels):
                received.problems.append(f"bad labels {names}")
            labels = tuple((label.name, label.value) for label in ts.labels)
            received.samples.extend((labels, s.timestamp, s.value) for s in ts.samples)
        if delay_s:
            await asyncio.sleep(delay_s)
        return web.Response(status=status(n))

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/api/v1/write", write)
    return app


StartStub = Callable[..., Awaitable[tuple[str, Received]]]


@pytest.fixture
async def stub() -> AsyncIterator[StartStub]:
    """Starts stubs on 127.0.0.1 (answering ``status(n)`` to the n-th request); stops them after."""
    runners: list[web.AppRunner] = []

    async def start(
        status: Callable[[int], int] = lambda n: 204, delay_s: float = 0.0
    ) -> tuple[str, Received]:
        received = Received()
        runner = web.AppRunner(_stub_app(received, status, delay_s))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/api/v1/write", received

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_sends_exactly_the_planned_samples_as_valid_requests(stub: StartStub) -> None:
    url, received = await stub()
    workload = make_workload("node", series=120, seed=3)
    plan = loadgen.build_plan(workload, 300, batch=50, concurrency=3)
    result = await loadgen.send(plan, url, duration_s=30)

    assert received.problems == []
    assert result.stopped_by == "samples"
    assert result.samples_accepted == result.samples_sent == len(received.samples) == 300
    assert result.series_created == 120
    assert result.requests_sent == received.requests == plan.requests
    assert result.non_2xx == 0 and result.status_counts == {"204": plan.requests}
    series = {labels for labels, _, _ in received.samples}
    assert len(series) == 120
    assert all(dict(labels)["job"] == "node" and "instance" in dict(labels) for labels in series)
    # Per series, timestamps strictly increase scrape by scrape.
    last: dict[tuple[tuple[str, str], ...], int] = {}
    for labels, ts, _ in received.samples:
        assert ts > last.get(labels, -1)
        last[labels] = ts


async def test_wall_clock_bound_stops_sending(stub: StartStub) -> None:
    url, received = await stub(delay_s=0.6)
    plan = loadgen.build_plan(make_workload("node", series=100), 2000, batch=10, concurrency=2)
    result = await loadgen.send(plan, url, duration_s=0.2)

    assert result.stopped_by == "duration"
    # Only the requests already on their way when the time ran out were sent.
    assert result.requests_sent == received.requests == 2
    assert result.samples_planned == 2000 and result.samples_sent == 20


async def test_non_2xx_answers_are_counted_not_accepted(stub: StartStub) -> None:
    url, _ = await stub(status=lambda n: 500 if n % 2 else 204)
    plan = loadgen.build_plan(make_workload("node", series=100), 200, batch=25, concurrency=1)
    result = await loadgen.send(plan, url, duration_s=30)

    assert result.requests_sent == 8
    assert result.status_counts == {"204": 4, "500": 4}
    assert result.non_2xx == 4 and result.samples_accepted == 100
    assert result.errors and result.errors[0].startswith("HTTP 500")


def test_workload_is_seeded_and_values_behave() -> None:
    a, b = make_workload("node", hosts=3, seed=7), make_workload("node", hosts=3, seed=7)
    assert a.n_series == b.n_series and 1000 <= a.n_series <= 5000
    np.testing.assert_array_equal(
        a.stream(0, a.n_series).advance(5), b.stream(0, b.n_series).advance(5)
    )
    values = a.stream(0, a.n_series).advance(40)
    assert np.isfinite(values).all() and (values >= 0).all()
    profile = a.profiles[int(a.host_profile[0])]
    kinds = np.array([s.kind for s in profile.specs])
    host0 = values[:, : len(kinds)]
    counters = host0[:, np.isin(kinds, [Kind.COUNTER, Kind.BUCKET, Kind.SUM])]
    assert (np.diff(counters, axis=0) >= 0).all()
    assert (np.diff(host0[:, kinds == Kind.CONST], axis=0) == 0).all()
    assert (np.diff(host0[:, kinds == Kind.GAUGE], axis=0) != 0).any()
    # Histogram buckets are cumulative in le within each scrape.
    names = [s.labels["__name__"] for s in profile.specs]
    for group in {s.group for s in profile.specs if s.kind == Kind.BUCKET}:
        cols = [
            i
            for i, s in enumerate(profile.specs)
            if s.group == group and names[i].endswith("_bucket")
        ]
        les = [
            math.inf
            if profile.specs[i].labels["le"] == "+Inf"
            else float(profile.specs[i].labels["le"])
            for i in cols
        ]
        ordered = host0[:, [c for _, c in sorted(zip(les, cols))]]
        assert (np.diff(ordered, axis=1) >= 0).all()


def test_series_count_can_be_set_exactly() -> None:
    workload = make_workload("node", series=2345)
    assert workload.n_series == 2345
    rows = loadgen.build_plan(workload, 2345, batch=1000, concurrency=2).requests
    assert rows == 4  # two shards of 1172 and 1173 series, cut at 1000 samples


async def test_synthetic_corpus_saves_stretches_and_sends(stub: StartStub, tmp_path) -> None:
    capture = capture_synthetic(hosts=1, hours=0.05, seed=2)  # 12 scrapes
    capture.save(tmp_path / "corpus.npz")
    loaded = Capture.load(tmp_path / "corpus.npz")
    np.testing.assert_array_equal(loaded.values.view(np.uint64), capture.values.view(np.uint64))
    assert loaded.metric_names.tolist() == capture.metric_names.tolist()

    corpus = StretchedCorpus(loaded, hosts=2, seed=2)
    assert corpus.n_series == 2 * capture.n_series and corpus.cumulative.any()
    rounds = 30  # longer than the capture: counters must keep growing
    url, received = await stub()
    plan = loadgen.build_plan(corpus, corpus.n_series * rounds, batch=5000, concurrency=2)
    result = await loadgen.send(plan, url, duration_s=30)

    assert received.problems == [] and result.non_2xx == 0
    assert len(received.samples) == corpus.n_series * rounds
    by_series: dict[tuple[tuple[str, str], ...], list[tuple[int, float]]] = {}
    for labels, ts, value in received.samples:
        by_series.setdefault(labels, []).append((ts, value))
    assert len(by_series) == corpus.n_series
    assert len({dict(labels)["instance"] for labels in by_series}) == 2
    for samples in by_series.values():
        assert (np.diff([ts for ts, _ in samples]) == 15_000).all()

    # Counters never fall, past the end of the capture too; other series replay captured
    # values bit for bit.
    values = corpus.stream(0, corpus.n_series).advance(rounds)
    counters = np.tile(corpus.cumulative, 2)
    assert (np.diff(values[:, counters], axis=0) >= 0).all()
    captured = set(capture.values.view(np.uint64).tolist())
    assert set(values[:, ~counters].view(np.uint64).ravel().tolist()) <= captured


def test_query_benchmark_runs_against_promstore(tmp_path) -> None:
    from benchmarks import query

    old = signal.getsignal(signal.SIGTERM)  # main installs its own handler
    try:
        code = query.main(["--targets", "promstore", "--api-hosts", "2", "--gateway-hosts", "1",
                           "--hours", "1", "--runs", "1", "--warmups", "0", "--stable", "0",
                           "--idle", "0", "--switch-idle", "0", "--fixed-cost",
                           "--out", str(tmp_path)])
    finally:
        signal.signal(signal.SIGTERM, old)
    assert code == 0
    report = json.loads(next(tmp_path.glob("query-quick-custom-*.json")).read_text())
    assert report["data"]["series"] == 2 * 100 + 14
    (row,) = report["targets"]
    assert row["target"] == "promstore" and "data_problem" not in row
    assert row["blocks"] == []  # an hour of data stays in the head
    assert row["load"]["samples_accepted"] == 214 * 240 and row["load"]["non_2xx"] == 0
    answers = row["queries"]
    assert answers["raw 1 series 1h"]["points"] == 240  # every sample of the last hour
    assert answers["count all series"]["value"] == "214"
    assert answers["rate api 7d"]["series"] == 2  # one per instance
    assert answers["literal 1 after it"]["points"] == 1
    assert answers["quantile 24h again"]["points"] == answers["quantile 24h"]["points"]
    assert all(a["runs"] == 1 and a["median_ms"] > 0 for a in answers.values())
