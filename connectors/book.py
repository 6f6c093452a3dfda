"""A level-2 order book held in memory: what every exchange's book synchronisation maintains.

Pure (no I/O, no clock). Prices and sizes are the exchange's exact decimal text: a level is keyed
by the price's decimal value (``"0.10"`` and ``"0.1"`` are one level) and keeps the text of the
update that last set it, so a snapshot written from the book repeats the exchange's own text.
A size whose value is zero removes its level (the convention of every exchange's diff channel).

Levels are held in dicts (an update is one dict operation); the sorted view that a snapshot,
a checksum or the crossed-book check needs is computed on demand, best price first (bids high to
low, asks low to high). The groundwork of order books (not yet used by a session).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Final, Literal

from engine.errors import MalformedFrame

Side = Literal["bid", "ask"]
BID: Final = "bid"
ASK: Final = "ask"
SIDES: Final[tuple[Side, Side]] = ("bid", "ask")


def decimal_of(text: str, what: str) -> Decimal:
    """The value of an exchange's decimal text; :class:`MalformedFrame` (kind ``"type"``)
    naming ``what`` when it is not a finite, non-negative decimal."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise MalformedFrame("type", f"{what} is not a decimal: {text!r:.40}") from None
    if not value.is_finite() or value < 0:
        raise MalformedFrame("type", f"{what} must be a finite non-negative decimal: {text!r:.40}")
    return value


@dataclass(frozen=True, slots=True)
class Level:
    """One price level as the exchange wrote it."""

    price: str
    size: str


@dataclass(slots=True)
class OrderBook:
    """The bids and asks of one symbol. Not thread-safe (one event loop)."""

    _sides: dict[Side, dict[Decimal, Level]] = field(default_factory=lambda: {"bid": {}, "ask": {}})

    def apply(self, side: Side, price: str, size: str) -> None:
        """Set the level at ``price`` to ``size`` (a zero size removes it; removing a level
        that is not there is no error: exchanges send such removals). Raises
        :class:`MalformedFrame` for a side or a decimal that is not valid, changing nothing."""
        levels = self._sides.get(side)
        if levels is None:
            raise MalformedFrame("type", f"side must be bid or ask, got {side!r:.20}")
        key = decimal_of(price, "price")
        if decimal_of(size, "size") == 0:
            levels.pop(key, None)
        else:
            levels[key] = Level(price, size)

    def clear(self) -> None:
        """Empty both sides (before a snapshot replaces the book)."""
        for levels in self._sides.values():
            levels.clear()

    def levels(self, side: Side, depth: int | None = None) -> list[Level]:
        """``side``'s levels best first (bids high to low, asks low to high), at most
        ``depth`` of them."""
        levels = self._sides[side]
        keys = sorted(levels, reverse=side == BID)
        if depth is not None:
            keys = keys[:depth]
        return [levels[key] for key in keys]

    def best(self, side: Side) -> Level | None:
        """The best level of ``side``, or None when it is empty."""
        levels = self._sides[side]
        if not levels:
            return None
        return levels[max(levels) if side == BID else min(levels)]

    def depth(self, side: Side) -> int:
        """How many levels ``side`` holds."""
        return len(self._sides[side])

    @property
    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (a book out of sync, or an
        exchange's transient state); both sides must hold a level."""
        bids, asks = self._sides["bid"], self._sides["ask"]
        return bool(bids) and bool(asks) and max(bids) >= min(asks)

    def truncate(self, depth: int) -> None:
        """Keep only the best ``depth`` levels of each side (Kraken's rule for a book
        subscribed at a depth)."""
        for side in SIDES:
            levels = self._sides[side]
            if len(levels) > depth:
                keep = sorted(levels, reverse=side == BID)[:depth]
                self._sides[side] = {key: levels[key] for key in keep}
