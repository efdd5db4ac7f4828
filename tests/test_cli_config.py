"""The ``promstore`` command and its settings: version, help, config files (YAML and
TOML), PROMSTORE_* variables, precedence flags > environment > file > defaults, and
clear refusals (exit code 2) of unknown settings and bad values."""

from __future__ import annotations

import math

import pytest

from promstore import __version__
from promstore.config import Config, ConfigError, load_config, parse_duration, parse_size
from tests.helpers import ServerProcess, free_port, run_cli

# -- the command ---------------------------------------------------------------------------


def test_version():
    out = run_cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"promstore {__version__}"


def test_serve_help_lists_the_flags():
    out = run_cli("serve", "--help")
    assert out.returncode == 0, out.stderr
    for flag in ("--config", "--data-dir", "--listen", "--wal-fsync", "--wal-fsync-interval",
                 "--out-of-order-window", "--max-request-bytes", "--downsample-5m-after",
                 "--downsample-1h-after", "--no-downsampling"):
        assert flag in out.stdout


def test_no_command_is_a_usage_error():
    out = run_cli()
    assert out.returncode == 2
    assert "usage" in out.stderr.lower()


# -- settings taking effect in a running server ---------------------------------------------

def start(tmp_path, *args, env=None, port: int) -> ServerProcess:
    """A server whose --listen and --data-dir come from ``args``, ``env`` or a file."""
    server = ServerProcess(None, *args, env=env, port=port, listen=False,
                           log_path=tmp_path / f"server-{port}.log")
    return server.start(timeout=30)


def stops_cleanly(server: ServerProcess) -> bool:
    return server.stop(timeout=10) == 0


def test_yaml_config_file(tmp_path):
    port = free_port()
    config = tmp_path / "promstore.yml"
    config.write_text(f"data_dir: {tmp_path / 'yaml-data'}\nlisten: 127.0.0.1:{port}\n"
                      "wal_fsync: interval\nwal-fsync-interval: 250ms\n"
                      "max_request_bytes: 64KiB\n")
    server = start(tmp_path, "--config", str(config), port=port)
    try:
        assert (tmp_path / "yaml-data" / "wal").is_dir()
        resp = server.write(body=bytes(65 << 10))
        assert resp.status == 413 and str(64 << 10) in resp.text, resp.text
    finally:
        assert stops_cleanly(server)


def test_toml_config_file_named_by_the_environment(tmp_path):
    port = free_port()
    config = tmp_path / "promstore.toml"
    config.write_text(f'data_dir = "{tmp_path / "toml-data"}"\nlisten = "127.0.0.1:{port}"\n'
                      "max_request_bytes = 2048\nworkers = 2\n")
    server = start(tmp_path, env={"PROMSTORE_CONFIG": str(config)}, port=port)
    try:
        assert (tmp_path / "toml-data" / "wal").is_dir()
        resp = server.write(body=bytes(4096))
        assert resp.status == 413 and "2048" in resp.text, resp.text
    finally:
        assert stops_cleanly(server)


def test_environment_variables(tmp_path):
    port = free_port()
    env = {"PROMSTORE_LISTEN": f"127.0.0.1:{port}", "PROMSTORE_DATA_DIR": str(tmp_path / "env"),
           "PROMSTORE_MAX_REQUEST_BYTES": "1KiB"}
    server = start(tmp_path, env=env, port=port)
    try:
        assert (tmp_path / "env" / "wal").is_dir()
        assert server.write(body=bytes(2048)).status == 413
    finally:
        assert stops_cleanly(server)


def test_precedence_flags_over_environment_over_file(tmp_path):
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    config = tmp_path / "promstore.yml"
    config.write_text(f"listen: 127.0.0.1:{file_port}\ndata_dir: {tmp_path / 'file-data'}\n"
                      "max_request_bytes: 1KiB\n")
    env = {"PROMSTORE_LISTEN": f"127.0.0.1:{env_port}"}

    # The environment beats the file for listen; the file still sets what env leaves alone.
    server = start(tmp_path, "--config", str(config), env=env, port=env_port)
    try:
        assert (tmp_path / "file-data" / "wal").is_dir()
        assert server.write(body=bytes(2048)).status == 413
    finally:
        assert stops_cleanly(server)

    # A flag beats both.
    server = start(tmp_path, "--config", str(config), "--listen", f"127.0.0.1:{flag_port}",
                   "--data-dir", str(tmp_path / "flag-data"), env=env, port=flag_port)
    try:
        assert (tmp_path / "flag-data" / "wal").is_dir()
    finally:
        assert stops_cleanly(server)


