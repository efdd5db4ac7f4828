"""Blocks: golden bytes from Prometheus 2.42, round trips against a model, hostile files.

The golden block was made by ``promtool tsdb create-blocks-from openmetrics`` (Prometheus
2.42) from the samples in ``GOLDEN_SERIES``; our writer must reproduce its files byte for
byte, and our reader must read them back.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import _block_kernels as kernels
from storage import block_chunks
from storage.block import TMP_SUFFIX, Block, read_meta, write_block
from storage.errors import CorruptionError
from storage.matchers import Matcher, MatchType
from storage.series_set import label_sort_key
from storage.ulid import is_ulid, new_ulid, ulid_time
from storage.xor import ENCODING_XOR, decode_xor_many, encode_xor_many

MIN_T, MAX_T = -(1 << 63), (1 << 63) - 1
PROM_NAN = 0x7FF8000000000001

# --------------------------------------------------------------------------- golden block

GOLDEN_ULID = "01M8010PKNN4B6ENS6A5G47J9S"
GOLDEN_META = (
    '{\n\t"ulid": "01M8010PKNN4B6ENS6A5G47J9S",\n\t"minTime": 1700000000000,\n\t'
    '"maxTime": 1700005985001,\n\t"stats": {\n\t\t"numSamples": 405,\n\t\t"numSeries": 4,'
    '\n\t\t"numChunks": 6\n\t},\n\t"compaction": {\n\t\t"level": 1,\n\t\t"sources": [\n'
    '\t\t\t"01M8010PKNN4B6ENS6A5G47J9S"\n\t\t]\n\t},\n\t"version": 1\n}'
)
GOLDEN_TOMBSTONES = bytes.fromhex("0130ba300100000000")
GOLDEN_INDEX = bytes.fromhex(
    "baaad70002000000550000000e00032fc3bc0332303003353030085f5f6e616d655f5f03613a390361706904"
    "636f646513687474705f72657175657374735f746f74616c08696e7374616e6365036a6f62046e6f64650470"
    "617468027570a294d2a900000000000000000000000000002203040807020a060380a0abfef962d080820108"
    "9875b88b8101ca039875b0af68c404df992b120000000000000000001504040807030a060c0101f4a3abfef9"
    "62b0ea01c60568f3958d0000000000001103040d09050a0b01e0f4aefef96200e3053636a6cf000000000000"
    "000000000f02040d0a060180a0abfef96200fa0524ecd611000000100000000100000002000000080000000d"
    "e57c3fac0000001000000001000000020000000200000003fc4154420000000c000000010000000100000005"
    "d2be18a5000000100000000100000002000000060000000b96ddb23d0000000c000000010000000100000001"
    "15248fba0000001400000004000000070000000a0000000c0000000e883cda780000000c0000000200000007"
    "0000000a056549400000000c000000020000000c0000000e4fab653a00000008000000010000000760f3b9cd"
    "00000008000000010000000adfdbf51e00000008000000010000000cf97a12f6000000100000000300000007"
    "0000000a0000000ecd5b77b100000008000000010000000cf97a12f600000008000000010000000adfdbf51e"
    "000000330000000501085f5f6e616d655f5ff4010104636f64658c020108696e7374616e6365a40201036a6f"
    "62b802010470617468d00290a72ec80000008300000009020000e40202085f5f6e616d655f5f13687474705f"
    "72657175657374735f746f74616c800302085f5f6e616d655f5f02757094030204636f646503323030a80302"
    "04636f646503353030b8030208696e7374616e636503613a39c80302036a6f6203617069d80302036a6f6204"
    "6e6f6465f003020470617468032fc3bc8004faa1567900000000000000050000000000000062000000000000"
    "00f400000000000002100000000000000164000000000000024b3506eba8"
)

GOLDEN_SEGMENT = bytes.fromhex(
    "85bd40dd01000000de0101008f80a0abfef96200000000000000009875c26400a0026a17a8a869cda1f6c135"
    "1a56923f502a0341a81d0ea0340a83d02a0347cde1f6e1351a56d17e8a869a8ed837a8342a3d0a834ea1d1a8"
    "342b513fd40540340d40741d40340540f40540343d40740d40340541f40540340d40747d40340540f4054034"
    "1d40740d40340543f40540340d40741d40340540f4054034fe710fb809a8d2b78bf45434d476e1bd41a151e8"
    "541a750e8d41a15b47fe82a0686a0e8ea0682a1e82a069ea0e86a0682a3e82a0686a0ed847ea0340a83d02a0"
    "343a81d06a0340a8fd02a0341a093055a29b0201008ed08bb180fa62407ad000000000009875de2f50d153d1"
    "50db47fa83a1a81a0a8fa0a81a1a83a7a81a0a87a0a81a3a83a1a81a0ad06fff50015000d0035001d0075000"
    "d0015003d0015000d00f5001d0035000d0015007d0015000d0035001d01f5000d0015003d0015000d0075001"
    "d0035000d001500fd0015000d0035001d0075000d0015003d0015000d03f5001d0035000d0015007d0015000"
    "d0035001d00f5000d0015003d0015000d0075001d0035000d001501fd0015000d0035001d0075000d0015003"
    "d0015000d00f5001d0035000d0015007d0015000d0035001d07f5000d0015003d0015000d0075001d0035000"
    "d001500fd0015000d0035001d0075000d0015003d0015000d01f5001d0035000d0015007d001405224bb94b0"
    "01010073f08cb582fa62408ab800000000009875e226a76f1bd41a151e8541a750e8d41a15b48ff40a80d06a"
    "0743a80d02a0f40a80d1ea0741a80d02a1f40a80d06a074fa80d02a0f40a80d0ea0741a80d02a3f40a80d06a"
    "0743a80d02a0f40a80dac9ffb987dc84d4695c45fa2a1a6a3b80dea0d0a8f42a0d3a8746a0d0ade3ff415034"
    "3507475034150f415034f507435034151f41503435076e23f501a0541e81501a1d40e83501a0547e81501a0d"
    "40e03ebb0eb317010003f4a3abfef96200000000000000009875c44ffdac18e465ff0611010001e0f4aefef9"
    "627ff8000000000001009ad5e7d91101000180a0abfef9623ff000000000000000fd78f054"
)

BASE = 1_700_000_000_000
# (labels, timestamps, values, first sample of each chunk as Prometheus cut them)
GOLDEN_SERIES = [
    ({"__name__": "http_requests_total", "code": "200", "job": "api"},
     BASE + 15_000 * np.arange(400), 3.0 * np.arange(400), [0, 143, 285]),
    ({"__name__": "http_requests_total", "code": "500", "job": "api", "path": "/ü"},
     BASE + 250 + 15_000 * np.arange(3), 0.5 * np.arange(3), [0]),
    ({"__name__": "up", "instance": "a:9", "job": "node"},
     np.array([BASE + 30_000]), np.array([PROM_NAN], np.uint64).view(np.float64), [0]),
    ({"__name__": "up", "job": "api"}, np.array([BASE]), np.array([1.0]), [0]),
]


def keys_of(label_sets: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Canonical keys (name 0xFF value 0xFF, names sorted) as blob and offsets."""
    parts = [b"".join(n.encode() + b"\xff" + v.encode() + b"\xff" for n, v in sorted(ls.items()))
             for ls in label_sets]
    offsets = np.zeros(len(parts) + 1, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    return np.frombuffer(b"".join(parts), np.uint8).copy(), offsets


def write_golden(parent: Path) -> Path:
    path = parent / GOLDEN_ULID
    (path / "chunks").mkdir(parents=True)
    (path / "index").write_bytes(GOLDEN_INDEX)
    (path / "chunks" / "000001").write_bytes(GOLDEN_SEGMENT)
    (path / "tombstones").write_bytes(GOLDEN_TOMBSTONES)
    (path / "meta.json").write_text(GOLDEN_META)
    return path


def golden_chunks() -> dict:
    """write_block arguments for the golden series, chunks encoded by our XOR encoder."""
    ts_parts, vs_parts, starts, owner = [], [], [], []
    n = 0
    for i, (_, ts, vs, cuts) in enumerate(GOLDEN_SERIES):
        ts_parts.append(ts)
        vs_parts.append(vs)
        starts.extend(n + c for c in cuts)
        owner.extend([i] * len(cuts))
        n += len(ts)
    ts, vs = np.concatenate(ts_parts), np.concatenate(vs_parts)
    starts.append(n)
    bounds = np.array(starts)
    blob, offsets = encode_xor_many(ts, vs, bounds)
    keys_blob, keys_offsets = keys_of([s[0] for s in GOLDEN_SERIES])
    return dict(keys_blob=keys_blob, keys_offsets=keys_offsets, chunk_series=np.array(owner),
                chunk_mint=ts[bounds[:-1]], chunk_maxt=ts[bounds[1:] - 1],
                chunk_encoding=np.full(len(owner), ENCODING_XOR), chunk_blob=blob,
                chunk_offsets=offsets)


def test_golden_block_is_read(tmp_path):
    with Block.open(write_golden(tmp_path)) as block:
        meta = block.meta
        assert (meta.ulid, meta.min_time, meta.max_time) == (GOLDEN_ULID, BASE, 1_700_005_985_001)
        assert (meta.num_samples, meta.num_series, meta.num_chunks) == (405, 4, 6)
        assert (meta.level, meta.sources) == (1, (GOLDEN_ULID,))
        ids = block.select_series([], MIN_T, MAX_T)
        assert ids.tolist() == [0, 1, 2, 3]
        assert block.series_labels(ids) == [s[0] for s in GOLDEN_SERIES]
        assert block.label_names() == ["__name__", "code", "instance", "job", "path"]
        assert block.label_values("job") == ["api", "node"]
        assert block.label_values("path") == ["/ü"]
        chunks = block.chunks(ids, MIN_T, MAX_T)
        assert chunks.series.tolist() == [0, 0, 0, 1, 2, 3]
        assert chunks.encoding.tolist() == [ENCODING_XOR] * 6
        ts, vs, starts = decode_xor_many(chunks.blob, chunks.offsets)
        at = 0
        for _, want_ts, want_vs, _ in GOLDEN_SERIES:
            got = slice(at, at + len(want_ts))
            assert ts[got].tolist() == want_ts.tolist()
            assert vs[got].view(np.uint64).tolist() == want_vs.view(np.uint64).tolist()
            at += len(want_ts)
        assert chunks.mint.tolist() == ts[starts[:-1]].tolist()
        assert chunks.maxt.tolist() == ts[starts[1:] - 1].tolist()


def test_writer_reproduces_prometheus_bytes(tmp_path):
    meta = write_block(tmp_path, **golden_chunks(), mint=BASE, maxt=1_700_005_985_001)
    assert meta.path == tmp_path / meta.ulid
    assert os.listdir(tmp_path) == [meta.ulid]
    assert (meta.path / "index").read_bytes() == GOLDEN_INDEX
    assert (meta.path / "chunks" / "000001").read_bytes() == GOLDEN_SEGMENT
    assert (meta.path / "tombstones").read_bytes() == GOLDEN_TOMBSTONES
    assert (meta.path / "meta.json").read_text() == GOLDEN_META.replace(GOLDEN_ULID, meta.ulid)
    assert read_meta(meta.path) == meta


def test_ulids_sort_by_time_and_round_trip():
    ids = [new_ulid(ms) for ms in (0, 1, 1_700_000_000_000, (1 << 48) - 1)]
    assert all(is_ulid(u) and len(u) == 26 for u in ids)
    assert ids == sorted(ids)
    assert [ulid_time(u) for u in ids] == [0, 1, 1_700_000_000_000, (1 << 48) - 1]
    assert ulid_time(GOLDEN_ULID) == 1_795_297_401_461  # when promtool made the block
    assert not is_ulid("8" + "0" * 25) and not is_ulid("0" * 25 + "U") and not is_ulid("0" * 25)
    with pytest.raises(ValueError):
        new_ulid(1 << 48)


# --------------------------------------------------------------------------- round trips

NAMES = ["__name__", "a", "b_1", "instance", "job", "zz"]
VALUES = st.text(alphabet="abxy019éü日本🙂", min_size=1, max_size=3)
PATTERNS = [".*", ".+", "(?s).*", "a.*", "x|y|ab", "日.*", "[0-9]+", "a|"]


def random_chunks(label_sets: list[dict[str, str]], seed: int) -> dict:
    """write_block arguments: 0-3 chunks of 1-5 XOR samples per series, chunk times
    increasing and apart; series and chunks in shuffled order."""
    rng = np.random.default_rng(seed)
    per_series = rng.integers(0, 4, len(label_sets))
    owner = np.repeat(np.arange(len(label_sets)), per_series)
    sizes = rng.integers(1, 6, len(owner))
    ts_parts, starts = [], [0]
    for s in range(len(label_sets)):
        t = int(rng.integers(-5000, 5000))
        for size in sizes[owner == s]:
            ts_parts.append(t + np.cumsum(rng.integers(1, 1000, size)))
            t = int(ts_parts[-1][-1]) + int(rng.integers(1, 100))
            starts.append(starts[-1] + int(size))
    ts = np.concatenate(ts_parts) if ts_parts else np.empty(0, np.int64)
    vs = rng.normal(size=len(ts)).round(2)
    bounds = np.array(starts)
    blob, offsets = encode_xor_many(ts, vs, bounds)
    series_order = rng.permutation(len(label_sets))
    keys_blob, keys_offsets = keys_of([label_sets[i] for i in series_order])
    new_id = np.argsort(series_order)
    return dict(keys_blob=keys_blob, keys_offsets=keys_offsets, chunk_series=new_id[owner],
                chunk_mint=ts[bounds[:-1]], chunk_maxt=ts[bounds[1:] - 1],
                chunk_encoding=np.full(len(owner), ENCODING_XOR), chunk_blob=blob,
                chunk_offsets=offsets)


class Model:
    """What a block written from ``args`` must answer, computed the slow way."""

    def __init__(self, args: dict) -> None:
        blob, offs = args["keys_blob"].tobytes(), args["keys_offsets"]
        label_sets = []
        for a, b in itertools.pairwise(offs):
            parts = blob[a:b - 1].split(b"\xff")
            label_sets.append(dict(zip((p.decode() for p in parts[0::2]),
                                       (p.decode() for p in parts[1::2]))))
        used = sorted(set(args["chunk_series"].tolist()),
                      key=lambda i: label_sort_key(label_sets[i]))
        self.labels = [label_sets[i] for i in used]
        ordinal = {s: i for i, s in enumerate(used)}
        c_off = args["chunk_offsets"]
        self.chunks = sorted(
            (ordinal[int(s)], int(lo), int(hi), args["chunk_blob"][c_off[c]:c_off[c + 1]].tobytes())
            for c, (s, lo, hi) in enumerate(zip(args["chunk_series"], args["chunk_mint"],
                                                 args["chunk_maxt"])))

    def select(self, matchers: list[Matcher], mint: int, maxt: int) -> list[int]:
        in_range = {s for s, lo, hi, _ in self.chunks if hi >= mint and lo <= maxt and mint <= maxt}
        return [i for i, ls in enumerate(self.labels) if i in in_range
                and all(m.matches(ls.get(m.name, "")) for m in matchers)]

    def chunks_of(self, ids: list[int], mint: int, maxt: int) -> list[tuple]:
        pos = {s: i for i, s in enumerate(ids)}
        return [(pos[s], lo, hi, data) for s, lo, hi, data in self.chunks
                if s in pos and hi >= mint and lo <= maxt and mint <= maxt]


def block_range(args: dict) -> tuple[int, int]:
    if len(args["chunk_mint"]) == 0:
        return 0, 0
    return int(args["chunk_mint"].min()), int(args["chunk_maxt"].max()) + 1


def chunk_rows(chunks) -> list[tuple]:
    return [(int(s), int(lo), int(hi), chunks.blob[a:b].tobytes())
            for s, lo, hi, a, b in zip(chunks.series, chunks.mint, chunks.maxt,
                                       chunks.offsets[:-1], chunks.offsets[1:])]


@st.composite
def matchers(draw, values: list[str]) -> list[Matcher]:
    out = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(list(MatchType)))
        name = draw(st.sampled_from([*NAMES, "missing"]))
        literal = st.sampled_from(["", *values]) if values else st.just("")
        value = draw(literal if kind in (MatchType.EQ, MatchType.NEQ)
                     else st.one_of(literal, st.sampled_from(PATTERNS)))
        out.append(Matcher(kind, name, value))
    return out


