"""``compact``'s order books (docs: batch.md#order-books): book objects -> a day of rows and
top-N snapshots, per symbol and day. Pure (records in, bytes out); the job runs it through
``ctx.run_cpu``.

Which objects (:func:`plan_book_objects`). Book objects are the stream's
``{prefix}book/exchange=E/symbol=S/date=D/hour=H/{window_start}-{run_id}-{seq}.{ext}`` windows
(:func:`is_book_key`: a ``book`` folder in the key, wherever a ``KEY_TEMPLATE`` puts it):
those a stream or replay run's manifest lists (checked against its size and SHA-256 by the job),
and those under ``{prefix}book/`` that no manifest lists (a run killed before its manifest). An
object belongs to the UTC day of its window start (from its file name), so a day's rows are
whole objects, each of which begins with a snapshot: the day's rows rebuild on their own. An
object whose file name is not ``{window_start}-{run_id}-{seq}.{ext}`` cannot be placed in time
and is reported (``book-object-name`` in ``rejected.csv``), not read.

Order and overlapping runs. The objects of one *stream* (the key's folder without its time
segments: ``book/exchange=E/symbol=S``) are taken in window order, then sequence number. When
several runs wrote the same window of a stream (two recorders, a task replaced while its
predecessor still ran), the run whose objects of that window are the largest is kept (ties: the
smallest run id) and the others are skipped (counted in the book report): the kept windows
rebuild one book without interleaving two recordings, and switching run at a window boundary
is seamless because the next object begins with a snapshot.

Rows (:func:`parse_book_records`): each record must be a valid
:class:`~engine.book_records.BookLevel` with decimal ``price``/``size``; others are rejected
with their line. The day's rows of a symbol are written as they were applied, their exact text
kept (:data:`ROWS_SCHEMA`).

Snapshots (:class:`SymbolDay`): the book is rebuilt with
:class:`~engine.book_records.BookReplica` across the day's objects in order, and at every
instant ``t`` of the interval grid (multiples of the interval since midnight UTC, on the
``ts_recv`` axis) where the book is *known*, one row holds the best ``levels`` of each side
after every row with ``ts_recv <= t``. The book is known from the row that starts a book (a
snapshot) up to the last row of the same run before another run's object, or the end of the
day's objects; it is unknown before the first snapshot, from the last row of one run until the
snapshot that begins the next run's rows, and during each resync the run's manifest records for
the symbol (from its ``at`` until the snapshot that ends it). Instants while the book is unknown
have no row; the book report lists those spans.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from batch.compact import US_PER_DAY, check_partition_values
from batch.compact_report import parse_iso_us
from batch.csvutil import Rejected, RowError
from engine.book import decimal_of
from engine.book_records import BOOK_DATASET, BookLevel, BookReplica
from engine.errors import MalformedFrame
from sinks.keys import sanitize
from sinks.manifest import Manifest, StoredObjectEntry, iso_utc
from sinks.writer import ListedObject

BOOK_DIR: Final = f"{BOOK_DATASET}/"
NS_PER_DAY: Final = US_PER_DAY * 1000
NS_PER_MS: Final = 1_000_000
DEFAULT_SNAPSHOT_LEVELS: Final = 25
DEFAULT_SNAPSHOT_INTERVAL: Final = 1.0
"""Seconds between two snapshot instants (``BOOK_SNAPSHOT_INTERVAL``)."""
ROW_BATCH: Final = 65_536
"""Rows converted to Arrow at once (bounds the Python lists held per symbol)."""
MAX_REPORTED_SPANS: Final = 100

_NAME = re.compile(r"(?P<window>\d{8}T\d{6}Z)-(?P<run>.+)-(?P<seq>\d+)\.[A-Za-z0-9.]+")
_TIME_SEGMENT = re.compile(r"(?:date|hour|minute|year|month|day)=[^/]*")

TIMESTAMP_US: Final = pa.timestamp("us", tz="UTC")
TIMESTAMP_NS: Final = pa.timestamp("ns", tz="UTC")
ROWS_SCHEMA: Final = pa.schema(
    [
        ("raw_symbol", pa.string()),
        ("ts_event", TIMESTAMP_US),
        ("ts_recv", TIMESTAMP_NS),
        ("seq", pa.string()),
        ("snapshot", pa.bool_()),
        ("side", pa.string()),
        ("price", pa.string()),
        ("size", pa.string()),
    ]
)
"""The book rows' Parquet schema: the ``book`` dataset's fields but ``exchange`` and ``symbol``
(the key's ``exchange=E/symbol=S`` holds them: docs: lake.md#reading-the-datasets), timestamps
as UTC timestamps (``ts_event`` µs, ``ts_recv`` ns), ``price``/``size`` the exchange's exact
text, ``seq`` nullable."""


def snapshot_schema(levels: int) -> pa.Schema:
    """The snapshots' schema (exchange and symbol are in the key, not the file): the instant
    and what it was computed from, the depth of each side, then per level ``i`` (0 = best)
    ``bid_price_i``, ``bid_size_i``, ``ask_price_i``, ``ask_size_i`` as float64 (null where
    the side has fewer levels)."""
    columns: list[tuple[str, pa.DataType]] = [
        ("ts", TIMESTAMP_NS),
        ("last_ts_event", TIMESTAMP_US),
        ("last_ts_recv", TIMESTAMP_NS),
        ("last_seq", pa.string()),
        ("bid_levels", pa.int64()),
        ("ask_levels", pa.int64()),
    ]
    for i in range(levels):
        for side in ("bid", "ask"):
            columns += [(f"{side}_price_{i}", pa.float64()), (f"{side}_size_{i}", pa.float64())]
    return pa.schema(columns)


# -- which objects ------------------------------------------------------------------------


def is_book_key(prefix: str, key: str) -> bool:
    """An object of the book dataset: a folder of its key below ``prefix`` is ``book`` (the
    ``{dataset}`` of the key template; ``{prefix}book/...`` with the default one)."""
    if not key.startswith(prefix):
        return False
    return BOOK_DATASET in key[len(prefix) :].split("/")[:-1]


@dataclass(frozen=True, slots=True)
class BookSource:
    """A book object to read: ``stream`` is its key's folder without time segments,
    ``window`` its window start (``YYYYMMDDTHHMMSSZ``), ``day`` that window's UTC day (days
    since the epoch), ``size`` its bytes; ``entry`` its manifest entry (None: unlisted)."""

    key: str
    run_id: str
    entry: StoredObjectEntry | None
    stream: str
    window: str
    seq: int
    size: int
    day: int


def book_source(
    prefix: str, key: str, size: int, run_id: str | None, entry: StoredObjectEntry | None
) -> BookSource | None:
    """``key`` as a :class:`BookSource`, or None when its file name has no window start."""
    folder, _, name = key[len(prefix) :].rpartition("/")
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    try:
        start = dt.datetime.strptime(match.group("window"), "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None
    day = (start.date() - dt.date(1970, 1, 1)).days
    stream = "/".join(s for s in folder.split("/") if s and not _TIME_SEGMENT.fullmatch(s))
    return BookSource(
        key,
        run_id if run_id is not None else match.group("run"),
        entry,
        stream,
        match.group("window"),
        int(match.group("seq")),
        size,
        day,
    )


@dataclass(slots=True)
class BookPlan:
    """The objects to read, in order (day, stream, window, seq); the ones skipped because
    another run's copy of their window was kept; the keys that could not be placed."""

    sources: list[BookSource] = field(default_factory=list)
    skipped: list[BookSource] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)


