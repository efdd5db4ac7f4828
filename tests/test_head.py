"""Head: append rules, durability across reopen, and the IndexReader contract."""

import struct

import numpy as np
import pytest

from storage.batch import WriteBatch
from storage.head import Head, HeadOptions
from storage.interface import RejectReason
from storage.matchers import Matcher, MatchType

STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
PROM_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]


def bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


@pytest.fixture
def head(tmp_path):
    h = Head.open(tmp_path)
    yield h
    h.close()


def write(head, series):
    return head.append(WriteBatch.from_series(series))


def all_samples(head):
    refs = head.select_series([Matcher(MatchType.RE, "__name__", ".+")], -2**63, 2**63 - 1)
    s = head.read_samples(refs, -2**63, 2**63 - 1)
    labels = head.series_labels(refs)
    by_ref = {int(r): tuple(sorted(l.items())) for r, l in zip(refs, labels)}
    return sorted((by_ref[int(r)], int(t), bits(float(v)))
                  for r, t, v in zip(s.refs, s.timestamps, s.values))


def test_append_and_read_back(head):
    res = write(head, [({"__name__": "up", "job": "a"}, [(1000, 1.0), (2000, 0.0)]),
                       ({"__name__": "up", "job": "b"}, [(1000, STALE)])])
    assert (res.accepted, res.duplicates, res.new_series, res.errors) == (3, 0, 2, [])
    got = all_samples(head)
    assert len(got) == 3
    assert (tuple(sorted({"__name__": "up", "job": "b"}.items())), 1000, 0x7FF0000000000002) in got


def test_prometheus_append_rules(head):
    write(head, [({"__name__": "m"}, [(1000, 1.0), (2000, PROM_NAN)])])
    res = write(head, [({"__name__": "m"}, [(2000, PROM_NAN), (1500, 5.0), (2000, 7.0),
                                             (3000, 3.0)]),
                       ({"__name__": "m2"}, [(10, 1.0)])])
    assert res.accepted == 2
    assert res.duplicates == 1  # same timestamp and bit-identical NaN
    assert res.rejected == {RejectReason.OUT_OF_ORDER: 1, RejectReason.DUPLICATE_TIMESTAMP: 1}
    assert any("out of order sample" in e and '__name__="m"' in e for e in res.errors)
    assert any("duplicate sample for timestamp" in e for e in res.errors)


def test_invalid_series_rejected_rest_stored(head):
    res = write(head, [({"__name__": "ok"}, [(1, 1.0)]),
                       ({"__name__": "bad", "0x": "y"}, [(1, 1.0), (2, 2.0)])])
    assert res.accepted == 1
    assert res.rejected == {RejectReason.INVALID_LABELS: 2}
    assert "invalid label name '0x'" in res.errors[0]
    assert head.n_series == 1


def test_out_of_order_window(tmp_path):
    h = Head.open(tmp_path, HeadOptions(out_of_order_window_ms=600_000))
    try:
        write(h, [({"__name__": "m"}, [(1_000_000, 1.0)])])
        res = write(h, [({"__name__": "m"}, [(900_000, 2.0), (300_000, 3.0)])])
        assert res.accepted == 1 and res.rejected == {RejectReason.OUT_OF_ORDER: 1}
    finally:
        h.close()


def test_reopen_replays_everything_bit_exact(tmp_path):
    h = Head.open(tmp_path)
    rng = np.random.default_rng(1)
    series = []
    for i in range(300):
        vals = rng.integers(0, 2**64, size=5, dtype=np.uint64).view(np.float64)
        series.append(({"__name__": f"m{i % 3}", "i": str(i)},
                       [(1000 * k, float(v)) for k, v in enumerate(vals)]))
    for chunk in range(0, 300, 100):
        write(h, series[chunk:chunk + 100])
    before = all_samples(h)
    h.close()
    h2 = Head.open(tmp_path)
    try:
        assert all_samples(h2) == before
        assert h2.n_series == 300
        # state survived: the same samples again are duplicates, an older one is out of order
        labels, samples = series[0]
        res = write(h2, [(labels, [samples[-1]]), (labels, [(4000, 9.0), (0, 9.0)])])
        assert res.accepted == 0 and res.duplicates == 1
        assert res.rejected == {RejectReason.DUPLICATE_TIMESTAMP: 1,
                                RejectReason.OUT_OF_ORDER: 1}
        new = write(h2, [({"__name__": "new"}, [(5, 1.0)])])
        assert new.new_series == 1
    finally:
        h2.close()
    h3 = Head.open(tmp_path)
    try:
        assert h3.n_series == 301
        assert len(all_samples(h3)) == len(before) + 1
    finally:
        h3.close()


