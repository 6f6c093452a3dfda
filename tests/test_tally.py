"""The per-stream figures a session keeps for the manifest (connectors.tally)."""

from __future__ import annotations

from connectors.tally import StreamTally
from engine.records import Trade


def trade(symbol: str, raw: str, ts_event: int) -> Trade:
    return Trade("binance", symbol, raw, "1", "1.0", "2.0", "buy", ts_event, ts_event * 1000)


def test_trades_are_counted_per_configured_symbol_with_first_and_last_times() -> None:
    tally = StreamTally("binance", ["BTCUSDT", "ETHUSDT", "BNBUSDT"])
    tally.attempting(0.0)
    tally.connected(1.0)
    tally.subscribed(1.5)
    tally.count([trade("BTC-USDT", "BTCUSDT", 10), trade("ETH-USDT", "ETHUSDT", 11)])
    tally.count([trade("BTC-USDT", "BTCUSDT", 12), trade("XRP-USDT", "XRPUSDT", 13)])
    tally.disconnected(4.0)
    figures = tally.figures(now=9.0)
    btc = figures["binance:BTCUSDT:trades"]
    assert (btc["records"], btc["first_ts_event"], btc["last_ts_event"]) == (2, 10, 12)
    eth = figures["binance:ETHUSDT:trades"]
    assert (eth["records"], eth["first_ts_event"], eth["last_ts_event"]) == (1, 11, 11)
    bnb = figures["binance:BNBUSDT:trades"]
    assert (bnb["records"], bnb["first_ts_event"]) == (0, None)
    assert btc["connected_seconds"] == 3.0 and btc["subscribed_seconds"] == 2.5


def test_a_single_symbol_session_counts_whole_batches() -> None:
    tally = StreamTally("binance", ["BTCUSDT"])
    tally.count([trade("BTC-USDT", "BTCUSDT", n) for n in range(5, 9)])
    [figures] = tally.figures(now=0.0).values()
    assert (figures["records"], figures["first_ts_event"], figures["last_ts_event"]) == (4, 5, 8)


def test_an_open_connection_counts_up_to_now() -> None:
    tally = StreamTally("kraken", ["BTC/USD"])
    tally.attempting(0.0)
    tally.connected(0.0)
    tally.subscribed(1.0)
    figures = tally.figures(now=5.0)["kraken:BTC/USD:trades"]
    assert (figures["connected_seconds"], figures["subscribed_seconds"]) == (5.0, 4.0)


def test_subscribed_needs_an_open_connection_and_counts_once() -> None:
    tally = StreamTally("okx", ["BTC-USDT"])
    tally.subscribed(1.0)  # no connection: ignored
    assert not tally.ever_subscribed
    tally.connected(2.0)
    tally.subscribed(3.0)
    tally.subscribed(4.0)
    tally.disconnected(5.0)
    assert tally.ever_subscribed and tally.subscribed_seconds == 2.0


def test_never_subscribed_is_a_failure_only_once_the_stream_had_its_chance() -> None:
    stopped_early = StreamTally("binance", ["BTCUSDT"])
    assert not stopped_early.failed_to_subscribe(now=100.0, patience=10.0)  # never tried
    stopped_early.attempting(0.0)
    assert not stopped_early.failed_to_subscribe(now=1.0, patience=10.0)  # stopped moments in
    assert stopped_early.failed_to_subscribe(now=10.0, patience=10.0)  # a connect that hangs
    refused = StreamTally("kraken", ["BTC/USD"])
    refused.attempting(0.0)
    refused.error("connect failed: ConnectionRefusedError: [Errno 111]")
    assert refused.failed_to_subscribe(now=0.5, patience=10.0)
    served = StreamTally("kraken", ["BTC/USD"])
    served.attempting(0.0)
    served.connected(0.1)
    served.subscribed(0.2)
    served.error("closed by peer: code 1006")
    assert not served.failed_to_subscribe(now=60.0, patience=10.0)


def test_a_feeds_raw_symbol_is_named_as_configured() -> None:
    """Book feeds key symbols the exchange's way; the manifest names streams as configured."""
    from connectors.tally import StreamTally

    tally = StreamTally("bitstamp", ["btcusd"], channel="book")
    assert tally.stream_name(tally.configured("BTCUSD")) == "bitstamp:btcusd:book"
    kraken = StreamTally("kraken", ["XBT/USD"], channel="book")
    assert kraken.configured("XBT/USD") == "XBT/USD"
    assert kraken.configured("ETH/USD") == "ETH/USD"  # not configured: as it is
