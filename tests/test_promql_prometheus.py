"""Differential tests: the same data in promstore and in a real Prometheus 2.42, the same
queries to both, the same answers expected.

Both servers receive one seeded data set through remote write (counters with resets and
missed scrapes, gauges, classic histograms, stale markers, NaN and infinite values,
series whose names are all that tells them apart). Every expression below is evaluated
as instant queries at a few times and as range queries on two grids; answers must have
the same status, error type, result type and series, timestamps equal, values equal to
1e-9 relative (NaN equal to NaN). Series order is compared only where PromQL defines it.

Needs ``/usr/bin/prometheus`` (Debian package ``prometheus``, version 2.42); skipped
without it unless ``CI=true``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    STALE_NAN_BITS,
    ServerProcess,
    f64,
    free_port,
    http_request,
    snappy_write_body,
)

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
STALE = f64(STALE_NAN_BITS)

# -- the data -----------------------------------------------------------------------------

HOUR = 3_600_000
# Three hours ago, on the hour, plus an odd millisecond count so that no sample or step
# falls on a round number by accident.
T0 = (int(time.time() * 1000) // HOUR - 3) * HOUR + 137
SPAN = 2 * HOUR


def _scrapes(rng: random.Random, interval: int, jitter: int, miss: float,
             start: int = 0, end: int = SPAN) -> list[int]:
    out = []
    t = start
    while t < end:
        if rng.random() >= miss:
            out.append(T0 + t + rng.randint(-jitter, jitter))
        t += interval
    return out


def _counter(rng: random.Random, times: list[int], rate: float, resets: int) -> list[float]:
    reset_at = set(rng.sample(range(1, len(times)), resets)) if resets else set()
    value, out = rng.uniform(0, 1000), []
    for k in range(len(times)):
        if k in reset_at:
            value = rng.uniform(0, 5)
        else:
            value += rng.expovariate(1 / rate) if rate else 0
        out.append(round(value, 3))
    return out


def _dataset() -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    rng = random.Random(20240501)
    series: list[tuple[dict[str, str], list[tuple[int, float]]]] = []

    def add(labels: dict[str, str], times: list[int], values: list[float]) -> None:
        series.append((labels, list(zip(times, values))))

    for inst in range(4):
        for method in ("get", "post"):
            for code in ("200", "500"):
                times = _scrapes(rng, 15_000, 1500, 0.05)
                add({"__name__": "http_requests_total", "job": "api", "instance": f"i{inst}",
                     "method": method, "code": code},
                    times, _counter(rng, times, 40 if code == "200" else 3, rng.randint(0, 2)))
    for method in ("get", "post"):
        times = _scrapes(rng, 30_000, 0, 0.0)
        add({"__name__": "http_requests_total", "job": "web", "instance": "w0",
             "method": method, "code": "200"}, times, _counter(rng, times, 100, 1))
    for inst in range(3):
        for sensor in ("cpu", "disk"):
            times = _scrapes(rng, 15_000, 200, 0.02)
            v, values = rng.uniform(-10, 60), []
            for _ in times:
                v += rng.gauss(0, 2)
                values.append(round(v, 2))
            add({"__name__": "node_temperature", "instance": f"n{inst}", "sensor": sensor},
                times, values)
    bounds = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]
    for inst in range(2):
        times = _scrapes(rng, 15_000, 300, 0.0)
        counts = [[0.0] * len(bounds) for _ in times]
        total = 0.0
        sums = []
        running = [0.0] * len(bounds)
        for k in range(len(times)):
            for _ in range(rng.randint(0, 30)):
                x = rng.expovariate(3)
                total += x
                for b, bound in enumerate(bounds):
                    if x <= float(bound):
                        running[b] += 1
            counts[k] = list(running)
            sums.append(round(total, 4))
        for b, bound in enumerate(bounds):
            add({"__name__": "req_duration_seconds_bucket", "job": "api",
                 "instance": f"i{inst}", "le": bound}, times, [c[b] for c in counts])
        add({"__name__": "req_duration_seconds_sum", "job": "api", "instance": f"i{inst}"},
            times, sums)
        add({"__name__": "req_duration_seconds_count", "job": "api", "instance": f"i{inst}"},
            times, [c[-1] for c in counts])
    times = _scrapes(rng, 15_000, 0, 0.0)  # a histogram without +Inf: quantiles are NaN
    for bound, scale in (("1", 1), ("5", 3)):
        add({"__name__": "rpc_latency_bucket", "le": bound}, times,
            [float(k * scale) for k in range(len(times))])
    for inst in ("f0", "f1"):  # goes stale at 1h, comes back at 1h20m
        times = _scrapes(rng, 15_000, 100, 0.0, 0, HOUR) + \
            _scrapes(rng, 15_000, 100, 0.0, HOUR + 20 * 60_000, SPAN)
        values = [float(rng.randint(0, 9)) for _ in times]
        cut = sum(1 for t in times if t < T0 + HOUR)
        times.insert(cut, T0 + HOUR + 5_000)
        values.insert(cut, STALE)
        add({"__name__": "flaky_gauge", "instance": inst}, times, values)
    times = _scrapes(rng, 60_000, 0, 0.0)
    specials = {
        "nan": lambda k: math.nan if k % 7 == 3 else float(k),
        "inf": lambda k: math.inf if k % 5 == 1 else (-math.inf if k % 5 == 2 else float(k)),
        "big": lambda k: 1e300 * (1 + k % 3),
        "small": lambda k: 1e-300 * (k + 1),
        "neg": lambda k: -float(k % 11) - 0.5,
    }
    for kind, f in specials.items():
        add({"__name__": "special_values", "kind": kind}, times,
            [f(k) for k in range(len(times))])
    times = _scrapes(rng, 15_000, 0, 0.0)
    add({"__name__": "collide_a", "x": "1"}, times, [float(k) for k in range(len(times))])
    add({"__name__": "collide_b", "x": "1"}, times[::2], [float(k) for k in range(len(times[::2]))])
    for inst in range(4):
        times = _scrapes(rng, 15_000, 500, 0.0)
        add({"__name__": "up", "job": "api", "instance": f"i{inst}"}, times,
            [float(rng.random() > 0.1) for _ in times])
        add({"__name__": "build_info", "instance": f"i{inst}", "version": f"1.{inst % 2}"},
            times[:1] + times[-1:], [1.0, 1.0])
    for job in ("batch", "cron"):
        times = _scrapes(rng, 300_000, 20_000, 0.1)
        add({"__name__": "sparse_counter", "job": job}, times, _counter(rng, times, 50, 1))
    return series


def _write_all(write, series) -> None:
    """Send the data in ten-minute slices of time, so that no sample is older than what
    Prometheus's head accepts after the previous request."""
    window = 10 * 60_000
    for lo in range(T0 - 5000, T0 + SPAN + 5000, window):
        batch = []
        for labels, samples in series:
            part = [(t, v) for t, v in samples if lo <= t < lo + window]
            if part:
                batch.append((labels, part))
        if batch:
            write(snappy_write_body(batch))


