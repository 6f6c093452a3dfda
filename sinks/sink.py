"""The windowed sink: windows in, durable objects out, with bounded concurrency.

See docs/architecture.md.

:class:`WindowedSink` feeds batches to a :class:`~sinks.windowing.Windower` and uploads every
closed window through an :class:`~sinks.writer.ObjectWriter`, at most
``max_concurrent_uploads`` at a time, in tasks of an :class:`asyncio.TaskGroup` it owns::

    spill = SpillDir(Path(spill_dir), run_id, destination_url)
    async with WindowedSink(windower, writer, clock=clock, spill=spill) as sink:
        async for batch in source:
            await sink.write(batch)      # waits when all upload slots are busy (backpressure)
        try:
            async with asyncio.timeout(grace):
                await sink.close()       # close every window, upload, retry the backlog once
        except TimeoutError:
            spill_windows(sink.unfinished(), spill_dir, run_id)
        left_on_disk = sink.spilled_keys  # + the keys just spilled: the manifest's ``spilled``

Durability: a window is durable in the store once its entry is in
:attr:`WindowedSink.objects` (appended in upload-completion order; the entry's ``stored_at`` is
the clock's wall time at that moment). A window that is not is in exactly one place:

- in memory: open in the windower, queued, in flight, or *failed* (:attr:`WindowedSink.failed`;
  only without a spill directory, or when spilling it failed): :meth:`WindowedSink.unfinished`
  returns them all, for the caller to spill;
- on local disk, durable there (fsynced) but not in the store: *spilled*
  (:attr:`WindowedSink.spilled_keys`), body not held in memory.

Each closed window the sink holds is one record in one container, in exactly one
:class:`WindowState` (queued, uploading, failed, spilled, unreadable), changed only along the
transitions the enum documents; a durable window leaves it for :attr:`WindowedSink.objects`.

So nothing accepted by :meth:`write` is lost silently, and memory holds at most the open,
queued and in-flight windows plus the failed ones that could not be spilled.

Retries and spill: the writer retries each request itself (botocore standard mode). When a put
still fails with :class:`~engine.errors.StorageError`, the sink retries it under
:attr:`WindowedSink.retry_policy` (:mod:`engine.retry`: capped exponential backoff with equal
jitter, every wait through the injected ``sleep``) until ``retry_budget_seconds`` (measured
on the injected clock from the start of its first attempt) would be exceeded, so it fails at
most one attempt (one writer deadline: :func:`sinks.s3.call_deadline`) after the budget; then
the window *spills* to ``spill`` (a :class:`~sinks.spill.SpillDir`, in a worker thread)
and leaves memory, or stays in memory as failed if there is no spill directory or the disk
write fails. Spilled and failed windows form the *backlog*, retried by one background task
(owned by the sink's task group) while the run goes on:

- a pass tries the backlog oldest first (failed in memory before spilled on disk), one window
  at a time (one spilled body in memory at a time), one put each, and stops at the first
  failure (the store is still down: no point hammering it);
- between passes it waits ``retry_policy.delay(n)`` (``retry_initial_seconds``
  doubling up to ``retry_max_seconds``), and is woken at once when a regular upload succeeds
  (the store is back); it ends when the backlog is empty and starts again when it is not;
- a spilled window that was uploaded is recorded in :attr:`objects` first, then its files are
  removed (so files are only removed once the upload is durable; an orphan left by a failed
  removal is harmless: the same key and body, uploaded again by a later recovery).

The background task runs beside at most ``max_concurrent_uploads`` regular uploads (so at most
one more put in flight). :meth:`close` stops it and makes one last pass (same rules) after the
last windows are uploaded; what is still in the backlog is then stable for the manifest. Keys are
deterministic, so a retried put never makes a second object.

Cancel-safety:

- ``write()``/``tick()`` cancelled while waiting for an upload slot: the windows they closed
  stay queued (in :meth:`unfinished`); uploads already running continue.
- ``close()`` cancelled (e.g. by the caller's timeout): it cancels the in-flight uploads and
  the backlog's retries before re-raising; their windows go back to the queue (in
  :meth:`unfinished`) or stay in the backlog.
- A cancelled spill (the upload task cancelled while its window is written to disk) leaves the
  window in memory (requeued); the files may still be written by the worker thread: an orphan
  with the same key and body, harmless.
- Leaving ``async with`` with an exception (including cancellation) cancels in-flight uploads
  and waits for them to finish cancelling; the exception propagates unchanged (not wrapped in an
  ExceptionGroup). Leaving it normally waits for in-flight uploads but starts no new ones: call
  :meth:`close` first. Either way the background retries are cancelled.
- A cancelled put may or may not have stored its object; re-uploading it later is harmless.

Event-loop fairness: encoding and compression happen inline in :meth:`write` (about a
microsecond per record, bounded by the batch size); ``write`` yields to the loop every
``yield_every_records`` records so uploads and sockets keep their pace under full load.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import partial
from itertools import count
from random import Random
from types import TracebackType
from typing import Final

from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import StorageError
from engine.logs import get_logger, log_event
from engine.retry import Jitter, RetryEvent, RetryPolicy, Sleep, retry
from sinks.manifest import Lost, StoredObjectEntry
from sinks.spill import SpillDir, SpilledEntry
from sinks.windowing import ClosedWindow, Windower, WindowRecord
from sinks.writer import ObjectWriter, StoredObject

log = get_logger("sink")  # under "feedvault": JSON lines, redacted

RETRIER_STOP_SECONDS: Final = 10.0
"""Bound on waiting for the background retries to finish cancelling (they stop at once: a
cancelled put or worker-thread wait returns immediately)."""


class WindowState(Enum):
    """Where a window the sink holds is, from its close until it is durable. The transitions::

        (closed) -> QUEUED -> UPLOADING -> (durable: out of the sink, into ``objects``)
                      ^           |  |---> FAILED   -> (durable)
                      +-----------+  +---> SPILLED  -> (durable) | UNREADABLE
                    (cancelled)

    A window leaves UPLOADING for FAILED or SPILLED once its retries are spent (the backlog);
    the backlog's retries make FAILED and SPILLED windows durable; a spilled window whose files
    cannot be read back is UNREADABLE (named in ``spilled_keys``, never retried by this sink).
    """

    QUEUED = "queued"
    """Closed, waiting for an upload slot (in memory)."""
    UPLOADING = "uploading"
    """Its upload task runs: puts, retries, then the spill if they all fail (in memory)."""
    FAILED = "failed"
    """In the backlog, held in memory (no spill directory, or spilling it failed)."""
    SPILLED = "spilled"
    """In the backlog, on local disk (fsynced); the body is no longer held."""
    UNREADABLE = "unreadable"
    """Spilled, but its files could not be read back: left on disk, named, not retried."""


_TRANSITIONS: Final[dict[WindowState, frozenset[WindowState]]] = {
    WindowState.QUEUED: frozenset({WindowState.UPLOADING}),
    WindowState.UPLOADING: frozenset({WindowState.QUEUED, WindowState.FAILED, WindowState.SPILLED}),
    WindowState.FAILED: frozenset(),
    WindowState.SPILLED: frozenset({WindowState.UNREADABLE}),
    WindowState.UNREADABLE: frozenset(),
}
"""The state changes a held window may make (becoming durable is leaving the sink)."""


@dataclass(eq=False, slots=True)
class _Held:
    """One window the sink holds until it is durable (identity-hashed).

    ``window`` is the closed window (None once spilled: its body is on disk, ``entry``);
    ``closed_at`` the clock's monotonic time of its close; ``task`` its upload task while
    UPLOADING; ``order`` ranks it among the windows of its state (set on each state change;
    negative for a window requeued in front of the queue)."""

    key: str
    closed_at: float
    state: WindowState
    order: int
    window: ClosedWindow | None
    entry: SpilledEntry | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class WindowedSink:
    """Windows batches of trades and uploads the closed windows. See the module docstring."""

    def __init__(
        self,
        windower: Windower,
        writer: ObjectWriter,
        *,
        max_concurrent_uploads: int = 4,
        clock: Clock = SYSTEM_CLOCK,
        retry_budget_seconds: float = 60.0,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 10.0,
        spill: SpillDir | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: Random | None = None,
        yield_every_records: int = 2048,
        latency_samples: int = 1000,
    ) -> None:
        if max_concurrent_uploads < 1:
            raise ValueError("max_concurrent_uploads must be at least 1")
        self.windower = windower
        self.writer = writer
        self.clock = clock
        self.max_concurrent_uploads = max_concurrent_uploads
        self.retry_budget_seconds = retry_budget_seconds
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self.spill = spill
        self._sleep = sleep
        #: Upload retries and the backlog's waits: equal jitter (see :mod:`engine.retry`).
        self.retry_policy = RetryPolicy(
            initial=retry_initial_seconds,
            cap=retry_max_seconds,
            jitter=Jitter.EQUAL,
            budget=retry_budget_seconds,
        ).using(rng)
        self._yield_every = yield_every_records
        self._since_yield = 0
        #: Durable objects, in upload-completion order (the manifest's ``objects``).
        self.objects: list[StoredObjectEntry] = []
        self.bytes_uploaded = 0
        self.records_uploaded = 0
        self.windows_closed = 0
        self.upload_retries = 0
        #: Windows written to the spill directory / uploaded from the backlog, so far.
        self.windows_spilled = 0
        self.windows_recovered = 0
        self.last_error: str | None = None
        #: Monotonic seconds from window close to durable, for the last ``latency_samples``.
        self.upload_latencies: deque[float] = deque(maxlen=latency_samples)
        #: Monotonic seconds each upload took, from its first put to durable (retries
        #: included), for the last ``latency_samples``; see :meth:`upload_durations_since`.
        self.upload_durations: deque[float] = deque(maxlen=latency_samples)
        # Every window held until durable, each in one WindowState (see _move), and how many
        # are in each state.
        self._held: dict[_Held, None] = {}  # insertion-ordered set
        self._counts: dict[WindowState, int] = dict.fromkeys(WindowState, 0)
        self._ranks = count(1)
        self._changed = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._retrier: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._stopped = False
        self._closing = False

    # -- context ---------------------------------------------------------------------------

    async def __aenter__(self) -> WindowedSink:
        if self._tg is not None:
            raise RuntimeError("WindowedSink is already entered")
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._stopped = False
        self._closing = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg = self._tg
        if tg is None:
            return
        if exc is not None:
            self.cancel_uploads()
        self._cancel_retrier()
        try:
            await tg.__aexit__(None, None, None)
        finally:
            self._tg = None
            self._stopped = True

    # -- state -----------------------------------------------------------------------------

    @property
    def uploads_in_flight(self) -> int:
        return self._counts[WindowState.UPLOADING]

    @property
    def uploads_queued(self) -> int:
        """Closed windows waiting for an upload slot."""
        return self._counts[WindowState.QUEUED]

    @property
    def open_windows(self) -> int:
        return self.windower.open_count

    @property
    def states(self) -> dict[WindowState, int]:
        """How many closed windows the sink holds in each :class:`WindowState` (a copy)."""
        return dict(self._counts)

    @property
    def failed(self) -> list[ClosedWindow]:
        """Windows whose upload failed past the retry budget and that are held in memory (no
        spill directory, or spilling them failed): kept, not lost, and retried."""
        return [held.window for held in self._in_state(WindowState.FAILED) if held.window]

    @property
    def spilled_keys(self) -> list[str]:
        """Keys of the windows on local disk (spilled) and not (yet) durable in the store,
        oldest first; the files of those that could not be read back come last."""
        return [entry.key for entry in self._spilled_entries()]

    def _spilled_entries(self) -> list[SpilledEntry]:
        """The spill entries of the SPILLED windows, oldest first, then those of the
        UNREADABLE ones (a key once each)."""
        spilled = {h.key: h.entry for h in self._in_state(WindowState.SPILLED) if h.entry}
        unreadable = {h.key: h.entry for h in self._in_state(WindowState.UNREADABLE) if h.entry}
        return [*spilled.values(), *(e for k, e in unreadable.items() if k not in spilled)]

    def spilled_on_disk(self) -> tuple[list[str], list[Lost]]:
        """:attr:`spilled_keys` checked against the disk: the keys whose files are still
        there (the manifest's ``spilled``), and those whose files are gone (deleted, the
        directory removed: the manifest's ``lost``, with their record counts). Blocking
        ``stat`` calls, one per spilled window: call it once, at the end of a run."""
        there: list[str] = []
        gone: list[Lost] = []
        for entry in self._spilled_entries():
            if entry.path.is_file() and entry.sidecar.is_file():
                there.append(entry.key)
            else:
                gone.append(
                    Lost(key=entry.key, records=entry.records, reason="spill files are gone")
                )
        return there, gone

    @property
    def backlog(self) -> int:
        """Windows waiting for the background retries (failed in memory + spilled)."""
        return self._counts[WindowState.FAILED] + self._counts[WindowState.SPILLED]

    def upload_durations_since(self, mark: int) -> tuple[list[float], int]:
        """The durations (seconds, on the injected clock) of the uploads that completed after
        the first ``mark`` ones, oldest first (at most the last ``latency_samples``), and the
        mark to pass next time (the number of uploads completed so far)."""
        done = len(self.objects)
        fresh = min(max(done - mark, 0), len(self.upload_durations))
        durations = list(self.upload_durations)[len(self.upload_durations) - fresh :]
        return durations, done

    def unfinished(self) -> list[ClosedWindow]:
        """Every window held in memory that is not durable, closing the open ones now (they
        join the queue): in-flight, queued, then failed. Windows already spilled are not
        included (see :attr:`spilled_keys`). Call it after uploads stopped (:meth:`close`
        cancelled, or :meth:`cancel_uploads`) to spill them; a window still in flight may
        also complete, which is harmless (same key, same body)."""
        for window in self.windower.close_all():
            self.windows_closed += 1
            self._add(window, self.clock.monotonic())
        held = self._in_state(WindowState.UPLOADING) + self._in_state(WindowState.QUEUED)
        return [h.window for h in held if h.window] + self.failed

    # -- the windows held: one state each ----------------------------------------------------

    def _in_state(self, state: WindowState) -> list[_Held]:
        """The held windows in ``state``, in their order (the queue: front first)."""
        if not self._counts[state]:
            return []
        return sorted((h for h in self._held if h.state is state), key=lambda h: h.order)

    def _front(self) -> _Held:
        """The QUEUED window at the front of the queue (there is one)."""
        queued = (h for h in self._held if h.state is WindowState.QUEUED)
        return min(queued, key=lambda h: h.order)

    def _add(self, window: ClosedWindow, closed_at: float) -> None:
        """A window just closed: QUEUED, at the back of the queue."""
        held = _Held(window.key, closed_at, WindowState.QUEUED, next(self._ranks), window)
        self._held[held] = None
        self._counts[WindowState.QUEUED] += 1

    def _move(self, held: _Held, state: WindowState, *, front: bool = False) -> None:
        """Change ``held``'s state (one of :data:`_TRANSITIONS`), last in its new state's
        order, or first with ``front``."""
        if state not in _TRANSITIONS[held.state]:
            raise AssertionError(f"window {held.key}: no transition {held.state} -> {state}")
        self._counts[held.state] -= 1
        self._counts[state] += 1
        held.state = state
        rank = next(self._ranks)
        held.order = -rank if front else rank

    def _durable(self, held: _Held) -> None:
        """``held`` is durable in the store: the sink no longer holds it."""
        del self._held[held]
        self._counts[held.state] -= 1

    # -- input -----------------------------------------------------------------------------

    async def write(self, batch: Sequence[WindowRecord]) -> None:
        """Add a batch; upload the windows it closed. Waits while every upload slot is busy."""
        closed = self.windower.add(batch)
        if closed:
            self._enqueue(closed)
        if self._counts[WindowState.QUEUED]:
            await self._pump()
        self._since_yield += len(batch)
        if self._since_yield >= self._yield_every:
            self._since_yield = 0
            await asyncio.sleep(0)

    async def tick(self) -> None:
        """Close the windows whose time slot has ended and start their uploads."""
        closed = self.windower.due()
        if closed:
            self._enqueue(closed)
        if self._counts[WindowState.QUEUED]:
            await self._pump()

    async def close(self) -> None:
        """Close every window, upload them, make one last pass over the backlog, and return.

        Stops the background retries first; then uploads every window (a window failing past
        the retry budget joins the backlog as during the run); then tries the backlog once more
        (one put each, stopping at the first failure). Returns when nothing is queued or in
        flight; what is left is in :attr:`failed` (in memory) and :attr:`spilled_keys` (on
        disk), stable from then on. Bounded by the caller's timeout (the stop grace): if
        cancelled, cancels the in-flight uploads and the backlog pass, and re-raises.
        """
        self._closing = True
        try:
            await self._stop_retrier()
            self._enqueue(self.windower.close_all())
            while True:
                await self._pump()
                if not self.uploads_in_flight and (not self.uploads_queued or self._stopped):
                    break
                self._changed.clear()
                await self._changed.wait()
            if self.backlog and not self._stopped:
                await self._drain_backlog()
        except asyncio.CancelledError:
            self.cancel_uploads()
            raise

    def cancel_uploads(self) -> None:
        """Cancel in-flight uploads and the background retries, and start no new ones; their
        windows stay unfinished (in memory) or spilled (on disk)."""
        self._stopped = True
        for held in self._in_state(WindowState.UPLOADING):
            if held.task is not None:
                held.task.cancel()
        self._cancel_retrier()

    # -- uploads ---------------------------------------------------------------------------

    def _enqueue(self, windows: Iterable[ClosedWindow]) -> None:
        now = self.clock.monotonic()
        for window in windows:
            self.windows_closed += 1
            self._add(window, now)

    async def _pump(self) -> None:
        while self._counts[WindowState.QUEUED] and not self._stopped:
            if self.uploads_in_flight >= self.max_concurrent_uploads:
                self._changed.clear()
                await self._changed.wait()
                continue
            self._start(self._front())

    def _start(self, held: _Held) -> None:
        if self._tg is None:
            raise RuntimeError("use 'async with WindowedSink(...)' before writing")
        self._move(held, WindowState.UPLOADING)
        held.task = self._tg.create_task(self._upload(held), name=f"upload {held.key}")
        held.task.add_done_callback(partial(self._upload_done, held))

    async def _upload(self, held: _Held) -> None:
        window = held.window
        assert window is not None  # in memory until spilled
        started = self.clock.monotonic()
        try:
            stored = await self._put_with_retry(window)
        except StorageError as exc:
            self.last_error = str(exc)
            log_event(log, logging.ERROR, "upload_failed", key=window.key, error=str(exc))
            await self._park(held)
        except Exception as exc:  # a bug must not take the other uploads down
            self.last_error = f"{type(exc).__name__}: {exc}"
            log_event(log, logging.ERROR, "upload_error", key=window.key, exc_info=True)
            await self._park(held)
        else:
            self._durable(held)
            self._record(window, stored, held.closed_at, started)
            if self.backlog:
                self._wakeup.set()  # the store answers again: retry the backlog now
        # Cancelled, it stays UPLOADING until _upload_done requeues it.
        held.task = None

    def _upload_done(self, held: _Held, task: asyncio.Task[None]) -> None:
        if held in self._held and held.state is WindowState.UPLOADING and held.task is task:
            # Cancelled (possibly before it started): back to the queue, still unfinished.
            held.task = None
            self._move(held, WindowState.QUEUED, front=True)
        self._changed.set()

    def _record(
        self, window: ClosedWindow, stored: StoredObject, closed_at: float, started: float
    ) -> None:
        self.objects.append(StoredObjectEntry.of(window, stored, self.clock.time_ns()))
        self.bytes_uploaded += stored.bytes
        self.records_uploaded += window.records
        now = self.clock.monotonic()
        self.upload_latencies.append(now - closed_at)
        self.upload_durations.append(now - started)

    # -- backlog: spill and background retries --------------------------------------------

    async def _park(self, held: _Held) -> None:
        """Move a window that failed past the retry budget into the backlog: SPILLED to disk
        (and out of memory) when possible, else FAILED (held in memory). Cancel-safe: if
        cancelled, the window is still UPLOADING (requeued by :meth:`_upload_done`)."""
        window = held.window
        assert window is not None
        if self.spill is not None:
            try:
                entry = await asyncio.to_thread(self.spill.spill, window)
            except StorageError as exc:
                log_event(log, logging.ERROR, "window_spill_failed", key=window.key, error=str(exc))
            else:
                held.entry, held.window = entry, None
                self._move(held, WindowState.SPILLED)
                self.windows_spilled += 1
                log_event(
                    log,
                    logging.WARNING,
                    "window_spilled",
                    key=window.key,
                    records=entry.records,
                    path=str(entry.path),
                )
                self._ensure_retrier()
                return
        self._move(held, WindowState.FAILED)
        self._ensure_retrier()

    def _ensure_retrier(self) -> None:
        if self._closing or self._stopped or self._tg is None:
            return
        if self._retrier is None or self._retrier.done():
            self._retrier = self._tg.create_task(self._retry_backlog(), name="upload backlog")

    def _cancel_retrier(self) -> None:
        if self._retrier is not None:
            self._retrier.cancel()

    async def _stop_retrier(self) -> None:
        retrier = self._retrier
        if retrier is not None and not retrier.done():
            retrier.cancel()
            await asyncio.wait([retrier], timeout=RETRIER_STOP_SECONDS)

    async def _retry_backlog(self) -> None:
        """The background retries (see the module docstring): passes over the backlog with
        capped exponential backoff between failed passes, woken early by a successful upload.
        Ends when the backlog is empty."""
        failures = 0
        while self.backlog:
            self._wakeup.clear()
            if await self._drain_backlog():
                failures = 0
                continue
            delay = self.retry_policy.delay(failures)
            failures += 1
            log_event(
                log,
                logging.WARNING,
                "backlog_waiting",
                windows=self.backlog,
                delay_s=round(delay, 3),
            )
            if await self._pause(delay):
                failures = 0

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (the injected sleep) or until woken; True if woken."""
        if self._wakeup.is_set():
            return True
        async with asyncio.TaskGroup() as tg:
            sleeper = tg.create_task(self._sleep_for(seconds))
            waker = tg.create_task(self._wakeup.wait())
            sleeper.add_done_callback(lambda _: waker.cancel())
            waker.add_done_callback(lambda _: sleeper.cancel())
        return self._wakeup.is_set()

    async def _sleep_for(self, seconds: float) -> None:
        await self._sleep(seconds)

    async def _drain_backlog(self) -> bool:
        """One pass: upload backlog windows oldest first, FAILED (memory) before SPILLED
        (disk), one at a time; stop at the first failure. True if nothing failed."""
        for held in self._in_state(WindowState.FAILED):
            window = held.window
            if held.state is not WindowState.FAILED or held not in self._held or window is None:
                continue
            started = self.clock.monotonic()
            stored = await self._put_once(window)
            if stored is None:
                return False
            if held in self._held:
                self._durable(held)
                self._record_recovered(window, stored, held.closed_at, started)
        spill = self.spill
        for held in self._in_state(WindowState.SPILLED):
            entry = held.entry
            if held.state is not WindowState.SPILLED or spill is None or entry is None:
                continue
            started = self.clock.monotonic()
            try:
                window = await asyncio.to_thread(spill.read, entry)
            except StorageError as exc:  # IntegrityError included: named, not retried here
                log_event(log, logging.ERROR, "spill_read_failed", key=held.key, error=str(exc))
                if held.state is WindowState.SPILLED:
                    self._move(held, WindowState.UNREADABLE)
                continue
            stored = await self._put_once(window)
            if stored is None:
                return False
            # Durable: record it (no await in between), then remove its files.
            if held.state is not WindowState.SPILLED:
                continue  # another pass (one still cancelling) recorded it meanwhile
            self._durable(held)
            self._record_recovered(window, stored, held.closed_at, started)
            try:
                await asyncio.to_thread(spill.remove, entry)
            except StorageError as exc:
                log_event(log, logging.WARNING, "spill_remove_failed", key=held.key, error=str(exc))
        return True

    async def _put_once(self, window: ClosedWindow) -> StoredObject | None:
        try:
            return await self.writer.put(window.key, window.body)
        except StorageError as exc:
            self.last_error = str(exc)
        except Exception as exc:  # a bug must not end the retries
            self.last_error = f"{type(exc).__name__}: {exc}"
            log_event(log, logging.ERROR, "backlog_upload_error", key=window.key, exc_info=True)
        return None

    def _record_recovered(
        self, window: ClosedWindow, stored: StoredObject, closed_at: float, started: float
    ) -> None:
        self._record(window, stored, closed_at, started)
        self.windows_recovered += 1
        log_event(log, logging.INFO, "backlog_uploaded", key=window.key)

    async def _put_with_retry(self, window: ClosedWindow) -> StoredObject:
        """Put ``window`` under :attr:`retry_policy` (:func:`engine.retry.retry`): a
        :class:`StorageError` is retried while the next attempt would start within
        ``retry_budget_seconds`` of the first one's start, so the last one is raised at most
        one attempt (one writer deadline) after the budget. Any other exception is not retried.
        While the backlog holds windows (outside :meth:`close`), one attempt only."""
        # Windows are already waiting in the backlog: the store is known to be failing, and
        # the background retries probe it. A new window gets one attempt (it is the probe that
        # wakes the backlog when it succeeds), not a budget of retries that would hold its
        # upload slot, so closed windows keep spilling and reading goes on.
        policy = self.retry_policy
        if self.backlog and not self._closing:
            policy = replace(policy, budget=0.0)

        def retrying(event: RetryEvent) -> None:
            self.upload_retries += 1
            self.last_error = str(event.error)
            log_event(
                log,
                logging.WARNING,
                "upload_retry",
                key=window.key,
                **event.log_fields(),
            )

        return await retry(
            partial(self.writer.put, window.key, window.body),
            policy,
            retry_on=(StorageError,),
            clock=self.clock,
            sleep=self._sleep,
            on_retry=retrying,
        )
