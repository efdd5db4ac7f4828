"""``POST /api/v1/read``: Prometheus remote read over the store's querier.

A request is a snappy-compressed ``prometheus.ReadRequest``: queries, each a time range
and label matchers, and the response types the client accepts. We answer with the
first accepted type we speak, ``SAMPLES`` when the list is empty (as Prometheus 2.42's
own client sends it):

- ``SAMPLES``: one snappy-compressed ``ReadResponse`` holding a ``QueryResult`` per
  query, built whole (the snappy block format needs the total length up front).
- ``STREAMED_XOR_CHUNKS``: each query's series in label order with their XOR chunks as
  the store holds them (``Querier.select_chunks``: whole chunks, which may reach past
  the query's range, as Prometheus sends them), as frames (``read_stream``) of one
  series each and about ``max_bytes_in_frame`` bytes, written to the connection batch
  by batch.

Protobuf bytes of both responses are written by numba kernels from the columnar
``SeriesSet``/``ChunkSeriesSet`` (``_read_kernels``); no Python object is made per
series, chunk or sample. Storage calls and encoding run in the default executor.

As in Prometheus: the body is decoded as snappy whatever its headers say, requests
beyond ``concurrency`` wait for a slot, a query without matchers selects nothing, and
more samples than ``sample_limit`` give a 400. Unlike Prometheus: read hints are
ignored (every sample in the query's range is returned, which is what hints allow to
skip); the sample limit counts every query of a request and applies to streamed
responses too, counting the samples of the chunks sent (a query's chunks are in memory
before they are streamed); bad matchers get a 400 rather than a 500. Once a streamed
response has started, a failure can no longer change its status: the connection is
closed mid-stream so that the client sees an incomplete response rather than a short
one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cramjam
import numpy as np
from aiohttp import web
from google.protobuf.message import DecodeError

from storage.errors import BadDataError, LimitExceededError, PromstoreError, TooLargeError
from storage.matchers import Matcher, MatchType
from storage.series_set import ChunkSeriesSet, SeriesSet

from ..config import Config
from ..http_errors import status_for
from ..metrics import ServerMetrics
from . import _read_kernels as _k
from . import read_stream, snappy_block
from .pb import remote_pb2

if TYPE_CHECKING:
    from storage.db import DB

__all__ = [
    "SAMPLES",
    "STREAMED_XOR_CHUNKS",
    "LabelTable",
    "ReadHandler",
    "ReadLimits",
    "ReadQuery",
    "chunk_sample_count",
    "compress_response",
    "decode_read_request",
    "encode_frames",
    "encode_read_response",
    "frame_batches",
]

log = logging.getLogger(__name__)

SAMPLES = remote_pb2.ReadRequest.SAMPLES
STREAMED_XOR_CHUNKS = remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS
_SUPPORTED = (SAMPLES, STREAMED_XOR_CHUNKS)

_SNAPPY_MAX_INPUT = 0xFFFF_FFFF  # the block format's length header is a uint32
_BATCH_BYTES = 4 << 20  # streamed frames encoded and written per executor call
_SERIES_SLACK_BYTES = 64  # per-series guess of label and framing bytes when batching
_NO_CHUNKS = ChunkSeriesSet([], [], np.empty((0, 0), np.int32), np.zeros(1, np.int64),
                            np.empty(0, np.int64), np.empty(0, np.int64),
                            np.empty(0, np.uint8), np.zeros(1, np.int64))


@dataclass(frozen=True)
class ReadLimits:
    """Limits of remote read, named after Prometheus's ``--storage.remote.read-*`` flags
    where it has one."""

    sample_limit: int = 50_000_000  # samples per request, over every query; 0 = none
    max_bytes_in_frame: int = 1 << 20  # a frame may exceed it by one chunk
    concurrency: int = 10  # requests served at once; more wait for a slot
    max_request_bytes: int = 32 << 20  # compressed body, as Prometheus reads at most
    max_decoded_bytes: int = 64 << 20
    max_queries: int = 1000

    @classmethod
    def from_config(cls, config: Config) -> ReadLimits:
        """The limits a ``promstore.config.Config`` sets."""
        return cls(sample_limit=config.remote_read_sample_limit,
                   max_bytes_in_frame=config.remote_read_max_bytes_in_frame,
                   concurrency=config.remote_read_concurrent_limit)


@dataclass(frozen=True)
class ReadQuery:
    """One query of a request: series matching all ``matchers``, samples in
    ``[mint, maxt]`` (inclusive milliseconds)."""

    matchers: tuple[Matcher, ...]
    mint: int
    maxt: int


# -- request ------------------------------------------------------------------------------


def decode_read_request(body: bytes, limits: ReadLimits,
                        content_encoding: str | None = None) -> tuple[list[ReadQuery], int]:
    """The queries of a compressed ``ReadRequest`` and the response type to answer with.

    Raises ``TooLargeError`` beyond the decoded size limit, ``LimitExceededError`` for
    too many queries and ``BadDataError`` for anything malformed: the snappy block
    (naming ``content_encoding`` when it is not snappy), the protobuf, a matcher type
    or regex, or a list of response types none of which we speak.
    """
    try:
        raw = snappy_block.decompress(body, limits.max_decoded_bytes)
    except BadDataError as exc:
        if content_encoding and content_encoding.strip().lower() != "snappy":
            raise BadDataError(f"{exc} (Content-Encoding is {content_encoding!r}: remote "
                               "read requests must be snappy-compressed)") from None
        raise
    request = remote_pb2.ReadRequest()
    try:
        request.ParseFromString(raw)
    except DecodeError as exc:
        raise BadDataError(f"invalid ReadRequest: {exc}") from None
    if len(request.queries) > limits.max_queries:
        raise LimitExceededError(f"{len(request.queries)} queries in one read request, the "
                                 f"limit is {limits.max_queries}")
    queries = [ReadQuery(_matchers(i, q.matchers), q.start_timestamp_ms, q.end_timestamp_ms)
               for i, q in enumerate(request.queries)]
    return queries, _response_type(list(request.accepted_response_types))


def _matchers(index: int, pb_matchers: Sequence[Any]) -> tuple[Matcher, ...]:
    out = []
    for m in pb_matchers:
        try:
            kind = MatchType(m.type)
        except ValueError:
            raise BadDataError(f"query {index}: matcher on {m.name!r} has unknown type "
                               f"{m.type}") from None
        try:
            out.append(Matcher(kind, m.name, m.value))
        except BadDataError as exc:
            raise BadDataError(f"query {index}: {exc}") from None
    return tuple(out)


def _response_type(accepted: list[int]) -> int:
    for kind in accepted or [SAMPLES]:
        if kind in _SUPPORTED:
            return kind
    raise BadDataError(f"none of the accepted response types {accepted} is supported; "
                       "supported: 0 (SAMPLES), 1 (STREAMED_XOR_CHUNKS)")


# -- label sets as bytes ------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelTable:
    """Label sets of series as the kernels read them: ``label_ids[i, j]`` is series
    ``i``'s value for name ``j`` (-1 when absent), names and values UTF-8 encoded once,
    back to back, string ``k`` being ``blob[offsets[k]:offsets[k+1]]``."""

    label_ids: np.ndarray
    name_blob: np.ndarray
    name_offsets: np.ndarray
    value_blob: np.ndarray
    value_offsets: np.ndarray

    @classmethod
    def of(cls, names: Sequence[str], values: Sequence[str], label_ids: np.ndarray
           ) -> LabelTable:
        """The table of a ``SeriesSet``'s ``names``, ``values`` and ``label_ids``."""
        return cls(np.ascontiguousarray(label_ids, np.int32), *_strings(names),
                   *_strings(values))

    def kernel_args(self) -> tuple[np.ndarray, ...]:
        return (self.label_ids, self.name_blob, self.name_offsets, self.value_blob,
                self.value_offsets)


