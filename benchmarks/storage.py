"""Storage benchmark: the same hours of data in promstore and its peers, then disk, memory
and read figures.

A dataset of several hours at a 15 s interval (a real node_exporter capture stretched by
``benchmarks.corpus``, or the synthetic ``node`` workload) is remote-written, backfilled
so that it ends a few minutes ago, into each target started fresh. Once the target has
cut its blocks (``<data>/<ULID>/meta.json``; VictoriaMetrics is flushed and merged
instead, see ``settle_victoriametrics``), the report gives, per target:

- bytes per sample on disk: blocks only, and every file (blocks, WAL, head chunks);
- resident memory per active series (after the load, and its growth over idle);
- bytes per sample after compaction, over every sample written: a snapshot of
  promstore and of Prometheus (their admin API's, which writes the head's samples as
  one more block beside hard links of the blocks) merged into one block by promstore's
  compactor (``compaction.compactor.compact``): promstore's with dense chunks,
  Prometheus's the way Prometheus merges (XOR chunks carried over); VictoriaMetrics's
  data once flushed, force-merged and settled. Where the merged block's bytes go
  (index sections, chunk data by encoding, chunk record framing) is reported beside;
- read throughput in samples per second: every sample through the PromQL API (a range
  selector at hourly instants), every sample read raw (remote read, or
  ``/api/v1/export`` for VictoriaMetrics), and the target's blocks read in this process
  with promstore's ``storage.block`` and ``storage.chunkenc.decode_many`` (both write
  the Prometheus block format), whole and decoding alone, before and after compaction;

and promstore's figures as ratios to each peer's. Results go to stdout and to
``benchmarks/results/`` as JSON.

Run: ``python -m benchmarks.storage --preset quick`` (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import snappy  # type: ignore[import-untyped]

from benchmarks import loadgen
from benchmarks.corpus import Capture, StretchedCorpus, capture_real, read_request, remote_read
from benchmarks.ingest import RESULTS_DIR, exit_on_sigterm, select_targets
from benchmarks.peers import PROMETHEUS, VICTORIAMETRICS, RunRecord, Server, Target, running
from benchmarks.workloads import Workload, make_workload
from compaction.compactor import compact
from promstore.remote.pb import remote_pb2
from storage import chunkenc
from storage.block import Block
from storage.block_index import section_sizes
from storage.errors import CorruptionError

__all__ = ["PRESETS", "Preset", "bench_target", "block_breakdown", "compacted", "main",
           "read_blocks", "settle_victoriametrics", "snapshot", "wait_for_blocks"]

_HOUR_MS = 3_600_000
_END_BEFORE_NOW_MS = 5 * 60_000  # VictoriaMetrics hides the last 30 s from queries
_HTTP_TIMEOUT_S = 300.0
# promstore and Prometheus both name it so; the snapshot API is behind it.
_ADMIN_FLAGS = ("--web.enable-admin-api",)


@dataclass(frozen=True)
class Preset:
    """A benchmark size: the data written and the bounds on waiting."""

    hosts: int  # copies of the captured fleet (or synthetic hosts)
    hours: float  # of data at a 15 s interval
    capture_s: float  # length of the real capture, scraped every second
    ingest_bound_s: float  # wall-clock bound on sending the data to one target
    note: str


PRESETS: dict[str, Preset] = {
    # 6 h: Prometheus cuts two 2 h blocks and keeps about 2 h in its head.
    "quick": Preset(4, 6.0, 60.0, 300.0, "4 hosts, 6 h at 15 s"),
    "big": Preset(20, 8.0, 120.0, 1800.0, "20 hosts, 8 h at 15 s"),
}


# -- the dataset ------------------------------------------------------------------------


Dataset = StretchedCorpus | Workload


def build_dataset(args: argparse.Namespace, preset: Preset) -> Dataset:
    """The stretched real capture (from ``--corpus`` or captured now) or the synthetic
    fleet; a real capture that cannot be made falls back to synthetic data."""
    hosts = args.hosts or preset.hosts
    if args.source == "synthetic":
        return make_workload("node", hosts=hosts, seed=args.seed)
    if args.corpus:
        capture = Capture.load(args.corpus)
    else:
        print(f"capturing {preset.capture_s:g} s of node_exporter and Prometheus scrapes...",
              flush=True)
        try:
            capture = capture_real(preset.capture_s, 1.0)
        except (RuntimeError, OSError) as exc:
            print(f"note: no real capture ({exc}); using the synthetic node workload")
            return make_workload("node", hosts=hosts, seed=args.seed)
        if args.save_corpus:
            capture.save(args.save_corpus)
            print(f"capture saved to {args.save_corpus} (rerun with --corpus to reuse it)")
    return StretchedCorpus(capture, hosts=hosts, seed=args.seed)


# -- what a target left on disk -----------------------------------------------------------


def _dir_bytes(path: Path) -> int:
    """Apparent size of the files under ``path`` (or of ``path`` itself), skipping files
    the server removes meanwhile."""
    total = 0
    for p in (path.rglob("*") if path.is_dir() else [path]):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def _blocks(data_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Finished blocks: directories holding a readable ``meta.json``, oldest first."""
    found = []
    for meta in sorted(data_dir.glob("*/meta.json")):
        try:
            found.append((meta.parent, json.loads(meta.read_text())))
        except (OSError, ValueError):
            continue  # being written or removed by the server
    return found


