"""The datasets ``feedvault query`` finds under a destination, as lazy Arrow datasets
(docs: lake.md#feedvault-query).

:func:`discover` turns a listing (``ObjectWriter.list``) into :class:`DatasetPlan` values:

* a data object is a ``.parquet``, ``.ndjson.gz`` or ``.ndjson.zst`` key; its dataset is the path
  between the destination's prefix and its first Hive segment (``key=value``), so
  ``trades/exchange=E/symbol=S/date=D/hour=H/w.ndjson.gz`` is in ``trades`` and
  ``compact/bars_1m/exchange=E/symbol=S/date=D/bars.parquet`` in ``compact/bars_1m``. A file
  outside any Hive segment named like its folder is that folder's dataset (a batch table
  ``{job}/{table}/{table}.parquet`` is ``{job}/{table}``); any other is a dataset of its own
  named with its extension (``{job}/{table}.parquet``, the batch layout before the lake, is
  ``{job}/{table}.parquet``, view ``{job}_{table}_parquet``), never merged with a folder's;
* NDJSON objects count only in ``trades`` and ``book`` datasets (the stream's records); other
  NDJSON (the raw capture, ``raw/``) and every other file (``.jsonl``, ``.csv``, reports) are
  left out, as are folders starting with ``_`` or ``.``, but ``_manifests/``: its ``*.json``
  run manifests are the ``manifests`` dataset, one row per run;
* a dataset's Hive keys have pinned types: ``exchange``/``symbol`` string, ``date`` date,
  ``hour`` int32, any other key string (a key whose values do not all parse is string).

:class:`ObjectDataset` is a ``pyarrow.dataset.FileSystemDataset`` whose fragments are
placeholders for the objects, each with its partition expression, so a scan's filter prunes them
with pyarrow's own partition logic and no I/O; :meth:`ObjectDataset.scanner` then fetches only the
objects left, through the caller's ``fetch`` (the project's own object store client, see
:mod:`feedvault.query`), and decodes them into the dataset's one schema:

* stream ``trades``/``book`` (any mix of NDJSON and Parquet objects): the Parquet columns of
  :mod:`sinks.parquet` (``price``/``size`` ``decimal128(38, 18)`` plus the exact
  ``price_text``/``size_text``, ``ts_event`` ``timestamp[us, UTC]``, ``ts_recv``
  ``timestamp[ns, UTC]``); an NDJSON object's fields are converted to them exactly as the Parquet
  encoder converts records (the decimal null where the text does not fit, the text kept);
* any other Parquet dataset (compact, the batch jobs' tables): the schema of its first object,
  whose column types every other object must have exactly (:func:`check_columns`: no cast,
  no Hive key inside a file), else the query fails naming the object;
* then the partition columns, from the path (or, when the path lacks one, from the file's own
  column or its ``feedvault.<field>`` metadata).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.json as pj
import pyarrow.parquet as pq

from engine.book_records import BOOK_DATASET, BOOK_FIELDS
from engine.records import TRADE_FIELDS
from sinks import parquet as stream_parquet
from sinks.encoders import GZIP, ZSTD, decompress
from sinks.writer import ListedObject

PARQUET_EXT: Final = ".parquet"
NDJSON_EXTS: Final = {f".{GZIP}": GZIP, f".{ZSTD}": ZSTD}
MANIFEST_DIR: Final = "_manifests"
MANIFESTS: Final = "manifests"
STREAM_DATASETS: Final = {"trades": TRADE_FIELDS, BOOK_DATASET: BOOK_FIELDS}
"""Datasets whose NDJSON objects are stream records, with the records' fields."""

PARTITION_TYPES: Final = {
    "exchange": pa.string(),
    "symbol": pa.string(),
    "date": pa.date32(),
    "hour": pa.int32(),
}
"""The pinned types of the Hive keys; any other key is a string."""

