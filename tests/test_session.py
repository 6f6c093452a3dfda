"""The session loop against the fake exchange over real WebSockets, with an injected clock."""

from __future__ import annotations

import asyncio

from connectors.backoff import Backoff
from connectors.binance import BinanceProtocol
from connectors.fake.server import FakeExchange
from connectors.gaps import GapTracker
from connectors.session import InvalidFrameLog, SessionSettings, WebSocketSession
from engine.batchqueue import BatchQueue
from engine.clock import FakeClock
from engine.records import Trade
from engine.stats import Counters


def make_session(
    url: str, clock: FakeClock, **settings: float
) -> tuple[WebSocketSession, BatchQueue[Trade]]:
    counters = Counters()
    queue: BatchQueue[Trade] = BatchQueue(100_000)
    session = WebSocketSession(
        BinanceProtocol(),
        url,
        ["BTCUSDT"],
        queue,
        counters=counters,
        gaps=GapTracker(),
        invalid_log=InvalidFrameLog(counters),
        settings=SessionSettings(**settings),  # type: ignore[arg-type]
        backoff=Backoff(base=0.01, cap=0.02),
        clock=clock,
    )
    return session, queue


def drained(queue: BatchQueue[Trade]) -> list[str]:
    ids = []
    while (batch := queue.get_nowait()) is not None:
        ids += [t.trade_id for t in batch]
    return ids


async def test_a_connection_silent_for_stale_seconds_is_replaced() -> None:
    clock = FakeClock()
    async with FakeExchange(
        "binance", rate=100, symbols=["BTCUSDT"], clock=clock, max_trades=50
    ) as exchange:
        session, queue = make_session(exchange.url, clock, stale_seconds=5)
        stop = asyncio.Event()
        task = asyncio.create_task(session.run(stop))
        await exchange.wait_ready(1)
        clock.advance(0.5)  # all 50 trades the market will ever make
        await exchange.wait_tick()
        first = await queue.get()  # the session is reading
        clock.advance(6)  # past STALE_SECONDS without a frame
        await exchange.wait_ready(2)  # the session gave up on the silent socket and came back
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert session.connections >= 2
    assert session.counters.reconnects >= 1
    assert first is not None
    ids = [t.trade_id for t in first] + drained(queue)
    assert ids == [str(n) for n in range(1, 51)]


async def test_a_connection_is_replaced_before_its_maximum_age() -> None:
    clock = FakeClock()
    async with FakeExchange("binance", rate=100, symbols=["BTCUSDT"], clock=clock) as exchange:
        session, queue = make_session(exchange.url, clock, max_age_seconds=30)
        stop = asyncio.Event()
        task = asyncio.create_task(session.run(stop))
        await exchange.wait_ready(1)
        clock.advance(0.2)
        await exchange.wait_tick()
        assert await queue.get()  # the session is reading
        clock.advance(31)
        await exchange.wait_ready(2)
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert session.connections == 2
    assert session.counters.reconnects == 1