def _busy(data_dir: Path) -> bool:
    """Whether a block is being written (Prometheus writes ``<ULID>.tmp-for-creation``)."""
    return any(".tmp" in p.name for p in data_dir.iterdir())


def wait_for_blocks(data_dir: Path, *, first_s: float, stable_s: float) -> list[Path]:
    """Wait until at least one block exists and the set has not changed for ``stable_s``.

    Gives up (returning what exists, maybe nothing) when no block appeared within
    ``first_s``, or ``first_s`` after the first one without settling.
    """
    began = time.monotonic()
    seen: tuple[str, ...] = ()
    changed = began
    first_block_at: float | None = None
    while True:
        now = time.monotonic()
        blocks = tuple(p.name for p, _ in _blocks(data_dir))
        if blocks != seen or _busy(data_dir):
            seen, changed = blocks, now
        if blocks and first_block_at is None:
            first_block_at = now
        if blocks and now - changed >= stable_s:
            break
        if first_block_at is None and now - began > first_s:
            break
        if first_block_at is not None and now - first_block_at > first_s:
            break
        time.sleep(0.5)
    return [data_dir / name for name in seen]


def _vm_metrics(server: Server) -> dict[str, float]:
    """VictoriaMetrics's own gauges of merges, parts and rows (``/metrics``), summed by
    name (``vm_rows{type="storage/small"}`` and ``{type="storage/big"}`` add up)."""
    wanted = ("vm_active_merges", "vm_active_force_merges", "vm_parts", "vm_rows",
              "vm_pending_rows")
    out: dict[str, float] = dict.fromkeys(wanted, 0.0)
    for line in _get(server.base_url + "/metrics").decode().splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted and 'type="indexdb' not in line:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


def settle_victoriametrics(server: Server, data_dir: Path, *, stable_s: float,
                           bound_s: float) -> dict[str, float]:
    """Flush VictoriaMetrics, merge each of its partitions into one part, and wait until
    no merge runs and its files stop changing for ``stable_s``: its data in the most
    compact form it reaches by itself, the counterpart of promstore's blocks merged
    into one.

    Waiting for the bytes alone is not enough: after ``force_flush`` VictoriaMetrics
    writes some parts seconds later (its files can stay unchanged that long), and a
    merge asked for before they exist leaves them out, so the merge is asked for again
    while a partition holds more than one part. Returns its last gauges.
    """
    _get(server.base_url + "/internal/force_flush")
    deadline = time.monotonic() + bound_s
    size, since = -1, time.monotonic()
    metrics = _vm_metrics(server)
    while time.monotonic() < deadline:
        metrics = _vm_metrics(server)
        busy = metrics["vm_active_merges"] or metrics["vm_active_force_merges"]
        # One directory per month under data/small and data/big.
        partitions = {p.name for p in data_dir.glob("data/*/*_*") if p.is_dir()}
        if not busy and metrics["vm_parts"] > len(partitions):
            _get(server.base_url + "/internal/force_merge")  # every partition
            busy = True
        now_size = _dir_bytes(data_dir)
        if busy or now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= stable_s:
            break
        time.sleep(0.5)
    return metrics


