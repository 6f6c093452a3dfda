"""What the fake exchange's order books were and what it sent of them
(docs: testing.md#order-books-on-the-fake-exchange).

Two records per symbol:

- the *history*: every message the book market made (:meth:`BookLedger.made`), starting with
  the book it started from, so :meth:`BookLedger.book_at` rebuilds the exchange's book as of
  any update id (from the nearest of the books kept every :data:`CHECKPOINT` messages; the
  oldest messages beyond ``history_limit`` per symbol are dropped with their checkpoints, and
  asking for a book older than what is kept raises ``ValueError``);
- what was *sent* (:meth:`BookLedger.sent`): a message is recorded once its frame has left the
  process, per connection, with the depth of the channel it went out on. :meth:`BookLedger.book`
  is the book a connection was served: the book as of the last message sent to it, at that
  channel's depth. A client that keeps its book right holds exactly that (or, after a REST
  snapshot newer than the last message, :meth:`BookLedger.book_at` of the snapshot's id).

Messages left out by the ``book-gap`` fault are counted in :attr:`BookLedger.gaps`, frames
sent with a wrong checksum (``book-checksum``) in :attr:`BookLedger.corrupted`; REST snapshots
answered are listed in :attr:`BookLedger.rest`. Not thread-safe (one event loop).

Books are held as price text -> size text (the market writes one text per tick), so recording
costs a dict operation per level; an :class:`~engine.book.OrderBook` is built only when asked.

When the market cycles (``--book-rate max``,
:meth:`~connectors.fake.book_market.BookMarket.start_cycle`), its messages are recorded as runs
(:meth:`BookLedger.made_run`, :meth:`BookLedger.sent_run`): how many messages of the cycle were
made and sent, not their levels; a book as of an update id since the cycle started is rebuilt
from the cycle position, and its event time from the runs kept (the latest ``history_limit``;
older ones answer 0). :meth:`BookLedger.ids` and :meth:`BookLedger.update_id_at` cover the
messages before the cycle only.
"""

from __future__ import annotations

import bisect
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from connectors.fake.book_market import ZERO_SIZES, BookCycle, BookMessage, CycleRun, Pair
from engine.book import OrderBook, Side

HISTORY_LIMIT: Final = 200_000
"""Messages of history kept per symbol by default."""
CHECKPOINT: Final = 1024
"""A copy of the book is kept every this many messages (where :meth:`BookLedger.book_at`
starts replaying from)."""


@dataclass(slots=True)
class _Levels:
    """A book as price text -> size text per side, and the update id it is as of."""

    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    update_id: int = -1
    ts_us: int = 0

    def apply(self, msg: BookMessage) -> None:
        if msg.snapshot:
            self.bids, self.asks = dict(msg.bids), dict(msg.asks)
        else:
            for levels, pairs in ((self.bids, msg.bids), (self.asks, msg.asks)):
                for price, size in pairs:
                    if size in ZERO_SIZES:
                        levels.pop(price, None)
                    else:
                        levels[price] = size
        self.update_id = msg.update_id
        self.ts_us = msg.ts_us

    def copy(self) -> _Levels:
        return _Levels(dict(self.bids), dict(self.asks), self.update_id, self.ts_us)

    def order_book(self, depth: int | None) -> OrderBook:
        book = OrderBook()
        for side, levels in (("bid", self.bids), ("ask", self.asks)):
            for price, size in levels.items():
                book.apply(side, price, size)  # type: ignore[arg-type]
        if depth is not None:
            book.truncate(depth)
        return book


@dataclass(slots=True)
class _History:
    """One symbol's messages (``messages[0]`` is message number ``first`` since the start),
    the book after the last one, and checkpoints: (number of messages applied, the book then),
    oldest first, the first one at or before ``first``."""

    latest: _Levels
    checkpoints: deque[tuple[int, _Levels]]
    messages: deque[BookMessage] = field(default_factory=deque)
    first: int = 0
    count: int = 0
    cycle: BookCycle | None = None
    """Since the market started cycling (:meth:`BookLedger.made_run`): its cycle, which began
    at ``latest``."""
    made: int = 0
    """Messages of ``cycle`` made."""
    runs: deque[tuple[int, int]] = field(default_factory=deque)
    """(first message, its event time) of each run of ``cycle`` made, the latest
    ``history_limit``."""


