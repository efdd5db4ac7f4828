"""SeriesRegistry and postings: interning, growth, lookups and matcher selection."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import _registry_kernels as rk
from storage.batch import WriteBatch
from storage.labels import LabelLimits, canonicalise
from storage.matchers import Matcher, MatchType
from storage.postings import Postings, SelectionCache, contained, select
from storage.series import SeriesRegistry
from storage.series_set import distinct_ids


def resolve(reg, label_sets):
    batch = WriteBatch.from_series([(ls, []) for ls in label_sets])
    return reg.resolve(canonicalise(batch, LabelLimits()))


def test_same_series_same_ref_across_batches_and_growth():
    reg = SeriesRegistry()
    sets = [{"__name__": f"m{i % 7}", "instance": f"host-{i}", "job": "node"}
            for i in range(5000)]
    refs, created = resolve(reg, sets)
    assert created.all() and list(refs) == list(range(5000))
    refs2, created2 = resolve(reg, list(reversed(sets)))
    assert not created2.any()
    assert list(refs2) == list(reversed(range(5000)))
    assert reg.n_series == 5000
    view = reg.snapshot()
    assert view.labels(1234) == sets[1234]


def test_duplicate_series_within_one_batch_get_one_ref():
    reg = SeriesRegistry()
    refs, created = resolve(reg, [{"a": "1"}, {"b": "2"}, {"a": "1"}])
    assert list(refs) == [0, 1, 0]
    assert list(created) == [True, True, False]


def test_invalid_series_get_minus_one():
    reg = SeriesRegistry()
    refs, _ = resolve(reg, [{"a": "1"}, {"0bad": "x"}, {"b": "2"}])
    assert list(refs) == [0, -1, 1]


def test_series_limit():
    reg = SeriesRegistry(max_series=2)
    refs, _ = resolve(reg, [{"a": "1"}, {"a": "2"}, {"a": "3"}, {"a": "1"}])
    assert list(refs) == [0, 1, -2, 0]


def test_hash_collisions_are_resolved_by_comparing_labels(monkeypatch):
    reg = SeriesRegistry()
    batch = WriteBatch.from_series([({"a": str(i)}, []) for i in range(100)])
    canon = canonicalise(batch, LabelLimits())
    canon.hashes[:] = 42  # force every series into one probe chain
    refs, _ = reg.resolve(canon)
    assert list(refs) == list(range(100))
    refs2, created2 = reg.resolve(canon)
    assert list(refs2) == list(range(100)) and not created2.any()


def test_find_sent_finds_known_series_only_as_sent_in_canonical_order():
    reg = SeriesRegistry()
    limits = LabelLimits()
    resolve(reg, [{"__name__": "up", "instance": "a:1", "job": "node"}])
    sent = WriteBatch.from_series([(labels, []) for labels in (
        [("__name__", "up"), ("instance", "a:1"), ("job", "node")],  # as stored
        [("instance", "a:1"), ("__name__", "up"), ("job", "node")],  # unsorted
        [("__name__", "up"), ("env", ""), ("instance", "a:1"), ("job", "node")],  # empty
        [("__name__", "up"), ("instance", "a:2"), ("job", "node")],  # unknown
        [("__name__", "up"), ("instance", "a:1")],  # a prefix
    )])
    assert list(reg.published.find_sent(sent, limits)) == [0, -1, -1, -1, -1]
    # What find_sent leaves out is still resolved, under the lock, to the same series.
    known = reg.published.find_sent(sent, limits)
    refs, created = reg.resolve(canonicalise(sent, limits, known), known)
    assert list(refs) == [0, 0, 0, 1, 2] and list(created) == [False] * 3 + [True] * 2
    tight = LabelLimits(max_labels=2)
    assert list(reg.published.find_sent(sent, tight))[:1] == [-1]


def test_find_sent_sees_a_snapshot_while_series_are_added():
    reg = SeriesRegistry()
    sets = [{"__name__": f"m{i % 13}", "instance": f"host-{i}"} for i in range(6000)]
    batches = [WriteBatch.from_series([(ls, []) for ls in sets[i:i + 500]])
               for i in range(0, len(sets), 500)]
    wrong = []

    def reader() -> None:
        while reg.n_series < len(sets):
            view = reg.published
            for batch in batches:
                for i, r in enumerate(view.find_sent(batch, LabelLimits())):
                    if r >= 0 and (r >= view.n_series
                                   or view.labels(int(r)) != sent_labels(batch, i)):
                        wrong.append((i, int(r)))

    thread = threading.Thread(target=reader)
    thread.start()
    for batch in batches:
        reg.resolve(canonicalise(batch, LabelLimits()))
    thread.join()
    assert wrong == []


def sent_labels(batch, i):
    text = batch.buf.tobytes()

    def string(off, n):
        return text[int(off):int(off) + int(n)].decode()

    return {string(batch.name_off[j], batch.name_len[j]):
            string(batch.value_off[j], batch.value_len[j])
            for j in range(int(batch.label_start[i]), int(batch.label_start[i + 1]))}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="abz_", min_size=1, max_size=20),
                          st.text(min_size=1, max_size=30)),
                min_size=1, max_size=8, unique_by=lambda p: p[0]),
       st.integers(0, 9))
def test_label_hash_ignores_order_and_where_the_bytes_lie(pairs, pad):
    """The hash reads words that may cross a label's end; its bytes alone count, wherever
    the label lies in the buffer (also at its very end)."""
    as_sent = WriteBatch.from_series([(pairs, [])])
    reordered = WriteBatch.from_series([(sorted(pairs, reverse=True), [])])
    padded = WriteBatch.from_series([([("p" * (pad + 1), "x")], []), (pairs, [])])
    h = canonicalise(as_sent, LabelLimits()).hashes[0]
    assert canonicalise(reordered, LabelLimits()).hashes[0] == h
    assert canonicalise(padded, LabelLimits()).hashes[1] == h
    reg = SeriesRegistry()
    reg.resolve(canonicalise(reordered, LabelLimits()))
    in_order = WriteBatch.from_series([(sorted(pairs), [])])
    assert list(reg.published.find_sent(in_order, LabelLimits())) == [0]


def test_strided_bytes_hash_like_contiguous_ones():
    """Kernels read bytes through addresses; a strided buffer must not change a hash."""
    from storage._label_kernels import hash_bytes

    data = np.frombuffer(b"i?n?s?t?a?n?c?e?", dtype=np.uint8)
    assert hash_bytes(data[::2], 0, 8) == hash_bytes(np.frombuffer(b"instance", np.uint8), 0, 8)
    sent = WriteBatch.from_series([({"instance": "a"}, [])])
    strided = WriteBatch(buf=np.frombuffer(b"i?n?s?t?a?n?c?e?a?", np.uint8)[::2],
                         label_start=sent.label_start, name_off=sent.name_off,
                         name_len=sent.name_len, value_off=sent.value_off,
                         value_len=sent.value_len, sample_start=sent.sample_start,
                         timestamps=sent.timestamps, values=sent.values)
    assert (canonicalise(strided, LabelLimits()).hashes
            == canonicalise(sent, LabelLimits()).hashes).all()


SETS = [
    {"__name__": "up", "job": "api", "instance": "a:1"},
    {"__name__": "up", "job": "api", "instance": "b:1"},
    {"__name__": "up", "job": "web", "instance": "a:1", "env": "prod"},
    {"__name__": "http_requests_total", "job": "web", "code": "200"},
    {"__name__": "http_requests_total", "job": "web", "code": "500"},
    {"__name__": "node_load1", "instance": "c\nd"},
]


@pytest.fixture(params=[0, 1_000_000], ids=["indexed", "tail"])
def reader(request):
    reg = SeriesRegistry()
    resolve(reg, SETS)
    postings = Postings(min_tail=request.param)
    return postings.reader(reg.snapshot())


def brute(matchers):
    out = []
    for ref, labels in enumerate(SETS):
        if all(m.matches(labels.get(m.name, "")) for m in matchers):
            out.append(ref)
    return out


M = Matcher
CASES = [
    [M(MatchType.EQ, "__name__", "up")],
    [M(MatchType.EQ, "__name__", "up"), M(MatchType.NEQ, "job", "api")],
    [M(MatchType.RE, "job", "a.*")],
    [M(MatchType.RE, "job", "a")],
    [M(MatchType.NRE, "job", "a.*|w.*")],
    [M(MatchType.EQ, "env", "")],
    [M(MatchType.NEQ, "env", "")],
    [M(MatchType.RE, "env", ".*")],
    [M(MatchType.RE, "env", ".+")],
    [M(MatchType.EQ, "__name__", "up"), M(MatchType.EQ, "missing", "")],
    [M(MatchType.EQ, "__name__", "nope")],
    [M(MatchType.RE, "code", "2..|5..")],
    [M(MatchType.NRE, "code", "2..")],
    [M(MatchType.RE, "instance", "c.d")],
    [M(MatchType.EQ, "instance", "a:1"), M(MatchType.RE, "__name__", "up|node_load1")],
]


@pytest.mark.parametrize("matchers", CASES, ids=[",".join(map(str, c)) for c in CASES])
def test_select_matches_brute_force(reader, matchers):
    assert list(select(reader, matchers)) == brute(matchers)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]),
                                st.sampled_from(["", "x", "y", "xy"]), min_size=1),
                min_size=1, max_size=30),
       st.lists(st.tuples(st.sampled_from(list(MatchType)), st.sampled_from(["a", "b", "c"]),
                          st.sampled_from(["", "x", "y", "x|y", ".*", "x.*", ".+"])),
                min_size=1, max_size=3))
def test_select_property(label_sets, raw_matchers):
    matchers = []
    for t, n, v in raw_matchers:
        if t in (MatchType.EQ, MatchType.NEQ) and any(c in v for c in "|*+"):
            continue  # regex syntax makes no sense as an equality value
        matchers.append(Matcher(t, n, v))
    reg = SeriesRegistry()
    refs, _ = resolve(reg, label_sets)
    valid = {}
    for r, ls in zip(refs, label_sets):
        if r >= 0:
            valid[int(r)] = {k: v for k, v in ls.items() if v}
    got = select(Postings(min_tail=2).reader(reg.snapshot()), matchers)
    want = sorted(r for r, ls in valid.items()
                  if all(m.matches(ls.get(m.name, "")) for m in matchers))
    assert list(got) == want


label_set = st.dictionaries(st.sampled_from(["a", "instance", "job", "z_z"]),
                            st.text(min_size=1, max_size=12), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.lists(label_set, min_size=1, max_size=30), st.lists(label_set, max_size=30),
       st.integers(1, 4))
def test_sets_interned_by_symbol_match_those_interned_by_bytes(first, second, parts):
    """Label sets read out of another index by symbol id get the refs, and the hashes
    (shards rely on them), that the same sets sent as bytes get; the caller's symbol
    translation is filled in and reused across calls."""
    source = SeriesRegistry()
    source_refs, _ = resolve(source, first + second)
    by_bytes = SeriesRegistry()
    want, _ = resolve(by_bytes, second + first)
    by_symbol = SeriesRegistry()
    view = source.snapshot()
    symbol_map = np.full(view.n_symbols, -1, np.int32)
    n = len(first) + len(second)
    order = np.r_[len(first):n, 0:len(first)]  # the order by_bytes was given them
    got = np.concatenate([
        by_symbol.resolve_labels(view.symbol_labels(source_refs[part]), symbol_map)
        for part in np.array_split(order, parts)])
    assert list(got) == list(want)
    assert by_symbol.ser_hash[:by_symbol.n_series].tolist() == \
        by_bytes.ser_hash[:by_bytes.n_series].tolist()
    assert (symbol_map >= 0).any()
    mixed, _ = resolve(by_symbol, first + second)  # the two ways meet in one registry
    assert list(mixed) == list(want[np.argsort(order)])
    assert by_symbol.n_series == by_bytes.n_series
    compact = view.symbol_labels(source_refs[order[:1]]).compacted()
    assert list(by_symbol.resolve_labels(compact, np.full(compact.n_symbols, -1, np.int32))) \
        == [want[0]]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y", "z"]),
                                min_size=1), min_size=1, max_size=40),
       st.data())
def test_carrying_found_in_the_series_labels_as_in_the_postings(label_sets, data):
    """The few-series look-up in the series' own labels agrees with the postings."""
    reg = SeriesRegistry()
    resolve(reg, label_sets)
    view = reg.snapshot()
    reader = Postings().reader(view)
    refs = np.array(sorted(data.draw(st.sets(st.integers(0, view.n_series - 1)))), np.int64)
    pairs = np.array(sorted(data.draw(st.sets(st.integers(0, view.n_pairs - 1), max_size=4))),
                     np.int64)
    want = contained(refs, reader.refs_for_pairs(pairs))
    assert (rk.carrying(view.lab_start, view.lab_pair, refs, pairs) == want).all()
    assert (reader.carrying(refs, pairs) == want).all()


