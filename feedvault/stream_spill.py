"""What a stream run keeps on local disk when the store cannot take it
(docs: operations.md#spill-and-recovery).

* :func:`spill_unfinished`: after an abort or a failure, everything not durable (batches still
  queued, open, queued, in-flight and failed windows of every lane) goes to ``SPILL_DIR``; what
  could not be written there is ``lost``, with its counts.
* :func:`spill_run_manifest`: the manifest could not be written: it is kept next to the run's
  spilled windows, so a later run with the same ``SPILL_DIR`` writes it (updated) when it
  recovers them (:mod:`sinks.recovery`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.batchqueue import BatchQueue
from engine.errors import StorageError
from engine.logs import get_logger, log_event
from sinks.manifest import Lost, Manifest, manifest_key
from sinks.sink import WindowedSink
from sinks.spill import SpillFailed, spill_manifest, spill_windows
from sinks.windowing import ClosedWindow

log = get_logger("run")


def spill_unfinished(
    lanes: Sequence[tuple[BatchQueue[Any], WindowedSink]],
    spill_dir: Path,
    run_id: str,
    destination: str,
) -> tuple[list[str], list[Lost]]:
    """Spill what is not durable in ``lanes`` (each a queue and the sink it feeds). Returns the
    keys spilled (on disk now) and the windows that could not be written there (lost)."""
    windows: list[ClosedWindow] = []
    for queue, sink in lanes:
        leftover: list[ClosedWindow] = []
        while (batch := queue.get_nowait()) is not None:
            leftover += sink.windower.add(batch)
        windows += sink.unfinished() + leftover
    if not windows:
        return [], []
    lost: list[Lost] = []
    try:
        entries = spill_windows(windows, spill_dir, run_id, destination=destination)
    except SpillFailed as exc:
        entries = exc.entries
        lost = [
            Lost(key=window.key, records=window.records, reason=reason)
            for window, reason in exc.failures
        ]
        log_event(
            log,
            logging.ERROR,
            "spill_failed",
            spill_dir=str(spill_dir),
            lost_objects=len(lost),
            lost_records=sum(item["records"] for item in lost),
            error=str(exc),
        )
    log_event(
        log,
        logging.ERROR,
        "spilled",
        spill_dir=str(spill_dir),
        objects=len(entries),
        records=sum(entry.records for entry in entries),
    )
    return [entry.key for entry in entries], lost


def spill_run_manifest(manifest: Manifest, spill_dir: Path, prefix: str, destination: str) -> None:
    """Keep ``manifest`` in ``spill_dir`` (see the module docstring); a failure is logged. The
    run still exits 1: its proof is not in the store."""
    try:
        spilled = spill_manifest(
            spill_dir,
            manifest.run_id,
            manifest_key(prefix, manifest.run_id),
            manifest.to_json(),
            destination=destination,
        )
    except StorageError as exc:
        log_event(log, logging.ERROR, "manifest_spill_failed", error=str(exc))
        return
    log_event(
        log,
        logging.ERROR,
        "manifest_spilled",
        path=str(spilled.path),
        status=manifest.status,
        spilled=len(manifest.spilled),
    )
