"""The fake Kraken v2 over real WebSockets on 127.0.0.1, driven by an injected clock.

No test sleeps to synchronise: each waits for what it expects (frames, readiness, ticks) under
``asyncio.timeout``. Trades appear only when a test advances the FakeClock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from connectors.base import Ack, ExchangeError, Heartbeat
from connectors.fake.faults import Faults
from connectors.fake.server import FakeExchange
from connectors.kraken import KrakenProtocol
from engine.clock import FakeClock
from tests.wsclient import (
    WAIT,
    Received,
    check_malformed,
    client,
    next_event,
    read_until,
    trade_view,
)

SYMBOLS = ["BTC/USD", "ETH/USD"]


@contextlib.asynccontextmanager
async def kraken_and_client(**options: Any) -> AsyncIterator[tuple[FakeExchange, ClientConnection]]:
    """The fake Kraken (``FakeExchange`` ``options``) and a client on its ``/v2`` endpoint."""
    async with FakeExchange("kraken", **options) as fx, client(f"{fx.url}/v2") as ws:
        yield fx, ws


async def connect_and_subscribe(
    fx: FakeExchange, ws: ClientConnection, proto: KrakenProtocol, *pairs: str
) -> None:
    """Expect the status update, subscribe to ``pairs`` and expect one ack each."""
    assert await next_event(ws, proto) == Heartbeat()
    (request,) = proto.subscribe_messages(list(pairs))
    await ws.send(request)
    for pair in pairs:
        assert await next_event(ws, proto) == Ack(f"subscribe {pair} req_id=1")


async def test_status_acks_and_exact_numbers_equal_the_ledger() -> None:
    clock = FakeClock()
    proto = KrakenProtocol()
    async with kraken_and_client(rate=200, symbols=SYMBOLS, clock=clock, seed=4) as (fx, ws):
        status = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert status["channel"] == "status" and status["data"][0]["system"] == "online"
        (request,) = proto.subscribe_messages(SYMBOLS)
        await ws.send(request)
        for pair in SYMBOLS:
            ack = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert ack["result"] == {"channel": "trade", "snapshot": False, "symbol": pair}
            assert (ack["method"], ack["success"], ack["req_id"]) == ("subscribe", True, 1)
        await fx.wait_tick()  # the quiet period starts now: the heartbeat comes before the trades
        clock.advance(1.0)
        frames = [await asyncio.wait_for(ws.recv(), WAIT) for _ in range(1 + 200)]
        assert proto.parse(frames[0], 0) == Heartbeat()  # a quiet second, then this second's trades
        frames = frames[1:]
        assert all('"type":"update"' in f for f in frames)
        got = [t for f in frames for t in proto.parse(f, 0)]  # type: ignore[union-attr]
        assert trade_view(got) == trade_view(list(fx.ledger.trades()))
        for frame, trade in zip(frames, got, strict=True):
            # a JSON number with the market's 8 decimals, never a float's shortest repr
            assert f'"price":{trade.price},"qty":{trade.size},' in frame
        for pair, symbol in (("BTC/USD", "BTC-USD"), ("ETH/USD", "ETH-USD")):
            mine = [t for t in got if t.raw_symbol == pair]
            assert {t.symbol for t in mine} == {symbol}
            assert [int(t.trade_id) for t in mine] == list(range(1, len(mine) + 1))


async def test_heartbeat_after_a_quiet_second() -> None:
    clock = FakeClock()
    proto = KrakenProtocol()
    async with kraken_and_client(rate=0.4, symbols=["BTC/USD"], clock=clock) as (fx, ws):
        await connect_and_subscribe(fx, ws, proto, "BTC/USD")
        await fx.wait_tick()  # the quiet period starts with the subscription
        clock.advance(1.0)  # 0.4 trades are due: none yet
        assert await next_event(ws, proto) == Heartbeat()
        clock.advance(1.5)  # one trade (t = 2.5 s), then quiet again
        got = Received()
        await read_until(ws, proto, got, lambda: len(got.trades) == 1)
        clock.advance(1.0)
        assert await next_event(ws, proto) == Heartbeat()


@pytest.mark.parametrize("drop", [False, True])
async def test_ping_pong_and_the_drop_pongs_fault(drop: bool) -> None:
    proto = KrakenProtocol()
    async with kraken_and_client(
        rate=10, symbols=["BTC/USD"], clock=FakeClock(), faults=Faults(drop_pongs=drop)
    ) as (_fx, ws):
        assert await next_event(ws, proto) == Heartbeat()
        await ws.send(proto.subscribe_messages(["BTC/USD"])[0])
        assert await next_event(ws, proto) == Ack("subscribe BTC/USD req_id=1")
        await ws.send(proto.keepalive_message() or "")
        await ws.send('{"method":"unsubscribe","params":{"channel":"trade","symbol":["BTC/USD"]}}')
        first = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if drop:  # requests are answered in order: no pong came before this response
            assert first["method"] == "unsubscribe" and first["success"] is True
        else:
            assert (first["method"], first["req_id"]) == ("pong", 2)
            assert proto.parse(orjson.dumps(first), 0) == Heartbeat()


async def test_unknown_pair_is_refused_the_connection_stays_and_the_rest_flows() -> None:
    clock = FakeClock()
    proto = KrakenProtocol()
    async with kraken_and_client(rate=20, symbols=["BTC/USD"], clock=clock) as (fx, ws):
        assert await next_event(ws, proto) == Heartbeat()
        await ws.send(proto.subscribe_messages(["NOPE/USD", "BTC/USD"])[0])
        refused = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert refused["success"] is False and refused["symbol"] == "NOPE/USD"
        assert proto.parse(orjson.dumps(refused), 0) == ExchangeError(
            "kraken subscribe failed NOPE/USD: Currency pair not supported NOPE/USD",
            fatal=True,
            symbols=("NOPE/USD",),
        )
        assert await next_event(ws, proto) == Ack("subscribe BTC/USD req_id=1")
        await ws.send(proto.subscribe_messages(["BTC/USD"])[0])
        again = await next_event(ws, proto)
        assert again == ExchangeError(
            "kraken subscribe failed BTC/USD: Already subscribed", symbols=("BTC/USD",)
        )
        clock.advance(1.0)
        got = Received()
        await read_until(ws, proto, got, lambda: len(got.trades) >= 20)
        assert got.ids("BTC/USD") == list(range(1, 21)) == fx.ledger.sent_ids("BTC/USD")


async def test_other_requests_are_answered_with_errors() -> None:
    proto = KrakenProtocol()
    async with kraken_and_client(rate=10, symbols=["BTC/USD"], clock=FakeClock()) as (_fx, ws):
        assert await next_event(ws, proto) == Heartbeat()
        await ws.send("garbage")
        await ws.send('{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"]}}')
        await ws.send('{"method":"add_order","req_id":9}')
        await ws.send('{"method":"unsubscribe","params":{"channel":"trade","symbol":["BTC/USD"]}}')
        events = [await next_event(ws, proto) for _ in range(4)]
        assert all(isinstance(e, ExchangeError) for e in events), events
        assert [e.fatal for e in events] == [False, True, False, False]
        assert "Subscription Not Found" in events[3].message


async def test_malformed_fault_frames_are_all_rejected_by_the_parser() -> None:
    clock = FakeClock()
    proto = KrakenProtocol()
    async with kraken_and_client(
        rate=500, symbols=["BTC/USD"], clock=clock, faults=Faults(malformed=0.3)
    ) as (fx, ws):
        await connect_and_subscribe(fx, ws, proto, "BTC/USD")
        await fx.wait_tick()  # the quiet period starts now: the heartbeat comes before the trades
        clock.advance(1.0)
        got = Received()
        await read_until(ws, proto, got, lambda: len(got.trades) + len(got.malformed) >= 500)
        assert got.controls == [Heartbeat()] and got.frames == 1 + 500
        check_malformed(got, fx.ledger)


async def test_paths() -> None:
    proto = KrakenProtocol()
    async with FakeExchange("kraken", rate=10, symbols=["BTC/USD"], clock=FakeClock()) as fx:
        for path in ("/v2", "/v2/", "", "/"):  # "/" is an alias, for KRAKEN_WS_URL=<fake url>
            async with client(fx.url + path) as ws:
                assert await next_event(ws, proto) == Heartbeat()
        for path in ("/v1", "/ws"):
            with pytest.raises(InvalidStatus) as info:
                async with client(fx.url + path):
                    pass
            assert info.value.response.status_code == 404
