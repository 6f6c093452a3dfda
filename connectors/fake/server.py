"""The fake exchange: a real WebSocket server on loopback speaking an exchange's protocol.

See docs/testing.md#the-fake-exchange.

::

    async with FakeExchange("binance", rate=1000, symbols=["BTCUSDT"]) as fx:
        ...connect to fx.url...
        fx.ledger.sent_ids("BTCUSDT")

Two modes:

- timed (``rate`` trades/s): a ticker every ``tick`` seconds takes the trades that became due from
  the :class:`~connectors.fake.market.Market` (by the injected clock) and hands each connection the
  ones it subscribed to, through a bounded per-connection queue (a reader that falls more than
  ``queue_batches`` ticks behind loses batches; they are counted as undelivered). The market runs
  whether or not anyone is connected, so a disconnect shows up as a gap in trade ids.
- max (``rate=None``): each connection pulls trades from the market on demand and sends them in a
  tight loop; websockets' write flow control (and an explicit yield per batch) keeps the loop fair.
  Without frame faults (malformed, oversized, hostile) and with one stream per symbol, a round
  is the fast path's (:mod:`connectors.fake.fast`): the market's next run of ids over each
  symbol's ring of values, rendered from the protocol's own frame templates, framed here and
  written in one piece inside websockets' ``send_context`` (its flow control), recorded in the
  ledger as one run. The same ids, order and frames the exact path would send for those
  trades; the prices, sizes and sides come from the rings instead of the market's walk.

Frame faults replace a trade's frame: ``malformed`` by text the client must reject (the trade is
not sent), ``oversized`` by a text frame larger than a client's 1 MiB ``max_size``. A client's
websockets fails the connection with code 1009 when it reads that frame's header, so nothing
after it on that connection can arrive: the server sends the frames before it and the oversized
frame itself, counts the rest as undelivered and closes the connection (1001). Only trades whose
frames went out ahead of the oversized one are in the ledger. ``hostile`` replaces a trade's
frame by hostile input (:mod:`connectors.fake.hostile`; the trade is not sent), the kinds in
turn across the server, so every kind goes out once that many frames were replaced.
``restart-ids=N`` restarts the market's trade ids at 1 when connection N opens (before it
subscribes): that connection's trades, and later ones, continue the new sequence.

A third mode plays a recording (``recording=RecordedFeed(...)``, see
:mod:`connectors.fake.recorded`): no market; each connection, once it has subscribed to anything
(the URL's streams or a subscribe message the adapter accepts), gets the recording's received
frames of the exchange, unchanged and in order, at the recorded pace, faster, or as fast as the
socket takes them, once or in a loop. The ledger holds the trades those frames carry, parsed
with the exchange's client protocol. Faults other than ``reject-unknown`` do not apply to it.

What "sent" means: a trade is in the ledger once its frame's bytes have left this process (the
kernel's socket buffer has them). The server's write buffer limit is 0 (``write_limit=0``): a
send returns only when the transport has handed every byte to the kernel, so nothing recorded
as sent can still sit in the server's own buffer. A send that does not complete (the client went
away, or websockets aborted the connection after its close timeout, discarding what its buffer
held) is settled once the connection is closed: the frames that had wholly left by then are
recorded (:class:`_TrackedConnection` counts the bytes written and those still buffered when the
transport was torn down), the rest, with the trades still queued for the connection, are counted
as undelivered, never as sent. What the
kernel had taken is sent: if the client then discards it (it aborted its socket with data
unread), the loss is the client's.

Order books (:mod:`connectors.fake.book_market`, docs: testing.md#order-books-on-the-fake-exchange):
besides trades the server keeps one evolving book per symbol, ``book_rate`` messages per second,
timed by the same clock and ticker in every mode but recording. A connection that subscribes to
a symbol's book channel gets its messages through the same queue as its trades (so a stall, a
disconnect or a slow reader loses them too; in max mode the blast loop sends them between its
rounds), framed by the session with the client feeds' own
encoders; an in-band exchange's subscription is answered with a snapshot first. ``book_rate``
None (``--book-rate max``, with ``rate`` None too) makes the books on demand instead: a blast
loop whose connection has book streams and nothing queued takes :data:`BOOK_BATCH` messages per
symbol and queues them for every book connection, so the books move as fast as the fastest book
reader takes them (a slower one falls behind and loses messages, as from a stall). Plain HTTP GETs
on the same port are the REST snapshot endpoints (Binance's ``/api/v3/depth``, Bitstamp's
``/api/v2/order_book/{pair}/``). The book ledger (``ledger.books``,
:mod:`connectors.fake.book_ledger`) records what the books were and what was sent.

Time-based faults (disconnect, stall, shutdown notices) use the injected clock's monotonic time
measured from the connection's opening; a test drives them with ``engine.clock.FakeClock`` and
never sleeps. Every connection's tasks are owned by a TaskGroup inside its handler; the ticker is
owned by the server's TaskGroup; leaving the context closes every connection (1001) and waits,
aborting after ``EXIT_ABORT_SECONDS`` a connection whose close is still stuck (its
close frame waits behind data a client does not read: websockets' close would wait for it).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from functools import cache
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from connectors.base import ExchangeProtocol
from connectors.fake.adapters import Reply, ServerSession, get_adapter
from connectors.fake.book_channels import (
    BookSession,
    RestError,
    is_upgrade,
    json_response,
)
from connectors.fake.book_fast import BookRunFrames
from connectors.fake.book_ledger import RestSnapshot
from connectors.fake.book_market import DEFAULT_RATE, BookMarket, BookMessage, CycleRun, ViewKey
from connectors.fake.fast import RunFrames, frames_within
from connectors.fake.faults import Faults, Stall
from connectors.fake.hostile import HOSTILE_KINDS, hostile_frame
from connectors.fake.ledger import Ledger
from connectors.fake.market import Market
from connectors.fake.recorded import Pace, RecordedFeed
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import RecordingError
from engine.records import Trade

__all__ = ["FakeExchange", "Faults", "Ledger", "RecordedFeed", "Stall", "send_many"]


PING_INTERVAL: Final = 20.0
PING_TIMEOUT: Final = 60.0
TICK_SECONDS: Final = 0.01
"""The timed market's default tick."""
CLOSE_TIMEOUT: Final = 30.0
"""How long a closing connection waits for the client's close frame before it is aborted: a
client that stopped and now reads megabytes of buffered trades before it reaches the close
handshake must get the time a loaded machine needs (a short bound would discard the close
frame and make a clean stop look unclean)."""
EXIT_ABORT_SECONDS: Final = 3.0
"""At the fake's own exit, how long a connection's close may stay stuck before it is aborted."""
WAIT_LIMIT: Final = 10.0
"""Bound of :meth:`FakeExchange.wait_ready` and :meth:`FakeExchange.wait_tick`."""
BLAST_BATCH: Final = 256
"""Trades taken from the market per round in max mode (one event-loop yield per round)."""
FAST_BATCH: Final = 512
"""Trades per round of max mode's fast path (one write and one event-loop yield per round)."""
BOOK_BATCH: Final = 32
"""Book messages per symbol per round of max mode with ``book_rate`` None (about 10 level
changes each)."""

