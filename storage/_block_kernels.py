"""numba kernels behind the block format (``storage.block_index``, ``storage.block_chunks``).

Everything that loops over symbols, series, chunk metas, postings or chunk records lives
here: varint encoding and decoding, CRC32-Castagnoli, sorting label sets, gathering
chunk bytes out of a memory map. Byte layouts are drawn in ``docs/format.md``
("Blocks").

Readers take hostile input: every read is bounded by an explicit end, and a kernel that
meets something malformed stops and returns a status code (below) with the file offset
where it stopped; the Python side turns that into a ``CorruptionError``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._label_kernels import hash_bytes

# Status codes returned by the reading kernels.
RECORD_OVERHEAD = 16  # a chunk record's bytes around its data, at most (length, encoding, CRC)
OK = 0
TRUNCATED = 1  # a field runs past the end of its section or file
BAD_VARINT = 2  # a varint longer than 10 bytes or wider than 64 bits
BAD_CHECKSUM = 3
BAD_SYMBOL = 4  # a symbol reference beyond the symbol table
BAD_LENGTH = 5  # a count or length that does not fit the bytes around it
UNSORTED = 6  # entries that must be strictly ascending are not
BAD_ENTRY = 7  # an offset-table entry with a key count other than the expected one

_MASK32 = 0xFFFFFFFF


def _crc_tables() -> np.ndarray:
    """Slicing-by-8 tables for CRC32-C (reflected polynomial 0x82F63B78), as int64."""
    t = np.zeros((8, 256), dtype=np.int64)
    c = np.arange(256, dtype=np.int64)
    for _ in range(8):
        c = np.where(c & 1, (c >> 1) ^ 0x82F63B78, c >> 1)
    t[0] = c
    for k in range(1, 8):
        t[k] = (t[k - 1] >> 8) ^ t[0][t[k - 1] & 0xFF]
    return t


_CRC = _crc_tables()


@njit(cache=True, nogil=True)
def crc32c(buf, start, end):
    """CRC32-C of ``buf[start:end]`` (the checksum every block file uses)."""
    t = _CRC
    crc = np.int64(_MASK32)
    k = start
    while k + 8 <= end:
        lo = crc ^ (np.int64(buf[k]) | (np.int64(buf[k + 1]) << 8)
                    | (np.int64(buf[k + 2]) << 16) | (np.int64(buf[k + 3]) << 24))
        crc = (t[7, lo & 0xFF] ^ t[6, (lo >> 8) & 0xFF] ^ t[5, (lo >> 16) & 0xFF]
               ^ t[4, (lo >> 24) & 0xFF] ^ t[3, buf[k + 4]] ^ t[2, buf[k + 5]]
               ^ t[1, buf[k + 6]] ^ t[0, buf[k + 7]])
        k += 8
    while k < end:
        crc = t[0, (crc ^ buf[k]) & 0xFF] ^ (crc >> 8)
        k += 1
    return crc ^ _MASK32


# --------------------------------------------------------------------------- primitives


@njit(cache=True, nogil=True, inline="always")
def _be32(buf, p):
    return ((np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16)
            | (np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3]))


@njit(cache=True, nogil=True, inline="always")
def _put_be32(out, p, x):
    out[p] = (x >> 24) & 0xFF
    out[p + 1] = (x >> 16) & 0xFF
    out[p + 2] = (x >> 8) & 0xFF
    out[p + 3] = x & 0xFF
    return p + 4


@njit(cache=True, nogil=True, inline="always")
def _uvarint_size(x):
    """Bytes the uvarint of ``x`` (an int64 taken as its uint64 bits) takes."""
    u = np.uint64(x)
    n = 1
    while u >= np.uint64(0x80):
        u >>= np.uint64(7)
        n += 1
    return n


@njit(cache=True, nogil=True, inline="always")
def _put_uvarint(out, p, x):
    u = np.uint64(x)
    while u >= np.uint64(0x80):
        out[p] = np.uint8((u & np.uint64(0x7F)) | np.uint64(0x80))
        u >>= np.uint64(7)
        p += 1
    out[p] = np.uint8(u)
    return p + 1


@njit(cache=True, nogil=True, inline="always")
def _zigzag(x):
    return (np.int64(x) << 1) ^ (np.int64(x) >> 63)


@njit(cache=True, nogil=True, inline="always")
def _get_uvarint(buf, p, end):
    """(value as int64 bits, next position); the position is -1 for a truncated
    varint and -2 for one over 64 bits."""
    x = np.uint64(0)
    shift = np.uint64(0)
    for i in range(10):
        if p >= end:
            return np.int64(0), -1
        b = np.uint64(buf[p])
        p += 1
        if b < np.uint64(0x80):
            if i == 9 and b > np.uint64(1):
                return np.int64(0), -2
            return np.int64(x | (b << shift)), p
        x |= (b & np.uint64(0x7F)) << shift
        shift += np.uint64(7)
    return np.int64(0), -2


@njit(cache=True, nogil=True, inline="always")
def _unzigzag(u):
    return np.int64(np.uint64(u) >> np.uint64(1)) ^ -(np.int64(u) & 1)


@njit(cache=True, nogil=True, inline="always")
def _varint_status(p):
    return TRUNCATED if p == -1 else BAD_VARINT


@njit(cache=True, nogil=True)
def _compare(a, a0, a1, b, b0, b1):
    """-1, 0 or 1 as ``a[a0:a1]`` sorts before, with or after ``b[b0:b1]``, element by
    element; a sequence that is a prefix of the other sorts first."""
    n = min(a1 - a0, b1 - b0)
    for k in range(n):
        x = a[a0 + k]
        y = b[b0 + k]
        if x != y:
            return -1 if x < y else 1
    la = a1 - a0
    lb = b1 - b0
    if la == lb:
        return 0
    return -1 if la < lb else 1


# --------------------------------------------------------------------------- sorting


@njit(cache=True, nogil=True)
def intern_strings(buf, starts, lens):
    """Deduplicate the byte strings ``buf[starts[i]:starts[i]+lens[i]]``: returns the
    distinct id of every string and, per distinct id, the index of its first occurrence."""
    n = len(starts)
    size = 16
    while size < 2 * n:
        size *= 2
    mask = size - 1
    slots = np.full(size, -1, dtype=np.int64)
    first = np.empty(n, dtype=np.int64)
    hashes = np.empty(n, dtype=np.uint64)
    ids = np.empty(n, dtype=np.int64)
    n_distinct = 0
    for i in range(n):
        h = hash_bytes(buf, starts[i], lens[i])
        slot = np.int64(h & np.uint64(mask))
        while True:
            s = slots[slot]
            if s < 0:
                slots[slot] = n_distinct
                first[n_distinct] = i
                hashes[n_distinct] = h
                ids[i] = n_distinct
                n_distinct += 1
                break
            j = first[s]
            if hashes[s] == h and _compare(buf, starts[i], starts[i] + lens[i],
                                           buf, starts[j], starts[j] + lens[j]) == 0:
                ids[i] = s
                break
            slot = (slot + 1) & mask
    return ids, first[:n_distinct].copy()


@njit(cache=True, nogil=True)
def lex_argsort(data, starts, ends):
    """Stable order of the sequences ``data[starts[i]:ends[i]]`` (bytes or integers),
    element by element, shorter-prefix first: a bottom-up merge sort."""
    n = len(starts)
    src = np.arange(n, dtype=np.int64)
    dst = np.empty(n, dtype=np.int64)
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                a, b = src[i], src[j]
                if _compare(data, starts[b], ends[b], data, starts[a], ends[a]) < 0:
                    dst[k] = b
                    j += 1
                else:
                    dst[k] = a
                    i += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
        src, dst = dst, src
        width *= 2
    return src


@njit(cache=True, nogil=True)
def first_repeat(data, starts, ends, order):
    """Position in ``order`` of the first sequence equal to its predecessor, or -1."""
    for k in range(1, len(order)):
        a, b = order[k - 1], order[k]
        if _compare(data, starts[a], ends[a], data, starts[b], ends[b]) == 0:
            return k
    return -1


# --------------------------------------------------------------------------- index writing


@njit(cache=True, nogil=True)
def encode_strings(src, starts, lens):
    """The strings ``src[starts[i]:starts[i]+lens[i]]``, each behind its uvarint length."""
    total = 0
    for i in range(len(starts)):
        total += _uvarint_size(lens[i]) + lens[i]
    out = np.empty(total, dtype=np.uint8)
    p = 0
    for i in range(len(starts)):
        p = _put_uvarint(out, p, lens[i])
        out[p:p + lens[i]] = src[starts[i]:starts[i] + lens[i]]
        p += lens[i]
    return out


@njit(cache=True, nogil=True)
def encode_offset_entries(src, name_start, name_len, value_start, value_len, offsets, keys):
    """Offset-table entries: uvarint ``keys`` (1 or 2), the name, the value when
    ``keys`` is 2 (each a uvarint length and bytes), then the uvarint64 offset."""
    n = len(name_start)
    total = 0
    for i in range(n):
        total += 1 + _uvarint_size(name_len[i]) + name_len[i] + _uvarint_size(offsets[i])
        if keys == 2:
            total += _uvarint_size(value_len[i]) + value_len[i]
    out = np.empty(total, dtype=np.uint8)
    p = 0
    for i in range(n):
        p = _put_uvarint(out, p, keys)
        p = _put_uvarint(out, p, name_len[i])
        out[p:p + name_len[i]] = src[name_start[i]:name_start[i] + name_len[i]]
        p += name_len[i]
        if keys == 2:
            p = _put_uvarint(out, p, value_len[i])
            out[p:p + value_len[i]] = src[value_start[i]:value_start[i] + value_len[i]]
            p += value_len[i]
        p = _put_uvarint(out, p, offsets[i])
    return out


@njit(cache=True, nogil=True)
def encode_series(base, lab_start, lab_syms, chk_start, chk_mint, chk_maxt, chk_ref, align,
                  time_base):
    """The series section, written at file offset ``base``: per series, zero padding to
    a multiple of ``align`` (16 in format 2, 1 in the compact format), uvarint body
    length, body, CRC32-C of the body. The body holds the label count and (name, value)
    symbol refs (``lab_syms`` interleaved), then the chunk count and the delta-coded
    chunk metas, the first mint relative to ``time_base`` (0 in format 2). Returns the
    bytes and each entry's offset."""
    n = len(lab_start) - 1
    bodies = np.empty(n, dtype=np.int64)
    total = 0
    for s in range(n):
        size = _uvarint_size(lab_start[s + 1] - lab_start[s])
        for k in range(2 * lab_start[s], 2 * lab_start[s + 1]):
            size += _uvarint_size(lab_syms[k])
        c0, c1 = chk_start[s], chk_start[s + 1]
        size += _uvarint_size(c1 - c0)
        for c in range(c0, c1):
            if c == c0:
                size += (_uvarint_size(_zigzag(chk_mint[c] - time_base))
                         + _uvarint_size(chk_ref[c]))
            else:
                size += (_uvarint_size(chk_mint[c] - chk_maxt[c - 1])
                         + _uvarint_size(_zigzag(chk_ref[c] - chk_ref[c - 1])))
            size += _uvarint_size(chk_maxt[c] - chk_mint[c])
        bodies[s] = size
        total += align - 1 + _uvarint_size(size) + size + 4
    out = np.zeros(total, dtype=np.uint8)
    entry = np.empty(n, dtype=np.int64)
    p = 0
    for s in range(n):
        p += (-(base + p)) % align
        entry[s] = base + p
        p = _put_uvarint(out, p, bodies[s])
        body = p
        p = _put_uvarint(out, p, lab_start[s + 1] - lab_start[s])
        for k in range(2 * lab_start[s], 2 * lab_start[s + 1]):
            p = _put_uvarint(out, p, lab_syms[k])
        c0, c1 = chk_start[s], chk_start[s + 1]
        p = _put_uvarint(out, p, c1 - c0)
        for c in range(c0, c1):
            if c == c0:
                p = _put_uvarint(out, p, _zigzag(chk_mint[c] - time_base))
                p = _put_uvarint(out, p, chk_maxt[c] - chk_mint[c])
                p = _put_uvarint(out, p, chk_ref[c])
            else:
                p = _put_uvarint(out, p, chk_mint[c] - chk_maxt[c - 1])
                p = _put_uvarint(out, p, chk_maxt[c] - chk_mint[c])
                p = _put_uvarint(out, p, _zigzag(chk_ref[c] - chk_ref[c - 1]))
        p = _put_be32(out, p, crc32c(out, body, p))
    return out[:p].copy(), entry


