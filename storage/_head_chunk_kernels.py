"""numba kernels behind ``storage.head_chunks``: appending to open XOR chunks, sealing
them, and gathering chunk bytes for reads.

Every append kernel is resumable: when it runs out of room (arena, page or table) it
returns a status and the index of the sample it stopped at, having changed nothing for
that sample; the caller grows the structure and calls again from there.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._xor_kernels import (
    _U0,
    ST_BITPOS,
    ST_BYTE_TAIL,
    ST_NUM,
    ST_T,
    close_chunk,
    encode_sample,
    length_of,
    load_row,
    reset_row,
    store_row,
)

OK = 0
NEED_ARENA = 1
NEED_PAGE = 2
NEED_TABLE = 3

SAMPLES_PER_CHUNK = 120
N_CLASSES = 8
MIN_SLOT = 64  # slot sizes are MIN_SLOT << class: 64 B … 8 KiB
# Room an open chunk must have before one more sample: the worst first or second
# sample (varint timestamp or delta, raw or windowed value, spare byte) fits in 24 bytes.
SAMPLE_ROOM = 24
PAGE_BITS = 26  # sealed chunks live in page files of 64 MiB
PAGE_SIZE = 1 << PAGE_BITS

# Slots of the ``alloc`` array: the bump pointer, then one free-list head per class.
A_BUMP = 0
A_FREE = 1


@njit(cache=True, nogil=True, inline="always")
def _div(a, b):  # type: ignore[no-untyped-def]
    """Integer division truncating toward zero, as Go's ``/`` does."""
    q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q += 1
    return q


@njit(cache=True, nogil=True)
def range_end(t, width):  # type: ignore[no-untyped-def]
    """End of the ``width``-aligned range holding ``t`` (Prometheus's rangeForTimestamp)."""
    return _div(t, width) * width + width


@njit(cache=True, nogil=True, inline="always")
def _chunk_end(start, cur, limit):  # type: ignore[no-untyped-def]
    """Predicted end of a chunk a quarter full, spreading the remaining range evenly."""
    den = (cur - start + 1) * 4
    if den <= 0:
        return limit
    n = _div(limit - start, den)
    if n <= 1:
        return limit
    return start + _div(limit - start, n)


@njit(cache=True, nogil=True, inline="always")
def _alloc(arena, alloc, cls):  # type: ignore[no-untyped-def]
    """Offset of a free slot of class ``cls``, or -1 when the arena is full."""
    head = alloc[A_FREE + cls]
    if head >= 0:
        nxt = np.int64(0)
        for b in range(8):
            nxt |= np.int64(arena[head + b]) << (8 * b)
        alloc[A_FREE + cls] = nxt
        return head
    size = MIN_SLOT << cls
    if alloc[A_BUMP] + size > len(arena):
        return -1
    off = alloc[A_BUMP]
    alloc[A_BUMP] += size
    return off


@njit(cache=True, nogil=True, inline="always")
def _free(arena, alloc, cls, off):  # type: ignore[no-untyped-def]
    nxt = alloc[A_FREE + cls]
    for b in range(8):
        arena[off + b] = np.uint8((nxt >> (8 * b)) & 0xFF)
    alloc[A_FREE + cls] = off


@njit(cache=True, nogil=True)
def free_slots(arena, alloc, classes, offsets):  # type: ignore[no-untyped-def]
    """Return the open-chunk slots ``offsets`` (of size classes ``classes``) to the arena."""
    for i in range(len(offsets)):
        _free(arena, alloc, classes[i], offsets[i])


