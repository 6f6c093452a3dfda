"""What the REST-snapshot book feeds share (Binance, Binance.US, Bitstamp): level lists checked
for shape, and the bounded buffer of diffs that wait for a snapshot (docs: order-books.md).

Pure, like the feeds. Only :class:`~engine.errors.MalformedFrame` is raised.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from connectors.books.base import MAX_BUFFERED_MESSAGES, SymbolBook
from connectors.wire import short
from engine.book import decimal_of
from engine.errors import MalformedFrame

Pairs = Sequence[Sequence[str]]
"""Levels as the exchange sends them: ``[[price, size, ...], ...]`` text."""

D = TypeVar("D")


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

    def reset(self) -> None:
        """A new connection: the old stream's diffs and the pending request are forgotten."""
        self.buffer.clear()
        self.fetching = False
        self.bridged = False
        self.tainted = False
