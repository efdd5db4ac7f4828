"""numba kernels for the XOR (Gorilla) chunk encoding, bit-exact with Prometheus.

Called by ``storage.xor``; the byte layout is drawn in ``docs/format.md`` ("XOR chunk").
Timestamps and values travel as ``uint64`` arrays (views of the caller's ``int64`` and
``float64``): all timestamp arithmetic wraps like Go's, and no float operation ever
touches a value, so NaN payloads and signed zeros come back bit for bit.

Encoding is resumable: everything an appender needs to continue a chunk lives in a
small ``uint64`` state vector (the ``ST_*`` slots), so the head can keep one row per
open chunk and append to it later without re-reading the chunk.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba import njit, types
from numba.extending import intrinsic

# Appender state slots (one uint64 each).
ST_NUM = 0  # samples in the chunk so far
ST_T = 1  # last timestamp
ST_TDELTA = 2  # last timestamp delta
ST_V = 3  # bits of the last value
ST_LEADING = 4  # leading zeros of the current XOR window, 0xFF before the first window
ST_TRAILING = 5  # trailing zeros of the current XOR window
ST_BITPOS = 6  # bits written so far, counted from the start of the chunk (header included)
ST_BYTE_TAIL = 7  # 1 if the last write ended with whole bytes (see ``chunk_length``)
STATE_LEN = 8

HEADER_BITS = 16
NO_WINDOW = 0xFF

# Worst case bytes: header, two 10-byte varints, the raw first value, the second value
# (2+5+6+64 bits), one spare padding byte; then per later sample 4+64 bits of timestamp
# and 2+5+6+64 bits of value, i.e. 145 bits.
CHUNK_OVERHEAD_BYTES = 41
MAX_BYTES_PER_SAMPLE = 19

# Decode status codes; ``storage.xor`` turns them into messages.
OK = 0
TRUNCATED = 1
VARINT_OVERFLOW = 2
BAD_WINDOW = 3
# Header problems (``header_counts``).
BAD_OFFSETS = 4
SHORT = 5
TOO_MANY = 6

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U8 = np.uint64(8)
_U32 = np.uint64(32)
_BYTE = np.uint64(0xFF)
_LOW32 = np.uint64(0xFFFFFFFF)


@intrinsic
def _clz64(typingctx, x):  # type: ignore[no-untyped-def]
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


@intrinsic
def _ctz64(typingctx, x):  # type: ignore[no-untyped-def]
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


# --------------------------------------------------------------------------- writing


@njit(cache=True, nogil=True, inline="always")
def _put(out, pos, acc, nacc, value, nbits):  # type: ignore[no-untyped-def]
    """Append the low ``nbits`` (1..57) bits of ``value``; whole bytes go to ``out``.

    ``acc`` keeps the ``nacc`` (< 8) bits that do not fill a byte yet; bits above them
    are stale and never read.
    """
    acc = (acc << np.uint64(nbits)) | (value & ((_U1 << np.uint64(nbits)) - _U1))
    nacc += nbits
    while nacc >= 8:
        nacc -= 8
        out[pos] = np.uint8((acc >> np.uint64(nacc)) & _BYTE)
        pos += 1
    return pos, acc, nacc


@njit(cache=True, nogil=True, inline="always")
def _put_wide(out, pos, acc, nacc, value, nbits):  # type: ignore[no-untyped-def]
    """Like ``_put`` for 1..64 bits."""
    if nbits > 32:
        pos, acc, nacc = _put(out, pos, acc, nacc, value >> _U32, nbits - 32)
        nbits = 32
    return _put(out, pos, acc, nacc, value, nbits)


@njit(cache=True, nogil=True, inline="always")
def _put_uvarint(out, pos, acc, nacc, u):  # type: ignore[no-untyped-def]
    """Append ``u`` as a Go uvarint (7 bits a byte, low group first)."""
    while u >= np.uint64(0x80):
        pos, acc, nacc = _put(out, pos, acc, nacc, (u & np.uint64(0x7F)) | np.uint64(0x80), 8)
        u >>= np.uint64(7)
    return _put(out, pos, acc, nacc, u, 8)


@njit(cache=True, nogil=True, inline="always")
def _dod_code(dod):  # type: ignore[no-untyped-def]
    """Bucket prefix and field of a delta-of-delta as one bit string ``(bits, length)``.

    A field of n bits takes -(2^(n-1)-1) <= dod <= 2^(n-1), tested as one unsigned
    compare, and holds dod's low n bits. Length 4 means prefix '1111' only: the caller
    writes all 64 bits after it.
    """
    if dod == _U0:
        return _U0, 1
    if dod + np.uint64(0x1FFF) <= np.uint64(0x3FFF):
        return (np.uint64(0b10) << np.uint64(14)) | (dod & np.uint64(0x3FFF)), 16
    if dod + np.uint64(0xFFFF) <= np.uint64(0x1FFFF):
        return (np.uint64(0b110) << np.uint64(17)) | (dod & np.uint64(0x1FFFF)), 20
    if dod + np.uint64(0x7FFFF) <= np.uint64(0xFFFFF):
        return (np.uint64(0b1110) << np.uint64(20)) | (dod & np.uint64(0xFFFFF)), 24
    return np.uint64(0b1111), 4


@njit(cache=True, nogil=True)
def reset_state(state: np.ndarray) -> None:
    """Put ``state`` in the shape of an empty chunk (2 header bytes, no samples)."""
    reset_row(state.reshape(1, STATE_LEN), 0)


@njit(cache=True, nogil=True, inline="always")
def reset_row(states, r):  # type: ignore[no-untyped-def]
    """``reset_state`` for row ``r`` of a 2-D array of states."""
    for k in range(STATE_LEN):
        states[r, k] = _U0
    states[r, ST_LEADING] = NO_WINDOW
    states[r, ST_BITPOS] = HEADER_BITS


@njit(cache=True, nogil=True, inline="always")
def length_of(bitpos, byte_tail, legacy_padding):  # type: ignore[no-untyped-def]
    """``chunk_length`` from the two state slots it depends on."""
    n = (np.int64(bitpos) + 7) >> 3
    if legacy_padding and byte_tail != 0 and (np.int64(bitpos) & 7) == 0:
        n += 1
    return n


@njit(cache=True, nogil=True)
def chunk_length(state: np.ndarray, legacy_padding: bool) -> int:
    """Bytes of the chunk described by ``state``.

    Prometheus before 3.0 appends a spare zero byte whenever it writes a whole byte at a
    byte boundary; it is visible at the end of the chunk when the last value write
    ended that way (always for a one-sample chunk). ``legacy_padding`` reproduces it.
    """
    return int(length_of(state[ST_BITPOS], state[ST_BYTE_TAIL], legacy_padding))


@njit(cache=True, nogil=True)
def append_samples(  # type: ignore[no-untyped-def]
    ts, vs, lo, hi, state, out, base, legacy_padding
):
    """Append samples ``lo:hi`` of ``ts``/``vs`` to the chunk at ``out[base:]``.

    ``state`` describes the chunk written so far and is updated. ``out`` must have room
    for ``chunk_length`` bytes after the append (see ``MAX_BYTES_PER_SAMPLE``). Writes
    the header count, the trailing partial byte and the legacy spare byte, so the chunk
    ``out[base:base + chunk_length(state)]`` is complete after every call. Returns that
    length.
    """
    states = state.reshape(1, STATE_LEN)
    num, t, tdelta, v, leading, trailing, bitpos, byte_tail = load_row(states, 0)
    # Resuming is written out where it is needed: as an inlined helper it cost the
    # head's append (one sample per call) half its time.
    pos = base + (bitpos >> 3)
    nacc = bitpos & 7
    acc = _U0
    if nacc:
        acc = np.uint64(out[pos]) >> np.uint64(8 - nacc)
    for k in range(lo, hi):
        num, t, tdelta, v, leading, trailing, byte_tail, pos, acc, nacc = encode_sample(
            ts[k], vs[k], num, t, tdelta, v, leading, trailing, byte_tail, out, pos, acc, nacc)
    bitpos, n = close_chunk(out, base, pos, acc, nacc, num, byte_tail, legacy_padding)
    store_row(states, 0, num, t, tdelta, v, leading, trailing, bitpos, byte_tail)
    return n


@njit(cache=True, nogil=True, inline="always")
def load_row(states, r):  # type: ignore[no-untyped-def]
    """The state slots of row ``r`` of a 2-D array of states, in ``ST_*`` order (the bit
    position as int64)."""
    return (states[r, ST_NUM], states[r, ST_T], states[r, ST_TDELTA], states[r, ST_V],
            states[r, ST_LEADING], states[r, ST_TRAILING], np.int64(states[r, ST_BITPOS]),
            states[r, ST_BYTE_TAIL])


@njit(cache=True, nogil=True, inline="always")
def store_row(states, r, num, t, tdelta, v, leading, trailing, bitpos, byte_tail):  # type: ignore[no-untyped-def]
    """Write the state slots of row ``r``."""
    states[r, ST_NUM] = num
    states[r, ST_T] = t
    states[r, ST_TDELTA] = tdelta
    states[r, ST_V] = v
    states[r, ST_LEADING] = leading
    states[r, ST_TRAILING] = trailing
    states[r, ST_BITPOS] = np.uint64(bitpos)
    states[r, ST_BYTE_TAIL] = byte_tail


@njit(cache=True, nogil=True, inline="always")
def close_chunk(out, base, pos, acc, nacc, num, byte_tail, legacy_padding):  # type: ignore[no-untyped-def]
    """Write the partial last byte, the sample count and the spare byte of the chunk at
    ``out[base:]``; return its length in bits and in bytes."""
    bitpos = (pos - base) * 8 + nacc
    if nacc:
        out[pos] = np.uint8((acc << np.uint64(8 - nacc)) & _BYTE)
    out[base] = np.uint8(num >> _U8)
    out[base + 1] = np.uint8(num & _BYTE)
    n = length_of(bitpos, byte_tail, legacy_padding)
    if n > (bitpos + 7) >> 3:
        out[base + n - 1] = 0
    return bitpos, n


@njit(cache=True, nogil=True, inline="always")
def encode_sample(  # type: ignore[no-untyped-def]
    tk, vk, num, t, tdelta, v, leading, trailing, byte_tail, out, pos, acc, nacc
):
    """Write one sample (timestamp and value bits) after ``num`` others; returns the
    updated state and writing position."""
    if num == _U0:
        zigzag = (tk << _U1) ^ (_U0 - (tk >> np.uint64(63)))
        pos, acc, nacc = _put_uvarint(out, pos, acc, nacc, zigzag)
        pos, acc, nacc = _put_wide(out, pos, acc, nacc, vk, 64)
        byte_tail = _U1
    else:
        d = tk - t
        if num == _U1:
            pos, acc, nacc = _put_uvarint(out, pos, acc, nacc, d)
        else:
            dod = d - tdelta
            code, nbits = _dod_code(dod)
            pos, acc, nacc = _put(out, pos, acc, nacc, code, nbits)
            if nbits == 4:
                pos, acc, nacc = _put_wide(out, pos, acc, nacc, dod, 64)
        tdelta = d

        x = vk ^ v
        if x == _U0:
            pos, acc, nacc = _put(out, pos, acc, nacc, _U0, 1)
            byte_tail = _U0
        else:
            lz = _clz64(x)
            tz = _ctz64(x)
            if lz >= _U32:
                lz = np.uint64(31)  # the 5-bit field cannot say more
            if leading != np.uint64(NO_WINDOW) and lz >= leading and tz >= trailing:
                nb = 64 - np.int64(leading) - np.int64(trailing)
                pos, acc, nacc = _put(out, pos, acc, nacc, np.uint64(0b10), 2)
                pos, acc, nacc = _put_wide(out, pos, acc, nacc, x >> trailing, nb)
            else:
                leading = lz
                trailing = tz
                nb = 64 - np.int64(lz) - np.int64(tz)
                # '11', 5 bits leading, 6 bits significant count (64 wraps to 0).
                head = (
                    (np.uint64(0b11) << np.uint64(11))
                    | (lz << np.uint64(6))
                    | (np.uint64(nb) & np.uint64(63))
                )
                pos, acc, nacc = _put(out, pos, acc, nacc, head, 13)
                pos, acc, nacc = _put_wide(out, pos, acc, nacc, x >> tz, nb)
            byte_tail = _U1 if (nb & 7) == 0 else _U0
    return num + _U1, tk, tdelta, vk, leading, trailing, byte_tail, pos, acc, nacc


@njit(cache=True, nogil=True)
def encode_many(ts, vs, starts, legacy_padding):  # type: ignore[no-untyped-def]
    """Encode chunk i = samples ``starts[i]:starts[i+1]``, chunks back to back.

    Returns ``(buffer, offsets)``: chunk i is ``buffer[offsets[i]:offsets[i+1]]``; the
    buffer is sized for the worst case and longer than ``offsets[-1]``.
    """
    nchunks = len(starts) - 1
    out = np.empty(
        CHUNK_OVERHEAD_BYTES * nchunks + MAX_BYTES_PER_SAMPLE * (starts[-1] - starts[0]), np.uint8
    )
    offsets = np.empty(nchunks + 1, np.int64)
    state = np.empty(STATE_LEN, np.uint64)
    base = 0
    offsets[0] = 0
    for i in range(nchunks):
        reset_state(state)
        base += append_samples(ts, vs, starts[i], starts[i + 1], state, out, base, legacy_padding)
        offsets[i + 1] = base
    return out, offsets


# --------------------------------------------------------------------------- reading


@njit(cache=True, nogil=True, inline="always")
def _uvarint(blob, p, end):  # type: ignore[no-untyped-def]
    """Read a Go uvarint at ``blob[p:end]``: ``(value, next position, status)``."""
    x = _U0
    shift = np.uint64(0)
    for i in range(10):
        if p >= end:
            return x, p, TRUNCATED
        b = np.uint64(blob[p])
        p += 1
        if b < np.uint64(0x80):
            if i == 9 and b > _U1:
                return x, p, VARINT_OVERFLOW
            return x | (b << shift), p, OK
        x |= (b & np.uint64(0x7F)) << shift
        shift += np.uint64(7)
    return x, p, VARINT_OVERFLOW


@njit(cache=True, nogil=True, inline="always")
def _refill(blob, p, end, buf, nbits):  # type: ignore[no-untyped-def]
    """Top up the left-aligned bit buffer to at least 56 bits, or to the end of the chunk.

    Never reads at or past ``end``. Buffer bits past the first ``nbits`` are either zero
    or the true next bits of the stream, so OR-ing the same bytes in again is harmless.
    """
    if p + 8 <= end:
        w = _U0
        for j in range(8):
            w = (w << _U8) | np.uint64(blob[p + j])
        buf |= w >> np.uint64(nbits)
        take = (63 - nbits) >> 3
        return p + take, buf, nbits + take * 8
    while nbits <= 56 and p < end:
        buf |= np.uint64(blob[p]) << np.uint64(56 - nbits)
        nbits += 8
        p += 1
    return p, buf, nbits


@njit(cache=True, nogil=True, inline="always")
def _take(buf, nbits, n):  # type: ignore[no-untyped-def]
    """Consume ``n`` (1..63) bits the caller made sure are buffered."""
    return buf >> np.uint64(64 - n), buf << np.uint64(n), nbits - n


@njit(cache=True, nogil=True)
def _decode_chunk(blob, start, end, count, ts_out, vs_out, o):  # type: ignore[no-untyped-def]
    """Decode ``count`` samples of the chunk ``blob[start:end]`` into ``*_out[o:]``.

    Returns ``(status, samples decoded)``. The header was read by the caller.
    """
    if count == 0:
        return OK, 0
    u, p, st = _uvarint(blob, start + 2, end)
    if st != OK:
        return st, 0
    t = (u >> _U1) ^ (_U0 - (u & _U1))
    if p + 8 > end:
        return TRUNCATED, 0
    v = _U0
    for j in range(8):
        v = (v << _U8) | np.uint64(blob[p + j])
    p += 8
    ts_out[o] = t
    vs_out[o] = v
    if count == 1:
        return OK, 1
    tdelta, p, st = _uvarint(blob, p, end)
    if st != OK:
        return st, 1

    # A reused window before any was written reads as leading = trailing = 0, the way
    # Prometheus's iterator starts; our encoder never writes that.
    leading = 0
    trailing = 0
    buf = _U0
    nbits = 0
    for k in range(1, count):
        if k >= 2:
            if nbits < 4:
                p, buf, nbits = _refill(blob, p, end, buf, nbits)
            top = buf >> np.uint64(60)  # bits past the end of the chunk read as zeros
            if top < np.uint64(0b1000):
                used, size = 1, 0
            elif top < np.uint64(0b1100):
                used, size = 2, 14
            elif top < np.uint64(0b1110):
                used, size = 3, 17
            elif top == np.uint64(0b1110):
                used, size = 4, 20
            else:
                used, size = 4, 64
            if nbits < used:
                return TRUNCATED, k
            buf <<= np.uint64(used)
            nbits -= used
            if size == 0:
                dod = _U0
            else:
                if nbits < 32:
                    p, buf, nbits = _refill(blob, p, end, buf, nbits)
                if size == 64:
                    if nbits < 32:
                        return TRUNCATED, k
                    hi, buf, nbits = _take(buf, nbits, 32)
                    p, buf, nbits = _refill(blob, p, end, buf, nbits)
                    if nbits < 32:
                        return TRUNCATED, k
                    lo, buf, nbits = _take(buf, nbits, 32)
                    dod = (hi << _U32) | lo
                else:
                    if nbits < size:
                        return TRUNCATED, k
                    dod, buf, nbits = _take(buf, nbits, size)
                    if dod > (_U1 << np.uint64(size - 1)):
                        dod -= _U1 << np.uint64(size)  # sign-extend, wrapping in uint64
            tdelta += dod
        t += tdelta

        if nbits < 2:
            p, buf, nbits = _refill(blob, p, end, buf, nbits)
        top = buf >> np.uint64(62)
        if top < np.uint64(0b10):
            if nbits < 1:
                return TRUNCATED, k
            buf <<= _U1
            nbits -= 1
        else:
            if nbits < 2:
                return TRUNCATED, k
            buf <<= np.uint64(2)
            nbits -= 2
            if top == np.uint64(0b11):
                if nbits < 11:
                    p, buf, nbits = _refill(blob, p, end, buf, nbits)
                    if nbits < 11:
                        return TRUNCATED, k
                w, buf, nbits = _take(buf, nbits, 11)
                leading = np.int64(w >> np.uint64(6))
                sig = np.int64(w & np.uint64(63))
                if sig == 0:
                    sig = 64
                if leading + sig > 64:
                    return BAD_WINDOW, k
                trailing = 64 - leading - sig
            nb = 64 - leading - trailing
            if nbits < nb:
                p, buf, nbits = _refill(blob, p, end, buf, nbits)
            if nb > 32:
                if nbits < nb - 32:
                    return TRUNCATED, k
                hi, buf, nbits = _take(buf, nbits, nb - 32)
                p, buf, nbits = _refill(blob, p, end, buf, nbits)
                if nbits < 32:
                    return TRUNCATED, k
                lo, buf, nbits = _take(buf, nbits, 32)
                x = (hi << _U32) | lo
            else:
                if nbits < nb:
                    return TRUNCATED, k
                x, buf, nbits = _take(buf, nbits, nb)
            v ^= x << np.uint64(trailing)
        ts_out[o + k] = t
        vs_out[o + k] = v
    return OK, count


@njit(cache=True, nogil=True)
def header_counts(blob, offsets):  # type: ignore[no-untyped-def]
    """Sample counts of the chunks ``blob[offsets[i]:offsets[i+1]]`` from their 2-byte
    headers, checked before any sample is decoded. Returns ``(counts, status, chunk)``:
    ``BAD_OFFSETS`` when the offsets descend or leave the blob, else the first chunk
    ``SHORT`` of its header, else the first whose bytes cannot hold the ``TOO_MANY``
    samples it claims (header 16 bits, first sample 8+64, second 8+1, then 2 each)."""
    n = len(offsets) - 1
    counts = np.zeros(max(n, 0), np.int64)
    if n > 0 and (offsets[0] < 0 or offsets[n] > len(blob)):
        return counts, BAD_OFFSETS, -1
    for i in range(n):
        if offsets[i + 1] < offsets[i]:
            return counts, BAD_OFFSETS, -1
    for i in range(n):
        if offsets[i + 1] - offsets[i] < 2:
            return counts, SHORT, i
    for i in range(n):
        c = (np.int64(blob[offsets[i]]) << 8) | np.int64(blob[offsets[i] + 1])
        counts[i] = c
        need = 16 if c == 0 else (88 if c == 1 else 97 + 2 * (c - 2))
        if need > 8 * (offsets[i + 1] - offsets[i]):
            return counts, TOO_MANY, i
    return counts, OK, -1


@njit(cache=True, nogil=True)
def decode_many(blob, offsets, counts, sample_starts, ts_out, vs_out):  # type: ignore[no-untyped-def]
    """Decode every chunk ``blob[offsets[i]:offsets[i+1]]`` into ``*_out[sample_starts[i]:]``.

    ``counts`` are the header counts, already checked by the caller. Returns
    ``(status, chunk, sample)`` of the first failure, or ``(OK, -1, -1)``.
    """
    for i in range(len(offsets) - 1):
        st, k = _decode_chunk(
            blob, offsets[i], offsets[i + 1], counts[i], ts_out, vs_out, sample_starts[i]
        )
        if st != OK:
            return st, i, k
    return OK, -1, -1
