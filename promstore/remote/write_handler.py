"""``POST /api/v1/write``: Prometheus remote write 1.0 into the head.

The handler checks headers and size on the event loop, then decompresses, decodes and
appends in a worker thread (all three run in GIL-free code, so the second core is used)
and answers only once the accepted samples are durable. The worker does not wait for the
fsync: the WAL's sync thread hands the result back to the event loop, so a few workers
keep up with many requests in flight, and a request passes through fewer threads.
Valid samples of a request are stored even when others in it are rejected; the rejected
ones get a 400 that names them (so the sender drops only what can never be stored).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from storage.errors import (
    PromstoreError,
    TooLargeError,
    UnavailableError,
    UnsupportedMediaTypeError,
)
from storage.interface import Appendable, AppendResult

from ..http_errors import status_for
from ..metrics import ServerMetrics
from . import snappy_block
from .wire import WireLimits, decode_write_request

__all__ = ["WriteHandler", "WriteLimits"]

log = logging.getLogger(__name__)

_V1_PROTO = "prometheus.WriteRequest"
NATIVE_HISTOGRAMS = "native_histograms_unsupported"  # rejection reason in the metrics
# Called with the append result once durable, or with the error instead.
_Done = Callable[[AppendResult | None, BaseException | None], None]


@dataclass(frozen=True)
class WriteLimits:
    """Size limits of one remote-write request."""

    max_request_bytes: int
    max_decoded_bytes: int
    wire: WireLimits
    max_in_flight: int = 64  # requests being read, decoded or stored at once


def check_headers(request: web.Request) -> None:
    """Accept remote write 1.0 only; anything else gets 415 so that senders fall back."""
    encoding = request.headers.get("Content-Encoding", "snappy").strip().lower()
    if encoding != "snappy":
        raise UnsupportedMediaTypeError(
            f"unsupported Content-Encoding {encoding!r}: only snappy is accepted")
    ctype = request.headers.get("Content-Type", "application/x-protobuf")
    media, _, params = ctype.partition(";")
    if media.strip().lower() != "application/x-protobuf":
        raise UnsupportedMediaTypeError(
            f"unsupported Content-Type {ctype!r}: expected application/x-protobuf")
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "proto" and value.strip().strip('"') != _V1_PROTO:
            raise UnsupportedMediaTypeError(
                f"unsupported remote-write message {value.strip()!r}: only "
                f"{_V1_PROTO} (remote write 1.0) is accepted")


class WriteHandler:
    """The aiohttp handler, bound to an appendable, limits, a thread pool and metrics."""

    def __init__(self, appendable: Callable[[], Appendable], limits: WriteLimits,
                 executor, metrics: ServerMetrics) -> None:
        self._appendable = appendable
        self._limits = limits
        self._executor = executor
        self._metrics = metrics
        self._in_flight = 0

    def _ingest(self, body: bytes, done: _Done) -> None:
        """In a worker: decode and append ``body``; ``done`` gets the outcome once durable."""
        try:
            raw = snappy_block.decompress(body, self._limits.max_decoded_bytes)
            batch = decode_write_request(raw, self._limits.wire)
        except Exception as exc:
            done(None, exc)
            return

        def durable(result: AppendResult | None, error: BaseException | None) -> None:
            if result is not None and batch.n_histograms:
                # Not storable yet: say so (the float samples are stored) rather than let
                # the sender believe they were kept. Exemplars are dropped silently, as
                # Prometheus does when its exemplar storage is off.
                result.rejected[NATIVE_HISTOGRAMS] = batch.n_histograms
                result.errors.append(f"{batch.n_histograms} native histogram samples were "
                                     "not stored: native histograms are not supported yet")
            done(result, error)

        try:
            self._appendable().append_then(batch, durable)
        except Exception as exc:  # append_then reports through durable; this is a bug
            done(None, exc)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await self._handle(request)
        except PromstoreError as exc:
            status = status_for(exc)
            self._metrics.write_errors.labels(type(exc).__name__).inc()
            headers = {"Retry-After": "1"} if status == 503 else None
            response = web.Response(status=status, text=str(exc) + "\n", headers=headers)
        except web.HTTPRequestEntityTooLarge:
            response = web.Response(
                status=413, text=f"request body larger than {self._limits.max_request_bytes} "
                                 "bytes\n")
        except Exception:  # the sender must retry, and we must keep serving
            log.exception("remote write failed")
            response = web.Response(status=500, text="internal error storing samples\n")
        self._metrics.requests.labels("write", str(response.status)).inc()
        self._metrics.request_duration.labels("write").observe(time.perf_counter() - started)
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        if self._in_flight >= self._limits.max_in_flight:
            # Bounded memory under overload: the sender retries a 503 after backing off.
            raise UnavailableError(f"more than {self._limits.max_in_flight} writes in "
                                   "flight; retry later")
        self._in_flight += 1
        try:
            return await self._store(request)
        finally:
            self._in_flight -= 1

    async def _store(self, request: web.Request) -> web.Response:
        check_headers(request)
        length = request.content_length
        if length is not None and length > self._limits.max_request_bytes:
            raise TooLargeError(f"request body of {length} bytes is larger than the limit of "
                                f"{self._limits.max_request_bytes} bytes")
        body = await request.read()
        result = await self._stored(body)
        self._count(result)
        headers = {"X-Prometheus-Remote-Write-Samples-Written": str(result.accepted
                                                                     + result.duplicates)}
        if not result.errors:
            return web.Response(status=204, headers=headers)
        summary = ", ".join(f"{n} {reason}" for reason, n in sorted(result.rejected.items()))
        text = (f"stored {result.accepted} samples; rejected {summary or 'series'}:\n"
                + "\n".join(result.errors) + "\n")
        return web.Response(status=400, text=text, headers=headers)

    async def _stored(self, body: bytes) -> AppendResult:
        """The append result of ``body`` once it is durable (raises what storing raised)."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[AppendResult] = loop.create_future()

        def settle(result: AppendResult | None, error: BaseException | None) -> None:
            if outcome.done():  # the request was cancelled meanwhile
                return
            if error is not None:
                outcome.set_exception(error)
            else:
                outcome.set_result(result)  # type: ignore[arg-type]

        def done(result: AppendResult | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(settle, result, error)

        self._executor.submit(self._ingest, body, done)
        return await outcome

    def _count(self, result: AppendResult) -> None:
        m = self._metrics
        m.samples_ingested.inc(result.accepted)
        m.samples_duplicate.inc(result.duplicates)
        m.series_created.inc(result.new_series)
        for reason, n in result.rejected.items():
            m.samples_rejected.labels(reason).inc(n)
