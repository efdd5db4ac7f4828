"""The query endpoints of the Prometheus HTTP API and its status pages.

``/api/v1/query``, ``/api/v1/query_range``, ``/api/v1/format_query``,
``/api/v1/query_exemplars`` (always empty: exemplars are not stored) and
``/api/v1/status/{buildinfo,runtimeinfo,flags,tsdb}``, GET and form POST, answering as
Prometheus 2.42 does: same parameters, same checks in the same order, same JSON shapes
and ``errorType`` values. The server keeps the store (a ``Selectable``, and for the
TSDB status page something with a ``head``) under an ``aiohttp.web.AppKey`` and calls
``add_routes(app, key)``.

Both query endpoints take ``max_source_resolution`` (``raw``/``0s``, ``5m``, ``1h``, any
duration, or ``auto``, the default) as Thanos's querier does; it matters once the
server has put a ``storage.downsampled.DownsampledStore`` under ``DOWNSAMPLED_KEY``,
which queries then read beside the store (``docs/downsampling.md``).

Queries run on a small thread pool of their own, so that a slow query neither blocks
the event loop nor the write path; a client that goes away cancels its query. A query
whose last run took under two milliseconds (a dashboard's one-series panel, refreshed)
runs on the event loop instead, sparing it the hop to the pool and back; costs are
remembered per query text, shape and distance from now, so that one moved to a time
holding more data goes to the pool first.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import promql_parser
from aiohttp import web
from multidict import MultiDictProxy

import promstore
from promstore import allocator
from promstore.config import Config
from promstore.promql import (
    Engine,
    EngineOptions,
    ParseError,
    QueryCanceledError,
    QueryTimeoutError,
    warmup,
)
from promstore.promql.encoding import encode_data
from promstore.promql.engine import MAX_STEPS, check_range_type
from promstore.promql.parser import MatrixSelector, Node, Subquery, VectorSelector, parse
from promstore.promql.resolution import AUTO
from storage.downsampled import DownsampledStore, TieredStore
from storage.errors import BadDataError, StorageError
from storage.interface import Queryable
from storage.matchers import Matcher, MatchType

from .envelope import (
    ApiError,
    ErrorType,
    api_error_from,
    error_response,
    json_response,
    success_body,
    success_response,
)
from .params import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    invalid_param,
    parse_duration,
    parse_time,
    parse_time_param,
    request_params,
)

__all__ = ["DOWNSAMPLED_KEY", "QueryApiOptions", "add_routes"]

DOWNSAMPLED_KEY = web.AppKey("downsampled", DownsampledStore)
"""Where the server keeps the downsampled store, if it has one."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PROMETHEUS_VERSION = "2.42.0"  # the API level answered, which clients use to pick features
_TOP = 10  # entries per list of the TSDB status page, as Prometheus shows
_MAX_PAIRS = 20_000  # label pairs counted one by one for the TSDB status page
_WATCH_INTERVAL = 0.25  # seconds between checks that a query's client is still there
_COMPRESS_FROM = 4096  # bytes of answer from which it is compressed (gzip/deflate)
_STREAM_FROM = 1 << 20  # bytes of answer from which it is sent in pieces
_STREAM_PIECE = 256 << 10
_SUCCESS = (b'{"status":"success","data":', b"}")  # the envelope around a query's data
_TRIM_AFTER_S = 0.05  # queries that ran longer hand freed memory back to the system
_ALL_TIME = (-(2**63), 2**63 - 1)  # a reader over every part of the store
_INLINE_UNDER_S = 0.002
"""A query whose last run took less runs on the event loop itself: handing it to the
query pool and its answer back costs 0.1-0.3 ms, a third of a one-series fetch, and
holding the loop for a millisecond or two delays nothing noticeably. (A one-series
fetch that takes 0.25 ms in a loop takes about 1 ms when the caches are cold, as they
are when a dashboard refreshes.)"""
_KEPT_COSTS = 1024  # queries whose last cost is remembered
_AGE_BUCKET_MS = 10 * 60 * 1000
"""A query's cost is remembered per 10 minutes of how far before now it ends, so that the
same text moved to a time holding much more data (a dashboard scrolled back, a store
that filled since) runs on the pool first instead of holding the event loop."""


