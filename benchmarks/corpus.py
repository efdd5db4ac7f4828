"""Real-world-shaped series for the storage benchmark: captured, saved, stretched.

A :class:`Capture` is what a scrape produced: every series' labels, timestamps and
values. :func:`capture_real` runs the Debian ``prometheus-node-exporter`` and a real
Prometheus scraping it (and itself) on 127.0.0.1 at a short interval for a bounded
time, then pulls every sample back out with remote read (``STREAMED_XOR_CHUNKS``,
decoded by ``storage.xor``). :func:`capture_synthetic` draws the same kind of data from
the seeded ``node`` workload of ``benchmarks.workloads``. Either is saved as a compact
``.npz`` (:meth:`Capture.save`).

A :class:`StretchedCorpus` replays a capture at a 15 s interval for as many scrapes as
wanted, optionally for a fleet of hosts: counters keep increasing by increments drawn
from those they were seen to make, other series wander at random back and forth through
the values they were seen to take, so each keeps its jitter, its resolution and its
special values. It has
the interface ``benchmarks.loadgen.build_plan`` expects of a workload, so the load
generator sends it like any other.

CLI: ``python -m benchmarks.corpus real|synthetic --out FILE.npz`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import snappy  # type: ignore[import-untyped]

from benchmarks._encode import Segments, concat_rows, encode_label
from benchmarks.peers import PROMETHEUS, Target, running
from benchmarks.workloads import make_workload
from promstore.remote.pb import remote_pb2, types_pb2
from promstore.remote.read_stream import decode_responses
from storage.errors import BadDataError, CorruptionError
from storage.xor import decode_xor_many

__all__ = [
    "NODE_EXPORTER",
    "Capture",
    "StretchedCorpus",
    "capture_real",
    "capture_synthetic",
    "main",
    "read_request",
    "remote_read",
]

_INSTANCE = "instance"
# Counters and the cumulative series of histograms and summaries, by naming convention.
_CUMULATIVE_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
_MAX_DECIMALS = 9  # counters printed with more decimal places are summed as floats
_READ_TIMEOUT_S = 120.0
_NPZ_FORMAT = 1


@dataclass(frozen=True)
class Capture:
    """Samples of many series: labels, timestamps and values, series after series.

    ``labels`` row ``i`` holds series ``i``'s labels as protobuf ``TimeSeries.labels``
    entries sorted by name (what a remote-write encoder needs as is), and bytes
    ``instance_start[i]:instance_end[i]`` of that row are its ``instance`` entry.
    Series ``i``'s samples are ``sample_starts[i]:sample_starts[i+1]`` of
    ``timestamps`` (int64 ms, increasing) and ``values`` (float64, any bits).
    """

    labels: Segments
    instance_start: np.ndarray
    instance_end: np.ndarray
    metric_names: np.ndarray  # str
    sample_starts: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray
    source: str

    @property
    def n_series(self) -> int:
        return len(self.sample_starts) - 1

    @property
    def n_samples(self) -> int:
        return int(self.sample_starts[-1])

    def save(self, path: str | Path) -> None:
        """Write the capture as a compressed ``.npz`` (no pickled objects)."""
        rows = concat_rows([self.labels])
        np.savez_compressed(
            path,
            format=np.int64(_NPZ_FORMAT),
            label_bytes=rows.source,
            label_starts=np.append(rows.starts, len(rows.source)),
            instance_start=self.instance_start,
            instance_end=self.instance_end,
            metric_names=self.metric_names.astype(str),
            sample_starts=self.sample_starts,
            timestamps=self.timestamps,
            values=self.values,
            source=np.array(self.source),
        )

    @classmethod
    def load(cls, path: str | Path) -> Capture:
        """Read a capture written by :meth:`save`, checking that its arrays fit together."""
        with np.load(path, allow_pickle=False) as f:
            if int(f["format"]) != _NPZ_FORMAT:
                raise ValueError(f"{path}: capture format {int(f['format'])}, expected 1")
            label_starts = f["label_starts"].astype(np.int64)
            capture = cls(
                labels=Segments(
                    f["label_bytes"].astype(np.uint8),
                    label_starts[:-1],
                    np.diff(label_starts),
                ),
                instance_start=f["instance_start"].astype(np.int64),
                instance_end=f["instance_end"].astype(np.int64),
                metric_names=f["metric_names"],
                sample_starts=f["sample_starts"].astype(np.int64),
                timestamps=f["timestamps"].astype(np.int64),
                values=f["values"].astype(np.float64),
                source=str(f["source"]),
            )
        capture.check()
        return capture

    def check(self) -> None:
        """Raise ``ValueError`` naming the first array that does not fit the others."""
        n = self.n_series
        lab = self.labels
        problems = [
            (n < 1, "no series"),
            (self.sample_starts[0] != 0 or np.any(np.diff(self.sample_starts) < 1),
             "sample_starts must start at 0 and give every series a sample"),
            (len(self.timestamps) != self.n_samples or len(self.values) != self.n_samples,
             "timestamps and values must hold sample_starts[-1] samples"),
            (any(len(a) != n for a in (lab.starts, lab.lengths, self.instance_start,
                                       self.instance_end, self.metric_names)),
             "labels, instance and metric_names need one entry per series"),
            (np.any(lab.lengths < 0) or np.any(lab.starts < 0)
             or np.any(lab.starts + lab.lengths > len(lab.source)),
             "label rows must lie inside label_bytes"),
            (np.any(self.instance_start < 0) or np.any(self.instance_end < self.instance_start)
             or np.any(self.instance_end > lab.lengths),
             "instance entries must lie inside their label rows"),
        ]
        for bad, message in problems:
            if bad:
                raise ValueError(f"bad capture: {message}")
        inside = np.ones(self.n_samples, bool)
        inside[self.sample_starts[1:-1]] = False
        if np.any(np.diff(self.timestamps)[inside[1:]] <= 0):
            raise ValueError("bad capture: timestamps must increase within every series")

    def describe(self) -> dict[str, Any]:
        """Plain facts for reports."""
        counts = np.diff(self.sample_starts)
        return {
            "source": self.source,
            "series": self.n_series,
            "samples": self.n_samples,
            "samples_per_series": {"min": int(counts.min()), "max": int(counts.max())},
            "metric_names": len(np.unique(self.metric_names)),
            "time_range_ms": [int(self.timestamps.min()), int(self.timestamps.max())],
        }


# -- capturing from a real Prometheus ---------------------------------------------------


class _NodeExporter(Target):
    name = "node-exporter"
    ready_path = "/metrics"
    binary = "/usr/bin/prometheus-node-exporter"

    def available(self) -> bool:
        return Path(self.binary).is_file()

    def command(self, workdir: Path, data_dir: Path, port: int) -> list[str]:
        return [self.binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]

    def version(self) -> str:
        try:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                                 timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        first = (out.stdout or out.stderr).splitlines()
        return first[0] if first else "unknown"


NODE_EXPORTER: Target = _NodeExporter()
"""The Debian ``prometheus-node-exporter``, run on a loopback port."""


class _Scraper(Target):
    """A Prometheus that scrapes node_exporter and itself every ``interval_s``."""

    name = "prometheus-scraper"
    ready_path = "/-/ready"
    binary = "/usr/bin/prometheus"

    def __init__(self, node_port: int, interval_s: float) -> None:
        self.node_port = node_port
        self.interval_s = interval_s

    def available(self) -> bool:
        return PROMETHEUS.available()

    def version(self) -> str:
        return PROMETHEUS.version()

    def command(self, workdir: Path, data_dir: Path, port: int) -> list[str]:
        interval = f"{round(self.interval_s * 1000)}ms"
        config = workdir / "scrape.yml"
        config.write_text(
            f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
            "scrape_configs:\n"
            f"  - job_name: node\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{self.node_port}']\n"
            f"  - job_name: prometheus\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{port}']\n"
        )
        return [self.binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]


def read_request(mint: int, maxt: int, *, streamed: bool, name_regex: str = ".+") -> bytes:
    """A snappy-compressed remote-read request for series whose name matches the regex.

    ``streamed`` asks for ``STREAMED_XOR_CHUNKS``, otherwise for ``SAMPLES``.
    """
    query = remote_pb2.Query(
        start_timestamp_ms=mint,
        end_timestamp_ms=maxt,
        matchers=[types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="__name__",
                                         value=name_regex)],
    )
    kind = (remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS if streamed
            else remote_pb2.ReadRequest.SAMPLES)
    request = remote_pb2.ReadRequest(queries=[query], accepted_response_types=[kind])
    return bytes(snappy.compress(request.SerializeToString()))


def remote_read(base_url: str, body: bytes, *, timeout_s: float = _READ_TIMEOUT_S) -> bytes:
    """POST a remote-read request body to ``base_url`` and return the whole response body.

    Raises ``urllib.error.URLError`` (``HTTPError`` for a non-2xx answer) or ``OSError``.
    """
    request = urllib.request.Request(
        base_url + "/api/v1/read",
        data=body,
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                 "X-Prometheus-Remote-Read-Version": "0.1.0"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:
        return bytes(resp.read())


def capture_real(duration_s: float = 60.0, interval_s: float = 1.0, *,
                 ready_timeout_s: float = 60.0) -> Capture:
    """Scrape a local node_exporter (and the scraping Prometheus itself) for ``duration_s``
    every ``interval_s``, then read every sample back with remote read.

    Raises ``RuntimeError`` when a binary is missing, a server does not come up or its
    answer cannot be read.
    """
    for target in (NODE_EXPORTER, PROMETHEUS):
        if not target.available():
            raise RuntimeError(f"{target.name} is not installed")
    with running(NODE_EXPORTER, ready_timeout_s=ready_timeout_s) as exporter:
        scraper = _Scraper(exporter.port, interval_s)
        with running(scraper, ready_timeout_s=ready_timeout_s) as prometheus:
            began = int(time.time() * 1000)
            time.sleep(duration_s)
            ended = int(time.time() * 1000)
            body = remote_read(prometheus.base_url,
                               read_request(began - 60_000, ended, streamed=True))
    source = f"{NODE_EXPORTER.version()}, Prometheus {PROMETHEUS.version()}, " \
             f"scraped every {interval_s:g} s for {duration_s:g} s"
    try:
        return _capture_from_stream(body, source)
    except (BadDataError, CorruptionError, ValueError) as exc:
        raise RuntimeError(f"the scraping Prometheus's remote-read answer: {exc}") from exc


def _capture_from_stream(body: bytes, source: str) -> Capture:
    """Turn a streamed remote-read response into a capture (one pass over its series)."""
    label_rows: list[bytes] = []
    instance_spans: list[tuple[int, int]] = []
    names: list[str] = []
    chunk_series: list[int] = []
    chunks: list[bytes] = []
    previous: list[tuple[str, str]] | None = None
    # Per series and per chunk, not per sample: this is capture, not a measured path.
    for response in decode_responses(body):
        for series in response.chunked_series:
            labels = [(label.name, label.value) for label in series.labels]
            if labels != previous:  # a series cut over two frames repeats its labels
                label_rows.append(_label_row(labels, instance_spans))
                names.append(dict(labels).get("__name__", ""))
                previous = labels
            for chunk in series.chunks:
                if chunk.type != types_pb2.Chunk.XOR:
                    continue
                chunk_series.append(len(label_rows) - 1)
                chunks.append(chunk.data)
    if not chunks:
        raise RuntimeError("remote read returned no samples")
    blob = np.frombuffer(b"".join(chunks), np.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chunks])]).astype(np.int64)
    timestamps, values, chunk_starts = decode_xor_many(blob, offsets)
    owner = np.array(chunk_series, np.int64)
    sample_owner = np.repeat(owner, np.diff(chunk_starts))
    sample_starts = np.searchsorted(sample_owner, np.arange(len(label_rows) + 1))
    spans = np.array(instance_spans, np.int64).reshape(-1, 2)
    capture = Capture(
        labels=_rows(label_rows),
        instance_start=spans[:, 0],
        instance_end=spans[:, 1],
        metric_names=np.array(names, dtype=str),
        sample_starts=sample_starts.astype(np.int64),
        timestamps=timestamps,
        values=values,
        source=source,
    )
    capture.check()
    return capture


def _label_row(labels: list[tuple[str, str]], spans: list[tuple[int, int]]) -> bytes:
    """Encode sorted labels as ``TimeSeries.labels`` entries; record where ``instance`` is."""
    row = b""
    span = None
    for name, value in sorted(labels):
        entry = encode_label(name, value)
        if name == _INSTANCE:
            span = (len(row), len(row) + len(entry))
        row += entry
    if span is None:
        raise RuntimeError(f"series without an instance label: {labels}")
    spans.append(span)
    return row


# -- synthetic ----------------------------------------------------------------------------


def capture_synthetic(*, hosts: int, hours: float, seed: int = 1, interval_s: float = 15.0,
                      end_ms: int | None = None) -> Capture:
    """``hours`` of the seeded ``node`` workload (node_exporter-like counters, gauges and
    histogram buckets) for ``hosts`` hosts, as a capture ending at ``end_ms`` (now)."""
    workload = make_workload("node", hosts=hosts, seed=seed, interval_s=interval_s)
    rounds = max(1, round(hours * 3_600_000 / workload.interval_ms))
    n = workload.n_series
    series = np.arange(n, dtype=np.int64)
    values = workload.stream(0, n).advance(rounds)  # (rounds, series)
    end = int(time.time() * 1000) if end_ms is None else end_ms
    start = end - rounds * workload.interval_ms
    timestamps = (start + workload.scrape_offsets_ms(series)[:, None]
                  + workload.interval_ms * np.arange(rounds, dtype=np.int64)[None, :])
    before, instance, after = workload.label_segments(series)
    profile_names = [np.array([s.labels["__name__"] for s in p.specs], dtype=str)
                     for p in workload.profiles]
    host = workload.host_of(series)
    names = np.empty(n, dtype=np.concatenate(profile_names).dtype)
    for k, table in enumerate(profile_names):  # a handful of host profiles
        mine = workload.host_profile[host] == k
        names[mine] = table[(series - workload.host_start[host])[mine]]
    return Capture(
        labels=concat_rows([before, instance, after]),
        instance_start=before.lengths,
        instance_end=before.lengths + instance.lengths,
        metric_names=names,
        sample_starts=np.arange(n + 1, dtype=np.int64) * rounds,
        timestamps=timestamps.ravel(),
        values=np.ascontiguousarray(values.T).ravel(),
        source=f"synthetic node workload, {hosts} hosts, seed {seed}, "
               f"{rounds} scrapes every {interval_s:g} s",
    )


# -- stretching -------------------------------------------------------------------------


class StretchedCorpus:
    """A capture replayed every ``interval_s`` for as many scrapes as asked, by ``hosts``.

    Host ``h`` holds a copy of every captured series (series ``h * S + i`` is copy ``h``
    of captured series ``i``) with its ``instance`` label rewritten to an address of its
    own and a scrape offset of its own. With one host the labels are kept as captured.

    Values are drawn, seeded, from what each series was seen to do:

    - counters (a cumulative name suffix, finite values that never decrease and do
      grow) add, scrape after scrape, increments drawn from those seen between
      consecutive captured scrapes. Sums are kept in the counter's decimal resolution
      (found from the captured values), so values are the doubles a parser would give
      for such decimals, as a scrape's are, and the counter never resets;
    - every other series walks one captured scrape forwards or backwards at random
      (turning at the ends), so a gauge keeps its level, the steps between its values
      and its special values (NaN payloads, stale markers) bit for bit, without
      repeating with a period that block compressors would exploit.

    Timestamps land on the ``interval_s`` grid plus the host's offset, as Prometheus's
    alignment of scrape timestamps makes them in practice; the capture's own timestamps
    only describe it. Like a ``Workload``, the values drawn depend on the seed, the
    series range of a stream and how its rounds are split into calls. Implements what
    ``benchmarks.loadgen.build_plan`` uses of a ``Workload``.
    """

    def __init__(self, capture: Capture, *, hosts: int = 1, interval_s: float = 15.0,
                 seed: int = 1) -> None:
        if hosts < 1:
            raise ValueError("hosts must be positive")
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        capture.check()
        self.name = "corpus"
        self.capture = capture
        self.seed = seed
        self.n_hosts = hosts
        self.interval_ms = round(interval_s * 1000)
        self.base_series = capture.n_series
        self.n_series = hosts * capture.n_series
        starts = capture.sample_starts
        self.counts = np.diff(starts)
        self.first = starts[:-1]
        self.cumulative = _counters(capture)
        self.resolution = _decimal_resolution(capture)
        self.host_offset_ms = np.random.default_rng([seed, 3]).integers(
            0, self.interval_ms, hosts)
        self._instances, self._instance_id = self._host_instances()

    def _host_instances(self) -> tuple[Segments, np.ndarray]:
        """Instance entries for every (captured instance, host), and each series' row base."""
        cap = self.capture
        lab = cap.labels
        if self.n_hosts == 1:
            captured = Segments(lab.source, lab.starts + cap.instance_start,
                                cap.instance_end - cap.instance_start)
            return captured, np.arange(cap.n_series, dtype=np.int64)
        # Few distinct instances (one per scraped target): a Python pass over series is
        # set-up, not the measured path.
        entries = [lab.source[s + a: s + b].tobytes() for s, a, b in
                   zip(lab.starts, cap.instance_start, cap.instance_end)]
        distinct = sorted(set(entries))
        index = {e: k for k, e in enumerate(distinct)}
        renamed: list[bytes] = []
        for entry in distinct:
            port = _label_value(entry).rpartition(":")[2] or "9100"
            renamed += [encode_label(_INSTANCE, f"{_host_address(h)}:{port}")
                        for h in range(self.n_hosts)]
        return _rows(renamed), np.array([index[e] for e in entries], np.int64) * self.n_hosts

    # -- what loadgen.build_plan uses of a workload

    def label_segments(self, series: np.ndarray) -> list[Segments]:
        """Parts whose row-wise concatenation is each series' encoded, sorted labels."""
        series = np.asarray(series, dtype=np.int64)
        host, base = np.divmod(series, self.base_series)
        cap, lab = self.capture, self.capture.labels
        before = Segments(lab.source, lab.starts[base], cap.instance_start[base])
        after = Segments(lab.source, lab.starts[base] + cap.instance_end[base],
                         lab.lengths[base] - cap.instance_end[base])
        row = self._instance_id[base] + (host if self.n_hosts > 1 else 0)
        inst = Segments(self._instances.source, self._instances.starts[row],
                        self._instances.lengths[row])
        return [before, inst, after]

    def scrape_offsets_ms(self, series: np.ndarray) -> np.ndarray:
        """Offset of each series' scrapes within the interval (that of its host)."""
        return self.host_offset_ms[np.asarray(series, dtype=np.int64) // self.base_series]

    def stream(self, start: int, stop: int) -> _Replay:
        """Values of series ``start..stop-1``, scrape after scrape."""
        if not 0 <= start < stop <= self.n_series:
            raise ValueError(f"series range {start}..{stop} outside 0..{self.n_series}")
        return _Replay(self, start, stop)

    def describe(self) -> dict[str, Any]:
        """Plain facts for reports."""
        return {
            "workload": "corpus",
            "source": self.capture.source,
            "series": self.n_series,
            "hosts": self.n_hosts,
            "captured_series": self.base_series,
            "captured_samples": self.capture.n_samples,
            "counters": int(self.cumulative.sum()) * self.n_hosts,
            "interval_s": self.interval_ms / 1000,
            "seed": self.seed,
        }


class _Replay:
    """Successive scrapes of series ``start..stop-1`` of a stretched corpus."""

    def __init__(self, corpus: StretchedCorpus, start: int, stop: int) -> None:
        self._corpus = corpus
        self._rng = np.random.default_rng([corpus.seed, 4, start, stop])
        base = np.arange(start, stop, dtype=np.int64) % corpus.base_series
        self._n = corpus.counts[base]
        self._first = corpus.first[base]
        self._walk = self._rng.integers(0, self._n)  # unreflected position of each walk
        c = np.flatnonzero(corpus.cumulative[base])
        self._counter_cols = c
        self._scale = corpus.resolution[base[c]]
        self._units = _to_units(corpus.capture.values[self._first[c]], self._scale)

    def advance(self, rounds: int) -> np.ndarray:
        """Values of the next ``rounds`` scrapes, shape (rounds, series)."""
        values = self._corpus.capture.values
        steps = self._rng.integers(0, 2, (rounds, len(self._n))) * 2 - 1
        walk = self._walk + np.cumsum(steps, axis=0)
        self._walk = walk[-1].copy()
        turn = np.maximum(2 * (self._n - 1), 1)
        pos = walk % turn
        pos = np.where(pos > self._n - 1, turn - pos, pos)
        out = values[self._first + pos]

        c = self._counter_cols
        if len(c):
            first, scale = self._first[c], self._scale
            pick = first + (self._rng.random((rounds, len(c))) * (self._n[c] - 1)).astype(np.int64)
            inc = _to_units(values[pick + 1], scale) - _to_units(values[pick], scale)
            units = self._units + np.cumsum(inc, axis=0)
            self._units = units[-1].copy()
            out[:, c] = np.where(scale > 0, units / np.where(scale > 0, scale, 1), units)
        return out


def _counters(capture: Capture) -> np.ndarray:
    """Which captured series are counters: cumulative by name, finite, never decreasing,
    and growing during the capture."""
    starts, values = capture.sample_starts, capture.values
    steps = np.diff(values)
    inside = np.ones(len(steps), bool)
    inside[starts[1:-1] - 1] = False
    falls = np.append(inside & ~(steps >= 0), False)
    named = np.zeros(capture.n_series, bool)
    for suffix in _CUMULATIVE_SUFFIXES:
        named |= np.char.endswith(capture.metric_names.astype(str), suffix)
    finite = np.logical_and.reduceat(np.isfinite(values), starts[:-1])
    never_falls = ~np.logical_or.reduceat(falls, starts[:-1])
    grows = values[starts[1:] - 1] > values[starts[:-1]]
    return named & finite & never_falls & grows


def _decimal_resolution(capture: Capture) -> np.ndarray:
    """Per series, the smallest power of ten ``s`` for which every captured value times
    ``s`` is an integer below 2**53 (what the value was printed with); 0 when none is."""
    starts, values = capture.sample_starts, capture.values
    out = np.zeros(capture.n_series)
    with np.errstate(invalid="ignore", over="ignore"):
        for e in range(_MAX_DECIMALS, -1, -1):  # the smallest wins: it is written last
            scaled = values * 10.0**e
            exact = np.abs(scaled - np.rint(scaled)) <= 1e-6 * np.maximum(1.0, np.abs(scaled))
            ok = np.logical_and.reduceat(exact & (np.abs(scaled) < 2.0**53), starts[:-1])
            out[ok] = 10.0**e
    return out


def _to_units(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Values in whole units of their resolution (as they are when ``scale`` is 0)."""
    return np.where(scale > 0, np.rint(values * np.where(scale > 0, scale, 1)), values)


def _rows(rows: list[bytes]) -> Segments:
    lengths = np.array([len(r) for r in rows], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return Segments(np.frombuffer(b"".join(rows) or b"\0", np.uint8), starts, lengths)


def _host_address(host: int) -> str:
    return f"10.{host >> 16 & 255}.{host >> 8 & 255}.{host & 255}"


def _label_value(entry: bytes) -> str:
    """The value of one encoded ``TimeSeries.labels`` entry."""
    return str(types_pb2.TimeSeries.FromString(entry).labels[0].value)


# -- command line -----------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.corpus",
        description="Capture real or synthetic node_exporter-shaped series into an .npz file.",
    )
    sub = p.add_subparsers(dest="source", required=True)
    real = sub.add_parser("real", help="scrape a local node_exporter with a real Prometheus")
    real.add_argument("--duration", type=float, default=60.0, help="seconds of scraping")
    real.add_argument("--interval", type=float, default=1.0, help="scrape interval, seconds")
    synthetic = sub.add_parser("synthetic", help="the seeded node workload")
    synthetic.add_argument("--hosts", type=int, default=1)
    synthetic.add_argument("--hours", type=float, default=1.0)
    synthetic.add_argument("--seed", type=int, default=1)
    for parser in (real, synthetic):
        parser.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: capture, save, and print what was captured."""
    args = _parse_args(argv)
    if args.source == "real":
        try:
            capture = capture_real(args.duration, args.interval)
        except (RuntimeError, OSError) as exc:
            print(f"capture failed: {exc}", file=sys.stderr)
            return 1
    else:
        capture = capture_synthetic(hosts=args.hosts, hours=args.hours, seed=args.seed)
    capture.save(args.out)
    facts = capture.describe()
    print(f"{args.out}: {facts['series']:,} series, {facts['samples']:,} samples "
          f"({args.out.stat().st_size / capture.n_samples:.2f} bytes per sample in the file); "
          f"{facts['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
