"""``feedvault stream``: sources -> bounded queue -> windowed sink -> manifest (SPEC §5).

The run, from start to exit:

* every source (one :class:`~connectors.session.WebSocketSession` per exchange connection) puts
  batches of trades on one :class:`~engine.batchqueue.BatchQueue`;
* one consumer moves batches into the :class:`~sinks.sink.WindowedSink`, which closes windows on
  time, size or record count and uploads them with bounded concurrency;
* housekeeping closes windows whose time is up; a stats task logs a stats line every
  ``STATS_INTERVAL_SECONDS``; with ``METRICS=emf`` that line is also a CloudWatch Embedded
  Metric Format document (:class:`~engine.stats.StreamMetrics`), logged whatever ``LOG_LEVEL``;
* a guard watches the deadline (``MAX_RUNTIME_SECONDS``), signals and the stop grace.

With ``CAPTURE``/``--capture`` the sessions also put their raw frames (in and out, SPEC §8) on a
second bounded queue, and a second consumer feeds them into a second sink whose windows (same
policy, same format) go under ``{prefix}raw/`` (:data:`~sinks.keys.RAW_KEY_TEMPLATE`); its
objects are listed in the same manifest, and the stop sequence drains and flushes both before
the manifest is written.

Sources are pluggable (:class:`Source`, :meth:`StreamRun.build_sources`): ``feedvault replay``
(:mod:`feedvault.replay`) runs this same pipeline with a recording as its one source.

Stop sequence, on the deadline or the first SIGTERM/SIGINT: the sessions close their sockets and
queue what they received, reading each socket to the peer's close frame past the queue's bound
(within ``SOCKET_DRAIN_FRACTION`` of the grace; a connection that ends without that close frame
is an unclean close, counted, and the run is not complete); the queue is closed and drained;
every window is closed and uploaded; the manifest is written last; exit 0. If that does not
finish within ``STOP_GRACE_SECONDS``, or a second signal arrives, the pipeline is cancelled,
everything not yet durable is spilled to ``SPILL_DIR``, the manifest is written as
``incomplete`` naming the spilled objects, and the exit status is 1.

Spill and recovery (SPEC §5): a window whose upload fails past ``UPLOAD_RETRY_SECONDS`` spills
to ``SPILL_DIR`` during the run and is retried in the background and once more at the stop
(:class:`~sinks.sink.WindowedSink`); what is still there at the end is named in the manifest's
``spilled`` (status ``incomplete``, exit 1). If the manifest itself cannot be written it is
spilled too (``<SPILL_DIR>/<run_id>/@manifest.spill.json``, :func:`~sinks.spill.spill_manifest`),
exit 1. At its start a run uploads what earlier runs of the same destination left in
``SPILL_DIR``, completing their manifests (:mod:`sinks.recovery`): the recovery task starts
before the sources connect and runs beside them (ingest is never held back: a feed missed is
lost, a spill on disk is not), is retried with capped backoff while the run lasts, and is
cancelled when the pipeline has finished (cancel-safe: nothing is removed from the spill
directory before it, and the manifest naming it, are durable); what is left waits for the next
run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from connectors.capture import RawFrame
from connectors.gaps import GapTracker
from connectors.registry import BINANCE_FAMILY, get_protocol
from connectors.session import InvalidFrameLog, SessionSettings, WebSocketSession
from engine import __version__, signals
from engine.batchqueue import BatchQueue
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import (
    DestinationUnavailable,
    FeedvaultError,
    StorageError,
    SubscriptionRejected,
)
from engine.logs import METRICS_LOGGER, get_logger, log_event
from engine.records import Trade
from engine.stats import Counters, StatsReporter, peak_rss_bytes, rss_bytes
from feedvault.config import StreamConfig
from feedvault.ecs import DEFAULT_LOOKUP, EcsLookup, identify_config
from feedvault.emf import RunTotals, StreamMetrics
from sinks.claim import claim_run
from sinks.keys import DEFAULT_KEY_TEMPLATE, RAW_DATASET, RAW_KEY_TEMPLATE, KeyTemplate
from sinks.manifest import (
    EcsTask,
    Gap,
    Lost,
    Manifest,
    Reset,
    StopReason,
    StreamFigures,
    iso_utc,
    manifest_key,
    write_manifest,
)
from sinks.recovery import recover_spilled
from sinks.sink import WindowedSink
from sinks.spill import SpillDir, SpillFailed, spill_manifest, spill_windows
from sinks.spilllock import hold_run_lock
from sinks.windowing import Windower, WindowPolicy
from sinks.writer import ObjectWriter, open_writer

log = get_logger("run")
metrics_log = logging.getLogger(METRICS_LOGGER)

GUARD_TICK_SECONDS: Final = 0.1
HOUSEKEEPING_TICK_SECONDS: Final = 0.25
CONSUMER_BATCHES_PER_YIELD: Final = 8
MANIFEST_RESERVE_FRACTION: Final = 0.2
"""Share of the stop grace kept back for spilling and writing the manifest after an abort."""
MANIFEST_MIN_FRACTION: Final = 0.15
MANIFEST_MIN_SECONDS: Final = 2.0
"""The manifest write always gets at least this share of the grace, and this many seconds."""
EXIT_MARGIN_SECONDS: Final = 0.5
"""Kept from the grace after the manifest write for the process to exit."""
SOCKET_DRAIN_FRACTION: Final = 0.5
"""Share of the stop grace (from the stop) within which the sessions must have read their sockets
to the peer's close frame; the rest is for the queue, the last uploads and the manifest."""
RECOVERY_RETRY_INITIAL_SECONDS: Final = 1.0
RECOVERY_RETRY_MAX_SECONDS: Final = 30.0
"""Backoff between recovery attempts of earlier runs' spill while the store is down."""


