"""The run lifecycle shared by ``stream``, ``replay`` and ``batch`` (docs: architecture.md).

Every run, whatever it does, goes through the same steps, written here once:

1. **start**: the run's start times (injected clock, plus real time and CPU for the last log
   line) and its deadline (``MAX_RUNTIME_SECONDS`` from this moment); SIGTERM/SIGINT handlers go
   on the loop (:mod:`engine.signals`) and come off it whatever happens;
2. **identify** (:meth:`RunLifecycle.identify`): who the run is (on ECS, its task);
3. the ``run_start`` log line;
4. **execute** (:meth:`RunLifecycle.execute`): the run's work under :meth:`RunLifecycle.guard`,
   its manifest last, its exit status;
5. a store that cannot be reached at all ends the run with one line on stderr and exit 1:
   :class:`~engine.errors.DestinationUnavailable` (the first write never landed) or any other
   :class:`~engine.errors.StorageError` raised while opening the store.

The stop: :class:`StopController` turns the deadline, signals and errors into a ``stop`` event
(first) and an ``abort`` event (second signal). What a stop means is the run's
:class:`StopPolicy`: a stream stops *gracefully* (its sources close and drain; the work is
cancelled only on a second signal or when the stop grace, less a reserve for the manifest, runs
out), a batch job is *cancelled* at the stop (a job that did not finish is not a success).

This module imports nothing of the storage layer: what a manifest is, and how it is written, is
the application's (:mod:`feedvault.run`). Time is injected (:class:`~engine.clock.Clock`), so
deadlines and grace periods are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from engine import signals
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import DestinationUnavailable, StorageError
from engine.logs import get_logger, log_event

StopReason = Literal["deadline", "signal", "error", "end"]
"""Why a run stopped: its deadline passed, a signal came, an error, or its input ended."""

GUARD_TICK_SECONDS: Final = 0.1
"""How often the guard looks at the deadline and the stop grace (injected clock)."""

log = get_logger("run")


class StopPolicy(enum.Enum):
    """What the first stop request does to the run's work."""

    GRACEFUL = "graceful"
    """The sources stop and drain; the work is cancelled only by an abort (a second signal, or
    the stop grace's budget spent)."""
    CANCEL = "cancel"
    """The work is cancelled at once (a batch job)."""


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
        """Begin the stop; later requests keep the first reason."""
        if not self.stop.is_set():
            self.reason = reason
            self.requested_at = self.clock.monotonic()
            self.stop.set()

    def on_signal(self, signame: str) -> None:
        """First signal: stop. Second: abort (spill and exit 1), unless the manifest is already
        being written (then the run finishes as it was going to)."""
        if self.finishing:
            event = "second_signal" if self.stop.is_set() else "signal"
            log_event(log, logging.WARNING, event, signal=signame, action="none")
        elif self.stop.is_set():
            log_event(log, logging.WARNING, "second_signal", signal=signame, action="abort")
            self.abort.set()
        else:
            log_event(log, logging.INFO, "signal", signal=signame, action="stop")
            self.request_stop("signal")