MANIFEST_SCHEMA: Final = pa.schema(
    [
        ("run_id", pa.string()),
        ("status", pa.string()),
        ("command", pa.string()),
        ("version", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("stopped_at", pa.timestamp("us", tz="UTC")),
        ("stop_reason", pa.string()),
        ("error", pa.string()),
        ("destination", pa.string()),
        ("objects", pa.int64()),
        ("records", pa.int64()),
        ("bytes", pa.int64()),
        ("manifest", pa.string()),
    ]
)
"""The ``manifests`` view: one row per run manifest; ``manifest`` is the whole JSON document
(DuckDB's ``->>`` operators read any field of it)."""

_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")

Fetch = Callable[[Sequence[str]], Iterator[tuple[str, bytes]]]
"""Bodies of the keys given, in order (fetched ahead as the caller sees fit)."""


@dataclass(frozen=True, slots=True)
class DataObject:
    """One object of a dataset: its key, format and Hive key values (as text)."""

    key: str
    format: str
    partition: dict[str, str]


@dataclass(slots=True)
class DatasetPlan:
    """A dataset found under the prefix: its path (relative to the prefix), view name and
    objects."""

    path: str
    objects: list[DataObject] = field(default_factory=list)
    name: str = ""

    @property
    def kind(self) -> str:
        """``manifests``, ``stream`` (trades/book records, any format) or ``parquet``."""
        last = self.path.rsplit("/", 1)[-1]
        if last == MANIFEST_DIR:
            return MANIFESTS
        if last in STREAM_DATASETS and (
            any(o.format != "parquet" for o in self.objects)
            or any("hour" in o.partition for o in self.objects)
        ):
            return "stream"
        return "parquet"

    @property
    def partition_schema(self) -> pa.Schema:
        """The Hive keys of the objects, in order of first appearance, with their types."""
        values: dict[str, set[str]] = {}
        for obj in self.objects:
            for name, value in obj.partition.items():
                values.setdefault(name, set()).add(value)
        return pa.schema([(name, _key_type(name, seen)) for name, seen in values.items()])


def _key_type(name: str, values: set[str]) -> pa.DataType:
    pinned = PARTITION_TYPES.get(name, pa.string())
    try:
        for value in values:
            _parse(value, pinned)
    except ValueError:
        return pa.string()
    return pinned


def _parse(value: str, type_: pa.DataType) -> Any:
    if type_ == pa.date32():
        return dt.date.fromisoformat(value)
    if type_ == pa.int32():
        return int(value)
    return value


def _object(relative: str, key: str) -> tuple[str, DataObject] | None:
    """The dataset path and object of a key (``relative`` to the prefix); None if no view
    reads it."""
    parts = relative.split("/")
    folders, name = parts[:-1], parts[-1]
    if folders and folders[-1] == MANIFEST_DIR:
        hidden = any(p.startswith((".", "_")) for p in folders[:-1])
        if hidden or not name.endswith(".json"):
            return None
        return "/".join(folders), DataObject(key, "json", {})
    if any(p.startswith((".", "_")) for p in folders):
        return None
    if name.endswith(PARQUET_EXT):
        format, stem = "parquet", name[: -len(PARQUET_EXT)]
    else:
        ext = next((e for e in NDJSON_EXTS if name.endswith(e)), None)
        if ext is None:
            return None
        format, stem = NDJSON_EXTS[ext], name[: -len(ext)]
    hive = next((i for i, p in enumerate(folders) if "=" in p), None)
    if hive is None:
        path = "/".join(folders)
        if not folders or folders[-1] != stem:
            path = f"{path}/{name}" if path else name
        partition: dict[str, str] = {}
    else:
        path = "/".join(folders[:hive])
        partition = dict(p.split("=", 1) for p in folders[hive:] if "=" in p)
    if not path:
        return None
    if format != "parquet" and path.rsplit("/", 1)[-1] not in STREAM_DATASETS:
        return None
    return path, DataObject(key, format, partition)


def view_name(path: str) -> str:
    """The view of a dataset path: ``/`` as ``_`` (``compact/bars_1m`` -> ``compact_bars_1m``);
    ``_manifests`` -> ``manifests``."""
    if path == MANIFEST_DIR:
        return MANIFESTS
    if path.endswith("/" + MANIFEST_DIR):
        path = path[: -len(MANIFEST_DIR)] + MANIFESTS
    return _IDENTIFIER.sub("_", path)


def discover(prefix: str, listed: Iterable[ListedObject]) -> dict[str, DatasetPlan]:
    """The datasets under ``prefix`` by view name. Each is named by :func:`view_name` of its
    path; a dataset whose last path segment no other dataset shares is ALSO reachable by that
    segment (``compact_bars_1m`` as ``bars_1m``): both names are keys of the result."""
    plans: dict[str, DatasetPlan] = {}
    for item in listed:
        if not item.key.startswith(prefix):
            continue
        found = _object(item.key[len(prefix) :], item.key)
        if found is not None:
            path, obj = found
            plans.setdefault(path, DatasetPlan(path)).objects.append(obj)
    views: dict[str, DatasetPlan] = {}
    for plan in plans.values():
        plan.name = view_name(plan.path)
        views[plan.name] = plan
    short: dict[str, list[DatasetPlan]] = {}
    for plan in plans.values():
        last = view_name(plan.path.rsplit("/", 1)[-1])
        short.setdefault(last, []).append(plan)
    for name, same in short.items():
        if len(same) == 1 and name not in views:
            views[name] = same[0]
    return views


# --- the Arrow side ------------------------------------------------------------------------


def stream_schema(kind: str, partition_names: Sequence[str]) -> pa.Schema:
    """The columns of a stream dataset's objects (:func:`sinks.parquet.schema`) without the
    dataset's partition keys."""
    file_schema = stream_parquet.schema(stream_parquet.record_kind(kind), {}, pa)
    return pa.schema([f for f in file_schema if f.name not in partition_names])


def _ndjson_table(body: bytes, format: str, fields: Sequence[str]) -> pa.Table:
    """An NDJSON object's records as the Parquet columns: decimals + text, timestamps."""
    text = decompress(body, format)
    types = {name: pa.string() for name in fields}
    types.update(ts_event=pa.int64(), ts_recv=pa.int64(), snapshot=pa.bool_())
    explicit = pa.schema([(name, types[name]) for name in fields])
    if not text.strip():
        return explicit.empty_table()
    options = pj.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="ignore")
    table = pj.read_json(pa.BufferReader(text), parse_options=options)
    columns: dict[str, Any] = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if name in ("price", "size"):
            columns[name] = stream_parquet.decimals(column, pa)
            columns[f"{name}_text"] = column
        elif name == "ts_event":
            columns[name] = column.cast(pa.timestamp("us", tz="UTC"))
        elif name == "ts_recv":
            columns[name] = column.cast(pa.timestamp("ns", tz="UTC"))
        else:
            columns[name] = column
    return pa.table(columns)


