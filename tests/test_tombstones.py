"""Tombstones: intervals against a plain model, the file format, WAL records, and
deletion through the store (head, blocks, restart, persisting, compaction, snapshots)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compaction.compactor import compact
from storage import chunkenc, record
from storage.batch import WriteBatch
from storage.block import Block
from storage.db import DB, DBOptions
from storage.errors import CorruptionError, StorageError
from storage.head import HeadOptions
from storage.matchers import Matcher, MatchType
from storage.tombstones import Tombstones, decode, encode, read_file, trim_chunks
from storage.xor import ENCODING_XOR, encode_xor_many

HOUR = 3_600_000
T0 = 1_700_000_000_000 // (2 * HOUR) * (2 * HOUR)
STEP = 15_000
ALL = [Matcher(MatchType.RE, "__name__", ".+")]
LO, HI = np.iinfo(np.int64).min, np.iinfo(np.int64).max

# -- intervals against a model ----------------------------------------------------------

EDGE = st.sampled_from([LO, LO + 1, HI - 1, HI])
TIME = st.one_of(st.integers(-30, 30), EDGE)
INTERVALS = st.lists(st.tuples(st.integers(0, 3), TIME, TIME), max_size=12)


def _model_deleted(intervals, ref: int, t: int) -> bool:
    return any(r == ref and lo <= t <= hi for r, lo, hi in intervals)


def _same(a: Tombstones, b: Tombstones) -> bool:
    return all(np.array_equal(x, y) for x, y in zip((a.refs, a.mint, a.maxt),
                                                     (b.refs, b.mint, b.maxt)))


def _of(intervals) -> Tombstones:
    arr = np.array(intervals, np.int64).reshape(-1, 3)
    return Tombstones.of(arr[:, 0], arr[:, 1], arr[:, 2])


@settings(max_examples=200, deadline=None)
@given(INTERVALS, INTERVALS)
def test_intervals_match_a_model(first, second):
    stones = _of(first).add(_of(second))
    everything = first + second
    # Sorted, disjoint and never adjacent within a series.
    same = stones.refs[1:] == stones.refs[:-1]
    assert np.all(np.diff(stones.refs) >= 0)
    assert np.all(stones.mint <= stones.maxt)
    gap = stones.mint[1:].astype(object) - stones.maxt[:-1].astype(object)  # no overflow
    assert not np.any(same & (gap <= 1))
    probes = sorted({t for _, lo, hi in everything for t in (lo, hi)} | {-31, 0, 31, LO, HI}
                    | {t + d for _, lo, hi in everything for t in (lo, hi) for d in (-1, 1)
                       if LO <= t + d <= HI})
    refs = np.repeat(np.arange(4), len(probes))
    ts = np.tile(np.array(probes, np.int64), 4)
    want = [_model_deleted(everything, int(r), int(t)) for r, t in zip(refs, ts)]
    assert stones.deleted(refs, ts).tolist() == want
    assert _same(decode(encode(stones)), stones)


@settings(max_examples=150, deadline=None)
@given(INTERVALS, st.integers(0, 3), st.integers(-30, 30), st.integers(0, 20))
def test_overlap_matches_a_model(intervals, ref, lo, width):
    stones = _of(intervals)
    hi = lo + width
    hits = [_model_deleted(intervals, ref, t) for t in range(lo, hi + 1)]
    want = 2 if all(hits) else 1 if any(hits) else 0
    assert stones.overlap(np.array([ref]), np.array([lo]), np.array([hi])).tolist() == [want]


def test_file_bytes_are_prometheus_layout():
    stones = Tombstones.of(np.array([3, 1, 1]), np.array([5, 0, 11]), np.array([9, 10, 15]))
    data = encode(stones)
    # magic, format 1, (ref 1, 0, 15) and (ref 3, 5, 9) as uvarint / zigzag varints, CRC.
    assert data.hex() == "0130ba30" "01" "01001e" "030a12" "c2655387"
    assert _same(decode(data), stones)
    empty = encode(Tombstones.empty())
    assert empty.hex() == "0130ba300100000000"
    assert len(decode(empty)) == 0


@pytest.mark.parametrize("data, message", [
    (b"", "too short"),
    (bytes.fromhex("0130ba31" "01" "00000000"), "bad magic"),
    (bytes.fromhex("0130ba30" "02" "00000000"), "unsupported format"),
    (bytes.fromhex("0130ba30" "01" "01001e" "00000000"), "checksum"),
])
def test_bad_files_are_named(data, message):
    with pytest.raises(CorruptionError, match=message):
        decode(data, "x/tombstones")


def test_truncated_entry_is_reported_with_its_offset():
    body = np.frombuffer(bytes.fromhex("01" "0100"), np.uint8)
    from storage._block_kernels import crc32c
    crc = int(crc32c(body, 1, len(body))).to_bytes(4, "big")
    with pytest.raises(CorruptionError, match="offset 5: truncated varint"):
        decode(bytes.fromhex("0130ba30") + body.tobytes() + crc)


def test_inverted_intervals_delete_nothing():
    # Prometheus writes such intervals for a request whose end precedes its start.
    assert len(Tombstones.of(np.array([1]), np.array([10]), np.array([5]))) == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=5), INTERVALS)
def test_trim_chunks_keeps_exactly_the_live_samples(sizes, intervals):
    stones = _of([(r, lo, hi) for r, lo, hi in intervals])
    refs = np.arange(len(sizes)) % 4
    ts = np.concatenate([np.arange(n, dtype=np.int64) * 2 - 20 for n in sizes])
    vs = np.arange(len(ts), dtype=np.float64)
    bounds = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    blob, offsets = encode_xor_many(ts, vs, bounds)
    t = trim_chunks(stones, refs, ts[bounds[:-1]], ts[bounds[1:] - 1],
                    np.full(len(sizes), ENCODING_XOR, np.uint8), blob, offsets)
    got_ts, got_vs, starts = chunkenc.decode_many(t.encoding, t.blob, t.offsets)
    owner = np.repeat(refs[t.source], np.diff(starts))
    alive = ~stones.deleted(np.repeat(refs, sizes), ts)
    assert got_ts.tolist() == ts[alive].tolist()
    assert got_vs.tolist() == vs[alive].tolist()
    assert owner.tolist() == np.repeat(refs, sizes)[alive].tolist()
    assert np.all(np.diff(t.source) > 0)
    assert np.all(got_ts[starts[:-1]] == t.mint) and np.all(got_ts[starts[1:] - 1] == t.maxt)


def test_tombstones_record_round_trip_and_bounds():
    refs, lo, hi = np.array([2, 7]), np.array([LO, 5]), np.array([9, HI])
    payload = record.encode_tombstones(refs, lo, hi)
    assert [a.tolist() for a in record.decode_tombstones(payload)] == \
        [refs.tolist(), lo.tolist(), hi.tolist()]
    with pytest.raises(CorruptionError, match="tombstones record"):
        record.decode_tombstones(payload[:-1])


# -- through the store ------------------------------------------------------------------


def _options() -> DBOptions:
    return DBOptions(head=HeadOptions(), compaction_interval=0)


def _write(db: DB, n_series: int, steps: range) -> None:
    for s in steps:
        db.append(WriteBatch.from_series([
            ({"__name__": "m", "i": str(i)}, [(T0 + s * STEP, float(s))])
            for i in range(n_series)]))


def _dump(db: DB, mint: int = LO, maxt: int = HI) -> dict[str, list[int]]:
    got = db.select(ALL, mint, maxt)
    return {got.labels(i)["i"]: got.series_samples(i)[0].tolist() for i in range(got.n_series)}


def _want(n_series: int, steps: range, gone: dict[str, tuple[int, int]]) -> dict:
    out = {}
    for i in range(n_series):
        lo, hi = gone.get(str(i), (1, 0))
        ts = [T0 + s * STEP for s in steps if not lo <= T0 + s * STEP <= hi]
        if ts:
            out[str(i)] = ts
    return out


def _check_chunks(db: DB, want: dict[str, list[int]]) -> None:
    """Chunks as remote read streams them hold exactly the samples left."""
    got = db.querier().select_chunks(ALL, LO, HI)
    ts, _, starts = chunkenc.decode_many(np.full(len(got.mint), ENCODING_XOR, np.uint8),
                                         got.blob, got.offsets)
    per_series = np.diff(starts)
    found = {}
    for i in range(got.n_series):
        a, b = got.chunk_starts[i], got.chunk_starts[i + 1]
        found[got.labels(i)["i"]] = ts[starts[a]:starts[b]].tolist()
        assert np.all(per_series[a:b] > 0)
    assert found == want


def _eq(name: str, value: str) -> list[Matcher]:
    return [Matcher(MatchType.EQ, name, value)]


def test_head_deletion_is_read_logged_and_survives_restart(tmp_path):
    db = DB.open(tmp_path, _options())
    _write(db, 3, range(0, 100))
    gone = (T0 + 10 * STEP, T0 + 20 * STEP)
    db.delete(_eq("i", "1"), *gone)
    db.delete(_eq("i", "2"), LO, HI)
    want = _want(3, range(0, 100), {"1": gone, "2": (LO, HI)})
    assert _dump(db) == want
    querier = db.querier()
    assert querier.series_labels(querier.select_series(ALL, LO, HI)) == \
        [{"__name__": "m", "i": "0"}, {"__name__": "m", "i": "1"}]
    # Only the deleted stretch asked for: nothing of series 1 is left there.
    assert db.querier().select_series(_eq("i", "1"), *gone).tolist() == []
    _check_chunks(db, want)
    db.close()
    db = DB.open(tmp_path, _options())
    assert _dump(db) == want
    # Later samples are not deleted: tombstones end at the series' last sample.
    _write(db, 3, range(100, 110))
    assert _dump(db)["2"] == [T0 + s * STEP for s in range(100, 110)]
    db.close()


def test_persisting_leaves_deleted_samples_out_and_the_checkpoint_keeps_the_rest(tmp_path):
    db = DB.open(tmp_path, _options())
    _write(db, 2, range(0, 4 * 240))  # four hours
    gone = (T0 + 100 * STEP, T0 + 700 * STEP)  # across the first block's end
    db.delete(_eq("i", "0"), *gone)
    (meta,) = db.compact_head()
    assert meta.num_samples == 2 * 480 - (480 - 100)
    want = _want(2, range(0, 960), {"0": gone})
    assert _dump(db) == want
    db.close()
    db = DB.open(tmp_path, _options())  # head from the checkpoint, tombstone included
    assert _dump(db) == want
    db.close()


def test_block_deletion_writes_its_file_and_compaction_drops_the_samples(tmp_path):
    db = DB.open(tmp_path, _options())
    _write(db, 3, range(0, 4 * 240))
    (meta,) = db.compact_head()
    gone = (T0 + 10 * STEP, T0 + 600 * STEP)  # block and head both
    db.delete(_eq("i", "1"), *gone)
    want = _want(3, range(0, 960), {"1": gone})
    assert _dump(db) == want
    (block,) = db.blocks
    assert len(block.tombstones) == 1
    stones = read_file(meta.path)
    assert stones.mint.tolist() == [gone[0]] and stones.maxt.tolist() == [T0 + 479 * STEP]
    assert json.loads((meta.path / "meta.json").read_text())["stats"]["numTombstones"] == 1
    db.close()
    db = DB.open(tmp_path, _options())
    assert _dump(db) == want
    _check_chunks(db, want)
    querier = db.querier()
    inside = querier.select_series(ALL, *gone)
    assert [x["i"] for x in querier.series_labels(inside)] == ["0", "2"]
    new = compact(tmp_path, db.blocks, dense=False)
    db.replace_blocks(new, db.blocks)
    assert new.num_samples == 3 * 480 - 470
    assert len(db.blocks[0].tombstones) == 0 and _dump(db) == want
    db.close()


def test_clean_tombstones_rewrites_only_blocks_with_deletions(tmp_path):
    db = DB.open(tmp_path, _options())
    _write(db, 2, range(0, 6 * 240))
    db.compact_head()
    db.compact_head()
    first, second = db.blocks
    db.delete(_eq("i", "0"), T0, T0 + 5 * STEP)
    db.delete(_eq("i", "1"), LO, HI)  # all of series 1: in both blocks and the head
    want = _want(2, range(0, 1440), {"0": (T0, T0 + 5 * STEP), "1": (LO, HI)})
    assert _dump(db) == want
    done = db.clean_tombstones(lambda b: compact(tmp_path, [b], dense=True))
    assert done == 2
    assert all(len(b.tombstones) == 0 for b in db.blocks)
    assert sum(b.meta.num_samples for b in db.blocks) == 480 - 6 + 480
    assert {b.meta.ulid for b in db.blocks}.isdisjoint({first.meta.ulid, second.meta.ulid})
    assert _dump(db) == want
    assert db.clean_tombstones(lambda b: compact(tmp_path, [b])) == 0
    db.close()
    db = DB.open(tmp_path, _options())
    assert _dump(db) == want
    db.close()


def test_a_block_rewritten_from_blocks_that_changed_meanwhile_is_refused(tmp_path):
    db = DB.open(tmp_path, _options())
    _write(db, 2, range(0, 4 * 240))
    db.compact_head()
    sources = db.blocks
    new = compact(tmp_path, sources)
    db.delete(_eq("i", "0"), LO, HI)  # lands on the source while it is being compacted
    with pytest.raises(StorageError, match="changed"):
        db.replace_blocks(new, sources)
    assert not new.path.exists()
    assert "0" not in _dump(db)
    db.close()


def test_snapshot_links_blocks_and_writes_the_head(tmp_path):
    data = tmp_path / "data"
    db = DB.open(data, _options())
    _write(db, 3, range(0, 4 * 240))
    db.compact_head()
    db.delete(_eq("i", "2"), T0 + 5 * STEP, T0 + 600 * STEP)
    snap = data / "snapshots" / "s1"
    db.snapshot(snap)
    (block,) = db.blocks
    linked = snap / block.meta.ulid
    for name in ("index", "meta.json", "tombstones", "chunks/000001"):
        assert os.stat(linked / name).st_ino == os.stat(block.meta.path / name).st_ino
    assert len([p for p in snap.iterdir()]) == 2  # the block and the head's
    want = _dump(db)
    db.snapshot(tmp_path / "no-head", with_head=False)
    db.close()
    copy = DB.open(snap, _options())
    assert _dump(copy) == want
    copy.close()
    copy = DB.open(tmp_path / "no-head", _options())
    assert _dump(copy) == _dump(copy, LO, T0 + 2 * HOUR - 1)
    assert max(max(ts) for ts in _dump(copy).values()) < T0 + 2 * HOUR
    copy.close()
    db = DB.open(data, _options())
    with pytest.raises(StorageError, match="data directory itself"):
        db.snapshot(data)
    db.close()


def test_block_ignores_tombstones_of_unknown_series(tmp_path):
    db = DB.open(tmp_path, _options())
    _write(db, 2, range(0, 4 * 240))
    (meta,) = db.compact_head()
    db.close()
    from storage.tombstones import write_file
    write_file(meta.path, Tombstones.of(np.array([1 << 40]), np.array([LO]), np.array([HI])))
    with Block.open(meta.path) as block:
        assert len(block.tombstones) == 0


def test_a_crash_before_the_old_block_is_deleted_keeps_the_rewritten_one(tmp_path):
    db = DB.open(tmp_path, _options())
    _write(db, 2, range(0, 4 * 240))
    db.compact_head()
    db.delete(_eq("i", "0"), T0, T0 + 99 * STEP)
    want = _dump(db)
    (block,) = db.blocks
    rewritten = compact(tmp_path, [block])  # clean_tombstones stopped right after this
    db.close()
    db = DB.open(tmp_path, _options())
    assert [b.meta.ulid for b in db.blocks] == [rewritten.ulid]
    assert not block.meta.path.exists()
    assert _dump(db) == want
    db.close()