def plan_book_objects(
    prefix: str,
    manifests: Sequence[Manifest],
    listed: Iterable[ListedObject],
    first_day: int,
    last_day: int,
) -> BookPlan:
    """The book objects of days ``first_day``..``last_day``; see the module docstring.
    ``manifests`` must be stream or replay runs' (the caller filters them); ``listed`` is the
    listing under ``{prefix}book/``."""
    found: dict[str, BookSource | None] = {}
    for manifest in sorted(manifests, key=lambda m: m.run_id):
        for entry in manifest.objects:
            if entry.key in found or not is_book_key(prefix, entry.key):
                continue
            found[entry.key] = book_source(prefix, entry.key, entry.bytes, manifest.run_id, entry)
    for obj in listed:
        if obj.key not in found and not obj.key.endswith("/") and is_book_key(prefix, obj.key):
            found[obj.key] = book_source(prefix, obj.key, obj.size, None, None)
    plan = BookPlan()
    windows: dict[tuple[str, str], dict[str, list[BookSource]]] = {}
    for key, source in sorted(found.items()):
        if source is None:
            plan.unplaced.append(key)
        elif first_day <= source.day <= last_day:
            runs = windows.setdefault((source.stream, source.window), {})
            runs.setdefault(source.run_id, []).append(source)
    for runs in windows.values():
        kept = min(runs, key=lambda run: (-sum(s.size for s in runs[run]), run))
        for run, sources in runs.items():
            (plan.sources if run == kept else plan.skipped).extend(sources)
    plan.sources.sort(key=lambda s: (s.day, s.stream, s.window, s.seq, s.key))
    plan.skipped.sort(key=lambda s: s.key)
    return plan


