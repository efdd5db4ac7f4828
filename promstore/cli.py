"""The ``promstore`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from . import __version__
from .config import Config, ConfigError, load_config

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promstore", description="Long-term storage for Prometheus.")
    parser.add_argument("--version", action="version", version=f"promstore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server",
                           description="Run the server. Settings also come from a config "
                                       "file and PROMSTORE_* environment variables.")
    serve.add_argument("--config", help="YAML or TOML config file")
    serve.add_argument("--data-dir", help="data directory (default ./data)")
    serve.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:9201)")
    serve.add_argument("--wal-fsync", choices=["always", "interval"],
                       help="fsync the WAL before every acknowledgement (always, the default) "
                            "or every --wal-fsync-interval (faster; a machine crash may lose "
                            "that window)")
    serve.add_argument("--wal-fsync-interval", help="interval for --wal-fsync=interval (1s)")
    serve.add_argument("--wal-segment-size", help="WAL segment size (128MiB)")
    serve.add_argument("--out-of-order-window",
                       help="accept samples this much older than the newest (default 0)")
    serve.add_argument("--block-range",
                       help="time range of a block written from the head (2h)")
    serve.add_argument("--retention-time",
                       help="delete blocks older than this, counted from the newest sample "
                            "(15d; 0 keeps everything)")
    serve.add_argument("--retention-size",
                       help="delete the oldest blocks while blocks and WAL exceed this (off)")
    serve.add_argument("--compacted-encoding", choices=["dense", "xor"],
                       help="chunk encoding of compacted blocks: dense (default, smaller) or "
                            "xor (readable by Prometheus tools)")
    serve.add_argument("--downsample-5m-after",
                       help="make 5-minute aggregates of raw blocks that ended this long "
                            "before the newest sample (12h)")
    serve.add_argument("--downsample-1h-after",
                       help="make 1-hour aggregates of 5-minute blocks that ended this long "
                            "before the newest sample (10d)")
    serve.add_argument("--no-downsampling", action="store_false", default=None,
                       dest="downsampling", help="make no downsampled blocks (on by default)")
    serve.add_argument("--max-series", type=int, help="limit on series in the head")
    serve.add_argument("--max-request-bytes", help="limit on a compressed request body")
    serve.add_argument("--remote-read-sample-limit", type=int,
                       help="samples one remote-read request may return (5e7; 0 = no limit)")
    serve.add_argument("--remote-read-concurrent-limit", type=int,
                       help="remote-read requests served at once; more wait (10)")
    serve.add_argument("--remote-read-max-bytes-in-frame",
                       help="size a streamed remote-read frame aims at (1MiB)")
    serve.add_argument("--query-lookback-delta",
                       help="how far back an instant selector looks for a sample (5m)")
    serve.add_argument("--query-timeout", help="longest a query may run (2m)")
    serve.add_argument("--query-max-samples", type=int,
                       help="samples one value of a query may hold in memory (50000000)")
    serve.add_argument("--query-max-concurrency", type=int,
                       help="queries evaluated at once; more wait for a slot (20)")
    serve.add_argument("--enable-admin-api", "--web.enable-admin-api", action="store_true",
                       default=None, dest="enable_admin_api",
                       help="serve the admin endpoints /api/v1/admin/tsdb/{delete_series,"
                            "clean_tombstones,snapshot} (off)")
    serve.add_argument("--workers", type=int, help="worker threads for ingestion (2)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    compact = sub.add_parser(
        "compact", help="compact the blocks of a data directory and apply retention",
        description="Open a data directory (no server may be running on it), write the "
                    "head's completed ranges to blocks, compact blocks and apply retention, "
                    "then exit.")
    compact.add_argument("--config", help="YAML or TOML config file")
    compact.add_argument("--data-dir", help="data directory (default ./data)")
    compact.add_argument("--retention-time", help="as for serve (15d)")
    compact.add_argument("--retention-size", help="as for serve (off)")
    compact.add_argument("--compacted-encoding", choices=["dense", "xor"],
                         help="as for serve (dense)")
    compact.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command not in ("serve", "compact"):
        return 0
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        config = load_config(flags, config_file=args.config)
    except ConfigError as exc:
        print(f"promstore: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "compact":
        return _compact(config)
    from .server import serve

    serve(config)
    return 0


def _compact(config: Config) -> int:
    from compaction.maintainer import Maintainer
    from storage.db import DB, DBOptions
    from storage.errors import StorageError

    from .server import head_options, maintainer_options

    try:
        db = DB.open(config.data_dir, DBOptions(head=head_options(config),
                                                compaction_interval=0))
    except StorageError as exc:
        print(f"promstore: {exc}", file=sys.stderr)
        return 1
    try:
        persisted = db.compact_head()
        # Offline, nothing competes with the merges: unpaced.
        maintainer = Maintainer(db, dataclasses.replace(maintainer_options(config),
                                                        rate_limit=0))
        merged = maintainer.run_once()
        print(f"promstore: {len(persisted)} blocks written from the head, {merged} by "
              f"compaction, {maintainer.stats.blocks_deleted_by_retention} deleted by "
              f"retention; {len(db.blocks)} blocks now")
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
