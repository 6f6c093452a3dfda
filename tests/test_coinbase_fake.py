"""The fake Coinbase over real WebSockets on 127.0.0.1, driven by an injected clock: matches
and last_match, heartbeats, refusals, paths (its disconnect gap: tests/test_fake_exchanges.py).
Each test waits for what it expects, bounded; trades appear only when it advances the clock.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from connectors.base import Ack, ExchangeError
from connectors.coinbase import CoinbaseProtocol
from connectors.fake.faults import Faults
from connectors.fake.server import FakeExchange
from engine.clock import FakeClock
from engine.records import Trade
from tests.wsclient import (
    WAIT,
    Received,
    check_malformed,
    client,
    next_event,
    read_until,
    trade_view,
)

SYMBOLS = ["BTC-USD", "ETH-USD"]


async def subscribe(ws: ClientConnection, *products: str) -> None:
    (request,) = CoinbaseProtocol().subscribe_messages(list(products))
    await ws.send(request)


async def read_raw(ws: ClientConnection, count: int) -> list[dict[str, object]]:
    """The next ``count`` frames as JSON objects."""
    out = []
    async with asyncio.timeout(WAIT):
        for _ in range(count):
            out.append(orjson.loads(await ws.recv()))
    return out


async def test_subscribe_last_match_then_contiguous_matches_equal_the_ledger() -> None:
    clock = FakeClock()
    async with (
        FakeExchange("coinbase", rate=200, symbols=SYMBOLS, clock=clock, seed=4) as fx,
        client(fx.url) as ws,
    ):
        await fx.wait_ready(1)
        await subscribe(ws, *SYMBOLS)
        (ack,) = await read_raw(ws, 1)
        assert ack == {
            "type": "subscriptions",
            "channels": [
                {"name": "matches", "product_ids": SYMBOLS},
                {"name": "heartbeat", "product_ids": SYMBOLS},
            ],
        }
        await fx.wait_tick()  # the heartbeats of the second the subscription came in
        beats = await read_raw(ws, 2)
        assert [(f["type"], f["product_id"]) for f in beats] == [("heartbeat", p) for p in SYMBOLS]
        assert {f["time"] for f in beats} == {"2023-11-14T22:13:20.000000Z"}
        clock.advance(1.0)
        frames = await read_raw(ws, 200 + 2)  # 200 trades and this second's 2 heartbeats
        kinds = [f["type"] for f in frames]
        assert kinds.count("heartbeat") == 2 and kinds.count("last_match") == 2
        for product in SYMBOLS:
            mine = [
                f for f in frames if f.get("product_id") == product and f["type"] != "heartbeat"
            ]
            assert mine[0]["type"] == "last_match"  # once per product, first
            assert {f["type"] for f in mine[1:]} == {"match"}
            assert [f["trade_id"] for f in mine] == list(range(1, len(mine) + 1))
        proto = CoinbaseProtocol()
        got: list[Trade] = []
        for frame in frames:
            result = proto.parse(orjson.dumps(frame), 0)
            if isinstance(result, tuple):
                got.extend(result)
        assert trade_view(got) == trade_view(list(fx.ledger.trades()))
        assert {t.symbol for t in got} == {"BTC-USD", "ETH-USD"}
        for trade, frame in zip(got, (f for f in frames if f["type"] != "heartbeat"), strict=True):
            assert trade.side != frame["side"]  # the wire carries the maker's side


async def test_heartbeat_per_product_per_second_with_last_trade_id() -> None:
    clock = FakeClock()
    async with (
        FakeExchange("coinbase", rate=10, symbols=["ETH-USD"], clock=clock) as fx,
        client(fx.url) as ws,
    ):
        await fx.wait_ready(1)
        await ws.send(
            '{"type":"subscribe","channels":[{"name":"heartbeat","product_ids":["ETH-USD"]}]}'
        )
        assert CoinbaseProtocol().parse(await ws.recv(), 0) == Ack("subscriptions")
        await fx.wait_tick()  # the heartbeat of the second the subscription came in
        for second in (0, 1, 2):
            if second:
                clock.advance(1.0)
            (beat,) = await read_raw(ws, 1)  # no matches subscribed: only heartbeats
            assert beat["type"] == "heartbeat" and beat["product_id"] == "ETH-USD"
            assert beat["last_trade_id"] == 0
            assert beat["time"] == f"2023-11-14T22:13:2{second}.000000Z"
        await ws.send('{"type":"subscribe","product_ids":["ETH-USD"],"channels":["matches"]}')
        await read_raw(ws, 1)
        clock.advance(1.0)
        frames = await read_raw(ws, 11)
        assert [f["type"] for f in frames] == ["heartbeat", "last_match"] + ["match"] * 9
        assert [f["trade_id"] for f in frames[1:]] == list(range(21, 31))
        clock.advance(1.0)
        beat, *_ = await read_raw(ws, 11)
        assert beat["type"] == "heartbeat" and beat["last_trade_id"] == 30


async def test_unknown_product_is_refused_and_closed() -> None:
    async with (
        FakeExchange("coinbase", rate=10, symbols=["BTC-USD"], clock=FakeClock()) as fx,
        client(fx.url) as ws,
    ):
        await subscribe(ws, "BTC-USD", "NOPE-USD")
        event = await next_event(ws, CoinbaseProtocol())
        assert event == ExchangeError(
            "coinbase error: Failed to subscribe: NOPE-USD is not a valid product",
            fatal=True,
            symbols=("NOPE-USD",),
        )
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT)
        assert ws.close_code == 1008


async def test_unknown_channel_is_refused_and_closed() -> None:
    async with (
        FakeExchange("coinbase", rate=10, symbols=["BTC-USD"], clock=FakeClock()) as fx,
        client(fx.url) as ws,
    ):
        await ws.send('{"type":"subscribe","product_ids":["BTC-USD"],"channels":["full"]}')
        event = await next_event(ws, CoinbaseProtocol())
        assert isinstance(event, ExchangeError) and event.fatal
        assert "full is not a valid channel" in event.message
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT)


async def test_bad_request_is_answered_and_the_connection_stays_open() -> None:
    async with (
        FakeExchange("coinbase", rate=10, symbols=["BTC-USD"], clock=FakeClock()) as fx,
        client(fx.url) as ws,
    ):
        proto = CoinbaseProtocol()
        await ws.send("garbage")
        assert await next_event(ws, proto) == ExchangeError(
            "coinbase error: Malformed JSON: the message is not JSON", fatal=False
        )
        await ws.send('{"type":"ping"}')  # Coinbase has no application-level ping
        error = await next_event(ws, proto)
        assert isinstance(error, ExchangeError) and not error.fatal
        await subscribe(ws, "BTC-USD")
        assert await next_event(ws, proto) == Ack("subscriptions")


async def test_unsubscribe_then_subscribe_again_starts_with_last_match() -> None:
    clock = FakeClock()
    async with (
        FakeExchange("coinbase", rate=20, symbols=["BTC-USD"], clock=clock) as fx,
        client(fx.url) as ws,
    ):
        await ws.send('{"type":"subscribe","product_ids":["BTC-USD"],"channels":["matches"]}')
        await read_raw(ws, 1)
        clock.advance(1.0)
        first = await read_raw(ws, 20)
        assert [f["type"] for f in first] == ["last_match"] + ["match"] * 19
        await ws.send('{"type":"unsubscribe","product_ids":["BTC-USD"],"channels":["matches"]}')
        (ack,) = await read_raw(ws, 1)
        assert ack == {"type": "subscriptions", "channels": []}
        clock.advance(1.0)  # 20 trades nobody is subscribed to
        await fx.wait_tick()
        await ws.send('{"type":"subscribe","product_ids":["BTC-USD"],"channels":["matches"]}')
        await read_raw(ws, 1)
        clock.advance(1.0)
        again = await read_raw(ws, 20)
        assert [f["type"] for f in again] == ["last_match"] + ["match"] * 19
        assert again[0]["trade_id"] == 41
        assert fx.ledger.sent_ids("BTC-USD") == list(range(1, 21)) + list(range(41, 61))


async def test_malformed_fault_frames_are_all_rejected_by_the_parser() -> None:
    clock = FakeClock()
    async with (
        FakeExchange(
            "coinbase", rate=500, symbols=["BTC-USD"], clock=clock, faults=Faults(malformed=0.3)
        ) as fx,
        client(fx.url) as ws,
    ):
        proto = CoinbaseProtocol()
        await ws.send('{"type":"subscribe","product_ids":["BTC-USD"],"channels":["matches"]}')
        await next_event(ws, proto)
        clock.advance(1.0)
        got = Received()
        await read_until(ws, proto, got, lambda: got.frames >= 500)
        check_malformed(got, fx.ledger)


async def test_only_the_root_path_exists() -> None:
    async with FakeExchange("coinbase", rate=10, symbols=["BTC-USD"], clock=FakeClock()) as fx:
        async with client(fx.url + "/") as ws:
            await subscribe(ws, "BTC-USD")
            assert await next_event(ws, CoinbaseProtocol()) == Ack("subscriptions")
        with pytest.raises(InvalidStatus) as info:
            async with client(f"{fx.url}/ws"):
                pass
        assert info.value.response.status_code == 404
