"""The session conformance suite: every session behaviour on both WebSocket transports.

Every test here takes the :func:`transport` fixture, once per ``WS_TRANSPORT`` name
(:data:`connectors.transports.TRANSPORTS`, ids ``aiohttp`` and ``websockets``), and runs a real
:class:`~connectors.session.WebSocketSession` on it against real servers on loopback: the fake
exchange (its ledger says what was sent), small websockets servers, a bare server that
completes the handshake and never answers, and a self-signed TLS server. The seam itself is
tested in tests/test_transport_conformance.py; here the session above it. Where the libraries
differ within the seam's contract (:mod:`connectors.transport`, "Where the libraries still
differ"), the tests assert the contract, not either library's detail. No sleeps to
synchronise: every wait ends on a real event or the session's own state, bounded.

The behaviours, in the order below: subscribe and receive the ledger (every exchange); the
server's keepalive (its pings answered); the client's keepalive (the exchange's app-level
ping: Bitstamp, OKX, Bybit, Kraken; and our WebSocket ping: answered it keeps the connection,
unanswered it replaces it);
staleness and maximum age; reconnect with backoff after a disconnect; reconnect notices; an
oversized frame (1009); a rejected subscription; TLS verification for ``wss://``; the drain on
stop; backpressure with ``OVERFLOW=block``; capture of raw frames; hostile input.

Also part of the suite, as ``feedvault stream`` subprocesses with ``WS_TRANSPORT`` set, each
parametrized in place over the transports (their fixtures live there):

- tests/test_exchanges_e2e.py:
  ``test_a_refused_subscription_ends_the_run_with_the_exchange_message`` and
  ``test_reconnect_notices_reconnect_and_lose_nothing``;
- tests/test_capture_replay_e2e.py: ``test_captured_live_run_replays_to_the_same_trades``.

The longer subprocess tests of these behaviours (the deadline runs of every exchange, the
``OVERFLOW=block`` run against slow S3, the hostile-input run, the stop moments) run on the
default transport only: each behaviour is tested on both transports here, in-process.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from connectors import capture as raw
from connectors.base import ExchangeProtocol
from connectors.binance import BinanceProtocol
from connectors.fake.faults import Faults
from connectors.fake.hostile import HOSTILE_KINDS
from connectors.fake.server import FakeExchange
from connectors.gaps import GapTracker
from connectors.registry import get_protocol
from connectors.session import (
    BACKPRESSURE_LOG_SECONDS,
    InvalidFrameLog,
    SessionSettings,
    WebSocketSession,
)
from connectors.transport import Connection, ConnectOptions, Transport
from connectors.transports import TRANSPORTS, get_transport
from engine.batchqueue import BatchQueue
from engine.clock import SYSTEM_CLOCK, Clock, FakeClock
from engine.errors import SubscriptionRejected
from engine.records import Trade
from engine.retry import RetryPolicy
from engine.stats import Counters
from tests.harness import until
from tests.logcapture import captured_logs
from tests.test_session_tls import self_signed, tls_server
from tests.test_transport_conformance import silent_server
from tests.wsclient import WAIT, check_keepalive, trade_view
from tests.wsclient import make_session as any_session


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> Transport:
    """Each transport in turn (ids ``aiohttp``, ``websockets``)."""
    return get_transport(cast(str, request.param))


def make_session(
    url: str,
    clock: Clock,
    transport: Transport,
    *,
    protocol: ExchangeProtocol | None = None,
    symbols: tuple[str, ...] = ("BTCUSDT",),
    maxsize: int = 100_000,
    drain_deadline: Callable[[], float | None] | None = None,
    **settings: float,
) -> tuple[WebSocketSession, BatchQueue[Trade]]:
    """A session on ``transport`` (Binance's BTCUSDT unless told), a fast backoff
    (tests/wsclient.py's :func:`make_session`)."""
    return any_session(
        protocol or BinanceProtocol(),
        url,
        list(symbols),
        clock,
        maxsize=maxsize,
        drain_deadline=drain_deadline,
        transport=transport,
        **settings,
    )


def drained(queue: BatchQueue[Trade]) -> list[Trade]:
    """Every trade queued so far, in order."""
    out: list[Trade] = []
    while (batch := queue.get_nowait()) is not None:
        out += batch
    return out


def ids_of(trades: list[Trade]) -> list[int]:
    return [int(t.trade_id) for t in trades]


async def stopped(task: asyncio.Task[None], stop: asyncio.Event, limit: float = 20.0) -> None:
    """Set ``stop`` and wait (bounded) for the session's run to return."""
    stop.set()
    async with asyncio.timeout(limit):
        await task


class PingRecorder:
    """A transport wrapped to record the pong waiter of every WebSocket ping the session sends
    (the session's own keepalive; nothing else sends pings)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self.pongs: list[asyncio.Future[float]] = []

    async def connect(self, url: str, options: ConnectOptions) -> Connection:
        return cast(Connection, _Recorded(await self.inner.connect(url, options), self.pongs))


class _Recorded:
    """A connection whose pings are recorded; everything else is the connection's own."""

    def __init__(self, conn: Connection, pongs: list[asyncio.Future[float]]) -> None:
        self._conn = conn
        self._pongs = pongs

    async def ping(self) -> asyncio.Future[float]:
        pong = await self._conn.ping()
        self._pongs.append(pong)
        return pong

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


# -- subscribe and receive --------------------------------------------------------------------

SINGLE = {
    "binance": ("BTCUSDT", ""),
    "coinbase": ("BTC-USD", ""),
    "kraken": ("ETH/USD", "/v2"),
    "bitstamp": ("BTCUSD", ""),
    "okx": ("BTC-USDT", ""),
    "bybit": ("BTCUSDT", ""),
}
"""A symbol each fake trades, and the path of its endpoint."""


@pytest.mark.parametrize("exchange", list(SINGLE))
async def test_the_session_subscribes_and_queues_the_ledger(
    transport: Transport, exchange: str
) -> None:
    """Subscribed (by URL or by message, acknowledged), the session queues exactly the trades
    the fake exchange sent, in order, field for field."""
    symbol, path = SINGLE[exchange]
    clock = FakeClock()
    async with FakeExchange(
        exchange, rate=200, symbols=[symbol], clock=clock, max_trades=150, seed=4
    ) as fx:
        session, queue = make_session(
            fx.url + path, clock, transport, protocol=get_protocol(exchange), symbols=(symbol,)
        )
        stop = asyncio.Event()
        task = asyncio.create_task(session.run(stop))
        await fx.wait_ready(1)
        await until(lambda: session.tally.is_subscribed)
        clock.advance(1.0)  # all 150 trades are due
        await fx.wait_tick()
        await until(lambda: fx.ledger.total == 150)
        await stopped(task, stop)  # reads to the peer's close frame: all that was sent
    stored = drained(queue)
    assert trade_view(stored) == trade_view(list(fx.ledger.trades()))
    assert len(stored) == 150
    assert session.connections == 1 and session.counters.unclean_closes == 0


# -- the server's keepalive -------------------------------------------------------------------


async def test_the_servers_pings_are_answered(transport: Transport) -> None:
    """The exchange pings (Binance's server ping: a pong is due within a minute): each ping
    gets its pong from an idle session (only reading), and the connection stays."""
    latencies: list[float] = []
    answered = asyncio.Event()

    async def pinger(ws: ServerConnection) -> None:
        for n in range(3):
            latencies.append(await asyncio.wait_for(await ws.ping(b"server %d" % n), WAIT))
        answered.set()
        await ws.wait_closed()

    async with serve(pinger, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        session, _ = make_session(f"ws://127.0.0.1:{port}", SYSTEM_CLOCK, transport)
        stop = asyncio.Event()
        task = asyncio.create_task(session.run(stop))
        async with asyncio.timeout(WAIT):
            await answered.wait()
        await stopped(task, stop)
    assert len(latencies) == 3
    assert session.connections == 1 and session.counters.reconnects == 0


# -- the client's keepalive -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "symbols", "acks"),
    [
        ("bitstamp", ["BTCUSD", "ETHUSD"], 2),
        ("okx", ["BTC-USDT", "ETH-USDT"], 2),
        ("bybit", ["BTCUSDT", "ETHUSDT"], 1),
    ],
)
@pytest.mark.parametrize("drop_pongs", [False, True])
async def test_the_exchanges_keepalive_keeps_a_quiet_connection_alive(
    transport: Transport, exchange: str, symbols: list[str], acks: int, drop_pongs: bool
) -> None:
    """The protocol's keepalive (Bitstamp's heartbeats, OKX's and Bybit's pings): answered
    ones count as traffic; unanswered ones let the connection go stale and be replaced
    (tests/wsclient.py's :func:`check_keepalive`)."""
    await check_keepalive(
        exchange,
        get_protocol(exchange),
        symbols,
        acks=acks,
        drop_pongs=drop_pongs,
        transport=transport,
    )


@pytest.mark.parametrize("drop_pongs", [False, True])
async def test_krakens_ping_is_sent_and_its_pong_read(
    transport: Transport, drop_pongs: bool
) -> None:
    """Kraken's application ping (``{"method":"ping","req_id":N}`` every 30 s; the fake's
    heartbeats keep the connection fresh meanwhile, so it is not replaced either way): the
    captured frames show the ping sent and, unless the fake drops pongs, its pong (same
    ``req_id``) read on the same connection."""
    clock = FakeClock()
    counters = Counters()
    captured: BatchQueue[raw.RawFrame] = BatchQueue(100_000)
    records: list[raw.RawFrame] = []

    def frames(direction: str, text: str) -> list[str]:
        while (batch := captured.get_nowait()) is not None:
            records.extend(batch)
        return [r.frame for r in records if r.dir == direction and text in r.frame]

    async with FakeExchange(
        "kraken",
        rate=10,
        symbols=["ETH/USD"],
        clock=clock,
        max_trades=0,
        faults=Faults(drop_pongs=drop_pongs),
    ) as fx:
        session = WebSocketSession(
            get_protocol("kraken"),
            fx.url + "/v2",
            ["ETH/USD"],
            BatchQueue[Trade](1000),
            counters=counters,
            gaps=GapTracker(),
            invalid_log=InvalidFrameLog(counters),
            backoff=RetryPolicy(initial=0.01, cap=0.02),
            clock=clock,
            capture=captured,
            transport=transport,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(session.run(stop))
        await until(lambda: session.tally.is_subscribed)
        clock.advance(31)  # a ping is due
        await fx.wait_tick()
        await until(lambda: bool(frames(raw.DIR_OUT, '"method":"ping"')))
        if not drop_pongs:
            await until(lambda: bool(frames(raw.DIR_IN, '"method":"pong"')))
        await stopped(task, stop)
    (ping,) = frames(raw.DIR_OUT, '"method":"ping"')
    req_id = ping.partition('"req_id":')[2].rstrip("}")
    pongs = frames(raw.DIR_IN, '"method":"pong"')
    if drop_pongs:
        assert pongs == []
    else:
        assert len(pongs) == 1 and f'"req_id":{req_id},' in pongs[0], (ping, pongs)
    assert session.connections == 1 and counters.reconnects == 0


async def test_our_pings_answered_keep_a_quiet_connection(transport: Transport) -> None:
    """No trades; the session pings every second of its clock: each ping is answered (the
    fake's websockets answers while the session reads) and the one connection stays."""
    clock = FakeClock()
    recorder = PingRecorder(transport)
    async with FakeExchange(
        "binance", rate=10, symbols=["BTCUSDT"], clock=clock, max_trades=0
    ) as fx:
        session, _ = make_session(
            fx.url, clock, cast(Transport, recorder), ping_interval=1, ping_timeout=2
        )
        stop = asyncio.Event()
        with captured_logs("INFO") as logs:
            task = asyncio.create_task(session.run(stop))
            # the client's side of the connection (its supervisor reads the clock from then)
            await logs.wait_for(lambda: len(logs.docs("connected")) == 1)
            for n in range(1, 4):
                clock.advance(1.5)
                await until(lambda n=n: len(recorder.pongs) == n)
                async with asyncio.timeout(WAIT):
                    assert await recorder.pongs[-1] >= 0.0
            await stopped(task, stop)
    assert fx.connections_opened == 1
    assert session.connections == 1 and session.counters.reconnects == 0


async def test_our_ping_unanswered_replaces_the_connection(transport: Transport) -> None:
    """A peer that never answers our ping: once the pong is ``ping_timeout`` overdue the
    session closes the connection (1011, reason ``keepalive timeout``) and opens another."""
    clock = FakeClock()
    recorder = PingRecorder(transport)
    async with silent_server() as url:
        session, _ = make_session(
            url,
            clock,
            cast(Transport, recorder),
            ping_interval=1,
            ping_timeout=2,
            close_timeout=0.2,  # the silent peer never answers the close either
        )
        stop = asyncio.Event()
        with captured_logs("INFO") as logs:
            task = asyncio.create_task(session.run(stop))
            await logs.wait_for(lambda: len(logs.docs("connected")) == 1)
            clock.advance(1.5)
            await until(lambda: len(recorder.pongs) == 1)
            clock.advance(2.5)
            await logs.wait_for(lambda: len(logs.docs("connected")) == 2)
            await stopped(task, stop)
    assert logs.docs("closing")[0]["reason"] == "keepalive timeout"
    assert logs.docs("reconnecting")[0]["reason"] == "keepalive timeout"
    assert not recorder.pongs[0].done() or recorder.pongs[0].exception() is not None
    assert session.counters.reconnects == 1


# -- staleness and age ------------------------------------------------------------------------


async def test_a_connection_silent_for_stale_seconds_is_replaced(transport: Transport) -> None:
    clock = FakeClock()
    async with FakeExchange(
        "binance", rate=100, symbols=["BTCUSDT"], clock=clock, max_trades=50
    ) as exchange:
        session, queue = make_session(exchange.url, clock, transport, stale_seconds=5)
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
        await stopped(task, stop)
    assert session.connections >= 2
    assert session.counters.reconnects >= 1
    assert logs.docs("closing")[0]["reason"] == "stale"
    assert first is not None
    ids = [t.trade_id for t in first] + [t.trade_id for t in drained(queue)]
    assert ids == [str(n) for n in range(1, 51)]


async def test_a_connection_is_replaced_before_its_maximum_age(transport: Transport) -> None:
    clock = FakeClock()
    async with FakeExchange("binance", rate=100, symbols=["BTCUSDT"], clock=clock) as exchange:
        session, queue = make_session(exchange.url, clock, transport, max_age_seconds=30)
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
        await stopped(task, stop, limit=10)
    assert session.connections == 2
    assert session.counters.reconnects == 1


# -- reconnects -------------------------------------------------------------------------------


async def test_a_disconnect_reconnects_after_the_backoff_and_loses_nothing_sent(
    transport: Transport,
) -> None:
    """The fake closes each connection (1001) a second after it opened: the session reconnects
    after the first backoff delay each time (every connection delivered data, so the failures
    start again from zero), and queues exactly what the fake sent."""
    clock = FakeClock()
    async with FakeExchange(
        "binance",
        rate=200,
        symbols=["BTCUSDT"],
        clock=clock,
        faults=Faults(disconnect_every=1.0),
    ) as fx:
        session, queue = make_session(fx.url, clock, transport)
        stop = asyncio.Event()
        with captured_logs("INFO") as logs:
            task = asyncio.create_task(session.run(stop))
            for opened in range(1, 4):
                await fx.wait_ready(opened)
                await logs.wait_for(lambda n=opened: len(logs.docs("connected")) == n)
                for _ in range(5):  # 1.25 s: trades, then the disconnect
                    clock.advance(0.25)
                    await fx.wait_tick()
            await fx.wait_ready(4)
            await logs.wait_for(lambda: len(logs.docs("connected")) == 4)
            await stopped(task, stop)
    stored = drained(queue)
    assert trade_view(stored) == trade_view(list(fx.ledger.trades()))
    reconnecting = logs.docs("reconnecting")
    assert len(reconnecting) == 3 == session.counters.reconnects, reconnecting
    for doc in reconnecting:
        assert doc["reason"] == "closed by peer: code 1001", doc
        assert 0 <= doc["delay_s"] <= 0.01, doc  # the first delay's ceiling, every time


def _backing_off_session(url: str, transport: Transport) -> WebSocketSession:
    """A Binance session to ``url`` whose failed attempts back off quickly (10 ms doubling to
    40 ms, at the ceiling each time)."""
    counters = Counters()
    return WebSocketSession(
        BinanceProtocol(),
        url,
        ["BTCUSDT"],
        BatchQueue[Trade](1000),
        counters=counters,
        gaps=GapTracker(),
        invalid_log=InvalidFrameLog(counters),
        settings=SessionSettings(open_timeout=5),
        backoff=RetryPolicy(initial=0.01, cap=0.04, rng=_Ceiling()),
        transport=transport,
    )


async def test_a_failed_connect_backs_off_exponentially(transport: Transport) -> None:
    """Nothing listens: each failed attempt waits longer (full jitter at its ceiling here)."""
    port = _closed_port()
    session = _backing_off_session(f"ws://127.0.0.1:{port}", transport)
    stop = asyncio.Event()
    with captured_logs("INFO") as logs:
        task = asyncio.create_task(session.run(stop))
        await logs.wait_for(lambda: len(logs.raw("reconnecting")) >= 4)
        await stopped(task, stop)
    assert session.connections == 0
    delays = [doc["delay_s"] for doc in logs.docs("reconnecting")]
    assert delays[:4] == [0.01, 0.02, 0.04, 0.04], delays  # exponential, capped
    assert all(doc["reason"].startswith("connect failed: ") for doc in logs.docs("reconnecting"))


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class _Ceiling(random.Random):
    """Full jitter at its ceiling, so each delay is the backoff's bound for that attempt."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.mark.parametrize(
    ("exchange", "symbol"), [("binance", "BTCUSDT"), ("bitstamp", "BTCUSD"), ("okx", "BTC-USDT")]
)
async def test_a_reconnect_notice_reconnects_at_once_and_loses_nothing(
    transport: Transport, exchange: str, symbol: str
) -> None:
    """Binance's ``serverShutdown``, Bitstamp's ``bts:request_reconnect``, OKX's 64008: the
    session closes the connection, reading it to the end, and reconnects with no delay. The
    clock stands still meanwhile (no trade is due), so every id arrives, in order."""
    clock = FakeClock()
    async with FakeExchange(
        exchange,
        rate=100,
        symbols=[symbol],
        clock=clock,
        faults=Faults(shutdown_notice_every=2.0),
    ) as fx:
        session, queue = make_session(
            fx.url, clock, transport, protocol=get_protocol(exchange), symbols=(symbol,)
        )
        stop = asyncio.Event()
        with captured_logs("INFO") as logs:
            task = asyncio.create_task(session.run(stop))
            await fx.wait_ready(1)
            await until(lambda: session.tally.is_subscribed)
            clock.advance(1.0)
            await fx.wait_tick()
            await until(lambda: fx.ledger.total == 100)
            clock.advance(1.5)  # the connection is 2.5 s old: the notice, behind 150 trades
            await fx.wait_tick()
            await logs.wait_for(lambda: len(logs.docs("connected")) == 2)
            await stopped(task, stop)
    (notice,) = logs.docs("reconnect_notice")
    assert notice["exchange"] == exchange
    (reconnect,) = logs.docs("reconnecting")
    assert (reconnect["reason"], reconnect["delay_s"]) == ("notice", 0), reconnect
    stored = drained(queue)
    assert ids_of(stored) == list(range(1, 251)) == fx.ledger.sent_ids(symbol)
    assert trade_view(stored) == trade_view(list(fx.ledger.trades()))


# -- oversized frames -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "symbol", "path"),
    [("coinbase", "BTC-USD", ""), ("kraken", "ETH/USD", "/v2"), ("binance", "BTCUSDT", "")],
)
async def test_the_engine_session_reconnects_and_its_gaps_are_what_the_ledger_lacks(
    transport: Transport, exchange: str, symbol: str, path: str
) -> None:
    """A frame over ``max_size`` ends the connection (1009; the transport fails it) after
    every frame before it: counted as invalid, the session reconnects, and the gaps it reports
    are exactly the ids the fake never sent."""
    clock = FakeClock()
    protocol = get_protocol(exchange)
    async with FakeExchange(
        exchange, rate=200, symbols=[symbol], clock=clock, faults=Faults(oversized=0.02), seed=3
    ) as fx:
        session, queue = make_session(
            fx.url + path, clock, transport, protocol=protocol, symbols=(symbol,)
        )
        stop = asyncio.Event()
        task = asyncio.create_task(session.run(stop))
        async with asyncio.timeout(WAIT):
            while fx.connections_opened < 4:  # three connections ended by an oversized frame
                clock.advance(0.25)
                await fx.wait_tick()
        await stopped(task, stop, limit=WAIT)
    stored = drained(queue)
    gaps = session.gaps
    assert fx.ledger.oversized_sent >= 3 and session.counters.reconnects >= 3
    # The big frames never reach the parser; each one the client read (1009) is counted.
    assert 3 <= session.counters.invalid <= fx.ledger.oversized_sent
    assert trade_view(stored) == trade_view(list(fx.ledger.trades()))
    sent = fx.ledger.sent_ids(symbol)
    missing = sorted(set(range(sent[0], sent[-1] + 1)) - set(sent))
    gaps.finish()  # what the run does at its end: pending gaps become final
    reported = [n for gap in gaps.gaps.get(f"{exchange}:{stored[0].symbol}", []) for n in
                range(gap.from_id, gap.to_id + 1)]  # fmt: skip
    assert missing and reported == missing


# -- a rejected subscription ------------------------------------------------------------------


async def _rejection(
    transport: Transport,
    exchange: str,
    market: list[str],
    subscribed: list[str],
    faults: Faults | None = None,
) -> SubscriptionRejected:
    """Run a session for ``subscribed`` against a fake ``exchange`` trading ``market``; return
    the rejection that ends it."""
    clock = FakeClock()
    async with FakeExchange(
        exchange, rate=10, symbols=market, clock=clock, faults=faults or Faults()
    ) as fx:
        session, _ = make_session(
            fx.url,
            clock,
            transport,
            protocol=get_protocol(exchange),
            symbols=tuple(subscribed),
            maxsize=1000,
        )
        with pytest.raises(SubscriptionRejected) as info:
            async with asyncio.timeout(30):
                await session.run(asyncio.Event())
    return info.value


async def test_binance_names_no_symbol_so_the_connections_are_named(
    transport: Transport,
) -> None:
    err = await _rejection(
        transport, "binance", ["BTCUSDT"], ["BTCUSDT", "NOPEUSDT"], Faults(reject_unknown=True)
    )
    assert err.streams == ("binance:BTCUSDT", "binance:NOPEUSDT")
    assert "binance error 2: Invalid symbol" in str(err)


@pytest.mark.parametrize(
    ("exchange", "market", "subscribed", "refused"),
    [
        ("kraken", ["BTC/USD"], ["BTC/USD", "NOPE/USD"], "NOPE/USD"),
        ("okx", ["BTC-USDT"], ["BTC-USDT", "NOPE-USDT"], "NOPE-USDT"),
        ("bybit", ["BTCUSDT"], ["BTCUSDT", "NOPEUSDT"], "NOPEUSDT"),
        ("coinbase", ["BTC-USD"], ["BTC-USD", "NOPE-USD"], "NOPE-USD"),
    ],
)
async def test_the_symbol_the_exchange_refused_is_named(
    transport: Transport, exchange: str, market: list[str], subscribed: list[str], refused: str
) -> None:
    err = await _rejection(transport, exchange, market, subscribed)
    assert err.symbols == (refused,)
    assert str(err).startswith(f"{exchange} rejected the subscription to {exchange}:{refused}: ")


# -- TLS --------------------------------------------------------------------------------------


async def test_a_self_signed_certificate_is_refused(transport: Transport, tmp_path: Path) -> None:
    """Certificates are always verified for ``wss://``: a self-signed server is a failed
    connection (logged with the verification error, backed off), never reached by the
    session. A client that trusts the certificate does reach it (the control), so the refusal
    is the certificate check and not a broken server."""
    cert, key = self_signed(tmp_path)
    reached: list[str] = []
    async with tls_server(cert, key, reached) as port:
        trusting = ssl.create_default_context(cafile=str(cert))
        async with asyncio.timeout(10):
            async with connect(f"wss://127.0.0.1:{port}/control", ssl=trusting) as ws:
                await ws.wait_closed()
        assert reached == ["/control"]

        session = _backing_off_session(f"wss://127.0.0.1:{port}", transport)
        stop = asyncio.Event()
        with captured_logs("INFO") as logs:
            task = asyncio.create_task(session.run(stop))
            await logs.wait_for(lambda: len(logs.raw("reconnecting")) >= 3)
            await stopped(task, stop, limit=10)
    assert reached == ["/control"]  # the session never got past the handshake
    assert session.connections == 0
    assert session.counters.reconnects >= 3
    failures = logs.docs("connect_failed")
    assert len(failures) >= 3
    for doc in failures:
        assert doc["exchange"] == "binance"
        assert doc["url"].startswith(f"wss://127.0.0.1:{port}/")
        assert "CERTIFICATE_VERIFY_FAILED" in doc["error"], doc
        assert "self-signed certificate" in doc["error"] or "self signed" in doc["error"], doc
    delays = [doc["delay_s"] for doc in logs.docs("reconnecting")]
    assert delays[:3] == [0.01, 0.02, 0.04], delays  # exponential backoff, capped


# -- the drain on stop; backpressure (issue 12) -----------------------------------------------

TRADES = 20_000
"""Far more than the queue, the transport's buffer and the socket buffers hold together."""


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


async def test_a_stop_while_backpressured_reads_the_socket_to_the_end(
    transport: Transport,
) -> None:
    """Nobody drains the queue: the reader waits for room when the stop comes. The stop closes
    the socket and the reader queues the rest past the bound, up to the peer's close frame:
    every trade the fake exchange sent is queued, the close is clean."""
    clock = FakeClock()
    async with FakeExchange(
        "binance", rate=1000, symbols=["BTCUSDT"], clock=clock, max_trades=TRADES
    ) as exchange:
        session, queue = make_session(exchange.url, clock, transport, maxsize=1_000)
        stop = asyncio.Event()
        task = await _backpressured(exchange, clock, session, stop)
        assert queue.size <= queue.maxsize
        await stopped(task, stop)
    # Read once the fake has exited: every connection's sends are settled by then.
    sent = exchange.ledger.sent_ids("BTCUSDT")
    ids = ids_of(drained(queue))
    assert sent, "the fake exchange sent nothing"
    assert ids == sent, f"queued {len(ids)} of {len(sent)} sent"
    assert session.counters.unclean_closes == 0
    assert session.connections == 1


async def test_a_close_not_answered_by_the_drain_deadline_is_an_unclean_close(
    transport: Transport,
) -> None:
    """No time is left for the drain (the deadline is now): the transport aborts the socket
    before the peer's close frame, which is behind thousands of unread trades. The session
    counts and logs it: the trades on their way are lost, and the run must not claim it is
    complete."""
    clock = FakeClock()
    async with FakeExchange(
        "binance", rate=1000, symbols=["BTCUSDT"], clock=clock, max_trades=TRADES
    ) as exchange:
        session, queue = make_session(
            exchange.url, clock, transport, maxsize=1_000, drain_deadline=clock.monotonic
        )
        stop = asyncio.Event()
        with captured_logs("INFO") as logs:
            task = await _backpressured(exchange, clock, session, stop)
            await stopped(task, stop)
    sent = exchange.ledger.sent_ids("BTCUSDT")  # settled: the fake has exited
    ids = ids_of(drained(queue))
    assert session.counters.unclean_closes == 1
    (line,) = logs.docs("unclean_close")
    assert line["exchange"] == "binance" and line["reason"] == "stop", line
    assert line["close_timeout_s"] == 0, line
    assert len(ids) < len(sent), "everything arrived: the close was not cut short"
    assert ids == sent[: len(ids)], "what was read is not the start of what was sent"


async def test_a_stop_does_not_wait_for_a_connection_still_opening(
    transport: Transport,
) -> None:
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
    session, _ = make_session(f"ws://127.0.0.1:{port}", SYSTEM_CLOCK, transport, open_timeout=600.0)
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


BACKPRESSURE_RATE = 2000
"""Trades/s of the slow-sink test's fake exchange."""
SNDBUF = 1 << 16
"""``SO_SNDBUF`` of the fake's sockets in that test: the kernel's default grows to megabytes
(4 MiB), which would take seconds of this feed before the fake had to wait for the socket."""


async def test_a_slow_sink_backpressures_the_exchange_and_keeps_the_connection(
    transport: Transport,
) -> None:
    """``OVERFLOW=block`` and a sink slower than the pong timeout: pings every 0.5 s, 2 s for
    the pong; the queue is not drained until our ping has waited more than twice that. The
    reads pause: the fake exchange's trades wait for the socket (TCP backpressure: more than
    half a second of its trades in its send backlog) while the connection stays: the pong is read
    once the reads resume, nothing is missing (no reconnect, no gap)."""
    ping_timeout = 2.0
    async with FakeExchange(
        "binance", rate=BACKPRESSURE_RATE, symbols=["BTCUSDT"], clock=SYSTEM_CLOCK
    ) as exchange:
        # The fake's listening socket (no public handle): the connections it accepts inherit
        # its SO_SNDBUF.
        assert exchange._server is not None
        for sock in exchange._server.sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        session, queue = make_session(
            exchange.url,
            SYSTEM_CLOCK,
            transport,
            maxsize=1_000,
            ping_interval=0.5,
            ping_timeout=ping_timeout,
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
                await until(lambda: _overdue(session, 2 * ping_timeout) and _logged(session))
                assert session.backpressured.is_set(), "the reads resumed without the sink"
                backlog = exchange.ledger.send_backlog_peak
                consumer = asyncio.create_task(_consume(queue, ids))
                # the sink is back: the reads resume and the pong behind the backlog is read
                await logs.wait_for(lambda: bool(logs.docs("reads_paused")))
                await until(lambda: session.pong_waited() is None)
            finally:
                stop.set()
                async with asyncio.timeout(20):
                    await task
                if consumer is not None:
                    consumer.cancel()
    sent = exchange.ledger.sent_ids("BTCUSDT")  # settled: the fake has exited
    ids += [t.trade_id for t in drained(queue)]
    print(f"{transport.name}: send backlog peak {backlog} trades while the reads paused")
    # Without backpressure the backlog holds a tick's trades or two (tens).
    assert backlog > BACKPRESSURE_RATE // 2, "the exchange never waited for the socket"
    (paused,) = logs.docs("reads_paused")[:1]
    assert paused["pong_waited_s"] > 2 * ping_timeout, paused
    assert not logs.docs("reconnecting"), "\n".join(logs.lines)
    assert session.connections == 1 and session.counters.reconnects == 0
    assert [int(i) for i in ids] == sent, "a trade the fake exchange sent is missing"
    assert session.counters.unclean_closes == 0


def _logged(session: WebSocketSession) -> bool:
    since = session.paused_since
    return since is not None and SYSTEM_CLOCK.monotonic() - since > BACKPRESSURE_LOG_SECONDS


def _overdue(session: WebSocketSession, seconds: float) -> bool:
    waited = session.pong_waited()
    return waited is not None and waited > seconds


async def _consume(queue: BatchQueue[Trade], ids: list[str]) -> None:
    while (batch := await queue.get()) is not None:
        ids += [t.trade_id for t in batch]


# -- capture of raw frames --------------------------------------------------------------------


async def test_capture_keeps_every_frame_in_and_out(transport: Transport) -> None:
    """With a capture queue, the session keeps the connection (its URL), each frame it sent
    (OKX's subscribe, a keepalive) and each frame it received, stamped with the ``ts`` its
    trades got as ``ts_recv``: parsing the received frames again at their ``ts`` gives the
    queued trades exactly, and those are the ledger's."""
    clock = FakeClock()
    protocol = get_protocol("okx")
    counters = Counters()
    queue: BatchQueue[Trade] = BatchQueue(100_000)
    captured: BatchQueue[raw.RawFrame] = BatchQueue(100_000)
    async with FakeExchange(
        "okx", rate=200, symbols=["BTC-USDT"], clock=clock, max_trades=300, seed=7
    ) as fx:
        session = WebSocketSession(
            protocol,
            fx.url,
            ["BTC-USDT"],
            queue,
            counters=counters,
            gaps=GapTracker(),
            invalid_log=InvalidFrameLog(counters),
            backoff=RetryPolicy(initial=0.01, cap=0.02),
            clock=clock,
            capture=captured,
            transport=transport,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(session.run(stop))
        await fx.wait_ready(1)
        await until(lambda: session.tally.is_subscribed)
        clock.advance(1.5)  # all 300 trades
        await fx.wait_tick()
        await until(lambda: fx.ledger.total == 300)
        await stopped(task, stop)
    records: list[raw.RawFrame] = []
    while (batch := captured.get_nowait()) is not None:
        records += batch
    stored = drained(queue)
    assert trade_view(stored) == trade_view(list(fx.ledger.trades())) and len(stored) == 300

    connect, *rest = records
    assert isinstance(connect, raw.RawConnect) and connect.url == session.url
    sent = [r.frame for r in rest if r.dir == raw.DIR_OUT]
    assert sent[: len(protocol.subscribe_messages(["BTC-USDT"]))] == list(
        protocol.subscribe_messages(["BTC-USDT"])
    )
    reparsed: list[Trade] = []
    for record in rest:
        if record.dir != raw.DIR_IN:
            continue
        assert record.exchange == "okx"
        result = get_protocol("okx").parse(record.frame.encode(), record.ts)
        if isinstance(result, (tuple, list)):
            reparsed += result
    assert reparsed == stored  # field for field, ts_recv included


# -- hostile input ----------------------------------------------------------------------------


async def test_the_session_counts_each_kind_and_logs_it_once(transport: Transport) -> None:
    """Hostile frames (invalid UTF-8, deep nesting, a huge number, hostile symbols) are
    counted and logged once per kind, end no connection, and lose no trade."""
    clock = FakeClock()
    async with FakeExchange(
        "binance",
        rate=400,
        symbols=["BTCUSDT"],
        clock=clock,
        faults=Faults(hostile=0.2),
        seed=11,
    ) as fx:
        session, queue = make_session(fx.url, clock, transport)
        counters = session.counters
        stop = asyncio.Event()
        with captured_logs("INFO") as logs:
            task = asyncio.create_task(session.run(stop))
            await fx.wait_ready(1)
            async with asyncio.timeout(30):
                while sum(fx.ledger.hostile_sent.values()) < 40:
                    clock.advance(0.1)
                    await fx.wait_tick()
            # The clock stands still now: nothing more is sent; the stop drains what arrived.
            await stopped(task, stop, limit=10)
    sent = fx.ledger.hostile_sent
    assert set(sent) == set(HOSTILE_KINDS)
    assert counters.invalid == sum(sent.values())
    assert counters.reconnects == 0  # nothing hostile ended the connection
    logged = logs.docs("invalid_frame")
    assert sorted(doc["kind"] for doc in logged) == sorted(HOSTILE_KINDS)
    stored = drained(queue)
    assert [t.trade_id for t in stored] == [t.trade_id for t in fx.ledger.trades()]