def _strings(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = list(map(str.encode, texts))
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, encoded), np.int64, count=len(encoded)), out=offsets[1:])
    return np.frombuffer(b"".join(encoded), np.uint8), offsets


# -- SAMPLES ------------------------------------------------------------------------------------


def encode_read_response(results: Sequence[SeriesSet]) -> np.ndarray | bytes:
    """A serialized ``ReadResponse`` with one ``QueryResult`` per series set, in order
    (uncompressed)."""
    parts = [_k.encode_query_result(
        *LabelTable.of(s.names, s.values, s.label_ids).kernel_args(), s.starts,
        s.timestamps.view(np.uint64), s.samples.view(np.uint64)) for s in results]
    return parts[0] if len(parts) == 1 else b"".join(parts)


def compress_response(raw: np.ndarray | bytes) -> bytes:
    """``raw`` in the snappy block format; raises ``LimitExceededError`` beyond what the
    format can hold."""
    if len(raw) > _SNAPPY_MAX_INPUT:
        raise LimitExceededError(f"read response of {len(raw)} bytes is larger than snappy "
                                 "can compress; narrow the query or lower the sample limit")
    return bytes(cramjam.snappy.compress_raw(raw))


# -- STREAMED_XOR_CHUNKS ------------------------------------------------------------------------