# -- refusals ------------------------------------------------------------------------------

def refused(tmp_path, *args: str, env=None):
    out = run_cli("serve", "--data-dir", str(tmp_path / "data"), *args, env=env, cwd=tmp_path,
                  timeout=30)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert not (tmp_path / "data").exists(), "storage was opened despite a bad setting"
    return out.stderr


def test_unknown_setting_in_a_file(tmp_path):
    config = tmp_path / "promstore.yml"
    config.write_text("listen: 127.0.0.1:1\ncolour: blue\n")
    assert "unknown setting 'colour'" in refused(tmp_path, "--config", str(config))


def test_unknown_setting_in_the_environment(tmp_path):
    assert "colour" in refused(tmp_path, env={"PROMSTORE_COLOUR": "blue"}).lower()


@pytest.mark.parametrize("text, words", [
    ("listen: [1, 2\n", ["cannot parse config file"]),
    ("- a\n- b\n", ["must hold a mapping"]),
])
def test_unusable_config_file(tmp_path, text, words):
    config = tmp_path / "promstore.yml"
    config.write_text(text)
    err = refused(tmp_path, "--config", str(config))
    for word in words:
        assert word in err


def test_unusable_toml_file(tmp_path):
    config = tmp_path / "promstore.toml"
    config.write_text("listen = \n")
    assert "cannot parse config file" in refused(tmp_path, "--config", str(config))


def test_missing_config_file(tmp_path):
    assert "cannot read config file" in refused(tmp_path, "--config",
                                                str(tmp_path / "nope.yml"))


@pytest.mark.parametrize("args, words", [
    (["--wal-fsync-interval", "soon"], ["invalid duration", "soon"]),
    (["--max-request-bytes", "lots"], ["invalid size", "lots"]),
    (["--workers", "0"], ["workers must be positive"]),
    (["--listen", "nohost"], ["listen", "nohost"]),
    (["--wal-fsync", "never"], ["invalid choice", "never"]),
    (["--out-of-order-window=-5m"], ["invalid duration", "-5m"]),
], ids=["duration", "size", "workers", "listen", "fsync-mode", "negative-duration"])
def test_bad_value_is_refused(tmp_path, args, words):
    err = refused(tmp_path, *args)
    for word in words:
        assert word in err, err


# Values that pass validation today and then crash start-up with a traceback (exit 1)
# instead of a message and exit code 2.
_STARTUP_CRASH = ("promstore/config.py _validate does not bound this setting; the server "
                  "dies at start-up with a traceback instead of exit code 2")


@pytest.mark.parametrize("args", [
    ["--wal-fsync", "interval", "--wal-fsync-interval", "0"],
    ["--out-of-order-window", "nan"],
    ["--listen", "127.0.0.1:99999"],
    ["--wal-segment-size", "0"],
], ids=["fsync-interval-0", "ooo-window-nan", "port-99999", "segment-size-0"])
def test_bad_value_that_crashes_start_up_is_refused(tmp_path, args):
    refused(tmp_path, *args)


# -- promstore.config unit tests -----------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("1h30m", 5400), ("500ms", 0.5), ("1d", 86400), ("2w", 14 * 86400),
    ("1y", 365 * 86400), ("1m30s500ms", 90.5), ("0s", 0), ("1.5", 1.5), ("30", 30),
    (" 10m ", 600), (2, 2), (0.25, 0.25),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "1x", "1.5h", "10 m", "1h-5m", "-1s", "h1"])
def test_parse_duration_rejects(text):
    with pytest.raises(ConfigError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["nan", "inf", "-5"])
def test_parse_duration_rejects_non_finite_and_negative_seconds(text):
    with pytest.raises(ConfigError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["30m1h", "1s1s", "5ms1s"])
def test_parse_duration_wants_units_in_prometheus_order(text):
    with pytest.raises(ConfigError):
        parse_duration(text)


@pytest.mark.parametrize("text, size", [
    ("4096", 4096), ("512KiB", 512 << 10), ("16MiB", 16 << 20), ("1GiB", 1 << 30),
    ("1KB", 1000), ("1GB", 10**9), ("1.5KiB", 1536), ("10 MiB", 10 << 20), ("16mib", 16 << 20),
    ("100B", 100), (4096, 4096),
])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "-1", "1e3", "12 parsecs", "1..5MiB"])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError, match="invalid size"):
        parse_size(text)


def test_defaults():
    config = load_config({}, environ={})
    assert config == Config()
    assert config.host_port == ("127.0.0.1", 9201)
    assert config.wal_fsync == "always"


