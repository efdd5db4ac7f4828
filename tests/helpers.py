"""Helpers for end-to-end tests: a promstore server in a child process, a remote-write
encoder that can also produce what a correct encoder never would, and read-back of a
data directory in-process.

The encoder is written by hand (not with the generated protobuf classes) so that tests
can send invalid UTF-8, repeated or unsorted labels and NaN payloads exactly as given;
``tests/test_write_http.py`` checks it against the reference classes.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import snappy

__all__ = [
    "PROM_NAN_BITS",
    "REPO_ROOT",
    "STALE_NAN_BITS",
    "Labels",
    "Response",
    "Series",
    "ServerProcess",
    "StoredData",
    "bits",
    "encode_write_request",
    "f64",
    "free_port",
    "http_request",
    "metric_value",
    "read_data_dir",
    "run_cli",
    "snappy_write_body",
]

REPO_ROOT = Path(__file__).resolve().parent.parent

STALE_NAN_BITS = 0x7FF0000000000002  # Prometheus's stale marker
PROM_NAN_BITS = 0x7FF8000000000001  # the NaN Prometheus itself produces


def f64(raw: int) -> float:
    """The float64 with bit pattern ``raw`` (NaN payloads survive Python floats)."""
    return struct.unpack("<d", struct.pack("<Q", raw))[0]


def bits(value: float) -> int:
    """The bit pattern of a float64."""
    return struct.unpack("<Q", struct.pack("<d", value))[0]


# -- remote write encoding --------------------------------------------------------------

Text = str | bytes
Labels = Mapping[str, str] | Sequence[tuple[Text, Text]]
Series = tuple[Labels, Sequence[tuple[int, float]]]


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 fields: negative numbers take ten bytes, as in protobuf
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _as_bytes(text: Text) -> bytes:
    return text.encode() if isinstance(text, str) else text


def encode_write_request(series: Iterable[Series]) -> bytes:
    """A ``prometheus.WriteRequest`` holding ``series`` exactly as given (label order,
    repeats, raw bytes), each sample's value written as its float64 bits."""
    out = bytearray()
    for labels, samples in series:
        items = labels.items() if isinstance(labels, Mapping) else labels
        ts = bytearray()
        for name, value in items:
            ts += _len_field(1, _len_field(1, _as_bytes(name)) + _len_field(2, _as_bytes(value)))
        for t, v in samples:
            ts += _len_field(2, b"\x09" + struct.pack("<d", v) + b"\x10" + _varint(t))
        out += _len_field(1, bytes(ts))
    return bytes(out)


def snappy_write_body(series: Iterable[Series]) -> bytes:
    """``encode_write_request`` compressed in the snappy block format, as Prometheus sends it."""
    return snappy.compress(encode_write_request(series))


# -- HTTP --------------------------------------------------------------------------------

WRITE_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "promstore-tests",
}


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.body)


