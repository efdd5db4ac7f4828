"""Compaction benchmark: remote-write latency with and without compaction running.

Before any clock starts, a history (``--history-series`` node_exporter series over
``--history-hours`` at 15 s) is written as two-hour blocks (``benchmarks.backfill``),
ending before the load's first sample. Two seeds of a data directory are made from it:
*pending*, the blocks as written, which promstore's maintainer starts compacting as soon
as the store opens; and *compacted*, the same blocks already compacted in this process,
where the maintainer finds nothing to do.

Each round starts promstore fresh on a hard-linked copy of each seed in turn (on the
pending seed once with the default settings and once per ``--rate-limit``), sends the
same bounded remote-write load (``benchmarks.loadgen``, in the time range just after
the history) and records the request latencies and the compactions finished meanwhile.
The order of the servers rotates from round to round, so that load from elsewhere on
the machine falls on all of them. The report gives each server's p50, p99 and maximum
over its pooled latencies, its median samples/s, and the median over the rounds of each
round's p99, which one disturbed round cannot move: its ratio with compaction running
(default settings) to without is the result. A run in which compaction finished before
the load did is flagged, since it measured less than it says.

Run: ``python -m benchmarks.compaction --preset quick`` (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import backfill, loadgen
from benchmarks.ingest import RESULTS_DIR, exit_on_sigterm
from benchmarks.peers import PROMSTORE, RunRecord, Target, running
from benchmarks.workloads import make_workload
from compaction.maintainer import Maintainer, MaintainerOptions
from storage.db import DB, DBOptions

__all__ = ["PRESETS", "Preset", "main", "make_seeds"]

_HOUR_MS = 3_600_000
_LOAD_FIRST_HOST = 1 << 20  # the load's hosts: no series shared with the history
_TARGET_P99_RATIO = 1.2  # the bound on p99 with compaction running
_DEFAULT = "compacting"  # the server with the default settings


@dataclass(frozen=True)
class Preset:
    """A benchmark size: the history to compact, the load, and how many rounds."""

    history_series: int
    history_hours: int  # whole two-hour blocks
    load_series: int
    load_rounds: int  # scrapes at 15 s: under 1.5 block ranges, so the head cuts no block
    rounds: int
    note: str


PRESETS: dict[str, Preset] = {
    "quick": Preset(20_000, 48, 20_000, 400, 5,
                    "history 20k series x 48 h (24 blocks); load 20k series x 400 scrapes; "
                    "5 rounds"),
    "big": Preset(100_000, 48, 50_000, 400, 5,
                  "history 100k series x 48 h (24 blocks); load 50k series x 400 scrapes; "
                  "5 rounds"),
}


# -- the data directories ------------------------------------------------------------------


def make_seeds(directory: Path, series: int, hours: int, end_ms: int, seed: int
               ) -> tuple[Path, Path, int, backfill.Backfilled]:
    """Write the history into ``directory/pending`` and its compacted form into
    ``directory/compacted``; return both, the compactions it takes and the history's
    figures. The history ends at the last block boundary before ``end_ms``."""
    history = make_workload("node", series=series, seed=seed)
    blocks = hours // 2
    start = (end_ms // backfill.BLOCK_MS - blocks) * backfill.BLOCK_MS
    pending, compacted = directory / "pending", directory / "compacted"
    pending.mkdir(parents=True)
    written = backfill.write_blocks(pending, [history], start,
                                    blocks * backfill.BLOCK_MS // history.interval_ms)
    shutil.copytree(pending, compacted, copy_function=os.link)
    db = DB.open(compacted, DBOptions(compaction_interval=0))
    try:
        needed = Maintainer(db, MaintainerOptions(retention_ms=0, rate_limit=0)).run_once()
    finally:
        db.close()
    for path in compacted.iterdir():  # keep the blocks only: each server starts its own WAL
        if not (path / "meta.json").is_file():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return pending, compacted, needed, written


# -- one run -----------------------------------------------------------------------------


class _Configured(Target):
    """promstore with extra ``PROMSTORE_*`` settings in its environment."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.settings = settings
        self.name = PROMSTORE.name
        self.ready_path = PROMSTORE.ready_path
        self.durability = PROMSTORE.durability

    def available(self) -> bool:
        return PROMSTORE.available()

    def command(self, workdir: Path, data_dir: Path, port: int) -> list[str]:
        return PROMSTORE.command(workdir, data_dir, port)

    def version(self) -> str:
        return PROMSTORE.version()

    def environment(self) -> dict[str, str]:
        return PROMSTORE.environment() | self.settings


