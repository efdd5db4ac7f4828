"""Which resolution a selector reads: raw samples, or 5-minute or 1-hour aggregates.

Only a store that keeps downsampled data (``storage.downsampled.TieredStore``) offers a
choice; against any other store every selector reads raw samples, exactly as before.

A selector can read a resolution its window still resolves: a range ``[r]`` needs at
least five windows (``r >= 5 * resolution``), an instant selector a window no longer
than the lookback delta.

- ``max_source_resolution`` given (``0`` for raw only): the coarsest such resolution up
  to it serves every time its blocks cover, as Thanos's store gateway serves it, and
  raw data the rest.
- ``auto`` (the default): the coarsest such resolution up to a fifth of the step, as
  Thanos's querier chooses; it serves every time its blocks cover when the query is
  long (its range and window hold at least ``LONG_WINDOWS`` windows), otherwise only
  times whose raw data is gone, so that short queries keep raw answers. When the step
  allows no resolution (a fine step, an instant query), the finest resolution the
  window allows still serves the times whose raw data is gone: a coarse answer there
  rather than none.

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
    fits = [r for r in RESOLUTIONS
            if (r <= window_ms if instant else r * MIN_WINDOWS_PER_RANGE <= window_ms)]
    auto = ev.max_resolution is AUTO
    if not auto:
        fits = [r for r in fits if r <= ev.max_resolution]  # type: ignore[operator]
        if not fits:
            return None
        res, prefer_raw = max(fits), False
    else:
        # An instant query's grid has step 1: raw only, unless raw data is gone.
        by_step = [r for r in fits if r <= grid.step // _AUTO_STEP_DIVISOR]
        if by_step:
            res = max(by_step)
            prefer_raw = ev.end - ev.start + window_ms < LONG_WINDOWS * res
        elif fits:
            res, prefer_raw = min(fits), True
        else:
            return None
    refs = ev.ref_times(grid, sel.offset, sel.at)
    lo, hi = ev.load_range(sel, 0 if instant else window_ms)
    mint, maxt = max(int(refs[0]) - window_ms, lo), min(int(refs[-1]), hi)
    if mint > maxt:
        return None
    parts: list[Part] = store.plan(res, mint, maxt, prefer_raw=prefer_raw)
    if all(p.resolution == 0 for p in parts):
        return None
    return parts