@pytest.mark.parametrize("compact_index", [False, True], ids=["format-2", "compact"])
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(label_sets=st.lists(st.dictionaries(st.sampled_from(NAMES), VALUES, min_size=1,
                                           max_size=4),
                           max_size=12, unique_by=lambda d: tuple(sorted(d.items()))),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_round_trip_against_model(tmp_path_factory, compact_index, label_sets, seed, data):
    args = random_chunks(label_sets, seed)
    model = Model(args)
    mint, maxt = block_range(args)
    meta = write_block(tmp_path_factory.mktemp("blocks"), **args, mint=mint, maxt=maxt,
                       compact_index=compact_index)
    with Block.open(meta.path) as block:
        n = len(model.labels)
        assert block.n_series == meta.num_series == n
        assert meta.num_chunks == len(model.chunks)
        assert meta.num_samples == sum(int.from_bytes(c[3][:2], "big") for c in model.chunks)
        ids = np.arange(n)
        assert block.select_series([], MIN_T, MAX_T).tolist() == ids.tolist()
        assert block.series_labels(ids) == model.labels
        keys_blob, keys_offsets = block.series_keys(ids)
        want_blob, want_offsets = keys_of(model.labels)
        assert keys_blob.tobytes() == want_blob.tobytes()
        assert keys_offsets.tolist() == want_offsets.tolist()
        assert block.label_names() == sorted({k for ls in model.labels for k in ls})
        subset = sorted(data.draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=n))) if n else []
        sub = np.array(subset, dtype=np.int64)
        assert block.label_names(sub) == sorted({k for i in subset for k in model.labels[i]})
        for name in [*NAMES, "missing"]:
            assert block.label_values(name) == sorted(
                {ls[name] for ls in model.labels if name in ls}, key=str.encode)
            assert block.label_values(name, sub) == sorted(
                {model.labels[i][name] for i in subset if name in model.labels[i]},
                key=str.encode)
        values = sorted({v for ls in model.labels for v in ls.values()})
        ms = data.draw(matchers(values))
        lo = data.draw(st.integers(mint - 10, maxt + 10))
        hi = data.draw(st.integers(lo - 5, maxt + 10))
        for q_min, q_max in ((MIN_T, MAX_T), (lo, hi)):
            got = block.select_series(ms, q_min, q_max)
            assert got.tolist() == model.select(ms, q_min, q_max), (ms, q_min, q_max)
            assert chunk_rows(block.chunks(got, q_min, q_max)) == \
                model.chunks_of(got.tolist(), q_min, q_max)
        assert chunk_rows(block.chunks(sub, lo, hi)) == model.chunks_of(subset, lo, hi)


