"""The fake Bitstamp over real WebSockets on 127.0.0.1, driven by an injected clock.

No test sleeps to synchronise: each waits for the frames it expects (bounded), and trades
appear only when a test advances the FakeClock.
"""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus

from connectors.base import Ack, ExchangeError, Heartbeat, ReconnectNotice
from connectors.bitstamp import BitstampProtocol
from connectors.fake.faults import Faults
from connectors.fake.server import FakeExchange
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

SYMBOLS = ["BTCUSD", "ETHUSD"]


async def test_subscribe_ack_then_trades_equal_the_ledger() -> None:
    clock, proto = FakeClock(), BitstampProtocol()
    async with FakeExchange("bitstamp", rate=200, symbols=SYMBOLS, clock=clock, seed=4) as fx:
        async with client(proto.connection_url(fx.url, SYMBOLS)) as ws:
            assert await subscribe(ws, proto, SYMBOLS, 2) == [
                Ack("subscription_succeeded live_trades_btcusd"),
                Ack("subscription_succeeded live_trades_ethusd"),
            ]
            got = Received()
            for second in range(1, 4):
                clock.advance(1.0)
                await read_until(ws, proto, got, lambda n=second: len(got.trades) >= 200 * n)
        assert len(got.trades) == 600 and got.malformed == [] and got.controls == []
        for symbol in ("BTC-USD", "ETH-USD"):
            ids = got.ids(symbol)
            assert ids == list(range(1, len(ids) + 1)) == fx.ledger.sent_ids(symbol)
        assert trade_view(got.trades) == trade_view(list(fx.ledger.trades()))
        assert {t.raw_symbol for t in got.trades} == {"btcusd", "ethusd"}  # as the channel says


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


async def test_reconnect_notice() -> None:
    clock, proto = FakeClock(), BitstampProtocol()
    faults = Faults(shutdown_notice_every=3)
    async with (
        FakeExchange("bitstamp", rate=10, symbols=SYMBOLS, clock=clock, faults=faults) as fx,
        client(proto.connection_url(fx.url, SYMBOLS)) as ws,
    ):
        await subscribe(ws, proto, ["BTCUSD"], 1)
        clock.advance(3.0)
        got = Received()
        await read_until(ws, proto, got, lambda: bool(got.controls))
        assert got.controls == [ReconnectNotice("bts:request_reconnect")]


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


async def test_only_the_root_path_exists() -> None:
    async with FakeExchange("bitstamp", rate=10, symbols=SYMBOLS, clock=FakeClock()) as fx:
        with pytest.raises(InvalidStatus) as info:
            async with client(f"{fx.url}/ws"):
                pass
        assert info.value.response.status_code == 404


async def test_malformed_frames_are_malformed_and_not_in_the_ledger() -> None:
    clock, proto = FakeClock(), BitstampProtocol()
    faults = Faults(malformed=0.3)
    async with (
        FakeExchange("bitstamp", rate=1000, symbols=SYMBOLS, clock=clock, faults=faults) as fx,
        client(proto.connection_url(fx.url, SYMBOLS)) as ws,
    ):
        await subscribe(ws, proto, SYMBOLS, 2)
        clock.advance(1.0)
        got = Received()
        await read_until(ws, proto, got, lambda: got.frames >= 1000)
        assert len(got.malformed) == fx.ledger.malformed_sent and 200 < len(got.malformed) < 400
        assert trade_view(got.trades) == trade_view(list(fx.ledger.trades()))


@pytest.mark.parametrize("drop_pongs", [False, True])
async def test_session_heartbeats_keep_a_quiet_connection_alive(drop_pongs: bool) -> None:
    """The session's keepalive: answered heartbeats count as traffic; unanswered ones let the
    connection go stale and be replaced."""
    await check_keepalive("bitstamp", BitstampProtocol(), SYMBOLS, acks=2, drop_pongs=drop_pongs)
