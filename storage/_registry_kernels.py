"""numba kernels behind ``storage.series.SeriesRegistry``: interning tables in flat arrays.

Three open-addressing hash tables (linear probing, power-of-two sizes, -1 = empty slot):
symbols (label names and values, bytes in one arena), label pairs (name symbol, value
symbol) and series (a sequence of pair ids). The caller guarantees capacity before each
call, so kernels never allocate.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._label_kernels import _SEED, _hash_label, _mix, bytes_equal, hash_bytes

# Indices into the ``counters`` array shared by the kernels and the Python wrapper.
N_SYMBOLS = 0
ARENA_USED = 1
N_SERIES = 2
N_LABELS = 3
N_PAIRS = 4


@njit(cache=True, nogil=True)
def _find_symbol(buf, off, length, h, arena, sym_off, sym_len, sym_hash, sym_slots):
    """(symbol id or -1, the slot where probing stopped) for ``buf[off:off+length]``."""
    mask = len(sym_slots) - 1
    slot = np.int64(h & np.uint64(mask))
    while True:
        s = sym_slots[slot]
        if s < 0:
            return -1, slot
        if sym_hash[s] == h and _symbol_equals(buf, off, length, arena, sym_off, sym_len, s):
            return s, slot
        slot = (slot + 1) & mask


@njit(cache=True, nogil=True)
def _intern_symbol(
    buf, off, length, arena, sym_off, sym_len, sym_hash, sym_slots, counters
) -> int:
    h = hash_bytes(buf, off, length)
    s, slot = _find_symbol(buf, off, length, h, arena, sym_off, sym_len, sym_hash, sym_slots)
    if s >= 0:
        return s
    s = counters[N_SYMBOLS]
    base = counters[ARENA_USED]
    arena[base:base + length] = buf[off:off + length]
    sym_off[s] = base
    sym_len[s] = length
    sym_hash[s] = h
    sym_slots[slot] = s
    counters[N_SYMBOLS] = s + 1
    counters[ARENA_USED] = base + length
    return s


@njit(cache=True, nogil=True)
def _intern_pair(name_sym, value_sym, pair_key, pair_slots, counters) -> int:
    key = (np.int64(name_sym) << 32) | np.int64(value_sym)
    mask = len(pair_slots) - 1
    slot = np.int64(_mix(np.uint64(key)) & np.uint64(mask))
    while True:
        p = pair_slots[slot]
        if p < 0:
            break
        if pair_key[p] == key:
            return p
        slot = (slot + 1) & mask
    p = counters[N_PAIRS]
    pair_key[p] = key
    pair_slots[slot] = p
    counters[N_PAIRS] = p + 1
    return p


@njit(cache=True, nogil=True)
def _symbol_equals(buf, off, length, arena, sym_off, sym_len, s) -> bool:
    return sym_len[s] == length and bytes_equal(arena.ctypes.data + sym_off[s],
                                                buf.ctypes.data + off, length)


@njit(cache=True, nogil=True, inline="always")
def _find_series(
    buf, name_off, name_len, value_off, value_len, order, lo, hi, h,
    arena, sym_off, sym_len, pair_key, lab_start, lab_pair, ser_hash, ser_slots, n_series,
):
    """(ref or -1, the slot where probing stopped) of the series whose labels are
    ``order[lo:hi]`` (indices into the name/value columns, in canonical order).

    Slots holding refs at or above ``n_series`` are passed over: a reader without the
    lock sees them while a writer is adding that series. Label bytes are compared
    through their addresses (see ``_memory_kernels``).
    """
    mask = len(ser_slots) - 1
    slot = np.int64(h & np.uint64(mask))
    n_labels = hi - lo
    at_buf, at_arena = buf.ctypes.data, arena.ctypes.data
    while True:
        r = ser_slots[slot]
        if r < 0:
            return -1, slot
        same = (r < n_series and ser_hash[r] == h
                and lab_start[r + 1] - lab_start[r] == n_labels)
        q = 0
        while same and q < n_labels:
            j = order[lo + q]
            key = pair_key[lab_pair[lab_start[r] + q]]
            ns, vs = key >> 32, key & 0xFFFFFFFF
            same = (sym_len[ns] == name_len[j] and sym_len[vs] == value_len[j]
                    and bytes_equal(at_arena + sym_off[ns], at_buf + name_off[j], name_len[j])
                    and bytes_equal(at_arena + sym_off[vs], at_buf + value_off[j],
                                    value_len[j]))
            q += 1
        if same:
            return r, slot
        slot = (slot + 1) & mask


@njit(cache=True, nogil=True)
def find_sent(
    buf, label_start, name_off, name_len, value_off, value_len,
    max_labels, max_name_len, max_value_len, identity,
    arena, sym_off, sym_len, pair_key, lab_start, lab_pair, ser_hash, ser_slots, n_series,
    refs,
) -> None:
    """``refs[i]``: the ref of the series among the first ``n_series`` whose labels are
    exactly series ``i``'s labels as sent (same order, none empty, within the limits),
    or -1. Such a label set is valid and canonical, since the stored one is, so it
    needs no validation. ``identity`` is ``arange(len(name_off))``. Only reads, so it
    runs without the lock on a snapshot's arrays."""
    base, size = buf.ctypes.data, len(buf)
    for i in range(len(label_start) - 1):
        refs[i] = -1
        lo, hi = label_start[i], label_start[i + 1]
        ok = hi - lo <= max_labels
        h = _SEED
        j = lo
        while ok and j < hi:
            ok = 0 < value_len[j] <= max_value_len and name_len[j] <= max_name_len
            h = _hash_label(h, base, size, name_off[j], name_len[j], value_off[j],
                            value_len[j])
            j += 1
        if ok:
            refs[i] = _find_series(
                buf, name_off, name_len, value_off, value_len, identity, lo, hi, _mix(h),
                arena, sym_off, sym_len, pair_key, lab_start, lab_pair, ser_hash, ser_slots,
                n_series)[0]


