"""Disk spill (docs: operations.md): the windows and manifests the store could not make durable.

Layout under ``SPILL_DIR`` (every path segment sanitized, so a key cannot escape it)::

    <spill_dir>/<run_id>/<key path>                  a window's body, as it would be uploaded
    <spill_dir>/<run_id>/<key path>.spill.json       its sidecar: key, records, sha256, ts_event
                                                     range, trade ids, format, destination
    <spill_dir>/<run_id>/@manifest.spill.json        the run's manifest, when it could not be
                                                     written (key, destination, the manifest)

Durability: every file is written atomically and fsynced (:func:`~sinks.fsutil.atomic_write`),
the sidecar after the body. A window is *spilled* (durable on local disk) once its sidecar
exists: :func:`scan_spilled` and :func:`load_spilled` ignore a body without a sidecar. A
sanitized segment never starts with ``@``, so the manifest file cannot collide with a window.

``destination`` (the run's ``s3://bucket/prefix/`` or ``file:///dir/``) is recorded so that a
later run only uploads what belongs to its own destination (:mod:`sinks.recovery`); sidecars
written before it existed have none (``None``).

Removal (:func:`remove_spilled`, :func:`remove_spilled_manifest`) is the caller's decision,
made only once the window (and the manifest naming it) is durable in the store.

A key read back from a sidecar or a spilled manifest is only data from disk: before it is
written anywhere it must pass :func:`check_key_under` (under the destination's prefix, made of
the segments :mod:`sinks.keys` renders), so a tampered or foreign file cannot send a write
outside the prefix.

Blocking file I/O throughout: call from a worker thread (``asyncio.to_thread``) in async code.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from engine.errors import IntegrityError, StorageError
from engine.text import plural
from sinks.fsutil import atomic_write
from sinks.keys import sanitize
from sinks.manifest import JSON_OPTIONS as MANIFEST_JSON_OPTIONS
from sinks.windowing import ClosedWindow
from sinks.writer import sha256_hex

SIDECAR_SUFFIX: Final = ".spill.json"
MANIFEST_FILE: Final = "@manifest.spill.json"
SPILL_VERSION: Final = 2
_MALFORMED: Final = (
    orjson.JSONDecodeError,
    KeyError,
    TypeError,
    ValueError,
    IndexError,
    AttributeError,
)
_KEY_SEGMENT: Final = re.compile(r"[A-Za-z0-9._=-]+")
"""A segment of any key :mod:`sinks.keys` renders (a validated prefix's, a template's literal
text, sanitized values)."""


@dataclass(frozen=True, slots=True)
class SpilledEntry:
    """One spilled window on disk (read from its sidecar; the body is not held)."""

    key: str
    run_id: str
    path: Path
    sidecar: Path
    records: int
    bytes: int
    sha256: str
    destination: str | None = None


@dataclass(frozen=True, slots=True)
class SpilledWindow:
    """A spilled window read back: ready to upload again with ``window.key``/``window.body``."""

    entry: SpilledEntry
    window: ClosedWindow


@dataclass(frozen=True, slots=True)
class SpilledManifest:
    """A run's manifest that could not be written to the store: ``body`` goes to ``key``."""

    run_id: str
    key: str
    body: bytes
    path: Path
    destination: str | None = None


@dataclass(slots=True)
class SpillScan:
    """What :func:`scan_spilled` found: windows by key order, manifests by run id, and one line
    per file that could not be read (left in place)."""

    entries: list[SpilledEntry] = field(default_factory=list)
    manifests: dict[str, SpilledManifest] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def run_ids(self) -> list[str]:
        """Every run with something spilled, sorted."""
        return sorted({entry.run_id for entry in self.entries} | set(self.manifests))


@dataclass(frozen=True, slots=True)
class SpillDir:
    """The spill directory of one run: where its sink parks windows it could not upload.

    ``spill``/``read``/``remove`` are blocking (call them through ``asyncio.to_thread``)."""

    root: Path
    run_id: str
    destination: str | None = None

    def spill(self, window: ClosedWindow) -> SpilledEntry:
        """Write one window; durable on local disk when this returns. :class:`StorageError`
        if it could not be written."""
        [entry] = spill_windows([window], self.root, self.run_id, destination=self.destination)
        return entry

    def read(self, entry: SpilledEntry) -> ClosedWindow:
        """The window of ``entry``, checked against its sidecar (:func:`read_spilled`)."""
        return read_spilled(entry).window

    def remove(self, entry: SpilledEntry) -> None:
        """Delete ``entry``'s files (:func:`remove_spilled`)."""
        remove_spilled(entry)


def run_dir(spill_dir: Path, run_id: str) -> Path:
    """The directory of ``run_id``'s spill (its name sanitized)."""
    return Path(spill_dir, sanitize(run_id))


def spill_path(spill_dir: Path, run_id: str, key: str) -> Path:
    """Where the body of ``key`` is spilled (every segment sanitized)."""
    segments = [sanitize(segment) for segment in key.split("/")]
    return Path(run_dir(spill_dir, run_id), *segments)