def _manifest_table(body: bytes) -> pa.Table:
    document = orjson.loads(body)
    if not isinstance(document, dict):
        raise ValueError("a manifest is not a JSON object")
    objects = document.get("objects") or []

    def moment(name: str) -> dt.datetime | None:
        value = document.get(name)
        return dt.datetime.fromisoformat(value) if isinstance(value, str) else None

    row = {
        "run_id": document.get("run_id"),
        "status": document.get("status"),
        "command": document.get("command"),
        "version": document.get("version"),
        "started_at": moment("started_at"),
        "stopped_at": moment("stopped_at"),
        "stop_reason": document.get("stop_reason"),
        "error": document.get("error"),
        "destination": document.get("destination"),
        "objects": len(objects),
        "records": sum(int(o.get("records", 0)) for o in objects),
        "bytes": sum(int(o.get("bytes", 0)) for o in objects),
        "manifest": body.decode(),
    }
    return pa.Table.from_pylist([row], schema=MANIFEST_SCHEMA)


def decode_object(plan: DatasetPlan, obj: DataObject, body: bytes) -> pa.Table:
    """One object's rows, before conforming to the dataset's schema."""
    if obj.format == "json":
        return _manifest_table(body)
    if obj.format == "parquet":
        parquet = pq.ParquetFile(pa.BufferReader(body), page_checksum_verification=True)
        return parquet.read()
    return _ndjson_table(body, obj.format, STREAM_DATASETS[plan.path.rsplit("/", 1)[-1]])