def unplaced_rejection(key: str) -> Rejected:
    return Rejected(
        key,
        0,
        "",
        "book-object-name",
        "book-object-name: the file name is not {window_start}-{run_id}-{seq}.{ext}, so the "
        "object cannot be placed in time; not read",
    )


# -- rows -----------------------------------------------------------------------------------


def parse_book_records(
    source: str, records: Sequence[Mapping[str, Any]]
) -> tuple[list[BookLevel], list[Rejected]]:
    """The valid book rows of one object (``source`` is its key) and its rejected lines
    (1-based): not a book row (``bad-book-row``), a price or size that is not a finite
    non-negative decimal (``bad-decimal``), or an exchange or symbol that is not a key-safe
    name (``bad-partition-value``, see :func:`batch.compact.check_partition_values`)."""
    rows: list[BookLevel] = []
    rejected: list[Rejected] = []
    for number, record in enumerate(records, start=1):
        try:
            row = BookLevel.from_dict(record if isinstance(record, dict) else dict(record))
            decimal_of(row.price, "price")
            decimal_of(row.size, "size")
            check_partition_values(record)
        except RowError as exc:
            rejected.append(_rejected(source, number, record, exc.kind, exc.detail))
            continue
        except ValueError as exc:
            rejected.append(_rejected(source, number, record, "bad-book-row", str(exc)))
            continue
        except MalformedFrame as exc:
            rejected.append(_rejected(source, number, record, "bad-decimal", str(exc)))
            continue
        rows.append(row)
    return rows, rejected


def _rejected(
    source: str, number: int, record: Mapping[str, Any], kind: str, detail: str
) -> Rejected:
    raw = json.dumps(record, ensure_ascii=False, default=repr)
    return Rejected(source, number, raw, kind, f"{kind}: {detail}")