@njit(cache=True, nogil=True)
def encode_pair_entries(names, values, offsets):
    """Postings offset table entries of the compact format for pairs sorted by (name,
    value) symbol id, with ascending offsets: per pair the uvarint name id minus the
    previous one, the uvarint value id (minus the previous one under the same name),
    and the uvarint offset minus the previous one."""
    out = np.empty(30 * len(names), dtype=np.uint8)
    p = 0
    name = np.int64(0)
    value = np.int64(0)
    offset = np.int64(0)
    for i in range(len(names)):
        p = _put_uvarint(out, p, names[i] - name)
        p = _put_uvarint(out, p, values[i] - value if names[i] == name and i else values[i])
        p = _put_uvarint(out, p, offsets[i] - offset)
        name, value, offset = names[i], values[i], offsets[i]
    return out[:p].copy()


@njit(cache=True, nogil=True)
def encode_u32_lists(base, starts, values, one_name):
    """Lists of big-endian uint32 (postings, or label indices when ``one_name``), written
    at file offset ``base``: per list, zero padding to a multiple of 4, BE32 length,
    [BE32 1 when ``one_name``], BE32 count, the values, CRC32-C of everything after the
    length. Returns the bytes and each list's (padded) offset."""
    n = len(starts) - 1
    head = 12 if one_name else 8
    out = np.zeros(n * (3 + head + 4) + 4 * (starts[n] - starts[0]), dtype=np.uint8)
    pos = np.empty(n, dtype=np.int64)
    p = 0
    for i in range(n):
        p += (-(base + p)) % 4
        pos[i] = base + p
        count = starts[i + 1] - starts[i]
        p = _put_be32(out, p, head - 4 + 4 * count)
        body = p
        if one_name:
            p = _put_be32(out, p, 1)
        p = _put_be32(out, p, count)
        for k in range(starts[i], starts[i + 1]):
            p = _put_be32(out, p, values[k])
        p = _put_be32(out, p, crc32c(out, body, p))
    return out[:p].copy(), pos


