"""The metadata endpoints of the Prometheus HTTP API: series, label names, label values.

``GET|POST /api/v1/series``, ``GET|POST /api/v1/labels`` and
``GET|POST /api/v1/label/{name}/values``, answered from a ``Queryable`` store's
``IndexReader`` for the request's time range, with Prometheus 2.42's semantics (plus the
``limit`` parameter of later versions). The server stores the store under an
``aiohttp.web.AppKey`` and calls ``add_routes(app, key)``; the handlers know nothing
else about storage.

Index calls are synchronous and can be slow on large data, so each request does its
index work, sorting and JSON encoding in one trip to the default executor.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from aiohttp import web
from multidict import MultiDictProxy

from storage.errors import BadDataError
from storage.interface import IndexReader, Queryable
from storage.matchers import Matcher

from .envelope import (
    ApiError,
    ErrorType,
    api_error_from,
    error_response,
    json_response,
    success_body,
)
from .params import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    invalid_param,
    parse_limit_param,
    parse_match_params,
    parse_time_param,
    quoted,
    request_params,
)

__all__ = ["add_routes", "routes"]

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TRUNCATED = "results truncated due to limit"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Reader = TypeVar("Reader", bound=Queryable)


def routes(reader_key: web.AppKey[Reader], prefix: str = "/api/v1") -> list[web.RouteDef]:
    """Route definitions of the metadata endpoints, reading the index at ``reader_key``."""
    api = _MetadataApi(reader_key)
    table: list[web.RouteDef] = []
    for path, handler in (
        ("/series", api.series),
        ("/labels", api.labels),
        ("/label/{name}/values", api.label_values),
    ):
        for method in ("GET", "POST"):
            table.append(web.route(method, prefix + path, _envelope_errors(handler)))
    return table


def add_routes(
    app: web.Application, reader_key: web.AppKey[Reader], prefix: str = "/api/v1"
) -> None:
    """Register the metadata endpoints on ``app``."""
    app.add_routes(routes(reader_key, prefix))


def _envelope_errors(handler: Handler) -> Handler:
    """Answer every failure in the API's error envelope instead of aiohttp's HTML."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            return error_response(api_error_from(exc))

    return wrapped


def _truncate(items: list[Any], limit: int) -> list[str]:
    """Cut ``items`` to ``limit`` (0: no limit) in place; the warnings to return."""
    if 0 < limit < len(items):
        del items[limit:]
        return [_TRUNCATED]
    return []


def _series_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    # Prometheus orders label sets pairwise by (name, value), the shorter set first on a tie.
    return tuple(labels.items())


class _MetadataApi:
    """The handlers, bound to where the application keeps its ``IndexReader``."""

    def __init__(self, reader_key: web.AppKey[Any]) -> None:
        self._key = reader_key

    async def _run(self, request: web.Request, work: Callable[[IndexReader], bytes],
                   start: int, end: int) -> bytes:
        store = request.app.get(self._key)
        if store is None:  # the store is still opening (replaying its WAL)
            raise ApiError(ErrorType.UNAVAILABLE, "storage not ready")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: work(store.querier(start, end)))

    @staticmethod
    def _time_range(params: MultiDictProxy[str]) -> tuple[int, int]:
        return (
            parse_time_param(params, "start", MIN_TIME_MS),
            parse_time_param(params, "end", MAX_TIME_MS),
        )

    async def series(self, request: web.Request) -> web.StreamResponse:
        params = await request_params(request)
        selectors = params.getall("match[]", [])
        if not selectors:
            raise ApiError(ErrorType.BAD_DATA, "no match[] parameter provided")
        start, end = self._time_range(params)
        limit = parse_limit_param(params)
        try:
            matcher_sets = parse_match_params(selectors)
        except BadDataError as exc:
            raise invalid_param("match[]", str(exc)) from None

        def work(reader: IndexReader) -> bytes:
            refs = _union_refs(reader, matcher_sets, start, end)
            series = reader.series_labels(refs)
            series.sort(key=_series_key)
            return success_body(series, _truncate(series, limit))

        return json_response(await self._run(request, work, start, end))

    async def labels(self, request: web.Request) -> web.StreamResponse:
        params = await request_params(request)
        start, end = self._time_range(params)
        limit = parse_limit_param(params)
        matcher_sets = self._optional_matchers(params)

        def work(reader: IndexReader) -> bytes:
            names = reader.label_names(_scope(reader, matcher_sets, start, end))
            return success_body(names, _truncate(names, limit))

        return json_response(await self._run(request, work, start, end))

    async def label_values(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not _LABEL_NAME.fullmatch(name):
            raise ApiError(ErrorType.BAD_DATA, f"invalid label name: {quoted(name)}")
        params = await request_params(request)
        start, end = self._time_range(params)
        limit = parse_limit_param(params)
        matcher_sets = self._optional_matchers(params)

        def work(reader: IndexReader) -> bytes:
            values = reader.label_values(name, _scope(reader, matcher_sets, start, end))
            return success_body(values, _truncate(values, limit))

        return json_response(await self._run(request, work, start, end))

    @staticmethod
    def _optional_matchers(params: MultiDictProxy[str]) -> list[list[Matcher]]:
        # Unlike /series, Prometheus does not prefix these errors with the parameter name.
        try:
            return parse_match_params(params.getall("match[]", []))
        except BadDataError as exc:
            raise ApiError(ErrorType.BAD_DATA, str(exc)) from None


def _union_refs(
    reader: IndexReader, matcher_sets: Sequence[Sequence[Matcher]], start: int, end: int
) -> np.ndarray:
    """Sorted unique refs of the series matching any of ``matcher_sets`` in the range."""
    parts = [reader.select_series(ms, start, end) for ms in matcher_sets]
    if len(parts) == 1:
        return parts[0]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def _scope(
    reader: IndexReader, matcher_sets: Sequence[Sequence[Matcher]], start: int, end: int
) -> np.ndarray | None:
    """The series a label query looks at: those matching ``match[]`` in the range; all
    series in the range without ``match[]``; None (every series) for the full range."""
    if matcher_sets:
        return _union_refs(reader, matcher_sets, start, end)
    if start <= MIN_TIME_MS and end >= MAX_TIME_MS:
        return None
    return reader.select_series((), start, end)
