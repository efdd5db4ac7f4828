"""Remote-write load generator: pre-encoded Prometheus-shaped requests sent by parallel shards.

Everything costly happens in :func:`build_plan`, before the clock starts: the
workload's samples are encoded into snappy-compressed ``WriteRequest`` bodies.
:func:`send` then only posts bytes, so the client stays cheap next to the
server it measures (both share the machine's cores).

The traffic mirrors a Prometheus remote-write queue: series are split into
``concurrency`` shards, each shard sends one request at a time in series order,
a request carries up to ``batch`` samples as one TimeSeries per sample, and
timestamps advance scrape by scrape. Like Prometheus's WAL reader, no shard
runs more than a few scrapes ahead of the slowest, so samples arrive in order
per series and close to each other in time across series.

CLI: ``python -m benchmarks.loadgen --url http://127.0.0.1:9201/api/v1/write``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import snappy  # type: ignore[import-untyped]

from benchmarks._encode import encode_write_request
from benchmarks.workloads import WORKLOADS, Workload, make_workload

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_USER_AGENT",
    "LoadPlan",
    "LoadResult",
    "ShardPlan",
    "build_plan",
    "remote_write_headers",
    "run",
    "send",
]

DEFAULT_BATCH = 2000  # Prometheus's max_samples_per_send in recent releases
DEFAULT_CONCURRENCY = 8  # shards
DEFAULT_USER_AGENT = "Prometheus/2.42.0"  # the sender whose requests these imitate
DEFAULT_LEAD_ROUNDS = 4  # how many scrapes a shard may run ahead of the slowest one
_BLOCK_ENTRIES = 1 << 21  # samples generated at once while encoding a shard
_MAX_ERRORS_KEPT = 5


def remote_write_headers(user_agent: str = DEFAULT_USER_AGENT) -> dict[str, str]:
    """The headers a Prometheus remote-write 1.0 sender puts on every request."""
    return {
        "Content-Encoding": "snappy",
        "Content-Type": "application/x-protobuf",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
        "User-Agent": user_agent,
    }


@dataclass
class ShardPlan:
    """The requests of one shard, in sending order."""

    bodies: list[bytes]
    samples: np.ndarray  # samples in each request
    new_series: np.ndarray  # samples in each request that are their series' first
    first_round: np.ndarray  # scrape round of each request's first sample


@dataclass
class LoadPlan:
    """Pre-encoded requests for a workload: what :func:`send` will post, shard by shard."""

    workload: dict[str, Any]
    samples: int
    rounds: int
    batch: int
    start_ms: int
    interval_ms: int
    shards: list[ShardPlan]
    lead_rounds: int
    raw_bytes: int
    encoded_bytes: int
    encode_s: float

    @property
    def requests(self) -> int:
        return sum(len(s.bodies) for s in self.shards)

    def describe(self) -> dict[str, Any]:
        """Plain facts for reports (no bodies)."""
        return {
            "workload": self.workload,
            "samples": self.samples,
            "rounds": self.rounds,
            "batch": self.batch,
            "concurrency": len(self.shards),
            "requests": self.requests,
            "start_ms": self.start_ms,
            "interval_ms": self.interval_ms,
            "raw_bytes": self.raw_bytes,
            "encoded_bytes": self.encoded_bytes,
            "encode_s": round(self.encode_s, 3),
        }


def build_plan(
    workload: Workload,
    samples: int,
    *,
    batch: int = DEFAULT_BATCH,
    concurrency: int = DEFAULT_CONCURRENCY,
    end_ms: int | None = None,
) -> LoadPlan:
    """Encode ``samples`` samples of ``workload`` into compressed request bodies.

    Every series gets one sample per scrape round, round after round, until
    ``samples`` are planned (the last round may cover only the first series).
    The rounds end just before ``end_ms`` (default: now), so receivers that
    reject old or future samples accept them.
    """
    if samples < 1 or batch < 1 or concurrency < 1:
        raise ValueError("samples, batch and concurrency must be positive")
    began = time.perf_counter()
    n = workload.n_series
    rounds = -(-samples // n)
    interval = workload.interval_ms
    now = int(time.time() * 1000) if end_ms is None else end_ms
    start_ms = now // interval * interval - rounds * interval
    if start_ms < 0:
        raise ValueError("too many rounds for the timestamps to stay positive")
    last_round_series = samples - (rounds - 1) * n
    ranges = [
        (lo, hi)
        for lo, hi in itertools.pairwise(n * k // concurrency for k in range(concurrency + 1))
        if hi > lo
    ]
    encoded = [
        _encode_shard(workload, lo, hi, rounds, last_round_series, start_ms, batch)
        for lo, hi in ranges
    ]
    smallest = min(hi - lo for lo, hi in ranges)
    return LoadPlan(
        workload=workload.describe(),
        samples=samples,
        rounds=rounds,
        batch=batch,
        start_ms=start_ms,
        interval_ms=interval,
        shards=[shard for shard, _ in encoded],
        # A request may span several rounds of a small shard; the lead must cover it.
        lead_rounds=max(DEFAULT_LEAD_ROUNDS, -(-batch // smallest) + 1),
        raw_bytes=sum(raw for _, raw in encoded),
        encoded_bytes=sum(len(b) for shard, _ in encoded for b in shard.bodies),
        encode_s=time.perf_counter() - began,
    )


def _encode_shard(
    workload: Workload,
    lo: int,
    hi: int,
    rounds: int,
    last_round_series: int,
    start_ms: int,
    batch: int,
) -> tuple[ShardPlan, int]:
    """Requests for series lo..hi-1: rounds in order, cut every ``batch`` samples.

    Returns the shard and its uncompressed size. Samples are generated a block
    of rounds at a time so memory stays bounded for any number of rounds.
    """
    n = hi - lo
    series = np.arange(lo, hi, dtype=np.int64)
    offsets = workload.scrape_offsets_ms(series)
    stream = workload.stream(lo, hi)
    block = max(1, _BLOCK_ENTRIES // n)
    bodies: list[bytes] = []
    sizes: list[int] = []
    first_seen: list[int] = []
    first_rounds: list[int] = []
    raw = 0
    # Samples generated but not yet sent (series index, round, value), carried
    # into the next block so requests stay full across block boundaries.
    held_i, held_r, held_v = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    for r0 in range(0, rounds, block):
        k = min(block, rounds - r0)
        values = stream.advance(k).ravel()
        idx = np.tile(np.arange(n, dtype=np.int64), k)
        rnd = np.repeat(np.arange(r0, r0 + k, dtype=np.int64), n)
        keep = (rnd < rounds - 1) | (series[idx] < last_round_series)
        held_i = np.concatenate([held_i, idx[keep]])
        held_r = np.concatenate([held_r, rnd[keep]])
        held_v = np.concatenate([held_v, values[keep]])
        cut = len(held_i) if r0 + k == rounds else len(held_i) // batch * batch
        for a in range(0, cut, batch):
            i, r, v = held_i[a : a + batch], held_r[a : a + batch], held_v[a : a + batch]
            ts = start_ms + r * workload.interval_ms + offsets[i]
            body = encode_write_request(workload.label_segments(series[i]), v, ts)
            raw += len(body)
            bodies.append(snappy.compress(body))
            sizes.append(len(i))
            first_seen.append(int(np.count_nonzero(r == 0)))
            first_rounds.append(int(r[0]))
        held_i, held_r, held_v = held_i[cut:], held_r[cut:], held_v[cut:]
    shard = ShardPlan(
        bodies,
        np.array(sizes, np.int64),
        np.array(first_seen, np.int64),
        np.array(first_rounds, np.int64),
    )
    return shard, raw


@dataclass
class LoadResult:
    """What happened when a plan was sent: counts, statuses and per-request latencies."""

    url: str
    requests_planned: int
    samples_planned: int
    requests_sent: int
    samples_sent: int
    samples_accepted: int
    series_created: int  # series whose first sample was acknowledged
    elapsed_s: float
    stopped_by: str  # "samples" (plan done) or "duration" (wall-clock limit)
    status_counts: dict[str, int]
    errors: list[str]
    latencies_s: np.ndarray = field(repr=False)
    client_cpu_s: float

    @property
    def rate(self) -> float:
        """Samples acknowledged with 2xx per second of sending."""
        return self.samples_accepted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def non_2xx(self) -> int:
        """Requests answered with another status, or not answered at all (status "error")."""
        return sum(c for s, c in self.status_counts.items() if not s.startswith("2"))

    def latency_ms(self, q: float) -> float:
        """The q-quantile (0..1) of request latency in milliseconds; NaN when nothing was sent."""
        if not self.latencies_s.size:
            return math.nan
        return float(np.quantile(self.latencies_s, q) * 1000)

    def _latency_summary(self) -> dict[str, float | None]:
        if not self.latencies_s.size:
            return {"p50": None, "p90": None, "p99": None, "max": None}
        quantiles = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}
        return {name: round(self.latency_ms(q), 3) for name, q in quantiles.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (latency percentiles instead of the raw list)."""
        return {
            "url": self.url,
            "requests_planned": self.requests_planned,
            "samples_planned": self.samples_planned,
            "requests_sent": self.requests_sent,
            "samples_sent": self.samples_sent,
            "samples_accepted": self.samples_accepted,
            "series_created": self.series_created,
            "elapsed_s": round(self.elapsed_s, 3),
            "samples_per_s": round(self.rate, 1),
            "stopped_by": self.stopped_by,
            "status_counts": self.status_counts,
            "non_2xx": self.non_2xx,
            "errors": self.errors,
            "latency_ms": self._latency_summary(),
            "client_cpu_s": round(self.client_cpu_s, 3),
        }