# --------------------------------------------------------------------------- index reading


@njit(cache=True, nogil=True)
def parse_symbols(buf, start, end, count):
    """Offsets and lengths of the ``count`` uvarint-prefixed strings filling
    ``buf[start:end]``; they must be strictly ascending.
    Returns ``(offsets, lengths, status, position)``."""
    offs = np.empty(count, dtype=np.int64)
    lens = np.empty(count, dtype=np.int64)
    p = start
    for i in range(count):
        n, q = _get_uvarint(buf, p, end)
        if q < 0:
            return offs, lens, _varint_status(q), p
        if n < 0 or n > end - q:
            return offs, lens, TRUNCATED, p
        offs[i] = q
        lens[i] = n
        if i > 0 and _compare(buf, offs[i - 1], offs[i - 1] + lens[i - 1],
                              buf, q, q + n) >= 0:
            return offs, lens, UNSORTED, p
        p = q + n
    if p != end:
        return offs, lens, BAD_LENGTH, p
    return offs, lens, OK, p


@njit(cache=True, nogil=True)
def parse_offset_table(buf, start, end, count, keys):
    """Entries of an offset table in ``buf[start:end]`` (see ``encode_offset_entries``).
    Returns ``(name_off, name_len, value_off, value_len, offset, status, position)``."""
    name_off = np.empty(count, dtype=np.int64)
    name_len = np.empty(count, dtype=np.int64)
    value_off = np.zeros(count, dtype=np.int64)
    value_len = np.zeros(count, dtype=np.int64)
    offset = np.empty(count, dtype=np.int64)
    p = start
    for i in range(count):
        k, q = _get_uvarint(buf, p, end)
        if q < 0:
            return name_off, name_len, value_off, value_len, offset, _varint_status(q), p
        if k != keys:
            return name_off, name_len, value_off, value_len, offset, BAD_ENTRY, p
        p = q
        for j in range(keys):
            n, q = _get_uvarint(buf, p, end)
            if q < 0:
                return name_off, name_len, value_off, value_len, offset, _varint_status(q), p
            if n < 0 or n > end - q:
                return name_off, name_len, value_off, value_len, offset, TRUNCATED, p
            if j == 0:
                name_off[i] = q
                name_len[i] = n
            else:
                value_off[i] = q
                value_len[i] = n
            p = q + n
        o, q = _get_uvarint(buf, p, end)
        if q < 0:
            return name_off, name_len, value_off, value_len, offset, _varint_status(q), p
        offset[i] = o
        p = q
    status = OK if p == end else BAD_LENGTH
    return name_off, name_len, value_off, value_len, offset, status, p


