"""``feedvault batch compact``: streamed trade and book objects of a date range -> Parquet,
bars, book snapshots, gaps.

Input: a streaming prefix (``INPUT_BUCKET`` + ``INPUT_PREFIX``, or ``--in s3://bucket/prefix/``),
where ``feedvault stream`` runs wrote their trade and book windows and manifests. Parameters:

* ``COMPACT_FROM`` (required): the first UTC day, ``YYYY-MM-DD``, ``today`` or ``yesterday``;
* ``COMPACT_TO`` (default ``COMPACT_FROM``): the last UTC day, inclusive; at most
  :data:`MAX_DAYS` days in all;
* ``BOOK_SNAPSHOT_LEVELS`` (default 25; 0: no snapshots) and ``BOOK_SNAPSHOT_INTERVAL``
  (seconds, default 1; a whole number of milliseconds dividing a day): the book snapshots.

Book objects (``{prefix}book/``) are handled by :mod:`batch.compact_book`, after the trades,
one day at a time (docs: batch.md#order-books).

The objects read are chosen by :mod:`batch.compact_plan` (every manifest's trade objects, and
objects under ``{prefix}trades/`` that no manifest lists). An object listed in a manifest must
match its size and SHA-256 there, and must exist: otherwise the run fails naming it (a
compaction over altered or lost data is not presented as complete). A record that is not a
valid trade is rejected with its reason (``rejected.csv``); trades outside the range are
ignored. Days are processed in order, one at a time: memory holds one day's trades (about half
a kilobyte per trade), plus the compressed outputs.

Outputs under ``{OUTPUT_PREFIX}compact/``, all computed before the first is written (the
Parquet files hold no ``exchange``/``symbol`` column: their Hive keys do, so the datasets read
with every reader, docs: lake.md#reading-the-datasets):

* ``trades/exchange=E/symbol=S/date=D/trades.parquet``: the day's trades of one symbol,
  deduplicated by ``(exchange, symbol, trade_id)`` and ordered (see :mod:`batch.compact`);
* ``bars_1m/exchange=E/symbol=S/date=D/bars.parquet``: 1-minute OHLCV bars of the same trades;
* ``reports/FROM_TO/gaps.json`` and ``gaps.md``: the gap report (:mod:`batch.compact_report`);
* ``reports/FROM_TO/rejected.csv``: the rejected records (header only when none);
* with book objects: ``book/exchange=E/symbol=S/date=D/book.parquet`` (the day's book rows),
  ``book_snapshots/exchange=E/symbol=S/date=D/book_snapshots.parquet`` (top-N snapshots) and
  ``reports/FROM_TO/book.json`` (per symbol and day: rows, snapshots, when the book was
  unknown; overlapping objects skipped).

Keys are deterministic: rerunning the same range replaces them. A range with no trades and no
book rows at all fails the run (``no trades``) rather than writing empty results.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from batch.compact import (
    CompactTrade,
    DayTrades,
    bars,
    bars_parquet,
    parse_records,
    trades_parquet,
)
from batch.compact_book import (
    BOOK_DIR,
    DEFAULT_SNAPSHOT_INTERVAL,
    DEFAULT_SNAPSHOT_LEVELS,
    BookPlan,
    BookSource,
    SymbolDay,
    interval_ns,
    parse_book_records,
    plan_book_objects,
    resync_breaks,
    unplaced_rejection,
)
from batch.compact_plan import (
    TRADES_DIR,
    DayRange,
    SourceObject,
    by_read_day,
    day_date,
    is_manifest_key,
    is_stream_manifest,
    plan_objects,
)
from batch.compact_report import (
    Continuity,
    ReadCounters,
    RunSeen,
    build_report,
    report_markdown,
)
from batch.csvutil import Rejected, count_kinds, rejected_csv, to_json
from batch.job import InputReader, JobContext, JobError, ParametersJob
from engine.book_records import BookLevel
from engine.errors import ConfigError, IntegrityError
from engine.settings import Env
from sinks.encoders import decode_object as decode_stored
from sinks.keys import sanitize
from sinks.manifest import MANIFEST_DIR, Manifest
from sinks.writer import sha256_hex

NAME: Final = "compact"
MAX_DAYS: Final = 366
FETCH_AHEAD: Final = 8
"""Objects fetched concurrently (bodies held at once)."""


def _day(env: Env, name: str, today: dt.date) -> dt.date | None:
    text = env.raw(name)
    if text is None:
        return None
    if text == "today":
        return today
    if text == "yesterday":
        return today - dt.timedelta(days=1)
    try:
        if len(text) != 10:
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(name, f"must be YYYY-MM-DD, today or yesterday, got {text!r}") from None


@dataclass(frozen=True, slots=True)
class CompactParameters:
    """The validated range and book snapshot settings (see the module docstring)."""

    first: dt.date
    last: dt.date
    snapshot_levels: int = DEFAULT_SNAPSHOT_LEVELS
    snapshot_interval: float = DEFAULT_SNAPSHOT_INTERVAL

    @classmethod
    def from_env(cls, env: Env, *, today: dt.date | None = None) -> CompactParameters:
        """``COMPACT_FROM``/``COMPACT_TO``; ``today`` (UTC) resolves ``today``/``yesterday``;
        ``BOOK_SNAPSHOT_LEVELS``/``BOOK_SNAPSHOT_INTERVAL``. :class:`ConfigError` names the
        variable at fault. ``INPUT_KEY`` is refused: compact reads a whole streaming prefix."""
        if env.raw("INPUT_KEY") is not None:
            raise ConfigError("INPUT_KEY", "compact reads a streaming prefix: set INPUT_PREFIX")
        if today is None:
            today = dt.datetime.now(dt.UTC).date()
        first = _day(env, "COMPACT_FROM", today)
        if first is None:
            raise ConfigError("COMPACT_FROM", "is required but not set (the first UTC day)")
        last = _day(env, "COMPACT_TO", today) or first
        if last < first:
            raise ConfigError("COMPACT_TO", f"{last} is before COMPACT_FROM {first}")
        if (last - first).days + 1 > MAX_DAYS:
            raise ConfigError(
                "COMPACT_TO", f"a range of at most {MAX_DAYS} days, got {first}..{last}"
            )
        levels = env.integer("BOOK_SNAPSHOT_LEVELS", DEFAULT_SNAPSHOT_LEVELS)
        interval = env.number("BOOK_SNAPSHOT_INTERVAL", DEFAULT_SNAPSHOT_INTERVAL)
        if interval_ns(interval) is None:
            raise ConfigError(
                "BOOK_SNAPSHOT_INTERVAL",
                f"must be a whole number of milliseconds that divides a day, got {interval:g}",
            )
        return cls(first, last, levels, interval)

    @property
    def days(self) -> DayRange:
        return DayRange.of(self.first, self.last)

    @property
    def interval_ns(self) -> int:
        """The snapshot interval in nanoseconds (checked by :meth:`from_env`)."""
        value = interval_ns(self.snapshot_interval)
        if value is None:
            raise ValueError(f"not a valid snapshot interval: {self.snapshot_interval!r}")
        return value

    def public_dict(self) -> dict[str, Any]:
        return {
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "book_snapshot_levels": self.snapshot_levels,
            "book_snapshot_interval": self.snapshot_interval,
        }


@dataclass(slots=True)
class _Decoded:
    source: SourceObject
    trades: list[CompactTrade]
    rejected: list[Rejected]
    records: int


def _check_entry(source: SourceObject | BookSource, body: bytes) -> None:
    entry = source.entry
    if entry is not None and (len(body) != entry.bytes or sha256_hex(body) != entry.sha256):
        raise JobError(
            f"object {source.key!r} does not match run {source.run_id}'s manifest "
            f"({len(body)} bytes, expected {entry.bytes}, or a different SHA-256): "
            "altered or replaced"
        )


def decode_object(source: SourceObject, body: bytes) -> _Decoded:
    """Check ``body`` against its manifest entry, decode and check its records (pure)."""
    _check_entry(source, body)
    try:
        records = decode_stored(source.key, body)
    except IntegrityError as exc:
        raise JobError(f"cannot read trade object {source.key!r}: {exc}") from exc
    trades, rejected = parse_records(source.key, records)
    return _Decoded(source, trades, rejected, len(records))


@dataclass(slots=True)
class _DecodedBook:
    rows: dict[tuple[str, str], list[BookLevel]]
    rejected: list[Rejected]
    records: int


def decode_book_object(source: BookSource, body: bytes) -> _DecodedBook:
    """Check ``body`` against its manifest entry, decode and check its rows, grouped by
    (exchange, symbol) in order (pure)."""
    _check_entry(source, body)
    try:
        records = decode_stored(source.key, body)
    except IntegrityError as exc:
        raise JobError(f"cannot read book object {source.key!r}: {exc}") from exc
    rows, rejected = parse_book_records(source.key, records)
    groups: dict[tuple[str, str], list[BookLevel]] = {}
    for row in rows:
        groups.setdefault((row.exchange, row.symbol), []).append(row)
    return _DecodedBook(groups, rejected, len(records))


def render_day(
    day_trades: DayTrades,
) -> tuple[list[tuple[str, bytes, int]], dict[tuple[str, str], list[CompactTrade]]]:
    """One day's outputs ``(relative key, body, records)`` and its ordered trades per symbol."""
    date = day_date(day_trades.day).isoformat()
    outputs: list[tuple[str, bytes, int]] = []
    groups = day_trades.by_symbol()
    for (exchange, symbol), trades in groups.items():
        partition = f"exchange={sanitize(exchange)}/symbol={sanitize(symbol)}/date={date}"
        minute_bars = bars(trades)
        outputs.append((f"trades/{partition}/trades.parquet", trades_parquet(trades), len(trades)))
        outputs.append(
            (f"bars_1m/{partition}/bars.parquet", bars_parquet(minute_bars), len(minute_bars))
        )
    return outputs, groups


