"""The ``reconcile`` job's data logic: a ledger file against a processor file (docs: batch.md).

Pure: bytes in, objects/bytes out. Inputs (CSV, columns in any order, no extra or missing one):

* ledger: ``txn_id,account,amount,currency,timestamp``
* processor: ``reference,account,amount,currency,settled_at``

A transaction's key is ``(account, id)``: a ledger ``txn_id`` matches a processor ``reference``
only within the same account.

Row validation (first problem wins, fields in column order); rejected rows are not reconciled:

==================  ================================================================
kind                 rule
==================  ================================================================
wrong-field-count    the row has not exactly 5 fields
missing-field        a field is empty
bad-decimal          ``amount`` is not a plain decimal number (negative is allowed: refunds)
unknown-currency     ``currency`` is not a code of :data:`MINOR_UNITS` (any case; stored upper)
too-precise          ``amount`` has more decimal places than the currency's minor unit
bad-timestamp        the time is not ISO 8601 with a zone
==================  ================================================================

Amounts are exact ``Decimal`` normalized to the currency's minor unit (``"10.5"`` USD ->
``10.50``; JPY has 0 places, USD 2, KWD 3), so comparison is exact at the currency's precision.

Duplicates: a later valid row with the key of an earlier valid row of the same side is a
duplicate; the first one is reconciled, the later ones are listed (status ``duplicate-ledger`` /
``duplicate-processor``) and left out of the totals.

Each key present on both sides is exactly one of: ``currency-mismatch`` (the currencies differ,
whatever the amounts), ``amount-mismatch`` (same currency, different amounts; ``difference`` =
processor - ledger), ``matched``. Keys on one side only are ``missing-in-processor`` (ledger only)
or ``missing-in-ledger`` (processor only).

The summary (:func:`summary`) counts each status, each side's rows, and per currency the ledger and
processor totals of the reconciled transactions (first occurrences of valid rows), the total of
the matched ones, and ``difference`` = processor total - ledger total; ``balanced`` is true when
every key matched and nothing was rejected or duplicated.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa

from batch.csvutil import (
    InputError,
    Rejected,
    Row,
    RowError,
    count_kinds,
    decimal_places,
    parse_decimal,
    parse_timestamp,
    read_csv,
    rejected_csv,
    require_header,
    to_json,
    to_jsonl,
    to_parquet,
)
from engine.text import plural

__all__ = [
    "DETAIL_SCHEMA",
    "LEDGER_COLUMNS",
    "MINOR_UNITS",
    "PROCESSOR_COLUMNS",
    "STATUSES",
    "Duplicate",
    "InputError",
    "Pair",
    "ParsedSide",
    "Reconciliation",
    "Rejected",
    "Txn",
    "detail_rows",
    "parse_ledger",
    "parse_processor",
    "reconcile",
    "rejected_csv",
    "summary",
    "summary_markdown",
    "to_json",
    "to_jsonl",
    "to_parquet",
]

LEDGER_COLUMNS = ("txn_id", "account", "amount", "currency", "timestamp")
PROCESSOR_COLUMNS = ("reference", "account", "amount", "currency", "settled_at")

#: ISO 4217 minor units (decimal places) of the accepted currencies.
MINOR_UNITS: Mapping[str, int] = {
    **dict.fromkeys(
        [
            "AED",
            "AUD",
            "BRL",
            "CAD",
            "CHF",
            "CNY",
            "CZK",
            "DKK",
            "EUR",
            "GBP",
            "HKD",
            "INR",
            "MXN",
            "NOK",
            "NZD",
            "PLN",
            "SEK",
            "SGD",
            "USD",
            "ZAR",
        ],
        2,
    ),
    **dict.fromkeys(["CLP", "ISK", "JPY", "KRW", "VND"], 0),
    **dict.fromkeys(["BHD", "JOD", "KWD", "OMR", "TND"], 3),
}

STATUSES = (
    "matched",
    "amount-mismatch",
    "currency-mismatch",
    "missing-in-processor",
    "missing-in-ledger",
    "duplicate-ledger",
    "duplicate-processor",
)

DETAIL_SCHEMA = pa.schema(
    [
        ("status", pa.string()),
        ("account", pa.string()),
        ("id", pa.string()),
        ("ledger_amount", pa.string()),
        ("ledger_currency", pa.string()),
        ("processor_amount", pa.string()),
        ("processor_currency", pa.string()),
        ("difference", pa.string()),
        ("ledger_row", pa.int64()),
        ("processor_row", pa.int64()),
    ]
)


@dataclass(frozen=True, slots=True)
class Txn:
    """One valid transaction of either side; ``time`` in UTC, ``amount`` at the minor unit."""

    id: str
    account: str
    amount: Decimal
    currency: str
    time: dt.datetime
    row_number: int

    @property
    def key(self) -> tuple[str, str]:
        """The matching key: (account, id)."""
        return (self.account, self.id)


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A later valid row with the key of an earlier one (``first_row``) on the same side."""

    txn: Txn
    first_row: int