@njit(cache=True, nogil=True)
def parse_pair_entries(buf, start, end, count, n_symbols):
    """Entries of a compact postings offset table in ``buf[start:end]`` (see
    ``encode_pair_entries``); pairs must be strictly ascending and name symbols below
    ``n_symbols``. Returns ``(names, values, offsets, status, position)``."""
    names = np.empty(count, dtype=np.int64)
    values = np.empty(count, dtype=np.int64)
    offsets = np.empty(count, dtype=np.int64)
    name = np.int64(0)
    value = np.int64(0)
    offset = np.int64(0)
    p = start
    for i in range(count):
        a, q = _get_uvarint(buf, p, end)
        if q < 0:
            return names, values, offsets, _varint_status(q), p
        b, r = _get_uvarint(buf, q, end)
        if r < 0:
            return names, values, offsets, _varint_status(r), q
        c, t = _get_uvarint(buf, r, end)
        if t < 0:
            return names, values, offsets, _varint_status(t), r
        if a < 0 or b < 0 or c < 0 or a >= n_symbols or b >= n_symbols:
            return names, values, offsets, BAD_SYMBOL, p
        if i and a == 0:
            if b == 0:
                return names, values, offsets, UNSORTED, p
            b += value
        name += a
        offset += c
        if name >= n_symbols or b >= n_symbols or offset < 0:
            return names, values, offsets, BAD_SYMBOL, p
        value = b
        names[i], values[i], offsets[i] = name, value, offset
        p = t
    status = OK if p == end else BAD_LENGTH
    return names, values, offsets, status, p


