"""``feedvault query URL "SQL" [--format table|csv|json]``: DuckDB, embedded, over a destination
(docs: lake.md#feedvault-query).

``URL`` is ``s3://bucket/prefix/`` or ``file:///dir/``, parsed like every other destination
(:func:`sinks.writer.parse_destination`). :func:`open_lake` lists it once with the project's own
object store client (``open_writer``: for S3 the client ``feedvault verify`` uses, so the same
endpoint resolution, ``AWS_ENDPOINT_URL_S3`` included, region, botocore credentials chain,
``S3_EXPECTED_BUCKET_OWNER``, deadlines and retries), finds the datasets under it
(:mod:`feedvault.query_datasets`) and registers each as a view of an in-memory DuckDB
connection: ``trades``, ``book``, ``manifests``, the compact job's ``bars_1m``,
``book_snapshots``... Every object a query reads is fetched with that same client, so nothing
else needs credentials or an endpoint of its own.

Why that route: DuckDB reads ``s3://`` only through its ``httpfs`` extension, which its wheel does
not link (it would be downloaded at run time); pyarrow's own S3 filesystem would need the
endpoint and credentials handed over, never sends the expected bucket owner, and Arrow's JSON
datasets do not take ``.zst`` for zstd. So the views are lazy Arrow datasets whose objects are
decoded here: DuckDB pushes its filters and projections into their scan, the
filter prunes the objects by their Hive keys (``exchange``, ``symbol``, ``date``, ``hour``) before
any is fetched, and only the objects left are fetched (:data:`PREFETCH` at a time) and decoded.
A query's memory is its own plus the objects being decoded, not the dataset.

Nothing is downloaded: the connection has ``autoinstall_known_extensions`` and
``autoload_known_extensions`` off from its creation, then ``enable_external_access`` off and the
configuration locked before the SQL runs: the SQL can read the views only (no file, no URL, no
``INSTALL``/``LOAD``, no ``COPY ... TO``); only the statically linked extensions (json,
parquet, icu, core_functions) exist. The session time zone is UTC.

Output (:func:`write_result`): ``table`` (aligned text, each cell at most :data:`CELL_WIDTH`
characters, numbers right-aligned, then the row count), ``csv`` (a header row, then RFC 4180
rows, empty for NULL) or ``json`` (JSON Lines: one object per row; integers, floats and booleans
as JSON values, decimals as exact strings, timestamps as ISO 8601 ``...Z`` strings). Decimals are
written without trailing zeros (``100.1``, not ``100.100000000000000000``) in every format.

Exit statuses (:func:`run`): 0 the query ran; 1 it failed (a SQL error, an unknown view, a
storage error), one line on stderr; 2 a usage error (a bad URL or format, the ``lake`` extra not
installed), raised as :class:`~engine.errors.ConfigError` for the CLI.
"""

from __future__ import annotations

import asyncio
import csv
import re
import sys
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar

from engine.errors import ConfigError, FeedvaultError, StorageError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from feedvault.query_datasets import DatasetPlan
    from sinks.writer import ObjectWriter

FORMATS: Final = ("table", "csv", "json")
INSTALL_HINT: Final = "pip install 'feedvault[lake]'"
PREFETCH: Final = 8
"""Objects fetched ahead of the one being decoded."""
CELL_WIDTH: Final = 40
"""Widest cell of the ``table`` format; longer text is cut and ends with ``…``."""
BATCH_ROWS: Final = 10_000
CONNECTION_CONFIG: Final = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
"""Given to ``duckdb.connect``: no extension is installed or loaded behind the SQL's back."""
CLOSE_TIMEOUT: Final = 10.0
"""Seconds :meth:`_IoLoop.close` waits for the ``file://`` I/O threads to finish."""

_T = TypeVar("_T")


class QueryFailed(Exception):
    """The query could not run or failed; the message is one line."""


class _IoLoop:
    """An event loop on a thread of its own, for the async object store client: DuckDB calls
    the datasets' scans from its own threads, which wait here for the bodies."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="feedvault-query-io", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        """Stop the loop and join its thread, after the loop's default executor (the
        ``asyncio_N`` threads ``file://`` I/O runs on) has shut down and joined its threads:
        nothing of the lake outlives :func:`open_lake`. The wait for the executor is bounded
        (:data:`CLOSE_TIMEOUT`): a read stuck in the filesystem (a hung NFS mount) is left to
        the interpreter's own exit, which joins executor threads."""
        done = asyncio.run_coroutine_threadsafe(self.loop.shutdown_default_executor(), self.loop)
        try:
            done.result(timeout=CLOSE_TIMEOUT)
        except TimeoutError:
            done.cancel()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@dataclass
