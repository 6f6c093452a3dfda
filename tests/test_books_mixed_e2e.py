"""Trades and order books of four exchanges in one ``feedvault stream`` (``CHANNELS=trades,book``,
environment only), every fake exchange closing each connection every few seconds, into moto's S3
server: the run verifies, its manifest is complete with a reconnect resync per book stream, every
trade the fakes sent is stored exactly once, and each book rebuilt from the stored objects equals,
level for level, the book its fake served (docs: order-books.md).
"""

from __future__ import annotations

import collections
import json
import signal
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.conftest import S3Server
from tests.harness import (
    assert_stored_exactly_once,
    base_env,
    fake_exchange,
    read_logs_until,
    read_manifest,
    reap,
    run_verify,
    start_stream,
    stored_trades,
)
from tests.test_books_e2e import assert_same_books, rebuild, served_books, stored_rows

PREFIX = "books/mixed/"
EXCHANGES = {
    # exchange: (symbol as in STREAMS, the fake's faults, REST snapshots)
    "binance": ("BTCUSDT", "disconnect-every=2", True),
    "okx": ("BTC-USDT", "disconnect-every=2.5", False),
    "kraken": ("XBT/USD", "disconnect-every=2", False),
    "coinbase": ("BTC-USD", "disconnect-every=2.5", False),
}
CONNECTIONS = 6
"""``connected`` lines per exchange before the stop: its two channels' first connections and
(as both channels are closed at the same pace) at least one reconnect of each."""


def book_streams() -> set[str]:
    return {f"{name}:{symbol}:book" for name, (symbol, _, _) in EXCHANGES.items()}


def stop_when_reconnected(proc: Any, timeout: float = 60.0) -> str:
    """SIGTERM the stream once every exchange has logged :data:`CONNECTIONS` ``connected``
    lines (``timeout`` s at most in all); wait for it to exit (60 s at most) and return its
    stderr. The process is killed if anything fails on the way."""
    counts: collections.Counter[str] = collections.Counter()

    def enough(doc: dict[str, Any]) -> bool:
        if doc.get("event") == "connected":
            counts[doc["exchange"]] += 1
        return all(counts[name] >= CONNECTIONS for name in EXCHANGES)

    try:
        read_logs_until(proc, enough, timeout, [])
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
        return str(err)
    finally:
        reap(proc)


def test_trades_and_books_of_four_disconnecting_exchanges_verify(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    ledgers: dict[str, Path] = {name: tmp_path / f"{name}-books.jsonl" for name in EXCHANGES}
    with ExitStack() as stack:
        fakes = {
            name: stack.enter_context(
                fake_exchange(
                    tmp_path,
                    protocol=name,
                    symbols=symbol,
                    rate="50",
                    faults=faults,
                    name=name,
                    args=("--book-rate", "20", "--book-ledger", str(ledgers[name])),
                )
            )
            for name, (symbol, faults, _) in EXCHANGES.items()
        }
        env = base_env(
            S3_BUCKET=bucket,
            S3_PREFIX=PREFIX,
            MAX_RUNTIME_SECONDS="120",  # a bound only: the test stops the run
            STREAMS=",".join(f"{name}:{symbol}" for name, (symbol, _, _) in EXCHANGES.items()),
            CHANNELS="trades,book",
            WINDOW_SECONDS="2",
            STATS_INTERVAL_SECONDS="1",
            SPILL_DIR=str(tmp_path / "spill"),
            **{f"{name.upper()}_WS_URL": fx.url for name, fx in fakes.items()},
            **{
                f"{name.upper()}_REST_URL": fakes[name].url.replace("ws://", "http://")
                for name, (_, _, rest) in EXCHANGES.items()
                if rest
            },
            **s3_server.env(),
        )
        proc = start_stream(env)
        err = stop_when_reconnected(proc)
        trades = {name: fx.stop() for name, fx in fakes.items()}
    assert proc.returncode == 0, err[-3000:]
    client = s3_server.client()
    manifest = read_manifest(client, bucket, PREFIX)
    assert manifest["status"] == "complete", manifest.get("errors")
    assert set(manifest["streams"]) >= book_streams()

    # every book stream was resynced after its reconnects; all done but perhaps the last
    resyncs = manifest.get("resyncs", {})
    assert set(resyncs) == book_streams(), resyncs
    for stream, items in resyncs.items():
        reconnects = manifest["streams"][stream]["reconnects"]
        assert reconnects >= 1, (stream, manifest["streams"][stream])
        assert [r["cause"] for r in items] == ["reconnect"] * reconnects, (stream, items)
        assert all(r["done"] is not None for r in items[:-1]), (stream, items)
        for r in items:  # a sequenced book (Binance, OKX) went on from where it broke
            if r["done"] is not None and r["from_seq"] is not None:
                assert int(r["to_seq"]) > int(r["from_seq"]), (stream, r)

    # trades: exactly once, whatever the reconnects
    assert_stored_exactly_once(
        [t for ledger in trades.values() for t in ledger], stored_trades(client, bucket, PREFIX)
    )

    # books: each one rebuilt from the stored objects is the book its fake served
    stored = rebuild(stored_rows(s3_server, bucket, PREFIX))
    for name, (symbol, _, _) in EXCHANGES.items():
        assert_same_books(stored, served_books(ledgers[name]), symbol, manifest)

    verified = run_verify(s3_server.env(), bucket, PREFIX)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert not manifest.get("crossed"), json.dumps(manifest["crossed"])  # the fakes never cross