@njit(cache=True, nogil=True)
def get_or_create(
    buf, name_off, name_len, value_off, value_len,
    order, canon_start, status, hashes,
    arena, sym_off, sym_len, sym_hash, sym_slots,
    pair_key, pair_slots,
    lab_start, lab_pair, ser_hash, ser_slots,
    counters, max_series, known, refs, created,
) -> None:
    """Resolve each valid series of a batch to its ref, creating the series that are new.

    ``known[i]`` is a ref already found (see ``find_sent``), taken as it is, or -1.
    ``refs[i]`` is -1 for a series whose ``status`` is not 0, or -2 when creating it would
    pass ``max_series``. ``created[i]`` is 1 for series this call created.
    """
    for i in range(len(hashes)):
        created[i] = 0
        if known[i] >= 0:
            refs[i] = known[i]
            continue
        if status[i] != 0:
            refs[i] = -1
            continue
        h = hashes[i]
        found, slot = _find_series(
            buf, name_off, name_len, value_off, value_len,
            order, canon_start[i], canon_start[i + 1], h,
            arena, sym_off, sym_len, pair_key, lab_start, lab_pair, ser_hash, ser_slots,
            counters[N_SERIES])
        if found >= 0:
            refs[i] = found
            continue
        if counters[N_SERIES] >= max_series:
            refs[i] = -2
            continue
        r = counters[N_SERIES]
        pos = counters[N_LABELS]
        lab_start[r] = pos
        for k in range(canon_start[i], canon_start[i + 1]):
            j = order[k]
            ns = _intern_symbol(buf, name_off[j], name_len[j], arena, sym_off, sym_len,
                                sym_hash, sym_slots, counters)
            vs = _intern_symbol(buf, value_off[j], value_len[j], arena, sym_off, sym_len,
                                sym_hash, sym_slots, counters)
            lab_pair[pos] = _intern_pair(ns, vs, pair_key, pair_slots, counters)
            pos += 1
        lab_start[r + 1] = pos
        ser_hash[r] = h
        ser_slots[slot] = r
        counters[N_LABELS] = pos
        counters[N_SERIES] = r + 1
        refs[i] = r
        created[i] = 1


@njit(cache=True, nogil=True)
def unmapped_symbols(symbol_map, names, values, sym_len):
    """How many distinct symbols of ``names`` and ``values`` ``symbol_map`` does not
    translate yet (-1), and their bytes."""
    seen = np.zeros(len(symbol_map), np.bool_)
    count, size = _mark_unmapped(symbol_map, names, sym_len, seen)
    more, more_size = _mark_unmapped(symbol_map, values, sym_len, seen)
    return count + more, size + more_size


@njit(cache=True, nogil=True, inline="always")
def _mark_unmapped(symbol_map, ids, sym_len, seen):
    count, size = 0, 0
    for s in ids:
        if symbol_map[s] < 0 and not seen[s]:
            seen[s] = True
            count += 1
            size += sym_len[s]
    return count, size