def test_thousands_of_series_across_segments(tmp_path):
    rng = np.random.default_rng(7)
    label_sets = [{"__name__": f"m{i % 7}", "instance": f"host-{i % 211}", "shard": str(i)}
                  for i in range(3000)]
    args = random_chunks(label_sets, 11)
    model = Model(args)
    mint, maxt = block_range(args)
    meta = write_block(tmp_path, **args, mint=mint, maxt=maxt, segment_size=4096)
    segments = sorted(os.listdir(meta.path / "chunks"))
    assert len(segments) > 10 and segments[:2] == ["000001", "000002"]
    assert all((meta.path / "chunks" / s).stat().st_size <= 4096 for s in segments)
    with Block.open(meta.path) as block:
        ids = block.select_series([], MIN_T, MAX_T)
        assert block.series_labels(ids) == model.labels
        assert chunk_rows(block.chunks(ids, MIN_T, MAX_T)) == model.chunks_of(ids.tolist(),
                                                                             MIN_T, MAX_T)
        picked = np.sort(rng.choice(len(ids), 50, replace=False))
        ms = [Matcher(MatchType.RE, "instance", "host-1.*"),
              Matcher(MatchType.NEQ, "__name__", "m3")]
        assert block.select_series(ms, MIN_T, MAX_T).tolist() == model.select(ms, MIN_T, MAX_T)
        assert chunk_rows(block.chunks(picked, mint + 1000, mint + 5000)) == \
            model.chunks_of(picked.tolist(), mint + 1000, mint + 5000)


