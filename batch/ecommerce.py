"""The ``ecommerce`` job's data logic: validate order CSVs, compute daily KPIs (docs: batch.md).

Pure: bytes in, objects/bytes out. The runner reads the input objects, calls :func:`parse_orders`
once with every file, then writes :func:`order_kpis` / :func:`category_kpis` through
``to_jsonl`` and ``to_parquet`` (with :data:`ORDER_KPI_SCHEMA` / :data:`CATEGORY_KPI_SCHEMA`) and
``rejected_csv`` under ``rejected/``.

Input: CSV with the columns ``order_id,customer_id,order_date,category,product_id,quantity,
unit_price,returned`` in any order (a missing or extra column makes the file malformed). One row is
one order. Rows are checked field by field in that column order and rejected with the first
problem found:

==================  ================================================================
kind                 rule
==================  ================================================================
wrong-field-count    the row has not exactly 8 fields
missing-field        a field is empty (after stripping blanks)
bad-date             ``order_date`` is not a valid ``YYYY-MM-DD`` date
bad-integer          ``quantity`` is not an integer
bad-decimal          ``unit_price`` is not a plain decimal number
negative-value       ``quantity`` or ``unit_price`` is below zero
out-of-range         ``quantity`` > 1,000,000,000 or ``unit_price`` >= 1,000,000,000,000
too-precise          ``unit_price`` has more than 4 decimal places
bad-boolean          ``returned`` is not ``true``/``false``/``1``/``0`` (any case)
duplicate-id         an earlier valid row (any file) has the same ``order_id``
==================  ================================================================

Files are processed in ascending order of their names (whatever order they are given in), rows in
file order; for a duplicated ``order_id`` the first *valid* row wins and the later ones are
rejected (a rejected row does not claim its id).

Definitions (per ``order_date``; category KPIs per (``category``, ``order_date``)):

* revenue of an order = ``quantity * unit_price``, exact ``Decimal``; **returned orders bring no
  revenue** (net revenue) and no items sold;
* ``total_orders`` = valid orders that day, returned or not;
* ``total_revenue`` = Σ revenue of the non-returned orders;
* ``total_items_sold`` = Σ ``quantity`` of the non-returned orders;
* ``return_rate`` = returned orders / ``total_orders``;
* ``unique_customers`` = distinct ``customer_id`` among the day's orders (returned included);
* ``orders`` (category rows) = the category's orders that day, returned or not;
* ``daily_revenue`` = Σ revenue of the category's non-returned orders that day;
* ``avg_order_value`` = ``daily_revenue`` / ``orders`` (net revenue per order placed);
* ``avg_return_rate`` = mean of the ``returned`` flag (1/0) over the category's orders that day,
  i.e. returned / ``orders``.

Money (revenue, avg_order_value) is a ``Decimal`` with exactly 4 decimal places; sums are exact
(prices have at most 4 places), ``avg_order_value`` is rounded half-even to 4 places. Rates are
``Decimal`` with 6 places, rounded half-even. In JSON lines they are exact strings
(``"12.5000"``), in Parquet ``decimal128(38, 4)`` and ``decimal128(9, 6)``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

import pyarrow as pa

from batch.csvutil import (
    InputError,
    Rejected,
    Row,
    RowError,
    count_kinds,
    decimal_places,
    parse_decimal,
    read_csv,
    rejected_csv,
    require_header,
    to_jsonl,
    to_parquet,
)

__all__ = [
    "CATEGORY_KPI_SCHEMA",
    "COLUMNS",
    "ORDER_KPI_SCHEMA",
    "InputError",
    "Order",
    "ParsedOrders",
    "Rejected",
    "category_kpis",
    "order_kpis",
    "parse_orders",
    "rejected_csv",
    "to_jsonl",
    "to_parquet",
]

COLUMNS = (
    "order_id",
    "customer_id",
    "order_date",
    "category",
    "product_id",
    "quantity",
    "unit_price",
    "returned",
)
MONEY = Decimal("0.0001")
RATE = Decimal("0.000001")
MAX_QUANTITY = 1_000_000_000
MAX_PRICE = Decimal(10) ** 12
EXACT_DIGITS = 76  # Decimal precision of the KPI sums: exact far beyond decimal128(38, 4)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INTEGER = re.compile(r"[+-]?\d+")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}

ORDER_KPI_SCHEMA = pa.schema(
    [
        ("order_date", pa.string()),
        ("total_orders", pa.int64()),
        ("total_revenue", pa.decimal128(38, 4)),
        ("total_items_sold", pa.int64()),
        ("return_rate", pa.decimal128(9, 6)),
        ("unique_customers", pa.int64()),
    ]
)
CATEGORY_KPI_SCHEMA = pa.schema(
    [
        ("category", pa.string()),
        ("order_date", pa.string()),
        ("orders", pa.int64()),
        ("daily_revenue", pa.decimal128(38, 4)),
        ("avg_order_value", pa.decimal128(38, 4)),
        ("avg_return_rate", pa.decimal128(9, 6)),
    ]
)


@dataclass(frozen=True, slots=True)
class Order:
    """One valid order row."""

    order_id: str
    customer_id: str
    order_date: dt.date
    category: str
    product_id: str
    quantity: int
    unit_price: Decimal
    returned: bool
    source: str
    row_number: int

    @property
    def revenue(self) -> Decimal:
        """Net revenue: ``quantity * unit_price``, or 0 for a returned order."""
        return Decimal(0) if self.returned else self.quantity * self.unit_price


@dataclass(slots=True)
class ParsedOrders:
    """The valid orders and the rejected rows of one run's input files."""

    orders: list[Order] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def rejected_by_kind(self) -> dict[str, int]:
        """Number of rejected rows per kind."""
        return count_kinds(self.rejected)


