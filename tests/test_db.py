"""DB: head ranges persisted to blocks, WAL checkpointed, reads merged over both."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from storage.batch import WriteBatch
from storage.db import DB, DBOptions
from storage.head import HeadOptions
from storage.matchers import Matcher, MatchType

HOUR = 3_600_000
T0 = 1_700_000_000_000 // (2 * HOUR) * (2 * HOUR)
ALL = [Matcher(MatchType.RE, "__name__", ".+")]
LO, HI = np.iinfo(np.int64).min, np.iinfo(np.int64).max


def _options(**head) -> DBOptions:
    return DBOptions(head=HeadOptions(**head), compaction_interval=0)


def _write(db: DB, n_series: int, steps: range, step_ms: int = 15_000) -> None:
    for s in steps:
        db.append(WriteBatch.from_series([
            ({"__name__": "m", "i": str(i)}, [(T0 + s * step_ms, float(s * 10 + i))])
            for i in range(n_series)]))


def _dump(db: DB) -> dict[tuple, list[tuple[int, float]]]:
    got = db.select(ALL, LO, HI)
    out = {}
    for i in range(got.n_series):
        ts, vs = got.series_samples(i)
        out[tuple(got.labels(i).items())] = list(zip(ts.tolist(), vs.tolist()))
    return out


def _expected(n_series: int, steps: range, step_ms: int = 15_000):
    return {(("__name__", "m"), ("i", str(i))):
            [(T0 + s * step_ms, float(s * 10 + i)) for s in steps] for i in range(n_series)}


def test_head_range_becomes_a_block_and_the_wal_shrinks(tmp_path):
    db = DB.open(tmp_path, _options())
    _write(db, 5, range(0, 4 * 240))  # four hours at 15 s
    segments_before = db.head.wal.segments()
    made = db.compact_head()
    assert [m.max_time - T0 for m in made] == [2 * HOUR]
    assert made[0].num_series == 5 and made[0].num_samples == 5 * 480
    assert made[0].num_chunks == 5 * 4
    assert db.head.n_samples == 5 * 480 and db.head.min_time == T0 + 2 * HOUR
    assert _dump(db) == _expected(5, range(0, 960))
    assert (tmp_path / "wal" / f"checkpoint.{segments_before[-1]:08d}").is_dir()
    assert min(db.head.wal.segments()) > segments_before[-1]
    # Samples inside the persisted range are now out of bounds.
    result = db.append(WriteBatch.from_series([({"__name__": "m", "i": "0"}, [(T0, 1.0)])]))
    assert result.rejected == {"out_of_bounds": 1}
    _write(db, 5, range(960, 1000))
    db.close()

    db = DB.open(tmp_path, _options())
    try:
        assert len(db.blocks) == 1
        assert _dump(db) == _expected(5, range(0, 1000))
        assert db.head.n_samples == 5 * 520  # nothing of the block replayed into the head
    finally:
        db.close()


def test_reads_merge_block_and_head_and_label_apis_see_both(tmp_path):
    db = DB.open(tmp_path, _options())
    try:
        _write(db, 3, range(0, 960))
        db.compact_head()
        db.append(WriteBatch.from_series([({"__name__": "late_only", "x": "y"},
                                           [(T0 + 5 * HOUR, 1.0)])]))
        q = db.querier(LO, HI)
        assert q.label_names() == ["__name__", "i", "x"]
        assert q.label_values("__name__") == ["late_only", "m"]
        refs = q.select_series([Matcher(MatchType.EQ, "i", "1")], LO, HI)
        assert q.series_labels(refs) == [{"__name__": "m", "i": "1"}]
        # A time range inside the block only.
        early = db.querier(T0, T0 + HOUR)
        refs = early.select_series(ALL, T0, T0 + HOUR)
        assert len(refs) == 3
        got = db.select([Matcher(MatchType.EQ, "i", "2")], T0 + HOUR, T0 + 3 * HOUR)
        ts, _ = got.series_samples(0)
        assert ts[0] == T0 + HOUR and ts[-1] == T0 + 3 * HOUR and len(ts) == 481
    finally:
        db.close()


def test_reads_decode_block_chunks_a_batch_at_a_time(tmp_path, monkeypatch):
    """Windows that cut through chunks give the same samples whether a block's chunks
    are decoded all at once or a few at a time (then trimmed batch by batch)."""
    import storage.querier

    db = DB.open(tmp_path, _options())
    try:
        _write(db, 4, range(0, 960))
        db.compact_head()
        windows = [(LO, HI), (T0 + 7_000, T0 + HOUR + 1), (T0 + 30 * 60_000, T0 + 30 * 60_000),
                   (T0 + HOUR, T0 + 3 * HOUR)]
        whole = [db.select(ALL, lo, hi) for lo, hi in windows]
        monkeypatch.setattr(storage.querier, "_DECODE_CHUNKS", 3)
        for (lo, hi), want in zip(windows, whole):
            got = db.select(ALL, lo, hi)
            assert got.n_series == want.n_series == 4
            for i in range(4):
                ts, vs = got.series_samples(i)
                want_ts, want_vs = want.series_samples(i)
                assert ts.tolist() == want_ts.tolist() and vs.tolist() == want_vs.tolist()
                assert len(ts) and ts[0] >= lo and ts[-1] <= hi
                everything = _expected(4, range(0, 960))[tuple(got.labels(i).items())]
                assert list(zip(ts.tolist(), vs.tolist())) == \
                    [(t, v) for t, v in everything if lo <= t <= hi]
    finally:
        db.close()


def test_out_of_order_samples_reach_the_block(tmp_path):
    db = DB.open(tmp_path, _options(out_of_order_window_ms=10 * HOUR))
    try:
        _write(db, 2, range(0, 960, 2))  # every other step in order ...
        _write(db, 2, range(1, 960, 2))  # ... then the rest, late
        assert db.head.out_of_order.n_samples == 2 * 479  # step 959 is newer than 958
        db.compact_head()
        assert _dump(db) == _expected(2, range(0, 960))
        block = db.blocks[0]
        assert block.meta.num_samples == 2 * 480
    finally:
        db.close()


def test_corrupt_block_is_moved_aside_and_the_rest_served(tmp_path):
    db = DB.open(tmp_path, _options())
    _write(db, 2, range(0, 960))
    db.compact_head()
    db.close()
    (block_dir,) = [p for p in tmp_path.iterdir() if len(p.name) == 26]
    with open(block_dir / "index", "r+b") as f:  # a flipped bit in the table of contents
        f.seek(-10, os.SEEK_END)
        b = f.read(1)
        f.seek(-10, os.SEEK_END)
        f.write(bytes([b[0] ^ 0x01]))
    db = DB.open(tmp_path, _options())
    try:
        assert db.blocks == []
        assert (tmp_path / "corrupted" / block_dir.name).is_dir()
        assert "cannot be read" in db.open_report[0]
        assert _dump(db) == _expected(2, range(480, 960))
    finally:
        db.close()


def test_unfinished_block_and_checkpoint_are_discarded(tmp_path):
    db = DB.open(tmp_path, _options())
    _write(db, 2, range(0, 960))
    db.close()
    (tmp_path / "01ARZ3NDEKTSV4RRFFQ69G5FAV.tmp-for-creation").mkdir()
    (tmp_path / "wal" / "checkpoint.00000001.creating").mkdir()
    db = DB.open(tmp_path, _options())
    try:
        assert not any(p.name.endswith((".tmp-for-creation", ".creating"))
                       for p in [*tmp_path.iterdir(), *(tmp_path / "wal").iterdir()])
        assert _dump(db) == _expected(2, range(0, 960))
    finally:
        db.close()


@pytest.mark.parametrize("stage", ["block_only", "checkpoint_no_truncate"])
def test_interrupted_persist_loses_and_duplicates_nothing(tmp_path, stage):
    """The states a crash can leave between the steps of persisting a range."""
    src = tmp_path / "src"
    db = DB.open(src, _options())
    _write(db, 3, range(0, 960))
    wal_copy = tmp_path / "wal_before"
    shutil.copytree(src / "wal", wal_copy)
    db.compact_head()
    db.close()
    if stage == "block_only":
        # Crash right after the block was written: the WAL is still the old one.
        shutil.rmtree(src / "wal")
        shutil.copytree(wal_copy, src / "wal")
    else:
        # Crash after the checkpoint, before old segments were deleted.
        for name in os.listdir(wal_copy):
            if not (src / "wal" / name).exists():
                shutil.copy(wal_copy / name, src / "wal" / name)
    db = DB.open(src, _options())
    try:
        assert _dump(db) == _expected(3, range(0, 960))
        assert db.head.n_samples == 3 * 480
    finally:
        db.close()


def _chunk_samples(cs, i):
    from storage.xor import decode_xor_many
    lo, hi = cs.chunk_starts[i], cs.chunk_starts[i + 1]
    ts, vs, _ = decode_xor_many(cs.blob[cs.offsets[lo]:cs.offsets[hi]],
                                cs.offsets[lo:hi + 1] - cs.offsets[lo])
    return list(zip(ts.tolist(), vs.tolist()))


def test_select_chunks_pass_stored_chunks_and_merge_overlaps(tmp_path):
    db = DB.open(tmp_path, _options(out_of_order_window_ms=10 * HOUR))
    try:
        _write(db, 3, range(0, 960))
        db.compact_head()
        q = db.querier(LO, HI)
        cs = q.select_chunks(ALL, LO, HI)
        assert cs.n_series == 3 and [cs.labels(i)["i"] for i in range(3)] == ["0", "1", "2"]
        expected = _expected(3, range(0, 960))
        for i in range(3):
            assert _chunk_samples(cs, i) == expected[tuple(cs.labels(i).items())]
        # Block chunks come through as stored.
        block = db.blocks[0]
        stored = block.chunks(np.arange(3), LO, HI)
        first = cs.blob[cs.offsets[0]:cs.offsets[1]]
        assert first.tobytes() == stored.blob[stored.offsets[0]:stored.offsets[1]].tobytes()
        # A late sample in the head: that series' chunks are rebuilt with it merged in.
        late = WriteBatch.from_series([({"__name__": "m", "i": "1"},
                                        [(T0 + 3 * HOUR + 7_500, -1.0)])])
        assert db.append(late).accepted == 1
        cs = db.querier(LO, HI).select_chunks([Matcher(MatchType.EQ, "i", "1")], LO, HI)
        got = _chunk_samples(cs, 0)
        assert (T0 + 3 * HOUR + 7_500, -1.0) in got and len(got) == 961
        assert [t for t, _ in got] == sorted(t for t, _ in got)
    finally:
        db.close()


def test_reads_during_persisting_see_every_sample(tmp_path):
    """A range is in the head or in its new block for every read, never in neither."""
    import threading

    db = DB.open(tmp_path, _options())
    try:
        _write(db, 20, range(0, 12 * 240, 4))  # twelve hours, a minute apart
        total = 20 * 12 * 60
        assert db.select(ALL, LO, HI).n_samples == total
        counts: list[int] = []
        done = threading.Event()

        def read() -> None:
            while not done.is_set() and len(counts) < 2000:
                counts.append(db.select(ALL, LO, HI).n_samples)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            made = db.compact_head()
        finally:
            done.set()
            reader.join(60)
        assert len(made) >= 4 and counts
        assert set(counts) == {total}
    finally:
        db.close()


def test_persisting_copies_the_head_a_slice_of_series_at_a_time(tmp_path, monkeypatch):
    import storage.db

    monkeypatch.setattr(storage.db, "_SERIES_PER_SLICE", 2)
    db = DB.open(tmp_path, _options(out_of_order_window_ms=10 * HOUR))
    _write(db, 5, range(0, 960, 2))
    _write(db, 5, range(1, 960, 2))  # late samples too
    db.compact_head()
    assert _dump(db) == _expected(5, range(0, 960))
    db.close()
    db = DB.open(tmp_path, _options())  # the checkpoint, written in slices, replays
    try:
        assert _dump(db) == _expected(5, range(0, 960))
    finally:
        db.close()


def _write_series(db: DB, which: range, steps: range, step_ms: int = 15_000) -> None:
    for s in steps:
        db.append(WriteBatch.from_series([
            ({"__name__": "m", "i": str(i)}, [(T0 + s * step_ms, float(s * 10 + i))])
            for i in which]))


def _crash_copy(src, dst) -> None:
    """The data directory as a kill -9 would leave it (every append was fsynced)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("lock"))


