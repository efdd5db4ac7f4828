"""Aggregate chunks: the chunk encoding of downsampled blocks (encoding byte 0x82).

A downsampled series keeps, per time window (5 minutes or 1 hour), five aggregates of
the raw samples in it, as Thanos does: ``count``, ``sum``, ``min``, ``max``, and a
reset-adjusted ``counter``. One aggregate chunk holds all five columns of one series
over a stretch of windows, each column a dense chunk (``storage.dense``, lossless), so
every aggregate comes back bit for bit and a reader decodes only the columns it needs.

``count``, ``sum``, ``min`` and ``max`` have one sample per window, stamped with the
window's last millisecond. ``counter`` has, for every window, its first raw sample
(time and value), and the chunk's last raw sample, with values adjusted for the resets
since the chunk began (a drop counts as a reset to zero; the chunk's first sample keeps
its raw value). Differences of the counter column are therefore true increases; a
range starting at a window boundary begins at the very sample raw data would begin
with. The chunk header keeps the raw value of the last sample, so that a reader joining
chunks can tell whether the counter was reset between them (``stitch_counters``).

Layout (``docs/downsampling.md``)::

    u16 BE   windows in the chunk (as every Prometheus chunk starts with its count)
    u8       version (1)
    f64 LE   raw value of the chunk's last sample
    5 x      uvarint length, dense chunk bytes     count, sum, min, max, counter

Decoding checks every length against the chunk's own bytes and every column's sample
count against the header's, and raises ``CorruptionError`` naming the chunk.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from . import _aggregate_kernels as _k
from .chunk_merge import DENSE_LEVEL
from .dense import MAX_SAMPLES_PER_CHUNK, decode_dense_many, encode_dense_many
from .errors import CorruptionError

__all__ = [
    "ENCODING_AGGREGATE",
    "STALE_NAN_BITS",
    "Column",
    "adjust_counters",
    "decode_column",
    "encode_aggregates",
    "stitch_counters",
]

ENCODING_AGGREGATE = 0x82
"""The chunk encoding byte of aggregate chunks; next to dense chunks' 0x81, clear of
every byte Prometheus knows, so Prometheus refuses such a block instead of misreading."""

VERSION = 1

STALE_NAN_BITS = np.uint64(0x7FF0000000000002)
"""Prometheus's stale marker; downsampling leaves stale markers out of every aggregate."""

_ERRORS = {
    _k.TRUNCATED: "a length runs past the chunk",
    _k.BAD_VERSION: "unknown version",
    _k.BAD_VARINT: "column length overflows",
    _k.BAD_COUNT: "a column's sample count disagrees with the chunk's",
}


class Column(IntEnum):
    """The aggregate columns, in the order a chunk stores them."""

    COUNT = 0
    SUM = 1
    MIN = 2
    MAX = 3
    COUNTER = 4


