"""The replay source (``feedvault replay``): a recording in place of WebSocket sessions.

See docs/recording-and-replay.md#replay.

:class:`ReplaySource` reads recorded frames in order and does with each received (``dir="in"``)
frame what a live :class:`~connectors.session.WebSocketSession` did: parse it with the
exchange's protocol (one protocol object per exchange, as the live run builds), with the
recorded ``ts`` as ``ts_recv``; count it; log a malformed frame once per kind; check trade-id
continuity with the run's :class:`~connectors.gaps.GapTracker` (gaps recorded, duplicates
dropped); put batches of trades on the run's :class:`~engine.batchqueue.BatchQueue`. Sent frames
(``dir="out"``) are skipped; a connect line after the first of an exchange counts a reconnect. So
the trades a replay writes equal those the live run wrote, field for field.

Time: the source drives the run's :class:`~engine.clock.ReplayClock` (wall time = the ``ts`` of
the last replayed frame). Before the clock enters a new window slot (``WINDOW_SECONDS``) the
source queues what it holds and waits until the consumer has taken every batch, so each trade
reaches the windower while the clock is still in its own slot: windows close and are keyed by
recorded time, as in the live run, whatever the replay speed.

Speed: ``speed=None`` replays as fast as the sink takes it (the queue's ``block`` backpressure),
yielding to the loop every ``frames_per_yield`` frames so uploads keep their pace; ``speed=N``
paces frames at N times the recorded pace, measured on the clock's ``base`` monotonic time from
the first received frame (pauses shorter than :data:`MIN_PAUSE_SECONDS` are skipped).

End: at the end of the input the source queues what it holds, calls ``on_end`` (the run stops
itself) and returns. A protocol's fatal error (a recorded subscription rejection) raises
:class:`~engine.errors.SubscriptionRejected`, as live. An input that cannot be read
(:class:`~engine.errors.RecordingError`, :class:`~engine.errors.StorageError`) is handed to
``on_error`` after what was read is queued, and the source returns.

Books (``book_queue`` and ``book_exchanges``): each received frame of such an exchange is also
given to that exchange's book feed (:mod:`connectors.books`), one feed per exchange, and its rows
go to ``book_queue``; a recorded REST response (an ``http`` line) is the snapshot the live feed
fetched, handed to the feed as it was then. The feed's actions need nothing (the recording holds
what they brought: the snapshot line, the frames after a resubscription); a connect line of the
``book`` channel voids its books as a live reconnect does. So the replay reproduces the live
rows and resyncs from the recorded frames (docs: order-books.md#replaying-books).

Cancel-safety: cancelling :meth:`ReplaySource.run` force-queues the trades it holds (the run's
abort path spills them), like a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from typing import Any, Final

from connectors.base import (
    ExchangeError,
    ExchangeProtocol,
    ParseResult,
    ReconnectNotice,
)
from connectors.books.base import BookFeed, Resync
from connectors.books.registry import get_book_feed
from connectors.gaps import GapTracker
from connectors.recording import DIR_IN, RecordedFrame
from connectors.registry import get_protocol
from connectors.session import DEFAULT_BATCH_SIZE, InvalidFrameLog
from engine.batchqueue import BatchQueue
from engine.clock import ReplayClock
from engine.errors import (
    FeedvaultError,
    MalformedFrame,
    RecordingError,
    StorageError,
    SubscriptionRejected,
)
from engine.logs import get_logger, log_event
from engine.records import Trade, by_symbol
from engine.stats import Counters

NS: Final = 1_000_000_000
MIN_PAUSE_SECONDS: Final = 0.001
DEFAULT_FRAMES_PER_YIELD: Final = 256
BOOK_CHANNEL: Final = "book"

Pause = Callable[[asyncio.Event, float], Awaitable[None]]
"""Wait ``seconds`` or until the event is set (injected by tests to drive a fake clock)."""

log = get_logger("replay")


async def pause_until_stop(stop: asyncio.Event, seconds: float) -> None:
    """The default :data:`Pause`: wait ``seconds`` of real time, less if ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


