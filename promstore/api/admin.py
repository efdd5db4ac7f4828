"""The TSDB admin endpoints of the Prometheus HTTP API: deleting series, cleaning
tombstones, snapshots.

``POST|PUT /api/v1/admin/tsdb/delete_series?match[]=…&start=…&end=…`` (204),
``POST|PUT /api/v1/admin/tsdb/clean_tombstones`` (204) and
``POST|PUT /api/v1/admin/tsdb/snapshot?skip_head=…`` (the snapshot's name), answered as
Prometheus 2.42 answers them. They change or copy stored data, so they are off unless
``enable_admin_api`` is set; off, each answers Prometheus's ``unavailable`` error
"admin APIs disabled" with its HTTP status, 500.

Each reaches the downsampled store too when the server has one (``DATA_DIR/downsampled``,
under ``query.DOWNSAMPLED_KEY``): deleted data is gone at every resolution, cleaning
rewrites downsampled blocks as well, and a snapshot holds them.

Store calls block (fsync, rewriting blocks), so each runs in the default executor.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from compaction import downsample
from compaction.compactor import compact
from storage.db import DB
from storage.downsampled import DownsampledStore
from storage.errors import BadDataError, PromstoreError

from .envelope import (
    ApiError,
    ErrorType,
    api_error_from,
    error_body,
    json_response,
    success_response,
)
from .params import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    invalid_param,
    parse_match_params,
    parse_time_param,
    quoted,
    request_params,
)
from .query import DOWNSAMPLED_KEY

__all__ = ["AdminApiOptions", "add_routes", "routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Prometheus answers ``unavailable`` here with 500: its error writer has no status of
# its own for that type.
_UNAVAILABLE_STATUS = 500
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False,
             "False": False}


@dataclass(frozen=True)
class AdminApiOptions:
    """Whether the endpoints answer at all, and the encoding ``clean_tombstones``
    rewrites blocks in (that of compaction)."""

    enabled: bool = False
    dense: bool = True

    @classmethod
    def from_config(cls, config: Any) -> AdminApiOptions:
        return cls(enabled=config.enable_admin_api,
                   dense=config.compacted_encoding == "dense")


def routes(store_key: web.AppKey[DB], options: AdminApiOptions,
           prefix: str = "/api/v1/admin/tsdb") -> list[web.RouteDef]:
    """Route definitions of the admin endpoints over the store at ``store_key``."""
    api = _AdminApi(store_key, options)
    table: list[web.RouteDef] = []
    for path, handler in (("/delete_series", api.delete_series),
                          ("/clean_tombstones", api.clean_tombstones),
                          ("/snapshot", api.snapshot)):
        for method in ("POST", "PUT"):
            table.append(web.route(method, prefix + path, _answer(handler, options.enabled)))
    return table


def add_routes(app: web.Application, store_key: web.AppKey[DB],
               options: AdminApiOptions) -> None:
    """Register the admin endpoints on ``app``."""
    app.add_routes(routes(store_key, options))


def _unavailable(message: str) -> web.Response:
    return json_response(error_body(ApiError(ErrorType.UNAVAILABLE, message)),
                         _UNAVAILABLE_STATUS)


def _answer(handler: Handler, enabled: bool) -> Handler:
    """Refuse when disabled; answer failures in the API's error envelope."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if not enabled:
            return _unavailable("admin APIs disabled")
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            error = api_error_from(exc)
            if error.error_type == ErrorType.UNAVAILABLE:
                return _unavailable(error.message)
            return json_response(error_body(error), error.status)

    return wrapped


class _AdminApi:
    """The handlers, bound to where the application keeps its store."""

    def __init__(self, store_key: web.AppKey[DB], options: AdminApiOptions) -> None:
        self._key = store_key
        self._options = options

    async def _run(self, request: web.Request, what: str,
                   work: Callable[[DB, DownsampledStore | None], Any]) -> Any:
        """``work(store, downsampled)`` in the executor (``downsampled`` None when the
        server keeps no downsampled data); a storage failure is an ``internal`` error
        prefixed with ``what``, as Prometheus words them."""
        store = request.app.get(self._key)
        if store is None:  # still opening
            raise ApiError(ErrorType.UNAVAILABLE, "TSDB not ready")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, work, store,
                                              request.app.get(DOWNSAMPLED_KEY))
        except (PromstoreError, OSError) as exc:
            prefix = f"{what}: " if what else ""
            raise ApiError(ErrorType.INTERNAL, f"{prefix}{exc}") from exc

    async def delete_series(self, request: web.Request) -> web.StreamResponse:
        params = await request_params(request)
        selectors = params.getall("match[]", [])
        if not selectors:
            raise ApiError(ErrorType.BAD_DATA, "no match[] parameter provided")
        start = parse_time_param(params, "start", MIN_TIME_MS)
        end = parse_time_param(params, "end", MAX_TIME_MS)
        try:
            # Unlike Prometheus 2.42, refuse selectors that match the empty string: one
            # would delete every series lacking a label (docs/http-api.md).
            matcher_sets = parse_match_params(selectors)
        except BadDataError as exc:
            raise invalid_param("match[]", str(exc)) from None

        def work(store: DB, downsampled: DownsampledStore | None) -> None:
            for matchers in matcher_sets:
                # Raw data first: a downsampled block made from it meanwhile is then
                # either refused when it is served or served in time for the second step.
                store.delete(matchers, start, end)
                if downsampled is not None:
                    downsampled.delete(matchers, start, end)

        await self._run(request, "", work)
        return web.Response(status=204)

    async def clean_tombstones(self, request: web.Request) -> web.StreamResponse:
        dense = self._options.dense

        def work(store: DB, downsampled: DownsampledStore | None) -> None:
            store.clean_tombstones(lambda block: compact(store.directory, [block], dense=dense))
            if downsampled is not None:
                downsample.clean_tombstones(downsampled)

        await self._run(request, "", work)
        return web.Response(status=204)

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        params = await request_params(request)
        skip_head = False
        text = params.get("skip_head", "")
        if text != "":
            if text not in _GO_BOOLS:
                raise invalid_param("skip_head", "unable to parse boolean: strconv.ParseBool: "
                                    f"parsing {quoted(text)}: invalid syntax")
            skip_head = _GO_BOOLS[text]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{stamp}-{random.getrandbits(63):x}"

        def work(store: DB, downsampled: DownsampledStore | None) -> None:
            target = store.directory / "snapshots" / name
            store.snapshot(target, with_head=not skip_head)
            if downsampled is not None:
                downsampled.snapshot(target / "downsampled")

        await self._run(request, "create snapshot", work)
        return success_response({"name": name})
