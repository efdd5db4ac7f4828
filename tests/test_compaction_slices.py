"""Compaction merges series in slices to bound memory; the slices must not show."""

from __future__ import annotations

import numpy as np
import pytest

from compaction.compactor import compact
from storage.batch import WriteBatch
from storage.block import Block
from storage.db import DB, DBOptions

HOUR = 3_600_000
T0 = 1_700_000_000_000 // (2 * HOUR) * (2 * HOUR)


def _blocks(path, first: int, series: range) -> list[Block]:
    """Two-hour blocks of a store that holds ``series`` from minute ``first`` on."""
    db = DB.open(path, DBOptions(compaction_interval=0))
    rng = np.random.default_rng(first)
    for minute in range(first, 400, 3):
        db.append(WriteBatch.from_series([
            ({"__name__": "m", "i": str(i)}, [(T0 + minute * 60_000, float(rng.integers(100)))])
            for i in series]))
    db.compact_head()
    db.close()
    return [Block.open(p) for p in sorted(path.iterdir()) if len(p.name) == 26]


@pytest.mark.parametrize("dense", [True, False])
def test_slices_write_the_same_block_as_one_pass(tmp_path, dense):
    # Overlapping sources whose series only partly coincide.
    sources = _blocks(tmp_path / "a", 0, range(0, 30)) + _blocks(tmp_path / "b", 1, range(20, 45))
    (tmp_path / "whole").mkdir()
    (tmp_path / "sliced").mkdir()
    try:
        whole = compact(tmp_path / "whole", sources, dense=dense, slice_samples=1 << 40)
        # A slice for every series:
        sliced = compact(tmp_path / "sliced", sources, dense=dense, slice_samples=1)
    finally:
        for block in sources:
            block.close()
    assert sliced.num_samples == whole.num_samples > 0
    assert sliced.num_series == 45
    for name in ("index", "chunks/000001"):
        assert (sliced.path / name).read_bytes() == (whole.path / name).read_bytes()
