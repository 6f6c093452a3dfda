"""The gap report of ``feedvault batch compact`` (pure): what is missing, and how we know.

Three views of completeness, combined per symbol:

* **data gaps**: for exchanges whose trade ids rise by one per symbol (``sequenced`` protocols:
  Binance, Binance.US, Coinbase, Kraken), ids missing between consecutive compacted trades of
  the range (after deduplication, across runs and days). Ids before the first or after the last
  trade of the range cannot be judged and are not reported;
* **recorded gaps**: the gaps each run's manifest recorded at ingest, each with how many of its
  ids are *still* missing after compaction (another run that overlapped may have them);
* **coverage**: the stretches of the range during which no run was streaming (from the
  manifests' ``started_at``/``stopped_at``; a run without a manifest covers the span of its own
  trades). For exchanges without sequenced ids this is the only evidence of loss.

Plus the runs seen (with status and stop reason), the runs without a manifest (killed before
writing one) and their objects, duplicates removed and conflicting copies per symbol.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batch.compact import CompactTrade, DedupStats, SymbolKey, is_numeric_id
from engine.text import plural
from engine.timefmt import format_us, parse_us
from sinks.manifest import Manifest


def parse_iso_us(text: str) -> int | None:
    """µs since the epoch of a manifest time; ``None`` if unreadable."""
    try:
        return parse_us(text)
    except ValueError:
        return None


def symbol_name(key: SymbolKey) -> str:
    return f"{key[0]}:{key[1]}"


@dataclass(frozen=True, slots=True)
class DataGap:
    """Ids ``from_id``..``to_id`` missing between the trades at ``after_us`` and ``before_us``."""

    from_id: int
    to_id: int
    after_us: int
    before_us: int

    @property
    def missing(self) -> int:
        return self.to_id - self.from_id + 1


@dataclass(slots=True)
class SymbolReport:
    """What the range holds for one ``(exchange, symbol)``."""

    sequenced: bool
    trades: int = 0
    days: list[str] = field(default_factory=list)
    first_ts_event: int | None = None
    last_ts_event: int | None = None
    first_id: int | None = None
    last_id: int | None = None
    last_id_ts_event: int = 0
    """``ts_event`` of the trade holding ``last_id`` (a gap's ``after``)."""
    first_trade_id: str | None = None
    last_trade_id: str | None = None
    duplicates: int = 0
    conflicts: int = 0
    unsequenced_ids: int = 0
    gaps: list[DataGap] = field(default_factory=list)


class Continuity:
    """Trade-id continuity and totals per symbol, fed one symbol-day at a time, in day order."""

    def __init__(self, sequenced: Mapping[str, bool]) -> None:
        self._sequenced = sequenced
        self.symbols: dict[SymbolKey, SymbolReport] = {}

    def add_day(
        self, key: SymbolKey, date: str, trades: Sequence[CompactTrade], stats: DedupStats | None
    ) -> None:
        """Add one day's :func:`~batch.compact.ordered`, deduplicated trades of ``key``."""
        if not trades:
            return
        report = self.symbols.get(key)
        if report is None:
            report = SymbolReport(sequenced=self._sequenced.get(key[0], False))
            self.symbols[key] = report
        report.trades += len(trades)
        report.days.append(date)
        if report.first_ts_event is None:
            report.first_ts_event = trades[0].ts_event
            report.first_trade_id = trades[0].trade_id
        report.last_ts_event = trades[-1].ts_event
        report.last_trade_id = trades[-1].trade_id
        if stats is not None:
            report.duplicates += stats.duplicates
            report.conflicts += stats.conflicts
        if report.sequenced:
            self._check_ids(report, trades)

    @staticmethod
    def _check_ids(report: SymbolReport, trades: Sequence[CompactTrade]) -> None:
        numbered: list[tuple[int, int]] = []
        for trade in trades:
            if is_numeric_id(trade.trade_id):
                numbered.append((int(trade.trade_id), trade.ts_event))
            else:
                report.unsequenced_ids += 1
        numbered.sort()
        for seq, ts_event in numbered:
            if report.last_id is None:
                report.first_id = seq
            elif seq > report.last_id + 1:
                after = report.last_id_ts_event
                report.gaps.append(DataGap(report.last_id + 1, seq - 1, after, ts_event))
            if report.last_id is None or seq > report.last_id:
                report.last_id = seq
                report.last_id_ts_event = ts_event


@dataclass(slots=True)
class RunSeen:
    """A run whose objects were read or whose span touches the range. ``manifest`` is
    ``None`` for a run known only from its objects' file names (no manifest was written)."""

    run_id: str
    manifest: Manifest | None
    objects: int = 0
    records: int = 0
    first_ts_event: int | None = None
    last_ts_event: int | None = None

    def add_object(self, trades: Sequence[CompactTrade]) -> None:
        self.objects += 1
        self.records += len(trades)
        for trade in trades:
            ts = trade.ts_event
            if self.first_ts_event is None or ts < self.first_ts_event:
                self.first_ts_event = ts
            if self.last_ts_event is None or ts > self.last_ts_event:
                self.last_ts_event = ts

    def span(self) -> tuple[int, int] | None:
        """The µs interval the run was streaming: the manifest's start and stop times, or
        the span of its own trades; ``None`` when neither is known."""
        if self.manifest is not None and self.manifest.stopped_at is not None:
            start = parse_iso_us(self.manifest.started_at)
            stop = parse_iso_us(self.manifest.stopped_at)
            if start is not None and stop is not None and stop >= start:
                return (start, stop)
        if self.first_ts_event is not None and self.last_ts_event is not None:
            return (self.first_ts_event, self.last_ts_event)
        return None


def uncovered(
    spans: Iterable[tuple[int, int]], start_us: int, end_us: int
) -> list[tuple[int, int]]:
    """The parts of ``[start_us, end_us)`` that no span covers, in order."""
    holes: list[tuple[int, int]] = []
    cursor = start_us
    for low, high in sorted(spans):
        if high <= cursor:
            continue
        if low > cursor:
            holes.append((cursor, min(low, end_us)))
        cursor = max(cursor, high)
        if cursor >= end_us:
            break
    if cursor < end_us:
        holes.append((cursor, end_us))
    return [(low, high) for low, high in holes if high > low]


def _overlap(low: int, high: int, gaps: Iterable[DataGap]) -> int:
    return sum(
        max(0, min(high, gap.to_id) - max(low, gap.from_id) + 1)
        for gap in gaps
        if gap.to_id >= low and gap.from_id <= high
    )


def recorded_gaps(
    runs: Iterable[RunSeen], symbols: Mapping[SymbolKey, SymbolReport]
) -> dict[str, list[dict[str, Any]]]:
    """Each manifest's recorded gaps that fall within the ids of the range, per symbol, with
    the ids still missing after compaction (``still_missing``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(runs, key=lambda r: r.run_id):
        if run.manifest is None:
            continue
        for name, gaps in sorted(run.manifest.gaps.items()):
            exchange, _, symbol = name.partition(":")
            report = symbols.get((exchange, symbol))
            if report is None or report.first_id is None or report.last_id is None:
                continue
            for gap in gaps:
                low = max(gap["from_id"], report.first_id)
                high = min(gap["to_id"], report.last_id)
                if high < low:
                    continue
                out.setdefault(name, []).append(
                    {
                        "run_id": run.run_id,
                        "from_id": gap["from_id"],
                        "to_id": gap["to_id"],
                        "missing": gap["missing"],
                        "still_missing": _overlap(low, high, report.gaps),
                    }
                )
    return out


@dataclass(slots=True)
class ReadCounters:
    """Totals of the read: objects, records decoded, trades outside the range (ignored)."""

    objects: int = 0
    records: int = 0
    outside_range: int = 0
    conflict_examples: list[dict[str, Any]] = field(default_factory=list)


def _symbol_document(report: SymbolReport, recorded: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "trades": report.trades,
        "days": report.days,
        "first_ts_event": None
        if report.first_ts_event is None
        else format_us(report.first_ts_event),
        "last_ts_event": None if report.last_ts_event is None else format_us(report.last_ts_event),
        "first_trade_id": report.first_trade_id,
        "last_trade_id": report.last_trade_id,
        "duplicates_removed": report.duplicates,
        "conflicting_duplicates": report.conflicts,
        "sequenced": report.sequenced,
        "non_numeric_ids": report.unsequenced_ids,
        "data_gaps": [
            {
                "from_id": gap.from_id,
                "to_id": gap.to_id,
                "missing": gap.missing,
                "after": format_us(gap.after_us),
                "before": format_us(gap.before_us),
            }
            for gap in report.gaps
        ],
        "missing_ids": sum(gap.missing for gap in report.gaps),
        "recorded_gaps": recorded,
        "recorded_still_missing": sum(item["still_missing"] for item in recorded),
    }


def _run_document(run: RunSeen) -> dict[str, Any]:
    manifest = run.manifest
    span = run.span()
    return {
        "run_id": run.run_id,
        "manifest": manifest is not None,
        "status": manifest.status if manifest else None,
        "stop_reason": manifest.stop_reason if manifest else None,
        "started_at": manifest.started_at if manifest else None,
        "stopped_at": manifest.stopped_at if manifest else None,
        "spilled": list(manifest.spilled) if manifest else [],
        "objects_read": run.objects,
        "records_read": run.records,
        "span": None if span is None else [format_us(span[0]), format_us(span[1])],
    }


def build_report(
    *,
    days_label: str,
    input_url: str,
    start_us: int,
    end_us: int,
    continuity: Continuity,
    runs: Sequence[RunSeen],
    counters: ReadCounters,
    rejected: Mapping[str, int],
) -> dict[str, Any]:
    """The whole gap report as a JSON-ready document (keys sorted when rendered)."""
    recorded = recorded_gaps(runs, continuity.symbols)
    symbols = {
        symbol_name(key): _symbol_document(report, recorded.get(symbol_name(key), []))
        for key, report in sorted(continuity.symbols.items())
    }
    spans = [span for run in runs if (span := run.span()) is not None]
    holes = uncovered(spans, start_us, end_us)
    return {
        "range": days_label,
        "input": input_url,
        "symbols": symbols,
        "trades": sum(doc["trades"] for doc in symbols.values()),
        "missing_ids": sum(doc["missing_ids"] for doc in symbols.values()),
        "runs": [_run_document(run) for run in sorted(runs, key=lambda r: r.run_id)],
        "runs_without_manifest": sorted(run.run_id for run in runs if run.manifest is None),
        "incomplete_runs": sorted(
            run.run_id
            for run in runs
            if run.manifest is not None and run.manifest.status != "complete"
        ),
        "uncovered": [
            {"from": format_us(low), "to": format_us(high), "seconds": (high - low) / 1_000_000}
            for low, high in holes
        ],
        "uncovered_seconds": sum(high - low for low, high in holes) / 1_000_000,
        "objects_read": counters.objects,
        "records_read": counters.records,
        "outside_range": counters.outside_range,
        "rejected": dict(sorted(rejected.items())),
        "conflict_examples": counters.conflict_examples,
    }


def report_markdown(report: Mapping[str, Any]) -> str:
    """The gap report as readable Markdown."""
    lines = [
        f"# Compaction gap report: {report['range']}",
        "",
        f"Input `{report['input']}`: {plural(report['objects_read'], 'object')}, "
        f"{plural(report['records_read'], 'record')} read, "
        f"{plural(report['trades'], 'trade')} kept, "
        f"{sum(report['rejected'].values())} rejected.  ",
        f"Missing trade ids: {report['missing_ids']}. Time not covered by any run: "
        f"{report['uncovered_seconds']:.3f} s.",
        "",
        "| symbol | trades | duplicates removed | conflicts | data gaps | missing ids "
        "| recorded gaps | still missing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, doc in report["symbols"].items():
        gaps = len(doc["data_gaps"]) if doc["sequenced"] else "n/a"
        missing = doc["missing_ids"] if doc["sequenced"] else "n/a"
        lines.append(
            f"| {name} | {doc['trades']} | {doc['duplicates_removed']} | "
            f"{doc['conflicting_duplicates']} | {gaps} | {missing} | "
            f"{len(doc['recorded_gaps'])} | {doc['recorded_still_missing']} |"
        )
    lines += ["", "| run | manifest | status | stop reason | objects read | records read |"]
    lines.append("|---|---|---|---|---:|---:|")
    for run in report["runs"]:
        lines.append(
            f"| {run['run_id']} | {'yes' if run['manifest'] else 'no'} | "
            f"{run['status'] or '-'} | {run['stop_reason'] or '-'} | "
            f"{run['objects_read']} | {run['records_read']} |"
        )
    if report["uncovered"]:
        lines += ["", "Not covered by any run:", ""]
        lines += [
            f"- {hole['from']} .. {hole['to']} ({hole['seconds']:.3f} s)"
            for hole in report["uncovered"]
        ]
    if report["rejected"]:
        lines += ["", "Rejected records: "]
        lines[-1] += ", ".join(f"{kind} {count}" for kind, count in report["rejected"].items())
    return "\n".join(lines) + "\n"
