"""Through HTTP: the head's old ranges become blocks while the server runs, and the
metadata API and a restart answer from blocks and head together."""

from __future__ import annotations

import time

from tests.helpers import read_data_dir

MINUTE = 60_000
T0 = 1_700_000_000_000 // MINUTE * MINUTE


def _blocks(data_dir) -> list:
    return sorted(p for p in data_dir.iterdir() if len(p.name) == 26 and p.is_dir())


def test_blocks_are_cut_and_served(tmp_path, start_server):
    data_dir = tmp_path / "data"
    server = start_server(data_dir, "--block-range", "1m")
    for step in range(40):  # ten minutes at 15 s
        series = [({"__name__": "blocky", "job": f"j{step // 20}", "i": str(i)},
                   [(T0 + step * 15_000, float(step))]) for i in range(3)]
        assert server.write(series).status == 204
    deadline = time.monotonic() + 30
    while len(_blocks(data_dir)) < 9 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_blocks(data_dir)) == 9  # one a minute while the head spans over 1.5 minutes
    # j0 was only written in the first five minutes: it lives in blocks alone now.
    assert server.api("/api/v1/label/job/values") == ["j0", "j1"]
    got = server.api("/api/v1/series", **{"match[]": 'blocky{job="j0"}'})
    assert got == [{"__name__": "blocky", "i": str(i), "job": "j0"} for i in range(3)]
    early = server.api("/api/v1/labels", start=str(T0 / 1000), end=str((T0 + MINUTE) / 1000))
    assert early == ["__name__", "i", "job"]
    assert server.stop(timeout=10) == 0
    stored = read_data_dir(data_dir)
    assert stored.n_samples == 120 and stored.rows == 120
    first = stored.samples[(("__name__", "blocky"), ("i", "0"), ("job", "j0"))]
    assert [t for t, _ in first] == [T0 + s * 15_000 for s in range(20)]
