"""Recovery of what earlier runs left in ``SPILL_DIR``: upload it, complete the proof.

See docs/operations.md (spill and recovery).

:func:`recover_spilled` is what a run does at its start, beside ingest: for every earlier run
with windows or a manifest in the spill directory (runs of another destination are left alone,
and so is the current run's own directory, and their locks are not taken), whose lock this
process claims (:func:`sinks.spilllock.claim_run_lock`: a run alive in another process, or
being recovered by one, is skipped) and holds until it is done with that run, reading that
run's spill again once it holds it (another recovery may have done it since the first scan):

1. the run's *base manifest* is its spilled manifest if there is one (its manifest write had
   failed: the spilled one is the newest), else its manifest in the store, else none (the run
   was killed before writing one);
2. each spilled window is read back (one body in memory at a time, checked against its sidecar)
   and put to its original key (deterministic: a put that already happened is replaced by the
   same bytes, never a second object);
3. with a base manifest, an updated manifest is written to the run's own manifest key: the
   uploaded windows join ``objects`` (once each), leave ``spilled``, and are listed in
   ``recovered`` (key, when, by which run); ``status`` becomes ``complete`` when something was
   recovered, nothing is left spilled and the run recorded no error, so ``feedvault verify`` on
   that run passes once everything is durable. A spilled manifest with nothing to recover is
   uploaded as it is;
4. only then are files removed: the spilled manifest first, then the windows' files. Until the
   updated manifest is durable nothing is removed, so an interrupted recovery (the store down
   again, a cancellation, a crash) loses nothing and is simply done again by the next attempt
   (idempotent: objects are merged by key, ``recovered`` keeps the first time a key was
   recovered). Without a base manifest a window's files are removed once its upload is
   durable; the run stays a run without a manifest (``verify`` reports it).

The first storage failure ends the attempt (:attr:`RecoveryReport.storage_error`): the store is
down, what is left stays on disk for a later attempt. A file that cannot be read back is
reported, left in place and stays named in the run's ``spilled``.

Nothing is ever written outside the destination's prefix: a key read from the spill is data
from disk, checked by :func:`sinks.spill.check_key_under` before anything is put. A window whose
sidecar names a key that leaves the prefix (``../``, another prefix, an absolute key) is
refused like an unreadable file (reported, left in place, never uploaded); a run whose manifest
key would leave it (a spilled manifest naming another key, a run id with ``/``) is refused
whole, like a malformed manifest.

Last, the directories of dead runs that spilled nothing (a run killed with nothing spilled
leaves its ``.lock``) lose their lock file and, once empty, themselves
(:func:`sinks.spilllock.clear_dead_locks`: a lock a live process holds is left alone).

Cancel-safe at every await (see 4.). Blocking file I/O runs in worker threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from engine.clock import Clock
from engine.errors import IntegrityError, ObjectNotFound, StorageError
from engine.logs import get_logger, log_event
from engine.retry import Jitter, RetryPolicy
from sinks.manifest import Manifest, Recovered, StoredObjectEntry, iso_utc, manifest_key
from sinks.spill import (
    SpilledEntry,
    SpilledManifest,
    SpillScan,
    check_key_under,
    read_spilled,
    remove_spilled,
    remove_spilled_manifest,
    scan_spilled,
)
from sinks.spilllock import RunLock, claim_run_lock, clear_dead_locks
from sinks.windowing import ClosedWindow
from sinks.writer import ObjectWriter, StoredObject

log = get_logger("recovery")  # under "feedvault": JSON lines, redacted

RECOVERY_RETRY: Final = RetryPolicy(initial=1.0, cap=30.0, jitter=Jitter.NONE)
"""The wait before the next :func:`recover_spilled` attempt while the store fails (the report is
not :attr:`~RecoveryReport.done`): ``RECOVERY_RETRY.delay(n)`` after failed attempt ``n`` (from
0), 1 s doubling up to 30 s. No jitter: one recovery per process, against its own store."""


@dataclass(slots=True)
class RecoveryReport:
    """What one :func:`recover_spilled` attempt did."""

    uploaded: list[str] = field(default_factory=list)
    """Keys of windows made durable in the store."""
    manifests: list[str] = field(default_factory=list)
    """Runs whose manifest was (re)written."""
    complete_runs: list[str] = field(default_factory=list)
    """Runs whose rewritten manifest is ``complete``."""
    left: int = 0
    """Windows of this destination still on disk, ``stuck`` ones included."""
    stuck: int = 0
    """Windows left that another attempt would not help: unreadable files, keys that leave the
    prefix, or a run whose manifest is malformed or refused (see ``problems``)."""
    other_destinations: int = 0
    """Windows and manifests of other destinations, left alone."""
    problems: list[str] = field(default_factory=list)
    """Files that could not be read back, keys refused for leaving the prefix, malformed
    manifests (all left in place)."""
    storage_error: str | None = None
    """The storage failure that ended the attempt, if one did."""
    live: list[str] = field(default_factory=list)
    """Runs skipped because they are alive in another process (:mod:`sinks.spilllock`)."""
    cleared_locks: list[str] = field(default_factory=list)
    """Run directories of dead runs with nothing spilled whose leftover lock was removed."""

    @property
    def worth_logging(self) -> bool:
        """Whether the attempt did, found or met anything (else it is not logged)."""
        return bool(
            self.uploaded
            or self.cleared_locks
            or self.manifests
            or self.left
            or self.problems
            or self.other_destinations
            or self.live
            or self.storage_error
        )

    @property
    def done(self) -> bool:
        """Nothing retryable is left: no storage failure and nothing left on disk that could
        still be uploaded."""
        return self.storage_error is None and self.left <= self.stuck


def belongs_to(destination: str | None, key: str, *, current: str, prefix: str) -> bool:
    """Whether a spilled item of ``destination`` (None: recorded before destinations were)
    belongs to the current destination ``current`` with key prefix ``prefix``."""
    if destination is None:
        return key.startswith(prefix)
    return destination == current


async def recover_spilled(
    writer: ObjectWriter,
    spill_dir: Path,
    *,
    destination: str,
    prefix: str,
    current_run: str,
    clock: Clock,
) -> RecoveryReport:
    """One recovery attempt over ``spill_dir`` (see the module docstring). Never raises for a
    storage failure or an unreadable file: both are in the report."""
    report = RecoveryReport()
    scan: SpillScan = await asyncio.to_thread(scan_spilled, spill_dir)
    report.problems += scan.problems
    for run_id in scan.run_ids:
        if run_id == current_run:
            continue
        seen = _RunSpill.of(scan, run_id, destination, prefix)
        if not seen.ours:
            # Nothing of this destination: not ours to claim (its own destination's next run
            # must find the lock free), only counted.
            report.other_destinations += seen.others
            continue
        try:
            lock = await _claim(spill_dir, run_id)
        except StorageError as exc:  # alive or not is unknown: leave it for the next attempt
            report.problems.append(f"run {run_id}: {exc}")
            report.left += len(seen.mine)
            log_event(log, logging.WARNING, "recovery_claim_failed", run_id=run_id, error=str(exc))
            continue
        if lock is None:
            report.live.append(run_id)  # alive, or being recovered by another process
            continue
        try:
            if not lock.locked:
                log_event(
                    log, logging.WARNING, "recovery_unlocked", run_id=run_id, problem=lock.problem
                )
            # What is there now that the run is ours: another recovery may have done (some
            # of) it since the scan above.
            fresh = await asyncio.to_thread(scan_spilled, spill_dir, run_id)
            stop = await _recover_claimed(
                writer,
                run_id,
                _RunSpill.of(fresh, run_id, destination, prefix),
                prefix,
                current_run,
                clock,
                report,
            )
        finally:
            await asyncio.to_thread(lock.release)
        if stop:
            break
    cleared, problems = await asyncio.to_thread(clear_dead_locks, spill_dir, skip=current_run)
    report.cleared_locks += cleared
    report.problems += problems
    return report


@dataclass(frozen=True)
class _RunSpill:
    """What one run left in a scan, split by destination."""

    mine: list[SpilledEntry]
    """Its windows of the current destination."""
    manifest: SpilledManifest | None
    """Its spilled manifest, if it is of the current destination."""
    others: int
    """Its windows and manifest of other destinations."""

    @property
    def ours(self) -> bool:
        return bool(self.mine) or self.manifest is not None

    @classmethod
    def of(cls, scan: SpillScan, run_id: str, destination: str, prefix: str) -> _RunSpill:
        entries = [e for e in scan.entries if e.run_id == run_id]
        mine = [
            e
            for e in entries
            if belongs_to(e.destination, e.key, current=destination, prefix=prefix)
        ]
        manifest = scan.manifests.get(run_id)
        others = len(entries) - len(mine)
        if manifest is not None and not belongs_to(
            manifest.destination, manifest.key, current=destination, prefix=prefix
        ):
            manifest, others = None, others + 1
        return cls(mine, manifest, others)


async def _claim(spill_dir: Path, run_id: str) -> RunLock | None:
    """:func:`claim_run_lock` in a worker thread; cancel-safe: a lock the thread takes after
    a cancellation is released, not leaked."""
    claim = asyncio.ensure_future(asyncio.to_thread(claim_run_lock, spill_dir, run_id))
    try:
        return await asyncio.shield(claim)
    except asyncio.CancelledError:
        claim.add_done_callback(_release_unused)
        raise


def _release_unused(claim: asyncio.Future[RunLock | None]) -> None:
    if not claim.cancelled() and claim.exception() is None and (lock := claim.result()):
        lock.release()


async def _recover_claimed(
    writer: ObjectWriter,
    run_id: str,
    spill: _RunSpill,
    prefix: str,
    current_run: str,
    clock: Clock,
    report: RecoveryReport,
) -> bool:
    """Recover one run this process has claimed; True when a storage failure ends the
    attempt (the rest waits for the next one)."""
    report.other_destinations += spill.others
    report.left += len(spill.mine)
    if not spill.ours:
        return False  # done by another recovery since the scan
    try:
        await _recover_run(
            writer, run_id, spill.mine, spill.manifest, prefix, current_run, clock, report
        )
    except IntegrityError as exc:  # a malformed manifest: leave this run as it is
        report.problems.append(f"run {run_id}: {exc}")
        report.stuck += len(spill.mine)
        log_event(log, logging.ERROR, "recovery_run_failed", run_id=run_id, error=str(exc))
    except StorageError as exc:
        report.storage_error = str(exc)
        log_event(log, logging.WARNING, "recovery_run_stopped", run_id=run_id, error=str(exc))
        return True
    return False


async def _recover_run(
    writer: ObjectWriter,
    run_id: str,
    entries: list[SpilledEntry],
    spilled_manifest: SpilledManifest | None,
    prefix: str,
    current_run: str,
    clock: Clock,
    report: RecoveryReport,
) -> None:
    own_key = manifest_key(prefix, run_id)
    check_key_under(prefix, own_key, f"run {run_id}'s manifest")  # a run id with "/" or ".."
    if spilled_manifest is not None:
        check_key_under(prefix, spilled_manifest.key, f"spilled manifest {spilled_manifest.path}")
        if spilled_manifest.key != own_key:
            raise IntegrityError(
                f"spilled manifest {spilled_manifest.path} names key "
                f"{spilled_manifest.key!r}, not its run's {own_key!r}: refused"
            )
    base = await _base_manifest(writer, prefix, run_id, spilled_manifest)  # before any put
    uploaded: list[tuple[SpilledEntry, ClosedWindow, StoredObject, int]] = []
    for entry in entries:
        try:
            check_key_under(prefix, entry.key, f"spill sidecar {entry.sidecar}")
            spilled = await asyncio.to_thread(read_spilled, entry)
        except StorageError as exc:  # IntegrityError included: the file is left in place
            report.problems.append(str(exc))
            report.stuck += 1
            continue
        stored = await writer.put(entry.key, spilled.window.body)
        uploaded.append((entry, spilled.window, stored, clock.time_ns()))
        if base is None:
            # No manifest to complete: the upload is what makes it durable.
            await _remove(entry, report)
    if base is not None:
        updated = updated_manifest(
            base,
            [StoredObjectEntry.of(window, stored, at) for _, window, stored, at in uploaded],
            recovered_by=current_run,
            now_ns=clock.time_ns(),
        )
        await writer.put(own_key, updated.to_json())
        report.manifests.append(run_id)
        if updated.status == "complete":
            report.complete_runs.append(run_id)
        if spilled_manifest is not None:
            await asyncio.to_thread(remove_spilled_manifest, spilled_manifest)
        for entry, *_ in uploaded:
            await _remove(entry, report)
    elif uploaded:
        log_event(  # a run killed before its manifest: its windows go up without one
            log, logging.WARNING, "recovery_without_manifest", run_id=run_id, windows=len(uploaded)
        )
    report.uploaded += [entry.key for entry, *_ in uploaded]


async def _base_manifest(
    writer: ObjectWriter, prefix: str, run_id: str, spilled: SpilledManifest | None
) -> Manifest | None:
    if spilled is not None:
        return Manifest.from_json(spilled.body)
    try:
        body = await writer.get(manifest_key(prefix, run_id))
    except ObjectNotFound:
        return None
    return Manifest.from_json(body)


async def _remove(entry: SpilledEntry, report: RecoveryReport) -> None:
    await asyncio.to_thread(remove_spilled, entry)
    report.left -= 1


def updated_manifest(
    base: Manifest, uploaded: list[StoredObjectEntry], *, recovered_by: str, now_ns: int
) -> Manifest:
    """``base`` with ``uploaded`` (windows it had left spilled, now durable) recorded: they
    join ``objects`` (a key already there is not added twice), leave ``spilled`` and are listed
    in ``recovered`` (a key already there keeps its first entry). ``status`` becomes
    ``complete`` when something was uploaded, nothing is left spilled or lost, ``error`` is
    None and the run finished (a ``running`` manifest, of a killed run, stays ``running``);
    everything else (counters, gaps, stop reason, times) is the run's own and is kept."""
    keys = {entry.key for entry in base.objects}
    objects = list(base.objects)
    for entry in uploaded:
        if entry.key not in keys:
            keys.add(entry.key)
            objects.append(entry)
    done = {entry.key for entry in uploaded}
    spilled = [key for key in base.spilled if key not in done]
    already = {item["key"] for item in base.recovered}
    at = iso_utc(now_ns)
    recovered = list(base.recovered) + [
        Recovered(key=entry.key, recovered_at=at, recovered_by=recovered_by)
        for entry in uploaded
        if entry.key not in already
    ]
    status = base.status
    # A run killed before its end left its running manifest: what is recovered joins it, and
    # it stays a run that never finished. Windows it lost are not made whole by recovery.
    if uploaded and not spilled and base.error is None and not base.lost and status != "running":
        status = "complete"
    return dataclasses.replace(
        base, status=status, objects=objects, spilled=spilled, recovered=recovered
    )
