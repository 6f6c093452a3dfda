"""The WebSocket session loop: connect, subscribe, read, keep alive, reconnect.

See docs/exchanges.md.

One :class:`WebSocketSession` owns one logical connection to one exchange for a fixed set of
symbols. It reconnects until told to stop, and puts batches of trades on the run's
:class:`~engine.batchqueue.BatchQueue`. All exchange-specific knowledge lives in the pure
protocol module; this module only moves frames.

Lifecycle of one connection:

1. connect through the session's :class:`~connectors.transport.Transport` (the WebSocket
   library behind the seam, see docs/architecture.md) with an open timeout, a frame-size limit
   (``max_size``) and no compression; certificates are always verified for ``wss://`` (no
   option turns that off);
2. send the protocol's subscribe messages, paced to the exchange's control-message limit;
3. read frames (in batches: every frame the transport already holds); each is stamped with
   its receive time and parsed; trades go into a pending batch, which is put on the queue when
   it is full or every ``flush_interval`` seconds;
4. a supervisor sends the protocol's keepalive message when it has one (OKX, Bybit,
   Bitstamp) and a WebSocket ping every ``ping_interval`` (see "Keepalive under backpressure"),
   and closes the connection when the run stops, when no frame arrived for ``stale_seconds``,
   when a ping's pong is overdue, when the connection is older than ``max_age_seconds``
   (Binance drops connections at 24 h) or on the exchange's reconnect notice. Pings from the
   server are answered by the transport (Binance requires a pong within a minute). The
   supervisor never waits for queue room: it flushes the pending batch only when it fits.
5. after a close the reader still drains every frame already received, so a clean stop loses
   nothing the socket delivered (see "Reading to the end").

Backpressure (``OVERFLOW=block``): when the queue has no room, the reader waits for it and stops
reading the socket; the transport's own receive buffer fills, it stops reading the socket, and
the exchange sees TCP backpressure. Memory stays bounded by the queue, that
buffer and the kernel's socket buffers. A wait of ``BACKPRESSURE_LOG_SECONDS`` or more is logged
(``reads_paused``) when the reads resume.

Reading to the end (the graceful stop): once the connection is closing (the stop, and any other
close the supervisor decides) the reader no longer waits for queue room: its batches are queued
past the bound (:meth:`BatchQueue.put_or_hand_over` with a release event), a wait already in
progress is woken, and the reader reads at full speed up to the peer's close frame. That is
bounded: the peer stops sending once it reads our close frame, so what is left is what the
socket buffers hold. The wait for the peer's close frame is bounded by the run's drain deadline
(``drain_deadline``: what the runner leaves of the stop grace for it), not by a fixed timeout;
without one, by ``close_timeout``. A connection that ends after the stop without the peer's
close frame (the deadline passed and the transport aborted the socket, or the peer reset it) may
have lost trades that were on their way: it is counted (``Counters.unclean_closes``) and logged
(``unclean_close``), and the run's manifest is then not ``complete``.

Keepalive under backpressure: the library's own keepalive is off (the transport turns it off):
it would close the connection (1011) when a pong is not read within its timeout, and while the
reader waits for queue room nothing is read, pongs included (a pong arrives behind every data
frame the exchange sent before it). The supervisor pings instead, every ``ping_interval``, one
ping at a time, and closes the connection (1011, ``keepalive timeout``) when the pong has not come
``ping_timeout`` after the ping *in reading time*: while the reader waits for queue room the
deadline is held ``ping_timeout`` ahead, so it starts running again only once the reads resume.
A slow sink therefore never costs the connection on our side, and a dead peer is still found
(within ``ping_timeout`` of reading, or by ``stale_seconds``; a silence during backpressure is
ours and does not count as staleness either). Reading frames into a larger local buffer would
not help: a pong is behind everything the peer sent before it, so any bound is filled before it
arrives, and no bound at all is unbounded memory. The same holds for the exchange's own pings:
a backpressure longer than the exchange's pong deadline (Binance: a minute) lets the exchange
close the connection; ``OVERFLOW=drop-oldest`` keeps reading instead.

A frame the protocol rejects is counted and logged once per kind (``InvalidFrameLog``), its
kind refined on that slow path only (:func:`connectors.limits.classify`: ``utf8``,
``nesting``, ``number``); a frame over ``max_size`` ends the connection (1009) and is counted
as kind ``oversized``. See :mod:`connectors.limits` for every input limit.

Failed connection attempts back off exponentially with full jitter (an injectable
:class:`~engine.retry.RetryPolicy`, default :data:`RECONNECT`); the count of failures is reset
once a connection has delivered data. A reconnect notice reconnects at once.

Why a connection ended is a :class:`CloseReason` (with a detail for a failed connect or a
close by the peer), reset as each connection starts. The first reason recorded wins: the
supervisor's close (``stop``, ``stale``, ``keepalive timeout``, ``max-age``), a failed connect,
an oversized frame or the peer's close, whichever comes first; except that a reconnect notice
(``notice``) is recorded whenever it is read (the reader drains frames after a close), so the
session then reconnects at once.

Raw capture (``capture``, see docs/recording-and-replay.md): when the session is given a
capture queue, every frame it receives is also kept as a :class:`~connectors.capture.RawFrame`
stamped with the same ``ts`` as its trades' ``ts_recv``, every frame it sends (subscribe,
keepalive) as ``dir="out"``, and every connection it opens as a
:class:`~connectors.capture.RawConnect` with the URL. Raw records are batched and queued like
trades (same batch size, same flush interval, same backpressure). With capture off the hot loop
pays one ``is not None`` test per frame.

Cancel-safety: cancelling :meth:`WebSocketSession.run` closes the socket; trades (and raw
records) already received but not yet queued are force-queued (the run's abort path then spills
them), so cancellation never silently loses a parsed trade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, TypeVar

from connectors import capture as raw
from connectors.base import (
    Ack,
    ExchangeError,
    ExchangeProtocol,
    Heartbeat,
    ReconnectNotice,
    rejected_symbols,
)
from connectors.book_actions import BookActions, Fetched, SnapshotFetcher
from connectors.books.base import BookFeed
from connectors.gaps import GapTracker
from connectors.limits import classify, oversized
from connectors.tally import StreamTally
from connectors.transport import Connection, ConnectOptions, Transport
from connectors.transports import get_transport
from engine.batchqueue import BatchQueue
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import (
    ConnectFailed,
    ConnectionEnded,
    FrameTooLarge,
    MalformedFrame,
    SubscriptionRejected,
)
from engine.logs import get_logger, log_event
from engine.records import by_symbol
from engine.retry import Jitter, RetryPolicy
from engine.stats import Counters

DEFAULT_OPEN_TIMEOUT: Final = 10.0
DEFAULT_CLOSE_TIMEOUT: Final = 5.0
DEFAULT_MAX_SIZE: Final = 1 << 20
DEFAULT_MAX_AGE_SECONDS: Final = 23.5 * 3600
DEFAULT_BATCH_SIZE: Final = 512
DEFAULT_FLUSH_INTERVAL: Final = 0.05
DEFAULT_CONTROL_RATE: Final = 4.0
DEFAULT_PING_INTERVAL: Final = 20.0
DEFAULT_PING_TIMEOUT: Final = 20.0
BACKPRESSURE_LOG_SECONDS: Final = 5.0
"""A wait for queue room this long or longer is logged (``reads_paused``) when reads resume."""
INTERNAL_ERROR: Final = 1011
"""The close code of a keepalive timeout (RFC 6455 §7.4.1)."""
RECONNECT: Final = RetryPolicy(initial=0.5, cap=30.0, jitter=Jitter.FULL)
"""The reconnect backoff: 0.5 s doubling up to 30 s, full jitter, so many tasks that lost their
connections together (an exchange outage) do not reconnect in lock-step."""

T = TypeVar("T")

log = get_logger("session")


class CloseReason(Enum):
    """Why a connection ended (the ``reason`` of the ``closing``, ``reconnecting`` and
    ``unclean_close`` log lines is its value, with the detail for ``CONNECT_FAILED`` and
    ``CLOSED_BY_PEER``)."""

    STOP = "stop"
    """The run stopped (also: a connection still opening was given up)."""
    NOTICE = "notice"
    """The exchange announced a reconnect: reconnect at once, without backoff."""
    STALE = "stale"
    KEEPALIVE_TIMEOUT = "keepalive timeout"
    MAX_AGE = "max-age"
    OVERSIZED = "oversized frame"
    CONNECT_FAILED = "connect failed"
    CLOSED_BY_PEER = "closed by peer"


@dataclass(frozen=True, slots=True)
class Closed:
    """A :class:`CloseReason` with its detail; ``str()`` is the text the logs carry."""

    reason: CloseReason
    detail: str | None = None

    def __str__(self) -> str:
        if self.detail is None:
            return self.reason.value
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Tuning of one session; module-level defaults, overridable per run."""

    open_timeout: float = DEFAULT_OPEN_TIMEOUT
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    max_size: int = DEFAULT_MAX_SIZE
    stale_seconds: float = 60.0
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    batch_size: int = DEFAULT_BATCH_SIZE
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    control_rate: float = DEFAULT_CONTROL_RATE
    """Control messages per second we send at most (Binance allows 5 incoming per second)."""
    ping_interval: float | None = DEFAULT_PING_INTERVAL
    """Seconds between our WebSocket pings (None: no pings)."""
    ping_timeout: float = DEFAULT_PING_TIMEOUT
    """Seconds of reading (time waiting for queue room excluded) a pong may take."""
    rcvbuf: int | None = None
    """The socket's ``SO_RCVBUF`` in bytes (None: the kernel's default)."""


