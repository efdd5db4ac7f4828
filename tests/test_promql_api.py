"""Tests of the query endpoints of the HTTP API (``promstore.api.query``) over an
in-memory store: answer shapes, parameters, errors and their types, status pages."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from promstore.api import query
from promstore.promql import EngineOptions
from promstore.promql.testing import STALE_NAN, MemoryStore
from storage.matchers import Matcher

STORE = web.AppKey("store", object)


class _Head:
    """The index part of a head, enough for the TSDB status page."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.n_series = len(store.series)
        self.min_time = min(ts[0] for _, ts, _ in store.series)
        self.max_time = max(ts[-1] for _, ts, _ in store.series)

    def label_names(self) -> list[str]:
        return sorted({k for labels, _, _ in self._store.series for k in labels})

    def label_values(self, name: str) -> list[str]:
        return sorted({labels[name] for labels, _, _ in self._store.series if name in labels})

    def select_series(self, matchers: list[Matcher], mint: int, maxt: int) -> np.ndarray:
        return np.array([i for i, (labels, _, _) in enumerate(self._store.series)
                         if all(m.matches(labels.get(m.name, "")) for m in matchers)])


class _Store(MemoryStore):
    @property
    def head(self) -> _Head:
        return _Head(self)


def _store() -> _Store:
    store = _Store()
    times = list(range(0, 600_000, 15_000))
    for instance in ("a", "b"):
        store.add({"__name__": "up", "job": "api", "instance": instance}, times,
                  [1.0] * len(times))
    store.add({"__name__": "up", "job": "db", "instance": "a"}, times,
              [0.0] * (len(times) - 1) + [STALE_NAN])
    store.add({"__name__": "tiny"}, times, [1e-7] * len(times))
    return store


async def _client(options: query.QueryApiOptions | None = None) -> TestClient:
    app = web.Application()
    app[STORE] = _store()
    query.add_routes(app, STORE, options)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def _get(client: TestClient, path: str, **params: str) -> tuple[int, dict]:
    resp = await client.get(path, params=params)
    return resp.status, json.loads(await resp.text())


async def test_instant_query_shapes() -> None:
    client = await _client()
    try:
        status, body = await _get(client, "/api/v1/query", query="up", time="300")
        assert status == 200 and body["status"] == "success"
        assert body["data"]["resultType"] == "vector"
        assert body["data"]["result"][0] == {
            "metric": {"__name__": "up", "instance": "a", "job": "api"}, "value": [300, "1"]}
        _, body = await _get(client, "/api/v1/query", query="1 + 1", time="300.5")
        assert body["data"] == {"resultType": "scalar", "result": [300.5, "2"]}
        _, body = await _get(client, "/api/v1/query", query='"hi"', time="1")
        assert body["data"] == {"resultType": "string", "result": [1, "hi"]}
        _, body = await _get(client, "/api/v1/query", query='up{instance="b"}[30s]',
                             time="300")
        assert body["data"]["resultType"] == "matrix"
        assert body["data"]["result"][0]["values"] == [[270, "1"], [285, "1"], [300, "1"]]
        _, body = await _get(client, "/api/v1/query", query="tiny", time="300")
        assert body["data"]["result"][0]["value"] == [300, "1e-07"]
    finally:
        await client.close()


async def test_range_query_and_form_post() -> None:
    client = await _client()
    try:
        resp = await client.post("/api/v1/query_range",
                                 data={"query": "sum by (job) (up)", "start": "0",
                                       "end": "60", "step": "30s"})
        body = json.loads(await resp.text())
        assert resp.status == 200
        assert body["data"] == {"resultType": "matrix", "result": [
            {"metric": {"job": "api"}, "values": [[0, "2"], [30, "2"], [60, "2"]]},
            {"metric": {"job": "db"}, "values": [[0, "0"], [30, "0"], [60, "0"]]}]}
        resp = await client.get("/api/v1/query_range", params={
            "query": "up", "start": "0", "end": "590", "step": "1"},
            headers={"Accept-Encoding": "gzip"})
        assert resp.headers["Content-Encoding"] == "gzip"
        assert len((await resp.json())["data"]["result"]) == 3
        _, body = await _get(client, "/api/v1/query_range", query="time()", start="0",
                             end="1", step="0.5")
        assert body["data"]["result"] == [
            {"metric": {}, "values": [[0, "0"], [0.5, "0.5"], [1, "1"]]}]
    finally:
        await client.close()


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_large_answers_are_sent_in_pieces(monkeypatch, encoding) -> None:
    """Past a size, an answer is written a piece at a time (not handed to the connection
    whole, which would copy what the socket cannot take at once): the same answer,
    compressed when the client asks for it."""
    client = await _client()
    try:
        params = {"query": "up", "start": "0", "end": "590", "step": "1"}
        resp = await client.get("/api/v1/query_range", params=params)
        whole = await resp.read()
        monkeypatch.setattr(query, "_STREAM_FROM", 1000)
        monkeypatch.setattr(query, "_STREAM_PIECE", 777)
        resp = await client.get("/api/v1/query_range", params=params,
                                headers={"Accept-Encoding": encoding})
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers.get("Content-Encoding", "identity") == encoding
        assert resp.headers.get("Transfer-Encoding") == "chunked"  # written in pieces
        assert await resp.read() == whole and len(whole) > 10 * 777
    finally:
        await client.close()