class SpillFailed(StorageError):
    """Some windows could not be written to the spill directory (full, gone, read-only).

    ``entries``: the windows that were written (on disk, with their sidecars); ``failures``:
    each window that was not, with the reason. Nothing of a failed window is left on disk."""

    def __init__(
        self, entries: list[SpilledEntry], failures: list[tuple[ClosedWindow, str]]
    ) -> None:
        super().__init__(
            f"could not spill {plural(len(failures), 'window')}: "
            + "; ".join(f"{window.key}: {reason}" for window, reason in failures)
        )
        self.entries = entries
        self.failures = failures


def spill_windows(
    windows: Iterable[ClosedWindow],
    spill_dir: Path,
    run_id: str,
    *,
    destination: str | None = None,
) -> list[SpilledEntry]:
    """Write ``windows`` to ``spill_dir``; return their entries, in order.

    Tries every window; if any could not be written raises :class:`SpillFailed` naming them
    (those that were written are on disk with their sidecars; a failed one leaves no file).
    Spilling a window again (same key) replaces its files atomically.
    """
    entries: list[SpilledEntry] = []
    failures: list[tuple[ClosedWindow, str]] = []
    for window in windows:
        path = spill_path(spill_dir, run_id, window.key)
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        digest = sha256_hex(window.body)
        meta = {
            "spill_version": SPILL_VERSION,
            "run_id": run_id,
            "key": window.key,
            "destination": destination,
            "records": window.records,
            "bytes": len(window.body),
            "sha256": digest,
            "window_start_ns": window.window_start_ns,
            "first_ts_event": window.first_ts_event,
            "last_ts_event": window.last_ts_event,
            "symbols": {name: list(ids) for name, ids in window.symbols.items()},
            "format": window.format,
        }
        body_written = False
        try:
            atomic_write(path, window.body)
            body_written = True
            atomic_write(sidecar, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        except OSError as exc:
            if body_written:  # a body without its (matching) sidecar is not a spill
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            failures.append((window, f"{type(exc).__name__}: {exc}"))
            continue
        entries.append(
            SpilledEntry(
                key=window.key,
                run_id=run_id,
                path=path,
                sidecar=sidecar,
                records=window.records,
                bytes=len(window.body),
                sha256=digest,
                destination=destination,
            )
        )
    if failures:
        raise SpillFailed(entries, failures)
    return entries


def check_key_under(prefix: str, key: str, what: str = "spilled") -> None:
    """Refuse a key read back from the spill that does not stay under ``prefix`` (a validated
    prefix ending with ``/``, or empty for the bucket root): it must start with ``prefix`` and
    every ``/``-separated segment after it must be non-empty, made of ``[A-Za-z0-9._=-]`` and
    not ``.`` or ``..`` (no absolute key, no ``../``, no other prefix). Raises
    :class:`IntegrityError` naming ``what`` and the key."""
    rest = key[len(prefix) :] if key.startswith(prefix) else None
    if rest is None or not all(
        _KEY_SEGMENT.fullmatch(segment) and segment not in (".", "..")
        for segment in rest.split("/")
    ):
        raise IntegrityError(
            f"{what} key {key!r} leaves the destination prefix {prefix!r}: refused"
        )


def scan_spilled(spill_dir: Path, run_id: str | None = None) -> SpillScan:
    """Every spilled window (sidecars only: no body is read) and manifest under ``spill_dir``
    (of ``run_id`` if given). A malformed sidecar or manifest file is reported in
    :attr:`SpillScan.problems` and skipped, never removed."""
    scan = SpillScan()
    root = run_dir(spill_dir, run_id) if run_id is not None else Path(spill_dir)
    if not root.is_dir():
        return scan
    for directory, _dirs, files in os.walk(root):
        for name in sorted(files):
            path = Path(directory, name)
            try:
                if name == MANIFEST_FILE:
                    manifest = _read_manifest_file(path)
                    scan.manifests[manifest.run_id] = manifest
                elif name.endswith(SIDECAR_SUFFIX) and not name.startswith("."):
                    meta = _read_sidecar(path)
                    scan.entries.append(
                        _entry(meta, path, path.with_name(name[: -len(SIDECAR_SUFFIX)]))
                    )
            except StorageError as exc:
                scan.problems.append(str(exc))
    scan.entries.sort(key=lambda entry: (entry.run_id, entry.key))
    return scan


def read_spilled(entry: SpilledEntry) -> SpilledWindow:
    """Read ``entry``'s body and sidecar back. :class:`IntegrityError` if the sidecar is
    malformed or the body does not match its recorded size and sha256, :class:`StorageError`
    if a file cannot be read."""
    meta = _read_sidecar(entry.sidecar)
    body = _read(entry.path, "spilled window")
    try:
        window = ClosedWindow(
            key=str(meta["key"]),
            body=body,
            records=int(meta["records"]),
            window_start_ns=int(meta["window_start_ns"]),
            first_ts_event=int(meta["first_ts_event"]),
            last_ts_event=int(meta["last_ts_event"]),
            symbols={str(n): (str(ids[0]), str(ids[1])) for n, ids in meta["symbols"].items()},
            format=str(meta["format"]),
        )
    except _MALFORMED as exc:
        raise IntegrityError(f"malformed spill sidecar {entry.sidecar}: {exc!r}") from exc
    fresh = _entry(meta, entry.sidecar, entry.path)
    if len(body) != fresh.bytes or sha256_hex(body) != fresh.sha256:
        raise IntegrityError(
            f"spilled body {entry.path} does not match its sidecar (size or sha256)"
        )
    return SpilledWindow(entry=fresh, window=window)


def load_spilled(spill_dir: Path, run_id: str | None = None) -> list[SpilledWindow]:
    """Every spilled window under ``spill_dir`` (of ``run_id`` if given), bodies included,
    sorted by run id and key. Holds every body in memory: for tests and small spills; the
    recovery reads one window at a time (:func:`scan_spilled`, :func:`read_spilled`).

    Raises :class:`IntegrityError` if a sidecar is malformed or its body does not match the
    recorded size and sha256, :class:`StorageError` if a file cannot be read.
    """
    scan = scan_spilled(spill_dir, run_id)
    if scan.problems:
        raise IntegrityError("; ".join(scan.problems))
    return [read_spilled(entry) for entry in scan.entries]


def remove_spilled(entry: SpilledEntry) -> None:
    """Delete a spilled window once it is durable elsewhere (sidecar first, so a crash in
    between leaves a body without a sidecar, which is ignored)."""
    try:
        entry.sidecar.unlink(missing_ok=True)
        entry.path.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot remove spilled {entry.key!r}: {exc}") from exc


def spill_manifest(
    spill_dir: Path, run_id: str, key: str, body: bytes, *, destination: str | None = None
) -> SpilledManifest:
    """Write a manifest that could not be stored (``body`` is its JSON) next to the run's
    spilled windows; durable on local disk when this returns. :class:`StorageError` if it
    could not be written."""
    path = run_dir(spill_dir, run_id) / MANIFEST_FILE
    try:
        manifest = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"manifest body is not JSON: {exc}") from exc
    document = {
        "spill_version": SPILL_VERSION,
        "run_id": run_id,
        "key": key,
        "destination": destination,
        "manifest": manifest,
    }
    try:
        atomic_write(path, orjson.dumps(document, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise StorageError(f"could not spill the manifest {key!r}: {exc}") from exc
    return SpilledManifest(run_id, key, body, path, destination)


def load_spilled_manifest(spill_dir: Path, run_id: str) -> SpilledManifest | None:
    """The spilled manifest of ``run_id``, or None. :class:`StorageError` (or its
    :class:`IntegrityError`) if it exists but cannot be read."""
    path = run_dir(spill_dir, run_id) / MANIFEST_FILE
    if not path.exists():
        return None
    return _read_manifest_file(path)


def remove_spilled_manifest(manifest: SpilledManifest) -> None:
    """Delete a spilled manifest once the manifest is durable in the store."""
    try:
        manifest.path.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot remove spilled manifest {manifest.path}: {exc}") from exc


def _read(path: Path, what: str) -> bytes:
    """The bytes of ``path``; :class:`StorageError` ``cannot read <what> <path>: ...``."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read {what} {path}: {exc}") from exc


def _read_sidecar(sidecar: Path) -> dict[str, Any]:
    data = _read(sidecar, "spill sidecar")
    try:
        meta = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise IntegrityError(f"malformed spill sidecar {sidecar}: {exc!r}") from exc
    if not isinstance(meta, dict):
        raise IntegrityError(f"malformed spill sidecar {sidecar}: not a JSON object")
    return meta


def _entry(meta: dict[str, Any], sidecar: Path, path: Path) -> SpilledEntry:
    try:
        destination = meta.get("destination")
        return SpilledEntry(
            key=str(meta["key"]),
            run_id=str(meta["run_id"]),
            path=path,
            sidecar=sidecar,
            records=int(meta["records"]),
            bytes=int(meta["bytes"]),
            sha256=str(meta["sha256"]),
            destination=None if destination is None else str(destination),
        )
    except _MALFORMED as exc:
        raise IntegrityError(f"malformed spill sidecar {sidecar}: {exc!r}") from exc


def _read_manifest_file(path: Path) -> SpilledManifest:
    data = _read(path, "spilled manifest")
    try:
        document = orjson.loads(data)
        body = orjson.dumps(document["manifest"], option=MANIFEST_JSON_OPTIONS)
        destination = document.get("destination")
        manifest = SpilledManifest(
            run_id=str(document["run_id"]),
            key=str(document["key"]),
            body=body,
            path=path,
            destination=None if destination is None else str(destination),
        )
    except _MALFORMED as exc:
        raise IntegrityError(f"malformed spilled manifest {path}: {exc!r}") from exc
    return manifest