def disk_usage(data_dir: Path, block_dirs: list[Path]) -> dict[str, Any]:
    """Bytes in blocks and in everything else, and the samples the blocks say they hold."""
    metas = {p: meta for p, meta in _blocks(data_dir)}
    block_bytes = sum(_dir_bytes(p) for p in block_dirs)
    samples = [metas.get(p, {}).get("stats", {}).get("numSamples") for p in block_dirs]
    return {
        "blocks": len(block_dirs),
        "block_bytes": block_bytes,
        "block_samples": sum(samples) if block_dirs and None not in samples else None,
        "block_ranges_ms": [[metas[p].get("minTime"), metas[p].get("maxTime")]
                            for p in block_dirs if p in metas],
        "total_bytes": _dir_bytes(data_dir),
        "by_directory": {p.name: _dir_bytes(p) for p in sorted(data_dir.iterdir())
                         if p not in block_dirs},
    }


# -- reading blocks in this process ------------------------------------------------------


def read_blocks(block_dirs: list[Path], repeat: int) -> dict[str, Any]:
    """Every sample of the blocks read with promstore's storage API in this process.

    Per block: ``Block.open``, every series (``select_series`` without matchers), their
    chunks (``Block.chunks``: index decoded, chunk bytes gathered and checksummed) and
    ``storage.chunkenc.decode_many`` over them (XOR and dense chunks alike). Reports the
    whole read and the decoding alone, median of ``repeat`` runs after one to warm up
    (kernels load or compile). Raises ``CorruptionError`` for a block storage cannot read.
    """
    reads, decodes = [], []
    samples = chunks = chunk_bytes = 0
    for run in range(repeat + 1):
        read_s = decode_s = 0.0
        samples = chunks = chunk_bytes = 0
        for path in block_dirs:
            began = time.perf_counter()
            with Block.open(path) as block:
                meta = block.meta
                ids = block.select_series([], meta.min_time, meta.max_time - 1)
                found = block.chunks(ids, meta.min_time, meta.max_time - 1)
            gathered = time.perf_counter()
            samples += len(chunkenc.decode_many(found.encoding, found.blob, found.offsets)[0])
            done = time.perf_counter()
            read_s += done - began
            decode_s += done - gathered
            chunks += found.n_chunks
            chunk_bytes += int(found.offsets[-1])
        if run:  # the first run warms up
            reads.append(read_s)
            decodes.append(decode_s)
    read_s, decode_s = statistics.median(reads), statistics.median(decodes)
    return {"blocks": len(block_dirs), "chunks": chunks, "chunk_bytes": chunk_bytes,
            "samples": samples, "seconds": read_s, "decode_seconds": decode_s,
            "samples_per_s": samples / read_s if read_s else None,
            "decode_samples_per_s": samples / decode_s if decode_s else None}


