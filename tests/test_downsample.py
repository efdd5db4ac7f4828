"""Downsampling: aggregate chunks, the windows written, the downsampled store, and
PromQL reading 5-minute and 1-hour data beside raw data."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from compaction.compactor import compact
from compaction.downsample import DownsampleOptions, downsample_block, downsample_due, retain
from promstore.api import query
from promstore.promql import Engine
from storage.aggregate import (
    Column,
    adjust_counters,
    decode_column,
    encode_aggregates,
    stitch_counters,
)
from storage.block import Block, write_block
from storage.chunk_merge import encode_series
from storage.db import DB, DBOptions
from storage.downsampled import (
    RESOLUTION_1H,
    RESOLUTION_5M,
    Aggregate,
    DownsampledStore,
    TieredStore,
    read_resolution,
)
from storage.errors import CorruptionError
from storage.matchers import Matcher, MatchType

MIN = 60_000
HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_700_000_000_000 // (54 * HOUR) * (54 * HOUR)
STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
X = [Matcher(MatchType.EQ, "__name__", "x")]


# --------------------------------------------------------------------------- data


def _key(labels: dict[str, str]) -> bytes:
    return b"".join(n.encode() + b"\xff" + v.encode() + b"\xff" for n, v in sorted(labels.items()))


def raw_block(parent: Path, labels: list[dict[str, str]], ts: np.ndarray, values: np.ndarray,
              mint: int, maxt: int) -> Block:
    """A raw block of series ``labels[i]`` with samples ``ts`` and ``values[i]`` (NaN
    rows of ``values`` leave samples out)."""
    keep = (ts >= mint) & (ts < maxt)
    owner = np.repeat(np.arange(len(labels)), keep.sum())
    t = np.tile(ts[keep], len(labels))
    v = values[:, keep].reshape(-1)
    s, lo, hi, enc, blob, off = encode_series(owner, t, v, dense=True)
    keys = [_key(lab) for lab in labels]
    meta = write_block(parent, keys_blob=np.frombuffer(b"".join(keys), np.uint8),
                       keys_offsets=np.concatenate([[0], np.cumsum([len(k) for k in keys])]),
                       chunk_series=s, chunk_mint=lo, chunk_maxt=hi, chunk_encoding=enc,
                       chunk_blob=blob, chunk_offsets=off, mint=mint, maxt=maxt)
    return Block.open(meta.path)


def counters(n: int, ts: np.ndarray, seed: int = 1, resets: bool = True) -> np.ndarray:
    """Realistic counters: per-series rates varying over the day with noise, some reset
    now and then (a restart)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 50, size=(n, 1))
    hours = (ts - T0) / HOUR
    rate = base * (1.5 + np.sin(2 * np.pi * hours / 24 + rng.uniform(0, 6, (n, 1))))
    step = np.diff(ts, prepend=ts[0] - (ts[1] - ts[0])) / 1000
    inc = rng.poisson(np.maximum(rate * step, 0)).astype(np.float64)
    out = np.cumsum(inc, axis=1)
    if resets:
        for i in range(0, n, 3):  # a restart in every third series
            at = rng.integers(len(ts) // 4, len(ts))
            out[i, at:] -= out[i, at - 1]
    return out


def make_store(tmp: Path, n: int = 4, days: int = 4, scrape: int = 15_000,
               block_hours: int = 18) -> tuple[DB, DownsampledStore, np.ndarray, np.ndarray]:
    """A data directory with ``days`` of counters ``x{i=…}`` in raw blocks."""
    ts = np.arange(T0 + 7_000, T0 + days * DAY, scrape, dtype=np.int64)
    values = counters(n, ts)
    labels = [{"__name__": "x", "i": str(i), "job": "j"} for i in range(n)]
    for lo in range(T0, T0 + days * DAY, block_hours * HOUR):
        raw_block(tmp, labels, ts, values, lo, lo + block_hours * HOUR).close()
    db = DB.open(tmp, DBOptions(compaction_interval=0))
    return db, DownsampledStore.open(tmp / "downsampled"), ts, values


@pytest.fixture
def data(tmp_path: Path):
    db, store, ts, values = make_store(tmp_path)
    yield db, store, ts, values
    store.close()
    db.close()


def _matrix(result) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A range query's series by their ``i`` label: (step times, values), NaN where
    absent."""
    vec = result.value
    out = {}
    col = vec.labels.names.index("i")
    for row in range(vec.n):
        name = result.pool.strings[vec.labels.ids[row, col]]
        out[name] = np.where(vec.present[row], vec.values[row], np.nan)
    return out


# --------------------------------------------------------------------------- chunks


def test_aggregate_chunks_round_trip_bit_for_bit() -> None:
    weird = np.array([np.nan, STALE, -0.0, np.inf, 1e300, 5e-324]).view(np.uint64)
    rng = np.random.default_rng(3)
    n = 40
    wt = np.arange(n, dtype=np.int64) * RESOLUTION_5M + RESOLUTION_5M - 1
    cols = [rng.normal(size=n) for _ in range(4)]
    cols[1][:6] = weird.view(np.float64)
    ct = np.concatenate([[1_000], wt[:25] - 3, [5], wt[25:] - 7])
    cv = np.concatenate([[1.0], rng.normal(size=25), [2.0], rng.normal(size=15)])
    blob, offsets = encode_aggregates(wt, *cols, np.array([0, 25, 40]), ct, cv,
                                      np.array([0, 26, 42]), np.array([3.5, np.nan]))
    for c, want in zip(Column, [*cols, cv]):
        ts, vs, starts, last = decode_column(blob, offsets, c)
        assert np.array_equal(vs.view(np.uint64), np.asarray(want).view(np.uint64))
        assert np.array_equal(ts, ct if c == Column.COUNTER else wt)
        assert list(starts) == ([0, 26, 42] if c == Column.COUNTER else [0, 25, 40])
        assert last[0] == 3.5 and np.isnan(last[1])


def test_aggregate_chunk_rejects_bad_shapes() -> None:
    wt = np.array([299_999], np.int64)
    one = np.ones(1)
    with pytest.raises(ValueError):  # three counter samples for one window
        encode_aggregates(wt, one, one, one, one, np.array([0, 1]), np.array([1, 2, 3]),
                          np.ones(3), np.array([0, 3]), one)


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=0, max_size=120), st.integers(0, 4))
def test_malformed_aggregate_chunks_raise_corruption(noise: bytes, column: int) -> None:
    wt = np.array([299_999, 599_999], np.int64)
    blob, offsets = encode_aggregates(wt, np.ones(2), np.ones(2), np.ones(2), np.ones(2),
                                      np.array([0, 2]), wt - 5, np.ones(2), np.array([0, 2]),
                                      np.ones(1))
    good = blob.tobytes()
    for data in (noise, good[: len(noise) % len(good)], good[:11] + noise,
                 good[:20] + noise + good[20:]):
        arr = np.frombuffer(data, np.uint8)
        try:
            decode_column(arr, np.array([0, len(arr)]), Column(column))
        except CorruptionError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=12), min_size=1, max_size=5))
def test_adjusted_and_stitched_counters_count_every_increase(runs: list[list[int]]) -> None:
    """Adjusting runs on their own and stitching them equals adjusting the whole."""
    values = np.array([v for r in runs for v in r], np.float64)
    starts = np.concatenate([[0], np.cumsum([len(r) for r in runs])])
    whole = adjust_counters(np.array([0, len(values)]), values)
    pieces = adjust_counters(starts, values)
    first = values[starts[:-1]]
    last = values[starts[1:] - 1]
    stitch_counters(starts, np.arange(len(runs)) > 0, first, last, pieces)
    assert np.array_equal(pieces, whole)
    expected, total = [], 0.0
    for k, v in enumerate(values):  # the PromQL rule: a drop is a reset to zero
        total += v if k == 0 else (v - values[k - 1] if v >= values[k - 1] else v)
        expected.append(total)
    assert np.allclose(whole, expected)
