"""A real Prometheus scrapes itself and promstore and remote-writes into promstore.

Needs the ``prometheus`` binary (Debian package ``prometheus``); skipped without it,
except under CI (``CI=true``), where its absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.helpers import (
    STALE_NAN_BITS,
    ServerProcess,
    bits,
    free_port,
    http_request,
    read_data_dir,
)

pytestmark = pytest.mark.slow

WAIT_S = 60  # bound on waiting for Prometheus to start and for its writes to arrive


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or ("/usr/bin/prometheus"
                                          if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is not installed (.ci/run installs the Debian package)")
        pytest.skip("prometheus is not installed")
    return path


CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:{prometheus_port}"]
  - job_name: promstore
    static_configs:
      - targets: ["127.0.0.1:{promstore_port}"]
remote_write:
  - url: http://127.0.0.1:{promstore_port}/api/v1/write
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
"""


class PrometheusProcess:
    """A Prometheus server in a child process, listening on a free loopback port."""

    def __init__(self, binary: str, directory: Path, promstore_port: int) -> None:
        self.port = free_port()
        self.directory = directory
        config = directory / "prometheus.yml"
        config.write_text(CONFIG.format(prometheus_port=self.port, promstore_port=promstore_port))
        self.log_path = directory / "prometheus.log"
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=directory)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log()}"
            try:
                if http_request(self.port, "GET", "/-/ready", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready within {WAIT_S}s:\n{self.log()}")

    def query(self, expr: str) -> list[dict]:
        resp = http_request(self.port, "GET",
                            "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert resp.status == 200, resp.text
        return resp.json()["data"]["result"]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for(what: str, check, *logs) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"{what} within {WAIT_S}s\n" + "\n".join(f() for f in logs))


def test_prometheus_remote_writes_into_promstore(tmp_path):
    binary = prometheus_binary()
    data_dir = tmp_path / "data"
    promstore = ServerProcess(data_dir, log_path=tmp_path / "promstore.log")
    prometheus = None
    try:
        promstore.start()
        prometheus = PrometheusProcess(binary, tmp_path, promstore.port)
        prometheus.wait_ready()
        prom_instance = f"127.0.0.1:{prometheus.port}"
        ours = f"127.0.0.1:{promstore.port}"

        def arrived() -> bool:
            up = promstore.series("up")
            build = promstore.series("prometheus_build_info")
            return {"__name__": "up", "job": "prometheus", "instance": prom_instance} in up \
                and {"__name__": "up", "job": "promstore", "instance": ours} in up \
                and any(s.get("instance") == prom_instance for s in build)

        wait_for("up and prometheus_build_info did not arrive in promstore", arrived,
                 prometheus.log, promstore.log)

        # Prometheus saw every send succeed: nothing failed, dropped or retried.
        def sent() -> bool:
            result = prometheus.query("prometheus_remote_storage_samples_total")
            return bool(result) and float(result[0]["value"][1]) > 0

        wait_for("Prometheus did not report samples sent", sent, prometheus.log)
        for metric in ("prometheus_remote_storage_samples_failed_total",
                       "prometheus_remote_storage_samples_dropped_total",
                       "prometheus_remote_storage_samples_retried_total"):
            result = prometheus.query(metric)
            assert result, f"{metric} missing from Prometheus"
            assert all(float(r["value"][1]) == 0 for r in result), (metric, result,
                                                                    promstore.log())
        metrics = promstore.metrics()
        assert 'promstore_http_requests_total{code="204",handler="write"}' in metrics
        assert 'code="400"' not in metrics and 'code="500"' not in metrics, metrics
        prometheus_code = prometheus.stop()
        assert prometheus_code == 0, prometheus.log()
        assert promstore.stop(timeout=10) == 0, promstore.log()
    finally:
        if prometheus is not None:
            prometheus.stop()
        promstore.kill()

    # Both targets were up at every scrape that reached promstore: each stored value is
    # exactly 1 (or a stale marker, should Prometheus end its series on shutdown).
    stored = read_data_dir(data_dir)
    for job, instance in (("prometheus", prom_instance), ("promstore", ours)):
        values = {v for _, v in stored.samples[(("__name__", "up"), ("instance", instance),
                                                ("job", job))]}
        assert bits(1.0) in values and values <= {bits(1.0), STALE_NAN_BITS}, values
    assert stored.rows == stored.n_samples
