"""The metadata API (/series, /labels, /label/<name>/values) against an in-memory index."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from promstore.api import metadata
from promstore.api.envelope import ApiError, ErrorType, api_error_from, error_body, success_body
from promstore.api.params import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    parse_duration,
    parse_match_params,
    parse_time,
)
from storage.errors import BadDataError, StorageError, UnavailableError
from storage.interface import Queryable
from storage.matchers import Matcher, MatchType


class FakeIndex:
    """A ``Queryable`` store that is its own ``IndexReader``, over a handful of series:
    label dicts and sample timestamps."""

    def __init__(self, series: list[tuple[dict[str, str], list[int]]]) -> None:
        self.series = series
        self.calls: list[tuple] = []

    def querier(self, mint: int, maxt: int) -> FakeIndex:
        return self

    def select_series(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> np.ndarray:
        self.calls.append(("select", tuple(str(m) for m in matchers), mint, maxt))
        refs = [
            ref
            for ref, (labels, times) in enumerate(self.series)
            if all(m.matches(labels.get(m.name, "")) for m in matchers)
            and any(mint <= t <= maxt for t in times)
        ]
        return np.array(refs, dtype=np.int64)

    def series_labels(self, refs: np.ndarray) -> list[dict[str, str]]:
        return [dict(sorted(self.series[int(r)][0].items())) for r in refs]

    def _refs(self, refs: np.ndarray | None) -> list[int]:
        return list(range(len(self.series))) if refs is None else [int(r) for r in refs]

    def label_names(self, refs: np.ndarray | None = None) -> list[str]:
        self.calls.append(("names", None if refs is None else list(refs)))
        return sorted({n for r in self._refs(refs) for n in self.series[r][0]})

    def label_values(self, name: str, refs: np.ndarray | None = None) -> list[str]:
        self.calls.append(("values", name, None if refs is None else list(refs)))
        return sorted(
            {self.series[r][0][name] for r in self._refs(refs) if name in self.series[r][0]}
        )


SERIES = [
    ({"__name__": "up", "job": "web", "instance": "b"}, [1000, 2000]),
    ({"__name__": "up", "job": "api", "instance": "a"}, [1000]),
    ({"__name__": "up", "job": "web", "instance": "a"}, [5000]),
    ({"__name__": "http_requests_total", "job": "api", "code": "200"}, [3000]),
    ({"__name__": "weird", "path": "a\nb", "job": "batch"}, [3000]),
]

READER_KEY = web.AppKey("store", Queryable)


@pytest.fixture
def index() -> FakeIndex:
    return FakeIndex(SERIES)


@pytest.fixture
async def client(index: FakeIndex) -> AsyncIterator[TestClient]:
    app = web.Application()
    app[READER_KEY] = index
    metadata.add_routes(app, READER_KEY)
    async with TestClient(TestServer(app)) as c:
        yield c


async def get(client: TestClient, path: str, **params: str | list[str]) -> tuple[int, dict]:
    query = [
        (k.replace("match", "match[]"), v)
        for k, vs in params.items()
        for v in (vs if isinstance(vs, list) else [vs])
    ]
    resp = await client.get(path, params=query)
    assert resp.content_type == "application/json"
    return resp.status, json.loads(await resp.read())


# -- /series ------------------------------------------------------------------------------


async def test_series_sorted_by_label_set(client: TestClient) -> None:
    status, body = await get(client, "/api/v1/series", match="up")
    assert status == 200
    assert body == {
        "status": "success",
        "data": [
            {"__name__": "up", "instance": "a", "job": "api"},
            {"__name__": "up", "instance": "a", "job": "web"},
            {"__name__": "up", "instance": "b", "job": "web"},
        ],
    }


async def test_series_union_of_match_params_is_deduplicated(client: TestClient) -> None:
    status, body = await get(
        client, "/api/v1/series", match=['{job="api"}', 'up{instance="a"}', '{code="200"}']
    )
    assert status == 200
    assert body["data"] == [
        {"__name__": "http_requests_total", "code": "200", "job": "api"},
        {"__name__": "up", "instance": "a", "job": "api"},
        {"__name__": "up", "instance": "a", "job": "web"},
    ]


async def test_series_time_range(client: TestClient, index: FakeIndex) -> None:
    _, body = await get(client, "/api/v1/series", match="up", start="2015-01-01T00:00:03Z")
    assert body["data"] == []  # every sample is in 1970
    _, body = await get(client, "/api/v1/series", match="up", start="1.5", end="3")
    assert body["data"] == [{"__name__": "up", "instance": "b", "job": "web"}]
    assert index.calls[-1] == ("select", ('__name__="up"',), 1500, 3000)


async def test_series_default_range_and_raw_bytes(client: TestClient, index: FakeIndex) -> None:
    resp = await client.get("/api/v1/series", params={"match[]": '{job="batch"}'})
    raw = await resp.read()
    assert raw == b'{"status":"success","data":[{"__name__":"weird","job":"batch","path":"a\\nb"}]}'
    assert index.calls[-1] == ("select", ('job="batch"',), MIN_TIME_MS, MAX_TIME_MS)


async def test_series_empty_result_is_a_list(client: TestClient) -> None:
    _, body = await get(client, "/api/v1/series", match='{job="nope"}')
    assert body == {"status": "success", "data": []}


async def test_series_form_post_merges_query_string(client: TestClient) -> None:
    resp = await client.post(
        "/api/v1/series?match[]=%7Bjob%3D%22api%22%7D&start=0",
        data={"match[]": '{code="200"}', "start": "2"},  # the body wins for start
    )
    body = await resp.json()
    assert resp.status == 200
    assert body["data"] == [
        {"__name__": "http_requests_total", "code": "200", "job": "api"},
    ]


@pytest.mark.parametrize(
    "params,message",
    [
        ({}, "no match[] parameter provided"),
        (
            {"match": '{job=""}'},
            (
                'invalid parameter "match[]": parse error: '
                "vector selector must contain at least one non-empty matcher"
            ),
        ),
        (
            {"match": ["up", '{job="api" or a!="x"}']},
            'invalid parameter "match[]": match[] must contain at least one non-empty matcher',
        ),
        (
            {"match": "rate(up[5m])"},
            (
                'invalid parameter "match[]": parse error: '
                'expected a series selector like metric{label="value"}'
            ),
        ),
        (
            {"match": "up", "start": "x"},
            (
                "invalid parameter \"start\": Invalid time value for 'start': "
                'cannot parse "x" to a valid timestamp'
            ),
        ),
        (
            {"match": "up", "end": "2015-13-01T00:00:00Z"},
            (
                "invalid parameter \"end\": Invalid time value for 'end': "
                'cannot parse "2015-13-01T00:00:00Z" to a valid timestamp'
            ),
        ),
        ({"match": "up", "limit": "-1"}, 'invalid parameter "limit": limit must be non-negative'),
        (
            {"match": "up", "limit": "ten"},
            'invalid parameter "limit": cannot parse "ten" to a valid limit',
        ),
        (
            {"match": '{a=~"(?=x)"}'},
            'invalid parameter "match[]": parse error: illegal regex for (?=x)',
        ),
        (
            {"match": 'up{a=~"a**"}'},
            (
                'invalid parameter "match[]": error parsing regexp: '
                "invalid nested repetition operator: `**`"
            ),
        ),
    ],
)
async def test_series_bad_requests(client: TestClient, params: dict, message: str) -> None:
    status, body = await get(client, "/api/v1/series", **params)
    assert status == 400
    assert body == {"status": "error", "errorType": "bad_data", "error": message}


async def test_deeply_nested_selector_is_refused_not_parsed(client: TestClient) -> None:
    # The PromQL parser would overflow its stack on this and take the process down.
    resp = await client.post(
        "/api/v1/series", data={"match[]": "(" * 100_000 + "up" + ")" * 100_000}
    )
    assert resp.status == 400 and (await resp.json())["errorType"] == "bad_data"


async def test_series_limit_truncates_with_warning(client: TestClient) -> None:
    _, body = await get(client, "/api/v1/series", match="up", limit="2")
    assert len(body["data"]) == 2 and body["warnings"] == ["results truncated due to limit"]
    assert body["data"][0] == {"__name__": "up", "instance": "a", "job": "api"}
    _, body = await get(client, "/api/v1/series", match="up", limit="3")
    assert len(body["data"]) == 3 and "warnings" not in body
    _, body = await get(client, "/api/v1/series", match="up", limit="0")
    assert len(body["data"]) == 3 and "warnings" not in body


# -- /labels ------------------------------------------------------------------------------


async def test_labels_all(client: TestClient, index: FakeIndex) -> None:
    status, body = await get(client, "/api/v1/labels")
    assert status == 200
    assert body["data"] == ["__name__", "code", "instance", "job", "path"]
    assert index.calls == [("names", None)]  # the full range needs no series selection


async def test_labels_with_matchers_and_range(client: TestClient, index: FakeIndex) -> None:
    _, body = await get(client, "/api/v1/labels", match=['{job="api"}', "weird"])
    assert body["data"] == ["__name__", "code", "instance", "job", "path"]
    _, body = await get(client, "/api/v1/labels", match="up")
    assert body["data"] == ["__name__", "instance", "job"]
    _, body = await get(client, "/api/v1/labels", start="2.5", end="3")
    assert body["data"] == ["__name__", "code", "job", "path"]
    assert index.calls[-2] == ("select", (), 2500, 3000)


async def test_labels_post_and_limit(client: TestClient) -> None:
    resp = await client.post("/api/v1/labels", data={"match[]": "up", "limit": "1"})
    body = await resp.json()
    assert body == {
        "status": "success",
        "data": ["__name__"],
        "warnings": ["results truncated due to limit"],
    }


async def test_labels_empty_is_a_list(client: TestClient) -> None:
    _, body = await get(client, "/api/v1/labels", match='{job="nope"}')
    assert body == {"status": "success", "data": []}


async def test_labels_match_errors_are_not_prefixed(client: TestClient) -> None:
    status, body = await get(client, "/api/v1/labels", match='{job=~".*"}')
    assert status == 400
    assert (
        body["error"] == "parse error: vector selector must contain at least one non-empty matcher"
    )


# -- /label/<name>/values -----------------------------------------------------------------


async def test_label_values(client: TestClient) -> None:
    _, body = await get(client, "/api/v1/label/job/values")
    assert body == {"status": "success", "data": ["api", "batch", "web"]}
    _, body = await get(client, "/api/v1/label/__name__/values")
    assert body["data"] == ["http_requests_total", "up", "weird"]
    _, body = await get(client, "/api/v1/label/nope/values")
    assert body == {"status": "success", "data": []}


async def test_label_values_with_matchers_range_and_limit(client: TestClient) -> None:
    _, body = await get(client, "/api/v1/label/instance/values", match='up{job="web"}')
    assert body["data"] == ["a", "b"]
    _, body = await get(client, "/api/v1/label/job/values", match=["up", '{code="200"}'], end="1")
    assert body["data"] == ["api", "web"]
    _, body = await get(client, "/api/v1/label/job/values", limit="1")
    assert body["data"] == ["api"] and body["warnings"] == ["results truncated due to limit"]
    resp = await client.post("/api/v1/label/job/values", data={"match[]": '{code="200"}'})
    assert (await resp.json())["data"] == ["api"]


@pytest.mark.parametrize("name", ["0abc", "a-b", "%C3%A9"])
async def test_label_values_invalid_name(client: TestClient, name: str) -> None:
    resp = await client.get(f"/api/v1/label/{name}/values")
    body = await resp.json()
    assert resp.status == 400
    shown = "é" if name == "%C3%A9" else name
    assert body == {
        "status": "error",
        "errorType": "bad_data",
        "error": f'invalid label name: "{shown}"',
    }


async def test_storage_errors_use_the_envelope(client: TestClient, index: FakeIndex) -> None:
    def broken(*args: object) -> list[str]:
        raise StorageError("index file unreadable")

    index.label_names = broken  # type: ignore[method-assign]
    status, body = await get(client, "/api/v1/labels")
    assert status == 422
    assert body == {"status": "error", "errorType": "execution", "error": "index file unreadable"}


# -- envelope and parameters --------------------------------------------------------------


@pytest.mark.parametrize(
    "exc,error_type,status",
    [
        (BadDataError("x"), ErrorType.BAD_DATA, 400),
        (UnavailableError("x"), ErrorType.UNAVAILABLE, 503),
        (StorageError("x"), ErrorType.EXECUTION, 422),
        (RuntimeError("x"), ErrorType.INTERNAL, 500),
        (ApiError(ErrorType.CANCELED, "x"), ErrorType.CANCELED, 499),
        (ApiError(ErrorType.TIMEOUT, "x"), ErrorType.TIMEOUT, 503),
        (ApiError(ErrorType.NOT_FOUND, "x"), ErrorType.NOT_FOUND, 404),
        (ApiError(ErrorType.NOT_ACCEPTABLE, "x"), ErrorType.NOT_ACCEPTABLE, 406),
    ],
)
def test_error_types_and_status(exc: BaseException, error_type: ErrorType, status: int) -> None:
    err = api_error_from(exc)
    assert err.error_type == error_type and err.status == status


def test_envelope_bytes() -> None:
    assert success_body(["a"]) == b'{"status":"success","data":["a"]}'
    assert success_body([], ["w"]) == b'{"status":"success","data":[],"warnings":["w"]}'
    err = ApiError(ErrorType.BAD_DATA, "bad é")
    assert error_body(err) == '{"status":"error","errorType":"bad_data","error":"bad é"}'.encode()
    assert error_body(err, data={"k": 1}).startswith(b'{"status":"error","data":{"k":1},')
    assert json.loads(success_body(["\udc80"])) == {"status": "success", "data": ["\udc80"]}


@pytest.mark.parametrize(
    "text,ms",
    [
        ("0", 0),
        ("1.5", 1500),
        ("-1.5", -1500),
        ("0.0005", 1),  # rounded half away from zero to milliseconds
        ("1e3", 1_000_000),
        ("2015-07-01T20:10:51.781Z", 1435781451781),
        ("2015-07-01T20:10:51+02:00", 1435774251000),
        ("2000-02-29T23:59:59,5-01:30", 951874199500),
        ("1969-12-31T23:59:59.9999999999Z", -1),
        ("-292273086-05-16T16:47:06Z", MIN_TIME_MS),
        ("292277025-08-18T07:12:54.999999999Z", MAX_TIME_MS),
    ],
)
def test_parse_time(text: str, ms: int) -> None:
    assert parse_time(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        "x",
        "",
        "inf",
        "NaN",
        " 1",
        "1_000",
        "1e400",
        "2015-02-29T00:00:00Z",
        "2015-07-01 20:10:51Z",
        "2015-07-01T24:00:00Z",
        "2015-07-01T20:10:51+24:00",
        "2015-07-01T20:10:51z",
        "1e16",
    ],
)
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(BadDataError, match="to a valid timestamp"):
        parse_time(text)


@pytest.mark.parametrize(
    "text,ns",
    [
        ("1h30m", 5400 * 10**9),
        ("5ms", 5 * 10**6),
        ("1y", 365 * 86400 * 10**9),
        ("1w2d", 9 * 86400 * 10**9),
        ("0", 0),
        ("1.5", 1_500_000_000),
        ("-1", -(10**9)),
    ],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "30s1m", "1h ", "1.5h", "x", "1e30", "999999999y"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(BadDataError, match="to a valid duration"):
        parse_duration(text)


def test_match_params_become_matcher_sets() -> None:
    sets = parse_match_params(['up{job=~"a|b"}', '{a="1" or b=~"2"}'])
    assert [[str(m) for m in ms] for ms in sets] == [
        ['__name__="up"', 'job=~"a|b"'],
        ['a="1"'],
        ['b=~"2"'],
    ]
    assert sets[0][1].type == MatchType.RE


async def test_store_not_ready_is_unavailable() -> None:
    app = web.Application()
    metadata.add_routes(app, READER_KEY)
    async with TestClient(TestServer(app)) as c:
        status, body = await get(c, "/api/v1/labels")
    assert status == 503
    assert body == {"status": "error", "errorType": "unavailable", "error": "storage not ready"}
