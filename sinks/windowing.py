"""Windowing (docs: architecture.md): group trades into windows, closed by time, bytes or records.

Pure: no asyncio, no I/O; time comes from the injected :class:`~engine.clock.Clock`.

A record's window is chosen by its *partition* (the key template's partition fields, e.g.
exchange and symbol) and its *slot*, ``ts_recv // (seconds * 1e9)``: slots are aligned to
wall-clock multiples of ``seconds``, so with 60 s a window opened at 12:00:37 closes at 12:01:00.
A record that arrives after its slot has ended by the clock (it waited in the queue across a
window boundary) goes into the current slot instead: a late record never re-opens a window that
was already closed, so a backlog at a boundary cannot turn into a burst of tiny objects.
A window closes, whichever comes first, when

- its slot has ended by ``clock.time_ns()`` (checked by :meth:`Windower.add` and
  :meth:`Windower.due`),
- it holds ``max_records`` records (a batch is split exactly at the limit), or
- its compressed size reaches ``max_bytes`` (checked after each batch chunk, so a window may
  exceed it by one chunk plus what the compressor buffers; with Parquet, by the error of the
  estimate for the rows buffered for the next row group and the file's footer, docs:
  lake.md#formats).

Each partition has a sequence number starting at 0 and incremented each time one of its windows
opens; with the run id it makes every key of a run deterministic and unique.

Batches are expected ordered by ``ts_recv`` (each source emits them so); a batch whose first and
last record share a slot goes into that slot whole. Records are never lost or reordered within a
partition: each record ends up in exactly one closed window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from operator import attrgetter
from typing import Final, Protocol, cast

from engine.book_records import BOOK_DATASET
from engine.clock import Clock
from engine.errors import ConfigError
from engine.records import SymbolBatch, Trade
from sinks.book_windows import BookOpenings
from sinks.encoders import ObjectEncoder, dataset_format, extension, make_encoder
from sinks.keys import KeyTemplate

NS: Final = 1_000_000_000
#: Largest number of records encoded and compressed in one call (bounds a window's overshoot
#: of ``max_bytes`` and the time spent in one compressor call).
CHUNK_RECORDS: Final = 4096


class WindowRecord(Protocol):
    """What the windower needs of a record: a receive time (the slot) and an event time (the
    manifest's first/last ``ts_event``). :class:`~engine.records.Trade` is one; raw captured
    frames (:mod:`connectors.capture`) are another. The record is encoded with ``orjson``."""

    @property
    def ts_recv(self) -> int: ...

    @property
    def ts_event(self) -> int: ...


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """When windows close: ``WINDOW_SECONDS``, ``WINDOW_MAX_BYTES``, ``WINDOW_MAX_RECORDS``."""

    seconds: int = 60
    max_bytes: int = 64 * 1024 * 1024
    max_records: int = 1_000_000

    def __post_init__(self) -> None:
        for variable, value in (
            ("WINDOW_SECONDS", self.seconds),
            ("WINDOW_MAX_BYTES", self.max_bytes),
            ("WINDOW_MAX_RECORDS", self.max_records),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(variable, f"must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """A closed window: a complete object body and what the manifest records about it.

    ``first_ts_event``/``last_ts_event`` are of the first and last record in arrival order;
    ``symbols`` maps ``"exchange:symbol"`` to its (first, last) trade id in arrival order.
    """

    key: str
    body: bytes
    records: int
    window_start_ns: int
    first_ts_event: int
    last_ts_event: int
    symbols: dict[str, tuple[str, str]]
    format: str


@dataclass(slots=True)
class _OpenWindow:
    key: str
    slot: int
    window_start_ns: int
    end_ns: int
    encoder: ObjectEncoder
    trade_ids: bool = True
    #: The (exchange, symbol) pairs in this window so far (``book`` dataset only).
    book_symbols: set[tuple[str, str]] | None = None
    records: int = 0
    first_ts_event: int = 0
    last_ts_event: int = 0
    symbols: dict[str, list[str]] = field(default_factory=dict)

    def append(self, records: Sequence[WindowRecord], homogeneous: bool) -> None:
        """Encode ``records``; ``homogeneous`` means they all share exchange and symbol."""
        self.encoder.write(records)
        if not self.records:
            self.first_ts_event = records[0].ts_event
        self.last_ts_event = records[-1].ts_event
        self.records += len(records)
        if not self.trade_ids:
            return
        chunk = cast(Sequence[Trade], records)
        first, last = chunk[0], chunk[-1]
        symbols = self.symbols
        if homogeneous:
            name = f"{first.exchange}:{first.symbol}"
            ids = symbols.get(name)
            if ids is None:
                symbols[name] = [first.trade_id, last.trade_id]
            else:
                ids[1] = last.trade_id
            return
        for record in chunk:
            name = f"{record.exchange}:{record.symbol}"
            ids = symbols.get(name)
            if ids is None:
                symbols[name] = [record.trade_id, record.trade_id]
            else:
                ids[1] = record.trade_id

    def close(self, format: str) -> ClosedWindow:
        return ClosedWindow(
            key=self.key,
            body=self.encoder.finish(),
            records=self.records,
            window_start_ns=self.window_start_ns,
            first_ts_event=self.first_ts_event,
            last_ts_event=self.last_ts_event,
            symbols={name: (ids[0], ids[1]) for name, ids in self.symbols.items()},
            format=format,
        )


_Partition = tuple[str, ...]


@dataclass(eq=False)
class Windower:
    """Open windows of one dataset, keyed by (partition, slot). Not thread-safe.

    Every method returns the windows it closed, in closing order; a returned window is no
    longer the windower's business (the caller must make it durable or spill it).

    ``format`` is the objects' format (:data:`~sinks.encoders.FORMATS`); the raw capture
    dataset is written as ``ndjson.zst`` when it is ``parquet``
    (:func:`~sinks.encoders.dataset_format`).

    ``trade_ids=False`` is for datasets whose records are not trades (raw capture, books):
    their windows record no per-symbol trade ids (``symbols`` is empty) and the records' own
    ``ts_event`` for first/last.

    The ``book`` dataset (:data:`~engine.book_records.BOOK_DATASET`) also keeps the books as
    written (:class:`~sinks.book_windows.BookOpenings`): each window begins, for each symbol,
    with a snapshot of its book, so a window may hold more records than were added (and
    exceed ``max_records`` by one snapshot).
    """

    policy: WindowPolicy
    template: KeyTemplate
    _: KW_ONLY
    prefix: str
    run_id: str
    format: str
    dataset: str = "trades"
    clock: Clock
    level: int | None = None
    trade_ids: bool = True

    def __post_init__(self) -> None:
        self.format = dataset_format(self.format, self.dataset)  # raw capture: never Parquet
        self._ext = extension(self.format)
        make_encoder(self.format, self.level, dataset=self.dataset)  # validate them now
        self._slot_ns = self.policy.seconds * NS
        self._fields = self.template.partition_fields
        self._partition_of = attrgetter(*self._fields) if self._fields else None
        self._homogeneous_by_key = self._fields == ("exchange", "symbol")
        # A SymbolBatch is one partition when the partition is at most exchange and symbol.
        self._by_symbol = set(self._fields) <= {"exchange", "symbol"}
        self._open: dict[tuple[_Partition, int], _OpenWindow] = {}
        self._seq: dict[_Partition, int] = {}
        self._next_due_ns: int | None = None
        self.book_openings = BookOpenings() if self.dataset == BOOK_DATASET else None

    @property
    def open_count(self) -> int:
        """How many windows are open."""
        return len(self._open)

    def add(self, records: Sequence[WindowRecord]) -> list[ClosedWindow]:
        """Add a batch; return the windows it closed (full ones and those whose slot ended)."""
        closed: list[ClosedWindow] = []
        if records:
            now_slot = self.clock.time_ns() // self._slot_ns
            for partition, group in self._split_partitions(records):
                self._add_partition(partition, group, now_slot, closed)
        self._close_due(closed)
        return closed

    def due(self) -> list[ClosedWindow]:
        """Close and return the windows whose slot has ended by ``clock.time_ns()``."""
        closed: list[ClosedWindow] = []
        self._close_due(closed)
        return closed

    def close_all(self) -> list[ClosedWindow]:
        """Close and return every open window (at stop), oldest slot first."""
        windows = sorted(self._open.items(), key=lambda item: (item[1].slot, item[1].key))
        self._open.clear()
        self._next_due_ns = None
        return [window.close(self.format) for _, window in windows]

    # -- internals -------------------------------------------------------------------------

    def _split_partitions(
        self, records: Sequence[WindowRecord]
    ) -> list[tuple[_Partition, Sequence[WindowRecord]]]:
        partition_of = self._partition_of
        if partition_of is None:
            return [((), records)]
        key = partition_of
        single = len(self._fields) == 1
        first = key(records[0])
        if self._by_symbol and type(records) is SymbolBatch:
            return [(((first,) if single else first), records)]  # one partition by its type
        # Common case: the whole batch is one partition (checked on C-level map/compare).
        keys = list(map(key, records))
        if keys.count(first) == len(keys):
            return [(((first,) if single else first), records)]
        groups: dict[_Partition, list[WindowRecord]] = {}
        for k, record in zip(keys, records, strict=True):
            part = (k,) if single else k
            group = groups.get(part)
            if group is None:
                groups[part] = [record]
            else:
                group.append(record)
        return list(groups.items())

    def _add_partition(
        self,
        partition: _Partition,
        records: Sequence[WindowRecord],
        now_slot: int,
        closed: list[ClosedWindow],
    ) -> None:
        slot_ns = self._slot_ns
        first_slot = max(records[0].ts_recv // slot_ns, now_slot)
        if max(records[-1].ts_recv // slot_ns, now_slot) == first_slot:
            self._add_slot(partition, first_slot, records, closed)
            return
        start = 0
        current = first_slot
        for index, record in enumerate(records):
            slot = max(record.ts_recv // slot_ns, now_slot)
            if slot != current:
                self._add_slot(partition, current, records[start:index], closed)
                start, current = index, slot
        self._add_slot(partition, current, records[start:], closed)

    def _add_slot(
        self,
        partition: _Partition,
        slot: int,
        records: Sequence[WindowRecord],
        closed: list[ClosedWindow],
    ) -> None:
        policy = self.policy
        homogeneous = self._homogeneous_by_key
        start, total = 0, len(records)
        while start < total:
            window = self._open.get((partition, slot))
            if window is None:
                window = self._open_window(partition, slot, records[start])
            room = min(policy.max_records - window.records, CHUNK_RECORDS)
            end = min(start + room, total)
            chunk = records if (start == 0 and end == total) else records[start:end]
            if self.book_openings is not None:
                if window.book_symbols is None:
                    window.book_symbols = set()
                chunk = self.book_openings.prepare(window.book_symbols, chunk)
            window.append(chunk, homogeneous)
            start = end
            if (
                window.records >= policy.max_records
                or window.encoder.compressed_size >= policy.max_bytes
            ):
                del self._open[(partition, slot)]
                closed.append(window.close(self.format))
                self._next_due_ns = None  # recomputed lazily

    def _open_window(self, partition: _Partition, slot: int, first: WindowRecord) -> _OpenWindow:
        seq = self._seq.get(partition, -1) + 1
        self._seq[partition] = seq
        start_ns = slot * self._slot_ns
        values = {name: getattr(first, name) for name in self._fields}
        key = self.template.render(
            prefix=self.prefix,
            dataset=self.dataset,
            partition=values,
            window_start_ns=start_ns,
            run_id=self.run_id,
            seq=seq,
            ext=self._ext,
        )
        window = _OpenWindow(
            key=key,
            slot=slot,
            window_start_ns=start_ns,
            end_ns=start_ns + self._slot_ns,
            encoder=make_encoder(
                self.format,
                self.level,
                dataset=self.dataset,
                partition={name: values[name] for name in self.template.hive_fields},
                max_bytes=self.policy.max_bytes,
            ),
            trade_ids=self.trade_ids,
        )
        self._open[(partition, slot)] = window
        if self._next_due_ns is not None and window.end_ns < self._next_due_ns:
            self._next_due_ns = window.end_ns
        return window

    def _close_due(self, closed: list[ClosedWindow]) -> None:
        if not self._open:
            self._next_due_ns = None
            return
        now = self.clock.time_ns()
        next_due = self._next_due_ns
        if next_due is not None and now < next_due:
            return
        due = [k for k, window in self._open.items() if window.end_ns <= now]
        due.sort(key=lambda k: (self._open[k].slot, self._open[k].key))
        for k in due:
            closed.append(self._open.pop(k).close(self.format))
        self._next_due_ns = min((w.end_ns for w in self._open.values()), default=None)