# -- the servers --------------------------------------------------------------------------


class PrometheusProcess:
    """A Prometheus 2.42 on a free loopback port, remote-write receiver enabled."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> PrometheusProcess:
        config = self.directory / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 15s\n  evaluation_interval: 1m\n")
        self.port = free_port()
        log = open(self.directory / "prometheus.log", "wb")  # noqa: SIM115 - child keeps it
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}",
             f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--web.enable-remote-write-receiver", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.directory)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if http_request(self.port, "GET", "/-/ready", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("prometheus did not start:\n" +
                           (self.directory / "prometheus.log").read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def write(self, body: bytes) -> None:
        resp = http_request(self.port, "POST", "/api/v1/write", body, {
            "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        assert resp.status in (200, 204), resp.text


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[tuple[int, int]]:
    if not os.path.exists(PROMETHEUS):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PROMETHEUS} is required in CI")
        pytest.skip("prometheus is not installed")
    base = tmp_path_factory.mktemp("differential")
    data = _dataset()
    prom = PrometheusProcess(base).start()
    ours = ServerProcess(base / "promstore").start()
    try:
        _write_all(prom.write, data)

        def write_ours(body: bytes) -> None:
            resp = ours.write(body=body)
            assert resp.status in (200, 204), resp.text

        _write_all(write_ours, data)
        yield prom.port, ours.port
    finally:
        ours.stop()
        prom.stop()


# -- comparing answers --------------------------------------------------------------------


def _get(port: int, path: str, params: dict[str, str]) -> tuple[int, dict]:
    resp = http_request(port, "GET", f"{path}?{urllib.parse.urlencode(params)}", timeout=60)
    return resp.status, json.loads(resp.body)


# PROMQL_DIFF_EXACT=1 demands identical value strings, i.e. bit-identical floats: a
# diagnostic for where summation order or libm differ; the contract is 1e-9 relative.
EXACT = os.environ.get("PROMQL_DIFF_EXACT") == "1"


def _same_value(a: str, b: str) -> bool:
    if EXACT:
        return a == b
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y or math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)


def _key(item: dict) -> tuple:
    return tuple(sorted(item["metric"].items()))


def _assert_same(expr: str, want: tuple[int, dict], got: tuple[int, dict],
                 ordered: bool) -> None:
    (want_status, w), (got_status, g) = want, got
    context = (f"\nquery: {expr}\nprometheus: {json.dumps(w)[:1500]}"
               f"\npromstore:  {json.dumps(g)[:1500]}")
    assert g["status"] == w["status"], context
    if w["status"] == "error":
        assert g["errorType"] == w["errorType"], context
        assert got_status == want_status, context
        return
    wd, gd = w["data"], g["data"]
    assert gd["resultType"] == wd["resultType"], context
    if wd["resultType"] in ("scalar", "string"):
        assert gd["result"][0] == wd["result"][0], context
        same = gd["result"][1] == wd["result"][1] if wd["resultType"] == "string" else \
            _same_value(gd["result"][1], wd["result"][1])
        assert same, context
        return
    wr, gr = wd["result"], gd["result"]
    if not ordered:
        wr, gr = sorted(wr, key=_key), sorted(gr, key=_key)
    assert [_key(x) for x in gr] == [_key(x) for x in wr], context
    for ws, gs in zip(wr, gr):
        wp = ws.get("values") or [ws["value"]]
        gp = gs.get("values") or [gs["value"]]
        assert [p[0] for p in gp] == [p[0] for p in wp], context
        assert all(_same_value(a[1], b[1]) for a, b in zip(gp, wp)), context


def _seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


INSTANT_TIMES = [T0 + 45 * 60_000, T0 + HOUR + 10 * 60_000 + 7_500, T0 + SPAN + 60_000]
RANGES = [
    (T0 + 10 * 60_000, T0 + SPAN - 5 * 60_000, 60_000),
    (T0 + 50 * 60_000 + 333, T0 + 90 * 60_000, 37_000),
    (T0 - 30 * 60_000, T0 + SPAN + 30 * 60_000, 7 * 60_000),  # beyond both ends of the data
]


def check(servers: tuple[int, int], expr: str, ordered: bool = False,
          instant: bool = True, ranged: bool = True) -> None:
    prom, ours = servers
    if instant:
        for t in INSTANT_TIMES:
            params = {"query": expr, "time": _seconds(t)}
            _assert_same(expr, _get(prom, "/api/v1/query", params),
                         _get(ours, "/api/v1/query", params), ordered)
    if ranged:
        for start, end, step in RANGES:
            params = {"query": expr, "start": _seconds(start), "end": _seconds(end),
                      "step": str(step / 1000)}
            _assert_same(expr, _get(prom, "/api/v1/query_range", params),
                         _get(ours, "/api/v1/query_range", params), False)


# -- the expressions ----------------------------------------------------------------------

SELECTORS = [
    "http_requests_total",
    'http_requests_total{job="api", code!="200"}',
    'http_requests_total{instance=~"i[12]", method!~"po.*"}',
    '{__name__=~"http_requests_total|up", job="api"}',
    "node_temperature offset 10m",
    "node_temperature offset -5m",
    "flaky_gauge",
    "special_values",
    'node_temperature @ start()',
    'node_temperature @ end()',
    f"node_temperature @ {_seconds(T0 + HOUR)}",
    "nonexistent_metric",
    '{__name__=~"collide_.*"}',
]

RANGE_FUNCTIONS = [
    "rate", "irate", "increase", "delta", "idelta", "changes", "resets", "deriv",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "present_over_time", "stddev_over_time", "stdvar_over_time",
    "absent_over_time",
]
RANGE_ARGS = [
    "http_requests_total[5m]",
    'http_requests_total{code="500"}[1m]',
    "http_requests_total[90s] offset 3m",
    "node_temperature[10m]",
    "flaky_gauge[2m]",
    "special_values[5m]",
    "sparse_counter[12m]",
    "sparse_counter[1h]",
    f"node_temperature[5m] @ {_seconds(T0 + HOUR)}",
    "nonexistent_metric[5m]",
]

EXPRESSIONS = (
    SELECTORS
    + [f"{f}({arg})" for f in RANGE_FUNCTIONS for arg in RANGE_ARGS]
    + [
        # scalars and literals
        "1", "-2.5", "1 + 2 * 3", "2 ^ 3 ^ 2", "10 % 3", "-7 % 3", "1 / 0", "-1 / 0",
        "0 / 0", "1 == bool 1", "2 > bool 3", "time()", "pi()", "scalar(up)",
        'scalar(up{instance="i0"})', "vector(1)", "vector(time())", '"a string"',
        # aggregations
        "sum(http_requests_total)", "sum by (job) (http_requests_total)",
        "sum without (instance, method) (http_requests_total)",
        "avg by (instance) (node_temperature)", "min(node_temperature)",
        "max by (sensor) (node_temperature)", "count(http_requests_total)",
        "count by (code) (http_requests_total)", "group by (job) (http_requests_total)",
        "stddev(node_temperature)", "stdvar by (sensor) (node_temperature)",
        "topk(3, node_temperature)", "bottomk(2, node_temperature)",
        "topk by (sensor) (1, node_temperature)", "topk(0, node_temperature)",
        "quantile(0.9, node_temperature)", "quantile by (sensor) (0.25, node_temperature)",
        "quantile(-1, node_temperature)", "quantile(2, node_temperature)",
        'count_values("value", up)', 'count_values by (job) ("v", up)',
        'count_values without (instance) ("le", up)', "sum(special_values)",
        "avg(special_values)", "max(special_values)", "min(special_values)",
        "stddev(special_values)", "sum by (__name__) ({__name__=~\"collide_.*\"})",
        "sum by (job) (rate(http_requests_total[5m]))",
        "sum(rate(http_requests_total[5m])) by (instance, code)",
        "avg without (code) (increase(http_requests_total[10m]))",
        "max_over_time(sum(node_temperature)[10m:1m])",
        "topk(2, sum by (instance) (rate(http_requests_total[5m])))",
        "count(count by (instance) (up))",
        # binary operators
        "node_temperature * 2", "2 * node_temperature", "node_temperature > 20",
        "20 < node_temperature", "node_temperature > bool 20", "20 >= bool node_temperature",
        "node_temperature == node_temperature", "node_temperature != bool 0",
        "-node_temperature", "node_temperature ^ 2", "node_temperature % 7",
        "atan2(node_temperature, 10)", "node_temperature atan2 node_temperature",
        "up + up", "up / on(instance) group_left(version) build_info",
        "build_info * on(instance) group_right(version) up",
        'http_requests_total / ignoring(code) group_left sum without (code) (http_requests_total)',
        'rate(http_requests_total{code="500"}[5m]) / ignoring(code) '
        'rate(http_requests_total{code="200"}[5m])',
        "up and on(instance) build_info", "up or node_temperature", "up unless up == 0",
        'http_requests_total and http_requests_total{code="200"}',
        'http_requests_total unless on(instance) up == 0',
        "node_temperature or flaky_gauge", "flaky_gauge or vector(42)",
        "up * on(instance) group_left build_info",
        "http_requests_total * on(instance) up",  # many-to-many: error
        "up + on(job) up",  # duplicate series on the right: error
        "http_requests_total + ignoring(code) http_requests_total",  # multiple matches
        'collide_a + collide_b', "collide_a + on(x) collide_b",
        '{__name__=~"collide_.*"} * 2',  # same label set: error when both present
        '{__name__=~"collide_.*"} > 1',
        "special_values + 1", "special_values > 0", "special_values == bool special_values",
        "up == 1", "1 - up", "node_temperature > on() group_left vector(20)",
        # functions
        "abs(node_temperature)", "ceil(node_temperature)", "floor(node_temperature)",
        "round(node_temperature)", "round(node_temperature, 5)", "round(node_temperature, 0.3)",
        "sqrt(abs(node_temperature))", "exp(node_temperature / 100)", "ln(abs(node_temperature))",
        "log2(abs(node_temperature))", "log10(abs(node_temperature))",
        "sin(node_temperature)", "cos(node_temperature)", "tan(node_temperature)",
        "asin(node_temperature / 100)", "acos(node_temperature / 100)", "atan(node_temperature)",
        "sinh(node_temperature / 10)", "cosh(node_temperature / 10)", "tanh(node_temperature)",
        "asinh(node_temperature)", "acosh(abs(node_temperature) + 1)",
        "atanh(node_temperature / 100)", "deg(node_temperature)", "rad(node_temperature)",
        "sgn(node_temperature)", "abs(special_values)", "ln(special_values)",
        "clamp(node_temperature, 0, 30)", "clamp(node_temperature, 30, 0)",
        "clamp_max(node_temperature, 25)", "clamp_min(node_temperature, 25)",
        "timestamp(node_temperature)", "timestamp(node_temperature offset 5m)",
        "timestamp(-node_temperature)", "timestamp(flaky_gauge)",
        f"timestamp(node_temperature @ {_seconds(T0 + HOUR)})",
        "absent(node_temperature)", 'absent(nonexistent{job="x", a=~"b"})',
        'absent(nonexistent{job="x"} offset 5m)', "absent(sum(nonexistent))",
        "label_replace(up, \"host\", \"$1\", \"instance\", \"i(.*)\")",
        'label_replace(up, "instance", "", "instance", ".*")',
        'label_replace(up, "job", "x-$1-${1}y-$1x", "instance", "(i)(.)")',
        'label_replace(up, "nomatch", "z", "instance", "zzz")',
        'label_replace(up, "bad-name", "z", "instance", ".*")',
        'label_replace(up, "x", "z", "instance", "(")',
        'label_join(up, "joined", "-", "job", "instance")',
        'label_join(up, "job", "", "nothing")',
        'label_replace({__name__=~"collide_.*"}, "__name__", "same", "x", ".*")',
        "histogram_quantile(0.9, req_duration_seconds_bucket)",
        "histogram_quantile(0.5, rate(req_duration_seconds_bucket[5m]))",
        "histogram_quantile(0.99, sum by (le) (rate(req_duration_seconds_bucket[5m])))",
        "histogram_quantile(0, req_duration_seconds_bucket)",
        "histogram_quantile(1, req_duration_seconds_bucket)",
        "histogram_quantile(1.5, req_duration_seconds_bucket)",
        "histogram_quantile(0.5, rpc_latency_bucket)",
        "histogram_quantile(0.5, up)",
        "quantile_over_time(0.5, node_temperature[10m])",
        "quantile_over_time(0.95, http_requests_total[5m])",
        "predict_linear(node_temperature[10m], 600)",
        "predict_linear(http_requests_total[5m], 3600)",
        "holt_winters(node_temperature[10m], 0.5, 0.5)",
        "holt_winters(node_temperature[10m], 1.5, 0.5)",
        "sort(node_temperature)", "sort_desc(node_temperature)", "sort(special_values)",
        "hour()", "minute()", "month()", "year()", "day_of_month()", "day_of_week()",
        "day_of_year()", "days_in_month()", "hour(node_temperature * 1e6)",
        "day_of_week(vector(1e9))", "days_in_month(vector(1.7e9))", "year(special_values)",
        "histogram_count(up)", "histogram_sum(up)",
        "quantile(NaN, up)", "quantile_over_time(NaN, up[5m])", "round(up, 0)",
        "clamp(up, NaN, 1)", "holt_winters(node_temperature[5m], NaN, 0.5)",
        'count_values("v", node_temperature / 3)', "up == bool NaN", "topk(NaN, up)",
        'label_replace(up, "x", "$0-$00-$1", "instance", "i(.)")',
        # subqueries
        "max_over_time(node_temperature[10m:1m])", "avg_over_time(node_temperature[10m:])",
        "rate(http_requests_total[5m:30s])",
        "min_over_time(rate(http_requests_total[5m])[30m:2m])",
        "max_over_time(node_temperature[10m:1m] offset 5m)",
        f"max_over_time(node_temperature[10m:1m] @ {_seconds(T0 + HOUR)})",
        "sum_over_time(vector(1)[10m:1m])", "count_over_time(up[3m:45s])",
        "deriv(sum(node_temperature)[10m:30s])",
        # nested selections
        "node_temperature[5m]", "flaky_gauge[3m]", "node_temperature[10m:1m]",
        "http_requests_total[1m] offset 1m",
        # @ and offset corners
        f"predict_linear(node_temperature[10m] @ {_seconds(T0 + HOUR)}, 600)",
        f"timestamp(node_temperature @ {_seconds(T0 + HOUR)} offset 5m)",
        "max_over_time(node_temperature[10m:1m] @ end() offset 2m)",
        "min_over_time(node_temperature[7m:50s] offset -1m)",
        "rate(http_requests_total[1m:15s] offset -1m)",
        f"sum(node_temperature @ {_seconds(T0 + HOUR)}) - sum(node_temperature)",
        f"rate(http_requests_total[5m] @ {_seconds(T0 + HOUR)}) > 1",
        "node_temperature @ start() - node_temperature @ end()",
        f"predict_linear(node_temperature[10m:1m] @ {_seconds(T0 + HOUR)}, 600)",
        f"predict_linear(node_temperature[10m] @ {_seconds(T0 + HOUR)} offset 5m, 60)",
        'quantile_over_time(scalar(up{instance="i0"}), '
        f"node_temperature[10m] @ {_seconds(T0 + HOUR)})",
        f"timestamp(node_temperature @ {_seconds(T0 + HOUR)} offset -5m)",
        f"max_over_time(predict_linear(node_temperature[5m] @ {_seconds(T0 + HOUR)}, 60)"
        "[10m:1m])",
        f"rate(http_requests_total[5m] @ {_seconds(T0 + HOUR)} offset 10m)",
        f"sum_over_time(node_temperature[10m:1m] @ {_seconds(T0 + HOUR)} offset 10m)",
        # more scalar and vector corners
        "-(1)", "- time()", "vector(1) + 1", "scalar(sum(up))", "time() - timestamp(up)",
        "topk(3, special_values)", "bottomk(3, special_values)",
        'count_values("x", special_values)', "quantile(0.5, special_values)",
        "sum by (instance) (up) / count by (instance) (up)",
        "sum(up) by (instance) > bool 0", "max by (job, instance) (up) == 1",
        "abs(-node_temperature)", "(node_temperature > 10) * 2 + 1",
        "node_temperature > 0 < 30", "up unless on(instance) (up == 0)",
        "sum without (sensor) (node_temperature) / on(instance) group_left "
        "count without (sensor) (node_temperature)",
        "changes(up[30m])", "resets(http_requests_total[1h])",
        "increase(http_requests_total[1h])", "irate(sparse_counter[1h])",
        "delta(node_temperature[1m])", "idelta(node_temperature[1m])",
    ]
)

ORDERED = {"sort(node_temperature)", "sort_desc(node_temperature)", "sort(special_values)"}
PARSE_ERRORS = ["", "foo +", "sum(", "rate(foo)", "{}", "foo[5m] + 1", "1 and 2",
                "unknown_fn(foo)", "sort_by_label(up)", "foo offset 5m offset 3m",
                'count_values("bad-name", up)', "quantile(up, up)", '"a" + 1']


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_expression(servers, expr: str) -> None:
    check(servers, expr, ordered=expr in ORDERED)


@pytest.mark.parametrize("expr", PARSE_ERRORS)
def test_parse_error(servers, expr: str) -> None:
    check(servers, expr, ranged=False)
    check(servers, expr, instant=False)


def test_range_query_parameter_errors(servers) -> None:
    prom, ours = servers
    t = _seconds(T0 + HOUR)
    for params in ({"query": "up", "start": t, "end": t, "step": "0"},
                   {"query": "up", "start": t, "end": "x", "step": "15"},
                   {"query": "up", "start": t, "end": _seconds(T0), "step": "15"},
                   {"query": "up", "start": _seconds(T0), "end": t, "step": "0.1"},
                   {"query": "up[5m]", "start": _seconds(T0), "end": t, "step": "15"},
                   {"query": "up", "start": t, "end": t, "step": "1h", "timeout": "x"}):
        want = _get(prom, "/api/v1/query_range", params)
        got = _get(ours, "/api/v1/query_range", params)
        _assert_same(str(params), want, got, False)


@pytest.mark.parametrize("expr", [
    "http_requests_total * on(instance) up", "up + on(job) up",
    "http_requests_total + ignoring(code) http_requests_total",
    "up * on(instance) group_left sum by (instance, job) (http_requests_total)",
    '{__name__=~"collide_.*"} * 2', "rate({__name__=~\"collide_.*\"}[5m])",
    "holt_winters(node_temperature[10m], 1.5, 0.5)", 'label_replace(up, "x", "z", "i", "(")',
    'label_replace(up, "bad-name", "z", "instance", ".*")', "topk(1e30, up)",
])
def test_execution_errors_have_prometheus_messages(servers, expr: str) -> None:
    prom, ours = servers
    params = {"query": expr, "time": _seconds(INSTANT_TIMES[1])}
    (ws, want), (gs, got) = _get(prom, "/api/v1/query", params), _get(ours, "/api/v1/query", params)
    assert (gs, got) == (ws, want)


def test_other_endpoints(servers) -> None:
    prom, ours = servers
    for path, params in (
        ("/api/v1/format_query", {"query": "sum(rate(x[5m]))by(job) / on(job) group_left y"}),
        ("/api/v1/query_exemplars", {"query": "up"}),
        ("/api/v1/series", {"match[]": "up"}),
        ("/api/v1/labels", {}),
        ("/api/v1/label/job/values", {}),
        ("/api/v1/label/__name__/values", {"match[]": '{job="api"}'}),
    ):
        assert _get(ours, path, params) == _get(prom, path, params), path
    resp = http_request(ours, "GET", "/api/v1/query_exemplars?query=1")
    assert resp.status == http_request(prom, "GET", "/api/v1/query_exemplars?query=1").status
    _, want = _get(prom, "/api/v1/status/tsdb", {})
    _, got = _get(ours, "/api/v1/status/tsdb", {})
    assert got["data"]["headStats"]["numSeries"] == want["data"]["headStats"]["numSeries"]
    for key in ("seriesCountByMetricName", "labelValueCountByLabelName"):
        # Equal counts at the cut of the top ten may be ranked in any order.
        w, g = want["data"][key], got["data"][key]
        assert [e["value"] for e in g] == [e["value"] for e in w], key
        cut = w[-1]["value"]
        assert {(e["name"], e["value"]) for e in g if e["value"] > cut} == \
            {(e["name"], e["value"]) for e in w if e["value"] > cut}, key
    _, want = _get(prom, "/api/v1/status/buildinfo", {})
    _, got = _get(ours, "/api/v1/status/buildinfo", {})
    assert set(got["data"]) == set(want["data"])
    assert got["data"]["version"].split("+")[0] == want["data"]["version"].split("+")[0]
