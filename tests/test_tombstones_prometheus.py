"""Tombstones files against a real Prometheus 2.42: it honours the deletions we write
into a block, and we honour the ones its delete_series writes.

Needs ``prometheus`` and ``promtool`` (Debian package ``prometheus``); skipped without
them, except under CI, as in ``tests/test_block_prometheus.py``.
"""

from __future__ import annotations

import subprocess
import time
import urllib.parse

import numpy as np
import pytest

from storage import chunkenc
from storage.block import Block, write_block
from storage.matchers import Matcher, MatchType
from storage.tombstones import read_file
from tests.helpers import http_request
from tests.test_block_prometheus import (
    WAIT_S,
    Prometheus,
    binary,
    block_args,
    labels_key,
    sample_series,
)

pytestmark = pytest.mark.slow

MIN_T, MAX_T = -(1 << 63), (1 << 63) - 1


def test_prometheus_honours_our_tombstones(tmp_path):
    rng = np.random.default_rng(3)
    start_ms = (int(time.time()) - 4 * 3600) // 15 * 15 * 1000
    label_sets, ts, values = sample_series(start_ms, rng)
    data = tmp_path / "data"
    data.mkdir()
    meta = write_block(data, **block_args(label_sets, ts, values), mint=int(ts[0]),
                       maxt=int(ts[-1]) + 1)
    gone = (int(ts[50]), int(ts[200]))
    with Block.open(meta.path) as block:
        block = block.delete([Matcher(MatchType.EQ, "instance", "host-3")], *gone)
        block = block.delete([Matcher(MatchType.EQ, "zone", "z")], MIN_T, MAX_T)
        assert len(block.tombstones) == 2

    prometheus = Prometheus(data, tmp_path)
    try:
        prometheus.wait_ready()
        end_s = ts[-1] / 1000
        raw = prometheus.api("query", query='{__name__=~"block_test_.+"}[2h]', time=str(end_s))
        got = {labels_key(r["metric"]): [round(t * 1000) for t, _ in r["values"]]
               for r in raw["result"]}
        want = {}
        for labels in label_sets:
            keep = ts.tolist()
            if labels.get("instance") == "host-3":
                keep = [t for t in keep if not gone[0] <= t <= gone[1]]
            if labels.get("zone") == "z":
                continue
            want[labels_key(labels)] = keep
        assert got == want
    finally:
        prometheus.stop()


def test_we_honour_tombstones_prometheus_writes(tmp_path):
    rng = np.random.default_rng(4)
    start_ms = 1_700_000_000_000 // 7_200_000 * 7_200_000
    label_sets, ts, values = sample_series(start_ms, rng)
    lines = []
    for labels, vs in zip(label_sets, values):
        rest = ",".join(f'{n}="{v}"' for n, v in sorted(labels.items()) if n != "__name__")
        lines += [f"{labels['__name__']}{{{rest}}} {float(v)!r} {t / 1000:.3f}"
                  for t, v in zip(ts, vs)]
    (tmp_path / "in.om").write_text("\n".join(lines) + "\n# EOF\n")
    data = tmp_path / "data"
    made = subprocess.run([binary("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                           str(tmp_path / "in.om"), str(data)],
                          capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert made.returncode == 0, made.stderr
    (path,) = data.iterdir()

    gone = (int(ts[10]), int(ts[100]))
    prometheus = Prometheus(data, tmp_path, ["--web.enable-admin-api"])
    try:
        prometheus.wait_ready()
        query = urllib.parse.urlencode({"match[]": 'block_test_a{instance=~"host-[12]"}',
                                        "start": str(gone[0] / 1000),
                                        "end": str(gone[1] / 1000)})
        resp = http_request(prometheus.port, "POST",
                            f"/api/v1/admin/tsdb/delete_series?{query}", timeout=WAIT_S)
        assert resp.status == 204, resp.text
    finally:
        prometheus.stop()

    assert len(read_file(path)) == 2
    with Block.open(path) as block:
        assert block.meta.num_tombstones == 2
        ids = block.select_series([], MIN_T, MAX_T)
        labels = block.series_labels(ids)
        chunks = block.chunks(ids, MIN_T, MAX_T)
        got_ts, _, starts = chunkenc.decode_many(chunks.encoding, chunks.blob, chunks.offsets)
        owner = np.repeat(chunks.series, np.diff(starts))
        for i, want in enumerate(labels):
            mine = got_ts[owner == i].tolist()
            if want.get("instance") in ("host-1", "host-2"):
                assert mine == [t for t in ts.tolist() if not gone[0] <= t <= gone[1]]
            else:
                assert mine == ts.tolist()
