"""numba kernels behind ``storage.tombstones``: merging intervals, testing samples and
chunks against them, and the varint loops of the ``tombstones`` file.

Interval columns ``(refs, mint, maxt)`` are sorted by (ref, mint); after ``merge`` the
intervals of one ref are disjoint and not adjacent, which every lookup relies on.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._block_kernels import _get_uvarint, _put_uvarint, _unzigzag, _zigzag

__all__ = ["COVERED", "NONE", "OK", "PARTIAL", "decode", "deleted", "encode", "merge",
           "overlap"]

NONE, PARTIAL, COVERED = 0, 1, 2  # how intervals meet a closed range
OK, TRUNCATED, BAD_VARINT = 0, 1, 2  # decode status


@njit(cache=True, nogil=True)
def merge(refs, mint, maxt):
    """Union per ref of intervals sorted by (ref, mint): overlapping or adjacent
    intervals become one. Returns the merged columns."""
    n = len(refs)
    out_r = np.empty(n, np.int64)
    out_lo = np.empty(n, np.int64)
    out_hi = np.empty(n, np.int64)
    k = -1
    for i in range(n):
        # ``mint - 1`` cannot wrap: when mint is the smallest int64 it is <= any maxt.
        if k >= 0 and out_r[k] == refs[i] and (mint[i] <= out_hi[k]
                                              or mint[i] - 1 == out_hi[k]):
            if maxt[i] > out_hi[k]:
                out_hi[k] = maxt[i]
            continue
        k += 1
        out_r[k] = refs[i]
        out_lo[k] = mint[i]
        out_hi[k] = maxt[i]
    return out_r[:k + 1].copy(), out_lo[:k + 1].copy(), out_hi[:k + 1].copy()


@njit(cache=True, nogil=True, inline="always")
def _last_at_or_before(refs, mint, ref, t):
    """Index of the last interval with (ref, mint) <= (ref, t), or -1."""
    lo, hi = 0, len(refs)
    while lo < hi:
        mid = (lo + hi) // 2
        if refs[mid] < ref or (refs[mid] == ref and mint[mid] <= t):
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@njit(cache=True, nogil=True)
def deleted(refs, mint, maxt, sample_refs, timestamps, out):
    """``out[i]`` = whether sample ``i`` of series ``sample_refs[i]`` lies in an
    interval of merged intervals."""
    for i in range(len(timestamps)):
        j = _last_at_or_before(refs, mint, sample_refs[i], timestamps[i])
        out[i] = j >= 0 and refs[j] == sample_refs[i] and timestamps[i] <= maxt[j]


@njit(cache=True, nogil=True)
def overlap(refs, mint, maxt, range_refs, lo, hi, out):
    """``out[i]``: NONE, PARTIAL or COVERED as merged intervals of ``range_refs[i]`` miss,
    meet or contain ``[lo[i], hi[i]]``. Only the last interval starting at or before
    ``hi[i]`` can reach back to ``lo[i]``: intervals of a ref are disjoint and sorted."""
    for i in range(len(range_refs)):
        j = _last_at_or_before(refs, mint, range_refs[i], hi[i])
        if j < 0 or refs[j] != range_refs[i] or maxt[j] < lo[i]:
            out[i] = NONE
        elif mint[j] <= lo[i] and maxt[j] >= hi[i]:
            out[i] = COVERED
        else:
            out[i] = PARTIAL


@njit(cache=True, nogil=True)
def encode(refs, mint, maxt):
    """Entries of a tombstones file: uvarint ref, zigzag varint mint and maxt each."""
    out = np.empty(30 * len(refs), np.uint8)
    p = 0
    for i in range(len(refs)):
        p = _put_uvarint(out, p, refs[i])
        p = _put_uvarint(out, p, _zigzag(mint[i]))
        p = _put_uvarint(out, p, _zigzag(maxt[i]))
    return out[:p].copy()


@njit(cache=True, nogil=True)
def decode(buf, start, end):
    """Inverse of ``encode`` over ``buf[start:end]``: ``(refs, mint, maxt, status,
    position)``; on a malformed varint the status says why and ``position`` where."""
    cap = (end - start) // 3 + 1  # every entry takes at least three bytes
    refs = np.empty(cap, np.int64)
    mint = np.empty(cap, np.int64)
    maxt = np.empty(cap, np.int64)
    n = 0
    p = start
    while p < end:
        at = p
        r, p = _get_uvarint(buf, p, end)
        if p < 0:
            return refs[:n], mint[:n], maxt[:n], TRUNCATED if p == -1 else BAD_VARINT, at
        a, p = _get_uvarint(buf, p, end)
        if p < 0:
            return refs[:n], mint[:n], maxt[:n], TRUNCATED if p == -1 else BAD_VARINT, at
        b, p = _get_uvarint(buf, p, end)
        if p < 0:
            return refs[:n], mint[:n], maxt[:n], TRUNCATED if p == -1 else BAD_VARINT, at
        refs[n] = r
        mint[n] = _unzigzag(a)
        maxt[n] = _unzigzag(b)
        n += 1
    return refs[:n].copy(), mint[:n].copy(), maxt[:n].copy(), OK, end
