"""Query benchmark: dashboard queries over the same week of data in promstore and its peers.

Every selected target is started fresh and receives, through remote write, the same
backfilled data at a 15 s interval: a fleet of 10 ``api`` hosts with a hundred request
counters each (1,000 series), a few ``gateway`` hosts with a latency histogram, and in
the big preset a ``web`` fleet of 1,000 hosts (100,000 request counters). The data is
encoded a slice of rounds at a time and each slice is sent to every target in turn, so
the plan never has to fit in memory. Once every target has settled (its blocks written
and compacted, or flushed), the queries are sent in rounds through the Prometheus HTTP
API on a kept-alive connection: in each round every target in turn runs every query once,
alone, the others being paused with SIGSTOP; the first rounds warm the targets up, the
next ``runs`` are timed. The report gives median and p90 latency per target and
promstore's latency as a ratio to each peer's, plus resident memory idle and at its peak
during each query.

Run: ``python -m benchmarks.query --preset quick`` (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import backfill, loadgen
from benchmarks._node import _histogram
from benchmarks.ingest import RESULTS_DIR, exit_on_sigterm, select_targets
from benchmarks.peers import PROMSTORE, VICTORIAMETRICS, RunRecord, Server, Target, running
from benchmarks.workloads import Kind, Profile, SeriesSpec, ValueStream, Workload

__all__ = ["PRESETS", "Fleet", "Preset", "Query", "dashboard_queries", "main"]

_HOUR_MS = 3_600_000
_INTERVAL_S = 15.0
_END_BEFORE_NOW_MS = 5 * 60_000  # VictoriaMetrics hides the newest 30 s from queries
_SLICE_SAMPLES = 8_000_000  # samples encoded at once (about 130 MiB of requests)
_HTTP_TIMEOUT_S = 600.0
_ERRORS_KEPT = 5
_BATCH_ROUNDS = 4  # scrapes one request may span


# -- the data -----------------------------------------------------------------------------

_HANDLERS = ("/", "/api/v1/items", "/api/v1/orders", "/api/v1/users", "/api/v1/search",
             "/api/v1/cart", "/login", "/logout", "/static", "/healthz")
_METHODS = (("GET", 0.8), ("POST", 0.2))  # share of a handler's requests
_CODES = (("200", 0.95), ("201", 0.03), ("404", 0.015), ("500", 0.004), ("503", 0.001))


def _request_counters(job: str) -> Profile:
    """A hundred ``http_requests_total`` counters per host (handler, method, code), as
    many as ``node_cpu_seconds_total`` has on a 12-CPU host.

    Each grows as the observation count of a group of its own (``Kind.BUCKET`` with the
    whole share), which is what a request counter is; ``workloads`` builds a host's
    state from its histogram groups, so every profile needs at least one.
    """
    specs: list[SeriesSpec] = []
    for h, handler in enumerate(_HANDLERS):
        for method, m_share in _METHODS:
            for code, c_share in _CODES:
                specs.append(SeriesSpec(
                    {"__name__": "http_requests_total", "job": job, "handler": handler,
                     "method": method, "code": code},
                    Kind.BUCKET, rate=40.0 / (1 + h) * m_share * c_share, group=len(specs)))
    return Profile(f"{job}-requests", 1.0, tuple(specs))


def _latency_histogram(job: str) -> Profile:
    """One classic histogram per host (12 buckets, ``_sum``, ``_count``)."""
    specs = _histogram("http_request_duration_seconds", 0, 50.0, 0.08,
                       job=job, handler="/api/v1/items")
    return Profile(f"{job}-latency", 1.0, tuple(specs))


class Fleet(Workload):
    """A workload whose value streams carry on from one plan to the next, so that the
    data can be encoded a slice of rounds at a time and counters keep counting."""

    def __init__(self, job: str, profile: Profile, hosts: int, seed: int,
                 first_host: int) -> None:
        super().__init__(job, [profile], hosts=hosts, seed=seed, interval_s=_INTERVAL_S,
                         first_host=first_host)
        self.job = job
        self._streams: dict[tuple[int, int], ValueStream] = {}

    def stream(self, start: int, stop: int) -> ValueStream:
        key = (start, stop)
        if key not in self._streams:
            self._streams[key] = super().stream(start, stop)
        return self._streams[key]


@dataclass(frozen=True)
class Preset:
    """A benchmark size: hosts per fleet, hours covered, timed runs per query."""

    api_hosts: int  # a hundred request counters each: the 1,000-series fleet
    web_hosts: int  # a hundred request counters each: the 100,000-series fleet (0: none)
    gateway_hosts: int  # a latency histogram each (14 series)
    hours: float  # of data at a 15 s interval, ending a few minutes before the run
    runs: int
    note: str


PRESETS: dict[str, Preset] = {
    # A week and an hour, so that the 7-day range and its first rate window are covered.
    "quick": Preset(10, 0, 10, 7 * 24 + 1, 10, "1,140 series over 7 days and 1 hour"),
    "big": Preset(10, 1_000, 100, 7 * 24 + 1, 5,
                  "102,400 series (100,000 in one fleet) over 7 days and 1 hour"),
}


def build_fleets(preset: Preset, seed: int) -> list[Fleet]:
    """The fleets of a preset; instance addresses do not overlap between fleets."""
    fleets = [Fleet("api", _request_counters("api"), preset.api_hosts, seed, 0)]
    if preset.gateway_hosts:
        fleets.append(Fleet("gateway", _latency_histogram("gateway"), preset.gateway_hosts,
                            seed + 1, 1 << 20))
    if preset.web_hosts:
        fleets.append(Fleet("web", _request_counters("web"), preset.web_hosts, seed + 2,
                            2 << 20))
    return fleets


def _merged_plan(fleets: list[Fleet], rounds: int, end_ms: int, args: argparse.Namespace
                 ) -> loadgen.LoadPlan:
    """One plan sending ``rounds`` scrapes of every fleet ending at ``end_ms``: each
    fleet's shards (their number in proportion to its series), sent side by side."""
    total = sum(f.n_series for f in fleets)
    plans = []
    for fleet in fleets:
        shards = max(1, round(args.concurrency * fleet.n_series / total))
        # A request spans a few scrapes at most, as a sender's batch deadline sees to:
        # otherwise a small fleet's shard runs far enough ahead in time for Prometheus
        # to refuse the other shards' samples as out of bounds.
        batch = min(args.batch, _BATCH_ROUNDS * max(1, fleet.n_series // shards))
        plans.append(loadgen.build_plan(fleet, fleet.n_series * rounds, batch=batch,
                                        concurrency=shards, end_ms=end_ms))
    first = plans[0]
    return loadgen.LoadPlan(
        workload={"fleets": [p.workload for p in plans]},
        samples=sum(p.samples for p in plans), rounds=rounds, batch=args.batch,
        start_ms=first.start_ms, interval_ms=first.interval_ms,
        shards=[s for p in plans for s in p.shards],
        lead_rounds=max(p.lead_rounds for p in plans),
        raw_bytes=sum(p.raw_bytes for p in plans),
        encoded_bytes=sum(p.encoded_bytes for p in plans),
        encode_s=sum(p.encode_s for p in plans))


@dataclass
class _Loaded:
    """What one target acknowledged over all slices."""

    samples_sent: int = 0
    samples_accepted: int = 0
    non_2xx: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, result: loadgen.LoadResult) -> None:
        self.samples_sent += result.samples_sent
        self.samples_accepted += result.samples_accepted
        self.non_2xx += result.non_2xx
        self.seconds += result.elapsed_s
        self.errors += result.errors[:_ERRORS_KEPT - len(self.errors)]

    def to_dict(self) -> dict[str, Any]:
        return {"samples_sent": self.samples_sent, "samples_accepted": self.samples_accepted,
                "non_2xx": self.non_2xx, "seconds": round(self.seconds, 1),
                "samples_per_s": round(self.samples_accepted / self.seconds)
                if self.seconds else None,
                "errors": self.errors}


def load(servers: list[Server], fleets: list[Fleet], rounds: int, start_ms: int,
         args: argparse.Namespace) -> tuple[dict[str, _Loaded], float]:
    """Send ``rounds`` scrapes from ``start_ms`` to every server, a slice at a time;
    returns what each acknowledged and the seconds spent encoding."""
    per_slice = max(1, _SLICE_SAMPLES // sum(f.n_series for f in fleets))
    loaded = {s.target.name: _Loaded() for s in servers}
    encode_s = 0.0
    interval = fleets[0].interval_ms
    for first in range(0, rounds, per_slice):
        n = min(per_slice, rounds - first)
        plan = _merged_plan(fleets, n, start_ms + (first + n) * interval, args)
        encode_s += plan.encode_s
        for server in servers:
            loaded[server.target.name].add(
                loadgen.run(plan, server.write_url, duration_s=args.ingest_bound))
        done = first + n
        print(f"\r   sent {done:,} of {rounds:,} scrapes", end="", flush=True)
    print()
    return loaded, encode_s


# -- the queries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A query as a dashboard sends it: ``range_s`` 0 is an instant query at the end of
    the data, otherwise a range query over the last ``range_s`` with ``step_s``."""

    name: str
    expr: str
    range_s: int = 0
    step_s: int = 0
    series: int = 0  # series the selector reads

    def params(self, end_ms: int) -> dict[str, str]:
        """The request parameters, the range aligned to the step as Grafana aligns it."""
        if not self.range_s:
            return {"query": self.expr, "time": f"{end_ms / 1000:.3f}"}
        end = end_ms // (self.step_s * 1000) * self.step_s
        return {"query": self.expr, "start": str(end - self.range_s), "end": str(end),
                "step": str(self.step_s)}

    @property
    def path(self) -> str:
        return "/api/v1/query_range" if self.range_s else "/api/v1/query"


# Ranges with the steps Grafana picks for them on a panel about a thousand points wide.
_RANGES = (("1h", 3600, 15), ("24h", 86_400, 60), ("7d", 7 * 86_400, 600))
_RATE = "sum by (instance) (rate(http_requests_total{{job=\"{job}\"}}[5m]))"
_QUANTILE = ("histogram_quantile(0.9, sum by (le) "
             "(rate(http_request_duration_seconds_bucket[5m])))")


def dashboard_queries(fleets: list[Fleet], fixed_cost: bool = False) -> list[Query]:
    """The queries timed: per request fleet, the per-instance rate over each range; the
    90th latency percentile over 1 h and 24 h; one series' raw samples of the last hour;
    and a count of every series. With ``fixed_cost``, then the 24-hour percentile again
    and right after it the literal ``1``: what any query costs a target in the state the
    one-series fetch finds it in (after a heavy query), reading no data."""
    queries = []
    for fleet in fleets:
        if fleet.job == "gateway":
            specs = fleet.profiles[0].specs
            buckets = fleet.n_hosts * sum(s.labels["__name__"].endswith("_bucket")
                                          for s in specs)
            queries += [Query(f"quantile {label}", _QUANTILE, r, s, buckets)
                        for label, r, s in _RANGES[:2]]
        else:
            queries += [Query(f"rate {fleet.job} {label}", _RATE.format(job=fleet.job), r, s,
                              fleet.n_series) for label, r, s in _RANGES]
    api = fleets[0]
    raw = (f'http_requests_total{{job="api",instance="{api.host_instance(0)}",'
           f'handler="/",method="GET",code="200"}}[1h]')
    total = sum(f.n_series for f in fleets)
    queries += [Query("raw 1 series 1h", raw, series=1),
                Query("count all series", 'count({__name__=~".+"})', series=total)]
    if fixed_cost:
        heavy = next(q for q in queries if q.name == "quantile 24h")
        queries += [Query("quantile 24h again", heavy.expr, heavy.range_s, heavy.step_s,
                          heavy.series),
                    Query("literal 1 after it", "1")]
    return queries


class QueryError(RuntimeError):
    """A target answered a query with an error or not at all."""


class _Client:
    """A kept-alive HTTP connection to one target's query API."""

    def __init__(self, server: Server) -> None:
        self._port = server.port
        self._extra = {"nocache": "1"} if server.target is VICTORIAMETRICS else {}
        self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=_HTTP_TIMEOUT_S)

    def get(self, path: str, params: dict[str, str]) -> bytes:
        url = f"{path}?{urllib.parse.urlencode({**params, **self._extra})}"
        for attempt in (1, 2):  # a server may close an idle kept-alive connection
            try:
                self._conn.request("GET", url)
                resp = self._conn.getresponse()
                body = resp.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self._conn.close()
                if attempt == 2:
                    raise
        if resp.status != 200:
            raise QueryError(f"HTTP {resp.status}: {body[:300].decode(errors='replace')}")
        return body

    def close(self) -> None:
        self._conn.close()


def _shape(body: bytes) -> dict[str, Any]:
    """Series and points in an answer, to check that the targets agree on its size."""
    data = json.loads(body)["data"]
    result = data["result"]
    if data["resultType"] in ("scalar", "string"):
        return {"series": 0, "points": 1}
    points = sum(len(r.get("values", ())) or 1 for r in result)
    shape: dict[str, Any] = {"series": len(result), "points": points}
    if data["resultType"] == "vector" and len(result) == 1:
        shape["value"] = result[0]["value"][1]
    return shape


def _reset_peak_rss(server: Server) -> bool:
    """Reset the kernel's high-water mark of resident memory (``clear_refs`` 5)."""
    try:
        Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class _Timing:
    """The runs of one query on one target so far, and the most memory they took."""

    seconds: list[float] = field(default_factory=list)
    peak_rss: int = 0
    peak_is_local: bool = True  # every run's peak was measured from its own start
    body: bytes = b""
    error: str | None = None

    def wants(self, timed: bool, args: argparse.Namespace) -> bool:
        """Whether to run again: no error, and for timed runs fewer than ``--runs``
        (no new one past ``--query-budget`` seconds, once three are done)."""
        if self.error is not None or not timed:
            return self.error is None
        n = len(self.seconds)
        return n < args.runs and (n < 3 or sum(self.seconds) < args.query_budget)

    def run(self, client: _Client, server: Server, query: Query, end_ms: int,
            timed: bool) -> None:
        self.peak_is_local &= _reset_peak_rss(server)
        try:
            began = time.perf_counter()
            body = client.get(query.path, query.params(end_ms))
            took = time.perf_counter() - began
        except (QueryError, OSError, http.client.HTTPException) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self.peak_rss = max(self.peak_rss, server.peak_rss_bytes())
        if timed:
            self.seconds.append(took)
            self.body = body

    def summary(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        ms = np.array(self.seconds) * 1000
        return {"runs": len(ms), "median_ms": float(np.median(ms)),
                "p90_ms": float(np.percentile(ms, 90)), "all_ms": [round(x, 3) for x in ms],
                "bytes": len(self.body), **_shape(self.body),
                "peak_rss_bytes": self.peak_rss, "peak_rss_since_query": self.peak_is_local}


# -- settling and pausing ---------------------------------------------------------------------


def _block_parents(data_dir: Path) -> list[Path]:
    """The directories holding blocks: the data directory, and those of promstore's
    downsampled blocks (made in the background too)."""
    return [p for p in (data_dir, *sorted(data_dir.glob("downsampled/*"))) if p.is_dir()]


def _block_set(data_dir: Path) -> tuple[str, ...]:
    """Block directories with a ``meta.json``, and any directory being written."""
    names: list[str] = []
    for parent in _block_parents(data_dir):
        names += [str(p.parent.relative_to(data_dir)) for p in parent.glob("*/meta.json")]
        names += [str(p.relative_to(data_dir)) for p in parent.iterdir() if ".tmp" in p.name]
    return tuple(sorted(names))


def block_metas(data_dir: Path) -> list[dict[str, Any]]:
    """What a target's blocks (raw, and promstore's downsampled ones) cover when it is
    measured, from their ``meta.json``: two stores of the same data may have compacted it
    differently, and a query's time follows the blocks it reads."""
    out = []
    for meta in [m for parent in _block_parents(data_dir)
                 for m in sorted(parent.glob("*/meta.json"))]:
        try:
            doc = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        out.append({"dir": str(meta.parent.relative_to(data_dir)),
                    "min_time": doc.get("minTime"), "max_time": doc.get("maxTime"),
                    "samples": doc.get("stats", {}).get("numSamples"),
                    "level": doc.get("compaction", {}).get("level")})
    return out


def settle(server: Server, *, stable_s: float, bound_s: float) -> float:
    """Wait until the target has stopped writing and merging blocks: its set of blocks
    unchanged for ``stable_s`` (longer than a compaction interval), at most ``bound_s``.
    VictoriaMetrics is flushed first. Returns the seconds waited."""
    began = time.monotonic()
    if server.target is VICTORIAMETRICS:
        with contextlib.suppress(OSError, http.client.HTTPException, QueryError):
            _Client(server).get("/internal/force_flush", {})
    data_dir = server.workdir / "data"
    seen, since = _block_set(data_dir), time.monotonic()
    while time.monotonic() - since < stable_s and time.monotonic() - began < bound_s:
        time.sleep(0.5)
        now = _block_set(data_dir)
        if now != seen:
            seen, since = now, time.monotonic()
    return time.monotonic() - began


def check_data(client: _Client, series: str, expected: int, end_ms: int, range_s: int,
               wait_s: float) -> str | None:
    """Wait until ``count_over_time`` of one series over the whole range sees every sample
    sent; the problem if it does not."""
    params = {"query": f"count_over_time({series}[{range_s}s])", "time": f"{end_ms / 1000:.3f}"}
    deadline = time.monotonic() + wait_s
    seen = "no answer"
    while True:
        try:
            result = json.loads(client.get("/api/v1/query", params))["data"]["result"]
            seen = result[0]["value"][1] if result else "no series"
            if seen == str(expected):
                return None
        except (QueryError, OSError, http.client.HTTPException, KeyError, ValueError) as exc:
            seen = str(exc)
        if time.monotonic() > deadline:
            return f"count_over_time of one series is {seen}, expected {expected}"
        time.sleep(1.0)


@contextlib.contextmanager
def alone(server: Server, others: list[Server]) -> Iterator[None]:
    """Pause every other target (SIGSTOP to its process group) while ``server`` is
    measured, so that their background work does not disturb its figures."""
    paused = []
    try:
        for other in others:
            if other is not server:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(other.process.pid, signal.SIGSTOP)
                    paused.append(other)
        yield
    finally:
        for other in paused:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(other.process.pid, signal.SIGCONT)


# -- a baseline ------------------------------------------------------------------------------------


class PromstoreAt(Target):
    """promstore as of another commit, run beside the working tree's for before/after
    figures from one run: the commit's files are exported (``git archive``) into a
    temporary directory that the server imports from."""

    ready_path = PROMSTORE.ready_path
    durability = PROMSTORE.durability

    def __init__(self, rev: str, tree: Path) -> None:
        self.name = f"promstore@{rev}"
        self._rev = rev
        self._tree = tree

    @classmethod
    @contextlib.contextmanager
    def exported(cls, rev: str) -> Iterator[PromstoreAt]:
        """The target for ``rev`` (any name git knows); its files go when done."""
        repo = Path(__file__).resolve().parent.parent
        short = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", rev],
                               capture_output=True, text=True, check=True).stdout.strip()
        with tempfile.TemporaryDirectory(prefix=f"bench-promstore-{short}-") as tree:
            archive = subprocess.run(["git", "-C", str(repo), "archive", short],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
            yield cls(short, Path(tree))

    def available(self) -> bool:
        return True

    def command(self, workdir: Path, data_dir: Path, port: int) -> list[str]:
        return PROMSTORE.command(workdir, data_dir, port)

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self._tree)}

    def version(self) -> str:
        return self._rev