class ReplaySource:
    """Replays ``chunks`` (lists of recorded frames, in order) into ``queue``. See the module
    docstring. Implements the run's ``Source`` (``frames``, ``run(stop)``)."""

    def __init__(
        self,
        chunks: AsyncIterable[Sequence[RecordedFrame]],
        queue: BatchQueue[Trade],
        *,
        clock: ReplayClock,
        window_seconds: int,
        counters: Counters,
        gaps: GapTracker,
        invalid_log: InvalidFrameLog,
        speed: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        frames_per_yield: int = DEFAULT_FRAMES_PER_YIELD,
        pause: Pause = pause_until_stop,
        on_end: Callable[[], None] | None = None,
        on_error: Callable[[FeedvaultError], None] | None = None,
        book_queue: BatchQueue[Any] | None = None,
        book_exchanges: Callable[[str], bool] | None = None,
        trade_exchanges: Callable[[str], bool] | None = None,
    ) -> None:
        """``book_exchanges``/``trade_exchanges``: whether an exchange's books (into
        ``book_queue``) and trades are replayed (None: trades of every exchange, no books)."""
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (or None for as fast as possible)")
        self.chunks = chunks
        self.queue = queue
        self.clock = clock
        self.window_ns = window_seconds * NS
        self.counters = counters
        self.gaps = gaps
        self.invalid_log = invalid_log
        self.speed = speed
        self.batch_size = batch_size
        self.frames_per_yield = frames_per_yield
        self.pause = pause
        self.on_end = on_end
        self.on_error = on_error
        #: Received frames replayed (the manifest's ``received``).
        self.frames = 0
        #: Connect lines seen, over all exchanges.
        self.connections = 0
        #: True once the whole input was replayed.
        self.ended = False
        self.protocols: dict[str, ExchangeProtocol] = {}
        self._pending: dict[str, list[Trade]] = {}
        self._slot = clock.time_ns() // self.window_ns
        self._origin: tuple[int, float] | None = None
        self.book_queue = book_queue
        self._wants_book = book_exchanges if book_queue is not None else None
        self._wants_trades = trade_exchanges
        #: The book feed of each exchange replayed with books.
        self.feeds: dict[str, BookFeed] = {}
        self._book_pending: dict[str, list[Any]] = {}
        #: Finished book resyncs, per exchange, oldest first.
        self.resyncs: dict[str, list[Resync]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Replay until the input ends or ``stop`` is set; return once every trade is queued."""
        try:
            try:
                await self._replay(stop)
            except (RecordingError, StorageError) as exc:
                await self._flush_all()
                log_event(log, logging.ERROR, "replay_input_failed", error=str(exc))
                if self.on_error is None:
                    raise
                self.on_error(exc)
                return
            await self._flush_all()
            if not stop.is_set():
                self.ended = True
                log_event(
                    log,
                    logging.INFO,
                    "replay_end",
                    frames=self.frames,
                    connections=self.connections,
                    last_ts=self.clock.time_ns(),
                )
                if self.on_end is not None:
                    self.on_end()
        finally:
            for exchange in list(self._pending):
                if self._pending[exchange]:
                    for batch in self._take(exchange):
                        self.queue.force_put(batch)
            for exchange, rows in self._book_pending.items():
                if rows and self.book_queue is not None:
                    self._book_pending[exchange] = []
                    for book_batch in by_symbol(rows):
                        self.book_queue.force_put(book_batch)

    async def _replay(self, stop: asyncio.Event) -> None:
        """The hot loop: one pass over the recording. Per frame it does only what a live
        session does (stamp, parse, batch); everything else is per batch or per window."""
        clock = self.clock
        advance_to = clock.advance_to
        window_ns = self.window_ns
        speed = self.speed
        frames_per_yield = self.frames_per_yield
        batch_size = self.batch_size
        parsers: dict[str, Callable[[str | bytes, int], ParseResult]] = {}
        since_yield = 0
        async for chunk in self.chunks:
            for recorded in chunk:
                if stop.is_set():
                    return
                exchange = recorded.exchange
                if recorded.dir != DIR_IN:
                    if recorded.url is not None:
                        self._connected(exchange, recorded)
                    continue
                ts = recorded.ts
                if speed is not None:
                    await self._pace(ts, speed, stop)
                    if stop.is_set():
                        return
                slot = ts // window_ns
                if slot > self._slot:
                    # Every trade of the earlier slot reaches the windower before time moves on.
                    await self._flush_all()
                    await self.queue.wait_empty()
                    if self.book_queue is not None:
                        await self.book_queue.wait_empty()
                    self._slot = slot
                advance_to(ts)
                self.frames += 1
                if self._wants_book is not None and self._wants_book(exchange):
                    await self._book_frame(exchange, recorded)
                if recorded.http is not None:
                    continue
                if self._wants_trades is not None and not self._wants_trades(exchange):
                    continue
                parse = parsers.get(exchange)
                if parse is None:
                    parse = parsers[exchange] = self._protocol(exchange).parse
                try:
                    result = parse(recorded.frame, ts)
                except MalformedFrame as exc:
                    self.invalid_log.record(exchange, exc, recorded.frame)
                    continue
                if isinstance(result, (tuple, list)):
                    if result:
                        pending = self._pending[exchange]
                        pending += result
                        if len(pending) >= batch_size:
                            await self._hand_over(self._take(exchange))
                else:
                    await self._control(exchange, result)
                since_yield += 1
                if since_yield >= frames_per_yield:
                    since_yield = 0
                    await asyncio.sleep(0)

    def _protocol(self, exchange: str) -> ExchangeProtocol:
        protocol = self.protocols.get(exchange)
        if protocol is None:
            try:
                protocol = get_protocol(exchange)
            except ValueError as exc:
                raise RecordingError(f"cannot replay exchange {exchange!r}: {exc}") from None
            self.protocols[exchange] = protocol
            self._pending[exchange] = []
        return protocol

    def _connected(self, exchange: str, recorded: RecordedFrame) -> None:
        self.connections += 1
        if recorded.channel == BOOK_CHANNEL:
            feed = self.feeds.get(exchange)
            if feed is not None:
                self.counters.reconnects += 1
                named = recorded.symbols
                if named is None:
                    feed.connected(recorded.ts)
                else:  # only this connection's symbols (the feed's keys, any case)
                    wanted = {symbol.lower() for symbol in named}
                    feed.connected(recorded.ts, [s for s in feed.books if s.lower() in wanted])
            return
        if exchange in self.protocols:
            self.counters.reconnects += 1
        else:
            self._protocol(exchange)

    def _feed(self, exchange: str) -> BookFeed:
        feed = self.feeds.get(exchange)
        if feed is None:
            try:
                feed = get_book_feed(exchange)
            except ValueError as exc:
                raise RecordingError(f"cannot replay books of {exchange!r}: {exc}") from None
            self.feeds[exchange] = feed
            self._book_pending[exchange] = []
        return feed

    async def _book_frame(self, exchange: str, recorded: RecordedFrame) -> None:
        """Give a received frame (or a recorded REST snapshot) to the exchange's book feed."""
        feed = self._feed(exchange)
        ts = recorded.ts
        try:
            if recorded.http is not None:
                url = recorded.http.partition(" ")[2]
                symbol = feed.symbol_of_snapshot(url)
                if symbol is None or recorded.status != 200:
                    return
                result: object = feed.snapshot_fetched(symbol, recorded.frame, ts)
            else:
                result = feed.parse(recorded.frame, ts)
        except MalformedFrame as exc:
            self.invalid_log.record(exchange, exc, recorded.frame)
            return
        if isinstance(result, (tuple, list)):
            if result:
                pending = self._book_pending[exchange]
                pending += result
                if len(pending) >= self.batch_size:
                    await self._hand_over_books(exchange)
        elif self._wants_trades is not None and not self._wants_trades(exchange):
            await self._control(exchange, result)  # the trades' parser does not see it
        if feed.has_actions:
            feed.take_actions()  # the recording holds what they brought
        done = feed.take_resyncs()
        if done:
            self.resyncs.setdefault(exchange, []).extend(done)

    async def _hand_over_books(self, exchange: str) -> None:
        pending = self._book_pending[exchange]
        if not pending or self.book_queue is None:
            return
        self._book_pending[exchange] = []
        batches = by_symbol(pending)
        self.counters.parsed += len(pending)
        for index, batch in enumerate(batches):
            try:
                await self.book_queue.put_or_hand_over(batch)
            except BaseException:
                for rest in batches[index + 1 :]:
                    self.book_queue.force_put(rest)
                raise

    async def _control(self, exchange: str, result: object) -> None:
        """A control event met in the recording (acks and heartbeats need nothing)."""
        if isinstance(result, ExchangeError):
            if result.fatal:
                await self._flush_all()
                # a recording holds no connection's symbols: only those the exchange named
                raise SubscriptionRejected(exchange, result.message, result.symbols)
            log_event(
                log, logging.WARNING, "exchange_error", exchange=exchange, message=result.message
            )
        elif isinstance(result, ReconnectNotice):
            log_event(
                log, logging.INFO, "reconnect_notice", exchange=exchange, reason=result.reason
            )

    async def _pace(self, ts: int, speed: float, stop: asyncio.Event) -> None:
        now = self.clock.monotonic()
        if self._origin is None:
            self._origin = (ts, now)
            return
        first_ts, started = self._origin
        delay = started + (ts - first_ts) / NS / speed - now
        if delay >= MIN_PAUSE_SECONDS:
            await self._flush_all()
            await self.pause(stop, delay)

    def _take(self, exchange: str) -> list[list[Trade]]:
        """The exchange's pending trades as one checked batch per symbol (see
        :meth:`connectors.session.WebSocketSession._take_pending`)."""
        groups = by_symbol(self._pending[exchange])
        self._pending[exchange] = []
        checked: list[list[Trade]] = []
        sequenced = self.protocols[exchange].sequenced
        for group in groups:
            batch = self.gaps.filter(exchange, group) if sequenced else group
            if batch:
                self.counters.parsed += len(batch)
                checked.append(batch)
        return checked

    async def _hand_over(self, batches: list[list[Trade]]) -> None:
        """Queue ``batches`` in order; cancelled while waiting for room, the rest are handed
        over regardless of the bound (the one waiting is, by ``put_or_hand_over``)."""
        for index, batch in enumerate(batches):
            try:
                await self.queue.put_or_hand_over(batch)
            except BaseException:
                for rest in batches[index + 1 :]:
                    self.queue.force_put(rest)
                raise

    async def _flush_all(self) -> None:
        for exchange, pending in self._pending.items():
            if pending:
                await self._hand_over(self._take(exchange))
        for exchange in self._book_pending:
            await self._hand_over_books(exchange)