def test_chunks_are_read_in_batches_bounded_by_the_pages_they_touch(tmp_path, monkeypatch):
    """Chunk pages are dropped after each batch; a batch is cut by the bytes its chunks
    span (scattered chunks count the fault-around span each), and the chunks read in
    many batches are those read in one."""
    offsets = np.array([0, 100, 200, 300, 10**6, 2 * 10**6, 2 * 10**6 + 50], np.int64)
    monkeypatch.setattr(block_chunks, "_FAULT_AROUND", 1000)
    monkeypatch.setattr(block_chunks, "_DROP_AFTER", 2000)
    parts = block_chunks._batches(np.arange(len(offsets)), offsets)
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6]]
    label_sets = [{"__name__": "m", "i": str(i)} for i in range(300)]
    args = random_chunks(label_sets, 3)
    model = Model(args)
    mint, maxt = block_range(args)
    meta = write_block(tmp_path, **args, mint=mint, maxt=maxt)
    monkeypatch.setattr(block_chunks, "_FAULT_AROUND", 256)
    monkeypatch.setattr(block_chunks, "_DROP_AFTER", 1024)
    with Block.open(meta.path) as block:
        ids = block.select_series([], MIN_T, MAX_T)
        assert chunk_rows(block.chunks(ids, MIN_T, MAX_T)) == model.chunks_of(ids.tolist(),
                                                                             MIN_T, MAX_T)