def _sequenced() -> dict[str, bool]:
    from connectors.registry import PROTOCOLS, get_protocol

    return {name: get_protocol(name).sequenced for name in PROTOCOLS}


@dataclass(slots=True)
class _State:
    """What the day loop accumulates."""

    days: DayRange
    continuity: Continuity
    runs: dict[str, RunSeen]
    counters: ReadCounters = field(default_factory=ReadCounters)
    rejected: list[Rejected] = field(default_factory=list)
    carry: dict[int, list[CompactTrade]] = field(default_factory=dict)
    outputs: list[tuple[str, bytes, int]] = field(default_factory=list)
    book_rows: int = 0
    book_report: dict[str, dict[str, Any]] = field(default_factory=dict)

    def take(self, decoded: _Decoded, day: DayTrades) -> None:
        """Sort one object's trades into today, later days of the range, or outside it."""
        source = decoded.source
        run_id = source.run_id or "(unknown)"
        run = self.runs.setdefault(run_id, RunSeen(run_id, None))
        run.add_object(decoded.trades)
        self.counters.objects += 1
        self.counters.records += decoded.records
        self.rejected.extend(decoded.rejected)
        today: list[CompactTrade] = []
        for number, trade in enumerate(decoded.trades, start=1):
            trade_day = trade.day
            if trade_day == day.day:
                today.append(trade)
            elif day.day < trade_day <= self.days.last:
                self.carry.setdefault(trade_day, []).append(trade)
            elif self.days.first <= trade_day < day.day:
                self.rejected.append(_late(source, number, trade))
            else:
                self.counters.outside_range += 1
        day.add(today)