def test_load_config_layers(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("listen: 127.0.0.1:1\nwal_fsync_interval: 2s\nout-of-order-window: 10m\n"
                   "max_series: 1000\n")
    env = {"PROMSTORE_LISTEN": "127.0.0.1:2", "PROMSTORE_WAL_FSYNC": "interval",
           "PROMSTORE_MAX_SERIES": "2000", "HOME": "/root"}
    config = load_config({"listen": "[::1]:3", "max_series": None}, config_file=yml, environ=env)
    assert config.host_port == ("::1", 3)
    assert config.wal_fsync == "interval"
    assert config.wal_fsync_interval == 2.0
    assert config.out_of_order_window == 600.0
    assert config.max_series == 2000


def test_load_config_from_toml(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('wal_segment_size = "64MiB"\nmax_request_bytes = 1024\n'
                    'wal_fsync_interval = 0.5\n')
    config = load_config({}, config_file=toml, environ={})
    assert config.wal_segment_size == 64 << 20
    assert config.max_request_bytes == 1024
    assert math.isclose(config.wal_fsync_interval, 0.5)


@pytest.mark.parametrize("flags, words", [
    ({"workers": "many"}, ["workers", "many"]),
    ({"wal_fsync": "sometimes"}, ["wal_fsync", "sometimes"]),
    ({"max_request_bytes": "0"}, ["max_request_bytes must be positive"]),
    ({"out_of_order_window": "-5"}, ["out_of_order_window"]),
    ({"nonsense": "1"}, ["unknown setting 'nonsense'"]),
])
def test_load_config_rejects(flags, words):
    with pytest.raises(ConfigError) as info:
        load_config(flags, environ={})
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("flags", [
    {"max_label_value_length": "0"}, {"max_label_name_length": "0"},
    {"wal_segment_size": "16"}, {"wal_fsync_interval": "0"}, {"listen": "127.0.0.1:-1"},
], ids=["value-length", "name-length", "segment-size", "fsync-interval", "port"])
def test_load_config_rejects_unusable_limits(flags):
    with pytest.raises(ConfigError):
        load_config(flags, environ={})


# -- downsampling ------------------------------------------------------------------------


def test_downsampling_ages_from_every_layer(tmp_path):
    from promstore.cli import _parser
    from promstore.server import maintainer_options

    defaults = maintainer_options(load_config({}, environ={})).downsample
    assert defaults is not None
    assert (defaults.after_5m_ms, defaults.after_1h_ms) == (12 * 3_600_000, 10 * 86_400_000)
    yml = tmp_path / "c.yml"
    yml.write_text("downsample_5m_after: 2d\ndownsample-1h-after: 3w\n")
    toml = tmp_path / "c.toml"
    toml.write_text('downsample_5m_after = "1d"\ndownsample_1h_after = 864000\n')
    env = {"PROMSTORE_DOWNSAMPLE_5M_AFTER": "36h"}
    args = vars(_parser().parse_args(["serve", "--downsample-1h-after", "30d"]))
    flags = {k: v for k, v in args.items() if k not in ("command", "config")}
    for config, five, hour in (
            (load_config({}, config_file=yml, environ={}), 2 * 86400, 21 * 86400),
            (load_config({}, config_file=toml, environ={}), 86400, 864000),
            (load_config(flags, config_file=yml, environ=env), 36 * 3600, 30 * 86400)):
        options = maintainer_options(config).downsample
        assert options is not None
        assert (config.downsample_5m_after, config.downsample_1h_after) == (five, hour)
        assert (options.after_5m_ms, options.after_1h_ms) == (five * 1000, hour * 1000)
    off = vars(_parser().parse_args(["serve", "--no-downsampling"]))["downsampling"]
    for config in (load_config({"downsampling": off}, environ={}),
                   load_config({}, environ={"PROMSTORE_DOWNSAMPLING": "false"})):
        assert not config.downsampling and maintainer_options(config).downsample is None


@pytest.mark.parametrize("flags, words", [
    ({"downsample_5m_after": "0"}, ["downsample_5m_after must be at least 1ms"]),
    ({"downsample_1h_after": "-1d"}, ["downsample_1h_after"]),
    ({"downsample_5m_after": "10d"}, ["downsample_1h_after must be longer"]),
    ({"downsample_5m_after": "2h", "downsample_1h_after": "2h"},
     ["downsample_1h_after must be longer"]),
    ({"downsampling": "sometimes"}, ["downsampling", "sometimes"]),
])
def test_downsampling_settings_are_checked(flags, words):
    with pytest.raises(ConfigError) as info:
        load_config(flags, environ={})
    for word in words:
        assert word in str(info.value)
