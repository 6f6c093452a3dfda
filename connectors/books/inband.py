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

from collections.abc import Sequence
from typing import Final

from connectors.base import Ack, ControlEvent, ExchangeError, Heartbeat, ReconnectNotice
from connectors.books.base import BookFeedBase, Resubscribe, ResyncCause, SymbolBook
from engine.book_records import BookLevel

NO_ROWS: Final[tuple[BookLevel, ...]] = ()
_CONTROL: Final = (Ack, Heartbeat, ExchangeError, ReconnectNotice)


def control_only(result: object) -> Sequence[BookLevel] | ControlEvent:
    """``result`` of a trade protocol's ``parse`` as a book feed's answer: its control event,
    or no rows (trades are not book rows)."""
    if isinstance(result, _CONTROL):
        return result
    return NO_ROWS


class InBandBookFeed(BookFeedBase):
    """A :class:`~connectors.books.base.BookFeedBase` whose snapshots come in band; a subclass
    implements :meth:`_resubscribe_messages`."""

    def _resubscribe_messages(self, raw_symbol: str) -> tuple[str, ...]:
        """The frames (unsubscribe, then subscribe) that make the exchange send ``raw_symbol``'s
        book again as a snapshot."""
        raise NotImplementedError

    def connected(self, ts_recv: int) -> None:
        """A new connection: pending resubscriptions are void (they were for the old one), and
        every book waits for its snapshot (see the module docstring)."""
        self._actions = [a for a in self._actions if not isinstance(a, Resubscribe)]
        super().connected(ts_recv)

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

    def _malformed(self, state: SymbolBook, ts_recv: int, reason: str) -> None:
        """A book message of ``state``'s symbol could not be decoded or applied: an update is
        lost, the book may hold part of it."""
        self._resync(state, "sequence", ts_recv, f"malformed: {reason}"[:200])
