"""numba kernels for dense chunks, called by ``storage.dense``.

The byte layout is drawn in ``docs/format.md`` ("Dense chunk"). Encoding runs in three
steps so that zstd (called by the Python side, outside numba) can sit between them:
``plan`` decides per chunk how its values could be written and how many bytes each
candidate body takes, ``write_bodies`` writes one kind of candidate body for every chunk,
``assemble`` puts the chosen payloads behind their headers. Decoding reads the headers
(``read_headers``), lets zstd inflate the compressed bodies, then ``decode_bodies``
parses every body.

The split layout (``VALUES_SPLIT``) keeps apart what zstd can and cannot shrink: each
residual becomes a one-byte token (its bit length and the bit below the leading one),
which goes with the timestamps into the body zstd compresses, and its remaining low
bits, which are as good as random, go raw into a bit stream behind the compressed body.
zstd codes all literals of a frame with one Huffman table, so mixing the two (as the
varint and byte-plane bodies do) costs the tokens most of their skew.

Values travel both as ``float64`` and as ``uint64`` views of the same memory: raw bits
(XOR planes, exceptions) never pass through a float operation, so NaN payloads and
signed zeros come back bit for bit, while scaled integers are turned back into floats
by the same correctly rounded division the encoder checked.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._block_kernels import (
    _get_uvarint,
    _put_uvarint,
    _unzigzag,
    _uvarint_size,
    _zigzag,
)

# The layout byte (chunk byte 2).
VALUES_MASK = 0x03
VALUES_XOR = 0  # XOR of consecutive value bits, as 8 byte planes
VALUES_DELTA = 1  # scaled integers, first differences
VALUES_DOD = 2  # scaled integers, second differences
VALUES_SPLIT = 3  # scaled integers, residuals as tokens in the body and raw bits apart
FLAG_PLANES = 0x04  # integer residuals as byte planes rather than varints
FLAG_ZSTD = 0x80  # the body is a zstd frame (without its magic number)
KNOWN_LAYOUT_BITS = VALUES_MASK | FLAG_PLANES | FLAG_ZSTD

# The coding byte that starts the values of a split body.
SPLIT_ORDER_MASK = 0x03  # order of differences, 1 or 2
SPLIT_OFFSET = 0x04  # residuals minus the base as they are (else zigzagged)
MAX_TOKEN = 127  # token of a 64-bit residual

MAX_DECIMALS = 18
"""Largest decimal exponent k; 10**k is an exact double up to 10**22."""

HEADER_MIN = 5  # count (2), layout, decimals, body length (at least 1 byte)

# Kinds of candidate body ``plan`` sizes and ``write_bodies`` writes.
BODY_XOR = 0
BODY_INT_VARINT = 1
BODY_INT_PLANES = 2
BODY_SPLIT = 3
N_BODY_KINDS = 4

# Decode status codes; ``storage.dense`` turns them into messages.
OK = 0
TRUNCATED = 1
BAD_VARINT = 2
BAD_LAYOUT = 3
BAD_LENGTH = 4
UNORDERED = 5
BAD_EXCEPTIONS = 6
TRAILING = 7
BAD_TOKEN = 8

_POW10 = np.array([10.0**k for k in range(MAX_DECIMALS + 1)])
# Scaled values stay well inside int64, so that float(q) and the checks are exact.
_SCALED_LIMIT = 2.0**62
# Cost of one exception in units of log2(10) bits: 9-10 bytes against one more decimal
# digit in every scaled integer (see ``_choose_decimals``).
_EXCEPTION_WEIGHT = 24
_NO_DECIMALS = MAX_DECIMALS + 1
# Up to this many decimals, values that are all exact scaled integers are written as such
# without trying XOR planes too: measured, the planes then lose or win by under 0.5 %.
# More decimals are mostly float noise that 62-bit integers happen to reproduce, where
# the planes win by up to 10 %.
_SMALL_DECIMALS = 9


@njit(cache=True, nogil=True, inline="always")
def max_body_size(count):  # type: ignore[no-untyped-def]
    """Bytes an honest body of ``count`` samples can take at most (readers bound by it).

    Timestamps take at most 10 bytes a sample; values at most 8 (XOR planes) or, as
    integers, 3 + 8 per exception plus 10 per integer and a width byte.
    """
    return 32 * count + 32


# --------------------------------------------------------------------------- encoding


@njit(cache=True, nogil=True, inline="always")
def _scaled(v, k):
    """``(exact, q)``: ``q = rint(v * 10**k)`` and whether ``q / 10**k`` gives v's bits."""
    x = v * _POW10[k]
    if not abs(x) <= _SCALED_LIMIT:  # NaN and infinities fail too
        return False, np.int64(0)
    q = np.int64(np.rint(x))
    back = np.float64(q) / _POW10[k]
    # Equal floats with equal signs have equal bits (only the zeros differ otherwise).
    return back == v and math.copysign(1.0, back) == math.copysign(1.0, v), q