@njit(cache=True, nogil=True)
def resolve_labels(
    src, src_off, src_len, lab_start, lab_name, lab_value, symbol_map,
    arena, sym_off, sym_len, sym_hash, sym_slots,
    pair_key, pair_slots,
    reg_start, lab_pair, ser_hash, ser_slots,
    counters, refs, created,
) -> None:
    """Resolve label sets written in another index's symbols (labels
    ``lab_start[i]:lab_start[i+1]``, name and value ids of strings
    ``src[src_off[s]:src_off[s]+src_len[s]]``, in label-name order), creating the new ones.

    ``symbol_map`` translates that index's symbol ids into this registry's (-1: not yet)
    and is filled in as strings are met, so each string is hashed once per index. A
    set's hash is the one ``labels.canonicalise`` gives its bytes; with symbols and pairs
    interned, two sets are equal when their pair ids are, so no label bytes are compared.
    A set's pairs are written past the registry's labels first and kept only if the set
    is new.
    """
    base, size = src.ctypes.data, len(src)
    for i in range(len(lab_start) - 1):
        lo, hi = lab_start[i], lab_start[i + 1]
        pos = counters[N_LABELS]
        h = _SEED
        for j in range(lo, hi):
            ns, vs = lab_name[j], lab_value[j]
            qn, qv = symbol_map[ns], symbol_map[vs]
            if qn < 0:
                qn = _intern_symbol(src, src_off[ns], src_len[ns], arena, sym_off, sym_len,
                                    sym_hash, sym_slots, counters)
                symbol_map[ns] = qn
            if qv < 0:
                qv = _intern_symbol(src, src_off[vs], src_len[vs], arena, sym_off, sym_len,
                                    sym_hash, sym_slots, counters)
                symbol_map[vs] = qv
            lab_pair[pos + j - lo] = _intern_pair(qn, qv, pair_key, pair_slots, counters)
            h = _hash_label(h, base, size, src_off[ns], src_len[ns], src_off[vs], src_len[vs])
        h = _mix(h)
        n_labels = hi - lo
        mask = len(ser_slots) - 1
        slot = np.int64(h & np.uint64(mask))
        found = -1
        while found < 0:
            r = ser_slots[slot]
            if r < 0:
                break
            if ser_hash[r] == h and reg_start[r + 1] - reg_start[r] == n_labels:
                q = 0
                while q < n_labels and lab_pair[reg_start[r] + q] == lab_pair[pos + q]:
                    q += 1
                if q == n_labels:
                    found = r
                    break
            slot = (slot + 1) & mask
        created[i] = 0
        if found >= 0:
            refs[i] = found
            continue
        r = counters[N_SERIES]
        reg_start[r] = pos
        reg_start[r + 1] = pos + n_labels
        ser_hash[r] = h
        ser_slots[slot] = r
        counters[N_LABELS] = pos + n_labels
        counters[N_SERIES] = r + 1
        refs[i] = r
        created[i] = 1


@njit(cache=True, nogil=True)
def rehash_by_hash(hashes, n, slots) -> None:
    """Fill an empty slot table with items ``0..n-1`` keyed by their stored hashes."""
    slots[:] = -1
    mask = len(slots) - 1
    for s in range(n):
        slot = np.int64(hashes[s] & np.uint64(mask))
        while slots[slot] >= 0:
            slot = (slot + 1) & mask
        slots[slot] = s


@njit(cache=True, nogil=True)
def rehash_pairs(pair_key, n, slots) -> None:
    """Fill an empty slot table with pairs ``0..n-1``."""
    slots[:] = -1
    mask = len(slots) - 1
    for p in range(n):
        slot = np.int64(_mix(np.uint64(pair_key[p])) & np.uint64(mask))
        while slots[slot] >= 0:
            slot = (slot + 1) & mask
        slots[slot] = p


@njit(cache=True, nogil=True)
def lookup_symbol(buf, off, length, arena, sym_off, sym_len, sym_hash, sym_slots) -> int:
    """Symbol id of ``buf[off:off+length]``, or -1 when it was never interned."""
    h = hash_bytes(buf, off, length)
    return _find_symbol(buf, off, length, h, arena, sym_off, sym_len, sym_hash, sym_slots)[0]


@njit(cache=True, nogil=True)
def build_postings(lab_pair, lab_start, n_series, n_pairs, offsets, refs) -> None:
    """Counting sort of (pair, series) entries into CSR: refs of pair p are
    ``refs[offsets[p]:offsets[p+1]]``, ascending because series are visited in order."""
    offsets[:] = 0
    n_labels = lab_start[n_series]
    for k in range(n_labels):
        offsets[lab_pair[k] + 1] += 1
    for p in range(n_pairs):
        offsets[p + 1] += offsets[p]
    fill = offsets[:n_pairs].copy()
    for r in range(n_series):
        for k in range(lab_start[r], lab_start[r + 1]):
            p = lab_pair[k]
            refs[fill[p]] = r
            fill[p] += 1