def test_series_idle_since_their_block_are_forgotten_at_restart(tmp_path):
    """The checkpoint keeps only series holding samples, so that series which stopped
    (a replaced pod's) leave the head at the next start; their samples stay in blocks."""
    db = DB.open(tmp_path, _options())
    _write_series(db, range(5), range(0, 240))  # one hour of five series
    _write_series(db, range(3), range(240, 960))  # then only three, up to four hours
    db.compact_head()  # the first two hours to a block: series 3 and 4 hold nothing now
    assert db.head.n_series == 5
    _write_series(db, range(3), range(960, 1000))
    db.close()

    db = DB.open(tmp_path, _options())
    try:
        assert db.head.n_series == 3
        want = _expected(3, range(0, 1000))
        want |= {k: v for k, v in _expected(5, range(0, 240)).items() if k[1][1] in "34"}
        assert _dump(db) == want
    finally:
        db.close()


def test_series_left_out_of_a_checkpoint_and_written_again_survive_a_crash(tmp_path):
    db = DB.open(tmp_path, _options())
    _write_series(db, range(2), range(0, 240))
    _write_series(db, range(1), range(240, 960))
    db.compact_head()  # series 1 left out of the checkpoint
    _write_series(db, range(2), range(960, 1000))  # series 1 again, after the checkpoint
    _crash_copy(tmp_path, tmp_path / "copy")
    db.close()

    want = {**_expected(1, range(0, 1000)),
            (("__name__", "m"), ("i", "1")): _expected(2, range(0, 240))[
                (("__name__", "m"), ("i", "1"))] + _expected(2, range(960, 1000))[
                (("__name__", "m"), ("i", "1"))]}
    db = DB.open(tmp_path / "copy", _options())
    try:
        assert db.head.replay_report == []  # no sample without its series record
        assert db.head.n_series == 2
        assert _dump(db) == want
        # The next checkpoint keeps it: it holds samples again.
        _write_series(db, range(2), range(1000, 1500))
        db.compact_head()
        _crash_copy(tmp_path / "copy", tmp_path / "copy2")
    finally:
        db.close()
    want = {k: v + _expected(2, range(1000, 1500))[k] for k, v in want.items()}
    db = DB.open(tmp_path / "copy2", _options())
    try:
        assert db.head.replay_report == []
        assert db.head.n_series == 2
        assert _dump(db) == want
    finally:
        db.close()


