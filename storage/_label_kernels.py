"""numba kernels that validate, canonicalise and hash the label sets of a write batch.

Called by ``storage.labels``; the layout of the arrays is ``storage.batch.WriteBatch``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@njit(cache=True, nogil=True, inline="always")
def _mix(h: np.uint64) -> np.uint64:
    # splitmix64 finaliser: FNV alone leaves the low bits (the table slot) poorly spread.
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@njit(cache=True, nogil=True)
def hash_bytes(buf: np.ndarray, off: int, length: int) -> np.uint64:
    """64-bit hash of ``buf[off:off+length]`` (FNV-1a with a final mix)."""
    h = _FNV_OFFSET
    for k in range(off, off + length):
        h = (h ^ np.uint64(buf[k])) * _FNV_PRIME
    return _mix(h)


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
) -> None:
    """Validate each series, sort its non-empty labels by name and hash the result.

    Outputs (preallocated): ``order[canon_start[i]:canon_start[i+1]]`` are the indices of
    series ``i``'s labels in name order with empty values dropped; ``status[i]`` is an error
    code (0 = valid); ``bad_label[i]`` the offending label index or -1; ``hashes[i]`` the
    hash of the canonical form (name 0xFF value 0xFF, label after label).
    """
    n_series = len(label_start) - 1
    pos = 0
    for i in range(n_series):
        canon_start[i] = pos
        status[i] = OK
        bad_label[i] = -1
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
        h = _FNV_OFFSET
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
                h = (h ^ np.uint64(c)) * _FNV_PRIME
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
            h = (h ^ np.uint64(0xFF)) * _FNV_PRIME
            ascii_only = True
            for b in range(vlen):
                c = buf[voff + b]
                if c >= 0x80:
                    ascii_only = False
                if is_metric_name and not _is_name_char(c, b == 0, True):
                    status[i] = INVALID_METRIC_NAME
                h = (h ^ np.uint64(c)) * _FNV_PRIME
            h = (h ^ np.uint64(0xFF)) * _FNV_PRIME
            if status[i] == OK and not ascii_only and not _utf8_valid(buf, voff, vlen):
                status[i] = INVALID_UTF8
            if status[i] != OK:
                bad_label[i] = j
                break
        hashes[i] = _mix(h)
    canon_start[n_series] = pos
