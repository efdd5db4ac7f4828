"""Label validation and canonical form (storage.labels)."""

import pytest

from storage.batch import WriteBatch
from storage.labels import LabelLimits, batch_from_keys, canonicalise
from storage.series import SeriesRegistry


def one(labels, limits=None):
    limits = limits or LabelLimits()
    canon = canonicalise(WriteBatch.from_series([(labels, [])]), limits)
    return canon, int(canon.status[0])


def test_valid_series_is_sorted_and_empty_values_dropped():
    canon, status = one([("job", "a"), ("__name__", "up"), ("zone", ""), ("instance", "x:1")])
    assert status == 0
    b = canon.batch
    names = [b.buf[b.name_off[j]:b.name_off[j] + b.name_len[j]].tobytes().decode()
             for j in canon.order[canon.canon_start[0]:canon.canon_start[1]]]
    assert names == ["__name__", "instance", "job"]


@pytest.mark.parametrize("labels, fragment", [
    ([], "no labels"),
    ([("a", "")], "no labels"),
    ([("__name__", "1up")], "invalid metric name"),
    ([("__name__", "up"), ("1a", "x")], "invalid label name '1a'"),
    ([("__name__", "up"), ("a-b", "x")], "invalid label name"),
    ([("__name__", "up"), ("a", "1"), ("a", "2")], "duplicate label name 'a'"),
    ([("__name__", "a:b_c"), ("x:y", "1")], "invalid label name 'x:y'"),
])
def test_invalid_label_sets(labels, fragment):
    canon, status = one(labels)
    assert status != 0
    assert fragment in canon.describe(0)


def test_invalid_utf8_value():
    batch = WriteBatch.from_series([({"__name__": "up", "a": "x"}, [])])
    buf = batch.buf.copy()
    buf[-1] = 0xFF
    bad = WriteBatch(buf, batch.label_start, batch.name_off, batch.name_len, batch.value_off,
                     batch.value_len, batch.sample_start, batch.timestamps, batch.values)
    canon = canonicalise(bad, LabelLimits())
    assert canon.status[0] != 0
    assert "UTF-8" in canon.describe(0)


def test_unicode_values_are_valid():
    _, status = one({"__name__": "up", "city": "Zürich ✓ 𝄞"})
    assert status == 0


def test_limits():
    limits = LabelLimits(max_labels=3, max_name_length=5, max_value_length=4)
    assert "too many labels" in one({f"l{i}": "v" for i in range(4)}, limits)[0].describe(0)
    assert "label name too long" in one({"longname": "v"}, limits)[0].describe(0)
    assert "label value too long" in one({"a": "12345"}, limits)[0].describe(0)
    assert one({"abcde": "1234"}, limits)[1] == 0


def test_same_labels_in_any_order_hash_equal():
    c1, _ = one([("b", "2"), ("a", "1")])
    c2, _ = one([("a", "1"), ("b", "2"), ("c", "")])
    assert c1.hashes[0] == c2.hashes[0]


def test_keys_round_trip_through_registry():
    series = [({"__name__": "m", "i": str(i), "job": "j"}, []) for i in range(50)]
    reg = SeriesRegistry()
    refs, created = reg.resolve(canonicalise(WriteBatch.from_series(series), LabelLimits()))
    assert list(refs) == list(range(50)) and created.all()
    blob, offsets = reg.keys(refs)
    again = batch_from_keys(blob, offsets)
    reg2 = SeriesRegistry()
    refs2, _ = reg2.resolve(canonicalise(again, LabelLimits()))
    assert list(refs2) == list(range(50))
    view = reg2.snapshot()
    assert view.labels(7) == {"__name__": "m", "i": "7", "job": "j"}