def _cost_key(kind: str, text: str | None, end_ms: int, *shape: object) -> Hashable:
    """The key under which a query's last cost is remembered: its kind, text and shape
    (resolution, steps) and how long before now it ends, in ``_AGE_BUCKET_MS``."""
    age = (int(time.time() * 1000) - end_ms) // _AGE_BUCKET_MS
    return (kind, text, age, *shape)


class _RecentCosts:
    """How long the last run of each recent query took, the least recently run
    forgotten first. Used from the event loop only."""

    def __init__(self, size: int = _KEPT_COSTS) -> None:
        self._seconds: OrderedDict[Hashable, float] = OrderedDict()
        self._size = size

    def cheap(self, key: Hashable) -> bool:
        """Whether the query's last run took less than ``_INLINE_UNDER_S``."""
        return self._seconds.get(key, _INLINE_UNDER_S) < _INLINE_UNDER_S

    def record(self, key: Hashable, seconds: float) -> None:
        self._seconds[key] = seconds
        self._seconds.move_to_end(key)
        if len(self._seconds) > self._size:
            self._seconds.popitem(last=False)


@dataclass(frozen=True)
class QueryApiOptions:
    """Engine limits plus the pool that runs queries (``--query.max-concurrency``); the
    data directory and retention are only shown on the status pages."""

    engine: EngineOptions = field(default_factory=EngineOptions)
    max_concurrent_queries: int = 20
    data_dir: str = ""
    retention: str = ""

    @classmethod
    def from_config(cls, config: Config) -> QueryApiOptions:
        """The options a ``promstore.config.Config`` sets."""
        engine = EngineOptions(lookback_delta_ms=round(config.query_lookback_delta * 1000),
                               timeout_s=config.query_timeout,
                               max_samples=config.query_max_samples)
        return cls(engine=engine, max_concurrent_queries=config.query_max_concurrency,
                   data_dir=config.data_dir,
                   retention=_duration_text(round(config.retention_time * 1000)))


def add_routes(app: web.Application, store_key: web.AppKey[Any],
               options: QueryApiOptions | None = None, prefix: str = "/api/v1") -> None:
    """Register the query and status endpoints on ``app``."""
    api = _QueryApi(store_key, options or QueryApiOptions())
    for path, handler in (
        ("/query", api.query),
        ("/query_range", api.query_range),
        ("/format_query", api.format_query),
        ("/query_exemplars", api.query_exemplars),
        ("/status/buildinfo", api.buildinfo),
        ("/status/runtimeinfo", api.runtimeinfo),
        ("/status/flags", api.flags),
        ("/status/tsdb", api.tsdb),
    ):
        for method in ("GET", "POST"):
            app.router.add_route(method, prefix + path, _envelope_errors(handler))
    app.on_startup.append(api.warm_up)
    app.on_cleanup.append(api.close)


def _envelope_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return error_response(_api_error(exc))

    return wrapped


def _api_error(exc: BaseException) -> ApiError:
    """Prometheus's error type for what stopped a query."""
    if isinstance(exc, QueryTimeoutError):
        return ApiError(ErrorType.TIMEOUT, str(exc))
    if isinstance(exc, QueryCanceledError):
        return ApiError(ErrorType.CANCELED, str(exc))
    if isinstance(exc, StorageError):
        return ApiError(ErrorType.INTERNAL, str(exc))
    return api_error_from(exc)


def _query_param(params: MultiDictProxy[str]) -> Node:
    try:
        return parse(params.get("query", ""))
    except ParseError as exc:
        raise invalid_param("query", str(exc)) from None


def _timeout_param(params: MultiDictProxy[str]) -> float | None:
    text = params.get("timeout", "")
    if not text:
        return None
    try:
        return parse_duration(text) / 1e9
    except BadDataError as exc:
        raise invalid_param("timeout", str(exc)) from None


