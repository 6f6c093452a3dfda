"""A level-2 order book held in memory: what every exchange's book synchronisation maintains.

Pure (no I/O, no clock). Prices and sizes are the exchange's exact decimal text: a level is keyed
by the price's decimal value (``"0.10"`` and ``"0.1"`` are one level) and keeps the text of the
update that last set it, so a snapshot written from the book repeats the exchange's own text.
A size whose value is zero removes its level (the convention of every exchange's diff channel).

Levels are held in dicts (an update is one dict operation); the best price of each side is
cached and recomputed only when the best level itself is removed, so the crossed-book check after
every message is cheap; the sorted view that a snapshot or a checksum needs is computed on
demand, best price first (bids high to low, asks low to high). Used on both sides of the queue:
by each exchange's synchronisation (docs: order-books.md) and by the sink, which keeps the book
as written so that every window object can begin with it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Final, Literal, NamedTuple

from engine.errors import MalformedFrame

Side = Literal["bid", "ask"]
BID: Final = "bid"
ASK: Final = "ask"
SIDES: Final[tuple[Side, Side]] = ("bid", "ask")


_KNOWN: dict[str, Decimal] = {}
"""Decimal texts already checked, and their values (bounded: cleared at
:data:`KNOWN_TEXTS_MAX`)."""
KNOWN_TEXTS_MAX: Final = 1 << 16


def decimal_of(text: str, what: str) -> Decimal:
    """The value of an exchange's decimal text; :class:`MalformedFrame` (kind ``"type"``)
    naming ``what`` when it is not a finite, non-negative decimal. Texts already checked are
    answered from a bounded cache (the same prices and sizes come back all the time)."""
    if type(text) is str:
        known = _KNOWN.get(text)
        if known is not None:
            return known
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise MalformedFrame("type", f"{what} is not a decimal: {text!r:.40}") from None
    if not value.is_finite() or value < 0:
        raise MalformedFrame("type", f"{what} must be a finite non-negative decimal: {text!r:.40}")
    if type(text) is str:
        if len(_KNOWN) >= KNOWN_TEXTS_MAX:
            _KNOWN.clear()
        _KNOWN[text] = value
    return value


class Level(NamedTuple):
    """One price level as the exchange wrote it (a tuple: made once per update, cheaply)."""

    price: str
    size: str


@dataclass(slots=True)
class OrderBook:
    """The bids and asks of one symbol. Not thread-safe (one event loop)."""

    _sides: dict[Side, dict[Decimal, Level]] = field(default_factory=lambda: {"bid": {}, "ask": {}})
    #: The best price of each side while known; None: empty or to be recomputed.
    _best: dict[Side, Decimal | None] = field(default_factory=lambda: {"bid": None, "ask": None})

    def apply(self, side: Side, price: str, size: str) -> None:
        """Set the level at ``price`` to ``size`` (a zero size removes it; removing a level
        that is not there is no error: exchanges send such removals). Raises
        :class:`MalformedFrame` for a side or a decimal that is not valid, changing nothing."""
        levels = self._sides.get(side)
        if levels is None:
            raise MalformedFrame("type", f"side must be bid or ask, got {side!r:.20}")
        # The same texts come back all the time (a level's price in every update of it, a
        # handful of sizes): their values are cached, checked once.
        known = _KNOWN
        key = known.get(price)
        if key is None:
            key = decimal_of(price, "price")
        amount = known.get(size)
        if amount is None:
            amount = decimal_of(size, "size")
        best = self._best
        if amount == 0:
            if levels.pop(key, None) is not None and key == best[side]:
                best[side] = None
            return
        if not levels:
            best[side] = key
        else:
            current = best[side]
            if current is not None and (key > current if side == BID else key < current):
                best[side] = key
        levels[key] = Level(price, size)

    def clear(self) -> None:
        """Empty both sides (before a snapshot replaces the book)."""
        for levels in self._sides.values():
            levels.clear()
        self._best = {"bid": None, "ask": None}

    def _best_key(self, side: Side) -> Decimal | None:
        levels = self._sides[side]
        if not levels:
            return None
        key = self._best[side]
        if key is None:
            key = self._best[side] = max(levels) if side == BID else min(levels)
        return key

    def levels(self, side: Side, depth: int | None = None) -> list[Level]:
        """``side``'s levels best first (bids high to low, asks low to high), at most
        ``depth`` of them."""
        levels = self._sides[side]
        if depth is not None and depth * 4 < len(levels):
            # the top of a deep book (Kraken's checksum: 10 of up to 1000 levels, every message)
            pick = heapq.nlargest if side == BID else heapq.nsmallest
            keys = pick(depth, levels)
        else:
            keys = sorted(levels, reverse=side == BID)
            if depth is not None:
                keys = keys[:depth]
        return [levels[key] for key in keys]

    def best(self, side: Side) -> Level | None:
        """The best level of ``side``, or None when it is empty."""
        key = self._best_key(side)
        return None if key is None else self._sides[side][key]

    def depth(self, side: Side) -> int:
        """How many levels ``side`` holds."""
        return len(self._sides[side])

    @property
    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (a book out of sync, or an
        exchange's transient state); both sides must hold a level."""
        bid, ask = self._best_key(BID), self._best_key(ASK)
        return bid is not None and ask is not None and bid >= ask

    def truncate(self, depth: int) -> None:
        """Keep only the best ``depth`` levels of each side (Kraken's rule for a book
        subscribed at a depth)."""
        for side in SIDES:
            levels = self._sides[side]
            if len(levels) > depth:
                keep = sorted(levels, reverse=side == BID)[:depth]
                self._sides[side] = {key: levels[key] for key in keep}
                self._best[side] = keep[0]

    def __len__(self) -> int:
        """Levels on both sides."""
        return len(self._sides["bid"]) + len(self._sides["ask"])
