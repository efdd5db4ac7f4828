"""Aggregations over a large fleet, evaluated shard by shard, answer as unsharded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from promstore.promql.engine import Engine, EngineOptions
from promstore.promql.errors import QueryTimeoutError
from promstore.promql.parser import parse
from promstore.promql.sharding import shardable
from storage.batch import WriteBatch
from storage.db import DB, DBOptions

MINUTE = 60_000
T0 = 1_700_000_000_000 // (2 * 3_600_000) * (2 * 3_600_000)
HOURS = 6
N_HOSTS, PER_HOST = 60, 50  # 3,000 series


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Blocks and a head holding counters and gauges of a fleet, with a reset and a gap."""
    db = DB.open(tmp_path_factory.mktemp("sharding"), DBOptions(compaction_interval=0))
    rng = np.random.default_rng(7)
    steps = HOURS * 60
    times = T0 + np.arange(steps) * MINUTE
    series = []
    for host in range(N_HOSTS):
        for k in range(PER_HOST):
            counter = np.cumsum(rng.integers(0, 50, steps)).astype(float)
            if k % 7 == 0:
                counter[steps // 2:] -= counter[steps // 2]  # a reset
            keep = slice(0, steps) if k % 11 else slice(steps // 3, steps)  # starts late
            labels = {"__name__": "requests_total", "instance": f"h{host}", "code": str(k % 5),
                      "path": f"/p{k}"}
            series.append((labels, list(zip(times[keep].tolist(), counter[keep].tolist()))))
            gauge = {**labels, "__name__": "temperature"}
            series.append((gauge, list(zip(times.tolist(), rng.normal(50, 10, steps).tolist()))))
    db.append(WriteBatch.from_series(series))
    db.compact_head()  # the older ranges into blocks, the rest stays in the head
    assert db.blocks
    yield db
    db.close()


class _Counting:
    """A store that counts the selections made for a shard."""

    def __init__(self, store) -> None:
        self.store, self.sharded, self.most = store, 0, 0

    def select(self, matchers, mint, maxt, shard=None):
        got = self.store.select(matchers, mint, maxt, shard)
        if shard is not None:
            self.sharded += 1
            self.most = max(self.most, got.n_samples)
        return got

    def estimate_series(self, matchers, mint, maxt):
        return self.store.estimate_series(matchers, mint, maxt)


QUERIES = [
    "sum by (instance) (rate(requests_total[5m]))",
    "sum(increase(requests_total[10m]))",
    "avg by (code) (irate(requests_total[5m]))",
    "max without (path) (temperature)",
    "min by (instance) (delta(temperature[15m]) * 2)",
    "count by (code) (requests_total > 1000)",
    "group by (instance) (requests_total)",
    "sum by (code) (avg_over_time(temperature[30m]) - 50)",
    "count(changes(requests_total[20m]))",
]


@pytest.mark.parametrize("query", QUERIES)
def test_sharded_range_query_answers_as_unsharded(store, query):
    assert shardable(parse(query))
    options = EngineOptions()
    start, end, step = T0 + 10 * MINUTE, T0 + HOURS * 3_600_000 - MINUTE, 60_000
    whole = Engine(store.querier(), dataclasses.replace(options, shard_from_series=10**9)) \
        .range_query(query, start, end, step)
    counting = _Counting(store.querier())
    sharded = Engine(counting, dataclasses.replace(options, shard_from_series=1_200,
                                                       shard_series=300)) \
        .range_query(query, start, end, step)
    assert counting.sharded > 0
    assert whole.value.labels.to_dicts(whole.pool) == sharded.value.labels.to_dicts(sharded.pool)
    assert np.array_equal(whole.value.present, sharded.value.present)
    present = whole.value.present
    np.testing.assert_allclose(sharded.value.values[present], whole.value.values[present],
                               rtol=1e-9, atol=0)


@pytest.mark.parametrize("query", [
    "topk(3, rate(requests_total[5m]))",
    "sum(rate(requests_total[5m])) / count(requests_total)",
    "sum by (instance) (label_replace(requests_total, 'x', '$1', 'path', '(.*)'))",
    "sum(requests_total * on (instance, code, path) temperature)",
    "sum({__name__=~'requests_total|temperature'})",
    "sum(scalar(sum(requests_total)) * requests_total)",
])
def test_what_is_not_sharded(query):
    assert not shardable(parse(query))


def _sharded(workers: int, timeout_s: float = 120.0) -> EngineOptions:
    return EngineOptions(shard_from_series=1_200, shard_series=300, shard_workers=workers,
                         timeout_s=timeout_s)


def test_answer_does_not_depend_on_how_many_shards_run_at_once(store):
    query = "sum by (code) (rate(requests_total[5m]))"
    start, end, step = T0 + 10 * MINUTE, T0 + HOURS * 3_600_000 - MINUTE, 60_000
    one, three = (Engine(store.querier(), _sharded(w)).range_query(query, start, end, step)
                  for w in (1, 3))
    assert one.value.labels.to_dicts(one.pool) == three.value.labels.to_dicts(three.pool)
    assert np.array_equal(one.value.present, three.value.present)
    assert np.array_equal(one.value.values, three.value.values)  # folded in shard order


def test_a_shard_reads_its_series_in_slices_of_its_own_budget(store):
    """Each shard keeps to ``shard_slice_samples`` per selection, however much an
    unsharded slice may read: shards run side by side, each holding a slice."""
    counting = _Counting(store.querier())
    options = dataclasses.replace(_sharded(2), max_slice_samples=10**9,
                                  shard_slice_samples=20_000)
    Engine(counting, options).range_query("sum(rate(requests_total[5m]))",
                                          T0, T0 + HOURS * 3_600_000, 60_000)
    assert counting.sharded > 2 * 10  # 10 shards of 300 series, 6 hours = 108,000 samples
    assert 10_000 < counting.most <= 30_000


def test_a_failing_shard_fails_the_query(store):
    with pytest.raises(QueryTimeoutError):
        Engine(store.querier(), _sharded(2, timeout_s=0.0)).range_query(
            "sum(rate(requests_total[5m]))", T0, T0 + HOURS * 3_600_000, 60_000)


@pytest.mark.parametrize("op", ["sum", "min", "max", "count", "group"])
def test_rows_folded_into_an_aggregate_give_the_aggregate_of_all_rows(op):
    """Shards' partials are folded into the fold held so far, in place: for every
    operator without a running mean, aggregating rows in two goes gives the bits of one
    go (NaN, infinities and absent cells included)."""
    from promstore.promql._aggregate_kernels import CODES, aggregate

    rng = np.random.default_rng(5)
    values = rng.normal(size=(40, 7))
    values[rng.random(values.shape) < 0.1] = np.nan
    values[rng.random(values.shape) < 0.05] = np.inf
    present = rng.random(values.shape) < 0.7
    groups = rng.integers(0, 4, 40)
    whole = np.zeros((4, 7)), np.zeros((4, 7), bool)
    aggregate(CODES[op], values, present, groups, 4, *whole)
    halves = np.zeros((4, 7)), np.zeros((4, 7), bool)
    for part in (slice(0, 17), slice(17, 40)):
        aggregate(CODES[op], values[part], present[part], groups[part], 4, *halves)
    assert np.array_equal(whole[1], halves[1])
    assert whole[0].tobytes() == halves[0].tobytes()
