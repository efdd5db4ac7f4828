"""The server's own metrics, exposed at ``/metrics`` in the Prometheus text format.

Each server has its own registry (no global state), so tests can run several servers in
one process. Storage keeps plain counters; a collector turns them into metrics at scrape
time, so storage never imports prometheus_client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from . import __version__

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _StorageCollector(Collector):
    """Reads head, WAL, block and compaction state when scraped."""

    def __init__(self, store_getter: Callable[[], Any], maintainer_getter: Callable[[], Any]
                 ) -> None:
        self._store = store_getter
        self._maintainer = maintainer_getter

    def collect(self) -> Iterable[Metric]:
        store = self._store()
        yield from self._blocks(store)
        yield from self._compaction(self._maintainer())
        head = store.head if store is not None else None
        info = GaugeMetricFamily("promstore_build_info", "Build information.",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        if head is None:
            return
        yield GaugeMetricFamily("promstore_head_series", "Series in the head.",
                                value=head.n_series)
        yield GaugeMetricFamily("promstore_head_samples", "Samples held in the head.",
                                value=head.n_samples)
        yield GaugeMetricFamily("promstore_head_memory_bytes",
                                "Bytes held by the head's arrays (capacity).",
                                value=head.memory_bytes())
        wal = head.wal
        if wal is None:
            return
        stats = wal.stats
        yield CounterMetricFamily("promstore_wal_fsyncs", "WAL fsync calls.",
                                  value=stats.fsyncs)
        yield CounterMetricFamily("promstore_wal_fsync_duration_seconds",
                                  "Total time spent in WAL fsync calls.",
                                  value=stats.fsync_seconds_sum)
        yield CounterMetricFamily("promstore_wal_bytes_written", "Bytes written to the WAL.",
                                  value=stats.bytes_written)
        yield CounterMetricFamily("promstore_wal_records_written",
                                  "Records written to the WAL.", value=stats.records_written)
        yield GaugeMetricFamily("promstore_wal_replay_problems",
                                "Problems repaired during the last WAL replay.",
                                value=len(head.replay_report))


    @staticmethod
    def _blocks(store: Any) -> Iterable[Metric]:
        if store is None:
            return
        blocks = GaugeMetricFamily("promstore_blocks", "Blocks on disk, by compaction level.",
                                   labels=["level"])
        levels: dict[int, int] = {}
        for b in store.blocks:
            levels[b.meta.level] = levels.get(b.meta.level, 0) + 1
        for level, n in sorted(levels.items()):
            blocks.add_metric([str(level)], n)
        yield blocks
        yield GaugeMetricFamily("promstore_blocks_corrupt_moved_aside",
                                "Blocks found corrupt at start and moved to corrupted/.",
                                value=len(store.open_report))

    @staticmethod
    def _compaction(maintainer: Any) -> Iterable[Metric]:
        if maintainer is None:
            return
        st = maintainer.stats
        for name, doc, value in (
            ("compactions", "Block compactions completed.", st.compactions),
            ("compactions_failed", "Block maintenance runs that failed.",
             st.compactions_failed),
            ("compaction_duration_seconds", "Time spent compacting blocks.",
             st.compaction_seconds),
            ("compaction_bytes_before", "Bytes of the blocks compactions read.", st.bytes_before),
            ("compaction_bytes_after", "Bytes of the blocks compactions wrote.", st.bytes_after),
            ("retention_blocks_deleted", "Blocks deleted by retention.",
             st.blocks_deleted_by_retention),
        ):
            yield CounterMetricFamily(f"promstore_{name}", doc, value=value)


class ServerMetrics:
    """Counters and histograms the HTTP layer updates, plus storage and process gauges."""

    def __init__(self, store_getter: Callable[[], Any],
                 maintainer_getter: Callable[[], Any] = lambda: None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.samples_ingested = Counter(
            "promstore_samples_ingested", "Samples stored.", registry=r)
        self.samples_duplicate = Counter(
            "promstore_samples_duplicate",
            "Samples identical to one already stored (accepted, not stored twice).", registry=r)
        self.samples_rejected = Counter(
            "promstore_samples_rejected", "Samples rejected, by reason.", ["reason"], registry=r)
        self.series_created = Counter(
            "promstore_series_created", "Series created in the head.", registry=r)
        self.requests = Counter(
            "promstore_http_requests", "HTTP requests by handler and status code.",
            ["handler", "code"], registry=r)
        self.request_duration = Histogram(
            "promstore_http_request_duration_seconds", "HTTP request latency by handler.",
            ["handler"], buckets=_LATENCY_BUCKETS, registry=r)
        self.write_errors = Counter(
            "promstore_remote_write_errors", "Remote-write requests that failed, by reason.",
            ["reason"], registry=r)
        ProcessCollector(registry=r)
        r.register(_StorageCollector(store_getter, maintainer_getter))
