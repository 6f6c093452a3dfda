"""The background recovery of earlier runs' spill while a stream runs
(docs: operations.md#spill-and-recovery).

:func:`recover_in_background` uploads what earlier runs of the same destination left in
``SPILL_DIR`` and completes their manifests (:func:`~sinks.recovery.recover_spilled`), attempt
after attempt with capped backoff while the store fails. It starts before the sources connect
and runs beside them (ingest is never held back: a feed missed is lost, a spill on disk is not);
the run cancels it when its pipeline has finished. Cancel-safe: nothing is removed from the
spill directory before it, and the manifest naming it, are durable; what is left waits for the
next run. It never fails the run: a problem is logged.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from engine.clock import Clock
from engine.logs import get_logger, log_event
from sinks.recovery import RECOVERY_RETRY, recover_spilled
from sinks.writer import ObjectWriter

log = get_logger("run")


async def recover_in_background(
    writer: ObjectWriter,
    spill_dir: str,
    *,
    destination: str,
    prefix: str,
    current_run: str,
    clock: Clock,
) -> None:
    """Recover until done or cancelled; see the module docstring."""
    attempt = 0
    while True:
        try:
            report = await recover_spilled(
                writer,
                Path(spill_dir),
                destination=destination,
                prefix=prefix,
                current_run=current_run,
                clock=clock,
            )
        except Exception as exc:  # a bug in the recovery must not take the run down
            log_event(log, logging.ERROR, "recovery_failed", error=f"{exc!r}")
            return
        if report.worth_logging:
            log_event(
                log,
                logging.INFO if report.done and not report.problems else logging.WARNING,
                "recovery",
                spill_dir=spill_dir,
                uploaded=len(report.uploaded),
                manifests=report.manifests,
                complete_runs=report.complete_runs,
                left=report.left,
                other_destinations=report.other_destinations,
                live_runs=report.live,
                cleared_locks=report.cleared_locks,
                problems=report.problems[:10],
                error=report.storage_error,
            )
        if report.done:
            return
        await asyncio.sleep(RECOVERY_RETRY.delay(attempt))
        attempt += 1
