"""WAL checkpoints: what the head still needs from WAL segments that are about to go.

Once a block holds everything older than some time, the WAL segments written before
that point can be deleted, except for what they say about newer data: the series that
still hold samples and those samples. A checkpoint is a directory
``wal/checkpoint.NNNNNNNN`` (N = the last segment it replaces) holding exactly that, as
ordinary WAL records in WAL segment files, so replay reads it like any segment.

The dance, each step safe to interrupt:
1. write ``checkpoint.N.creating/``, fsync it, rename it to ``checkpoint.N``, fsync ``wal/``;
2. delete segments up to N, then older checkpoints.
Replay takes the newest complete checkpoint and then only the segments after N; a
leftover ``.creating`` directory is an interrupted step 1 and is deleted.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from .errors import StorageError
from .wal import WAL, fsync_dir

__all__ = ["latest", "remove_leftovers", "write"]

_NAME = re.compile(r"checkpoint\.([0-9]{8})")
_CREATING = ".creating"


def _name(segment: int) -> str:
    return f"checkpoint.{segment:08d}"


def latest(wal_dir: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint in ``wal_dir`` and the last segment it replaces."""
    found = []
    try:
        names = os.listdir(wal_dir)
    except FileNotFoundError:
        return None
    for name in names:
        m = _NAME.fullmatch(name)
        if m:
            found.append(int(m.group(1)))
    if not found:
        return None
    n = max(found)
    return wal_dir / _name(n), n


def remove_leftovers(wal_dir: Path) -> None:
    """Delete interrupted checkpoint directories and checkpoints older than the newest."""
    newest = latest(wal_dir)
    try:
        for name in os.listdir(wal_dir):
            path = wal_dir / name
            m = _NAME.fullmatch(name)
            old = m is not None and newest is not None and int(m.group(1)) < newest[1]
            if name.startswith("checkpoint.") and (name.endswith(_CREATING) or old):
                shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot remove old wal checkpoints in {wal_dir}: {exc}") from exc


def write(wal_dir: Path, segment: int,
          records: Iterable[tuple[int, bytes | bytearray | memoryview]]) -> Path:
    """Write a checkpoint replacing segments up to ``segment``; return its path.

    ``records`` are logged in order, one WAL record each.
    """
    final = wal_dir / _name(segment)
    tmp = wal_dir / (_name(segment) + _CREATING)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        log = WAL(tmp, fsync="always")
        try:
            for rtype, payload in records:
                log.log([(rtype, payload)])
        finally:
            log.close()  # fsyncs the last segment; earlier ones were fsynced when cut
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(wal_dir)
    except OSError as exc:
        raise StorageError(f"cannot write wal checkpoint {final}: {exc}") from exc
    return final
