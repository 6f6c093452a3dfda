"""The stats line of a stream or replay run (docs: operations.md#logs-and-metrics).

Every ``STATS_INTERVAL_SECONDS`` one ``stats`` log line: rates, the queue, the sinks' windows and
uploads, reconnects, gaps, invalid and dropped frames, memory. With ``METRICS=emf`` that line is
also the interval's CloudWatch Embedded Metric Format document
(:class:`~feedvault.emf.StreamMetrics`), logged through the metrics logger whatever
``LOG_LEVEL`` says. The line has its own task (:meth:`StreamStats.run`): it goes on while the
sink waits for a slow store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.gaps import GapTracker
from engine.batchqueue import BatchQueue
from engine.clock import Clock
from engine.logs import METRICS_LOGGER, get_logger, log_event
from engine.pipeline import HOUSEKEEPING_TICK_SECONDS
from engine.records import Trade
from engine.stats import Counters, StatsReporter, peak_rss_bytes, rss_bytes
from feedvault.emf import RunTotals, StreamMetrics
from feedvault.sessions import CountingSource
from sinks.sink import WindowedSink

log = get_logger("run")
metrics_log = logging.getLogger(METRICS_LOGGER)


@dataclass(eq=False, kw_only=True)
class StreamStats:
    """The run's counters, folded from its sources, queue and gap tracker, and the periodic
    stats line. ``sinks()`` gives the run's sinks, the trades' sink first (it is called at each
    line: the sinks exist only once the run has claimed its destination); ``emf_properties()``
    the EMF documents' properties (called when the line starts: the run id is final then)."""

    counters: Counters
    queue: BatchQueue[Trade]
    gaps: GapTracker
    clock: Clock
    sinks: Callable[[], Sequence[WindowedSink]]
    sources: Callable[[], Sequence[CountingSource]]
    interval: float
    emf_dimensions: Mapping[str, str] | None
    emf_properties: Callable[[], Mapping[str, Any]]
    wall_ns: Callable[[], int]
    _upload_marks: list[int] = field(default_factory=list, init=False)
    """Per sink: the uploads already in an EMF document."""

    def sync(self) -> None:
        """Fold what the sources, the queue and the gap tracker counted into the counters."""
        self.counters.received = sum(source.frames for source in self.sources())
        self.counters.dropped = self.queue.dropped
        self.counters.duplicates = self.gaps.duplicates
        self.counters.out_of_order = self.gaps.out_of_order
        self.counters.resets = sum(len(found) for found in self.gaps.resets.values())

    async def run(self) -> None:
        """Log the stats line every interval until cancelled (cancel-safe)."""
        reporter = StatsReporter(self.clock.monotonic())
        metrics = None
        if self.emf_dimensions is not None:
            metrics = StreamMetrics(
                dimensions=self.emf_dimensions,
                properties=self.emf_properties(),
                now=self.clock.monotonic(),
            )
        next_stats = self.clock.monotonic() + self.interval
        while True:
            await asyncio.sleep(HOUSEKEEPING_TICK_SECONDS)
            now = self.clock.monotonic()
            if now >= next_stats:
                next_stats = now + self.interval
                self.log_line(reporter, now, metrics)

    def _upload_seconds(self, sinks: Sequence[WindowedSink]) -> list[float]:
        """Durations of the uploads (every sink) completed since the last call."""
        marks = self._upload_marks
        marks += [0] * (len(sinks) - len(marks))
        durations: list[float] = []
        for index, sink in enumerate(sinks):
            fresh, marks[index] = sink.upload_durations_since(marks[index])
            durations += fresh
        return durations

    def log_line(
        self, reporter: StatsReporter, now: float, metrics: StreamMetrics | None = None
    ) -> None:
        """Log the stats line; with ``metrics`` (``METRICS=emf``) it is also the interval's EMF
        document, logged through the metrics logger (never filtered by ``LOG_LEVEL``)."""
        self.sync()
        sinks = self.sinks()
        sink = sinks[0]
        rates = reporter.sample(now, self.counters.parsed, sink.bytes_uploaded)
        emf: dict[str, Any] = {}
        if metrics is not None:
            totals = RunTotals(
                parsed=self.counters.parsed,
                bytes_uploaded=sum(each.bytes_uploaded for each in sinks),
                reconnects=self.counters.reconnects,
                gaps=self.gaps.gap_count,
                dropped=self.counters.dropped,
                invalid=self.counters.invalid,
            )
            emf = metrics.document(
                now=now,
                wall_ns=self.wall_ns(),
                totals=totals,
                queue_depth=self.queue.size,
                upload_seconds=self._upload_seconds(sinks),
            )
        log_event(
            metrics_log if metrics is not None else log,
            logging.INFO,
            "stats",
            **rates,
            queue_depth=self.queue.size,
            queue_depth_peak=self.queue.take_peak(),
            queue_high_water=self.queue.high_water,
            open_windows=sink.open_windows,
            uploads_in_flight=sink.uploads_in_flight,
            upload_backlog=sum(each.backlog for each in sinks),
            bytes_uploaded=sink.bytes_uploaded,
            objects=len(sink.objects),
            reconnects=self.counters.reconnects,
            gaps=self.gaps.gap_count,
            invalid=self.counters.invalid,
            dropped=self.counters.dropped,
            rss_mb=round(rss_bytes() / 2**20, 1),
            peak_rss_mb=round(peak_rss_bytes() / 2**20, 1),
            **emf,
        )
