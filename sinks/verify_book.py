"""What ``feedvault verify`` checks of the ``book`` dataset (docs: order-books.md#verifying-books).

A book object's records must be valid book rows (:class:`~engine.book_records.BookLevel`), and
:class:`BookChecker` checks, per symbol:

- every object begins with a snapshot of the symbol (unless the book was empty at its start);
- an object that restates the book (its opening snapshot carries the previous object's last
  ``seq`` and ``ts_recv``) restates it exactly: the levels equal the book rebuilt from the
  previous object, level for level;
- between consecutive messages the sequence (``seq``, compared as a number when it is one)
  never goes back, except at a fresh snapshot (and on OKX, :data:`SEQUENCE_MAY_FALL`);
- every fresh snapshot after the symbol's first one is a resync the manifest records, and
  every finished resync the manifest records with a ``to_seq`` is in the data, as a fresh
  snapshot with that ``seq``.

Objects are ordered per symbol by the sequence number in their key
(``{window_start}-{run_id}-{seq}.{ext}``), in manifest order when the key has none. Memory: per
object and symbol, the rebuilt book at its end and its opening snapshot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from engine.book import OrderBook
from engine.book_records import BookLevel, BookReplica
from sinks.manifest import BookResync

SEQUENCE_MAY_FALL: Final = frozenset({"okx"})
"""Exchanges whose sequence may fall between two updates in sync: OKX's ``seqId`` after its
maintenance (an update is valid when its ``prevSeqId`` is the last ``seqId``, whatever their
values)."""
_KEY_SEQ: Final = re.compile(r"-(\d+)\.[A-Za-z0-9.]+$")


def _levels(book: OrderBook) -> dict[str, dict[Decimal, str]]:
    return {
        side: {Decimal(level.price): level.size for level in book.levels(side)}
        for side in ("bid", "ask")
    }


def _seq_value(seq: str | None) -> int | None:
    return int(seq) if seq is not None and seq.isdigit() else None


@dataclass(slots=True)
class _ObjectPart:
    """One symbol's rows in one object, summarised."""

    key: str
    order: tuple[int, int]
    first_is_snapshot: bool
    opening: tuple[str | None, int] | None  # (seq, ts_recv) of the opening snapshot run
    opening_rows: list[BookLevel]  # the rows of that run (the message's, in this object)
    fresh: list[tuple[str | None, int]] = field(default_factory=list)
    last: tuple[str | None, int] | None = None
    end_book: dict[str, dict[Decimal, str]] = field(default_factory=dict)
    backwards: list[str] = field(default_factory=list)


class BookChecker:
    """Collects book objects (:meth:`add`), then checks them together (:meth:`finish`)."""

    def __init__(self, problems: list[str], resyncs: dict[str, list[BookResync]]) -> None:
        self._problems = problems
        self._resyncs = {name.lower(): items for name, items in resyncs.items()}
        self._parts: dict[tuple[str, str, str], list[_ObjectPart]] = {}
        self._objects = 0

    def add(self, key: str, records: list[dict[str, object]]) -> int:
        """Check one object's records; return how many are valid rows."""
        self._objects += 1
        found = _KEY_SEQ.search(key)
        order = (int(found.group(1)) if found else 0, self._objects)
        rows: list[BookLevel] = []
        invalid = 0
        for obj in records:
            try:
                rows.append(BookLevel.from_dict(obj))
            except ValueError:
                invalid += 1
        if invalid:
            self._problems.append(f"{key}: {invalid} record(s) are not valid book rows")
        by_symbol: dict[tuple[str, str, str], list[BookLevel]] = {}
        for row in rows:
            by_symbol.setdefault((row.exchange, row.symbol, row.raw_symbol), []).append(row)
        for name, symbol_rows in by_symbol.items():
            self._parts.setdefault(name, []).append(self._summarise(key, order, symbol_rows))
        return len(rows)

    def _summarise(self, key: str, order: tuple[int, int], rows: list[BookLevel]) -> _ObjectPart:
        replica = BookReplica()
        first = rows[0]
        part = _ObjectPart(key, order, first.snapshot, None, [])
        opening_done = not first.snapshot
        previous: BookLevel | None = None
        for row in rows:
            started = replica.apply(row)
            if not opening_done:
                if row.message != first.message or not row.snapshot:
                    opening_done = True
                else:
                    part.opening_rows.append(row)
            if started and previous is not None:
                part.fresh.append(row.message)
            if previous is not None and row.message != previous.message and not started:
                before, now = _seq_value(previous.seq), _seq_value(row.seq)
                if before is not None and now is not None and now < before:
                    part.backwards.append(f"{previous.seq} -> {row.seq}")
            previous = row
        if first.snapshot:
            part.opening = first.message
        part.last = rows[-1].message
        part.end_book = _levels(replica.book(first.exchange, first.symbol))
        return part

    def finish(self) -> None:
        """Check continuity across objects and against the manifest's resyncs."""
        problems = self._problems
        for (exchange, symbol, raw_symbol), parts in sorted(self._parts.items()):
            parts.sort(key=lambda part: part.order)
            stream = f"{exchange}:{raw_symbol}:book"
            fresh_seqs: list[str | None] = []
            before: _ObjectPart | None = None
            for index, part in enumerate(parts):
                if exchange not in SEQUENCE_MAY_FALL:
                    for change in part.backwards:
                        problems.append(f"{part.key}: {symbol}'s sequence goes back ({change})")
                empty_before = before is None or not any(before.end_book.values())
                if not part.first_is_snapshot and not empty_before:
                    problems.append(f"{part.key}: does not begin with a snapshot of {symbol}")
                restated = before is not None and part.opening == before.last
                if (
                    restated
                    and before is not None
                    and _restated(part, sum(map(len, before.end_book.values()))) != before.end_book
                ):
                    problems.append(
                        f"{part.key}: its opening snapshot of {symbol} differs from the book "
                        f"at the end of {before.key}"
                    )
                if part.first_is_snapshot and not restated and index > 0:
                    fresh_seqs.append(part.opening[0] if part.opening else None)
                fresh_seqs += [seq for seq, _ in part.fresh]
                before = part
            recorded = [r for r in self._resyncs.get(stream.lower(), []) if r["done"] is not None]
            if len(fresh_seqs) != len(recorded):
                problems.append(
                    f"{stream}: {len(fresh_seqs)} fresh snapshot(s) after the first in the data, "
                    f"the manifest records {len(recorded)} finished resync(s)"
                )
            for resync in recorded:
                if resync["to_seq"] is not None and resync["to_seq"] not in fresh_seqs:
                    problems.append(
                        f"{stream}: the resync at {resync['at']} (to seq {resync['to_seq']}) "
                        "has no snapshot in the data"
                    )


def _restated(part: _ObjectPart, levels: int | None = None) -> dict[str, dict[Decimal, str]]:
    """The book an object's opening restates: its first ``levels`` snapshot rows (the sink
    writes the book as it stood, one row per level; the same message may go on after them when
    a window closed in the middle of a snapshot), all of them when ``levels`` is None."""
    replica = BookReplica()
    rows = part.opening_rows if levels is None else part.opening_rows[:levels]
    replica.apply_all(rows)
    first = part.opening_rows[0] if part.opening_rows else None
    return _levels(replica.book(first.exchange, first.symbol)) if first else {"bid": {}, "ask": {}}