def test_select_answers_are_kept_until_a_series_is_added():
    reg = SeriesRegistry()
    resolve(reg, SETS)
    postings = Postings()
    ms = [M(MatchType.EQ, "__name__", "up"), M(MatchType.EQ, "instance", "a:1")]
    first = select(postings.reader(reg.snapshot()), ms)
    assert select(postings.reader(reg.snapshot()), ms) is first
    assert list(first) == brute(ms)
    resolve(reg, [{"__name__": "up", "job": "db", "instance": "a:1"}])
    assert list(select(postings.reader(reg.snapshot()), ms)) == [*brute(ms), len(SETS)]
    assert list(first) == brute(ms)  # what an older reader holds stays as it was


def test_pair_ids_are_remembered_once_found():
    reg = SeriesRegistry()
    resolve(reg, SETS)
    before = reg.snapshot()
    assert before.pair_id("job", "db") == -1  # a miss is not remembered
    resolve(reg, [{"__name__": "up", "job": "db"}])
    after = reg.snapshot()
    p = after.pair_id("job", "db")
    assert p >= 0 and after.pair_id("job", "db") == p
    assert before.pair_id("job", "db") == -1  # not in that snapshot
    assert after.pair_id("job", "api") == before.pair_id("job", "api") >= 0


@pytest.mark.parametrize("n", [1_000_000, 12])
def test_distinct_ids_by_sorting_or_marking(n):
    ids = np.array([7, 3, 3, 11, 0, 7], np.int64)
    distinct, at = distinct_ids(ids, n)
    assert distinct.tolist() == [0, 3, 7, 11] and (distinct[at] == ids).all()


def test_selection_cache_is_bounded_in_entries_and_bytes():
    cache: SelectionCache[str] = SelectionCache(max_entries=3, max_bytes=100, max_item_bytes=60)
    cache.put("big", "x", 61)  # over the item bound: not kept
    assert cache.get("big") is None
    for key in "abc":
        cache.put(key, key.upper(), 10)
    assert cache.get("a") == "A"  # now the most recently used
    cache.put("d", "D", 10)  # "b" goes: least recently used
    assert cache.get("b") is None and [cache.get(k) for k in "acd"] == ["A", "C", "D"]
    cache.put("e", "E", 60)  # four entries: "a" goes
    assert cache.get("a") is None and len(cache) == 3 and cache.nbytes == 80
    cache.put("f", "F", 40)  # "c" goes (four entries), then "d" (110 bytes)
    assert [cache.get(k) for k in "cdef"] == [None, None, "E", "F"] and cache.nbytes == 100
