"""Verify a run against its manifest (``feedvault verify``, docs: operations.md).

:func:`verify_run` reads the manifest (the newest one under ``{prefix}_manifests/`` when no run
id is given: run ids sort by time) and checks, reporting one line per finding:

- the manifest is readable and valid, its status is ``complete`` and nothing was left spilled;
- every object is present with the recorded size and sha256, decodes, holds the recorded number
  of records, each a valid trade, and its first/last trade ids per symbol match the manifest;
- no (exchange, symbol, trade_id) appears twice across the run's objects;
- book objects (``{prefix}book/...``) are checked as docs/order-books.md#verifying-books says
  (:mod:`sinks.verify_book`: a snapshot at each object's start, restatements exact, sequences
  that never go back except at a resync, resyncs in the data and in the manifest alike);
- raw capture objects (``{prefix}raw/...``, docs: recording-and-replay.md#capture) are checked
  for presence, size, sha256 and record count, and each line must be a recording line (``ts``,
  ``exchange``, ``dir``, ``frame``); they hold no trades, so the trade checks do not apply to them;
- batch job outputs (entries of kind ``output``, docs: batch.md: JSON, CSV, ...) are checked for
  presence, size and sha256 only; their bodies are not decoded and their records not counted;
- no object under the prefix carries the run id without being in the manifest (stray); the
  run id in a key must equal the checked one (``run1`` is not ``run10``, :func:`key_has_run`);
- nothing was lost (the manifest's ``lost`` windows are problems), every key lies under the
  prefix the run wrote under.

**Copies.** The manifest records the key prefix the run wrote under (``prefix``); its keys are
resolved against the verified location by replacing that prefix with the verified one, so a
local mirror (``aws s3 sync s3://b/streaming/t/ ./copy/`` then ``file:///.../copy/``) or a copy
under another bucket or prefix verifies. For older manifests without ``prefix``, it is taken from
the recorded configuration's destination URL, else inferred from the keys (the part before their
``trades/`` or ``raw/`` segment), else the verified prefix (:func:`recorded_prefix`). A key that
does not start with the recorded prefix lies outside the run's prefix: a problem, not fetched.

**Where runs are.** Only manifests directly under ``{prefix}_manifests/`` are runs of the
prefix; objects under a deeper prefix holding manifests (``{prefix}streaming/t/_manifests/``)
belong to the runs there. A prefix with no run of its own but runs below is reported as ``no runs
here; runs found under streaming/t/``, a ``file://`` directory that does not exist as such.

**Unfinished runs.** A manifest with status ``running`` is what a run writes at its start: a run
that still has it either runs now or was killed. It is reported as ``run R never finished
(killed?): N objects of it found`` (not OK); the objects of the run found under the prefix are
checked (decoded, counted, duplicate trade ids) and listed, rather than called stray.

The report also shows the manifest's ``warnings`` (streams subscribed that saw no trade), the
streams that stored no record with their last error, and trade-id ``resets``.

Runs without a manifest (a task of a version that did not write the ``running`` manifest at its
start, killed by SIGKILL or out of memory): every
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

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Final

from engine.errors import ConfigError, IntegrityError, ObjectNotFound, StorageError
from engine.records import Trade
from engine.text import plural
from sinks.encoders import decode_object
from sinks.keys import RAW_DATASET, is_raw_key, sanitize
from sinks.local import FileWriter
from sinks.manifest import (
    MANIFEST_DIR,
    OUTPUT_KIND,
    BookResync,
    Gap,
    Lost,
    Manifest,
    Reset,
    StoredObjectEntry,
    StreamFigures,
    manifest_key,
)
from sinks.verify_book import BookChecker
from sinks.writer import ListedObject, ObjectWriter, parse_destination, sha256_hex

#: At most this many duplicate trade ids are listed one by one.
MAX_DUPLICATES_LISTED: Final = 10
#: At most this many objects of the checked run without a manifest are listed one by one.
MAX_ORPHAN_OBJECTS_LISTED: Final = 20
#: At most this many deeper prefixes holding runs are named by "runs found under".
MAX_NESTED_LISTED: Final = 10
#: The data sets a run's keys start with after its prefix (docs: data-formats.md#object-keys).
_DATASET_SEGMENTS: Final = ("trades/", f"{RAW_DATASET}/")
#: A manifest key relative to the surveyed prefix: ``{sub}_manifests/{run_id}.json``.
_MANIFEST_KEY: Final = re.compile(r"(?P<sub>(?:[^/]+/)*)_manifests/(?P<run>[^/]+)\.json")

#: The file name of an object in the default key layout (docs: data-formats.md#object-keys):
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


def key_has_run(key: str, run_id: str) -> bool:
    """True when ``key`` is an object of run ``run_id``: in the default layout its file name's
    run id equals it exactly; in another layout (a custom ``KEY_TEMPLATE``) the sanitized run id
    appears in the key not preceded or followed by a letter, digit, ``.`` or ``_`` (so ``run1``
    does not match ``run10``'s keys)."""
    found = run_id_of_key(key)
    if found is not None:
        return found == sanitize(run_id)
    marker = re.escape(sanitize(run_id))
    return re.search(rf"(?<![A-Za-z0-9._]){marker}(?![A-Za-z0-9._])", key) is not None


def missing_directory(writer: ObjectWriter) -> str | None:
    """For a ``file://`` location whose directory does not exist, the line saying so."""
    if isinstance(writer, FileWriter) and not writer.root.is_dir():
        return f"directory {writer.root} does not exist"
    return None


def no_runs_here(nested: list[str]) -> str:
    """The line for a prefix without runs of its own and runs under ``nested``."""
    shown = ", ".join(nested[:MAX_NESTED_LISTED])
    more = len(nested) - MAX_NESTED_LISTED
    return f"no runs here; runs found under {shown}" + (f" and {more} more" if more > 0 else "")


def recorded_prefix(manifest: Manifest, location_prefix: str) -> str | None:
    """The key prefix the run of ``manifest`` wrote under, ``None`` when it cannot be told.

    The manifest's ``prefix``; for older manifests without it, the prefix of the destination
    URL recorded in its configuration (``destination``, or ``output`` for a batch job), else
    the prefix that every trade and raw key shares before its ``trades/`` or ``raw/`` segment
    (``location_prefix`` preferred when it is one), else ``location_prefix`` when every key
    starts with it (no objects, or only batch outputs)."""
    if manifest.prefix is not None:
        return manifest.prefix
    for name in ("destination", "output"):
        url = manifest.config.get(name)
        if isinstance(url, str):
            try:
                return parse_destination(url, name).prefix
            except ConfigError:
                pass
    common: set[str] | None = None
    for entry in manifest.objects:
        if entry.kind == OUTPUT_KIND:
            continue
        candidates = {
            entry.key[:at]
            for at in [0, *(i + 1 for i, c in enumerate(entry.key) if c == "/")]
            if entry.key.startswith(_DATASET_SEGMENTS, at)
        }
        common = candidates if common is None else common & candidates
    if common:
        return location_prefix if location_prefix in common else min(common, key=len)
    if common is None and all(e.key.startswith(location_prefix) for e in manifest.objects):
        return location_prefix
    return None


@dataclass(slots=True)
class RunObjects:
    """The objects one run left under the prefix (found by listing, not from a manifest)."""

    run_id: str
    objects: list[ListedObject] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(obj.size for obj in self.objects)

    def line(self) -> str:
        return f"{self.run_id}: {plural(len(self.objects), 'object')}, {plural(self.bytes, 'byte')}"


@dataclass(slots=True)
class PrefixSurvey:
    """What a listing of the prefix shows: run ids with a manifest directly under it, objects
    per run id, and the deeper prefixes holding manifests of their own (``nested``, sorted;
    their objects are in none of the other fields)."""

    manifests: set[str] = field(default_factory=set)
    runs: dict[str, RunObjects] = field(default_factory=dict)
    listed: list[ListedObject] = field(default_factory=list)
    nested: list[str] = field(default_factory=list)

    def without_manifest(self) -> list[RunObjects]:
        """Runs with objects and no manifest, oldest first."""
        return [self.runs[r] for r in sorted(self.runs) if r not in self.manifests]

    def newest_run(self) -> str | None:
        """The greatest run id among runs with a manifest and runs with objects."""
        candidates = self.manifests | self.runs.keys()
        return max(candidates) if candidates else None


async def survey_prefix(writer: ObjectWriter, prefix: str) -> PrefixSurvey:
    """List ``prefix`` once: manifests under ``{prefix}_manifests/``, the objects of each run
    id (by file name, :func:`run_id_of_key`), and the deeper prefixes with manifests, whose
    objects are left out. Raises :class:`StorageError` if listing fails."""
    listed = await writer.list(prefix)
    survey = PrefixSurvey()
    nested: set[str] = set()
    for obj in listed:
        match = _MANIFEST_KEY.fullmatch(obj.key[len(prefix) :])
        if match is not None and match["sub"]:
            nested.add(prefix + match["sub"])
    survey.nested = sorted(nested)
    manifest_dir = f"{prefix}{MANIFEST_DIR}"
    for obj in listed:
        if nested and obj.key.startswith(tuple(nested)):
            continue
        survey.listed.append(obj)
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
    unfinished: list[ListedObject] = field(default_factory=list)
    """The objects found of a run whose manifest is still ``running`` (killed), not listed in
    it; checked and counted in :attr:`objects` and :attr:`records`."""
    warnings: list[str] = field(default_factory=list)
    """The manifest's warnings (streams subscribed that saw no trade)."""
    streams_without_data: dict[str, StreamFigures] = field(default_factory=dict)
    """The manifest's streams that stored no record, with their figures."""
    lost: list[Lost] = field(default_factory=list)
    resets: dict[str, list[Reset]] = field(default_factory=dict)
    recorded_prefix: str | None = None
    """The prefix the run wrote under (:func:`recorded_prefix`); keys are resolved from it to
    the verified prefix."""
    prefix: str = ""
    """The verified prefix."""

    def summary(self) -> str:
        """Human-readable text: a verdict line, counts, problems, gaps and what the run left."""
        verdict = "OK" if self.ok else "FAILED"
        lines = [
            f"run {self.run_id or '?'}: {verdict} "
            f"({plural(self.objects, 'object')}, {plural(self.records, 'record')}, "
            f"{plural(len(self.problems), 'problem')})"
        ]
        if self.recorded_prefix is not None and self.recorded_prefix != self.prefix:
            lines.append(
                f"  a copy: keys written under {self.recorded_prefix!r} "
                f"looked up under {self.prefix!r}"
            )
        lines += [f"  problem: {problem}" for problem in self.problems]
        lines += [f"  warning: {warning}" for warning in self.warnings]
        for name, figures in sorted(self.streams_without_data.items()):
            error = figures["last_error"]
            lines.append(
                f"  no data from {name}: subscribed {figures['subscribed_seconds']:.1f} s, "
                f"{plural(figures['reconnects'], 'reconnect')}"
                + (f", last error: {error}" if error else "")
            )
        for name, resets in sorted(self.resets.items()):
            lines += [
                f"  reset {name}: trade ids went back from {r['from_id']} to {r['to_id']} "
                f"at {r['at']}"
                for r in resets
            ]
        if self.unfinished:
            lines.append(f"  objects of the unfinished run: {len(self.unfinished)}")
            shown = self.unfinished[:MAX_ORPHAN_OBJECTS_LISTED]
            lines += [f"    {obj.key} ({plural(obj.size, 'byte')})" for obj in shown]
            if len(self.unfinished) > len(shown):
                more = plural(len(self.unfinished) - len(shown), "more object")
                lines.append(f"    ... and {more}")
        for name, gaps in sorted(self.gaps.items()):
            missing = sum(gap["missing"] for gap in gaps)
            lines.append(
                f"  gaps {name}: {plural(len(gaps), 'gap')}, {plural(missing, 'trade id')} missing"
            )
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
                lines += [f"      {obj.key} ({plural(obj.size, 'byte')})" for obj in shown]
                if len(run.objects) > len(shown):
                    more = plural(len(run.objects) - len(shown), "more object")
                    lines.append(f"      ... and {more}")
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
            "unfinished_objects": [{"key": obj.key, "bytes": obj.size} for obj in self.unfinished],
            "warnings": self.warnings,
            "streams_without_data": self.streams_without_data,
            "lost": self.lost,
            "resets": self.resets,
            "recorded_prefix": self.recorded_prefix,
        }


