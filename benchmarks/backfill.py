"""Weeks of a workload written straight into two-hour blocks.

A week of 100,000 series at a 15 s interval is four billion samples: sent through
remote write, encoding alone would take hours on a small machine. Benchmarks that only
need the data in place (query latency over long ranges) write the same scrapes here as
Prometheus-format blocks instead (XOR chunks of 120 samples, one block per aligned
two-hour range), which promstore and Prometheus both open and then compact on their
own. Every series is scraped at ``start_ms + r * interval`` (no per-host offset).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks._encode import encode_write_request
from benchmarks.workloads import ValueStream, Workload
from promstore.remote.wire import WireLimits, decode_write_request
from storage.block import BlockMeta, write_block
from storage.chunk_merge import encode_series
from storage.labels import NO_LIMITS, canonicalise
from storage.series import SeriesRegistry

__all__ = ["Backfilled", "series_keys", "write_blocks"]

BLOCK_MS = 2 * 3_600_000


@dataclass(frozen=True)
class Backfilled:
    """What :func:`write_blocks` wrote."""

    blocks: int
    series: int
    samples: int
    bytes: int
    seconds: float


def series_keys(workloads: Sequence[Workload]) -> tuple[np.ndarray, np.ndarray]:
    """Canonical label keys (``name 0xFF value 0xFF``, names sorted) of every series of
    ``workloads`` in order, taken from the remote-write encoding the load generator uses
    so that both paths store the same label sets."""
    registry = SeriesRegistry()
    refs = []
    for w in workloads:
        series = np.arange(w.n_series, dtype=np.int64)
        body = encode_write_request(w.label_segments(series), np.zeros(len(series)),
                                    np.ones(len(series), np.int64))
        limits = WireLimits(max_series=len(series), max_labels=16 * len(series),
                            max_samples=len(series))
        batch = decode_write_request(body, limits)
        refs.append(registry.resolve(canonicalise(batch, NO_LIMITS))[0])
    return registry.keys(np.concatenate(refs))


def write_blocks(directory: Path, workloads: Sequence[Workload], start_ms: int, rounds: int,
                 *, progress: bool = True) -> Backfilled:
    """Write ``rounds`` scrapes of every workload from ``start_ms`` (a multiple of the
    common interval) into ``directory`` as blocks of aligned two-hour ranges."""
    interval = workloads[0].interval_ms
    if any(w.interval_ms != interval for w in workloads) or start_ms % interval:
        raise ValueError("workloads must share one interval, and start_ms be a multiple of it")
    began = time.monotonic()
    keys_blob, keys_offsets = series_keys(workloads)
    streams = [w.stream(0, w.n_series) for w in workloads]
    first_id = np.cumsum([0] + [w.n_series for w in workloads])
    n_series = int(first_id[-1])
    end_ms = start_ms + rounds * interval
    blocks = samples = size = 0
    r = 0
    while r < rounds:
        block_start = (start_ms + r * interval) // BLOCK_MS * BLOCK_MS
        block_end = block_start + BLOCK_MS
        n = min(rounds - r, -(-(block_end - start_ms) // interval) - r)
        ts = start_ms + (r + np.arange(n, dtype=np.int64)) * interval
        meta = _write_block(directory, streams, first_id, ts, keys_blob, keys_offsets,
                            block_start, min(block_end, end_ms))
        blocks += 1
        samples += meta.num_samples
        size += sum(f.stat().st_size for f in meta.path.rglob("*") if f.is_file())
        r += n
        if progress:
            print(f"\r   wrote {r:,} of {rounds:,} scrapes into {blocks} blocks",
                  end="", flush=True)
    if progress:
        print()
    return Backfilled(blocks, n_series, samples, size, time.monotonic() - began)


def _write_block(directory: Path, streams: Sequence[ValueStream], first_id: np.ndarray,
                 ts: np.ndarray, keys_blob: np.ndarray, keys_offsets: np.ndarray,
                 mint: int, maxt: int) -> BlockMeta:
    """One block of the scrapes at ``ts`` of every series, series after series."""
    owners, times, values = [], [], []
    for stream, first in zip(streams, first_id):
        v = stream.advance(len(ts))  # (rounds, series)
        owners.append(np.repeat(np.arange(first, first + v.shape[1], dtype=np.int64), len(ts)))
        times.append(np.tile(ts, v.shape[1]))
        values.append(np.ascontiguousarray(v.T).ravel())
    series, cmin, cmax, encoding, blob, offsets = encode_series(
        np.concatenate(owners), np.concatenate(times), np.concatenate(values), dense=False)
    return write_block(directory, keys_blob=keys_blob, keys_offsets=keys_offsets,
                       chunk_series=series, chunk_mint=cmin, chunk_maxt=cmax,
                       chunk_encoding=encoding, chunk_blob=blob, chunk_offsets=offsets,
                       mint=mint, maxt=maxt)
