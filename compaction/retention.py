"""Which blocks retention removes: by age and by total size, whole blocks only.

Age is measured back from the newest sample in the store (the head's or the newest
block's): a block whose every sample is older than that minus the retention time goes.
Size retention then drops the oldest blocks until blocks and WAL together fit. The head
is never touched: its range is still being written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from storage.block import BlockMeta

__all__ = ["directory_bytes", "expired"]


def directory_bytes(path: Path) -> int:
    """Bytes in the files under ``path`` (0 when it is gone)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


def expired(metas: Sequence[BlockMeta], newest_time: int, retention_ms: int,
            retention_bytes: int, sizes: Sequence[int], other_bytes: int = 0
            ) -> list[BlockMeta]:
    """Blocks to delete, oldest first. ``sizes[i]`` is the size of ``metas[i]``;
    ``other_bytes`` (the WAL) counts toward ``retention_bytes`` but is never deleted.
    A limit of 0 is off."""
    order = sorted(range(len(metas)), key=lambda i: (metas[i].max_time, metas[i].ulid))
    doomed: list[int] = []
    if retention_ms > 0:
        doomed = [i for i in order if newest_time - metas[i].max_time > retention_ms]
    if retention_bytes > 0:
        total = other_bytes + sum(sizes[i] for i in order if i not in doomed)
        for i in order:
            if total <= retention_bytes:
                break
            if i not in doomed:
                doomed.append(i)
                total -= sizes[i]
    return [metas[i] for i in sorted(doomed, key=order.index)]
