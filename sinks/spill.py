"""Disk spill (SPEC §5): windows that could not be made durable in the object store.

:func:`spill_windows` writes each window's body to ``spill_dir/<run_id>/<key path>`` and then a
sidecar ``<body>.spill.json`` with everything needed to upload it later (key, records, sha256,
ts_event range, trade ids, format). Both files are written atomically and fsynced, the sidecar
last: a window is spilled (durable on local disk) once its sidecar exists, and
:func:`load_spilled` ignores a body without a sidecar. Every path segment is sanitized, so a key
cannot escape the spill directory.

Blocking file I/O: call from a worker thread (``asyncio.to_thread``) in async code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from engine.errors import IntegrityError, StorageError
from sinks.fsutil import atomic_write
from sinks.keys import sanitize
from sinks.windowing import ClosedWindow
from sinks.writer import sha256_hex

SIDECAR_SUFFIX: Final = ".spill.json"
SPILL_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class SpilledEntry:
    """One spilled window on disk."""

    key: str
    run_id: str
    path: Path
    sidecar: Path
    records: int
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class SpilledWindow:
    """A spilled window read back: ready to upload again with ``window.key``/``window.body``."""

    entry: SpilledEntry
    window: ClosedWindow


def spill_path(spill_dir: Path, run_id: str, key: str) -> Path:
    """Where the body of ``key`` is spilled (every segment sanitized)."""
    segments = [sanitize(segment) for segment in key.split("/")]
    return Path(spill_dir, sanitize(run_id), *segments)


def spill_windows(
    windows: Iterable[ClosedWindow], spill_dir: Path, run_id: str
) -> list[SpilledEntry]:
    """Write ``windows`` to ``spill_dir``; return their entries, in order.

    Tries every window; if any could not be written raises :class:`StorageError` naming them
    (those that were written are on disk with their sidecars).
    """
    entries: list[SpilledEntry] = []
    failures: list[str] = []
    for window in windows:
        path = spill_path(spill_dir, run_id, window.key)
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        digest = sha256_hex(window.body)
        meta = {
            "spill_version": SPILL_VERSION,
            "run_id": run_id,
            "key": window.key,
            "records": window.records,
            "bytes": len(window.body),
            "sha256": digest,
            "window_start_ns": window.window_start_ns,
            "first_ts_event": window.first_ts_event,
            "last_ts_event": window.last_ts_event,
            "symbols": {name: list(ids) for name, ids in window.symbols.items()},
            "format": window.format,
        }
        try:
            atomic_write(path, window.body)
            atomic_write(sidecar, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        except OSError as exc:
            failures.append(f"{window.key}: {exc}")
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
            )
        )
    if failures:
        raise StorageError(f"could not spill {len(failures)} windows: " + "; ".join(failures))
    return entries


def load_spilled(spill_dir: Path, run_id: str | None = None) -> list[SpilledWindow]:
    """Every spilled window under ``spill_dir`` (of ``run_id`` if given), sorted by key.

    Raises :class:`IntegrityError` if a sidecar is malformed or its body does not match the
    recorded size and sha256, :class:`StorageError` if a file cannot be read.
    """
    root = Path(spill_dir, sanitize(run_id)) if run_id is not None else Path(spill_dir)
    found: list[SpilledWindow] = []
    if not root.is_dir():
        return found
    for directory, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(SIDECAR_SUFFIX):
                sidecar = Path(directory, name)
                found.append(_load_one(sidecar, sidecar.with_name(name[: -len(SIDECAR_SUFFIX)])))
    found.sort(key=lambda spilled: (spilled.entry.run_id, spilled.entry.key))
    return found


def remove_spilled(entry: SpilledEntry) -> None:
    """Delete a spilled window once it is durable elsewhere (sidecar first)."""
    try:
        entry.sidecar.unlink(missing_ok=True)
        entry.path.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot remove spilled {entry.key!r}: {exc}") from exc


def _load_one(sidecar: Path, path: Path) -> SpilledWindow:
    try:
        meta_bytes = sidecar.read_bytes()
        body = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read spilled window {sidecar}: {exc}") from exc
    try:
        meta: dict[str, Any] = orjson.loads(meta_bytes)
        key = str(meta["key"])
        records = int(meta["records"])
        size = int(meta["bytes"])
        digest = str(meta["sha256"])
        window = ClosedWindow(
            key=key,
            body=body,
            records=records,
            window_start_ns=int(meta["window_start_ns"]),
            first_ts_event=int(meta["first_ts_event"]),
            last_ts_event=int(meta["last_ts_event"]),
            symbols={str(n): (str(ids[0]), str(ids[1])) for n, ids in meta["symbols"].items()},
            format=str(meta["format"]),
        )
        run_id = str(meta["run_id"])
    except (
        orjson.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        AttributeError,
    ) as exc:
        raise IntegrityError(f"malformed spill sidecar {sidecar}: {exc!r}") from exc
    if len(body) != size or sha256_hex(body) != digest:
        raise IntegrityError(f"spilled body {path} does not match its sidecar (size or sha256)")
    entry = SpilledEntry(
        key=key,
        run_id=run_id,
        path=path,
        sidecar=sidecar,
        records=records,
        bytes=size,
        sha256=digest,
    )
    return SpilledWindow(entry=entry, window=window)