@dataclass(slots=True)
class ParsedSide:
    """One side's file: first occurrences by key, duplicates and rejected rows."""

    side: str
    source: str
    rows: int = 0
    transactions: dict[tuple[str, str], Txn] = field(default_factory=dict)
    duplicates: list[Duplicate] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Pair:
    """A key present on both sides."""

    ledger: Txn
    processor: Txn

    @property
    def difference(self) -> Decimal | None:
        """processor - ledger, or None when the currencies differ."""
        if self.ledger.currency != self.processor.currency:
            return None
        return self.processor.amount - self.ledger.amount


@dataclass(slots=True)
class Reconciliation:
    """The outcome; every list is sorted by key."""

    ledger: ParsedSide
    processor: ParsedSide
    matched: list[Pair] = field(default_factory=list)
    amount_mismatches: list[Pair] = field(default_factory=list)
    currency_mismatches: list[Pair] = field(default_factory=list)
    missing_in_processor: list[Txn] = field(default_factory=list)
    missing_in_ledger: list[Txn] = field(default_factory=list)


def parse_ledger(name: str, data: bytes) -> ParsedSide:
    """The ledger CSV; raises :class:`InputError` when the file is malformed."""
    return _parse("ledger", LEDGER_COLUMNS, name, data)


def parse_processor(name: str, data: bytes) -> ParsedSide:
    """The processor CSV; raises :class:`InputError` when the file is malformed."""
    return _parse("processor", PROCESSOR_COLUMNS, name, data)


def _parse(side: str, columns: tuple[str, ...], name: str, data: bytes) -> ParsedSide:
    header, records = read_csv(name, data)
    positions = require_header(name, header, columns)
    parsed = ParsedSide(side, name, rows=len(records))
    for record in records:
        try:
            if len(record.fields) != len(columns):
                raise RowError(
                    "wrong-field-count", f"expected {len(columns)} fields, got {len(record.fields)}"
                )
            txn = _txn(columns, [record.fields[i] for i in positions], record.row_number)
        except RowError as exc:
            parsed.rejected.append(exc.rejected(name, record.row_number, record.raw_line))
            continue
        first = parsed.transactions.get(txn.key)
        if first is None:
            parsed.transactions[txn.key] = txn
        else:
            parsed.duplicates.append(Duplicate(txn, first.row_number))
    return parsed


def _txn(columns: tuple[str, ...], values: list[str], row_number: int) -> Txn:
    for column, value in zip(columns, values, strict=True):
        if not value:
            raise RowError("missing-field", f"{column} is empty")
    txn_id, account, amount_text, currency_text, time_text = values
    amount = parse_decimal(columns[2], amount_text)
    currency = currency_text.upper()
    places = MINOR_UNITS.get(currency)
    if places is None:
        raise RowError("unknown-currency", f"currency is not a known code: {currency_text!r}")
    if decimal_places(amount) > places:
        raise RowError(
            "too-precise", f"amount has more than {places} decimal places for {currency}"
        )
    amount = amount.quantize(Decimal(1).scaleb(-places))
    return Txn(
        txn_id, account, amount, currency, parse_timestamp(columns[4], time_text), row_number
    )


def reconcile(ledger: ParsedSide, processor: ParsedSide) -> Reconciliation:
    """Pair the two sides by (account, id) and classify every key (module docstring)."""
    result = Reconciliation(ledger, processor)
    for key in sorted(ledger.transactions.keys() | processor.transactions.keys()):
        left = ledger.transactions.get(key)
        right = processor.transactions.get(key)
        if right is None:
            assert left is not None
            result.missing_in_processor.append(left)
        elif left is None:
            result.missing_in_ledger.append(right)
        elif left.currency != right.currency:
            result.currency_mismatches.append(Pair(left, right))
        elif left.amount != right.amount:
            result.amount_mismatches.append(Pair(left, right))
        else:
            result.matched.append(Pair(left, right))
    return result


def _detail(
    status: str, key: tuple[str, str], ledger: Txn | None, processor: Txn | None
) -> dict[str, Any]:
    difference = None
    if ledger is not None and processor is not None and ledger.currency == processor.currency:
        difference = format(processor.amount - ledger.amount, "f")
    return {
        "status": status,
        "account": key[0],
        "id": key[1],
        "ledger_amount": None if ledger is None else format(ledger.amount, "f"),
        "ledger_currency": None if ledger is None else ledger.currency,
        "processor_amount": None if processor is None else format(processor.amount, "f"),
        "processor_currency": None if processor is None else processor.currency,
        "difference": difference,
        "ledger_row": None if ledger is None else ledger.row_number,
        "processor_row": None if processor is None else processor.row_number,
    }


