"""Window-opening snapshots of the ``book`` dataset (docs: order-books.md#the-book-schema).

Every object of the ``book`` dataset begins, for each symbol it holds, with a snapshot of that
symbol's book as written so far, so any single object rebuilds the book. :class:`BookOpenings`
keeps those books (a :class:`~engine.book_records.BookReplica` of every row the windower has
placed, in order) and, when a symbol's first row enters a window, puts the snapshot rows in
front of it: the levels of the book after the previous row, carrying that row's ``seq``,
``ts_event`` and ``ts_recv`` (so a reader that concatenates objects sees the book restated, not
changed). Nothing is put in front when the book is empty or when the row itself starts a new
snapshot (it replaces the book anyway).

Pure, like the windower that owns it; not thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.book_records import BookLevel, BookReplica, snapshot_rows


class BookOpenings:
    """The books as written, and the snapshot rows that open a window."""

    def __init__(self) -> None:
        self.replica = BookReplica()
        #: Snapshot rows put in front of windows so far (they count as the windows' records).
        self.rows_added = 0

    def prepare(self, seen: set[tuple[str, str]], rows: Sequence[Any]) -> Sequence[Any]:
        """``rows`` (book rows, in order) as they go into a window whose symbols so far are
        ``seen`` (updated): with a snapshot in front of each symbol new to the window. Every
        row is applied to the books."""
        replica = self.replica
        out: list[BookLevel] | None = None
        for index, row in enumerate(rows):
            key = (row.exchange, row.symbol)
            if key not in seen:
                seen.add(key)
                last = replica.last(row.exchange, row.symbol)
                if last is not None and not _starts_book(row, last):
                    book = replica.book(row.exchange, row.symbol)
                    if len(book):
                        if out is None:
                            out = list(rows[:index])
                        opening = snapshot_rows(
                            book,
                            exchange=last.exchange,
                            symbol=last.symbol,
                            raw_symbol=last.raw_symbol,
                            ts_event=last.ts_event,
                            ts_recv=last.ts_recv,
                            seq=last.seq,
                        )
                        self.rows_added += len(opening)
                        out += opening
            if out is not None:
                out.append(row)
            replica.apply(row)
        return rows if out is None else out


def _starts_book(row: BookLevel, last: BookLevel) -> bool:
    """True when ``row`` starts a new book after ``last`` (the rule of
    :mod:`engine.book_records`)."""
    return row.snapshot and (not last.snapshot or last.message != row.message)
