"""Pure logic of ``feedvault batch compact``: streamed trades -> one day's Parquet and bars.

Everything here is pure (records in, rows and bytes out), so the job runs it through
``ctx.run_cpu``.

* :func:`parse_records` checks each decoded record of a trade object (the fields and types of
  docs/data-formats.md#trade-records; prices and sizes exact decimals) and returns
  :class:`CompactTrade` values, or a
  :class:`~batch.csvutil.Rejected` naming the object, the line and the problem.
* :class:`DayTrades` collects one UTC day's trades of every symbol and deduplicates them by
  ``(exchange, symbol, trade_id)``: of several copies (overlapping runs, a rerun) the one received
  first (smallest ``ts_recv``) is kept; copies that disagree in price, size, side or ``ts_event``
  are counted as *conflicts* (the first received still wins).
* :func:`ordered` sorts one symbol's trades by ``(ts_event, trade id, ts_recv)``; trade ids that
  are decimal digits compare as numbers, others (Bybit's) as text after them.
* :func:`trades_parquet` and :func:`bars_parquet` render one (exchange, symbol, day): the ordered
  trades, and 1-minute OHLCV bars (minutes with at least one trade) with exact decimal volume and
  notional; VWAP is ``notional / volume`` rounded half-even to :func:`vwap_scale` places.

Decimal columns are ``decimal128(38, s)`` with ``s`` the largest number of decimal places of the
column in that file (trailing zeros as the exchange sent them), so every value is exact; a column
that 38 digits cannot hold (the notional of very large prices and sizes) is ``decimal256(76, s)``.
A price or size with more than :data:`MAX_SCALE` places or :data:`MAX_INTEGER_DIGITS` integer
digits is rejected (``out-of-range``): that bounds every sum and product to 76 digits.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa

from batch.csvutil import Rejected, RowError, decimal_places, parquet_bytes
from engine.records import BUY, SELL, TRADE_FIELDS

US_PER_DAY: Final = 86_400_000_000
US_PER_HOUR: Final = 3_600_000_000
US_PER_MINUTE: Final = 60_000_000
MAX_SCALE: Final = 12
"""Most decimal places of a price or size (exchanges send at most 8 to 10)."""
MAX_INTEGER_DIGITS: Final = 14
VWAP_EXTRA_PLACES: Final = 4
"""VWAP keeps the price's places plus these (half-even rounding)."""
_EXACT: Final = decimal.Context(prec=80, traps=[decimal.Inexact, decimal.InvalidOperation])
_ROUNDING: Final = decimal.Context(prec=80)
"""VWAP's division is inexact by nature: the quotient is computed to 80 digits, then rounded."""
_STRING_FIELDS: Final = ("exchange", "symbol", "raw_symbol", "trade_id", "price", "size", "side")


@dataclass(frozen=True, slots=True)
class CompactTrade:
    """One checked trade; ``price``/``size`` exact, ``ts_event`` µs, ``ts_recv`` ns."""

    exchange: str
    symbol: str
    raw_symbol: str
    trade_id: str
    price: Decimal
    size: Decimal
    side: str
    ts_event: int
    ts_recv: int

    @property
    def day(self) -> int:
        """Days since the epoch (UTC) of ``ts_event``."""
        return self.ts_event // US_PER_DAY

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.exchange, self.symbol, self.trade_id)

    def same_trade(self, other: CompactTrade) -> bool:
        """The fields that describe the trade itself agree (receive time aside)."""
        return (self.price, self.size, self.side, self.ts_event, self.raw_symbol) == (
            other.price,
            other.size,
            other.side,
            other.ts_event,
            other.raw_symbol,
        )


def _decimal(record: dict[str, Any], name: str) -> Decimal:
    text = record[name]
    try:
        value = Decimal(text)
    except decimal.InvalidOperation:
        raise RowError("bad-decimal", f"{name} is not a decimal: {text!r}") from None
    if not value.is_finite() or "e" in text.lower() or text.strip() != text:
        raise RowError("bad-decimal", f"{name} is not a plain decimal: {text!r}")
    if decimal_places(value) > MAX_SCALE or value.adjusted() >= MAX_INTEGER_DIGITS:
        raise RowError(
            "out-of-range",
            f"{name} {text!r} has more than {MAX_SCALE} decimal places or "
            f"{MAX_INTEGER_DIGITS} integer digits",
        )
    if value <= 0:
        raise RowError("non-positive", f"{name} must be above zero: {text!r}")
    return value


def _integer(record: dict[str, Any], name: str) -> int:
    value = record[name]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise RowError("bad-timestamp", f"{name} is not a positive integer: {value!r}")
    return value