class _Progress:
    """Keeps shards within ``lead`` rounds of the slowest, as Prometheus's WAL reader does."""

    def __init__(self, shards: list[ShardPlan], lead: int) -> None:
        self._next = [int(s.first_round[0]) if len(s.bodies) else math.inf for s in shards]
        self._lead = lead
        self._changed = asyncio.Condition()

    async def wait_turn(self, first_round: int, timeout: float) -> bool:
        """Wait until a request starting at ``first_round`` may go; False on timeout."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: first_round <= min(self._next) + self._lead),
                    timeout=max(0.0, timeout),
                )
            except TimeoutError:
                return False
        return True

    async def advance(self, shard: int, next_round: float) -> None:
        async with self._changed:
            self._next[shard] = next_round
            self._changed.notify_all()


async def send(
    plan: LoadPlan,
    url: str,
    *,
    duration_s: float,
    timeout_s: float = 30.0,
    user_agent: str = DEFAULT_USER_AGENT,
) -> LoadResult:
    """Post the plan's requests, one in flight per shard, until done or ``duration_s`` passes.

    Requests already in flight when the time is up are awaited and counted.
    Failed requests are counted, not retried.
    """
    loop = asyncio.get_running_loop()
    headers = remote_write_headers(user_agent)
    base = np.cumsum([0] + [len(s.bodies) for s in plan.shards])
    latency = np.full(int(base[-1]), np.nan)
    status = np.full(int(base[-1]), -1, dtype=np.int64)
    errors: list[str] = []
    progress = _Progress(plan.shards, plan.lead_rounds)
    deadline = math.inf
    timed_out = False

    async def post(session: aiohttp.ClientSession, body: bytes) -> int:
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                text = await resp.read()
                if resp.status // 100 != 2 and len(errors) < _MAX_ERRORS_KEPT:
                    errors.append(f"HTTP {resp.status}: {text[:200].decode(errors='replace')}")
                return resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            if len(errors) < _MAX_ERRORS_KEPT:
                errors.append(f"{type(exc).__name__}: {exc}")
            return 0

    async def shard_loop(session: aiohttp.ClientSession, k: int) -> None:
        nonlocal timed_out
        shard = plan.shards[k]
        try:
            for j, body in enumerate(shard.bodies):
                turn = await progress.wait_turn(int(shard.first_round[j]), deadline - loop.time())
                if not turn or loop.time() >= deadline:
                    timed_out = True
                    return
                began = time.perf_counter()
                status[base[k] + j] = await post(session, body)
                latency[base[k] + j] = time.perf_counter() - began
                following = j + 1 < len(shard.bodies)
                await progress.advance(k, int(shard.first_round[j + 1]) if following else math.inf)
        finally:
            await progress.advance(k, math.inf)

    cpu_before = _cpu_seconds()
    connector = aiohttp.TCPConnector(limit=len(plan.shards))
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        began = time.perf_counter()
        deadline = loop.time() + duration_s
        await asyncio.gather(*(shard_loop(session, k) for k in range(len(plan.shards))))
        elapsed = time.perf_counter() - began

    sent = status >= 0
    ok = (status // 100 == 2) & sent
    samples = np.concatenate([s.samples for s in plan.shards])
    new_series = np.concatenate([s.new_series for s in plan.shards])
    codes, counts = np.unique(status[sent], return_counts=True)
    return LoadResult(
        url=url,
        requests_planned=len(status),
        samples_planned=int(samples.sum()),
        requests_sent=int(sent.sum()),
        samples_sent=int(samples[sent].sum()),
        samples_accepted=int(samples[ok].sum()),
        series_created=int(new_series[ok].sum()),
        elapsed_s=elapsed,
        stopped_by="duration" if timed_out else "samples",
        status_counts={(str(c) if c else "error"): int(n) for c, n in zip(codes, counts)},
        errors=errors,
        latencies_s=latency[sent],
        client_cpu_s=_cpu_seconds() - cpu_before,
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(plan: LoadPlan, url: str, **kwargs: Any) -> LoadResult:
    """Synchronous :func:`send` (runs its own event loop)."""
    return asyncio.run(send(plan, url, **kwargs))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.loadgen",
        description="Send Prometheus remote-write 1.0 load to a receiver.",
    )
    p.add_argument(
        "--url",
        required=True,
        help="remote-write endpoint, e.g. http://127.0.0.1:9201/api/v1/write",
    )
    p.add_argument("--workload", default="node", choices=sorted(WORKLOADS))
    size = p.add_mutually_exclusive_group()
    size.add_argument("--series", type=int, help="active series (default 10000)")
    size.add_argument("--hosts", type=int, help="scrape targets, about 1000 series each")
    p.add_argument("--samples", type=int, default=1_000_000, help="total samples to send")
    p.add_argument("--duration", type=float, default=30.0, help="wall-clock limit, seconds")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="shards")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="max samples per request")
    p.add_argument("--interval", type=float, default=15.0, help="scrape interval, seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    p.add_argument("--user-agent", default=DEFAULT_USER_AGENT)
    p.add_argument("--json", metavar="FILE", help="also write the plan and result as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 1 when any request failed."""
    args = _parse_args(argv)
    series = args.series if args.series is not None or args.hosts is not None else 10_000
    workload = make_workload(
        args.workload,
        hosts=args.hosts,
        series=series if args.hosts is None else None,
        seed=args.seed,
        interval_s=args.interval,
    )
    plan = build_plan(workload, args.samples, batch=args.batch, concurrency=args.concurrency)
    print(
        f"plan: {workload.n_series} series, {plan.samples} samples in {plan.requests} requests "
        f"({plan.encoded_bytes / 2**20:.1f} MiB compressed), encoded in {plan.encode_s:.1f} s"
    )
    result = run(
        plan, args.url, duration_s=args.duration, timeout_s=args.timeout, user_agent=args.user_agent
    )
    summary = result.to_dict()
    print(
        f"sent {result.samples_sent} samples in {result.requests_sent} requests in "
        f"{result.elapsed_s:.2f} s (stopped by {result.stopped_by}): "
        f"{result.rate:,.0f} samples/s accepted, latency p50 {summary['latency_ms']['p50']:.1f} ms "
        f"p99 {summary['latency_ms']['p99']:.1f} ms, statuses {result.status_counts}"
    )
    for err in result.errors:
        print(f"  {err}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"plan": plan.describe(), "result": summary}, f, indent=2)
    return 1 if result.non_2xx else 0


if __name__ == "__main__":
    sys.exit(main())
