"""End to end, as the Fargate task runs, for every exchange: ``feedvault fake-exchange`` ->
``feedvault stream`` (environment only) -> moto's S3 server on loopback, both subprocesses; the
fake keeps a ledger of every trade it sent.

The tests every exchange shares, parametrized by :data:`EXCHANGES` (what differs: symbols, URL
variable, how trades are stored, and checks only one exchange has). What only one exchange does
is at the end (Bitstamp's reconnect notices) or in tests/test_stream_e2e.py (Binance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.transports import TRANSPORTS
from tests.conftest import S3Server
from tests.harness import (
    FakeExchangeRun,
    assert_stored_exactly_once,
    ledger_missing_ids,
    manifest_gap_ids,
    run_against_fake,
    run_verify,
)

Check = Callable[[FakeExchangeRun, dict[str, Any], list[dict[str, Any]]], None]
"""An exchange's own check of a run, its manifest and its stored trades."""


def _no_check(run: FakeExchangeRun, manifest: dict[str, Any], stored: list[Any]) -> None:
    pass


def _exact_kraken_numbers(
    run: FakeExchangeRun, manifest: dict[str, Any], stored: list[Any]
) -> None:
    # JSON numbers came through as their exact text (the fake writes 8 decimals)
    assert all(len(t["price"].partition(".")[2]) == 8 for t in stored)


def _no_gap_entries(run: FakeExchangeRun, manifest: dict[str, Any], stored: list[Any]) -> None:
    assert not any(manifest["gaps"].values())  # unsequenced: no gap detection


def _milliseconds(run: FakeExchangeRun, manifest: dict[str, Any], stored: list[Any]) -> None:
    assert all(t["ts_event"] % 1000 == 0 for t in stored)  # ms on the wire, µs in the record


def _stats_logged(run: FakeExchangeRun, manifest: dict[str, Any], stored: list[Any]) -> None:
    assert '"event": "stats"' in run.out or '"event":"stats"' in run.out


@dataclass(frozen=True)
class Exchange:
    name: str
    stored: str
    """How the fake's symbols are stored: ``canonical=raw`` pairs (the raw symbol is what the
    fake trades and the stream names, unless :attr:`streams` says otherwise)."""
    rate: str = "500"
    url_path: str = ""
    check: Check = _no_check
    refused: tuple[str, str] | None = None
    """(a stream the exchange refuses, the message it refuses it with)."""
    streams: str = ""
    """``STREAMS``, when not one stream per raw symbol."""

    @property
    def prefix(self) -> str:
        return f"streaming/{self.name}/"

    @property
    def stored_as(self) -> set[tuple[str, str, str]]:
        """(exchange, symbol, raw_symbol) of the stored trades."""
        pairs = [pair.split("=") for pair in self.stored.split()]
        return {(self.name, symbol, raw) for symbol, raw in pairs}

    @property
    def symbols(self) -> str:
        """The fake's symbols."""
        return ",".join(pair.split("=")[1].upper() for pair in self.stored.split())

    def run(self, s3: S3Server, bucket: str, tmp_path: Path, **options: Any) -> FakeExchangeRun:
        streams = self.streams or ",".join(f"{self.name}:{s}" for s in self.symbols.split(","))
        settings: dict[str, Any] = {
            "bucket": bucket,
            "prefix": self.prefix,
            "protocol": self.name,
            "symbols": self.symbols,
            "streams": streams,
            "url_variable": f"{self.name.upper()}_WS_URL",
            "url_path": self.url_path,
            "rate": self.rate,
        }
        return run_against_fake(s3, tmp_path, **{**settings, **options})

    def reconnecting_run(
        self, s3: S3Server, bucket: str, tmp_path: Path, faults: str, **options: Any
    ) -> tuple[FakeExchangeRun, dict[str, Any]]:
        """A run through ``faults`` stopped (SIGTERM) once it has connected three times,
        however long the start and the reconnects took on a loaded machine: it exits 0,
        complete, and its manifest (returned with it) counts two reconnects or more."""
        run = self.run(s3, bucket, tmp_path, faults=faults, runtime="120", connections=3, **options)
        run.assert_exit(0)
        manifest = run.manifest()
        assert (manifest["status"], manifest["stop_reason"]) == ("complete", "signal")
        assert manifest["counters"]["reconnects"] >= 2  # three connections
        return run, manifest


_BINANCE_STORED = "BTC-USDT=BTCUSDT ETH-USDT=ETHUSDT BNB-USDT=BNBUSDT"
EXCHANGES = {
    exchange.name: exchange
    for exchange in [
        Exchange("binance", _BINANCE_STORED, rate="2000", check=_stats_logged),
        # the same protocol at another address
        Exchange("binanceus", "BTC-USD=BTCUSD ETH-USD=ETHUSD"),
        Exchange(
            "coinbase",
            "BTC-USD=BTC-USD ETH-USD=ETH-USD",
            refused=("coinbase:NOPE-USD", "NOPE-USD is not a valid product"),
        ),
        Exchange(
            "kraken",
            "BTC-USD=BTC/USD ETH-USD=ETH/USD",
            url_path="/v2",  # the fake's endpoint, as Kraken's: wss://ws.kraken.com/v2
            check=_exact_kraken_numbers,
            refused=("kraken:NOPE/USD", "Currency pair not supported NOPE/USD"),
        ),
        Exchange(
            "bitstamp",
            "BTC-USD=btcusd ETH-USD=ethusd",  # as the channel names them
            check=_no_gap_entries,
            streams="bitstamp:BTCUSD,bitstamp:ethusd",  # both spellings are accepted
        ),
        Exchange("okx", "BTC-USDT=BTC-USDT ETH-USDT=ETH-USDT", check=_milliseconds),
        Exchange(
            "bybit",
            "BTC-USDT=BTCUSDT ETH-USDT=ETHUSDT",
            refused=("bybit:NOPEUSDT", "Invalid symbol :[publicTrade.NOPEUSDT]"),
        ),
    ]
}