def conform(table: pa.Table, obj: DataObject, schema: pa.Schema, keys: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns: a partition key from the object's path
    first, else the file's column, else its ``feedvault.<name>`` metadata, else nulls; every
    column cast to its type (a cast that would lose data fails the query)."""
    rows = table.num_rows
    metadata = table.schema.metadata or {}
    columns = []
    for item in schema:
        name = item.name
        if name in obj.partition and name in keys.names:
            value = _parse(obj.partition[name], keys.field(name).type)
            columns.append(pa.repeat(pa.scalar(value, item.type), rows))
        elif name in table.column_names:
            column = table.column(name)
            columns.append(column if column.type == item.type else column.cast(item.type))
        elif (meta := metadata.get(f"{stream_parquet.META_PREFIX}{name}".encode())) is not None:
            columns.append(pa.repeat(pa.scalar(meta.decode()).cast(item.type), rows))
        else:
            columns.append(pa.nulls(rows, item.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _expression(obj: DataObject, keys: pa.Schema) -> ds.Expression:
    expression: ds.Expression = ds.scalar(True)
    for name, value in obj.partition.items():
        type_ = keys.field(name).type
        expression = expression & (ds.field(name) == pa.scalar(_parse(value, type_), type_))
    return expression


class ObjectUnreadable(ValueError):
    """An object of a view could not be decoded into the view's schema (corrupt, truncated, a
    page checksum that does not match, a column of another type); the message names its key."""


OLD_OUTPUTS: Final = (
    "an output of an older feedvault? recompute the dataset into a new OUTPUT_PREFIX, or "
    "delete the old outputs"
)


def check_columns(table: pa.Table, obj: DataObject, schema: pa.Schema, keys: pa.Schema) -> None:
    """:class:`ValueError` when the Parquet object ``table`` holds a column named like one of
    its own Hive keys, or a column of the dataset's (``schema`` without the Hive ``keys``) with
    another type. Each column of a Parquet dataset has one fixed type; the files that break
    that are compact outputs written before it was fixed (``exchange``/``symbol`` inside the
    files, a decimal scale per file), which a cast would mix in silently. A column missing
    from a file is NULL, one the dataset has not is left out (the book snapshots' levels
    depend on ``BOOK_SNAPSHOT_LEVELS``)."""
    inside = [name for name in obj.partition if name in table.column_names]
    if inside:
        raise ValueError(f"holds its Hive key(s) {', '.join(inside)} as columns: {OLD_OUTPUTS}")
    for item in schema:
        if item.name in keys.names or item.name not in table.column_names:
            continue
        found = table.schema.field(item.name).type
        if found != item.type:
            raise ValueError(
                f"column {item.name} is {found}, the view's is {item.type}: {OLD_OUTPUTS}"
            )


class ObjectDataset(ds.FileSystemDataset):  # type: ignore[misc]
    """A lazy dataset over stored objects: pruned by partition, fetched only when scanned.

    Built by :func:`object_dataset`. DuckDB scans a registered pyarrow dataset by calling
    ``scanner(columns=, filter=)`` with the predicates it pushes down; this one keeps the
    fragments whose partition expression the filter may satisfy, and returns a reader of the
    record batches of those objects alone, each object filtered (the whole filter, by pyarrow)
    and projected to ``columns`` (:class:`ObjectScan`). That is the protocol duckdb 2.0 scans a
    registered pyarrow dataset with (``type(dataset).scanner(dataset, columns=, filter=)``, then
    ``.to_reader()``); tests/test_query.py checks the pruning it gives."""

    plan: DatasetPlan
    fetch: Fetch
    partition_keys: pa.Schema

    def scanner(
        self, columns: list[str] | None = None, filter: ds.Expression | None = None, **_: Any
    ) -> ObjectScan:
        kept = self.get_fragments() if filter is None else self.get_fragments(filter=filter)
        keys = [fragment.path for fragment in kept]
        by_key = {obj.key: obj for obj in self.plan.objects}
        schema = self.schema
        projected = schema if columns is None else pa.schema([schema.field(c) for c in columns])

        def batches() -> Iterator[pa.RecordBatch]:
            for key, body in self.fetch(keys):
                obj = by_key[key]
                try:
                    table = decode_object(self.plan, obj, body)
                    if self.plan.kind == "parquet":
                        check_columns(table, obj, schema, self.partition_keys)
                    table = conform(table, obj, schema, self.partition_keys)
                except Exception as exc:  # the query fails naming the object
                    raise ObjectUnreadable(f"{key}: {exc}") from exc
                if filter is not None:
                    table = table.filter(filter)
                yield from table.select(projected.names).to_batches()

        return ObjectScan(pa.RecordBatchReader.from_batches(projected, batches()))


@dataclass(frozen=True, slots=True)
class ObjectScan:
    """What :meth:`ObjectDataset.scanner` returns: the one thing DuckDB asks of a scanner,
    ``to_reader()``. The reader pulls the objects only when its consumer asks for the next
    batch, on the consumer's thread (a pyarrow ``Scanner`` would read ahead on threads of its
    own, still running the generator when a ``LIMIT`` query has ended)."""

    reader: pa.RecordBatchReader

    def to_reader(self) -> pa.RecordBatchReader:
        return self.reader


def object_dataset(plan: DatasetPlan, fetch: Fetch) -> ObjectDataset:
    """The lazy dataset of ``plan``: its schema (fixed for stream datasets and manifests; a
    Parquet dataset's from its first object, one fetch) and one placeholder fragment per
    object."""
    keys = plan.partition_schema
    if plan.kind == MANIFESTS:
        columns = MANIFEST_SCHEMA
    elif plan.kind == "stream":
        columns = stream_schema(plan.path.rsplit("/", 1)[-1], keys.names)
    else:
        first = plan.objects[0]
        _, body = next(fetch([first.key]))
        try:
            file_schema = pq.read_schema(pa.BufferReader(body)).remove_metadata()
        except (pa.ArrowException, OSError) as exc:
            raise ObjectUnreadable(f"{first.key}: {exc}") from exc
        inside = [name for name in first.partition if name in file_schema.names]
        if inside:  # its schema is not the dataset's: fail on it, not on the current files
            held = ", ".join(inside)
            raise ObjectUnreadable(
                f"{first.key}: holds its Hive key(s) {held} as columns: {OLD_OUTPUTS}"
            )
        columns = pa.schema([f for f in file_schema if f.name not in keys.names])
    schema = pa.schema([*columns, *keys])
    fmt = ds.ParquetFileFormat()
    local = pa.fs.LocalFileSystem()
    fragments = [
        fmt.make_fragment(obj.key, local, partition_expression=_expression(obj, keys))
        for obj in plan.objects
    ]
    dataset = ObjectDataset(fragments, schema, fmt, local)
    dataset.plan = plan
    dataset.fetch = fetch
    dataset.partition_keys = keys
    return dataset