# -- one run -------------------------------------------------------------------------------------


class _Measured:
    """One target being measured: its client, its row of the report, its timings."""

    def __init__(self, server: Server, queries: list[Query]) -> None:
        self.server = server
        self.client = _Client(server)
        self.timings = {q.name: _Timing() for q in queries}
        self.row: dict[str, Any] = {"target": server.target.name,
                                    "version": server.target.version(), "argv": server.argv}

    @property
    def alive(self) -> bool:
        return self.server.process.poll() is None

    def start(self, raw: tuple[str, int, int], end_ms: int, args: argparse.Namespace) -> None:
        """Idle memory, then the check that every sample is there."""
        time.sleep(args.idle)
        self.row["rss_idle_bytes"] = self.server.rss_bytes()
        if self.alive:
            series, expected, range_s = raw
            problem = check_data(self.client, series, expected, end_ms, range_s,
                                 args.check_wait)
            if problem:
                self.row["data_problem"] = problem

    def round(self, queries: list[Query], end_ms: int, timed: bool,
              args: argparse.Namespace) -> None:
        """Every query that wants a run, once."""
        time.sleep(args.switch_idle)
        for query in queries:
            timing = self.timings[query.name]
            if self.alive and timing.wants(timed, args):
                timing.run(self.client, self.server, query, end_ms, timed)

    def finish(self) -> dict[str, Any]:
        """The row of the report; a server that has exited (killed for lack of memory,
        say) is reported with the end of its log."""
        self.client.close()
        self.row["queries"] = {name: t.summary() if t.seconds or t.error else
                               {"error": "the server had exited"}
                               for name, t in self.timings.items()}
        code = self.server.process.poll()
        if code is not None:
            self.row["exited"] = f"exited with status {code}"
            self.row["log_tail"] = self.server.log_tail()
        return self.row