def parse_orders(files: Iterable[tuple[str, bytes]]) -> ParsedOrders:
    """Validate every order CSV ``(name, bytes)``; see the module docstring for the rules.

    Raises :class:`InputError` for a malformed file (empty, not UTF-8, wrong header, broken
    quoting) or two files with the same name.
    """
    result = ParsedOrders()
    first_seen: dict[str, tuple[str, int]] = {}
    names: set[str] = set()
    for name, data in sorted(files, key=lambda item: item[0]):
        if name in names:
            raise InputError(name, "given twice")
        names.add(name)
        header, records = read_csv(name, data)
        positions = require_header(name, header, COLUMNS)
        for record in records:
            try:
                if len(record.fields) != len(COLUMNS):
                    raise RowError(
                        "wrong-field-count",
                        f"expected {len(COLUMNS)} fields, got {len(record.fields)}",
                    )
                values = [record.fields[i] for i in positions]
                order = _order(values, name, record.row_number)
                if order.order_id in first_seen:
                    source, row = first_seen[order.order_id]
                    raise RowError(
                        "duplicate-id",
                        f"order_id {order.order_id!r} already seen in {source} line {row}",
                    )
            except RowError as exc:
                result.rejected.append(exc.rejected(name, record.row_number, record.raw_line))
                continue
            first_seen[order.order_id] = (name, record.row_number)
            result.orders.append(order)
    return result


def _order(values: Sequence[str], source: str, row_number: int) -> Order:
    for column, value in zip(COLUMNS, values, strict=True):
        if not value:
            raise RowError("missing-field", f"{column} is empty")
    order_id, customer_id, date_text, category, product_id, qty_text, price_text, ret = values
    order_date = _date(date_text)
    if not _INTEGER.fullmatch(qty_text):
        raise RowError("bad-integer", f"quantity is not an integer: {qty_text!r}")
    quantity = int(qty_text)
    if quantity < 0:
        raise RowError("negative-value", f"quantity is negative: {qty_text}")
    if quantity > MAX_QUANTITY:
        raise RowError("out-of-range", f"quantity is above {MAX_QUANTITY}: {qty_text}")
    price = parse_decimal("unit_price", price_text)
    if price < 0:
        raise RowError("negative-value", f"unit_price is negative: {price_text}")
    if price >= MAX_PRICE:
        raise RowError("out-of-range", f"unit_price is not below {MAX_PRICE}: {price_text}")
    if decimal_places(price) > 4:
        raise RowError("too-precise", f"unit_price has more than 4 decimal places: {price_text}")
    returned = _BOOLEANS.get(ret.lower())
    if returned is None:
        raise RowError("bad-boolean", f"returned is not true/false/1/0: {ret!r}")
    return Order(
        order_id,
        customer_id,
        order_date,
        category,
        product_id,
        quantity,
        price,
        returned,
        source,
        row_number,
    )


def _date(text: str) -> dt.date:
    if _DATE.fullmatch(text):
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
    raise RowError("bad-date", f"order_date is not a YYYY-MM-DD date: {text!r}")


def _rate(part: int, whole: int) -> Decimal:
    return (Decimal(part) / Decimal(whole)).quantize(RATE)


def order_kpis(orders: Iterable[Order]) -> list[Row]:
    """One row per ``order_date``, sorted by date (definitions in the module docstring)."""
    days: dict[dt.date, list[Order]] = defaultdict(list)
    for order in orders:
        days[order.order_date].append(order)
    rows: list[Row] = []
    with localcontext(prec=EXACT_DIGITS):
        for day in sorted(days):
            rows.append(_day_row(day, days[day]))
    return rows


def _day_row(day: dt.date, group: list[Order]) -> Row:
    returned = sum(1 for order in group if order.returned)
    return {
        "order_date": day.isoformat(),
        "total_orders": len(group),
        "total_revenue": sum((o.revenue for o in group), Decimal(0)).quantize(MONEY),
        "total_items_sold": sum(o.quantity for o in group if not o.returned),
        "return_rate": _rate(returned, len(group)),
        "unique_customers": len({o.customer_id for o in group}),
    }


def category_kpis(orders: Iterable[Order]) -> list[Row]:
    """One row per (``category``, ``order_date``), sorted by both (see the module docstring)."""
    groups: dict[tuple[str, dt.date], list[Order]] = defaultdict(list)
    for order in orders:
        groups[(order.category, order.order_date)].append(order)
    rows: list[Row] = []
    with localcontext(prec=EXACT_DIGITS):
        for category, day in sorted(groups):
            rows.append(_category_row(category, day, groups[(category, day)]))
    return rows


def _category_row(category: str, day: dt.date, group: list[Order]) -> Row:
    revenue = sum((o.revenue for o in group), Decimal(0)).quantize(MONEY)
    returned = sum(1 for order in group if order.returned)
    return {
        "category": category,
        "order_date": day.isoformat(),
        "orders": len(group),
        "daily_revenue": revenue,
        "avg_order_value": (revenue / len(group)).quantize(MONEY),
        "avg_return_rate": _rate(returned, len(group)),
    }
