"""Write-ahead log: segment files of checksummed records, group-commit fsync, replay with repair.

This module is the framing only. It stores opaque ``(record_type, payload)`` records and
knows nothing about what they hold; ``storage.record`` encodes series and samples. The
byte layout is drawn in ``docs/format.md`` (section "WAL").

A WAL is a directory of segment files named by an 8-digit sequence number
(``00000001``, ``00000002``…). A segment starts with a header (magic, version, its own
sequence number) and holds whole records; a record never spans two segments. The
CRC-32C of each record covers its header fields and stored payload, so a torn write, a
zero-filled tail or a flipped bit is found at the record where it starts.

Life cycle: ``WAL.replay(directory)`` first (it repairs damage as it reads), then
``WAL(directory)``, which always starts a fresh segment after the existing ones, so
writing never depends on where an old segment ends.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import crc32c
import zstandard

from storage.errors import PromstoreError, StorageError, TooLargeError, UnavailableError

__all__ = [
    "FLAG_ZSTD",
    "MAX_RECORD_SIZE",
    "RECORD_HEADER_SIZE",
    "SEGMENT_HEADER_SIZE",
    "SEGMENT_MAGIC",
    "SEGMENT_VERSION",
    "WAL",
    "Repair",
    "Replay",
    "WALStats",
    "fsync_dir",
]

log = logging.getLogger(__name__)

SEGMENT_MAGIC = b"PWAL"
SEGMENT_VERSION = 1
# magic, version, 3 reserved zero bytes, segment sequence number.
_SEGMENT_HEADER = struct.Struct("<4sB3sQ")
SEGMENT_HEADER_SIZE = _SEGMENT_HEADER.size  # 16
_RESERVED = b"\x00\x00\x00"

# type, flags, payload length; then the CRC-32C, which covers these six bytes and the payload.
_RECORD_PREFIX = struct.Struct("<BBI")
_RECORD_HEADER = struct.Struct("<BBII")
RECORD_HEADER_SIZE = _RECORD_HEADER.size  # 10

FLAG_ZSTD = 0x01  # the stored payload is one zstd frame with its content size
_KNOWN_FLAGS = FLAG_ZSTD

# Bound on a payload, stored or decompressed: a damaged length field must never make replay
# allocate gigabytes, and no write request should ever produce a record this large.
MAX_RECORD_SIZE = 256 << 20

# Below this a zstd frame's own overhead eats most of the gain.
_COMPRESS_MIN_SIZE = 256
_COMPRESS_LEVEL = 1

_SEGMENT_NAME = re.compile(r"[0-9]+")
_SEGMENT_DIGITS = 8
_TMP_SUFFIX = ".tmp"
_CORRUPT_SUFFIX = ".corrupt"

# fdatasync also flushes the file size, which is all an appended segment needs; tests replace
# this to inject failures.
_fsync = getattr(os, "fdatasync", os.fsync)


@dataclass(slots=True)
class WALStats:
    """Counters of one open WAL, for the service to export as metrics."""

    fsyncs: int = 0
    fsync_failures: int = 0
    fsync_seconds_sum: float = 0.0
    fsync_seconds_last: float = 0.0
    bytes_written: int = 0
    records_written: int = 0
    segments_created: int = 0


@dataclass(frozen=True, slots=True)
class Repair:
    """One piece of damage replay found and the repair it made.

    ``bytes_dropped`` counts every byte no longer replayed: the cut tail of ``segment``
    from ``offset`` on plus the sizes of later segments moved aside. ``moved_aside`` names
    the files (in the WAL directory) that now hold those bytes; a torn tail of the last
    segment is only truncated, as it holds nothing a writer was ever told was durable.
    """

    segment: int
    offset: int
    bytes_dropped: int
    reason: str
    moved_aside: tuple[str, ...] = ()


class _BadRecord(Exception):
    """Internal: the bytes at the current offset are not a valid record."""


@dataclass(eq=False)
class Replay:
    """The records of a WAL directory, oldest first, repairing damage as it is met.

    Iterate it once and to the end before opening the directory for writing: the repairs
    (truncating a damaged tail, renaming segments after damage to ``*.corrupt``) happen
    during iteration and are listed in ``repairs``. Iteration yields
    ``(record_type, payload)``; a payload is a read-only memoryview that stays valid after
    iteration moves on. Damage never raises; failing to read or repair a file raises
    ``StorageError``.
    """

    directory: Path
    after: int = 0  # segments numbered up to this one are skipped (a checkpoint holds them)
    repairs: list[Repair] = field(default_factory=list)
    records: int = 0
    bytes_read: int = 0
    segments_read: list[int] = field(default_factory=list)
    _started: bool = field(default=False, init=False, repr=False)

    @property
    def corruptions_repaired(self) -> int:
        """How many pieces of damage were repaired (one per ``Repair``)."""
        return len(self.repairs)

    def __iter__(self) -> Iterator[tuple[int, memoryview]]:
        if self._started:
            raise RuntimeError("a WAL replay can be iterated only once")
        self._started = True
        return self._records()

    def _records(self) -> Iterator[tuple[int, memoryview]]:
        segments = [s for s in _list_segments(self.directory) if s > self.after]
        decompressor = zstandard.ZstdDecompressor()
        for i, seq in enumerate(segments):
            later = segments[i + 1:]
            data = _read_file(self._path(seq))
            self.segments_read.append(seq)
            self.bytes_read += len(data)
            problem = _check_segment_header(data, seq)
            if problem is not None:
                self._move_aside_from(seq, 0, len(data), problem, [seq, *later])
                return
            view = memoryview(data).toreadonly()
            offset = SEGMENT_HEADER_SIZE
            while offset < len(view):
                try:
                    rtype, payload, offset_next = _parse_record(view, offset, decompressor)
                except _BadRecord as exc:
                    self._cut(seq, offset, len(view) - offset, str(exc), later)
                    return
                self.records += 1
                yield rtype, payload
                offset = offset_next
            if later and later[0] != seq + 1:
                self._cut(seq, len(view), 0, f"segment {seq + 1} is missing", later)
                return

    def _cut(self, seq: int, offset: int, dropped: int, reason: str, later: list[int]) -> None:
        """Drop ``seq`` from ``offset`` on, and every later segment."""
        if not later:
            _truncate(self._path(seq), offset)
            self.repairs.append(Repair(seq, offset, dropped, reason))
        else:
            self._move_aside_from(seq, offset, dropped, reason, later)

    def _move_aside_from(self, seq: int, offset: int, dropped: int, reason: str,
                         aside: list[int]) -> None:
        """Keep the bytes of ``seq`` past ``offset`` and the ``aside`` segments as *.corrupt."""
        moved: list[str] = []
        try:
            if seq not in aside and dropped:
                with open(self._path(seq), "rb") as f:
                    f.seek(offset)
                    tail = f.read()
                target = _aside_path(self._path(seq))
                _write_durably(target, tail)
                moved.append(target.name)
                _truncate(self._path(seq), offset)
            for other in aside:
                path = self._path(other)
                if other != seq:
                    dropped += path.stat().st_size
                target = _aside_path(path)
                os.rename(path, target)
                moved.append(target.name)
            fsync_dir(self.directory)
        except OSError as exc:
            raise StorageError(f"wal repair of segment {seq} failed: {exc}") from exc
        self.repairs.append(Repair(seq, offset, dropped, reason, tuple(moved)))

    def _path(self, seq: int) -> Path:
        return self.directory / _segment_name(seq)


class WAL:
    """An open write-ahead log: appends record batches and makes them durable on request.

    Contract:
    - ``log`` is thread-safe; each call's records land contiguously, in order, in one
      segment, written with one system call straight into the kernel (no user-space buffer).
      Callers that need a logical order across calls serialise themselves.
    - ``sync(position)`` returns once every byte up to ``position`` is on stable storage.
      Concurrent callers share fsyncs (group commit). In ``"interval"`` mode it returns at
      once and a background thread fsyncs every ``fsync_interval`` seconds.
    - ``when_durable(position, callback)`` is the same promise without a thread waiting
      for it: the WAL's sync thread calls back, sharing fsyncs with ``sync`` callers.
    - After a failed write that could not be rolled back, or any failed fsync, the WAL is
      unusable: the kernel may have dropped the dirty pages, so retrying the fsync could
      report success for data that is gone. Every later ``log``/``sync`` raises
      ``StorageError``; the owner must close it, replay and reopen.
    - Payloads of 256 bytes or more are stored zstd-compressed when that makes them smaller
      (``compress=False`` turns this off); replay returns them decompressed.
    """

    def __init__(self, directory: str | os.PathLike[str], *, segment_size: int = 128 << 20,
                 fsync: Literal["always", "interval"] = "always", fsync_interval: float = 1.0,
                 compress: bool = True) -> None:
        if segment_size <= SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE:
            raise ValueError(f"wal segment size {segment_size} is too small")
        if fsync not in ("always", "interval"):
            raise ValueError(f"unknown wal fsync mode {fsync!r}")
        if fsync == "interval" and not fsync_interval > 0:
            raise ValueError(f"wal fsync interval must be positive, got {fsync_interval}")
        self.directory = Path(directory)
        self.stats = WALStats()
        self._segment_size = segment_size
        self._interval_mode = fsync == "interval"
        self._fsync_interval = fsync_interval
        self._compress = compress
        self._local = threading.local()  # one zstd compressor per thread: they are not shared-safe

        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        self._callbacks_due = threading.Condition(lock)  # wakes the sync thread
        self._callbacks: list[tuple[int, Callable[[PromstoreError | None], None]]] = []
        self._sync_thread: threading.Thread | None = None
        self._written = 0  # position token: bytes logged by this instance
        self._synced = 0
        self._syncing = False  # a leader is fsyncing outside the lock
        self._failure: StorageError | None = None
        self._closing = False
        self._fd = -1
        self._seq = 0
        self._segment_bytes = 0

        try:
            if not self.directory.is_dir():
                self.directory.mkdir(parents=True, exist_ok=True)
                fsync_dir(self.directory.parent)
            for leftover in self.directory.glob("*" + _TMP_SUFFIX):
                leftover.unlink()  # a segment whose creation never finished: a header at most
        except OSError as exc:
            raise StorageError(f"cannot open wal directory {self.directory}: {exc}") from exc
        existing = _list_segments(self.directory)
        self._open_segment((existing[-1] if existing else 0) + 1)

        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if self._interval_mode:
            self._flusher = threading.Thread(target=self._flush_periodically,
                                             name="wal-fsync", daemon=True)
            self._flusher.start()

    @staticmethod
    def replay(directory: str | os.PathLike[str], after: int = 0) -> Replay:
        """Read the segments of ``directory`` numbered above ``after`` in order, repairing
        damage; see ``Replay``."""
        return Replay(Path(directory), after)

    def log(self, records: Sequence[tuple[int, bytes | bytearray | memoryview]]) -> int:
        """Append ``records`` as one contiguous write and return the position after them."""
        parts: list[bytes | bytearray | memoryview] = []
        for rtype, payload in records:
            parts.extend(self._frame(rtype, payload))
        data = b"".join(parts)
        with self._cond:
            while True:
                self._check_writable()
                fits = self._segment_bytes + len(data) <= self._segment_size
                if fits or self._segment_bytes == SEGMENT_HEADER_SIZE:
                    break
                if self._syncing:  # the running fsync still uses the current segment's fd
                    self._cond.wait()
                    continue
                self._cut_locked()
            self._write_locked(data)
            self._written += len(data)
            self.stats.bytes_written += len(data)
            self.stats.records_written += len(records)
            return self._written

    def sync(self, position: int) -> None:
        """Return once everything up to ``position`` is durable (at once in interval mode)."""
        if self._interval_mode:
            with self._cond:
                self._check_failure()
            return
        self._sync_to(position)

    def when_durable(self, position: int,
                     callback: Callable[[PromstoreError | None], None]) -> None:
        """Call ``callback(None)`` once everything up to ``position`` is durable, or
        ``callback(error)`` once it cannot become so.

        The call comes at once, in the caller's thread, when the bytes already are durable
        (always in ``"interval"`` mode) or the WAL has failed or closed; otherwise from the
        WAL's sync thread, which fsyncs whenever callbacks wait. Callbacks must be quick
        and must not call into the WAL.
        """
        with self._cond:
            if position > self._written:
                raise ValueError(f"wal position {position} was never returned by log()")
            if self._interval_mode or self._synced >= position:
                error: PromstoreError | None = self._failure
            elif self._failure is not None or self._closing:
                error = self._failure or UnavailableError("wal is closed")
            else:
                self._callbacks.append((position, callback))
                if self._sync_thread is None:
                    self._sync_thread = threading.Thread(target=self._sync_for_callbacks,
                                                         name="wal-sync", daemon=True)
                    self._sync_thread.start()
                self._callbacks_due.notify()
                return
        callback(error)

    def close(self) -> None:
        """Stop the background fsync, make everything durable and close the segment."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            failed_before = self._failure is not None
            self._callbacks_due.notify()
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        try:
            if not failed_before:
                self._sync_to(None)
        finally:
            with self._cond:
                while self._syncing:
                    self._cond.wait()
                if self._fd >= 0:
                    os.close(self._fd)
                self._fd = -1
                self._cond.notify_all()
                thread = self._sync_thread
            if thread is not None:
                thread.join()

    def segments(self) -> list[int]:
        """Sequence numbers of the segment files in the directory, oldest first."""
        return _list_segments(self.directory)

    def cut_segment(self) -> int:
        """Close the current segment (fsynced) and start a new one; return its number."""
        with self._cond:
            self._check_writable()
            while self._syncing:
                self._cond.wait()
            self._check_writable()
            self._cut_locked()
            return self._seq

    def truncate_before(self, segment: int) -> None:
        """Delete the segments numbered below ``segment``; the one being written is kept."""
        with self._cond:
            current = self._seq
        if segment > current:
            raise ValueError(f"cannot delete wal segment {current}: it is being written")
        try:
            for seq in _list_segments(self.directory):
                if seq < segment:
                    (self.directory / _segment_name(seq)).unlink()
            fsync_dir(self.directory)
        except OSError as exc:
            raise StorageError(f"cannot delete wal segments below {segment}: {exc}") from exc

    # -- writing -------------------------------------------------------------------------

    def _frame(self, rtype: int, payload: bytes | bytearray | memoryview,
               ) -> tuple[bytes, bytes | bytearray | memoryview]:
        """Header and stored payload of one record; runs outside the lock, in the caller."""
        if not 1 <= rtype <= 255:
            raise ValueError(f"wal record type {rtype} out of range 1..255")
        size = memoryview(payload).nbytes
        if size > MAX_RECORD_SIZE:
            raise TooLargeError(f"wal record of {size} bytes exceeds {MAX_RECORD_SIZE} bytes")
        flags = 0
        if self._compress and size >= _COMPRESS_MIN_SIZE:
            packed = self._compressor().compress(payload)
            if len(packed) < size:
                payload, size, flags = packed, len(packed), FLAG_ZSTD
        prefix = _RECORD_PREFIX.pack(rtype, flags, size)
        crc = crc32c.crc32c(payload, crc32c.crc32c(prefix))
        return prefix + crc.to_bytes(4, "little"), payload

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=_COMPRESS_LEVEL, write_content_size=True)
            self._local.compressor = compressor
        return compressor

    def _write_locked(self, data: bytes) -> None:
        """Write ``data`` at the end of the segment, or leave the segment as it was."""
        view = memoryview(data)
        start = self._segment_bytes
        done = 0
        try:
            while done < len(view):
                n = os.pwrite(self._fd, view[done:], start + done)
                if n <= 0:
                    raise OSError(f"short write of {len(view) - done} bytes")
                done += n
        except OSError as exc:
            error = StorageError(f"wal write to segment {self._seq} failed: {exc}")
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                # Partial bytes stay in the file and later records would follow them.
                self._failure = error
                self._cond.notify_all()
            raise error from exc
        self._segment_bytes += len(data)

    def _cut_locked(self) -> None:
        """Seal the current segment and start the next one; no fsync may be running."""
        try:
            self._timed_fsync_locked(self._fd)
        except StorageError as exc:
            self._failure = exc
            self._cond.notify_all()
            raise
        self._synced = self._written
        self._cond.notify_all()
        os.close(self._fd)
        self._fd = -1
        try:
            self._open_segment(self._seq + 1)
        except StorageError as exc:
            self._failure = exc
            raise

    def _open_segment(self, seq: int) -> None:
        """Create segment ``seq`` atomically (header written and fsynced, then renamed)."""
        path = self.directory / _segment_name(seq)
        tmp = path.with_name(path.name + _TMP_SUFFIX)
        header = _SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, _RESERVED, seq)
        fd = -1
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            if os.write(fd, header) != len(header):
                raise OSError("short write of segment header")
            _fsync(fd)
            os.rename(tmp, path)
            fsync_dir(self.directory)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            raise StorageError(f"cannot create wal segment {path}: {exc}") from exc
        self._fd, self._seq, self._segment_bytes = fd, seq, len(header)
        self.stats.segments_created += 1

    # -- durability ----------------------------------------------------------------------

    def _sync_to(self, position: int | None) -> None:
        """Group commit: wait for a running fsync or lead one covering all bytes written.

        ``None`` means everything written so far.
        """
        with self._cond:
            if position is None:
                position = self._written
            elif position > self._written:
                raise ValueError(f"wal position {position} was never returned by log()")
            while True:
                if self._synced >= position:
                    return
                self._check_failure()
                if self._fd < 0:
                    raise UnavailableError("wal is closed")
                if not self._syncing:
                    break
                self._cond.wait()
            self._syncing = True
            target, fd = self._written, self._fd
        # The fd stays open meanwhile: cutting and closing wait until _syncing is cleared.
        started = time.perf_counter()
        try:
            _fsync(fd)
            error = None
        except OSError as exc:
            error = exc
        elapsed = time.perf_counter() - started
        with self._cond:
            self._syncing = False
            self._count_fsync(elapsed, error)
            self._cond.notify_all()
            if error is None:
                self._synced = max(self._synced, target)
                return
            failure = StorageError(f"wal fsync of segment {self._seq} failed: {error}")
            self._failure = failure
        raise failure from error

    def _sync_for_callbacks(self) -> None:
        """The sync thread: fsync while ``when_durable`` callbacks wait, call those whose
        bytes are durable (all of them, with the error, once the WAL fails or closes)."""
        while True:
            with self._cond:
                while not self._callbacks and not self._closing:
                    self._callbacks_due.wait()
                if not self._callbacks:
                    return
                target = max(position for position, _ in self._callbacks)
            error: PromstoreError | None = None
            try:
                self._sync_to(target)
            except PromstoreError as exc:
                error = exc
            with self._cond:
                if error is None:
                    done = [cb for position, cb in self._callbacks if position <= self._synced]
                    self._callbacks = [(position, cb) for position, cb in self._callbacks
                                       if position > self._synced]
                else:
                    done = [cb for _, cb in self._callbacks]
                    self._callbacks = []
            for callback in done:
                try:
                    callback(error)
                except Exception:  # one broken callback must not strand the others
                    log.exception("wal durability callback failed")

    def _timed_fsync_locked(self, fd: int) -> None:
        started = time.perf_counter()
        try:
            _fsync(fd)
        except OSError as exc:
            self._count_fsync(time.perf_counter() - started, exc)
            raise StorageError(f"wal fsync of segment {self._seq} failed: {exc}") from exc
        self._count_fsync(time.perf_counter() - started, None)

    def _count_fsync(self, seconds: float, error: OSError | None) -> None:
        if error is not None:
            self.stats.fsync_failures += 1
            return
        self.stats.fsyncs += 1
        self.stats.fsync_seconds_sum += seconds
        self.stats.fsync_seconds_last = seconds

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self._fsync_interval):
            try:
                self._sync_to(None)
            except StorageError:
                return  # recorded in _failure: the next log() reports it

    def _check_failure(self) -> None:
        if self._failure is not None:
            raise StorageError(f"wal unusable after earlier failure: {self._failure}")

    def _check_writable(self) -> None:
        if self._closing:
            raise UnavailableError("wal is closed")
        self._check_failure()