@njit(cache=True, nogil=True)
def _choose_decimals(vs, lo, hi, hist):
    """The decimal exponent for samples ``lo:hi``, or -1 when no value is decimal-like.

    Every value votes for the smallest k that reproduces it; the chosen k minimises
    ``24 * exceptions + k * n``: one more digit costs about log2(10) bits per integer,
    an exception about 80 bits.
    """
    hist[:] = 0
    for i in range(lo, hi):
        d = _NO_DECIMALS
        for k in range(MAX_DECIMALS + 1):
            if _scaled(vs[i], k)[0]:
                d = k
                break
        hist[d] += 1
    n = hi - lo
    best = -1
    best_cost = np.int64(0)
    covered = 0
    for k in range(MAX_DECIMALS + 1):
        covered += hist[k]
        if covered == 0:
            continue
        cost = _EXCEPTION_WEIGHT * (n - covered) + k * n
        if best < 0 or cost < best_cost:
            best = k
            best_cost = cost
    return best


@njit(cache=True, nogil=True)
def _scale_chunk(vs, lo, hi, k, q, epos):
    """Scaled integers of samples ``lo:hi`` into ``q``, positions of the others (the
    exceptions, relative to ``lo``) into ``epos``. Returns ``(integers, exceptions)``."""
    m = 0
    e = 0
    for i in range(lo, hi):
        exact, x = _scaled(vs[i], k)
        if exact:
            q[m] = x
            m += 1
        else:
            epos[e] = i - lo
            e += 1
    return m, e


@njit(cache=True, nogil=True, inline="always")
def _difference(q, j, order):
    """Difference of order 1 or 2 at integer ``j`` (int64 arithmetic wraps)."""
    if order == VALUES_DELTA:
        return q[j] - q[j - 1]
    return q[j] - 2 * q[j - 1] + q[j - 2]


@njit(cache=True, nogil=True, inline="always")
def _residual(q, j, order):
    """Zigzagged difference of order 1 or 2 at integer ``j``."""
    return _zigzag(_difference(q, j, order))


@njit(cache=True, nogil=True, inline="always")
def _bit_length(u):
    """Bits of the uint64 ``u`` up to its highest one (0 for zero)."""
    x = np.uint64(u)
    n = 0
    for step in (32, 16, 8, 4, 2, 1):
        if x >> np.uint64(step):
            x >>= np.uint64(step)
            n += step
    return n + np.int64(x)


@njit(cache=True, nogil=True, inline="always")
def _token(u):
    """``(token, extra bits)`` of a split residual: 0 and 1 are their own tokens; a
    larger ``u`` of bit length b is ``2 * (b - 1) + (the bit below its leading one)``,
    and its ``b - 2`` lowest bits go to the raw stream."""
    x = np.uint64(u)
    if x < np.uint64(2):
        return np.int64(x), 0
    b = _bit_length(x)
    return 2 * (b - 1) + np.int64((x >> np.uint64(b - 2)) & np.uint64(1)), b - 2


@njit(cache=True, nogil=True, inline="always")
def _split_value(d, base, offset):
    """What a split body codes for difference ``d``: ``d - base`` as it is (``offset``,
    for a base no difference goes below) or zigzagged. uint64 arithmetic wraps."""
    x = np.uint64(d) - np.uint64(base)
    return x if offset else np.uint64(_zigzag(np.int64(x)))


@njit(cache=True, nogil=True, inline="always")
def _byte_width(u):
    """Bytes needed for the uint64 bits of ``u`` (0 for zero)."""
    x = np.uint64(u)
    w = 0
    while x != np.uint64(0):
        x >>= np.uint64(8)
        w += 1
    return w


@njit(cache=True, nogil=True)
def _timestamps_size(ts, lo, hi):
    size = _uvarint_size(_zigzag(ts[lo]))
    if hi - lo >= 2:
        size += _uvarint_size(ts[lo + 1] - ts[lo])
    for i in range(lo + 2, hi):
        size += _uvarint_size(_zigzag((ts[i] - ts[i - 1]) - (ts[i - 1] - ts[i - 2])))
    return size