OVERSIZED_BYTES: Final = (1 << 20) + 4096
"""Length of an ``oversized`` fault frame: over a client's 1 MiB frame limit (``max_size``)."""

# What a queued frame carries
_TRADE: Final = 0  # a trade's frame
_MALFORMED: Final = 1  # malformed text in place of a trade (no trade)
_OVERSIZED: Final = 2  # an oversized frame in place of the trade (which is not delivered)
_CONTROL: Final = 3  # a heartbeat or notice (no trade)
_HOSTILE: Final = 4  # + i: hostile input of kind HOSTILE_KINDS[i] in place of a trade (no trade)

# A queued item: (trade or None, frame, kind)
_Item = tuple[Trade | None, str, int]
# A queued book frame: (message, the channel's depth, frame, checksum corrupted)
_BookItem = tuple[BookMessage, int | None, str, bool]


class _BookBatch:
    """Queue item: book frames for one connection, in order; or (``runs``, the cycle's fast
    path) runs of a cycle, each on its (stream, depth). ``size``: the messages in all."""

    __slots__ = ("items", "runs", "size")

    def __init__(
        self, items: list[_BookItem], runs: Sequence[tuple[str, int | None, CycleRun]] = ()
    ) -> None:
        self.items = items
        self.runs = runs
        self.size = len(items) + sum(run.count for _, _, run in runs)


@cache
def oversized_frame() -> str:
    """The ``oversized`` fault's frame: :data:`OVERSIZED_BYTES` of text that is not JSON (a
    client that accepts frames this large still rejects it as malformed)."""
    head = "fake exchange: oversized frame fault "
    return head + "." * (OVERSIZED_BYTES - len(head))


class _TrackedConnection(ServerConnection):
    """A server connection that knows how many of the bytes written to it have left the process
    (were handed to the kernel), even after an abort discarded what its buffer still held."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        #: Bytes written to the transport so far (frames, control frames, the handshake).
        self.written = 0
        #: Bytes the transport still held when it was torn down (an abort or an error).
        self.unsent_at_end: int | None = None
        tracked = cast(asyncio.Transport, transport)
        write = tracked.write
        # Every abort and fatal error of a selector transport goes through _force_close, which
        # discards the buffer: take its size first (abort() where there is no _force_close).
        name = "_force_close" if hasattr(tracked, "_force_close") else "abort"
        teardown = getattr(tracked, name)

        def counting_write(data: bytes | bytearray | memoryview) -> None:
            self.written += len(data)
            write(data)

        def counting_teardown(*args: object) -> None:
            if self.unsent_at_end is None:
                self.unsent_at_end = tracked.get_write_buffer_size()
            teardown(*args)

        try:
            setattr(tracked, "write", counting_write)  # noqa: B010 - an instance's own attribute
            setattr(tracked, name, counting_teardown)
        except AttributeError:
            # uvloop's transports are C types whose methods cannot be replaced (the fake runs
            # on uvloop inside `feedvault demo`): count through a delegating wrapper instead,
            # whose abort() is the transport's own abort() (uvloop's _force_close takes the
            # error as an argument). Only the connection's own aborts are seen there, not
            # uvloop's internal ones.
            abort = tracked.abort

            def counting_abort() -> None:
                if self.unsent_at_end is None:
                    self.unsent_at_end = tracked.get_write_buffer_size()
                abort()

            self.transport = cast(
                asyncio.Transport, _CountingTransport(tracked, counting_write, counting_abort)
            )

    @property
    def bytes_out(self) -> int:
        """Bytes that have left the process for the kernel so far."""
        if self.unsent_at_end is not None:
            return self.written - self.unsent_at_end
        return self.written - self.transport.get_write_buffer_size()


class _CountingTransport:
    """A transport whose ``write`` and ``abort`` go through the given counters; everything
    else is the wrapped transport's."""

    def __init__(
        self,
        inner: asyncio.Transport,
        write: Callable[[bytes | bytearray | memoryview], None],
        abort: Callable[..., None],
    ) -> None:
        self._inner = inner
        self.write = write
        self.abort = abort

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SendProgress:
    """Where a :func:`send_many`'s frames lie in its connection's byte stream, so a send that
    did not complete can tell which frames wholly left the process before the end."""

    def __init__(self) -> None:
        self.ends: list[int] = []
        """Offset (in the connection's written bytes) just past each frame, in order."""

    def frames_out(self, ws: ServerConnection) -> int:
        """How many of the frames, from the first, have wholly left the process (all of them
        when ``ws`` is not tracked)."""
        if not isinstance(ws, _TrackedConnection):  # pragma: no cover - always tracked here
            return sys.maxsize
        return bisect.bisect_right(self.ends, ws.bytes_out)


