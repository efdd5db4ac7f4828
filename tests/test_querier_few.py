"""Querier.select over blocks and the head, for selections of a few series (each part's
own label table, nothing interned) and through the general merge: both against a model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.batch import WriteBatch
from storage.block import write_block
from storage.db import DB, DBOptions
from storage.matchers import Matcher, MatchType
from storage.querier import Querier
from storage.series_set import label_sort_key
from storage.xor import ENCODING_XOR, encode_xor_many

T0 = 1_700_000_000_000
LABEL_SETS = [
    {"__name__": "m", "i": "0"},
    {"__name__": "m", "i": "1"},
    {"__name__": "m", "i": "2", "x": "a"},
    {"__name__": "m", "i": "3", "x": "b"},
    {"__name__": "n", "i": "1"},
    {"__name__": "n", "a": "z"},
]
MATCHERS = [
    [Matcher(MatchType.EQ, "__name__", "m")],
    [Matcher(MatchType.EQ, "i", "1")],
    [Matcher(MatchType.RE, "i", "1|2")],
    [Matcher(MatchType.NEQ, "x", "")],
    [Matcher(MatchType.RE, "__name__", ".+")],
    [Matcher(MatchType.EQ, "__name__", "m"), Matcher(MatchType.EQ, "i", "3")],
]


def _value(series: int, t: int) -> float:
    """Every part stores the same value for a series at a time, so that a copy in two
    parts reads back once, whichever part it came from."""
    return float(series * 1000 + t)


def _write_block(parent, part: dict[int, list[int]]) -> None:
    """A block of ``part`` (series index -> times in seconds since T0), a chunk each."""
    order = sorted(part, key=lambda s: label_sort_key(LABEL_SETS[s]))
    keys = [b"".join(n.encode() + b"\xff" + v.encode() + b"\xff"
                     for n, v in sorted(LABEL_SETS[s].items())) for s in order]
    keys_offsets = np.zeros(len(keys) + 1, np.int64)
    np.cumsum([len(k) for k in keys], out=keys_offsets[1:])
    ts = [T0 + 1000 * np.array(part[s], np.int64) for s in order]
    vs = [np.array([_value(s, t) for t in part[s]]) for s in order]
    bounds = np.zeros(len(order) + 1, np.int64)
    np.cumsum([len(t) for t in ts], out=bounds[1:])
    blob, offsets = encode_xor_many(np.concatenate(ts), np.concatenate(vs), bounds)
    mint = min(int(t[0]) for t in ts)
    maxt = max(int(t[-1]) for t in ts) + 1
    write_block(parent, keys_blob=np.frombuffer(b"".join(keys), np.uint8),
                keys_offsets=keys_offsets, chunk_series=np.arange(len(order)),
                chunk_mint=np.array([t[0] for t in ts]), chunk_maxt=np.array([t[-1] for t in ts]),
                chunk_encoding=np.full(len(order), ENCODING_XOR, np.uint8), chunk_blob=blob,
                chunk_offsets=offsets, mint=mint, maxt=maxt)


def _times(lo: int, hi: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(lo, hi - 1), min_size=1, max_size=12, unique=True).map(sorted)


_PART_OF_BLOCK = st.dictionaries(st.integers(0, len(LABEL_SETS) - 1), _times(0, 60),
                                 max_size=len(LABEL_SETS))
_HEAD = st.dictionaries(st.integers(0, len(LABEL_SETS) - 1), _times(60, 90),
                        max_size=len(LABEL_SETS))


@pytest.mark.parametrize("path", ["few", "general"])
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(blocks=st.lists(_PART_OF_BLOCK, max_size=3), head=_HEAD,
       matchers=st.sampled_from(MATCHERS), window=st.tuples(st.integers(-5, 95),
                                                           st.integers(0, 100)))
def test_select_agrees_with_a_model(tmp_path_factory, monkeypatch, path, blocks, head,
                                    matchers, window):
    if path == "general":
        monkeypatch.setattr(Querier, "_select_few", lambda *args: None)
    directory = tmp_path_factory.mktemp("db")
    for part in blocks:
        if part:
            _write_block(directory, part)
    db = DB.open(directory, DBOptions(compaction_interval=0))
    try:
        for s, times in head.items():
            db.append(WriteBatch.from_series([
                (LABEL_SETS[s], [(T0 + 1000 * t, _value(s, t)) for t in times])]))
        lo, hi = window[0], window[0] + window[1]
        got = db.querier().select(matchers, T0 + 1000 * lo, T0 + 1000 * hi)

        model: dict[int, set[int]] = {}
        for part in [*blocks, head]:
            for s, times in part.items():
                if all(m.matches(LABEL_SETS[s].get(m.name, "")) for m in matchers):
                    model.setdefault(s, set()).update(t for t in times if lo <= t <= hi)
        want = sorted(((LABEL_SETS[s], sorted(ts)) for s, ts in model.items() if ts),
                      key=lambda item: label_sort_key(item[0]))
        assert [got.labels(i) for i in range(got.n_series)] == [w[0] for w in want]
        for i, (labels, times) in enumerate(want):
            ts, vs = got.series_samples(i)
            s = LABEL_SETS.index(labels)
            assert ts.tolist() == [T0 + 1000 * t for t in times]
            assert vs.tolist() == [_value(s, t) for t in times]
        # The table names only what the series carry.
        assert got.names == sorted({n for labels, _ in want for n in labels})
        assert got.values == sorted({v for labels, _ in want for v in labels.values()})
    finally:
        db.close()
