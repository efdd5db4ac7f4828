"""Head: the in-memory, WAL-backed part of the store that receives every write.

The head owns the series registry (``series.py``), the postings index
(``postings.py``), per-series state in columnar arrays (last timestamp and value bits,
first timestamp) and the samples themselves (``samples.py``). It implements
``Appendable`` (see ``head_append.py``) and ``IndexReader``.

Concurrency: one lock serialises appends (registry changes, sample checks, WAL writes
in a consistent order); the expensive parts run in numba kernels that release the GIL,
and the WAL fsync happens after the lock is released so that concurrent appends share
it (group commit). Readers work on snapshots without taking the lock for long.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .batch import WriteBatch
from .errors import StorageError
from .head_append import append
from .head_wal import replay
from .interface import AppendResult
from .labels import LabelLimits
from .matchers import Matcher
from .postings import Postings, select
from .samples import SampleLog, SampleSet
from .series import RegistryView, SeriesRegistry
from .wal import WAL

__all__ = ["Head", "HeadOptions"]

log = logging.getLogger(__name__)

_NO_TIME = np.iinfo(np.int64).min
_MAX_TIME = np.iinfo(np.int64).max


@dataclass(frozen=True)
class HeadOptions:
    """Settings of the head and its WAL."""

    labels: LabelLimits = field(default_factory=LabelLimits)
    max_series: int = 2**31 - 2
    out_of_order_window_ms: int = 0
    wal_fsync: Literal["always", "interval"] = "always"
    wal_fsync_interval: float = 1.0
    wal_segment_size: int = 128 << 20


class _SeriesState:
    """Per-series columns, indexed by ref, grown together."""

    def __init__(self) -> None:
        self.last_t = np.full(1024, _NO_TIME, dtype=np.int64)
        self.last_v = np.zeros(1024, dtype=np.uint64)
        self.first_t = np.full(1024, _MAX_TIME, dtype=np.int64)

    def reserve(self, n: int) -> None:
        if n <= len(self.last_t):
            return
        cap = max(n, 2 * len(self.last_t))
        for name, fill in (("last_t", _NO_TIME), ("last_v", 0), ("first_t", _MAX_TIME)):
            old = getattr(self, name)
            new = np.full(cap, fill, dtype=old.dtype)
            new[:len(old)] = old
            setattr(self, name, new)

    def memory_bytes(self) -> int:
        return self.last_t.nbytes + self.last_v.nbytes + self.first_t.nbytes


class Head:
    """The in-memory head over a WAL directory. Build with ``Head.open``."""

    def __init__(self, directory: Path, options: HeadOptions) -> None:
        self.directory = directory
        self.options = options
        self.registry = SeriesRegistry(max_series=options.max_series)
        self.postings = Postings()
        self.state = _SeriesState()
        self.samples = SampleLog()
        self.lock = threading.Lock()
        self.min_valid_time = _NO_TIME + 1  # INT64_MIN itself marks "no sample yet"
        self.max_time = _NO_TIME
        self.wal: WAL | None = None
        self.replay_report: list[str] = []
        self._lock_fd: int | None = None
        self.failed: str | None = None  # set when the WAL failed: writes refused until restart

    @classmethod
    def open(cls, directory: str | os.PathLike[str], options: HeadOptions | None = None) -> Head:
        """Open the head stored under ``directory``: replay its WAL, then accept writes."""
        head = cls(Path(directory), options or HeadOptions())
        head._lock_directory()
        wal_dir = head.directory / "wal"
        replay(head, wal_dir)
        head.wal = WAL(wal_dir, segment_size=head.options.wal_segment_size,
                       fsync=head.options.wal_fsync,
                       fsync_interval=head.options.wal_fsync_interval)
        return head

    def _lock_directory(self) -> None:
        """Hold an exclusive lock on the data directory: two processes sharing one WAL
        would corrupt it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(f"data directory {self.directory} is in use by another "
                               "process (lock file held)") from None
        self._lock_fd = fd

    def close(self) -> None:
        """Sync and close the WAL and release the directory. Appends after this fail."""
        with self.lock:
            try:
                if self.wal is not None:
                    self.wal.close()
            finally:
                self.wal = None
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    # -- writing ------------------------------------------------------------------------

    def append(self, batch: WriteBatch) -> AppendResult:
        """Store the valid samples of ``batch`` durably; see ``interface.Appendable``."""
        return append(self, batch)

    # -- reading (IndexReader) ------------------------------------------------------------

    def _view(self) -> RegistryView:
        with self.lock:  # the registry's snapshot contract
            return self.registry.snapshot()

    def select_series(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> np.ndarray:
        with self.lock:
            view = self.registry.snapshot()
            first_t, last_t = self.state.first_t, self.state.last_t
        refs = select(self.postings.reader(view), matchers)
        if len(refs) and (mint > _NO_TIME or maxt < _MAX_TIME):
            refs = refs[(first_t[refs] <= maxt) & (last_t[refs] >= mint)]
        return refs

    def series_labels(self, refs: np.ndarray) -> list[dict[str, str]]:
        view = self._view()
        return [view.labels(int(r)) for r in refs]

    def label_names(self, refs: np.ndarray | None = None) -> list[str]:
        view = self._view()
        pairs = np.arange(view.n_pairs) if refs is None else view.pairs_of(refs)
        names = np.unique(view.pair_names()[pairs])
        return sorted(view.symbols(names))

    def label_values(self, name: str, refs: np.ndarray | None = None) -> list[str]:
        view = self._view()
        pairs = view.pairs_with_name(name)
        if refs is not None and len(pairs):
            pairs = np.intersect1d(pairs, view.pairs_of(refs))
        values = np.unique(view.pair_values()[pairs])
        return sorted(view.symbols(values))

    def read_samples(self, refs: np.ndarray, mint: int, maxt: int) -> SampleSet:
        """Samples of ``refs`` in ``[mint, maxt]`` sorted by (ref, timestamp)."""
        return self.samples.read(np.asarray(refs, dtype=np.int64), mint, maxt)

    # -- stats ----------------------------------------------------------------------------

    @property
    def n_series(self) -> int:
        return self.registry.n_series

    def memory_bytes(self) -> int:
        """Bytes held by the head's arrays (capacity), for self-metrics."""
        return self.registry.memory_bytes() + self.state.memory_bytes() + \
            self.samples.memory_bytes()
