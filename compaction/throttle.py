"""Keeping block maintenance out of ingestion's way: a low scheduling priority for the
process that merges, and a budget of samples per second for its work.

A nice value of 19 makes the kernel's scheduler give ingestion the cores whenever both
want them, yet on a small machine a merge running flat out still costs ingestion a
third or more of its p99 latency (caches, memory traffic; see ``benchmarks/compaction.py``): the
cost comes with every burst of merging, so only a low duty cycle keeps it away. The
budget counts samples rather than bytes because merging costs about the same per
sample whatever the encoding, while dense chunks hold four times more samples per byte.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np

from storage.block import Block, ChunkSet

__all__ = ["LOW_PRIORITY", "MeteredBlock", "Throttle", "chunk_samples", "lower_priority"]

log = logging.getLogger(__name__)

LOW_PRIORITY = 19  # the nice value of the compaction worker: the lowest priority there is

# How much unused budget a pause may bank, in seconds of work: a compaction after a
# quiet hour runs at once, yet a long backlog is still paced.
_BURST_SECONDS = 1.0


class Throttle:
    """A budget of ``rate`` units of work per second, spent by ``pace``.

    ``pace(n)`` is called with ``n`` units of work and sleeps until that work fits the
    budget: over any stretch of time the units paced stay at most ``rate`` per second
    plus one second's worth. ``rate`` 0 never sleeps. One thread at a time.
    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        if rate < 0:
            raise ValueError(f"rate must not be negative, not {rate}")
        self.rate = float(rate)
        self._clock = clock
        self._sleep = sleep
        self._ready_at = -float("inf")  # when the work paced so far fits the budget

    def pace(self, units: int) -> float:
        """Account for ``units`` of work; sleep as needed. Returns the seconds slept."""
        if self.rate <= 0 or units <= 0:
            return 0.0
        now = self._clock()
        self._ready_at = max(self._ready_at, now - _BURST_SECONDS) + units / self.rate
        delay = self._ready_at - now
        if delay <= 0:
            return 0.0
        self._sleep(delay)
        return delay


def chunk_samples(chunks: ChunkSet) -> int:
    """Samples in ``chunks``: every chunk encoding starts with a big-endian uint16 count."""
    starts = chunks.offsets[:-1][np.diff(chunks.offsets) >= 2]
    return int(((chunks.blob[starts].astype(np.int64) << 8) | chunks.blob[starts + 1]).sum())


def _unpaced(samples: int) -> None:
    return None


class MeteredBlock(Block):
    """A block that reports the samples of every ``chunks`` read to ``pace``.

    ``compaction.compactor.compact`` reads each source block once per slice of series,
    so metered sources pace a merge slice by slice, at a fine grain, without the merge
    knowing."""

    pace: Callable[[int], object] = staticmethod(_unpaced)

    @classmethod
    def open_paced(cls, path: Path, pace: Callable[[int], object]) -> MeteredBlock:
        """``Block.open``, reporting to ``pace``."""
        block = cast(MeteredBlock, cls.open(path))  # Block.open builds a ``cls``
        block.pace = pace
        return block

    def chunks(self, ids: np.ndarray, mint: int, maxt: int) -> ChunkSet:
        found = super().chunks(ids, mint, maxt)
        self.pace(chunk_samples(found))
        return found


def lower_priority(pid: int, nice: int = LOW_PRIORITY) -> bool:
    """Give process ``pid`` (on Linux: its main thread, and the threads that starts
    later) the nice value ``nice``, unless its nice value is that high already; True if
    done.

    The server calls it on the compaction worker right after starting it, while the
    worker is still starting up, so that its work runs below the server's. A refusal (a
    sandbox forbidding it) or a system without nice values is logged and otherwise
    ignored: compaction still works, only less politely.
    """
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) >= nice:
            return False
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except (OSError, AttributeError) as exc:
        log.warning("cannot lower the compaction worker's priority: %s", exc)
        return False
    return True
