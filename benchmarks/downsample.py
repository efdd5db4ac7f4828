"""Downsampling benchmark: a month of counters queried raw and downsampled, in one run.

Raw blocks are written directly with ``storage.block.write_block`` as compaction leaves
them: dense blocks of 54 hours (the largest Prometheus's leveled compaction builds for 30
days of retention) and, in the newest 54 hours still being filled, the 18-hour (dense),
6- and 2-hour (XOR) blocks the compaction planner makes of the 2-hour blocks cut from the
head. The data: ``instances`` hosts each exposing ``per_instance`` counters
``x{instance, n}`` scraped every ``scrape`` seconds, rates swinging over the day, a
restart now and then. The data ends at the reference time ("now"). Then:

1. downsampling as the maintainer would run it (5 m after ``downsample_5m_after``, 12 h
   by default, or ``--after-5m``; 1 h after 10 days), timed: called every 2 hours over
   the newest 54 hours, so that the part of a block older than the age is downsampled
   in 2-hour steps (``--step``), as in a running server;
2. bytes on disk: raw blocks, 5 m and 1 h aggregates;
3. ``sum by (instance) (rate(x[1h]))`` at a 1 h step through the PromQL engine (in this
   process, the query API's engine without HTTP), raw (``max_source_resolution=0``) and
   ``auto`` (5 m windows, step / 5 = 12 m), alternately, ``--repeat`` times each: the
   median times, wall and the process's CPU (which other work on a shared machine does
   not inflate), and the median of the ratios of neighbouring runs:

   - ``now``: the 30 days ending now; the newest 54 hours are still being filled (0 to
     54 h of data, depending on where the run's time falls, or ``--filled-hours``): at
     most the age plus a 2-hour step is read raw (ended blocks spanning the age or more
     are downsampled at once, the part of the others older than the age in 2-hour
     steps);
   - ``old``: the 30 days before that, all downsampled.

   The answers are compared: the largest and median relative difference are reported.

Run: ``python -m benchmarks.downsample`` (see ``docs/benchmarks.md``, "Downsampling").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from compaction.downsample import DownsampleOptions, downsample_due
from compaction.planner import BlockSpan, plan, ranges
from compaction.retention import directory_bytes
from promstore.promql import Engine
from storage.block import write_block
from storage.chunk_merge import encode_series
from storage.db import DB, DBOptions
from storage.downsampled import RESOLUTION_1H, RESOLUTION_5M, DownsampledStore, TieredStore

__all__ = ["main"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
BLOCK_MS = 54 * HOUR_MS
RANGES = ranges(2 * HOUR_MS, 3, BLOCK_MS)  # 2, 6, 18 and 54 hours
QUERY = "sum by (instance) (rate(x[1h]))"
RESULTS_DIR = Path(__file__).parent / "results"


def _keys(instances: int, per_instance: int) -> tuple[np.ndarray, np.ndarray]:
    keys = [b"__name__\xffx\xffinstance\xffhost-%04d:9100\xffn\xff%d\xff" % (i, n)
            for i in range(instances) for n in range(per_instance)]
    offsets = np.zeros(len(keys) + 1, np.int64)
    np.cumsum([len(k) for k in keys], out=offsets[1:])
    return np.frombuffer(b"".join(keys), np.uint8), offsets


def write_dataset(directory: Path, instances: int, per_instance: int, days: int,
                  scrape_ms: int, end: int, seed: int) -> int:
    """Raw blocks of the counters over ``days`` ending at ``end``; returns the number of
    samples written."""
    rng = np.random.default_rng(seed)
    series = instances * per_instance
    keys_blob, keys_offsets = _keys(instances, per_instance)
    base = rng.uniform(0.2, 20, series)[:, None]
    phase = rng.uniform(0, 2 * np.pi, series)[:, None]
    level = rng.uniform(0, 1e6, series)[:, None]
    start = end - days * DAY_MS
    total = 0
    for lo in range(start // BLOCK_MS * BLOCK_MS, end, BLOCK_MS):
        ts = np.arange(max(lo, start) + 1_000, min(lo + BLOCK_MS, end), scrape_ms,
                       dtype=np.int64)
        hours = ts / HOUR_MS
        rate = base * (1.2 + np.sin(2 * np.pi * hours / 24 + phase))
        inc = rng.poisson(rate * scrape_ms / 1000).astype(np.float64)
        values = level + np.cumsum(inc, axis=1)
        level = values[:, -1:]
        restarts = rng.random(series) < 0.02  # a few restarts per block
        at = rng.integers(0, len(ts), series)
        for i in np.flatnonzero(restarts):  # a handful of series per block
            values[i, at[i]:] -= values[i, at[i]]
            level[i] = values[i, -1]
        for mint, maxt, block_level in _layout(lo, end):
            a, b = np.searchsorted(ts, [mint, maxt])
            owner = np.repeat(np.arange(series), b - a)
            s, c_lo, c_hi, enc, blob, off = encode_series(
                owner, np.tile(ts[a:b], series), values[:, a:b].reshape(-1),
                dense=maxt - mint > RANGES[1])
            write_block(directory, keys_blob=keys_blob, keys_offsets=keys_offsets,
                        chunk_series=s, chunk_mint=c_lo, chunk_maxt=c_hi,
                        chunk_encoding=enc, chunk_blob=blob, chunk_offsets=off,
                        mint=mint, maxt=maxt, level=block_level)
        total += values.size
    return total


def _layout(lo: int, end: int) -> list[tuple[int, int, int]]:
    """The raw blocks compaction leaves over the 54-hour range starting at ``lo`` with
    data up to ``end``: one dense block once the range is full; before that, the 2-hour
    blocks cut from the head, merged by the compaction planner's rules (18-hour blocks
    dense, 6- and 2-hour ones XOR, as ``compaction.maintainer`` writes them).
    Returns ``(mint, maxt, level)`` per block."""
    if end >= lo + BLOCK_MS:
        return [(lo, lo + BLOCK_MS, len(RANGES))]
    spans = [BlockSpan(str(t), t, t + RANGES[0]) for t in range(lo, end, RANGES[0])]
    while group := plan(spans, RANGES):
        merged = BlockSpan(group[0].ulid, group[0].min_time, group[-1].max_time)
        spans = sorted([s for s in spans if s not in group] + [merged],
                       key=lambda s: s.min_time)
    return [(s.min_time, s.max_time, RANGES.index(s.max_time - s.min_time) + 1)
            for s in spans]


def _time(engine: Engine, start: int, end: int, repeat: int
          ) -> tuple[list[tuple[float, float]], list[tuple[float, float]], Any, Any]:
    """Wall and CPU seconds of the query raw and downsampled, ``repeat`` runs each,
    alternating so that both see the same load on a shared machine; and the last
    answers. CPU time is the process's: load from other work does not inflate it."""
    times: tuple[list[tuple[float, float]], list[tuple[float, float]]] = ([], [])
    answers: list[Any] = [None, None]
    for _ in range(repeat):
        for i, resolution in enumerate((0, None)):
            wall, cpu = time.perf_counter(), time.process_time()
            answers[i] = engine.range_query(QUERY, start, end, HOUR_MS,
                                            max_source_resolution=resolution)
            times[i].append((time.perf_counter() - wall, time.process_time() - cpu))
    return times[0], times[1], answers[0], answers[1]


