"""The ``weather`` job's data logic: station observations to daily summaries (docs: batch.md).

Pure: bytes in, objects/bytes out.

Input files are CSV or NDJSON: a name ending ``.csv`` is CSV, ``.ndjson``/``.jsonl``/``.json`` is
NDJSON, any other name is NDJSON when its first non-blank character is ``{``, else CSV. Fields:
``station_id``, ``timestamp`` and one column of each measured quantity, whose name carries the unit:

=============  ==========================================================  ==============
quantity       accepted names                                              SI output
=============  ==========================================================  ==============
temperature    ``temperature_c``, ``temperature_f``, ``temperature_k``     ``°C``
humidity       ``humidity_pct``                                            ``%``
precipitation  ``precipitation_mm``, ``precipitation_in``                  ``mm`` (kg/m²)
wind speed     ``wind_speed_ms``, ``wind_speed_kmh``, ``wind_speed_mph``   ``m/s``
=============  ==========================================================  ==============

Temperature is normalized to degrees Celsius (an SI derived unit; the Kelvin offset is exact).
A CSV header without a column of each quantity, or with two columns of one quantity, makes the file
malformed (:class:`InputError`); other extra columns (CSV) or keys (NDJSON) are ignored. In NDJSON
the units are read from each record's keys; values may be JSON numbers or numeric strings.

Rows are checked in this order, the first problem rejecting the row:

==================  ================================================================
kind                rule
==================  ================================================================
bad-json            an NDJSON line that is not a JSON object
wrong-field-count   a CSV row whose field count differs from the header's
bad-units           an NDJSON record with no key, or two keys, for one quantity
missing-field       a field is empty / null / absent
bad-timestamp       ``timestamp`` is not ISO 8601 with a zone (``Z`` or an offset)
bad-number          a measurement is not a finite decimal number
out-of-range        after conversion: temperature outside [-90, 60] °C, humidity
                    outside [0, 100] %, precipitation outside [0, 500] mm, wind
                    outside [0, 120] m/s
duplicate           an earlier valid row has the same station and instant (UTC)
==================  ================================================================

Files are processed by ascending name; for a duplicate the first valid row wins.

Daily summaries: per station and **UTC** calendar day: min/max/mean temperature, total
precipitation, mean humidity, max wind speed, observation count. Sums use ``math.fsum`` (correctly
rounded, so any row order gives the same result); every float output is rounded to 3 decimals.

Anomalies: for each station, ``mu`` and ``sigma`` are the mean and the **population** standard
deviation (divide by n) of its daily mean temperatures; a day is anomalous when
``|mean - mu| > 3 * sigma`` (and ``sigma > 0``). With population sigma, ``|z|`` can never exceed
``sqrt(n - 1)``, so a station needs at least 11 days before any day can be anomalous.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from batch.csvutil import (
    InputError,
    Rejected,
    Row,
    RowError,
    count_kinds,
    decode,
    parse_timestamp,
    read_csv,
    rejected_csv,
    to_json,
    to_jsonl,
    to_parquet,
)

__all__ = [
    "ANOMALY_SCHEMA",
    "DAILY_SCHEMA",
    "OBSERVATION_SCHEMA",
    "UNITS",
    "InputError",
    "Observation",
    "ParsedWeather",
    "Rejected",
    "anomalies",
    "daily_summaries",
    "observation_rows",
    "parse_weather",
    "quality_report",
    "rejected_csv",
    "to_json",
    "to_jsonl",
    "to_parquet",
]

#: Accepted column names per quantity and their conversion to the SI unit.
UNITS: Mapping[str, Mapping[str, Callable[[float], float]]] = {
    "temperature": {
        "temperature_c": lambda x: x,
        "temperature_f": lambda x: (x - 32.0) * 5.0 / 9.0,
        "temperature_k": lambda x: x - 273.15,
    },
    "humidity": {"humidity_pct": lambda x: x},
    "precipitation": {"precipitation_mm": lambda x: x, "precipitation_in": lambda x: x * 25.4},
    "wind_speed": {
        "wind_speed_ms": lambda x: x,
        "wind_speed_kmh": lambda x: x / 3.6,
        "wind_speed_mph": lambda x: x * 0.44704,
    },
}
RANGES: Mapping[str, tuple[float, float]] = {
    "temperature": (-90.0, 60.0),
    "humidity": (0.0, 100.0),
    "precipitation": (0.0, 500.0),
    "wind_speed": (0.0, 120.0),
}
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".json")

OBSERVATION_SCHEMA = pa.schema(
    [
        ("station_id", pa.string()),
        ("timestamp", pa.string()),
        ("temperature_c", pa.float64()),
        ("humidity_pct", pa.float64()),
        ("precipitation_mm", pa.float64()),
        ("wind_speed_ms", pa.float64()),
    ]
)
DAILY_SCHEMA = pa.schema(
    [
        ("station_id", pa.string()),
        ("date", pa.string()),
        ("temperature_min_c", pa.float64()),
        ("temperature_max_c", pa.float64()),
        ("temperature_mean_c", pa.float64()),
        ("precipitation_total_mm", pa.float64()),
        ("humidity_mean_pct", pa.float64()),
        ("wind_speed_max_ms", pa.float64()),
        ("observation_count", pa.int64()),
    ]
)
ANOMALY_SCHEMA = pa.schema(
    [
        ("station_id", pa.string()),
        ("date", pa.string()),
        ("temperature_mean_c", pa.float64()),
        ("station_mean_c", pa.float64()),
        ("station_std_c", pa.float64()),
        ("z_score", pa.float64()),
    ]
)


@dataclass(frozen=True, slots=True)
class Observation:
    """One valid observation in SI units; ``time`` in UTC."""

    station_id: str
    time: dt.datetime
    temperature_c: float
    humidity_pct: float
    precipitation_mm: float
    wind_speed_ms: float
    source: str
    row_number: int


@dataclass(slots=True)
class FileStats:
    """Per-file counts for the data-quality report; ``units`` counts valid rows per column."""

    format: str
    rows: int = 0
    valid: int = 0
    rejected: int = 0
    units: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ParsedWeather:
    """The valid observations, the rejected rows and per-file counts."""

    observations: list[Observation] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    files: dict[str, FileStats] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Line:
    row_number: int
    raw_line: str
    values: dict[str, Any]


def _is_ndjson(name: str, text: str) -> bool:
    lower = name.lower()
    if lower.endswith(".csv"):
        return False
    return lower.endswith(_NDJSON_SUFFIXES) or text.lstrip().startswith("{")


def _csv_lines(name: str, data: bytes) -> list[_Line | Rejected]:
    header, records = read_csv(name, data)
    for quantity, names in UNITS.items():
        present = [column for column in header if column in names]
        if len(present) != 1:
            found = ", ".join(present) or "none"
            raise InputError(
                name, f"header needs one {quantity} column of {', '.join(names)} (found {found})"
            )
    for column in ("station_id", "timestamp"):
        if column not in header:
            raise InputError(name, f"header has no {column} column")
    out: list[_Line | Rejected] = []
    for record in records:
        if len(record.fields) != len(header):
            problem = f"expected {len(header)} fields, got {len(record.fields)}"
            error = RowError("wrong-field-count", problem)
            out.append(error.rejected(name, record.row_number, record.raw_line))
            continue
        values = dict(zip(header, record.fields, strict=True))
        out.append(_Line(record.row_number, record.raw_line, values))
    return out


def _ndjson_lines(name: str, text: str) -> list[_Line | Rejected]:
    out: list[_Line | Rejected] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            error = RowError("bad-json", "line is not a JSON object")
            out.append(error.rejected(name, number, line))
            continue
        out.append(_Line(number, line, value))
    return out


def parse_weather(files: Iterable[tuple[str, bytes]]) -> ParsedWeather:
    """Validate and normalize every observation file ``(name, bytes)`` (module docstring).

    Raises :class:`InputError` for a malformed file or two files with the same name.
    """
    result = ParsedWeather()
    seen: set[tuple[str, dt.datetime]] = set()
    for name, data in sorted(files, key=lambda item: item[0]):
        if name in result.files:
            raise InputError(name, "given twice")
        text = decode(name, data)
        ndjson = _is_ndjson(name, text)
        lines = _ndjson_lines(name, text) if ndjson else _csv_lines(name, data)
        stats = result.files[name] = FileStats("ndjson" if ndjson else "csv", rows=len(lines))
        for line in lines:
            if isinstance(line, Rejected):
                result.rejected.append(line)
                continue
            try:
                obs, columns = _observation(line, name)
                if (obs.station_id, obs.time) in seen:
                    raise RowError(
                        "duplicate", f"station {obs.station_id} at {_iso(obs.time)} seen before"
                    )
            except RowError as exc:
                result.rejected.append(exc.rejected(name, line.row_number, line.raw_line))
                continue
            seen.add((obs.station_id, obs.time))
            result.observations.append(obs)
            for column in columns:
                stats.units[column] = stats.units.get(column, 0) + 1
        stats.rejected = sum(1 for r in result.rejected if r.source == name)
        stats.valid = stats.rows - stats.rejected
        stats.units = dict(sorted(stats.units.items()))
    return result


def _observation(line: _Line, source: str) -> tuple[Observation, list[str]]:
    values = line.values
    columns: dict[str, str] = {}
    for quantity, names in UNITS.items():
        present = [key for key in names if key in values]
        if len(present) != 1:
            raise RowError("bad-units", f"need one {quantity} key of {', '.join(names)}")
        columns[quantity] = present[0]
    for key in ("station_id", "timestamp", *columns.values()):
        value = values.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise RowError("missing-field", f"{key} is empty")
    station = values["station_id"]
    if isinstance(station, bool) or not isinstance(station, str | int):
        raise RowError("missing-field", "station_id is not a string")
    stamp = values["timestamp"]
    if not isinstance(stamp, str):
        raise RowError("bad-timestamp", f"timestamp is not a string: {stamp!r}")
    time = parse_timestamp("timestamp", stamp.strip())
    si: dict[str, float] = {}
    for quantity, column in columns.items():
        si[quantity] = UNITS[quantity][column](_number(column, values[column]))
    for quantity, (low, high) in RANGES.items():
        if not low <= si[quantity] <= high:
            raise RowError(
                "out-of-range",
                f"{quantity} {si[quantity]:.3f} outside [{low:g}, {high:g}] "
                f"(from {columns[quantity]}={values[columns[quantity]]})",
            )
    obs = Observation(
        str(station).strip(),
        time,
        si["temperature"],
        si["humidity"],
        si["precipitation"],
        si["wind_speed"],
        source,
        line.row_number,
    )
    return obs, list(columns.values())


def _number(column: str, value: object) -> float:
    if isinstance(value, bool):
        raise RowError("bad-number", f"{column} is not a number: {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        raise RowError("bad-number", f"{column} is not a number: {value!r}")
    if not math.isfinite(number):
        raise RowError("bad-number", f"{column} is not finite: {value!r}")
    return number


def _iso(time: dt.datetime) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{time.microsecond:06d}Z" if time.microsecond else "Z"
    )


def observation_rows(observations: Iterable[Observation]) -> list[Row]:
    """The normalized observations, SI units, times as ``...Z``, floats rounded to 3 places."""
    return [
        {
            "station_id": o.station_id,
            "timestamp": _iso(o.time),
            "temperature_c": round(o.temperature_c, 3),
            "humidity_pct": round(o.humidity_pct, 3),
            "precipitation_mm": round(o.precipitation_mm, 3),
            "wind_speed_ms": round(o.wind_speed_ms, 3),
        }
        for o in sorted(observations, key=lambda o: (o.station_id, o.time))
    ]


def _days(observations: Iterable[Observation]) -> dict[str, dict[dt.date, list[Observation]]]:
    stations: dict[str, dict[dt.date, list[Observation]]] = defaultdict(lambda: defaultdict(list))
    for obs in observations:
        stations[obs.station_id][obs.time.date()].append(obs)
    return stations


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def daily_summaries(observations: Iterable[Observation]) -> list[Row]:
    """One row per (station, UTC day), sorted (definitions in the module docstring)."""
    rows: list[Row] = []
    stations = _days(observations)
    for station in sorted(stations):
        for day, group in sorted(stations[station].items()):
            temps = [o.temperature_c for o in group]
            rows.append(
                {
                    "station_id": station,
                    "date": day.isoformat(),
                    "temperature_min_c": round(min(temps), 3),
                    "temperature_max_c": round(max(temps), 3),
                    "temperature_mean_c": round(_mean(temps), 3),
                    "precipitation_total_mm": round(
                        math.fsum(o.precipitation_mm for o in group), 3
                    ),
                    "humidity_mean_pct": round(_mean([o.humidity_pct for o in group]), 3),
                    "wind_speed_max_ms": round(max(o.wind_speed_ms for o in group), 3),
                    "observation_count": len(group),
                }
            )
    return rows


def anomalies(observations: Iterable[Observation]) -> list[Row]:
    """Anomalous (station, day) rows, sorted: ``|day mean - mu| > 3 sigma`` (population)."""
    rows: list[Row] = []
    stations = _days(observations)
    for station in sorted(stations):
        days = sorted(stations[station].items())
        means = [_mean([o.temperature_c for o in group]) for _, group in days]
        mu = _mean(means)
        sigma = math.sqrt(math.fsum((m - mu) ** 2 for m in means) / len(means))
        if sigma == 0:
            continue
        for (day, _), mean in zip(days, means, strict=True):
            if abs(mean - mu) > 3 * sigma:
                rows.append(
                    {
                        "station_id": station,
                        "date": day.isoformat(),
                        "temperature_mean_c": round(mean, 3),
                        "station_mean_c": round(mu, 3),
                        "station_std_c": round(sigma, 3),
                        "z_score": round((mean - mu) / sigma, 3),
                    }
                )
    return rows


def quality_report(parsed: ParsedWeather) -> dict[str, Any]:
    """The data-quality report: counts per file, per rejection kind, stations, days, anomalies."""
    rows = sum(stats.rows for stats in parsed.files.values())
    stations = _days(parsed.observations)
    return {
        "files": {
            name: {
                "format": s.format,
                "rows": s.rows,
                "valid": s.valid,
                "rejected": s.rejected,
                "units": s.units,
            }
            for name, s in sorted(parsed.files.items())
        },
        "rows": rows,
        "valid": len(parsed.observations),
        "rejected": len(parsed.rejected),
        "rejected_by_kind": count_kinds(parsed.rejected),
        "stations": len(stations),
        "station_days": sum(len(days) for days in stations.values()),
        "anomalies": len(anomalies(parsed.observations)),
    }
