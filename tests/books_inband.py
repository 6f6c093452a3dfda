"""Helpers shared by the in-band book feeds' tests (Coinbase, Kraken, OKX, Bybit): the levels
of a book as text, the rebuild of the emitted rows, and the hypothesis check that only
``MalformedFrame`` escapes ``parse``. :func:`sides` and :func:`rows_of` serve the REST feeds'
tests too (tests/books_rest.py has the rest of theirs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.base import Ack, ExchangeError, Heartbeat, ReconnectNotice
from connectors.books.base import BookFeed
from engine.book import OrderBook
from engine.book_records import BookLevel, BookReplica
from engine.errors import MalformedFrame

CONTROL = (Ack, Heartbeat, ExchangeError, ReconnectNotice)


def sides(book: OrderBook) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(bids, asks) of ``book`` best first, as (price, size) text."""
    return (
        [(lv.price, lv.size) for lv in book.levels("bid")],
        [(lv.price, lv.size) for lv in book.levels("ask")],
    )


def rows_of(result: Sequence[BookLevel] | object) -> list[BookLevel]:
    """``parse``'s answer as rows; fails the test for a control event."""
    assert not isinstance(result, CONTROL), result
    assert isinstance(result, (list, tuple))
    return list(result)


class Rebuild:
    """Every row a feed emitted, applied to a :class:`BookReplica` as it comes: the book a
    reader of the stored rows would hold."""

    def __init__(self, feed: BookFeed) -> None:
        self.feed = feed
        self.replica = BookReplica()
        self.rows: list[BookLevel] = []

    def parse(self, frame: str, ts_recv: int) -> list[BookLevel]:
        rows = rows_of(self.feed.parse(frame, ts_recv))
        self.rows.extend(rows)
        self.replica.apply_all(rows)
        return rows

    def agrees(self, raw_symbol: str) -> bool:
        """True when the rebuilt book of ``raw_symbol`` equals the feed's, level for level."""
        state = self.feed.books[raw_symbol]
        return sides(self.replica.book(state.exchange, state.symbol)) == sides(state.book)


def parse_only_malformed(feed: BookFeed, frame: str | bytes) -> Any:
    """``feed.parse(frame)``: its answer, or None when it raised :class:`MalformedFrame`
    (any other exception fails the test)."""
    try:
        return feed.parse(frame, 1_000)
    except MalformedFrame:
        return None
