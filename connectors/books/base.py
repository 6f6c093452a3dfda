"""What every exchange's book feed provides (docs: order-books.md), with no network code.

A *book feed* is the client side of one exchange's level-2 book channel. It has the shape of an
:class:`~connectors.base.ExchangeProtocol` (connection URL, subscribe messages, keepalive,
``parse``), so the same :class:`~connectors.session.WebSocketSession` runs it, and it adds what a
book needs: state per symbol (the book, its last sequence, whether it is in sync) and *actions*
the session (or the replay) carries out for it:

- :class:`FetchSnapshot`: GET a REST snapshot (Binance, Binance.US, Bitstamp's diff channel),
  then hand the body to :meth:`BookFeed.snapshot_fetched`;
- :class:`Resubscribe`: send these frames (unsubscribe, subscribe) on the current connection so
  the exchange sends a fresh in-band snapshot (Coinbase, Kraken, OKX, Bybit).

It stays pure: it never opens a socket, never sleeps, never reads a clock (receive times come
in with the frames), and raises only :class:`~engine.errors.MalformedFrame` from ``parse`` and
``snapshot_fetched``. A frame of another channel of the same exchange (a trade) is no error: it
yields no rows.

Contract of the rows: ``parse`` and ``snapshot_fetched`` return the :class:`BookLevel` rows of
the messages they applied, in order; the rows of a snapshot come as a full book (``snapshot``
true) and every row was applied to the feed's own book first. A message that cannot be applied
(its sequence does not follow, its checksum fails, it arrives before the book is in sync)
yields no rows: it is buffered (REST feeds, to be applied after the snapshot) or superseded by
the snapshot the resync brings, and counted in the :class:`Resync` record. Nothing is dropped
silently.

A resync (:class:`Resync`) starts when the book breaks (``cause``: ``sequence``, ``checksum``,
``reconnect``, ``restart``, ``stale-snapshot``, ``snapshot``: the exchange replaced the book
of its own accord; ``crossed`` is only counted) and ends when the
snapshot that repairs it has been applied; it is then in :attr:`BookFeed.resyncs`, which the run
puts in its manifest. The first snapshot of a symbol is not a resync.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from connectors.base import Ack, ControlEvent, ExchangeError, Heartbeat, ReconnectNotice
from connectors.symbols import SymbolCache
from connectors.wire import short
from engine.book import OrderBook
from engine.book_records import BookLevel
from engine.errors import MalformedFrame

ResyncCause = Literal["sequence", "checksum", "reconnect", "restart", "stale-snapshot", "snapshot"]

MAX_BUFFERED_MESSAGES: Final = 10_000
"""Diff messages a REST feed buffers per symbol while it waits for a snapshot; past this the
oldest is dropped and counted (``Resync.superseded``), and the snapshot must be newer than what is
left (else it is fetched again)."""


@dataclass(frozen=True, slots=True)
class FetchSnapshot:
    """Fetch ``url`` (a REST snapshot of ``raw_symbol``'s book) and hand the body to
    :meth:`BookFeed.snapshot_fetched`. ``weight`` is the request's cost in the exchange's
    rate limit (Binance counts weight per minute)."""

    raw_symbol: str
    url: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Resubscribe:
    """Send ``messages`` on the current connection (in order) so the exchange sends
    ``raw_symbol``'s book again as a snapshot."""

    raw_symbol: str
    messages: tuple[str, ...]


BookAction = FetchSnapshot | Resubscribe


@dataclass(slots=True)
class Resync:
    """One resync of one symbol's book: why, when, and the sequence range it spans.

    ``from_seq`` is the last sequence applied before the break (None when there was none or
    the channel has none), ``to_seq`` the sequence of the snapshot that ended it; ``at_ns`` the
    receive time of the message that broke the book; ``done_ns`` when the snapshot was applied
    (None while in progress). ``superseded``: diff messages received meanwhile that the
    snapshot replaced instead of being applied (they are older than it, or were dropped from a
    full buffer)."""

    raw_symbol: str
    cause: ResyncCause
    at_ns: int
    from_seq: str | None
    to_seq: str | None = None
    done_ns: int | None = None
    superseded: int = 0
    detail: str = ""


@dataclass(slots=True)
class SymbolBook:
    """What a feed holds for one symbol: the book, the last applied message's sequence and
    event time, and the resync in progress (None: in sync, or never synced yet)."""

    exchange: str
    symbol: str
    raw_symbol: str
    book: OrderBook = field(default_factory=OrderBook)
    synced: bool = False
    seq: str | None = None
    resync: Resync | None = None
    crossed: int = 0
    snapshots: int = 0
    updates: int = 0

    def rows(
        self,
        bids: Sequence[Sequence[str]],
        asks: Sequence[Sequence[str]],
        *,
        snapshot: bool,
        seq: str | None,
        ts_event: int,
        ts_recv: int,
    ) -> list[BookLevel]:
        """Apply one message's levels (``[price, size, ...]`` text pairs; extra items are
        ignored) to the book and return its rows, bids first. A snapshot empties the book
        first. Raises :class:`~engine.errors.MalformedFrame` for a level that is not two
        decimals; the book may then hold part of the message (the caller resyncs)."""
        book = self.book
        if snapshot:
            book.clear()
        exchange, symbol, raw_symbol = self.exchange, self.symbol, self.raw_symbol
        out: list[BookLevel] = []
        for side, levels in (("bid", bids), ("ask", asks)):
            for level in levels:
                price, size = level[0], level[1]
                book.apply(side, price, size)  # type: ignore[arg-type]
                out.append(
                    BookLevel(
                        exchange,
                        symbol,
                        raw_symbol,
                        ts_event,
                        ts_recv,
                        seq,
                        snapshot,
                        side,
                        price,
                        size,
                    )
                )
        self.seq = seq
        if snapshot:
            self.snapshots += 1
        else:
            self.updates += 1
        if book.crossed:
            self.crossed += 1
        return out

    def break_sync(self, cause: ResyncCause, ts_recv: int, detail: str = "") -> Resync:
        """The book is no longer trustworthy: start a resync (or keep the one in progress,
        counting this message as superseded). The book stays as it is until the snapshot."""
        self.synced = False
        if self.resync is None:
            self.resync = Resync(self.raw_symbol, cause, ts_recv, self.seq, detail=detail)
        else:
            self.resync.superseded += 1
        return self.resync

    def synced_by(self, ts_recv: int) -> Resync | None:
        """A snapshot has been applied: the book is in sync again. Returns the finished resync
        (None for the symbol's first snapshot: whatever went wrong before it, a stale REST
        snapshot, updates ahead of it, no book had been written yet, so nothing is a resync)."""
        self.synced = True
        done = self.resync
        self.resync = None
        if self.snapshots <= 1:
            return None
        if done is not None:
            done.to_seq = self.seq
            done.done_ns = ts_recv
        return done


class BookFeed(Protocol):
    """The client side of one exchange's book channel (see the module docstring)."""

    name: str
    """The exchange's name in ``STREAMS`` and in records (``"binance"``)."""

    default_url: str
    """The public WebSocket base URL (``<EXCHANGE>_WS_URL`` overrides it)."""

    rest_url: str | None
    """The public REST base URL for snapshots (``<EXCHANGE>_REST_URL`` overrides it), or None
    for an exchange whose snapshots come in band."""

    keepalive_interval: float | None
    max_streams_per_connection: int
    sequenced: bool
    """Always False: a book's sequence is checked by the feed itself, not the trade-id gap
    tracker."""

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str: ...

    def keepalive_message(self) -> str | None: ...

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """Frames to send after connecting (the book channel of each symbol)."""
        ...

    def parse(self, frame: str | bytes, ts_recv: int) -> Sequence[BookLevel] | ControlEvent:
        """Decode one received frame: the rows it applied, or one control event. Raises only
        :class:`~engine.errors.MalformedFrame`."""
        ...

    def connected(self, ts_recv: int, symbols: Collection[str] | None = None) -> None:
        """A new connection opened for ``symbols`` (None: all of the feed's): their books are
        void until their next snapshot (a symbol that had one starts a ``reconnect``
        resync)."""
        ...

    def snapshot_fetched(
        self, raw_symbol: str, body: str | bytes, ts_recv: int
    ) -> Sequence[BookLevel]:
        """A REST snapshot's body arrived (REST feeds only): apply it and the buffered diffs
        that follow it; the rows, snapshot first. A snapshot older than the buffered diffs
        queues another :class:`FetchSnapshot` (cause ``stale-snapshot``). Raises only
        :class:`~engine.errors.MalformedFrame` (and the feed asks for the snapshot again)."""
        ...

    def snapshot_url(self, base_url: str, raw_symbol: str) -> str | None:
        """The REST snapshot URL of ``raw_symbol`` under ``base_url`` (None: in-band feed)."""
        ...

    def symbol_of_snapshot(self, url: str) -> str | None:
        """The raw symbol a recorded REST snapshot URL is for (replay), None if none."""
        ...

    def take_actions(self) -> list[BookAction]:
        """The actions asked for since the last call, oldest first (and forget them)."""
        ...

    @property
    def has_actions(self) -> bool:
        """True when :meth:`take_actions` would return something (cheap: the session tests it
        after every batch of frames)."""
        ...

    @property
    def books(self) -> dict[str, SymbolBook]:
        """Per raw symbol, its state."""
        ...

    def take_resyncs(self) -> list[Resync]:
        """The resyncs finished since the last call, oldest first (and forget them)."""
        ...


Pairs = Sequence[Sequence[str]]
"""Levels as an exchange sends them: ``[[price, size, ...], ...]`` text."""


def text_levels(value: object, what: str) -> Pairs:
    """``value`` if it is a list of ``[price, size, ...]`` with text price and size (extra
    items are ignored); :class:`MalformedFrame` naming ``what`` otherwise. The decimal text
    itself is checked where the levels are applied (the book), or by :func:`check_decimals`."""
    if type(value) is not list:
        raise MalformedFrame("type", f"{what} must be a list of [price, size]")
    for level in value:
        if type(level) is not list or len(level) < 2:
            raise MalformedFrame("type", f"{what} level must be [price, size]: {short(level)}")
        if type(level[0]) is not str or type(level[1]) is not str:
            raise MalformedFrame("type", f"{what} price and size must be strings")
    return value


NO_ROWS: Final[tuple[BookLevel, ...]] = ()
"""What ``parse`` returns for a frame that applied nothing."""
_CONTROL: Final = (Ack, Heartbeat, ExchangeError, ReconnectNotice)


def control_only(result: object) -> Sequence[BookLevel] | ControlEvent:
    """``result`` of a trade protocol's ``parse`` as a book feed's answer: its control event
    (ack, heartbeat, error, reconnect notice), or no rows (trades are not book rows)."""
    if isinstance(result, _CONTROL):
        return result
    return NO_ROWS


class BookFeedBase:
    """What every feed shares: per-symbol state, the action and resync lists. A subclass sets
    the class attributes of :class:`BookFeed`, implements ``connection_url``,
    ``subscribe_messages`` and ``parse`` (and, for a REST feed, ``snapshot_url``,
    ``symbol_of_snapshot`` and ``snapshot_fetched``), and uses :meth:`_book`,
    :meth:`_ask`, :meth:`_finished` for the rest."""

    name: str
    default_url: str
    rest_url: str | None = None
    keepalive_interval: float | None = None
    max_streams_per_connection: int = 50
    sequenced: bool = False

    def __init__(self) -> None:
        self._books: dict[str, SymbolBook] = {}
        self._actions: list[BookAction] = []
        self._resyncs: list[Resync] = []
        self._symbols = SymbolCache(self.name)

    @property
    def books(self) -> dict[str, SymbolBook]:
        return self._books

    @property
    def has_actions(self) -> bool:
        return bool(self._actions)

    def take_actions(self) -> list[BookAction]:
        actions, self._actions = self._actions, []
        return actions

    def take_resyncs(self) -> list[Resync]:
        resyncs, self._resyncs = self._resyncs, []
        return resyncs

    def keepalive_message(self) -> str | None:
        return None

    def connected(self, ts_recv: int, symbols: Collection[str] | None = None) -> None:
        for raw, state in self._books.items():
            if symbols is not None and raw not in symbols:
                continue
            if state.synced or state.resync is not None:
                state.break_sync("reconnect", ts_recv)
            state.synced = False

    def snapshot_url(self, base_url: str, raw_symbol: str) -> str | None:
        return None

    def symbol_of_snapshot(self, url: str) -> str | None:
        return None

    def snapshot_fetched(
        self, raw_symbol: str, body: str | bytes, ts_recv: int
    ) -> Sequence[BookLevel]:
        return ()

    # -- for subclasses --------------------------------------------------------------------

    def _canonical(self, raw_symbol: str) -> str:
        """``raw_symbol``'s canonical ``BASE-QUOTE`` (a subclass with its own rule overrides
        this); raises :class:`~engine.errors.MalformedFrame` when it cannot be split."""
        known = self._symbols.known.get(raw_symbol)
        return known if known is not None else self._symbols.resolve(raw_symbol)

    def _book(self, raw_symbol: str) -> SymbolBook:
        """The state of ``raw_symbol``, created on first use."""
        state = self._books.get(raw_symbol)
        if state is None:
            state = SymbolBook(self.name, self._canonical(raw_symbol), raw_symbol)
            self._books[raw_symbol] = state
        return state

    def _ask(self, action: BookAction) -> None:
        """Queue an action for the session (or the replay)."""
        self._actions.append(action)

    def _finished(self, state: SymbolBook, ts_recv: int) -> None:
        """``state`` applied a snapshot: it is in sync; a resync that ends here is kept."""
        done = state.synced_by(ts_recv)
        if done is not None:
            self._resyncs.append(done)
