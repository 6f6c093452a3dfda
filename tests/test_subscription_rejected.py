"""A rejected subscription names the symbol (issue 12): the one the exchange's message names,
spelled as ``STREAMS`` spells it, or every symbol of the refused connection when the message
names none. The protocols' parsing of each exchange's refusal is tested in
``tests/test_*_protocol.py``; here the rule and real sessions against the fake exchange."""

from __future__ import annotations

import asyncio

import pytest

from connectors.base import ExchangeError, rejected_symbols
from connectors.fake.faults import Faults
from connectors.fake.server import FakeExchange
from connectors.gaps import GapTracker
from connectors.registry import get_protocol
from connectors.session import InvalidFrameLog, WebSocketSession
from engine.batchqueue import BatchQueue
from engine.clock import FakeClock
from engine.errors import SubscriptionRejected
from engine.records import Trade
from engine.retry import RetryPolicy
from engine.stats import Counters


@pytest.mark.parametrize(
    ("named", "connection", "expected"),
    [
        (("NOPEUSDT",), ["BTCUSDT", "NOPEUSDT"], ("NOPEUSDT",)),
        (("nopeusd",), ["BTCUSD", "NOPEUSD"], ("NOPEUSD",)),  # Bitstamp: channels lower case
        ((), ["BTCUSDT", "NOPEUSDT"], ("BTCUSDT", "NOPEUSDT")),  # unknown: the connection's
        (("XYZ",), ["BTCUSDT"], ("XYZ",)),  # not ours: as the exchange said it
    ],
)
def test_the_refused_symbols_are_those_named_else_the_connections(
    named: tuple[str, ...], connection: list[str], expected: tuple[str, ...]
) -> None:
    event = ExchangeError("refused", fatal=True, symbols=named)
    assert rejected_symbols(event, connection) == expected


def test_the_error_names_the_streams() -> None:
    err = SubscriptionRejected("okx", "okx error 60018: ...", ["NOPE-USDT"])
    assert str(err) == "okx rejected the subscription to okx:NOPE-USDT: okx error 60018: ..."
    assert err.streams == ("okx:NOPE-USDT",)
    assert str(SubscriptionRejected("okx", "m")) == "okx rejected the subscription: m"


async def _rejection(
    exchange: str, market: list[str], subscribed: list[str], faults: Faults | None = None
) -> SubscriptionRejected:
    """Run a session for ``subscribed`` against a fake ``exchange`` trading ``market``; return
    the rejection that ends it."""
    clock = FakeClock()
    counters = Counters()
    async with FakeExchange(
        exchange, rate=10, symbols=market, clock=clock, faults=faults or Faults()
    ) as fx:
        session = WebSocketSession(
            get_protocol(exchange),
            fx.url,
            subscribed,
            BatchQueue[Trade](1000),
            counters=counters,
            gaps=GapTracker(),
            invalid_log=InvalidFrameLog(counters),
            backoff=RetryPolicy(initial=0.01, cap=0.02),
            clock=clock,
        )
        with pytest.raises(SubscriptionRejected) as info:
            async with asyncio.timeout(30):
                await session.run(asyncio.Event())
    return info.value


async def test_binance_names_no_symbol_so_the_connections_are_named() -> None:
    err = await _rejection(
        "binance", ["BTCUSDT"], ["BTCUSDT", "NOPEUSDT"], Faults(reject_unknown=True)
    )
    assert err.streams == ("binance:BTCUSDT", "binance:NOPEUSDT")
    assert "binance error 2: Invalid symbol" in str(err)


@pytest.mark.parametrize(
    ("exchange", "market", "subscribed", "refused"),
    [
        ("kraken", ["BTC/USD"], ["BTC/USD", "NOPE/USD"], "NOPE/USD"),
        ("okx", ["BTC-USDT"], ["BTC-USDT", "NOPE-USDT"], "NOPE-USDT"),
        ("bybit", ["BTCUSDT"], ["BTCUSDT", "NOPEUSDT"], "NOPEUSDT"),
        ("coinbase", ["BTC-USD"], ["BTC-USD", "NOPE-USD"], "NOPE-USD"),
    ],
)
async def test_the_symbol_the_exchange_refused_is_named(
    exchange: str, market: list[str], subscribed: list[str], refused: str
) -> None:
    err = await _rejection(exchange, market, subscribed)
    assert err.symbols == (refused,)
    assert str(err).startswith(f"{exchange} rejected the subscription to {exchange}:{refused}: ")
