"""The reporter that shows a batch job's progress (:class:`batch.progress.JobProgress`).

On a TTY a redrawn bar (stderr, tqdm's, through :class:`feedvault.progress.Progress`); otherwise a
``progress`` log line every ``STATS_INTERVAL_SECONDS`` and one last line when the job ends. With
``emf`` dimensions (``METRICS=emf``) each of those lines is also a CloudWatch EMF document
(:mod:`feedvault.emf`) with the interval's ``RowsPerSecond`` (Count/Second), ``Rows`` and
``FilesDone`` (Count, increments since the previous line), logged through the metrics logger
(whatever ``LOG_LEVEL`` says); a bar on a TTY carries none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final, TextIO

from batch.progress import JobProgress
from engine.clock import Clock
from engine.logs import METRICS_LOGGER, get_logger, log_event
from engine.text import plural
from feedvault.emf import Metric, emf_document
from feedvault.progress import Progress

log = get_logger("batch")
metrics_log = logging.getLogger(METRICS_LOGGER)

TTY_REDRAW_SECONDS: Final = 0.2


class ProgressReporter:
    """Shows a job's :class:`JobProgress` until cancelled (see the module docstring)."""

    def __init__(
        self,
        progress: JobProgress,
        *,
        label: str,
        clock: Clock,
        interval: float,
        is_tty: bool,
        stream: TextIO | None = None,
        emf: Mapping[str, str] | None = None,
        emf_properties: Mapping[str, Any] | None = None,
    ) -> None:
        self.progress = progress
        self.label = label
        self.clock = clock
        self.interval = interval
        self.is_tty = is_tty
        self.emf = dict(emf) if emf is not None else None
        self.emf_properties = dict(emf_properties or {})
        self._started = clock.monotonic()
        self._last = (self._started, 0, 0)  # (monotonic, rows, files) of the last line
        self._bar = (
            Progress(
                0.0,
                label=label,
                stream=stream,
                is_tty=True,
                redraw_seconds=0.0,
                position=self._position,
            )
            if is_tty
            else None
        )

    def _position(self, done: float, total: float) -> str:
        unit = "files" if self.progress.total_files else self.progress.unit
        if total > 0:
            return f"{done:,.0f}/{total:,.0f} {unit}"
        return f"{self.progress.rows:,} {self.progress.unit}"

    def _detail(self) -> str:
        p = self.progress
        elapsed = max(self.clock.monotonic() - self._started, 1e-9)
        parts = [f"{p.rows / elapsed:,.0f} {p.unit}/s"]
        if p.total_files:
            parts.insert(0, f"{p.rows:,} {p.unit}")
        elif p.files:
            parts.append(f"{plural(p.files, 'file')} done")
        return "  ".join(parts)

    def show(self) -> None:
        """Draw the bar once (TTY) or log one ``progress`` line (otherwise)."""
        if self._bar is not None:
            done, total = self.progress.fraction()
            self._bar.total = total
            self._bar.update(done, self._detail())
            return
        now = self.clock.monotonic()
        log_event(
            log if self.emf is None else metrics_log,
            logging.INFO,
            "progress",
            job=self.label,
            unit=self.progress.unit,
            elapsed_s=round(now - self._started, 3),
            **self.progress.as_dict(),
            **self._emf(now),
        )

    def _emf(self, now: float) -> dict[str, Any]:
        """The EMF members of the interval since the last line (none without ``emf``)."""
        if self.emf is None:
            return {}
        at, rows, files = self._last
        p = self.progress
        self._last = (now, p.rows, p.files)
        return emf_document(
            timestamp_ms=self.clock.time_ns() // 1_000_000,
            dimensions=self.emf,
            metrics=[
                Metric(
                    "RowsPerSecond", "Count/Second", round((p.rows - rows) / max(now - at, 1e-9), 3)
                ),
                Metric("Rows", "Count", p.rows - rows),
                Metric("FilesDone", "Count", p.files - files),
            ],
            properties=self.emf_properties,
        )

    async def run(self) -> None:
        """Show progress every tick until cancelled; always show a last state and end the bar's
        line on the way out."""
        tick = TTY_REDRAW_SECONDS if self.is_tty else self.interval
        try:
            while True:
                await asyncio.sleep(tick)
                self.show()
        finally:
            self.show()
            if self._bar is not None:
                self._bar.finish()
