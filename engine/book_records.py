"""The ``book`` dataset's record, one row per level change (docs: order-books.md#the-book-schema),
and the rule that rebuilds books from rows (docs: order-books.md#rebuilding-a-book).

A :class:`BookLevel` is created once by an exchange's book synchronisation (or by the sink, for
the snapshot that opens a window) and never changed afterwards. Like
:class:`~engine.records.Trade` it is a plain ``__dict__`` dataclass, so ``orjson`` writes it
fast and with exactly the schema's field names, in the schema's order.

All rows of one exchange message share ``ts_event``, ``ts_recv``, ``seq`` and ``snapshot``.
Rows are in the order they were applied. The rebuild rule (:class:`BookReplica`): a snapshot row
that follows a delta row of its symbol, or follows a snapshot row of another message (another
``seq`` or ``ts_recv``), starts a new book: the book is emptied before it is applied. Every
other row sets its level (size zero removes it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from engine.book import OrderBook

BOOK_FIELDS: Final = (
    "exchange",
    "symbol",
    "raw_symbol",
    "ts_event",
    "ts_recv",
    "seq",
    "snapshot",
    "side",
    "price",
    "size",
)

BOOK_DATASET: Final = "book"
"""The dataset name of book rows: objects go under ``{prefix}book/...``."""


@dataclass(eq=True)
class BookLevel:
    """One level change of one symbol's book.

    ``seq`` is the exchange's update id of the message as text (Binance ``u``, OKX ``seqId``,
    Bybit ``u``, Bitstamp ``microtimestamp``), or None where the channel has none (Coinbase,
    Kraken). ``snapshot`` is true for the rows of a full book. ``side`` is ``"bid"`` or
    ``"ask"``; ``price`` and ``size`` the exchange's exact decimal text (size zero removes the
    level). ``ts_event`` is the exchange's time in integer microseconds (the receive time where
    the exchange sends none), ``ts_recv`` the local receive time in integer nanoseconds.
    """

    exchange: str
    symbol: str
    raw_symbol: str
    ts_event: int
    ts_recv: int
    seq: str | None
    snapshot: bool
    side: str
    price: str
    size: str

    @classmethod
    def from_dict(cls, obj: dict[str, object]) -> BookLevel:
        """Build a row from a decoded NDJSON line; raise ``ValueError`` on a bad record."""
        try:
            values = [obj[name] for name in BOOK_FIELDS]
        except KeyError as exc:
            raise ValueError(f"record has no field {exc.args[0]!r}") from exc
        exchange, symbol, raw_symbol, ts_event, ts_recv, seq, snapshot, side, price, size = values
        for name, value in (
            ("exchange", exchange),
            ("symbol", symbol),
            ("raw_symbol", raw_symbol),
            ("price", price),
            ("size", size),
        ):
            if not isinstance(value, str):
                raise ValueError(f"field {name!r} is not a string")
        for name, value in (("ts_event", ts_event), ("ts_recv", ts_recv)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"field {name!r} is not an integer")
        if seq is not None and not isinstance(seq, str):
            raise ValueError("field 'seq' is neither a string nor null")
        if not isinstance(snapshot, bool):
            raise ValueError("field 'snapshot' is not a boolean")
        if side not in ("bid", "ask"):
            raise ValueError(f"field 'side' is not bid or ask: {side!r:.20}")
        return cls(*values)  # type: ignore[arg-type]

    @property
    def message(self) -> tuple[str | None, int]:
        """What the rows of one exchange message share and the next message does not: its
        ``seq`` and ``ts_recv``."""
        return (self.seq, self.ts_recv)


def snapshot_rows(
    book: OrderBook,
    *,
    exchange: str,
    symbol: str,
    raw_symbol: str,
    ts_event: int,
    ts_recv: int,
    seq: str | None,
) -> list[BookLevel]:
    """The rows of a snapshot of ``book``: bids best first, then asks best first."""
    rows: list[BookLevel] = []
    for side in ("bid", "ask"):
        for level in book.levels(side):
            rows.append(
                BookLevel(
                    exchange,
                    symbol,
                    raw_symbol,
                    ts_event,
                    ts_recv,
                    seq,
                    True,
                    side,
                    level.price,
                    level.size,
                )
            )
    return rows


@dataclass(slots=True)
class _Replica:
    book: OrderBook = field(default_factory=OrderBook)
    last: BookLevel | None = None


class BookReplica:
    """Books of any number of symbols rebuilt from rows in order, by the rule of the module
    docstring. Used by the sink (the book as written, for the snapshot that opens each window),
    by ``verify``, by ``compact`` and by tests; readers in other languages apply the same rule
    (docs: order-books.md#rebuilding-a-book)."""

    def __init__(self) -> None:
        self._books: dict[tuple[str, str], _Replica] = {}

    def apply(self, row: BookLevel) -> bool:
        """Apply one row; True when it started a new book (the book was emptied first).

        Raises :class:`~engine.errors.MalformedFrame` for a price or size that is not a
        decimal, changing nothing."""
        key = (row.exchange, row.symbol)
        replica = self._books.get(key)
        if replica is None:
            replica = self._books[key] = _Replica()
        last = replica.last
        started = row.snapshot and (
            last is None or not last.snapshot or last.message != row.message
        )
        if started:
            replica.book.clear()
        replica.book.apply(row.side, row.price, row.size)  # type: ignore[arg-type]
        replica.last = row
        return started

    def apply_all(self, rows: Iterable[BookLevel]) -> None:
        """Apply ``rows`` in order."""
        for row in rows:
            self.apply(row)

    def book(self, exchange: str, symbol: str) -> OrderBook:
        """The book of ``exchange``/``symbol`` (empty if no row was seen)."""
        replica = self._books.get((exchange, symbol))
        return replica.book if replica is not None else OrderBook()

    def last(self, exchange: str, symbol: str) -> BookLevel | None:
        """The last row applied for ``exchange``/``symbol``."""
        replica = self._books.get((exchange, symbol))
        return None if replica is None else replica.last

    def symbols(self) -> Iterator[tuple[str, str]]:
        """The (exchange, symbol) pairs seen, in order of first appearance."""
        return iter(self._books)
