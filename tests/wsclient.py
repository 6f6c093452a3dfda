"""Test helpers: a WebSocket client that parses what a fake exchange sends with a protocol.

Every wait is bounded (``WAIT`` seconds) and ends on a real event (a frame arriving), never on a
fixed sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from connectors.base import Ack, ControlEvent, ExchangeProtocol, Heartbeat, ParseResult
from connectors.fake.faults import Faults
from connectors.fake.ledger import Ledger
from connectors.fake.server import FakeExchange
from connectors.gaps import GapTracker
from connectors.session import InvalidFrameLog, SessionSettings, WebSocketSession
from connectors.transport import Transport
from engine.batchqueue import BatchQueue
from engine.clock import Clock, FakeClock
from engine.errors import MalformedFrame
from engine.records import Trade
from engine.retry import RetryPolicy
from engine.stats import Counters

WAIT = 10.0


@dataclass
class Received:
    """What a client parsed, in arrival order."""

    trades: list[Trade] = field(default_factory=list)
    malformed: list[MalformedFrame] = field(default_factory=list)
    controls: list[ControlEvent] = field(default_factory=list)
    frames: int = 0

    def ids(self, symbol: str) -> list[int]:
        """Trade ids of ``symbol`` (raw or canonical spelling) in arrival order."""
        return [int(t.trade_id) for t in self.trades if symbol in (t.raw_symbol, t.symbol)]


def client(url: str) -> connect:
    """A test client. Its receive queue is unbounded: websockets stops reading the socket when
    the queue is full, and a close handshake then waits out close_timeout behind unread frames."""
    return connect(url, max_queue=None)


async def read_until(
    ws: ClientConnection, proto: ExchangeProtocol, got: Received, done: Callable[[], bool]
) -> None:
    """Read and parse frames until ``done()`` (at most ``WAIT`` s); ConnectionClosed
    propagates."""
    async with asyncio.timeout(WAIT):
        while not done():
            frame = await ws.recv()
            got.frames += 1
            try:
                result = proto.parse(frame, 0)
            except MalformedFrame as exc:
                got.malformed.append(exc)
                continue
            if isinstance(result, (tuple, list)):
                got.trades.extend(result)
            else:
                got.controls.append(result)  # type: ignore[arg-type]


MALFORMED_KINDS = frozenset({"json", "missing-field", "type", "not-object", "decimal", "time"})
"""The kinds a parser names the fake's ``malformed`` frames by."""


def check_malformed(got: Received, ledger: Ledger) -> None:
    """What a client read of 500 frames with the ``malformed=0.3`` fault: between 100 and 200
    malformed, as many as the fake sent, each of a kind in :data:`MALFORMED_KINDS`; the trades
    are the ledger's."""
    assert 100 < len(got.malformed) == ledger.malformed_sent < 200
    assert {e.kind for e in got.malformed} <= MALFORMED_KINDS
    assert trade_view(got.trades) == trade_view(list(ledger.trades()))


async def next_event(ws: ClientConnection, proto: ExchangeProtocol) -> Any:
    """Parse the next frame (at most ``WAIT`` s away)."""
    return proto.parse(await asyncio.wait_for(ws.recv(), WAIT), 0)


def trade_view(trades: list[Trade]) -> list[tuple[str, str, str, str, str, int]]:
    """What must survive the wire exactly (everything but ``raw_symbol`` and ``ts_recv``)."""
    return [(t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event) for t in trades]


async def subscribe(
    ws: ClientConnection, proto: ExchangeProtocol, symbols: list[str], acks: int
) -> list[Any]:
    """Send the protocol's subscribe frames and return the next ``acks`` parsed events."""
    for message in proto.subscribe_messages(symbols):
        await ws.send(message)
    return [await next_event(ws, proto) for _ in range(acks)]