@njit(cache=True, nogil=True)
def find_symbols(buf, sym_off, sym_len, qbuf, q_off, q_len):
    """Symbol ids of the strings ``qbuf[q_off[i]:q_off[i]+q_len[i]]`` by binary search in
    the sorted symbol table; -1 for strings that are not symbols."""
    out = np.empty(len(q_off), dtype=np.int64)
    for i in range(len(q_off)):
        lo, hi = 0, len(sym_off)
        a0, a1 = q_off[i], q_off[i] + q_len[i]
        out[i] = -1
        while lo < hi:
            mid = (lo + hi) // 2
            c = _compare(buf, sym_off[mid], sym_off[mid] + sym_len[mid], qbuf, a0, a1)
            if c == 0:
                out[i] = mid
                break
            if c < 0:
                lo = mid + 1
            else:
                hi = mid
    return out


@njit(cache=True, nogil=True)
def gather_strings(buf, offs, lens, ids):
    """The strings ``ids`` (an index into ``offs``/``lens``) back to back, with offsets."""
    bounds = np.empty(len(ids) + 1, dtype=np.int64)
    total = 0
    for i in range(len(ids)):
        bounds[i] = total
        total += lens[ids[i]]
    bounds[len(ids)] = total
    out = np.empty(total, dtype=np.uint8)
    for i in range(len(ids)):
        o = offs[ids[i]]
        out[bounds[i]:bounds[i + 1]] = buf[o:o + lens[ids[i]]]
    return out, bounds


@njit(cache=True, nogil=True)
def postings_counts(buf, limit, offsets):
    """Entry counts of the postings lists at ``offsets``, from their headers, each list
    checked to lie inside ``buf[:limit]`` (not against its checksum).
    Returns ``(counts, status, position)``."""
    counts = np.zeros(len(offsets), dtype=np.int64)
    for i in range(len(offsets)):
        o = offsets[i]
        if o < 0 or o + 8 > limit:
            return counts, TRUNCATED, o
        length = _be32(buf, o)
        count = _be32(buf, o + 4)
        if length != 4 + 4 * count:
            return counts, BAD_LENGTH, o
        if o + 8 + length > limit:
            return counts, TRUNCATED, o
        counts[i] = count
    return counts, OK, 0


@njit(cache=True, nogil=True)
def postings_checksums(buf, offsets, counts):
    """Check the checksums of the postings lists at ``offsets`` (bounds checked by
    ``postings_counts``). Returns ``(status, position)``."""
    for i in range(len(offsets)):
        o = offsets[i]
        end = o + 8 + 4 * counts[i]
        if crc32c(buf, o + 4, end) != _be32(buf, end):
            return BAD_CHECKSUM, o
    return OK, 0


