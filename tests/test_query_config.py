"""The query settings (lookback delta, timeout, maximum samples, concurrency): defaults as
Prometheus's, parsing and refusals, and their effect on a running server."""

from __future__ import annotations

import pytest

from promstore.api.query import QueryApiOptions
from promstore.config import Config, ConfigError, load_config
from tests.helpers import run_cli

# -- promstore.config ------------------------------------------------------------------------


def test_defaults_are_prometheus_defaults():
    config = load_config({}, environ={})
    assert config.query_lookback_delta == 300.0
    assert config.query_timeout == 120.0
    assert config.query_max_samples == 50_000_000
    assert config.query_max_concurrency == 20
    options = QueryApiOptions.from_config(config)
    assert options.engine.lookback_delta_ms == 300_000
    assert options.engine.timeout_s == 120.0
    assert options.engine.max_samples == 50_000_000
    assert options.max_concurrent_queries == 20
    assert options.retention == "15d"


def test_layers_and_duration_forms(tmp_path):
    yml = tmp_path / "c.yml"
    yml.write_text("query_lookback_delta: 1m30s\nquery-timeout: 45s\nquery_max_samples: 1000\n")
    env = {"PROMSTORE_QUERY_MAX_CONCURRENCY": "3", "PROMSTORE_QUERY_TIMEOUT": "10s"}
    config = load_config({"query_timeout": "500ms"}, config_file=yml, environ=env)
    assert config.query_lookback_delta == 90.0
    assert config.query_timeout == 0.5  # the flag beats the environment and the file
    assert config.query_max_samples == 1000
    assert config.query_max_concurrency == 3
    options = QueryApiOptions.from_config(config)
    assert options.engine.lookback_delta_ms == 90_000
    assert options.max_concurrent_queries == 3


@pytest.mark.parametrize("flags, words", [
    ({"query_lookback_delta": "0s"}, ["query_lookback_delta must be at least 1ms"]),
    ({"query_lookback_delta": "soon"}, ["invalid duration", "soon"]),
    ({"query_timeout": "0"}, ["query_timeout must be at least 1ms"]),
    ({"query_timeout": "-1m"}, ["invalid duration"]),
    ({"query_max_samples": "0"}, ["query_max_samples must be positive"]),
    ({"query_max_samples": "many"}, ["query_max_samples", "many"]),
    ({"query_max_concurrency": "0"}, ["query_max_concurrency must be positive"]),
])
def test_unusable_values_are_refused(flags, words):
    with pytest.raises(ConfigError) as info:
        load_config(flags, environ={})
    for word in words:
        assert word in str(info.value)


def test_config_carries_the_fields():
    assert {"query_lookback_delta", "query_timeout", "query_max_samples",
            "query_max_concurrency"} <= set(Config.__dataclass_fields__)


# -- the command line and a running server ------------------------------------------------------


def test_help_lists_the_query_flags():
    out = run_cli("serve", "--help")
    assert out.returncode == 0, out.stderr
    for flag in ("--query-lookback-delta", "--query-timeout", "--query-max-samples",
                 "--query-max-concurrency"):
        assert flag in out.stdout


def test_bad_flag_stops_the_server_before_storage_opens(tmp_path):
    out = run_cli("serve", "--data-dir", str(tmp_path / "data"), "--query-max-concurrency", "0",
                  cwd=tmp_path, timeout=30)
    assert out.returncode == 2
    assert "query_max_concurrency must be positive" in out.stderr
    assert not (tmp_path / "data").exists()


def test_flags_take_effect(start_server):
    server = start_server(None, "--query-lookback-delta", "1m", "--query-timeout", "30s",
                          "--query-max-samples", "5", "--query-max-concurrency", "3")
    flags = server.api("/api/v1/status/flags")
    assert flags["query.lookback-delta"] == "1m"
    assert flags["query.timeout"] == "30s"
    assert flags["query.max-samples"] == "5"
    assert flags["query.max-concurrency"] == "3"
    assert flags["storage.tsdb.retention.time"] == "15d"

    t = 1_700_000_000_000
    samples = [(t + i * 15_000, float(i)) for i in range(8)]
    assert server.write([({"__name__": "m", "job": "a"}, samples)]).status == 204
    last = (t + 7 * 15_000) / 1000
    # The newest sample is shown 59 s later, not 61 s later: the lookback is one minute.
    assert server.api("/api/v1/query", query="m", time=last + 59)["result"]
    assert server.api("/api/v1/query", query="m", time=last + 61)["result"] == []
    # Five samples may be loaded, eight may not.
    assert len(server.api("/api/v1/query", query="m[1m]", time=last)["result"][0]["values"]) == 5
    resp = server.get("/api/v1/query", query="m[5m]", time=str(last))
    assert resp.status == 422
    assert resp.json()["errorType"] == "execution"
    assert "too many samples" in resp.json()["error"]
