"""Downsampling: aggregate chunks, the windows written, the downsampled store, and
PromQL reading 5-minute and 1-hour data beside raw data."""

from __future__ import annotations

import contextlib
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
from compaction.downsample import (
    DownsampleOptions,
    build_block,
    clean_tombstones,
    downsample_block,
    downsample_due,
    retain,
    rewrite_deleted,
)
from compaction.planner import ranges
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
    RESOLUTIONS,
    WINDOW_TOMBSTONES,
    Aggregate,
    DownsampledStore,
    Part,
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
EVERY_BLOCK_TO_5M = DownsampleOptions(after_5m_ms=0, after_1h_ms=365 * DAY)
THANOS_AGES = DownsampleOptions(after_5m_ms=40 * HOUR)  # 5 m after 40 h, 1 h after 10 d


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
    blob, _offsets = encode_aggregates(wt, np.ones(2), np.ones(2), np.ones(2), np.ones(2),
                                      np.array([0, 2]), wt - 5, np.ones(2), np.array([0, 2]),
                                      np.ones(1))
    good = blob.tobytes()
    for data in (noise, good[: len(noise) % len(good)], good[:11] + noise,
                 good[:20] + noise + good[20:]):
        arr = np.frombuffer(data, np.uint8)
        with contextlib.suppress(CorruptionError):
            decode_column(arr, np.array([0, len(arr)]), Column(column))


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


# --------------------------------------------------------------------------- windows


def test_windows_hold_the_aggregates_of_their_raw_samples(tmp_path: Path) -> None:
    ts = np.arange(T0 + 1_000, T0 + 6 * HOUR, 10_000, dtype=np.int64)
    rng = np.random.default_rng(5)
    gauge = rng.normal(size=(1, len(ts)))
    gauge[0, 100] = STALE  # left out of every aggregate
    block = raw_block(tmp_path, [{"__name__": "x"}], ts, gauge, T0, T0 + 6 * HOUR)
    store = DownsampledStore.open(tmp_path / "downsampled")
    downsample_block(block, 0, RESOLUTION_5M, store)
    fresh = np.arange(len(ts)) != 100
    window = (ts - T0) // RESOLUTION_5M
    for agg, fold in ((Aggregate.COUNT, len), (Aggregate.SUM, np.sum), (Aggregate.MIN, np.min),
                      (Aggregate.MAX, np.max), (Aggregate.AVG, np.mean)):
        got = store.select(X, T0, T0 + 6 * HOUR, agg, RESOLUTION_5M).series
        want = [fold(gauge[0, fresh & (window == w)]) for w in range(72)]
        assert np.allclose(got.samples, want, rtol=1e-12)
        assert np.array_equal(got.timestamps, T0 + np.arange(72) * RESOLUTION_5M + 299_999)
    store.close()
    block.close()


def test_one_hour_windows_from_five_minute_ones_match_those_from_raw(tmp_path: Path) -> None:
    ts = np.arange(T0 + 3_000, T0 + 18 * HOUR, 15_000, dtype=np.int64)
    values = counters(3, ts, seed=9)
    labels = [{"__name__": "x", "i": str(i)} for i in range(3)]
    block = raw_block(tmp_path, labels, ts, values, T0, T0 + 18 * HOUR)
    via_5m = DownsampledStore.open(tmp_path / "a")
    downsample_block(block, 0, RESOLUTION_5M, via_5m)
    downsample_block(via_5m.blocks(RESOLUTION_5M)[0], RESOLUTION_5M, RESOLUTION_1H, via_5m)
    direct = DownsampledStore.open(tmp_path / "b")
    downsample_block(block, 0, RESOLUTION_1H, direct)
    for agg in Aggregate:
        a = via_5m.select(X, T0, T0 + 18 * HOUR, agg, RESOLUTION_1H).series
        b = direct.select(X, T0, T0 + 18 * HOUR, agg, RESOLUTION_1H).series
        assert np.array_equal(a.timestamps, b.timestamps)
        assert np.allclose(a.samples, b.samples, rtol=1e-12)
    # The counter column rises by exactly what the raw counter did, resets included.
    c = direct.select(X, T0, T0 + 18 * HOUR, Aggregate.COUNTER, RESOLUTION_1H)
    whole = adjust_counters(np.array([0, len(ts)]), values[0])
    s0 = c.series.samples[: c.series.starts[1]]
    assert s0[-1] - s0[0] == pytest.approx(whole[-1] - whole[0])
    assert c.last_raw[0] == values[0, -1] and c.first_raw[0] == values[0, 0]
    for s in (via_5m, direct):
        s.close()
    block.close()