def snapshot(server: Server) -> list[Path]:
    """The blocks of a snapshot of ``server`` (promstore or Prometheus) with its head:
    ``POST /api/v1/admin/tsdb/snapshot`` hard-links the blocks into
    ``<data>/snapshots/<name>/`` and writes the head's samples there as one more block,
    so that the blocks together hold every sample the server has."""
    request = urllib.request.Request(server.base_url + "/api/v1/admin/tsdb/snapshot",
                                     data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as resp:
        name = json.loads(resp.read())["data"]["name"]
    return [p for p, _ in _blocks(server.workdir / "data" / "snapshots" / name)]


def block_breakdown(path: Path) -> dict[str, Any]:
    """Where the bytes of the block at ``path`` go: index sections
    (``storage.block_index.section_sizes``), chunk data by encoding name, the chunk
    records' framing (length, encoding byte, checksum, segment headers) and the rest
    (``meta.json``, tombstones)."""
    index = section_sizes(path / "index")
    segments = sum(p.stat().st_size for p in (path / "chunks").iterdir())
    with Block.open(path) as block:
        meta = block.meta
        found = block.chunks(np.arange(block.n_series), meta.min_time, meta.max_time - 1)
    sizes = np.diff(found.offsets)
    by_encoding = {chunkenc.codec_for(int(e)).name: int(sizes[found.encoding == e].sum())
                   for e in np.unique(found.encoding)}
    total = _dir_bytes(path)
    return {"index": index, "chunk_data": by_encoding,
            "chunk_framing": segments - int(sizes.sum()),
            "other": total - sum(index.values()) - segments, "total": total,
            "series": meta.num_series, "chunks": meta.num_chunks, "samples": meta.num_samples}


def compacted(block_dirs: list[Path], *, dense: bool, repeat: int) -> dict[str, Any]:
    """The blocks merged into one by promstore's compactor in a scratch directory, with
    dense chunks or (``dense`` false) with their XOR chunks carried over, as Prometheus's
    own compaction keeps them: its bytes per sample, where they go, and ``read_blocks``
    of it.

    The blocks are hard-linked first, so that a server compacting or deleting its own
    meanwhile does not pull them away."""
    with tempfile.TemporaryDirectory(prefix="bench-compacted-") as scratch:
        sources = []
        for path in block_dirs:
            sources.append(Path(scratch) / "sources" / path.name)
            shutil.copytree(path, sources[-1], copy_function=os.link)
        blocks = [Block.open(p) for p in sources]
        began = time.perf_counter()
        try:
            meta = compact(Path(scratch), blocks, dense=dense)
        finally:
            for block in blocks:
                block.close()
        seconds = time.perf_counter() - began
        size = _dir_bytes(meta.path)
        breakdown = block_breakdown(meta.path)
        read = read_blocks([meta.path], repeat)
    return {"encoding": "dense" if dense else "xor", "blocks_merged": len(block_dirs),
            "bytes": size, "samples": meta.num_samples, "compact_seconds": round(seconds, 2),
            "span_ms": [meta.min_time, meta.max_time],
            "bytes_per_sample": size / meta.num_samples if meta.num_samples else None,
            "breakdown": breakdown, "block_read": read}


# -- reading through HTTP -----------------------------------------------------------------


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as resp:
        return bytes(resp.read())


def _timed(call: Callable[[], Any], repeat: int) -> tuple[Any, float]:
    """The last result of ``call`` and the median seconds it took over ``repeat`` calls."""
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - began)
    return result, statistics.median(times)


def promql_select(server: Server, mint: int, maxt: int, repeat: int) -> dict[str, Any]:
    """Every sample of ``[mint, maxt]`` through the PromQL query API: the range selector
    ``{__name__=~".+"}[1h]`` evaluated at hourly instants, one request each.

    (An aggregate such as ``sum(count_over_time(...))`` would answer in a few bytes, but
    Prometheus refuses it here: dropping metric names leaves series with equal labels.)
    Samples are counted from the JSON after the clock stops.
    """
    instants = range(mint - 1 + _HOUR_MS, maxt + _HOUR_MS, _HOUR_MS)
    urls = [f"{server.base_url}/api/v1/query?" + urllib.parse.urlencode(
        {"query": '{__name__=~".+"}[1h]', "time": f"{t / 1000:.3f}"}) for t in instants]
    bodies, seconds = _timed(lambda: [_get(url) for url in urls], repeat)
    samples = sum(len(series["values"]) for body in bodies
                  for series in json.loads(body)["data"]["result"])
    return {"query": '{__name__=~".+"}[1h]', "requests": len(urls),
            "bytes": sum(len(b) for b in bodies), "samples": samples, "seconds": seconds,
            "samples_per_s": samples / seconds if seconds else None}


