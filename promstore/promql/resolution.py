"""Which resolution a selector reads: raw samples, or 5-minute or 1-hour aggregates.

Only a store that keeps downsampled data (``storage.downsampled.TieredStore``) offers a
choice; against any other store every selector reads raw samples, exactly as before.

The largest resolution allowed is the ``max_source_resolution`` of the query (``0`` for
raw only), or with ``auto`` (the default) a fifth of the step, as Thanos's querier
chooses (instant queries: raw). Within it a selector takes the coarsest resolution that
its window still resolves: a range ``[r]`` needs at least five windows (``r >= 5 *
resolution``), an instant selector a window no longer than the lookback delta. Then:

- with an explicit resolution, downsampled data serves every time it covers, as
  Thanos's store gateway serves it, and raw data the rest;
- with ``auto``, downsampled data serves every time it covers when the query is long
  (its range and window hold at least ``LONG_WINDOWS`` windows of the resolution), and
  otherwise only times whose raw data is gone, so that short queries keep raw answers.

Only selectors whose function has a faithful aggregate read downsampled data (see
``range_functions.AGGREGATED``); plain selectors read the window average.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from storage.downsampled import RESOLUTIONS, Part

from .parser import VectorSelector
from .values import Grid

if TYPE_CHECKING:
    from .engine import Evaluator

__all__ = ["AUTO", "LONG_WINDOWS", "MIN_WINDOWS_PER_RANGE", "Planner", "plan_parts"]

AUTO: None = None
"""``max_source_resolution=auto``: the resolution follows the step."""

LONG_WINDOWS = 288
"""Windows of a resolution in a query long enough to prefer it over raw data with
``auto``: a day at 5 minutes, 12 days at 1 hour."""

MIN_WINDOWS_PER_RANGE = 5
"""Windows a range selector must span to read a resolution (``docs/downsampling.md``
measures the error at this ratio)."""

_AUTO_STEP_DIVISOR = 5


class Planner(Protocol):
    """A store that can split a time range between resolutions."""

    def plan(self, resolution: int, mint: int, maxt: int, prefer_raw: bool) -> list[Part]: ...


def plan_parts(ev: Evaluator, sel: VectorSelector, window_ms: int, grid: Grid,
               instant: bool) -> list[Part] | None:
    """The parts of time the selector reads at which resolution over ``grid``, or None
    when it reads raw samples only. ``window_ms`` is its range (a range selector) or the
    lookback delta (``instant``)."""
    store = ev.store
    if not hasattr(store, "plan") or sel.at is not None:
        return None
    limit = ev.max_resolution
    auto = limit is AUTO
    if limit is None:
        limit = grid.step // _AUTO_STEP_DIVISOR  # an instant query's grid has step 1
    fits = [r for r in RESOLUTIONS if r <= limit
            and (r <= window_ms if instant else r * MIN_WINDOWS_PER_RANGE <= window_ms)]
    if not fits:
        return None
    res = max(fits)
    refs = ev.ref_times(grid, sel.offset, sel.at)
    lo, hi = ev.load_range(sel, 0 if instant else window_ms)
    mint, maxt = max(int(refs[0]) - window_ms, lo), min(int(refs[-1]), hi)
    if mint > maxt:
        return None
    long = ev.end - ev.start + window_ms >= LONG_WINDOWS * res
    parts: list[Part] = store.plan(res, mint, maxt, prefer_raw=auto and not long)
    if all(p.resolution == 0 for p in parts):
        return None
    return parts