def encode_aggregates(
    window_times: np.ndarray,
    count: np.ndarray,
    total: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    window_starts: np.ndarray,
    counter_times: np.ndarray,
    counter_values: np.ndarray,
    counter_starts: np.ndarray,
    last_raw: np.ndarray,
    *,
    level: int = DENSE_LEVEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode aggregate chunks: chunk ``i`` has windows ``window_starts[i]:
    window_starts[i+1]`` (times and the four window columns), counter samples
    ``counter_starts[i]:counter_starts[i+1]`` and last raw value ``last_raw[i]``.

    Each chunk needs 1 to 65535 windows and 1 to one more counter samples, times
    increasing (``ValueError`` otherwise). Returns ``(blob, offsets)`` as dense
    chunks do.
    """
    w_starts = np.ascontiguousarray(window_starts, np.int64)
    c_starts = np.ascontiguousarray(counter_starts, np.int64)
    windows, counters = np.diff(w_starts), np.diff(c_starts)
    if len(w_starts) != len(c_starts) or len(last_raw) != len(windows):
        raise ValueError("window, counter and last-value arrays disagree on the chunk count")
    if np.any(windows < 1) or np.any(windows > MAX_SAMPLES_PER_CHUNK) \
            or np.any(counters < 1) or np.any(counters > windows + 1):
        raise ValueError("an aggregate chunk needs 1 to 65535 windows and at most one "
                         "more counter sample")
    columns = [encode_dense_many(window_times, v, w_starts, level=level)
               for v in (count, total, low, high)]
    columns.append(encode_dense_many(counter_times, counter_values, c_starts, level=level))
    shift = np.cumsum([0] + [len(b) for b, _ in columns[:-1]])
    column_blob = np.concatenate([b for b, _ in columns])
    column_offsets = np.stack([o + s for (_, o), s in zip(columns, shift)])
    sizes = _k.packed_sizes(column_offsets)
    offsets = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    out = np.empty(int(offsets[-1]), np.uint8)
    bits = np.ascontiguousarray(last_raw, np.float64).view(np.uint64)
    _k.pack(windows.astype(np.int64), bits, VERSION, column_blob, column_offsets, offsets, out)
    return out, offsets


def decode_column(blob: np.ndarray, offsets: np.ndarray, column: Column
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode one column of the aggregate chunks ``blob[offsets[i]:offsets[i+1]]``.

    Returns ``(timestamps, values, sample_starts, last_raw)``: chunk ``i``'s samples
    are ``sample_starts[i]:sample_starts[i+1]`` and ``last_raw[i]`` its header's raw
    value. ``CorruptionError`` for a malformed chunk.
    """
    data = np.ascontiguousarray(blob, np.uint8)
    bounds = np.ascontiguousarray(offsets, np.int64)
    if bounds.ndim != 1 or len(bounds) < 1 or (len(bounds) > 1 and (
            bounds[0] < 0 or bounds[-1] > len(data) or np.any(np.diff(bounds) < 0))):
        raise ValueError("offsets must be non-decreasing and inside the blob")
    n = len(bounds) - 1
    starts, ends = np.zeros(n, np.int64), np.zeros(n, np.int64)
    bits, counts = np.zeros(n, np.uint64), np.zeros(n, np.int64)
    status, chunk = _k.locate_column(data, bounds, int(column), VERSION, starts, ends, bits,
                                     counts)
    if status != _k.OK:
        raise CorruptionError(f"aggregate chunk {chunk}: {_ERRORS[status]}")
    lengths = ends - starts
    sub_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=sub_offsets[1:])
    column_bytes = np.empty(int(sub_offsets[-1]), np.uint8)
    _k.gather(data, starts, ends, sub_offsets, column_bytes)
    try:
        ts, vs, sample_starts = decode_dense_many(column_bytes, sub_offsets)
    except CorruptionError as exc:
        raise CorruptionError(f"aggregate chunk, {column.name.lower()} column: {exc}") from None
    return ts, vs, sample_starts, bits.view(np.float64)


def adjust_counters(starts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counter samples reset-adjusted per run ``values[starts[i]:starts[i+1]]``: after
    a drop (a reset to zero) the value before it is added to every later sample, so
    that differences are increases. The first sample of a run keeps its raw value."""
    out = np.empty(len(values), np.float64)
    _k.adjust_runs(np.ascontiguousarray(starts, np.int64),
                   np.ascontiguousarray(values, np.float64), out)
    return out


def stitch_counters(starts: np.ndarray, same_series: np.ndarray, first_raw: np.ndarray,
                    last_raw: np.ndarray, values: np.ndarray) -> None:
    """Join runs of adjusted counter samples into one adjusted series per series, in
    place: run ``k`` is ``values[starts[k]:starts[k+1]]`` with raw values ``first_raw[k]``
    and ``last_raw[k]`` at its ends (NaN where unknown, when a run was cut out of a
    longer one); ``same_series[k]`` says it continues run ``k-1``."""
    _k.stitch(np.ascontiguousarray(starts, np.int64), np.ascontiguousarray(same_series, bool),
              np.ascontiguousarray(first_raw, np.float64),
              np.ascontiguousarray(last_raw, np.float64), values)