def _hour_windows(mint: int, maxt: int) -> list[tuple[int, int]]:
    return [(a, min(a + _HOUR_MS - 1, maxt)) for a in range(mint, maxt + 1, _HOUR_MS)]


def raw_read(server: Server, mint: int, maxt: int, repeat: int) -> dict[str, Any]:
    """Every sample of ``[mint, maxt]`` read raw, an hour per request: remote read
    (``SAMPLES``), or ``/api/v1/export`` for VictoriaMetrics, which has no remote read.
    Samples are counted after the clock stops."""
    windows = _hour_windows(mint, maxt)
    if server.target is VICTORIAMETRICS:
        api = "/api/v1/export"

        def fetch(a: int, b: int) -> bytes:
            params = {"match[]": '{__name__=~".+"}', "start": f"{a / 1000:.3f}",
                      "end": f"{b / 1000:.3f}"}
            return _get(f"{server.base_url}{api}?{urllib.parse.urlencode(params)}")

        count = _count_export
    else:
        api = "/api/v1/read (SAMPLES)"

        def fetch(a: int, b: int) -> bytes:
            return remote_read(server.base_url, read_request(a, b, streamed=False),
                               timeout_s=_HTTP_TIMEOUT_S)

        count = _count_read_response
    bodies, seconds = _timed(lambda: [fetch(a, b) for a, b in windows], repeat)
    samples = sum(count(body) for body in bodies)
    return {"api": api, "requests": len(windows), "bytes": sum(len(b) for b in bodies),
            "samples": samples, "seconds": seconds,
            "samples_per_s": samples / seconds if seconds else None}


def _count_export(body: bytes) -> int:
    return sum(len(json.loads(line)["values"]) for line in body.splitlines() if line)


def _count_read_response(body: bytes) -> int:
    response = remote_pb2.ReadResponse.FromString(snappy.uncompress(body))
    return sum(len(series.samples) for result in response.results
               for series in result.timeseries)


