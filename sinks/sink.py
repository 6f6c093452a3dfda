"""The windowed sink (SPEC §5): windows in, durable objects out, with bounded concurrency.

:class:`WindowedSink` feeds batches to a :class:`~sinks.windowing.Windower` and uploads every
closed window through an :class:`~sinks.writer.ObjectWriter`, at most
``max_concurrent_uploads`` at a time, in tasks of an :class:`asyncio.TaskGroup` it owns::

    async with WindowedSink(windower, writer, clock=clock) as sink:
        async for batch in source:
            await sink.write(batch)      # waits when all upload slots are busy (backpressure)
        try:
            async with asyncio.timeout(grace):
                await sink.close()       # close every window, upload, wait
        except TimeoutError:
            spill_windows(sink.unfinished(), spill_dir, run_id)

Durability: a window is durable once its entry is in :attr:`WindowedSink.objects` (appended in
upload-completion order; the entry's ``stored_at`` is the clock's wall time at that moment).
Every window that is not is in :meth:`WindowedSink.unfinished`, so nothing accepted by
:meth:`write` is lost silently.

Retries: the writer retries each request itself (botocore standard mode). When a put still
fails with :class:`~engine.errors.StorageError`, the sink retries it with capped exponential
backoff and jitter until ``retry_budget_seconds`` (measured on the injected clock) would be
exceeded; then the window is kept as *failed* (:attr:`WindowedSink.failed`), retried once more
by :meth:`close`, and otherwise left for spilling. Keys are deterministic, so a retried put
never makes a second object.

Cancel-safety:

- ``write()``/``tick()`` cancelled while waiting for an upload slot: the windows they closed
  stay queued (in :meth:`unfinished`); uploads already running continue.
- ``close()`` cancelled (e.g. by the caller's timeout): it cancels the in-flight uploads before
  re-raising; their windows go back to the queue and stay in :meth:`unfinished`.
- Leaving ``async with`` with an exception (including cancellation) cancels in-flight uploads
  and waits for them to finish cancelling; the exception propagates unchanged (not wrapped in an
  ExceptionGroup). Leaving it normally waits for in-flight uploads but starts no new ones: call
  :meth:`close` first.
- A cancelled put may or may not have stored its object; re-uploading it later is harmless.

Event-loop fairness: encoding and compression happen inline in :meth:`write` (about a
microsecond per record, bounded by the batch size); ``write`` yields to the loop every
``yield_every_records`` records so uploads and sockets keep their pace under full load.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from types import TracebackType

from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import StorageError
from sinks.manifest import StoredObjectEntry
from sinks.windowing import ClosedWindow, Windower, WindowRecord
from sinks.writer import ObjectWriter, StoredObject

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class _Upload:
    """One upload attempt of a window (identity-hashed: a window may be uploaded again)."""

    __slots__ = ("closed_at", "task", "window")

    task: asyncio.Task[None]

    def __init__(self, window: ClosedWindow, closed_at: float) -> None:
        self.window = window
        self.closed_at = closed_at


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
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
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
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._yield_every = yield_every_records
        self._since_yield = 0
        #: Durable objects, in upload-completion order (the manifest's ``objects``).
        self.objects: list[StoredObjectEntry] = []
        self.bytes_uploaded = 0
        self.records_uploaded = 0
        self.windows_closed = 0
        self.upload_retries = 0
        self.last_error: str | None = None
        #: Monotonic seconds from window close to durable, for the last ``latency_samples``.
        self.upload_latencies: deque[float] = deque(maxlen=latency_samples)
        #: Monotonic seconds each upload took, from its first put to durable (retries
        #: included), for the last ``latency_samples``; see :meth:`upload_durations_since`.
        self.upload_durations: deque[float] = deque(maxlen=latency_samples)
        self._queue: deque[tuple[ClosedWindow, float]] = deque()
        self._in_flight: dict[_Upload, None] = {}  # insertion-ordered set
        self._failed: dict[str, ClosedWindow] = {}
        self._changed = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._stopped = False

    # -- context ---------------------------------------------------------------------------

    async def __aenter__(self) -> WindowedSink:
        if self._tg is not None:
            raise RuntimeError("WindowedSink is already entered")
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._stopped = False
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
        try:
            await tg.__aexit__(None, None, None)
        finally:
            self._tg = None
            self._stopped = True

    # -- state -----------------------------------------------------------------------------

    @property
    def uploads_in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def uploads_queued(self) -> int:
        """Closed windows waiting for an upload slot."""
        return len(self._queue)

    @property
    def open_windows(self) -> int:
        return self.windower.open_count

    @property
    def failed(self) -> list[ClosedWindow]:
        """Windows whose upload failed past the retry budget (kept, not lost)."""
        return list(self._failed.values())

    def upload_durations_since(self, mark: int) -> tuple[list[float], int]:
        """The durations (seconds, on the injected clock) of the uploads that completed after
        the first ``mark`` ones, oldest first (at most the last ``latency_samples``), and the
        mark to pass next time (the number of uploads completed so far)."""
        done = len(self.objects)
        fresh = min(max(done - mark, 0), len(self.upload_durations))
        durations = list(self.upload_durations)[len(self.upload_durations) - fresh :]
        return durations, done

    def unfinished(self) -> list[ClosedWindow]:
        """Every window that is not durable, closing the open ones now (they join the queue):
        in-flight, queued, then failed. Call it after uploads stopped (:meth:`close`
        cancelled, or :meth:`cancel_uploads`) to spill them; a window still in flight may
        also complete, which is harmless (same key, same body)."""
        for window in self.windower.close_all():
            self.windows_closed += 1
            self._queue.append((window, self.clock.monotonic()))
        windows = [upload.window for upload in self._in_flight]
        windows += [window for window, _ in self._queue]
        windows += self._failed.values()
        return windows

    # -- input -----------------------------------------------------------------------------

    async def write(self, batch: Sequence[WindowRecord]) -> None:
        """Add a batch; upload the windows it closed. Waits while every upload slot is busy."""
        closed = self.windower.add(batch)
        if closed:
            self._enqueue(closed)
        if self._queue:
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
        if self._queue:
            await self._pump()

    async def close(self) -> None:
        """Close every window, upload them (and retry failed ones once more), and wait.

        Returns when nothing is queued or in flight; windows that still failed are in
        :attr:`failed`. If cancelled, cancels the in-flight uploads and re-raises.
        """
        self._enqueue(self.windower.close_all())
        for window in self._failed.values():
            self._queue.append((window, self.clock.monotonic()))
        self._failed.clear()
        try:
            while True:
                await self._pump()
                if not self._in_flight and (not self._queue or self._stopped):
                    return
                self._changed.clear()
                await self._changed.wait()
        except asyncio.CancelledError:
            self.cancel_uploads()
            raise

    def cancel_uploads(self) -> None:
        """Cancel in-flight uploads and start no new ones; their windows stay unfinished."""
        self._stopped = True
        for upload in self._in_flight:
            upload.task.cancel()

    # -- uploads ---------------------------------------------------------------------------

    def _enqueue(self, windows: Iterable[ClosedWindow]) -> None:
        now = self.clock.monotonic()
        for window in windows:
            self.windows_closed += 1
            self._queue.append((window, now))

    async def _pump(self) -> None:
        while self._queue and not self._stopped:
            if len(self._in_flight) >= self.max_concurrent_uploads:
                self._changed.clear()
                await self._changed.wait()
                continue
            self._start(*self._queue.popleft())

    def _start(self, window: ClosedWindow, closed_at: float) -> None:
        if self._tg is None:
            self._queue.appendleft((window, closed_at))
            raise RuntimeError("use 'async with WindowedSink(...)' before writing")
        upload = _Upload(window, closed_at)
        upload.task = self._tg.create_task(self._upload(upload), name=f"upload {window.key}")
        upload.task.add_done_callback(partial(self._upload_done, upload))
        self._in_flight[upload] = None

    async def _upload(self, upload: _Upload) -> None:
        window = upload.window
        started = self.clock.monotonic()
        try:
            stored = await self._put_with_retry(window)
        except StorageError as exc:
            self.last_error = str(exc)
            self._failed[window.key] = window
            log.error("upload of %s failed past the retry budget: %s", window.key, exc)
        except Exception as exc:  # a bug must not take the other uploads down
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._failed[window.key] = window
            log.exception("upload of %s failed unexpectedly", window.key)
        else:
            self._record(window, stored, upload.closed_at, started)
        # Not in a finally: a cancelled upload stays in flight until _upload_done requeues it.
        del self._in_flight[upload]

    def _upload_done(self, upload: _Upload, task: asyncio.Task[None]) -> None:
        if upload in self._in_flight:
            # Cancelled (possibly before it started): back to the queue, still unfinished.
            del self._in_flight[upload]
            self._queue.appendleft((upload.window, upload.closed_at))
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

    async def _put_with_retry(self, window: ClosedWindow) -> StoredObject:
        started: float | None = None
        attempt = 0
        while True:
            try:
                return await self.writer.put(window.key, window.body)
            except StorageError as exc:
                now = self.clock.monotonic()
                if started is None:
                    started = now
                base = min(self.retry_max_seconds, self.retry_initial_seconds * 2**attempt)
                delay = base * (0.5 + 0.5 * self._rng.random())
                if now - started + delay > self.retry_budget_seconds:
                    raise
                attempt += 1
                self.upload_retries += 1
                self.last_error = str(exc)
                log.warning(
                    "upload of %s failed (attempt %d), retrying in %.2fs: %s",
                    window.key,
                    attempt,
                    delay,
                    exc,
                )
                await self._sleep(delay)
