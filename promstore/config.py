"""Settings of ``promstore serve``, from defaults, a config file, the environment and flags.

Precedence, lowest to highest: built-in defaults, the config file (YAML ``.yml``/``.yaml``
or TOML ``.toml``), ``PROMSTORE_*`` environment variables (``PROMSTORE_DATA_DIR``,
``PROMSTORE_WAL_FSYNC``, …), command-line flags. Keys are the field names below; a dash
may stand for an underscore. Durations take Prometheus's form (``90s``, ``1h30m``) or
plain seconds; sizes take ``512KiB``, ``16MiB``, ``1GB`` or plain bytes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Config", "ConfigError", "load_config", "parse_duration", "parse_size"]


MIN_WAL_SEGMENT_SIZE = 4 << 10


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names it."""


@dataclass(frozen=True)
class Config:
    """Every setting of the server, with its default."""

    data_dir: str = "./data"
    listen: str = "127.0.0.1:9201"
    # "always": fsync before every acknowledgement (group commit). "interval": fsync every
    # wal_fsync_interval; a machine crash (not a process crash) may lose that window.
    wal_fsync: str = "always"
    wal_fsync_interval: float = 1.0
    wal_segment_size: int = 128 << 20
    out_of_order_window: float = 0.0  # seconds
    # The head writes its oldest range of this length to a block once it spans 1.5 of them.
    block_range: float = 7200.0  # seconds
    # Blocks whose samples are all older than this (counted back from the newest sample)
    # are deleted; 0 keeps everything. retention_size (bytes, 0 = off) bounds blocks + WAL.
    retention_time: float = 15 * 86400.0
    retention_size: int = 0
    # Encoding of compacted blocks: "dense" (several times smaller) or "xor" (the blocks
    # stay readable by Prometheus and promtool, as the 2h blocks always are).
    compacted_encoding: str = "dense"
    # Samples compaction may merge per second (0 = unpaced); it also always runs at the
    # lowest CPU priority. See docs/configuration.md for how it was chosen.
    compaction_rate_limit: int = 1_000_000
    # Downsampling (docs/downsampling.md): raw blocks that ended downsample_5m_after before
    # the newest sample become 5-minute windows, 5-minute blocks that ended
    # downsample_1h_after before it 1-hour windows. Off, none are made (those already
    # made are still read, and deletions still reach them).
    downsampling: bool = True
    downsample_5m_after: float = 12 * 3600.0  # seconds
    downsample_1h_after: float = 10 * 86400.0  # seconds
    max_request_bytes: int = 32 << 20  # compressed body
    max_decoded_bytes: int = 256 << 20  # decompressed body
    max_samples_per_request: int = 1_000_000
    max_series_per_request: int = 100_000
    max_labels_per_request: int = 4_000_000
    max_labels_per_series: int = 128
    max_label_name_length: int = 1024
    max_label_value_length: int = 4096
    max_series: int = 50_000_000
    workers: int = 2  # they never wait for an fsync: one per core keeps them busy
    max_in_flight_writes: int = 64
    remote_read_sample_limit: int = 50_000_000  # per read request; 0 = no limit
    remote_read_concurrent_limit: int = 10
    remote_read_max_bytes_in_frame: int = 1 << 20
    # PromQL, as Prometheus's --query.* flags: how far back an instant selector looks for
    # a sample, how long a query may run, how many samples one value of a query may hold,
    # and how many queries run at once (more wait for a slot).
    query_lookback_delta: float = 300.0  # seconds
    query_timeout: float = 120.0  # seconds
    query_max_samples: int = 50_000_000
    query_max_concurrency: int = 20
    # The admin endpoints (delete_series, clean_tombstones, snapshot) change or copy
    # stored data; off by default, as Prometheus's --web.enable-admin-api.
    enable_admin_api: bool = False
    log_level: str = "info"

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
                   "y": 365 * 86400}