class Lake:
    """An open destination: the DuckDB connection with its views, and what was fetched."""

    url: str
    connection: duckdb.DuckDBPyConnection
    views: dict[str, DatasetPlan]
    """The datasets found, by view name (an unambiguous short name included)."""
    fetched: list[str] = field(default_factory=list)
    """Keys of the objects fetched so far, in order (what pruning left)."""

    def describe_views(self) -> str:
        return ", ".join(sorted(self.views)) or "none"


def _modules() -> tuple[Any, Any]:
    try:
        import duckdb
        import pyarrow as pa
    except ImportError as exc:
        raise ConfigError(
            exc.name or "duckdb", f"is not installed; feedvault query needs it: {INSTALL_HINT}"
        ) from None
    return duckdb, pa


def one_line(message: str) -> str:
    """The first line of a (DuckDB) error message, without the Python traceback DuckDB appends
    when a view's scan raised."""
    first = message.strip().splitlines()[0] if message.strip() else message
    return first.split(" Detail: Python exception", 1)[0]


@contextmanager
def open_lake(url: str, sql: str | None = None) -> Iterator[Lake]:
    """Open ``url`` and register its datasets as views; closed on exit.

    With ``sql``, a Parquet dataset whose schema costs a fetch (its first object) is registered
    only if the SQL names it; without, every dataset is. :class:`ConfigError` for a bad URL or
    a missing ``lake`` extra; :class:`QueryFailed` when the listing fails."""
    duckdb, _ = _modules()
    from feedvault.query_datasets import discover, object_dataset
    from sinks.writer import open_writer, parse_destination

    destination = parse_destination(url, "URL")
    io = _IoLoop()
    stack = AsyncExitStack()
    connection = None
    try:

        async def opened() -> tuple[ObjectWriter, list[Any]]:
            writer = await stack.enter_async_context(open_writer(destination))
            return writer, await writer.list(destination.prefix)

        try:
            writer, listed = io.run(opened())
        except StorageError as exc:
            raise QueryFailed(f"cannot list {url}: {exc}") from exc
        views = discover(destination.prefix, listed)
        connection = duckdb.connect(config=dict(CONNECTION_CONFIG))
        lake = Lake(url, connection, views)

        def fetch(keys: Sequence[str]) -> Iterator[tuple[str, bytes]]:
            pending: list[tuple[str, Any]] = []
            remaining = iter(keys)
            try:
                while True:
                    while len(pending) < PREFETCH and (key := next(remaining, None)) is not None:
                        future = asyncio.run_coroutine_threadsafe(writer.get(key), io.loop)
                        pending.append((key, future))
                    if not pending:
                        return
                    key, future = pending.pop(0)
                    body: bytes = future.result()
                    lake.fetched.append(key)
                    yield key, body
            finally:
                for _, future in pending:
                    future.cancel()

        named = _named_tables(connection, sql)
        built: dict[int, Any] = {}
        for name, plan in views.items():
            if named is not None and plan.kind == "parquet" and name not in named:
                continue
            if id(plan) not in built:
                try:
                    built[id(plan)] = object_dataset(plan, fetch)
                except (ValueError, FeedvaultError) as exc:  # its first object, named
                    raise QueryFailed(one_line(str(exc))) from exc
            connection.register(name, built[id(plan)])
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
        yield lake
    finally:
        if connection is not None:
            connection.close()
        try:
            io.run(stack.aclose())
        finally:
            io.close()


def _named_tables(connection: Any, sql: str | None) -> set[str] | None:
    """The table names ``sql`` refers to; None (all of them) without SQL or when DuckDB cannot
    tell (it fails on the SQL later, with its own message)."""
    if sql is None:
        return None
    try:
        return set(connection.get_table_names(sql))
    except Exception:
        return None


_MISSING = re.compile(r"Table with name (\S+) does not exist")


def execute(lake: Lake, sql: str) -> pa.RecordBatchReader | None:
    """Run ``sql`` on the lake's views; its rows as a reader (None for a statement without
    rows). :class:`QueryFailed` with one line for any DuckDB error."""
    duckdb, _ = _modules()
    try:
        relation = lake.connection.sql(sql)
        if relation is None:
            return None
        reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
        result: pa.RecordBatchReader = reader(BATCH_ROWS)
        return result
    except duckdb.CatalogException as exc:
        missing = _MISSING.search(str(exc))
        if missing is None:
            raise QueryFailed(one_line(str(exc))) from exc
        raise QueryFailed(
            f"no dataset {missing.group(1)} under {lake.url} (views: {lake.describe_views()})"
        ) from exc
    except duckdb.Error as exc:
        raise QueryFailed(one_line(str(exc))) from exc


# --- output --------------------------------------------------------------------------------


def _is_number(type_: pa.DataType) -> bool:
    import pyarrow.types as pt

    return bool(pt.is_integer(type_) or pt.is_floating(type_) or pt.is_decimal(type_))