def measure(servers: list[Server], queries: list[Query], end_ms: int,
            raw: tuple[str, int, int], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Check each target's data, then time every query in rounds: ``--warmups`` untimed
    rounds, then timed ones; in each round every target in turn runs every query once,
    alone. Interleaving spreads whatever else runs on the machine over all targets."""
    measured = [_Measured(s, queries) for s in servers]
    for m in measured:
        with alone(m.server, servers):
            m.start(raw, end_ms, args)
        if "data_problem" in m.row:
            print(f"   {m.server.target.name}: data problem: {m.row['data_problem']}")
    for k in range(args.warmups + args.runs):
        print(f"\r   round {k + 1} of {args.warmups + args.runs}", end="", flush=True)
        for m in measured:
            with alone(m.server, servers):
                m.round(queries, end_ms, timed=k >= args.warmups, args=args)
    print()
    return [m.finish() for m in measured]


def _run(args: argparse.Namespace, preset: Preset, targets: list[Target]) -> dict[str, Any]:
    fleets = build_fleets(preset, args.seed)
    queries = dashboard_queries(fleets, args.fixed_cost)
    interval = fleets[0].interval_ms
    rounds = max(1, round(preset.hours * _HOUR_MS / interval))
    end_ms = (int(time.time() * 1000) - _END_BEFORE_NOW_MS) // interval * interval
    start_ms = end_ms - rounds * interval
    data_end = end_ms - 1
    n_series = sum(f.n_series for f in fleets)
    sizes = ", ".join(f"{f.job}: {f.n_series:,} series on {f.n_hosts} hosts" for f in fleets)
    print(f"data:    {sizes}; {rounds:,} scrapes every {interval / 1000:g} s "
          f"({preset.hours:g} h) = {n_series * rounds:,} samples")
    raw_query = next(q for q in queries if q.name.startswith("raw"))
    raw_series = raw_query.expr.removesuffix("[1h]")
    report: dict[str, Any] = {
        "data": {"fleets": [f.describe() for f in fleets], "series": n_series,
                 "rounds": rounds, "start_ms": start_ms, "end_ms": data_end,
                 "samples": n_series * rounds},
        "queries": [{"name": q.name, "expr": q.expr, "range_s": q.range_s, "step_s": q.step_s,
                     "series_read": q.series} for q in queries],
        "targets": [],
    }
    with contextlib.ExitStack() as stack:
        seed = None
        if args.load == "blocks":
            targets = [t for t in targets if t is not VICTORIAMETRICS]
            seed = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-seed-")))
            done = backfill.write_blocks(seed, fleets, start_ms, rounds)
            print(f"== blocks: {done.blocks} written in {done.seconds:.0f} s, "
                  f"{done.bytes / done.samples:.2f} bytes/sample; every target opens them "
                  f"(VictoriaMetrics left out: it cannot)", flush=True)
            report["data"]["backfill"] = done.__dict__
        servers = []
        for target in targets:
            print(f"starting {target.name} {target.version()}: {target.durability}", flush=True)
            servers.append(stack.enter_context(running(target, seed=seed,
                                                       ready_timeout_s=args.ready_timeout)))
        if seed is None:
            loaded, encode_s = load(servers, fleets, rounds, start_ms, args)
            report["data"]["encode_s"] = round(encode_s, 1)
            for server in servers:
                print(f"== {server.target.name}: {_load_line(loaded[server.target.name])}")
        else:
            loaded = {s.target.name: _Loaded() for s in servers}
        waited = {s.target.name: settle(s, stable_s=args.stable, bound_s=args.settle_bound)
                  for s in servers}
        print("== settled after " + ", ".join(f"{name} {s:.0f} s" for name, s in waited.items())
              + "; measuring each target alone, round by round", flush=True)
        blocks = {s.target.name: block_metas(s.workdir / "data") for s in servers}
        print("== blocks then: " + ", ".join(
            f"{name} {sum('/' not in b['dir'] for b in held)} raw "
            f"(levels {sorted({b['level'] for b in held if '/' not in b['dir']})})"
            + (f" and {sum('/' in b['dir'] for b in held)} downsampled"
               if any('/' in b['dir'] for b in held) else "")
            for name, held in blocks.items() if held), flush=True)
        rows = measure(servers, queries, data_end,
                       (raw_series, rounds, int(preset.hours * 3600)), args)
        for row in rows:
            row["load"] = loaded[row["target"]].to_dict()
            row["settle_s"] = round(waited[row["target"]], 1)
            row["blocks"] = blocks[row["target"]]
            if "exited" in row:
                print(f"   {row['target']} {row['exited']}; the end of its log:\n"
                      f"{row['log_tail']}")
        report["targets"] = rows
    return report


def _load_line(done: _Loaded) -> str:
    rate = done.samples_accepted / done.seconds if done.seconds else 0.0
    line = (f"{done.samples_accepted:,} of {done.samples_sent:,} samples accepted "
            f"({rate:,.0f}/s), {done.non_2xx} requests refused")
    return line + "".join(f"\n   {e}" for e in done.errors)


# -- report --------------------------------------------------------------------------------------


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b or "median_ms" not in a or "median_ms" not in b or not b["median_ms"]:
        return "-"
    return f"{a['median_ms'] / b['median_ms']:.2f}"


def _cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "-"
    if "error" in m:
        return "error"
    return f"{m['median_ms']:,.1f} / {m['p90_ms']:,.1f}"


def _grid(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths))).rstrip()
                     for line in lines)


def report_table(report: dict[str, Any]) -> str:
    """Latency per query and target (median / p90 ms), promstore's ratios to each peer,
    then memory: idle, and the peak during the 7-day queries."""
    rows = {r["target"]: r for r in report["targets"]}
    names = list(rows)
    peers = [n for n in names if n != "promstore"]
    head = ("query", "series", *(f"{n} ms p50 / p90" for n in names),
            *(f"promstore ÷ {p}" for p in peers if "promstore" in rows))
    lines = [head]
    for q in report["queries"]:
        cells = [rows[n]["queries"].get(q["name"]) for n in names]
        ours = rows.get("promstore", {}).get("queries", {}).get(q["name"])
        ratios = [_ratio(ours, rows[p]["queries"].get(q["name"])) for p in peers] \
            if "promstore" in rows else []
        lines.append((q["name"], f"{q['series_read']:,}", *map(_cell, cells), *ratios))
    out = [_grid(lines), ""]
    mem = [("target", "RSS idle MiB", *(f"peak {q['name']} MiB" for q in report["queries"]
                                        if q["name"].endswith("7d")), "peak ÷ idle")]
    for n in names:
        row = rows[n]
        peaks = [row["queries"].get(q["name"], {}).get("peak_rss_bytes")
                 for q in report["queries"] if q["name"].endswith("7d")]
        top = max((p for p in peaks if p), default=None)
        idle = row["rss_idle_bytes"]
        mem.append((n, f"{idle / 2**20:,.0f}" if idle else "-",
                    *(f"{p / 2**20:,.0f}" if p else "-" for p in peaks),
                    f"{top / idle:.2f}" if top and idle else "-"))
    out.append(_grid(mem))
    out += _disagreements(report)
    return "\n".join(out)


def _disagreements(report: dict[str, Any]) -> list[str]:
    """Queries whose answers differ in size between targets (a sign of missing data, or
    of a peer's different semantics, e.g. VictoriaMetrics' rate)."""
    notes = []
    for q in report["queries"]:
        shapes = {r["target"]: (m.get("series"), m.get("points"), m.get("value"))
                  for r in report["targets"] if "series" in (m := r["queries"].get(q["name"], {}))}
        if len(set(shapes.values())) > 1:
            notes.append(f"note: answers to {q['name']!r} differ in (series, points, value): "
                         f"{shapes}")
    return notes


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.query",
        description="Latency of dashboard queries in promstore and its peers on the same data.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--targets", default="", help="comma-separated subset (default: all installed)")
    p.add_argument("--baseline", metavar="REV",
                   help="also run promstore as of this commit, for before/after figures")
    p.add_argument("--api-hosts", type=int, help="hosts of the 1,000-series fleet (100)")
    p.add_argument("--web-hosts", type=int, help="hosts of the 100,000-series fleet")
    p.add_argument("--gateway-hosts", type=int, help="hosts with a latency histogram")
    p.add_argument("--hours", type=float, help="hours of data (169: a week and an hour)")
    p.add_argument("--runs", type=int, help="timed runs per query (quick 10, big 5)")
    p.add_argument("--warmups", type=int, default=2, help="untimed runs before them")
    p.add_argument("--query-budget", type=float, default=60.0,
                   help="seconds of timed runs per query after which no more start (after 3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fixed-cost", action="store_true",
                   help="also time the literal 1 right after the 24-hour quantile: the "
                        "fixed cost of a query after a heavy one, which bounds the "
                        "one-series fetch")
    p.add_argument("--load", choices=("remote-write", "blocks"), default="remote-write",
                   help="send the data through remote write, or write it as blocks that "
                        "promstore and Prometheus open (for weeks of 100,000 series; "
                        "VictoriaMetrics is left out)")
    p.add_argument("--concurrency", type=int, default=loadgen.DEFAULT_CONCURRENCY)
    p.add_argument("--batch", type=int, default=loadgen.DEFAULT_BATCH)
    p.add_argument("--ingest-bound", type=float, default=900.0,
                   help="seconds one slice of the data may take to send to one target")
    p.add_argument("--stable", type=float, default=65.0,
                   help="seconds a target's blocks must stay unchanged before measuring")
    p.add_argument("--settle-bound", type=float, default=1800.0)
    p.add_argument("--check-wait", type=float, default=60.0,
                   help="seconds to wait for every sample to be visible")
    p.add_argument("--idle", type=float, default=2.0,
                   help="seconds alone before a target's idle memory is read")
    p.add_argument("--switch-idle", type=float, default=0.5,
                   help="seconds alone before each round of a target's queries")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON result")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 1 when a target refused samples, missed data or failed a
    query."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = _parse_args(argv)
    base = PRESETS[args.preset]
    overrides = {k: v for k, v in (("api_hosts", args.api_hosts), ("web_hosts", args.web_hosts),
                                   ("gateway_hosts", args.gateway_hosts),
                                   ("hours", args.hours), ("runs", args.runs)) if v is not None}
    preset = Preset(**{**base.__dict__, **overrides})
    args.runs = preset.runs
    label = f"{args.preset}-custom" if overrides else args.preset
    record = RunRecord.start("benchmarks.query", argv)
    print(f"preset:  {label} ({base.note}{'; overridden' if overrides else ''}), "
          f"{preset.runs} timed runs after {args.warmups} warm-up runs")
    targets = select_targets(args.targets)
    with contextlib.ExitStack() as stack:
        if args.baseline:
            targets.append(stack.enter_context(PromstoreAt.exported(args.baseline)))
        if not targets:
            raise SystemExit("no target to benchmark")
        report = _run(args, preset, targets)
    print()
    print(report_table(report))
    print("Latency: wall time of a GET on a kept-alive connection until the whole answer is "
          "read, each target measured alone (the others paused); VictoriaMetrics with "
          "nocache=1. promstore ÷ peer: ratio of medians (below 1: promstore is faster).")
    report = record.save(args.out, f"query-{label}",
                         {"preset": label, "settings": preset.__dict__, **report})
    failed = any(r["load"]["non_2xx"] or "data_problem" in r or "exited" in r
                 or any("error" in m for m in r["queries"].values())
                 for r in report["targets"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