def test_batches_of_known_series_log_what_was_accepted(tmp_path):
    """Only accepted samples are logged (one record per batch of known series), and
    replay gives back exactly what was stored."""
    h = Head.open(tmp_path)
    a, b = {"__name__": "m", "i": "a"}, {"__name__": "m", "i": "b"}
    write(h, [(a, [(1000, 1.0)]), (b, [(1000, 1.0)])])
    assert write(h, [(a, [(2000, 2.0)]), (b, [(2000, 2.0)])]).accepted == 2  # all accepted
    res = write(h, [(a, [(3000, 3.0)]), (b, [(1500, 9.0)])])  # b's sample is out of order
    assert res.accepted == 1 and res.rejected == {RejectReason.OUT_OF_ORDER: 1}
    assert write(h, [(a, [(3000, 3.0)]), (b, [(3000, 3.0)])]).duplicates == 1
    before = all_samples(h)
    wal_stats = h.wal.stats
    assert wal_stats.records_written == 5  # series + samples, then one samples record each
    h.close()
    h2 = Head.open(tmp_path)
    try:
        assert all_samples(h2) == before
        assert [t for labels, t, _ in before if dict(labels)["i"] == "b"] == [1000, 2000, 3000]
    finally:
        h2.close()


def test_index_reader(head):
    write(head, [({"__name__": "up", "job": "a", "instance": "x"}, [(1000, 1.0)]),
                 ({"__name__": "up", "job": "b"}, [(5000, 1.0)]),
                 ({"__name__": "other", "zone": "z"}, [(9000, 1.0)])])
    up = [Matcher(MatchType.EQ, "__name__", "up")]
    refs = head.select_series(up, 0, 10_000)
    assert [l["job"] for l in head.series_labels(refs)] == ["a", "b"]
    assert len(head.select_series(up, 2000, 10_000)) == 1
    assert len(head.select_series(up, 6000, 10_000)) == 0
    assert head.label_names() == ["__name__", "instance", "job", "zone"]
    assert head.label_names(refs) == ["__name__", "instance", "job"]
    assert head.label_values("job") == ["a", "b"]
    assert head.label_values("__name__") == ["other", "up"]
    assert head.label_values("nope") == []
    assert head.label_values("__name__", head.select_series(
        [Matcher(MatchType.EQ, "zone", "z")], 0, 10_000)) == ["other"]


def test_closed_head_refuses_writes(tmp_path):
    from storage.errors import UnavailableError

    h = Head.open(tmp_path)
    h.close()
    with pytest.raises(UnavailableError):
        write(h, [({"a": "b"}, [(1, 1.0)])])


def test_append_then_reports_once_durable_or_failed(tmp_path, monkeypatch):
    """The callback form gives the same result as append once the samples are synced,
    and reports instead of raising: a closed head, an fsync that fails."""
    import errno
    import threading

    import storage.wal as wal_mod
    from storage.errors import StorageError, UnavailableError

    h = Head.open(tmp_path)
    got, ready = [], threading.Event()

    def done(result, error):
        got.append((result, error, h.wal.stats.fsyncs))
        ready.set()

    h.append_then(WriteBatch.from_series([({"__name__": "up"}, [(1000, 1.0), (1000, 2.0)])]),
                  done)
    assert ready.wait(10)
    result, error, fsyncs = got[0]
    assert error is None and fsyncs == 1
    assert (result.accepted, result.rejected) == (1, {RejectReason.DUPLICATE_TIMESTAMP: 1})

    def broken(fd):
        raise OSError(errno.EIO, "injected I/O error")

    got.clear()
    ready.clear()
    monkeypatch.setattr(wal_mod, "_fsync", broken)
    h.append_then(WriteBatch.from_series([({"__name__": "up"}, [(2000, 1.0)])]), done)
    assert ready.wait(10)
    assert got[0][0] is None and isinstance(got[0][1], StorageError)
    assert h.failed and "sync failed" in h.failed
    h.close()
    got.clear()
    h.append_then(WriteBatch.from_series([({"__name__": "up"}, [(3000, 1.0)])]),
                  lambda result, error: got.append((result, error)))
    assert got[0][0] is None and isinstance(got[0][1], UnavailableError)


def test_data_directory_is_locked(tmp_path):
    from storage.errors import StorageError

    h = Head.open(tmp_path)
    try:
        with pytest.raises(StorageError, match="in use"):
            Head.open(tmp_path)
    finally:
        h.close()
    Head.open(tmp_path).close()  # released on close
