"""The background maintainer of a store's blocks: compaction, then retention.

One thread runs ``run_once`` every ``interval`` seconds (and on ``wake``): it merges
blocks as ``planner.plan`` says until nothing is left to merge, then deletes what
retention says. Each merged block is durable before its sources are deleted, and a
crash in between leaves sources that ``storage.db`` deletes on the next start, so every
sample is stored exactly once at every step.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from storage.db import DB

from .compactor import compact
from .planner import BlockSpan, plan, ranges
from .retention import directory_bytes, expired

__all__ = ["Maintainer", "MaintainerOptions", "MaintenanceStats"]

log = logging.getLogger(__name__)

DAY_MS = 24 * 3_600_000


@dataclass(frozen=True)
class MaintainerOptions:
    """Retention (0 = off) and the largest block compaction builds (0 = a tenth of the
    retention time, at most 31 days, as in Prometheus)."""

    retention_ms: int = 15 * DAY_MS
    retention_bytes: int = 0
    max_block_ms: int = 0
    interval: float = 60.0
    dense: bool = True  # compacted blocks in the dense encoding (False: XOR, Prometheus-readable)

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
    """Keeps ``db``'s blocks compacted and within retention."""

    db: DB
    options: MaintainerOptions = field(default_factory=MaintainerOptions)
    stats: MaintenanceStats = field(default_factory=MaintenanceStats)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="compactor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the step in progress (a merge is never left half done on purpose;
        if the process dies mid-merge, the next start cleans up)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                self.stats.compactions_failed += 1
                log.exception("block maintenance failed; will retry")
            self._wake.wait(self.options.interval)
            self._wake.clear()

    def run_once(self) -> int:
        """Compact until nothing is left to compact, then apply retention; return how
        many blocks were written."""
        written = 0
        block_ranges = self.options.block_ranges(self.db.head.options.block_range_ms)
        while not self._stop.is_set():
            blocks = self.db.blocks
            spans = [BlockSpan(b.meta.ulid, b.meta.min_time, b.meta.max_time) for b in blocks]
            group = {s.ulid for s in plan(spans, block_ranges)}
            if not group:
                break
            sources = [b for b in blocks if b.meta.ulid in group]
            started = time.monotonic()
            before = sum(directory_bytes(b.meta.path) for b in sources)
            meta = compact(self.db.directory, sources, dense=self.options.dense)
            self.db.replace_blocks(meta, sources)
            self.stats.compactions += 1
            self.stats.compaction_seconds += time.monotonic() - started
            self.stats.bytes_before += before
            self.stats.bytes_after += directory_bytes(meta.path)
            written += 1
            log.info("compacted %d blocks into %s [%d, %d), level %d", len(sources), meta.ulid,
                     meta.min_time, meta.max_time, meta.level)
        self._apply_retention()
        return written

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