def test_selective_matchers_look_series_up_in_large_postings(tmp_path):
    """One series of a large job: the job's postings are searched, not read, and give
    the same answers; a damaged list is still caught by its checksum."""
    label_sets = [{"__name__": "up", "job": "api" if i % 10 else "db",
                   "instance": f"host-{i % 300}", "path": f"/p{i % 7}", "n": str(i)}
                  for i in range(3000)]
    args = random_chunks(label_sets, 5)
    model = Model(args)
    meta = write_block(tmp_path, **args, mint=block_range(args)[0], maxt=block_range(args)[1])
    one = [ls["n"] for ls in model.labels if ls["job"] == "api"][500]
    selections = [
        [Matcher(MatchType.EQ, "job", "api"), Matcher(MatchType.EQ, "instance", "host-7"),
         Matcher(MatchType.EQ, "path", "/p3")],
        [Matcher(MatchType.EQ, "job", "api"), Matcher(MatchType.EQ, "n", one)],
        [Matcher(MatchType.RE, "job", "api|db"), Matcher(MatchType.EQ, "instance", "host-9"),
         Matcher(MatchType.NEQ, "path", "/p2")],
        [Matcher(MatchType.EQ, "instance", "host-11"), Matcher(MatchType.NRE, "job", "a.*")],
        [Matcher(MatchType.EQ, "n", "17"), Matcher(MatchType.EQ, "job", "db")],
    ]
    with Block.open(meta.path) as block:
        for ms in selections:
            assert block.select_series(ms, MIN_T, MAX_T).tolist() == model.select(ms, MIN_T, MAX_T)
        assert len(block.select_series(selections[1], MIN_T, MAX_T)) == 1
    index = meta.path / "index"
    data = bytearray(index.read_bytes())
    with Block.open(meta.path) as block:
        postings = block._index._pair_offset[block._index.pair_id("job", "api")]
    data[postings + 8 + 4 * 1000] ^= 0x01  # a ref inside the job's list
    index.write_bytes(bytes(data))
    with Block.open(meta.path) as block, pytest.raises(CorruptionError, match="postings"):
        block.select_series(selections[1], MIN_T, MAX_T)


def test_selections_are_kept_with_their_labels_and_renewed_by_deletions(tmp_path):
    label_sets = [{"__name__": "up", "job": "api", "instance": f"host-{i}"} for i in range(200)]
    args = random_chunks(label_sets, 3)
    mint, maxt = block_range(args)
    meta = write_block(tmp_path, **args, mint=mint, maxt=maxt)
    few = [Matcher(MatchType.RE, "instance", "host-1.")]
    with Block.open(meta.path) as block:
        chosen = block.selection(few)
        assert block.selection(few) is chosen
        assert chosen.ids.tolist() == Model(args).select(few, MIN_T, MAX_T)
        assert block.select_series(few, MIN_T, MAX_T) is chosen.ids
        # Label sets over a copy of only their own strings, not the mapped index.
        labels = chosen.labels
        assert labels is not None and labels.n_symbols <= 2 + 2 + 2 + 10
        assert not np.shares_memory(labels.buf, block._index._buf)
        names = [bytes(labels.buf[o:o + n]).decode() for o, n in
                 zip(labels.sym_off.tolist(), labels.sym_len.tolist())]
        rebuilt = [{names[a]: names[b]
                    for a, b in zip(labels.lab_name[lo:hi], labels.lab_value[lo:hi])}
                   for lo, hi in itertools.pairwise(labels.lab_start.tolist())]
        assert rebuilt == block.series_labels(chosen.ids)
        assert block.selection([Matcher(MatchType.EQ, "job", "api")]).labels is None  # many
        gone = block.delete([Matcher(MatchType.EQ, "instance", "host-12")], MIN_T, MAX_T)
        assert len(gone.selection(few).ids) == len(chosen.ids) - 1
        assert block.selection(few) is chosen  # a reader of the old value keeps its answers


def test_series_without_chunks_are_left_out(tmp_path):
    args = golden_chunks()
    keys_blob, keys_offsets = keys_of([s[0] for s in GOLDEN_SERIES] + [{"only": "here"}])
    args.update(keys_blob=keys_blob, keys_offsets=keys_offsets)
    meta = write_block(tmp_path, **args, mint=BASE, maxt=1_700_005_985_001)
    assert (meta.path / "index").read_bytes() == GOLDEN_INDEX
    with Block.open(meta.path) as block:
        assert block.label_values("only") == [] and block.n_series == 4


