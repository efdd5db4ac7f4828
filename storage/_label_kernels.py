"""numba kernels that validate, canonicalise and hash the label sets of a write batch.

Called by ``storage.labels``; the layout of the arrays is ``storage.batch.WriteBatch``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._memory_kernels import load_u8 as _load_u8
from ._memory_kernels import load_u64 as _load_u64

# Per-series status codes; ``storage.labels.LABEL_ERRORS`` turns them into messages.
OK = 0
EMPTY_LABEL_SET = 1
INVALID_LABEL_NAME = 2
INVALID_METRIC_NAME = 3
INVALID_UTF8 = 4
DUPLICATE_LABEL_NAME = 5
TOO_MANY_LABELS = 6
LABEL_NAME_TOO_LONG = 7
LABEL_VALUE_TOO_LONG = 8
NO_SAMPLES = 9  # set by the head for series it skips; never by canonicalise

SEPARATOR = np.uint8(0xFF)  # never appears in valid UTF-8, so it cannot occur inside a label

# Hashes live in memory only (hash tables, shard assignment), never on disk, so the
# function may change between versions.
_SEED = np.uint64(0xCBF29CE484222325)
_K = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, nogil=True, inline="always")
def _mix(h: np.uint64) -> np.uint64:
    # splitmix64 finaliser: the word steps alone leave the low bits (the table slot)
    # poorly spread.
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@njit(cache=True, nogil=True, inline="always")
def _step(h: np.uint64, w: np.uint64) -> np.uint64:
    return (((h << np.uint64(5)) | (h >> np.uint64(59))) ^ w) * _K


@njit(cache=True, nogil=True, inline="always")
def _hash_run(h, base, size, off, length):  # type: ignore[no-untyped-def]
    """Fold bytes ``off:off+length`` of the ``size``-byte buffer at address ``base`` into
    ``h``, eight at a time (a byte at a time costs a multiply per byte)."""
    end = off + length
    k = off
    while k + 8 <= end:
        h = _step(h, _load_u64(base + k))
        k += 8
    if k < end:
        n = end - k
        if k + 8 <= size:
            w = _load_u64(base + k) & ((np.uint64(1) << np.uint64(8 * n)) - np.uint64(1))
        else:
            w = np.uint64(0)
            for b in range(n):
                w |= np.uint64(_load_u8(base + k + b)) << np.uint64(8 * b)
        h = _step(h, w)
    return h


@njit(cache=True, nogil=True, inline="always")
def _hash_label(h, base, size, name_off, name_len, value_off, value_len):  # type: ignore[no-untyped-def]
    """Fold one label into a label-set hash; the lengths go first, so that where one
    string ends and the next begins is part of what is hashed."""
    h = _step(h, np.uint64(name_len) | (np.uint64(value_len) << np.uint64(32)))
    h = _hash_run(h, base, size, name_off, name_len)
    return _hash_run(h, base, size, value_off, value_len)


@njit(cache=True, nogil=True, inline="always")
def bytes_equal(a, b, length):  # type: ignore[no-untyped-def]
    """Whether the ``length`` bytes at addresses ``a`` and ``b`` are equal."""
    k = 0
    while k + 8 <= length:
        if _load_u64(a + k) != _load_u64(b + k):
            return False
        k += 8
    while k < length:
        if _load_u8(a + k) != _load_u8(b + k):
            return False
        k += 1
    return True


@njit(cache=True, nogil=True)
def hash_bytes(buf: np.ndarray, off: int, length: int) -> np.uint64:
    """64-bit hash of ``buf[off:off+length]``."""
    if buf.strides[0] != 1:  # bytes are read through the address
        buf = buf.copy()
    h = _step(_SEED, np.uint64(length))
    return _mix(_hash_run(h, buf.ctypes.data, len(buf), off, length))


@njit(cache=True, nogil=True)
def _utf8_valid(buf: np.ndarray, off: int, length: int) -> bool:
    k = off
    end = off + length
    while k < end:
        c = buf[k]
        if c < 0x80:
            k += 1
            continue
        if 0xC2 <= c <= 0xDF:
            n = 1
            lo, hi = 0x80, 0xBF
        elif c == 0xE0:
            n, lo, hi = 2, 0xA0, 0xBF
        elif 0xE1 <= c <= 0xEC or 0xEE <= c <= 0xEF:
            n, lo, hi = 2, 0x80, 0xBF
        elif c == 0xED:
            n, lo, hi = 2, 0x80, 0x9F  # no UTF-16 surrogates
        elif c == 0xF0:
            n, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            n, lo, hi = 3, 0x80, 0xBF
        elif c == 0xF4:
            n, lo, hi = 3, 0x80, 0x8F
        else:
            return False
        if k + n >= end:  # the sequence's last continuation byte would be past the end
            return False
        b = buf[k + 1]
        if b < lo or b > hi:
            return False
        for j in range(2, n + 1):
            b = buf[k + j]
            if b < 0x80 or b > 0xBF:
                return False
        k += n + 1
    return True


@njit(cache=True, nogil=True, inline="always")
def _is_name_char(c: np.uint8, first: bool, allow_colon: bool) -> bool:
    if (c >= 0x61 and c <= 0x7A) or (c >= 0x41 and c <= 0x5A) or c == 0x5F:  # a-z A-Z _
        return True
    if allow_colon and c == 0x3A:
        return True
    return (not first) and bool(c >= 0x30 and c <= 0x39)


@njit(cache=True, nogil=True)
def canonicalise(
    buf: np.ndarray,
    label_start: np.ndarray,
    name_off: np.ndarray,
    name_len: np.ndarray,
    value_off: np.ndarray,
    value_len: np.ndarray,
    max_labels: int,
    max_name_len: int,
    max_value_len: int,
    name_label: np.ndarray,
    order: np.ndarray,
    canon_start: np.ndarray,
    status: np.ndarray,
    bad_label: np.ndarray,
    hashes: np.ndarray,
    known: np.ndarray,
) -> None:
    """Validate each series, sort its non-empty labels by name and hash the result.

    Outputs (preallocated): ``order[canon_start[i]:canon_start[i+1]]`` are the indices of
    series ``i``'s labels in name order with empty values dropped; ``status[i]`` is an error
    code (0 = valid); ``bad_label[i]`` the offending label index or -1; ``hashes[i]`` the
    hash of the canonical labels (the same for every order they were sent in). Series
    with ``known[i] >= 0`` (already found, so valid and canonical) are passed over:
    status 0, no labels, hash 0.
    """
    n_series = len(label_start) - 1
    base, size = buf.ctypes.data, len(buf)
    pos = 0
    for i in range(n_series):
        canon_start[i] = pos
        status[i] = OK
        bad_label[i] = -1
        hashes[i] = 0
        if known[i] >= 0:
            continue
        begin = pos
        for j in range(label_start[i], label_start[i + 1]):
            if value_len[j] == 0:
                continue  # an empty value means the label is absent
            # insertion sort by name: label sets are small
            k = pos
            while k > begin:
                p = order[k - 1]
                # is name p <= name j? (byte order, as Go compares strings)
                a, b_, n = name_off[p], name_off[j], min(name_len[p], name_len[j])
                diff = 0
                for q in range(n):
                    if buf[a + q] != buf[b_ + q]:
                        diff = 1 if buf[a + q] > buf[b_ + q] else -1
                        break
                if diff < 0 or (diff == 0 and name_len[p] <= name_len[j]):
                    break
                order[k] = p
                k -= 1
            order[k] = j
            pos += 1
        count = pos - begin
        if count == 0:
            status[i] = EMPTY_LABEL_SET
            continue
        if count > max_labels:
            status[i] = TOO_MANY_LABELS
            continue
        h = _SEED
        # The per-label checks are written out inline: numba helper calls that take
        # arrays cost an atomic reference-count update each, more than the work itself.
        for k in range(begin, pos):
            j = order[k]
            noff, nlen, voff, vlen = name_off[j], name_len[j], value_off[j], value_len[j]
            if nlen > max_name_len:
                status[i] = LABEL_NAME_TOO_LONG
            elif vlen > max_value_len:
                status[i] = LABEL_VALUE_TOO_LONG
            elif nlen == 0:
                status[i] = INVALID_LABEL_NAME
            if status[i] != OK:
                bad_label[i] = j
                break
            is_metric_name = nlen == 8
            for b in range(nlen):
                c = buf[noff + b]
                if not _is_name_char(c, b == 0, False):
                    status[i] = INVALID_LABEL_NAME if c < 0x80 else INVALID_UTF8
                    break
                if is_metric_name and c != name_label[b]:
                    is_metric_name = False
            if status[i] == INVALID_UTF8 and _utf8_valid(buf, noff, nlen):
                status[i] = INVALID_LABEL_NAME
            if status[i] == OK and k > begin:
                p = order[k - 1]
                if name_len[p] == nlen:
                    same = True
                    for b in range(nlen):
                        if buf[name_off[p] + b] != buf[noff + b]:
                            same = False
                            break
                    if same:
                        status[i] = DUPLICATE_LABEL_NAME
            if status[i] != OK:
                bad_label[i] = j
                break
            ascii_only = True
            for b in range(vlen):
                c = buf[voff + b]
                if c >= 0x80:
                    ascii_only = False
                if is_metric_name and not _is_name_char(c, b == 0, True):
                    status[i] = INVALID_METRIC_NAME
            h = _hash_label(h, base, size, noff, nlen, voff, vlen)
            if status[i] == OK and not ascii_only and not _utf8_valid(buf, voff, vlen):
                status[i] = INVALID_UTF8
            if status[i] != OK:
                bad_label[i] = j
                break
        hashes[i] = _mix(h)
    canon_start[n_series] = pos