def _difference(raw: Any, downsampled: Any) -> tuple[float, float]:
    a = np.where(raw.value.present, raw.value.values, np.nan)
    b = np.where(downsampled.value.present, downsampled.value.values, np.nan)
    if a.shape != b.shape:
        return float("inf"), float("inf")
    rel = np.abs(b - a) / np.abs(a)
    return float(np.nanmax(rel)), float(np.nanmedian(rel))


def run(args: argparse.Namespace) -> dict[str, Any]:
    series = args.instances * args.per_instance
    end = int(time.time() * 1000) // HOUR_MS * HOUR_MS
    if args.filled_hours is not None:  # where the run's time falls in the newest block
        end = end // BLOCK_MS * BLOCK_MS + args.filled_hours * HOUR_MS
    workdir = Path(tempfile.mkdtemp(prefix="promstore-downsample-", dir=args.workdir))
    report: dict[str, Any] = {
        "benchmark": "downsample", "query": QUERY, "step": "1h",
        "series": series, "instances": args.instances, "days": 2 * args.days,
        "scrape_s": args.scrape, "newest_block_hours": end % BLOCK_MS / HOUR_MS,
        "after_5m_hours": args.after_5m, "step_hours": args.step,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_before": os.getloadavg()},
    }
    try:
        began = time.perf_counter()
        samples = write_dataset(workdir, args.instances, args.per_instance, 2 * args.days,
                                args.scrape * 1000, end, args.seed)
        report["samples"] = samples
        report["write_s"] = time.perf_counter() - began
        print(f"wrote {samples:,} samples of {series} series in "
              f"{report['write_s']:.1f} s")
        db = DB.open(workdir, DBOptions(compaction_interval=0))
        store = DownsampledStore.open(workdir / "downsampled")
        try:
            began = time.perf_counter()
            options = DownsampleOptions(after_5m_ms=args.after_5m * HOUR_MS,
                                        step_ms=args.step * HOUR_MS)
            made = [m for at in [*range(end - BLOCK_MS, end, 2 * HOUR_MS), end]
                    for m in downsample_due(db, store, options, at)]
            report["downsample_s"] = time.perf_counter() - began
            report["downsampled_blocks"] = len(made)
            report["blocks_served"] = {"5m": len(store.blocks(RESOLUTION_5M)),
                                       "1h": len(store.blocks(RESOLUTION_1H))}
            raw_bytes = sum(directory_bytes(b.meta.path) for b in db.blocks)
            report["bytes"] = {"raw": raw_bytes,
                               "5m": directory_bytes(store.directory / "5m"),
                               "1h": directory_bytes(store.directory / "1h")}
            report["bytes_per_raw_sample"] = {k: v / samples for k, v in report["bytes"].items()}
            print(f"downsampled {len(made)} blocks in {report['downsample_s']:.1f} s "
                  f"({report['blocks_served']['5m']} 5 m and {report['blocks_served']['1h']}"
                  " 1 h blocks served); bytes "
                  + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in report["bytes"].items()))
            # How much of ``now`` is too young for the aggregates: it depends on where
            # the run's time falls among the 54-hour blocks.
            covered = store.coverage_end(RESOLUTION_5M)
            report["now_raw_hours"] = (end - (covered if covered is not None else end
                                              - args.days * DAY_MS)) / HOUR_MS
            print(f"the newest {report['now_raw_hours']:.0f} h are read raw in both runs")
            engine = Engine(TieredStore(db, store))
            engine.range_query(QUERY, end - DAY_MS, end, HOUR_MS)  # compile, warm caches
            report["queries"] = {}
            for name, q_end in (("now", end), ("old", end - args.days * DAY_MS)):
                q_start = q_end - args.days * DAY_MS
                raw_runs, ds_runs, raw, ds = _time(engine, q_start, q_end, args.repeat)
                worst, median = _difference(raw, ds)
                entry: dict[str, Any] = {"max_rel_difference": worst,
                                         "median_rel_difference": median}
                line = []
                for k, clock in enumerate(("wall", "cpu")):
                    r_runs, d_runs = [r[k] for r in raw_runs], [d[k] for d in ds_runs]
                    raw_s, ds_s = statistics.median(r_runs), statistics.median(d_runs)
                    # The ratio of each pair of neighbouring runs: load that comes and
                    # goes on a shared machine moves both alike.
                    speedup = statistics.median(r / d for r, d in zip(r_runs, d_runs))
                    entry[clock] = {"raw_s": raw_s, "downsampled_s": ds_s, "speedup": speedup,
                                    "raw_runs_s": r_runs, "downsampled_runs_s": d_runs}
                    line.append(f"{clock} raw {raw_s:.3f} s, downsampled {ds_s:.3f} s, "
                                f"{speedup:.1f}x")
                report["queries"][name] = entry
                print(f"{name:>4}: " + "; ".join(line) + f"; difference max {worst:.2%}, "
                      f"median {median:.3%}")
        finally:
            store.close()
            db.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # The machine may be shared: its load says how far the times can be trusted.
    report["machine"]["load_after"] = os.getloadavg()
    print("load average (1, 5, 15 min): before "
          + " ".join(f"{x:.2f}" for x in report["machine"]["load_before"]) + ", after "
          + " ".join(f"{x:.2f}" for x in report["machine"]["load_after"]))
    return report


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.downsample",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=int, default=50)
    p.add_argument("--per-instance", type=int, default=4, help="counters per instance")
    p.add_argument("--days", type=int, default=30, help="days per query (data: twice this)")
    p.add_argument("--scrape", type=int, default=15, help="scrape interval in seconds")
    p.add_argument("--repeat", type=int, default=5, help="runs of each query; median kept")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--after-5m", type=int, default=DownsampleOptions().after_5m_ms // HOUR_MS,
                   metavar="HOURS", help="age at which raw data becomes 5-minute windows "
                                         "(downsample_5m_after; default: the server's)")
    p.add_argument("--step", type=int, default=2, metavar="HOURS",
                   help="steps in which a block's part older than the age is downsampled "
                   "(0: whole blocks only)")
    p.add_argument("--filled-hours", type=int, default=None, choices=range(54),
                   metavar="0-53", help="hours of data in the newest block (default: as the "
                   "clock falls)")
    p.add_argument("--workdir", type=Path, default=None, help="where the data goes (temporary)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"downsample-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