def parse_record(record: dict[str, Any]) -> CompactTrade:
    """One decoded record as a :class:`CompactTrade`; :class:`RowError` if not a trade."""
    missing = [name for name in TRADE_FIELDS if name not in record]
    if missing:
        raise RowError("missing-field", f"no {', '.join(missing)}")
    for name in _STRING_FIELDS:
        value = record[name]
        if not isinstance(value, str) or not value:
            raise RowError("bad-field", f"{name} is not a non-empty string: {value!r}")
    side = record["side"]
    if side not in (BUY, SELL):
        raise RowError("bad-side", f"side must be buy or sell: {side!r}")
    return CompactTrade(
        exchange=record["exchange"],
        symbol=record["symbol"],
        raw_symbol=record["raw_symbol"],
        trade_id=record["trade_id"],
        price=_decimal(record, "price"),
        size=_decimal(record, "size"),
        side=side,
        ts_event=_integer(record, "ts_event"),
        ts_recv=_integer(record, "ts_recv"),
    )


def parse_records(
    source: str, records: Sequence[dict[str, Any]]
) -> tuple[list[CompactTrade], list[Rejected]]:
    """The trades of one object (``source`` is its key) and its rejected lines (1-based)."""
    trades: list[CompactTrade] = []
    rejected: list[Rejected] = []
    for number, record in enumerate(records, start=1):
        try:
            trades.append(parse_record(record))
        except RowError as exc:
            raw = json.dumps(record, ensure_ascii=False, default=repr)
            rejected.append(exc.rejected(source, number, raw))
    return trades, rejected


SymbolKey = tuple[str, str]
"""``(exchange, symbol)``."""


@dataclass(slots=True)
class DedupStats:
    """Per symbol: copies dropped as duplicates, and of those how many disagreed."""

    duplicates: int = 0
    conflicts: int = 0


class DayTrades:
    """One UTC day's trades, deduplicated as they are added (see the module docstring)."""

    def __init__(self, day: int) -> None:
        self.day = day
        self._trades: dict[tuple[str, str, str], CompactTrade] = {}
        self.stats: dict[SymbolKey, DedupStats] = {}
        self.conflict_examples: list[tuple[CompactTrade, CompactTrade]] = []

    def add(self, trades: Iterable[CompactTrade]) -> None:
        """Add trades of this day (a trade of another day is a caller's bug: ValueError)."""
        kept = self._trades
        for trade in trades:
            if trade.day != self.day:
                raise ValueError(f"trade of day {trade.day} added to day {self.day}")
            identity = trade.identity
            seen = kept.get(identity)
            if seen is None:
                kept[identity] = trade
                continue
            stats = self.stats.setdefault((trade.exchange, trade.symbol), DedupStats())
            stats.duplicates += 1
            if not trade.same_trade(seen):
                stats.conflicts += 1
                if len(self.conflict_examples) < 10:
                    self.conflict_examples.append((seen, trade))
            if trade.ts_recv < seen.ts_recv:
                kept[identity] = trade

    def __len__(self) -> int:
        return len(self._trades)

    def by_symbol(self) -> dict[SymbolKey, list[CompactTrade]]:
        """The kept trades per ``(exchange, symbol)``, each list :func:`ordered`, keys sorted."""
        groups: dict[SymbolKey, list[CompactTrade]] = {}
        for trade in self._trades.values():
            groups.setdefault((trade.exchange, trade.symbol), []).append(trade)
        return {key: ordered(groups[key]) for key in sorted(groups)}


def is_numeric_id(trade_id: str) -> bool:
    """Whether ``trade_id`` is ASCII decimal digits (compared as a number)."""
    return trade_id.isascii() and trade_id.isdigit()


def id_order(trade_id: str) -> tuple[int, int, str]:
    """Sort key of a trade id: decimal digits as a number, anything else as text after."""
    if is_numeric_id(trade_id):
        return (0, int(trade_id), "")
    return (1, 0, trade_id)


def _order_key(trade: CompactTrade) -> tuple[int, tuple[int, int, str], int]:
    return (trade.ts_event, id_order(trade.trade_id), trade.ts_recv)


def ordered(trades: Iterable[CompactTrade]) -> list[CompactTrade]:
    """``trades`` by ``(ts_event, trade id, ts_recv)``."""
    return sorted(trades, key=_order_key)


def column_scale(values: Iterable[Decimal]) -> int:
    """The most decimal places among ``values`` (0 when none)."""
    return max((decimal_places(v) for v in values), default=0)


def vwap_scale(price_scale: int) -> int:
    return price_scale + VWAP_EXTRA_PLACES


def decimal_array(values: Sequence[Decimal]) -> pa.Array:
    """``values`` as an exact decimal column: ``decimal128(38, s)`` with ``s`` their most
    decimal places, or ``decimal256(76, s)`` when 38 digits cannot hold them (a notional of
    very large prices and sizes), so no value is ever rounded or refused."""
    scale = column_scale(values)
    integer_digits = max((max(v.adjusted() + 1, 1) for v in values), default=1)
    if integer_digits + scale <= 38:
        return pa.array(values, pa.decimal128(38, scale))
    return pa.array(values, pa.decimal256(76, scale))


