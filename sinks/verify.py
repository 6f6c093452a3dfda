"""Verify a run against its manifest (SPEC §6, ``feedvault verify``).

:func:`verify_run` reads the manifest (the newest one under ``{prefix}_manifests/`` when no run
id is given: run ids sort by time) and checks, reporting one line per finding:

- the manifest is readable and valid, its status is ``complete`` and nothing was left spilled;
- every object is present with the recorded size and sha256, decodes, holds the recorded number
  of records, each a valid trade, and its first/last trade ids per symbol match the manifest;
- no (exchange, symbol, trade_id) appears twice across the run's objects;
- raw capture objects (``{prefix}raw/...``, SPEC §8) are checked for presence, size, sha256 and
  record count, and each line must be a recording line (``ts``, ``exchange``, ``dir``,
  ``frame``); they hold no trades, so the trade checks do not apply to them;
- batch job outputs (entries of kind ``output``, SPEC §9: JSON, CSV, ...) are checked for
  presence, size and sha256 only; their bodies are not decoded and their records not counted;
- no object under the prefix carries the run id without being in the manifest (stray).

Runs without a manifest (a task killed by SIGKILL or out of memory never writes one): every
object under the prefix whose file name has the default layout
``{window_start}-{run_id}-{seq}.{ext}`` (:func:`run_id_of_key`) belongs to that run; a run id
with objects but no ``{prefix}_manifests/{run_id}.json`` is reported in
:attr:`VerifyReport.runs_without_manifest` with its object count and bytes, whichever run is
checked. Without a run id, the checked run is the newest (greatest id: run ids sort by time)
among the runs with a manifest AND the runs without one, so a killed last run is what is
checked, and it fails: a run without a manifest is incomplete by definition. Objects written
under a custom ``KEY_TEMPLATE`` whose file names do not have that shape are not attributed to
any run.

Gaps recorded in the manifest are reported but are not problems. The report is ``ok`` only when
there are no problems. Objects are checked one at a time; memory holds one object plus the set
of trade ids seen, and the listing of the prefix (key and size per object).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from engine.errors import IntegrityError, ObjectNotFound, StorageError
from engine.records import Trade
from sinks.encoders import decode_body, format_from_key
from sinks.keys import is_raw_key, sanitize
from sinks.manifest import (
    MANIFEST_DIR,
    OUTPUT_KIND,
    Gap,
    Manifest,
    StoredObjectEntry,
    manifest_key,
)
from sinks.writer import ListedObject, ObjectWriter, sha256_hex

#: At most this many duplicate trade ids are listed one by one.
MAX_DUPLICATES_LISTED: Final = 10
#: At most this many objects of the checked run without a manifest are listed one by one.
MAX_ORPHAN_OBJECTS_LISTED: Final = 20

#: The file name of an object in the default key layout (SPEC §6):
#: ``{window_start:%Y%m%dT%H%M%SZ}-{run_id}-{seq:06d}.{ext}``. The run id is the longest text
#: before the last ``-<6+ digits>.`` (run ids may themselves hold ``-``).
_RUN_FILE: Final = re.compile(
    r"[0-9]{8}T[0-9]{6}Z-(?P<run>[A-Za-z0-9._-]+)-[0-9]{6,}\.[A-Za-z0-9_-][A-Za-z0-9._-]*"
)


def run_id_of_key(key: str) -> str | None:
    """The run id in an object key of the default layout, or None when the file name does not
    have the shape ``{window_start}-{run_id}-{seq}.{ext}``."""
    match = _RUN_FILE.fullmatch(key.rpartition("/")[2])
    return match["run"] if match else None


@dataclass(slots=True)
class RunObjects:
    """The objects one run left under the prefix (found by listing, not from a manifest)."""

    run_id: str
    objects: list[ListedObject] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(obj.size for obj in self.objects)

    def line(self) -> str:
        return f"{self.run_id}: {len(self.objects)} objects, {self.bytes} bytes"


@dataclass(slots=True)
class PrefixSurvey:
    """What a listing of the prefix shows: run ids with a manifest, objects per run id."""

    manifests: set[str] = field(default_factory=set)
    runs: dict[str, RunObjects] = field(default_factory=dict)
    listed: list[ListedObject] = field(default_factory=list)

    def without_manifest(self) -> list[RunObjects]:
        """Runs with objects and no manifest, oldest first."""
        return [self.runs[r] for r in sorted(self.runs) if r not in self.manifests]

    def newest_run(self) -> str | None:
        """The greatest run id among runs with a manifest and runs with objects."""
        candidates = self.manifests | self.runs.keys()
        return max(candidates) if candidates else None


async def survey_prefix(writer: ObjectWriter, prefix: str) -> PrefixSurvey:
    """List ``prefix`` once: manifests under ``{prefix}_manifests/`` and the objects of each run
    id (by file name, :func:`run_id_of_key`). Raises :class:`StorageError` if listing fails."""
    survey = PrefixSurvey(listed=await writer.list(prefix))
    manifest_dir = f"{prefix}{MANIFEST_DIR}"
    for obj in survey.listed:
        if obj.key.startswith(manifest_dir):
            name = obj.key[len(manifest_dir) :]
            if name.endswith(".json") and "/" not in name:
                survey.manifests.add(name[: -len(".json")])
            continue
        run = run_id_of_key(obj.key)
        if run is not None:
            survey.runs.setdefault(run, RunObjects(run)).objects.append(obj)
    return survey


@dataclass(slots=True)
class VerifyReport:
    """The outcome of :func:`verify_run`."""

    run_id: str | None
    ok: bool
    problems: list[str] = field(default_factory=list)
    objects: int = 0
    records: int = 0
    gaps: dict[str, list[Gap]] = field(default_factory=dict)
    runs_without_manifest: list[RunObjects] = field(default_factory=list)
    """Every run under the prefix with objects and no manifest (incomplete), the checked run
    included when it is one of them."""

    def summary(self) -> str:
        """Human-readable text: a verdict line, counts, problems and gaps."""
        verdict = "OK" if self.ok else "FAILED"
        lines = [
            f"run {self.run_id or '?'}: {verdict} "
            f"({self.objects} objects, {self.records} records, {len(self.problems)} problems)"
        ]
        lines += [f"  problem: {problem}" for problem in self.problems]
        for name, gaps in sorted(self.gaps.items()):
            missing = sum(gap["missing"] for gap in gaps)
            lines.append(f"  gaps {name}: {len(gaps)} gaps, {missing} trade ids missing")
            lines += [
                f"    ids {gap['from_id']}..{gap['to_id']}: {gap['missing']} missing"
                for gap in gaps
            ]
        if self.runs_without_manifest:
            lines.append(
                f"  runs without a manifest (incomplete): {len(self.runs_without_manifest)}"
            )
            for run in self.runs_without_manifest:
                lines.append(f"    {run.line()}")
                if run.run_id != self.run_id:
                    continue
                shown = run.objects[:MAX_ORPHAN_OBJECTS_LISTED]
                lines += [f"      {obj.key} ({obj.size} bytes)" for obj in shown]
                if len(run.objects) > len(shown):
                    lines.append(f"      ... and {len(run.objects) - len(shown)} more objects")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """The report as a JSON-ready document (``feedvault verify --json``)."""
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "objects": self.objects,
            "records": self.records,
            "problems": self.problems,
            "gaps": self.gaps,
            "runs_without_manifest": [
                {"run_id": run.run_id, "objects": len(run.objects), "bytes": run.bytes}
                for run in self.runs_without_manifest
            ],
        }


async def verify_run(writer: ObjectWriter, prefix: str, run_id: str | None = None) -> VerifyReport:
    """Check a run (the newest, with or without a manifest, when ``run_id`` is None).

    Never raises for a finding. A storage failure other than a missing object propagates as
    :class:`StorageError`, except a failed listing when ``run_id`` is given, which is reported
    as a problem (the manifest's objects are still checked)."""
    survey: PrefixSurvey | None
    list_problem: str | None = None
    if run_id is None:
        survey = await survey_prefix(writer, prefix)
        run_id = survey.newest_run()
        if run_id is None:
            where = f"{prefix}{MANIFEST_DIR}"
            return VerifyReport(None, False, [f"no run manifest found under {where!r}"])
    else:
        try:
            survey = await survey_prefix(writer, prefix)
        except StorageError as exc:
            survey = None
            list_problem = f"cannot list {prefix!r} to look for stray objects: {exc}"
    report = VerifyReport(run_id, False)
    problems = report.problems
    if survey is not None:
        report.runs_without_manifest = survey.without_manifest()
    manifest = await _read_manifest(writer, prefix, run_id, problems)
    if manifest is None:
        orphan = survey.runs.get(run_id) if survey is not None else None
        if orphan is not None:
            problems.append(
                f"run {run_id} has no manifest: it left {len(orphan.objects)} objects "
                f"({orphan.bytes} bytes) under {prefix!r} with no proof that they are all it "
                "received; the task was stopped before writing its manifest (SIGKILL, out of "
                "memory): the run is incomplete"
            )
        if list_problem is not None:
            problems.append(list_problem)
        return report
    report.gaps = manifest.gaps
    if manifest.run_id != run_id:
        problems.append(f"manifest names run {manifest.run_id!r}, expected {run_id!r}")
    if manifest.status != "complete":
        detail = f": {manifest.error}" if manifest.error else ""
        problems.append(
            f"run status is {manifest.status} (stop reason {manifest.stop_reason}){detail}"
        )
    if manifest.spilled:
        problems.append(
            f"{len(manifest.spilled)} windows were left in the spill directory: "
            + ", ".join(manifest.spilled)
        )
    checker = _DuplicateChecker(problems)
    keys: set[str] = set()
    for entry in manifest.objects:
        if entry.key in keys:
            problems.append(f"{entry.key}: listed twice in the manifest")
            continue
        keys.add(entry.key)
        report.objects += 1
        raw = is_raw_key(prefix, entry.key)
        report.records += await _check_object(writer, entry, checker, problems, raw=raw)
    checker.finish()
    if survey is None:
        problems.append(list_problem or f"cannot list {prefix!r}")
    else:
        _check_strays(survey.listed, prefix, run_id, keys, problems)
    report.ok = not problems
    return report


async def _read_manifest(
    writer: ObjectWriter, prefix: str, run_id: str, problems: list[str]
) -> Manifest | None:
    key = manifest_key(prefix, run_id)
    try:
        return Manifest.from_json(await writer.get(key))
    except ObjectNotFound:
        problems.append(f"manifest {key} not found")
    except IntegrityError as exc:
        problems.append(f"manifest {key} is unreadable: {exc}")
    return None


async def _check_object(
    writer: ObjectWriter,
    entry: StoredObjectEntry,
    checker: _DuplicateChecker,
    problems: list[str],
    *,
    raw: bool = False,
) -> int:
    """Check one object; return how many records it decoded to. ``raw``: a raw capture object,
    whose lines are recording lines, not trades."""
    key = entry.key
    try:
        body = await writer.get(key)
    except ObjectNotFound:
        problems.append(f"{key}: missing (listed in the manifest, not in storage)")
        return 0
    if len(body) != entry.bytes:
        problems.append(f"{key}: size is {len(body)} bytes, manifest says {entry.bytes}")
    digest = sha256_hex(body)
    if digest != entry.sha256:
        problems.append(f"{key}: sha256 is {digest}, manifest says {entry.sha256}")
    if entry.kind == OUTPUT_KIND:
        return entry.records  # a batch output: any bytes, checked by size and checksum only
    try:
        records = decode_body(body, format_from_key(key))
    except IntegrityError as exc:
        problems.append(f"{key}: cannot decode: {exc}")
        return 0
    if len(records) != entry.records:
        problems.append(f"{key}: holds {len(records)} records, manifest says {entry.records}")
    if raw:
        bad = sum(1 for obj in records if not _is_recording_line(obj))
        if bad:
            problems.append(f"{key}: {bad} lines are not recording lines")
        if entry.symbols:
            problems.append(f"{key}: a raw object lists trade ids in the manifest")
        return len(records)
    symbols: dict[str, list[str]] = {}
    invalid = 0
    for obj in records:
        try:
            trade = Trade.from_dict(obj)
        except ValueError:
            invalid += 1
            continue
        name = f"{trade.exchange}:{trade.symbol}"
        checker.add(name, trade.trade_id, key)
        ids = symbols.get(name)
        if ids is None:
            symbols[name] = [trade.trade_id, trade.trade_id]
        else:
            ids[1] = trade.trade_id
    if invalid:
        problems.append(f"{key}: {invalid} records are not valid trades")
    found = {name: (ids[0], ids[1]) for name, ids in symbols.items()}
    if not invalid and found != entry.symbols:
        problems.append(f"{key}: first/last trade ids per symbol {found} differ from the manifest")
    return len(records)


def _is_recording_line(obj: dict[str, object]) -> bool:
    """A line of the recording format: int ``ts``, str ``exchange``, ``dir`` in/out, str
    ``frame`` (``url``, when present, a string)."""
    ts, url = obj.get("ts"), obj.get("url")
    return (
        isinstance(ts, int)
        and not isinstance(ts, bool)
        and isinstance(obj.get("exchange"), str)
        and obj.get("dir") in ("in", "out")
        and isinstance(obj.get("frame"), str)
        and (url is None or isinstance(url, str))
    )


class _DuplicateChecker:
    """Finds trade ids seen more than once across a run's objects."""

    def __init__(self, problems: list[str]) -> None:
        self._problems = problems
        self._seen: dict[str, dict[str, str]] = {}
        self._duplicates = 0

    def add(self, symbol: str, trade_id: str, key: str) -> None:
        seen = self._seen.setdefault(symbol, {})
        first_key = seen.get(trade_id)
        if first_key is None:
            seen[trade_id] = key
            return
        self._duplicates += 1
        if self._duplicates <= MAX_DUPLICATES_LISTED:
            where = "again in the same object" if first_key == key else f"first in {first_key}"
            self._problems.append(f"duplicate trade id {symbol}:{trade_id} in {key} ({where})")

    def finish(self) -> None:
        extra = self._duplicates - MAX_DUPLICATES_LISTED
        if extra > 0:
            self._problems.append(f"... and {extra} more duplicate trade ids")


def _check_strays(
    listed: list[ListedObject], prefix: str, run_id: str, keys: set[str], problems: list[str]
) -> None:
    manifest = manifest_key(prefix, run_id)
    marker = sanitize(run_id)
    for obj in listed:
        if marker in obj.key and obj.key not in keys and obj.key != manifest:
            problems.append(f"{obj.key}: stray object of this run, not in the manifest")
