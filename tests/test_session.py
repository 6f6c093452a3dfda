"""The session loop against the fake exchange over real WebSockets, with an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from connectors.binance import BinanceProtocol
from connectors.fake.server import FakeExchange
from connectors.session import (
    BACKPRESSURE_LOG_SECONDS,
    WebSocketSession,
)
from engine.batchqueue import BatchQueue
from engine.clock import SYSTEM_CLOCK, Clock, FakeClock
from engine.records import Trade
from tests.logcapture import captured_logs
from tests.wsclient import make_session as any_session


def make_session(
    url: str,
    clock: Clock,
    *,
    maxsize: int = 100_000,
    drain_deadline: Callable[[], float | None] | None = None,
    **settings: float,
) -> tuple[WebSocketSession, BatchQueue[Trade]]:
    """A session on BTCUSDT (tests/wsclient.py's :func:`make_session`)."""
    settings_ = {"maxsize": maxsize, "drain_deadline": drain_deadline, **settings}
    return any_session(BinanceProtocol(), url, ["BTCUSDT"], clock, **settings_)


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
        with captured_logs("INFO") as logs:
            task = asyncio.create_task(session.run(stop))
            await exchange.wait_ready(1)
            clock.advance(0.5)  # all 50 trades the market will ever make
            await exchange.wait_tick()
            first = await queue.get()  # the session is reading
            clock.advance(6)  # past STALE_SECONDS without a frame
            # The session gave up on the silent socket and came back (its side of the new
            # connection: a stop before its handshake completed would give it up).
            await logs.wait_for(lambda: len(logs.docs("connected")) == 2)
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
        with captured_logs("INFO") as logs:
            task = asyncio.create_task(session.run(stop))
            await exchange.wait_ready(1)
            clock.advance(0.2)
            await exchange.wait_tick()
            assert await queue.get()  # the session is reading
            clock.advance(31)
            # The client's side of the new connection, not only the server's: a stop before
            # the client saw its handshake through would give the opening connection up.
            await logs.wait_for(lambda: len(logs.docs("connected")) == 2)
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert session.connections == 2
    assert session.counters.reconnects == 1


# -- the stop reads to the end; keepalive under backpressure (issue 12) --------------------------

TRADES = 20_000
"""Far more than the queue, websockets' buffer and the socket buffers hold together."""


async def _backpressured(
    exchange: FakeExchange, clock: FakeClock, session: WebSocketSession, stop: asyncio.Event
) -> asyncio.Task[None]:
    """Start ``session``; let the market make all its trades at once; return once the reader
    waits for room in the (never drained) queue."""
    task = asyncio.create_task(session.run(stop))
    await exchange.wait_ready(1)
    clock.advance(TRADES / 1000)  # rate 1000/s: every trade is due, the fake sends them all
    await exchange.wait_tick()
    async with asyncio.timeout(10):
        await session.backpressured.wait()
    return task


async def test_a_stop_while_backpressured_reads_the_socket_to_the_end() -> None:
    """Nobody drains the queue: the reader waits for room when the stop comes. The stop closes
    the socket and the reader queues the rest past the bound, up to the peer's close frame:
    every trade the fake exchange sent is queued, the close is clean."""
    clock = FakeClock()
    async with FakeExchange(
        "binance", rate=1000, symbols=["BTCUSDT"], clock=clock, max_trades=TRADES
    ) as exchange:
        session, queue = make_session(exchange.url, clock, maxsize=1_000)
        stop = asyncio.Event()
        task = await _backpressured(exchange, clock, session, stop)
        assert queue.size <= queue.maxsize
        stop.set()
        async with asyncio.timeout(20):
            await task
        sent = exchange.ledger.sent_ids("BTCUSDT")
    ids = [int(i) for i in drained(queue)]
    assert sent, "the fake exchange sent nothing"
    assert ids == sent, f"queued {len(ids)} of {len(sent)} sent"
    assert session.counters.unclean_closes == 0
    assert session.connections == 1


async def test_a_close_not_answered_by_the_drain_deadline_is_an_unclean_close() -> None:
    """No time is left for the drain (the deadline is now): websockets aborts the socket before
    the peer's close frame, which is behind thousands of unread trades. The session counts and
    logs it: the trades on their way are lost, and the run must not claim it is complete."""
    clock = FakeClock()
    async with FakeExchange(
        "binance", rate=1000, symbols=["BTCUSDT"], clock=clock, max_trades=TRADES
    ) as exchange:
        session, queue = make_session(
            exchange.url, clock, maxsize=1_000, drain_deadline=clock.monotonic
        )
        stop = asyncio.Event()
        with captured_logs("INFO") as logs:
            task = await _backpressured(exchange, clock, session, stop)
            stop.set()
            async with asyncio.timeout(20):
                await task
        sent = exchange.ledger.sent_ids("BTCUSDT")
    ids = [int(i) for i in drained(queue)]
    assert session.counters.unclean_closes == 1
    (line,) = logs.docs("unclean_close")
    assert line["exchange"] == "binance" and line["reason"] == "stop", line
    assert line["close_timeout_s"] == 0, line
    assert len(ids) < len(sent), "everything arrived: the close was not cut short"
    assert ids == sent[: len(ids)], "what was read is not the start of what was sent"


async def test_a_slow_sink_does_not_cost_the_connection_its_keepalive() -> None:
    """Pings every 0.5 s, 2 s for the pong. The queue is not drained (a sink slower than the
    pong timeout) until our ping has waited more than twice that: the connection stays, the
    pong is read once the reads resume, and nothing is missing (no reconnect, no gap)."""
    ping_timeout = 2.0
    async with FakeExchange(
        "binance", rate=2000, symbols=["BTCUSDT"], clock=SYSTEM_CLOCK
    ) as exchange:
        session, queue = make_session(
            exchange.url, SYSTEM_CLOCK, maxsize=1_000, ping_interval=0.5, ping_timeout=ping_timeout
        )
        stop = asyncio.Event()
        ids: list[str] = []
        with captured_logs("INFO") as logs:
            task = asyncio.create_task(session.run(stop))
            consumer: asyncio.Task[None] | None = None
            try:
                async with asyncio.timeout(30):
                    await session.backpressured.wait()
                # the sink is slow: nothing is taken from the queue until our ping is overdue
                # by twice its timeout (and the pause is long enough to be logged)
                await _until(lambda: _overdue(session, 2 * ping_timeout) and _logged(session))
                assert session.backpressured.is_set(), "the reads resumed without the sink"
                consumer = asyncio.create_task(_consume(queue, ids))
                # the sink is back: the reads resume and the pong behind the backlog is read
                await logs.wait_for(lambda: bool(logs.docs("reads_paused")))
                await _until(lambda: session.pong_waited() is None)
            finally:
                stop.set()
                async with asyncio.timeout(20):
                    await task
                if consumer is not None:
                    consumer.cancel()
        sent = exchange.ledger.sent_ids("BTCUSDT")
    ids += drained(queue)
    (paused,) = logs.docs("reads_paused")[:1]
    assert paused["pong_waited_s"] > 2 * ping_timeout, paused
    assert not logs.docs("reconnecting"), logs.docs("reconnecting")
    assert session.connections == 1 and session.counters.reconnects == 0
    assert [int(i) for i in ids] == sent, "a trade the fake exchange sent is missing"
    assert session.counters.unclean_closes == 0


async def _until(ready: Callable[[], bool], limit: float = 30.0) -> None:
    """A bounded poll of the session's own state (its ping and pause times have no event)."""
    async with asyncio.timeout(limit):
        while not ready():  # noqa: ASYNC110 - nothing to wait on but the state itself
            await asyncio.sleep(0.05)


def _logged(session: WebSocketSession) -> bool:
    since = session.paused_since
    return since is not None and SYSTEM_CLOCK.monotonic() - since > BACKPRESSURE_LOG_SECONDS


def _overdue(session: WebSocketSession, seconds: float) -> bool:
    waited = session.pong_waited()
    return waited is not None and waited > seconds


async def _consume(queue: BatchQueue[Trade], ids: list[str]) -> None:
    while (batch := await queue.get()) is not None:
        ids += [t.trade_id for t in batch]


async def test_a_stop_does_not_wait_for_a_connection_still_opening() -> None:
    """The exchange accepts TCP and never answers the handshake: the stop gives the attempt
    up at once instead of waiting out the open timeout, and counts no unclean close (nothing
    was received on it)."""
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    session, _ = make_session(f"ws://127.0.0.1:{port}", SYSTEM_CLOCK, open_timeout=600.0)
    stop = asyncio.Event()
    try:
        async with asyncio.timeout(30):  # far below the 600 s open timeout
            running = asyncio.create_task(session.run(stop))
            await accepted.wait()
            stop.set()
            await running
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert session.connections == 0
    assert session.counters.unclean_closes == 0
    assert session.tally.first_attempt_at is not None and not session.tally.ever_subscribed
