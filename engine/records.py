"""The normalized trade record (docs: data-formats.md#trade-records), the same for every exchange.

A :class:`Trade` is created once by a protocol module and never changed afterwards: treat it as
immutable. It is a plain dataclass, deliberately neither frozen nor slotted: a frozen
``__init__`` costs about three times as much, and ``orjson`` serializes a ``__dict__`` dataclass
about four times faster than a slotted one (0.27 µs against 0.92 µs per record here). ``orjson``
writes exactly the field names of docs/data-formats.md#trade-records.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Final

TRADE_FIELDS: Final = (
    "exchange",
    "symbol",
    "raw_symbol",
    "trade_id",
    "price",
    "size",
    "side",
    "ts_event",
    "ts_recv",
)

BUY: Final = "buy"
SELL: Final = "sell"


@dataclass(eq=True)
class Trade:
    """One trade.

    ``price`` and ``size`` are the exact decimal text the exchange sent (never through float).
    ``side`` is the TAKER's side, ``"buy"`` or ``"sell"``. ``ts_event`` is the exchange's trade
    time in integer microseconds since the epoch; ``ts_recv`` the local receive time in integer
    nanoseconds since the epoch.
    """

    exchange: str
    symbol: str
    raw_symbol: str
    trade_id: str
    price: str
    size: str
    side: str
    ts_event: int
    ts_recv: int

    @classmethod
    def from_dict(cls, obj: dict[str, object]) -> Trade:
        """Build a trade from a decoded NDJSON line; raise ``ValueError`` on a bad record."""
        try:
            values = [obj[name] for name in TRADE_FIELDS]
        except KeyError as exc:
            raise ValueError(f"record has no field {exc.args[0]!r}") from exc
        for name, value in zip(TRADE_FIELDS[:7], values[:7], strict=True):
            if not isinstance(value, str):
                raise ValueError(f"field {name!r} is not a string")
        for name, value in zip(TRADE_FIELDS[7:], values[7:], strict=True):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"field {name!r} is not an integer")
        return cls(*values)  # type: ignore[arg-type]


_symbol_of: Final = attrgetter("symbol")


class SymbolBatch(list[Trade]):
    """Trades of one exchange and one symbol, in arrival order: what :func:`by_symbol` makes.

    Its type is the promise, so the steps after it skip checking it trade by trade: the gap
    check compares its ids in one C-level pass, the tally adds it in one step, the windower
    puts it in one partition without looking at each trade's key. Whoever builds one keeps the
    promise; anything else is a plain list and is checked."""

    __slots__ = ()


def by_symbol(trades: list[Trade]) -> list[SymbolBatch]:
    """One exchange's ``trades`` split into one :class:`SymbolBatch` per symbol, each in
    arrival order, symbols in order of first appearance. The common single-symbol case is found
    without a Python loop."""
    if not trades:
        return []
    symbols = list(map(_symbol_of, trades))
    if symbols.count(symbols[0]) == len(symbols):
        return [SymbolBatch(trades)]
    groups: dict[str, SymbolBatch] = {}
    for symbol, trade in zip(symbols, trades, strict=True):
        group = groups.get(symbol)
        if group is None:
            groups[symbol] = SymbolBatch((trade,))
        else:
            group.append(trade)
    return list(groups.values())
