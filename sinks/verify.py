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

Gaps recorded in the manifest are reported but are not problems. The report is ``ok`` only when
there are no problems. Objects are checked one at a time; memory holds one object plus the set
of trade ids seen.
"""

from __future__ import annotations

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
from sinks.writer import ObjectWriter, sha256_hex

#: At most this many duplicate trade ids are listed one by one.
MAX_DUPLICATES_LISTED: Final = 10


@dataclass(slots=True)
class VerifyReport:
    """The outcome of :func:`verify_run`."""

    run_id: str | None
    ok: bool
    problems: list[str] = field(default_factory=list)
    objects: int = 0
    records: int = 0
    gaps: dict[str, list[Gap]] = field(default_factory=dict)

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
        return "\n".join(lines)


async def find_latest_run(writer: ObjectWriter, prefix: str) -> str | None:
    """The newest run id with a manifest under ``prefix`` (greatest in sort order), or None."""
    listed = await writer.list(f"{prefix}{MANIFEST_DIR}")
    run_ids = [
        obj.key[len(prefix) + len(MANIFEST_DIR) : -len(".json")]
        for obj in listed
        if obj.key.endswith(".json") and "/" not in obj.key[len(prefix) + len(MANIFEST_DIR) :]
    ]
    return max(run_ids) if run_ids else None


async def verify_run(writer: ObjectWriter, prefix: str, run_id: str | None = None) -> VerifyReport:
    """Check a run (the newest when ``run_id`` is None). Never raises for a finding; a storage
    failure other than a missing object propagates as :class:`StorageError`."""
    if run_id is None:
        run_id = await find_latest_run(writer, prefix)
        if run_id is None:
            where = f"{prefix}{MANIFEST_DIR}"
            return VerifyReport(None, False, [f"no run manifest found under {where!r}"])
    report = VerifyReport(run_id, False)
    manifest = await _read_manifest(writer, prefix, run_id, report.problems)
    if manifest is None:
        return report
    problems = report.problems
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
    await _check_strays(writer, prefix, run_id, keys, problems)
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


async def _check_strays(
    writer: ObjectWriter, prefix: str, run_id: str, keys: set[str], problems: list[str]
) -> None:
    manifest = manifest_key(prefix, run_id)
    marker = sanitize(run_id)
    try:
        listed = await writer.list(prefix)
    except StorageError as exc:
        problems.append(f"cannot list {prefix!r} to look for stray objects: {exc}")
        return
    for obj in listed:
        if marker in obj.key and obj.key not in keys and obj.key != manifest:
            problems.append(f"{obj.key}: stray object of this run, not in the manifest")
