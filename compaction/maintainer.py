"""The background maintainer of a store's blocks: compaction, downsampling, retention.

One thread runs ``run_once`` every ``interval`` seconds (and on ``wake``): it merges
blocks as ``planner.plan`` says until nothing is left to merge, downsamples the blocks
old enough (``compaction.downsample``), then deletes what retention says. Each merged
block is durable before its sources are deleted, and a crash in between leaves sources
that ``storage.db`` deletes on the next start, so every sample is stored exactly once at
every step.

Ingestion keeps its latency while this runs (measured by ``benchmarks/compaction.py``):
merging and downsampling run in a worker process (one per ``run_once`` with work to do)
at the lowest scheduling priority, so it shares no GIL with the server and the kernel
gives ingestion the cores whenever both want them, and it is paced to a rate of samples
(``compaction.throttle``). The steps that take the store's locks (serving the new
block, deleting the old ones) run in this thread, so a starved low-priority worker
never holds a lock that queries or ingestion need. ``stop`` ends a merge in progress
by ending the worker: its unfinished block is deleted on the next start.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from storage.block import Block, BlockMeta
from storage.db import DB
from storage.downsampled import DownsampledStore
from storage.errors import StorageError
from storage.tombstones import Tombstones

from .compactor import compact
from .downsample import (
    DownsampleJob,
    DownsampleOptions,
    build_block,
    downsample_due,
    retain,
    rewrite_deleted,
)
from .planner import BlockSpan, plan, ranges
from .retention import directory_bytes, expired
from .throttle import LOW_PRIORITY, MeteredBlock, Throttle, lower_priority

__all__ = ["Maintainer", "MaintainerOptions", "MaintenanceStats"]

log = logging.getLogger(__name__)

DAY_MS = 24 * 3_600_000
DEFAULT_RATE_LIMIT = 1_000_000  # samples merged per second; see docs/configuration.md

# Samples merged per slice: small enough that a slice's decoded samples stay in the CPU
# caches (a fifth less CPU than 8M-sample slices) and the worker stays small.
SLICE_SAMPLES = 1 << 20


@dataclass(frozen=True)
class MaintainerOptions:
    """Retention (0 = off) and the largest block compaction builds (0 = a tenth of the
    retention time, at most 31 days, as in Prometheus)."""

    retention_ms: int = 15 * DAY_MS
    retention_bytes: int = 0
    max_block_ms: int = 0
    interval: float = 60.0
    # Compacted blocks in the dense encoding (False: XOR, Prometheus-readable), from the
    # third level on: see ``Maintainer._dense``.
    dense: bool = True
    rate_limit: int = DEFAULT_RATE_LIMIT  # samples merged per second, 0 = unpaced
    nice: int = LOW_PRIORITY  # the worker process's nice value, if lower than the server's
    # When blocks are downsampled (when the maintainer has a downsampled store); None: never.
    downsample: DownsampleOptions | None = field(default_factory=DownsampleOptions)

    def block_ranges(self, base_ms: int) -> list[int]:
        limit = self.max_block_ms or min(31 * DAY_MS, self.retention_ms // 10 or 31 * DAY_MS)
        return ranges(base_ms, 3, max(limit, base_ms))


@dataclass
class MaintenanceStats:
    """Counters for self-metrics."""

    compactions: int = 0
    compactions_failed: int = 0
    compaction_seconds: float = 0.0
    bytes_before: int = 0
    bytes_after: int = 0
    blocks_deleted_by_retention: int = 0


@dataclass
class Maintainer:
    """Keeps ``db``'s blocks compacted and within retention, and old blocks downsampled
    into ``downsampled`` when there is one."""

    db: DB
    options: MaintainerOptions = field(default_factory=MaintainerOptions)
    downsampled: DownsampledStore | None = None
    stats: MaintenanceStats = field(default_factory=MaintenanceStats)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker: BaseProcess | None = None
        self._link: Connection | None = None  # to the worker, while a run has one

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="compactor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop, ending a merge in progress (a paced merge may take long; the next
        start deletes its unfinished block, and its sources are still served)."""
        self._stop.set()
        self._wake.set()
        worker = self._worker
        if worker is not None:
            worker.terminate()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                if self._stop.is_set():  # stop() ended the worker: not a failure
                    return
                self.stats.compactions_failed += 1
                log.exception("block maintenance failed; will retry")
            self._wake.wait(self.options.interval)
            self._wake.clear()

    def run_once(self) -> int:
        """Compact until nothing is left to compact, then apply retention; return how
        many blocks were written."""
        try:
            written = self._compact_all()
            # Downsampling reads the compacted blocks, and must be done with a block
            # before retention may delete it.
            if self.downsampled is not None and self.options.downsample is not None \
                    and not self._stop.is_set():
                self._downsample(self.downsampled, self.options.downsample)
            self._apply_retention()
        finally:
            self._end_worker()
        return written

    def _downsample(self, store: DownsampledStore, options: DownsampleOptions) -> None:
        """Downsample the blocks old enough, rewrite those with many deleted windows,
        and drop aggregates past their retention. Ages count back from the newest
        sample in the store.

        The blocks are built in the worker, paced like merges: reading and aggregating
        a raw block costs about what merging it does (decoding dominates), and a day of
        a large fleet is hundreds of millions of samples. Serving them, after checking
        that no deletion came in meanwhile, stays in this thread."""
        newest = max([self.db.head.max_time] + [b.meta.max_time for b in self.db.blocks])

        def build(job: DownsampleJob) -> BlockMeta:
            return self._in_worker(_downsample, job.source.meta.path, job.source_resolution,
                                   job.resolution, store.directory, job.deleted, job.part)

        downsample_due(self.db, store, options, newest, build)
        rewrite_deleted(self.db, store,
                        self.options.block_ranges(self.db.head.options.block_range_ms), build)
        retain(store, options, newest)

    def _compact_all(self) -> int:
        block_ranges = self.options.block_ranges(self.db.head.options.block_range_ms)
        written = 0
        while not self._stop.is_set():
            blocks = self.db.blocks
            spans = [BlockSpan(b.meta.ulid, b.meta.min_time, b.meta.max_time,
                               b.meta.num_series, b.meta.num_tombstones) for b in blocks]
            group = {s.ulid for s in plan(spans, block_ranges)}
            if not group:
                break
            self._compact([b for b in blocks if b.meta.ulid in group])
            written += 1
        return written

    def _start_worker(self) -> Connection:
        # A fresh interpreter ("spawn"): forking a threaded server is unsafe.
        ctx = multiprocessing.get_context("spawn")
        link, theirs = ctx.Pipe()
        worker = ctx.Process(target=_serve, name="compaction-worker", daemon=True,
                             args=(theirs, self.options.rate_limit))
        worker.start()
        if worker.pid is not None:
            lower_priority(worker.pid, self.options.nice)
        theirs.close()
        self._worker = worker
        if self._stop.is_set():  # stop() may have looked before the worker existed
            worker.terminate()
        return link

    def _end_worker(self) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        with contextlib.suppress(OSError):  # it may be gone already
            link.send(None)
        link.close()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def _in_worker(self, step: Callable[..., BlockMeta], *args: Any) -> BlockMeta:
        """``step(*args, throttle)`` run in the worker, started for the run on first use
        (any heavy step belongs there); ``StorageError`` when it fails or the worker
        ends."""
        link = self._link = self._link or self._start_worker()
        try:
            link.send((step, args))
            outcome = link.recv()
        except (EOFError, OSError):
            code = self._worker.exitcode if self._worker is not None else None
            raise StorageError(f"the compaction worker ended (exit code {code})") from None
        if isinstance(outcome, str):
            raise StorageError(f"{step.__name__.strip('_')} failed in the worker: {outcome}")
        return outcome

    def _dense(self, sources: Sequence[Block]) -> bool:
        """Whether the block merged from ``sources`` is written dense: when it spans more
        than the second level's range (6 h with 2 h blocks). Younger blocks keep their XOR
        chunks, copied through: the newest hours are what dashboards read most, often
        only their last minutes, and an XOR chunk holds 30 minutes of a scrape where a
        dense chunk holds hours that must all be decoded; they are also merged again
        soon, and copying their chunks costs the compactor almost nothing."""
        span = max(b.meta.max_time for b in sources) - min(b.meta.min_time for b in sources)
        ranges = self.options.block_ranges(self.db.head.options.block_range_ms)
        return self.options.dense and span > ranges[min(1, len(ranges) - 1)]

    def _compact(self, sources: Sequence[Block]) -> None:
        """Merge ``sources`` (or rewrite one without its deleted samples) in the worker
        and serve the result instead of them; sources whose every sample is deleted are
        simply dropped."""
        started = time.monotonic()
        before = sum(directory_bytes(b.meta.path) for b in sources)
        if any(len(b.select_series((), b.meta.min_time, b.meta.max_time - 1)) for b in sources):
            meta = self._in_worker(_merge, self.db.directory, [b.meta.path for b in sources],
                                   self._dense(sources))
            self.db.replace_blocks(meta, sources)
            after, name = directory_bytes(meta.path), meta.ulid
        else:  # every sample deleted: nothing to write
            self.db.replace_blocks(None, sources)
            after, name = 0, "nothing"
        self.stats.compactions += 1
        self.stats.compaction_seconds += time.monotonic() - started
        self.stats.bytes_before += before
        self.stats.bytes_after += after
        log.info("compacted %d blocks [%d, %d) into %s", len(sources),
                 sources[0].meta.min_time, max(b.meta.max_time for b in sources), name)

    def _apply_retention(self) -> None:
        blocks = self.db.blocks
        if not blocks:
            return
        newest = max(self.db.head.max_time, max(b.meta.max_time for b in blocks))
        sizes = [directory_bytes(b.meta.path) for b in blocks] \
            if self.options.retention_bytes else [0] * len(blocks)
        wal = directory_bytes(self.db.directory / "wal") if self.options.retention_bytes else 0
        doomed = expired([b.meta for b in blocks], newest, self.options.retention_ms,
                         self.options.retention_bytes, sizes, wal)
        if doomed:
            ulids = {m.ulid for m in doomed}
            self.db.replace_blocks(None, [b for b in blocks if b.meta.ulid in ulids])
            self.stats.blocks_deleted_by_retention += len(doomed)
            log.info("retention deleted %d blocks: %s", len(doomed),
                     ", ".join(sorted(ulids)))