# -- reading -------------------------------------------------------------------------------

def _parse_record(view: memoryview, offset: int, decompressor: zstandard.ZstdDecompressor,
                  ) -> tuple[int, memoryview, int]:
    """The record at ``offset``: type, payload (decompressed) and the offset after it."""
    left = len(view) - offset
    if left < RECORD_HEADER_SIZE:
        raise _BadRecord(f"incomplete record header ({left} bytes)")
    rtype, flags, length, crc = _RECORD_HEADER.unpack_from(view, offset)
    if rtype == 0:
        raise _BadRecord("record type 0 (zeroed or torn tail)")
    if flags & ~_KNOWN_FLAGS:
        raise _BadRecord(f"unknown record flags 0x{flags:02x}")
    if length > MAX_RECORD_SIZE:
        raise _BadRecord(f"record length {length} exceeds {MAX_RECORD_SIZE}")
    start = offset + RECORD_HEADER_SIZE
    if length > len(view) - start:
        raise _BadRecord(f"incomplete record: {length} byte payload, "
                         f"{len(view) - start} bytes left")
    payload = view[start:start + length]
    prefix = view[offset:offset + _RECORD_PREFIX.size]
    if crc32c.crc32c(payload, crc32c.crc32c(prefix)) != crc:
        raise _BadRecord("record checksum mismatch")
    if flags & FLAG_ZSTD:
        payload = _decompress(payload, decompressor)
    return rtype, payload, start + length


