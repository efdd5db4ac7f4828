"""Chunk codec benchmark: XOR against dense chunks on the same series, in this process.

Two datasets of node_exporter-shaped series at a 15 s interval:

- ``synthetic``: the seeded ``node`` workload of ``benchmarks.workloads``;
- ``real``: a real node_exporter + Prometheus capture (``benchmarks.corpus``, made now or
  loaded with ``--corpus``), stretched to the same length by ``StretchedCorpus``.

Every series is cut into chunks of each size asked for and encoded with each codec: XOR
(what the head writes, 120 samples a chunk) and dense (what compaction would write). The
report gives per codec and chunk size: bytes per sample of the chunk data alone and with
the chunk-record framing a block adds (length varint, encoding byte, CRC), and encode and
decode throughput of one bulk call on one core (best of ``--repeat``), after checking
that every sample came back bit for bit. Results go to stdout and, as JSON, to
``benchmarks/results/``.

Run: ``python -m benchmarks.codecs`` (see ``--help`` and ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.corpus import Capture, StretchedCorpus, capture_real, capture_synthetic
from benchmarks.ingest import RESULTS_DIR
from benchmarks.peers import RunRecord
from storage import dense, xor

__all__ = ["Series", "chunk_starts", "main", "measure", "real_series", "synthetic_series"]

_INTERVAL_MS = 15_000
_END_MS = 1_800_000_000_000  # a fixed end keeps timestamps, hence sizes, reproducible


@dataclass(frozen=True)
class Series:
    """Samples of many series back to back: series ``i`` is ``starts[i]:starts[i+1]``."""

    name: str
    source: str
    timestamps: np.ndarray
    values: np.ndarray
    starts: np.ndarray

    @property
    def n_samples(self) -> int:
        return len(self.timestamps)


def synthetic_series(hosts: int, hours: float, seed: int) -> Series:
    """The seeded synthetic node workload."""
    cap = capture_synthetic(hosts=hosts, hours=hours, seed=seed, end_ms=_END_MS)
    return Series("synthetic", cap.source, cap.timestamps, cap.values, cap.sample_starts)


def real_series(capture: Capture, hosts: int, hours: float, seed: int) -> Series:
    """A real capture replayed every 15 s for ``hours`` by ``hosts`` hosts."""
    corpus = StretchedCorpus(capture, hosts=hosts, seed=seed)
    rounds = max(1, round(hours * 3_600_000 / _INTERVAL_MS))
    n = corpus.n_series
    values = corpus.stream(0, n).advance(rounds)  # (rounds, series)
    offsets = corpus.scrape_offsets_ms(np.arange(n))
    first = _END_MS - rounds * _INTERVAL_MS
    ts = first + offsets[:, None] + _INTERVAL_MS * np.arange(rounds, dtype=np.int64)[None, :]
    source = f"{capture.source}; stretched to {rounds} scrapes every 15 s on {hosts} host(s)"
    return Series(
        "real",
        source,
        ts.ravel(),
        np.ascontiguousarray(values.T).ravel(),
        np.arange(n + 1, dtype=np.int64) * rounds,
    )


def chunk_starts(series_starts: np.ndarray, size: int) -> np.ndarray:
    """Chunk bounds cutting every series into chunks of ``size`` samples (the last of a
    series shorter), as ``encode_*_many`` take them."""
    lengths = np.diff(series_starts)
    per_series = -(-lengths // size)
    first = np.repeat(series_starts[:-1], per_series)
    rank = np.arange(len(first)) - np.repeat(np.cumsum(per_series) - per_series, per_series)
    return np.append(first + rank * size, series_starts[-1]).astype(np.int64)


def _best(call: Callable[[], Any], repeat: int) -> tuple[Any, float]:
    result, best = None, float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - began)
    return result, best


def measure(data: Series, codec: str, size: int, repeat: int, level: int) -> dict[str, Any]:
    """Size and speed of one codec at one chunk size on ``data``, round trip checked."""
    bounds = chunk_starts(data.starts, size)
    ts, vs = data.timestamps, data.values
    encode: Callable[..., tuple[np.ndarray, np.ndarray]] = xor.encode_xor_many
    decode: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]] = xor.decode_xor_many
    if codec == "dense":
        encode = partial(dense.encode_dense_many, level=level)
        decode = dense.decode_dense_many
    (blob, offsets), encode_s = _best(lambda: encode(ts, vs, bounds), repeat)
    (got_ts, got_vs, _), decode_s = _best(lambda: decode(blob, offsets), repeat)
    same_values = np.array_equal(got_vs.view(np.uint64), vs.view(np.uint64))
    if not (np.array_equal(got_ts, ts) and same_values):
        raise RuntimeError(f"{codec} chunks of {size} samples did not round-trip")
    lengths = np.diff(offsets)
    # A block stores each chunk as: uvarint length, encoding byte, data, CRC32-C.
    framing = int(np.sum(1 + (lengths >= 0x80) + (lengths >= 0x4000) + (lengths >= 0x200000)))
    framing += 5 * len(lengths)
    row: dict[str, Any] = {
        "dataset": data.name,
        "codec": codec,
        "chunk_samples": size,
        "chunks": len(lengths),
        "bytes": int(offsets[-1]),
        "bytes_per_sample": offsets[-1] / data.n_samples,
        "bytes_per_sample_framed": (offsets[-1] + framing) / data.n_samples,
        "encode_samples_per_s": data.n_samples / encode_s,
        "decode_samples_per_s": data.n_samples / decode_s,
    }
    if codec == "dense":
        row["level"] = level
        layout = blob[offsets[:-1] + 2]
        values = layout & 0x03
        row["chunks_integer"] = int(np.count_nonzero(values != 0))
        row["chunks_split"] = int(np.count_nonzero(values == 3))
        row["chunks_xor_planes"] = int(np.count_nonzero(values == 0))
        row["chunks_zstd"] = int(np.count_nonzero(layout & 0x80))
    return row


def report_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table, with each row's size as a share of XOR's."""
    xor_size = {r["dataset"]: r["bytes_per_sample"] for r in rows if r["codec"] == "xor"}
    head = ("dataset", "codec", "chunk", "B/sample", "+framing", "vs XOR", "encode/s", "decode/s")
    lines = [head]
    for r in rows:
        base = xor_size.get(r["dataset"])
        lines.append(
            (
                r["dataset"],
                r["codec"] + (f" (zstd {r['level']})" if "level" in r else ""),
                str(r["chunk_samples"]),
                f"{r['bytes_per_sample']:.3f}",
                f"{r['bytes_per_sample_framed']:.3f}",
                f"{r['bytes_per_sample'] / base:.1%}" if base else "",
                f"{r['encode_samples_per_s'] / 1e6:.1f} M",
                f"{r['decode_samples_per_s'] / 1e6:.1f} M",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines)


def _capture(args: argparse.Namespace) -> Capture | None:
    if args.corpus:
        return Capture.load(args.corpus)
    print(
        f"capturing {args.capture_seconds:g} s of node_exporter scrapes through Prometheus...",
        flush=True,
    )
    try:
        capture = capture_real(args.capture_seconds, 1.0)
    except (RuntimeError, OSError) as exc:
        print(f"note: no real capture ({exc}); the real dataset is left out")
        return None
    if args.save_corpus:
        capture.save(args.save_corpus)
        print(f"capture saved to {args.save_corpus} (rerun with --corpus to reuse it)")
    return capture


def _sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s]
    if not sizes or any(not 1 <= s <= dense.MAX_SAMPLES_PER_CHUNK for s in sizes):
        raise argparse.ArgumentTypeError(f"chunk sizes must be in 1..{dense.MAX_SAMPLES_PER_CHUNK}")
    return sizes


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.codecs",
        description="Bytes per sample and encode/decode speed of XOR and dense chunks.",
    )
    p.add_argument(
        "--datasets",
        default="synthetic,real",
        help="comma-separated: synthetic, real (default both)",
    )
    p.add_argument("--hours", type=float, default=24.0, help="hours of data at 15 s")
    p.add_argument("--hosts", type=int, default=1, help="hosts (copies of the capture)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--corpus", type=Path, help="a capture saved by benchmarks.corpus")
    p.add_argument("--save-corpus", type=Path, metavar="FILE", help="save the capture made now")
    p.add_argument(
        "--capture-seconds",
        type=float,
        default=120.0,
        help="length of a real capture made now, scraped every second",
    )
    p.add_argument("--xor-sizes", type=_sizes, default=[120], help="XOR chunk sizes")
    p.add_argument(
        "--dense-sizes",
        type=_sizes,
        default=[120, dense.TARGET_SAMPLES_PER_CHUNK],
        help="dense chunk sizes",
    )
    p.add_argument("--level", type=int, default=dense.DEFAULT_LEVEL, help="dense zstd level")
    p.add_argument("--repeat", type=int, default=5, help="runs of each call; the best is kept")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON result")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = _parse_args(argv)
    record = RunRecord.start("benchmarks.codecs", argv)
    # Compile or load the kernels before anything is timed.
    warm = chunk_starts(np.array([0, 300]), 100)
    dense.decode_dense_many(*dense.encode_dense_many(np.arange(300), np.arange(300) / 4, warm))
    xor.decode_xor_many(*xor.encode_xor_many(np.arange(300), np.arange(300) / 4, warm))

    datasets: list[Series] = []
    wanted = {d.strip() for d in args.datasets.split(",") if d.strip()}
    if "synthetic" in wanted:
        datasets.append(synthetic_series(args.hosts, args.hours, args.seed))
    if "real" in wanted and (capture := _capture(args)) is not None:
        datasets.append(real_series(capture, args.hosts, args.hours, args.seed))
    rows: list[dict[str, Any]] = []
    for data in datasets:
        n_series = len(data.starts) - 1
        print(
            f"\n{data.name}: {data.source}\n  {n_series:,} series, {data.n_samples:,} samples",
            flush=True,
        )
        for codec, sizes in (("xor", args.xor_sizes), ("dense", args.dense_sizes)):
            for size in sizes:
                rows.append(measure(data, codec, size, args.repeat, args.level))

    print()
    print(report_table(rows))
    print(
        "B/sample: chunk data only; +framing: with the block's chunk record around each "
        "chunk (length varint, encoding byte, CRC32-C). encode/decode: samples per second "
        f"of one bulk call on one core, best of {args.repeat}."
    )
    report = {
        "datasets": [
            {
                "name": d.name,
                "source": d.source,
                "series": len(d.starts) - 1,
                "samples": d.n_samples,
            }
            for d in datasets
        ],
        "rows": rows,
    }
    record.save(args.out, "codecs", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