async def send_many(
    ws: ServerConnection, frames: Sequence[str], progress: SendProgress | None = None
) -> None:
    """Send each text as its own WebSocket message, written to the socket in one piece.

    Equivalent to ``for f in frames: await ws.send(f)`` (same framing, same write flow
    control: it waits while the write buffer is above its high-water mark), without a system
    call per message. Uses websockets' Sans-I/O layer (``protocol.send_text``) inside the
    connection's ``send_context()``. Raises ``ConnectionClosed`` like ``send``. ``progress``
    receives where each frame lies in the connection's byte stream.
    """
    while ws.send_in_progress is not None:
        await asyncio.shield(ws.send_in_progress)
    async with ws.send_context():
        protocol = ws.protocol
        ends: list[int] | None = None
        if progress is not None and isinstance(ws, _TrackedConnection):
            ends, offset = progress.ends, ws.written
        chunks: list[bytes] = []
        for frame in frames:
            # surrogateescape: the hostile fault's invalid UTF-8 travels as lone surrogates
            protocol.send_text(frame.encode("utf-8", "surrogateescape"))
            if ends is not None:
                written = protocol.data_to_send()
                offset += sum(len(chunk) for chunk in written)
                ends.append(offset)
                chunks += written
        chunks += protocol.data_to_send()
        if all(chunks):
            ws.transport.write(b"".join(chunks))
        else:  # pragma: no cover - an end-of-stream marker; let websockets handle it
            for chunk in chunks:
                if chunk:
                    ws.transport.write(chunk)
                elif ws.transport.can_write_eof():
                    ws.transport.write_eof()


class _Done(Exception):
    """Internal: ends a connection's task group when one side has finished."""


class _Close:
    """Queue marker: close the connection (disconnect fault)."""


_CLOSE: Final = _Close()


def _trade_count(item: list[_Item] | _Close | _BookBatch) -> int:
    """Trades in a queued batch (its other frames are control frames and faults)."""
    if isinstance(item, _Close | _BookBatch):
        return 0
    return sum(1 for trade, _, _ in item if trade is not None)


class _Conn:
    """Server-side state of one client connection."""

    def __init__(
        self,
        number: int,
        ws: ServerConnection,
        session: ServerSession,
        opened: float,
        seed: int,
        queue_batches: int,
    ) -> None:
        self.number = number
        self.ws = ws
        self.session = session
        self.opened = opened
        self.queue: asyncio.Queue[list[_Item] | _Close | _BookBatch] = asyncio.Queue(queue_batches)
        self.backlog_trades = 0
        """Trades queued in ``queue`` or being written to the socket (timed mode)."""
        self.closing = False
        self.notices_sent = 0
        self.rng = random.Random(f"{seed}:conn:{number}")
        self.changed = asyncio.Event()
        self.subscribed = False
        self.book_streams: dict[str, tuple[ViewKey, int | None]] = {}
        """Subscribed book streams: their view of the book market and their depth."""
        self.inflight: tuple[SendProgress, Callable[[int], None]] | None = None
        """A send in progress: where its frames lie, and how to record its first N frames as
        sent and the rest as undelivered (settled when the connection has closed)."""
        self.book_frames: BookRunFrames | None = None
        """Max mode's book cycle: this connection's frame templates."""


