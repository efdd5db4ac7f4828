"""Decoding of remote write 1.0 request bodies (``prometheus.WriteRequest``) into a WriteBatch.

The body is the already decompressed protobuf (see ``snappy_block``). Decoding is two
passes of a numba kernel over the bytes, read in place: the first checks the structure
and counts, the second fills arrays sized from the counts, so no Python code runs per
series, label or sample and limits are enforced before anything large is allocated.
Labels are not copied: the batch points into the body. The kernels release the GIL,
so decoding can run in a worker thread beside the event loop.

Accepted as protobuf allows: fields in any order, unknown varint, fixed64,
length-delimited and fixed32 fields (skipped), repeated scalar fields (the last one
wins), absent fields (zero, empty string). Rejected with BadDataError: truncated or
over-long varints, lengths running past their enclosing message, groups, wire types
6/7, field number 0, and known fields arriving with the wrong wire type. Histograms,
exemplars and metadata are counted and skipped without looking inside them; label
bytes are not checked at all (the head validates labels). See docs/remote-write.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from promstore.remote import _wire_kernels as k
from storage.batch import WriteBatch
from storage.errors import BadDataError, LimitExceededError

__all__ = ["WireLimits", "decode_write_request"]


@dataclass(frozen=True, slots=True)
class WireLimits:
    """Per-request count limits, checked after the counting pass and before allocation.

    Memory for a decoded batch is about 32 bytes per label and 16 per sample, on top of
    the body itself; the defaults keep one request well under 200 MiB.
    """

    max_series: int = 100_000
    max_labels: int = 4_000_000
    max_samples: int = 1_000_000


_MESSAGES = {
    k.MSG_WRITE_REQUEST: ("WriteRequest", {1: "timeseries", 3: "metadata"}),
    k.MSG_TIME_SERIES: ("TimeSeries", {1: "labels", 2: "samples", 3: "exemplars",
                                      4: "histograms"}),
    k.MSG_LABEL: ("Label", {1: "name", 2: "value"}),
    k.MSG_SAMPLE: ("Sample", {1: "value", 2: "timestamp"}),
}
_WIRE_TYPES = {k.WT_VARINT: "varint", k.WT_I64: "fixed64", k.WT_LEN: "length-delimited",
               3: "start group", 4: "end group", k.WT_I32: "fixed32"}


# Bodies up to this size are decoded in one pass into arrays with room for one series,
# one label and one sample per GUESS_ITEM_BYTES body bytes (4 bytes of arrays per body
# byte); larger bodies, and bodies of smaller items, are counted first. A label as
# Prometheus sends it takes 10 to 40 bytes, a sample 11 to 18. Room for the true bound
# (an item takes at least two bytes) was 32 bytes per body byte: 8 MiB for a
# 2,000-sample request, whose page faults and allocator churn cost more than decoding.
SINGLE_PASS_MAX_BYTES = 8 << 20
GUESS_ITEM_BYTES = 16


def decode_write_request(data: bytes | bytearray | memoryview, limits: WireLimits) -> WriteBatch:
    """Decode a decompressed remote write 1.0 body into a WriteBatch.

    The batch's ``buf`` is a view of ``data``, not a copy (the batch keeps it alive);
    ``data`` must not change while the batch is in use. Raises BadDataError naming the byte
    offset and the problem for malformed protobuf, LimitExceededError when a count
    limit is exceeded. Safe to call from any thread.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    decoded = _decode_single_pass(buf) if len(buf) <= SINGLE_PASS_MAX_BYTES else None
    counts, starts, labels, samples = decoded or _decode_two_pass(buf, limits)
    n_series, n_labels, n_samples = (int(counts[k.C_SERIES]), int(counts[k.C_LABELS]),
                                     int(counts[k.C_SAMPLES]))
    _check_limit("series", n_series, limits.max_series)
    _check_limit("labels", n_labels, limits.max_labels)
    _check_limit("samples", n_samples, limits.max_samples)
    starts = starts[:, :n_series + 1]
    labels = labels[:, :n_labels]
    samples = samples[:, :n_samples]
    return WriteBatch(
        buf=buf,
        label_start=starts[k.S_LABELS],
        name_off=labels[k.L_NAME_OFF],
        name_len=labels[k.L_NAME_LEN],
        value_off=labels[k.L_VALUE_OFF],
        value_len=labels[k.L_VALUE_LEN],
        sample_start=starts[k.S_SAMPLES],
        timestamps=samples[k.P_TIMESTAMP].view(np.int64),
        values=samples[k.P_VALUE].view(np.float64),
        n_histograms=int(counts[k.C_HISTOGRAMS]),
        n_exemplars=int(counts[k.C_EXEMPLARS]),
        n_metadata=int(counts[k.C_METADATA]),
    )


