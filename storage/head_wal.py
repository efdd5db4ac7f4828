"""Rebuilding the head from its WAL at start-up.

Records are applied in log order with the same rules as live appends, so replay is
idempotent: a sample logged twice is a duplicate the second time, a deletion logged
twice merges into the same tombstone. Refs in the WAL are
mapped to the refs the registry assigns now: the same ones, unless a checkpoint left out
idle series or records were lost to corruption (then ``head.renumbered`` is set, and the
WAL must be checkpointed before new records name series by today's refs). Samples whose
series record is missing are dropped and reported.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import _append_kernels as ak
from . import checkpoint, record
from .labels import NO_LIMITS, batch_from_keys, canonicalise
from .tombstones import Tombstones
from .wal import WAL, Replay
from .xor import decode_xor_many

if TYPE_CHECKING:
    from .head import Head

__all__ = ["replay"]

log = logging.getLogger(__name__)

# Series and samples already in the WAL were accepted when written: do not re-apply
# today's limits or out-of-order window, only the rules that make replay idempotent.
_UNLIMITED_WINDOW = np.iinfo(np.int64).max


class _RefMap:
    """WAL ref → head ref, as a growable array (-1 = unknown)."""

    def __init__(self) -> None:
        self.map = np.full(1024, -1, dtype=np.int64)

    def set(self, wal_refs: np.ndarray, refs: np.ndarray) -> None:
        need = int(wal_refs.max()) + 1
        if need > len(self.map):
            grown = np.full(max(need, 2 * len(self.map)), -1, dtype=np.int64)
            grown[:len(self.map)] = self.map
            self.map = grown
        self.map[wal_refs] = refs

    def renumbered(self) -> bool:
        """Whether some WAL ref now names its series under another ref."""
        known = np.flatnonzero(self.map >= 0)
        return bool((self.map[known] != known).any())

    def get(self, wal_refs: np.ndarray) -> np.ndarray:
        out = np.full(len(wal_refs), -1, dtype=np.int64)
        known = (wal_refs >= 0) & (wal_refs < len(self.map))
        out[known] = self.map[wal_refs[known]]
        return out


def replay(head: Head, wal_dir: Path) -> None:
    """Apply the newest checkpoint and every intact record after it to ``head``; report
    what was repaired."""
    checkpoint.remove_leftovers(wal_dir)
    found = checkpoint.latest(wal_dir)
    sources = [WAL.replay(found[0])] if found else []
    sources.append(WAL.replay(wal_dir, after=found[1] if found else 0))
    refmap = _RefMap()
    dropped = samples = 0
    for source in sources:
        d, s = _apply(head, source, refmap)
        dropped, samples = dropped + d, samples + s
    head.tombstones = head.tombstones.truncated_before(head.min_valid_time)
    head.renumbered = refmap.renumbered()
    head.replay_report = []
    for source in sources:
        where = "checkpoint " if found and source is sources[0] else ""
        head.replay_report += [
            f"{where}segment {r.segment} offset {r.offset}: {r.reason}; "
            f"{r.bytes_dropped} bytes dropped"
            + (f", moved aside: {', '.join(r.moved_aside)}" if r.moved_aside else "")
            for r in source.repairs]
    if dropped:
        head.replay_report.append(f"dropped {dropped} samples of series missing from the WAL")
    for problem in head.replay_report:
        log.warning("wal replay: %s", problem)
    log.info("wal replay: %d series, %d samples", head.registry.n_series, samples)


def _apply(head: Head, result: Replay, refmap: _RefMap) -> tuple[int, int]:
    """Apply one replay's records; return (samples dropped, samples kept)."""
    dropped = samples = 0
    for rtype, payload in result:
        if rtype == record.SERIES:
            wal_refs, blob, offsets = record.decode_series(payload)
            if len(wal_refs) == 0:
                continue
            canon = canonicalise(batch_from_keys(blob, offsets), NO_LIMITS)
            refs, _ = head.registry.resolve(canon)
            head.state.reserve(head.registry.n_series)
            refmap.set(wal_refs, refs)
        elif rtype == record.TOMBSTONES:
            wal_refs, mint, maxt = record.decode_tombstones(payload)
            refs = refmap.get(wal_refs)
            known = refs >= 0
            head.tombstones = head.tombstones.add(
                Tombstones.of(refs[known], mint[known], maxt[known]))
        elif rtype in (record.SAMPLES, record.CHUNKS):
            if rtype == record.SAMPLES:
                wal_refs, timestamps, values = record.decode_samples(payload)
            else:
                chunk_refs, blob, offsets = record.decode_chunks(payload)
                timestamps, values, starts = decode_xor_many(blob, offsets)
                wal_refs = np.repeat(chunk_refs, np.diff(starts))
            refs = refmap.get(wal_refs)
            outcome = np.empty(len(refs), dtype=np.uint8)
            head.max_time = ak.check_samples(
                refs, np.arange(len(refs) + 1, dtype=np.int64), timestamps,
                values.view(np.uint64), head.state.last_t, head.state.last_v,
                head.state.first_t, head.min_valid_time, _UNLIMITED_WINDOW, head.max_time,
                outcome)
            head.settle_out_of_order(refs, timestamps, values.view(np.uint64), outcome)
            dropped += int((refs < 0).sum())
            head.store(refs, timestamps, values, outcome)
            samples += int(((outcome == ak.ACCEPTED)
                            | (outcome == ak.ACCEPTED_OUT_OF_ORDER)).sum())
    return dropped, samples
