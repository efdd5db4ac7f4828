"""The admin API over HTTP: delete_series, clean_tombstones and snapshot against a
running server, as Prometheus 2.42 answers them, and the answer when they are off."""

from __future__ import annotations

import os
import re
import time
import urllib.parse

import snappy

from promstore.remote.pb import remote_pb2
from storage.downsampled import WINDOW_TOMBSTONES
from storage.tombstones import read_file
from tests.helpers import read_data_dir
from tests.test_downsample import DAY, HOUR, make_store
from tests.test_downsample import T0 as DS_T0

MINUTE = 60_000
STEP = 15_000
T0 = 1_700_000_000_000 // MINUTE * MINUTE
STEPS = 40  # ten minutes
ADMIN = "/api/v1/admin/tsdb"


def _blocks(data_dir) -> list:
    return sorted(p for p in data_dir.iterdir() if len(p.name) == 26 and p.is_dir())


def _post(server, endpoint: str, **params):
    query = urllib.parse.urlencode(params, doseq=True)
    return server.request("POST", f"{ADMIN}/{endpoint}" + ("?" + query if query else ""))


def _samples(server, selector: str) -> dict[str, list[int]]:
    """Timestamps of every series ``selector`` picks, by its ``i`` label, from a range
    query over everything written."""
    data = server.api("/api/v1/query", query=f"{selector}[1h]",
                      time=str((T0 + STEPS * STEP) / 1000))
    return {r["metric"]["i"]: [round(t * 1000) for t, _ in r["values"]]
            for r in data["result"]}


def _remote_read(server) -> dict[str, list[int]]:
    request = remote_pb2.ReadRequest()
    query = request.queries.add(start_timestamp_ms=T0 - MINUTE,
                                end_timestamp_ms=T0 + STEPS * STEP)
    query.matchers.add(type=0, name="__name__", value="adm")
    resp = server.request("POST", "/api/v1/read", snappy.compress(request.SerializeToString()),
                          {"Content-Type": "application/x-protobuf",
                           "Content-Encoding": "snappy"})
    assert resp.status == 200, resp.text
    answer = remote_pb2.ReadResponse.FromString(snappy.uncompress(resp.body))
    return {next(lb.value for lb in ts.labels if lb.name == "i"): [s.timestamp for s in ts.samples]
            for ts in answer.results[0].timeseries}


def _expect(gone_0: tuple[int, int]) -> dict[str, list[int]]:
    every = [T0 + s * STEP for s in range(STEPS)]
    return {"0": [t for t in every if not gone_0[0] <= t <= gone_0[1]], "2": every}


def _check(server, want: dict[str, list[int]]) -> None:
    assert _samples(server, "adm") == want
    assert _remote_read(server) == want
    assert [s["i"] for s in server.series("adm")] == sorted(want)
    assert [s["i"] for s in server.series('adm{i="1"}')] == []


def test_delete_clean_and_snapshot(tmp_path, start_server):
    data = tmp_path / "data"
    server = start_server(data, "--block-range", "1m", "--enable-admin-api")
    for step in range(STEPS):
        series = [({"__name__": "adm", "i": str(i)}, [(T0 + step * STEP, float(step))])
                  for i in range(3)]
        assert server.write(series).status == 204
    deadline = time.monotonic() + 30
    while len(_blocks(data)) < 8 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_blocks(data)) >= 8  # blocks and head both hold data

    gone = (T0 + 2 * MINUTE, T0 + 9 * MINUTE)  # spans blocks and the head
    resp = _post(server, "delete_series", **{"match[]": 'adm{i="0"}'},
                 start=str(gone[0] / 1000), end=str(gone[1] / 1000))
    assert (resp.status, resp.body) == (204, b"")
    resp = server.request("PUT", f"{ADMIN}/delete_series?match[]=adm%7Bi%3D%221%22%7D")
    assert resp.status == 204
    want = _expect(gone)
    _check(server, want)
    assert any(len(read_file(b)) for b in _blocks(data))

    # Restart: block tombstones from their files, head ones from the WAL.
    assert server.stop(timeout=10) == 0
    server = start_server(data, "--block-range", "1m", "--enable-admin-api")
    _check(server, want)

    assert _post(server, "clean_tombstones").status == 204
    assert all(len(read_file(b)) == 0 for b in _blocks(data))
    _check(server, want)

    resp = _post(server, "snapshot")
    assert resp.status == 200, resp.text
    name = resp.json()["data"]["name"]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]+", name)
    snap = data / "snapshots" / name
    linked = _blocks(snap)
    assert len(linked) == len(_blocks(data)) + 1  # the head as one more block
    for block in _blocks(data):
        assert os.stat(snap / block.name / "index").st_ino == os.stat(block / "index").st_ino
    resp = _post(server, "snapshot", skip_head="true")
    assert len(_blocks(data / "snapshots" / resp.json()["data"]["name"])) == len(_blocks(data))
    assert server.stop(timeout=10) == 0
    assert read_data_dir(snap).samples == read_data_dir(data).samples


