"""``FORMAT=parquet``: stream objects as Parquet files (docs: lake.md#formats).

An object of the ``trades`` or ``book`` dataset is one Parquet file, zstd-compressed (level 1 by
default), with the schema of docs/lake.md#formats. Its columns are the record's fields MINUS the
fields the key template renders as Hive path segments
(:attr:`~sinks.keys.KeyTemplate.hive_fields`; with the default template ``exchange`` and
``symbol``): a Hive-partitioned reader takes those from the
path (``exchange=.../symbol=...``), so a column of the same name inside the file would conflict
with them. Their values are kept in the file's key-value metadata (``feedvault.exchange``,
``feedvault.symbol``, unsanitized), so :func:`decode` re-adds them without parsing keys.

Prices and sizes are two columns each: ``price``/``size`` as ``decimal128(38, 18)`` (20 integer
digits and 18 places: every exchange's precision, one fixed type for every file) and
``price_text``/``size_text``, the exchange's exact text, always kept (a fixed-scale decimal
turns ``"0.1"`` into ``0.100000000000000000`` and loses the exchange's own spelling, which the
NDJSON formats keep). The decimals are made in one vectorized cast of the texts (:func:`decimals`);
a text that does not fit (more than 18 places, more than 20 integer digits, not a plain decimal
number) leaves its decimal null, its text still there.

Columns left out are exactly the fields the key template renders as Hive path segments
(``exchange={exchange}``, :attr:`~sinks.keys.KeyTemplate.hive_fields`): a template that puts a
field in the key otherwise (``{prefix}{dataset}/{exchange}/...``) or not at all keeps it as a
column, since a Hive reader would get it from nowhere else.

:class:`ParquetEncoder` has the interface of :class:`sinks.encoders.Encoder`. Records written
are buffered (references to them, about :data:`PENDING_ROW_BYTES` each in memory) and written as
one row group once the buffered rows' estimated memory reaches the budget of
:func:`rows_per_group`: ``min(ROW_GROUP_BYTES, max_bytes // 4)`` for a window of ``max_bytes``
(``WINDOW_MAX_BYTES``), so a large window gets row groups of 8,192 rows or more and a small one
holds no more than a quarter of its bound between batches; the last row group is written at
:meth:`ParquetEncoder.finish`. ``compressed_size`` is the bytes of the row groups written plus
an estimate for the buffered rows (their count times the stored bytes per row of the row groups
written so far, :data:`START_ROW_BYTES` before the first), so the windower sees a window grow
with every batch between row groups (when one is written its estimate gives way to its real
size, so the figure can step down; the windower compares it with the bound after each batch and
needs no monotony) and ``WINDOW_MAX_BYTES`` bounds it as it bounds an NDJSON window. The footer,
written at ``finish``, is counted as :data:`FOOTER_BYTES` plus :data:`FOOTER_CHUNK_BYTES` per
column per row group (about 1 KB per row group of trades). The estimate errs by what the
buffered rows' stored bytes and the footer differ from those averages: a few percent, since the
rows of one window are alike (docs: lake.md#formats).

pyarrow is imported only when a Parquet object is written or read: the base install has none
(``pip install 'feedvault[lake]'``), and asking for Parquet without it is a
:class:`~engine.errors.ConfigError` naming ``FORMAT``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from itertools import repeat
from operator import attrgetter
from typing import Any, Final

from engine.book_records import BOOK_DATASET, BOOK_FIELDS
from engine.errors import ConfigError, IntegrityError
from engine.records import TRADE_FIELDS

PARQUET: Final = "parquet"
INSTALL_HINT: Final = "pip install 'feedvault[lake]'"
DEFAULT_LEVEL: Final = 1
LEVELS: Final = range(1, 23)
#: The most memory the rows buffered for the next row group may take (estimated).
ROW_GROUP_BYTES: Final = 4 * 1024 * 1024
#: The estimated memory of one buffered record (a trade built by a connector: about 470 bytes
#: of Python objects, measured with tracemalloc; book rows are no larger).
PENDING_ROW_BYTES: Final = 512
#: The stored bytes per row assumed before the first row group is written (about 10.5 for
#: Binance-like trades in large row groups; a high guess closes a small window early, not late).
START_ROW_BYTES: Final = 32
#: The footer's bytes per column chunk (a row group's metadata for one column: about 1 KB per
#: row group of trades, measured), counted in ``compressed_size`` before the footer is written.
FOOTER_CHUNK_BYTES: Final = 120
#: The footer's bytes whatever the rows (the schema, Arrow's and feedvault's metadata: 1.4 KB).
FOOTER_BYTES: Final = 1536
DECIMAL_PRECISION: Final = 38
DECIMAL_SCALE: Final = 18
#: Key-value metadata: the record kind (``trade`` or ``book``) and ``feedvault.<field>`` for
#: each partition field left out of the columns.
META_PREFIX: Final = "feedvault."
RECORD_KEY: Final = b"feedvault.record"
TRADE_RECORD: Final = "trade"
BOOK_RECORD: Final = "book"

_DECIMAL_FIELDS: Final = ("price", "size")
_STRING_FIELDS: Final = frozenset({"exchange", "symbol", "raw_symbol", "trade_id", "side", "seq"})
_FIELDS: Final = {TRADE_RECORD: TRADE_FIELDS, BOOK_RECORD: BOOK_FIELDS}


def modules() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``; :class:`ConfigError` naming ``FORMAT`` when pyarrow is
    not installed."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            "FORMAT", f"parquet needs pyarrow, which is not installed: {INSTALL_HINT}"
        ) from None
    return pa, pq


def rows_per_group(max_bytes: int | None = None) -> int:
    """The rows buffered before they are written as one row group, in a window closed at
    ``max_bytes`` (None: no bound): as many as fit ``min(ROW_GROUP_BYTES, max_bytes // 4)`` at
    :data:`PENDING_ROW_BYTES` each, at least one (8,192 for a window of 16 MiB or more)."""
    budget = ROW_GROUP_BYTES if max_bytes is None else min(ROW_GROUP_BYTES, max_bytes // 4)
    return max(1, budget // PENDING_ROW_BYTES)


def record_kind(dataset: str) -> str:
    """The record kind of a dataset's objects: ``book`` rows for the book dataset, else trades."""
    return BOOK_RECORD if dataset == BOOK_DATASET else TRADE_RECORD


def columns_of(kind: str, partition_fields: Sequence[str]) -> tuple[str, ...]:
    """The record fields stored as columns (``price``/``size`` as decimals), in record order,
    then ``price_text`` and ``size_text``."""
    fields = tuple(f for f in _FIELDS[kind] if f not in partition_fields)
    return (*fields, "price_text", "size_text")


def schema(kind: str, partition: Mapping[str, str], pa: Any | None = None) -> Any:  # pyarrow.Schema
    """The file schema of ``kind`` records whose partition fields (left out of the columns,
    kept in the metadata) have the values ``partition``."""
    if pa is None:
        pa, _ = modules()
    decimal = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
    types = {
        "ts_event": pa.timestamp("us", tz="UTC"),
        "ts_recv": pa.timestamp("ns", tz="UTC"),
        "snapshot": pa.bool_(),
        "price": decimal,
        "size": decimal,
    }
    fields = [
        pa.field(name, types.get(name, pa.string())) for name in columns_of(kind, tuple(partition))
    ]
    metadata = {RECORD_KEY: kind.encode()}
    for name, value in partition.items():
        metadata[f"{META_PREFIX}{name}".encode()] = value.encode()
    return pa.schema(fields, metadata=metadata)


def decimals(texts: Any, pa: Any) -> Any:
    """``texts`` (a pyarrow string array) as ``decimal128(38, 18)``, null where a text is not
    a plain decimal number that fits that type exactly (:func:`fits`).

    One vectorized cast does the work. When it refuses a text, the batch is converted text by
    text with :func:`fits` instead (about 1 µs a text). pyarrow's cast refuses most texts that
    do not fit, but not all: a value of 10**20 or more that reaches the rescale
    (``"340282366920938463804"``, ``"1.7E+26"``) silently wraps around to another number. Such
    a text has more than 20 characters or an exponent, which a scan of the array's bytes tells
    cheaply; only then are those texts checked with :func:`fits`, and the wrong values made
    null."""
    decimal = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
    try:
        values = texts.cast(decimal)
    except pa.ArrowInvalid:
        return pa.array([fits(text) for text in texts.to_pylist()], decimal)
    if not _may_wrap(texts, pa):
        return values
    import pyarrow.compute as pc

    suspect = pc.or_(
        pc.greater(pc.binary_length(texts), 20),
        pc.or_(pc.match_substring(texts, "e"), pc.match_substring(texts, "E")),
    )
    wrong = [False] * len(texts)
    for index in pc.indices_nonzero(suspect).to_pylist():
        value = values[index].as_py()
        exact = fits(texts[index].as_py())
        wrong[index] = value is not None and (exact is None or value != exact)
    if not any(wrong):
        return values
    return pc.replace_with_mask(values, pa.array(wrong), pa.nulls(sum(wrong), decimal))


_PLAIN: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def fits(text: str | None) -> Decimal | None:
    """``text`` as an exact :class:`~decimal.Decimal` when it is a plain decimal number (ASCII
    digits, an optional sign, point and exponent) of at most 20 integer digits and 18 places
    (trailing zeros of the fraction aside), else None."""
    if text is None or not _PLAIN.fullmatch(text):
        return None
    value = Decimal(text)  # exact: construction does not round
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # a finite number
    if not any(digits):
        return Decimal(0)  # zero, whatever its exponent
    size = len(digits)
    while size > 1 and exponent < 0 and digits[size - 1] == 0:
        size, exponent = size - 1, exponent + 1
    if exponent < -DECIMAL_SCALE or size + exponent > DECIMAL_PRECISION - DECIMAL_SCALE:
        return None
    return value


def _may_wrap(texts: Any, pa: Any) -> bool:
    """Whether a text of ``texts`` is longer than 20 bytes or has an exponent."""
    if not len(texts):
        return False
    import pyarrow.compute as pc

    if pc.max(pc.binary_length(texts)).as_py() > 20:
        return True
    data = texts.buffers()[2]
    raw = data.to_pybytes() if data is not None else b""
    return b"e" in raw or b"E" in raw


#: Columns of few distinct values: dictionary-encoded.
_DICTIONARY: Final = frozenset({"exchange", "symbol", "raw_symbol", "side"})
#: Columns of rising or similar values: delta encodings (times; ids, prices and sizes as text).
_DELTA: Final = {
    "ts_event": "DELTA_BINARY_PACKED",
    "ts_recv": "DELTA_BINARY_PACKED",
    "trade_id": "DELTA_BYTE_ARRAY",
    "seq": "DELTA_BYTE_ARRAY",
    "price_text": "DELTA_BYTE_ARRAY",
    "size_text": "DELTA_BYTE_ARRAY",
}


def column_encodings(names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The writer's ``use_dictionary`` and ``column_encoding`` for the columns ``names``:
    dictionaries for the few-valued strings, delta encodings for times and the texts, PLAIN
    (then zstd) for the decimals and booleans. These are Parquet's standard encodings, read by
    pyarrow, DuckDB, Spark (3.3 and later) and Trino/Athena; on Binance-like trades they store
    less than half the bytes of dictionaries and PLAIN alone (docs: lake.md#formats)."""
    dictionary = [name for name in names if name in _DICTIONARY]
    encodings = {name: _DELTA[name] for name in names if name in _DELTA}
    return dictionary, encodings


class ParquetEncoder:
    """One Parquet object body being built. Not thread-safe; unusable after :meth:`finish`.

    Rows are buffered until ``row_group_rows`` are held (default :func:`rows_per_group` of
    ``max_bytes``, the window's ``WINDOW_MAX_BYTES``), then written as one row group (so a row
    group has at most ``row_group_rows`` plus one batch less one rows).

    ``compressed_size`` is the bytes of the row groups written so far plus ``pending_rows``
    times the stored bytes per row of those row groups (:data:`START_ROW_BYTES` before the
    first) plus the footer's estimated bytes: an estimate of the object's size were it finished
    now, which grows with every :meth:`write` between row groups and can step down when one is
    written (see the module docstring), and the exact body size after :meth:`finish`.
    ``raw_size`` is the in-memory (Arrow) bytes of the rows written as row groups so far;
    ``pending_rows`` the rows buffered for the next one."""

    format = PARQUET

    def __init__(
        self,
        *,
        kind: str,
        partition: Mapping[str, str],
        level: int = DEFAULT_LEVEL,
        max_bytes: int | None = None,
        row_group_rows: int | None = None,
    ) -> None:
        pa, pq = modules()
        self._pa = pa
        self._schema = schema(kind, partition, pa)
        self._names = list(self._schema.names)
        self._getters = {name: attrgetter(name) for name in _FIELDS[kind] if name in self._names}
        self._sink = pa.BufferOutputStream()
        dictionary, encodings = column_encodings(self._names)
        self._writer: Any = pq.ParquetWriter(
            self._sink,
            self._schema,
            compression="zstd",
            compression_level=level,
            write_page_checksum=True,
            use_dictionary=dictionary,
            column_encoding=encodings,
        )
        rows = row_group_rows
        self._rows = rows if rows is not None else rows_per_group(max_bytes)
        self._pending: list[Any] = []
        self._written_rows = 0
        self._written_bytes = 0
        self._groups = 0
        self._footer_group = FOOTER_CHUNK_BYTES * len(self._names)
        self.compressed_size = 0
        self.raw_size = 0

    @property
    def pending_rows(self) -> int:
        """The rows buffered for the next row group."""
        return len(self._pending)

    def write(self, records: Sequence[object]) -> None:
        """Buffer ``records`` (trades or book rows); write a row group once enough are held."""
        if self._writer is None:
            raise RuntimeError("encoder already finished")
        self._pending += records
        if len(self._pending) >= self._rows:
            self._flush()
        per_row = (
            self._written_bytes / self._written_rows if self._written_rows else START_ROW_BYTES
        )
        groups = self._groups + (1 if self._pending else 0)
        pending = int(len(self._pending) * per_row)
        footer = FOOTER_BYTES + groups * self._footer_group
        self.compressed_size = self._written_bytes + pending + footer

    def finish(self) -> bytes:
        """Write the buffered rows as the last row group, close the file, return its bytes."""
        if self._writer is None:
            raise RuntimeError("encoder already finished")
        self._flush()
        self._writer.close()
        self._writer = None
        body: bytes = self._sink.getvalue().to_pybytes()
        self.compressed_size = len(body)
        return body

    def _flush(self) -> None:
        records, self._pending = self._pending, []
        if not records:
            return
        table = self._table(records)
        self._writer.write_table(table, row_group_size=len(records))
        self.raw_size += table.nbytes
        self._written_rows += len(records)
        self._groups += 1
        self._written_bytes = self._sink.tell()

    def _table(self, records: Sequence[object]) -> Any:
        pa = self._pa
        columns: dict[str, Any] = {}
        for name, getter in self._getters.items():
            values = list(map(getter, records))
            if name in _DECIMAL_FIELDS:
                texts = pa.array(values, pa.string())
                columns[f"{name}_text"] = texts
                columns[name] = decimals(texts, pa)
            else:
                columns[name] = pa.array(values, self._schema.field(name).type)
        return pa.Table.from_arrays([columns[n] for n in self._names], schema=self._schema)


def decode(body: bytes) -> list[dict[str, object]]:
    """The records of a Parquet object as the NDJSON formats decode them: dicts with the
    record's fields in record order, ``price``/``size`` the exact text, ``ts_event``/``ts_recv``
    integer µs/ns, the partition fields from the metadata.

    :class:`IntegrityError` when the body is not a readable Parquet file (corrupt, truncated, a
    page checksum that does not match) or not one of feedvault's (no record kind, a field
    neither a column nor in the metadata)."""
    pa, pq = modules()
    try:
        table = pq.ParquetFile(pa.BufferReader(body), page_checksum_verification=True).read()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise IntegrityError(f"corrupt parquet data: {exc}") from exc
    metadata = table.schema.metadata or {}
    kind = metadata.get(RECORD_KEY, b"").decode(errors="replace")
    if kind not in _FIELDS:
        raise IntegrityError(f"not a feedvault parquet object (record kind {kind!r})")
    rows = table.num_rows
    names = set(table.column_names)
    columns: list[Any] = []
    for name in _FIELDS[kind]:
        column = f"{name}_text" if name in _DECIMAL_FIELDS else name
        if column in names:
            data = table.column(column)
            if name in ("ts_event", "ts_recv"):
                data = data.cast(pa.int64())
            columns.append(data.to_pylist())
            continue
        value = metadata.get(f"{META_PREFIX}{name}".encode())
        if value is None or name not in _STRING_FIELDS:
            raise IntegrityError(f"parquet object has no column or metadata for {name!r}")
        columns.append(repeat(value.decode(errors="replace"), rows))
    fields = _FIELDS[kind]
    return [dict(zip(fields, values, strict=True)) for values in zip(*columns, strict=False)]
