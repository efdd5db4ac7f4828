"""WAL framing: round trips, segment rollover, group commit, and repair of every kind of damage."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import storage.wal as wal_mod
from storage.errors import StorageError, TooLargeError, UnavailableError
from storage.wal import (
    FLAG_ZSTD,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    WAL,
)

Record = tuple[int, bytes]


def write(directory: Path, batches: list[list[Record]], **options) -> WAL:
    """Log ``batches`` (syncing each) into a new WAL and return it, still open."""
    wal = WAL(directory, **options)
    for batch in batches:
        wal.sync(wal.log(batch))
    return wal


def replay(directory: Path) -> tuple[list[Record], wal_mod.Replay]:
    result = WAL.replay(directory)
    records = [(rtype, bytes(payload)) for rtype, payload in result]
    return records, result


def seg(directory: Path, seq: int) -> Path:
    return directory / f"{seq:08d}"


def numbered(count: int, size: int = 40) -> list[Record]:
    """Distinct records of ``size`` bytes with types cycling over 1..3."""
    return [(1 + i % 3, f"record-{i:06d}-".encode().ljust(size, b"#")) for i in range(count)]


# -- round trips --------------------------------------------------------------------------

def test_replay_of_missing_or_empty_directory_yields_nothing(tmp_path: Path) -> None:
    assert replay(tmp_path / "absent")[0] == []
    records, result = replay(tmp_path)
    assert records == [] and result.repairs == []


def test_round_trip_keeps_types_payloads_and_order(tmp_path: Path) -> None:
    records = numbered(20) + [(255, b""), (7, bytes(range(256)) * 40)]
    write(tmp_path, [records[:5], records[5:6], records[6:]]).close()
    got, result = replay(tmp_path)
    assert got == records
    assert result.repairs == [] and result.records == len(records)


def test_compressible_payload_is_stored_compressed_and_returned_exact(tmp_path: Path) -> None:
    payload = b"node_cpu_seconds_total{cpu=\"0\"}" * 300
    write(tmp_path, [[(2, payload)]]).close()
    data = seg(tmp_path, 1).read_bytes()
    assert len(data) < len(payload) // 4
    assert data[SEGMENT_HEADER_SIZE + 1] == FLAG_ZSTD
    assert replay(tmp_path)[0] == [(2, payload)]


def test_incompressible_payload_is_stored_raw(tmp_path: Path) -> None:
    payload = os.urandom(4000)
    write(tmp_path, [[(2, payload)]]).close()
    data = seg(tmp_path, 1).read_bytes()
    assert data[SEGMENT_HEADER_SIZE + 1] == 0
    assert len(data) == SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE + len(payload)


def test_golden_segment_bytes(tmp_path: Path) -> None:
    """Pins the segment and record layout of docs/format.md."""
    write(tmp_path, [[(2, b"abc")]], compress=False).close()
    assert seg(tmp_path, 1).read_bytes().hex() == (
        "5057414c" "01" "000000" "0100000000000000"   # magic, version, reserved, segment 1
        "02" "00" "03000000" "575b5eb8" "616263"       # type, flags, length, crc32c, payload
    )


def test_golden_compressed_record_replays(tmp_path: Path) -> None:
    """A zstd record written by an earlier build must keep replaying."""
    seg(tmp_path, 1).write_bytes(bytes.fromhex(
        "5057414c010000000100000000000000"
        "01011400000005426bef28b52ffd602c0055000018616263010026aa6e08"))
    assert replay(tmp_path)[0] == [(1, b"abc" * 100)]


def test_reopen_starts_a_new_segment_after_the_last(tmp_path: Path) -> None:
    write(tmp_path, [numbered(3)]).close()
    wal = write(tmp_path, [[(1, b"after reopen")]])
    assert wal.segments() == [1, 2]
    wal.close()
    assert replay(tmp_path)[0] == numbered(3) + [(1, b"after reopen")]


def test_unfinished_segment_creation_is_cleaned_up(tmp_path: Path) -> None:
    (tmp_path / "00000004.tmp").write_bytes(b"PWAL")
    wal = WAL(tmp_path)
    assert not (tmp_path / "00000004.tmp").exists()
    assert wal.segments() == [1]
    wal.close()


def test_foreign_file_names_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, [numbered(2)]).close()
    for name in ("1", "000000001", "notes", "00000001.corrupt", "checkpoint.00000000"):
        (tmp_path / name).write_bytes(b"garbage")
    records, result = replay(tmp_path)
    assert records == numbered(2) and result.repairs == []


# -- segments --------------------------------------------------------------------------

def test_rollover_keeps_records_and_batches_within_segments(tmp_path: Path) -> None:
    records = numbered(30, size=50)  # 60-byte frames: three fit in 200 bytes after the header
    batches = [records[i:i + 2] for i in range(0, 30, 2)]
    wal = write(tmp_path, batches, segment_size=200, compress=False)
    wal.close()
    sizes = [seg(tmp_path, s).stat().st_size for s in wal.segments()]
    # A two-record batch is never split to fill the room left for a third record.
    assert sizes == [SEGMENT_HEADER_SIZE + 120] * 15
    assert replay(tmp_path)[0] == records


def test_record_larger_than_segment_size_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    big = (1, os.urandom(1000))
    wal = write(tmp_path, [[(1, b"a")], [big], [(1, b"b")]], segment_size=128, compress=False)
    wal.close()
    assert wal.segments() == [1, 2, 3]
    assert seg(tmp_path, 2).stat().st_size == SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE + 1000
    assert replay(tmp_path)[0] == [(1, b"a"), big, (1, b"b")]


def test_cut_segment_and_truncate_before(tmp_path: Path) -> None:
    wal = write(tmp_path, [[(1, b"one")]])
    assert wal.cut_segment() == 2
    wal.sync(wal.log([(1, b"two")]))
    assert wal.cut_segment() == 3
    wal.sync(wal.log([(1, b"three")]))
    assert wal.segments() == [1, 2, 3]
    with pytest.raises(ValueError):
        wal.truncate_before(4)
    wal.truncate_before(3)
    assert wal.segments() == [3]
    wal.close()
    assert replay(tmp_path)[0] == [(1, b"three")]


# -- writer contract -------------------------------------------------------------------

def test_invalid_calls_are_refused(tmp_path: Path) -> None:
    wal = WAL(tmp_path)
    for rtype in (0, 256):
        with pytest.raises(ValueError):
            wal.log([(rtype, b"x")])
    with pytest.raises(ValueError):
        wal.sync(wal.log([(1, b"x")]) + 1)
    with pytest.raises(TooLargeError):
        wal.log([(1, memoryview(b"")), (1, bytearray(wal_mod.MAX_RECORD_SIZE + 1))])
    wal.close()
    wal.close()
    with pytest.raises(UnavailableError):
        wal.log([(1, b"late")])
    with pytest.raises(ValueError):
        WAL(tmp_path, segment_size=10)
    assert replay(tmp_path)[0] == [(1, b"x")]


def test_positions_are_monotonic_and_stats_count(tmp_path: Path) -> None:
    wal = WAL(tmp_path, compress=False)
    positions = [wal.log([(1, b"x" * 10)] * k) for k in (1, 2, 0, 3)]
    assert positions == sorted(positions) and positions[2] == positions[1]
    wal.sync(positions[-1])
    wal.sync(positions[0])  # already durable: no second fsync
    assert wal.stats.records_written == 6
    assert wal.stats.bytes_written == 6 * (RECORD_HEADER_SIZE + 10) == positions[-1]
    assert wal.stats.fsyncs == 1 and wal.stats.segments_created == 1
    assert wal.stats.fsync_seconds_sum >= wal.stats.fsync_seconds_last > 0
    wal.close()


def test_concurrent_writers_every_acknowledged_record_is_replayed(tmp_path: Path) -> None:
    wal = WAL(tmp_path, segment_size=2048)
    acknowledged: list[list[bytes]] = [[] for _ in range(4)]
    syncs = 0

    def writer(t: int) -> None:
        nonlocal syncs
        for i in range(60):
            payload = f"writer {t} record {i} ".encode() * (1 + i % 5)
            wal.sync(wal.log([(1 + t, payload)]))
            acknowledged[t].append(payload)
            syncs += 1

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Replay what the kernel holds before close() adds its own fsync.
    records, result = replay(tmp_path)
    wal.close()
    assert result.repairs == [] and len(wal.segments()) > 1
    for t in range(4):
        assert [p for rtype, p in records if rtype == 1 + t] == acknowledged[t]
    assert wal.stats.fsyncs <= syncs + wal.stats.segments_created


def test_fsync_failure_fails_waiters_and_later_calls(tmp_path: Path, monkeypatch) -> None:
    wal = WAL(tmp_path)
    durable = wal.log([(1, b"durable")])
    wal.sync(durable)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "injected I/O error")

    monkeypatch.setattr(wal_mod, "_fsync", broken)
    pending = wal.log([(1, b"pending")])
    with pytest.raises(StorageError, match="fsync"):
        wal.sync(pending)
    wal.sync(durable)  # covered by the earlier, successful fsync
    with pytest.raises(StorageError):
        wal.sync(pending)
    with pytest.raises(StorageError):
        wal.log([(1, b"after failure")])
    assert wal.stats.fsync_failures == 1
    wal.close()


def test_when_durable_calls_back_once_synced_sharing_fsyncs(tmp_path: Path) -> None:
    """Callbacks come from the sync thread only after an fsync covering their bytes, at
    once when the bytes already are durable, and close() completes those still waiting."""
    wal = WAL(tmp_path)
    calls: list[tuple[int, object, int]] = []
    lock = threading.Lock()
    done = threading.Event()

    def callback(n: int):
        def called(error) -> None:
            with lock:
                calls.append((n, error, wal._synced))
                if len(calls) == 40:
                    done.set()
        return called

    positions = []
    for n in range(40):
        positions.append(wal.log([(1, f"record {n}".encode())]))
        wal.when_durable(positions[-1], callback(n))
    assert done.wait(10)
    assert sorted(n for n, _, _ in calls) == list(range(40))
    assert all(error is None and synced >= positions[n] for n, error, synced in calls)
    assert wal.stats.fsyncs <= 40
    wal.when_durable(positions[0], lambda error: calls.append((-1, error, 0)))
    assert calls[-1] == (-1, None, 0)  # already durable: called at once, in this thread
    late = []
    wal.when_durable(wal.log([(1, b"last")]), late.append)
    wal.close()
    assert late == [None]
    assert wal._sync_thread is not None and not wal._sync_thread.is_alive()
    assert len(replay(tmp_path)[0]) == 41


def test_when_durable_reports_a_failed_fsync(tmp_path: Path, monkeypatch) -> None:
    wal = WAL(tmp_path)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "injected I/O error")

    monkeypatch.setattr(wal_mod, "_fsync", broken)
    got = []
    ready = threading.Event()
    wal.when_durable(wal.log([(1, b"never durable")]),
                     lambda error: (got.append(error), ready.set()))
    assert ready.wait(10)
    assert isinstance(got[0], StorageError) and "fsync" in str(got[0])
    after = []
    wal.when_durable(wal._written, after.append)  # the WAL has failed: at once
    assert isinstance(after[0], StorageError)
    wal.close()


def test_when_durable_in_interval_mode_is_immediate(tmp_path: Path) -> None:
    wal = WAL(tmp_path, fsync="interval", fsync_interval=60)
    got = []
    wal.when_durable(wal.log([(1, b"x")]), got.append)
    assert got == [None] and wal._sync_thread is None
    wal.close()


def test_failed_write_is_rolled_back_and_the_wal_stays_usable(tmp_path: Path,
                                                              monkeypatch) -> None:
    wal = write(tmp_path, [[(1, b"before")]], compress=False)
    real_pwrite = os.pwrite
    calls = 0

    def half_then_full_disk(fd: int, data, offset: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_pwrite(fd, bytes(data)[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "injected full disk")

    monkeypatch.setattr(os, "pwrite", half_then_full_disk)
    with pytest.raises(StorageError, match="write"):
        wal.log([(1, b"lost" * 10)])
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    wal.sync(wal.log([(1, b"after")]))
    wal.close()
    records, result = replay(tmp_path)
    assert records == [(1, b"before"), (1, b"after")] and result.repairs == []


def test_interval_mode_fsyncs_in_the_background(tmp_path: Path) -> None:
    wal = WAL(tmp_path, fsync="interval", fsync_interval=0.01)
    wal.sync(wal.log([(1, b"soon durable")]))
    deadline = time.monotonic() + 10
    while wal.stats.fsyncs == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert wal.stats.fsyncs >= 1
    flusher = wal._flusher
    wal.close()
    assert flusher is not None and not flusher.is_alive()
    assert replay(tmp_path)[0] == [(1, b"soon durable")]


# -- repair ----------------------------------------------------------------------------

def test_torn_tail_at_every_offset_of_the_last_record(tmp_path: Path) -> None:
    records = numbered(5, size=30)
    source = tmp_path / "source"
    write(source, [records], compress=False).close()
    full = seg(source, 1).read_bytes()
    last_start = len(full) - (RECORD_HEADER_SIZE + 30)
    for cut in range(last_start, len(full)):
        wal_dir = tmp_path / f"cut{cut}"
        shutil.copytree(source, wal_dir)
        os.truncate(seg(wal_dir, 1), cut)
        got, result = replay(wal_dir)
        assert got == records[:-1], cut
        assert seg(wal_dir, 1).stat().st_size == last_start
        if cut == last_start:
            assert result.repairs == []
        else:
            [repair] = result.repairs
            assert (repair.segment, repair.offset) == (1, last_start)
            assert repair.bytes_dropped == cut - last_start and repair.moved_aside == ()
        write(wal_dir, [[(9, b"appended")]]).close()
        got, result = replay(wal_dir)
        assert got == records[:-1] + [(9, b"appended")] and result.repairs == []


def test_torn_compressed_record(tmp_path: Path) -> None:
    payload = b"compressible " * 200
    write(tmp_path, [[(1, b"first")], [(2, payload)]]).close()
    path = seg(tmp_path, 1)
    os.truncate(path, path.stat().st_size - 3)
    records, result = replay(tmp_path)
    assert records == [(1, b"first")] and "incomplete" in result.repairs[0].reason


def test_flipped_byte_anywhere_in_a_record_is_caught(tmp_path: Path) -> None:
    records = numbered(3, size=20)
    source = tmp_path / "source"
    write(source, [records], compress=False).close()
    full = seg(source, 1).read_bytes()
    middle = SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE + 20
    for at in range(middle, middle + RECORD_HEADER_SIZE + 20):
        wal_dir = tmp_path / f"flip{at}"
        wal_dir.mkdir()
        damaged = bytearray(full)
        damaged[at] ^= 0x10
        seg(wal_dir, 1).write_bytes(bytes(damaged))
        got, result = replay(wal_dir)
        assert got == records[:1], at
        [repair] = result.repairs
        assert repair.offset == middle and repair.bytes_dropped == len(full) - middle
        assert seg(wal_dir, 1).stat().st_size == middle


def test_zero_filled_tail_is_truncated(tmp_path: Path) -> None:
    write(tmp_path, [numbered(2)]).close()
    path = seg(tmp_path, 1)
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(bytes(4096))
    records, result = replay(tmp_path)
    assert records == numbered(2)
    assert result.repairs[0].offset == size and "type 0" in result.repairs[0].reason
    assert path.stat().st_size == size


def test_corruption_in_an_earlier_segment_moves_the_rest_aside(tmp_path: Path) -> None:
    records = numbered(12, size=50)
    wal = write(tmp_path, [[r] for r in records], segment_size=200, compress=False)
    wal.close()
    assert wal.segments() == [1, 2, 3, 4]
    first = seg(tmp_path, 1)
    original = first.read_bytes()
    damaged_at = SEGMENT_HEADER_SIZE + 60 + 20  # inside the second record's payload
    first.write_bytes(original[:damaged_at] + b"\xff" + original[damaged_at + 1:])
    later_bytes = sum(seg(tmp_path, s).stat().st_size for s in (2, 3, 4))

    got, result = replay(tmp_path)
    assert got == records[:1]
    [repair] = result.repairs
    assert repair.segment == 1 and repair.offset == SEGMENT_HEADER_SIZE + 60
    assert repair.moved_aside == ("00000001.corrupt", "00000002.corrupt",
                                  "00000003.corrupt", "00000004.corrupt")
    assert repair.bytes_dropped == len(original) - repair.offset + later_bytes
    # Nothing is lost from disk: the cut tail and later segments are kept aside.
    tail = (tmp_path / "00000001.corrupt").read_bytes()
    assert first.read_bytes() + tail == original[:damaged_at] + b"\xff" + original[damaged_at + 1:]
    assert WAL(tmp_path).segments() == [1, 2]
    assert replay(tmp_path)[1].repairs == []


def test_missing_segment_moves_later_segments_aside(tmp_path: Path) -> None:
    records = numbered(9, size=50)
    write(tmp_path, [[r] for r in records], segment_size=200, compress=False).close()
    seg(tmp_path, 2).unlink()
    got, result = replay(tmp_path)
    assert got == records[:3]
    assert "segment 2 is missing" in result.repairs[0].reason
    assert result.repairs[0].moved_aside == ("00000003.corrupt",)


@pytest.mark.parametrize("header", [
    b"", b"PWA", b"XWAL" + bytes(12), b"PWAL\x02" + bytes(11),
    b"PWAL\x01\x00\x01\x00" + bytes(8), b"PWAL\x01\x00\x00\x00" + (3).to_bytes(8, "little"),
])
def test_bad_segment_header_moves_the_segment_aside(tmp_path: Path, header: bytes) -> None:
    write(tmp_path, [[(1, b"kept")]]).close()
    seg(tmp_path, 2).write_bytes(header + b"more bytes")
    records, result = replay(tmp_path)
    assert records == [(1, b"kept")]
    [repair] = result.repairs
    assert repair.segment == 2 and repair.offset == 0
    assert repair.moved_aside == ("00000002.corrupt",)
    assert not seg(tmp_path, 2).exists() and (tmp_path / "00000002.corrupt").exists()


def test_repeated_damage_never_overwrites_earlier_evidence(tmp_path: Path) -> None:
    for _ in range(2):
        seg(tmp_path, 1).write_bytes(b"garbage")
        replay(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["00000001.corrupt", "00000001.corrupt.1"]


def test_replay_can_only_be_iterated_once(tmp_path: Path) -> None:
    result = WAL.replay(tmp_path)
    list(result)
    with pytest.raises(RuntimeError):
        list(result)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=600), keep_header=st.booleans(), flip=st.integers(0, 10**6))
def test_any_bytes_replay_without_crashing_and_repair_is_final(tmp_path: Path, body: bytes,
                                                              keep_header: bool,
                                                              flip: int) -> None:
    """Arbitrary segment contents: replay never raises, and a second replay finds no damage."""
    wal_dir = tmp_path / f"fuzz{flip}-{len(body)}-{keep_header}"
    shutil.rmtree(wal_dir, ignore_errors=True)
    write(wal_dir, [numbered(3)], compress=flip % 2 == 0).close()
    data = bytearray(seg(wal_dir, 1).read_bytes() + body)
    if not keep_header:
        data[flip % len(data)] ^= 1 + flip % 255
    seg(wal_dir, 1).write_bytes(bytes(data))
    seg(wal_dir, 2).write_bytes(SEGMENT_MAGIC + body)
    first, _ = replay(wal_dir)
    second, result = replay(wal_dir)
    assert second == first and result.repairs == []