@pytest.mark.parametrize("path, params, error_type, status, message", [
    ("/api/v1/query", {"query": "sum("}, "bad_data", 400, 'invalid parameter "query"'),
    ("/api/v1/query", {"query": "up", "time": "x"}, "bad_data", 400, "Invalid time value"),
    ("/api/v1/query", {"query": "up", "timeout": "1x"}, "bad_data", 400, '"timeout"'),
    ("/api/v1/query", {"query": "up + on(job) up", "time": "300"}, "execution", 422,
     "duplicate series"),
    ("/api/v1/query_range", {"query": "up", "start": "x", "end": "1", "step": "1"},
     "bad_data", 400, 'invalid parameter "start"'),
    ("/api/v1/query_range", {"query": "up", "start": "10", "end": "1", "step": "1"},
     "bad_data", 400, "end timestamp must not be before start time"),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "1", "step": "0"},
     "bad_data", 400, "zero or negative query resolution step"),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "100000", "step": "1"},
     "bad_data", 400, "exceeded maximum resolution of 11,000 points"),
    ("/api/v1/query_range", {"query": "up[1m]", "start": "0", "end": "1", "step": "1"},
     "bad_data", 400, 'invalid expression type "range vector"'),
])
async def test_errors(path: str, params: dict[str, str], error_type: str, status: int,
                      message: str) -> None:
    client = await _client()
    try:
        got_status, body = await _get(client, path, **params)
        assert (got_status, body["status"], body["errorType"]) == (status, "error", error_type)
        assert message in body["error"]
    finally:
        await client.close()


async def test_timeout_answers_timeout() -> None:
    client = await _client(query.QueryApiOptions(engine=EngineOptions(timeout_s=0)))
    try:
        status, body = await _get(client, "/api/v1/query", query="up", time="1")
        assert (status, body["errorType"]) == (503, "timeout")
        assert body["error"] == "query timed out in expression evaluation"
    finally:
        await client.close()


async def test_format_query_and_exemplars() -> None:
    client = await _client()
    try:
        _, body = await _get(client, "/api/v1/format_query", query="sum(up)by(job)")
        assert body == {"status": "success", "data": "sum by (job) (up)"}
        _, body = await _get(client, "/api/v1/query_exemplars", query="up")
        assert body == {"status": "success", "data": []}
        status, body = await _get(client, "/api/v1/query_exemplars", query="up[")
        assert (status, body["errorType"]) == (400, "bad_data")
        resp = await client.get("/api/v1/query_exemplars", params={"query": "1 + 1"})
        assert resp.status == 204
    finally:
        await client.close()


async def test_status_pages() -> None:
    client = await _client()
    try:
        _, body = await _get(client, "/api/v1/status/buildinfo")
        assert body["data"]["version"] == "2.42.0"
        _, body = await _get(client, "/api/v1/status/runtimeinfo")
        assert {"startTime", "CWD", "goroutineCount", "storageRetention"} <= set(body["data"])
        _, body = await _get(client, "/api/v1/status/flags")
        assert body["data"]["query.lookback-delta"] == "5m"
        assert body["data"]["query.timeout"] == "2m"
        _, body = await _get(client, "/api/v1/status/tsdb")
        data = body["data"]
        assert data["headStats"]["numSeries"] == 4
        assert data["seriesCountByMetricName"] == [{"name": "up", "value": 3},
                                                   {"name": "tiny", "value": 1}]
        assert data["labelValueCountByLabelName"][0] == {"name": "__name__", "value": 2}
        assert {"name": "job=api", "value": 2} in data["seriesCountByLabelValuePair"]
    finally:
        await client.close()


async def test_cheap_queries_run_on_the_event_loop_with_the_same_answers_and_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A query is first run on the pool; once it has proved cheap it runs on the event
    loop, answering the same, and its timeout still holds there."""
    threads: list[str] = []
    real = query.encode_data

    def spy(*args: object) -> bytes:
        threads.append(threading.current_thread().name)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(query, "encode_data", spy)
    monkeypatch.setattr(query, "_INLINE_UNDER_S", 60.0)  # "cheap" whatever the machine
    client = await _client()
    try:
        answers = [await _get(client, "/api/v1/query", query="up", time="300")
                   for _ in range(3)]
        assert answers[0] == answers[1] == answers[2] and answers[0][0] == 200
        assert threads[0].startswith("query") and threads[1] == threads[2] == "MainThread"
        await _get(client, "/api/v1/query", query="up + 1", time="300")
        assert threads[3].startswith("query")  # a query not met before
        await _get(client, "/api/v1/query", query="up", time="86400")
        assert threads[4].startswith("query")  # the same one at another time: not yet cheap
    finally:
        await client.close()
    client = await _client(query.QueryApiOptions(engine=EngineOptions(timeout_s=0)))
    try:
        for _ in range(3):  # on the pool, then (it failed fast) on the loop
            status, body = await _get(client, "/api/v1/query", query="up", time="1")
            assert (status, body["errorType"]) == (503, "timeout")
    finally:
        await client.close()


def test_recent_costs_remember_the_last_run_of_a_bounded_number_of_queries() -> None:
    costs = query._RecentCosts(size=2)
    assert not costs.cheap("a")  # never run: the pool
    costs.record("a", query._INLINE_UNDER_S / 2)
    costs.record("b", query._INLINE_UNDER_S)
    assert costs.cheap("a") and not costs.cheap("b")
    costs.record("b", 0.0)  # cheap again
    costs.record("c", 0.0)  # "a" was run least recently: forgotten
    assert costs.cheap("b") and costs.cheap("c") and not costs.cheap("a")


def test_the_engine_warm_up_stops_between_queries_once_told(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server shut down while its engine kernels still compile does not wait for all."""
    from promstore.promql import warmup

    stop = threading.Event()
    answers: list[object] = []

    def encode(result: object) -> bytes:
        answers.append(result)
        stop.set()  # told to stop while running the first query
        return b""

    monkeypatch.setattr(warmup, "encode_data", encode)
    warmup.warm_up(stop)
    assert len(answers) == 2  # the first query, instant and range, and no more