@njit(cache=True, nogil=True)
def postings_contain(buf, offsets, counts, refs):
    """Which of the ascending ``refs`` are in any of the postings lists at ``offsets``
    (bounds checked by ``postings_counts``): a binary search in the list's bytes for
    each, without decoding it. Unsorted lists give wrong answers, never a bad read."""
    found = np.zeros(len(refs), dtype=np.bool_)
    for i in range(len(offsets)):
        base = offsets[i] + 8
        n = counts[i]
        lo = 0
        for j in range(len(refs)):
            if found[j]:
                continue
            r = refs[j]
            hi = n
            while lo < hi:
                mid = (lo + hi) >> 1
                if _be32(buf, base + 4 * mid) < r:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < n and _be32(buf, base + 4 * lo) == r:
                found[j] = True
    return found


@njit(cache=True, nogil=True)
def read_postings(buf, limit, offsets):
    """Concatenated postings lists found at ``offsets`` (each BE32 length, BE32 count,
    ascending BE32 refs, CRC32-C), all inside ``buf[:limit]``.
    Returns ``(refs, starts, status, position)``; list i is ``refs[starts[i]:starts[i+1]]``."""
    n = len(offsets)
    starts = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        o = offsets[i]
        if o < 0 or o + 8 > limit:
            return np.empty(0, dtype=np.int64), starts, TRUNCATED, o
        length = _be32(buf, o)
        count = _be32(buf, o + 4)
        if length != 4 + 4 * count:
            return np.empty(0, dtype=np.int64), starts, BAD_LENGTH, o
        if o + 8 + length > limit:
            return np.empty(0, dtype=np.int64), starts, TRUNCATED, o
        if crc32c(buf, o + 4, o + 4 + length) != _be32(buf, o + 4 + length):
            return np.empty(0, dtype=np.int64), starts, BAD_CHECKSUM, o
        starts[i + 1] = starts[i] + count
    refs = np.empty(starts[n], dtype=np.int64)
    for i in range(n):
        p = offsets[i] + 8
        for k in range(starts[i], starts[i + 1]):
            refs[k] = _be32(buf, p)
            if k > starts[i] and refs[k] <= refs[k - 1]:
                return refs, starts, UNSORTED, p
            p += 4
    return refs, starts, OK, 0