# --------------------------------------------------------------------------- the store


def test_store_writes_thanos_meta_and_cleans_up_after_a_crash(data) -> None:
    db, store, ts, _ = data
    made = downsample_due(db, store, THANOS_AGES, int(ts[-1]))
    assert [(m.min_time - T0) // HOUR for m in made] == [0, 18, 36]  # ended 40 h ago
    path = made[0].path
    doc = json.loads((path / "meta.json").read_text())
    assert doc["thanos"]["downsample"] == {"resolution": RESOLUTION_5M}
    assert read_resolution(path) == RESOLUTION_5M
    assert path.parent == store.directory / "5m"
    assert downsample_due(db, store, THANOS_AGES, int(ts[-1])) == []  # nothing new
    tier = store.directory / "5m"
    (tier / ("01" + "0" * 24 + ".tmp-for-creation")).mkdir()  # a crash while writing
    (tier / "01ZZZZZZZZZZZZZZZZZZZZZZZZ").mkdir()  # a block without meta.json
    store.close()
    again = DownsampledStore.open(store.directory)
    assert sorted(os.listdir(tier)) == sorted([m.ulid for m in made] + ["corrupted"])
    assert len(again.open_report) == 1
    assert [b.meta.ulid for b in again.blocks(RESOLUTION_5M)] == [m.ulid for m in made]
    again.close()


def test_a_block_spanning_the_age_is_downsampled_once_it_has_ended(data) -> None:
    """Thanos's rule beside the age: a block as wide as the age waits no longer, but
    the block still being filled does (but for its part older than the age)."""
    db, store, ts, _ = data
    now = int(ts[-1])  # T0 + 96 h: the block [90 h, 108 h) is still being filled
    made = downsample_due(db, store, DownsampleOptions(after_5m_ms=18 * HOUR), now)
    assert [(m.min_time - T0) // HOUR for m in made] == [0, 18, 36, 54, 72]
    # Narrower than the age: only the age counts, and the block [72 h, 90 h) that
    # ended 6 h ago has its part older than 19 h downsampled, to a 2-hour step.
    other = DownsampledStore.open(db.directory / "other")
    made = downsample_due(db, other, DownsampleOptions(after_5m_ms=19 * HOUR), now)
    assert [((m.min_time - T0) // HOUR, (m.max_time - T0) // HOUR) for m in made] == \
        [(0, 18), (18, 36), (36, 54), (54, 72), (72, 76)]
    other.close()
    # Without steps, whole blocks only.
    whole = DownsampledStore.open(db.directory / "whole")
    made = downsample_due(db, whole, DownsampleOptions(after_5m_ms=19 * HOUR, step_ms=0), now)
    assert [(m.min_time - T0) // HOUR for m in made] == [0, 18, 36, 54]
    whole.close()


def _spans(store: DownsampledStore, resolution: int) -> list[tuple[int, int]]:
    return [((b.meta.min_time - T0) // HOUR, (b.meta.max_time - T0) // HOUR)
            for b in store.blocks(resolution)]


def test_the_part_older_than_the_age_is_downsampled_until_the_whole_block_is(data) -> None:
    """Until a raw block is due, its part older than the age is downsampled a step at a
    time, so that a long query reads at most the age and a step raw; the block's own
    aggregates replace the parts once it is due, and 1-hour windows wait for those."""
    db, store, ts, values = data
    options = DownsampleOptions(after_5m_ms=40 * HOUR, after_1h_ms=HOUR)  # in 2-hour steps
    downsample_due(db, store, options, T0 + 95 * HOUR)
    assert _spans(store, RESOLUTION_5M) == [(0, 18), (18, 36), (36, 54)]
    for now in (T0 + 99 * HOUR, T0 + 99 * HOUR + 30 * MIN, T0 + 101 * HOUR):
        downsample_due(db, store, options, now)
    assert _spans(store, RESOLUTION_5M) == [(0, 18), (18, 36), (36, 54), (54, 58), (58, 60)]
    parts = store.blocks(RESOLUTION_5M)[3:]
    assert all(b.meta.sources == db.blocks[3].meta.sources for b in parts)
    assert _spans(store, RESOLUTION_1H) == [(0, 18), (18, 36), (36, 54)]  # not of parts
    # Each time is read once, by one resolution: counts add up to the raw samples and
    # the counter rises by what the raw one did, across the seams.
    tiered = TieredStore(db, store)
    plan = tiered.plan(RESOLUTION_5M, T0, T0 + 96 * HOUR, prefer_raw=False)
    assert [(p.resolution, p.mint - T0, p.maxt - T0) for p in plan] == \
        [(RESOLUTION_5M, 0, 60 * HOUR - 1), (0, 60 * HOUR, 96 * HOUR)]
    counts = tiered.select_aggregate(X, plan, Aggregate.COUNT)
    assert np.array_equal(np.add.reduceat(counts.samples, counts.starts[:-1]), [len(ts)] * 4)
    counter = tiered.select_aggregate(X, plan, Aggregate.COUNTER)
    whole = adjust_counters(np.array([0, len(ts)]), values[0])
    assert counter.samples[counter.starts[1] - 1] - counter.samples[0] == \
        pytest.approx(whole[-1] - whole[0])
    engine = Engine(tiered)
    for res in (0, RESOLUTION_5M):
        got = engine.range_query("count_over_time(x[1h])", T0 + 50 * HOUR, T0 + 70 * HOUR,
                                 HOUR, max_source_resolution=res)
        assert all(np.all(v == 240) for v in _matrix(got).values())
    # Deletions reach the parts; the whole block, made from raw data without the
    # deleted samples, keeps what is left of the window.
    _delete(db, store, T0 + 55 * HOUR + 7 * MIN, T0 + 55 * HOUR + 8 * MIN)
    window = T0 + 55 * HOUR + 10 * MIN - 1
    assert window not in _counts(store, RESOLUTION_5M)
    downsample_due(db, store, options, T0 + 112 * HOUR)
    assert _spans(store, RESOLUTION_5M) == [(0, 18), (18, 36), (36, 54), (54, 72)]
    assert not any(b.meta.path.exists() for b in parts)
    assert _counts(store, RESOLUTION_5M)[window] == 16
    assert _spans(store, RESOLUTION_1H) == [(0, 18), (18, 36), (36, 54), (54, 72)]


def test_a_whole_block_left_beside_its_parts_replaces_them_on_open(data) -> None:
    """Even a part rewritten one level up without its deleted windows."""
    db, store, _ts, _ = data
    downsample_due(db, store, THANOS_AGES, T0 + 101 * HOUR)
    assert _spans(store, RESOLUTION_5M)[3:] == [(54, 60)]
    _delete(db, store, T0 + 55 * HOUR, T0 + 55 * HOUR + MIN)
    assert clean_tombstones(store) == 1
    assert store.blocks(RESOLUTION_5M)[3].meta.level == db.blocks[3].meta.level + 1
    staged = build_block(db.blocks[3], 0, RESOLUTION_5M, store.directory)
    os.rename(staged.path, store.directory / "5m" / staged.ulid)  # then a crash
    store.close()
    again = DownsampledStore.open(store.directory)
    assert _spans(again, RESOLUTION_5M) == [(0, 18), (18, 36), (36, 54), (54, 72)]
    assert _counts(again, RESOLUTION_5M)[T0 + 55 * HOUR + 5 * MIN - 1] == 16  # from raw data
    again.close()


def test_merged_raw_blocks_are_downsampled_again_and_replace_their_parts(data) -> None:
    db, store, ts, _ = data
    downsample_due(db, store, EVERY_BLOCK_TO_5M, int(ts[-1]))
    before = store.blocks(RESOLUTION_5M)
    merged = compact(db.directory, db.blocks[:2])
    db.replace_blocks(merged, db.blocks[:2])
    made = downsample_due(db, store, EVERY_BLOCK_TO_5M, int(ts[-1]))
    assert len(made) == 1 and set(made[0].sources) == set(merged.sources)
    after = store.blocks(RESOLUTION_5M)
    assert len(after) == len(before) - 1
    assert not any(b.meta.path.exists() for b in before[:2])
    counts = store.select(X, T0, T0 + 4 * DAY, Aggregate.COUNT, RESOLUTION_5M).series
    # The last block ends after the newest sample: not due yet, but for its part older
    # than the age (0 here) to the last 2-hour step.
    assert counts.samples.sum() == 4 * np.count_nonzero(ts < T0 + 94 * HOUR)


def test_five_minute_blocks_become_hourly_then_retention_drops_them(data) -> None:
    db, store, ts, _ = data
    options = DownsampleOptions(after_5m_ms=0, after_1h_ms=2 * DAY, retention_5m_ms=3 * DAY)
    made = downsample_due(db, store, options, int(ts[-1]))
    # Every block, and the part before the last 2-hour step of the one being filled.
    assert len(store.blocks(RESOLUTION_5M)) == 6
    assert [m.max_time for m in made if read_resolution(m.path) == RESOLUTION_1H] == \
        [T0 + 18 * HOUR, T0 + 36 * HOUR]
    gone = retain(store, options, T0 + 4 * DAY)
    assert [m.max_time for m in gone] == [T0 + 18 * HOUR]
    assert len(store.blocks(RESOLUTION_5M)) == 5 and len(store.blocks(RESOLUTION_1H)) == 2


# --------------------------------------------------------------------------- deletion

X0 = [*X, Matcher(MatchType.EQ, "i", "0")]


def _counts(store: DownsampledStore, resolution: int) -> dict[int, int]:
    """Window stamp -> count of series ``i="0"``."""
    got = store.select(X0, T0, T0 + 4 * DAY, Aggregate.COUNT, resolution).series
    return dict(zip(got.timestamps.tolist(), got.samples.astype(int).tolist()))


def _delete(db: DB, store: DownsampledStore, mint: int, maxt: int) -> None:
    db.delete(X0, mint, maxt)
    store.delete(X0, mint, maxt)


def test_deletion_drops_whole_windows_at_every_resolution(data, tmp_path: Path) -> None:
    db, store, ts, _ = data
    downsample_due(db, store, DownsampleOptions(after_5m_ms=0, after_1h_ms=0), int(ts[-1]))
    five, hour = _counts(store, RESOLUTION_5M), _counts(store, RESOLUTION_1H)
    others = store.select(X, T0, T0 + 4 * DAY, Aggregate.SUM, RESOLUTION_5M).series
    gone = (T0 + DAY + 7 * MIN, T0 + DAY + 8 * MIN)  # inside one 5 m window
    _delete(db, store, *gone)
    want5 = {t: c for t, c in five.items() if not T0 + DAY + 5 * MIN <= t < T0 + DAY + 10 * MIN}
    want1 = {t: c for t, c in hour.items() if not T0 + DAY <= t < T0 + DAY + HOUR}
    assert len(want5) == len(five) - 1 and len(want1) == len(hour) - 1
    assert _counts(store, RESOLUTION_5M) == want5 and _counts(store, RESOLUTION_1H) == want1
    rest = store.select([*X, Matcher(MatchType.NEQ, "i", "0")], T0, T0 + 4 * DAY,
                        Aggregate.SUM, RESOLUTION_5M).series
    assert rest.n_samples == others.n_samples - others.starts[1]  # other series untouched
    # Every query reading the aggregates sees the gap; counters still count increases.
    tiered = Engine(TieredStore(db, store))
    got = tiered.range_query('count_over_time(x{i="0"}[1h])', T0 + DAY + HOUR,
                             T0 + DAY + HOUR, HOUR, max_source_resolution=RESOLUTION_5M)
    assert _matrix(got)["0"][0] == 240 - 20
    # Durable: read back after reopening.
    store.close()
    again = DownsampledStore.open(store.directory)
    assert _counts(again, RESOLUTION_5M) == want5 and _counts(again, RESOLUTION_1H) == want1
    # A snapshot holds the blocks and their deletions, hard-linked.
    again.snapshot(tmp_path / "snap")
    snap = DownsampledStore.open(tmp_path / "snap")
    assert _counts(snap, RESOLUTION_5M) == want5
    first = again.blocks(RESOLUTION_5M)[0].meta
    assert os.stat(tmp_path / "snap" / "5m" / first.ulid / "index").st_ino == \
        os.stat(first.path / "index").st_ino
    snap.close()
    # Cleaning rewrites the blocks without the deleted windows, one level up.
    before = {b.meta.ulid: b.meta for r in (RESOLUTION_5M, RESOLUTION_1H)
              for b in again.blocks(r)}
    assert clean_tombstones(again) == 2
    assert _counts(again, RESOLUTION_5M) == want5 and _counts(again, RESOLUTION_1H) == want1
    after = [b.meta for r in (RESOLUTION_5M, RESOLUTION_1H) for b in again.blocks(r)]
    assert len(after) == len(before)
    assert not any((m.path / WINDOW_TOMBSTONES).exists() for m in after)
    assert sorted(m.level for m in after) == sorted([1] * (len(after) - 2) + [2, 2])
    again.close()
    reopened = DownsampledStore.open(store.directory)  # nothing left over
    assert [b.meta for b in reopened.blocks(RESOLUTION_5M)] == \
        [m for m in after if read_resolution(m.path) == RESOLUTION_5M]
    reopened.close()


def test_a_rewritten_block_left_beside_its_original_replaces_it_on_open(data) -> None:
    db, store, ts, _ = data
    downsample_due(db, store, EVERY_BLOCK_TO_5M, int(ts[-1]))
    _delete(db, store, T0, T0 + HOUR - 1)
    old = store.blocks(RESOLUTION_5M)[0]
    staged = build_block(old, RESOLUTION_5M, RESOLUTION_5M, store.directory,
                         deleted=store.deletions(old))
    tier = store.directory / "5m"
    os.rename(staged.path, tier / staged.ulid)  # a crash before the original was deleted
    store.close()
    again = DownsampledStore.open(store.directory)
    assert again.blocks(RESOLUTION_5M)[0].meta.ulid == staged.ulid
    assert not old.meta.path.exists()
    assert min(_counts(again, RESOLUTION_5M)) == T0 + HOUR + RESOLUTION_5M - 1
    again.close()


def test_blocks_with_many_deleted_windows_are_rewritten_as_raw_ones_are(data) -> None:
    """The compaction planner's rule for blocks with many tombstones holds for deleted
    windows too, so that they leave the disk without waiting for clean_tombstones."""
    db, store, ts, _ = data
    downsample_due(db, store, DownsampleOptions(after_5m_ms=0, after_1h_ms=0), int(ts[-1]))
    _delete(db, store, T0 + 20 * HOUR, T0 + 20 * HOUR + MIN)  # one series of four
    five, hour = store.blocks(RESOLUTION_5M)[1], store.blocks(RESOLUTION_1H)[1]
    # 18-hour blocks are narrower than the middle range (54 h of 2 h to 486 h): only a
    # tombstone per series would count.
    assert rewrite_deleted(db, store, ranges(2 * HOUR, 3, 486 * HOUR)) == []
    # As wide as the middle range (18 h of 2 h to 54 h): more than 5 % of the series.
    made = rewrite_deleted(db, store, ranges(2 * HOUR, 3, 54 * HOUR))
    assert [(m.min_time, m.max_time, m.level) for m in made] == \
        [(b.meta.min_time, b.meta.max_time, b.meta.level + 1) for b in (five, hour)]
    assert not any(len(store.deletions(b)) for r in RESOLUTIONS for b in store.blocks(r))
    assert not five.meta.path.exists() and not hour.meta.path.exists()
    assert T0 + 20 * HOUR + 5 * MIN - 1 not in _counts(store, RESOLUTION_5M)
    assert T0 + 21 * HOUR - 1 not in _counts(store, RESOLUTION_1H)
    assert rewrite_deleted(db, store, ranges(2 * HOUR, 3, 54 * HOUR)) == []


def test_a_block_made_while_its_source_got_a_deletion_is_not_served(data) -> None:
    db, store, ts, _ = data
    gone = (T0 + 2 * HOUR, T0 + 3 * HOUR - 1)
    calls = []

    def build_then_delete(job):
        staged = build_block(job.source, job.source_resolution, job.resolution,
                             store.directory, deleted=job.deleted, part=job.part)
        if not calls:
            _delete(db, store, *gone)  # comes in while the first block is made
        calls.append(job.source.meta.ulid)
        return staged

    made = downsample_due(db, store, EVERY_BLOCK_TO_5M, int(ts[-1]), build_then_delete)
    assert len(made) == len(calls) - 1 == 5  # the first one was refused
    assert not any(p.name.endswith(".tmp-for-creation") for p in (store.directory / "5m").iterdir())
    made = downsample_due(db, store, EVERY_BLOCK_TO_5M, int(ts[-1]))
    assert [m.min_time for m in made] == [T0]
    counts = _counts(store, RESOLUTION_5M)
    assert not any(gone[0] <= t <= gone[1] for t in counts)
    assert len(counts) == 94 * 12 - 12


def test_compacting_deleted_raw_data_does_not_bring_it_back(data) -> None:
    """A raw block rewritten after a deletion (compaction, clean_tombstones) is
    downsampled again without the deleted samples, and replaces the aggregates."""
    db, store, ts, _ = data
    downsample_due(db, store, EVERY_BLOCK_TO_5M, int(ts[-1]))
    gone = (T0 + 2 * HOUR + 2 * MIN, T0 + 20 * HOUR + 2 * MIN)  # across two blocks
    _delete(db, store, *gone)
    merged = compact(db.directory, db.blocks[:2])
    db.replace_blocks(merged, db.blocks[:2])
    made = downsample_due(db, store, EVERY_BLOCK_TO_5M, int(ts[-1]))
    assert len(made) == 1 and not store.deletions(store.blocks(RESOLUTION_5M)[0])
    counts = _counts(store, RESOLUTION_5M)
    # The windows cut by the deletion's ends come back with their surviving samples.
    assert counts[T0 + 2 * HOUR + 5 * MIN - 1] == 8
    assert counts[T0 + 20 * HOUR + 5 * MIN - 1] == 12
    assert not any(gone[0] + 5 * MIN <= t <= gone[1] for t in counts)
    raw = db.select(X0, T0, T0 + 36 * HOUR - 1)
    assert sum(c for t, c in counts.items() if t < T0 + 36 * HOUR) == raw.n_samples


# --------------------------------------------------------------------------- PromQL

QUERIES = ["rate(x[1h])", "increase(x[30m])", "irate(x[1h])", "count_over_time(x[1h])",
           "sum_over_time(x[1h])", "min_over_time(x[1h])", "max_over_time(x[1h])",
           "avg_over_time(x[1h])", "x", "sum by (job) (rate(x[1h]))", "resets(x[1h])"]


def _same(a, b) -> bool:
    ma, mb = _matrix(a), _matrix(b)
    return ma.keys() == mb.keys() and all(
        np.array_equal(ma[k].view(np.uint64), mb[k].view(np.uint64)) for k in ma)


@pytest.fixture
def downsampled(data):
    db, store, ts, values = data
    downsample_due(db, store, EVERY_BLOCK_TO_5M, int(ts[-1]))
    return db, store, ts, values


def test_raw_resolution_and_short_queries_answer_exactly_as_raw_data(downsampled) -> None:
    db, store, _ts, _ = downsampled
    raw, tiered = Engine(db), Engine(TieredStore(db, store))
    for q in QUERIES[:-2]:
        for start, end, step, res in ((T0 + DAY, T0 + 3 * DAY, HOUR, 0),  # raw asked for
                                      (T0 + DAY, T0 + DAY + 6 * HOUR, HOUR, None),  # short
                                      (T0 + DAY, T0 + 3 * DAY, 10 * MIN, None)):  # fine step
            want = raw.range_query(q, start, end, step)
            got = tiered.range_query(q, start, end, step, max_source_resolution=res)
            assert _same(want, got), (q, start, end, step, res)
        want = raw.instant_query(q, T0 + 2 * DAY)
        assert _same(want, tiered.instant_query(q, T0 + 2 * DAY))


def _errors(raw, got) -> np.ndarray:
    ma, mb = _matrix(raw), _matrix(got)
    assert ma.keys() == mb.keys()
    return np.concatenate([np.abs(mb[k] - ma[k]) / np.abs(ma[k]) for k in ma])


def test_long_queries_read_five_minute_windows_within_the_documented_error(downsampled) -> None:
    """docs/downsampling.md ("Error"): window aggregates exact, rate and increase within
    3 % (median under 1 %) for ranges of at least five windows, on counters whose rate
    swings by a factor of five over the day, with resets."""
    db, store, _ts, _ = downsampled
    raw, tiered = Engine(db), Engine(TieredStore(db, store))
    start, end = T0 + DAY, T0 + 3 * DAY + 12 * HOUR  # inside the 5 m data
    for q, bound in (("rate(x[25m])", 0.03), ("rate(x[1h])", 0.03), ("increase(x[6h])", 0.03),
                     ("count_over_time(x[1h])", 1e-12), ("sum_over_time(x[1h])", 1e-12),
                     ("min_over_time(x[1h])", 0), ("max_over_time(x[1h])", 0),
                     ("avg_over_time(x[1h])", 1e-12)):
        want = raw.range_query(q, start, end, HOUR)
        got = tiered.range_query(q, start, end, HOUR)  # auto: step/5 = 12 m, 2.5 days
        errors = _errors(want, got)
        assert np.nanmax(errors) <= bound, q
        assert np.nanmedian(errors) <= bound / 3, q
        assert bound < 1e-3 or not _same(want, got)  # it did read the aggregates
    # irate reads the counter too: the rate over the last window, not the last scrapes.
    assert np.nanmedian(_errors(raw.range_query("irate(x[1h])", start, end, HOUR),
                                tiered.range_query("irate(x[1h])", start, end, HOUR))) < 0.2


def test_resets_and_other_functions_keep_reading_raw_data(downsampled) -> None:
    db, store, _ts, _ = downsampled
    raw, tiered = Engine(db), Engine(TieredStore(db, store))
    for q in ("resets(x[1h])", "changes(x[1h])", "deriv(x[1h])", "timestamp(x)"):
        want = raw.range_query(q, T0 + DAY, T0 + 3 * DAY, HOUR)
        assert _same(want, tiered.range_query(q, T0 + DAY, T0 + 3 * DAY, HOUR,
                                              max_source_resolution=RESOLUTION_5M)), q


def test_parts_with_different_series_join_into_each_series_once(tmp_path: Path) -> None:
    """A series only in the aggregates, one only in the raw data after them, and two in
    both: each once, in label order, windows then raw samples, the counter unbroken."""
    ts = np.arange(T0 + 7_000, T0 + 36 * HOUR, 15_000, dtype=np.int64)
    values = counters(4, ts, resets=False)
    labels = [{"__name__": "x", "i": str(i)} for i in range(4)]
    old = raw_block(tmp_path, labels[:3], ts, values[:3], T0, T0 + 18 * HOUR)
    raw_block(tmp_path, labels[1:], ts, values[1:], T0 + 18 * HOUR, T0 + 36 * HOUR).close()
    db = DB.open(tmp_path, DBOptions(compaction_interval=0))
    store = DownsampledStore.open(tmp_path / "downsampled")
    try:
        store.publish(build_block(old, 0, RESOLUTION_5M, store.directory), RESOLUTION_5M)
        parts = [Part(RESOLUTION_5M, T0, T0 + 18 * HOUR - 1),
                 Part(0, T0 + 18 * HOUR, T0 + 36 * HOUR)]
        got = TieredStore(db, store).select_aggregate(X, parts, Aggregate.COUNTER)
        assert [got.labels(i)["i"] for i in range(got.n_series)] == ["0", "1", "2", "3"]
        early = ts < T0 + 18 * HOUR
        window_first = np.flatnonzero(np.diff(ts // (5 * MIN), prepend=-1) > 0)
        in_windows = np.union1d(window_first[early[window_first]], [np.count_nonzero(early) - 1])
        want = {0: in_windows, 1: np.union1d(in_windows, np.flatnonzero(~early)),
                3: np.flatnonzero(~early)}
        want[2] = want[1]
        for i in range(4):
            lo, hi = got.starts[i], got.starts[i + 1]
            assert np.array_equal(got.timestamps[lo:hi], ts[want[i]]), i
            assert np.array_equal(got.samples[lo:hi], values[i, want[i]]), i  # no resets
    finally:
        store.close()
        db.close()


def test_data_whose_raw_blocks_are_gone_is_answered_from_aggregates(downsampled) -> None:
    db, store, _ts, _values = downsampled
    before = Engine(db).range_query("increase(x[6h])", T0 + DAY, T0 + 3 * DAY, HOUR)
    db.replace_blocks(None, db.blocks[:3])  # retention: raw data before 54 h is gone
    tiered = Engine(TieredStore(db, store))
    got = tiered.range_query("increase(x[6h])", T0 + DAY, T0 + 3 * DAY, HOUR)
    assert _matrix(got)["0"].shape == _matrix(before)["0"].shape
    errors = _errors(before, got)
    assert not np.isnan(errors).any()  # every step answered, across the 54 h seam
    assert np.nanmax(errors) < 0.03
    # Raw data is gone: even a short query at a fine step reads the aggregates there...
    short = tiered.range_query("count_over_time(x[1h])", T0 + DAY, T0 + DAY + 2 * HOUR, MIN)
    assert np.nanmax(_matrix(short)["1"]) == 240
    # ...unless raw data is asked for.
    assert tiered.range_query("x", T0 + DAY, T0 + DAY + HOUR, MIN,
                              max_source_resolution=0).value.n == 0


def test_one_hour_windows_serve_steps_of_five_hours(downsampled) -> None:
    db, store, ts, _ = downsampled
    downsample_due(db, store, DownsampleOptions(after_5m_ms=0, after_1h_ms=0), int(ts[-1]))
    raw, tiered = Engine(db), Engine(TieredStore(db, store))
    q = "sum_over_time(x[10h])"
    want = raw.range_query(q, T0 + DAY, T0 + 3 * DAY, 5 * HOUR)
    got = tiered.range_query(q, T0 + DAY, T0 + 3 * DAY, 5 * HOUR,
                             max_source_resolution=RESOLUTION_1H)
    assert np.nanmax(_errors(want, got)) < 1e-12
    # A window shorter than five hours stays with 5 m windows (exact here too).
    got = tiered.range_query("count_over_time(x[1h])", T0 + DAY, T0 + 3 * DAY, 5 * HOUR,
                             max_source_resolution=RESOLUTION_1H)
    assert np.nanmax(_errors(raw.range_query("count_over_time(x[1h])", T0 + DAY,
                                             T0 + 3 * DAY, 5 * HOUR), got)) == 0


# --------------------------------------------------------------------------- HTTP


async def test_query_api_takes_max_source_resolution(downsampled) -> None:
    db, store, _ts, _ = downsampled
    app = web.Application()
    key = web.AppKey("store", object)
    app[key] = db
    app[query.DOWNSAMPLED_KEY] = store
    query.add_routes(app, key)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        params = {"query": "rate(x[1h])", "start": str((T0 + DAY) / 1000),
                  "end": str((T0 + 3 * DAY) / 1000), "step": "3600"}
        answers = {}
        for res in ("raw", "0s", "5m", "auto", ""):
            resp = await client.get("/api/v1/query_range",
                                    params=params | {"max_source_resolution": res})
            assert resp.status == 200
            answers[res] = (await resp.json())["data"]["result"]
        assert answers["raw"] == answers["0s"] != answers["5m"] == answers["auto"] == answers[""]
        resp = await client.get("/api/v1/query", params={
            "query": "x", "time": str((T0 + DAY) / 1000), "max_source_resolution": "soon"})
        body = await resp.json()
        assert resp.status == 400 and body["errorType"] == "bad_data"
        assert "max_source_resolution" in body["error"]
    finally:
        await client.close()