class Source(Protocol):
    """What the run needs of a source (a WebSocket session, the replay source)."""

    frames: int
    """Frames received so far (the manifest's ``received`` counter)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Put batches on the run's queue until ``stop`` is set (or the source ends); return
        once everything received is queued."""
        ...


@dataclass
class StopController:
    """Turns the deadline, signals and errors into the stop (first) and abort (second) events."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    reason: StopReason | None = None
    requested_at: float | None = None
    clock: Clock = SYSTEM_CLOCK
    finishing: bool = False
    """Set once the manifest is being written: there is nothing left to abort."""

    def request_stop(self, reason: StopReason) -> None:
        """Begin the graceful stop; later requests keep the first reason."""
        if not self.stop.is_set():
            self.reason = reason
            self.requested_at = self.clock.monotonic()
            self.stop.set()

    def on_signal(self, signame: str) -> None:
        """First signal: graceful stop. Second: abort (spill and exit 1), unless the manifest
        is already being written (then the run finishes as it was going to)."""
        if self.finishing:
            log_event(log, logging.WARNING, "second_signal", signal=signame, action="none")
        elif self.stop.is_set():
            log_event(log, logging.WARNING, "second_signal", signal=signame, action="abort")
            self.abort.set()
        else:
            log_event(log, logging.INFO, "signal", signal=signame, action="stop")
            self.request_stop("signal")


def build_sessions(
    config: StreamConfig,
    queue: BatchQueue[Trade],
    counters: Counters,
    gaps: GapTracker,
    clock: Clock,
    capture: BatchQueue[RawFrame] | None = None,
    drain_deadline: Callable[[], float | None] | None = None,
) -> list[WebSocketSession]:
    """One session per exchange connection; an exchange's symbols are split into groups no
    larger than its per-connection stream limit. ``capture``: the raw frames' queue;
    ``drain_deadline``: when the stopping sessions must have read their sockets to the end."""
    invalid_log = InvalidFrameLog(counters)
    settings = SessionSettings(stale_seconds=config.stale_seconds)
    by_exchange: dict[str, list[str]] = {}
    for spec in config.streams:
        by_exchange.setdefault(spec.exchange, []).append(spec.symbol)
    sessions: list[WebSocketSession] = []
    for exchange, symbols in by_exchange.items():
        options = {"stream_type": config.binance_stream} if exchange in BINANCE_FAMILY else {}
        protocol = get_protocol(exchange, **options)
        base_url = config.ws_urls.get(exchange, protocol.default_url)
        limit = protocol.max_streams_per_connection
        for start in range(0, len(symbols), limit):
            sessions.append(
                WebSocketSession(
                    protocol,
                    base_url,
                    symbols[start : start + limit],
                    queue,
                    counters=counters,
                    gaps=gaps,
                    invalid_log=invalid_log,
                    settings=settings,
                    clock=clock,
                    capture=capture,
                    drain_deadline=drain_deadline,
                )
            )
    return sessions


class StreamRun:
    """One execution of ``feedvault stream``. Create, then ``await run()`` for the exit status.

    ``writer`` replaces the writer opened from ``config.destination`` (the caller then owns and
    closes it); ``clock`` drives the deadline, the stop grace, windows and staleness.

    On ECS (``ECS_CONTAINER_METADATA_URI_V4``) the run first reads its task's metadata
    (:mod:`feedvault.ecs`, bounded by ``ecs_lookup``, never fatal) into :attr:`ecs` and the
    manifest's ``ecs`` section, and a generated run id gets the task id; the deadline counts
    from before that lookup.
    """

    metrics_command = "stream"
    """The ``Command`` dimension of the run's EMF metrics."""

    def __init__(
        self,
        config: StreamConfig,
        *,
        command: Sequence[str] = ("feedvault", "stream"),
        clock: Clock = SYSTEM_CLOCK,
        controller: StopController | None = None,
        install_signal_handlers: bool = True,
        writer: ObjectWriter | None = None,
        ecs_lookup: EcsLookup = DEFAULT_LOOKUP,
    ) -> None:
        self.config = config
        self.ecs_lookup = ecs_lookup
        #: The ECS task the run runs in (read at the start of :meth:`run`), else None.
        self.ecs: EcsTask | None = None
        self._writer = writer
        self.command = list(command)
        self.clock = clock
        self.controller = controller or StopController(clock=clock)
        self.install_signal_handlers = install_signal_handlers
        self.counters = Counters()
        self.gaps = GapTracker()
        self.queue: BatchQueue[Trade] = BatchQueue(config.queue_maxsize, config.overflow)
        #: The raw frames' queue and sink (``--capture``), else None.
        self.raw_queue: BatchQueue[RawFrame] | None = (
            BatchQueue(config.queue_maxsize, config.overflow) if config.capture else None
        )
        self.raw_sink: WindowedSink | None = None
        self.error: FeedvaultError | None = None
        self.aborted = False
        self.manifest: Manifest | None = None
        #: Set once every source has stopped and the queue is closed (the stop is draining).
        self.ingest_done = asyncio.Event()
        self._upload_marks: list[int] = []  # per sink: uploads already in an EMF document

    async def run(self) -> int:
        """Run until the deadline or a signal; return the exit status (0 or 1)."""
        started_ns = self.clock.time_ns()
        # Real (not injected) time and CPU, for the run_end figures only.
        self._real_started = (time.monotonic(), time.process_time())
        self._deadline = self.clock.monotonic() + self.config.max_runtime_seconds
        loop = asyncio.get_running_loop()
        if self.install_signal_handlers:
            signals.install_on_loop(loop, self.controller.on_signal)
        try:
            self.ecs, self.config = await identify_config(self.config, self.ecs_lookup)
            log_event(
                log,
                logging.INFO,
                "run_start",
                run_id=self.config.run_id,
                version=__version__,
                config=self.public_config(),
                ecs=self.ecs.to_dict() if self.ecs is not None else None,
            )
            # While this run lives, another process's recovery leaves its spill alone.
            with hold_run_lock(Path(self.config.runtime.spill_dir), self.config.run_id) as lock:
                if lock is None or not lock.locked:
                    log_event(
                        log,
                        logging.WARNING,
                        "spill_lock_unavailable",
                        run_id=self.config.run_id,
                        reason="another process holds this run id's lock (a run or a "
                        "recovery with the same RUN_ID): this run's spill is not protected"
                        if lock is None
                        else lock.problem,
                    )
                if self._writer is not None:
                    return await self._run_with_writer(self._writer, started_ns)
                async with open_writer(
                    self.config.destination,
                    multipart_threshold=self.config.sink.multipart_threshold,
                    part_size=self.config.sink.part_size,
                    security=self.config.s3,
                ) as writer:
                    return await self._run_with_writer(writer, started_ns)
        except DestinationUnavailable as exc:
            log_event(log, logging.ERROR, "destination_unavailable", error=str(exc))
            print(f"feedvault: {exc}", file=sys.stderr, flush=True)
            return 1
        except StorageError as exc:  # the store could not even be opened
            log_event(log, logging.ERROR, "run_failed", error=str(exc))
            print(f"feedvault: {self.config.destination.variable}: {exc}", file=sys.stderr)
            return 1
        finally:
            if self.install_signal_handlers:
                signals.remove_from_loop(loop)

    def running_manifest(self, started_ns: int) -> Manifest:
        """The manifest written at the start (:mod:`sinks.claim`): ``status: running``."""
        return Manifest.running(
            run_id=self.config.run_id,
            version=__version__,
            command=" ".join(self.command),
            started_at=iso_utc(started_ns),
            config=self.public_config(),
            ecs=self.ecs,
            destination=self.config.destination.url,
            prefix=self.config.destination.prefix,
        )

    def public_config(self) -> dict[str, Any]:
        """The effective configuration for the manifest and the start log line."""
        return self.config.public_dict()

    def metric_dimensions(self) -> dict[str, str]:
        """The dimensions of the run's EMF metrics: the command and the exchanges streamed
        (``binance``, or ``binance+coinbase`` for several), low-cardinality by design."""
        exchanges = sorted({spec.exchange for spec in self.config.streams})
        dimensions = {"Command": self.metrics_command}
        if exchanges:
            dimensions["Exchange"] = "+".join(exchanges)
        return dimensions

    def metrics_wall_ns(self) -> int:
        """Wall time for the EMF ``Timestamp`` (the run's clock; a replay uses real time)."""
        return self.clock.time_ns()

    def build_sources(self) -> Sequence[Source]:
        """The run's sources: one WebSocket session per exchange connection."""
        return build_sessions(
            self.config,
            self.queue,
            self.counters,
            self.gaps,
            self.clock,
            self.raw_queue,
            drain_deadline=self._drain_deadline,
        )

    def _drain_deadline(self) -> float | None:
        """When (this run's clock) the stopping sessions must have read their sockets to the
        peer's close frame: ``SOCKET_DRAIN_FRACTION`` of the stop grace after the stop."""
        requested = self.controller.requested_at
        if requested is None:
            return None
        return requested + self.config.runtime.stop_grace_seconds * SOCKET_DRAIN_FRACTION

    def _make_sink(
        self, writer: ObjectWriter, template: KeyTemplate, dataset: str, trade_ids: bool
    ) -> WindowedSink:
        config = self.config
        windower = Windower(
            WindowPolicy(
                config.sink.window_seconds,
                config.sink.window_max_bytes,
                config.sink.window_max_records,
            ),
            template,
            prefix=config.destination.prefix,
            run_id=config.run_id,
            format=config.sink.format,
            dataset=dataset,
            clock=self.clock,
            trade_ids=trade_ids,
        )
        return WindowedSink(
            windower,
            writer,
            max_concurrent_uploads=config.sink.upload_concurrency,
            clock=self.clock,
            retry_budget_seconds=config.sink.upload_retry_seconds,
            spill=SpillDir(Path(config.runtime.spill_dir), config.run_id, config.destination.url),
        )

    def _sinks(self) -> list[WindowedSink]:
        return [self.sink] if self.raw_sink is None else [self.sink, self.raw_sink]

    async def _run_with_writer(self, writer: ObjectWriter, started_ns: int) -> int:
        config = self.config
        # The first write, before anything connects: the destination takes it, the run id is
        # new (ConfigError, exit 2, otherwise), and a killed run stays visible.
        await claim_run(
            writer,
            config.destination,
            self.running_manifest(started_ns),
            retry_seconds=config.sink.upload_retry_seconds,
            clock=self.clock,
            stop=self.controller.stop,
            stop_grace_seconds=config.runtime.stop_grace_seconds * MANIFEST_MIN_FRACTION,
        )
        template = KeyTemplate(config.sink.key_template or DEFAULT_KEY_TEMPLATE)
        self.sink = self._make_sink(writer, template, "trades", trade_ids=True)
        self.windower = self.sink.windower
        if self.raw_queue is not None:
            self.raw_sink = self._make_sink(
                writer, KeyTemplate(RAW_KEY_TEMPLATE), RAW_DATASET, trade_ids=False
            )
        self.sessions = self.build_sources()
        spilled: list[str] = []
        async with contextlib.AsyncExitStack() as sinks:
            for sink in self._sinks():
                await sinks.enter_async_context(sink)
            try:
                async with asyncio.TaskGroup() as tg:
                    recovery = tg.create_task(self._recover(writer))  # first, then beside ingest
                    pipeline = tg.create_task(self._pipeline())
                    guard = tg.create_task(self._guard(pipeline))
                    pipeline.add_done_callback(lambda _: guard.cancel())
                    pipeline.add_done_callback(lambda _: recovery.cancel())
            except* FeedvaultError as group:
                self.error = group.exceptions[0]  # type: ignore[assignment]
                log_event(log, logging.ERROR, "pipeline_failed", error=str(self.error))
            failed = self.aborted or (
                self.error is not None and not isinstance(self.error, SubscriptionRejected)
            )
            if failed:
                # Stop uploading: what is not durable now goes to the spill directory.
                for sink in self._sinks():
                    sink.cancel_uploads()
        lost: list[Lost] = []
        if failed or any(sink.failed for sink in self._sinks()):
            spilled, lost = self._spill()
        # Windows spilled during the run (or at the stop) and never uploaded since: named
        # only while their files are still there.
        for sink in self._sinks():
            on_disk, gone = sink.spilled_on_disk()
            spilled += [key for key in on_disk if key not in spilled]
            lost += gone
        return await self._finish(writer, started_ns, spilled, lost)

    async def _recover(self, writer: ObjectWriter) -> None:
        """Upload what earlier runs left in ``SPILL_DIR`` and complete their manifests
        (:func:`~sinks.recovery.recover_spilled`), attempt after attempt with capped backoff
        while the store fails. Cancelled when the pipeline has finished (cancel-safe); never
        fails the run: a problem is logged."""
        config = self.config
        delay = RECOVERY_RETRY_INITIAL_SECONDS
        while True:
            try:
                report = await recover_spilled(
                    writer,
                    Path(config.runtime.spill_dir),
                    destination=config.destination.url,
                    prefix=config.destination.prefix,
                    current_run=config.run_id,
                    clock=self.clock,
                )
            except Exception as exc:  # a bug in the recovery must not take the run down
                log_event(log, logging.ERROR, "recovery_failed", error=f"{exc!r}")
                return
            if report.worth_logging:
                log_event(
                    log,
                    logging.INFO if report.done and not report.problems else logging.WARNING,
                    "recovery",
                    spill_dir=config.runtime.spill_dir,
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
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECOVERY_RETRY_MAX_SECONDS)

    async def _guard(self, pipeline: asyncio.Task[None]) -> None:
        """Request the stop at the deadline; cancel the pipeline on a second signal or when the
        stop grace (less a reserve for spilling and the manifest) runs out."""
        controller = self.controller
        grace = self.config.runtime.stop_grace_seconds
        budget = grace * (1 - MANIFEST_RESERVE_FRACTION)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GUARD_TICK_SECONDS):
                    await controller.abort.wait()
            now = self.clock.monotonic()
            if not controller.stop.is_set() and now >= self._deadline:
                log_event(
                    log, logging.INFO, "deadline", max_runtime_s=self.config.max_runtime_seconds
                )
                controller.request_stop("deadline")
            expired = (
                controller.requested_at is not None and now - controller.requested_at >= budget
            )
            if controller.abort.is_set() or expired:
                log_event(
                    log,
                    logging.ERROR,
                    "abort",
                    reason="second signal" if controller.abort.is_set() else "stop grace expired",
                )
                self.aborted = True
                pipeline.cancel()
                return

    async def _pipeline(self) -> None:
        async with asyncio.TaskGroup() as tg:
            consumers = [tg.create_task(self._consume(self.queue, self.sink))]
            if self.raw_queue is not None and self.raw_sink is not None:
                consumers.append(tg.create_task(self._consume(self.raw_queue, self.raw_sink)))
            housekeeping = [
                tg.create_task(self._housekeeping()),
                tg.create_task(self._report_stats()),
            ]
            await self._ingest()
            self.queue.close()
            if self.raw_queue is not None:
                self.raw_queue.close()
            self.ingest_done.set()
            for consumer in consumers:
                await consumer
            for task in housekeeping:
                task.cancel()

    async def _ingest(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for session in self.sessions:
                    tg.create_task(session.run(self.controller.stop))
        except* SubscriptionRejected as group:
            self.error = group.exceptions[0]  # type: ignore[assignment]
            log_event(log, logging.ERROR, "subscription_rejected", error=str(self.error))
            self.controller.request_stop("error")

    async def _consume(
        self, queue: BatchQueue[Trade] | BatchQueue[RawFrame], sink: WindowedSink
    ) -> None:
        """Move batches from ``queue`` into ``sink``; then close every window and upload.

        Nothing is awaited between taking a batch and adding it to the sink's windower, so once
        the queue is empty every batch put before is in the windower (replay relies on it)."""
        handled = 0
        while (batch := await queue.get()) is not None:
            await sink.write(batch)
            handled += 1
            if handled % CONSUMER_BATCHES_PER_YIELD == 0:
                # Let uploads, pings and the other sources run between bursts of batches.
                await asyncio.sleep(0)
        await sink.close()

    async def _housekeeping(self) -> None:
        """Close windows whose time is up. A tick waits for an upload slot when S3 is slow,
        so the stats line has its own task (:meth:`_report_stats`): it must go on then."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_TICK_SECONDS)
            for sink in self._sinks():
                await sink.tick()

    async def _report_stats(self) -> None:
        """The stats line every ``STATS_INTERVAL_SECONDS`` (an EMF document with
        ``METRICS=emf``), whatever the sink is waiting for."""
        interval = self.config.runtime.stats_interval_seconds
        reporter = StatsReporter(self.clock.monotonic())
        metrics = None
        if self.config.runtime.metrics == "emf":
            metrics = StreamMetrics(
                dimensions=self.metric_dimensions(),
                properties={"run_id": self.config.run_id},
                now=self.clock.monotonic(),
            )
        next_stats = self.clock.monotonic() + interval
        while True:
            await asyncio.sleep(HOUSEKEEPING_TICK_SECONDS)
            now = self.clock.monotonic()
            if now >= next_stats:
                next_stats = now + interval
                self._log_stats(reporter, now, metrics)

    def _sync_counters(self) -> None:
        """Fold what the sessions, the queue and the gap tracker counted into the counters."""
        self.counters.received = sum(session.frames for session in self.sessions)
        self.counters.dropped = self.queue.dropped
        self.counters.duplicates = self.gaps.duplicates
        self.counters.out_of_order = self.gaps.out_of_order
        self.counters.resets = sum(len(found) for found in self.gaps.resets.values())

    def _upload_seconds(self) -> list[float]:
        """Durations of the uploads (every sink) completed since the last call."""
        sinks = self._sinks()
        marks = self._upload_marks
        marks += [0] * (len(sinks) - len(marks))
        durations: list[float] = []
        for index, sink in enumerate(sinks):
            fresh, marks[index] = sink.upload_durations_since(marks[index])
            durations += fresh
        return durations

    def _log_stats(
        self, reporter: StatsReporter, now: float, metrics: StreamMetrics | None = None
    ) -> None:
        """Log the stats line; with ``metrics`` (``METRICS=emf``) it is also the interval's EMF
        document, logged through the metrics logger (never filtered by ``LOG_LEVEL``)."""
        self._sync_counters()
        rates = reporter.sample(now, self.counters.parsed, self.sink.bytes_uploaded)
        emf: dict[str, Any] = {}
        if metrics is not None:
            totals = RunTotals(
                parsed=self.counters.parsed,
                bytes_uploaded=sum(sink.bytes_uploaded for sink in self._sinks()),
                reconnects=self.counters.reconnects,
                gaps=self.gaps.gap_count,
                dropped=self.counters.dropped,
                invalid=self.counters.invalid,
            )
            emf = metrics.document(
                now=now,
                wall_ns=self.metrics_wall_ns(),
                totals=totals,
                queue_depth=self.queue.size,
                upload_seconds=self._upload_seconds(),
            )
        log_event(
            metrics_log if metrics is not None else log,
            logging.INFO,
            "stats",
            **rates,
            queue_depth=self.queue.size,
            queue_depth_peak=self.queue.take_peak(),
            queue_high_water=self.queue.high_water,
            open_windows=self.sink.open_windows,
            uploads_in_flight=self.sink.uploads_in_flight,
            upload_backlog=sum(sink.backlog for sink in self._sinks()),
            bytes_uploaded=self.sink.bytes_uploaded,
            objects=len(self.sink.objects),
            reconnects=self.counters.reconnects,
            gaps=self.gaps.gap_count,
            invalid=self.counters.invalid,
            dropped=self.counters.dropped,
            rss_mb=round(rss_bytes() / 2**20, 1),
            peak_rss_mb=round(peak_rss_bytes() / 2**20, 1),
            **emf,
        )

    def _spill(self) -> tuple[list[str], list[Lost]]:
        """After an abort or failure: everything not durable (queued batches, open, queued,
        in-flight and failed windows) goes to ``SPILL_DIR``. Returns the keys spilled (on disk
        now) and the windows that could not be written there (lost, with their counts)."""
        leftover = []
        while (batch := self.queue.get_nowait()) is not None:
            leftover += self.windower.add(batch)
        windows = self.sink.unfinished() + leftover
        if self.raw_queue is not None and self.raw_sink is not None:
            while (raw_batch := self.raw_queue.get_nowait()) is not None:
                windows += self.raw_sink.windower.add(raw_batch)
            windows += self.raw_sink.unfinished()
        if not windows:
            return [], []
        spill_dir = Path(self.config.runtime.spill_dir)
        lost: list[Lost] = []
        try:
            entries = spill_windows(
                windows, spill_dir, self.config.run_id, destination=self.config.destination.url
            )
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

    def _spill_manifest(self, manifest: Manifest) -> None:
        """The manifest could not be written: keep it next to the run's spilled windows, so a
        later run with the same ``SPILL_DIR`` writes it (updated) when it recovers them. The
        run still exits 1: its proof is not in the store."""
        config = self.config
        spill_dir = Path(config.runtime.spill_dir)
        try:
            spilled = spill_manifest(
                spill_dir,
                config.run_id,
                manifest_key(config.destination.prefix, config.run_id),
                manifest.to_json(),
                destination=config.destination.url,
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

    def _manifest_seconds(self) -> float:
        """How long the manifest write may take: the rest of the stop grace (less a margin to
        exit), and never less than its reserve (15% of the grace, at least 2 s), which is all
        it gets when no stop was requested (an error) or the grace is spent (an abort).

        Not a fixed reserve: a manifest PUT throttled and retried by the SDK, or answered
        slowly, must not fail a run whose every window is durable while grace is left."""
        grace = self.config.runtime.stop_grace_seconds
        reserve = max(grace * MANIFEST_MIN_FRACTION, MANIFEST_MIN_SECONDS)
        requested = self.controller.requested_at
        if requested is None:
            return reserve
        left = requested + grace - EXIT_MARGIN_SECONDS - self.clock.monotonic()
        return max(left, reserve)

    def never_subscribed(self) -> dict[str, str]:
        """The configured streams no connection was ever subscribed to during the run although
        they had their chance, each with its last connection error: a run with any is not a
        success."""
        now = self.clock.monotonic()
        found: dict[str, str] = {}
        for source in self.sessions:
            if not isinstance(source, WebSocketSession):
                continue
            tally = source.tally
            if tally.failed_to_subscribe(now, source.settings.open_timeout):
                error = tally.last_error or (
                    f"still not subscribed {now - (tally.first_attempt_at or now):.1f} s "
                    "after its first attempt"
                )
                for symbol in source.symbols:
                    found[tally.stream_name(symbol)] = error
        return found

    def stream_figures(self) -> dict[str, StreamFigures]:
        """The manifest's ``streams``: per configured stream, what its session did."""
        now = self.clock.monotonic()
        figures: dict[str, StreamFigures] = {}
        for source in self.sessions:
            if isinstance(source, WebSocketSession):
                figures.update(source.tally.figures(now))  # type: ignore[arg-type]
        return figures

    async def _finish(
        self,
        writer: ObjectWriter,
        started_ns: int,
        spilled: list[str],
        lost: list[Lost] | None = None,
    ) -> int:
        """Write the manifest (last) and decide the exit status."""
        self.controller.finishing = True
        self._sync_counters()
        lost = lost or []
        streams = self.stream_figures()
        never = self.never_subscribed()
        error = str(self.error) if self.error is not None else None
        if never and error is None:
            named = [f"{name} ({last_error})" for name, last_error in never.items()]
            error = "never subscribed during the run: " + "; ".join(named)
            log_event(log, logging.ERROR, "streams_never_subscribed", streams=named)
        warnings = [
            f"{name}: subscribed for {figures['subscribed_seconds']:g} s but saw no trade"
            if figures["subscribed_seconds"] > 0
            else f"{name}: the run stopped before it was subscribed"
            for name, figures in streams.items()
            if figures["records"] == 0 and name not in never
        ]
        complete = not self.aborted and not spilled and not lost and error is None
        complete = complete and not self.counters.unclean_closes  # trades may be lost in one
        reason: StopReason = self.controller.reason or "error"
        if error is not None:
            reason = "error"
        self.gaps.finish()  # the gaps still pending in the reorder window are final now
        gaps = {
            key: [Gap(from_id=g.from_id, to_id=g.to_id, missing=g.missing) for g in found]
            for key, found in sorted(self.gaps.gaps.items())
        }
        resets = {
            key: [Reset(from_id=r.from_id, to_id=r.to_id, at=iso_utc(r.ts_recv)) for r in found]
            for key, found in sorted(self.gaps.resets.items())
        }
        manifest = Manifest(
            run_id=self.config.run_id,
            version=__version__,
            command=" ".join(self.command),
            started_at=iso_utc(started_ns),
            stopped_at=iso_utc(self.clock.time_ns()),
            stop_reason=reason,
            status="complete" if complete else "incomplete",
            config=self.public_config(),
            objects=[entry for sink in self._sinks() for entry in sink.objects],
            counters=self.counters.as_dict(),
            gaps=gaps,
            spilled=spilled,
            error=error,
            ecs=self.ecs,
            streams=streams,
            resets=resets,
            lost=lost,
            warnings=warnings,
            destination=self.config.destination.url,
            prefix=self.config.destination.prefix,
        )
        self.manifest = manifest
        try:
            async with asyncio.timeout(self._manifest_seconds()):
                await write_manifest(writer, self.config.destination.prefix, manifest)
        except (StorageError, TimeoutError) as exc:
            log_event(log, logging.ERROR, "manifest_failed", error=f"{type(exc).__name__}: {exc}")
            self._spill_manifest(manifest)
            return 1
        log_event(
            log,
            logging.INFO,
            "run_end",
            run_id=self.config.run_id,
            status=manifest.status,
            stop_reason=reason,
            objects=len(manifest.objects),
            records=sum(o.records for o in self.sink.objects),
            counters=manifest.counters,
            gaps=self.gaps.gap_count,
            spilled=len(spilled),
            lost=len(lost),
            lost_records=sum(item["records"] for item in lost),
            warnings=warnings,
            windows_spilled=sum(sink.windows_spilled for sink in self._sinks()),
            windows_recovered=sum(sink.windows_recovered for sink in self._sinks()),
            error=manifest.error,
            peak_rss_mb=round(peak_rss_bytes() / 2**20, 1),
            elapsed_s=round(time.monotonic() - self._real_started[0], 3),
            cpu_s=round(time.process_time() - self._real_started[1], 3),
        )
        return 0 if complete else 1
