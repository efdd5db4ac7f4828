"""numba kernel that walks a remote write 1.0 ``WriteRequest`` in its protobuf bytes.

One walker serves two passes over the same bytes: with ``fill=False`` it checks the
structure and counts series, labels, samples, histograms, exemplars and metadata;
with ``fill=True`` it writes offsets, timestamps and value bits into arrays sized
from those counts. Keeping a single walker means the two passes cannot disagree.

The walker is one loop over every field of every message, keeping the few open
messages (request > series > label or sample) in local variables rather than
recursing: a numba function that hands an array to another one pays for reference
counting on every call, which would cost more than the parsing itself. The leaf
helpers that read a varint or a double get the buffer's address instead of the array
(see ``storage._memory_kernels``), and one-byte keys and lengths, nearly all of them,
are read inline.

The kernel never raises: it returns an error code and describes the failing field
in ``err`` (see the ``E_*`` slots), and ``promstore.remote.wire`` words the message.
Every length is compared against what is left of its enclosing message as an
unsigned 64-bit number before it is added to a position, so a huge declared length
can never wrap around into a small or negative one.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import njit

from storage._memory_kernels import load_u8, load_u64

__all__ = [
    "BAD_WIRE_TYPE",
    "C_EXEMPLARS",
    "C_HISTOGRAMS",
    "C_LABELS",
    "C_METADATA",
    "C_SAMPLES",
    "C_SERIES",
    "E_CODE",
    "E_DETAIL",
    "E_FIELD",
    "E_MESSAGE",
    "E_OFFSET",
    "E_WIRE_TYPE",
    "FIELD_ZERO",
    "FIXED_PAST_END",
    "GROUP",
    "LENGTH_PAST_END",
    "L_NAME_LEN",
    "L_NAME_OFF",
    "L_VALUE_LEN",
    "L_VALUE_OFF",
    "MSG_LABEL",
    "MSG_SAMPLE",
    "MSG_TIME_SERIES",
    "MSG_WRITE_REQUEST",
    "NO_ROOM",
    "N_COUNTS",
    "N_ERR",
    "OK",
    "P_TIMESTAMP",
    "P_VALUE",
    "S_LABELS",
    "S_SAMPLES",
    "TAG_TOO_LARGE",
    "VARINT_TOO_LONG",
    "VARINT_TRUNCATED",
    "WRONG_WIRE_TYPE",
    "WT_I32",
    "WT_I64",
    "WT_LEN",
    "WT_VARINT",
    "walk_write_request",
]

# Error codes.
OK = 0
VARINT_TRUNCATED = 1  # a varint runs past the end of its enclosing message
VARINT_TOO_LONG = 2  # a varint has more than 10 bytes
TAG_TOO_LARGE = 3  # a field key does not fit in 32 bits
FIELD_ZERO = 4  # field number 0 is never valid
GROUP = 5  # wire types 3/4 (groups) are not used by these messages
BAD_WIRE_TYPE = 6  # wire types 6 and 7 do not exist
WRONG_WIRE_TYPE = 7  # a known field arrived with another wire type; detail = expected
LENGTH_PAST_END = 8  # a length-delimited field is longer than what remains; detail = length
FIXED_PAST_END = 9  # a fixed32/fixed64 field is cut short
NO_ROOM = 10  # an output array is full: sized by a guess, or the bytes changed since counting

# Slots of ``err``.
E_CODE, E_OFFSET, E_MESSAGE, E_FIELD, E_WIRE_TYPE, E_DETAIL = range(6)
N_ERR = 6

# Rows of the ``starts``, ``labels`` and ``samples`` output arrays.
S_LABELS, S_SAMPLES = range(2)
L_NAME_OFF, L_NAME_LEN, L_VALUE_OFF, L_VALUE_LEN = range(4)
P_TIMESTAMP, P_VALUE = range(2)

# Slots of ``counts``.
C_SERIES, C_LABELS, C_SAMPLES, C_HISTOGRAMS, C_EXEMPLARS, C_METADATA = range(6)
N_COUNTS = 6

# Messages, as rows of _EXPECTED.
MSG_WRITE_REQUEST, MSG_TIME_SERIES, MSG_LABEL, MSG_SAMPLE = range(4)

WT_VARINT, WT_I64, WT_LEN, WT_I32 = 0, 1, 2, 5

# _EXPECTED[message, field] is the wire type a known field must have, -1 if unknown.
# Fields outside the table are unknown too; WriteRequest field 2 is reserved.
_EXPECTED = np.full((4, 5), -1, dtype=np.int64)
_EXPECTED[MSG_WRITE_REQUEST, 1] = WT_LEN  # timeseries
_EXPECTED[MSG_WRITE_REQUEST, 3] = WT_LEN  # metadata
_EXPECTED[MSG_TIME_SERIES, 1:5] = WT_LEN  # labels, samples, exemplars, histograms
_EXPECTED[MSG_LABEL, 1:3] = WT_LEN  # name, value
_EXPECTED[MSG_SAMPLE, 1] = WT_I64  # value (double)
_EXPECTED[MSG_SAMPLE, 2] = WT_VARINT  # timestamp (int64)

_U32_MAX = np.uint64(0xFFFF_FFFF)
_LITTLE_ENDIAN = sys.byteorder == "little"
_MAX_VARINT_BYTES = 10


@njit(cache=True, nogil=True)
def _varint(base: int, pos: int, stop: int) -> tuple[int, np.uint64]:
    """Return (position after the varint at ``pos`` of the buffer at address ``base``, its
    low 64 bits), or (-error code, 0)."""
    value = np.uint64(0)
    shift = np.uint64(0)
    i = pos
    while True:
        if i - pos == _MAX_VARINT_BYTES:
            return -VARINT_TOO_LONG, np.uint64(0)
        if i >= stop:
            return -VARINT_TRUNCATED, np.uint64(0)
        byte = load_u8(base + i)
        value |= np.uint64(byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return i, value
        shift += np.uint64(7)


@njit(cache=True, nogil=True)
def _le_u64(base: int, pos: int) -> np.uint64:
    """The 8 bytes at ``pos`` of the buffer at address ``base`` as a little-endian uint64
    (a double's exact bits)."""
    if _LITTLE_ENDIAN:
        return load_u64(base + pos)
    bits = np.uint64(0)
    for k in range(8):
        bits |= np.uint64(load_u8(base + pos + k)) << np.uint64(8 * k)
    return bits


@njit(cache=True, nogil=True)
def walk_write_request(buf: np.ndarray, fill: bool, counts: np.ndarray, err: np.ndarray,
                       starts: np.ndarray, labels: np.ndarray, samples: np.ndarray) -> int:
    """Walk a whole WriteRequest; return OK or an error code (details in ``err``).

    ``counts`` (int64[N_COUNTS]) must be zero on entry and holds the totals on exit.
    With ``fill`` the outputs are ``starts`` int64[2, n_series + 1] (column 0 is the
    caller's to zero), ``labels`` int64[4, n_labels] and ``samples`` uint64[2, n_samples],
    sized from a counting pass over the same bytes or by a guess; NO_ROOM when one is
    full. Timestamps and values are written as raw bits for the caller to view as int64
    and float64, so no value ever passes through a float conversion.
    """
    n = len(buf)
    base = buf.ctypes.data
    pos = 0
    depth = 0  # 0: in the request, 1: in a series, 2: in a label or sample
    series_stop = 0
    item = MSG_LABEL  # what is open at depth 2
    item_stop = 0
    # The label or sample being read; absent fields keep these defaults.
    name_off = name_len = value_off = value_len = 0
    timestamp = value = np.uint64(0)
    while True:
        if depth == 0:
            message, stop = MSG_WRITE_REQUEST, n
        elif depth == 1:
            message, stop = MSG_TIME_SERIES, series_stop
        else:
            message, stop = item, item_stop

        if pos == stop:  # the innermost open message is complete
            if depth == 0:
                return OK
            if depth == 1:
                if fill:
                    series = counts[C_SERIES]
                    starts[S_LABELS, series + 1] = counts[C_LABELS]
                    starts[S_SAMPLES, series + 1] = counts[C_SAMPLES]
                counts[C_SERIES] += 1
            elif item == MSG_LABEL:
                if fill:
                    index = counts[C_LABELS]
                    labels[L_NAME_OFF, index] = name_off
                    labels[L_NAME_LEN, index] = name_len
                    labels[L_VALUE_OFF, index] = value_off
                    labels[L_VALUE_LEN, index] = value_len
                counts[C_LABELS] += 1
            else:
                if fill:
                    samples[P_TIMESTAMP, counts[C_SAMPLES]] = timestamp
                    samples[P_VALUE, counts[C_SAMPLES]] = value
                counts[C_SAMPLES] += 1
            depth -= 1
            continue

        # Key, then payload bounds; any failure falls through to the error report.
        field = wire_type = 0
        detail = np.uint64(0)
        at = pos
        # Keys and lengths almost always fit in one byte: those are read without a call.
        if pos < stop and buf[pos] < 0x80:
            pos, key = pos + 1, np.uint64(buf[pos])
        else:
            pos, key = _varint(base, pos, stop)
        code = -pos if pos < 0 else OK
        if code == OK:
            if key > _U32_MAX:
                code = TAG_TOO_LARGE
                detail = key
            else:
                key_bits = np.int64(key)  # at most 32 bits now
                field = int(key_bits >> 3)
                wire_type = int(key_bits & 7)
                expected = _EXPECTED[message, field] if field < _EXPECTED.shape[1] else -1
                if field == 0:
                    code = FIELD_ZERO
                elif expected >= 0 and wire_type != expected:
                    code = WRONG_WIRE_TYPE
                    detail = np.uint64(expected)
        start = end = pos
        varint = np.uint64(0)
        if code == OK:
            if wire_type == WT_VARINT:
                end, varint = _varint(base, pos, stop)
                code = -end if end < 0 else OK
            elif wire_type == WT_LEN:
                if pos < stop and buf[pos] < 0x80:
                    start, length = pos + 1, np.uint64(buf[pos])
                else:
                    start, length = _varint(base, pos, stop)
                if start < 0:
                    code = -start
                elif length > np.uint64(stop - start):
                    code = LENGTH_PAST_END
                    detail = length
                else:
                    end = start + int(length)
            elif wire_type == WT_I64 or wire_type == WT_I32:
                end = pos + (8 if wire_type == WT_I64 else 4)
                if end > stop:
                    code = FIXED_PAST_END
            elif wire_type == 3 or wire_type == 4:
                code = GROUP
            else:
                code = BAD_WIRE_TYPE
        if code != OK:
            err[E_CODE] = code
            err[E_OFFSET] = at
            err[E_MESSAGE] = message
            err[E_FIELD] = field
            err[E_WIRE_TYPE] = wire_type
            err[E_DETAIL] = np.int64(detail)
            return code

        pos = end
        if message == MSG_WRITE_REQUEST:
            if field == 1:
                if fill and counts[C_SERIES] + 1 >= starts.shape[1]:
                    return NO_ROOM
                depth, series_stop, pos = 1, end, start
            elif field == 3:
                counts[C_METADATA] += 1
        elif message == MSG_TIME_SERIES:
            if field == 1 or field == 2:
                if field == 1:
                    full = fill and counts[C_LABELS] >= labels.shape[1]
                    item = MSG_LABEL
                    name_off = value_off = start
                    name_len = value_len = 0
                else:
                    full = fill and counts[C_SAMPLES] >= samples.shape[1]
                    item = MSG_SAMPLE
                    timestamp = value = np.uint64(0)
                if full:
                    return NO_ROOM
                depth, item_stop, pos = 2, end, start
            elif field == 3:
                counts[C_EXEMPLARS] += 1
            elif field == 4:
                counts[C_HISTOGRAMS] += 1
        elif message == MSG_LABEL:
            if field == 1:
                name_off, name_len = start, end - start
            elif field == 2:
                value_off, value_len = start, end - start
        elif field == 1:  # MSG_SAMPLE
            value = _le_u64(base, start)
        elif field == 2:
            timestamp = varint