class InvalidFrameLog:
    """Counts bad frames and logs the first of each kind only."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._seen: set[tuple[str, str]] = set()

    def record(self, exchange: str, exc: MalformedFrame, frame: bytes | str | None = None) -> None:
        """Count one bad frame; with the ``frame`` the parser rejected, its kind is refined
        first (:func:`connectors.limits.classify`: rejected frames only, never the hot path)."""
        if frame is not None:
            exc = classify(frame, exc)
        self._counters.invalid += 1
        if (exchange, exc.kind) not in self._seen:
            self._seen.add((exchange, exc.kind))
            log_event(
                log,
                logging.WARNING,
                "invalid_frame",
                exchange=exchange,
                kind=exc.kind,
                detail=exc.detail[:200],
                note="further frames of this kind are counted, not logged",
            )


class WebSocketSession:
    """One reconnecting connection for ``symbols`` of one exchange."""

    def __init__(
        self,
        protocol: ExchangeProtocol | BookFeed,
        base_url: str,
        symbols: Sequence[str],
        queue: BatchQueue[Any],
        *,
        counters: Counters,
        gaps: GapTracker,
        invalid_log: InvalidFrameLog,
        settings: SessionSettings | None = None,
        backoff: RetryPolicy | None = None,
        clock: Clock = SYSTEM_CLOCK,
        capture: BatchQueue[raw.RawFrame] | None = None,
        drain_deadline: Callable[[], float | None] | None = None,
        transport: Transport | None = None,
        fetcher: SnapshotFetcher | None = None,
    ) -> None:
        """``drain_deadline``: called when the stop closes a connection, the ``clock``'s
        monotonic time by which the peer's close frame must have been read (None, or no
        callable: ``close_timeout`` from then). ``transport``: the WebSocket library behind
        the seam (None: the default, aiohttp; docs: exchanges.md#websocket-transports).

        ``protocol`` may be a book feed (:class:`~connectors.books.base.BookFeed`): the
        session then records that exchange's order book (its rows go to ``queue``) and
        carries out the feed's actions (:class:`~connectors.book_actions.BookActions`; REST
        snapshots through ``fetcher``)."""
        self.transport = transport if transport is not None else get_transport()
        self.protocol = protocol
        self.symbols = list(symbols)
        self.url = protocol.connection_url(base_url, self.symbols)
        self.queue = queue
        self.counters = counters
        self.gaps = gaps
        self.invalid_log = invalid_log
        self.settings = settings or SessionSettings()
        self.backoff = backoff or RECONNECT
        #: Failed connections since the last one that delivered data (the backoff's attempt).
        self.failures = 0
        self.clock = clock
        self._pending: list[Any] = []
        self.capture = capture
        #: Raw records not yet queued; None when capture is off (the hot loop tests this).
        self._raw: list[raw.RawFrame] | None = [] if capture is not None else None
        self._closed: Closed | None = None  # why the current connection ends, once known
        self.connections = 0
        #: Frames received by this session (all connections), valid or not.
        self.frames = 0
        self.drain_deadline = drain_deadline
        #: Set when the current connection is closing: the reader no longer waits for room.
        self._release = asyncio.Event()
        #: Since when (the clock's monotonic time) the reader waits for queue room, else None.
        self.paused_since: float | None = None
        #: Set while the reader waits for queue room (its socket is not read meanwhile).
        self.backpressured = asyncio.Event()
        self._ping_sent: float | None = None  # when the unanswered ping went out
        self._close_received = False  # the peer's close frame was read (this connection)
        self._close_error: BaseException | None = None  # why the library ended it, if not clean
        self._drain_used = self.settings.close_timeout  # the drain_seconds of our last close
        #: The book feed's actions when ``protocol`` is a book feed, else None.
        self.book: BookActions | None = None
        self._group: asyncio.TaskGroup | None = None  # the current connection's tasks
        if hasattr(protocol, "take_actions"):
            feed: BookFeed = protocol  # type: ignore[assignment]
            self.book = BookActions(
                feed,
                fetcher=fetcher,
                deliver=self._pending_extend,
                send=self._send_control,
                captured=self._capture_fetched if capture is not None else None,
                log=self._log,
                invalid=lambda exc: self.invalid_log.record(protocol.name, exc),
                control_interval=1.0 / self.settings.control_rate,
                clock=clock,
                reconnect=lambda why: self._close(CloseReason.NOTICE, why),
            )
        self._conn: Connection | None = None
        #: Per-stream figures for the manifest (connections, subscription, records per symbol).
        self.tally = StreamTally(
            protocol.name, self.symbols, channel="book" if self.book is not None else "trades"
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Read until ``stop`` is set, reconnecting as needed.

        Returns once the last connection is closed and every received trade is queued.
        Raises :class:`SubscriptionRejected` when the exchange refuses the subscription.
        """
        try:
            while not stop.is_set():
                delivered = await self._one_connection(stop)
                await self._flush()
                if stop.is_set():
                    break
                self.counters.reconnects += 1
                self.tally.reconnects += 1
                if delivered:
                    self.failures = 0
                # A reconnect notice means "come back now"; anything else backs off.
                if self._is_closing(CloseReason.NOTICE):
                    delay = 0.0
                else:
                    delay = self.backoff.delay(self.failures)
                    self.failures += 1
                self._log(
                    logging.INFO,
                    "reconnecting",
                    reason=self._close_text(),
                    delay_s=round(delay, 3),
                )
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await stop.wait()
        finally:
            if self._pending:
                # Cancelled (or failed) with parsed trades in hand: hand them over regardless
                # of the bound, so the stop path can write or spill them.
                for batch in self._take_pending():
                    self.queue.force_put(batch)
            if self._raw and self.capture is not None:
                self.capture.force_put(self._take_raw())

    async def _one_connection(self, stop: asyncio.Event) -> bool:
        """One connection from open to close. True when it delivered at least one frame."""
        self._closed = None
        self._release = asyncio.Event()
        self._close_received = False
        self._close_error = None
        settings = self.settings
        self._drain_used = settings.close_timeout
        self.tally.attempting(self.clock.monotonic())
        connecting = asyncio.ensure_future(
            self.transport.connect(
                self.url,
                ConnectOptions(
                    open_timeout=settings.open_timeout,
                    max_frame_bytes=settings.max_size,
                    rcvbuf=settings.rcvbuf,
                ),
            )
        )
        try:
            # The stop does not wait for a connection still opening (up to open_timeout):
            # nothing was received on it yet, so nothing is lost by giving it up.
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not connecting.done():
                connecting.cancel()
                await asyncio.wait({connecting})  # never raises; bounded by the cancellation
                if not connecting.cancelled() and connecting.exception() is None:
                    connecting.result().abort()  # it opened as it was given up
                self._close(CloseReason.STOP)
                return False
            conn = connecting.result()
        except ConnectFailed as exc:
            # The seam's message is the library's error as "Type: text" (as logged before).
            self._close(CloseReason.CONNECT_FAILED, str(exc))
            self.tally.error(str(self._closed))
            self._log(
                logging.WARNING,
                "connect_failed",
                url=self.url,
                error=str(exc),
            )
            return False
        except BaseException:  # cancelled while connecting: the attempt goes too
            connecting.cancel()
            raise
        self.connections += 1
        self.tally.connected(self.clock.monotonic())
        self._conn = conn
        connected_ns = self.clock.time_ns()  # the reconnect resync at the connect line's time
        if self.book is not None:
            self.book.connected(connected_ns)
        if self._raw is not None:
            self._raw.append(
                raw.connected(
                    connected_ns,
                    self.protocol.name,
                    self.url,
                    self.tally.channel,
                    list(self.symbols) if self.book is not None else None,
                )
            )
        self._log(
            logging.INFO,
            "connected",
            url=self.url,
            symbols=len(self.symbols),
            channel=self.tally.channel,
        )
        frames_before = self.frames
        try:
            async with asyncio.TaskGroup() as tg:
                self._group = tg
                reader = tg.create_task(self._read(conn))
                supervisor = tg.create_task(self._supervise(conn, stop, self.clock.monotonic()))
                await self._subscribe(conn)
                await reader
                supervisor.cancel()
                if self.book is not None:
                    self.book.cancel()
        except* SubscriptionRejected as group:
            self.tally.error(str(group.exceptions[0]))
            raise group.exceptions[0] from None
        finally:
            self._group = None
            self._conn = None
            if self.book is not None:
                self.book.cancel()
            self.tally.disconnected(self.clock.monotonic())
            if self._is_closing(CloseReason.CLOSED_BY_PEER):
                self.tally.error(str(self._closed))
            # Normally closed already; on cancellation or error make sure the socket goes.
            self._release.set()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # An abort of the stop: the socket goes now; a close handshake could wait for
                # the rest of the drain deadline while the spill and the manifest wait.
                conn.abort()
            else:
                # No task receives any more (the group has ended): close() reads, and drops,
                # what comes before the peer's close frame itself; without that, aiohttp never
                # sees it and the close waits out close_timeout (a rejected subscription).
                await conn.close(drain_seconds=settings.close_timeout, discard=True)
        if stop.is_set() and not self._close_received and self.frames > frames_before:
            # Only a connection that delivered data can have lost some on the way; one opened
            # just as the stop came, and closed before any frame, lost nothing.
            self._unclean_close()
        return self.frames > frames_before

    def _log(self, level: int, event: str, **fields: Any) -> None:
        """Log the session's ``event``: its exchange first, then ``fields``."""
        log_event(log, level, event, exchange=self.protocol.name, **fields)

    def _close(self, reason: CloseReason, detail: str | None = None) -> None:
        """Record why the current connection ends: the first reason wins, except a reconnect
        notice, recorded whenever it is read (see the module docstring)."""
        if self._closed is None or reason is CloseReason.NOTICE:
            self._closed = Closed(reason, detail)

    def _is_closing(self, reason: CloseReason) -> bool:
        closed = self._closed
        return closed is not None and closed.reason is reason

    def _close_text(self) -> str | None:
        """The recorded reason as the logs carry it (None: none recorded)."""
        return None if self._closed is None else str(self._closed)

    def _unclean_close(self) -> None:
        """The connection ended after the stop without the peer's close frame: trades on their
        way may be lost. Counted and logged; the run is then not complete."""
        self.counters.unclean_closes += 1
        error = self._close_error
        self._log(
            logging.WARNING,
            "unclean_close",
            url=self.url,
            reason=self._close_text(),
            error=f"{type(error).__name__}: {error}" if error is not None else None,
            close_timeout_s=round(self._drain_used, 3),
            note="the peer's close frame was not read: trades still in the socket are lost",
        )

    def pong_waited(self) -> float | None:
        """How long (the clock's seconds) our unanswered ping has waited; None when no ping is
        waiting for its pong."""
        sent = self._ping_sent
        return None if sent is None else self.clock.monotonic() - sent

    def _drain_seconds(self) -> float:
        """How long a stopping connection may wait for the peer's close frame: until the
        run's drain deadline, else ``close_timeout``."""
        deadline = self.drain_deadline() if self.drain_deadline is not None else None
        if deadline is None:
            return self.settings.close_timeout
        return max(0.0, deadline - self.clock.monotonic())

    async def _subscribe(self, conn: Connection) -> None:
        interval = 1.0 / self.settings.control_rate
        messages = self.protocol.subscribe_messages(self.symbols)
        if not messages:  # the URL alone subscribes
            self.tally.subscribed(self.clock.monotonic())
        for i, message in enumerate(messages):
            if i:
                await asyncio.sleep(interval)
            self._capture_sent(message)
            with contextlib.suppress(ConnectionEnded):
                await conn.send(message)

    async def _supervise(self, conn: Connection, stop: asyncio.Event, opened: float) -> None:
        """Flush the pending batch every ``flush_interval`` when it fits (never waits for
        room); send keepalives and pings; close the socket on stop, staleness, an overdue pong
        or age. Ends when it has closed the socket (or is cancelled)."""
        settings = self.settings
        last_count = self.frames
        last_change = opened
        keepalive_every = self.protocol.keepalive_interval
        last_keepalive = opened
        ping_every = settings.ping_interval
        last_ping = opened
        pong: asyncio.Future[float] | None = None
        pong_due = 0.0
        self._ping_sent = None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.flush_interval):
                    await stop.wait()
            if self._pending or self._raw:
                self._flush_if_room()
            now = self.clock.monotonic()
            paused = self.paused_since is not None
            if keepalive_every is not None and now - last_keepalive >= keepalive_every:
                last_keepalive = now
                message = self.protocol.keepalive_message()
                if message is not None:
                    self._capture_sent(message)
                    with contextlib.suppress(ConnectionEnded):
                        await conn.send(message)
            if pong is not None and pong.done():
                pong, self._ping_sent = None, None
            if ping_every is not None and pong is None and now - last_ping >= ping_every:
                last_ping = now
                with contextlib.suppress(ConnectionEnded):
                    pong = await conn.ping()
                    self._ping_sent, pong_due = now, now + settings.ping_timeout
            elif pong is not None and paused:
                # Nothing is read while the reader waits for queue room: the pong's deadline
                # runs in reading time only.
                pong_due = max(pong_due, now + settings.ping_timeout)
            if self.frames != last_count or paused:
                last_count = self.frames
                last_change = now
            reason = None
            if self._is_closing(CloseReason.NOTICE):
                reason = CloseReason.NOTICE
            elif stop.is_set():
                reason = CloseReason.STOP
            elif now - last_change >= settings.stale_seconds:
                reason = CloseReason.STALE
            elif pong is not None and now >= pong_due:
                reason = CloseReason.KEEPALIVE_TIMEOUT
            elif now - opened >= settings.max_age_seconds:
                reason = CloseReason.MAX_AGE
            if reason is not None:
                self._close(reason)
                self._log(
                    logging.INFO if reason is CloseReason.STOP else logging.WARNING,
                    "closing",
                    reason=reason.value,
                )
                # From here the reader reads to the end without waiting for queue room.
                self._release.set()
                drain = settings.close_timeout
                if reason is CloseReason.STOP:
                    drain = self._drain_seconds()
                self._drain_used = drain
                if reason is CloseReason.KEEPALIVE_TIMEOUT:
                    await conn.close(INTERNAL_ERROR, "keepalive ping timeout", drain_seconds=drain)
                else:
                    await conn.close(drain_seconds=drain)
                return

    async def _read(self, conn: Connection) -> None:
        """The hot loop. Ends when the connection is closed and its buffer is drained.

        Frames come in batches (every frame the transport already holds) and undecoded, as
        bytes: the protocol parses bytes directly and rejects invalid UTF-8 itself, so text is
        never decoded twice. Every frame of a batch gets the batch's receive time (``ts_recv``:
        the moment the transport handed it over, when all of them were in its buffer).
        """
        parse = self.protocol.parse
        receive = conn.receive
        time_ns = time.time_ns if self.clock is SYSTEM_CLOCK else self.clock.time_ns
        batch_size = self.settings.batch_size
        name = self.protocol.name
        captured = self._raw
        book = self.book
        try:
            while True:
                if book is not None:
                    await book.after_batch(self._group)
                frames = await receive()
                # Every frame of the batch was in the transport's buffer when it was handed
                # over: that moment is each one's receive time.
                ts = time_ns()
                self.frames += len(frames)
                # self._pending is replaced by every flush, and only an await lets another
                # task flush: the local name is fetched again after each await.
                pending = self._pending
                for frame in frames:
                    if captured is not None:
                        captured.append(raw.received(ts, name, frame))
                        if len(captured) >= batch_size:
                            await self._flush()
                            pending = self._pending
                    try:
                        result = parse(frame, ts)
                    except MalformedFrame as exc:
                        self.invalid_log.record(name, exc, frame)
                        continue
                    if type(result) is tuple or isinstance(result, list):
                        pending += result
                        if len(pending) >= batch_size:
                            await self._flush()
                            # A batch of buffered frames is handed over without suspending;
                            # yield once per batch of trades so the sink (and every other task)
                            # keeps pace with the socket instead of the queue filling to its
                            # bound.
                            await asyncio.sleep(0)
                            pending = self._pending
                    else:
                        await self._control(result)
                        pending = self._pending
        except ConnectionEnded as exc:
            self._close_received = exc.clean
            # What the library's own error was caused by (a reset's OSError), if anything.
            cause = exc.__cause__
            self._close_error = cause.__cause__ if cause is not None else None
            if isinstance(exc, FrameTooLarge):
                # The transport refused a frame over max_size and failed the connection (1009).
                self.invalid_log.record(name, oversized(self.settings.max_size))
                self._close(CloseReason.OVERSIZED)
            self._close(CloseReason.CLOSED_BY_PEER, f"code {exc.code if exc.clean else None}")

    async def _control(self, event: object) -> None:
        name = self.protocol.name
        if isinstance(event, Ack):
            # A confirmed request (the subscription) makes the connection subscribed; a
            # heartbeat or pong only proves it is alive.
            self.tally.subscribed(self.clock.monotonic())
            return
        if isinstance(event, Heartbeat):
            return
        if isinstance(event, ReconnectNotice):
            self._log(logging.INFO, "reconnect_notice", reason=event.reason)
            # The supervisor closes the socket at its next tick; this coroutine keeps
            # draining frames meanwhile.
            self._close(CloseReason.NOTICE)
            return
        if isinstance(event, ExchangeError):
            if event.fatal:
                await self._flush()
                refused = rejected_symbols(event, self.symbols)
                raise SubscriptionRejected(name, event.message, refused)
            self._log(logging.WARNING, "exchange_error", message=event.message)

    def _take_pending(self) -> list[list[Any]]:
        """The pending trades as one batch per symbol (:func:`engine.records.by_symbol`: what
        the gap check, the tally and the windower each handle in one step), checked for gaps
        and without duplicates (a trade seen before a reconnect is dropped here, so nothing is
        written twice). Empty batches are left out."""
        groups = by_symbol(self._pending)
        self._pending = []
        if not groups:
            return []
        tally = self.tally
        if not tally.is_subscribed:
            tally.subscribed(self.clock.monotonic())
        sequenced, name = self.protocol.sequenced, self.protocol.name
        checked: list[list[Any]] = []
        for group in groups:
            batch = self.gaps.filter(name, group) if sequenced else group
            if batch:
                self.counters.parsed += len(batch)
                tally.count(batch)
                checked.append(batch)
        return checked

    def _pending_extend(self, records: Sequence[Any]) -> None:
        """Add records made outside the reader (a book snapshot fetched over REST) to the
        pending batch; the next flush queues them."""
        self._pending += records

    async def _send_control(self, message: str) -> None:
        """Send a control frame (a book resubscription) on the current connection."""
        conn = self._conn
        if conn is None:
            return
        self._capture_sent(message)
        with contextlib.suppress(ConnectionEnded):
            await conn.send(message)

    def _capture_fetched(self, fetched: Fetched, url: str) -> None:
        """Keep a REST response as a recording line, when capturing."""
        if self._raw is not None:
            self._raw.append(
                raw.fetched(fetched.ts_recv, self.protocol.name, url, fetched.status, fetched.body)
            )

    def _capture_sent(self, message: str) -> None:
        """Keep a frame about to be sent, when capturing."""
        if self._raw is not None:
            self._raw.append(raw.sent(self.clock.time_ns(), self.protocol.name, message))

    def _take_raw(self) -> list[raw.RawFrame]:
        """The raw records not yet queued; the list itself is kept (the hot loop holds it)."""
        captured = self._raw
        if not captured:
            return []
        batch = captured.copy()
        captured.clear()
        return batch

    async def _flush(self) -> None:
        """Put the pending batch on the queue (waits for room under ``block``, unless the
        connection is closing), and the raw records on the capture queue. Only the reader
        (and the session's own end) call this; the supervisor uses :meth:`_flush_if_room`.

        Cancelled while waiting for room (an aborted stop cancels the sources while the queue
        is full), a batch already taken is handed over regardless of the bound (``put`` is
        cancel-safe: it queued nothing), so the stop path writes or spills it."""
        if self._pending:
            batches = self._take_pending()
            for index, batch in enumerate(batches):
                try:
                    await self._put(self.queue, batch)
                except BaseException:
                    # Cancelled while waiting for room: this batch was handed over (see
                    # _put), the ones after it are too, so nothing taken is lost.
                    for rest in batches[index + 1 :]:
                        self.queue.force_put(rest)
                    raise
        if self._raw and self.capture is not None:
            await self._put(self.capture, self._take_raw())

    async def _put(self, queue: BatchQueue[T], batch: Sequence[T]) -> None:
        """Queue ``batch``: at once when it fits or the connection is closing, else wait for
        room (the reads pause: :attr:`paused_since` is set meanwhile)."""
        if self._release.is_set():
            queue.force_put(batch)
            return
        if queue.fits(len(batch)):
            queue.put_nowait(batch)
            return
        started = self.paused_since = self.clock.monotonic()
        pong_waited = None if self._ping_sent is None else started - self._ping_sent
        self.backpressured.set()
        try:
            await queue.put_or_hand_over(batch, self._release)
        finally:
            self.paused_since = None
            self.backpressured.clear()
        paused = self.clock.monotonic() - started
        if paused >= BACKPRESSURE_LOG_SECONDS:
            if self._ping_sent is not None:
                pong_waited = self.clock.monotonic() - self._ping_sent
            self._log(
                logging.INFO,
                "reads_paused",
                paused_s=round(paused, 3),
                pong_waited_s=None if pong_waited is None else round(pong_waited, 3),
                note="the queue was full (OVERFLOW=block): the socket was not read meanwhile",
            )

    def _flush_if_room(self) -> None:
        """The supervisor's flush: queue the pending batch (and raw records) only if that needs
        no wait (or the connection is closing), and never ahead of a batch the reader is
        waiting to queue."""
        if self.paused_since is not None:
            return
        closing = self._release.is_set()
        if self._pending and (closing or self.queue.fits(len(self._pending))):
            for batch in self._take_pending():
                if closing:
                    self.queue.force_put(batch)
                else:
                    self.queue.put_nowait(batch)
        capture = self.capture
        if self._raw and capture is not None and (closing or capture.fits(len(self._raw))):
            records = self._take_raw()
            if closing:
                capture.force_put(records)
            else:
                capture.put_nowait(records)