class FakeExchange:
    """A fake exchange server; use as ``async with``.

    ``protocol`` names a server adapter (``"binance"``); ``symbols`` are the raw symbols it trades;
    ``rate`` is trades/s in total, or None for max. ``port=0`` picks a free port (see
    :attr:`port`, :attr:`url`). ``ledger`` defaults to an in-memory :class:`Ledger`. ``clock``
    drives trade times, the pace of the timed market and the time-based faults. ``max_trades``
    caps the total the market produces. ``queue_batches`` bounds each connection's backlog.
    ``recording`` plays a recorded feed instead of the market (``rate``, ``seed``, ``first_id``
    and ``max_trades`` are then unused, ``symbols`` may be empty and :attr:`market` is None).
    ``fast=False`` keeps max mode on the exact path (a trade made and sent at a time).
    ``book_rate`` is book messages per second per symbol (:attr:`books`; None in recording
    mode), or None: on demand, in max mode only (ValueError with a timed ``rate``).
    """

    def __init__(
        self,
        protocol: str = "binance",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float | None,
        symbols: Sequence[str],
        faults: Faults | None = None,
        seed: int = 1,
        first_id: int = 1,
        clock: Clock = SYSTEM_CLOCK,
        ledger: Ledger | None = None,
        max_trades: int | None = None,
        tick: float = TICK_SECONDS,
        queue_batches: int = 1000,
        recording: RecordedFeed | None = None,
        fast: bool = True,
        book_rate: float | None = DEFAULT_RATE,
    ) -> None:
        if book_rate is None and rate is not None and recording is None:
            raise ValueError("book_rate None (max) needs rate None (max mode)")
        self.adapter = get_adapter(protocol)
        self.fast = fast
        self.protocol = protocol
        self.host = host
        self._port = port
        self.faults = faults if faults is not None else Faults()
        self._hostile_count = 0  # hostile frames made so far (picks the next kind)
        self.seed = seed
        self.clock = clock
        self.ledger = ledger if ledger is not None else Ledger()
        self.recording = recording
        self.market: Market | None = None
        if recording is None:
            self.market = Market(
                [s.upper() for s in symbols],
                rate=rate,
                seed=seed,
                first_id=first_id,
                exchange=protocol,
                clock=clock,
                max_trades=max_trades,
            )
            self.symbols = frozenset(self.market.symbols)
            self.books: BookMarket | None = BookMarket(
                self.market.symbols,
                rate=book_rate,
                seed=seed,
                exchange=protocol,
                clock=clock,
                record=self.ledger.books.made,
            )
        else:
            self.books = None
            self.symbols = frozenset(s.upper() for s in symbols)
        self.tick = tick
        self.queue_batches = queue_batches
        self.connections_opened = 0
        self._numbers = itertools.count(1)
        self._conns: dict[int, _Conn] = {}
        self._stack: AsyncExitStack | None = None
        self._server: Server | None = None
        self._stopping = asyncio.Event()
        self.connections_ready = 0
        self.ticks = 0
        self.recorded_frames_sent = 0
        """Recorded frames sent (recording mode), all connections and passes together."""
        self.recorded_passes = 0
        """Passes through the recording completed (recording mode), all connections together."""
        self.recording_error: RecordingError | None = None
        """The recording's first read error, if a pass met one (that connection closed 1011)."""
        self._ready = asyncio.Condition()
        self._book_sent: dict[str, int] = {}  # book updates considered per symbol (faults)
        self._rest_asked: dict[str, int] = {}  # REST snapshots asked per symbol (faults)
        self.rest_held = 0
        """REST snapshots being held back by the ``late-snapshot`` fault right now."""
        self._book_subscribed: dict[str, int] = {}  # update id at the latest diff subscription
        self._restarts = 0  # book-restart faults applied so far
        self._started = clock.monotonic()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after entering)."""
        return self._port

    @property
    def url(self) -> str:
        """``ws://host:port`` (after entering)."""
        return f"ws://{self.host}:{self._port}"

    @property
    def http_url(self) -> str:
        """``http://host:port``: the REST snapshot endpoints' base (after entering)."""
        return f"http://{self.host}:{self._port}"

    @property
    def serves_rest(self) -> bool:
        """True when the exchange's book snapshots come over REST (Binance, Bitstamp)."""
        return self.books is not None and hasattr(self.adapter, "rest")

    async def wait_ready(self, connections: int) -> None:
        """Wait until ``connections`` connections (counted since start) have their URL
        subscriptions in place; TimeoutError after ``WAIT_LIMIT`` seconds."""
        async with asyncio.timeout(WAIT_LIMIT), self._ready:
            await self._ready.wait_for(lambda: self.connections_ready >= connections)

    async def wait_tick(self) -> None:
        """Wait until the timed-mode ticker has run once more, so it has seen the clock as it
        is now (a test calls this after ``FakeClock.advance``); TimeoutError after
        ``WAIT_LIMIT`` seconds."""
        target = self.ticks + 1
        async with asyncio.timeout(WAIT_LIMIT), self._ready:
            await self._ready.wait_for(lambda: self.ticks >= target)

    @property
    def live_connections(self) -> int:
        """Connections currently open."""
        return len(self._conns)

    async def __aenter__(self) -> FakeExchange:
        stack = AsyncExitStack()
        try:
            self._server = await stack.enter_async_context(
                serve(
                    self._handle,
                    self.host,
                    self._port,
                    process_request=self._check_path,
                    ping_interval=PING_INTERVAL,
                    ping_timeout=PING_TIMEOUT,
                    compression=None,
                    max_size=1 << 16,
                    close_timeout=CLOSE_TIMEOUT,
                    # A send returns once the kernel has every byte (see "What sent means").
                    write_limit=0,
                    create_connection=_TrackedConnection,
                )
            )
            self._port = self._server.sockets[0].getsockname()[1]
            group = await stack.enter_async_context(asyncio.TaskGroup())
            stack.callback(self._stopping.set)  # runs first on exit: ends the ticker
            if self.market is not None and (self.market.rate is not None or self.books is not None):
                group.create_task(self._ticker(), name="fake-exchange-ticker")
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            loop = asyncio.get_running_loop()
            stuck = loop.call_later(EXIT_ABORT_SECONDS, self._abort_connections)
            try:
                await stack.aclose()
            finally:
                stuck.cancel()

    def _abort_connections(self) -> None:
        """Abort the connections still open (the exit's bound on a stuck close)."""
        for conn in list(self._conns.values()):
            conn.ws.transport.abort()

    # -- connections -----------------------------------------------------------------------------

    async def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        if not is_upgrade(request):
            return await self._rest(connection, request)
        if self.adapter.session(request.path, self.symbols, self.faults) is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        session = self.adapter.session(path, self.symbols, self.faults)
        if session is None:  # pragma: no cover - _check_path answered 404 already
            return
        number = next(self._numbers)
        if number == self.faults.restart_ids and self.market is not None:
            self.market.restart_ids()
        opened = self.clock.monotonic()
        conn = _Conn(number, ws, session, opened, self.seed, self.queue_batches)
        self.connections_opened += 1
        self._conns[number] = conn
        try:
            if await self._reply(conn, session.opening()):
                return
            async with self._ready:
                self.connections_ready += 1
                self._ready.notify_all()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read_loop(conn))
                if self.market is None:
                    group.create_task(self._recorded_loop(conn))
                elif self.market.rate is None:
                    group.create_task(self._blast_loop(conn))  # it sends book frames too
                else:
                    group.create_task(self._timed_send_loop(conn))
        except* (ConnectionClosed, _Done):
            pass
        finally:
            try:
                if conn.inflight is not None:
                    # A send did not complete: once the connection is closed (its buffer
                    # flushed, or discarded by an abort), what left is known. Still listed
                    # meanwhile, so the exit's abort can end a close stuck behind unread data.
                    progress, settle = conn.inflight
                    conn.inflight = None
                    try:
                        await ws.close()
                    finally:
                        settle(progress.frames_out(ws))
            finally:
                del self._conns[number]
                self._undeliver_queue(conn)

    async def _reply(self, conn: _Conn, reply: Reply) -> bool:
        """Send a reply's frames, then apply it; True when the connection was closed."""
        for frame in reply.frames:
            await conn.ws.send(frame)
        conn.session.apply(reply)
        if self.books is not None and (reply.subscribe or reply.unsubscribe):
            self._book_subscriptions(conn, reply)
        if reply.subscribe:
            conn.subscribed = True
        conn.changed.set()
        if reply.close is not None:
            conn.closing = True
            await conn.ws.close(*reply.close)
            return True
        return False

    async def _read_loop(self, conn: _Conn) -> None:
        async for frame in conn.ws:
            if await self._reply(conn, conn.session.on_message(frame)):
                break
        raise _Done

    # -- faults ----------------------------------------------------------------------------------

    def _faults_due(self, conn: _Conn, now: float) -> tuple[bool, str | None, bool]:
        """(close now, notice frame to send, stalled) for ``conn`` at monotonic time ``now``."""
        faults, age = self.faults, now - conn.opened
        if faults.disconnect_every is not None and age >= faults.disconnect_every:
            return True, None, False
        notice = None
        every = faults.shutdown_notice_every
        if every is not None and age >= every * (conn.notices_sent + 1):
            conn.notices_sent = int(age // every)
            notice = conn.session.shutdown_notice(self.clock.time_ns() // 1_000_000)
        stalled = faults.stall is not None and faults.stall.active(age)
        return False, notice, stalled

    def _frame(self, conn: _Conn, trade: Trade, stream: str) -> _Item:
        faults = self.faults
        if faults.malformed and conn.rng.random() < faults.malformed:
            return None, conn.session.malformed(trade, stream, conn.rng), _MALFORMED
        if faults.oversized and conn.rng.random() < faults.oversized:
            return trade, oversized_frame(), _OVERSIZED
        if faults.hostile and conn.rng.random() < faults.hostile:
            number = self._hostile_count
            self._hostile_count += 1
            index = number % len(HOSTILE_KINDS)
            return None, hostile_frame(conn.session, trade, stream, number), _HOSTILE + index
        return trade, conn.session.encode(trade, stream), _TRADE

    async def _send_items(self, conn: _Conn, items: list[_Item]) -> bool:
        """Send ``items`` and record what went out in the ledger. With an oversized frame among
        them, send up to and including the first one only, count the trades after it as
        undelivered, mark the connection closing and return True (the caller closes it)."""
        cut = None
        if self.faults.oversized:  # scan only when the fault is on (max mode's hot path)
            cut = next((i for i, item in enumerate(items) if item[2] == _OVERSIZED), None)
        sent = items if cut is None else items[: cut + 1]
        progress = SendProgress()

        def settle(frames_out: int) -> None:
            out = min(frames_out, len(items) if cut is None else cut)
            self._record_sent(conn, items[:out])
            self.ledger.undelivered += sum(1 for t, _, _ in items[out:] if t is not None)

        conn.inflight = (progress, settle)
        await send_many(conn.ws, [frame for _, frame, _ in sent], progress)
        conn.inflight = None
        if progress.frames_out(conn.ws) < len(sent):
            # websockets' drain also returns when an abort tore the connection down
            settle(progress.frames_out(conn.ws))
            raise _Done
        ledger = self.ledger
        self._record_sent(conn, items if cut is None else items[:cut])
        if cut is None:
            return False
        conn.closing = True
        ledger.oversized_sent += 1
        ledger.undelivered += sum(1 for t, _, _ in items[cut + 1 :] if t is not None)
        return True

    def _record_sent(self, conn: _Conn, items: list[_Item]) -> None:
        """Record frames that left for ``conn`` in the ledger."""
        add, ledger, number = self.ledger.add, self.ledger, conn.number
        for trade, _, kind in items:
            if kind == _TRADE:
                assert trade is not None
                add(number, trade)
            elif kind == _MALFORMED:
                ledger.malformed_sent += 1
            elif kind >= _HOSTILE:
                name = HOSTILE_KINDS[kind - _HOSTILE]
                ledger.hostile_sent[name] = ledger.hostile_sent.get(name, 0) + 1

    # -- timed mode ------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        assert self.market is not None
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick):
                    await self._stopping.wait()
            now = self.clock.monotonic()
            trades = self.market.advance()
            books = self._advance_books(now)
            timed = self.market.rate is not None
            for conn in list(self._conns.values()):
                if timed:
                    self._service(conn, now, trades)
                if books and conn.book_streams:
                    self._service_books(conn, now, books)
            async with self._ready:
                self.ticks += 1
                self._ready.notify_all()

    def _service(self, conn: _Conn, now: float, trades: list[Trade]) -> None:
        """Hand ``conn`` its share of this tick's trades and due faults (never blocks)."""
        if conn.closing:
            self._count_undelivered(conn, trades)
            return
        close, notice, stalled = self._faults_due(conn, now)
        if close:
            conn.closing = True
            self._count_undelivered(conn, trades)
            self._put(conn, _CLOSE, force=True)
            return
        batch: list[_Item] = []
        if notice is not None:
            batch.append((None, notice, _CONTROL))
        if not stalled:
            now_ms = self.clock.time_ns() // 1_000_000
            batch.extend((None, beat, _CONTROL) for beat in conn.session.heartbeats(now_ms))
        routes = conn.session.routes()
        if trades and routes:
            if stalled:
                self._count_undelivered(conn, trades)
            else:
                frame = self._frame
                for trade in trades:
                    streams = routes.get(trade.raw_symbol)
                    if streams:
                        batch.extend(frame(conn, trade, stream) for stream in streams)
        if batch:
            self._put(conn, batch, force=notice is not None)

    def _put(self, conn: _Conn, item: list[_Item] | _Close | _BookBatch, *, force: bool) -> None:
        """Queue without blocking; the backlog is bounded by ``queue_batches``: a full queue
        drops the new batch, or (``force``) the oldest one to make room. Keeps the ledger's
        ``send_backlog_peak``."""
        queue, ledger = conn.queue, self.ledger
        if queue.qsize() >= self.queue_batches:
            if not force:
                assert not isinstance(item, _Close)
                ledger.undelivered += _trade_count(item)
                if isinstance(item, _BookBatch):
                    ledger.books.undelivered += item.size
                return
            oldest = queue.get_nowait()
            if isinstance(oldest, _BookBatch):
                ledger.books.undelivered += oldest.size
            dropped = _trade_count(oldest)
            conn.backlog_trades -= dropped
            ledger.undelivered += dropped
        queue.put_nowait(item)
        conn.backlog_trades += _trade_count(item)
        if conn.backlog_trades > ledger.send_backlog_peak:
            ledger.send_backlog_peak = conn.backlog_trades

    def _count_undelivered(self, conn: _Conn, trades: list[Trade]) -> None:
        routes = conn.session.routes()
        if routes:
            self.ledger.undelivered += sum(len(routes.get(t.raw_symbol, ())) for t in trades)

    def _undeliver_queue(self, conn: _Conn) -> None:
        """The connection ended: the trades queued for it and those of a send in progress (both
        in ``backlog_trades``) were never sent."""
        while not conn.queue.empty():
            item = conn.queue.get_nowait()
            if isinstance(item, _BookBatch):
                self.ledger.books.undelivered += item.size
        self.ledger.undelivered += conn.backlog_trades
        conn.backlog_trades = 0

    async def _timed_send_loop(self, conn: _Conn) -> None:
        ws, queue = conn.ws, conn.queue
        while True:
            item = await queue.get()  # ends when the connection ends (the group cancels it)
            if isinstance(item, _Close):
                await ws.close(1001, "fake exchange: disconnect fault")
                raise _Done
            if isinstance(item, _BookBatch):
                await self._send_books(conn, item)
                continue
            try:
                closing = await self._send_items(conn, item)
            finally:
                # sent or cut, or (a send that did not complete) settled with the connection
                conn.backlog_trades -= _trade_count(item)
            if closing:
                await ws.close(1001, "fake exchange: oversized fault")
                raise _Done

    # -- order books -----------------------------------------------------------------------------

    def _book_subscriptions(self, conn: _Conn, reply: Reply) -> None:
        """Follow a reply's book streams: a new one gets its view of the book market and, on
        an in-band exchange, a snapshot queued ahead of its first update."""
        books, session = self.books, conn.session
        assert books is not None
        if not isinstance(session, BookSession):
            return
        for stream in reply.unsubscribe:
            conn.book_streams.pop(stream, None)
        for stream in reply.subscribe:
            channel = session.book_channel(stream)
            if channel is None:
                continue
            raw = channel.raw_symbol
            key = books.view(
                raw, channel.depth, pushout=channel.pushout, top_levels=channel.top_levels
            )
            conn.book_streams[stream] = (key, channel.depth)
            if not session.BOOK_IN_BAND:
                self._book_subscribed[raw] = books.update_id(raw)
                continue
            snapshot = books.snapshot(key)
            frame = session.encode_book(snapshot, stream, False)
            if frame is not None:
                self._put(conn, _BookBatch([(snapshot, channel.depth, frame, False)]), force=True)

    def _advance_books(self, now: float) -> dict[ViewKey, list[BookMessage]]:
        """The book messages due (after the restarts the ``book-restart`` fault asks for)."""
        books = self.books
        if books is None:
            return {}
        every = self.faults.book_restart
        if not getattr(self.adapter, "BOOK_RESTARTS", True):
            every = None  # a channel that could not show it (no sequence, no snapshot)
        if every is not None and now - self._started >= every * (self._restarts + 1):
            self._restarts = int((now - self._started) // every)
            for raw in books.symbols:
                books.restart(raw)
        return books.advance()

    def _service_books(
        self, conn: _Conn, now: float, out: Mapping[ViewKey, list[BookMessage]]
    ) -> None:
        """Queue ``conn``'s book frames of this tick (with the ``book-gap`` and
        ``book-checksum`` faults), or count them as undelivered (closing, stalled)."""
        session = cast(BookSession, conn.session)  # only sessions that named a book channel
        faults, ledger = self.faults, self.ledger.books
        stalled = faults.stall is not None and faults.stall.active(now - conn.opened)
        gap = faults.book_gap if session.BOOK_SEQUENCED else None
        checksum = faults.book_checksum
        counts = self._book_sent
        items: list[_BookItem] = []
        for stream, (key, depth) in conn.book_streams.items():
            messages = out.get(key)
            if not messages:
                continue
            if conn.closing or stalled:
                ledger.undelivered += len(messages)
                continue
            for msg in messages:
                corrupt = False
                if not msg.snapshot:
                    n = counts[msg.raw_symbol] = counts.get(msg.raw_symbol, 0) + 1
                    if gap is not None and gap.hits(n):
                        ledger.gaps += 1
                        continue
                    corrupt = checksum is not None and checksum.hits(n)
                frame = session.encode_book(msg, stream, corrupt)
                if frame is not None:
                    items.append((msg, depth, frame, corrupt))
        if items:
            self._put(conn, _BookBatch(items), force=False)
            conn.changed.set()  # max mode: wakes an idle blast loop

    async def _send_books(self, conn: _Conn, batch: _BookBatch) -> None:
        """Send a batch of book frames; record those that left (all of them, or, when the
        connection ended during the send, the whole frames that left before)."""
        if batch.runs:
            await self._send_book_runs(conn, batch.runs)
            return
        items = batch.items
        progress = SendProgress()
        sent = self.ledger.books.sent
        number = conn.number

        def settle(frames_out: int) -> None:
            for msg, depth, _frame, corrupt in items[:frames_out]:
                sent(number, depth, msg, corrupt)
            self.ledger.books.undelivered += len(items) - min(frames_out, len(items))

        conn.inflight = (progress, settle)
        await send_many(conn.ws, [frame for _, _, frame, _ in items], progress)
        conn.inflight = None
        if progress.frames_out(conn.ws) < len(items):
            settle(progress.frames_out(conn.ws))
            raise _Done
        settle(len(items))

    async def _rest(self, connection: ServerConnection, request: Request) -> Response:
        """Answer a plain HTTP GET: a REST book snapshot (with the ``late-snapshot`` and
        ``stale-snapshot`` faults), an error the exchange would give, or 404."""
        rest = getattr(self.adapter, "rest", None)
        books = self.books
        answer = None if rest is None or books is None else rest(request.path, self.symbols)
        if answer is None or books is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if isinstance(answer, RestError):
            return json_response(connection, answer.status, answer.body)
        raw, faults = answer.raw_symbol, self.faults
        asked = self.clock.monotonic()
        n = self._rest_asked[raw] = self._rest_asked.get(raw, 0) + 1
        msg = None
        stale = faults.stale_snapshot is not None and faults.stale_snapshot.hits(n)
        if stale:
            msg = self._stale_snapshot(raw)
            stale = msg is not None
        if msg is None:
            msg = books.snapshot((raw, None), answer.limit)
        elif answer.limit is not None:
            msg.bids, msg.asks = msg.bids[: answer.limit], msg.asks[: answer.limit]
        if faults.late_snapshot is not None:
            due = asked + faults.late_snapshot
            self.rest_held += 1
            try:
                while self.clock.monotonic() < due and not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.tick):
                            await self._stopping.wait()
            finally:
                self.rest_held -= 1
        body = self.adapter.encode_rest_snapshot(msg)  # type: ignore[attr-defined]
        self.ledger.books.answered(RestSnapshot(raw, msg.update_id, msg.ts_us, msg.changes, stale))
        return json_response(connection, HTTPStatus.OK, body)

    def _stale_snapshot(self, raw: str) -> BookMessage | None:
        """The book from before the latest diff subscription to ``raw`` (None: no such
        subscription, or its history is gone)."""
        since = self._book_subscribed.get(raw)
        if since is None:
            return None
        try:
            return self.ledger.books.message_before(raw, since)
        except ValueError:
            return None

    # -- max mode --------------------------------------------------------------------------------

    async def _blast_loop(self, conn: _Conn) -> None:
        ws, market = conn.ws, self.market
        assert market is not None
        frame = self._frame
        faults = self.faults
        fast = None
        if self.fast and not (faults.malformed or faults.oversized or faults.hostile):
            session = conn.session
            fast = RunFrames(session.encode, bool(getattr(session, "PURE_ENCODE", False)))
        while True:
            close, notice, stalled = self._faults_due(conn, self.clock.monotonic())
            if close:
                conn.closing = True
                await ws.close(1001, "fake exchange: disconnect fault")
                raise _Done
            if notice is not None:
                await ws.send(notice)
            queue = conn.queue
            while not queue.empty():  # book frames the ticker queued (the only queued items)
                item = queue.get_nowait()
                if isinstance(item, _BookBatch):
                    await self._send_books(conn, item)
            routes = conn.session.routes()
            books = not stalled and queue.empty() and self._book_round(conn)
            if stalled:
                sent = False
            elif fast is not None and all(len(streams) == 1 for streams in routes.values()):
                sent = await self._send_run(conn, fast, routes)
            else:
                trades = market.take(list(routes), BLAST_BATCH)
                sent = bool(trades)
                items = [frame(conn, t, stream) for t in trades for stream in routes[t.raw_symbol]]
                if items and await self._send_items(conn, items):
                    await ws.close(1001, "fake exchange: oversized fault")
                    raise _Done
            if not sent and not books:
                conn.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.tick):
                        await conn.changed.wait()
                continue
            await asyncio.sleep(0)  # one yield per batch even when the socket never pushes back

    def _book_round(self, conn: _Conn) -> bool:
        """Books on demand (``book_rate`` None): when ``conn`` has book streams, make the next
        :data:`BOOK_BATCH` messages per symbol and queue them for every book connection (the
        blast loops send them); True when ``conn`` got frames to send."""
        books = self.books
        if books is None or books.rate is not None or not conn.book_streams:
            return False
        now = self.clock.monotonic()
        if books.cycling or self._book_cycle_applies():
            books.start_cycle(self.ledger.books.made_run)
            runs = {run.cycle.raw_symbol: run for run in books.take_runs(BOOK_BATCH)}
            for other in list(self._conns.values()):
                if other.book_streams:
                    self._service_book_runs(other, now, runs)
            return not conn.queue.empty()
        out = books.take(BOOK_BATCH)
        for other in list(self._conns.values()):
            if other.book_streams:
                self._service_books(other, now, out)
        return not conn.queue.empty()

    def _book_cycle_applies(self) -> bool:
        """Max mode's books as cycles (:meth:`BookMarket.start_cycle`, frames from templates:
        :mod:`connectors.fake.book_fast`): with the fast path on, on Binance's channels (the
        whole book, the snapshot over REST, the frame a function of the ids and time), and
        without the book faults that need each message made apart (``book-gap``,
        ``book-checksum``, ``book-restart``, ``stale-snapshot``); else the exact path."""
        faults = self.faults
        return (
            self.fast
            and self.protocol in ("binance", "binanceus")
            and faults.book_gap is None
            and faults.book_checksum is None
            and faults.book_restart is None
            and faults.stale_snapshot is None
        )

    def _service_book_runs(self, conn: _Conn, now: float, runs: Mapping[str, CycleRun]) -> None:
        """The cycle's :meth:`_service_books`: queue ``conn``'s runs of this round, one per
        book stream, or count them as undelivered (closing, stalled)."""
        faults = self.faults
        stalled = faults.stall is not None and faults.stall.active(now - conn.opened)
        queued = [
            (stream, depth, runs[key[0]])
            for stream, (key, depth) in conn.book_streams.items()
            if key[0] in runs
        ]
        if not queued:
            return
        if conn.closing or stalled:
            self.ledger.books.undelivered += sum(run.count for _, _, run in queued)
            return
        self._put(conn, _BookBatch([], queued), force=False)
        conn.changed.set()  # max mode: wakes an idle blast loop

    async def _send_book_runs(
        self, conn: _Conn, runs: Sequence[tuple[str, int | None, CycleRun]]
    ) -> None:
        """Send runs of the cycle rendered from templates, written in one piece with
        websockets' flow control, recorded as runs (:meth:`BookLedger.sent_run`); a write that
        did not complete records the whole frames that left and ends the connection."""
        if conn.book_frames is None:
            session = cast(BookSession, conn.session)
            conn.book_frames = BookRunFrames(
                lambda msg, stream: session.encode_book(msg, stream, False)
            )
        data = conn.book_frames.render([(stream, run) for stream, _, run in runs])
        ledger, number = self.ledger.books, conn.number

        def settle(frames_out: int) -> None:
            left = frames_out
            for _stream, depth, run in runs:
                out = min(max(left, 0), run.count)
                ledger.sent_run(number, depth, run.head(out))
                ledger.undelivered += run.count - out
                left -= run.count

        await self._write_whole(conn, data, settle)
        settle(sum(run.count for _, _, run in runs))

    async def _write_whole(self, conn: _Conn, data: bytes, settle: Callable[[int], None]) -> None:
        """Write ``data`` (whole frames) in one piece inside websockets' ``send_context`` (its
        flow control), after any send in progress. A write that did not complete (websockets'
        drain also returns when an abort tore the connection down), or a connection torn down
        while waiting, calls ``settle`` with the whole frames that left, and a write that did
        not complete ends the connection (:class:`_Done`)."""
        ws = conn.ws
        if not isinstance(ws, _TrackedConnection):  # pragma: no cover - always tracked here
            raise TypeError("the fake exchange's connections are tracked")
        start = ws.written  # set again just before the write

        def partial(_ignored: int = 0) -> None:
            settle(frames_within(data, ws.bytes_out - start))

        conn.inflight = (SendProgress(), partial)
        while ws.send_in_progress is not None:
            await asyncio.shield(ws.send_in_progress)
        async with ws.send_context():
            start = ws.written
            ws.transport.write(data)
        conn.inflight = None
        if ws.bytes_out - start < len(data):
            partial()
            raise _Done

    async def _send_run(
        self, conn: _Conn, fast: RunFrames, routes: Mapping[str, Sequence[str]]
    ) -> bool:
        """The fast path's round: the market's next run for ``routes`` (one stream per symbol),
        rendered, written in one piece with websockets' flow control and recorded as a run;
        False when the market had nothing to give. A write that did not complete is settled
        like :meth:`_send_items`' (the whole frames that left are recorded, the rest counted
        as undelivered) and ends the connection."""
        assert self.market is not None
        ts_ms = self.clock.time_ns() // 1_000_000
        run = self.market.take_run(list(routes), FAST_BATCH, ts_ms)
        if run is None:
            return False
        data = fast.render(run, [routes[ring.raw_symbol][0] for ring in run.rings])

        def settle(out: int) -> None:
            self.ledger.add_run(conn.number, run.head(out))
            self.ledger.undelivered += run.count - out

        await self._write_whole(conn, data, settle)
        self.ledger.add_run(conn.number, run)
        return True

    # -- recording mode --------------------------------------------------------------------------

    async def wait_passes(self, passes: int) -> None:
        """Wait until ``passes`` passes through the recording have completed (all connections
        together); TimeoutError after ``WAIT_LIMIT`` seconds."""
        async with asyncio.timeout(WAIT_LIMIT), self._ready:
            await self._ready.wait_for(lambda: self.recorded_passes >= passes)

    async def _recorded_loop(self, conn: _Conn) -> None:
        """Wait for the connection's first subscription, then play the recording to it (once,
        or until the connection ends with ``loop``)."""
        feed = self.recording
        assert feed is not None
        while not conn.subscribed:
            conn.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAIT_LIMIT):
                    await conn.changed.wait()
        protocol = feed.protocol()
        while True:
            try:
                await self._play_once(conn, feed, protocol)
            except RecordingError as exc:
                if self.recording_error is None:
                    self.recording_error = exc
                await conn.ws.close(1011, "fake exchange: recording unreadable")
                raise _Done from None
            async with self._ready:
                self.recorded_passes += 1
                self._ready.notify_all()
            if not feed.loop:
                return  # the connection stays open, idle, until the client or server closes it

    async def _play_once(self, conn: _Conn, feed: RecordedFeed, protocol: ExchangeProtocol) -> None:
        """One pass: send every due frame in batches of up to ``BLAST_BATCH`` (one event-loop
        yield per batch); between frames not yet due, wait in steps of at most ``tick``."""
        clock = self.clock
        pace = Pace(clock.monotonic(), feed.speed)
        stamps: list[int] = []
        texts: list[str] = []
        with contextlib.closing(feed.frames()) as frames:
            for ts, text in frames:
                due = pace.due(ts)
                if due > clock.monotonic():
                    await self._send_recorded(conn, protocol, stamps, texts)
                    while (wait := due - clock.monotonic()) > 0:
                        if self._stopping.is_set():
                            raise _Done
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(min(wait, self.tick)):
                                await self._stopping.wait()
                stamps.append(ts)
                texts.append(text)
                if len(texts) >= BLAST_BATCH:
                    await self._send_recorded(conn, protocol, stamps, texts)
                    await asyncio.sleep(0)
        await self._send_recorded(conn, protocol, stamps, texts)

    async def _send_recorded(
        self, conn: _Conn, protocol: ExchangeProtocol, stamps: list[int], texts: list[str]
    ) -> None:
        """Send ``texts`` (then clear both lists) and record the trades they carry (those of the
        frames that wholly left, when the connection ends during the send)."""
        if not texts:
            return
        progress = SendProgress()
        sent_stamps, sent_texts = stamps.copy(), texts.copy()
        stamps.clear()
        texts.clear()

        def settle(frames_out: int) -> None:
            out = frames_out
            self._record_recorded(conn, protocol, sent_stamps[:out], sent_texts[:out])

        conn.inflight = (progress, settle)
        await send_many(conn.ws, sent_texts, progress)
        conn.inflight = None
        if progress.frames_out(conn.ws) < len(sent_texts):
            # websockets' drain also returns when an abort tore the connection down
            settle(progress.frames_out(conn.ws))
            raise _Done
        self._record_recorded(conn, protocol, sent_stamps, sent_texts)

    def _record_recorded(
        self, conn: _Conn, protocol: ExchangeProtocol, stamps: list[int], texts: list[str]
    ) -> None:
        add, number, trades_in = self.ledger.add, conn.number, RecordedFeed.trades_in
        for ts, text in zip(stamps, texts, strict=True):
            for trade in trades_in(protocol, text, ts):
                add(number, trade)
        self.recorded_frames_sent += len(texts)
