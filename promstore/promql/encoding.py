"""Query results as the JSON ``data`` object of Prometheus's HTTP API.

``{"resultType":"vector","result":[{"metric":{…},"value":[t,"v"]},…]}``, ``matrix`` with
``"values":[[t,"v"],…]``, ``scalar`` and ``string`` as ``[t,"v"]``. Sample timestamps
are written as Prometheus writes them (seconds with three decimals, not round-tripped
through a float), values as Go prints them. Label sets are assembled a column at a time
in Python; the points, which outnumber them, are written by one kernel pass
(``_encoding_kernels``), since formatting a float in Python costs a few hundred
nanoseconds.
"""

from __future__ import annotations

import json

import numpy as np

from ._encoding_kernels import write_answer
from .engine import QueryResult
from .formatting import go_float
from .labels import Labels, StringPool
from .values import Matrix, Scalar, String, Vector

__all__ = ["encode_data"]


_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_FEW = 16  # series whose labels are cheaper to write one by one than column by column


def _metrics_json(labels: Labels, pool: StringPool) -> list[str]:
    """The JSON object of every series' labels. Many series are built a column at a
    time: each label becomes a ``,"name":"value"`` piece (or nothing where absent), pieces
    are added up element-wise, and the leading comma is cut."""
    n = labels.n
    if n == 0:
        return []
    if n <= _FEW:
        keys = [_json(name) + ":" for name in labels.names]
        strings = pool.strings
        return ["{" + ",".join(k + _json(strings[v]) for k, v in zip(keys, row) if v) + "}"
                for row in labels.ids.tolist()]
    acc = np.full(n, "", dtype=object)
    for j, name in enumerate(labels.names):
        column = labels.ids[:, j]
        distinct, inverse = np.unique(column, return_inverse=True)
        key = "," + _json(name) + ":"
        table = np.array([key + _json(pool.strings[v]) if v else "" for v in distinct.tolist()],
                         dtype=object)  # per distinct value
        acc = acc + table[inverse.reshape(-1)]
    return ["{" + text[1:] + "}" for text in acc.tolist()]


def _series_json(metrics: list[str], starts: np.ndarray, times: np.ndarray,
                 values: np.ndarray, single: bool, before: bytes, after: bytes) -> bytes:
    """``before``, the series objects of a vector (``single``: one point each) or matrix
    result, then ``after``, written into one buffer and copied out once: an answer of
    millions of points is tens of megabytes, and each copy of it would add as much to
    the server's peak memory. (Few numpy calls: after a heavy query has pushed them out
    of the processor's caches, each costs several microseconds.)"""
    encoded = [m.encode() for m in metrics]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    values = np.ascontiguousarray(values, dtype=np.float64)
    metric_bytes = np.frombuffer(b"".join(encoded), np.uint8)
    return write_answer(np.frombuffer(before, np.uint8), metric_bytes, lengths, starts, times,
                        values, values.view(np.uint64), single,
                        np.frombuffer(after, np.uint8)).tobytes()


def encode_data(result: QueryResult, before: bytes = b"", after: bytes = b"") -> bytes:
    """The ``data`` member of a successful query answer, between ``before`` and
    ``after`` (the rest of the envelope)."""
    value, grid = result.value, result.grid
    if isinstance(value, Scalar | String):
        # Prometheus encodes these two with Go's encoding/json: the time as a float64
        # number of seconds, a scalar's value in positional notation.
        t = _json(float(grid.times[0]) / 1000).removesuffix(".0")
        text = _json(go_float(value.values[0]) if isinstance(value, Scalar) else value.value)
        data = f'{{"resultType":"{result.kind}","result":[{t},{text}]}}'
        return before + data.encode() + after
    metrics = _metrics_json(value.labels, result.pool)
    if isinstance(value, Vector) and result.kind == "vector":
        starts = np.arange(value.n + 1, dtype=np.int64)
        times = np.full(value.n, grid.times[0], dtype=np.int64)
        return _series_json(metrics, starts, times, value.values[:, 0], True,
                            before + b'{"resultType":"vector","result":[', b"]}" + after)
    before += b'{"resultType":"matrix","result":['
    if isinstance(value, Vector):
        rows, steps = np.nonzero(value.present)  # row-major: by series, then time
        starts = np.zeros(value.n + 1, dtype=np.int64)
        np.cumsum(value.present.sum(axis=1), out=starts[1:])
        return _series_json(metrics, starts, grid.times[steps], value.values[rows, steps],
                            False, before, b"]}" + after)
    assert isinstance(value, Matrix)
    return _series_json(metrics, value.starts, value.times, value.values, False, before,
                        b"]}" + after)
