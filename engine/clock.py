"""Injected time.

Everything that depends on time (windowing, deadlines, staleness, backoff, stats) takes a
:class:`Clock`, so tests drive time with :class:`FakeClock` instead of sleeping.

Two readings are offered: ``time_ns()`` is wall time (for record timestamps, window alignment and
keys); ``monotonic()`` is for measuring durations and deadlines, immune to wall-clock steps.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of time."""

    def time_ns(self) -> int:
        """Wall-clock time, integer nanoseconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences are meaningful."""
        ...


class SystemClock:
    """The real clocks of the machine."""

    def time_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that moves only when told to. Shipped for tests of time-dependent code.

    ``advance(seconds)`` moves both readings forward together.
    """

    def __init__(self, start_ns: int = 1_700_000_000_000_000_000) -> None:
        self._wall_ns = start_ns
        self._mono = 1000.0

    def time_ns(self) -> int:
        return self._wall_ns

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._wall_ns += round(seconds * 1_000_000_000)
        self._mono += seconds

    def set_wall(self, ns: int) -> None:
        """Jump wall time to ``ns`` (monotonic time is unchanged)."""
        self._wall_ns = ns


class ReplayClock:
    """The clock of a replay (``feedvault replay``): wall time follows the recording.

    ``time_ns()`` is the receive time of the last replayed frame (set by the replay source with
    :meth:`advance_to`; it never goes backwards), so windows, their keys and ``ts_recv`` come out
    as in the live run. ``monotonic()`` is the ``base`` clock's: deadlines, the stop grace,
    upload latencies and pacing are measured in real time.
    """

    def __init__(self, start_ns: int = 0, base: Clock = SYSTEM_CLOCK) -> None:
        self._wall_ns = start_ns
        self.base = base

    def time_ns(self) -> int:
        return self._wall_ns

    def monotonic(self) -> float:
        return self.base.monotonic()

    def advance_to(self, ns: int) -> None:
        """Move wall time forward to ``ns``; an earlier ``ns`` leaves it unchanged."""
        if ns > self._wall_ns:
            self._wall_ns = ns