_DURATION_ORDER = ("y", "w", "d", "h", "m", "s", "ms")
_DURATION_RE = re.compile("".join(rf"(?:(\d+){u})?" for u in _DURATION_ORDER))
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_duration(text: str | float | int) -> float:
    """Seconds in a Prometheus duration (``1h30m``, units in order y w d h m s ms, each at
    most once) or a plain non-negative number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        text = str(text).strip()
        try:
            seconds = float(text)
        except ValueError:
            m = _DURATION_RE.fullmatch(text)
            if not text or m is None:
                raise ConfigError(f"invalid duration {text!r}") from None
            seconds = sum(int(n) * _DURATION_UNITS[u]
                          for n, u in zip(m.groups(), _DURATION_ORDER) if n is not None)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"invalid duration {text!r}: must be finite and not negative")
    return float(seconds)


def parse_size(text: str | int) -> int:
    """Bytes in ``16MiB``, ``1GB``, ``4096``."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ConfigError(f"invalid size {text!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def _coerce(name: str, kind: Any, value: Any) -> Any:
    try:
        if name in ("wal_fsync_interval", "out_of_order_window", "block_range",
                    "retention_time", "query_lookback_delta", "query_timeout",
                    "downsample_5m_after", "downsample_1h_after"):
            return parse_duration(value)
        if name in ("wal_segment_size", "max_request_bytes", "max_decoded_bytes",
                    "remote_read_max_bytes_in_frame",
                    "retention_size"):
            return parse_size(value)
        if kind in (bool, "bool"):
            return _parse_bool(value)
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value for {name}: {value!r} ({exc})") from exc


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return data


def load_config(
    flags: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge defaults, file, environment and flags (``None`` flag values are unset)."""
    environ = os.environ if environ is None else environ
    known = {f.name: f.type for f in fields(Config)}
    merged: dict[str, Any] = {}
    if config_file is None:
        config_file = environ.get("PROMSTORE_CONFIG") or None
    layers: list[Mapping[str, Any]] = []
    if config_file:
        layers.append(_read_file(Path(config_file)))
    layers.append({k[len("PROMSTORE_"):].lower(): v for k, v in environ.items()
                   if k.startswith("PROMSTORE_") and k != "PROMSTORE_CONFIG"})
    layers.append({k: v for k, v in (flags or {}).items() if v is not None})
    for layer in layers:
        for key, value in layer.items():
            name = key.replace("-", "_").replace(".", "_")
            if name not in known:
                raise ConfigError(f"unknown setting {key!r}")
            merged[name] = _coerce(name, known[name], value)
    config = dataclasses.replace(Config(), **merged)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    if config.wal_fsync not in ("always", "interval"):
        raise ConfigError(f"wal_fsync must be 'always' or 'interval', not {config.wal_fsync!r}")
    try:
        _, port = config.host_port
    except ValueError as exc:
        raise ConfigError(f"listen must be HOST:PORT, not {config.listen!r}") from exc
    if not 0 < port < 65536:
        raise ConfigError(f"listen: port {port} is not between 1 and 65535")
    for name in ("max_request_bytes", "max_decoded_bytes", "max_samples_per_request",
                 "max_series_per_request", "max_labels_per_request",
                 "max_labels_per_series", "max_label_name_length", "max_label_value_length",
                 "workers", "max_series", "max_in_flight_writes",
                 "remote_read_concurrent_limit", "remote_read_max_bytes_in_frame",
                 "query_max_samples", "query_max_concurrency"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    # The engine counts in milliseconds: less than one would be no window or no time.
    for name in ("query_lookback_delta", "query_timeout"):
        if getattr(config, name) < 0.001:
            raise ConfigError(f"{name} must be at least 1ms")
    if config.downsample_5m_after < 0.001:
        raise ConfigError("downsample_5m_after must be at least 1ms")
    if config.downsample_1h_after <= config.downsample_5m_after:
        raise ConfigError("downsample_1h_after must be longer than downsample_5m_after "
                          "(1-hour windows are made from 5-minute ones)")
    if config.compaction_rate_limit < 0:
        raise ConfigError("compaction_rate_limit must not be negative (0 = unpaced)")
    if config.remote_read_sample_limit < 0:
        raise ConfigError("remote_read_sample_limit must not be negative (0 = no limit)")
    if config.wal_fsync_interval <= 0:
        raise ConfigError("wal_fsync_interval must be positive")
    if config.compacted_encoding not in ("dense", "xor"):
        raise ConfigError("compacted_encoding must be 'dense' or 'xor', "
                          f"not {config.compacted_encoding!r}")
    if config.block_range < 60 or config.block_range % 60:
        raise ConfigError("block_range must be a whole number of minutes, at least 1m")
    if config.wal_segment_size < MIN_WAL_SEGMENT_SIZE:
        raise ConfigError(f"wal_segment_size must be at least {MIN_WAL_SEGMENT_SIZE} bytes")
