"""The compact index format of dense blocks: golden bytes, the same answers as format 2,
hostile files, and the fallback to format 2 when series refs would not fit.

Format 2 itself is pinned against Prometheus's own bytes in ``test_block.py``; the
compact format is promstore's, so its golden file is ours: a change to it must be a new
version, not an accident.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compaction.compactor import compact
from storage import block_index
from storage.block import Block, write_block
from storage.block_index import INDEX_FORMAT_COMPACT, INDEX_FORMAT_V2, IndexFile, section_sizes
from storage.errors import CorruptionError
from tests.test_block import (
    BASE,
    GOLDEN_INDEX,
    GOLDEN_ULID,
    flipped_reads,
    golden_chunks,
    read_everything,
    write_golden,
)

GOLDEN_MAXT = 1_700_005_985_001
GOLDEN_COMPACT_INDEX = bytes.fromhex(
    "baaad700810000018bcfe568001dbd260a000000550000000e00032fc3bc0332303003353030085f5f6e616d"
    "655f5f03613a390361706904636f646513687474705f72657175657374735f746f74616c08696e7374616e63"
    "65036a6f62046e6f64650470617468027570a294d2a91d03040807020a060300d0808201089875b88b8101ca"
    "039875b0af68c4044aee8fe51104040807030a060c0101f403b0ea01c6053a7958a50e03040d09050a0b01e0"
    "d40300e305fd1311ee0a02040d0a06010000fa058031dd9c00000014000000040000006e00000090000000a6"
    "000000b911f0046c0000000c000000020000006e000000902da026ab0000000c00000002000000a6000000b9"
    "e93bc7da00000008000000010000006e7987f163000000080000000100000090269121310000000800000001"
    "000000a630d38f6800000010000000030000006e00000090000000b988d93b390000000800000001000000a6"
    "30d38f680000000800000001000000902691213100000020000000090000c80104081c000514030214000110"
    "020510010610000518020110ac21619c0000000000000011000000000000006e000000000000000000000000"
    "0000000000000000000000c80000000000000174ed28da42"
)


def write_compact(tmp_path, **args):
    return write_block(tmp_path, **(args or golden_chunks()), mint=BASE, maxt=GOLDEN_MAXT,
                       compact_index=True)


def test_golden_compact_index_is_written_and_read(tmp_path):
    (tmp_path / "compact").mkdir()
    meta = write_compact(tmp_path / "compact")
    data = (meta.path / "index").read_bytes()
    assert data == GOLDEN_COMPACT_INDEX
    assert len(data) < 0.6 * len(GOLDEN_INDEX)
    # Same block as Prometheus's golden one apart from the index: the same answers.
    (tmp_path / "v2").mkdir()
    want = read_everything(write_golden(tmp_path / "v2"))
    assert read_everything(meta.path) == want
    with IndexFile(meta.path / "index") as index:
        assert index.version == INDEX_FORMAT_COMPACT
    sizes = section_sizes(meta.path / "index")
    assert sizes["label_indices"] == sizes["label_offset_table"] == 0
    assert sum(sizes.values()) == len(data)


def test_format_2_stays_the_default(tmp_path):
    meta = write_block(tmp_path, **golden_chunks(), mint=BASE, maxt=GOLDEN_MAXT)
    assert (meta.path / "index").read_bytes() == GOLDEN_INDEX
    with IndexFile(meta.path / "index") as index:
        assert index.version == INDEX_FORMAT_V2


def test_series_refs_past_uint32_fall_back_to_format_2(tmp_path, monkeypatch):
    monkeypatch.setattr(block_index, "_MAX_REF", 64)
    meta = write_compact(tmp_path)
    assert (meta.path / "index").read_bytes() == GOLDEN_INDEX


def test_every_flipped_byte_is_caught_or_harmless(tmp_path):
    path = write_compact(tmp_path).path
    # Every byte is read and checked: no padding, no section kept only for other readers.
    assert flipped_reads(path, "index") == set(range(len(GOLDEN_COMPACT_INDEX)))


def test_truncated_index_is_corruption(tmp_path):
    path = write_compact(tmp_path).path
    for size in range(0, len(GOLDEN_COMPACT_INDEX), 3):
        (path / "index").write_bytes(GOLDEN_COMPACT_INDEX[:size])
        with pytest.raises(CorruptionError):
            read_everything(path)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=300))
def test_garbage_behind_a_compact_header_is_corruption(tmp_path, garbage):
    path = tmp_path / GOLDEN_ULID
    if not path.exists():
        write_golden(tmp_path)
    (path / "index").write_bytes(GOLDEN_COMPACT_INDEX[:17] + garbage
                                 + GOLDEN_COMPACT_INDEX[-52:])
    with pytest.raises(CorruptionError):
        read_everything(path)


@pytest.mark.parametrize("dense", [True, False])
def test_compaction_writes_the_compact_index_beside_dense_chunks_only(tmp_path, dense):
    source = write_block(tmp_path, **golden_chunks(), mint=BASE, maxt=GOLDEN_MAXT)
    with Block.open(source.path) as block:
        meta = compact(tmp_path, [block], dense=dense)
    with IndexFile(meta.path / "index") as index:
        assert index.version == (INDEX_FORMAT_COMPACT if dense else INDEX_FORMAT_V2)
    got, want = read_everything(meta.path), read_everything(source.path)
    assert got[:7] == want[:7]  # the same series, labels and postings
