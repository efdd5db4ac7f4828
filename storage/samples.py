"""SampleLog: the head's out-of-order float samples as columnar pages, in arrival order.

In-order samples go to XOR chunks (``head_chunks.py``); the few samples accepted inside
the out-of-order window cannot be appended to a chunk and are kept here raw, 20 bytes a
row, until the block that covers them is written.

Each page holds up to ``page_size`` (ref, timestamp, value) rows in three numpy arrays;
appending copies a batch's accepted samples into the open page. Values are stored as
float64 but never touched arithmetically, so every bit pattern (stale markers, NaN
payloads) survives. Reads gather the rows of a set of series by scanning page columns
with numpy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["SampleLog", "SampleSet"]


@dataclass(frozen=True)
class SampleSet:
    """Samples of several series, sorted by (ref, timestamp)."""

    refs: np.ndarray  # int64
    timestamps: np.ndarray  # int64
    values: np.ndarray  # float64


class _Page:
    __slots__ = ("refs", "ts", "used", "vs")

    def __init__(self, size: int) -> None:
        self.refs = np.empty(size, dtype=np.int32)
        self.ts = np.empty(size, dtype=np.int64)
        self.vs = np.empty(size, dtype=np.float64)
        self.used = 0


class SampleLog:
    """Append-only columnar storage of head samples. Appends need the head's lock;
    reads see every page up to the counts they find and need no lock."""

    def __init__(self, page_size: int = 1 << 20) -> None:
        self._page_size = page_size
        self._pages: list[_Page] = []
        self._lock = threading.Lock()
        self.n_samples = 0

    def append(self, refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> None:
        n = len(refs)
        done = 0
        while done < n:
            if not self._pages or self._pages[-1].used == self._page_size:
                with self._lock:
                    self._pages.append(_Page(self._page_size))
            page = self._pages[-1]
            take = min(n - done, self._page_size - page.used)
            sl = slice(page.used, page.used + take)
            page.refs[sl] = refs[done:done + take]
            page.ts[sl] = timestamps[done:done + take]
            page.vs[sl] = values[done:done + take]
            page.used += take
            done += take
        self.n_samples += n

    def read(self, refs: np.ndarray, mint: int, maxt: int) -> SampleSet:
        """Samples of ``refs`` (sorted unique) with ``mint <= t <= maxt``, sorted by
        (ref, t); repeated (ref, t) rows are reduced to the first stored."""
        with self._lock:
            pages = [(p, p.used) for p in self._pages]
        parts_r, parts_t, parts_v = [], [], []
        for page, used in pages:
            pr, pt = page.refs[:used], page.ts[:used]
            mask = (pt >= mint) & (pt <= maxt) & np.isin(pr, refs)
            parts_r.append(pr[mask].astype(np.int64))
            parts_t.append(pt[mask])
            parts_v.append(page.vs[:used][mask])
        if not parts_r:
            empty = np.empty(0, dtype=np.int64)
            return SampleSet(empty, empty.copy(), np.empty(0, dtype=np.float64))
        r, t, v = np.concatenate(parts_r), np.concatenate(parts_t), np.concatenate(parts_v)
        order = np.lexsort((t, r))
        r, t, v = r[order], t[order], v[order]
        if len(r) > 1:
            keep = np.ones(len(r), dtype=bool)
            keep[1:] = (r[1:] != r[:-1]) | (t[1:] != t[:-1])
            r, t, v = r[keep], t[keep], v[keep]
        return SampleSet(r, t, v)

    def drop_before(self, before: int) -> int:
        """Forget every sample older than ``before``; return how many were dropped."""
        with self._lock:
            pages = self._pages
            self._pages = []
        kept = [(p.refs[:p.used], p.ts[:p.used], p.vs[:p.used]) for p in pages]
        n_before = self.n_samples
        self.n_samples = 0
        for refs, ts, vs in kept:
            keep = ts >= before
            self.append(refs[keep], ts[keep], vs[keep])
        return n_before - self.n_samples

    def memory_bytes(self) -> int:
        return sum(p.refs.nbytes + p.ts.nbytes + p.vs.nbytes for p in self._pages)
