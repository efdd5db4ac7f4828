"""Query results as the JSON ``data`` object of Prometheus's HTTP API.

``{"resultType":"vector","result":[{"metric":{…},"value":[t,"v"]},…]}``, ``matrix`` with
``"values":[[t,"v"],…]``, ``scalar`` and ``string`` as ``[t,"v"]``. Sample timestamps
are written as Prometheus writes them (seconds with three decimals, not round-tripped
through a float), values as Go prints them. The text is assembled directly, since a
generic JSON encoder would print both differently.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

from .engine import QueryResult
from .formatting import format_timestamps, format_values, go_float
from .labels import Labels, StringPool
from .values import Matrix, Scalar, String, Vector

__all__ = ["encode_data"]


def _json(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


_JOIN = '"],'  # closes a point and separates it from the next


def _metrics_json(labels: Labels, pool: StringPool) -> list[str]:
    """The JSON object of every series' labels, built a column at a time: each label
    becomes a ``,"name":"value"`` piece (or nothing where absent), pieces are added up
    element-wise, and the leading comma is cut."""
    n = labels.n
    if n == 0:
        return []
    acc = np.full(n, "", dtype=object)
    for j, name in enumerate(labels.names):
        column = labels.ids[:, j]
        distinct, inverse = np.unique(column, return_inverse=True)
        key = "," + _json(name) + ":"
        table = np.array([key + _json(pool.strings[v]) if v else "" for v in distinct.tolist()],
                         dtype=object)  # per distinct value
        acc = acc + table[inverse.reshape(-1)]
    return ["{" + text[1:] + "}" for text in acc.tolist()]


def encode_data(result: QueryResult) -> str:
    """The ``data`` member of a successful query answer."""
    value, grid = result.value, result.grid
    if isinstance(value, Scalar | String):
        # Prometheus encodes these two with Go's encoding/json: the time as a float64
        # number of seconds, a scalar's value in positional notation.
        t = _json(float(grid.times[0]) / 1000).removesuffix(".0")
        text = _json(go_float(value.values[0]) if isinstance(value, Scalar) else value.value)
        return f'{{"resultType":"{result.kind}","result":[{t},{text}]}}'
    metrics = _metrics_json(value.labels, result.pool)
    if isinstance(value, Vector) and result.kind == "vector":
        t = format_timestamps(grid.times[:1])[0]
        texts = format_values(value.values[:, 0])
        parts = [f'{{"metric":{m},"value":[{t},"{v}"]}}' for m, v in zip(metrics, texts)]
        return f'{{"resultType":"vector","result":[{",".join(parts)}]}}'
    if isinstance(value, Vector):
        rows, steps = np.nonzero(value.present)
        prefixes = [f'[{t},"' for t in format_timestamps(grid.times)]
        opened: Iterable[str] = map(prefixes.__getitem__, steps.tolist())
        counts = value.present.sum(axis=1)
        texts = format_values(value.values[rows, steps])
    else:
        assert isinstance(value, Matrix)
        opened = (f'[{t},"' for t in format_timestamps(value.times))
        counts = np.diff(value.starts)
        texts = format_values(value.values)
    points = list(map(str.__add__, opened, texts))
    ends = np.cumsum(counts).tolist()
    parts = [f'{{"metric":{m},"values":[{_JOIN.join(points[a:b])}"]]}}'
             for m, a, b in zip(metrics, [0, *ends[:-1]], ends)]
    return f'{{"resultType":"matrix","result":[{",".join(parts)}]}}'