@dataclass(slots=True)
class SentBook:
    """One book message that left for a connection: on a channel of ``depth`` levels (None:
    the whole book), the message itself; ``corrupt``: its checksum was made wrong."""

    connection: int
    depth: int | None
    message: BookMessage
    corrupt: bool = False


@dataclass(frozen=True, slots=True)
class RestSnapshot:
    """A REST snapshot the fake answered: the symbol, the update id and event time of the
    book it held, and whether it was the ``stale-snapshot`` fault's."""

    raw_symbol: str
    update_id: int
    ts_us: int
    levels: int
    stale: bool


class BookLedger:
    """The books the fake made and served; see the module docstring."""

    def __init__(self, *, memory_limit: int = 1_000_000, history_limit: int = HISTORY_LIMIT):
        self._history: dict[str, _History] = {}
        self._history_limit = history_limit
        self._last: dict[tuple[int, str], SentBook] = {}
        self._kept: list[SentBook] = []
        self._memory_limit = memory_limit
        self.messages = 0
        """Book messages sent, all connections."""
        self.changes = 0
        """Level changes sent (rows of the messages), all connections."""
        self.per_symbol: dict[str, int] = {}
        """Messages sent per raw symbol."""
        self.gaps = 0
        """Messages left out by the ``book-gap`` fault."""
        self.corrupted = 0
        """Messages sent with a wrong checksum (``book-checksum``)."""
        self.undelivered = 0
        """Book messages made for a connection and not sent (stall, slow reader, closing)."""
        self.rest: list[RestSnapshot] = []
        """REST snapshots answered, in order."""

    # -- recording -------------------------------------------------------------------------------

    def made(self, msg: BookMessage) -> None:
        """The market made ``msg`` (the whole book's message, not a view's)."""
        history = self._history.get(msg.raw_symbol)
        if history is None:
            base = _Levels()
            base.apply(msg)
            self._history[msg.raw_symbol] = _History(base.copy(), deque([(0, base)]))
            return
        history.messages.append(msg)
        history.latest.apply(msg)
        count = history.count = history.count + 1
        if count % CHECKPOINT == 0:
            history.checkpoints.append((count, history.latest.copy()))
        if len(history.messages) > self._history_limit + CHECKPOINT:
            checkpoints = history.checkpoints
            checkpoints.popleft()
            messages, cut = history.messages, checkpoints[0][0]
            while history.first < cut:
                messages.popleft()
                history.first += 1

    def made_run(self, run: CycleRun) -> None:
        """The market made ``run`` (the cycle's fast path, ``--book-rate max``): recorded as
        the run, not message by message. The cycle starts from the book the history holds
        last."""
        history = self._history[run.cycle.raw_symbol]
        if history.cycle is not run.cycle:
            if run.cycle.base_id != history.latest.update_id or run.first != 0:
                raise ValueError(f"{run.cycle.raw_symbol}: the cycle does not follow the history")
            history.cycle = run.cycle
        history.made = run.first + run.count
        history.runs.append((run.first, run.ts_us))
        if len(history.runs) > self._history_limit:
            history.runs.popleft()

    def sent_run(self, connection: int, depth: int | None, run: CycleRun) -> None:
        """``run``'s messages left for ``connection`` on a channel of ``depth`` levels: as
        :meth:`sent` of each, in order (none corrupt)."""
        if run.count <= 0:
            return
        raw = run.cycle.raw_symbol
        last = run.cycle.message(run.first + run.count - 1, run.ts_us + run.count - 1)
        self._last[(connection, raw)] = SentBook(connection, depth, last)
        self.messages += run.count
        self.changes += run.changes
        self.per_symbol[raw] = self.per_symbol.get(raw, 0) + run.count
        room = self._memory_limit - len(self._kept)
        if room > 0:
            for msg in run.head(min(room, run.count)).messages():
                self._kept.append(SentBook(connection, depth, msg))

    def sent(self, connection: int, depth: int | None, msg: BookMessage, corrupt: bool) -> None:
        """``msg`` left for ``connection`` on a channel of ``depth`` levels."""
        record = SentBook(connection, depth, msg, corrupt)
        self._last[(connection, msg.raw_symbol)] = record
        self.messages += 1
        self.changes += len(msg.bids) + len(msg.asks)
        self.per_symbol[msg.raw_symbol] = self.per_symbol.get(msg.raw_symbol, 0) + 1
        if corrupt:
            self.corrupted += 1
        if len(self._kept) < self._memory_limit:
            self._kept.append(record)

    def answered(self, snapshot: RestSnapshot) -> None:
        """A REST snapshot was answered."""
        self.rest.append(snapshot)

    # -- reading ---------------------------------------------------------------------------------

    def symbols(self) -> list[str]:
        """The raw symbols of the market, in order."""
        return list(self._history)

    def connections(self, raw_symbol: str | None = None) -> list[int]:
        """Connections sent a book message (of ``raw_symbol``), ascending."""
        return sorted({c for c, raw in self._last if raw_symbol is None or raw == raw_symbol})

    def last(self, raw_symbol: str, connection: int | None = None) -> SentBook | None:
        """The last message of ``raw_symbol`` sent to ``connection`` (None: to the highest
        numbered connection sent one), or None."""
        if connection is None:
            conns = self.connections(raw_symbol)
            if not conns:
                return None
            connection = conns[-1]
        return self._last.get((connection, raw_symbol))

    def sent_messages(
        self, raw_symbol: str | None = None, connection: int | None = None
    ) -> Iterator[SentBook]:
        """The messages sent (of ``raw_symbol``, to ``connection``) in send order, as far as
        ``memory_limit`` kept them."""
        for record in self._kept:
            if raw_symbol is not None and record.message.raw_symbol != raw_symbol:
                continue
            if connection is None or record.connection == connection:
                yield record

    def book(self, raw_symbol: str, connection: int | None = None) -> OrderBook:
        """The book ``connection`` was served (see :meth:`last`): as of the last message sent
        to it, at its channel's depth. ValueError when none was sent."""
        record = self.last(raw_symbol, connection)
        if record is None:
            raise ValueError(f"no book message of {raw_symbol} was sent to {connection}")
        return self.book_at(raw_symbol, record.message.update_id, record.depth)

    def book_at(self, raw_symbol: str, update_id: int, depth: int | None = None) -> OrderBook:
        """The exchange's book of ``raw_symbol`` as of ``update_id`` (after every message with
        an id up to it), its best ``depth`` levels per side. ValueError for an id before the
        history kept (or an unknown symbol)."""
        return self._levels_at(raw_symbol, update_id).order_book(depth)

    def message_at(self, raw_symbol: str, update_id: int) -> BookMessage:
        """The book as of ``update_id`` as a snapshot message (its update id and event time
        are those of the last message at or before ``update_id``)."""
        levels = self._levels_at(raw_symbol, update_id)
        history = self._history[raw_symbol]
        symbol = next((m.symbol for m in reversed(history.messages)), raw_symbol)
        return BookMessage(
            raw_symbol,
            symbol,
            levels.update_id,
            levels.update_id,
            -1,
            0,
            levels.ts_us,
            True,
            _best_first(levels.bids, True),
            _best_first(levels.asks, False),
        )

    def message_before(self, raw_symbol: str, update_id: int) -> BookMessage:
        """The book as of the last message with an id before ``update_id``, as a snapshot
        message (the ``stale-snapshot`` fault's answer); ValueError beyond the history."""
        return self.message_at(raw_symbol, update_id - 1)

    def ids(self, raw_symbol: str) -> list[int]:
        """The update ids of the messages in the history, oldest first."""
        return [m.update_id for m in self._history[raw_symbol].messages]

    def update_id_at(
        self, raw_symbol: str, *, ts_us: int | None = None, number: int | None = None
    ) -> int:
        """The update id of the last message with event time ``ts_us`` or earlier (Bitstamp's
        ``microtimestamp``), or of the last message numbered ``number`` (Bybit's ``u``);
        ValueError when there is none in the history."""
        history = self._history.get(raw_symbol)
        if history is None:
            raise ValueError(f"no book history of {raw_symbol}")
        for msg in reversed(history.messages):
            if (ts_us is not None and msg.ts_us <= ts_us) or msg.number == number:
                return msg.update_id
        oldest = history.checkpoints[0][1]
        if ts_us is not None and oldest.ts_us <= ts_us:
            return oldest.update_id
        raise ValueError(f"no message of {raw_symbol} in the history matches")

    def _levels_at(self, raw_symbol: str, update_id: int) -> _Levels:
        history = self._history.get(raw_symbol)
        if history is None:
            raise ValueError(f"no book history of {raw_symbol}")
        cycle = history.cycle
        if cycle is not None and update_id >= cycle.base_id:
            return self._cycle_levels(history, cycle, min(cycle.applied(update_id), history.made))
        if update_id >= history.latest.update_id:
            return history.latest
        start = None
        for applied, book in reversed(history.checkpoints):
            if book.update_id <= update_id:
                start = applied, book
                break
        if start is None:
            oldest = history.checkpoints[0][1].update_id
            raise ValueError(
                f"{raw_symbol}: update id {update_id} is before the history kept (from {oldest})"
            )
        applied, book = start
        levels = book.copy()
        messages = history.messages
        for index in range(applied - history.first, len(messages)):
            msg = messages[index]
            if msg.update_id > update_id:
                break
            levels.apply(msg)
        return levels

    def _cycle_levels(self, history: _History, cycle: BookCycle, n: int) -> _Levels:
        """The book after ``n`` messages of ``cycle`` (``latest`` when none)."""
        if n <= 0:
            return history.latest
        bids, asks = cycle.levels(n)
        runs = history.runs
        index = bisect.bisect_right(runs, (n - 1, sys.maxsize)) - 1
        if index < 0:  # older than the runs kept: the event time is unknown
            ts_us = 0
        else:
            first, ts_us = runs[index]
            ts_us += n - 1 - first
        return _Levels(bids, asks, cycle.ids(n - 1)[1], ts_us)

    def _latest(self, raw_symbol: str) -> _Levels:
        """The market's book now."""
        history = self._history[raw_symbol]
        if history.cycle is not None:
            return self._cycle_levels(history, history.cycle, history.made)
        return history.latest

    def summary(self) -> dict[str, Any]:
        """Counts for a log line."""
        return {
            "book_messages": self.messages,
            "book_changes": self.changes,
            "book_per_symbol": dict(sorted(self.per_symbol.items())),
            "book_gaps": self.gaps,
            "book_checksums_corrupted": self.corrupted,
            "book_undelivered": self.undelivered,
            "rest_snapshots": len(self.rest),
            "rest_snapshots_stale": sum(1 for r in self.rest if r.stale),
        }

    def lines(self) -> Iterable[bytes]:
        """JSONL: per (connection, symbol) the book it was served (``"kind":"served"``), then
        per symbol the market's latest book (``"kind":"market"``); levels best first."""
        for (conn, raw), record in sorted(self._last.items()):
            try:
                levels = self._levels_at(raw, record.message.update_id)
            except ValueError:  # older than the history kept: the ids only
                levels = _Levels(update_id=record.message.update_id, ts_us=record.message.ts_us)
            yield _line(
                "served", raw, levels, record.depth, conn=conn, number=record.message.number
            )
        for raw in self._history:
            yield _line("market", raw, self._latest(raw), None)

    def write(self, path: str | os.PathLike[str]) -> int:
        """Write :meth:`lines` to ``path``; the number of lines."""
        count = 0
        with open(path, "wb") as out:
            for line in self.lines():
                out.write(line)
                count += 1
        return count


def _best_first(levels: dict[str, str], bid: bool) -> tuple[Pair, ...]:
    book = OrderBook()
    side: Side = "bid" if bid else "ask"
    for price, size in levels.items():
        book.apply(side, price, size)
    return tuple((level.price, level.size) for level in book.levels(side))


def _line(kind: str, raw: str, levels: _Levels, depth: int | None, **extra: int) -> bytes:
    bids, asks = _best_first(levels.bids, True), _best_first(levels.asks, False)
    if depth is not None:
        bids, asks = bids[:depth], asks[:depth]
    doc = {
        "kind": kind,
        **extra,
        "raw_symbol": raw,
        "depth": depth,
        "update_id": levels.update_id,
        "ts_us": levels.ts_us,
        "bids": [list(p) for p in bids],
        "asks": [list(p) for p in asks],
    }
    return orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)
