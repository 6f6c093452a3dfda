"""What a session does for its book feed (docs: order-books.md): the feed's actions, carried out.

A :class:`~connectors.books.base.BookFeed` is pure: when its book needs a snapshot it asks for
one (:class:`~connectors.books.base.FetchSnapshot`, :class:`~connectors.books.base.Resubscribe`).
:class:`BookActions` is the part of a :class:`~connectors.session.WebSocketSession` that answers:

- a fetch runs as a task of the connection's task group (one per symbol at a time), through the
  injected ``fetcher`` (:mod:`connectors.rest` in a run: timeouts, retries, the exchange's
  request weight); its body goes to the feed, the rows the feed returns (the snapshot, then the
  buffered diffs it applied) to the session's pending batch. A fetch that fails is tried again
  after a backoff while the connection lasts; the feed keeps buffering meanwhile (bounded).
  With capture on, the response becomes a recording line (``http``, ``status``, ``frame``).
- a resubscribe sends its frames on the current connection, paced like subscriptions, from a
  task of the connection's group (the reader never waits on the pacing); one left unanswered
  for ``RESUBSCRIBE_TIMEOUT`` (the exchange refused or ignored it) makes the session reconnect,
  whose subscriptions bring every snapshot: no resync waits forever.
- a snapshot body the feed cannot read counts as an invalid frame, and the feed's next request
  waits a backoff first.

Finished resyncs are logged (``book_resync``) and kept in :attr:`BookActions.resyncs` for the
manifest. Cancel-safety: :meth:`cancel` cancels the fetches in flight; a fetch cancelled before
its body reached the feed changes nothing (the feed asks again after the next connect).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from connectors.books.base import BookFeed, FetchSnapshot, Resubscribe, Resync
from engine.book_records import BookLevel
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import FeedvaultError, MalformedFrame
from engine.retry import Jitter, RetryPolicy

RESUBSCRIBE_TIMEOUT: Final = 30.0
"""Seconds a resubscription may go unanswered (no snapshot) before the session reconnects."""
REFETCH: Final = RetryPolicy(initial=1.0, cap=30.0, jitter=Jitter.FULL)
"""The wait before a failed snapshot fetch is tried again (after the client's own retries)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A REST response: its status, body and receive time (ns since the epoch)."""

    status: int
    body: bytes
    ts_recv: int


SnapshotFetcher = Callable[[str, int], Awaitable[Fetched]]
"""``(url, weight) -> Fetched`` for a 2xx answer; raises a
:class:`~engine.errors.FeedvaultError` naming the URL and the cause when it gives up."""


class BookActions:
    """Carries out one session's book feed actions (see the module docstring)."""

    def __init__(
        self,
        feed: BookFeed,
        *,
        fetcher: SnapshotFetcher | None,
        deliver: Callable[[Sequence[BookLevel]], None],
        send: Callable[[str], Awaitable[None]],
        captured: Callable[[Fetched, str], None] | None,
        log: Callable[..., None],
        invalid: Callable[[MalformedFrame], None],
        control_interval: float,
        refetch: RetryPolicy = REFETCH,
        clock: Clock = SYSTEM_CLOCK,
        reconnect: Callable[[str], None] | None = None,
        resubscribe_timeout: float = RESUBSCRIBE_TIMEOUT,
    ) -> None:
        """``reconnect(reason)``: asks the session to reconnect now (a resubscription left
        unanswered for ``resubscribe_timeout`` seconds of ``clock``)."""
        self.feed = feed
        self.clock = clock
        self.reconnect = reconnect
        self.resubscribe_timeout = resubscribe_timeout
        self._asked: dict[str, float] = {}  # symbol -> when its resubscription was sent
        self.fetcher = fetcher
        self.deliver = deliver
        self.send = send
        self.captured = captured
        self.log = log
        self.invalid = invalid
        self.control_interval = control_interval
        self.refetch = refetch
        #: Finished resyncs, oldest first (the manifest's ``resyncs``).
        self.resyncs: list[Resync] = []
        self._fetches: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # resubscriptions being sent
        self._sending = asyncio.Lock()

    def connected(self, ts_recv: int) -> None:
        """A connection opened: the feed's books are void until their next snapshot."""
        self._asked.clear()
        self.feed.connected(ts_recv)

    def in_progress(self) -> list[Resync]:
        """The resyncs not finished (the run stopped during them)."""
        return [state.resync for state in self.feed.books.values() if state.resync is not None]

    async def after_batch(self, tg: asyncio.TaskGroup | None) -> None:
        """Keep the resyncs the feed finished; carry out the actions it asked for (fetches
        start as tasks of ``tg``, the connection's group; without one they are not started)."""
        for done in self.feed.take_resyncs():
            self.resyncs.append(done)
            self.log(
                logging.WARNING,
                "book_resync",
                symbol=done.raw_symbol,
                cause=done.cause,
                from_seq=done.from_seq,
                to_seq=done.to_seq,
                superseded=done.superseded,
                took_ms=None if done.done_ns is None else (done.done_ns - done.at_ns) // 1_000_000,
                detail=done.detail or None,
            )
        if self._asked:
            self._check_answered()
        if not self.feed.has_actions:
            return
        for action in self.feed.take_actions():
            if tg is None:
                continue
            if isinstance(action, Resubscribe):
                # A task, so that the reader never waits on the pacing (many symbols may
                # resync at once); the tasks send one at a time through the sender lock.
                task = tg.create_task(self._resubscribe(action))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(action, FetchSnapshot):
                running = self._fetches.get(action.raw_symbol)
                if running is None or running.done():
                    self._fetches[action.raw_symbol] = tg.create_task(self._fetch(action, tg))

    def _check_answered(self) -> None:
        """Forget the resubscriptions whose snapshot came; past ``resubscribe_timeout``
        without it (the exchange refused or ignored the request), reconnect: a new connection
        subscribes every symbol afresh, which brings the snapshots."""
        books = self.feed.books
        now = self.clock.monotonic()
        for symbol, sent in list(self._asked.items()):
            state = books.get(symbol)
            if state is None or state.resync is None:
                del self._asked[symbol]
            elif now - sent >= self.resubscribe_timeout and self.reconnect is not None:
                self.log(
                    logging.WARNING,
                    "book_resubscribe_unanswered",
                    symbol=symbol,
                    waited_s=round(now - sent, 3),
                    note="reconnecting: the new connection's subscriptions bring the snapshots",
                )
                self._asked.clear()
                self.reconnect(f"book resync of {symbol} unanswered")
                return

    async def _resubscribe(self, action: Resubscribe) -> None:
        """Send a resubscription's frames, paced like subscriptions (one control message per
        ``control_interval`` for the whole session)."""
        self.log(logging.INFO, "book_resubscribe", symbol=action.raw_symbol)
        self._asked.setdefault(action.raw_symbol, self.clock.monotonic())
        async with self._sending:
            for message in action.messages:
                await self.send(message)
                await asyncio.sleep(self.control_interval)

    def cancel(self) -> None:
        """Cancel every fetch and resubscription in flight (the connection is ending)."""
        for task in [*self._fetches.values(), *self._tasks]:
            task.cancel()
        self._fetches.clear()
        self._tasks.clear()

    async def _fetch(self, action: FetchSnapshot, tg: asyncio.TaskGroup) -> None:
        fetcher = self.fetcher
        if fetcher is None:
            self.log(
                logging.ERROR,
                "book_snapshot_unavailable",
                symbol=action.raw_symbol,
                note="this session has no REST client: the book stays out of sync",
            )
            return
        attempt = 0
        while True:
            try:
                fetched = await fetcher(action.url, action.weight)
            except FeedvaultError as exc:
                delay = self.refetch.delay(attempt)
                attempt += 1
                self.log(
                    logging.WARNING,
                    "book_snapshot_failed",
                    symbol=action.raw_symbol,
                    error=str(exc),
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            break
        if self.captured is not None:
            self.captured(fetched, action.url)
        try:
            rows = self.feed.snapshot_fetched(action.raw_symbol, fetched.body, fetched.ts_recv)
        except MalformedFrame as exc:
            # A body that is not a snapshot (an error page served as 200): the feed asks
            # again; not before a backoff, or the loop would spend the weight budget.
            self.invalid(exc)
            await asyncio.sleep(self.refetch.delay(0))
            rows = ()
        self._fetches.pop(action.raw_symbol, None)
        if rows:
            self.deliver(rows)
        await self.after_batch(tg)

    def figures(self) -> dict[str, Any]:
        """Per raw symbol: messages that left the book crossed."""
        return {symbol: state.crossed for symbol, state in self.feed.books.items()}
