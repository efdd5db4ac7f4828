"""Tests of the PromQL engine's parts: parser guard and conversion, the function table,
label tables, number formatting, Go arithmetic, and the limits of a query."""

from __future__ import annotations

import datetime as dt
import math
import threading
from functools import cmp_to_key

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promstore.promql import (
    Engine,
    EngineOptions,
    ParseError,
    QueryCanceledError,
    QueryTimeoutError,
    TooManySamplesError,
    parse,
)
from promstore.promql._binary_kernels import go_pow
from promstore.promql.formatting import format_timestamps, format_values, go_float
from promstore.promql.functions import FUNCTIONS, _civil, _go_expand
from promstore.promql.labels import Labels, StringPool, format_labels, group_rows
from promstore.promql.parser import FUNCTIONS_2_42, Binary, Cardinality, Subquery
from promstore.promql.testing import MemoryStore

# -- parser -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["(" * 300 + "a" + ")" * 300, "+".join(["a"] * 5000),
                                  "-" * 400 + "a", "a" * (300 * 1024)])
def test_deep_or_long_queries_are_refused_before_the_parser_sees_them(text: str) -> None:
    with pytest.raises(ParseError):
        parse(text)


def test_functions_of_later_versions_and_extensions_are_refused() -> None:
    for text in ("sort_by_label(up)", "mad_over_time(up[5m])", 'up{a="1" or b="2"}',
                 "limitk(1, up)"):
        with pytest.raises(ParseError):
            parse(text)


def test_holt_winters_parses() -> None:
    node = parse("holt_winters(x[5m], 0.1, 0.2)")
    assert node.name == "holt_winters"


def test_binary_modifiers_are_kept() -> None:
    node = parse("a / on(b, a) group_left(c) x")
    assert isinstance(node, Binary)
    assert (node.card, node.on, node.matching, node.include) == \
        (Cardinality.MANY_TO_ONE, True, ("a", "b"), ("c",))


def test_times_before_1970_and_subquery_defaults() -> None:
    node = parse("(foo @ -3)[5m:] @ -100.5 offset 3m")
    assert isinstance(node, Subquery)
    assert (node.range, node.step, node.offset, node.at) == (300_000, None, 180_000, -100_500)
    assert node.expr.at == -3000


def test_every_function_has_an_implementation() -> None:
    assert set(FUNCTIONS) == set(FUNCTIONS_2_42)


# -- labels -------------------------------------------------------------------------------

label_sets = st.lists(st.dictionaries(st.sampled_from(["__name__", "a", "b", "c", "B"]),
                                      st.sampled_from(["", "x", "y", "ä", "10", "9"]),
                                      max_size=4), max_size=12)


def _prometheus_compare(a: dict[str, str], b: dict[str, str]) -> int:
    """Prometheus's label-set order, pair by pair, a prefix first."""
    pa = [(k.encode(), v.encode()) for k, v in sorted(a.items()) if v]
    pb = [(k.encode(), v.encode()) for k, v in sorted(b.items()) if v]
    return (pa > pb) - (pa < pb)


@settings(max_examples=200, deadline=None)
@given(label_sets)
def test_sort_order_is_prometheus_order(sets: list[dict[str, str]]) -> None:
    pool = StringPool()
    names = tuple(sorted({k for s in sets for k in s}))
    ids = np.array([[pool.intern(s.get(n, "")) for n in names] for s in sets],
                   dtype=np.int32).reshape(len(sets), len(names))
    order = Labels(names, ids).sort_order(pool)
    got = [sets[i] for i in order]
    want = sorted(sets, key=cmp_to_key(_prometheus_compare))
    assert [_prometheus_compare(g, w) for g, w in zip(got, want)] == [0] * len(sets)


def test_group_rows_numbers_groups_by_first_appearance() -> None:
    inverse, first = group_rows(np.array([[3, 1], [1, 1], [3, 1], [0, 2]], dtype=np.int32))
    assert inverse.tolist() == [0, 1, 0, 2]
    assert first.tolist() == [0, 1, 3]


def test_interning_many_strings_keeps_ids_stable() -> None:
    pool = StringPool()
    a = pool.intern_many(["x", "y", "x"])
    b = pool.intern_many(["y", "z"])
    assert a[0] == a[2] and a[1] == b[0] and len({*a.tolist(), *b.tolist()}) == 3
    assert pool.lookup(np.array([a[0], b[1], 0])) == ["x", "z", ""]


def test_format_labels_quotes_like_go() -> None:
    assert format_labels({"b": 'x"y', "a": "1\n"}) == '{a="1\\n", b="x\\"y"}'


# -- numbers ------------------------------------------------------------------------------


def test_values_print_as_prometheus_prints_them() -> None:
    values = np.array([1.0, 0.1, 1e-5, 9e-7, 1e20, 1e21, -0.0, math.nan, math.inf, -math.inf,
                       5.0000000000000006e-300])
    assert format_values(values) == ["1", "0.1", "0.00001", "9e-07", "100000000000000000000",
                                     "1e+21", "-0", "NaN", "+Inf", "-Inf",
                                     "5.0000000000000006e-300"]
    assert go_float(1e-7) == "0.0000001" and go_float(2.5e21) == "2500000000000000000000"


def test_timestamps_print_with_milliseconds() -> None:
    assert format_timestamps(np.array([1435781451781, 1435781451780, 1000, -1500])) == \
        ["1435781451.781", "1435781451.780", "1", "-1.500"]


