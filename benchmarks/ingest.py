"""Ingest benchmark: the same remote-write load against promstore and its peers.

For each selected target the server is started fresh (new data directory,
127.0.0.1 only), the pre-encoded load is sent, and the report gives samples/s
acknowledged, request latency, server CPU time and resident memory: raw RSS
after the load, and the growth over the idle server divided by active series.
Results go to stdout as a table and to ``benchmarks/results/`` as JSON.

Run: ``python -m benchmarks.ingest --preset quick`` (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from benchmarks import loadgen
from benchmarks.peers import TARGETS, RunRecord, Target, running
from benchmarks.workloads import WORKLOADS, Workload, make_workload

__all__ = [
    "PRESETS",
    "Preset",
    "bench_target",
    "exit_on_sigterm",
    "main",
    "select_targets",
    "visible_series",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_WARMUP_FIRST_HOST = 1 << 23  # warm-up hosts are 10.128.0.0 and up: no series shared with the load


@dataclass(frozen=True)
class Preset:
    """A benchmark size: active series, samples to send, and a wall-clock bound per target."""

    series: int
    samples: int
    duration_s: float
    repeat: int  # runs per target; the report gives each target's median run
    note: str


PRESETS: dict[str, Preset] = {
    # 400 scrapes = 100 minutes of data: below the 2 h block range, so no
    # receiver cuts or compacts a block during the run.
    # Runs last seconds, so three of each, interleaved, damp the noise of a shared machine.
    "quick": Preset(
        10_000, 4_000_000, 30.0, 3, "10k series, 400 scrapes, <= 30 s per target, 3 runs"
    ),
    # 10 scrapes of a million series; the bound keeps a slow target to 3 minutes.
    "big": Preset(
        1_000_000, 10_000_000, 180.0, 1, "1M series, 10 scrapes, <= 180 s per target, 1 run"
    ),
}


def bench_target(
    target: Target,
    workload: Workload,
    plan: loadgen.LoadPlan,
    *,
    warmup: loadgen.LoadPlan | None,
    duration_s: float,
    idle_s: float,
    settle_s: float,
    ready_timeout_s: float,
) -> dict[str, Any]:
    """Start ``target`` fresh, warm it up, send ``plan`` to it and measure; always stops it.

    The warm-up (other series, same time range) runs before the idle memory
    sample, so one-off costs such as compiling hot paths count as idle. After
    the memory sample, the series of the first and last host are looked up
    through the query API to check that what was acknowledged is stored.
    """
    with running(target, ready_timeout_s=ready_timeout_s) as server:
        warm = loadgen.run(warmup, server.write_url, duration_s=duration_s) if warmup else None
        time.sleep(idle_s)
        rss_idle = server.rss_bytes()
        cpu_before = server.cpu_seconds()
        result = loadgen.run(plan, server.write_url, duration_s=duration_s)
        cpu_load = server.cpu_seconds() - cpu_before
        time.sleep(settle_s)
        rss_after = server.rss_bytes()
        peak = server.peak_rss_bytes()
        argv = server.argv
        spot_check: dict[str, dict[str, Any]] = {}
        for host in sorted({0, workload.n_hosts - 1}):
            instance = workload.host_instance(host)
            check: dict[str, Any] = {"sent": workload.host_series(host)}
            try:
                check["visible"] = visible_series(server.base_url, instance)
            except RuntimeError as exc:
                check["visible"], check["error"] = None, str(exc)
            spot_check[instance] = check
    active = result.series_created
    delta = rss_after - rss_idle
    return {
        "target": target.name,
        "version": target.version(),
        "durability": target.durability,
        "argv": argv,
        "warmup": warm.to_dict() if warm else None,
        "load": result.to_dict(),
        "server_cpu_s": round(cpu_load, 3),
        "rss_idle_bytes": rss_idle,
        "rss_after_bytes": rss_after,
        "rss_peak_bytes": peak,
        "active_series": active,
        "rss_delta_per_series_bytes": delta / active if active else None,
        "rss_per_series_bytes": rss_after / active if active else None,
        "spot_check": spot_check,
    }


def visible_series(base_url: str, instance: str, *, wait_s: float = 10.0) -> int | None:
    """Series with this ``instance`` that ``/api/v1/series`` lists; None without that API.

    Retries until the count stops being zero or ``wait_s`` passes, since some
    receivers make new samples searchable only after a flush.
    """
    query = urllib.parse.urlencode({"match[]": f'{{instance="{instance}"}}'})
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/api/v1/series?{query}", timeout=30) as resp:
                count = len(json.load(resp)["data"])
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 405):
                return None
            raise RuntimeError(f"/api/v1/series answered {exc.code}") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"/api/v1/series failed: {exc!r}") from exc
        if count or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _table(rows: list[dict[str, Any]]) -> str:
    """Absolute figures per target; rate relative to VictoriaMetrics, memory to Prometheus."""
    by_name = {r["target"]: r for r in rows if "load" in r}
    vm_rate = by_name.get("victoriametrics", {}).get("load", {}).get("samples_per_s")
    prom_mem = by_name.get("prometheus", {}).get("rss_delta_per_series_bytes")
    header = (
        "target",
        "samples/s",
        "÷VM",
        "p50 ms",
        "p99 ms",
        "non-2xx",
        "srv CPU s",
        "RSS idle",
        "RSS after",
        "RSS peak",
        "ΔRSS/series",
        "÷Prom",
    )
    lines = [header]
    for r in rows:
        if "load" not in r:
            continue
        load, per_series = r["load"], r["rss_delta_per_series_bytes"]
        lines.append(
            (
                r["target"],
                _num(load["samples_per_s"], ",.0f"),
                _num(_ratio(load["samples_per_s"], vm_rate), ".2f"),
                _num(load["latency_ms"]["p50"], ".1f"),
                _num(load["latency_ms"]["p99"], ".1f"),
                str(load["non_2xx"]),
                _num(r["server_cpu_s"], ".1f"),
                _mib(r["rss_idle_bytes"]),
                _mib(r["rss_after_bytes"]),
                _mib(r["rss_peak_bytes"]),
                _num(per_series, ",.0f") + (" B" if per_series is not None else ""),
                _num(_ratio(per_series, prom_mem), ".2f"),
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    table = [
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(line, widths))
        ).rstrip()
        for line in lines
    ]
    table += [
        f"{r['target']}: failed ({r['error'].splitlines()[0]})" for r in rows if "load" not in r
    ]
    return "\n".join(table)


def _headline(rows: list[dict[str, Any]]) -> list[str]:
    """The two ratios the project tracks, when their targets ran."""
    by_name = {r["target"]: r for r in rows if "load" in r}
    ours = by_name.get("promstore")
    if not ours:
        return []
    out = []
    vm = by_name.get("victoriametrics")
    if vm:
        ratio = _ratio(ours["load"]["samples_per_s"], vm["load"]["samples_per_s"])
        out.append(f"promstore / VictoriaMetrics ingest rate: {_num(ratio, '.2f')}")
    prom = by_name.get("prometheus")
    if prom:
        ratio = _ratio(ours["rss_delta_per_series_bytes"], prom["rss_delta_per_series_bytes"])
        out.append(f"promstore / Prometheus memory per active series: {_num(ratio, '.2f')}")
    return out


def _run_once(
    target: Target,
    workload: Workload,
    plan: loadgen.LoadPlan,
    warmup: loadgen.LoadPlan | None,
    args: argparse.Namespace,
    duration: float,
    title: str,
) -> dict[str, Any]:
    """One benchmark run of a target, narrated on stdout; a failure becomes an error row."""
    print(f"\n== {target.name} {target.version()} ({title}): {target.durability}", flush=True)
    try:
        row = bench_target(
            target,
            workload,
            plan,
            warmup=warmup,
            duration_s=duration,
            idle_s=args.idle,
            settle_s=args.settle,
            ready_timeout_s=args.ready_timeout,
        )
    except (RuntimeError, OSError) as exc:
        print(f"   failed: {exc}")
        return {"target": target.name, "error": str(exc)}
    load, warm = row["load"], row["warmup"]
    print(f"   {shlex.join(row['argv'])}")
    if warm:
        print(
            f"   warm-up: {warm['samples_accepted']:,} of {warm['samples_planned']:,} samples "
            f"accepted, statuses {warm['status_counts']}"
        )
    print(
        f"   {load['samples_accepted']:,} samples accepted in {load['elapsed_s']:.1f} s "
        f"({load['samples_per_s']:,.0f}/s, stopped by {load['stopped_by']}), "
        f"statuses {load['status_counts']}, client CPU {load['client_cpu_s']:.1f} s"
    )
    for err in load["errors"]:
        print(f"   {err}")
    checks = ", ".join(
        f"{inst} {c.get('error') or ('n/a' if c['visible'] is None else c['visible'])}/{c['sent']}"
        for inst, c in row["spot_check"].items()
    )
    print(f"   series visible in /api/v1/series after the load: {checks}")
    return row


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median ingest rate, so all figures in a row come from one run.

    Failed runs are left out; with an even count the slower middle run is taken.
    """
    done = sorted((r for r in runs if "load" in r), key=lambda r: r["load"]["samples_per_s"])
    if not done:
        return runs[-1]
    return done[(len(done) - 1) // 2]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest",
        description="Remote-write ingest rate, latency and memory of promstore and its peers.",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument(
        "--targets",
        default="",
        help=f"comma-separated subset of {','.join(TARGETS)} (default: all installed)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--series", type=int, help="active series (overrides the preset)")
    size.add_argument("--hosts", type=int, help="scrape targets, about 1000 series each")
    p.add_argument("--samples", type=int, help="samples to send per target (overrides the preset)")
    p.add_argument("--duration", type=float, help="wall-clock bound per target, seconds")
    p.add_argument("--repeat", type=int, help="runs per target (overrides the preset)")
    p.add_argument("--workload", default="node", choices=sorted(WORKLOADS))
    p.add_argument("--concurrency", type=int, default=loadgen.DEFAULT_CONCURRENCY)
    p.add_argument("--batch", type=int, default=loadgen.DEFAULT_BATCH)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--warmup",
        type=int,
        default=1000,
        help="series of a separate fleet sent twice before measuring (0: none)",
    )
    p.add_argument("--idle", type=float, default=2.0, help="seconds between ready and idle RSS")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between load and RSS")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON result")
    return p.parse_args(argv)