@njit(cache=True, nogil=True)
def append(  # type: ignore[no-untyped-def]
    refs, ts, ts_bits, vs_bits, start, chunk_range,
    xstate, slot_off, slot_class, c_mint, next_at, last_sealed,
    arena, alloc, page, page_index, page_base, page_fill,
    tab_ref, tab_mint, tab_maxt, tab_loc, tab_len, tab_prev, tab_n,
):
    """Append in-order samples ``start:`` (series ``refs[j]``) to their open chunks.

    A chunk is sealed, as Prometheus cuts head chunks, when the sample would cross the
    ``chunk_range``-aligned boundary or the end predicted once the chunk is a quarter
    full, or when it already holds twice ``SAMPLES_PER_CHUNK``. Sealed chunks are copied
    to ``page`` (a staging area for page ``page_index``, whose first ``page_base`` bytes
    are already written) and listed in the ``tab_*`` columns, linked per series through
    ``tab_prev``. Returns ``(status, j)``.
    """
    # Each sample is encoded right here, its chunk's state in local variables: calling
    # ``append_samples`` with a row view of the state cost three times the encoding.
    for j in range(start, len(refs)):
        r = refs[j]
        t = ts[j]
        if slot_off[r] < 0:
            off = _alloc(arena, alloc, 0)
            if off < 0:
                return NEED_ARENA, j
            slot_off[r] = off
            slot_class[r] = 0
            reset_row(xstate, r)
        count = np.int64(xstate[r, ST_NUM])
        if count == 0:
            c_mint[r] = t
            next_at[r] = range_end(t, chunk_range)
        else:
            if count == SAMPLES_PER_CHUNK // 4:
                next_at[r] = _chunk_end(c_mint[r], np.int64(xstate[r, ST_T]), next_at[r])
            if t >= next_at[r] or count >= 2 * SAMPLES_PER_CHUNK:
                length = length_of(xstate[r, ST_BITPOS], xstate[r, ST_BYTE_TAIL], True)
                if tab_n[0] >= len(tab_ref):
                    return NEED_TABLE, j
                if page_fill[0] + length > len(page):
                    return NEED_PAGE, j
                src = slot_off[r]
                dst = page_fill[0]
                page[dst:dst + length] = arena[src:src + length]
                k = tab_n[0]
                tab_ref[k] = r
                tab_mint[k] = c_mint[r]
                tab_maxt[k] = np.int64(xstate[r, ST_T])
                tab_loc[k] = (np.int64(page_index) << PAGE_BITS) | (page_base + dst)
                tab_len[k] = length
                tab_prev[k] = last_sealed[r]
                last_sealed[r] = k
                tab_n[0] = k + 1
                page_fill[0] = dst + length
                reset_row(xstate, r)
                c_mint[r] = t
                next_at[r] = range_end(t, chunk_range)
        cls = slot_class[r]
        used = length_of(xstate[r, ST_BITPOS], xstate[r, ST_BYTE_TAIL], True)
        if used + SAMPLE_ROOM > (MIN_SLOT << cls):
            new_cls = cls
            while (MIN_SLOT << new_cls) < used + SAMPLE_ROOM:
                new_cls += 1
            off = _alloc(arena, alloc, new_cls)
            if off < 0:
                return NEED_ARENA, j
            arena[off:off + used] = arena[slot_off[r]:slot_off[r] + used]
            _free(arena, alloc, cls, slot_off[r])
            slot_off[r] = off
            slot_class[r] = new_cls
        base = slot_off[r]
        num, t_last, tdelta, v, leading, trailing, bitpos, byte_tail = load_row(xstate, r)
        pos = base + (bitpos >> 3)
        nacc = bitpos & 7
        acc = _U0
        if nacc:
            acc = np.uint64(arena[pos]) >> np.uint64(8 - nacc)
        num, t_last, tdelta, v, leading, trailing, byte_tail, pos, acc, nacc = encode_sample(
            ts_bits[j], vs_bits[j], num, t_last, tdelta, v, leading, trailing, byte_tail,
            arena, pos, acc, nacc)
        bitpos, _ = close_chunk(arena, base, pos, acc, nacc, num, byte_tail, True)
        store_row(xstate, r, num, t_last, tdelta, v, leading, trailing, bitpos, byte_tail)
    return OK, len(refs)


