"""The fake Bitstamp, OKX and Bybit over real WebSockets on 127.0.0.1, driven by an injected
clock: the tests they share once, parametrized by :data:`FAKES`, then what each does alone.

No test sleeps to synchronise: each waits for the frames it expects (bounded), and trades
appear only when a test advances the FakeClock. At the end, Coinbase's and Kraken's gap across
a disconnect; the rest of their fakes' tests are in tests/test_coinbase_fake.py and
tests/test_kraken_fake.py, Binance's in tests/test_fake_server.py. The session's keepalive
against these fakes is in tests/test_session_conformance.py (on both transports).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from connectors.base import Ack, ExchangeError, Heartbeat, ReconnectNotice
from connectors.bitstamp import BitstampProtocol
from connectors.bybit import BybitProtocol
from connectors.fake.faults import Faults
from connectors.fake.server import FakeExchange
from connectors.okx import OkxProtocol
from connectors.registry import get_protocol
from engine.clock import FakeClock
from tests.wsclient import (
    Received,
    client,
    next_event,
    read_until,
    subscribe,
    trade_view,
)


@dataclass(frozen=True)
class Fake:
    """What differs between the fakes in these tests."""

    exchange: str
    symbols: list[str]
    acks: list[Ack]
    """The answers to a subscription to :attr:`symbols`."""
    missing_paths: tuple[str, ...]
    """Paths the fake answers with HTTP 404."""
    raw_symbols: set[str] | None = None
    """The raw symbols of the trades read (None: the ledger's, in order)."""
    notice: ReconnectNotice | None = None
    """The reconnect notice of the ``shutdown_notice_every`` fault (None: see its own test)."""


FAKES = {
    fake.exchange: fake
    for fake in [
        Fake(
            "bitstamp",
            ["BTCUSD", "ETHUSD"],
            [
                Ack("subscription_succeeded live_trades_btcusd"),
                Ack("subscription_succeeded live_trades_ethusd"),
            ],
            missing_paths=("/ws",),
            raw_symbols={"btcusd", "ethusd"},  # as the channel says
            notice=ReconnectNotice("bts:request_reconnect"),
        ),
        Fake(
            "okx",
            ["BTC-USDT", "ETH-USDT"],
            [Ack("subscribe trades:BTC-USDT"), Ack("subscribe trades:ETH-USDT")],
            missing_paths=("", "/ws/v5/private"),
            notice=ReconnectNotice("okx notice 64008"),
        ),
        Fake(
            "bybit",
            ["BTCUSDT", "ETHUSDT"],
            [Ack("subscribe req_id=1")],
            missing_paths=("", "/v5/public/linear"),
        ),
    ]
}
per_fake = pytest.mark.parametrize("fake", list(FAKES.values()), ids=list(FAKES))


@per_fake
async def test_subscribe_ack_then_trades_equal_the_ledger(fake: Fake) -> None:
    clock, proto, symbols = FakeClock(), get_protocol(fake.exchange), fake.symbols
    async with FakeExchange(fake.exchange, rate=200, symbols=symbols, clock=clock, seed=4) as fx:
        async with client(proto.connection_url(fx.url, symbols)) as ws:
            assert await subscribe(ws, proto, symbols, len(fake.acks)) == fake.acks
            got = Received()
            for second in range(1, 4):
                clock.advance(1.0)
                await read_until(ws, proto, got, lambda n=second: len(got.trades) >= 200 * n)
        assert len(got.trades) == 600 and got.malformed == [] and got.controls == []
        for symbol in {t.symbol for t in fx.ledger.trades()}:
            ids = got.ids(symbol)
            assert ids == list(range(1, len(ids) + 1)) == fx.ledger.sent_ids(symbol)
        assert len({t.symbol for t in got.trades}) == len(symbols)
        assert trade_view(got.trades) == trade_view(list(fx.ledger.trades()))
        if fake.raw_symbols is not None:
            assert {t.raw_symbol for t in got.trades} == fake.raw_symbols
        else:
            assert [t.raw_symbol for t in got.trades] == [t.raw_symbol for t in fx.ledger.trades()]


@pytest.mark.parametrize("fake", [f for f in FAKES.values() if f.notice], ids=lambda f: f.exchange)
async def test_reconnect_notice(fake: Fake) -> None:
    clock, proto = FakeClock(), get_protocol(fake.exchange)
    faults = Faults(shutdown_notice_every=3)
    async with (
        FakeExchange(
            fake.exchange, rate=10, symbols=fake.symbols, clock=clock, faults=faults
        ) as fx,
        client(proto.connection_url(fx.url, fake.symbols)) as ws,
    ):
        await subscribe(ws, proto, fake.symbols[:1], 1)
        clock.advance(3.0)
        got = Received()
        await read_until(ws, proto, got, lambda: bool(got.controls))
        assert got.controls == [fake.notice]


@per_fake
async def test_only_the_exchanges_path_exists(fake: Fake) -> None:
    async with FakeExchange(fake.exchange, rate=10, symbols=fake.symbols, clock=FakeClock()) as fx:
        for path in fake.missing_paths:
            with pytest.raises(InvalidStatus) as info:
                async with client(f"{fx.url}{path}"):
                    pass
            assert info.value.response.status_code == 404


@per_fake
async def test_malformed_frames_are_malformed_and_not_in_the_ledger(fake: Fake) -> None:
    clock, proto, symbols = FakeClock(), get_protocol(fake.exchange), fake.symbols
    faults = Faults(malformed=0.3)
    async with (
        FakeExchange(fake.exchange, rate=1000, symbols=symbols, clock=clock, faults=faults) as fx,
        client(proto.connection_url(fx.url, symbols)) as ws,
    ):
        await subscribe(ws, proto, symbols, len(fake.acks))
        clock.advance(1.0)
        got = Received()
        await read_until(ws, proto, got, lambda: got.frames >= 1000)
        assert len(got.malformed) == fx.ledger.malformed_sent and 200 < len(got.malformed) < 400
        assert trade_view(got.trades) == trade_view(list(fx.ledger.trades()))


# -- Bitstamp only --------------------------------------------------------------------------------

BITSTAMP_SYMBOLS = FAKES["bitstamp"].symbols


@pytest.mark.parametrize("drop_pongs", [False, True])
async def test_heartbeat_is_answered_unless_pongs_are_dropped(drop_pongs: bool) -> None:
    proto = BitstampProtocol()
    faults = Faults(drop_pongs=drop_pongs)
    async with (
        FakeExchange(
            "bitstamp", rate=10, symbols=BITSTAMP_SYMBOLS, clock=FakeClock(), faults=faults
        ) as fx,
        client(proto.connection_url(fx.url, BITSTAMP_SYMBOLS)) as ws,
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
        FakeExchange("bitstamp", rate=100, symbols=BITSTAMP_SYMBOLS, clock=clock) as fx,
        client(proto.connection_url(fx.url, BITSTAMP_SYMBOLS)) as ws,
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


# -- OKX only -------------------------------------------------------------------------------------

OKX_SYMBOLS = FAKES["okx"].symbols
OKX_NOPE = (
    "okx error 60018: Wrong URL or channel:trades,instId:NOPE-USDT doesn't exist. "
    "Please use the correct URL, channel and parameters referring to API document."
)


@pytest.mark.parametrize("drop_pongs", [False, True])
async def test_text_ping_is_answered_unless_pongs_are_dropped(drop_pongs: bool) -> None:
    proto = OkxProtocol()
    faults = Faults(drop_pongs=drop_pongs)
    async with (
        FakeExchange("okx", rate=10, symbols=OKX_SYMBOLS, clock=FakeClock(), faults=faults) as fx,
        client(proto.connection_url(fx.url, OKX_SYMBOLS)) as ws,
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
        FakeExchange("okx", rate=100, symbols=OKX_SYMBOLS, clock=clock) as fx,
        client(proto.connection_url(fx.url, OKX_SYMBOLS)) as ws,
    ):
        # Answered per argument: the unknown one is refused, the known one subscribed.
        assert await subscribe(ws, proto, ["NOPE-USDT", "BTC-USDT"], 2) == [
            ExchangeError(OKX_NOPE, fatal=True, symbols=("NOPE-USDT",)),
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


# -- Bybit only -----------------------------------------------------------------------------------

BYBIT_SYMBOLS = FAKES["bybit"].symbols


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
        FakeExchange(
            "bybit", rate=10, symbols=BYBIT_SYMBOLS, clock=FakeClock(), faults=faults
        ) as fx,
        client(proto.connection_url(fx.url, BYBIT_SYMBOLS)) as ws,
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
        FakeExchange("bybit", rate=100, symbols=BYBIT_SYMBOLS, clock=clock, faults=faults) as fx,
        client(proto.connection_url(fx.url, BYBIT_SYMBOLS)) as ws,
    ):
        await subscribe(ws, proto, BYBIT_SYMBOLS, 1)
        got = Received()
        for second in range(1, 4):
            clock.advance(1.0)
            await read_until(ws, proto, got, lambda n=second: len(got.trades) >= 100 * n)
        assert got.controls == [] and fx.live_connections == 1


async def test_unknown_symbol_is_refused_and_the_connection_stays_open() -> None:
    clock, proto = FakeClock(), BybitProtocol()
    async with (
        FakeExchange("bybit", rate=100, symbols=BYBIT_SYMBOLS, clock=clock) as fx,
        client(proto.connection_url(fx.url, BYBIT_SYMBOLS)) as ws,
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


# -- Coinbase and Kraken: sequenced ids across a disconnect ---------------------------------------

#: Exchange -> (symbol, the fake's path, status frames before subscribing, the subscription's ack)
SEQUENCED = {
    "coinbase": ("BTC-USD", "", 0, Ack("subscriptions")),
    "kraken": ("ETH/USD", "/v2", 1, Ack("subscribe ETH/USD req_id=1")),
}


@pytest.mark.parametrize("exchange", list(SEQUENCED))
async def test_disconnect_fault_gap_matches_the_ledger(exchange: str) -> None:
    """Each connection reads the trades of its first second; at age 2 the server closes and
    that second's trades are lost: the ids are two runs with the gap between them."""
    symbol, path, status, ack = SEQUENCED[exchange]
    clock = FakeClock()
    faults = Faults(disconnect_every=2)
    async with FakeExchange(exchange, rate=50, symbols=[symbol], clock=clock, faults=faults) as fx:
        got = Received()
        for number in (1, 2):
            proto = get_protocol(exchange)
            async with client(f"{fx.url}{path}") as ws:
                await fx.wait_ready(number)
                for _ in range(status):
                    assert await next_event(ws, proto) == Heartbeat()  # Kraken's status
                assert await subscribe(ws, proto, [symbol], 1) == [ack]
                clock.advance(1.0)
                await read_until(ws, proto, got, lambda n=number: len(got.trades) >= 50 * n)
                clock.advance(1.0)  # age 2: the server closes; this second's trades are lost
                with pytest.raises(ConnectionClosed):
                    await read_until(ws, proto, got, lambda: False)
        ids = got.ids(symbol)
        assert ids == fx.ledger.sent_ids(symbol) == list(range(1, 51)) + list(range(101, 151))
