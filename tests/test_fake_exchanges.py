"""The fake exchanges that share their tests (Bitstamp, OKX, Bybit), over real WebSockets on
127.0.0.1, driven by an injected clock: one test each, parametrized by :data:`FAKES`.

No test sleeps to synchronise: each waits for the frames it expects (bounded), and trades
appear only when a test advances the FakeClock. What only one exchange does stays in
tests/test_<exchange>_fake.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from websockets.exceptions import InvalidStatus

from connectors.base import Ack, ReconnectNotice
from connectors.fake.faults import Faults
from connectors.fake.server import FakeExchange
from connectors.registry import get_protocol
from engine.clock import FakeClock
from tests.wsclient import Received, check_keepalive, client, read_until, subscribe, trade_view


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


@per_fake
@pytest.mark.parametrize("drop_pongs", [False, True])
async def test_session_keepalive_keeps_a_quiet_connection_alive(
    fake: Fake, drop_pongs: bool
) -> None:
    """The session's keepalive (Bitstamp's heartbeats, OKX's and Bybit's pings): answered ones
    count as traffic; unanswered ones let the connection go stale and be replaced."""
    proto = get_protocol(fake.exchange)
    await check_keepalive(
        fake.exchange, proto, fake.symbols, acks=len(fake.acks), drop_pongs=drop_pongs
    )