async def verify_run(writer: ObjectWriter, prefix: str, run_id: str | None = None) -> VerifyReport:
    """Check a run (the newest, with or without a manifest, when ``run_id`` is None).

    Never raises for a finding. A storage failure other than a missing object propagates as
    :class:`StorageError`, except a failed listing when ``run_id`` is given, which is reported
    as a problem (the manifest's objects are still checked)."""
    missing = missing_directory(writer)
    if missing is not None:
        return VerifyReport(run_id, False, [missing], prefix=prefix)
    survey: PrefixSurvey | None
    list_problem: str | None = None
    if run_id is None:
        survey = await survey_prefix(writer, prefix)
        run_id = survey.newest_run()
        if run_id is None:
            if survey.nested:
                return VerifyReport(None, False, [no_runs_here(survey.nested)], prefix=prefix)
            where = f"{prefix}{MANIFEST_DIR}"
            return VerifyReport(None, False, [f"no run manifest found under {where!r}"])
    else:
        try:
            survey = await survey_prefix(writer, prefix)
        except StorageError as exc:
            survey = None
            list_problem = f"cannot list {prefix!r} to look for stray objects: {exc}"
    report = VerifyReport(run_id, False, prefix=prefix)
    problems = report.problems
    if survey is not None:
        report.runs_without_manifest = survey.without_manifest()
    manifest = await _read_manifest(writer, prefix, run_id, problems)
    found = survey.runs.get(run_id) if survey is not None else None
    if manifest is None:
        if found is not None:
            problems.append(
                f"run {run_id} has no manifest: it left {plural(len(found.objects), 'object')} "
                f"({plural(found.bytes, 'byte')}) under {prefix!r} with no proof that they are "
                "all it received; the task was stopped before writing its manifest (SIGKILL, "
                "out of memory): the run is incomplete"
            )
        elif survey is not None and survey.nested:
            problems.append(no_runs_here(survey.nested))
        if list_problem is not None:
            problems.append(list_problem)
        return report
    _take_notes(report, manifest)
    if manifest.run_id != run_id:
        problems.append(f"manifest names run {manifest.run_id!r}, expected {run_id!r}")
    recorded = recorded_prefix(manifest, prefix)
    report.recorded_prefix = recorded
    if recorded is None:
        problems.append(
            "cannot tell which prefix the run wrote under (the manifest has no 'prefix' and "
            "its keys share none): keys looked up as they are"
        )
        recorded = prefix
    running = manifest.status == "running"
    if running:
        count = len(found.objects) if found is not None else 0
        found_text = plural(count, "object")
        problems.append(f"run {run_id} never finished (killed?): {found_text} of it found")
    elif manifest.status != "complete":
        detail = f": {manifest.error}" if manifest.error else ""
        problems.append(
            f"run status is {manifest.status} (stop reason {manifest.stop_reason}){detail}"
        )
    if manifest.spilled:
        problems.append(
            f"{plural(len(manifest.spilled), 'window', verb=('was', 'were'))} left in the "
            "spill directory: " + ", ".join(manifest.spilled)
        )
    problems += [
        f"{lost['key']}: lost, {plural(lost['records'], 'record')} neither uploaded nor spilled "
        f"({lost['reason']})"
        for lost in manifest.lost
    ]
    checker = _DuplicateChecker(problems, manifest.resets, manifest.resyncs)
    keys: set[str] = set()
    for entry in manifest.objects:
        if not entry.key.startswith(recorded):
            problems.append(f"{entry.key}: outside the run's prefix {recorded!r}, not checked")
            continue
        local = prefix + entry.key[len(recorded) :]
        if local in keys:
            problems.append(f"{local}: listed twice in the manifest")
            continue
        keys.add(local)
        report.objects += 1
        raw = is_raw_key(prefix, local)
        entry = dataclasses.replace(entry, key=local)
        report.records += await _check_object(writer, entry, checker, problems, raw=raw)
    if running and found is not None:
        report.unfinished = [obj for obj in found.objects if obj.key not in keys]
        for obj in report.unfinished:
            report.objects += 1
            raw = is_raw_key(prefix, obj.key)
            report.records += await _check_found(writer, obj.key, checker, problems, raw=raw)
            keys.add(obj.key)
    checker.finish()
    if survey is None:
        problems.append(list_problem or f"cannot list {prefix!r}")
    else:
        _check_strays(survey.listed, prefix, run_id, keys, problems)
    report.ok = not problems
    return report


