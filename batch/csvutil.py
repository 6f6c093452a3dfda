"""Shared pure helpers of the batch jobs: reading CSV bytes, rejections, deterministic outputs.

Everything here is pure (bytes in, objects or bytes out): no I/O, no clock, so the runner can call
it in a worker through ``run_cpu``.

Reading (``read_csv``):

* the bytes must be UTF-8 (a leading BOM is dropped); anything else raises :class:`InputError`;
* an empty file (no bytes, or only whitespace) raises :class:`InputError`; a header with no rows
  is valid and yields no records;
* the first non-blank line is the header; header names are stripped; a duplicate name raises;
* quoting is RFC 4180 (``csv`` strict mode): an unterminated quote or text after a closing quote
  makes the whole file malformed and raises :class:`InputError` naming the line;
* blank lines are skipped; every other record keeps its 1-based ``row_number`` (the physical line
  where it starts, the header being line 1 of a file without leading blank lines) and its
  ``raw_line`` (the record's text, without the line ending).

Outputs:

* :func:`to_jsonl` writes one compact JSON object per row, keys in the row's own order, rows sorted
  by their encoded bytes, so the same rows in any order give byte-identical output. ``Decimal``
  values are written as exact strings in fixed-point notation (``"12.5000"``), never as floats.
* :func:`to_parquet` writes the same rows, in the same order, with a given pyarrow schema (decimal
  columns as ``decimal128``); for one pyarrow version the bytes are identical for the same rows.
* :func:`table_outputs` puts a table's Parquet file in a folder of its own,
  ``{stem}/{stem}.parquet``, so the folder is a dataset (``pyarrow.parquet.read_table(folder)``,
  a Glue table's location: docs: lake.md#reading-the-datasets); the ``.jsonl`` stays beside it.
* :func:`rejected_csv` writes the rejected rows, sorted by (source, row_number).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import FeedvaultError

Value = str | int | float | bool | Decimal | None
Row = Mapping[str, Value]

_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


class InputError(FeedvaultError):
    """An input file that cannot be read as a whole (not its single bad rows, which are rejected).

    ``str(err)`` is one line: ``"orders-1.csv: line 3: unterminated quoted field"``.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Rejected:
    """One rejected input row.

    ``kind`` is a short stable label (``"missing-field"``, ``"duplicate-id"``, ...) for counting;
    ``reason`` is one human-readable line starting with the kind.
    """

    source: str
    row_number: int
    raw_line: str
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class Record:
    """One CSV record: its line number, its raw text and its fields, each stripped of blanks."""

    row_number: int
    raw_line: str
    fields: list[str]


class RowError(Exception):
    """Raised by a row validator; turned into a :class:`Rejected` by the job's parser."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail

    def rejected(self, source: str, row_number: int, raw_line: str) -> Rejected:
        """This error as the rejection of one row."""
        return Rejected(source, row_number, raw_line, self.kind, str(self))


def decode(source: str, data: bytes) -> str:
    """``data`` as text: UTF-8, BOM dropped. Raises :class:`InputError` if empty or not UTF-8."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(source, f"not UTF-8 (invalid byte at offset {exc.start})") from exc
    if not text.strip():
        raise InputError(source, "empty file")
    return text


def read_csv(source: str, data: bytes) -> tuple[list[str], list[Record]]:
    """The header names and the records of one CSV file (see the module docstring)."""
    lines = io.StringIO(decode(source, data), newline="").readlines()
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    records: list[Record] = []
    while True:
        start = reader.line_num
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputError(source, f"line {start + 1}: malformed CSV ({exc})") from exc
        fields = [field.strip() for field in fields]
        if not fields or fields == [""]:
            continue
        if header is None:
            header = fields
            _check_header(source, header)
            continue
        raw = "".join(lines[start : reader.line_num]).rstrip("\r\n")
        records.append(Record(start + 1, raw, fields))
    if header is None:  # pragma: no cover - decode() already refused blank text
        raise InputError(source, "empty file")
    return header, records


def _check_header(source: str, header: list[str]) -> None:
    seen: set[str] = set()
    for name in header:
        if not name:
            raise InputError(source, "header has an empty column name")
        if name in seen:
            raise InputError(source, f"header names {name!r} twice")
        seen.add(name)


