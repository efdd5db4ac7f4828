"""numba kernels that write remote-read responses as protobuf bytes.

Called by ``promstore.remote.read_handler``. Both kernels work from the columnar label
table of a ``storage.series_set.SeriesSet``: every distinct label name and value is
UTF-8 encoded once, by the caller, into a blob with offsets; a series' labels are
``label_ids[i, j]`` (an index into the value blob, -1 when absent) for name ``j``.

Each kernel runs two passes over its input: the first computes every message length
(protobuf puts a message's length before its bytes), the second writes into a buffer
of exactly the total size. Field presence follows proto3 as the reference classes
serialize it: a scalar or string whose value is zero (all bits zero, for a double) or
empty is left out, so the bytes equal ``SerializeToString()`` of the same message.

Timestamps and values arrive as ``uint64`` views, so negative timestamps become the
ten-byte varints protobuf uses for ``int64`` and every value's bits, NaN payloads and
-0.0 included, are written as they are.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["CRC32C_TABLE", "crc32c", "encode_frames", "encode_query_result"]

_U7 = np.uint64(7)
_U8 = np.uint64(8)
_U0 = np.uint64(0)
_LOW7 = np.uint64(0x7F)
_HIGH = np.uint64(0x80)
_BYTE = np.uint64(0xFF)

# Field keys (field number << 3 | wire type) of the messages written here.
_KEY_1_LEN = 0x0A  # TimeSeries in QueryResult, Label in TimeSeries/ChunkedSeries,
#                    name in Label, ChunkedSeries in ChunkedReadResponse
_KEY_2_LEN = 0x12  # Sample in TimeSeries, value in Label, Chunk in ChunkedSeries
_KEY_SAMPLE_VALUE = 0x09  # Sample.value, double
_KEY_SAMPLE_TIMESTAMP = 0x10  # Sample.timestamp, int64
_KEY_CHUNK_MIN = 0x08  # Chunk.min_time_ms
_KEY_CHUNK_MAX = 0x10  # Chunk.max_time_ms
_KEY_CHUNK_TYPE = 0x18  # Chunk.type
_CHUNK_XOR = 1  # Chunk.Encoding.XOR, the only chunk type sent
_KEY_CHUNK_DATA = 0x22  # Chunk.data
_KEY_QUERY_INDEX = 0x10  # ChunkedReadResponse.query_index

_CRC_BYTES = 4


def _crc32c_table() -> np.ndarray:
    """Slice-by-8 tables of CRC-32C (reflected Castagnoli polynomial 0x82F63B78)."""
    table = np.zeros((8, 256), np.int64)
    crc = np.arange(256, dtype=np.int64)
    for _ in range(8):
        crc = np.where(crc & 1, (crc >> 1) ^ 0x82F63B78, crc >> 1)
    table[0] = crc
    for k in range(1, 8):
        table[k] = (table[k - 1] >> 8) ^ table[0][table[k - 1] & 0xFF]
    return table


CRC32C_TABLE = _crc32c_table()
"""The lookup tables ``crc32c`` takes (int64, 8 x 256)."""


# -- leaf helpers ---------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _uvarint_len(u):  # type: ignore[no-untyped-def]
    u = np.uint64(u)
    n = 1
    while u >= _HIGH:
        u >>= _U7
        n += 1
    return n


@njit(cache=True, nogil=True, inline="always")
def _put_uvarint(out, pos, u):  # type: ignore[no-untyped-def]
    u = np.uint64(u)
    while u >= _HIGH:
        out[pos] = np.uint8((u & _LOW7) | _HIGH)
        u >>= _U7
        pos += 1
    out[pos] = np.uint8(u)
    return pos + 1


@njit(cache=True, nogil=True, inline="always")
def _string_field_len(n):  # type: ignore[no-untyped-def]
    """Bytes of a string field of ``n`` bytes (key, length, bytes); 0 when empty."""
    if n == 0:
        return 0
    return 1 + _uvarint_len(n) + n


@njit(cache=True, nogil=True, inline="always")
def _label_len(name_offsets, value_offsets, j, v):  # type: ignore[no-untyped-def]
    """Bytes of the ``Label`` message of name ``j`` and value ``v`` (without its key)."""
    return (_string_field_len(name_offsets[j + 1] - name_offsets[j])
            + _string_field_len(value_offsets[v + 1] - value_offsets[v]))


@njit(cache=True, nogil=True, inline="always")
def _put_string(out, pos, key, blob, start, end):  # type: ignore[no-untyped-def]
    if end == start:
        return pos
    out[pos] = key
    pos = _put_uvarint(out, pos + 1, end - start)
    out[pos:pos + end - start] = blob[start:end]
    return pos + end - start


@njit(cache=True, nogil=True)
def _labels_len(label_ids, i, name_offsets, value_offsets):  # type: ignore[no-untyped-def]
    """``(bytes of series i's label fields, sum of its Label message sizes)``."""
    fields = 0
    messages = 0
    for j in range(label_ids.shape[1]):
        v = label_ids[i, j]
        if v >= 0:
            size = _label_len(name_offsets, value_offsets, j, v)
            messages += size
            fields += 1 + _uvarint_len(size) + size
    return fields, messages


@njit(cache=True, nogil=True)
def _put_labels(out, pos, label_ids, i, name_blob, name_offsets, value_blob,  # type: ignore[no-untyped-def]
                value_offsets):
    for j in range(label_ids.shape[1]):
        v = label_ids[i, j]
        if v >= 0:
            out[pos] = _KEY_1_LEN
            pos = _put_uvarint(out, pos + 1, _label_len(name_offsets, value_offsets, j, v))
            pos = _put_string(out, pos, _KEY_1_LEN, name_blob, name_offsets[j],
                              name_offsets[j + 1])
            pos = _put_string(out, pos, _KEY_2_LEN, value_blob, value_offsets[v],
                              value_offsets[v + 1])
    return pos


# -- SAMPLES ----------------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _sample_len(t, v):  # type: ignore[no-untyped-def]
    n = 0
    if v != _U0:
        n += 9
    if t != _U0:
        n += 1 + _uvarint_len(t)
    return n


@njit(cache=True, nogil=True)
def encode_query_result(label_ids, name_blob, name_offsets, value_blob,  # type: ignore[no-untyped-def]
                        value_offsets, starts, ts, vs):
    """A ``QueryResult`` as a ``results`` field of ``ReadResponse`` (key, length,
    message): one ``TimeSeries`` per row of ``label_ids``, with samples
    ``starts[i]:starts[i+1]`` of ``ts``/``vs`` (uint64). Returns uint8 bytes.
    """
    n = label_ids.shape[0]
    body = np.empty(n, np.int64)
    result = 0
    for i in range(n):
        size = _labels_len(label_ids, i, name_offsets, value_offsets)[0]
        for s in range(starts[i], starts[i + 1]):
            sample = _sample_len(ts[s], vs[s])
            size += 1 + _uvarint_len(sample) + sample
        body[i] = size
        result += 1 + _uvarint_len(size) + size
    out = np.empty(1 + _uvarint_len(result) + result, np.uint8)
    out[0] = _KEY_1_LEN
    pos = _put_uvarint(out, 1, result)
    for i in range(n):
        out[pos] = _KEY_1_LEN
        pos = _put_uvarint(out, pos + 1, body[i])
        pos = _put_labels(out, pos, label_ids, i, name_blob, name_offsets, value_blob,
                          value_offsets)
        for s in range(starts[i], starts[i + 1]):
            t, v = ts[s], vs[s]
            out[pos] = _KEY_2_LEN
            pos = _put_uvarint(out, pos + 1, _sample_len(t, v))
            if v != _U0:
                out[pos] = _KEY_SAMPLE_VALUE
                pos += 1
                for _ in range(8):  # fixed64 is little-endian
                    out[pos] = np.uint8(v & _BYTE)
                    v >>= _U8
                    pos += 1
            if t != _U0:
                out[pos] = _KEY_SAMPLE_TIMESTAMP
                pos = _put_uvarint(out, pos + 1, t)
    return out


# -- STREAMED_XOR_CHUNKS ----------------------------------------------------------------------


@njit(cache=True, nogil=True)
def crc32c(data, start, end, table):  # type: ignore[no-untyped-def]
    """CRC-32C of ``data[start:end]`` (uint8), eight bytes per step."""
    crc = np.int64(0xFFFFFFFF)
    p = start
    while p + 8 <= end:
        one = crc ^ (np.int64(data[p]) | (np.int64(data[p + 1]) << 8)
                     | (np.int64(data[p + 2]) << 16) | (np.int64(data[p + 3]) << 24))
        two = (np.int64(data[p + 4]) | (np.int64(data[p + 5]) << 8)
               | (np.int64(data[p + 6]) << 16) | (np.int64(data[p + 7]) << 24))
        crc = (table[7, one & 0xFF] ^ table[6, (one >> 8) & 0xFF]
               ^ table[5, (one >> 16) & 0xFF] ^ table[4, (one >> 24) & 0xFF]
               ^ table[3, two & 0xFF] ^ table[2, (two >> 8) & 0xFF]
               ^ table[1, (two >> 16) & 0xFF] ^ table[0, (two >> 24) & 0xFF])
        p += 8
    while p < end:
        crc = table[0, (crc ^ np.int64(data[p])) & 0xFF] ^ (crc >> 8)
        p += 1
    return crc ^ np.int64(0xFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def _chunk_len(mint, maxt, data_len):  # type: ignore[no-untyped-def]
    """Bytes of an XOR ``Chunk`` message (without its key)."""
    n = 2  # the type
    if mint != 0:
        n += 1 + _uvarint_len(mint)
    if maxt != 0:
        n += 1 + _uvarint_len(maxt)
    return n + _string_field_len(data_len)


@njit(cache=True, nogil=True)
def encode_frames(label_ids, name_blob, name_offsets, value_blob,  # type: ignore[no-untyped-def]
                  value_offsets, lo, hi, chunk_starts, mint, maxt, blob, offsets,
                  query_index, max_frame_bytes, table):
    """Frames of series ``lo:hi`` of a streamed response, back to back (uint8).

    Series ``i`` owns XOR chunks ``chunk_starts[i]:chunk_starts[i+1]`` (``blob`` bytes
    ``offsets[c]:offsets[c+1]``). Every frame holds one ``ChunkedSeries``: a series'
    labels and as many of its chunks, in order, as fit in ``max_frame_bytes`` less the
    labels' size, always at least one; a series with more chunks continues in further
    frames that repeat its labels. A series without chunks gets no frame.
    """
    first = chunk_starts[lo]
    n_chunks = chunk_starts[hi] - first
    # Frames never outnumber chunks: the chunks that open each frame, and its series.
    frame_chunk = np.empty(n_chunks + 1, np.int64)
    frame_series = np.empty(n_chunks, np.int64)
    frame_series_len = np.empty(n_chunks, np.int64)
    n_frames = 0
    total = 0
    qi_len = 0 if query_index == 0 else 1 + _uvarint_len(query_index)
    for i in range(lo, hi):
        labels_fields, labels_size = _labels_len(label_ids, i, name_offsets, value_offsets)
        budget = max_frame_bytes - labels_size
        left = budget
        size = labels_fields
        for c in range(chunk_starts[i], chunk_starts[i + 1]):
            if size == labels_fields:
                frame_chunk[n_frames] = c
            chunk = _chunk_len(mint[c], maxt[c], offsets[c + 1] - offsets[c])
            size += 1 + _uvarint_len(chunk) + chunk
            left -= chunk
            if left > 0 and c + 1 < chunk_starts[i + 1]:
                continue
            message = 1 + _uvarint_len(size) + size + qi_len
            total += _uvarint_len(message) + _CRC_BYTES + message
            frame_series[n_frames] = i
            frame_series_len[n_frames] = size
            n_frames += 1
            size = labels_fields
            left = budget
    frame_chunk[n_frames] = chunk_starts[hi]
    out = np.empty(total, np.uint8)
    pos = 0
    for f in range(n_frames):
        i = frame_series[f]
        size = frame_series_len[f]
        message = 1 + _uvarint_len(size) + size + qi_len
        pos = _put_uvarint(out, pos, message)
        crc_at = pos
        pos += _CRC_BYTES
        start = pos
        out[pos] = _KEY_1_LEN
        pos = _put_uvarint(out, pos + 1, size)
        pos = _put_labels(out, pos, label_ids, i, name_blob, name_offsets, value_blob,
                          value_offsets)
        for c in range(frame_chunk[f], frame_chunk[f + 1]):
            out[pos] = _KEY_2_LEN
            pos = _put_uvarint(out, pos + 1, _chunk_len(mint[c], maxt[c],
                                                        offsets[c + 1] - offsets[c]))
            if mint[c] != 0:
                out[pos] = _KEY_CHUNK_MIN
                pos = _put_uvarint(out, pos + 1, mint[c])
            if maxt[c] != 0:
                out[pos] = _KEY_CHUNK_MAX
                pos = _put_uvarint(out, pos + 1, maxt[c])
            out[pos] = _KEY_CHUNK_TYPE
            out[pos + 1] = _CHUNK_XOR
            pos += 2
            pos = _put_string(out, pos, _KEY_CHUNK_DATA, blob, offsets[c], offsets[c + 1])
        if query_index != 0:
            out[pos] = _KEY_QUERY_INDEX
            pos = _put_uvarint(out, pos + 1, query_index)
        crc = crc32c(out, start, pos, table)
        for b in range(_CRC_BYTES):  # big-endian
            out[crc_at + b] = np.uint8((crc >> (8 * (_CRC_BYTES - 1 - b))) & 0xFF)
    return out
