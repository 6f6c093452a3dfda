"""The fake OKX over real WebSockets on 127.0.0.1, driven by an injected clock.

No test sleeps to synchronise: each waits for the frames it expects (bounded), and trades
appear only when a test advances the FakeClock.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from connectors.base import Ack, ExchangeError, Heartbeat, ReconnectNotice
from connectors.fake.faults import Faults
from connectors.fake.server import FakeExchange
from connectors.okx import OkxProtocol
from engine.clock import FakeClock
from tests.wsclient import (
    Received,
    check_keepalive,
    client,
    next_event,
    read_until,
    subscribe,
    trade_view,
)

SYMBOLS = ["BTC-USDT", "ETH-USDT"]
NOPE = (
    "okx error 60018: Wrong URL or channel:trades,instId:NOPE-USDT doesn't exist. "
    "Please use the correct URL, channel and parameters referring to API document."
)


async def test_subscribe_ack_then_trades_equal_the_ledger() -> None:
    clock, proto = FakeClock(), OkxProtocol()
    async with FakeExchange("okx", rate=200, symbols=SYMBOLS, clock=clock, seed=4) as fx:
        async with client(proto.connection_url(fx.url, SYMBOLS)) as ws:
            assert await subscribe(ws, proto, SYMBOLS, 2) == [
                Ack("subscribe trades:BTC-USDT"),
                Ack("subscribe trades:ETH-USDT"),
            ]
            got = Received()
            for second in range(1, 4):
                clock.advance(1.0)
                await read_until(ws, proto, got, lambda n=second: len(got.trades) >= 200 * n)
        assert len(got.trades) == 600 and got.malformed == [] and got.controls == []
        for symbol in SYMBOLS:
            ids = got.ids(symbol)
            assert ids == list(range(1, len(ids) + 1)) == fx.ledger.sent_ids(symbol)
        assert trade_view(got.trades) == trade_view(list(fx.ledger.trades()))
        assert [t.raw_symbol for t in got.trades] == [t.raw_symbol for t in fx.ledger.trades()]


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


async def test_reconnect_notice_64008() -> None:
    clock, proto = FakeClock(), OkxProtocol()
    faults = Faults(shutdown_notice_every=3)
    async with (
        FakeExchange("okx", rate=10, symbols=SYMBOLS, clock=clock, faults=faults) as fx,
        client(proto.connection_url(fx.url, SYMBOLS)) as ws,
    ):
        await subscribe(ws, proto, ["BTC-USDT"], 1)
        clock.advance(3.0)
        got = Received()
        await read_until(ws, proto, got, lambda: bool(got.controls))
        assert got.controls == [ReconnectNotice("okx notice 64008")]


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


async def test_only_the_public_path_exists() -> None:
    async with FakeExchange("okx", rate=10, symbols=SYMBOLS, clock=FakeClock()) as fx:
        for path in ("", "/ws/v5/private"):
            with pytest.raises(InvalidStatus) as info:
                async with client(f"{fx.url}{path}"):
                    pass
            assert info.value.response.status_code == 404


async def test_malformed_frames_are_malformed_and_not_in_the_ledger() -> None:
    clock, proto = FakeClock(), OkxProtocol()
    faults = Faults(malformed=0.3)
    async with (
        FakeExchange("okx", rate=1000, symbols=SYMBOLS, clock=clock, faults=faults) as fx,
        client(proto.connection_url(fx.url, SYMBOLS)) as ws,
    ):
        await subscribe(ws, proto, SYMBOLS, 2)
        clock.advance(1.0)
        got = Received()
        await read_until(ws, proto, got, lambda: got.frames >= 1000)
        assert len(got.malformed) == fx.ledger.malformed_sent and 200 < len(got.malformed) < 400
        assert trade_view(got.trades) == trade_view(list(fx.ledger.trades()))


@pytest.mark.parametrize("drop_pongs", [False, True])
async def test_session_pings_keep_a_quiet_connection_alive(drop_pongs: bool) -> None:
    """The session's keepalive: answered pings count as traffic; unanswered ones let the
    connection go stale and be replaced."""
    await check_keepalive("okx", OkxProtocol(), SYMBOLS, acks=2, drop_pongs=drop_pongs)