def _serve(link: Connection, rate: int) -> None:
    """The worker process: run each step asked for with the shared throttle, answering
    with its result or an error message, until asked to end (``None``)."""
    server = multiprocessing.parent_process()
    if server is not None:
        threading.Thread(target=_end_with, args=(server.sentinel,), daemon=True).start()
    throttle = Throttle(rate)
    while (request := link.recv()) is not None:
        step, args = request
        try:
            link.send(step(*args, throttle))
        except Exception as exc:
            link.send(f"{type(exc).__name__}: {exc}")


def _end_with(sentinel: int) -> None:
    """End the worker as soon as the server is gone, even mid-merge (a server killed
    outright cannot tell it to): the unfinished block is deleted on the next start."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _downsample(path: Path, source_resolution: int, resolution: int, directory: Path,
                deleted: Tombstones, part: tuple[int, int] | None,
                throttle: Throttle) -> BlockMeta:
    """``build_block`` over the block at ``path`` (or its ``part``), paced slice by
    slice; the block is staged for the server to serve."""
    block = MeteredBlock.open_paced(path, throttle.pace)
    try:
        return build_block(block, source_resolution, resolution, directory, deleted=deleted,
                           part=part, slice_samples=SLICE_SAMPLES)
    finally:
        block.close()


def _merge(parent: Path, paths: Sequence[Path], dense: bool, throttle: Throttle) -> BlockMeta:
    """``compact`` over the blocks at ``paths``, paced slice by slice."""
    blocks = [MeteredBlock.open_paced(p, throttle.pace) for p in paths]
    try:
        return compact(parent, blocks, dense=dense, slice_samples=SLICE_SAMPLES)
    finally:
        for block in blocks:
            block.close()
