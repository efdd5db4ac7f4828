"""The server's own metrics, exposed at ``/metrics`` in the Prometheus text format.

Each server has its own registry (no global state), so tests can run several servers in
one process. Storage keeps plain counters; a collector turns them into metrics at scrape
time, so storage never imports prometheus_client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from . import __version__

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _StorageCollector(Collector):
    """Reads head and WAL state when scraped."""

    def __init__(self, head_getter: Callable[[], object | None]) -> None:
        self._head = head_getter

    def collect(self) -> Iterable[Metric]:
        head = self._head()
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


class ServerMetrics:
    """Counters and histograms the HTTP layer updates, plus storage and process gauges."""

    def __init__(self, head_getter: Callable[[], object | None]) -> None:
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
        r.register(_StorageCollector(head_getter))
