"""Window-opening snapshots of the ``book`` dataset (docs: order-books.md#the-book-schema).

Every object of the ``book`` dataset begins, for each symbol it holds, with a snapshot of that
symbol's book as written so far, so any single object rebuilds the book. :class:`BookOpenings`
keeps those books and, when a symbol's first row enters a window, puts the snapshot rows in
front of it: the levels of the book after the previous row, carrying that row's ``seq``,
``ts_event`` and ``ts_recv`` (so a reader that concatenates objects sees the book restated, not
changed). Nothing is put in front when the book is empty or when the row itself starts a new
snapshot (it replaces the book anyway).

The books are kept cheaply, because every row of the dataset passes here: per symbol, the
latest size text of each (side, price text) in the order of their last update (one dict
operation per row, no decimal arithmetic). Only when a window opens are they turned into a real
book (:class:`~engine.book.OrderBook`, keyed by decimal value, so ``"0.10"`` and ``"0.1"`` are
one level and the later update wins, and zero sizes remove), which then replaces the texts.
The rule is :class:`~engine.book_records.BookReplica`'s; a test checks the two agree.

Pure, like the windower that owns it; not thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.book import OrderBook
from engine.book_records import BookLevel, snapshot_rows


class _Written:
    """One symbol's book as written: the latest size per (side, price text), in the order of
    their last update, and the last row."""

    __slots__ = ("last", "latest")

    def __init__(self) -> None:
        self.latest: dict[tuple[str, str], str] = {}
        self.last: BookLevel | None = None

    def book(self) -> OrderBook:
        """The book as an :class:`OrderBook` (and the texts reduced to its levels)."""
        book = OrderBook()
        for (side, price), size in self.latest.items():
            book.apply(side, price, size)  # type: ignore[arg-type]
        self.latest = {
            (side, level.price): level.size
            for side in ("bid", "ask")
            for level in book.levels(side)
        }
        return book


class BookOpenings:
    """The books as written, and the snapshot rows that open a window."""

    def __init__(self) -> None:
        self._books: dict[tuple[str, str], _Written] = {}
        #: Snapshot rows put in front of windows so far (they count as the windows' records).
        self.rows_added = 0

    def book(self, exchange: str, symbol: str) -> OrderBook:
        """The book of ``exchange``/``symbol`` as written so far."""
        written = self._books.get((exchange, symbol))
        return written.book() if written is not None else OrderBook()

    def prepare(self, seen: set[tuple[str, str]], rows: Sequence[Any]) -> Sequence[Any]:
        """``rows`` (book rows, in order) as they go into a window whose symbols so far are
        ``seen`` (updated): with a snapshot in front of each symbol new to the window. Every
        row is applied to the books."""
        if not rows:
            return rows
        first = rows[0]
        key = (first.exchange, first.symbol)
        last_row = rows[-1]
        # Usually one symbol (a SymbolBatch of one session: one exchange): check it once,
        # apply the rows in one loop.
        if (
            last_row.symbol == first.symbol
            and last_row.exchange == first.exchange
            and all(row.symbol == first.symbol for row in rows)
        ):
            out = self._opening(seen, key, first)
            self._apply(key, rows)
            if out is None:
                return rows
            out += rows
            return out
        mixed: list[BookLevel] = []
        for row in rows:
            key = (row.exchange, row.symbol)
            opening = self._opening(seen, key, row)
            if opening is not None:
                mixed += opening
            mixed.append(row)
            self._apply(key, (row,))
        return mixed

    def _opening(
        self, seen: set[tuple[str, str]], key: tuple[str, str], row: BookLevel
    ) -> list[BookLevel] | None:
        """The snapshot rows to put before ``row`` (None: none) when ``key`` is new to the
        window."""
        if key in seen:
            return None
        seen.add(key)
        written = self._books.get(key)
        if written is None or written.last is None:
            return None
        last = written.last
        if row.snapshot and (not last.snapshot or last.message != row.message):
            return None  # the row starts a new book anyway
        book = written.book()
        if not len(book):
            return None
        rows = snapshot_rows(
            book,
            exchange=last.exchange,
            symbol=last.symbol,
            raw_symbol=last.raw_symbol,
            ts_event=last.ts_event,
            ts_recv=last.ts_recv,
            seq=last.seq,
        )
        self.rows_added += len(rows)
        return rows

    def _apply(self, key: tuple[str, str], rows: Sequence[BookLevel]) -> None:
        written = self._books.get(key)
        if written is None:
            written = self._books[key] = _Written()
        latest = written.latest
        last = written.last
        for row in rows:
            if row.snapshot and (
                last is None
                or not last.snapshot
                or last.seq != row.seq
                or last.ts_recv != row.ts_recv
            ):
                latest.clear()
            level = (row.side, row.price)
            if level in latest:
                del latest[level]  # keep the order of last updates
            latest[level] = row.size
            last = row
        written.last = last