def _resolution_param(params: MultiDictProxy[str]) -> int | None:
    """``max_source_resolution`` in ms, or ``AUTO``."""
    text = params.get("max_source_resolution", "")
    if text in ("", "auto"):
        return AUTO
    if text == "raw":
        return 0
    try:
        ns = parse_duration(text)
    except BadDataError as exc:
        raise invalid_param("max_source_resolution", str(exc)) from None
    if ns < 0:
        raise invalid_param("max_source_resolution", "negative duration")
    return ns // 1_000_000


def _time(params: MultiDictProxy[str], name: str) -> int:
    try:
        return parse_time(params.get(name, ""))
    except BadDataError as exc:
        raise invalid_param(name, str(exc)) from None


class _QueryApi:
    def __init__(self, store_key: web.AppKey[Any], options: QueryApiOptions) -> None:
        self._key = store_key
        self._options = options
        self._pool = ThreadPoolExecutor(max_workers=options.max_concurrent_queries,
                                        thread_name_prefix="query")
        self._started = datetime.now(UTC)
        self._costs = _RecentCosts()
        self._closing = threading.Event()

    async def warm_up(self, app: web.Application) -> None:
        """Load the engine's kernels in the background while the store opens."""
        asyncio.get_running_loop().run_in_executor(self._pool, warmup.warm_up, self._closing)

    async def close(self, app: web.Application) -> None:
        self._closing.set()  # a warm-up still compiling stops at its next query
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _store(self, request: web.Request) -> Any:
        store = request.app.get(self._key)
        if store is None:  # still opening (replaying its WAL)
            raise ApiError(ErrorType.UNAVAILABLE, "storage not ready")
        return store

    def _engine(self, request: web.Request) -> Engine:
        """An engine over a reader of the store (one per query, so that what it finds
        in blocks is found once), and over the downsampled store beside it if any."""
        store = self._store(request)
        kind: type = type(store)
        if _hands_out_readers(kind):
            store = store.querier(_ALL_TIME[0], _ALL_TIME[1])
        downsampled = request.app.get(DOWNSAMPLED_KEY)
        if downsampled is not None:
            store = TieredStore(store, downsampled)
        return Engine(store, self._options.engine)

    async def _run(self, request: web.Request, key: Hashable,
                   work: Callable[[threading.Event], bytes]) -> web.StreamResponse:
        """Run ``work`` (the query ``key``) on the query pool; tell it to stop if the
        client goes away (aiohttp does not cancel handlers on a disconnect, so the
        connection is watched) or the server shuts down. A query that was cheap last
        time runs on the event loop instead (``_INLINE_UNDER_S``); its own timeout
        still holds."""
        began = time.monotonic()
        inline = self._costs.cheap(key)
        try:
            data = work(threading.Event()) if inline else await self._pooled(request, work)
        finally:
            took = time.monotonic() - began
            self._costs.record(key, took)
        if took > _TRIM_AFTER_S:
            # A long query freed large arrays, which the C allocator keeps; give them
            # back, off the answer's path.
            self._pool.submit(allocator.trim)
        if len(data) > _STREAM_FROM:
            return await _stream(request, data)
        response = json_response(data)
        if len(data) > _COMPRESS_FROM:
            response.enable_compression()  # as Prometheus, when the client accepts it
        return response

    async def _pooled(self, request: web.Request,
                      work: Callable[[threading.Event], bytes]) -> bytes:
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, work, cancel)

        def watch() -> None:
            transport = request.transport
            if transport is None or transport.is_closing():
                cancel.set()
            else:
                watching[0] = loop.call_later(_WATCH_INTERVAL, watch)

        # A timer looks at the connection now and then, rather than the wait being cut
        # into rounds: a small query's answer is not held up by the watching.
        watching = [loop.call_later(_WATCH_INTERVAL, watch)]
        try:
            return await future
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            watching[0].cancel()

    # -- queries ---------------------------------------------------------------------------

    async def query(self, request: web.Request) -> web.StreamResponse:
        params = await request_params(request)
        t = parse_time_param(params, "time", int(time.time() * 1000))
        timeout = _timeout_param(params)
        node = _query_param(params)
        resolution = _resolution_param(params)
        engine = self._engine(request)

        def work(cancel: threading.Event) -> bytes:
            return encode_data(engine.instant_query(node, t, timeout, cancel, resolution),
                               *_SUCCESS)

        return await self._run(request, _cost_key("query", params.get("query"), t, resolution),
                               work)

    async def query_range(self, request: web.Request) -> web.StreamResponse:
        params = await request_params(request)
        start, end = _time(params, "start"), _time(params, "end")
        if end < start:
            raise invalid_param("end", "end timestamp must not be before start time")
        try:
            step_ns = parse_duration(params.get("step", ""))
        except BadDataError as exc:
            raise invalid_param("step", str(exc)) from None
        step = step_ns // 1_000_000
        if step <= 0:
            raise invalid_param("step", "zero or negative query resolution step widths are not "
                                        "accepted. Try a positive integer")
        if (end - start) * 1_000_000 // step_ns > MAX_STEPS:
            raise ApiError(ErrorType.BAD_DATA, "exceeded maximum resolution of 11,000 points "
                                               "per timeseries. Try decreasing the query "
                                               "resolution (?step=XX)")
        timeout = _timeout_param(params)
        node = _query_param(params)
        try:
            check_range_type(node)
        except ParseError as exc:
            raise invalid_param("query", str(exc)) from None
        resolution = _resolution_param(params)
        engine = self._engine(request)

        def work(cancel: threading.Event) -> bytes:
            return encode_data(engine.range_query(node, start, end, step, timeout, cancel,
                                                  resolution), *_SUCCESS)

        key = _cost_key("query_range", params.get("query"), end, step, (end - start) // step,
                        resolution)
        return await self._run(request, key, work)

    async def format_query(self, request: web.Request) -> web.StreamResponse:
        params = await request_params(request)
        _query_param(params)  # refuses what we refuse, with our messages
        return success_response(promql_parser.parse(params.get("query", "")).prettify())

    async def query_exemplars(self, request: web.Request) -> web.StreamResponse:
        params = await request_params(request)
        start = parse_time_param(params, "start", MIN_TIME_MS)
        end = parse_time_param(params, "end", MAX_TIME_MS)
        if end < start:
            raise invalid_param("end", "end timestamp must not be before start timestamp")
        try:
            node = parse(params.get("query", ""))
        except ParseError as exc:
            raise ApiError(ErrorType.BAD_DATA, str(exc)) from None
        if not _has_selector(node):
            return web.Response(status=204)  # Prometheus answers "no content" here
        return success_response([])

    # -- status ----------------------------------------------------------------------------

    async def buildinfo(self, request: web.Request) -> web.StreamResponse:
        return success_response({
            "version": PROMETHEUS_VERSION,
            "revision": f"promstore-{promstore.__version__}",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
        })

    async def runtimeinfo(self, request: web.Request) -> web.StreamResponse:
        return success_response({
            "startTime": self._started.isoformat().replace("+00:00", "Z"),
            "CWD": os.getcwd(),
            "reloadConfigSuccess": True,
            "lastConfigTime": self._started.isoformat().replace("+00:00", "Z"),
            "corruptionCount": 0,
            "goroutineCount": threading.active_count(),
            "GOMAXPROCS": os.cpu_count() or 1,
            "GOGC": "",
            "GODEBUG": "",
            "storageRetention": self._options.retention,
        })

    async def flags(self, request: web.Request) -> web.StreamResponse:
        eng = self._options.engine
        return success_response({
            "query.lookback-delta": _duration_text(eng.lookback_delta_ms),
            "query.max-concurrency": str(self._options.max_concurrent_queries),
            "query.max-samples": str(eng.max_samples),
            "query.timeout": _duration_text(int(eng.timeout_s * 1000)),
            "storage.tsdb.path": self._options.data_dir,
            "storage.tsdb.retention.time": self._options.retention,
            "web.enable-remote-write-receiver": "true",
        })

    async def tsdb(self, request: web.Request) -> web.StreamResponse:
        head = getattr(self._store(request), "head", None)
        if head is None:
            raise ApiError(ErrorType.UNAVAILABLE, "head statistics are not available")
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self._pool, _tsdb_status, head)
        return json_response(body)


