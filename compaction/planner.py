"""Which blocks to compact next, by Prometheus's leveled rules.

Block ranges grow by a factor (2 h, 6 h, 18 h, 54 h, … by default, capped by a maximum).
A plan is one group of blocks to merge into one:

1. blocks that overlap in time (after a crash, or data written out of order) are merged
   first, whatever their size;
2. otherwise, leaving the newest block out (so a block just cut from the head is not
   compacted before the next one exists), for each range from the second smallest up,
   blocks are grouped by the range-aligned window they fall in; the first window holding
   two or more blocks that either fill the window or end before the newest remaining
   block starts is merged (as in Prometheus);
3. otherwise, a block with many tombstones is rewritten alone, so that deleted samples
   leave the disk without waiting for ``clean_tombstones`` (as in Prometheus): from the
   newest (the newest of all left out), the first block at least as wide as the middle
   range with more tombstones than 5 % of its series, or a narrower one with a
   tombstone per series (all deleted, likely). Prometheus stops at the first narrower
   block, so in a store whose newest blocks are young and narrow it rarely gets to the
   wide ones; we look past them. ``tombstoned`` is this rule for one block, which the
   downsampled blocks' deleted windows are held to as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["BlockSpan", "plan", "ranges", "tombstoned"]

HOUR_MS = 3_600_000
TOMBSTONE_RATIO = 0.05  # tombstones per series beyond which a block is rewritten alone


@dataclass(frozen=True)
class BlockSpan:
    """The part of a block's meta the planner looks at; ``max_time`` is exclusive."""

    ulid: str
    min_time: int
    max_time: int
    num_series: int = 0
    num_tombstones: int = 0


def ranges(base_ms: int = 2 * HOUR_MS, factor: int = 3, max_ms: int = 31 * 24 * HOUR_MS
           ) -> list[int]:
    """Block ranges ``base, base*factor, …`` up to ``max_ms``."""
    out = [base_ms]
    while out[-1] * factor <= max_ms:
        out.append(out[-1] * factor)
    return out


def plan(blocks: Sequence[BlockSpan], block_ranges: Sequence[int]) -> list[BlockSpan]:
    """The next group of blocks to compact into one (empty when there is nothing to do)."""
    ordered = sorted(blocks, key=lambda b: (b.min_time, b.ulid))
    overlapping = _overlapping(ordered)
    if overlapping:
        return overlapping
    if len(ordered) < 2:
        return []
    candidates = ordered[:-1]
    newest_start = candidates[-1].min_time
    for width in block_ranges[1:]:
        for group in _by_window(candidates, width):
            if len(group) < 2:
                continue
            lo, hi = group[0].min_time, max(b.max_time for b in group)
            if hi - lo == width or hi <= newest_start:
                return group
    return next(([b] for b in reversed(candidates) if tombstoned(b, block_ranges)), [])


def tombstoned(block: BlockSpan, block_ranges: Sequence[int]) -> bool:
    """Whether ``block`` is to be rewritten alone for its tombstones (rule 3): it is at
    least as wide as the middle range and has more tombstones than 5 % of its series,
    or it is narrower and has a tombstone per series."""
    if block.max_time - block.min_time >= block_ranges[len(block_ranges) // 2]:
        return block.num_tombstones / (block.num_series + 1) > TOMBSTONE_RATIO
    # Intervals are counted, not series: a tombstone per series likely means that
    # everything is deleted, however small the block.
    return block.num_tombstones > 0 and block.num_series <= block.num_tombstones


def _overlapping(ordered: Sequence[BlockSpan]) -> list[BlockSpan]:
    """The first run of blocks that overlap one another, if any."""
    group: list[BlockSpan] = []
    end = None
    for b in ordered:
        if end is not None and b.min_time < end:
            group.append(b)
            end = max(end, b.max_time)
            continue
        if len(group) > 1:
            return group
        group, end = [b], b.max_time
    return group if len(group) > 1 else []


def _by_window(ordered: Sequence[BlockSpan], width: int) -> list[list[BlockSpan]]:
    """Blocks grouped by the ``width``-aligned window that wholly contains them; a block
    wider than the window (or straddling two) is left out."""
    groups: list[list[BlockSpan]] = []
    current: list[BlockSpan] = []
    window = None
    for b in ordered:
        start = b.min_time // width * width
        if b.max_time > start + width:
            continue
        if start != window:
            if current:
                groups.append(current)
            current, window = [], start
        current.append(b)
    if current:
        groups.append(current)
    return groups
