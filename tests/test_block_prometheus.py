"""Blocks against a real Prometheus 2.42: it serves a block we wrote, and we read the
blocks its ``promtool`` writes.

Needs ``prometheus`` and ``promtool`` (Debian package ``prometheus``); skipped without
them, except under CI (``CI=true``), where their absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from storage.block import Block, write_block
from storage.matchers import Matcher, MatchType
from storage.xor import ENCODING_XOR, decode_xor_many, encode_xor_many
from tests.helpers import free_port, http_request

pytestmark = pytest.mark.slow

WAIT_S = 30  # bound on Prometheus starting, stopping and on each tool run
STEP_MS = 15_000
MIN_T, MAX_T = -(1 << 63), (1 << 63) - 1


def binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK)
                                  else None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (.ci/run installs the Debian package)")
        pytest.skip(f"{name} is not installed")
    return path


class Prometheus:
    """A Prometheus server over the storage directory ``data``, on a free loopback port,
    scraping nothing."""

    def __init__(self, data: Path, workdir: Path, flags: Sequence[str] = ()) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1h\n")
        self.log_path = workdir / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [binary("prometheus"), f"--config.file={config}",
                 f"--storage.tsdb.path={data}", "--storage.tsdb.retention.time=100y",
                 f"--web.listen-address=127.0.0.1:{self.port}", *flags],
                stdout=log, stderr=subprocess.STDOUT, cwd=workdir)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log()}"
            try:
                if http_request(self.port, "GET", "/-/ready", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready within {WAIT_S}s:\n{self.log()}")

    def api(self, endpoint: str, **params: str) -> list:
        resp = http_request(self.port, "GET", f"/api/v1/{endpoint}?"
                            + urllib.parse.urlencode(params), timeout=WAIT_S)
        assert resp.status == 200, resp.text
        return resp.json()["data"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT_S)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def sample_series(start_ms: int, rng: np.random.Generator):
    """Label sets and 15 s samples (360 of them, 1.5 h) of a few series."""
    label_sets = [{"__name__": "block_test_a", "instance": f"host-{i}", "job": "node"}
                  for i in range(8)]
    label_sets += [{"__name__": "block_test_b", "path": "/ü/日本", "job": "api"},
                   {"__name__": "block_test_b", "path": "/", "job": "api", "zone": "z"}]
    ts = start_ms + STEP_MS * np.arange(360)
    values = [np.cumsum(rng.integers(0, 10, len(ts))).astype(np.float64) for _ in label_sets]
    values[-1] = rng.normal(size=len(ts)).round(3)
    return label_sets, ts, values


def block_args(label_sets, ts, values) -> dict:
    """write_block arguments with chunks of 120 samples."""
    parts = [b"".join(n.encode() + b"\xff" + v.encode() + b"\xff" for n, v in sorted(ls.items()))
             for ls in label_sets]
    keys_offsets = np.zeros(len(parts) + 1, np.int64)
    keys_offsets[1:] = np.cumsum([len(p) for p in parts])
    per_series = len(ts) // 120
    all_ts = np.tile(ts, len(label_sets))
    bounds = np.arange(0, len(all_ts) + 1, 120)
    blob, offsets = encode_xor_many(all_ts, np.concatenate(values), bounds)
    return dict(keys_blob=np.frombuffer(b"".join(parts), np.uint8), keys_offsets=keys_offsets,
                chunk_series=np.repeat(np.arange(len(label_sets)), per_series),
                chunk_mint=all_ts[bounds[:-1]], chunk_maxt=all_ts[bounds[1:] - 1],
                chunk_encoding=np.full(len(bounds) - 1, ENCODING_XOR), chunk_blob=blob,
                chunk_offsets=offsets)


def labels_key(labels: dict[str, str]) -> tuple:
    return tuple(sorted(labels.items()))


def test_prometheus_serves_our_block(tmp_path):
    rng = np.random.default_rng(1)
    # Within the last day, on the 15 s grid, so that query_range steps hit samples.
    start_ms = (int(time.time()) - 4 * 3600) // 15 * 15 * 1000
    label_sets, ts, values = sample_series(start_ms, rng)
    data = tmp_path / "data"
    data.mkdir()
    meta = write_block(data, **block_args(label_sets, ts, values), mint=int(ts[0]),
                       maxt=int(ts[-1]) + 1, segment_size=4096)
    assert len(os.listdir(meta.path / "chunks")) > 1

    analyze = subprocess.run([binary("promtool"), "tsdb", "analyze", str(data), meta.ulid],
                             capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert analyze.returncode == 0, analyze.stderr
    assert f"Series: {len(label_sets)}" in analyze.stdout

    prometheus = Prometheus(data, tmp_path)
    try:
        prometheus.wait_ready()
        start_s, end_s = ts[0] / 1000, ts[-1] / 1000
        series = prometheus.api("series", **{"match[]": '{__name__=~"block_test_.+"}'},
                                start=str(start_s), end=str(end_s))
        assert sorted(map(labels_key, series)) == sorted(map(labels_key, label_sets))

        raw = prometheus.api("query", query='{__name__=~"block_test_.+"}[2h]', time=str(end_s))
        assert raw["resultType"] == "matrix"
        got = {labels_key(r["metric"]): r["values"] for r in raw["result"]}
        assert len(got) == len(label_sets)
        for labels, vs in zip(label_sets, values):
            points = got[labels_key(labels)]
            assert [round(t * 1000) for t, _ in points] == ts.tolist()
            assert [float(v) for _, v in points] == vs.tolist()

        summed = prometheus.api("query_range", query="sum(block_test_a)", start=str(start_s),
                                end=str(end_s), step="15")
        (row,) = summed["result"]
        expected = np.sum(values[:8], axis=0)
        assert [round(t * 1000) for t, _ in row["values"]] == ts.tolist()
        assert [float(v) for _, v in row["values"]] == pytest.approx(expected.tolist())
    finally:
        prometheus.stop()


def test_we_read_blocks_promtool_writes(tmp_path):
    rng = np.random.default_rng(2)
    start_ms = 1_700_000_000_000 // 7_200_000 * 7_200_000  # one 2 h block
    label_sets, ts, values = sample_series(start_ms, rng)
    stamps = ts + rng.integers(0, 999, len(ts))  # millisecond timestamps
    lines = []
    for labels, vs in zip(label_sets, values):
        name = labels["__name__"]
        rest = ",".join(f'{n}="{v}"' for n, v in sorted(labels.items()) if n != "__name__")
        lines += [f"{name}{{{rest}}} {float(v)!r} {t / 1000:.3f}" for t, v in zip(stamps, vs)]
    (tmp_path / "in.om").write_text("\n".join(lines) + "\n# EOF\n")
    out = tmp_path / "blocks"
    made = subprocess.run([binary("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                           str(tmp_path / "in.om"), str(out)],
                          capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert made.returncode == 0, made.stderr
    (path,) = out.iterdir()

    with Block.open(path) as block:
        assert block.meta.num_series == len(label_sets)
        assert block.meta.num_samples == len(label_sets) * len(ts)
        assert (block.meta.min_time, block.meta.max_time) == (stamps[0], stamps[-1] + 1)
        ids = block.select_series([], MIN_T, MAX_T)
        labels = block.series_labels(ids)
        assert sorted(map(labels_key, labels)) == sorted(map(labels_key, label_sets))
        assert block.label_values("path") == ["/", "/ü/日本"]
        chunks = block.chunks(ids, MIN_T, MAX_T)
        got_ts, got_vs, starts = decode_xor_many(chunks.blob, chunks.offsets)
        per_sample_series = np.repeat(chunks.series, np.diff(starts))
        for i, want in enumerate(label_sets):
            pos = labels.index(want)
            mine = per_sample_series == pos
            assert got_ts[mine].tolist() == stamps.tolist()
            assert got_vs[mine].tolist() == values[i].tolist()

        picked = block.select_series([Matcher(MatchType.RE, "instance", "host-[1-3]")],
                                     int(stamps[100]), int(stamps[100]))
        assert [labels[i]["instance"] for i in picked] == ["host-1", "host-2", "host-3"]
        window = block.chunks(picked, int(stamps[100]), int(stamps[100]))
        assert np.all((window.mint <= stamps[100]) & (window.maxt >= stamps[100]))
        assert window.series.tolist() == [0, 1, 2]
