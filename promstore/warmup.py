"""Load the compiled kernels of the write path before the first request needs them.

numba compiles (or loads from its on-disk cache) each kernel on first use, which costs
tens to hundreds of milliseconds per kernel; without a warm-up the first remote writes
after a start would be slow enough to time out under load.
"""

from __future__ import annotations

import tempfile

import snappy

from storage.batch import WriteBatch
from storage.head import Head, HeadOptions

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


def warm_up() -> None:
    """Run the whole write path once against a scratch head in a temporary directory."""
    raw = snappy_block.decompress(_sample_body(), 1 << 20)
    batch: WriteBatch = decode_write_request(raw, WireLimits())
    with tempfile.TemporaryDirectory(prefix="promstore-warmup-") as directory:
        head = Head.open(directory, HeadOptions())
        try:
            head.append(batch)
            head.append(batch)  # the second pass takes the existing-series path
            head.label_values("job")
        finally:
            head.close()