def _decode_single_pass(buf: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """Fill arrays with room for one item per ``GUESS_ITEM_BYTES`` body bytes; None when
    the body holds more items than that (it then takes two passes)."""
    room = len(buf) // GUESS_ITEM_BYTES + 1
    starts = np.empty((2, room + 1), dtype=np.int64)
    starts[:, 0] = 0
    labels = np.empty((4, room), dtype=np.int64)
    samples = np.empty((2, room), dtype=np.uint64)
    counts = np.zeros(k.N_COUNTS, dtype=np.int64)
    err = np.zeros(k.N_ERR, dtype=np.int64)
    code = k.walk_write_request(buf, True, counts, err, starts, labels, samples)
    if code == k.NO_ROOM:
        return None
    if code != k.OK:
        raise BadDataError(_describe(err))
    return counts, starts, labels, samples


def _decode_two_pass(buf: np.ndarray, limits: WireLimits) -> tuple[np.ndarray, ...]:
    """Count first, check the limits, then allocate exactly and fill: for large bodies,
    where upper-bound arrays would be wasteful."""
    counts = np.zeros(k.N_COUNTS, dtype=np.int64)
    err = np.zeros(k.N_ERR, dtype=np.int64)
    code = k.walk_write_request(buf, False, counts, err, np.empty((2, 0), dtype=np.int64),
                                np.empty((4, 0), dtype=np.int64),
                                np.empty((2, 0), dtype=np.uint64))
    if code != k.OK:
        raise BadDataError(_describe(err))
    n_series, n_labels, n_samples = (int(counts[k.C_SERIES]), int(counts[k.C_LABELS]),
                                     int(counts[k.C_SAMPLES]))
    _check_limit("series", n_series, limits.max_series)
    _check_limit("labels", n_labels, limits.max_labels)
    _check_limit("samples", n_samples, limits.max_samples)
    starts = np.empty((2, n_series + 1), dtype=np.int64)
    starts[:, 0] = 0
    labels = np.empty((4, n_labels), dtype=np.int64)
    samples = np.empty((2, n_samples), dtype=np.uint64)
    filled = np.zeros(k.N_COUNTS, dtype=np.int64)
    code = k.walk_write_request(buf, True, filled, err, starts, labels, samples)
    if code != k.OK or not np.array_equal(filled, counts):
        raise BadDataError("write request changed while it was being decoded")
    return counts, starts, labels, samples


def _check_limit(what: str, count: int, limit: int) -> None:
    if count > limit:
        raise LimitExceededError(f"write request has {count} {what}, limit is {limit}")


def _describe(err: np.ndarray) -> str:
    """Word the failure a kernel recorded in ``err``."""
    code, offset, message, field, wire_type = (int(v) for v in err[:k.E_DETAIL])
    detail = int(err[k.E_DETAIL]) & 0xFFFF_FFFF_FFFF_FFFF  # recorded as raw uint64 bits
    msg_name, field_names = _MESSAGES[message]
    where = f"invalid protobuf at byte {offset}: {msg_name}"
    if field:
        name = field_names.get(field)
        where += f" field {field}" + (f" ({name})" if name else "")
    wt_name = _WIRE_TYPES.get(wire_type, "invalid")
    problem = {
        k.VARINT_TRUNCATED: "varint runs past the end of the message",
        k.VARINT_TOO_LONG: "varint longer than 10 bytes",
        k.TAG_TOO_LARGE: f"field key {detail} does not fit in 32 bits",
        k.FIELD_ZERO: "field number 0 is invalid",
        k.GROUP: f"wire type {wire_type} ({wt_name}) is not supported",
        k.BAD_WIRE_TYPE: f"wire type {wire_type} does not exist",
        k.WRONG_WIRE_TYPE: f"has wire type {wire_type} ({wt_name}), expected "
                           f"{detail} ({_WIRE_TYPES.get(detail)})",
        k.LENGTH_PAST_END: f"declared length {detail} runs past the end of the enclosing "
                           "message",
        k.FIXED_PAST_END: f"{wt_name} value runs past the end of the message",
    }[code]
    return f"{where}: {problem}"