def http_request(port: int, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> Response:
    """One request on a fresh connection to 127.0.0.1:``port``. An iterable body is sent
    with chunked transfer encoding."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        chunked = body is not None and not isinstance(body, (bytes, bytearray))
        conn.request(method, path, body=body, headers=dict(headers or {}),
                     encode_chunked=chunked)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def free_port() -> int:
    """A port that was free a moment ago (the server binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """The test process's environment without PROMSTORE_* settings, plus ``env``, with the
    repository importable (the package need not be installed)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("PROMSTORE_")}
    out["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    out.update(env or {})
    return out


def run_cli(*args: str, env: Mapping[str, str] | None = None,
            cwd: str | os.PathLike | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``python -m promstore ARGS`` to completion (for commands that exit by themselves),
    run in ``cwd`` (the temporary directory by default, so that a stray ``./data`` never
    lands in the repository)."""
    return subprocess.run([sys.executable, "-m", "promstore", *args], env=_clean_env(env),
                          cwd=cwd or tempfile.gettempdir(), capture_output=True, text=True,
                          timeout=timeout, check=False)


class ServerProcess:
    """``promstore serve`` on a free loopback port in a child process.

    ``start`` returns once ``/-/ready`` answers 200. ``stop`` sends SIGTERM and returns the
    exit code; ``kill`` sends SIGKILL. Output goes to ``log_path`` (read it with ``log()``).
    Pass ``listen=False`` to leave ``--listen`` to a config file or the environment and
    give the port that it names as ``port``. The process runs in ``log_path``'s directory.
    """

    def __init__(self, data_dir: str | os.PathLike | None, *args: str,
                 env: Mapping[str, str] | None = None, port: int | None = None,
                 listen: bool = True, log_path: str | os.PathLike | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.args = list(args)
        self.env = dict(env or {})
        self._fixed_port = port
        self._listen = listen
        if log_path is None and self.data_dir is None:
            raise ValueError("a server without --data-dir needs a log_path")
        # The process runs in the log's directory, so a relative data_dir lands there.
        self.log_path = Path(log_path) if log_path else \
            self.data_dir.parent / f"server-{id(self)}.log"
        self.port = port or 0
        self.proc: subprocess.Popen | None = None

    # life cycle

    def start(self, timeout: float = 60.0) -> ServerProcess:
        for _ in range(3):  # another process may take the free port between probe and bind
            self.port = self._fixed_port or free_port()
            self._spawn()
            if self._wait_ready(timeout):
                return self
            log = self.log()
            if self._fixed_port is None and self.proc.poll() is not None and \
                    "address already in use" in log.lower():
                continue
            self.kill()
            raise RuntimeError(f"promstore did not become ready on port {self.port}:\n{log}")
        raise RuntimeError(f"promstore found no free port:\n{self.log()}")

    def _spawn(self) -> None:
        cmd = [sys.executable, "-m", "promstore", "serve"]
        if self.data_dir is not None:
            cmd += ["--data-dir", str(self.data_dir)]
        if self._listen:
            cmd += ["--listen", f"127.0.0.1:{self.port}"]
        cmd += self.args
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env=_clean_env(self.env),
                                         cwd=self.log_path.parent)

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if http_request(self.port, "GET", "/-/ready", timeout=2).status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL and raise if it hangs)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"promstore did not stop within {timeout}s of SIGTERM:\n"
                               f"{self.log()}") from None
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash would; returns once the process is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # requests

    def request(self, method: str, path: str, body=None, headers=None,
                timeout: float = 30.0) -> Response:
        return http_request(self.port, method, path, body, headers, timeout)

    def get(self, path: str, **params) -> Response:
        query = urllib.parse.urlencode(params, doseq=True)
        return self.request("GET", path + ("?" + query if query else ""))

    def write(self, series: Iterable[Series] | None = None, *, body: bytes | None = None,
              headers: Mapping[str, str] | None = None) -> Response:
        """POST a remote-write request made of ``series`` (or a raw ``body``)."""
        if body is None:
            body = snappy_write_body(series or [])
        return self.request("POST", "/api/v1/write", body, {**WRITE_HEADERS, **(headers or {})})

    def api(self, path: str, **params):
        """GET a Prometheus JSON API path and return its ``data`` (asserting success)."""
        resp = self.get(path, **params)
        assert resp.status == 200, (path, resp.status, resp.text)
        payload = resp.json()
        assert payload["status"] == "success", payload
        return payload["data"]

    def series(self, match: str = '{__name__=~".+"}') -> list[dict[str, str]]:
        """``/api/v1/series`` for ``match``, sorted for comparison."""
        data = self.api("/api/v1/series", **{"match[]": match})
        return sorted(data, key=lambda s: sorted(s.items()))

    def metrics(self) -> str:
        resp = self.get("/metrics")
        assert resp.status == 200
        return resp.text


# -- read-back ---------------------------------------------------------------------------

LabelKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class StoredData:
    """Everything a data directory holds, read through a freshly opened store.

    Series ``refs`` with their ``labels``; samples as columns sorted by (ref, timestamp);
    ``rows`` counts the samples the store keeps, so a sample stored twice shows as
    ``rows > n_samples`` (reads return each (series, timestamp) once).
    """

    refs: np.ndarray
    labels: list[dict[str, str]]
    sample_refs: np.ndarray
    timestamps: np.ndarray
    value_bits: np.ndarray
    rows: int

    @property
    def n_samples(self) -> int:
        return len(self.timestamps)

    @functools.cached_property
    def samples(self) -> dict[LabelKey, list[tuple[int, int]]]:
        """Label set (sorted name/value pairs) -> its ``(timestamp, value bits)`` in order."""
        lo = np.searchsorted(self.sample_refs, self.refs, side="left")
        hi = np.searchsorted(self.sample_refs, self.refs, side="right")
        return {tuple(sorted(ls.items())): list(zip(self.timestamps[a:b].tolist(),
                                                    self.value_bits[a:b].tolist()))
                for ls, a, b in zip(self.labels, lo, hi)}


def read_data_dir(data_dir: str | os.PathLike, options=None) -> StoredData:
    """Open ``data_dir`` in-process (its blocks, then its WAL replayed) with
    ``storage.head.HeadOptions`` ``options`` (the defaults, as a server started without
    flags, when None), read every sample, close it. ``rows`` counts the samples held,
    so that a sample stored twice shows."""
    from storage.db import DB, DBOptions
    from storage.head import HeadOptions
    from storage.matchers import Matcher, MatchType

    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    db = DB.open(data_dir, DBOptions(head=options or HeadOptions(), compaction_interval=0))
    try:
        got = db.select([Matcher(MatchType.RE, "__name__", ".+")], lo, hi)
        rows = db.head.n_samples + sum(b.meta.num_samples for b in db.blocks)
    finally:
        db.close()
    refs = np.arange(got.n_series)
    labels = [got.labels(i) for i in refs]
    sample_refs = np.repeat(refs, np.diff(got.starts))
    return StoredData(refs, labels, sample_refs, got.timestamps,
                      got.samples.view(np.uint64), rows)


def metric_value(exposition: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The value of sample ``name{labels}`` in a text exposition (0 when absent, as a
    counter that has not been touched yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    want = dict(labels or {})
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in want.items()):
                return sample.value
    return 0.0
