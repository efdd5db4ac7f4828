"""Load the compiled kernels of the storage engine before the first request needs them.

numba compiles (or loads from its on-disk cache) each kernel on first use, which costs
tens to hundreds of milliseconds per kernel; without a warm-up the first remote writes
after a start would be slow enough to time out under load, and the first block written
or read would stall. Loading them at start also makes the code's memory part of the
idle footprint, where it belongs.
"""

from __future__ import annotations

import tempfile

import snappy

from compaction.compactor import compact
from storage.batch import WriteBatch
from storage.db import DB, DBOptions
from storage.head import HeadOptions
from storage.matchers import Matcher, MatchType

from .remote import snappy_block
from .remote.pb import remote_pb2
from .remote.wire import WireLimits, decode_write_request

__all__ = ["warm_up"]


def _sample_body() -> bytes:
    request = remote_pb2.WriteRequest()
    series = request.timeseries.add()
    series.labels.add(name="__name__", value="warmup")
    series.labels.add(name="job", value="promstore")
    series.samples.add(value=1.0, timestamp=1000)
    return snappy.compress(request.SerializeToString())


_MINUTE = 60_000


def warm_up() -> None:
    """Run the write path, block writing, checkpointing, replay, reads and compaction
    once against a scratch store (one-minute blocks) in a temporary directory."""
    raw = snappy_block.decompress(_sample_body(), 1 << 20)
    batch: WriteBatch = decode_write_request(raw, WireLimits())
    options = DBOptions(head=HeadOptions(block_range_ms=_MINUTE, out_of_order_window_ms=_MINUTE),
                        compaction_interval=0)
    everything = [Matcher(MatchType.RE, "__name__", ".+")]
    with tempfile.TemporaryDirectory(prefix="promstore-warmup-") as directory:
        db = DB.open(directory, options)
        try:
            db.append(batch)
            db.append(batch)  # the second pass takes the existing-series path
            for minute in (1, 2, 3, 4):
                db.append(_shifted(batch, minute * _MINUTE))
            db.append(_shifted(batch, 4 * _MINUTE - 1000))  # out of order, in the window
            db.compact_head()
        finally:
            db.close()
        db = DB.open(directory, options)  # replays a checkpoint
        try:
            querier = db.querier()
            querier.select(everything, 0, 10 * _MINUTE)
            querier.select_chunks(everything, 0, 10 * _MINUTE)
            querier.label_values("job")
            compact(db.directory, db.blocks)
        finally:
            db.close()


def _shifted(batch: WriteBatch, by_ms: int) -> WriteBatch:
    return WriteBatch(batch.buf, batch.label_start, batch.name_off, batch.name_len,
                      batch.value_off, batch.value_len, batch.sample_start,
                      batch.timestamps + by_ms, batch.values)