@pytest.mark.parametrize("x, y", [(2.0, 10.0), (3.0, 0.5), (-8.0, 1 / 3), (0.0, -1.0),
                                  (-0.0, -3.0), (-math.inf, -3.0), (1.5, 2.5), (10.0, -2.0),
                                  (-7.5, 2.0), (5.0, 0.0), (math.nan, 0.0), (1.0, math.nan),
                                  (-1.0, math.inf), (0.5, math.inf), (1.0000001, 1e6)])
def test_pow_follows_go(x: float, y: float) -> None:
    got = go_pow(x, y)
    try:
        want = math.pow(x, y)
    except (ValueError, OverflowError, ZeroDivisionError):
        want = {(0.0, -1.0): math.inf, (-0.0, -3.0): -math.inf}.get((x, y), math.nan)
    if x == -math.inf:
        want = -0.0
    # Go squares repeatedly for integer exponents: close to C, not always equal
    assert (math.isnan(got) and math.isnan(want)) or math.isclose(got, want, rel_tol=1e-9)
    assert math.copysign(1, got) == math.copysign(1, want) or math.isnan(got)


def test_calendar_fields_match_the_proleptic_calendar() -> None:
    secs = np.array([0, 10**9, -1, 951782400, 4102444800, -62135596800, 253402300799])
    fields = _civil(secs)
    for k, s in enumerate(secs.tolist()):
        d = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=s)
        assert (fields["year"][k], fields["month"][k], fields["day_of_month"][k]) == \
            (d.year, d.month, d.day)
        assert fields["day_of_week"][k] == (d.weekday() + 1) % 7
        assert fields["day_of_year"][k] == d.timetuple().tm_yday
        assert (fields["hour"][k], fields["minute"][k]) == (d.hour, d.minute)


def test_replacement_templates_expand_as_go_does() -> None:
    import re

    m = re.fullmatch(r"(?P<host>[a-z]+):(\d+)", "web:80")
    assert m is not None
    names = {"host": 1}
    assert _go_expand("$1-$2", m, names) == "web-80"
    assert _go_expand("${1}x $1x $host $$ $", m, names) == "webx  web $ $"
    assert _go_expand("${host}:${2}", m, names) == "web:80"


# -- limits -------------------------------------------------------------------------------


def _store(n: int = 3) -> MemoryStore:
    store = MemoryStore()
    for i in range(n):
        store.add({"__name__": "m", "i": str(i)}, list(range(0, 600_000, 15_000)),
                  [float(k) for k in range(40)])
    return store


def test_too_many_samples() -> None:
    engine = Engine(_store(), EngineOptions(max_samples=50))
    with pytest.raises(TooManySamplesError, match="too many samples"):
        engine.instant_query("sum(rate(m[10m]))", 600_000)
    assert Engine(_store(), EngineOptions(max_samples=500)).instant_query("m", 600_000)


def test_timeout_and_cancel() -> None:
    with pytest.raises(QueryTimeoutError, match="query timed out"):
        Engine(_store(), EngineOptions(timeout_s=0)).instant_query("m", 0)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(QueryCanceledError):
        Engine(_store()).range_query("m", 0, 600_000, 15_000, cancel=cancel)


def test_range_queries_refuse_range_vectors_and_bad_steps() -> None:
    engine = Engine(_store())
    with pytest.raises(ParseError, match='"range vector" for range query'):
        engine.range_query("m[5m]", 0, 60_000, 15_000)
    with pytest.raises(ParseError, match="step"):
        engine.range_query("m", 0, 60_000, 0)


def test_range_query_output_is_sorted_by_labels() -> None:
    result = Engine(_store(12)).range_query("m * 1", 0, 60_000, 15_000)
    dicts = result.value.labels.to_dicts(result.pool)
    assert [d["i"] for d in dicts] == sorted(str(i) for i in range(12))


@pytest.mark.parametrize("query", [
    "m", "rate(m[1m])", "sum by (i) (m)", "label_replace(m, \"i\", \"x\", \"i\", \"1\")",
    "max_over_time(m[2m:20s])", "m @ 300", "predict_linear(m[2m] @ 300, 60)",
    "m > 20 or vector(1)", "timestamp(m)",
])
def test_slices_of_a_range_query_add_up_to_the_whole(query: str) -> None:
    store = _store(5)
    store.add({"__name__": "m", "i": "late"}, list(range(400_000, 600_000, 15_000)),
              [1.0] * 14)
    whole = Engine(store).range_query(query, 0, 600_000, 10_000)
    sliced = Engine(store, EngineOptions(max_cells=7)).range_query(query, 0, 600_000, 10_000)
    assert whole.value.labels.to_dicts(whole.pool) == sliced.value.labels.to_dicts(sliced.pool)
    assert np.array_equal(whole.value.present, sliced.value.present)
    assert np.array_equal(whole.value.values[whole.value.present],
                          sliced.value.values[sliced.value.present])


def test_label_replace_does_not_backtrack_on_values_that_fail() -> None:
    store = MemoryStore()
    store.add({"__name__": "m", "v": "a" * 60 + "c"}, [0], [1.0])
    store.add({"__name__": "m", "v": "aab"}, [0], [1.0])
    result = Engine(store).instant_query('label_replace(m, "x", "$1", "v", "(a+)+b")', 0)
    assert sorted(d.get("x", "") for d in result.value.labels.to_dicts(result.pool)) == \
        ["", "aa"]