def detail_rows(rec: Reconciliation) -> list[Row]:
    """One row per key and per duplicate, typed by :data:`DETAIL_SCHEMA` (amounts as exact
    strings, since their scale depends on the currency)."""
    rows: list[Row] = []
    for status, pairs in (
        ("matched", rec.matched),
        ("amount-mismatch", rec.amount_mismatches),
        ("currency-mismatch", rec.currency_mismatches),
    ):
        rows.extend(_detail(status, p.ledger.key, p.ledger, p.processor) for p in pairs)
    rows.extend(_detail("missing-in-processor", t.key, t, None) for t in rec.missing_in_processor)
    rows.extend(_detail("missing-in-ledger", t.key, None, t) for t in rec.missing_in_ledger)
    rows.extend(_detail("duplicate-ledger", d.txn.key, d.txn, None) for d in rec.ledger.duplicates)
    rows.extend(
        _detail("duplicate-processor", d.txn.key, None, d.txn) for d in rec.processor.duplicates
    )
    return rows


def _side_summary(side: ParsedSide) -> dict[str, Any]:
    return {
        "source": side.source,
        "rows": side.rows,
        "valid": len(side.transactions) + len(side.duplicates),
        "rejected": len(side.rejected),
        "rejected_by_kind": count_kinds(side.rejected),
        "duplicates": len(side.duplicates),
    }


def summary(rec: Reconciliation) -> dict[str, Any]:
    """The summary report (module docstring); amounts as exact strings."""
    counts = {
        "matched": len(rec.matched),
        "amount-mismatch": len(rec.amount_mismatches),
        "currency-mismatch": len(rec.currency_mismatches),
        "missing-in-processor": len(rec.missing_in_processor),
        "missing-in-ledger": len(rec.missing_in_ledger),
        "duplicate-ledger": len(rec.ledger.duplicates),
        "duplicate-processor": len(rec.processor.duplicates),
    }
    zero = {"ledger_total": Decimal(0), "processor_total": Decimal(0), "matched_total": Decimal(0)}
    totals: dict[str, dict[str, Decimal]] = {}
    for txn in rec.ledger.transactions.values():
        totals.setdefault(txn.currency, dict(zero))["ledger_total"] += txn.amount
    for txn in rec.processor.transactions.values():
        totals.setdefault(txn.currency, dict(zero))["processor_total"] += txn.amount
    for pair in rec.matched:
        totals[pair.ledger.currency]["matched_total"] += pair.ledger.amount
    by_currency: dict[str, dict[str, str]] = {}
    for currency in sorted(totals):
        unit = Decimal(1).scaleb(-MINOR_UNITS[currency])
        item = totals[currency]
        item["difference"] = item["processor_total"] - item["ledger_total"]
        by_currency[currency] = {k: format(v.quantize(unit), "f") for k, v in item.items()}
    problems = sum(counts.values()) - counts["matched"]
    problems += len(rec.ledger.rejected) + len(rec.processor.rejected)
    return {
        "balanced": problems == 0,
        "counts": counts,
        "ledger": _side_summary(rec.ledger),
        "processor": _side_summary(rec.processor),
        "by_currency": by_currency,
    }


def summary_markdown(report: Mapping[str, Any]) -> str:
    """The :func:`summary` report as readable Markdown tables."""
    ledger, processor = report["ledger"], report["processor"]
    lines = [
        "# Reconciliation summary",
        "",
        f"Ledger `{ledger['source']}`: {plural(ledger['rows'], 'row')}, "
        f"{ledger['rejected']} rejected, {plural(ledger['duplicates'], 'duplicate')}.  ",
        f"Processor `{processor['source']}`: {plural(processor['rows'], 'row')}, "
        f"{processor['rejected']} rejected, {plural(processor['duplicates'], 'duplicate')}.  ",
        f"Balanced: {'yes' if report['balanced'] else 'no'}.",
        "",
        "| status | count |",
        "|---|---:|",
    ]
    lines += [f"| {status} | {report['counts'][status]} |" for status in STATUSES]
    lines += [
        f"| rejected-ledger | {ledger['rejected']} |",
        f"| rejected-processor | {processor['rejected']} |",
        "",
        "| currency | ledger total | processor total | matched total | difference |",
        "|---|---:|---:|---:|---:|",
    ]
    for currency, item in report["by_currency"].items():
        lines.append(
            f"| {currency} | {item['ledger_total']} | {item['processor_total']} | "
            f"{item['matched_total']} | {item['difference']} |"
        )
    return "\n".join(lines) + "\n"
