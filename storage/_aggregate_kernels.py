"""Kernels of aggregate chunks and of counter stitching (``storage.aggregate``).

Byte work on many chunks at once (packing five column chunks into one aggregate chunk,
finding one column's bytes in many chunks) and the per-series loops that turn counter
samples into reset-adjusted ones. Synchronous, GIL-free, safe from worker threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["adjust_runs", "gather", "locate_column", "pack", "packed_sizes", "stitch"]

HEADER = 11  # sample count (2), version (1), last raw value (8)
N_COLUMNS = 5

OK = 0
TRUNCATED = 1
BAD_VERSION = 2
BAD_VARINT = 3
BAD_COUNT = 4


@njit(cache=True, nogil=True)
def adjust_runs(starts, values, out):  # pragma: no cover - compiled
    """Reset-adjust each run ``values[starts[i]:starts[i+1]]`` of counter samples into
    ``out``: every drop counts as a reset to zero, so the value before it is added to all
    later samples of the run (the first sample keeps its raw value)."""
    for i in range(len(starts) - 1):
        correction = 0.0
        a = starts[i]
        b = starts[i + 1]
        for k in range(a, b):
            if k > a and values[k] < values[k - 1]:
                correction += values[k - 1]
            out[k] = values[k] + correction


@njit(cache=True, nogil=True)
def stitch(starts, same_series, first_raw, last_raw, values):  # pragma: no cover
    """Join runs of reset-adjusted counter samples into one adjusted series, in place.

    Run ``k`` is ``values[starts[k]:starts[k+1]]``, adjusted on its own; ``first_raw[k]``
    and ``last_raw[k]`` are the raw counter values at its first and last samples (NaN
    when unknown: the run was cut from a longer one). ``same_series[k]`` says that run
    ``k`` continues run ``k-1``. The increase between two runs is the rise of the raw
    value, or the new raw value itself after a drop (a reset), as PromQL counts it.
    """
    offset = 0.0
    for k in range(len(starts) - 1):
        a = starts[k]
        b = starts[k + 1]
        if a == b:
            continue
        if same_series[k] and k > 0 and starts[k - 1] < a:
            prev_adjusted = values[a - 1]  # already shifted by the previous offset
            prev_raw = last_raw[k - 1]
            if math.isnan(prev_raw):
                prev_raw = prev_adjusted - offset
            first = first_raw[k]
            if math.isnan(first):
                first = values[a]
            rise = first - prev_raw if first >= prev_raw else first
            offset = prev_adjusted + rise - values[a]
        else:
            offset = 0.0
        if offset != 0.0:
            for j in range(a, b):
                values[j] += offset


@njit(cache=True, nogil=True)
def _uvarint_size(x):  # pragma: no cover - compiled
    n = 1
    while x >= 0x80:
        x >>= 7
        n += 1
    return n


@njit(cache=True, nogil=True)
def pack(counts, last_raw_bits, version, column_blob, column_offsets, out_offsets,
         out):  # pragma: no cover - compiled
    """Write aggregate chunk ``i`` at ``out[out_offsets[i]:]``: the header (the last raw
    value given as its uint64 bits), then for each column ``c`` the uvarint length and
    the bytes ``column_blob[column_offsets[c, i]:column_offsets[c, i+1]]``."""
    for i in range(len(counts)):
        p = out_offsets[i]
        out[p] = (counts[i] >> 8) & 0xFF
        out[p + 1] = counts[i] & 0xFF
        out[p + 2] = version
        bits = last_raw_bits[i]
        for j in range(8):
            out[p + 3 + j] = (bits >> np.uint64(8 * j)) & np.uint64(0xFF)
        p += HEADER
        for c in range(N_COLUMNS):
            a = column_offsets[c, i]
            b = column_offsets[c, i + 1]
            n = b - a
            while n >= 0x80:
                out[p] = (n & 0x7F) | 0x80
                n >>= 7
                p += 1
            out[p] = n
            p += 1
            out[p:p + b - a] = column_blob[a:b]
            p += b - a


@njit(cache=True, nogil=True)
def packed_sizes(column_offsets):  # pragma: no cover - compiled
    """Bytes of each aggregate chunk ``pack`` writes."""
    n = column_offsets.shape[1] - 1
    sizes = np.full(n, HEADER, np.int64)
    for c in range(N_COLUMNS):
        for i in range(n):
            length = column_offsets[c, i + 1] - column_offsets[c, i]
            sizes[i] += _uvarint_size(length) + length
    return sizes


@njit(cache=True, nogil=True)
def gather(blob, starts, ends, out_offsets, out):  # pragma: no cover - compiled
    """Copy ``blob[starts[i]:ends[i]]`` to ``out[out_offsets[i]:out_offsets[i+1]]``."""
    for i in range(len(starts)):
        out[out_offsets[i]:out_offsets[i + 1]] = blob[starts[i]:ends[i]]


@njit(cache=True, nogil=True)
def locate_column(blob, offsets, column, version, starts, ends, last_raw_bits,
                  counts):  # pragma: no cover - compiled
    """Find column ``column``'s bytes in every aggregate chunk ``blob[offsets[i]:
    offsets[i+1]]``: ``starts[i]:ends[i]``, with the chunk's last raw value (as uint64
    bits) and sample count. Every length is checked against the chunk's own bytes, and
    every column's sample count against the chunk's (the counter column holds between 1
    and one more than the chunk's count). Returns ``(status, chunk)`` of the first bad
    chunk."""
    for i in range(len(offsets) - 1):
        p = offsets[i]
        end = offsets[i + 1]
        if end - p < HEADER:
            return TRUNCATED, i
        n = (np.int64(blob[p]) << 8) | np.int64(blob[p + 1])
        if blob[p + 2] != version:
            return BAD_VERSION, i
        bits = np.uint64(0)
        for j in range(8):
            bits |= np.uint64(blob[p + 3 + j]) << np.uint64(8 * j)
        last_raw_bits[i] = bits
        counts[i] = n
        p += HEADER
        for c in range(N_COLUMNS):
            length = np.int64(0)
            shift = 0
            while True:
                if p >= end:
                    return TRUNCATED, i
                byte = np.int64(blob[p])
                p += 1
                if shift > 56:
                    return BAD_VARINT, i
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            if length < 2 or length > end - p:
                return TRUNCATED, i
            m = (np.int64(blob[p]) << 8) | np.int64(blob[p + 1])
            if c < N_COLUMNS - 1:
                if m != n or n == 0:
                    return BAD_COUNT, i
            elif m < 1 or m > n + 1:
                return BAD_COUNT, i
            if c == column:
                starts[i] = p
                ends[i] = p + length
            p += length
        if p != end:
            return TRUNCATED, i
    return OK, -1
