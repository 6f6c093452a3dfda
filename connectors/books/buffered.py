"""What the REST-snapshot book feeds share (Binance, Binance.US, Bitstamp): level lists checked
for shape, the bounded buffer of diffs that wait for a snapshot, and the synchronisation around
it, :class:`BufferedBookFeed` (docs: order-books.md).

The exchange's module keeps its own rules: how a diff is decoded, whether a diff follows the
book (its sequence rule, :meth:`BufferedBookFeed._apply_live`) and how a snapshot meets the
buffered diffs (:meth:`BufferedBookFeed._apply_snapshot`). The base does the rest, the same for
every REST feed:

- a diff of a book not in sync is buffered (its decimals checked first, so that it applies
  whole later) and the first one asks for a snapshot (:class:`~connectors.books.base.FetchSnapshot`
  of :attr:`BufferedBookFeed.snapshot_weight`, at the feed's ``rest_url``);
- a diff that does not follow breaks the book and is buffered for the next snapshot; one
  whose levels fail to apply breaks it (cause ``sequence``, detail ``malformed``), drops the
  buffer and asks for a snapshot before the :class:`~engine.errors.MalformedFrame` propagates;
- a snapshot body that cannot be decoded is asked for again; one asked for before a diff was
  lost (``tainted``) is fetched again instead of applied; one for a book in sync gives no rows
  (nobody asked for it);
- a snapshot applied ends the resync, then the buffered diffs after it are applied in order
  until one does not follow (the rest wait for the next snapshot);
- a new connection voids every book and drops the buffers and pending requests.

Pure, like the feeds. Only :class:`~engine.errors.MalformedFrame` is raised.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar

import orjson

from connectors.books.base import (
    MAX_BUFFERED_MESSAGES,
    NO_ROWS,
    BookFeedBase,
    FetchSnapshot,
    Pairs,
    ResyncCause,
    SymbolBook,
    text_levels,
)
from connectors.wire import shape_error
from engine.book import decimal_of
from engine.book_records import BookLevel
from engine.errors import MalformedFrame

D = TypeVar("D")
_loads: Final = orjson.loads


def check_decimals(*sides: Pairs) -> None:
    """:class:`MalformedFrame` unless every price and size is finite non-negative decimal
    text (for what is kept to be applied later: it must not fail half way then)."""
    for levels in sides:
        for level in levels:
            decimal_of(level[0], "price")
            decimal_of(level[1], "size")


@dataclass(slots=True)
class Pending(Generic[D]):
    """The REST side of one symbol: diffs (``D``, oldest first) waiting for a snapshot,
    whether a snapshot was asked for, and ``bridged``: whether the book in sync is known to
    follow the stream (a diff was applied on top of the snapshot, or the buffer showed the
    snapshot was not older than the stream). Before that, a diff that does not follow means
    the snapshot was older than the stream (cause ``stale-snapshot``, not ``sequence``), or,
    where there is no sequence, one not newer than the snapshot is already in it."""

    buffer: deque[D] = field(default_factory=deque)
    fetching: bool = False
    bridged: bool = False
    overflowed: int = 0
    """Diffs dropped from a full buffer while no resync was in progress (the first sync)."""
    tainted: bool = False
    """The snapshot asked for may predate a diff that was lost (malformed): when it comes it is
    fetched again instead of applied (channels without a sequence: Bitstamp)."""

    def keep(self, state: SymbolBook, diff: D) -> bool:
        """Buffer ``diff`` (at most :data:`MAX_BUFFERED_MESSAGES`: the oldest is dropped and
        counted in the resync's ``superseded``, or in :attr:`overflowed`). True when a
        snapshot must be asked for now (none was asked yet); the caller asks and the flag is
        set."""
        if len(self.buffer) >= MAX_BUFFERED_MESSAGES:
            self.buffer.popleft()
            if state.resync is not None:
                state.resync.superseded += 1
            else:
                self.overflowed += 1
        self.buffer.append(diff)
        if self.fetching:
            return False
        self.fetching = True
        return True

    def drop_while(self, covered: Callable[[D], bool]) -> int:
        """Drop the oldest buffered diffs while ``covered`` (already in the snapshot); how many
        were dropped."""
        buffer = self.buffer
        dropped = 0
        while buffer and covered(buffer[0]):
            buffer.popleft()
            dropped += 1
        return dropped

    def reset(self) -> None:
        """A new connection: the old stream's diffs and the pending request are forgotten."""
        self.buffer.clear()
        self.fetching = False
        self.bridged = False
        self.tainted = False


def rest_book(body: str | bytes, key: str, what: str) -> tuple[object, Pairs, Pairs]:
    """``(body[key], bids, asks)`` of a REST snapshot body, every level checked (shape and
    decimals; ``key``'s value is for the caller to check); :class:`MalformedFrame` naming
    ``what`` otherwise."""
    try:
        doc = _loads(body)
    except (ValueError, TypeError) as exc:
        raise MalformedFrame("json", f"{what}: {str(exc)[:100]}") from None
    try:
        value = doc[key]
        bids = doc["bids"]
        asks = doc["asks"]
    except (KeyError, TypeError) as exc:
        not_object = f"{what} is not a JSON object"
        raise shape_error(exc, not_object, what, not_object) from None
    bids, asks = text_levels(bids, "bids"), text_levels(asks, "asks")
    check_decimals(bids, asks)
    return value, bids, asks


def encode_pairs(levels: Sequence[tuple[str, str]]) -> list[list[str]]:
    """(price, size) text as the ``[[price, size], ...]`` lists the REST exchanges send."""
    return [[price, size] for price, size in levels]


class Diff(Protocol):
    """What :class:`BufferedBookFeed` reads of an exchange's decoded diff."""

    @property
    def ts_recv(self) -> int: ...

    @property
    def bids(self) -> Pairs: ...

    @property
    def asks(self) -> Pairs: ...


DiffT = TypeVar("DiffT", bound=Diff)


@dataclass(frozen=True, slots=True)
class RestSnapshot:
    """A REST snapshot body, checked: ``order`` is the exchange's position of the snapshot in
    its stream (Binance's ``lastUpdateId``, Bitstamp's ``microtimestamp``), ``seq`` the text
    its rows carry, ``ts_event`` their event time in µs (None: the receive time)."""

    order: int
    seq: str
    ts_event: int | None
    bids: Pairs
    asks: Pairs


class BufferedBookFeed(BookFeedBase, Generic[DiffT]):
    """A :class:`~connectors.books.base.BookFeedBase` whose snapshots come by REST (see the
    module docstring for what it does). A subclass sets :attr:`snapshot_weight` and
    ``rest_url``, decodes its frames in ``parse`` and hands each diff of a subscribed symbol
    to :meth:`_take`, and implements :meth:`_apply_live`, :meth:`_decode_snapshot` and
    :meth:`_apply_snapshot` with its exchange's rules, using :meth:`_gap`, :meth:`_applied`,
    :meth:`_stale` and :meth:`_synced`."""

    snapshot_weight: int = 1
    """The request weight of one snapshot (the session's rate limit counts it)."""

    def __init__(self) -> None:
        self._sync: dict[str, Pending[DiffT]] = {}
        #: The symbols asked for once subscribed (or a URL was built), as ``parse`` spells
        #: them: diffs of any other symbol are malformed (no snapshot is fetched for a symbol
        #: never asked for). Empty (a replay that never subscribed): every symbol is taken.
        self._subscribed: set[str] = set()
        super().__init__()

    # -- the exchange's rules ---------------------------------------------------------------

    def _apply_live(self, state: SymbolBook, diff: DiffT) -> Sequence[BookLevel]:
        """Apply ``diff`` to a book in sync by the exchange's sequence rule: :meth:`_applied`
        when it follows, :meth:`_gap` when diffs were missed, no rows when it is already in
        the book."""
        raise NotImplementedError

    def _decode_snapshot(self, body: str | bytes) -> RestSnapshot:
        """The checked snapshot of a REST body; :class:`MalformedFrame` otherwise."""
        raise NotImplementedError

    def _apply_snapshot(
        self, state: SymbolBook, sync: Pending[DiffT], snap: RestSnapshot, ts_recv: int
    ) -> Sequence[BookLevel]:
        """Meet ``snap`` with ``sync``'s buffer by the exchange's rule: :meth:`_stale` when the
        snapshot is older than the buffer, else :meth:`_synced` once the buffered diffs it
        contains are dropped."""
        raise NotImplementedError

    def _snapshot_key(self, raw_symbol: str) -> str:
        """The key of ``raw_symbol``'s book (as ``parse`` spells the symbol)."""
        return raw_symbol

    # -- shared ------------------------------------------------------------------------------

    def _take(self, state: SymbolBook, diff: DiffT) -> Sequence[BookLevel]:
        """A decoded diff of ``state``'s symbol: applied to a book in sync, else buffered."""
        if state.synced:
            return self._apply_live(state, diff)
        self._buffer(state, diff)
        return NO_ROWS

    def _sync_of(self, raw_symbol: str) -> Pending[DiffT]:
        sync = self._sync.get(raw_symbol)
        if sync is None:
            sync = self._sync[raw_symbol] = Pending()
        return sync

    def _buffer(self, state: SymbolBook, diff: DiffT) -> None:
        """Keep ``diff`` for after the snapshot (ask for one unless already asked); its
        decimals are checked first (what is kept must apply whole later)."""
        check_decimals(diff.bids, diff.asks)
        sync = self._sync_of(state.raw_symbol)
        if sync.keep(state, diff):
            self._fetch(state, sync)

    def _fetch(self, state: SymbolBook, sync: Pending[DiffT]) -> None:
        """Ask for ``state``'s snapshot at :attr:`rest_url`."""
        sync.fetching = True
        url = self.snapshot_url(self.rest_url or "", state.raw_symbol)
        assert url is not None
        self._ask(FetchSnapshot(state.raw_symbol, url, self.snapshot_weight))

    def _gap(
        self, state: SymbolBook, diff: DiffT, cause: ResyncCause, detail: str
    ) -> Sequence[BookLevel]:
        """``diff`` does not follow the book: break it (``cause``) and buffer ``diff`` for the
        next snapshot. No rows."""
        state.break_sync(cause, diff.ts_recv, detail)
        self._buffer(state, diff)
        return NO_ROWS

    def _applied(
        self, state: SymbolBook, diff: DiffT, *, seq: str, ts_event: int
    ) -> Sequence[BookLevel]:
        """Apply ``diff``, which follows the book; its rows. The book is then known to follow
        the stream (``bridged``). Levels that fail to apply (part of the message may be
        applied: the book is no longer the exchange's) break the book, drop the buffer and ask
        for a snapshot before the :class:`MalformedFrame` propagates."""
        sync = self._sync_of(state.raw_symbol)
        try:
            rows = state.rows(
                diff.bids,
                diff.asks,
                snapshot=False,
                seq=seq,
                ts_event=ts_event,
                ts_recv=diff.ts_recv,
            )
        except MalformedFrame:
            state.break_sync("sequence", diff.ts_recv, "malformed")
            sync.buffer.clear()
            self._fetch(state, sync)
            raise
        sync.bridged = True
        return rows

    def snapshot_fetched(
        self, raw_symbol: str, body: str | bytes, ts_recv: int
    ) -> Sequence[BookLevel]:
        """Apply a REST snapshot and the buffered diffs after it (see the module docstring and
        the exchange's :meth:`_apply_snapshot`); the rows, snapshot first. A snapshot older
        than the buffer is fetched again (cause ``stale-snapshot``) and gives no rows; so does
        a snapshot for a book in sync. Raises only MalformedFrame (a bad body: the snapshot is
        asked for again)."""
        key = self._snapshot_key(raw_symbol)
        state = self._book(key)
        sync = self._sync_of(key)
        sync.fetching = False
        try:
            snap = self._decode_snapshot(body)
        except MalformedFrame:
            self._fetch(state, sync)
            raise
        if sync.tainted:  # asked for before a diff was lost: it may not contain that diff
            sync.tainted = False
            self._fetch(state, sync)
            return NO_ROWS
        if state.synced:
            return NO_ROWS  # nobody asked for it (a late answer): the book needs no repair
        return self._apply_snapshot(state, sync, snap, ts_recv)

    def _stale(
        self, state: SymbolBook, sync: Pending[DiffT], ts_recv: int, detail: str, dropped: int
    ) -> Sequence[BookLevel]:
        """The snapshot is older than the buffered diffs (the changes between would be
        missing): a ``stale-snapshot`` resync (unless one is under way; ``dropped`` buffered
        diffs counted as superseded, ``detail`` set) and the snapshot fetched again. No
        rows."""
        if state.resync is None:
            state.break_sync("stale-snapshot", ts_recv)
        if state.resync is not None:
            state.resync.superseded += dropped
            state.resync.detail = detail
        self._fetch(state, sync)
        return NO_ROWS

    def _synced(
        self,
        state: SymbolBook,
        sync: Pending[DiffT],
        snap: RestSnapshot,
        ts_recv: int,
        *,
        dropped: int,
        bridged: bool,
    ) -> list[BookLevel]:
        """Apply ``snap`` (the ``dropped`` buffered diffs it contains are counted as
        superseded), end the resync, set ``bridged``, then apply the buffered diffs in order
        until one does not follow (a gap inside the buffer: the rest wait for a snapshot).
        The rows, snapshot first."""
        if state.resync is not None:
            state.resync.superseded += dropped
        ts_event = ts_recv // 1000 if snap.ts_event is None else snap.ts_event
        rows = state.rows(
            snap.bids, snap.asks, snapshot=True, seq=snap.seq, ts_event=ts_event, ts_recv=ts_recv
        )
        self._finished(state, ts_recv)
        sync.bridged = bridged
        buffer = sync.buffer
        pending = list(buffer)
        buffer.clear()
        for index, diff in enumerate(pending):
            if not state.synced:
                buffer.extend(pending[index:])
                break
            rows.extend(self._apply_live(state, diff))
        return rows

    def connected(self, ts_recv: int, symbols: Collection[str] | None = None) -> None:
        """A new connection (for ``symbols``; None: all): their books are void until their
        next snapshot; the old stream's buffered diffs and pending requests are dropped (the
        new stream's first diff asks for a snapshot)."""
        super().connected(ts_recv, symbols)
        for raw, sync in self._sync.items():
            if symbols is None or raw in symbols:
                sync.reset()