def _measure(what: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measurement; a failure (missing API, refusal) becomes ``{"error": …}``."""
    try:
        return call()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace").strip()
        return {"error": f"{what}: HTTP {exc.code} {detail}"}
    except (OSError, ValueError, KeyError, IndexError, RuntimeError, CorruptionError) as exc:
        return {"error": f"{what}: {type(exc).__name__}: {exc}"}


# -- one target ---------------------------------------------------------------------------


def bench_target(target: Target, plan: loadgen.LoadPlan, n_series: int,
                 args: argparse.Namespace, ingest_bound_s: float) -> dict[str, Any]:
    """Start ``target`` fresh, write the plan, wait for its blocks, measure; always stops it."""
    mint = plan.start_ms
    maxt = plan.start_ms + plan.rounds * plan.interval_ms - 1
    flags = () if target is VICTORIAMETRICS else _ADMIN_FLAGS
    with running(target, ready_timeout_s=args.ready_timeout, flags=flags) as server:
        data_dir = server.workdir / "data"
        time.sleep(args.idle)
        rss_idle = server.rss_bytes()
        load = loadgen.run(plan, server.write_url, duration_s=ingest_bound_s)
        waited = time.monotonic()
        vm_state: dict[str, Any] = {}
        if target is VICTORIAMETRICS:
            vm_state = _measure("settle", lambda: settle_victoriametrics(
                server, data_dir, stable_s=5.0, bound_s=max(args.block_wait, 300.0)))
            block_dirs: list[Path] = []
        else:
            block_dirs = wait_for_blocks(data_dir, first_s=args.block_wait, stable_s=3.0)
        waited = time.monotonic() - waited
        time.sleep(args.settle)
        rss_after = server.rss_bytes()
        disk = disk_usage(data_dir, block_dirs)
        promql = _measure("promql", lambda: promql_select(server, mint, maxt, args.query_repeat))
        raw = _measure("raw read", lambda: raw_read(server, mint, maxt, args.query_repeat))
        # Reading blocks in this process takes milliseconds: more runs steady the median.
        in_process = (_measure("block read",
                               lambda: read_blocks(block_dirs, 5 * args.query_repeat))
                      if block_dirs else {"error": "no blocks"})
        # Over every sample, as VictoriaMetrics's figure is: the blocks and the head,
        # through a snapshot taken after the disk figures (its hard links would count
        # twice). promstore's figure is for its dense encoding; Prometheus's for what its
        # compaction would keep (XOR chunks as they are, one index).
        merged = ({} if target is VICTORIAMETRICS else _measure(
            "compaction", lambda: compacted(snapshot(server), dense=target is not PROMETHEUS,
                                            repeat=5 * args.query_repeat)))
        argv = server.argv
    accepted = load.samples_accepted
    active = load.series_created or n_series
    if target is VICTORIAMETRICS:
        # Every file of VictoriaMetrics is long-term storage: it keeps no WAL or head, and
        # what it holds once flushed and merged into one part is its compacted form.
        disk["block_bytes"], disk["block_samples"] = disk["total_bytes"], accepted
        merged = {"encoding": "victoriametrics", "bytes": disk["total_bytes"],
                  "samples": accepted, "state": vm_state,
                  "bytes_per_sample": disk["total_bytes"] / accepted if accepted else None}
    return {
        "target": target.name,
        "version": target.version(),
        "argv": argv,
        "load": load.to_dict(),
        "wait_for_blocks_s": round(waited, 1),
        "disk": disk,
        "bytes_per_sample_blocks": (disk["block_bytes"] / disk["block_samples"]
                                    if disk["block_samples"] else None),
        "bytes_per_sample_all": disk["total_bytes"] / accepted if accepted else None,
        "rss_idle_bytes": rss_idle,
        "rss_after_bytes": rss_after,
        "rss_per_series_bytes": rss_after / active,
        "rss_delta_per_series_bytes": (rss_after - rss_idle) / active,
        "promql": promql,
        "raw_read": raw,
        "block_read": in_process,
        "compacted": merged,
    }


# -- report -------------------------------------------------------------------------------

# (column title, how to get the figure from a row, format, higher is better)
_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], float | None], str, bool]] = [
    ("ingest samples/s", lambda r: r["load"]["samples_per_s"], ",.0f", True),
    ("blocks", lambda r: r["disk"]["blocks"], "d", True),
    ("B/sample blocks", lambda r: r["bytes_per_sample_blocks"], ".2f", False),
    ("B/sample compacted", lambda r: r["compacted"].get("bytes_per_sample"), ".3f", False),
    ("B/sample all files", lambda r: r["bytes_per_sample_all"], ".2f", False),
    ("RSS/series B", lambda r: r["rss_per_series_bytes"], ",.0f", False),
    ("ΔRSS/series B", lambda r: r["rss_delta_per_series_bytes"], ",.0f", False),
    ("PromQL samples/s", lambda r: r["promql"].get("samples_per_s"), ",.0f", True),
    ("raw read samples/s", lambda r: r["raw_read"].get("samples_per_s"), ",.0f", True),
    ("block read samples/s", lambda r: r["block_read"].get("samples_per_s"), ",.0f", True),
    ("decode samples/s", lambda r: r["block_read"].get("decode_samples_per_s"), ",.0f", True),
    ("compacted decode/s",
     lambda r: r["compacted"].get("block_read", {}).get("decode_samples_per_s"), ",.0f", True),
]


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _grid(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                  for i, (c, w) in enumerate(zip(line, widths))).rstrip()
        for line in lines)


def report_table(rows: list[dict[str, Any]]) -> str:
    """Figures per target, then promstore's as ratios to each peer's."""
    done = [r for r in rows if "load" in r]
    lines = [("target", *(c[0] for c in _COLUMNS))]
    lines += [(r["target"], *(_fmt(get(r), spec) for _, get, spec, _ in _COLUMNS))
              for r in done]
    out = [_grid(lines)]
    ours = next((r for r in done if r["target"] == "promstore"), None)
    peers = [r for r in done if r["target"] != "promstore"]
    if ours and peers:
        ratios = [("promstore ÷", *(c[0] for c in _COLUMNS[2:]))]
        for peer in peers:
            cells = []
            for _, get, _, _ in _COLUMNS[2:]:
                a, b = get(ours), get(peer)
                cells.append(_fmt(a / b if a is not None and b else None, ".2f"))
            ratios.append((peer["target"], *cells))
        out += ["", _grid(ratios)]
    out += [f"{r['target']}: failed ({r['error'].splitlines()[0]})" for r in rows
            if "load" not in r]
    return "\n".join(out)


def _narrate(row: dict[str, Any], expected: int) -> None:
    load, disk = row["load"], row["disk"]
    print(f"   {shlex.join(row['argv'])}")
    print(f"   {load['samples_accepted']:,} of {expected:,} samples accepted in "
          f"{load['elapsed_s']:.1f} s, statuses {load['status_counts']}")
    for err in load["errors"]:
        print(f"   {err}")
    print(f"   {disk['blocks']} blocks ({disk['block_bytes']:,} bytes, "
          f"{_fmt(disk['block_samples'], ',')} samples) after {row['wait_for_blocks_s']} s; "
          f"all files {disk['total_bytes']:,} bytes: {disk['by_directory']}")
    for key, want in (("promql", expected), ("raw_read", expected),
                      ("block_read", disk["block_samples"])):
        m = row[key]
        if "error" in m:
            print(f"   {key}: {m['error']}")
            continue
        short = f" (expected {want:,})" if want is not None and m["samples"] != want else ""
        print(f"   {key}: {m['samples']:,} samples{short} in {m['seconds']:.3f} s "
              f"({_fmt(m['samples_per_s'], ',.0f')}/s)")
    merged = row["compacted"]
    if "error" in merged:
        print(f"   compacted: {merged['error']}")
    elif "blocks_merged" in merged:
        hours = (merged["span_ms"][1] - merged["span_ms"][0]) / _HOUR_MS
        print(f"   compacted: {merged['blocks_merged']} snapshot blocks (head included) merged "
              f"into one ({merged['encoding']} chunks) in {merged['compact_seconds']} s: "
              f"{merged['bytes']:,} bytes, "
              f"{_fmt(merged['bytes_per_sample'], '.3f')} B/sample, "
              f"{merged['samples']:,} of {expected:,} samples over {hours:.2f} h")
        print(f"   {_describe_breakdown(merged['breakdown'])}")


def _describe_breakdown(b: dict[str, Any]) -> str:
    """One line: bytes per series of the index by section, bytes per sample of chunks."""
    series, samples = max(b["series"], 1), max(b["samples"], 1)
    index = ", ".join(f"{name} {size / series:.1f}" for name, size in b["index"].items())
    chunks = ", ".join(f"{name} {size / samples:.4f}" for name, size in b["chunk_data"].items())
    return (f"index {sum(b['index'].values()) / series:.1f} B/series ({index}); chunk data "
            f"B/sample: {chunks}; chunk framing {b['chunk_framing'] / samples:.4f} B/sample "
            f"({b['chunks']:,} chunks); other {b['other']:,} bytes")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.storage",
        description="Disk, memory and read figures of promstore and its peers for the same data.",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--targets", default="", help="comma-separated subset (default: all installed)")
    p.add_argument("--source", choices=("real", "synthetic"), default="real",
                   help="a stretched node_exporter capture, or the synthetic node workload")
    p.add_argument("--corpus", type=Path, help="a capture saved by benchmarks.corpus")
    p.add_argument("--save-corpus", type=Path, metavar="FILE",
                   help="save the real capture made for this run as .npz")
    p.add_argument("--hosts", type=int, help="hosts (overrides the preset)")
    p.add_argument("--hours", type=float, help="hours of data (overrides the preset)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=loadgen.DEFAULT_CONCURRENCY)
    p.add_argument("--batch", type=int, default=loadgen.DEFAULT_BATCH)
    p.add_argument("--block-wait", type=float, default=60.0,
                   help="seconds to wait for a first block after the load")
    p.add_argument("--query-repeat", type=int, default=3, help="runs of each read; median kept")
    p.add_argument("--idle", type=float, default=2.0, help="seconds between ready and idle RSS")
    p.add_argument("--settle", type=float, default=3.0, help="seconds before the RSS after load")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON result")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 1 when a target failed or refused samples."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = _parse_args(argv)
    preset = PRESETS[args.preset]
    targets = select_targets(args.targets)
    if not targets:
        print("no target to benchmark")
        return 1
    overridden = args.hosts is not None or args.hours is not None
    label = f"{args.preset}-custom" if overridden else args.preset
    record = RunRecord.start("benchmarks.storage", argv)

    dataset = build_dataset(args, preset)
    hours = args.hours or preset.hours
    rounds = max(1, round(hours * _HOUR_MS / dataset.interval_ms))
    end_ms = int(time.time() * 1000) - _END_BEFORE_NOW_MS
    plan = loadgen.build_plan(dataset, dataset.n_series * rounds, batch=args.batch,
                              concurrency=args.concurrency, end_ms=end_ms)
    facts = dataset.describe()
    print(f"preset:  {label} ({preset.note}{'; overridden' if overridden else ''})")
    source = facts.get("source", f"synthetic {facts['workload']} workload, seed {args.seed}")
    print(f"data:    {source}")
    print(f"         {dataset.n_series:,} series on {facts['hosts']} hosts, {rounds} scrapes "
          f"every {dataset.interval_ms / 1000:g} s ({hours:g} h) = {plan.samples:,} samples, "
          f"{plan.encoded_bytes / 2**20:,.1f} MiB snappy in {plan.requests:,} requests, "
          f"encoded in {plan.encode_s:.1f} s")

    rows: list[dict[str, Any]] = []
    for target in targets:
        print(f"\n== {target.name} {target.version()}: {target.durability}", flush=True)
        try:
            row = bench_target(target, plan, dataset.n_series, args, preset.ingest_bound_s)
        except (RuntimeError, OSError) as exc:
            print(f"   failed: {exc}")
            rows.append({"target": target.name, "error": str(exc)})
            continue
        _narrate(row, plan.samples)
        rows.append(row)

    print()
    print(report_table(rows))
    print("PromQL: every sample as {__name__=~\".+\"}[1h] at hourly instants (JSON); raw read: "
          "remote read SAMPLES, or /api/v1/export for VictoriaMetrics. "
          "B/sample blocks: bytes of block directories / samples their meta.json counts; "
          "all files: the whole data directory / samples accepted (VictoriaMetrics has no "
          "WAL: all its files count as blocks). block read: the target's blocks read in this "
          "process with storage.block (index, chunks, checksums) and decoded with "
          "storage.chunkenc.decode_many; decode: the decoding alone. B/sample compacted, "
          "over every sample written: a snapshot of promstore (blocks and head) merged into "
          "one block by its compactor (dense chunks), Prometheus's snapshot merged as "
          "Prometheus does (XOR chunks kept), VictoriaMetrics's data flushed, force-merged "
          "and settled; compacted decode: the merged block read in this process.")

    record.save(args.out, f"storage-{label}", {"preset": label, "data": facts,
                                               "plan": plan.describe(), "targets": rows})
    failed = any("error" in r or r["load"]["non_2xx"] for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
