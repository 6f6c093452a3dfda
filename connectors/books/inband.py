"""What the in-band-snapshot book feeds share (Coinbase, Kraken, OKX, Bybit; docs:
order-books.md#synchronisation-per-exchange).

These exchanges send a symbol's full book on the channel itself, right after the subscription,
so a resync never needs HTTP: the feed breaks the symbol's book
(:meth:`~connectors.books.base.SymbolBook.break_sync`) and asks the session to send the
exchange's unsubscribe and subscribe frames for that symbol
(:class:`~connectors.books.base.Resubscribe`); the snapshot that answers ends the resync.
Updates received in between are not applied (the snapshot supersedes them) and are counted in
the :class:`~connectors.books.base.Resync` record.

Rules every feed here follows:

- a symbol's first snapshot syncs it; an update of a symbol that is not in sync yields no rows
  (counted as superseded by the resync in progress; an update before any snapshot starts a
  ``sequence`` resync of its own, as the exchange skipped the snapshot);
- a book message of a known symbol that cannot be decoded breaks that book (cause
  ``sequence``, detail ``malformed``: an update was lost) before the
  :class:`~engine.errors.MalformedFrame` propagates;
- a new connection voids every book (cause ``reconnect``, from
  :meth:`~connectors.books.base.BookFeedBase.connected`), and the resubscriptions still queued
  for the old connection are dropped: the subscribe frames of the new connection bring the
  snapshots;
- a frame of another channel of the exchange (trades, heartbeats, acknowledgements, errors) is
  decoded by the exchange's trade protocol module, and only its control events are kept: a
  trade yields no rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Final

import orjson

from connectors.books.base import NO_ROWS, BookFeedBase, Resubscribe, ResyncCause, SymbolBook
from engine.book_records import BookLevel
from engine.errors import MalformedFrame
from engine.timefmt import parse_us

_loads: Final = orjson.loads


def json_object(frame: str | bytes) -> dict[str, object]:
    """``frame`` decoded; :class:`MalformedFrame` (``json``, or ``not-object``) unless it is a
    JSON object."""
    try:
        msg = _loads(frame)
    except (ValueError, TypeError) as exc:
        raise MalformedFrame("json", str(exc)[:120]) from None
    if type(msg) is not dict:
        raise MalformedFrame("not-object", "frame is not a JSON object")
    return msg


def event_time(when: object, ts_recv: int, name: str, *, missing_ok: bool) -> int:
    """The event time in µs of an RFC 3339 ``when``; ``ts_recv`` in µs when ``when`` is
    missing (None) and ``missing_ok``; :class:`MalformedFrame` naming field ``name``
    otherwise (``time`` for text that is not a time, ``type`` for anything else)."""
    if type(when) is str:
        try:
            return parse_us(when)
        except ValueError as exc:
            raise MalformedFrame("time", str(exc)) from None
    if when is None and missing_ok:
        return ts_recv // 1000
    raise MalformedFrame("type", f"{name} must be a string")


class InBandBookFeed(BookFeedBase):
    """A :class:`~connectors.books.base.BookFeedBase` whose snapshots come in band; a subclass
    implements :meth:`_resubscribe_messages`."""

    def _resubscribe_messages(self, raw_symbol: str) -> tuple[str, ...]:
        """The frames (unsubscribe, then subscribe) that make the exchange send ``raw_symbol``'s
        book again as a snapshot."""
        raise NotImplementedError

    def connected(self, ts_recv: int, symbols: Collection[str] | None = None) -> None:
        """A new connection (for ``symbols``; None: all): their pending resubscriptions are
        void (they were for the old one), and their books wait for their snapshots (see the
        module docstring)."""
        self._actions = [
            a
            for a in self._actions
            if not (isinstance(a, Resubscribe) and (symbols is None or a.raw_symbol in symbols))
        ]
        super().connected(ts_recv, symbols)

    def _resync(self, state: SymbolBook, cause: ResyncCause, ts_recv: int, detail: str) -> None:
        """Break ``state``'s book and, unless a resync is already under way, ask for the
        snapshot (one :class:`Resubscribe` per resync)."""
        asked = state.resync is not None
        state.break_sync(cause, ts_recv, detail)
        if not asked:
            raw = state.raw_symbol
            self._ask(Resubscribe(raw, self._resubscribe_messages(raw)))

    def _not_synced(self, state: SymbolBook, ts_recv: int) -> None:
        """An update of a book that is not in sync: superseded by the coming snapshot (or, before
        any snapshot, the start of a resync)."""
        if state.resync is not None:
            state.resync.superseded += 1
        else:
            self._resync(state, "sequence", ts_recv, "update before any snapshot")

    def _guarded(
        self,
        state: SymbolBook,
        snapshot: bool,
        ts_recv: int,
        apply: Callable[[], Sequence[BookLevel]],
    ) -> Sequence[BookLevel]:
        """The rows of one message of ``state``'s symbol, by the module's rules: an update of a
        book not in sync applies nothing (:meth:`_not_synced`); otherwise ``apply()``'s rows,
        and a :class:`MalformedFrame` it raises breaks the book (:meth:`_malformed`) and
        propagates."""
        if not snapshot and not state.synced:
            self._not_synced(state, ts_recv)
            return NO_ROWS
        try:
            return apply()
        except MalformedFrame as exc:
            self._malformed(state, ts_recv, str(exc))
            raise

    def _done(
        self, state: SymbolBook, snapshot: bool, ts_recv: int, rows: list[BookLevel]
    ) -> list[BookLevel]:
        """``rows``, the rows of a message whose sequence was checked and that ``state`` applied;
        a snapshot ends the symbol's resync (:meth:`_finished`)."""
        if snapshot:
            self._finished(state, ts_recv)
        return rows

    def _malformed(self, state: SymbolBook, ts_recv: int, reason: str) -> None:
        """A book message of ``state``'s symbol could not be decoded or applied: an update is
        lost, the book may hold part of it."""
        self._resync(state, "sequence", ts_recv, f"malformed: {reason}"[:200])
