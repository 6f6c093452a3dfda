"""The runs under a prefix, newest first (``feedvault runs``): the operator's view.

:func:`list_runs` surveys the prefix once (:func:`sinks.verify.survey_prefix`) and reads each
manifest directly under ``{prefix}_manifests/``. One :class:`RunRow` per run: its id, status
(``complete``, ``incomplete``, ``running`` for a run that has not finished or was killed,
``no manifest`` for a run whose objects are there without any manifest, ``unreadable`` for a
manifest that does not parse), stop reason, start, duration, objects, records and the streams
that stored no record. The objects of a ``running`` or manifest-less run are those found under
the prefix by file name; its records are unknown (``None``). Nothing is decoded: this reads one
manifest per run, ``feedvault verify`` checks a run's objects.

Newest first: by start time (a manifest's ``started_at``; for a run without a manifest the
earliest window start in its objects' names), then by run id. A prefix without runs of its own
names the deeper prefixes that hold runs (``nested``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Final

from engine.errors import IntegrityError, ObjectNotFound
from engine.text import plural
from sinks.manifest import Manifest, manifest_key
from sinks.verify import RunObjects, missing_directory, no_runs_here, survey_prefix
from sinks.writer import ObjectWriter

NO_MANIFEST: Final = "no manifest"
UNREADABLE: Final = "unreadable"
_HEADER: Final = (
    "RUN ID",
    "STATUS",
    "STOP",
    "STARTED",
    "DURATION",
    "OBJECTS",
    "RECORDS",
    "STREAMS WITHOUT DATA",
)


@dataclass(frozen=True, slots=True)
class RunRow:
    """One run under the prefix. ``started_at``/``stopped_at`` are ISO-8601 UTC (``None`` when
    unknown); ``duration_seconds`` is ``None`` for a run that did not stop; ``records`` is
    ``None`` when no final manifest counts them; ``problem`` says why a manifest is unreadable."""

    run_id: str
    status: str
    stop_reason: str | None
    started_at: str | None
    stopped_at: str | None
    duration_seconds: float | None
    objects: int
    records: int | None
    streams_without_data: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lost: int = 0
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cells(self) -> tuple[str, ...]:
        """The row of the table, one string per :data:`_HEADER` column."""
        started = self.started_at or "-"
        if len(started) >= 19:
            started = started[:19].replace("T", " ")  # to the second, in UTC
        return (
            self.run_id,
            self.status,
            self.stop_reason or "-",
            started,
            _duration(self.duration_seconds),
            str(self.objects),
            "-" if self.records is None else str(self.records),
            ", ".join(self.streams_without_data) or "-",
        )


@dataclass(slots=True)
class RunsReport:
    """The outcome of :func:`list_runs`. ``problem``: why nothing could be listed (a directory
    that does not exist); ``nested``: deeper prefixes holding runs of their own."""

    prefix: str
    runs: list[RunRow] = field(default_factory=list)
    nested: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when the prefix could be listed (with or without runs)."""
        return self.problem is None

    def table(self) -> str:
        """A readable table (one line per run, newest first), or a line saying why none."""
        if self.problem is not None:
            return self.problem
        if not self.runs:
            if self.nested:
                return no_runs_here(self.nested)
            return f"no runs under {self.prefix!r}"
        rows = [_HEADER, *(run.cells() for run in self.runs)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
        for run in self.runs:
            if run.problem is not None:
                lines.append(f"{run.run_id}: {run.problem}")
            if run.lost:
                lines.append(f"{run.run_id}: {plural(run.lost, 'window')} lost")
            lines += [f"{run.run_id}: warning: {warning}" for warning in run.warnings]
        if self.nested:
            lines.append(f"more runs under {', '.join(self.nested)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready document (``feedvault runs --json``)."""
        return {
            "prefix": self.prefix,
            "runs": [run.to_dict() for run in self.runs],
            "nested": self.nested,
            "problem": self.problem,
        }


async def list_runs(writer: ObjectWriter, prefix: str) -> RunsReport:
    """The runs directly under ``prefix``, newest first. Raises
    :class:`~engine.errors.StorageError` when the prefix cannot be listed or a manifest read
    fails for a reason other than its absence or its content."""
    report = RunsReport(prefix)
    report.problem = missing_directory(writer)
    if report.problem is not None:
        return report
    survey = await survey_prefix(writer, prefix)
    report.nested = survey.nested
    rows = [
        await _manifest_row(writer, prefix, run_id, survey.runs.get(run_id))
        for run_id in survey.manifests
    ]
    rows += [_orphan_row(run) for run in survey.without_manifest()]
    rows.sort(key=lambda row: (_moment(row.started_at), row.run_id), reverse=True)
    report.runs = rows
    return report


async def _manifest_row(
    writer: ObjectWriter, prefix: str, run_id: str, found: RunObjects | None
) -> RunRow:
    found_objects = len(found.objects) if found is not None else 0
    try:
        manifest = Manifest.from_json(await writer.get(manifest_key(prefix, run_id)))
    except (IntegrityError, ObjectNotFound) as exc:  # gone between the listing and the read
        return RunRow(
            run_id, UNREADABLE, None, None, None, None, found_objects, None, problem=str(exc)
        )
    running = manifest.status == "running"
    return RunRow(
        run_id=manifest.run_id,
        status=manifest.status,
        stop_reason=manifest.stop_reason,
        started_at=manifest.started_at,
        stopped_at=manifest.stopped_at,
        duration_seconds=_seconds_between(manifest.started_at, manifest.stopped_at),
        objects=max(found_objects, len(manifest.objects)) if running else len(manifest.objects),
        records=None if running else manifest.records,
        streams_without_data=sorted(
            name for name, figures in manifest.streams.items() if figures["records"] == 0
        ),
        warnings=list(manifest.warnings),
        lost=len(manifest.lost),
    )


def _orphan_row(run: RunObjects) -> RunRow:
    starts = sorted(name[:16] for obj in run.objects if (name := obj.key.rpartition("/")[2]))
    started = None
    if starts:
        try:
            started = datetime.strptime(starts[0], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            started = None
    return RunRow(run.run_id, NO_MANIFEST, None, started, None, None, len(run.objects), None)


def _moment(iso: str | None) -> float:
    """Seconds since the epoch of an ISO-8601 UTC time; unknown or unparsable ones sort last."""
    if iso is None:
        return float("-inf")
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return float("-inf")


def _seconds_between(start: str, stop: str | None) -> float | None:
    if stop is None:
        return None
    began, ended = _moment(start), _moment(stop)
    if began == float("-inf") or ended == float("-inf"):
        return None
    return ended - began


def _duration(seconds: float | None) -> str:
    """``42.0s``, ``12m05s``, ``3h07m00s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m{whole % 60:02d}s"
