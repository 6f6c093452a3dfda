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

The files hold no ``exchange`` or ``symbol`` column: the Hive path
(``exchange=E/symbol=S/date=D``) carries them, so every reader of the dataset gets them once
(docs: lake.md#reading-the-datasets). A record whose exchange or symbol is not a key-safe name
(``[A-Za-z0-9._-]``, unchanged by :func:`sinks.keys.sanitize`) is therefore rejected
(``bad-partition-value``) rather than stored under an altered name.

Each decimal column has one fixed type in every file of a dataset (:data:`TRADES_SCHEMA`,
:data:`BARS_SCHEMA`), so files of symbols with different precisions merge without rescaling:
price, size, open, high, low, close and volume are ``decimal128(38, 12)`` and exact (a price or
size with more than :data:`MAX_SCALE` places or :data:`MAX_INTEGER_DIGITS` integer digits is
rejected, ``out-of-range``, which bounds a day's volume far below 26 integer digits); vwap is
``decimal128(38, 16)`` (at most the price's 12 places + 4). The notional (the exact sum of price
x size, up to 24 places) is ``decimal128(38, 18)``: exact when it has at most 18 places (every
exchange's prices and sizes so far: 8 + 8 or 10 + 8 places), otherwise rounded half-even to 18
places, and null only from 10^20 up; ``notional_text`` always holds the exact value as text.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa

from batch.csvutil import Rejected, RowError, decimal_places, parquet_bytes
from engine.records import BUY, SELL, TRADE_FIELDS
from sinks.keys import sanitize

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
PARTITION_FIELDS: Final = ("exchange", "symbol")
"""The fields the output keys partition by, and so not stored in the files."""


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


def check_partition_values(record: Mapping[str, Any]) -> None:
    """:class:`RowError` (``bad-partition-value``) unless the record's exchange and symbol are
    key-safe names that :func:`~sinks.keys.sanitize` leaves unchanged: they are stored only in
    the output key (``exchange=E/symbol=S``), so they must come back from it as they were."""
    for name in PARTITION_FIELDS:
        value = record[name]
        if isinstance(value, str) and sanitize(value) != value:
            raise RowError(
                "bad-partition-value",
                f"{name} {value!r} is not a key-safe name ([A-Za-z0-9._-], not . or ..): "
                "it would be stored altered in the output key",
            )


def parse_record(record: dict[str, Any]) -> CompactTrade:
    """One decoded record as a :class:`CompactTrade`; :class:`RowError` if not a trade."""
    missing = [name for name in TRADE_FIELDS if name not in record]
    if missing:
        raise RowError("missing-field", f"no {', '.join(missing)}")
    for name in _STRING_FIELDS:
        value = record[name]
        if not isinstance(value, str) or not value:
            raise RowError("bad-field", f"{name} is not a non-empty string: {value!r}")
    check_partition_values(record)
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


TIMESTAMP_US: Final = pa.timestamp("us", tz="UTC")
TIMESTAMP_NS: Final = pa.timestamp("ns", tz="UTC")
DECIMAL: Final = pa.decimal128(38, MAX_SCALE)
"""Prices, sizes, open/high/low/close and volume: every accepted value exactly."""
VWAP_DECIMAL: Final = pa.decimal128(38, MAX_SCALE + VWAP_EXTRA_PLACES)
NOTIONAL_SCALE: Final = 18
NOTIONAL_DECIMAL: Final = pa.decimal128(38, NOTIONAL_SCALE)
"""The notional: exact up to 18 places, rounded half-even beyond (``notional_text`` exact)."""
_NOTIONAL_QUANTUM: Final = Decimal(1).scaleb(-NOTIONAL_SCALE)
_NOTIONAL_LIMIT: Final = Decimal(10) ** (38 - NOTIONAL_SCALE)

TRADES_SCHEMA: Final = pa.schema(
    [
        ("raw_symbol", pa.string()),
        ("trade_id", pa.string()),
        ("price", DECIMAL),
        ("size", DECIMAL),
        ("side", pa.string()),
        ("ts_event", TIMESTAMP_US),
        ("ts_recv", TIMESTAMP_NS),
    ]
)
"""The columns of every ``trades.parquet`` (exchange, symbol and date are in its key)."""

BARS_SCHEMA: Final = pa.schema(
    [
        ("minute", TIMESTAMP_US),
        ("open", DECIMAL),
        ("high", DECIMAL),
        ("low", DECIMAL),
        ("close", DECIMAL),
        ("volume", DECIMAL),
        ("notional", NOTIONAL_DECIMAL),
        ("notional_text", pa.string()),
        ("vwap", VWAP_DECIMAL),
        ("trades", pa.int64()),
        ("first_trade_id", pa.string()),
        ("last_trade_id", pa.string()),
    ]
)
"""The columns of every ``bars.parquet`` (exchange, symbol and date are in its key)."""


def notional_column(value: Decimal) -> Decimal | None:
    """``value`` as stored in the ``notional`` column: itself when it has at most
    :data:`NOTIONAL_SCALE` places, else rounded half-even to them; None from 10^20 up (38
    digits cannot hold it; ``notional_text`` still does)."""
    if abs(value) >= _NOTIONAL_LIMIT:
        return None
    if decimal_places(value) <= NOTIONAL_SCALE:
        return value
    return value.quantize(_NOTIONAL_QUANTUM, rounding=decimal.ROUND_HALF_EVEN, context=_ROUNDING)


def trades_table(trades: Sequence[CompactTrade]) -> pa.Table:
    """One symbol-day's ordered trades as a table of :data:`TRADES_SCHEMA`."""
    return pa.Table.from_arrays(
        [
            pa.array([t.raw_symbol for t in trades], pa.string()),
            pa.array([t.trade_id for t in trades], pa.string()),
            pa.array([t.price for t in trades], DECIMAL),
            pa.array([t.size for t in trades], DECIMAL),
            pa.array([t.side for t in trades], pa.string()),
            pa.array([t.ts_event for t in trades], TIMESTAMP_US),
            pa.array([t.ts_recv for t in trades], TIMESTAMP_NS),
        ],
        schema=TRADES_SCHEMA,
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
    """Bars as a table of :data:`BARS_SCHEMA` (``minute`` the minute's start, UTC)."""

    def column(name: str, type_: pa.DataType = DECIMAL) -> pa.Array:
        return pa.array([getattr(bar, name) for bar in rows], type_)

    return pa.Table.from_arrays(
        [
            column("minute", TIMESTAMP_US),
            column("open"),
            column("high"),
            column("low"),
            column("close"),
            column("volume"),
            pa.array([notional_column(b.notional) for b in rows], NOTIONAL_DECIMAL),
            pa.array([format(b.notional, "f") for b in rows], pa.string()),
            column("vwap", VWAP_DECIMAL),
            column("trades", pa.int64()),
            column("first_trade_id", pa.string()),
            column("last_trade_id", pa.string()),
        ],
        schema=BARS_SCHEMA,
    )


def bars_parquet(rows: Sequence[Bar]) -> bytes:
    """:func:`bars_table` as Parquet (zstd)."""
    return parquet_bytes(bars_table(rows))