def select_targets(spec: str) -> list[Target]:
    """Targets named in a comma-separated ``spec``, or every installed one when it is empty."""
    if not spec:
        chosen = [t for t in TARGETS.values() if t.available()]
        for t in TARGETS.values():
            if t not in chosen:
                print(f"note: {t.name} is not available here; skipped")
        return chosen
    chosen = []
    for name in (n.strip() for n in spec.split(",") if n.strip()):
        if name not in TARGETS:
            raise SystemExit(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
        if not TARGETS[name].available():
            raise SystemExit(f"target {name} is not available on this machine")
        chosen.append(TARGETS[name])
    return chosen


def exit_on_sigterm(signum: int, frame: object) -> NoReturn:
    """A SIGTERM handler that exits through ``SystemExit``, so that every started server
    is stopped on the way out."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 1 when a target failed or rejected requests."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = _parse_args(argv)
    preset = PRESETS[args.preset]
    targets = select_targets(args.targets)
    if not targets:
        print("no target to benchmark")
        return 1
    samples = args.samples or preset.samples
    duration = args.duration or preset.duration_s
    repeat = args.repeat or preset.repeat
    overridden = any(x is not None for x in (args.series, args.hosts, args.samples, args.duration))
    label = f"{args.preset}-custom" if overridden else args.preset
    workload = make_workload(
        args.workload,
        hosts=args.hosts,
        series=None if args.hosts else (args.series or preset.series),
        seed=args.seed,
    )
    record = RunRecord.start("benchmarks.ingest", argv)
    print(
        f"note:    the load generator runs on the same {record.machine['cores_usable']} cores "
        "as the server; its CPU time is shown per target"
    )
    print(
        f"preset:  {label} ({preset.note}{'; overridden' if overridden else ''}); "
        f"workload {args.workload}: "
        f"{workload.n_series:,} series on {workload.n_hosts:,} hosts, seed {args.seed}"
    )
    plan = loadgen.build_plan(workload, samples, batch=args.batch, concurrency=args.concurrency)
    print(
        f"load:    {plan.samples:,} samples in {plan.requests:,} requests of <= {plan.batch} "
        f"samples, {len(plan.shards)} shards, {plan.rounds} scrapes; "
        f"{plan.encoded_bytes / 2**20:,.1f} MiB snappy ({plan.raw_bytes / plan.samples:.0f} B "
        f"raw, {plan.encoded_bytes / plan.samples:.1f} B compressed per sample), "
        f"encoded in {plan.encode_s:.1f} s; bound {duration:.0f} s per run, "
        f"{repeat} run{'s' if repeat > 1 else ''} per target"
    )

    warmup = None
    if args.warmup:
        if workload.n_hosts > _WARMUP_FIRST_HOST:
            raise SystemExit("workload too large to keep a separate warm-up fleet")
        warm_fleet = make_workload(
            args.workload, series=args.warmup, seed=args.seed + 1, first_host=_WARMUP_FIRST_HOST
        )
        # Two scrapes at the start of the load's time range: receivers that bound
        # how far back a sample may lie behind the newest one accept the load after it.
        warmup = loadgen.build_plan(
            warm_fleet,
            2 * args.warmup,
            batch=args.batch,
            concurrency=args.concurrency,
            end_ms=plan.start_ms + 2 * plan.interval_ms,
        )

    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for n in range(1, repeat + 1):
        # Round-robin, so a burst of load from elsewhere does not hit one target's runs only.
        for target in targets:
            run = _run_once(target, workload, plan, warmup, args, duration, f"run {n}/{repeat}")
            runs[target.name].append(run)
    rows = [_median_run(runs[t.name]) for t in targets]

    print()
    print(_table(rows))
    if repeat > 1:
        for name, target_runs in runs.items():
            rates = [f"{r['load']['samples_per_s']:,.0f}" for r in target_runs if "load" in r]
            print(f"{name} samples/s per run: {', '.join(rates) or '-'} (row: median run)")
    for line in _headline(rows):
        print(line)
    print(
        "ΔRSS/series = (RSS after load - RSS idle) / series created; ÷VM and ÷Prom are ratios "
        "to VictoriaMetrics' rate and Prometheus' ΔRSS/series."
    )

    report = {
        "preset": label,
        "plan": plan.describe(),
        "warmup_plan": warmup.describe() if warmup else None,
        "duration_bound_s": duration,
        "repeat": repeat,
        "targets": rows,
        "runs": runs,
    }
    record.save(args.out, f"ingest-{label}", report)
    failed = any("error" in r or r["load"]["non_2xx"] for rs in runs.values() for r in rs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
