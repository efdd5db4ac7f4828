"""Query answers as JSON: the kernel that writes points prints values and timestamps as
Prometheus does, checked against the reference formatting in ``formatting.py`` (Python's
shortest ``repr`` digits) and against Go's output for chosen values."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from promstore.promql import Engine
from promstore.promql._encoding_kernels import format_value, write_answer
from promstore.promql.encoding import encode_data
from promstore.promql.formatting import format_timestamps, format_values
from promstore.promql.testing import MemoryStore


def _kernel_values(values: np.ndarray) -> list[str]:
    values = np.ascontiguousarray(values, dtype=np.float64)
    out, buf = np.zeros(32, dtype=np.uint8), np.empty(17, dtype=np.uint8)
    texts = []
    for v, b in zip(values, values.view(np.uint64)):
        texts.append(out[:format_value(v, b, buf, out, 0)].tobytes().decode())
    return texts


def _kernel_points(times: np.ndarray, values: np.ndarray) -> str:
    values = np.ascontiguousarray(values, dtype=np.float64)
    return write_answer(np.frombuffer(b"<", np.uint8), np.frombuffer(b"{}", np.uint8),
                        np.array([2]), np.array([0, len(values)]),
                        np.asarray(times, dtype=np.int64), values, values.view(np.uint64),
                        False, np.frombuffer(b">", np.uint8)).tobytes().decode()


def test_values_as_go_prints_them() -> None:
    cases = [
        (1.0, "1"), (100.0, "100"), (0.1, "0.1"), (1e-5, "0.00001"), (1e-6, "0.000001"),
        (9.99e-7, "9.99e-07"), (1e20, "100000000000000000000"), (1e21, "1e+21"),
        (1e15, "1000000000000000"), (2.0**53 + 2, "9007199254740994"),
        (123456789012345.6, "123456789012345.6"), (2 / 3, "0.6666666666666666"),
        (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"),
        (-0.0, "-0"), (0.0, "0"), (-3.25, "-3.25"), (math.nan, "NaN"), (math.inf, "+Inf"),
        (-math.inf, "-Inf"), (1.5e300, "1.5e+300"), (1e23, "1e+23"),
    ]
    values = np.array([v for v, _ in cases])
    assert _kernel_values(values) == [text for _, text in cases]
    assert format_values(values) == [text for _, text in cases]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=50))
def test_any_float_prints_its_shortest_digits(bit_patterns: list[int]) -> None:
    values = np.array([struct.unpack("<d", struct.pack("<Q", b))[0] for b in bit_patterns])
    assert _kernel_values(values) == format_values(values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=50))
def test_common_floats_print_their_shortest_digits(floats: list[float]) -> None:
    values = np.array(floats)
    assert _kernel_values(values) == format_values(values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(-2**54, 2**54),
                          st.builds(lambda n, shift: n << shift, st.integers(2**53 - 3, 2**53 + 3),
                                    st.sampled_from([0, 1, 10]))), min_size=1, max_size=50))
def test_whole_numbers_print_their_shortest_digits(numbers: list[int]) -> None:
    # Counters are whole numbers, printed by a shortcut below 2**53; around and above
    # it the general path takes over.
    values = np.array(numbers, dtype=np.float64)
    assert _kernel_values(values) == format_values(values)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-2**52, 2**52), st.floats(-1e6, 1e6)), max_size=30))
def test_points_match_the_reference(points: list[tuple[int, float]]) -> None:
    times = np.array([t for t, _ in points], dtype=np.int64)
    values = np.array([v for _, v in points], dtype=np.float64)
    want = ",".join(f'[{t},"{v}"]' for t, v in zip(format_timestamps(times),
                                                    format_values(values)))
    assert _kernel_points(times, values) == f'<{{"metric":{{}},"values":[{want}]}}>'


def _store() -> MemoryStore:
    store = MemoryStore()
    store.add({"__name__": "m", "job": "é\"x"}, [0, 15_000, 30_500], [1.0, 0.5, math.nan])
    store.add({"__name__": "m", "job": "b"}, [15_000], [1e-7])
    return store


def test_answers_have_prometheus_shapes() -> None:
    engine = Engine(_store())
    vector = json.loads(encode_data(engine.instant_query("m", 30_500)))
    assert vector == {"resultType": "vector", "result": [
        {"metric": {"__name__": "m", "job": "b"}, "value": [30.5, "1e-07"]},
        {"metric": {"__name__": "m", "job": "é\"x"}, "value": [30.5, "NaN"]}]}
    matrix = encode_data(engine.range_query("m", 0, 30_000, 15_000))
    assert matrix.decode() == ('{"resultType":"matrix","result":['
                               '{"metric":{"__name__":"m","job":"b"},"values":'
                               '[[15,"1e-07"],[30,"1e-07"]]},'
                               '{"metric":{"__name__":"m","job":"é\\"x"},"values":'
                               '[[0,"1"],[15,"0.5"],[30,"0.5"]]}]}')
    raw = json.loads(encode_data(engine.instant_query("m[1m]", 30_500)))
    assert raw["result"][1]["values"] == [[0, "1"], [15, "0.5"], [30.5, "NaN"]]
    empty = json.loads(encode_data(engine.instant_query("nothing", 0)))
    assert empty == {"resultType": "vector", "result": []}


def test_labels_of_few_and_many_series_are_written_alike() -> None:
    store = MemoryStore()
    for i in range(40):
        odd = {"odd": "1"} if i % 2 else {}
        labels = {"__name__": "m", "i": f"{i:02d}", "q": 'a"\\b\n'} | odd
        store.add(labels, [0], [float(i)])
    engine = Engine(store)
    many = json.loads(encode_data(engine.instant_query("m", 0)))["result"]
    few = json.loads(encode_data(engine.instant_query('m{i=~"0.*"}', 0)))["result"]
    assert len(many) == 40 and len(few) == 10
    assert few == [r for r in many if r["metric"]["i"].startswith("0")]
    assert many[1]["metric"] == {"__name__": "m", "i": "01", "q": 'a"\\b\n', "odd": "1"}