async def _stream(request: web.Request, data: bytes) -> web.StreamResponse:
    """Send a large answer a piece at a time, each written once the connection has
    taken the one before: handed over whole, what the socket cannot take at once is
    copied into the connection's buffer, a second copy of the answer for as long as the
    client takes to read it."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_compression()  # as Prometheus, when the client accepts it
    await response.prepare(request)
    view = memoryview(data)
    for at in range(0, len(data), _STREAM_PIECE):
        await response.write(view[at:at + _STREAM_PIECE])
    await response.write_eof()
    return response


@functools.cache
def _hands_out_readers(store_type: type) -> bool:
    """Whether stores of this type are ``Queryable`` (asked once per type: a check
    against a runtime protocol costs as much as a small query's evaluation)."""
    return issubclass(store_type, Queryable)


def _has_selector(node: object) -> bool:
    if isinstance(node, VectorSelector | MatrixSelector):
        return True
    if isinstance(node, Subquery):
        return _has_selector(node.expr)
    children = [getattr(node, a) for a in ("expr", "lhs", "rhs", "param")
                if getattr(node, a, None) is not None]
    children += list(getattr(node, "args", ()))
    return any(_has_selector(c) for c in children)


def _duration_text(ms: int) -> str:
    """A duration as Prometheus prints its flags (``5m``, ``2m``, ``1h30m``)."""
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000),
                       ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def _chunk_count(head: Any) -> int:
    """Sealed chunks plus one open chunk per series, when the head tells its sealed
    chunks; 0 otherwise."""
    sealed = getattr(getattr(head, "chunks", None), "n_sealed", None)
    return 0 if sealed is None else int(sealed) + int(head.n_series)


