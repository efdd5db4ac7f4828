"""Sealed head chunks kept in files (``chunks_head/``), out of the process's memory.

Sealing a chunk appends its bytes to a small staging buffer; after each append call the
buffer is written to the current page file with ``pwrite``, so sealed chunks live in the
kernel's page cache, not in the process's resident memory, as Prometheus keeps its
head chunks. Reads go through read-only memory maps of the page files. A page file has
room for ``PAGE_SIZE`` bytes; when a page has no chunk left that the head still needs,
it is deleted. Files grow as chunks are written; maps cover what is written.

The files are a cache of what the WAL holds: they are never fsynced, and a start
deletes whatever an earlier process left (replay rebuilds the head).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np

from ._head_chunk_kernels import PAGE_SIZE
from .errors import StorageError

__all__ = ["SealedPages"]

STAGING_BYTES = 1 << 20


class SealedPages:
    """Page files of sealed chunks under ``directory``; chunk location =
    ``page << PAGE_BITS | offset``. Not thread-safe: the head's lock guards it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory  # emptied when the first page is made, not before
        self.staging = np.empty(STAGING_BYTES, np.uint8)
        self.fill = np.zeros(1, np.int64)  # bytes staged, not yet written
        self.page = -1  # current page file
        self.base = PAGE_SIZE  # bytes of the current page already written
        self._fd = -1
        self._maps: dict[int, np.memmap] = {}
        self._sizes: dict[int, int] = {}  # bytes written to each page file

    def room(self) -> np.ndarray:
        """The staging area the append kernel may seal into: never more than the
        current page can still take."""
        if self.base + STAGING_BYTES > PAGE_SIZE:
            self._next_page()
        return self.staging

    def flush(self) -> None:
        """Write the staged chunks to the current page."""
        n = int(self.fill[0])
        if n == 0:
            return
        try:
            view = memoryview(self.staging[:n].data)
            written = 0
            while written < n:
                written += os.pwrite(self._fd, view[written:], self.base + written)
        except OSError as exc:
            raise StorageError(f"cannot write head chunks to {self._path(self.page)}: {exc}") \
                from exc
        self.base += n
        self._sizes[self.page] = self.base
        self.fill[0] = 0

    def view(self, page: int) -> np.ndarray:
        """The bytes written to ``page`` so far, mapped (mapped again when it has grown)."""
        size = self._sizes.get(page, 0)
        mapped = self._maps.get(page)
        if size == 0:
            return np.empty(0, np.uint8)
        if mapped is None or len(mapped) < size:
            mapped = np.memmap(self._path(page), dtype=np.uint8, mode="r", shape=(size,))
            self._maps[page] = mapped
        return mapped

    def keep_only(self, pages: np.ndarray) -> None:
        """Delete the page files not in ``pages`` (the current page always stays)."""
        if self.page < 0:
            return
        wanted = set(pages.tolist()) | {self.page}
        for name in os.listdir(self.directory):
            if name.isdigit() and int(name) not in wanted:
                self._maps.pop(int(name), None)
                self._sizes.pop(int(name), None)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.directory / name)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._maps.clear()
        self._sizes.clear()

    def _next_page(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
        if self.page < 0:
            try:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot prepare head chunk directory {self.directory}: "
                                   f"{exc}") from exc
        self.page += 1
        path = self._path(self.page)
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot create head chunk file {path}: {exc}") from exc
        self.base = 0

    def _path(self, page: int) -> Path:
        return self.directory / f"{page:06d}"