@njit(cache=True, nogil=True)
def _integers_head_size(q, m, epos, e, order):
    """Bytes of the exception list and of the integers written before the residuals."""
    size = _uvarint_size(e)
    last = -1
    for j in range(e):
        size += _uvarint_size(epos[j] - last - 1) + 8
        last = epos[j]
    size += _uvarint_size(_zigzag(q[0]))
    if order == VALUES_DOD and m >= 2:
        size += _uvarint_size(_zigzag(q[1] - q[0]))
    return size


@njit(cache=True, nogil=True)
def _plan_split(q, m, diffs, hist):
    """``(coding byte, base, extra bits)`` of the split coding of ``q[:m]`` that should
    come out smallest: first or second differences, around their median (zigzagged) or
    above their minimum (as they are).

    The estimate is the tokens' order-0 entropy, about two bytes of zstd table per
    distinct token, and the raw bits.
    """
    best_coding = VALUES_DELTA
    best_base = np.int64(0)
    best_extra = 0
    best_cost = np.inf
    for order in (VALUES_DELTA, VALUES_DOD):
        r = max(m - order, 0)
        lowest = np.int64(0)
        for j in range(order, m):
            diffs[j - order] = _difference(q, j, order)
            lowest = diffs[j - order] if j == order else min(lowest, diffs[j - order])
        median = np.partition(diffs[:r], r // 2)[r // 2] if r else np.int64(0)
        for offset in (0, SPLIT_OFFSET):
            base = lowest if offset else median
            hist[:] = 0
            extra = 0
            for j in range(r):
                t, e = _token(_split_value(diffs[j], base, offset))
                hist[t] += 1
                extra += e
            bits = float(extra + 8 * _uvarint_size(_zigzag(base)))
            for t in range(MAX_TOKEN + 1):
                if hist[t]:
                    bits += 16.0 + hist[t] * math.log2(r / hist[t])
            if bits < best_cost:
                best_cost = bits
                best_coding = order | offset
                best_base = base
                best_extra = extra
    return best_coding, best_base, best_extra


@njit(cache=True, nogil=True)
def plan(ts, vs, starts):
    """Decide how each chunk ``starts[c]:starts[c+1]`` could be written.

    Returns ``(decimals, order, width, coding, base, raw_len, sizes)``: per chunk the
    decimal exponent, the integer layout of varint and plane bodies (``VALUES_DELTA``/
    ``VALUES_DOD``, or 0 when the values cannot be scaled integers), the byte width of
    its residual planes, the coding byte, base and raw-stream bytes of its split body,
    and ``sizes[kind, c]``, the exact body bytes of each candidate kind (without a
    split body's raw stream; 0 where a kind is not worth trying: integers where no
    value is decimal-like, XOR planes where all of them are with few decimals).
    """
    nch = len(starts) - 1
    decimals = np.zeros(nch, np.int64)
    order = np.zeros(nch, np.int64)
    width = np.zeros(nch, np.int64)
    coding = np.zeros(nch, np.int64)
    base = np.zeros(nch, np.int64)
    raw_len = np.zeros(nch, np.int64)
    sizes = np.zeros((N_BODY_KINDS, nch), np.int64)
    longest = 0
    for c in range(nch):
        longest = max(longest, starts[c + 1] - starts[c])
    q = np.empty(longest, np.int64)
    epos = np.empty(longest, np.int64)
    diffs = np.empty(longest, np.int64)
    hist = np.empty(_NO_DECIMALS + 1, np.int64)
    tokens = np.empty(MAX_TOKEN + 1, np.int64)
    for c in range(nch):
        lo = starts[c]
        hi = starts[c + 1]
        n = hi - lo
        if n == 0:
            continue
        ts_size = _timestamps_size(ts, lo, hi)
        sizes[BODY_XOR, c] = ts_size + 8 * n
        k = _choose_decimals(vs, lo, hi, hist)
        if k < 0:
            continue
        m, e = _scale_chunk(vs, lo, hi, k, q, epos)
        if m == 0:  # every vote was for a smaller k that this k does not reproduce
            continue
        if e == 0 and k <= _SMALL_DECIMALS:  # XOR planes would not win: skip their zstd
            sizes[BODY_XOR, c] = 0
        # Residual bytes as varints under either order; the smaller wins. Both start
        # with q1 - q0 (a residual for deltas, the first difference for dods).
        by_delta = 0
        by_dod = 0
        for j in range(1, m):
            by_delta += _uvarint_size(_residual(q, j, VALUES_DELTA))
            by_dod += _uvarint_size(_residual(q, j, VALUES_DELTA if j == 1 else VALUES_DOD))
        o = VALUES_DELTA if by_delta <= by_dod else VALUES_DOD
        w = 0
        for j in range(o, m):
            w = max(w, _byte_width(_residual(q, j, o)))
        head = ts_size + _integers_head_size(q, m, epos, e, o)
        varints = 0
        for j in range(o, m):
            varints += _uvarint_size(_residual(q, j, o))
        decimals[c] = k
        order[c] = o
        width[c] = w
        sizes[BODY_INT_VARINT, c] = head + varints
        sizes[BODY_INT_PLANES, c] = head + 1 + w * max(m - o, 0)
        coding[c], base[c], extra = _plan_split(q, m, diffs, tokens)
        so = coding[c] & SPLIT_ORDER_MASK
        sizes[BODY_SPLIT, c] = (
            ts_size
            + 1
            + _uvarint_size(_zigzag(base[c]))
            + _integers_head_size(q, m, epos, e, so)
            + max(m - so, 0)
        )
        raw_len[c] = (extra + 7) // 8
    return decimals, order, width, coding, base, raw_len, sizes


@njit(cache=True, nogil=True)
def _write_timestamps(ts, lo, hi, out, p):
    p = _put_uvarint(out, p, _zigzag(ts[lo]))
    if hi - lo >= 2:
        p = _put_uvarint(out, p, ts[lo + 1] - ts[lo])
    for i in range(lo + 2, hi):
        p = _put_uvarint(out, p, _zigzag((ts[i] - ts[i - 1]) - (ts[i - 1] - ts[i - 2])))
    return p


@njit(cache=True, nogil=True)
def _write_xor_planes(bits, lo, hi, out, p):
    """Byte ``b`` of ``bits[i] ^ bits[i-1]`` (bits before the first: 0) at plane ``b``."""
    n = hi - lo
    prev = np.uint64(0)
    for i in range(n):
        x = bits[lo + i] ^ prev
        prev = bits[lo + i]
        for b in range(8):
            out[p + b * n + i] = np.uint8((x >> np.uint64(8 * b)) & np.uint64(0xFF))
    return p + 8 * n


@njit(cache=True, nogil=True)
def _write_integers_head(bits, lo, q, m, epos, e, o, out, p):
    """The exception list and the integers written before the residuals."""
    p = _put_uvarint(out, p, e)
    last = -1
    for j in range(e):
        p = _put_uvarint(out, p, epos[j] - last - 1)
        last = epos[j]
    for j in range(e):
        x = bits[lo + epos[j]]
        for b in range(8):
            out[p + b] = np.uint8((x >> np.uint64(8 * b)) & np.uint64(0xFF))
        p += 8
    p = _put_uvarint(out, p, _zigzag(q[0]))
    if o == VALUES_DOD and m >= 2:
        p = _put_uvarint(out, p, _zigzag(q[1] - q[0]))
    return p


@njit(cache=True, nogil=True)
def _write_split(bits, lo, q, m, epos, e, coding, base, out, p, raw, rp):
    """A split body's values into ``out[p:]`` and its raw bits into ``raw[rp:]``, low
    bits first. Returns both end positions."""
    o = coding & SPLIT_ORDER_MASK
    offset = coding & SPLIT_OFFSET
    out[p] = coding
    p = _put_uvarint(out, p + 1, _zigzag(base))
    p = _write_integers_head(bits, lo, q, m, epos, e, o, out, p)
    acc = np.uint64(0)
    held = 0
    for j in range(o, m):
        u = _split_value(_difference(q, j, o), base, offset)
        t, left = _token(u)
        out[p] = t
        p += 1
        while left > 0:  # at most 32 bits at a time, so that ``acc`` never overflows
            take = min(left, 32)
            acc |= (u & ((np.uint64(1) << np.uint64(take)) - np.uint64(1))) << np.uint64(held)
            u >>= np.uint64(take)
            left -= take
            held += take
            while held >= 8:
                raw[rp] = np.uint8(acc & np.uint64(0xFF))
                rp += 1
                acc >>= np.uint64(8)
                held -= 8
    if held:
        raw[rp] = np.uint8(acc)
        rp += 1
    return p, rp


@njit(cache=True, nogil=True)
def _write_integers(bits, lo, q, m, epos, e, o, w, planes, out, p):
    p = _write_integers_head(bits, lo, q, m, epos, e, o, out, p)
    if not planes:
        for j in range(o, m):
            p = _put_uvarint(out, p, _residual(q, j, o))
        return p
    out[p] = w
    p += 1
    r = max(m - o, 0)
    for j in range(o, m):
        z = np.uint64(_residual(q, j, o))
        for b in range(w):
            out[p + b * r + (j - o)] = np.uint8((z >> np.uint64(8 * b)) & np.uint64(0xFF))
    return p + w * r


@njit(cache=True, nogil=True)
def write_bodies(
    ts, vs, bits, starts, kind, decimals, order, width, coding, base, offsets, out, raw_offsets, raw
):
    """Write the body of candidate ``kind`` of every chunk into ``out[offsets[c]:]``
    (split bodies: their raw bits into ``raw[raw_offsets[c]:]``).

    Chunks whose slot is empty (the kind does not apply) are skipped. Returns -1, or the
    first chunk whose body did not come out at the size ``plan`` gave (a bug).
    """
    longest = 0
    for c in range(len(starts) - 1):
        longest = max(longest, starts[c + 1] - starts[c])
    q = np.empty(longest, np.int64)
    epos = np.empty(longest, np.int64)
    for c in range(len(starts) - 1):
        if offsets[c + 1] == offsets[c]:
            continue
        lo = starts[c]
        hi = starts[c + 1]
        p = _write_timestamps(ts, lo, hi, out, offsets[c])
        if kind == BODY_XOR:
            p = _write_xor_planes(bits, lo, hi, out, p)
            rp = raw_offsets[c + 1]
        else:
            m, e = _scale_chunk(vs, lo, hi, decimals[c], q, epos)
            if kind == BODY_SPLIT:
                p, rp = _write_split(
                    bits, lo, q, m, epos, e, coding[c], base[c], out, p, raw, raw_offsets[c]
                )
            else:
                p = _write_integers(
                    bits, lo, q, m, epos, e, order[c], width[c], kind == BODY_INT_PLANES, out, p
                )
                rp = raw_offsets[c + 1]
        if p != offsets[c + 1] or rp != raw_offsets[c + 1]:
            return c
    return -1


@njit(cache=True, nogil=True)
def assemble(pool, src_start, src_len, counts, layout, decimals, body_len, raw, raw_start, raw_len):
    """Chunks back to back: header (count, layout, decimals, body length, and for split
    bodies the raw length), the payload ``pool[src_start[c]:src_start[c] + src_len[c]]``,
    then split bodies' raw bits ``raw[raw_start[c]:raw_start[c] + raw_len[c]]``.
    Returns ``(blob, offsets)``."""
    nch = len(counts)
    offsets = np.zeros(nch + 1, np.int64)
    for c in range(nch):
        size = 4 + _uvarint_size(body_len[c]) + src_len[c]
        if layout[c] & VALUES_MASK == VALUES_SPLIT:
            size += _uvarint_size(raw_len[c]) + raw_len[c]
        offsets[c + 1] = offsets[c] + size
    out = np.empty(offsets[nch], np.uint8)
    for c in range(nch):
        p = offsets[c]
        out[p] = np.uint8(counts[c] >> 8)
        out[p + 1] = np.uint8(counts[c] & 0xFF)
        out[p + 2] = np.uint8(layout[c])
        out[p + 3] = np.uint8(decimals[c])
        p = _put_uvarint(out, p + 4, body_len[c])
        if layout[c] & VALUES_MASK == VALUES_SPLIT:
            p = _put_uvarint(out, p, raw_len[c])
        out[p : p + src_len[c]] = pool[src_start[c] : src_start[c] + src_len[c]]
        p += src_len[c]
        out[p : p + raw_len[c]] = raw[raw_start[c] : raw_start[c] + raw_len[c]]
    return out, offsets


# --------------------------------------------------------------------------- decoding


@njit(cache=True, nogil=True)
def _read_header(blob, start, end):
    """``(status, count, layout, decimals, body length, raw length, payload start)``
    of one chunk."""
    if end - start < HEADER_MIN:
        return TRUNCATED, 0, 0, 0, 0, 0, 0
    n = (np.int64(blob[start]) << 8) | np.int64(blob[start + 1])
    lay = np.int64(blob[start + 2])
    k = np.int64(blob[start + 3])
    values = lay & VALUES_MASK
    if (
        lay & ~KNOWN_LAYOUT_BITS
        or k > MAX_DECIMALS
        or (values == VALUES_XOR and (lay & FLAG_PLANES or k != 0))
        or (values == VALUES_SPLIT and lay & FLAG_PLANES)
    ):
        return BAD_LAYOUT, 0, 0, 0, 0, 0, 0
    size, p = _get_uvarint(blob, start + 4, end)
    if p < 0:
        return (TRUNCATED if p == -1 else BAD_VARINT), 0, 0, 0, 0, 0, 0
    if size < 0 or size > max_body_size(n):
        return BAD_LENGTH, 0, 0, 0, 0, 0, 0
    raw = np.int64(0)
    if values == VALUES_SPLIT:
        raw, p = _get_uvarint(blob, p, end)
        if p < 0:
            return (TRUNCATED if p == -1 else BAD_VARINT), 0, 0, 0, 0, 0, 0
        # At most 62 raw bits a residual; the raw stream ends the chunk.
        if raw < 0 or raw > 8 * n or raw > end - p:
            return BAD_LENGTH, 0, 0, 0, 0, 0, 0
    if lay & FLAG_ZSTD:
        if size == 0 or p == end - raw:  # nothing to inflate, or inflating into nothing
            return BAD_LENGTH, 0, 0, 0, 0, 0, 0
    elif end - raw - p != size:
        return BAD_LENGTH, 0, 0, 0, 0, 0, 0
    return OK, n, lay, k, size, raw, p


@njit(cache=True, nogil=True)
def read_headers(blob, offsets):
    """Parse and check every chunk header ``blob[offsets[c]:offsets[c+1]]``.

    Returns ``(status, chunk, counts, layout, decimals, body_len, raw_len,
    payload_start)``; a status other than ``OK`` names the first bad chunk. Body lengths
    are bounded by ``max_body_size(count)``, raw streams (the last ``raw_len`` bytes of a
    split chunk) by ``8 * count``, and a stored body must fill the rest exactly.
    """
    nch = len(offsets) - 1
    counts = np.zeros(nch, np.int64)
    layout = np.zeros(nch, np.int64)
    decimals = np.zeros(nch, np.int64)
    body_len = np.zeros(nch, np.int64)
    raw_len = np.zeros(nch, np.int64)
    payload = np.zeros(nch, np.int64)
    for c in range(nch):
        st, counts[c], layout[c], decimals[c], body_len[c], raw_len[c], payload[c] = (
            _read_header(blob, offsets[c], offsets[c + 1])
        )
        if st != OK:
            return st, c, counts, layout, decimals, body_len, raw_len, payload
    return OK, -1, counts, layout, decimals, body_len, raw_len, payload


@njit(cache=True, nogil=True)
def framed_payloads(blob, payload, ends, ids, magic):
    """The compressed payloads of chunks ``ids``, each behind the zstd ``magic`` bytes
    the chunk leaves out. Returns ``(buffer, segments)`` with ``(offset, length)`` rows."""
    total = 0
    for c in ids:
        total += len(magic) + ends[c] - payload[c]
    out = np.empty(total, np.uint8)
    segments = np.empty((len(ids), 2), np.uint64)
    p = 0
    for i in range(len(ids)):
        c = ids[i]
        size = ends[c] - payload[c]
        out[p : p + len(magic)] = magic
        out[p + len(magic) : p + len(magic) + size] = blob[payload[c] : ends[c]]
        segments[i, 0] = p
        segments[i, 1] = len(magic) + size
        p += len(magic) + size
    return out, segments


@njit(cache=True, nogil=True)
def _read_timestamps(src, p, end, n, ts_out, o):
    """Returns ``(status, next position or failing sample)``."""
    u, p = _get_uvarint(src, p, end)
    if p < 0:
        return (TRUNCATED if p == -1 else BAD_VARINT), 0
    t = _unzigzag(u)
    ts_out[o] = t
    delta = np.int64(0)
    for i in range(1, n):
        if p < end and src[p] < 0x80:  # one-byte varints inline: most dods are 0
            u = np.int64(src[p])
            p += 1
        else:
            u, p = _get_uvarint(src, p, end)
            if p < 0:
                return (TRUNCATED if p == -1 else BAD_VARINT), i
        # Sums in uint64, whose wrap-around is defined: with int64 sums the compiler may
        # assume no overflow and turn the check below into ``delta <= 0``, refusing a
        # first delta of 2**63 or more between valid timestamps.
        delta = u if i == 1 else np.int64(np.uint64(delta) + np.uint64(_unzigzag(u)))
        nxt = np.int64(np.uint64(t) + np.uint64(delta))
        if nxt <= t:  # also catches a sum that wrapped around
            return UNORDERED, i
        t = nxt
        ts_out[o + i] = t
    return OK, p


@njit(cache=True, nogil=True)
def _read_xor_planes(src, p, end, n, vbits, o):
    if end - p < 8 * n:
        return TRUNCATED, 0
    # Plane after plane (sequential reads), then undo the XOR chain.
    vbits[o : o + n] = 0
    for b in range(8):
        shift = np.uint64(8 * b)
        base = p + b * n
        for i in range(n):
            vbits[o + i] |= np.uint64(src[base + i]) << shift
    for i in range(o + 1, o + n):
        vbits[i] ^= vbits[i - 1]
    return OK, p + 8 * n


@njit(cache=True, nogil=True)
def _read_exceptions(src, p, end, n, vbits, o, taken):
    """The exception list: marks ``taken`` and writes the raw values. Returns
    ``(status, next position, count)``."""
    e, p = _get_uvarint(src, p, end)
    if p < 0:
        return (TRUNCATED if p == -1 else BAD_VARINT), 0, 0
    if e < 0 or e >= n:
        return BAD_EXCEPTIONS, 0, 0
    taken[:n] = 0
    gaps = p
    pos = np.int64(-1)
    for _ in range(e):
        g, p = _get_uvarint(src, p, end)
        if p < 0:
            return (TRUNCATED if p == -1 else BAD_VARINT), 0, 0
        if g < 0 or g >= n - 1 - pos:
            return BAD_EXCEPTIONS, 0, 0
        pos += 1 + g
        taken[pos] = 1
    if end - p < 8 * e:
        return TRUNCATED, 0, 0
    raw = p
    p = gaps
    pos = -1
    for j in range(e):  # the gaps again, now known to be sound, to place the values
        g, p = _get_uvarint(src, p, end)
        pos += 1 + g
        x = np.uint64(0)
        for b in range(8):
            x |= np.uint64(src[raw + 8 * j + b]) << np.uint64(8 * b)
        vbits[o + pos] = x
    return OK, raw + 8 * e, e


@njit(cache=True, nogil=True)
def _read_split_residuals(src, p, end, ints, order, m, base, offset, rp, rend):
    """Tokens from ``src[p:end]`` and raw bits from ``src[rp:rend]`` into the differences
    ``ints[order:m]``. Returns ``(status, next position)``; the raw stream must end
    exactly with the last residual's bits, padded with zeros."""
    if end - p < m - order:
        return TRUNCATED, 0
    acc = np.uint64(0)
    held = 0
    for j in range(order, m):
        t = np.int64(src[p])
        p += 1
        if t < 2:
            u = np.uint64(t)
        else:
            if t > MAX_TOKEN:
                return BAD_TOKEN, j
            left = (t >> 1) - 1
            u = (np.uint64(2) | np.uint64(t & 1)) << np.uint64(left)
            shift = 0
            while left > 0:  # at most 32 bits at a time, so that ``acc`` never overflows
                take = min(left, 32)
                while held < take:
                    if rp >= rend:
                        return TRUNCATED, j
                    acc |= np.uint64(src[rp]) << np.uint64(held)
                    rp += 1
                    held += 8
                u |= (acc & ((np.uint64(1) << np.uint64(take)) - np.uint64(1))) << np.uint64(shift)
                acc >>= np.uint64(take)
                held -= take
                shift += take
                left -= take
        if offset:
            ints[j] = np.int64(np.uint64(base) + u)
        else:
            ints[j] = np.int64(np.uint64(base) + np.uint64(_unzigzag(u)))
    if rp != rend or acc != np.uint64(0):
        return TRAILING, m
    return OK, p


@njit(cache=True, nogil=True)
def _read_integers(src, p, end, n, lay, k, vfloat, vbits, o, taken, ints, rp, rend):
    """Exceptions and scaled integers; returns ``(status, next position or sample)``."""
    values = lay & VALUES_MASK
    order = values
    base = np.int64(0)
    offset = 0
    if values == VALUES_SPLIT:
        if p >= end:
            return TRUNCATED, 0
        coding = np.int64(src[p])
        order = coding & SPLIT_ORDER_MASK
        offset = coding & SPLIT_OFFSET
        if coding & ~(SPLIT_ORDER_MASK | SPLIT_OFFSET) or order == 0 or order == 3:
            return BAD_LAYOUT, 0
        u, p = _get_uvarint(src, p + 1, end)
        if p < 0:
            return (TRUNCATED if p == -1 else BAD_VARINT), 0
        base = _unzigzag(u)
    st, p, e = _read_exceptions(src, p, end, n, vbits, o, taken)
    if st != OK:
        return st, 0
    m = n - e
    q, p = _get_uvarint(src, p, end)
    if p < 0:
        return (TRUNCATED if p == -1 else BAD_VARINT), 0
    ints[0] = _unzigzag(q)
    if order == VALUES_DOD and m >= 2:
        d, p = _get_uvarint(src, p, end)
        if p < 0:
            return (TRUNCATED if p == -1 else BAD_VARINT), 0
        ints[1] = ints[0] + _unzigzag(d)
    # Differences into ints[order:m], zigzagged unless split.
    r = max(m - order, 0)
    if values == VALUES_SPLIT:
        st, p = _read_split_residuals(src, p, end, ints, order, m, base, offset, rp, rend)
        if st != OK:
            return st, p
    elif lay & FLAG_PLANES:
        if p >= end:
            return TRUNCATED, 0
        w = np.int64(src[p])
        p += 1
        if w > 8:
            return BAD_LAYOUT, 0
        if end - p < w * r:
            return TRUNCATED, 0
        ints[order:m] = 0
        for b in range(w):
            shift = 8 * b
            base_p = p + b * r - order
            for j in range(order, m):
                ints[j] |= np.int64(src[base_p + j]) << shift
        p += w * r
    else:
        for j in range(order, m):
            if p < end and src[p] < 0x80:  # one-byte varints inline
                ints[j] = src[p]
                p += 1
            else:
                ints[j], p = _get_uvarint(src, p, end)
                if p < 0:
                    return (TRUNCATED if p == -1 else BAD_VARINT), j
    # Undo the differences (int64 arithmetic wraps as the encoder's did).
    if values == VALUES_SPLIT:
        _undo_differences(ints, order, m, False)
    else:
        _undo_differences(ints, order, m, True)
    scale = _POW10[k]
    if e == 0:
        for i in range(n):
            vfloat[o + i] = np.float64(ints[i]) / scale
    else:
        j = 0
        for i in range(n):
            if not taken[i]:
                vfloat[o + i] = np.float64(ints[j]) / scale
                j += 1
    return OK, p


@njit(cache=True, nogil=True, inline="always")
def _undo_differences(ints, order, m, zigzagged):
    """Integers from ``ints[:order]`` and the differences ``ints[order:m]``, in place."""
    if order == VALUES_DELTA:
        for j in range(1, m):
            d = _unzigzag(ints[j]) if zigzagged else ints[j]
            ints[j] = ints[j - 1] + d
    else:
        for j in range(2, m):
            d = _unzigzag(ints[j]) if zigzagged else ints[j]
            ints[j] = 2 * ints[j - 1] - ints[j - 2] + d


@njit(cache=True, nogil=True)
def decode_bodies(
    bodies,
    body_start,
    counts,
    layout,
    decimals,
    body_len,
    raw_start,
    raw_len,
    sample_starts,
    ts_out,
    vfloat,
    vbits,
):
    """Decode every body ``bodies[body_start[c]:body_start[c] + body_len[c]]`` (and a
    split body's raw bits ``bodies[raw_start[c]:raw_start[c] + raw_len[c]]``) into
    ``*_out[sample_starts[c]:]``; it must hold exactly ``counts[c]`` samples.

    ``vfloat`` and ``vbits`` are views of the same values array. Returns
    ``(status, chunk, sample)`` of the first failure, or ``(OK, -1, -1)``.
    """
    longest = 0
    for c in range(len(counts)):
        longest = max(longest, counts[c])
    taken = np.empty(longest, np.uint8)
    ints = np.empty(longest, np.int64)
    for c in range(len(counts)):
        n = counts[c]
        p = body_start[c]
        end = p + body_len[c]
        o = sample_starts[c]
        if n > 0:
            st, p = _read_timestamps(bodies, p, end, n, ts_out, o)
            if st != OK:
                return st, c, p
            if layout[c] & VALUES_MASK == VALUES_XOR:
                st, p = _read_xor_planes(bodies, p, end, n, vbits, o)
            else:
                rp = raw_start[c]
                st, p = _read_integers(
                    bodies, p, end, n, layout[c], decimals[c], vfloat, vbits, o, taken, ints,
                    rp, rp + raw_len[c],
                )
            if st != OK:
                return st, c, p
        if p != end:
            return TRAILING, c, n
    return OK, -1, -1
