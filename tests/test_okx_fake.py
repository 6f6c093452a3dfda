"""The fake OKX over real WebSockets on 127.0.0.1, driven by an injected clock.

No test sleeps to synchronise: each waits for the frames it expects (bounded), and trades
appear only when a test advances the FakeClock. The tests it shares with the other fakes
are in tests/test_fake_exchanges.py.
"""

from __future__ import annotations

import asyncio

import pytest

from connectors.base import Ack, ExchangeError, Heartbeat
from connectors.fake.faults import Faults
from connectors.fake.server import FakeExchange
from connectors.okx import OkxProtocol
from engine.clock import FakeClock
from tests.wsclient import (
    Received,
    client,
    next_event,
    read_until,
    subscribe,
)

SYMBOLS = ["BTC-USDT", "ETH-USDT"]
NOPE = (
    "okx error 60018: Wrong URL or channel:trades,instId:NOPE-USDT doesn't exist. "
    "Please use the correct URL, channel and parameters referring to API document."
)


@pytest.mark.parametrize("drop_pongs", [False, True])
async def test_text_ping_is_answered_unless_pongs_are_dropped(drop_pongs: bool) -> None:
    proto = OkxProtocol()
    faults = Faults(drop_pongs=drop_pongs)
    async with (
        FakeExchange("okx", rate=10, symbols=SYMBOLS, clock=FakeClock(), faults=faults) as fx,
        client(proto.connection_url(fx.url, SYMBOLS)) as ws,
    ):
        await ws.send("ping")
        if not drop_pongs:
            assert await asyncio.wait_for(ws.recv(), 10) == "pong"  # bare text, not JSON
            await ws.send(proto.keepalive_message() or "")
            assert await next_event(ws, proto) == Heartbeat()
        # Requests are answered in order: with the pong dropped the ack comes first.
        assert await subscribe(ws, proto, ["BTC-USDT"], 1) == [Ack("subscribe trades:BTC-USDT")]


async def test_unknown_instrument_is_refused_and_the_connection_stays_open() -> None:
    clock, proto = FakeClock(), OkxProtocol()
    async with (
        FakeExchange("okx", rate=100, symbols=SYMBOLS, clock=clock) as fx,
        client(proto.connection_url(fx.url, SYMBOLS)) as ws,
    ):
        # Answered per argument: the unknown one is refused, the known one subscribed.
        assert await subscribe(ws, proto, ["NOPE-USDT", "BTC-USDT"], 2) == [
            ExchangeError(NOPE, fatal=True, symbols=("NOPE-USDT",)),
            Ack("subscribe trades:BTC-USDT"),
        ]
        clock.advance(1.0)
        got = Received()
        await read_until(ws, proto, got, lambda: len(got.trades) >= 20)
        assert {t.symbol for t in got.trades} == {"BTC-USDT"}
        await ws.send('{"op":"unsubscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}')
        await read_until(ws, proto, got, lambda: bool(got.controls))
        assert got.controls == [Ack("unsubscribe trades:BTC-USDT")]
        await ws.send('{"op":"subscribe"}')
        assert await next_event(ws, proto) == ExchangeError(
            'okx error 60012: Invalid request: {"op":"subscribe"}', fatal=True
        )
