"""The fake Bybit over real WebSockets on 127.0.0.1, driven by an injected clock.

No test sleeps to synchronise: each waits for the frames it expects (bounded), and trades
appear only when a test advances the FakeClock. The tests it shares with the other fakes
are in tests/test_fake_exchanges.py.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from connectors.base import Ack, ExchangeError, Heartbeat
from connectors.bybit import BybitProtocol
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

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


async def test_subscriptions_beyond_ten_topics_take_several_requests() -> None:
    clock, proto = FakeClock(), BybitProtocol()
    symbols = [f"C{i}USDT" for i in range(12)]
    async with (
        FakeExchange("bybit", rate=10, symbols=symbols, clock=clock) as fx,
        client(proto.connection_url(fx.url, symbols)) as ws,
    ):
        assert await subscribe(ws, proto, symbols, 2) == [
            Ack("subscribe req_id=1"),
            Ack("subscribe req_id=2"),
        ]
        await ws.send(
            orjson.dumps({"op": "subscribe", "args": [f"publicTrade.{s}" for s in symbols]})
        )
        refusal = await next_event(ws, proto)
        assert refusal == ExchangeError("bybit subscribe failed: args size 12 exceeds 10", True)


@pytest.mark.parametrize("drop_pongs", [False, True])
async def test_ping_is_answered_unless_pongs_are_dropped(drop_pongs: bool) -> None:
    proto = BybitProtocol()
    faults = Faults(drop_pongs=drop_pongs)
    async with (
        FakeExchange("bybit", rate=10, symbols=SYMBOLS, clock=FakeClock(), faults=faults) as fx,
        client(proto.connection_url(fx.url, SYMBOLS)) as ws,
    ):
        await ws.send(proto.keepalive_message() or "")
        if not drop_pongs:
            pong = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert pong == {
                "success": True,
                "ret_msg": "pong",
                "conn_id": pong["conn_id"],
                "req_id": "1",
                "op": "ping",
            }
            await ws.send(proto.keepalive_message() or "")
            assert await next_event(ws, proto) == Heartbeat()
        # Requests are answered in order: with the pong dropped the ack comes first.
        (ack,) = await subscribe(ws, proto, ["BTCUSDT"], 1)
        assert isinstance(ack, Ack)


async def test_no_reconnect_notice_even_with_the_fault() -> None:
    clock, proto = FakeClock(), BybitProtocol()
    faults = Faults(shutdown_notice_every=1)
    async with (
        FakeExchange("bybit", rate=100, symbols=SYMBOLS, clock=clock, faults=faults) as fx,
        client(proto.connection_url(fx.url, SYMBOLS)) as ws,
    ):
        await subscribe(ws, proto, SYMBOLS, 1)
        got = Received()
        for second in range(1, 4):
            clock.advance(1.0)
            await read_until(ws, proto, got, lambda n=second: len(got.trades) >= 100 * n)
        assert got.controls == [] and fx.live_connections == 1


async def test_unknown_symbol_is_refused_and_the_connection_stays_open() -> None:
    clock, proto = FakeClock(), BybitProtocol()
    async with (
        FakeExchange("bybit", rate=100, symbols=SYMBOLS, clock=clock) as fx,
        client(proto.connection_url(fx.url, SYMBOLS)) as ws,
    ):
        assert await subscribe(ws, proto, ["NOPEUSDT", "BTCUSDT"], 1) == [
            ExchangeError(
                "bybit subscribe failed: Invalid symbol :[publicTrade.NOPEUSDT]",
                fatal=True,
                symbols=("NOPEUSDT",),
            )
        ]  # nothing of the request is subscribed
        assert await subscribe(ws, proto, ["BTCUSDT"], 1) == [Ack("subscribe req_id=2")]
        clock.advance(1.0)
        got = Received()
        await read_until(ws, proto, got, lambda: len(got.trades) >= 20)
        assert {t.symbol for t in got.trades} == {"BTC-USDT"}
        await ws.send('{"req_id":"u","op":"unsubscribe","args":["publicTrade.BTCUSDT"]}')
        await read_until(ws, proto, got, lambda: bool(got.controls))
        assert got.controls == [Ack("unsubscribe req_id=u")]
        await ws.send("garbage")
        assert await next_event(ws, proto) == ExchangeError(
            "bybit  failed: Invalid request: not JSON", fatal=False
        )