def _top(counts: dict[str, int]) -> list[dict[str, Any]]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP]
    return [{"name": name, "value": value} for name, value in ranked]


def _tsdb_status(head: Any) -> bytes:
    """The TSDB status page from the head's index: counts per metric name, per label
    name and per label pair (one index look-up per pair; past ``_MAX_PAIRS`` pairs only
    the metric names are counted, and ``numLabelPairs`` still counts all)."""
    everything = (MIN_TIME_MS, MAX_TIME_MS)
    names = head.label_names()
    values = {name: head.label_values(name) for name in names}
    n_pairs = sum(len(v) for v in values.values())
    counted = values if n_pairs <= _MAX_PAIRS else {"__name__": values.get("__name__", [])}
    pair_counts: dict[str, int] = {}
    for name, vals in counted.items():
        for v in vals:
            refs = head.select_series([Matcher(MatchType.EQ, name, v)], *everything)
            pair_counts[f"{name}={v}"] = len(refs)
    metric_counts = {p.split("=", 1)[1]: n for p, n in pair_counts.items()
                     if p.startswith("__name__=")}
    n_series = int(head.n_series)
    min_time = int(getattr(head, "min_time", 0))
    max_time = int(getattr(head, "max_time", 0))
    if n_series == 0 or min_time > max_time:
        min_time = max_time = 0
    status = {
        "headStats": {
            "numSeries": n_series,
            "numLabelPairs": n_pairs,
            "chunkCount": _chunk_count(head),
            "minTime": min_time,
            "maxTime": max_time,
        },
        "seriesCountByMetricName": _top(metric_counts),
        "labelValueCountByLabelName": _top({n: len(v) for n, v in values.items()}),
        "memoryInBytesByLabelName": _top({n: int(np.sum([len(x.encode()) for x in v]))
                                          for n, v in values.items()}),
        "seriesCountByLabelValuePair": _top(pair_counts),
    }
    return success_body(status)