class RunLifecycle(ABC):
    """One run, from its start to its exit status: subclass, then ``await run()``.

    A subclass supplies :meth:`identify` (who the run is), :meth:`start_fields` (the
    ``run_start`` line's fields) and :meth:`execute` (the work, the manifest, the exit status);
    it uses :meth:`guard` to watch the deadline and the stop while its work runs.

    Attributes set by :meth:`run`: ``started_ns`` (the injected clock's wall time),
    ``deadline`` (monotonic, None without ``MAX_RUNTIME_SECONDS``), ``aborted`` (the guard
    cancelled the work on an abort).
    """

    stop_policy: StopPolicy = StopPolicy.GRACEFUL
    program: str = "feedvault"
    """How the one stderr line of an unreachable store begins."""
    cancel_event: str = "abort"
    """The log event of the guard cancelling the work."""
    deadline_level: int = logging.INFO
    """The level of the ``deadline`` line (a batch job cut short by it is a warning)."""

    def __init__(
        self,
        *,
        clock: Clock,
        controller: StopController | None,
        install_signal_handlers: bool,
        max_runtime_seconds: float | None,
    ) -> None:
        self.clock = clock
        self.controller = controller or StopController(clock=clock)
        self.install_signal_handlers = install_signal_handlers
        self.max_runtime_seconds = max_runtime_seconds
        self.aborted = False
        self.started_ns = 0
        self.deadline: float | None = None
        self._real_started = (0.0, 0.0)

    async def run(self) -> int:
        """Run to the end; return the exit status (0 success, 1 otherwise; a configuration
        problem found at the first write raises :class:`~engine.errors.ConfigError`)."""
        self.started_ns = self.clock.time_ns()
        # Real (not injected) time and CPU, for the run_end figures only.
        self._real_started = (time.monotonic(), time.process_time())
        self.start_deadline()
        loop = asyncio.get_running_loop()
        if self.install_signal_handlers:
            signals.install_on_loop(loop, self.controller.on_signal)
        try:
            await self.identify()
            log_event(log, logging.INFO, "run_start", **self.start_fields())
            return await self.execute()
        except DestinationUnavailable as exc:
            log_event(log, logging.ERROR, "destination_unavailable", error=str(exc))
            print(f"{self.program}: {exc}", file=sys.stderr, flush=True)
            return 1
        except StorageError as exc:  # the store could not even be opened
            log_event(log, logging.ERROR, "run_failed", error=str(exc))
            print(f"{self.program}: {self.storage_failure(exc)}", file=sys.stderr, flush=True)
            return 1
        finally:
            if self.install_signal_handlers:
                signals.remove_from_loop(loop)

    def start_deadline(self) -> None:
        """Count ``MAX_RUNTIME_SECONDS`` from now (:meth:`run` calls it first; a run whose
        limit is for its work alone calls it again when the work starts)."""
        limit = self.max_runtime_seconds
        if limit is not None and not math.isinf(limit):
            self.deadline = self.clock.monotonic() + limit

    @abstractmethod
    async def identify(self) -> None:
        """Who the run is, before its first log line (e.g. its ECS task). Never fatal."""

    @abstractmethod
    def start_fields(self) -> dict[str, Any]:
        """The ``run_start`` line's fields (run id, version, configuration, ...)."""

    @abstractmethod
    async def execute(self) -> int:
        """The run's work, its manifest (last) and its exit status."""

    def storage_failure(self, exc: StorageError) -> str:
        """The stderr line (after the program's name) when the store cannot be opened."""
        return str(exc)

    def real_figures(self) -> dict[str, float]:
        """Real elapsed seconds and CPU seconds since :meth:`run` began (``run_end``)."""
        wall, cpu = self._real_started
        return {
            "elapsed_s": round(time.monotonic() - wall, 3),
            "cpu_s": round(time.process_time() - cpu, 3),
        }

    async def guard(self, work: asyncio.Task[Any], *, abort_budget: float) -> None:
        """Watch ``work`` until it is cancelled by this guard, or this guard is cancelled (the
        owner cancels it when the work ends; a work found done is left alone). Requests the stop
        at the deadline; then, by the :attr:`stop_policy`: ``CANCEL`` cancels the work at the
        stop, ``GRACEFUL`` only on the abort event or once ``abort_budget`` seconds (the stop
        grace less what the run keeps for its manifest) have passed since the stop.
        Cancel-safe."""
        controller = self.controller
        graceful = self.stop_policy is StopPolicy.GRACEFUL
        while not work.done():
            now = self.clock.monotonic()
            if not controller.stop.is_set() and self.deadline is not None and now >= self.deadline:
                log_event(
                    log, self.deadline_level, "deadline", max_runtime_s=self.max_runtime_seconds
                )
                controller.request_stop("deadline")
            if graceful:
                requested = controller.requested_at
                expired = requested is not None and now - requested >= abort_budget
                if controller.abort.is_set() or expired:
                    cause = "second signal" if controller.abort.is_set() else "stop grace expired"
                    log_event(log, logging.ERROR, self.cancel_event, reason=cause)
                    break
            elif controller.stop.is_set():
                log_event(log, logging.WARNING, self.cancel_event, reason=controller.reason)
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GUARD_TICK_SECONDS):
                    await (controller.abort if graceful else controller.stop).wait()
        else:
            return
        self.aborted = True
        work.cancel()
