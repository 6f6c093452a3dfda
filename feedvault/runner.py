"""``feedvault stream``: sources -> bounded queue -> windowed sink -> manifest.

See docs/architecture.md#one-trade-from-the-socket-to-the-manifest.

The run, from start to exit:

* every source (one :class:`~connectors.session.WebSocketSession` per exchange connection) puts
  batches of trades on one :class:`~engine.batchqueue.BatchQueue`;
* one consumer moves batches into the :class:`~sinks.sink.WindowedSink`, which closes windows on
  time, size or record count and uploads them with bounded concurrency;
* housekeeping closes windows whose time is up; a stats task logs a stats line every
  ``STATS_INTERVAL_SECONDS``; with ``METRICS=emf`` that line is also a CloudWatch Embedded
  Metric Format document (:class:`~feedvault.emf.StreamMetrics`), logged whatever ``LOG_LEVEL``;
* a guard watches the deadline (``MAX_RUNTIME_SECONDS``), signals and the stop grace.

With ``CAPTURE``/``--capture`` the sessions also put their raw frames (in and out, docs:
recording-and-replay.md#capture) on a second bounded queue, and a second consumer feeds them into a
second sink whose windows (same policy, same format) go under ``{prefix}raw/``
(:data:`~sinks.keys.RAW_KEY_TEMPLATE`); its objects are listed in the same manifest, and the stop
sequence drains and flushes both before the manifest is written.

The lifecycle (signals, deadline, guard, exit status) is :class:`~engine.lifecycle.RunLifecycle`,
the manifest's part of it :class:`~feedvault.run.ManifestRun`, the loop
:class:`~engine.pipeline.Pipeline`. Sources are pluggable (:class:`~engine.pipeline.Source`,
:meth:`StreamRun.build_sources`): ``feedvault replay`` (:mod:`feedvault.replay`) runs this same
pipeline with a recording as its one source.

Stop sequence, on the deadline or the first SIGTERM/SIGINT: the sessions close their sockets and
queue what they received, reading each socket to the peer's close frame past the queue's bound
(within ``SOCKET_DRAIN_FRACTION`` of the grace; a connection that ends without that close frame
is an unclean close, counted, and the run is not complete); the queue is closed and drained;
every window is closed and uploaded; the manifest is written last; exit 0. If that does not
finish within ``STOP_GRACE_SECONDS``, or a second signal arrives, the pipeline is cancelled,
everything not yet durable is spilled to ``SPILL_DIR``, the manifest is written as
``incomplete`` naming the spilled objects, and the exit status is 1.

Spill and recovery (docs: operations.md#spill-and-recovery): a window whose upload fails past
``UPLOAD_RETRY_SECONDS`` spills to ``SPILL_DIR`` during the run and is retried in the background and
once more at the stop (:class:`~sinks.sink.WindowedSink`); what is still there at the end is named
in the manifest's ``spilled`` (status ``incomplete``, exit 1). If the manifest itself cannot be
written it is spilled too (``<SPILL_DIR>/<run_id>/@manifest.spill.json``,
:func:`~sinks.spill.spill_manifest`), exit 1. At its start a run uploads what earlier runs of the
same destination left in ``SPILL_DIR``, completing their manifests (:mod:`sinks.recovery`): the
recovery task starts before the sources connect and runs beside them (ingest is never held back: a
feed missed is lost, a spill on disk is not), is retried with capped backoff while the run lasts,
and is cancelled when the pipeline has finished (cancel-safe: nothing is removed from the spill
directory before it, and the manifest naming it, are durable); what is left waits for the next
run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

from connectors.book_actions import SnapshotFetcher
from connectors.capture import RawFrame
from connectors.gaps import GapTracker
from connectors.rest import WEIGHT_PER_MINUTE, RestClient
from connectors.session import WebSocketSession
from engine.batchqueue import BatchQueue
from engine.book_records import BOOK_DATASET, BookLevel
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import FeedvaultError, StorageError, SubscriptionRejected, first_leaf
from engine.lifecycle import StopController, StopReason
from engine.logs import get_logger, log_event
from engine.pipeline import Lane, Pipeline
from engine.records import Trade
from engine.stats import Counters, peak_rss_bytes
from feedvault.channels import BOOK
from feedvault.config import StreamConfig
from feedvault.ecs import DEFAULT_LOOKUP, EcsLookup
from feedvault.recovery_task import recover_in_background
from feedvault.run import ManifestRun
from feedvault.sessions import CountingSource, build_sessions
from feedvault.stream_spill import spill_run_manifest, spill_unfinished
from feedvault.stream_stats import StreamStats
from sinks.keys import DEFAULT_KEY_TEMPLATE, RAW_DATASET, RAW_KEY_TEMPLATE, KeyTemplate
from sinks.manifest import (
    BookResync,
    Gap,
    Lost,
    Manifest,
    Reset,
    StreamFigures,
    book_resync,
    iso_utc,
)
from sinks.sink import WindowedSink
from sinks.spill import SpillDir
from sinks.spilllock import hold_run_lock
from sinks.windowing import Windower, WindowPolicy
from sinks.writer import Destination, ObjectWriter, open_writer

log = get_logger("run")

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


class StreamRun(ManifestRun[StreamConfig]):
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
        super().__init__(
            config,
            command=command,
            clock=clock,
            controller=controller,
            install_signal_handlers=install_signal_handlers,
            max_runtime_seconds=config.max_runtime_seconds,
            ecs_lookup=ecs_lookup,
        )
        self._writer = writer
        self.counters = Counters()
        self.gaps = GapTracker()
        self.queue: BatchQueue[Trade] = BatchQueue(config.queue_maxsize, config.overflow)
        #: The raw frames' queue and sink (``--capture``), else None.
        self.raw_queue: BatchQueue[RawFrame] | None = (
            BatchQueue(config.queue_maxsize, config.overflow) if config.capture else None
        )
        self.raw_sink: WindowedSink | None = None
        #: The book rows' queue and sink (``CHANNELS`` with ``book``), else None.
        #: Always ``block``: a book row dropped by ``OVERFLOW=drop-oldest`` would leave every
        #: later book (and every window-opening snapshot) wrong with nothing to show it.
        self.book_queue: BatchQueue[BookLevel] | None = (
            BatchQueue(config.queue_maxsize, "block") if config.streams_of(BOOK) else None
        )
        self.book_sink: WindowedSink | None = None
        #: How book sessions fetch REST snapshots, per exchange (set while the run's HTTP
        #: clients are open: :meth:`rest_clients`).
        self.fetchers: dict[str, SnapshotFetcher] = {}
        self.error: FeedvaultError | None = None
        self.sessions: Sequence[CountingSource] = []
        self.stats = StreamStats(
            counters=self.counters,
            queue=self.queue,
            gaps=self.gaps,
            clock=clock,
            sinks=self._sinks,
            sources=lambda: self.sessions,
            interval=config.runtime.stats_interval_seconds,
            emf_dimensions=self.metric_dimensions() if config.runtime.metrics == "emf" else None,
            emf_properties=lambda: {"run_id": self.config.run_id},
            wall_ns=self.metrics_wall_ns,
        )
        #: Set once every source has stopped and the queue is closed (the stop is draining).
        self.ingest_done = asyncio.Event()

    @property
    def destination(self) -> Destination:
        return self.config.destination

    def storage_failure(self, exc: StorageError) -> str:
        return f"{self.config.destination.variable}: {exc}"

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

    def build_sources(self) -> Sequence[CountingSource]:
        """The run's sources: one WebSocket session per exchange connection."""
        return build_sessions(
            self.config,
            self.queue,
            self.counters,
            self.gaps,
            self.clock,
            self.raw_queue,
            drain_deadline=self._drain_deadline,
            book_queue=self.book_queue,
            fetchers=self.fetchers,
        )

    def _drain_deadline(self) -> float | None:
        """When (this run's clock) the stopping sessions must have read their sockets to the
        peer's close frame: ``SOCKET_DRAIN_FRACTION`` of the stop grace after the stop."""
        requested = self.controller.requested_at
        if requested is None:
            return None
        return requested + self.config.runtime.stop_grace_seconds * SOCKET_DRAIN_FRACTION

    async def execute(self) -> int:
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
            async with self.rest_clients():
                if self._writer is not None:
                    return await self._run_with_writer(self._writer)
                async with open_writer(
                    self.config.destination,
                    multipart_threshold=self.config.sink.multipart_threshold,
                    part_size=self.config.sink.part_size,
                    security=self.config.s3,
                ) as writer:
                    return await self._run_with_writer(writer)

    @contextlib.asynccontextmanager
    async def rest_clients(self) -> AsyncIterator[None]:
        """Open one REST client per exchange whose book snapshots come over REST (its own
        request-weight budget, :mod:`connectors.rest`) for the run's book sessions, and close
        them at the end."""
        exchanges = sorted(
            {spec.exchange for spec in self.config.streams_of(BOOK)} & set(WEIGHT_PER_MINUTE)
        )
        async with contextlib.AsyncExitStack() as stack:
            for exchange in exchanges:
                client = await stack.enter_async_context(
                    RestClient(WEIGHT_PER_MINUTE[exchange], clock=self.clock)
                )
                self.fetchers[exchange] = client.get
            try:
                yield
            finally:
                self.fetchers.clear()

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
        return [sink for _, sink in self._lanes()]

    def _lanes(self) -> list[tuple[BatchQueue[Any], WindowedSink]]:
        lanes: list[tuple[BatchQueue[Any], WindowedSink]] = [(self.queue, self.sink)]
        if self.book_queue is not None and self.book_sink is not None:
            lanes.append((self.book_queue, self.book_sink))
        if self.raw_queue is not None and self.raw_sink is not None:
            lanes.append((self.raw_queue, self.raw_sink))
        return lanes

    def _rejected(self, exc: SubscriptionRejected) -> None:
        self.error = exc
        log_event(log, logging.ERROR, "subscription_rejected", error=str(exc))
        self.controller.request_stop("error")

    async def _run_with_writer(self, writer: ObjectWriter) -> int:
        config = self.config
        await self.claim(
            writer,
            retry_seconds=config.sink.upload_retry_seconds,
            stop_grace_seconds=config.runtime.stop_grace_seconds * MANIFEST_MIN_FRACTION,
        )
        template = KeyTemplate(config.sink.key_template or DEFAULT_KEY_TEMPLATE)
        self.sink = self._make_sink(writer, template, "trades", trade_ids=True)
        if self.book_queue is not None:
            self.book_sink = self._make_sink(writer, template, BOOK_DATASET, trade_ids=False)
        if self.raw_queue is not None:
            self.raw_sink = self._make_sink(
                writer, KeyTemplate(RAW_KEY_TEMPLATE), RAW_DATASET, trade_ids=False
            )
        self.sessions = self.build_sources()
        pipeline = Pipeline(
            self.sessions,
            [Lane(queue, sink) for queue, sink in self._lanes()],
            self.controller.stop,
            background=[self.stats.run],
            on_rejected=self._rejected,
            ingest_done=self.ingest_done,
        )
        spilled: list[str] = []
        async with contextlib.AsyncExitStack() as sinks:
            for sink in self._sinks():
                await sinks.enter_async_context(sink)
            try:
                async with asyncio.TaskGroup() as tg:
                    recovery = tg.create_task(  # first, then beside ingest
                        recover_in_background(
                            writer,
                            config.runtime.spill_dir,
                            destination=config.destination.url,
                            prefix=config.destination.prefix,
                            current_run=config.run_id,
                            clock=self.clock,
                        )
                    )
                    work = tg.create_task(pipeline.run())
                    budget = config.runtime.stop_grace_seconds * (1 - MANIFEST_RESERVE_FRACTION)
                    guard = tg.create_task(self.guard(work, abort_budget=budget))
                    work.add_done_callback(lambda _: guard.cancel())
                    work.add_done_callback(lambda _: recovery.cancel())
            except* FeedvaultError as group:
                error = first_leaf(group)
                assert isinstance(error, FeedvaultError)
                self.error = error
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
            spilled, lost = spill_unfinished(
                self._lanes(),
                Path(config.runtime.spill_dir),
                config.run_id,
                config.destination.url,
            )
        # Windows spilled during the run (or at the stop) and never uploaded since: named
        # only while their files are still there.
        for sink in self._sinks():
            on_disk, gone = sink.spilled_on_disk()
            spilled += [key for key in on_disk if key not in spilled]
            lost += gone
        return await self._finish(writer, spilled, lost)

    def manifest_not_written(self, manifest: Manifest) -> None:
        """Keep the manifest next to the run's spilled windows (:mod:`feedvault.stream_spill`)."""
        config = self.config
        spill_run_manifest(
            manifest,
            Path(config.runtime.spill_dir),
            config.destination.prefix,
            config.destination.url,
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

    def book_figures(self) -> tuple[dict[str, list[BookResync]], dict[str, int]]:
        """The manifest's ``resyncs`` (finished ones, then those the stop interrupted) and
        ``crossed``, per book stream (``exchange:SYMBOL:book``)."""
        resyncs: dict[str, list[BookResync]] = {}
        crossed: dict[str, int] = {}
        for source in self.sessions:
            if not isinstance(source, WebSocketSession) or source.book is None:
                continue
            tally, book = source.tally, source.book
            book.resyncs += book.feed.take_resyncs()  # finished in a batch cut short
            for resync in book.resyncs + book.in_progress():
                name = tally.stream_name(tally.configured(resync.raw_symbol))
                resyncs.setdefault(name, []).append(book_resync(resync))
            for symbol, count in book.figures().items():
                if count:
                    crossed[tally.stream_name(tally.configured(symbol))] = count
        return resyncs, crossed

    async def _finish(self, writer: ObjectWriter, spilled: list[str], lost: list[Lost]) -> int:
        """Write the manifest (last) and decide the exit status."""
        self.controller.finishing = True
        self.stats.sync()
        streams = self.stream_figures()
        never = self.never_subscribed()
        error = str(self.error) if self.error is not None else None
        if never and error is None:
            named = [f"{name} ({last_error})" for name, last_error in never.items()]
            error = "never subscribed during the run: " + "; ".join(named)
            log_event(log, logging.ERROR, "streams_never_subscribed", streams=named)
        warnings = [
            f"{name}: subscribed for {figures['subscribed_seconds']:g} s but saw no "
            + ("book update" if name.endswith(":book") else "trade")
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
        resyncs, crossed = self.book_figures()
        manifest = self.new_manifest(
            status="complete" if complete else "incomplete",
            stop_reason=reason,
            objects=[entry for sink in self._sinks() for entry in sink.objects],
            counters=self.counters.as_dict(),
            error=error,
            gaps=gaps,
            spilled=spilled,
            streams=streams,
            resets=resets,
            resyncs=resyncs,
            crossed=crossed,
            lost=lost,
            warnings=warnings,
        )
        if not await self.write_final(writer, manifest, self._manifest_seconds()):
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
            **self.real_figures(),
        )
        return 0 if complete else 1
