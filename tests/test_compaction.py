"""Compaction: the leveled planner, merging blocks, retention, and crash leftovers."""

from __future__ import annotations

import numpy as np

from compaction.compactor import compact
from compaction.downsample import DownsampleOptions
from compaction.maintainer import Maintainer, MaintainerOptions
from compaction.planner import BlockSpan, plan, ranges
from compaction.retention import expired
from storage.batch import WriteBatch
from storage.block import Block, BlockMeta
from storage.db import DB, DBOptions
from storage.matchers import Matcher, MatchType
from storage.xor import ENCODING_XOR, decode_xor_many

HOUR = 3_600_000
T0 = 1_700_000_000_000 // (54 * HOUR) * (54 * HOUR)
RANGES = ranges(2 * HOUR, 3, 54 * HOUR)
ALL = [Matcher(MatchType.RE, "__name__", ".+")]
LO, HI = np.iinfo(np.int64).min, np.iinfo(np.int64).max


def span(name: str, lo_h: float, hi_h: float) -> BlockSpan:
    return BlockSpan(name, T0 + int(lo_h * HOUR), T0 + int(hi_h * HOUR))


def test_ranges_grow_by_three_up_to_the_maximum():
    assert [r // HOUR for r in RANGES] == [2, 6, 18, 54]


def test_plan_merges_three_two_hour_blocks_once_a_newer_block_exists():
    blocks = [span("a", 0, 2), span("b", 2, 4), span("c", 4, 6)]
    assert plan(blocks, RANGES) == []  # c is the newest: left alone
    blocks.append(span("d", 6, 8))
    assert [b.ulid for b in plan(blocks, RANGES)] == ["a", "b", "c"]


def test_plan_takes_an_incomplete_window_only_when_it_is_in_the_past():
    blocks = [span("a", 0, 2), span("b", 2, 4), span("d", 6, 8)]
    assert plan(blocks, RANGES) == []  # d is the newest; b is not before a newer candidate
    blocks.append(span("e", 8, 10))
    assert [b.ulid for b in plan(blocks, RANGES)] == ["a", "b"]


def test_plan_merges_overlapping_blocks_first():
    blocks = [span("a", 0, 6), span("x", 7, 8), span("y", 7.5, 9), span("z", 12, 14)]
    assert [b.ulid for b in plan(blocks, RANGES)] == ["x", "y"]


def test_plan_climbs_levels():
    blocks = [span("a", 0, 6), span("b", 6, 12), span("c", 12, 18), span("d", 18, 20)]
    assert [b.ulid for b in plan(blocks, RANGES)] == ["a", "b", "c"]


def stones(name: str, lo_h: float, hi_h: float, series: int, tombstones: int) -> BlockSpan:
    s = span(name, lo_h, hi_h)
    return BlockSpan(s.ulid, s.min_time, s.max_time, series, tombstones)


def test_plan_rewrites_a_wide_block_with_more_than_five_percent_tombstones():
    wide = [stones("a", 0, 18, 100, 5), stones("b", 18, 36, 100, 6), stones("c", 36, 38, 9, 9)]
    assert plan(wide, RANGES) == [wide[1]]  # 6 / 101 > 5 %; c is the newest, left alone
    assert plan([wide[0], stones("b", 18, 36, 100, 5), wide[2]], RANGES) == []  # 5 / 101
    # Narrower than the middle range (18 h of 2..54 h): only when every series has one.
    # Narrow blocks do not hide older wide ones (Prometheus stops at the first).
    narrow = [stones("a", 0, 18, 100, 4), stones("b", 18, 20, 10, 9), stones("c", 20, 22, 1, 0)]
    assert plan(narrow, RANGES) == []
    narrow[0] = stones("a", 0, 18, 100, 50)
    assert plan(narrow, RANGES) == [narrow[0]]
    narrow[1] = stones("b", 18, 20, 10, 10)
    assert plan(narrow, RANGES) == [narrow[1]]
    # Merging comes first.
    merging = [stones("a", 0, 2, 10, 10), stones("b", 2, 4, 10, 0), stones("c", 4, 6, 10, 0),
               stones("d", 6, 8, 10, 0)]
    assert [b.ulid for b in plan(merging, RANGES)] == ["a", "b", "c"]


def test_maintainer_rewrites_tombstoned_blocks(tmp_path):
    from storage.tombstones import read_file

    db = _db(tmp_path)
    try:
        _write(db, range(0, 30 * 60, 5), n_series=10)  # 30 hours, every 5 minutes
        db.compact_head()
        # Ranges 2 h, 6 h, 18 h: blocks of 6 h and more are wide.
        m = Maintainer(db, MaintainerOptions(retention_ms=0, max_block_ms=18 * HOUR,
                                             rate_limit=0))
        m.run_once()
        blocks = db.blocks
        wide = [b for b in blocks[:-1] if b.meta.max_time - b.meta.min_time >= 6 * HOUR]
        assert wide, [b.meta for b in blocks]
        target = wide[-1].meta
        # One series of ten deleted in part: 1 / 11 > 5 %.
        gone = (target.min_time + HOUR, target.min_time + 2 * HOUR)
        db.delete([Matcher(MatchType.EQ, "i", "3")], *gone)
        before = _dump(db)
        assert len(read_file(db.blocks[[b.meta.ulid for b in db.blocks].index(target.ulid)]
                             .meta.path)) == 1
        assert m.run_once() == 1
        after = {b.meta.ulid: b.meta for b in db.blocks}
        assert target.ulid not in after and len(after) == len(blocks)
        rewritten = next(b for b in after.values() if b.sources == target.sources)
        assert (rewritten.level, rewritten.num_tombstones) == (target.level + 1, 0)
        assert rewritten.num_samples == target.num_samples - 13  # 2 hours every 5 minutes
        assert len(read_file(rewritten.path)) == 0
        assert _dump(db) == before
        assert m.run_once() == 0  # nothing more to do
        # A block whose every series is deleted goes altogether.
        newest = db.blocks[-1].meta
        small = db.blocks[-2].meta
        db.delete(ALL, small.min_time, small.max_time - 1)
        assert db.blocks[-2].meta.num_tombstones == small.num_series
        m.run_once()
        assert [b.meta.ulid for b in db.blocks][-1] == newest.ulid
        assert small.ulid not in {b.meta.ulid for b in db.blocks}
        assert not small.path.exists()
    finally:
        db.close()


def _meta(name: str, lo_h: float, hi_h: float) -> BlockMeta:
    s = span(name, lo_h, hi_h)
    return BlockMeta(s.ulid, s.min_time, s.max_time, 0, 0, 0, 1, (s.ulid,), None)  # type: ignore[arg-type]


def test_retention_by_time_and_size():
    metas = [_meta("a", 0, 2), _meta("b", 2, 4), _meta("c", 4, 6)]
    assert [m.ulid for m in expired(metas, T0 + 7 * HOUR, 4 * HOUR, 0, [0, 0, 0])] == ["a"]
    assert [m.ulid for m in expired(metas, T0 + 7 * HOUR, 0, 150, [100, 100, 100], 10)] == \
        ["a", "b"]
    assert expired(metas, T0 + 7 * HOUR, 0, 0, [1, 1, 1]) == []


def _db(path, **kw) -> DB:
    return DB.open(path, DBOptions(compaction_interval=0, **kw))


def _write(db: DB, steps: range, n_series: int = 4, value_base: float = 0.0) -> None:
    for s in steps:
        db.append(WriteBatch.from_series([
            ({"__name__": "m", "i": str(i)}, [(T0 + s * 60_000, value_base + s + i / 10)])
            for i in range(n_series)]))


def _dump(db: DB) -> dict:
    got = db.select(ALL, LO, HI)
    return {tuple(got.labels(i).items()): (got.series_samples(i)[0].tolist(),
                                           got.series_samples(i)[1].tolist())
            for i in range(got.n_series)}


def test_compacting_neighbours_carries_chunks_over(tmp_path):
    db = _db(tmp_path)
    try:
        _write(db, range(0, 9 * 60))  # nine hours a minute apart: blocks of 2 h are cut
        db.compact_head()
        before = _dump(db)
        sources = db.blocks[:3]
        assert [b.meta.max_time - T0 for b in sources] == [2 * HOUR, 4 * HOUR, 6 * HOUR]
        meta = compact(tmp_path, sources, dense=False)
        assert meta.level == 2 and meta.min_time == T0 and meta.max_time == T0 + 6 * HOUR
        assert set(meta.sources) == {b.meta.ulid for b in sources}
        assert meta.num_chunks == sum(b.meta.num_chunks for b in sources)
        assert meta.num_samples == sum(b.meta.num_samples for b in sources)
        db.replace_blocks(meta, sources)
        assert not any(b.meta.path.exists() for b in sources)
        assert _dump(db) == before
    finally:
        db.close()


def test_overlapping_blocks_merge_and_keep_one_copy(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for path, steps, base in ((a, range(0, 100), 0.0), (b, range(50, 120), 1000.0)):
        db = _db(path)
        _write(db, steps, value_base=base)
        _write(db, range(300, 400), value_base=base)  # push the head past 1.5 ranges
        db.compact_head()
        db.close()
    blocks = [Block.open(min(p for p in path.iterdir() if len(p.name) == 26))
              for path in (a, b)]  # the first two hours of each
    meta = compact(tmp_path, blocks, dense=False)
    merged = Block.open(meta.path)
    try:
        assert merged.meta.num_samples == 4 * 120
        chunks = merged.chunks(merged.select_series(ALL, LO, HI), LO, HI)
        ts, vs, starts = decode_xor_many(chunks.blob, chunks.offsets)
        first = chunks.series == 0
        t0 = np.concatenate([ts[starts[c]:starts[c + 1]] for c in np.flatnonzero(first)])
        v0 = np.concatenate([vs[starts[c]:starts[c + 1]] for c in np.flatnonzero(first)])
        assert np.array_equal(t0, T0 + np.arange(120) * 60_000)
        # Where both had a sample, the first block's copy (value_base 0) won.
        assert v0[75] == 75.0 and v0[110] == 1110.0
    finally:
        merged.close()
        for blk in blocks:
            blk.close()


def test_maintainer_compacts_levels_and_applies_retention(tmp_path):
    db = _db(tmp_path)
    try:
        _write(db, range(0, 30 * 60, 5))  # 30 hours, every 5 minutes
        db.compact_head()
        n_blocks = len(db.blocks)
        before = _dump(db)
        m = Maintainer(db, MaintainerOptions(retention_ms=0, interval=0))
        assert m.run_once() >= 1
        assert len(db.blocks) < n_blocks
        assert max(b.meta.level for b in db.blocks) >= 2
        assert _dump(db) == before
        m = Maintainer(db, MaintainerOptions(retention_ms=10 * HOUR, interval=0))
        m.run_once()
        newest = db.head.max_time
        assert all(newest - b.meta.max_time <= 10 * HOUR for b in db.blocks)
        assert m.stats.blocks_deleted_by_retention >= 1
    finally:
        db.close()


def test_blocks_up_to_the_second_level_stay_xor_and_wider_ones_are_dense(tmp_path):
    """Dashboards read the newest hours most: 6 h blocks keep their XOR chunks (copied
    through), and blocks of the third level (18 h) are dense."""
    from storage.dense import ENCODING_DENSE

    db = _db(tmp_path)
    try:
        _write(db, range(0, 28 * 60, 5))  # 28 hours, every 5 minutes
        db.compact_head()
        before = _dump(db)
        Maintainer(db, MaintainerOptions(retention_ms=0, interval=0)).run_once()
        assert _dump(db) == before
        encodings = {(b.meta.max_time - b.meta.min_time) // HOUR:
                     set(b.chunks(np.arange(b.n_series), LO, HI).encoding.tolist())
                     for b in db.blocks}
        assert encodings == {18: {ENCODING_DENSE}, 6: {ENCODING_XOR}, 2: {ENCODING_XOR}}
    finally:
        db.close()


def test_sources_left_by_a_crash_after_compaction_are_deleted_on_open(tmp_path):
    db = _db(tmp_path)
    _write(db, range(0, 9 * 60))
    db.compact_head()
    before = _dump(db)
    sources = db.blocks[:3]
    compact(tmp_path, sources)  # the process dies before the sources are deleted
    db.close()
    db = _db(tmp_path)
    try:
        assert not any(b.meta.path.exists() for b in sources)
        assert _dump(db) == before
        assert sum(b.meta.num_samples for b in db.blocks) + db.head.n_samples == 4 * 9 * 60
    finally:
        db.close()


def test_compact_command(tmp_path):
    import subprocess
    import sys

    db = _db(tmp_path)
    _write(db, range(0, 30 * 60, 5))
    before = _dump(db)
    db.close()
    out = subprocess.run([sys.executable, "-m", "promstore", "compact", "--data-dir",
                          str(tmp_path), "--retention-time", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "blocks written from the head" in out.stdout
    db = _db(tmp_path)
    try:
        assert max(b.meta.level for b in db.blocks) >= 2
        assert _dump(db) == before
    finally:
        db.close()


def test_reads_over_overlapping_blocks_keep_the_older_blocks_copy(tmp_path):
    import shutil

    a, b, merged = tmp_path / "a", tmp_path / "b", tmp_path / "merged"
    for path, steps, base in ((a, range(0, 100), 0.0), (b, range(50, 120), 1000.0)):
        db = _db(path)
        _write(db, steps, value_base=base)
        _write(db, range(300, 400), value_base=base)
        db.compact_head()
        db.close()
    merged.mkdir()
    for path in (a, b):
        first = min(p for p in path.iterdir() if len(p.name) == 26)
        shutil.copytree(first, merged / first.name)
    db = _db(merged)
    try:
        got = db.select([Matcher(MatchType.EQ, "i", "0")], LO, HI)
        ts, vs = got.series_samples(0)
        assert np.array_equal(ts, T0 + np.arange(120) * 60_000)
        assert vs[75] == 75.0 and vs[110] == 1110.0 and vs[10] == 10.0
    finally:
        db.close()


def test_dense_compaction_shrinks_blocks_and_reads_the_same(tmp_path):
    from storage.dense import ENCODING_DENSE

    db = _db(tmp_path)
    try:
        _write(db, range(0, 9 * 60))
        db.compact_head()
        before = _dump(db)
        sources = db.blocks[:3]
        meta = compact(tmp_path, sources)
        new = Block.open(meta.path)
        try:
            chunks = new.chunks(np.arange(new.n_series), LO, HI)
            assert set(chunks.encoding.tolist()) == {ENCODING_DENSE}
            assert meta.num_samples == sum(b.meta.num_samples for b in sources)
            assert meta.num_chunks < sum(b.meta.num_chunks for b in sources)
            assert chunks.offsets[-1] < sum(
                b.chunks(np.arange(b.n_series), LO, HI).offsets[-1] for b in sources) / 2
        finally:
            new.close()
        db.replace_blocks(meta, sources)
        assert _dump(db) == before
        # Remote read's chunk path serves dense data as XOR chunks with the same samples.
        cs = db.querier(LO, HI).select_chunks(ALL, LO, HI)
        ts, _, _ = decode_xor_many(cs.blob, cs.offsets)
        assert len(ts) == sum(len(t) for t, _ in before.values())
        # Compacting dense blocks again (a higher level) keeps every sample.
        meta2 = compact(tmp_path, [b for b in db.blocks if b.meta.level >= 1][:2])
        assert meta2.num_samples > 0
    finally:
        db.close()


# -- throttling ---------------------------------------------------------------------------


def test_throttle_keeps_work_within_its_rate_after_a_one_second_burst():
    from compaction.throttle import Throttle

    now = [100.0]
    slept: list[float] = []  # not slept: only the delays asked for are checked
    t = Throttle(100, clock=lambda: now[0], sleep=slept.append)
    assert t.pace(50) == 0.0  # within the second's worth banked while idle
    assert t.pace(100) == 0.5
    now[0] += 0.5
    assert t.pace(100) == 1.0  # still behind: the sleep was cut short
    now[0] += 60  # a quiet minute banks one second, not sixty
    assert t.pace(100) == 0.0
    assert t.pace(100) == 1.0
    assert slept == [0.5, 1.0, 1.0]
    assert Throttle(0, sleep=slept.append).pace(10**12) == 0.0


def test_throttle_rejects_a_negative_rate():
    import pytest

    from compaction.throttle import Throttle

    with pytest.raises(ValueError, match="negative"):
        Throttle(-1)


def test_metered_blocks_report_every_sample_a_merge_reads(tmp_path):
    from compaction.throttle import MeteredBlock, chunk_samples

    db = _db(tmp_path)
    try:
        _write(db, range(0, 9 * 60))
        db.compact_head()
        sources = db.blocks[:3]
        for block in sources:
            ids = np.arange(block.n_series, dtype=np.int64)
            assert chunk_samples(block.chunks(ids, LO, HI)) == block.meta.num_samples
        reported: list[int] = []
        metered = [MeteredBlock.open_paced(b.meta.path, reported.append) for b in sources]
        # Slices of a few series: every source is read once per slice.
        meta = compact(tmp_path, metered, slice_samples=300)
        for block in metered:
            block.close()
        assert len(reported) > len(sources)
        assert sum(reported) == meta.num_samples == sum(b.meta.num_samples for b in sources)
    finally:
        db.close()


def test_lower_priority_lowers_another_process_only():
    import os
    import subprocess
    import sys

    import pytest

    from compaction.throttle import lower_priority

    if not hasattr(os, "getpriority"):
        pytest.skip("no nice values here")
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        assert lower_priority(child.pid, 19)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 19
        assert not lower_priority(child.pid, 10)  # never raised back
        assert os.getpriority(os.PRIO_PROCESS, 0) == mine
    finally:
        child.communicate(b"")


def test_a_merge_failing_in_the_worker_changes_nothing(tmp_path):
    import pytest

    from storage.errors import StorageError

    db = _db(tmp_path)
    try:
        _write(db, range(0, 30 * 60, 5))
        db.compact_head()
        before = _dump(db)
        blocks = [b.meta.ulid for b in db.blocks]
        # A new file under the old name: the worker opens it, the server keeps its mapping.
        index = db.blocks[0].meta.path / "index"
        index.with_name("index.new").write_bytes(b"not an index")
        index.with_name("index.new").replace(index)
        m = Maintainer(db, MaintainerOptions(retention_ms=0, rate_limit=0))
        with pytest.raises(StorageError, match="merge failed in the worker"):
            m.run_once()
        assert [b.meta.ulid for b in db.blocks] == blocks
        assert m.stats.compactions == 0
        assert _dump(db) == before  # the server still reads its own mapping
    finally:
        db.close()


def test_compaction_rate_limit_setting():
    import pytest

    from promstore.config import ConfigError, load_config

    assert load_config({}, environ={}).compaction_rate_limit == 1_000_000
    config = load_config({}, environ={"PROMSTORE_COMPACTION_RATE_LIMIT": "0"})
    assert config.compaction_rate_limit == 0
    with pytest.raises(ConfigError, match="compaction_rate_limit"):
        load_config({"compaction_rate_limit": -1}, environ={})


def test_stop_ends_a_paced_merge_and_the_store_reopens_whole(tmp_path):
    import time

    db = _db(tmp_path)
    _write(db, range(0, 30 * 60, 5))
    db.compact_head()
    before = _dump(db)
    # A budget so small that the first merge would take minutes.
    m = Maintainer(db, MaintainerOptions(retention_ms=0, rate_limit=1, interval=3600))
    m.start()
    deadline = time.monotonic() + 60
    while m._worker is None and time.monotonic() < deadline:
        time.sleep(0.01)
    worker = m._worker
    assert worker is not None
    m.stop()
    assert worker.exitcode is not None and worker.exitcode < 0  # ended, not finished
    assert m.stats.compactions == 0
    db.close()
    db = _db(tmp_path)
    try:
        assert _dump(db) == before
    finally:
        db.close()


def test_maintainer_downsamples_blocks_old_enough(tmp_path):
    from storage.downsampled import RESOLUTION_5M, DownsampledStore

    db = _db(tmp_path)
    store = DownsampledStore.open(tmp_path / "downsampled")
    try:
        _write(db, range(0, 60 * 60, 5))  # 60 hours, a sample every 5 minutes
        db.compact_head()
        steps = []

        class Watched(Maintainer):
            def _in_worker(self, step, *args):
                steps.append(step.__name__)
                return super()._in_worker(step, *args)

        options = MaintainerOptions(rate_limit=0,  # blocks up to 18 hours
                                    downsample=DownsampleOptions(after_5m_ms=40 * HOUR))
        Watched(db, options, downsampled=store).run_once()
        made = store.blocks(RESOLUTION_5M)
        assert made, "blocks older than 40 hours were not downsampled"
        newest = max(b.meta.max_time for b in db.blocks)
        assert all(b.meta.max_time <= newest - 40 * HOUR for b in made)
        # Made in the worker process, beside the merges, with their pacing.
        assert steps.count("_downsample") == len(made) and "_merge" in steps
        assert not [p for p in (tmp_path / "downsampled" / "5m").iterdir()
                    if p.name.endswith(".tmp-for-creation")]
        # Deleted windows past the planner's rule for tombstones are rewritten away.
        levels = [(b.meta.min_time, b.meta.level + 1) for b in made]
        store.delete([Matcher(MatchType.EQ, "i", "0")], LO, HI)
        Maintainer(db, options, downsampled=store).run_once()
        made = store.blocks(RESOLUTION_5M)
        assert [(b.meta.min_time, b.meta.level) for b in made] == levels
        assert not any(len(store.deletions(b)) for b in made)
        # Off: no more are made.
        store.remove(RESOLUTION_5M, [b.meta.ulid for b in made])
        Maintainer(db, MaintainerOptions(rate_limit=0, downsample=None),
                   downsampled=store).run_once()
        assert store.blocks(RESOLUTION_5M) == []
    finally:
        store.close()
        db.close()


def test_downsampling_reports_every_sample_it_reads_slice_by_slice(tmp_path):
    from compaction.downsample import build_block
    from compaction.throttle import MeteredBlock
    from storage.downsampled import RESOLUTION_5M

    db = _db(tmp_path)
    _write(db, range(0, 10 * 60, 5))
    db.compact_head()
    source = db.blocks[0].meta
    db.close()
    paced: list[int] = []
    block = MeteredBlock.open_paced(source.path, paced.append)
    (tmp_path / "downsampled" / "5m").mkdir(parents=True)
    try:
        meta = build_block(block, 0, RESOLUTION_5M, tmp_path / "downsampled",
                           slice_samples=source.num_samples // source.num_series)
    finally:
        block.close()
    assert sum(paced) == source.num_samples
    assert len(paced) == source.num_series > 1  # one series per slice
    assert meta.num_series == source.num_series
