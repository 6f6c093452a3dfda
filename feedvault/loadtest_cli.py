"""The ``feedvault loadtest`` flags (light to import: the CLI builds every parser up front)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

PROTOCOLS: Final = ("binance", "binanceus", "bybit", "bitstamp", "coinbase", "okx", "kraken")
"""The exchanges the load test can run (each has a fake-exchange adapter)."""
DEFAULT_REPORT_DIR: Final = "loadtest-output"

DESCRIPTION = (
    "Start the fake exchange and (unless S3_BUCKET is set) a local S3 server, run "
    "'feedvault stream' against them, check that every trade sent arrived exactly once, and "
    "report trades/s, CPU per trade, peak RSS, queue high-water mark and receive-to-durable "
    "latency as DIR/loadtest.json and a chart DIR/loadtest.png. Other engine settings "
    "(WINDOW_SECONDS, QUEUE_MAXSIZE, ...) pass through from the environment. "
    "Exit 0 when the check passed, 1 when not, 2 for bad options."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the loadtest flags to ``parser``."""
    parser.add_argument("--protocol", default="binance", choices=PROTOCOLS, help="exchange")
    parser.add_argument(
        "--rate", default="max", help="trades per second across all symbols, or 'max' (default)"
    )
    parser.add_argument("--symbols", type=int, default=3, help="how many symbols (default 3)")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of streaming (default 30)"
    )
    parser.add_argument(
        "--format",
        choices=("ndjson.zst", "ndjson.gz", "parquet"),
        default=None,
        help="object format (default: FORMAT, else the engine's default)",
    )
    parser.add_argument(
        "--report",
        default=DEFAULT_REPORT_DIR,
        metavar="DIR",
        help=f"where the report, chart, ledger and logs go (default {DEFAULT_REPORT_DIR}/)",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``feedvault loadtest`` with parsed ``args``; the exit status."""
    from feedvault.loadtest import LoadtestOptions, run_loadtest

    options = LoadtestOptions(
        protocol=args.protocol,
        rate=str(args.rate).lower(),
        symbols=args.symbols,
        duration=args.duration,
        format=args.format,
        report_dir=Path(args.report),
    )
    return run_loadtest(options)