def _late(source: SourceObject, number: int, trade: CompactTrade) -> Rejected:
    return Rejected(
        source.key,
        number,
        f"{trade.exchange}:{trade.symbol}:{trade.trade_id}",
        "late-record",
        f"late-record: trade of {day_date(trade.day)} more than an hour outside its object's "
        "time span, found after that day was compacted",
    )


class CompactSample:
    """``feedvault sample compact``: a streaming prefix (:mod:`batch.compact_sample`); it
    needs no ``COMPACT_*`` parameter."""

    def sample(self, seed: int) -> Iterator[tuple[str, bytes]]:
        return self.sample_under("", seed)

    def sample_under(self, prefix: str, seed: int) -> Iterator[tuple[str, bytes]]:
        """The runs' objects and manifests, keyed under ``prefix`` (manifests name full keys,
        so the sample must know where it goes)."""
        from batch.compact_sample import sample_compact

        yield from sorted(sample_compact(seed, prefix).items())


class CompactJob(ParametersJob[CompactParameters]):
    """The job object (:class:`batch.job.Job`)."""

    name = NAME
    needs_input = True
    parameters_type = CompactParameters

    async def run(self, ctx: JobContext) -> None:
        reader = ctx.require_input()
        if reader.location.key is not None:
            raise JobError(f"compact reads a streaming prefix, not one object: {reader.url}")
        days = self.params.days
        manifests = await _read_manifests(reader)
        listed = await reader.store.list(reader.prefix + TRADES_DIR)
        sources = plan_objects(reader.prefix, manifests, listed, days)
        streams = [m for m in manifests if is_stream_manifest(m)]
        books = plan_book_objects(
            reader.prefix,
            streams,
            await reader.store.list(reader.prefix + BOOK_DIR),
            days.first,
            days.last,
        )
        if not sources and not books.sources:
            raise JobError(
                f"no trade objects for {days.label()} under {reader.url}, nor book objects"
            )
        ctx.progress.unit = "records" if books.sources else "trades"
        ctx.progress.set_totals(files=len(sources) + len(books.sources))
        state = _State(
            days=days,
            continuity=Continuity(await ctx.run_cpu(_sequenced)),
            runs={m.run_id: RunSeen(m.run_id, m) for m in manifests if is_stream_manifest(m)},
        )
        for day, day_sources in by_read_day(sources, days).items():
            await self._compact_day(ctx, reader, state, day, day_sources)
        await self._compact_books(ctx, reader, state, books, resync_breaks(streams))
        if not state.continuity.symbols and not state.book_rows:
            raise JobError(f"no trades for {days.label()} under {reader.url}, nor book rows")
        if books.sources or books.skipped or books.unplaced:
            state.outputs.append(self._book_report(reader, books, state))
        await self._write(ctx, reader, state)

    async def _compact_books(
        self,
        ctx: JobContext,
        reader: InputReader,
        state: _State,
        plan: BookPlan,
        breaks: Mapping[tuple[str, str, str], Sequence[int]],
    ) -> None:
        """The book outputs of every day, one day's symbols at a time (see
        :mod:`batch.compact_book`)."""
        state.rejected.extend(unplaced_rejection(key) for key in plan.unplaced)
        params = self.params
        open_days: dict[tuple[str, str], SymbolDay] = {}
        day: int | None = None

        async def finish_day() -> None:
            for key in sorted(open_days):
                book = open_days[key]
                state.outputs.extend(await ctx.run_cpu(book.finish))
                state.book_rows += book.stats.rows
                date = day_date(book.day).isoformat()
                name = f"{key[0]}:{key[1]}"
                state.book_report.setdefault(name, {})[date] = book.report()
            open_days.clear()

        sources = plan.sources
        for start in range(0, len(sources), FETCH_AHEAD):
            batch = sources[start : start + FETCH_AHEAD]
            bodies = await fetch_all(reader, [source.key for source in batch], _missing(batch))
            for source, body in zip(batch, bodies, strict=True):
                if source.day != day:
                    await finish_day()
                    day = source.day
                decoded = await ctx.run_cpu(decode_book_object, source, body)
                state.rejected.extend(decoded.rejected)
                for key, rows in decoded.rows.items():
                    book = open_days.get(key)
                    if book is None:
                        book = open_days[key] = SymbolDay(
                            key[0],
                            key[1],
                            source.day,
                            levels=params.snapshot_levels,
                            interval_ns=params.interval_ns,
                        )
                    resyncs = breaks.get((source.run_id, key[0], rows[0].raw_symbol), ())
                    await ctx.run_cpu(book.add, source.run_id, rows, resyncs)
                ctx.progress.add_rows(decoded.records)
                ctx.progress.file_done()
        await finish_day()

    def _book_report(
        self, reader: InputReader, plan: BookPlan, state: _State
    ) -> tuple[str, bytes, int]:
        params = self.params
        symbols = {name: state.book_report[name] for name in sorted(state.book_report)}
        report = {
            "range": params.days.label(),
            "input": reader.url,
            "snapshot_levels": params.snapshot_levels,
            "snapshot_interval_seconds": params.snapshot_interval,
            "objects_read": len(plan.sources),
            "skipped_overlapping": [source.key for source in plan.skipped],
            "unplaced": plan.unplaced,
            "symbols": symbols,
        }
        folder = f"reports/{params.first.isoformat()}_{params.last.isoformat()}"
        return (f"{folder}/book.json", to_json(report), len(symbols))

    async def _compact_day(
        self,
        ctx: JobContext,
        reader: InputReader,
        state: _State,
        day: int,
        sources: Sequence[SourceObject],
    ) -> None:
        day_trades = DayTrades(day)
        day_trades.add(state.carry.pop(day, []))
        for start in range(0, len(sources), FETCH_AHEAD):
            batch = sources[start : start + FETCH_AHEAD]
            bodies = await fetch_all(reader, [source.key for source in batch], _missing(batch))
            for source, body in zip(batch, bodies, strict=True):
                decoded = await ctx.run_cpu(decode_object, source, body)
                state.take(decoded, day_trades)
                ctx.progress.add_rows(decoded.records)
                ctx.progress.file_done()
        outputs, groups = await ctx.run_cpu(render_day, day_trades)
        state.outputs.extend(outputs)
        date = day_date(day).isoformat()
        for key, trades in groups.items():
            state.continuity.add_day(key, date, trades, day_trades.stats.get(key))
        for kept, other in day_trades.conflict_examples:
            if len(state.counters.conflict_examples) < 10:
                state.counters.conflict_examples.append(
                    {
                        "trade": f"{kept.exchange}:{kept.symbol}:{kept.trade_id}",
                        "kept": _describe(kept),
                        "dropped": _describe(other),
                    }
                )

    async def _write(self, ctx: JobContext, reader: InputReader, state: _State) -> None:
        days = state.days
        report = build_report(
            days_label=days.label(),
            input_url=reader.url,
            start_us=days.start_us,
            end_us=days.end_us,
            continuity=state.continuity,
            runs=[run for run in state.runs.values() if _in_scope(run, days)],
            counters=state.counters,
            rejected=count_kinds(state.rejected),
        )
        folder = f"reports/{self.params.first.isoformat()}_{self.params.last.isoformat()}"
        outputs = [
            *state.outputs,
            (f"{folder}/gaps.json", to_json(report), len(report["symbols"])),
            (f"{folder}/gaps.md", report_markdown(report).encode("utf-8"), len(report["symbols"])),
            (f"{folder}/rejected.csv", rejected_csv(state.rejected), len(state.rejected)),
        ]
        await ctx.write_outputs(outputs)