def require_header(source: str, header: Sequence[str], expected: Sequence[str]) -> list[int]:
    """Positions of ``expected`` columns in ``header``; any order, no extra or missing column.

    Raises :class:`InputError` listing the missing and unexpected names.
    """
    missing = [name for name in expected if name not in header]
    extra = [name for name in header if name not in expected]
    if missing or extra:
        problems = []
        if missing:
            problems.append("missing " + ", ".join(missing))
        if extra:
            problems.append("unexpected " + ", ".join(extra))
        raise InputError(
            source, f"wrong header ({'; '.join(problems)}); expected {','.join(expected)}"
        )
    return [list(header).index(name) for name in expected]


def parse_decimal(field: str, text: str) -> Decimal:
    """``text`` as an exact Decimal (plain notation only: no exponent, NaN or infinity)."""
    if not _DECIMAL.fullmatch(text):
        raise RowError("bad-decimal", f"{field} is not a decimal number: {text!r}")
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only valid text
        raise RowError("bad-decimal", f"{field} is not a decimal number: {text!r}") from exc


def decimal_places(value: Decimal) -> int:
    """Number of fractional digits written in ``value`` (``Decimal("1.50")`` -> 2)."""
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_row(row: Row) -> bytes:
    """One row as a compact JSON line (no newline); Decimals as exact strings."""
    return json.dumps(
        row, default=_json_default, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode("utf-8")


def sort_rows(rows: Iterable[Row]) -> list[Row]:
    """``rows`` in the output order: ascending by their encoded JSON line."""
    return [row for _, row in sorted(((encode_row(row), row) for row in rows), key=_first)]


def _first(pair: tuple[bytes, Row]) -> bytes:
    return pair[0]


def to_jsonl(rows: Iterable[Row]) -> bytes:
    """JSON lines, one per row, sorted by their bytes, each ending with ``\\n``."""
    return b"".join(sorted(encode_row(row) + b"\n" for row in rows))


def table_outputs(stem: str, rows: Sequence[Row], schema: Any) -> list[tuple[str, bytes, int]]:
    """One table as a job's two outputs, ``(key, body, records)``: ``{stem}.jsonl``
    (:func:`to_jsonl`) and ``{stem}/{stem}.parquet`` (:func:`to_parquet` with ``schema``; the
    folder holds nothing else, so it reads as one dataset)."""
    return [
        (f"{stem}.jsonl", to_jsonl(rows), len(rows)),
        (parquet_key(stem), to_parquet(rows, schema), len(rows)),
    ]


def parquet_key(stem: str) -> str:
    """The relative key of table ``stem``'s Parquet output: ``{stem}/{stem}.parquet``."""
    return f"{stem}/{stem}.parquet"


def to_json(document: Mapping[str, Any]) -> bytes:
    """A report as indented JSON with sorted keys and a final newline (deterministic)."""
    text = json.dumps(
        document,
        default=_json_default,
        ensure_ascii=False,
        allow_nan=False,
        indent=2,
        sort_keys=True,
    )
    return (text + "\n").encode("utf-8")


def to_parquet(rows: Iterable[Row], schema: Any) -> bytes:
    """The rows as one Parquet file (zstd), in :func:`sort_rows` order, typed by ``schema``."""
    table = pa.Table.from_pylist([dict(row) for row in sort_rows(rows)], schema=schema)
    return parquet_bytes(table)


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as one Parquet file (zstd, page checksums): the bytes of every Parquet output."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_page_checksum=True)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def rejected_csv(rejected: Iterable[Rejected]) -> bytes:
    """Rejected rows as CSV ``source,row_number,kind,reason,raw_line``, by (source, row)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["source", "row_number", "kind", "reason", "raw_line"])
    for item in sorted(rejected, key=lambda r: (r.source, r.row_number, r.kind, r.raw_line)):
        writer.writerow([item.source, item.row_number, item.kind, item.reason, item.raw_line])
    return out.getvalue().encode("utf-8")


def count_kinds(rejected: Iterable[Rejected]) -> dict[str, int]:
    """Number of rejections per kind, keys sorted."""
    counts: dict[str, int] = {}
    for item in rejected:
        counts[item.kind] = counts.get(item.kind, 0) + 1
    return dict(sorted(counts.items()))


def parse_timestamp(field: str, text: str) -> dt.datetime:
    """An ISO 8601 date-time *with* a zone (``Z`` or an offset), returned in UTC.

    A date alone, or a date-time without a zone, is a ``bad-timestamp`` :class:`RowError`.
    """
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RowError("bad-timestamp", f"{field} is not an ISO 8601 time: {text!r}") from None
    if len(text) <= 10 or value.tzinfo is None or value.utcoffset() is None:
        raise RowError("bad-timestamp", f"{field} has no time zone: {text!r}")
    return value.astimezone(dt.UTC)
