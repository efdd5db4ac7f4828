"""A readers-writer lock: many readers at once, or one writer, writers first.

The store uses it so that a read never sees the moment between a block being published
and the head dropping the same range: readers hold it shared for the whole read, the
persister holds it exclusively for the swap (a short step: writing the block happens
before). A waiting writer stops new readers from entering, so a stream of reads cannot
starve it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RWLock"]


class RWLock:
    """Shared/exclusive lock; not reentrant for writers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_shared(self) -> None:
        """Take the lock shared; ``release_shared`` gives it back. (Not a context
        manager: a small query takes it several times, and a generator's cost shows.)"""
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_shared(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
