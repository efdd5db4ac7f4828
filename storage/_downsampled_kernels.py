"""Kernels of the downsampled store's reads (``storage.downsampled``).

Copying runs of samples (a series' samples from one block or one resolution) to their
places in the result, without an index array as long as the samples. Synchronous,
GIL-free, safe from worker threads.
"""

from __future__ import annotations

from numba import njit

__all__ = ["copy_runs"]


@njit(cache=True, nogil=True)
def copy_runs(src, src_starts, lengths, dst_starts, out):  # pragma: no cover - compiled
    """Copy ``src[src_starts[i]:src_starts[i] + lengths[i]]`` to ``out`` from
    ``dst_starts[i]`` on, for every run ``i``."""
    for i in range(len(lengths)):
        a = src_starts[i]
        b = dst_starts[i]
        n = lengths[i]
        out[b:b + n] = src[a:a + n]