def _take_notes(report: VerifyReport, manifest: Manifest) -> None:
    """Copy what the report shows of the manifest beyond its objects."""
    report.gaps = manifest.gaps
    report.warnings = list(manifest.warnings)
    report.lost = list(manifest.lost)
    report.resets = dict(manifest.resets)
    report.streams_without_data = {
        name: figures for name, figures in manifest.streams.items() if figures["records"] == 0
    }


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
        problems.append(f"{key}: size is {plural(len(body), 'byte')}, manifest says {entry.bytes}")
    digest = sha256_hex(body)
    if digest != entry.sha256:
        problems.append(f"{key}: sha256 is {digest}, manifest says {entry.sha256}")
    if entry.kind == OUTPUT_KIND:
        return entry.records  # a batch output: any bytes, checked by size and checksum only
    return _check_body(key, body, entry, checker, problems, raw=raw)


async def _check_found(
    writer: ObjectWriter, key: str, checker: _DuplicateChecker, problems: list[str], *, raw: bool
) -> int:
    """Check an object of an unfinished run, which its manifest does not list: it decodes and
    holds valid trades (or recording lines) not seen before. Returns its record count."""
    try:
        body = await writer.get(key)
    except ObjectNotFound:
        problems.append(f"{key}: listed, then gone before it could be read")
        return 0
    return _check_body(key, body, None, checker, problems, raw=raw)