def _decompress(payload: memoryview, decompressor: zstandard.ZstdDecompressor) -> memoryview:
    try:
        size = zstandard.frame_content_size(payload)
        if not 0 <= size <= MAX_RECORD_SIZE:
            raise _BadRecord(f"compressed record declares bad size {size}")
        data = decompressor.decompress(payload)
    except zstandard.ZstdError as exc:
        raise _BadRecord(f"record does not decompress: {exc}") from exc
    if len(data) != size:
        raise _BadRecord(f"record decompressed to {len(data)} bytes, expected {size}")
    return memoryview(data).toreadonly()


def _check_segment_header(data: bytes, seq: int) -> str | None:
    """Why ``data`` is not a segment numbered ``seq``, or None."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return f"incomplete segment header ({len(data)} bytes)"
    magic, version, reserved, number = _SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        return f"bad segment magic {magic!r}"
    if version != SEGMENT_VERSION:
        return f"unsupported segment version {version}"
    if reserved != _RESERVED:
        return "nonzero reserved bytes in segment header"
    if number != seq:
        return f"segment header says {number}, file name says {seq}"
    return None


# -- files ---------------------------------------------------------------------------------

def _segment_name(seq: int) -> str:
    return f"{seq:0{_SEGMENT_DIGITS}d}"


def _list_segments(directory: Path) -> list[int]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"cannot list wal directory {directory}: {exc}") from exc
    # Only names this module writes: "7" or "000000007" would not map back to their file.
    return sorted(int(name) for name in names
                  if _SEGMENT_NAME.fullmatch(name) and name == _segment_name(int(name)))


def _read_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise StorageError(f"cannot read wal segment {path}: {exc}") from exc


def _aside_path(path: Path) -> Path:
    """A name beside ``path`` for damaged bytes that no earlier repair has taken."""
    target = path.with_name(path.name + _CORRUPT_SUFFIX)
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{_CORRUPT_SUFFIX}.{n}")
    return target


def _truncate(path: Path, size: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            _fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot truncate wal segment {path}: {exc}") from exc


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        _fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make file creations, renames and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

