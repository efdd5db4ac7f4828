"""Load the engine's compiled kernels before the first query needs them.

numba compiles (or loads from its on-disk cache) each kernel on first use: a few
hundred milliseconds in all, which the first query after a start would otherwise pay.
"""

from __future__ import annotations

import threading

from .encoding import encode_data
from .engine import Engine
from .testing import MemoryStore

__all__ = ["warm_up"]

_QUERIES = (
    "m", "timestamp(m)", "rate(m[1m])", "avg_over_time(m[1m:10s])",
    "quantile_over_time(0.5, m[1m])", "sum by (a) (m)", "topk(1, m)", "quantile(0.5, m)",
    "histogram_quantile(0.5, m)", "m + on(a) group_left m", "m ^ 2", "m and m",
)


def warm_up(stop: threading.Event | None = None) -> None:
    """Run one query through every kernel against a tiny in-memory store; stop between
    queries once ``stop`` is set (a server shut down while still compiling them exits
    without waiting for the rest)."""
    store = MemoryStore()
    for k, le in enumerate(("1", "+Inf")):
        store.add({"__name__": "m", "a": str(k), "le": le}, [0, 15_000, 30_000],
                  [1.0, 2.0, 3.0])
    engine = Engine(store)
    for query in _QUERIES:
        if stop is not None and stop.is_set():
            return
        encode_data(engine.instant_query(query, 30_000))
        encode_data(engine.range_query(query, 0, 30_000, 15_000))
