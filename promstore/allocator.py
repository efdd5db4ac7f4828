"""The C allocator's settings for a server of large, short-lived numpy arrays.

A query allocates and frees arrays of tens of megabytes. glibc keeps what is freed for
reuse: in one heap ("arena") per thread that ever allocated, up to eight per core, and
above its threshold for handing large blocks straight back to the system (which grows
with every large block freed). Left alone, a server whose query threads each peaked
once holds the sum of those peaks for good. Here the arenas are capped and long queries
trim what they freed; elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

__all__ = ["limit_arenas", "trim"]

_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def _libc_function(name: str) -> Callable[..., int] | None:
    try:
        fn: Callable[..., int] = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    return fn


_mallopt = _libc_function("mallopt")
_malloc_trim = _libc_function("malloc_trim")


def limit_arenas(arenas: int) -> bool:
    """Let at most ``arenas`` heaps serve the process's threads (call before starting
    them); whether the C library took the setting."""
    return _mallopt is not None and _mallopt(_M_ARENA_MAX, arenas) == 1


def trim() -> None:
    """Hand memory freed in every heap back to the system."""
    if _malloc_trim is not None:
        _malloc_trim(0)