def _texts(column: pa.Array) -> list[str | None]:
    """A column's values as text: decimals without trailing zeros, timestamps ISO 8601."""
    import orjson
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pt

    type_ = column.type
    try:
        if pt.is_timestamp(type_):
            text = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S" + ("Z" if type_.tz else ""))
        elif pt.is_decimal(type_):
            return _decimal_texts(column)
        else:
            text = column.cast(pa.string())
        values: list[str | None] = text.to_pylist()
        return values
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return [
            None if v is None else orjson.dumps(v, default=str).decode() for v in column.to_pylist()
        ]


def plain_decimal(value: Decimal) -> str:
    """``value`` as a plain decimal number without trailing zeros: ``1E-18`` ->
    ``0.000000000000000001``, ``1.500`` -> ``1.5``, ``0E-18`` -> ``0``, ``1.0E+19`` ->
    ``10000000000000000000``. Exact (no context, no rounding)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _decimal_texts(column: pa.Array) -> list[str | None]:
    """A decimal column as :func:`plain_decimal` texts. Arrow's cast to string is exact but
    switches to scientific notation below 1e-6 (``1.0000000000E-8``, ``0E-18``) and keeps the
    scale's trailing zeros: the cast's plain texts are stripped of them by two vectorized
    regexes, and only the texts the cast wrote with an exponent are rebuilt from the value
    (:class:`decimal.Decimal`, exact)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = column.cast(pa.string())
    text = pc.replace_substring_regex(text, r"\.0*$", "")
    text = pc.replace_substring_regex(text, r"(\.[0-9]*[1-9])0+$", r"\1")
    values: list[str | None] = text.to_pylist()
    exponents = pc.indices_nonzero(pc.fill_null(pc.match_substring(text, "E"), False))
    for index in exponents.to_pylist():
        values[index] = plain_decimal(column[index].as_py())
    return values


def _json_values(column: pa.Array) -> list[Any]:
    import pyarrow.types as pt

    type_ = column.type
    if pt.is_integer(type_) or pt.is_floating(type_) or pt.is_boolean(type_):
        return list(column.to_pylist())
    if pt.is_string(type_) or pt.is_large_string(type_):
        return list(column.to_pylist())
    if pt.is_nested(type_):
        return list(column.to_pylist())
    return _texts(column)


def _cut(text: str) -> str:
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def write_result(reader: pa.RecordBatchReader | None, format: str, out: IO[str]) -> int:
    """Write the rows of ``reader`` to ``out`` in ``format`` (:data:`FORMATS`); the row count."""
    import orjson

    if reader is None:
        return 0
    names = list(reader.schema.names)
    rows = 0
    if format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        for batch in reader:
            columns = [_texts(column) for column in batch.columns]
            writer.writerows(zip(*columns, strict=True))
            rows += batch.num_rows
        return rows
    if format == "json":
        for batch in reader:
            columns = [_json_values(column) for column in batch.columns]
            for values in zip(*columns, strict=True):
                document = orjson.dumps(dict(zip(names, values, strict=True)), default=str)
                out.write(document.decode() + "\n")
            rows += batch.num_rows
        return rows
    right = [_is_number(f.type) for f in reader.schema]
    cells: list[list[str]] = []
    for batch in reader:
        columns = [_texts(column) for column in batch.columns]
        cells.extend(
            [_cut("NULL" if v is None else v) for v in row] for row in zip(*columns, strict=True)
        )
    header = [_cut(name) for name in names]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        padded = (
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        )
        return "  ".join(padded).rstrip()

    out.write(line(header) + "\n")
    out.write(line(["-" * w for w in widths]) + "\n")
    for row in cells:
        out.write(line(row) + "\n")
    out.write(f"({len(cells)} row{'' if len(cells) == 1 else 's'})\n")
    return len(cells)


def run(url: str, sql: str, format: str = "table", out: IO[str] | None = None) -> int:
    """``feedvault query``: 0 when the query ran, 1 (one stderr line) when it failed.
    :class:`ConfigError` for a usage error (bad URL or format, no ``lake`` extra)."""
    if format not in FORMATS:
        raise ConfigError("--format", f"{format!r} is not one of {', '.join(FORMATS)}")
    stream = sys.stdout if out is None else out
    duckdb, pa = _modules()
    try:
        with open_lake(url, sql) as lake:
            if not lake.views:
                raise QueryFailed(f"no dataset under {url}")
            try:
                write_result(execute(lake, sql), format, stream)
            except (duckdb.Error, pa.ArrowException, FeedvaultError, ValueError) as exc:
                raise QueryFailed(one_line(str(exc))) from exc  # while the rows were read
    except QueryFailed as exc:
        print(f"feedvault query: {exc}", file=sys.stderr)
        return 1
    return 0
