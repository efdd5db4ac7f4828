"""Range queries evaluated in slices of steps: each slice selects about
``max_slice_samples`` samples and holds about ``max_cells`` cells, whatever the length of
the range and the steps, and the slices add up to the answer of one piece."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from promstore.promql import Engine, EngineOptions, TooManySamplesError
from promstore.promql.engine import SliceUse
from promstore.promql.testing import MemoryStore
from storage.matchers import Matcher
from storage.series_set import SeriesSet

_HOUR = 3_600_000


@dataclass
class CountingStore:
    """A store that records how many samples each ``select`` returned."""

    inner: MemoryStore
    selected: list[int] = field(default_factory=list)

    def select(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> SeriesSet:
        ss = self.inner.select(matchers, mint, maxt)
        self.selected.append(ss.n_samples)
        return ss


def _store(series: int = 4, hours: int = 6) -> MemoryStore:
    store = MemoryStore()
    ts = list(range(0, hours * _HOUR, 15_000))
    for i in range(series):
        store.add({"__name__": "m", "i": str(i)}, ts, [float(k * (i + 1)) for k in range(len(ts))])
    return store


@pytest.mark.parametrize("query", [
    "m", "rate(m[5m])", "sum(rate(m[5m]))", "max_over_time(m[20m:1m])", "m @ 3600",
    "count_over_time(m[1h] offset 30m)",
])
@pytest.mark.parametrize("step", [15_000, 600_000])
def test_slices_selecting_few_samples_add_up_to_the_whole(query: str, step: int) -> None:
    store = _store()
    whole = Engine(store).range_query(query, _HOUR, 6 * _HOUR, step)
    counting = CountingStore(store)
    sliced = Engine(counting, EngineOptions(max_slice_samples=300)).range_query(
        query, _HOUR, 6 * _HOUR, step)
    assert len(counting.selected) > 3  # the range was cut
    assert whole.value.labels.to_dicts(whole.pool) == sliced.value.labels.to_dicts(sliced.pool)
    assert np.array_equal(whole.value.present, sliced.value.present)
    assert np.array_equal(whole.value.values[whole.value.present],
                          sliced.value.values[sliced.value.present])


def test_a_long_range_stays_within_the_sample_limit_slice_by_slice() -> None:
    # 4 series of 6 h at 15 s are 5,760 samples: more than the limit in one selection,
    # far less in a slice.
    store = CountingStore(_store())
    options = EngineOptions(max_samples=2_000)
    with pytest.raises(TooManySamplesError):
        Engine(store, options).instant_query("count_over_time(m[6h])", 6 * _HOUR)
    result = Engine(store, EngineOptions(max_samples=2_000, max_slice_samples=500)).range_query(
        "rate(m[5m])", 0, 6 * _HOUR, 600_000)
    assert result.value.n == 4 and result.value.present[:, 1:].all()


def test_slices_select_about_the_budget_however_long_the_steps() -> None:
    store = CountingStore(_store(hours=24))
    budget = 1_000
    Engine(store, EngineOptions(max_slice_samples=budget)).range_query(
        "rate(m[5m])", _HOUR, 24 * _HOUR, 3_600_000)
    # The first slice spans a few minutes; one step (an hour and the window) can exceed
    # the budget, but no slice selects more than one step beyond it.
    one_step = 4 * (3_600_000 + 300_000) // 15_000
    assert store.selected[0] <= one_step
    assert max(store.selected) <= budget + one_step


def test_next_size_from_density_and_cells() -> None:
    options = EngineOptions(max_cells=10_000, max_slice_samples=1_000)
    # One selector over 4 steps of 60 s and a 300 s window (480 s) read 480 samples,
    # 0.001 per ms: 1,000 samples span 1,000 s, the window and 11 more steps.
    use = SliceUse(cells=40, selected=480, selected_ms=480_000, selected_series=1,
                   selections=1)
    assert use.next_size(4, 60_000, options) == 12
    # Many series raise the budget to 64 samples a series: for 1,000 series, 64,000
    # samples span 64,000 s: the window and 1,061 more steps.
    many = SliceUse(cells=40, selected=1_440, selected_ms=1_440_000, selected_series=1_000,
                    selections=1)
    assert many.next_size(20, 60_000, options) == 1_062
    # Without selections only cells count, 10 per step, and a slice grows at most
    # 64-fold.
    assert SliceUse(cells=40).next_size(4, 60_000, options) == 256
    assert SliceUse(cells=4_000).next_size(400, 60_000, options) == 1_000
    # A window alone beyond the budget still leaves one step.
    dense = SliceUse(cells=40, selected=100_000, selected_ms=480_000, selected_series=1,
                     selections=1)
    assert dense.next_size(4, 60_000, options) == 1