TIMESTAMP_US: Final = pa.timestamp("us", tz="UTC")
TIMESTAMP_NS: Final = pa.timestamp("ns", tz="UTC")


def trades_table(trades: Sequence[CompactTrade]) -> pa.Table:
    """One symbol-day's ordered trades as a table (column types in the module docstring)."""
    prices = [t.price for t in trades]
    sizes = [t.size for t in trades]
    return pa.table(
        {
            "exchange": pa.array([t.exchange for t in trades], pa.string()),
            "symbol": pa.array([t.symbol for t in trades], pa.string()),
            "raw_symbol": pa.array([t.raw_symbol for t in trades], pa.string()),
            "trade_id": pa.array([t.trade_id for t in trades], pa.string()),
            "price": decimal_array(prices),
            "size": decimal_array(sizes),
            "side": pa.array([t.side for t in trades], pa.string()),
            "ts_event": pa.array([t.ts_event for t in trades], TIMESTAMP_US),
            "ts_recv": pa.array([t.ts_recv for t in trades], TIMESTAMP_NS),
        }
    )


def trades_parquet(trades: Sequence[CompactTrade]) -> bytes:
    """:func:`trades_table` as Parquet (zstd)."""
    return parquet_bytes(trades_table(trades))


@dataclass(frozen=True, slots=True)
class Bar:
    """One minute of one symbol. ``minute`` is its start (µs since the epoch); ``notional`` is
    the exact sum of price x size; ``vwap`` is rounded (see :func:`vwap_scale`)."""

    exchange: str
    symbol: str
    minute: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    notional: Decimal
    vwap: Decimal
    trades: int
    first_trade_id: str
    last_trade_id: str


def bars(trades: Sequence[CompactTrade]) -> list[Bar]:
    """1-minute OHLCV bars of one symbol's :func:`ordered` trades (open = first in that order,
    close = last), one per minute that has trades, in time order."""
    out: list[Bar] = []
    if not trades:
        return out
    quantum = Decimal(1).scaleb(-vwap_scale(column_scale(t.price for t in trades)))
    start = 0
    with decimal.localcontext(_EXACT):
        while start < len(trades):
            minute = trades[start].ts_event // US_PER_MINUTE
            end = start
            while end < len(trades) and trades[end].ts_event // US_PER_MINUTE == minute:
                end += 1
            chunk = trades[start:end]
            volume = sum((t.size for t in chunk), Decimal(0))
            notional = sum((t.price * t.size for t in chunk), Decimal(0))
            vwap = _vwap(notional, volume, quantum)
            first, last = chunk[0], chunk[-1]
            out.append(
                Bar(
                    exchange=first.exchange,
                    symbol=first.symbol,
                    minute=minute * US_PER_MINUTE,
                    open=first.price,
                    high=max(t.price for t in chunk),
                    low=min(t.price for t in chunk),
                    close=last.price,
                    volume=volume,
                    notional=notional,
                    vwap=vwap,
                    trades=len(chunk),
                    first_trade_id=first.trade_id,
                    last_trade_id=last.trade_id,
                )
            )
            start = end
    return out


def _vwap(notional: Decimal, volume: Decimal, quantum: Decimal) -> Decimal:
    quotient = _ROUNDING.divide(notional, volume)
    return quotient.quantize(quantum, rounding=decimal.ROUND_HALF_EVEN, context=_ROUNDING)


def bars_table(rows: Sequence[Bar]) -> pa.Table:
    """Bars as a table: ``minute`` a UTC timestamp (µs), prices/volume/notional/vwap exact
    ``decimal128(38, s)``, ``trades`` int64."""

    def column(name: str) -> pa.Array:
        values = [getattr(bar, name) for bar in rows]
        return decimal_array(values)

    return pa.table(
        {
            "exchange": pa.array([b.exchange for b in rows], pa.string()),
            "symbol": pa.array([b.symbol for b in rows], pa.string()),
            "minute": pa.array([b.minute for b in rows], TIMESTAMP_US),
            "open": column("open"),
            "high": column("high"),
            "low": column("low"),
            "close": column("close"),
            "volume": column("volume"),
            "notional": column("notional"),
            "vwap": column("vwap"),
            "trades": pa.array([b.trades for b in rows], pa.int64()),
            "first_trade_id": pa.array([b.first_trade_id for b in rows], pa.string()),
            "last_trade_id": pa.array([b.last_trade_id for b in rows], pa.string()),
        }
    )


def bars_parquet(rows: Sequence[Bar]) -> bytes:
    """:func:`bars_table` as Parquet (zstd)."""
    return parquet_bytes(bars_table(rows))