def test_empty_block(tmp_path):
    empty = np.empty(0, np.int64)
    meta = write_block(tmp_path, keys_blob=np.empty(0, np.uint8), keys_offsets=np.zeros(1),
                       chunk_series=empty, chunk_mint=empty, chunk_maxt=empty,
                       chunk_encoding=empty, chunk_blob=np.empty(0, np.uint8),
                       chunk_offsets=np.zeros(1), mint=0, maxt=7_200_000, level=2,
                       sources=[GOLDEN_ULID])
    assert (meta.num_series, meta.num_chunks, meta.num_samples) == (0, 0, 0)
    with Block.open(meta.path) as block:
        assert block.meta.sources == (GOLDEN_ULID,) and block.meta.level == 2
        assert block.select_series([], MIN_T, MAX_T).tolist() == []
        assert block.label_names() == [] and block.label_values("a") == []
        assert block.chunks(np.empty(0, np.int64), MIN_T, MAX_T).n_chunks == 0


def _bad(args: dict, **changes) -> dict:
    return {**args, **changes}


@pytest.mark.parametrize("change", [
    "duplicate series", "unsorted names", "empty value", "no labels", "missing separator",
    "overlapping chunks", "chunk before block", "chunk at block end", "unknown series",
    "short chunk", "chunk arrays disagree", "bad encoding", "bad source",
])
def test_writer_rejects_bad_input(tmp_path, change):
    args = golden_chunks()
    label_sets = [s[0] for s in GOLDEN_SERIES]
    mint, maxt = BASE, 1_700_005_985_001
    extra: dict = {}
    if change == "duplicate series":
        keys_blob, keys_offsets = keys_of(label_sets[:3] + label_sets[:1])
        args.update(keys_blob=keys_blob, keys_offsets=keys_offsets)
    elif change in ("unsorted names", "empty value", "no labels", "missing separator"):
        key = {"unsorted names": b"job\xffa\xff__name__\xffup\xff", "empty value": b"a\xff\xff",
               "no labels": b"", "missing separator": b"a\xff1"}[change]
        keys_blob, keys_offsets = keys_of(label_sets[:3])
        blob = keys_blob.tobytes() + key
        args.update(keys_blob=np.frombuffer(blob, np.uint8),
                    keys_offsets=np.append(keys_offsets, len(blob)))
    elif change == "overlapping chunks":
        args["chunk_mint"] = args["chunk_mint"].copy()
        args["chunk_mint"][1] = args["chunk_maxt"][0]
    elif change == "chunk before block":
        mint += 1
    elif change == "chunk at block end":
        maxt -= 1
    elif change == "unknown series":
        args["chunk_series"] = args["chunk_series"] + 1
    elif change == "short chunk":
        args["chunk_offsets"] = np.array([0, 1, 2, 3, 4, 5, 6])
    elif change == "chunk arrays disagree":
        args["chunk_mint"] = args["chunk_mint"][:-1]
    elif change == "bad encoding":
        args["chunk_encoding"] = np.full(6, 256)
    elif change == "bad source":
        extra["sources"] = ["not-a-ulid"]
    with pytest.raises(ValueError):
        write_block(tmp_path, **args, mint=mint, maxt=maxt, **extra)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- hostile files


def read_everything(path: Path):
    """Everything a block answers, as plain values; opens and closes the block."""
    with Block.open(path) as block:
        ids = block.select_series([], MIN_T, MAX_T)
        names = block.label_names()
        chunks = block.chunks(ids, MIN_T, MAX_T)
        values = {n: block.label_values(n) for n in names}
        return (block.meta.num_series, ids.tolist(), block.series_labels(ids), values,
                [block.select_series([Matcher(MatchType.EQ, n, v)], MIN_T, MAX_T).tolist()
                 for n in names for v in values[n]], block.label_names(ids),
                block.select_series([Matcher(MatchType.RE, "job", "a.*")], BASE, BASE + 1).tolist(),
                chunk_rows(chunks), chunks.encoding.tolist())


def flipped_reads(path: Path, file: str) -> set[int]:
    """Flip each byte of ``file`` in turn; every read must fail with CorruptionError or
    give the original answers (the byte was padding or in a part we do not read).
    Returns the positions whose flip was caught."""
    target = path / file
    original = target.read_bytes()
    want = read_everything(path)
    caught = set()
    for i in range(len(original)):
        damaged = bytearray(original)
        damaged[i] ^= 0x5A
        target.write_bytes(bytes(damaged))
        try:
            got = read_everything(path)
        except CorruptionError as e:
            assert str(target) in str(e) or str(path) in str(e)
            caught.add(i)
            continue
        assert got == want, f"flipping byte {i} of {file} changed the answers silently"
    target.write_bytes(original)
    return caught


def unread_index_bytes(index: bytes) -> set[int]:
    """Bytes of an index that readers never look at: the label indices and label offset
    table (kept for old readers) and the zero padding before series entries and
    postings."""
    _, series, label_indices, label_table, postings, postings_table = \
        struct.unpack(">6Q", index[-52:-4])
    unread = set(range(label_indices, postings)) | set(range(label_table, postings_table))
    ends = [o + 1 + index[o] + 4 for o in series_offsets(index)]
    for end, start in zip([series, *ends], [*series_offsets(index), label_indices]):
        unread |= set(range(end, start))
    return unread