def ceil_to(value: int, step: int) -> int:
    """The smallest multiple of ``step`` at or above ``value``."""
    return -(-value // step) * step


@dataclass(slots=True)
class DayStats:
    """What one symbol-day's book outputs hold, for the book report."""

    rows: int = 0
    objects: int = 0
    runs: list[str] = field(default_factory=list)
    snapshots: int = 0
    books_started: int = 0
    resyncs: int = 0
    known: list[tuple[int, int]] = field(default_factory=list)
    """The ns spans (inclusive) in which the book was known, in order."""


class SymbolDay:
    """One symbol's book on one UTC day: its rows as Parquet, and top-``levels`` snapshots
    every ``interval_ns`` (``levels`` 0: none). Feed it each object's rows in order with
    :meth:`add`, then call :meth:`finish`. Not thread-safe."""

    def __init__(
        self, exchange: str, symbol: str, day: int, *, levels: int, interval_ns: int
    ) -> None:
        if interval_ns <= 0 or NS_PER_DAY % interval_ns:
            raise ValueError("the interval must divide a day")
        self.exchange = exchange
        self.symbol = symbol
        self.day = day
        self.levels = levels
        self.interval_ns = interval_ns
        self.stats = DayStats()
        self._start = day * NS_PER_DAY
        self._end = self._start + NS_PER_DAY
        self._next = self._start
        self._run: str | None = None
        self._replica = BookReplica()
        self._known_from: int | None = None
        self._breaks: list[int] = []
        self._resyncing = False
        self._last: BookLevel | None = None
        self._rows: list[BookLevel] = []
        self._rows_sink = pa.BufferOutputStream()
        self._rows_writer = pq.ParquetWriter(
            self._rows_sink, ROWS_SCHEMA, compression="zstd", write_page_checksum=True
        )
        self._schema = snapshot_schema(levels)
        self._snaps: list[list[Any]] = [[] for _ in self._schema.names]
        self._snaps_sink = pa.BufferOutputStream()
        self._snaps_writer = pq.ParquetWriter(
            self._snaps_sink, self._schema, compression="zstd", write_page_checksum=True
        )

    def add(self, run_id: str, rows: Sequence[BookLevel], breaks: Iterable[int] = ()) -> None:
        """The rows of this symbol in one object of run ``run_id``, in order. An object of
        another run than the previous one ends the book known so far (see the module
        docstring). ``breaks``: the receive times (ns) at which the run's manifest says this
        symbol's book broke (its resyncs' ``at``); read at the run's first object."""
        self.stats.objects += 1
        if run_id != self._run:
            self._end_known()
            self._replica = BookReplica()
            self._run = run_id
            self._breaks = sorted((b for b in breaks if self._start <= b < self._end), reverse=True)
            self._resyncing = False
            self.stats.runs.append(run_id)
        self._apply(rows)
        self._rows.extend(rows)
        self.stats.rows += len(rows)
        if len(self._rows) >= ROW_BATCH:
            self._flush_rows()

    def _apply(self, rows: Sequence[BookLevel]) -> None:
        replica = self._replica
        step = self.interval_ns
        emit = self.levels > 0
        breaks = self._breaks
        for row in rows:
            received = row.ts_recv
            if breaks and breaks[-1] <= received:
                self._break(breaks[-1])
                while breaks and breaks[-1] <= received:
                    breaks.pop()
            if self._known_from is not None:
                while emit and self._next < received and self._next < self._end:
                    self._emit(self._next)
                    self._next += step
            elif self._next < received:
                self._next = ceil_to(received, step)
            previous = self._last
            if replica.apply(row):
                self.stats.books_started += 1
                restated = previous is not None and previous.message == row.message
                if self._known_from is None and not (self._resyncing and restated):
                    self._known_from = received
                    self._resyncing = False
            self._last = row

    def _break(self, at: int) -> None:
        """The book broke at ``at`` (a resync): unknown until a snapshot that is not a
        restatement of the book before the break starts a new book."""
        self.stats.resyncs += 1
        self._resyncing = True
        if self._known_from is None:
            return
        while self.levels and self._next < at and self._next < self._end:
            self._emit(self._next)
            self._next += self.interval_ns
        self.stats.known.append((self._known_from, at - 1))
        self._known_from = None

    def _end_known(self) -> None:
        """The book stops being known after the last row applied."""
        last = self._last
        if self._known_from is None or last is None:
            return
        while self.levels and self._next <= last.ts_recv and self._next < self._end:
            self._emit(self._next)
            self._next += self.interval_ns
        self.stats.known.append((self._known_from, last.ts_recv))
        self._known_from = None

    def _emit(self, instant: int) -> None:
        last = self._last
        assert last is not None  # known implies a row was applied
        book = self._replica.book(self.exchange, self.symbol)
        columns = self._snaps
        values: list[Any] = [
            instant,
            last.ts_event,
            last.ts_recv,
            last.seq,
            book.depth("bid"),
            book.depth("ask"),
        ]
        bids = book.levels("bid", self.levels)
        asks = book.levels("ask", self.levels)
        for i in range(self.levels):
            for side in (bids, asks):
                if i < len(side):
                    values += (float(side[i].price), float(side[i].size))
                else:
                    values += (None, None)
        for column, value in zip(columns, values, strict=True):
            column.append(value)
        self.stats.snapshots += 1
        if len(columns[0]) >= ROW_BATCH // 8:
            self._flush_snapshots()

    def _flush_rows(self) -> None:
        rows = self._rows
        if not rows:
            return
        arrays = [
            pa.array([r.raw_symbol for r in rows], pa.string()),
            pa.array([r.ts_event for r in rows], TIMESTAMP_US),
            pa.array([r.ts_recv for r in rows], TIMESTAMP_NS),
            pa.array([r.seq for r in rows], pa.string()),
            pa.array([r.snapshot for r in rows], pa.bool_()),
            pa.array([r.side for r in rows], pa.string()),
            pa.array([r.price for r in rows], pa.string()),
            pa.array([r.size for r in rows], pa.string()),
        ]
        self._rows_writer.write_table(pa.Table.from_arrays(arrays, schema=ROWS_SCHEMA))
        self._rows = []

    def _flush_snapshots(self) -> None:
        columns = self._snaps
        if not columns[0]:
            return
        arrays = [
            pa.array(values, type_)
            for values, type_ in zip(columns, self._schema.types, strict=True)
        ]
        self._snaps_writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        self._snaps = [[] for _ in self._schema.names]

    def finish(self) -> list[tuple[str, bytes, int]]:
        """The outputs ``(relative key, body, rows)``: ``book/...book.parquet`` and, with
        ``levels`` above 0, ``book_snapshots/...book_snapshots.parquet``."""
        self._end_known()
        self._flush_rows()
        self._rows_writer.close()
        date = (dt.date(1970, 1, 1) + dt.timedelta(days=self.day)).isoformat()
        partition = f"exchange={sanitize(self.exchange)}/symbol={sanitize(self.symbol)}/date={date}"
        outputs = [
            (
                f"book/{partition}/book.parquet",
                self._rows_sink.getvalue().to_pybytes(),
                self.stats.rows,
            )
        ]
        self._flush_snapshots()
        self._snaps_writer.close()
        if self.levels:
            outputs.append(
                (
                    f"book_snapshots/{partition}/book_snapshots.parquet",
                    self._snaps_sink.getvalue().to_pybytes(),
                    self.stats.snapshots,
                )
            )
        return outputs

    def unknown(self) -> list[tuple[int, int]]:
        """The ns spans ``[from, to)`` of the day in which the book was not known."""
        holes: list[tuple[int, int]] = []
        cursor = self._start
        for low, high in self.stats.known:
            if low > cursor:
                holes.append((cursor, min(low, self._end)))
            cursor = max(cursor, high + 1)
        if cursor < self._end:
            holes.append((cursor, self._end))
        return [(low, high) for low, high in holes if high > low]

    def report(self) -> dict[str, Any]:
        """This symbol-day's entry of the book report."""
        holes = self.unknown()
        return {
            "rows": self.stats.rows,
            "objects": self.stats.objects,
            "runs": sorted(set(self.stats.runs)),
            "books_started": self.stats.books_started,
            "resyncs": self.stats.resyncs,
            "snapshots": self.stats.snapshots,
            "unknown_seconds": round(sum(high - low for low, high in holes) / 1e9, 3),
            "unknown": [
                {"from": iso_utc(low), "to": iso_utc(high)}
                for low, high in holes[:MAX_REPORTED_SPANS]
            ],
            "unknown_spans": len(holes),
        }


def resync_breaks(manifests: Iterable[Manifest]) -> dict[tuple[str, str, str], list[int]]:
    """``(run_id, exchange, raw_symbol)`` -> the ``at`` (ns) of each resync the run's manifest
    records for that book stream (``exchange:RAW_SYMBOL:book``); unreadable times skipped."""
    breaks: dict[tuple[str, str, str], list[int]] = {}
    for manifest in manifests:
        for name, resyncs in manifest.resyncs.items():
            exchange, _, rest = name.partition(":")
            raw_symbol, _, channel = rest.rpartition(":")
            if channel != BOOK_DATASET or not raw_symbol:
                continue
            for resync in resyncs:
                at = parse_iso_us(resync["at"])
                if at is not None:
                    breaks.setdefault((manifest.run_id, exchange, raw_symbol), []).append(at * 1000)
    return breaks


def interval_ns(seconds: float) -> int | None:
    """``seconds`` as whole nanoseconds when it is a whole number of milliseconds that
    divides a day, else None."""
    millis = round(seconds * 1000)
    if millis <= 0 or not math.isclose(millis, seconds * 1000, abs_tol=1e-6):
        return None
    if NS_PER_DAY % (millis * NS_PER_MS):
        return None
    return millis * NS_PER_MS