def test_a_checkpoint_holds_only_what_its_series_hold():
    from storage.db import _of_series
    from storage.head_chunks import ChunkBatch
    from storage.samples import SampleSet
    from storage.tombstones import Tombstones

    blob = np.arange(10, dtype=np.uint8)
    chunks = ChunkBatch(pos=np.array([0, 1, 1, 2]), mint=np.array([1, 2, 3, 4]),
                        maxt=np.array([5, 6, 7, 8]), blob=blob,
                        offsets=np.array([0, 2, 5, 7, 10]))
    late = SampleSet(np.array([0, 1, 2]), np.array([10, 11, 12]), np.array([1.0, 2.0, 3.0]))
    stones = Tombstones.of(np.array([1, 2]), np.array([0, 0]), np.array([9, 9]))
    kept = np.array([True, False, True])
    c, s, t = _of_series(kept, chunks, late, stones)
    assert c.pos.tolist() == [0, 2] and c.mint.tolist() == [1, 4] and c.maxt.tolist() == [5, 8]
    assert c.blob.tolist() == [0, 1, 7, 8, 9] and c.offsets.tolist() == [0, 2, 5]
    assert s.refs.tolist() == [0, 2] and s.values.tolist() == [1.0, 3.0]
    assert t.refs.tolist() == [2]


def test_refs_changed_by_a_restart_are_checkpointed_before_new_records(tmp_path):
    """A checkpoint that left out series 0 makes the next start give series 1 the ref 0;
    records written after that start must not be read with the WAL's old numbering."""
    db = DB.open(tmp_path, _options())
    _write_series(db, range(2), range(0, 240))
    _write_series(db, range(1, 2), range(240, 960))
    db.compact_head()  # series 0 left out of the checkpoint
    db.close()

    db = DB.open(tmp_path, _options())
    try:
        assert db.head.n_series == 1
        _write_series(db, range(2), range(960, 1000))  # series 1 by its new ref; 0 anew
        _crash_copy(tmp_path, tmp_path / "copy")
    finally:
        db.close()
    db = DB.open(tmp_path / "copy", _options())
    try:
        assert db.head.replay_report == []
        key = (("__name__", "m"), ("i", "0"))
        want = _expected(2, range(0, 240)) | {k: v for k, v in _expected(
            2, range(0, 1000)).items() if k != key}
        want[key] = want[key] + _expected(2, range(960, 1000))[key]
        assert _dump(db) == want
    finally:
        db.close()