def test_every_flipped_index_byte_is_caught_or_harmless(tmp_path):
    path = write_golden(tmp_path)
    caught = flipped_reads(path, "index")
    assert caught == set(range(len(GOLDEN_INDEX))) - unread_index_bytes(GOLDEN_INDEX)


def test_every_flipped_segment_byte_is_caught_or_harmless(tmp_path):
    path = write_golden(tmp_path)
    caught = flipped_reads(path, "chunks/000001")
    assert caught == set(range(len(GOLDEN_SEGMENT))) - {5, 6, 7}  # the header's zero bytes


def _few_samples(path: Path, mint: int, maxt: int) -> list | None:
    """``Block.few_samples`` of every series, as plain values (values by their bits)."""
    with Block.open(path) as block:
        got = block.few_samples(block.selection([]), mint, maxt)
    if got is None:
        return None
    series, starts, ts, vs = got
    return [series.tolist(), starts.tolist(), ts.tolist(), vs.view(np.uint64).tolist()]


def _chunk_samples(path: Path, mint: int, maxt: int) -> list:
    """What ``_few_samples`` must give, read through ``chunks`` and the codec."""
    with Block.open(path) as block:
        chunks = block.chunks(block.select_series([], MIN_T, MAX_T), mint, maxt)
    ts, vs, starts = decode_xor_many(chunks.blob, chunks.offsets)
    inside = (ts >= mint) & (ts <= maxt)
    kept = np.add.reduceat(inside, starts[:-1]) if len(ts) else np.zeros(0, np.int64)
    return [chunks.series.tolist(), np.concatenate(([0], np.cumsum(kept))).tolist(),
            ts[inside].tolist(), vs[inside].view(np.uint64).tolist()]


def test_few_samples_agree_with_chunks_or_step_aside(tmp_path):
    path = write_golden(tmp_path)
    windows = [(MIN_T, MAX_T), (BASE + 1_000_000, BASE + 3_000_000), (BASE - 10, BASE)]
    want = {w: _chunk_samples(path, *w) for w in windows}
    assert {w: _few_samples(path, *w) for w in windows} == want
    # A damaged record is left to ``chunks``, which names the damage, never read wrong.
    target = path / "chunks" / "000001"
    for i in range(block_chunks.SEGMENT_HEADER_SIZE, len(GOLDEN_SEGMENT)):
        damaged = bytearray(GOLDEN_SEGMENT)
        damaged[i] ^= 0x5A
        target.write_bytes(bytes(damaged))
        assert _few_samples(path, MIN_T, MAX_T) in (None, want[(MIN_T, MAX_T)])


def test_small_reads_leave_pages_mapped_up_to_a_bound(tmp_path, monkeypatch):
    dropped = []
    monkeypatch.setattr(block_chunks, "drop_pages", lambda mm, a, b: dropped.append((a, b)))
    per_batch = block_chunks._SMALL_READS_HELD // block_chunks._FAULT_AROUND
    with Block.open(write_golden(tmp_path)) as block:
        selection = block.selection([])
        for _ in range(per_batch - 1):
            block.few_samples(selection, MIN_T, MAX_T)
        assert dropped == []  # the same pages, read again and again, stay mapped
        block.few_samples(selection, MIN_T, MAX_T)
        assert len(dropped) == per_batch  # then every span held is dropped at once
        assert block._segments._held == []


def test_flipped_meta_or_tombstones_bytes_never_crash(tmp_path):
    path = write_golden(tmp_path)
    assert flipped_reads(path, "tombstones") == set(range(len(GOLDEN_TOMBSTONES)))
    meta = path / "meta.json"
    for i in range(len(GOLDEN_META)):
        damaged = bytearray(GOLDEN_META.encode())
        damaged[i] ^= 0x5A
        meta.write_bytes(bytes(damaged))
        with contextlib.suppress(CorruptionError):  # a changed digit is not detectable
            Block.open(path).close()


@pytest.mark.parametrize("file", ["index", "chunks/000001", "meta.json", "tombstones"])
def test_truncated_files_are_corruption(tmp_path, file):
    path = write_golden(tmp_path)
    original = (path / file).read_bytes()
    for size in range(0, len(original), 3 if file != "index" else 5):
        (path / file).write_bytes(original[:size])
        with pytest.raises(CorruptionError):
            read_everything(path)


@pytest.mark.parametrize("missing", ["meta.json", "index", "chunks"])
def test_missing_files_are_corruption(tmp_path, missing):
    path = write_golden(tmp_path)
    target = path / missing
    if target.is_dir():
        (target / "000001").unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(CorruptionError, match=missing):
        Block.open(path)


def test_half_written_block_is_corruption(tmp_path):
    args = golden_chunks()
    meta = write_block(tmp_path, **args, mint=BASE, maxt=1_700_005_985_001)
    half = tmp_path / (new_ulid() + TMP_SUFFIX)
    (half / "chunks").mkdir(parents=True)
    for name in ("index", "tombstones", "chunks/000001"):
        (half / name).write_bytes((meta.path / name).read_bytes())
    with pytest.raises(CorruptionError, match=r"meta\.json"):
        Block.open(half)