def _in_scope(run: RunSeen, days: DayRange) -> bool:
    if run.objects:
        return True
    span = run.span()
    return span is not None and span[1] >= days.start_us and span[0] < days.end_us


def _describe(trade: CompactTrade) -> dict[str, Any]:
    return {
        "price": str(trade.price),
        "size": str(trade.size),
        "side": trade.side,
        "ts_event": trade.ts_event,
        "ts_recv": trade.ts_recv,
    }


async def _read_manifests(reader: InputReader) -> list[Manifest]:
    """Every run manifest directly under ``{prefix}_manifests/``; a malformed one fails the
    run naming it."""
    listed = await reader.store.list(reader.prefix + MANIFEST_DIR)
    keys = [obj.key for obj in listed if is_manifest_key(reader.prefix, obj.key)]
    manifests: list[Manifest] = []
    for start in range(0, len(keys), FETCH_AHEAD):
        batch = keys[start : start + FETCH_AHEAD]
        for key, body in zip(batch, await fetch_all(reader, batch), strict=True):
            try:
                manifests.append(Manifest.from_json(body))
            except IntegrityError as exc:
                raise JobError(f"run manifest {key!r} is malformed: {exc}") from exc
    return manifests


def _missing(sources: Sequence[SourceObject | BookSource]) -> dict[str, str]:
    """What to say of a manifest-listed object that is gone."""
    return {
        source.key: f"object {source.key!r} is listed in run {source.run_id}'s manifest "
        "but missing: lost or deleted"
        for source in sources
        if source.entry is not None
    }


async def fetch_all(
    reader: InputReader, keys: Sequence[str], missing: Mapping[str, str] | None = None
) -> list[bytes]:
    """The bodies of ``keys`` (at most :data:`FETCH_AHEAD`), fetched concurrently in an owned
    TaskGroup. A missing key raises :class:`JobError` (with ``missing[key]`` as its message
    when given); the first failure is raised as itself, not as an exception group."""

    async def one(key: str) -> bytes:
        try:
            return await reader.read(key)
        except JobError as exc:
            if missing is None or key not in missing:
                raise
            raise JobError(missing[key]) from exc.__cause__

    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(key)) for key in keys]
    except BaseExceptionGroup as group:
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [task.result() for task in tasks]
