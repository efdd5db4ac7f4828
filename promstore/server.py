"""The HTTP server: one aiohttp application wiring storage, handlers and metrics.

Start-up opens the store (its blocks, then the head, replaying its WAL) before the
listener accepts connections; shutdown (SIGTERM/SIGINT) stops accepting, lets in-flight
requests finish, then syncs and closes the WAL.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvloop
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from compaction.maintainer import Maintainer, MaintainerOptions
from storage.db import DB, DBOptions
from storage.downsampled import DownsampledStore
from storage.head import HeadOptions
from storage.labels import LabelLimits

from . import allocator
from .api import admin, metadata, query
from .config import Config
from .metrics import ServerMetrics
from .remote.read_handler import ReadHandler, ReadLimits
from .remote.wire import WireLimits
from .remote.write_handler import WriteHandler, WriteLimits
from .warmup import warm_up

__all__ = ["STORE_KEY", "build_app", "serve"]

log = logging.getLogger(__name__)

STORE_KEY = web.AppKey("store", DB)
_METRICS_KEY = web.AppKey("metrics", ServerMetrics)
_MAINTAINER_KEY = web.AppKey("maintainer", Maintainer)
_SHUTTING_DOWN = web.AppKey("shutting_down", dict)

# Seconds in-flight requests get to finish after SIGTERM. Short, because aiohttp drops
# request bytes that arrive after shutdown began, so a request still being uploaded then
# can only time out; its sender retries it.
SHUTDOWN_TIMEOUT = 5.0
# Heaps of the C allocator shared by all threads: one per core, not glibc's eight, so
# that memory freed by one query thread serves the next instead of staying reserved.
_ARENAS = 2
# Seconds a thread waiting for the GIL lets its holder run before asking for it (Python's
# default is 5 ms). A write wakes several threads in turn (worker, head lock, fsync
# leader, event loop), each of which may wait for the GIL behind the event loop or a
# worker's Python code. On a busy 2-core machine (load average 4-5), at 5 ms three of
# nine quick-preset runs fell to 0.9-1.8 M samples/s against about 2 M; at 0.5 ms all
# nine, alternated with them, stayed at 1.95 M or more.
_GIL_SWITCH_INTERVAL = 0.0005


def head_options(config: Config) -> HeadOptions:
    return HeadOptions(
        labels=LabelLimits(max_labels=config.max_labels_per_series,
                           max_name_length=config.max_label_name_length,
                           max_value_length=config.max_label_value_length),
        max_series=config.max_series,
        out_of_order_window_ms=int(config.out_of_order_window * 1000),
        wal_fsync=config.wal_fsync,  # type: ignore[arg-type]
        wal_fsync_interval=config.wal_fsync_interval,
        wal_segment_size=config.wal_segment_size,
        block_range_ms=int(config.block_range * 1000),
    )


def maintainer_options(config: Config) -> MaintainerOptions:
    from compaction.downsample import DownsampleOptions

    downsample = DownsampleOptions(after_5m_ms=int(config.downsample_5m_after * 1000),
                                   after_1h_ms=int(config.downsample_1h_after * 1000))
    return MaintainerOptions(retention_ms=int(config.retention_time * 1000),
                             retention_bytes=config.retention_size,
                             dense=config.compacted_encoding == "dense",
                             rate_limit=config.compaction_rate_limit,
                             downsample=downsample if config.downsampling else None)


def build_app(config: Config) -> web.Application:
    """The application for ``config``; storage opens when the app starts."""
    app = web.Application(client_max_size=config.max_request_bytes)
    metrics = ServerMetrics(lambda: app.get(STORE_KEY), lambda: app.get(_MAINTAINER_KEY))
    app[_METRICS_KEY] = metrics
    app[_SHUTTING_DOWN] = {"flag": False}
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="ingest")
    limits = WriteLimits(
        max_request_bytes=config.max_request_bytes,
        max_decoded_bytes=config.max_decoded_bytes,
        wire=WireLimits(max_series=config.max_series_per_request,
                        max_labels=config.max_labels_per_request,
                        max_samples=config.max_samples_per_request),
        max_in_flight=config.max_in_flight_writes,
    )

    async def storage(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        data_dir = Path(config.data_dir)
        log.info("opening storage in %s", data_dir.resolve())
        await loop.run_in_executor(executor, warm_up)
        options = DBOptions(head=head_options(config))
        store = await loop.run_in_executor(executor, DB.open, data_dir, options)
        downsampled = await loop.run_in_executor(executor, DownsampledStore.open,
                                                 data_dir / "downsampled")
        maintainer = Maintainer(store, maintainer_options(config), downsampled=downsampled)
        maintainer.start()
        app[STORE_KEY] = store
        app[query.DOWNSAMPLED_KEY] = downsampled
        app[_MAINTAINER_KEY] = maintainer
        log.info("storage ready: %d blocks, %d series in the head", len(store.blocks),
                 store.head.n_series)
        yield
        await loop.run_in_executor(None, maintainer.stop)
        await loop.run_in_executor(None, store.close)
        await loop.run_in_executor(None, downsampled.close)
        executor.shutdown(wait=True)
        log.info("storage closed")

    async def on_shutdown(app: web.Application) -> None:
        app[_SHUTTING_DOWN]["flag"] = True

    app.cleanup_ctx.append(storage)
    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/api/v1/write", WriteHandler(lambda: app[STORE_KEY], limits,
                                                      executor, metrics))
    app.router.add_post("/api/v1/read", ReadHandler(lambda: app[STORE_KEY],
                                                    ReadLimits.from_config(config), metrics))
    metadata.add_routes(app, STORE_KEY)
    query.add_routes(app, STORE_KEY, query.QueryApiOptions.from_config(config))
    admin.add_routes(app, STORE_KEY, admin.AdminApiOptions.from_config(config))
    app.router.add_get("/-/healthy", _healthy)
    app.router.add_get("/-/ready", _ready)
    app.router.add_get("/metrics", _metrics)
    return app


async def _healthy(request: web.Request) -> web.Response:
    return web.Response(text="promstore is Healthy.\n")


async def _ready(request: web.Request) -> web.Response:
    if STORE_KEY not in request.app or request.app[_SHUTTING_DOWN]["flag"]:
        return web.Response(status=503, text="promstore is not ready.\n")
    head = request.app[STORE_KEY].head
    if head.failed:
        return web.Response(status=503, text=f"promstore is not ready: {head.failed}\n")
    return web.Response(text="promstore is Ready.\n")


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[_METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def serve(config: Config) -> None:
    """Run the server until SIGTERM or SIGINT."""
    host, port = config.host_port
    allocator.limit_arenas(_ARENAS)
    sys.setswitchinterval(_GIL_SWITCH_INTERVAL)
    # uvloop's event loop: a small query's round trip through the server is 35-45 µs
    # shorter on it than on asyncio's (HTTP parsing and socket work in C).
    # auto_decompress=False: a Content-Encoding other than snappy must reach the write
    # handler (which answers 415 so that senders fall back), not be decoded or refused by
    # aiohttp with a 400 that senders would take as "drop this batch".
    web.run_app(build_app(config), host=host, port=port, shutdown_timeout=SHUTDOWN_TIMEOUT,
                loop=uvloop.new_event_loop(), access_log=None, print=lambda *_: None,
                handle_signals=True, auto_decompress=False)