def test_unexpected_files_in_chunks_dir(tmp_path):
    path = write_golden(tmp_path)
    (path / "chunks" / "000002").write_bytes(b"\x85\xbd")
    with pytest.raises(CorruptionError, match="000002"):
        Block.open(path)
    (path / "chunks" / "000002").write_bytes(bytes.fromhex("85bd40dd02000000"))
    with pytest.raises(CorruptionError, match="version"):
        Block.open(path)
    (path / "chunks" / "000002").unlink()
    (path / "chunks" / "notes.txt").write_text("x")
    with pytest.raises(CorruptionError, match=r"notes\.txt"):
        Block.open(path)


def rewrite_entry(index: bytes, offset: int, body: bytes) -> bytes:
    """``index`` with the series entry at ``offset`` replaced by ``body`` (same length),
    its checksum recomputed, so only structural checks can catch it."""
    size = index[offset]  # the golden entries are shorter than 128 bytes
    assert len(body) == size
    crc = kernels.crc32c(np.frombuffer(body, np.uint8), 0, len(body))
    return (index[:offset + 1] + body + struct.pack(">I", crc)
            + index[offset + 1 + size + 4:])


def series_offsets(index: bytes) -> list[int]:
    """Offsets of the series entries, from the list of all series."""
    toc = struct.unpack(">6Q", index[-52:-4])
    table = toc[5]
    # First entry of the postings offset table: 02 00 00 <uvarint offset>.
    at = table + 8 + 3
    offset, shift = 0, 0
    while True:
        b = index[at]
        offset |= (b & 0x7F) << shift
        at += 1
        shift += 7
        if b < 0x80:
            break
    count = struct.unpack(">I", index[offset + 4:offset + 8])[0]
    return [16 * r for r in struct.unpack(f">{count}I", index[offset + 8:offset + 8 + 4 * count])]


@pytest.mark.parametrize("damage", ["symbol ref", "label count", "chunk count",
                                    "chunk segment", "chunk offset"])
def test_structural_damage_under_valid_checksums(tmp_path, damage):
    expected = {"symbol ref": "index: offset 226: series: symbol reference out of range",
                "label count": "index: offset 225: series: length or count",
                "chunk count": "index: offset 230: series: length or count",
                "chunk segment": "segment 2, which does not exist",
                "chunk offset": "000001: offset 16383: chunk runs past the end"}
    path = write_golden(tmp_path)
    offset = series_offsets(GOLDEN_INDEX)[3]  # up{job="api"}: one label pair per byte
    size = GOLDEN_INDEX[offset]
    body = bytearray(GOLDEN_INDEX[offset + 1:offset + 1 + size])
    # body: 02 (labels) 04 0d 0a 06 (symbol refs) 01 (chunks) <6-byte varint mint>
    # 00 (maxt - mint) fa 05 (chunk ref 762)
    if damage == "symbol ref":
        body[2] = 0x7F
    elif damage == "label count":
        body[0] = 0x7F
    elif damage == "chunk count":
        body[5] = 0x7F
    elif damage == "chunk segment":
        # mint 0 as a 3-byte varint, then ref 1 << 32: offset 0 of segment 000002
        body[6:] = bytes([0x80, 0x80, 0x00, 0x00, 0x80, 0x80, 0x80, 0x80, 0x10])
    elif damage == "chunk offset":
        body[-2:] = bytes([0xFF, 0x7F])  # offset 16383, past the segment's end
    (path / "index").write_bytes(rewrite_entry(GOLDEN_INDEX, offset, bytes(body)))
    with pytest.raises(CorruptionError, match=expected[damage]):
        read_everything(path)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=300), keep_header=st.booleans(), keep_toc=st.booleans())
def test_garbage_index_is_corruption(tmp_path, garbage, keep_header, keep_toc):
    path = tmp_path / GOLDEN_ULID
    if not path.exists():
        write_golden(tmp_path)
    data = (GOLDEN_INDEX[:5] if keep_header else b"") + garbage
    if keep_toc:  # a valid table of contents pointing into the garbage
        toc = struct.pack(">6Q", *(min(5 + 8 * i, len(data)) for i in range(6)))
        data += toc + struct.pack(">I", kernels.crc32c(np.frombuffer(toc, np.uint8), 0, 48))
    (path / "index").write_bytes(data)
    with pytest.raises(CorruptionError):
        read_everything(path)


def test_crc32c_matches_reference():
    import crc32c

    rng = np.random.default_rng(3)
    for size in (0, 1, 7, 8, 9, 100, 4099):
        data = rng.integers(0, 256, size, dtype=np.uint8)
        assert kernels.crc32c(data, 0, size) == crc32c.crc32c(data.tobytes())
    assert kernels.crc32c(np.frombuffer(b"123456789", np.uint8), 0, 9) == 0xE3069283


def test_meta_json_is_validated(tmp_path):
    path = write_golden(tmp_path)
    doc = json.loads(GOLDEN_META)
    for change in ({"version": 2}, {"ulid": "nope"}, {"minTime": "1"}, {"maxTime": 1},
                   {"compaction": {"level": 0}}, {"stats": {"numSeries": 5}}):
        (path / "meta.json").write_text(json.dumps({**doc, **change}))
        with pytest.raises(CorruptionError):
            Block.open(path)
