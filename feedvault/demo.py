"""``feedvault demo`` (what ``make demo`` runs): see the whole product work on one machine.

Starts the fake Binance exchange and an S3 server (moto's server mode) on 127.0.0.1, streams three
symbols for about 20 seconds through the real engine (configured by the same environment
variables a Fargate task uses), verifies the run against its manifest, prints what was written,
and copies the objects to ``./demo-output/`` so a person can open them. No cloud account and no
network beyond loopback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from engine import aio
from engine.logs import configure_logging
from engine.text import plural
from feedvault.config import load_stream_config
from feedvault.runner import StreamRun
from sinks.encoders import decode_object
from sinks.verify import verify_run
from sinks.writer import Destination, open_writer

BUCKET = "feedvault-demo"
PREFIX = "streaming/demo/"
SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _copy_out(target: Path, body: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)


def _say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(*, seconds: float = 20.0, rate: float = 300.0, output: str = "demo-output") -> int:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print(
            "feedvault demo needs the embedded S3 server: pip install 'feedvault[demo]'",
            file=sys.stderr,
        )
        return 2
    # moto's server logs every request through werkzeug; the demo prints its own summary.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # The demo's S3 is local: point the SDK at it with throwaway credentials.
    os.environ.update(
        {
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    try:
        return aio.run(_demo(seconds, rate, Path(output)))
    finally:
        server.stop()


async def _demo(seconds: float, rate: float, output: Path) -> int:
    import aioboto3

    from connectors.fake.server import FakeExchange, Faults

    session = aioboto3.Session()
    async with session.client("s3") as s3:
        await s3.create_bucket(Bucket=BUCKET)
    async with FakeExchange("binance", rate=rate, symbols=SYMBOLS, faults=Faults()) as exchange:
        env = {
            "S3_BUCKET": BUCKET,
            "S3_PREFIX": PREFIX,
            "MAX_RUNTIME_SECONDS": str(seconds),
            "STREAMS": ",".join(f"binance:{s}" for s in SYMBOLS),
            "BINANCE_WS_URL": exchange.url,
            "WINDOW_SECONDS": "5",
            "STATS_INTERVAL_SECONDS": "5",
            "LOG_FORMAT": "text",
            "LOG_LEVEL": "WARNING",
        }
        config = load_stream_config(env)
        configure_logging(config.runtime.log_level, config.runtime.log_format)
        endpoint = os.environ["AWS_ENDPOINT_URL_S3"]
        _say(f"fake Binance exchange on {exchange.url}, S3 server on {endpoint}")
        _say(f"streaming {', '.join(SYMBOLS)} at about {rate:g} trades/s for {seconds:g} s ...")
        _say("  (the same environment variables a Fargate task uses: " + ", ".join(env) + ")")
        status = await StreamRun(config, command=["feedvault", "demo"]).run()
        sent = exchange.ledger.total
    if status != 0:
        _say(f"the run ended with exit status {status}")
        return status
    return await _report(config.run_id, seconds, output, sent)


async def _report(run_id: str, seconds: float, output: Path, sent: int) -> int:
    async with open_writer(Destination("s3", PREFIX, bucket=BUCKET)) as writer:
        report = await verify_run(writer, PREFIX, run_id)
        _say()
        _say(f"verify s3://{BUCKET}/{PREFIX} --run {run_id}: {'OK' if report.ok else 'FAILED'}")
        for problem in report.problems:
            _say(f"  problem: {problem}")
        listed = await writer.list(PREFIX)
        _say(
            f"{plural(report.objects, 'object')}, {plural(report.records, 'trade')}, "
            f"{report.records / seconds:,.0f} trades/s; the exchange sent {sent}"
        )
        sample: list[dict[str, Any]] = []
        for item in listed:
            body = await writer.get(item.key)
            await asyncio.to_thread(_copy_out, output / item.key, body)
            if not sample and "/trades/" in f"/{item.key}":
                sample = decode_object(item.key, body)[:3]
            _say(f"  {item.size:>8} B  {item.key}")
        _say()
        _say("a few decoded records:")
        for record in sample:
            _say(f"  {record}")
        _say()
        copied = plural(len(listed), "object")
        _say(f"copied {copied} to ./{output}/ (open the .ndjson.gz files with zcat)")
    queried = await asyncio.to_thread(_show_query, f"s3://{BUCKET}/{PREFIX}")
    return 0 if report.ok and queried == 0 else 1


DEMO_QUERY = (
    "SELECT symbol, count(*) AS trades, min(price) AS low, max(price) AS high, "
    "sum(size) AS volume FROM trades GROUP BY symbol ORDER BY symbol"
)
"""The query the demo ends with (docs: lake.md#feedvault-query)."""


def _show_query(url: str) -> int:
    """``feedvault query URL DEMO_QUERY`` on the demo's data, printed; its exit status. Without
    the lake extra (DuckDB, pyarrow) a line saying how to get it, and 0."""
    try:
        import duckdb  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        _say()
        _say("feedvault query (DuckDB over this data) needs: pip install 'feedvault[lake]'")
        return 0
    from feedvault.query import run

    _say()
    _say(f'feedvault query {url} "{DEMO_QUERY}"')
    status = run(url, DEMO_QUERY)
    sys.stdout.flush()
    return status
