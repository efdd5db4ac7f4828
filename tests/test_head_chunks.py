"""HeadChunks: open and sealed XOR chunks per series, cut where Prometheus cuts them."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.head_chunks import HeadChunks
from storage.xor import encode_xor

HOUR = 3_600_000
RANGE = 2 * HOUR


def _go_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def model_cuts(ts: list[int], chunk_range: int = RANGE) -> list[int]:
    """Sizes of the chunks a Prometheus 2.x head cuts for one series' timestamps."""
    sizes: list[int] = []
    n = 0
    mint = next_at = 0
    maxt = 0
    for t in ts:
        if n == 0:
            mint = t
            next_at = _go_div(t, chunk_range) * chunk_range + chunk_range
        else:
            if n == 30:
                den = (maxt - mint + 1) * 4
                m = _go_div(next_at - mint, den) if den > 0 else 0
                if m > 1:
                    next_at = mint + _go_div(next_at - mint, m)
            if t >= next_at or n >= 240:
                sizes.append(n)
                n = 0
                mint = t
                next_at = _go_div(t, chunk_range) * chunk_range + chunk_range
        n += 1
        maxt = t
    if n:
        sizes.append(n)
    return sizes


def _read_all(hc: HeadChunks, n_series: int) -> list[list[tuple[int, np.ndarray, np.ndarray]]]:
    batch = hc.gather(np.arange(n_series), -(2**62), 2**62)
    ts, vs, starts = batch.decode()
    out: list[list[tuple[int, np.ndarray, np.ndarray]]] = [[] for _ in range(n_series)]
    for c in range(batch.n_chunks):
        a, b = starts[c], starts[c + 1]
        out[batch.pos[c]].append((c, ts[a:b], vs[a:b]))
        assert batch.mint[c] == ts[a] and batch.maxt[c] == ts[b - 1]
        assert encode_xor(ts[a:b], vs[a:b]) == \
            batch.blob[batch.offsets[c]:batch.offsets[c + 1]].tobytes()
    return out


series_samples = st.lists(
    st.tuples(st.integers(1, 120_000), st.floats(allow_nan=True, width=64)),
    min_size=1, max_size=700)


@settings(max_examples=60, deadline=None)
@given(st.lists(series_samples, min_size=1, max_size=4), st.integers(-(10**13), 10**13),
       st.integers(1, 50), st.integers(0, 2**32 - 1))
def test_round_trip_and_prometheus_cuts(series, start, batch_size, seed):
    directory = Path(tempfile.mkdtemp(prefix="head-chunks-"))
    try:
        _round_trip(HeadChunks(RANGE, directory), series, start, batch_size, seed)
    finally:
        shutil.rmtree(directory)


def _round_trip(hc: HeadChunks, series, start: int, batch_size: int, seed: int) -> None:
    hc.reserve(len(series))
    expected = []
    for samples in series:
        ts = start + np.cumsum([d for d, _ in samples])
        expected.append((ts, np.array([v for _, v in samples])))
    # Interleave the series in a random arrival order, each series' samples in order.
    tags = np.random.default_rng(seed).permutation(
        np.repeat(np.arange(len(series)), [len(s) for s in series]))
    nth = np.zeros(len(tags), np.int64)
    for ref in range(len(series)):
        mine = tags == ref
        nth[mine] = np.arange(mine.sum())
    all_t = np.array([expected[r][0][i] for r, i in zip(tags, nth)])
    all_v = np.array([expected[r][1][i] for r, i in zip(tags, nth)])
    for lo in range(0, len(tags), batch_size):
        sl = slice(lo, lo + batch_size)
        hc.append(tags[sl], all_t[sl], all_v[sl])
    got = _read_all(hc, len(series))
    for ref, (ts, vs) in enumerate(expected):
        chunks = got[ref]
        assert [len(c[1]) for c in chunks] == model_cuts(ts.tolist())
        assert np.array_equal(np.concatenate([c[1] for c in chunks]), ts)
        assert np.array_equal(np.concatenate([c[2] for c in chunks]).view(np.uint64),
                              vs.view(np.uint64))


def test_regular_scrapes_cut_four_chunks_per_two_hours(tmp_path):
    hc = HeadChunks(RANGE, tmp_path)
    hc.reserve(3)
    t0 = 1_700_000_000_000 // RANGE * RANGE
    for step in range(960):  # four hours at 15 s
        hc.append(np.arange(3), np.full(3, t0 + step * 15_000), np.full(3, float(step)))
    chunks = _read_all(hc, 3)
    assert [len(c[1]) for c in chunks[0]] == [120] * 8
    assert hc.n_sealed == 3 * 7


def test_truncate_drops_old_chunks_and_keeps_appending(tmp_path):
    hc = HeadChunks(RANGE, tmp_path)
    n = 50
    hc.reserve(n)
    t0 = 1_700_000_000_000 // RANGE * RANGE
    for step in range(600):
        live = np.arange(n) if step < 300 else np.arange(n // 2)  # half the series stop
        hc.append(live, np.full(len(live), t0 + step * 15_000), np.random.rand(len(live)))
    hc.truncate(t0 + RANGE)
    chunks = _read_all(hc, n)
    for ref in range(n):
        ts = np.concatenate([c[1] for c in chunks[ref]]) if chunks[ref] else np.empty(0)
        if ref < n // 2:
            assert np.array_equal(ts, t0 + np.arange(480, 600) * 15_000)
        else:
            assert len(ts) == 0
    mins = hc.min_times(n)
    assert (mins[:n // 2] == t0 + RANGE).all() and (mins[n // 2:] == np.iinfo(np.int64).max).all()
    # Freed slots are reused and appending continues where it stopped.
    hc.append(np.arange(n), np.full(n, t0 + 600 * 15_000), np.ones(n))
    chunks = _read_all(hc, n)
    assert chunks[0][-1][1][-1] == t0 + 600 * 15_000
    assert [len(c[1]) for c in chunks[n - 1]] == [1]


def test_gather_trims_to_overlapping_chunks(tmp_path):
    hc = HeadChunks(RANGE, tmp_path)
    hc.reserve(1)
    t0 = 0
    for step in range(480):
        hc.append(np.array([0]), np.array([t0 + step * 15_000]), np.array([1.0]))
    batch = hc.gather(np.array([0]), 45 * 60_000, 50 * 60_000)
    assert batch.n_chunks == 1
    assert batch.mint[0] == 30 * 60_000 and batch.maxt[0] == 60 * 60_000 - 15_000