@njit(cache=True, nogil=True)
def plan_read(  # type: ignore[no-untyped-def]
    refs, mint, maxt, xstate, slot_off, c_mint, last_sealed,
    tab_mint, tab_maxt, tab_prev,
):
    """The chunks of ``refs`` overlapping ``[mint, maxt]``, oldest first per series.

    Returns ``(pos, index)``: ``pos[c]`` is the position in ``refs`` of chunk ``c``'s
    series and ``index[c]`` its row in the sealed table, or ``-1 - ref`` for the open
    chunk of series ``ref``.
    """
    total = 0
    for i in range(len(refs)):
        r = refs[i]
        if slot_off[r] >= 0 and xstate[r, ST_NUM] > 0:
            if c_mint[r] <= maxt and np.int64(xstate[r, ST_T]) >= mint:
                total += 1
        k = last_sealed[r]
        while k >= 0 and tab_maxt[k] >= mint:
            if tab_mint[k] <= maxt:
                total += 1
            k = tab_prev[k]
    pos = np.empty(total, np.int64)
    index = np.empty(total, np.int64)
    c = total
    for i in range(len(refs) - 1, -1, -1):
        r = refs[i]
        if slot_off[r] >= 0 and xstate[r, ST_NUM] > 0:
            if c_mint[r] <= maxt and np.int64(xstate[r, ST_T]) >= mint:
                c -= 1
                pos[c] = i
                index[c] = -1 - r
        k = last_sealed[r]
        while k >= 0 and tab_maxt[k] >= mint:
            if tab_mint[k] <= maxt:
                c -= 1
                pos[c] = i
                index[c] = k
            k = tab_prev[k]
    return pos, index


@njit(cache=True, nogil=True)
def plan_copies(  # type: ignore[no-untyped-def]
    refs, mint, maxt, xstate, slot_off, c_mint, last_sealed, tab_mint, tab_maxt, tab_prev,
    tab_len, tab_loc, arena, last_page, last_view,
):
    """``plan_read``, then the chunks' time ranges and byte offsets in one blob, the
    open chunks and the sealed ones in page ``last_page`` (mapped as ``last_view``, the
    page being filled, which holds the newest sealed chunks) copied into it. Returns
    ``(pos, cmin, cmax, offsets, blob, page, src)``: chunk ``c`` is still to be copied
    from ``src[c]`` in page ``page[c]`` where that is not -1."""
    pos, index = plan_read(refs, mint, maxt, xstate, slot_off, c_mint, last_sealed,
                           tab_mint, tab_maxt, tab_prev)
    n = len(index)
    cmin = np.empty(n, np.int64)
    cmax = np.empty(n, np.int64)
    offsets = np.zeros(n + 1, np.int64)
    page = np.full(n, -1, np.int64)
    src = np.empty(n, np.int64)
    for c in range(n):
        k = index[c]
        if k >= 0:
            cmin[c] = tab_mint[k]
            cmax[c] = tab_maxt[k]
            length = tab_len[k]
            page[c] = tab_loc[k] >> PAGE_BITS
            src[c] = tab_loc[k] & (PAGE_SIZE - 1)
        else:
            r = -1 - k
            cmin[c] = c_mint[r]
            cmax[c] = np.int64(xstate[r, ST_T])
            length = length_of(xstate[r, ST_BITPOS], xstate[r, ST_BYTE_TAIL], True)  # 2.x
            src[c] = slot_off[r]
        offsets[c + 1] = offsets[c] + length
    blob = np.empty(offsets[n], np.uint8)
    for c in range(n):
        if page[c] < 0:
            blob[offsets[c]:offsets[c + 1]] = arena[src[c]:src[c] + offsets[c + 1] - offsets[c]]
        elif page[c] == last_page:
            blob[offsets[c]:offsets[c + 1]] = last_view[src[c]:src[c] + offsets[c + 1] - offsets[c]]
            page[c] = -1
    return pos, cmin, cmax, offsets, blob, page, src


@njit(cache=True, nogil=True)
def copy_chunks(src, src_off, lengths, dst, dst_off, select):  # type: ignore[no-untyped-def]
    """``dst[dst_off[c]:…] = src[src_off[c]:…]`` for each chunk ``c`` in ``select``."""
    for c in select:
        n = lengths[c]
        d = dst_off[c]
        s = src_off[c]
        dst[d:d + n] = src[s:s + n]


@njit(cache=True, nogil=True)
def relink(keep_ref, keep_prev_old, old_to_new, last_sealed):  # type: ignore[no-untyped-def]
    """Rebuild the per-series chunk lists after dropping rows of the sealed table:
    returns the new ``prev`` column and updates ``last_sealed`` in place."""
    n = len(keep_ref)
    prev = np.empty(n, np.int64)
    for k in range(n):
        p = keep_prev_old[k]
        prev[k] = old_to_new[p] if p >= 0 else -1
    for k in range(n):
        last_sealed[keep_ref[k]] = k
    return prev