def make_session(
    proto: ExchangeProtocol,
    url: str,
    symbols: list[str],
    clock: Clock,
    *,
    maxsize: int = 100_000,
    drain_deadline: Callable[[], float | None] | None = None,
    transport: Transport | None = None,
    **settings: float,
) -> tuple[WebSocketSession, BatchQueue[Trade]]:
    """A WebSocketSession for ``symbols`` with a fast backoff, a queue of ``maxsize``, these
    settings and ``transport`` (None: the session's default)."""
    counters = Counters()
    queue: BatchQueue[Trade] = BatchQueue(maxsize)
    session = WebSocketSession(
        proto,
        url,
        symbols,
        queue,
        counters=counters,
        gaps=GapTracker(),
        invalid_log=InvalidFrameLog(counters),
        settings=SessionSettings(**settings),  # type: ignore[arg-type]
        backoff=RetryPolicy(initial=0.01, cap=0.02),
        clock=clock,
        drain_deadline=drain_deadline,
        transport=transport,
    )
    return session, queue


class ProtocolProbe:
    """Watches a protocol object that a session uses: the control events it parsed and how often
    the session's supervisor asked it for a keepalive frame (once per due tick, after reading
    the clock). Tests wait on these with :meth:`wait_for`, woken by each call: no polling."""

    def __init__(self, proto: ExchangeProtocol) -> None:
        self.controls: list[object] = []
        self.keepalives = 0
        self._changed = asyncio.Event()
        parse, keepalive = proto.parse, proto.keepalive_message

        def parse_and_record(frame: str | bytes, ts_recv: int) -> ParseResult:
            result = parse(frame, ts_recv)
            if not isinstance(result, (tuple, list)):
                self.controls.append(result)
                self._changed.set()
            return result

        def count_keepalive() -> str | None:
            self.keepalives += 1
            self._changed.set()
            return keepalive()

        setattr(proto, "parse", parse_and_record)  # noqa: B010 - instance overrides
        setattr(proto, "keepalive_message", count_keepalive)  # noqa: B010

    def count(self, kind: type) -> int:
        """How many control events of ``kind`` were parsed."""
        return sum(isinstance(event, kind) for event in self.controls)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds (at most ``WAIT`` s)."""
        async with asyncio.timeout(WAIT):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


async def check_keepalive(
    exchange: str,
    proto: ExchangeProtocol,
    symbols: list[str],
    acks: int,
    *,
    drop_pongs: bool,
    transport: Transport | None = None,
) -> None:
    """The session's keepalive against the fake ``exchange``, 63 s of its clock with no trades
    (stale after 30 s, a keepalive due every 20 s): answered, the keepalives are traffic and
    the one connection lives; unanswered (``drop_pongs``), it goes stale and is replaced.

    Deterministic whatever the machine's load: the first connection's ticks at 21 s and 42 s
    each send a keepalive before any staleness check can close it. Unanswered, its last frame
    (the acks) was counted at 0 s or 21 s, so it goes stale at 42 s or 63 s; a third keepalive
    is only awaited when answered (a replacement opened at 63 s owes none)."""
    clock = FakeClock()
    probe = ProtocolProbe(proto)
    faults = Faults(drop_pongs=drop_pongs)
    async with FakeExchange(
        exchange, rate=10, symbols=symbols, clock=clock, faults=faults, max_trades=0
    ) as fx:
        session, _ = make_session(
            proto, fx.url, symbols, clock, stale_seconds=30, transport=transport
        )
        stop = asyncio.Event()
        task = asyncio.create_task(session.run(stop))
        try:
            await probe.wait_for(lambda: probe.count(Ack) == acks)
            for n in range(1, 4):  # 63 s in all, no trades
                clock.advance(21)
                if drop_pongs and n == 3:
                    break
                await probe.wait_for(lambda n=n: probe.keepalives >= n)  # a tick saw the time
                if not drop_pongs:
                    await probe.wait_for(lambda n=n: probe.count(Heartbeat) == n)  # the answer
            if drop_pongs:
                await fx.wait_ready(2)  # went stale and came back
                assert probe.count(Heartbeat) == 0
            else:
                assert fx.connections_opened == 1 and session.connections == 1
        finally:
            stop.set()
            async with asyncio.timeout(WAIT):
                await task
    assert (session.counters.reconnects >= 1) is drop_pongs