def chunk_sample_count(chunks: ChunkSeriesSet) -> int:
    """Samples in the chunks of ``chunks``, read from the chunks' 2-byte headers."""
    heads = chunks.offsets[:-1]
    if len(heads) == 0:
        return 0
    return int(((chunks.blob[heads].astype(np.int64) << 8) | chunks.blob[heads + 1]).sum())


def frame_batches(chunks: ChunkSeriesSet, batch_bytes: int = _BATCH_BYTES) -> np.ndarray:
    """Series boundaries ``b`` cutting the result into runs ``b[k]:b[k+1]`` of about
    ``batch_bytes`` of frames each (a single larger series is a run of its own)."""
    n = chunks.n_series
    sizes = (chunks.offsets[chunks.chunk_starts[1:]] - chunks.offsets[chunks.chunk_starts[:-1]]
             + _SERIES_SLACK_BYTES)
    ends = np.cumsum(sizes)
    total = int(ends[-1]) if n else 0
    cuts = np.searchsorted(ends, np.arange(batch_bytes, total, batch_bytes), side="left") + 1
    return np.unique(np.concatenate([[0], np.minimum(cuts, n), [n]])).astype(np.int64)


def encode_frames(chunks: ChunkSeriesSet, labels: LabelTable, query_index: int,
                  max_bytes_in_frame: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """The frames (``read_stream`` framing, ``ChunkedReadResponse`` messages) of series
    ``lo:hi`` of ``chunks``, whose label sets are ``labels``, back to back; see
    ``_read_kernels.encode_frames``."""
    hi = chunks.n_series if hi is None else hi
    return _k.encode_frames(*labels.kernel_args(), lo, hi, chunks.chunk_starts, chunks.mint,
                            chunks.maxt, chunks.blob, chunks.offsets, query_index,
                            max_bytes_in_frame, _k.CRC32C_TABLE)


# -- handler ------------------------------------------------------------------------------------


class _StreamAborted(Exception):
    """A streamed response failed after its status was sent; its connection is closed."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__("remote read stream aborted")
        self.response = response


class ReadHandler:
    """The aiohttp handler, bound to a store, limits and metrics."""

    def __init__(self, store: Callable[[], DB], limits: ReadLimits,
                 metrics: ServerMetrics) -> None:
        self._store = store
        self._limits = limits
        self._metrics = metrics
        self._gate = asyncio.Semaphore(limits.concurrency)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            async with self._gate:
                response = await self._respond(request)
            code = str(response.status)
        except _StreamAborted as aborted:
            response, code = aborted.response, "aborted"
        self._metrics.requests.labels("read", code).inc()
        self._metrics.request_duration.labels("read").observe(time.perf_counter() - started)
        return response

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        """The response, or an error response for what went wrong before one started."""
        try:
            return await self._handle(request)
        except _StreamAborted:
            raise
        except PromstoreError as exc:
            return web.Response(status=status_for(exc), text=str(exc) + "\n")
        except web.HTTPRequestEntityTooLarge as exc:
            return web.Response(status=413, text=f"{exc.text}\n")
        except Exception:
            log.exception("remote read failed")
            return web.Response(status=500, text="internal error reading samples\n")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self._limits.max_request_bytes:
            raise TooLargeError(f"read request body of {length} bytes is larger than the "
                                f"limit of {self._limits.max_request_bytes} bytes")
        body = await request.read()
        loop = asyncio.get_running_loop()
        queries, kind = await loop.run_in_executor(
            None, decode_read_request, body, self._limits,
            request.headers.get("Content-Encoding"))
        if kind == STREAMED_XOR_CHUNKS:
            return await self._stream(request, queries)
        raw = await loop.run_in_executor(None, self._samples, queries)
        return web.Response(body=raw, headers={"Content-Type": "application/x-protobuf",
                                               "Content-Encoding": "snappy"})

    def _select(self, query: ReadQuery) -> SeriesSet:
        if not query.matchers or query.mint > query.maxt:
            return SeriesSet.empty()
        querier = self._store().querier(query.mint, query.maxt)
        return querier.select(query.matchers, query.mint, query.maxt)

    def _select_chunks(self, query: ReadQuery) -> ChunkSeriesSet:
        if not query.matchers or query.mint > query.maxt:
            return _NO_CHUNKS
        querier = self._store().querier(query.mint, query.maxt)
        return querier.select_chunks(query.matchers, query.mint, query.maxt)

    def _take(self, taken: int, n_samples: int, index: int) -> int:
        """Samples of the request so far, with query ``index``'s ``n_samples`` added;
        raises ``LimitExceededError`` beyond the sample limit."""
        total = taken + n_samples
        limit = self._limits.sample_limit
        if limit and total > limit:
            raise LimitExceededError(
                f"remote read exceeds the limit of {limit} samples per request (query "
                f"{index} brings it to {total}); narrow the matchers or the time range")
        return total

    def _samples(self, queries: Sequence[ReadQuery]) -> bytes:
        results, taken = [], 0
        for i, query in enumerate(queries):
            series = self._select(query)
            taken = self._take(taken, series.n_samples, i)
            results.append(series)
        return compress_response(encode_read_response(results))

    def _chunks(self, query: ReadQuery, index: int, taken: int
                ) -> tuple[ChunkSeriesSet, LabelTable, int]:
        chunks = self._select_chunks(query)
        taken = self._take(taken, chunk_sample_count(chunks), index)
        return chunks, LabelTable.of(chunks.names, chunks.values, chunks.label_ids), taken

    async def _stream(self, request: web.Request, queries: Sequence[ReadQuery]
                      ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        response = web.StreamResponse(headers={"Content-Type": read_stream.CONTENT_TYPE})
        taken = 0
        for i, query in enumerate(queries):
            try:
                chunks, labels, taken = await loop.run_in_executor(None, self._chunks, query,
                                                                   i, taken)
                if not response.prepared:
                    await response.prepare(request)
                for lo, hi in itertools.pairwise(frame_batches(chunks)):
                    data = await loop.run_in_executor(
                        None, encode_frames, chunks, labels, i,
                        self._limits.max_bytes_in_frame, int(lo), int(hi))
                    await response.write(data.data)
            except Exception as exc:
                if not response.prepared:
                    raise
                if isinstance(exc, ConnectionError):
                    log.info("remote read client went away during query %d", i)
                else:  # a traceback only for what is not a known request or storage error
                    log.warning("remote read stream aborted in query %d: %s", i, exc,
                                exc_info=not isinstance(exc, PromstoreError))
                # Closing the connection before the end of the chunked body is the only
                # way left to tell the client that the response is incomplete.
                if request.transport is not None:
                    request.transport.close()
                raise _StreamAborted(response) from exc
        if not response.prepared:
            await response.prepare(request)
        await response.write_eof()
        return response