@njit(cache=True, nogil=True)
def decode_series(buf, limit, entry_off, ids, n_symbols, mint, maxt, time_base, want_labels):
    """Labels and chunk metas of the series ``ids`` (entries at ``entry_off[id]``),
    checking each entry's CRC32-C; a series' first chunk mint is stored relative to
    ``time_base``. Chunk metas are kept when they overlap ``[mint, maxt]`` (none are
    read when ``mint > maxt``); labels only when ``want_labels``. Returns
    ``(lab_start, lab_name, lab_value, chk_pos, chk_mint, chk_maxt, chk_ref, status,
    position)`` where series i's labels are ``lab_start[i]:lab_start[i+1]`` and
    ``chk_pos`` is the position in ``ids``."""
    n = len(ids)
    want_chunks = mint <= maxt
    lab_start = np.zeros(n + 1, dtype=np.int64)
    body = np.empty(n, dtype=np.int64)
    body_end = np.empty(n, dtype=np.int64)
    chunks_at = np.empty(n if want_chunks else 0, dtype=np.int64)
    n_labels = 0
    n_chunks = 0
    e64 = np.empty(0, dtype=np.int64)
    for i in range(n):
        o = entry_off[ids[i]]
        size, p = _get_uvarint(buf, o, limit)
        if p < 0:
            return lab_start, e64, e64, e64, e64, e64, e64, _varint_status(p), o
        if size < 0 or size > limit - p - 4:
            return lab_start, e64, e64, e64, e64, e64, e64, TRUNCATED, o
        if crc32c(buf, p, p + size) != _be32(buf, p + size):
            return lab_start, e64, e64, e64, e64, e64, e64, BAD_CHECKSUM, o
        body[i] = p
        body_end[i] = p + size
        # Counted exactly (labels skipped over only to reach the chunks) so that the
        # arrays below are the size of what they will hold, not a bound from the
        # entries' bytes: a fleet's label sets are read in one call.
        count, q = _get_uvarint(buf, p, p + size)
        if q < 0:
            return lab_start, e64, e64, e64, e64, e64, e64, _varint_status(q), p
        if count < 0 or count > (p + size - q) // 2:
            return lab_start, e64, e64, e64, e64, e64, e64, BAD_LENGTH, p
        if want_labels:
            n_labels += count
        if not want_chunks:
            continue
        for _ in range(2 * count):
            _, q = _get_uvarint(buf, q, p + size)
            if q < 0:
                return lab_start, e64, e64, e64, e64, e64, e64, _varint_status(q), p
        chunks_at[i] = q
        chunks, r = _get_uvarint(buf, q, p + size)
        if r < 0:
            return lab_start, e64, e64, e64, e64, e64, e64, _varint_status(r), q
        if chunks < 0 or chunks > (p + size - r) // 3:
            return lab_start, e64, e64, e64, e64, e64, e64, BAD_LENGTH, q
        n_chunks += chunks
    lab_name = np.empty(n_labels, dtype=np.int64)
    lab_value = np.empty(n_labels, dtype=np.int64)
    chk_pos = np.empty(n_chunks, dtype=np.int64)
    chk_mint = np.empty(n_chunks, dtype=np.int64)
    chk_maxt = np.empty(n_chunks, dtype=np.int64)
    chk_ref = np.empty(n_chunks, dtype=np.int64)
    nl = 0
    nc = 0
    for i in range(n):
        end = body_end[i]
        if want_labels:
            p = body[i]
            count, q = _get_uvarint(buf, p, end)
            p = q
            for _ in range(count):
                name, q = _get_uvarint(buf, p, end)
                if q < 0:
                    return lab_start, e64, e64, e64, e64, e64, e64, _varint_status(q), p
                value, r = _get_uvarint(buf, q, end)
                if r < 0:
                    return lab_start, e64, e64, e64, e64, e64, e64, _varint_status(r), q
                if name < 0 or name >= n_symbols or value < 0 or value >= n_symbols:
                    return lab_start, e64, e64, e64, e64, e64, e64, BAD_SYMBOL, p
                lab_name[nl] = name
                lab_value[nl] = value
                nl += 1
                p = r
            lab_start[i + 1] = nl
        if not want_chunks:
            continue
        p = chunks_at[i]
        count, q = _get_uvarint(buf, p, end)
        p = q
        t_max = np.int64(0)
        ref = np.int64(0)
        for c in range(count):
            a, q = _get_uvarint(buf, p, end)
            if q < 0:
                return lab_start, e64, e64, e64, e64, e64, e64, _varint_status(q), p
            d, r = _get_uvarint(buf, q, end)
            if r < 0:
                return lab_start, e64, e64, e64, e64, e64, e64, _varint_status(r), q
            x, s = _get_uvarint(buf, r, end)
            if s < 0:
                return lab_start, e64, e64, e64, e64, e64, e64, _varint_status(s), r
            p = s
            if c == 0:
                t_min = time_base + _unzigzag(a)
                ref = x
            else:
                t_min = t_max + a
                ref = ref + _unzigzag(x)
            t_max = t_min + d
            if t_max >= mint and t_min <= maxt:
                chk_pos[nc] = i
                chk_mint[nc] = t_min
                chk_maxt[nc] = t_max
                chk_ref[nc] = ref
                nc += 1
    if nc < n_chunks:
        chk_pos, chk_mint = chk_pos[:nc].copy(), chk_mint[:nc].copy()
        chk_maxt, chk_ref = chk_maxt[:nc].copy(), chk_ref[:nc].copy()
    return lab_start, lab_name, lab_value, chk_pos, chk_mint, chk_maxt, chk_ref, OK, 0


@njit(cache=True, nogil=True)
def keys_from_symbols(buf, sym_off, sym_len, lab_start, lab_name, lab_value):
    """Canonical series keys (name 0xFF value 0xFF …) from symbol ids, as blob + offsets."""
    n = len(lab_start) - 1
    offsets = np.empty(n + 1, dtype=np.int64)
    total = 0
    for i in range(n):
        offsets[i] = total
        for k in range(lab_start[i], lab_start[i + 1]):
            total += sym_len[lab_name[k]] + sym_len[lab_value[k]] + 2
    offsets[n] = total
    out = np.empty(total, dtype=np.uint8)
    p = 0
    for k in range(lab_start[n]):
        for s in (lab_name[k], lab_value[k]):
            m = sym_len[s]
            out[p:p + m] = buf[sym_off[s]:sym_off[s] + m]
            out[p + m] = 0xFF
            p += m + 1
    return out, offsets


