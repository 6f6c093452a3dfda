"""The fake Bitstamp over real WebSockets on 127.0.0.1, driven by an injected clock.

No test sleeps to synchronise: each waits for the frames it expects (bounded), and trades
appear only when a test advances the FakeClock. The tests it shares with the other fakes
are in tests/test_fake_exchanges.py.
"""

from __future__ import annotations

import pytest

from connectors.base import Ack, ExchangeError, Heartbeat
from connectors.bitstamp import BitstampProtocol
from connectors.fake.faults import Faults
from connectors.fake.server import FakeExchange
from engine.clock import FakeClock
from tests.wsclient import (
    Received,
    client,
    next_event,
    read_until,
    subscribe,
)

SYMBOLS = ["BTCUSD", "ETHUSD"]


@pytest.mark.parametrize("drop_pongs", [False, True])
async def test_heartbeat_is_answered_unless_pongs_are_dropped(drop_pongs: bool) -> None:
    proto = BitstampProtocol()
    faults = Faults(drop_pongs=drop_pongs)
    async with (
        FakeExchange("bitstamp", rate=10, symbols=SYMBOLS, clock=FakeClock(), faults=faults) as fx,
        client(proto.connection_url(fx.url, SYMBOLS)) as ws,
    ):
        await ws.send(proto.keepalive_message() or "")
        if not drop_pongs:
            assert await next_event(ws, proto) == Heartbeat()
        # Requests are answered in order: with the pong dropped the ack comes first.
        assert await subscribe(ws, proto, ["BTCUSD"], 1) == [
            Ack("subscription_succeeded live_trades_btcusd")
        ]


async def test_unknown_channel_is_refused_and_the_connection_stays_open() -> None:
    clock, proto = FakeClock(), BitstampProtocol()
    async with (
        FakeExchange("bitstamp", rate=100, symbols=SYMBOLS, clock=clock) as fx,
        client(proto.connection_url(fx.url, SYMBOLS)) as ws,
    ):
        (refusal,) = await subscribe(ws, proto, ["NOPEUSD"], 1)
        assert refusal == ExchangeError("bitstamp error: Invalid channel provided.", fatal=True)
        await ws.send('{"event":"bts:subscribe","data":{"channel":"live_trades_BTCUSD"}}')
        assert isinstance(await next_event(ws, proto), ExchangeError)  # channels are lower case
        assert await subscribe(ws, proto, ["btcusd"], 1) == [
            Ack("subscription_succeeded live_trades_btcusd")
        ]
        clock.advance(1.0)
        got = Received()
        await read_until(ws, proto, got, lambda: len(got.trades) >= 20)
        assert {t.symbol for t in got.trades} == {"BTC-USD"}
        await ws.send('{"event":"bts:unsubscribe","data":{"channel":"live_trades_btcusd"}}')
        await read_until(ws, proto, got, lambda: bool(got.controls))
        assert got.controls == [Ack("unsubscription_succeeded live_trades_btcusd")]
        await ws.send("garbage")
        assert await next_event(ws, proto) == ExchangeError(
            "bitstamp error: Incorrect JSON format.", fatal=True
        )
