"""Receivers to benchmark: promstore and its peers, started fresh and stopped for sure.

Each :class:`Target` knows how to start one receiver on 127.0.0.1 with a new
data directory, where its readiness and remote-write endpoints are, and how
durable its acknowledgements are. :func:`running` starts one in its own
process group inside a temporary directory and, whatever happens, kills the
whole group and removes the directory afterwards.

Memory and CPU are read from ``/proc`` for every process of the server's
process group, so a server that forks helpers is measured whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PROMETHEUS",
    "PROMSTORE",
    "TARGETS",
    "VICTORIAMETRICS",
    "RunRecord",
    "Server",
    "Target",
    "machine_info",
    "running",
]

_REPO_ROOT = Path(__file__).resolve().parent.parent
_STOP_GRACE_S = 15.0
_LOG_TAIL_BYTES = 2000


class Target:
    """A remote-write receiver this benchmark can start."""

    name: str = ""
    ready_path: str = ""
    write_path: str = "/api/v1/write"
    durability: str = ""  # what a 2xx means for the samples, in plain words

    def available(self) -> bool:
        """Whether it can be started on this machine."""
        raise NotImplementedError

    def command(self, workdir: Path, data_dir: Path, port: int) -> list[str]:
        """The argv that starts it listening on 127.0.0.1:port (may write config into workdir)."""
        raise NotImplementedError

    def version(self) -> str:
        """A short version string for reports."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Environment for the server process."""
        return dict(os.environ)