@njit(cache=True, nogil=True)
def gather_ranges(offsets, values, ids) -> np.ndarray:
    """Concatenation of ``values[offsets[i]:offsets[i+1]]`` for each i in ``ids``."""
    total = 0
    for i in ids:
        total += offsets[i + 1] - offsets[i]
    out = np.empty(total, dtype=values.dtype)
    pos = 0
    for i in ids:
        n = offsets[i + 1] - offsets[i]
        out[pos:pos + n] = values[offsets[i]:offsets[i + 1]]
        pos += n
    return out


@njit(cache=True, nogil=True)
def mark_distinct(ids, n):
    """The distinct values of ``ids`` (each in ``[0, n)``), ascending, and the position
    of each entry's value among them, found by marking the values."""
    position = np.zeros(n, np.int64)
    for s in ids:
        position[s] = 1
    k = 0
    for s in range(n):
        if position[s]:
            position[s] = k
            k += 1
        else:
            position[s] = -1
    distinct = np.empty(k, np.int64)
    at = np.empty(len(ids), np.int64)
    for i in range(len(ids)):
        at[i] = position[ids[i]]
        distinct[at[i]] = ids[i]
    return distinct, at


@njit(cache=True, nogil=True)
def label_rows(lab_start, refs, name_rank, value_rank, n_names, n_values):
    """The label table of the series ``refs``, whose labels (in name order) are
    ``name_rank``/``value_rank`` back to back: ``rows[i, name] = value`` (-1 where
    absent), and a sort key per label position (name, then value; -1 past a set's
    end, so that a set sorts before the longer sets it begins)."""
    n = len(refs)
    width = 0
    for i in range(n):
        width = max(width, lab_start[refs[i] + 1] - lab_start[refs[i]])
    rows = np.full((n, n_names), -1, np.int32)
    key = np.full((n, width), -1, np.int64)
    at = 0
    for i in range(n):
        for j in range(lab_start[refs[i] + 1] - lab_start[refs[i]]):
            rows[i, name_rank[at]] = value_rank[at]
            key[i, j] = name_rank[at] * n_values + value_rank[at]
            at += 1
    return rows, key


@njit(cache=True, nogil=True)
def carrying(lab_start, lab_pair, refs, pairs):
    """Which of the series ``refs`` carry any of the pair ids ``pairs`` (sorted), found
    in the series' own labels."""
    out = np.zeros(len(refs), np.bool_)
    for i in range(len(refs)):
        for j in range(lab_start[refs[i]], lab_start[refs[i] + 1]):
            at = np.searchsorted(pairs, lab_pair[j])
            if at < len(pairs) and pairs[at] == lab_pair[j]:
                out[i] = True
                break
    return out


@njit(cache=True, nogil=True)
def lookup_pair(name_sym, value_sym, pair_key, pair_slots) -> int:
    """Pair id of (name symbol, value symbol), or -1 when no series has that label."""
    key = (np.int64(name_sym) << 32) | np.int64(value_sym)
    mask = len(pair_slots) - 1
    slot = np.int64(_mix(np.uint64(key)) & np.uint64(mask))
    while True:
        p = pair_slots[slot]
        if p < 0:
            return -1
        if pair_key[p] == key:
            return p
        slot = (slot + 1) & mask


@njit(cache=True, nogil=True)
def series_keys(refs, lab_start, lab_pair, pair_key, arena, sym_off, sym_len):
    """Canonical keys of ``refs`` (name 0xFF value 0xFF, label after label) as one blob
    plus ``len(refs) + 1`` offsets."""
    offsets = np.empty(len(refs) + 1, dtype=np.int64)
    total = 0
    for i in range(len(refs)):
        offsets[i] = total
        r = refs[i]
        for j in range(lab_start[r], lab_start[r + 1]):
            key = pair_key[lab_pair[j]]
            total += sym_len[key >> 32] + sym_len[key & 0xFFFFFFFF] + 2
    offsets[len(refs)] = total
    blob = np.empty(total, dtype=np.uint8)
    pos = 0
    for i in range(len(refs)):
        r = refs[i]
        for j in range(lab_start[r], lab_start[r + 1]):
            key = pair_key[lab_pair[j]]
            for s in (key >> 32, key & 0xFFFFFFFF):
                n = sym_len[s]
                blob[pos:pos + n] = arena[sym_off[s]:sym_off[s] + n]
                blob[pos + n] = 0xFF
                pos += n + 1
    return blob, offsets