def test_bad_requests_are_answered_as_prometheus_does(start_server):
    server = start_server(None, "--enable-admin-api")
    resp = _post(server, "delete_series")
    assert (resp.status, resp.json()) == (400, {
        "status": "error", "errorType": "bad_data", "error": "no match[] parameter provided"})
    resp = _post(server, "delete_series", **{"match[]": "up"}, start="abc")
    assert resp.status == 400
    assert resp.json()["error"] == ('invalid parameter "start": Invalid time value for '
                                    '\'start\': cannot parse "abc" to a valid timestamp')
    resp = _post(server, "delete_series", **{"match[]": "up{"})
    assert resp.status == 400 and resp.json()["error"].startswith('invalid parameter "match[]"')
    resp = _post(server, "snapshot", skip_head="maybe")
    assert (resp.status, resp.json()["error"]) == (400, (
        'invalid parameter "skip_head": unable to parse boolean: strconv.ParseBool: '
        'parsing "maybe": invalid syntax'))
    # Prometheus 2.42 takes a selector that matches the empty string here and deletes
    # every series without that label; we refuse it, as /api/v1/series does.
    resp = _post(server, "delete_series", **{"match[]": '{foo=""}'})
    assert resp.status == 400 and "non-empty matcher" in resp.json()["error"]
    assert _post(server, "delete_series", **{"match[]": "up"}, start="10", end="5").status == 204
    assert server.request("GET", f"{ADMIN}/snapshot").status == 405


def test_disabled_by_default(start_server, tmp_path):
    server = start_server()
    for endpoint in ("delete_series", "clean_tombstones", "snapshot"):
        resp = _post(server, endpoint, **{"match[]": "up"})
        assert resp.status == 500
        assert resp.body == \
            b'{"status":"error","errorType":"unavailable","error":"admin APIs disabled"}'
    assert not (tmp_path / "data" / "snapshots").exists()


def _count_5m(server, at_ms: int, resolution: str) -> dict[str, float]:
    data = server.api("/api/v1/query", query="count_over_time(x[1h])", time=str(at_ms / 1000),
                      max_source_resolution=resolution)
    return {r["metric"]["i"]: float(r["value"][1]) for r in data["result"]}


def test_deletion_reaches_downsampled_data(tmp_path, start_server):
    """Old raw blocks are downsampled when the server starts; deleting, cleaning and
    snapshots then cover the 5-minute blocks as they cover raw ones."""
    data = tmp_path / "data"
    data.mkdir()
    db, store, _, _ = make_store(data)  # raw blocks of four days of counters, 15 s apart
    store.close()
    db.close()
    server = start_server(data, "--enable-admin-api", "--downsample-5m-after", "40h")
    tier = data / "downsampled" / "5m"
    deadline = time.monotonic() + 60
    # Three blocks ended 40 h ago, and the part of the next one older than that.
    while len(_blocks(tier)) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_blocks(tier)) == 4
    at = DS_T0 + DAY + HOUR
    assert _count_5m(server, at, "5m") == _count_5m(server, at, "raw") == \
        {str(i): 240.0 for i in range(4)}

    gone = (DS_T0 + DAY + 7 * MINUTE, DS_T0 + DAY + 8 * MINUTE)  # inside one 5 m window
    resp = _post(server, "delete_series", **{"match[]": 'x{i="0"}'},
                 start=str(gone[0] / 1000), end=str(gone[1] / 1000))
    assert resp.status == 204
    want = {"0": 220.0} | {str(i): 240.0 for i in range(1, 4)}  # the whole window is gone
    assert _count_5m(server, at, "5m") == want
    assert _count_5m(server, at, "raw") == want | {"0": 240.0 - 4}
    assert sum(len(read_file(b, WINDOW_TOMBSTONES)) for b in _blocks(tier)) == 1

    assert _post(server, "clean_tombstones").status == 204
    assert not any((b / WINDOW_TOMBSTONES).exists() for b in _blocks(tier))
    assert _count_5m(server, at, "5m") == want

    resp = _post(server, "snapshot", skip_head="true")
    snap = data / "snapshots" / resp.json()["data"]["name"]
    linked = _blocks(snap / "downsampled" / "5m")
    assert [b.name for b in linked] == [b.name for b in _blocks(tier)]
    for block in _blocks(tier):
        assert os.stat(snap / "downsampled" / "5m" / block.name / "index").st_ino == \
            os.stat(block / "index").st_ino
    assert server.stop(timeout=10) == 0
    again = start_server(snap)  # the snapshot serves the same answers
    assert _count_5m(again, at, "5m") == want