def _debian_version(package: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


class _Promstore(Target):
    name = "promstore"
    ready_path = "/-/ready"
    durability = "WAL fsync before every acknowledgement (--wal-fsync always)"

    def available(self) -> bool:
        try:
            probe = subprocess.run(
                [sys.executable, "-m", "promstore", "serve", "--help"],
                capture_output=True,
                timeout=120,
                check=False,
                env=self.environment(),
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return probe.returncode == 0

    def command(self, workdir: Path, data_dir: Path, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "promstore",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            f"127.0.0.1:{port}",
            "--wal-fsync",
            "always",
        ]

    def environment(self) -> dict[str, str]:
        # The server runs in its temporary directory; make this checkout importable
        # there even when promstore is not installed.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
        return env

    def version(self) -> str:
        try:
            import promstore
        except ImportError:
            return "unknown"
        return str(getattr(promstore, "__version__", "unknown"))


class _DebianPackage(Target):
    """A peer installed from a Debian package: runnable when its binary is there."""

    binary: str = ""
    package: str = ""

    def available(self) -> bool:
        return os.access(self.binary, os.X_OK)

    def version(self) -> str:
        return _debian_version(self.package)


class _VictoriaMetrics(_DebianPackage):
    name = "victoriametrics"
    ready_path = "/health"
    durability = "buffered in memory, flushed to disk within about a second"
    binary = "/usr/bin/victoria-metrics"
    package = "victoria-metrics"

    def command(self, workdir: Path, data_dir: Path, port: int) -> list[str]:
        return [
            self.binary,
            f"-storageDataPath={data_dir}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-retentionPeriod=1y",
            "-loggerLevel=ERROR",
        ]


class _Prometheus(_DebianPackage):
    name = "prometheus"
    ready_path = "/-/ready"
    durability = "written to the WAL, fsynced only when a segment is closed"
    binary = "/usr/bin/prometheus"
    package = "prometheus"

    def command(self, workdir: Path, data_dir: Path, port: int) -> list[str]:
        config = workdir / "prometheus.yml"
        config.write_text("global: {}\nscrape_configs: []\n")
        return [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-remote-write-receiver",
            "--log.level=warn",
        ]


PROMSTORE: Target = _Promstore()
VICTORIAMETRICS: Target = _VictoriaMetrics()
PROMETHEUS: Target = _Prometheus()
TARGETS: dict[str, Target] = {t.name: t for t in (PROMSTORE, VICTORIAMETRICS, PROMETHEUS)}
"""Targets by name, in the order benchmarks run them."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@dataclass
class Server:
    """A started receiver: its URLs, its process group, and its log."""

    target: Target
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log_path: Path
    argv: list[str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def write_url(self) -> str:
        return self.base_url + self.target.write_path

    def rss_bytes(self) -> int:
        """Resident memory of every process in the server's process group (VmRSS)."""
        return 1024 * sum(_status_kib(p, "VmRSS") for p in _group_pids(self.process.pid))

    def peak_rss_bytes(self) -> int:
        """Highest resident memory the main process reached (VmHWM)."""
        return 1024 * _status_kib(self.process.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the processes of the group."""
        ticks = sum(_cpu_ticks(p) for p in _group_pids(self.process.pid))
        return ticks / os.sysconf("SC_CLK_TCK")

    def log_tail(self) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-_LOG_TAIL_BYTES:].decode(errors="replace")

    def wait_ready(self, timeout_s: float) -> None:
        """Poll the readiness endpoint until it answers 200; raise if the server dies or stalls."""
        deadline = time.monotonic() + timeout_s
        url = self.base_url + self.target.ready_path
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.target.name} exited with {self.process.returncode} before it was "
                    f"ready; log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.target.name} not ready after {timeout_s:.0f} s; log tail:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Terminate the process group, killing it if it lingers."""
        pgid = self.process.pid
        for sig, grace in ((signal.SIGTERM, _STOP_GRACE_S), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
            if not _group_pids(pgid):
                return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def running(target: Target, *, ready_timeout_s: float = 120.0,
            seed: Path | None = None, flags: Sequence[str] = ()) -> Iterator[Server]:
    """Start ``target`` fresh in a temporary directory; stop it and clean up on exit.
    With ``seed``, its data directory starts as a copy of that tree made of hard links
    (block files are never changed in place, so targets can share them). ``flags`` are
    added to the target's command line."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{target.name}-"))
    try:
        data_dir = workdir / "data"
        if seed is None:
            data_dir.mkdir()
        else:
            shutil.copytree(seed, data_dir, copy_function=os.link)
        port = _free_port()
        argv = [*target.command(workdir, data_dir, port), *flags]
        log_path = workdir / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                env=target.environment(),
                start_new_session=True,
            )
        server = Server(target, process, port, workdir, log_path, argv)
        try:
            server.wait_ready(ready_timeout_s)
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class RunRecord:
    """What every benchmark's output starts with and its JSON result carries first:
    the command that ran it, when, and on what machine."""

    command: str
    started: dt.datetime
    machine: dict[str, object]

    @classmethod
    def start(cls, module: str, argv: Sequence[str] | None) -> RunRecord:
        """Record the run of ``python -m module argv`` and print its facts."""
        run = cls(shlex.join([sys.executable, "-m", module, *(argv or sys.argv[1:])]),
                  dt.datetime.now(dt.UTC), machine_info())
        m = run.machine
        print(f"command: {run.command}")
        print(f"date:    {run.started.isoformat(timespec='seconds')}")
        print(f"machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), "
              f"{m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}")
        return run

    def save(self, out: Path, name: str, report: dict[str, Any]) -> dict[str, Any]:
        """Write the run's facts and ``report`` to ``out/NAME-<start time>.json``, say
        where, and return what was written."""
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}-{self.started.strftime('%Y%m%dT%H%M%SZ')}.json"
        written = {"command": self.command, "date": self.started.isoformat(timespec="seconds"),
                   "machine": self.machine, **report}
        path.write_text(json.dumps(written, indent=2) + "\n")
        print(f"results: {path}")
        return written


def machine_info() -> dict[str, object]:
    """CPU model, cores, memory and kernel of this machine."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = _meminfo_kib("MemTotal")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _meminfo_kib(key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0