# --------------------------------------------------------------------------- chunk segments


@njit(cache=True, nogil=True)
def assign_segments(record_size, header, max_size):
    """Segment number and offset of each chunk record, filling a segment up to
    ``max_size`` bytes before starting the next; a segment holds at least one record."""
    n = len(record_size)
    seg = np.empty(n, dtype=np.int64)
    off = np.empty(n, dtype=np.int64)
    s = 0
    used = header
    for c in range(n):
        if used > header and used + record_size[c] > max_size:
            s += 1
            used = header
        seg[c] = s
        off[c] = used
        used += record_size[c]
    return seg, off


@njit(cache=True, nogil=True)
def encode_chunk_records(blob, offsets, encoding, order):
    """Chunk records for chunks ``order``: uvarint data length, encoding byte, data,
    BE32 CRC32-C of encoding byte and data."""
    total = 0
    for c in order:
        size = offsets[c + 1] - offsets[c]
        total += _uvarint_size(size) + 1 + size + 4
    out = np.empty(total, dtype=np.uint8)
    p = 0
    for c in order:
        size = offsets[c + 1] - offsets[c]
        p = _put_uvarint(out, p, size)
        start = p
        out[p] = encoding[c]
        out[p + 1:p + 1 + size] = blob[offsets[c]:offsets[c + 1]]
        p += 1 + size
        p = _put_be32(out, p, crc32c(out, start, p))
    return out


@njit(cache=True, nogil=True)
def chunk_lengths(seg, offs):
    """Data length of the chunk records at ``offs`` in one segment, bounds-checked.
    Returns ``(lengths, status, index of the bad chunk)``."""
    lens = np.empty(len(offs), dtype=np.int64)
    for i in range(len(offs)):
        o = offs[i]
        if o < 0 or o >= len(seg):
            return lens, TRUNCATED, i
        n, p = _get_uvarint(seg, o, len(seg))
        if p < 0:
            return lens, _varint_status(p), i
        if n < 0 or n > len(seg) - p - 5:
            return lens, TRUNCATED, i
        lens[i] = n
    return lens, OK, 0


@njit(cache=True, nogil=True)
def place_chunks(part, dest, lengths, blob):
    """Copy chunks laid end to end in ``part`` to ``blob[dest[i]:dest[i]+lengths[i]]``."""
    at = 0
    for i in range(len(lengths)):
        n = lengths[i]
        blob[dest[i]:dest[i] + n] = part[at:at + n]
        at += n


@njit(cache=True, nogil=True)
def gather_chunks(seg, offs, out, out_pos, out_enc):
    """Copy the data of the chunk records at ``offs`` (lengths already checked by
    ``chunk_lengths``) to ``out[out_pos[i]:]`` and their encodings to ``out_enc``,
    checking each CRC32-C. Returns ``(status, index of the bad chunk)``."""
    for i in range(len(offs)):
        n, p = _get_uvarint(seg, offs[i], len(seg))
        if crc32c(seg, p, p + 1 + n) != _be32(seg, p + 1 + n):
            return BAD_CHECKSUM, i
        out_enc[i] = seg[p]
        out[out_pos[i]:out_pos[i] + n] = seg[p + 1:p + 1 + n]
    return OK, 0


@njit(cache=True, nogil=True)
def read_chunks(seg, offs):
    """Encodings and data of the chunk records at ``offs`` in one segment, back to back
    (chunk ``i`` is ``blob[at[i]:at[i+1]]``), bounds and CRC32-C checked, and the span
    of bytes the records cover. Returns ``(encoding, blob, at, first, end, status,
    index of the bad chunk)``."""
    encoding = np.empty(len(offs), dtype=np.uint8)
    at = np.zeros(len(offs) + 1, dtype=np.int64)
    lens, status, bad = chunk_lengths(seg, offs)
    if status != OK:
        return encoding, np.empty(0, np.uint8), at, 0, 0, status, bad
    first, end = len(seg), 0
    for i in range(len(offs)):
        at[i + 1] = at[i] + lens[i]
        first = min(first, offs[i])
        end = max(end, offs[i] + lens[i] + RECORD_OVERHEAD)
    blob = np.empty(at[-1], dtype=np.uint8)
    status, bad = gather_chunks(seg, offs, blob, at, encoding)
    return encoding, blob, at, first, min(end, len(seg)), status, bad