def _params(names: list[str]) -> Any:
    return pytest.mark.parametrize("exchange", [EXCHANGES[n] for n in names], ids=names)


@_params(list(EXCHANGES))
def test_deadline_run_stores_every_ledger_trade_once(
    s3_server: S3Server, bucket: str, tmp_path: Path, exchange: Exchange
) -> None:
    run = exchange.run(s3_server, bucket, tmp_path)
    run.assert_exit(0)
    manifest = run.manifest()
    assert (manifest["status"], manifest["stop_reason"]) == ("complete", "deadline")
    stored = run.stored()
    assert_stored_exactly_once(run.ledger, stored)  # exact price/size text and the taker side
    assert manifest["counters"]["parsed"] == len(stored)
    assert manifest["counters"]["invalid"] == 0
    assert sum(o["records"] for o in manifest["objects"]) == len(stored)
    assert {(t["exchange"], t["symbol"], t["raw_symbol"]) for t in stored} == exchange.stored_as
    assert {t["side"] for t in stored} == {"buy", "sell"}
    assert manifest_gap_ids(manifest) == {}
    exchange.check(run, manifest, stored)
    result = run_verify(s3_server.env(), bucket, exchange.prefix)
    assert result.returncode == 0, result.stdout + result.stderr


@_params(["coinbase", "kraken"])
def test_disconnects_reconnect_and_the_gaps_are_what_the_ledger_lacks(
    s3_server: S3Server, bucket: str, tmp_path: Path, exchange: Exchange
) -> None:
    """The run is stopped (SIGTERM) once it has connected three times, however long the start
    and the reconnects took on a loaded machine: the second connection, between two faults,
    delivered the trades after the first gap."""
    faults = "disconnect-every=1.2"
    run, manifest = exchange.reconnecting_run(s3_server, bucket, tmp_path, faults, rate="400")
    assert_stored_exactly_once(run.ledger, run.stored())
    expected = ledger_missing_ids(run.ledger)
    assert expected, "the fault produced no gap"
    assert manifest_gap_ids(manifest) == expected


@_params([name for name, exchange in EXCHANGES.items() if exchange.refused])
@pytest.mark.parametrize("ws_transport", sorted(TRANSPORTS))
def test_a_refused_subscription_ends_the_run_with_the_exchange_message(
    s3_server: S3Server, bucket: str, tmp_path: Path, exchange: Exchange, ws_transport: str
) -> None:
    """Part of the session conformance suite (tests/test_session_conformance.py): on each
    ``WS_TRANSPORT``."""
    assert exchange.refused is not None
    stream, message = exchange.refused
    first = f"{exchange.name}:{exchange.symbols.split(',')[0]}"
    run = exchange.run(
        s3_server,
        bucket,
        tmp_path,
        symbols=first.partition(":")[2],
        streams=f"{first},{stream}",
        rate="100",
        runtime="30",
        WS_TRANSPORT=ws_transport,
    )
    run.assert_exit(1)
    assert message in run.out + run.err
    manifest = run.manifest()
    assert manifest["stop_reason"] == "error"
    assert manifest["config"]["ws_transport"] == ws_transport
    assert message in manifest["error"]
    assert f"rejected the subscription to {stream}:" in manifest["error"]  # named
    if exchange.name == "bybit":
        assert manifest["counters"]["parsed"] == 0  # the whole request was refused


# -- Bitstamp only: reconnect notices (``bts:request_reconnect``) --------------------------------


@pytest.mark.parametrize("ws_transport", sorted(TRANSPORTS))
def test_reconnect_notices_reconnect_and_lose_nothing(
    s3_server: S3Server, bucket: str, tmp_path: Path, ws_transport: str
) -> None:
    """The run is stopped (SIGTERM) once it has connected three times, however long the start
    and the reconnects took on a loaded machine. Part of the session conformance suite
    (tests/test_session_conformance.py): on each ``WS_TRANSPORT``."""
    # a notice at each connection's age 2 s: the second connection lived between two notices
    faults = "shutdown-notice-every=2"
    run, manifest = EXCHANGES["bitstamp"].reconnecting_run(
        s3_server, bucket, tmp_path, faults, WS_TRANSPORT=ws_transport
    )
    assert manifest["config"]["ws_transport"] == ws_transport
    assert len({t["conn"] for t in run.ledger}) >= 2  # the fake saw the client come back
    stored = run.stored()
    assert_stored_exactly_once(run.ledger, stored)
    assert manifest["counters"]["parsed"] == len(stored)