def _check_body(
    key: str,
    body: bytes,
    entry: StoredObjectEntry | None,
    checker: _DuplicateChecker,
    problems: list[str],
    *,
    raw: bool,
) -> int:
    """Check the records of ``body`` (against ``entry`` when there is one); return how many."""
    try:
        records = decode_object(key, body)
    except IntegrityError as exc:
        problems.append(f"{key}: cannot decode: {exc}")
        return 0
    if entry is not None and len(records) != entry.records:
        held = plural(len(records), "record")
        problems.append(f"{key}: holds {held}, manifest says {entry.records}")
    if records and "snapshot" in records[0] and "trade_id" not in records[0]:
        checker.books.add(key, records)  # the book dataset (sinks/verify_book.py)
        if entry is not None and entry.symbols:
            problems.append(f"{key}: a book object lists trade ids in the manifest")
        return len(records)
    if raw:
        bad = sum(1 for obj in records if not _is_recording_line(obj))
        if bad:
            problems.append(f"{key}: {plural(bad, 'line', verb=('is', 'are'))} not recording lines")
        if entry is not None and entry.symbols:
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
        problems.append(f"{key}: {plural(invalid, 'record', verb=('is', 'are'))} not valid trades")
    found = {name: (ids[0], ids[1]) for name, ids in symbols.items()}
    if entry is not None and not invalid and found != entry.symbols:
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
    """Finds trade ids seen more than once across a run's objects, in any order (a late trade
    is stored after higher ids). A symbol whose sequence restarted (``resets`` of the manifest,
    by ``"exchange:symbol"``) may hold an id once per sequence: once plus once per reset."""

    def __init__(
        self,
        problems: list[str],
        resets: dict[str, list[Reset]] | None = None,
        resyncs: dict[str, list[BookResync]] | None = None,
    ) -> None:
        self._problems = problems
        #: The book objects' checks (sinks/verify_book.py), finished with this one.
        self.books = BookChecker(problems, resyncs or {})
        self._seen: dict[str, dict[str, str]] = {}
        self._duplicates = 0
        self._sequences = {name: 1 + len(items) for name, items in (resets or {}).items()}
        self._copies: dict[tuple[str, str], int] = {}

    def add(self, symbol: str, trade_id: str, key: str) -> None:
        seen = self._seen.setdefault(symbol, {})
        first_key = seen.get(trade_id)
        if first_key is None:
            seen[trade_id] = key
            return
        if symbol in self._sequences:
            copies = self._copies.get((symbol, trade_id), 1) + 1
            self._copies[(symbol, trade_id)] = copies
            if copies <= self._sequences[symbol]:
                return
        self._duplicates += 1
        if self._duplicates <= MAX_DUPLICATES_LISTED:
            where = "again in the same object" if first_key == key else f"first in {first_key}"
            self._problems.append(f"duplicate trade id {symbol}:{trade_id} in {key} ({where})")

    def finish(self) -> None:
        self.books.finish()
        extra = self._duplicates - MAX_DUPLICATES_LISTED
        if extra > 0:
            self._problems.append(f"... and {extra} more duplicate trade ids")


def _check_strays(
    listed: list[ListedObject], prefix: str, run_id: str, keys: set[str], problems: list[str]
) -> None:
    manifest = manifest_key(prefix, run_id)
    for obj in listed:
        if obj.key not in keys and obj.key != manifest and key_has_run(obj.key, run_id):
            problems.append(f"{obj.key}: stray object of this run, not in the manifest")
