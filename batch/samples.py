"""Seeded sample inputs for the batch jobs that read input (``feedvault sample JOB``).

Pure and reproducible: each generator draws only from ``random.Random(seed)``, so the same
arguments give byte-identical files. Values are realistic (category price bands, diurnal
temperatures, per-currency minor units), and a small documented share of rows is bad on purpose,
each with exactly one problem of a kind its job rejects:

* ``ecommerce``: :data:`ECOMMERCE_BAD_SHARE` (5 %) of rows, kinds drawn evenly from
  :data:`ECOMMERCE_BAD_KINDS` (a ``duplicate-id`` row repeats an earlier valid order's id);
* ``weather``: :data:`WEATHER_BAD_SHARE` (3 %) of hourly rows are replaced by a bad row, kinds
  from :data:`WEATHER_BAD_KINDS` (CSV files get ``wrong-field-count``, NDJSON files ``bad-json``
  and ``bad-units``); station ``ST01``'s day 20 is a planted heat anomaly (+12 °C);
* ``reconcile``: per side :data:`RECONCILE_BAD_SHARE` (2 %) extra bad rows, kinds from
  :data:`RECONCILE_BAD_KINDS`; of the transactions 2 % have an amount mismatch, 1 % a currency
  mismatch, 2 % are missing in the processor file, 2 % missing in the ledger, and 1 % are
  duplicated on each side.

Each ``generate_*`` returns a :class:`Sample`: the files, the planted rejections as
``(file, row_number, kind)`` and what the job should find; ``sample_*`` return only the files.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from batch.ecommerce import COLUMNS as ORDER_COLUMNS
from batch.reconcile import MINOR_UNITS

ECOMMERCE_BAD_SHARE = 0.05
ECOMMERCE_BAD_KINDS = (
    "wrong-field-count",
    "missing-field",
    "bad-date",
    "bad-integer",
    "bad-decimal",
    "negative-value",
    "out-of-range",
    "too-precise",
    "bad-boolean",
    "duplicate-id",
)
WEATHER_BAD_SHARE = 0.03
WEATHER_BAD_KINDS = ("missing-field", "bad-timestamp", "bad-number", "out-of-range", "duplicate")
RECONCILE_BAD_SHARE = 0.02
RECONCILE_BAD_KINDS = (
    "wrong-field-count",
    "missing-field",
    "bad-decimal",
    "unknown-currency",
    "too-precise",
    "bad-timestamp",
)

Planted = tuple[str, int, str]


@dataclass(frozen=True, slots=True)
class Sample:
    """Generated files, the planted rejections ``(file, row_number, kind)`` and expectations."""

    files: dict[str, bytes]
    planted: frozenset[Planted]
    expected: Mapping[str, Any] = field(default_factory=dict)


def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


# --- ecommerce ---------------------------------------------------------------------------------

_CATEGORIES = {
    "books": (4.99, 45.0),
    "electronics": (19.99, 899.0),
    "garden": (2.5, 120.0),
    "grocery": (0.79, 25.0),
    "toys": (5.0, 80.0),
    "apparel": (9.99, 150.0),
}


def generate_ecommerce(
    seed: int, files: int = 3, rows: int = 200, start: dt.date = dt.date(2024, 3, 1)
) -> Sample:
    """``files`` order CSVs (``orders-001.csv``...) of ``rows`` rows; file i covers 2 days."""
    rng = random.Random(seed)
    out: dict[str, bytes] = {}
    planted: set[Planted] = set()
    valid_ids: list[str] = []
    serial = 0
    for index in range(files):
        name = f"orders-{index + 1:03d}.csv"
        lines: list[list[str]] = []
        for row in range(rows):
            serial += 1
            category = rng.choice(sorted(_CATEGORIES))
            low, high = _CATEGORIES[category]
            day = start + dt.timedelta(days=2 * index + rng.randrange(2))
            fields = [
                f"ORD-{seed % 1000:03d}-{serial:07d}",
                f"CUST-{rng.randrange(1, 400):05d}",
                day.isoformat(),
                category,
                f"{category[:3].upper()}-{rng.randrange(1, 300):04d}",
                str(rng.choices((1, 2, 3, 4, 5), weights=(60, 20, 10, 6, 4))[0]),
                f"{rng.uniform(low, high):.2f}",
                rng.choices(("false", "true"), weights=(92, 8))[0],
            ]
            if rng.random() < ECOMMERCE_BAD_SHARE:
                kind = rng.choice(ECOMMERCE_BAD_KINDS)
                if kind == "duplicate-id" and not valid_ids:
                    kind = "bad-boolean"
                fields = _bad_order(rng, kind, fields, valid_ids)
                planted.add((name, row + 2, kind))
            else:
                valid_ids.append(fields[0])
            lines.append(fields)
        out[name] = _csv_bytes(ORDER_COLUMNS, lines)
    return Sample(out, frozenset(planted))


def _bad_order(rng: random.Random, kind: str, fields: list[str], valid: list[str]) -> list[str]:
    fields = list(fields)
    if kind == "wrong-field-count":
        return fields[:-1] if rng.random() < 0.5 else [*fields, "extra"]
    if kind == "missing-field":
        fields[rng.randrange(len(fields))] = ""
    elif kind == "bad-date":
        fields[2] = rng.choice(("2024-02-30", "03/01/2024", "2024-13-01", "yesterday"))
    elif kind == "bad-integer":
        fields[5] = rng.choice(("two", "1.5", "3x"))
    elif kind == "bad-decimal":
        fields[6] = rng.choice(("12,99", "$15.00", "N/A", "1e3"))
    elif kind == "negative-value":
        if rng.random() < 0.5:
            fields[5] = str(-rng.randrange(1, 5))
        else:
            fields[6] = f"-{fields[6]}"
    elif kind == "out-of-range":
        fields[5] = "5000000000"
    elif kind == "too-precise":
        fields[6] = f"{fields[6]}371"
    elif kind == "bad-boolean":
        fields[7] = rng.choice(("maybe", "Y", "returned", "2"))
    elif kind == "duplicate-id":
        fields[0] = rng.choice(valid)
    return fields


def sample_ecommerce(seed: int, files: int = 3, rows: int = 200) -> dict[str, bytes]:
    """The files of :func:`generate_ecommerce`."""
    return generate_ecommerce(seed, files, rows).files


# --- weather -----------------------------------------------------------------------------------

# (station, format, temperature column, wind column, precipitation column, UTC offset hours)
_STATIONS = (
    ("ST01", "csv", "temperature_c", "wind_speed_ms", "precipitation_mm", 1),
    ("ST02", "ndjson", "temperature_f", "wind_speed_mph", "precipitation_in", -5),
    ("ST03", "csv", "temperature_k", "wind_speed_kmh", "precipitation_mm", 0),
    ("ST04", "ndjson", "temperature_c", "wind_speed_kmh", "precipitation_in", 9),
)
_FROM_SI: Mapping[str, Callable[[float], float]] = {
    "temperature_c": lambda c: c,
    "temperature_f": lambda c: c * 9.0 / 5.0 + 32.0,
    "temperature_k": lambda c: c + 273.15,
    "wind_speed_ms": lambda v: v,
    "wind_speed_kmh": lambda v: v * 3.6,
    "wind_speed_mph": lambda v: v / 0.44704,
    "precipitation_mm": lambda p: p,
    "precipitation_in": lambda p: p / 25.4,
}
ANOMALY_STATION = "ST01"
ANOMALY_DAY = 20


def generate_weather(
    seed: int, stations: int = 4, days: int = 30, start: dt.date = dt.date(2024, 6, 1)
) -> Sample:
    """One hourly file per station (CSV or NDJSON, mixed units and UTC offsets), ``days`` days.

    ``expected["anomalies"]`` lists the planted anomalous (station, UTC date) pairs.
    """
    rng = random.Random(seed)
    out: dict[str, bytes] = {}
    planted: set[Planted] = set()
    first = dt.datetime.combine(start, dt.time(), dt.UTC)
    for station, fmt, t_col, w_col, p_col, offset in _STATIONS[:stations]:
        name = f"station-{station}.{fmt}"
        zone = dt.timezone(dt.timedelta(hours=offset))
        columns = ("station_id", "timestamp", t_col, "humidity_pct", p_col, w_col)
        base = rng.uniform(8.0, 24.0)
        day_offsets = [rng.uniform(-1.5, 1.5) for _ in range(days)]  # no natural anomaly
        records: list[list[Any]] = []
        kinds: list[str | None] = []
        last_valid: list[Any] | None = None
        for hour in range(24 * days):
            time = first + dt.timedelta(hours=hour)
            day = hour // 24
            temp = base + day_offsets[day] + 5.0 * math.sin((hour % 24 - 9) * math.pi / 12)
            if station == ANOMALY_STATION and day == ANOMALY_DAY:
                temp += 12.0
            temp += rng.gauss(0.0, 0.6)
            rain = rng.expovariate(0.6) if rng.random() < 0.08 else 0.0
            values: list[Any] = [
                station,
                time.astimezone(zone).isoformat(),
                round(_FROM_SI[t_col](temp), 2),
                round(min(99.0, max(25.0, rng.gauss(68.0, 12.0))), 1),
                round(_FROM_SI[p_col](rain), 3),
                round(_FROM_SI[w_col](abs(rng.gauss(4.0, 2.5))), 2),
            ]
            kind: str | None = None
            if rng.random() < WEATHER_BAD_SHARE:
                extra = ("wrong-field-count",) if fmt == "csv" else ("bad-json", "bad-units")
                kind = rng.choice(WEATHER_BAD_KINDS + extra)
                if kind == "duplicate" and last_valid is None:
                    kind = "bad-number"
                values = _bad_observation(rng, kind, values, last_valid)
            else:
                last_valid = values
            records.append(values)
            kinds.append(kind)
        if fmt == "csv":
            data = _csv_bytes(columns, [[_text(v) for v in r] for r in records])
            first_row = 2
        else:
            data = _ndjson_bytes(columns, records, kinds)
            first_row = 1
        out[name] = data
        planted.update(
            (name, i + first_row, kind) for i, kind in enumerate(kinds) if kind is not None
        )
    anomalies = [(ANOMALY_STATION, (start + dt.timedelta(days=ANOMALY_DAY)).isoformat())]
    return Sample(out, frozenset(planted), {"anomalies": anomalies if days > ANOMALY_DAY else []})


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _ndjson_bytes(
    columns: Sequence[str], records: Sequence[list[Any]], kinds: Sequence[str | None]
) -> bytes:
    lines = []
    for values, kind in zip(records, kinds, strict=True):
        obj = dict(zip(columns, values, strict=True))
        if kind == "bad-json":
            lines.append(json.dumps(obj)[:-7])
            continue
        if kind == "bad-units":
            obj["temperature_k"] = 290.0
        lines.append(json.dumps(obj))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _bad_observation(
    rng: random.Random, kind: str, values: list[Any], last_valid: list[Any] | None
) -> list[Any]:
    values = list(values)
    if kind == "missing-field":
        values[rng.randrange(len(values))] = ""
    elif kind == "bad-timestamp":
        values[1] = values[1][:19]  # the zone is cut off
    elif kind == "bad-number":
        values[rng.choice((2, 3, 4, 5))] = rng.choice(("warm", "n/a", "--", "NaN"))
    elif kind == "out-of-range":
        values[3] = rng.choice((140.0, -5.0, 101.5))  # humidity outside 0-100 %
    elif kind == "duplicate":
        assert last_valid is not None
        values = list(last_valid)
    elif kind == "wrong-field-count":
        values = values[:-1]
    return values


def sample_weather(seed: int, stations: int = 4, days: int = 30) -> dict[str, bytes]:
    """The files of :func:`generate_weather`."""
    return generate_weather(seed, stations, days).files


# --- reconcile ---------------------------------------------------------------------------------

_CURRENCIES = (("USD", 50), ("EUR", 25), ("GBP", 12), ("JPY", 8), ("KWD", 5))
_FATES = (
    ("matched", 92),
    ("amount-mismatch", 2),
    ("currency-mismatch", 1),
    ("missing-in-processor", 2),
    ("missing-in-ledger", 2),
    ("duplicate-ledger", 0.5),
    ("duplicate-processor", 0.5),
)
LEDGER_HEADER = ("txn_id", "account", "amount", "currency", "timestamp")
PROCESSOR_HEADER = ("reference", "account", "amount", "currency", "settled_at")


def generate_reconcile(seed: int, rows: int = 300) -> Sample:
    """``ledger.csv`` and ``processor.csv`` for ``rows`` transactions.

    ``expected["counts"]`` holds the status counts the reconciliation must report.
    """
    rng = random.Random(seed)
    start = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    ledger: list[list[str]] = []
    processor: list[list[str]] = []
    dup_ledger: list[list[str]] = []
    dup_processor: list[list[str]] = []
    counts = dict.fromkeys((fate for fate, _ in _FATES), 0)
    currencies = [currency for currency, _ in _CURRENCIES]
    weights = [weight for _, weight in _CURRENCIES]
    for serial in range(rows):
        currency = rng.choices(currencies, weights=weights)[0]
        places = MINOR_UNITS[currency]
        scale = 100 if places == 0 else 1
        amount = Decimal(f"{rng.lognormvariate(3.5, 1.0) * scale:.{places}f}")
        if rng.random() < 0.05:
            amount = -amount  # a refund
        when = start + dt.timedelta(seconds=rng.randrange(0, 7 * 86400))
        settled = when + dt.timedelta(seconds=rng.randrange(60, 2 * 86400))
        txn_id = f"TX{seed % 1000:03d}{serial:07d}"
        account = f"ACC-{rng.randrange(1, 25):03d}"
        left = [txn_id, account, format(amount, "f"), currency, when.isoformat()]
        right = [txn_id, account, format(amount, "f"), currency, settled.isoformat()]
        fate = rng.choices([f for f, _ in _FATES], weights=[w for _, w in _FATES])[0]
        if fate == "amount-mismatch":
            right[2] = format(amount + Decimal(rng.choice((-1, 1, 30))).scaleb(-places), "f")
        elif fate == "currency-mismatch":
            right[3] = rng.choice([c for c in ("USD", "EUR", "GBP") if c != currency])
            right[2] = format(amount.quantize(Decimal("0.01")), "f")
        counts[fate] += 1
        if fate == "duplicate-ledger":
            dup_ledger.append(left)
            counts["matched"] += 1
        if fate == "duplicate-processor":
            dup_processor.append(right)
            counts["matched"] += 1
        if fate != "missing-in-ledger":
            ledger.append(left)
        if fate != "missing-in-processor":
            processor.append(right)
    ledger.sort(key=lambda r: (r[4], r[0]))
    rng.shuffle(processor)
    ledger += dup_ledger
    processor += dup_processor
    planted: set[Planted] = set()
    for name, lines in (("ledger.csv", ledger), ("processor.csv", processor)):
        tagged: list[tuple[list[str], str | None]] = [(line, None) for line in lines]
        for n in range(max(1, round(len(lines) * RECONCILE_BAD_SHARE))):
            kind = rng.choice(RECONCILE_BAD_KINDS)
            bad = _bad_txn(rng, kind, f"BAD{seed % 1000:03d}{n:04d}")
            tagged.insert(rng.randrange(len(tagged) + 1), (bad, kind))
        lines[:] = [line for line, _ in tagged]
        planted.update((name, i + 2, k) for i, (_, k) in enumerate(tagged) if k is not None)
    files = {
        "ledger.csv": _csv_bytes(LEDGER_HEADER, ledger),
        "processor.csv": _csv_bytes(PROCESSOR_HEADER, processor),
    }
    del counts["duplicate-ledger"], counts["duplicate-processor"]
    counts["duplicate-ledger"] = len(dup_ledger)
    counts["duplicate-processor"] = len(dup_processor)
    return Sample(files, frozenset(planted), {"counts": counts})


def _bad_txn(rng: random.Random, kind: str, txn_id: str) -> list[str]:
    fields = [txn_id, "ACC-001", "12.50", "USD", "2024-05-02T10:00:00+00:00"]
    if kind == "wrong-field-count":
        return fields[:4]
    if kind == "missing-field":
        fields[rng.randrange(len(fields))] = ""
    elif kind == "bad-decimal":
        fields[2] = rng.choice(("12.5O", "1,250.00", "USD12"))
    elif kind == "unknown-currency":
        fields[3] = rng.choice(("XYZ", "US", "DOLLAR"))
    elif kind == "too-precise":
        fields[2] = "12.505"
    elif kind == "bad-timestamp":
        fields[4] = rng.choice(("2024-05-02 10:00:00", "02/05/2024", "2024-05-02"))
    return fields


def sample_reconcile(seed: int, rows: int = 300) -> dict[str, bytes]:
    """The files of :func:`generate_reconcile`."""
    return generate_reconcile(seed, rows).files


#: ``feedvault sample JOB`` -> generator of the job's input files with default sizes.
SAMPLERS: Mapping[str, Callable[[int], dict[str, bytes]]] = {
    "ecommerce": sample_ecommerce,
    "weather": sample_weather,
    "reconcile": sample_reconcile,
}