def _counter(base_url: str, name: str) -> float:
    """A counter of promstore's ``/metrics`` (0 when absent)."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=30) as resp:
        for line in resp.read().decode().splitlines():
            if line.split(" ")[0] in (name, name + "_total"):
                return float(line.split(" ")[1])
    return 0.0


def _run(seed: Path, settings: dict[str, str], plan: loadgen.LoadPlan, bound_s: float,
         settle_s: float, ready_timeout_s: float) -> tuple[dict[str, Any], np.ndarray]:
    """Start promstore on a copy of ``seed``, wait ``settle_s``, send ``plan``; the
    figures and latencies."""
    with running(_Configured(settings), ready_timeout_s=ready_timeout_s, seed=seed) as server:
        time.sleep(settle_s)
        done_before = _counter(server.base_url, "promstore_compactions")
        cpu_before = server.cpu_seconds()
        result = loadgen.run(plan, server.write_url, duration_s=bound_s)
        cpu = server.cpu_seconds() - cpu_before
        done_after = _counter(server.base_url, "promstore_compactions")
        argv = server.argv
    load = result.to_dict()
    return {"argv": argv, "settings": settings, "load": load, "server_cpu_s": round(cpu, 2),
            "compactions_at_start": done_before, "compactions_at_end": done_after
            }, result.latencies_s


# -- the report --------------------------------------------------------------------------


def _quantiles_ms(latencies: np.ndarray) -> dict[str, float | None]:
    if not latencies.size:
        return {"p50": None, "p99": None, "max": None}
    p50, p99, top = np.quantile(latencies, [0.5, 0.99, 1.0]) * 1000
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2),
            "max": round(float(top), 2)}


def _summary(runs: list[dict[str, Any]], latencies: list[np.ndarray]) -> dict[str, Any]:
    pooled = np.concatenate(latencies) if latencies else np.empty(0)
    per_round = [r["load"]["latency_ms"]["p99"] for r in runs]
    return {"latency_ms": _quantiles_ms(pooled), "requests": int(pooled.size),
            "p99_per_round_ms": per_round, "p99_median_round_ms": statistics.median(per_round),
            "samples_per_s": statistics.median(r["load"]["samples_per_s"] for r in runs),
            "non_2xx": sum(r["load"]["non_2xx"] for r in runs)}


def _table(conditions: dict[str, dict[str, Any]], idle: str) -> str:
    base = conditions[idle]["p99_median_round_ms"]
    lines = [("server", "requests", "p50 ms", "p99 ms", "max ms", "samples/s",
              "median round p99 ms", "÷ idle", "p99 per round ms")]
    for name, c in conditions.items():
        lat = c["latency_ms"]
        lines.append((name, f"{c['requests']:,}", f"{lat['p50']:.1f}", f"{lat['p99']:.1f}",
                      f"{lat['max']:.1f}", f"{c['samples_per_s']:,.0f}",
                      f"{c['p99_median_round_ms']:.1f}",
                      f"{c['p99_median_round_ms'] / base:.2f}",
                      " ".join(f"{p:.0f}" for p in c["p99_per_round_ms"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) if i in (0, 8) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths))).rstrip()
                     for line in lines)


# -- main --------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compaction",
        description="Remote-write latency of promstore with and without compaction running.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--history-series", type=int, help="series in the history (overrides)")
    p.add_argument("--history-hours", type=int, help="hours of history, even (overrides)")
    p.add_argument("--rounds", type=int, help="rounds (overrides the preset)")
    p.add_argument("--rate-limit", default="",
                   help="comma-separated compaction_rate_limit values (samples/s, 0 = "
                        "unpaced), each for one more compacting server beside the one with "
                        "the default, e.g. 0,5e5")
    p.add_argument("--bound", type=float, default=60.0, help="wall-clock bound per load, s")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds between ready and the load (the first merge gets under way)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="build the seeds in DIR and keep them (reused when already there)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON result")
    return p.parse_args(argv)


def _seeds(args: argparse.Namespace, preset: Preset, end_ms: int
           ) -> tuple[Path, Path, int, dict[str, Any]]:
    """The seeds, built now (or found in ``--keep``), and facts about them."""
    series = args.history_series or preset.history_series
    hours = args.history_hours or preset.history_hours
    if hours < 6 or hours % 2:
        raise SystemExit("--history-hours must be even and at least 6")
    directory = args.keep or Path(tempfile.mkdtemp(prefix="bench-compaction-"))
    facts_path = directory / "seeds.json"
    if facts_path.is_file():
        facts = json.loads(facts_path.read_text())
        if (facts["series"], facts["hours"], facts["seed"]) == (series, hours, args.seed) \
                and facts["end_ms"] <= end_ms:
            return directory / "pending", directory / "compacted", facts["compactions"], facts
        raise SystemExit(f"{directory} holds other seeds ({facts}); remove it or pick another")
    began = time.monotonic()
    pending, compacted, needed, written = make_seeds(directory, series, hours, end_ms,
                                                     args.seed)
    facts = {"series": series, "hours": hours, "seed": args.seed, "end_ms": end_ms,
             "blocks": written.blocks, "samples": written.samples, "bytes": written.bytes,
             "compactions": needed, "compacted_blocks": len(list(compacted.iterdir())),
             "build_s": round(time.monotonic() - began, 1)}
    facts_path.write_text(json.dumps(facts, indent=2) + "\n")
    return pending, compacted, needed, facts


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 1 when a request failed or p99 exceeded the bound."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = _parse_args(argv)
    preset = PRESETS[args.preset]
    rounds = args.rounds or preset.rounds
    record = RunRecord.start("benchmarks.compaction", argv)
    print(f"preset:  {args.preset} ({preset.note})")

    load = make_workload("node", series=preset.load_series, seed=args.seed + 1,
                         first_host=_LOAD_FIRST_HOST)
    plan = loadgen.build_plan(load, preset.load_series * preset.load_rounds)
    print(f"load:    {plan.samples:,} samples of {load.n_series:,} series in "
          f"{plan.requests:,} requests, {len(plan.shards)} shards, {plan.rounds} scrapes "
          f"from {plan.start_ms} ms; bound {args.bound:g} s")
    owned = args.keep is None
    pending, compacted, needed, facts = _seeds(args, preset, plan.start_ms)
    try:
        print(f"history: {facts['series']:,} series x {facts['hours']} h = "
              f"{facts['samples']:,} samples in {facts['blocks']} blocks "
              f"({facts['bytes'] / 2**20:,.0f} MiB); compacted: {facts['compacted_blocks']} "
              f"blocks after {needed} compactions (built in {facts['build_s']} s)")
        limits = [x.strip() for x in args.rate_limit.split(",") if x.strip()]
        servers: dict[str, tuple[Path, dict[str, str]]] = {"idle": (compacted, {}),
                                                            _DEFAULT: (pending, {})}
        for limit in limits:
            servers[f"compacting at {limit}/s"] = (
                pending, {"PROMSTORE_COMPACTION_RATE_LIMIT": str(int(float(limit)))})
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        latencies: dict[str, list[np.ndarray]] = {name: [] for name in servers}
        names = list(servers)
        # A first run, not counted, pays for what only the first start of a checkout
        # pays (compiling kernels into numba's cache, reading code into the page cache).
        _run(compacted, {}, plan, args.bound, args.settle, args.ready_timeout)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                seed_dir, settings = servers[name]
                row, lat = _run(seed_dir, settings, plan, args.bound, args.settle,
                                args.ready_timeout)
                runs[name].append(row)
                latencies[name].append(lat)
                ran_through = name == "idle" or row["compactions_at_end"] < needed
                m = row["load"]
                print(f"round {r + 1}/{rounds} {name}: p50 {m['latency_ms']['p50']:.1f} ms, "
                      f"p99 {m['latency_ms']['p99']:.1f} ms, {m['samples_per_s']:,.0f} "
                      f"samples/s, statuses {m['status_counts']}, compactions "
                      f"{row['compactions_at_start']:.0f} -> {row['compactions_at_end']:.0f} of "
                      f"{needed if name != 'idle' else 0}"
                      + ("" if ran_through else " (FINISHED BEFORE THE LOAD: not measured "
                                                 "under compaction)"), flush=True)
    finally:
        if owned:
            shutil.rmtree(pending.parent, ignore_errors=True)

    conditions = {name: _summary(runs[name], latencies[name]) for name in servers}
    print()
    print(_table(conditions, "idle"))
    idle_p99 = conditions["idle"]["p99_median_round_ms"]
    ratio = conditions[_DEFAULT]["p99_median_round_ms"] / idle_p99
    under = all(r["compactions_at_end"] < needed for n, rs in runs.items() if n != "idle"
                for r in rs)
    print(f"p99 with compaction running (default settings) / without, median of the rounds' "
          f"p99: {ratio:.2f} (bound {_TARGET_P99_RATIO}); compaction "
          f"{'ran through every load' if under else 'FINISHED DURING SOME LOADS'}")
    print("p50, p99, max: latencies pooled over the rounds (one disturbed round can move "
          "them; the median round's p99 is the figure compared); idle: the history already "
          "compacted, so the maintainer has nothing to do; compacting: the same history as "
          "2 h blocks, compacted from the moment the store opens.")

    record.save(args.out, f"compaction-{args.preset}",
             {"preset": args.preset, "history": facts, "plan": plan.describe(),
              "conditions": conditions, "runs": runs, "p99_ratio": ratio,
              "compaction_ran_through": under})
    failed = any(c["non_2xx"] for c in conditions.values()) or ratio > _TARGET_P99_RATIO
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
