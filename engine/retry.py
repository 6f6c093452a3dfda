"""One retry policy: capped exponential backoff with jitter, a budget and injected time.

Every wait-and-try-again in feedvault is a :class:`RetryPolicy`: a session's reconnects, the
sink's upload retries and its backlog passes, a run's first write (the claim), the recovery of
earlier runs' spill and the ECS metadata lookup. The policy is a frozen value (the numbers)
plus an injected random source; it never sleeps. :func:`retry` runs a coroutine factory under
a policy, with every wait through an injected ``sleep`` and the budget measured on an
injected :class:`~engine.clock.Clock`, so tests drive it with
:class:`~engine.clock.FakeClock` and a seeded :class:`random.Random` and never sleep.

Delays. Wait number ``n`` (from 0: the wait after the first failure) has the *ceiling*
``min(cap, initial * multiplier**n)``, and the delay is drawn under it by the jitter kind
(AWS Architecture Blog, "Exponential Backoff And Jitter"):

- :attr:`Jitter.FULL`: uniform in ``[0, ceiling]``. The widest spread, so many clients that
  failed together (every task of a service after an exchange outage) do not come back in
  lock-step; the least total work for the server. Used where many peers retry against one
  service: a session's reconnects, the run's first write.
- :attr:`Jitter.EQUAL`: uniform in ``[ceiling / 2, ceiling]``. Still spread, but never a
  near-zero wait: a failed put is not hammered again at once by the same process, and the
  budget is spent on waits of a known least length. Used by the sink's uploads and backlog.
- :attr:`Jitter.NONE`: the ceiling itself. For one client of a local endpoint (the ECS
  metadata endpoint, the spill recovery of one process): nothing to de-synchronise, and a
  fixed schedule is easier to reason about.

Budget. With ``budget`` set, :func:`retry` measures it on the clock from the start of the
first attempt and, when a wait would not fit, follows :attr:`RetryPolicy.at_budget`:

- :attr:`AtBudget.GIVE_UP`: a wait that would end past the budget is not started; the last
  error is raised at once (so the last attempt starts within the budget, and the error comes
  at most one attempt after it).
- :attr:`AtBudget.CUT`: the wait is cut to end at the budget and one last attempt is made
  there; once the budget is spent, the last error is raised.

``max_attempts`` bounds the attempts (the first included) on its own or together with a
budget. A policy with neither retries for as long as its caller lets it (a session reconnects
until the run stops).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Final, TypeVar

from engine.clock import SYSTEM_CLOCK, Clock

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
"""An asynchronous sleep of the given seconds (``asyncio.sleep``, or a test's fake one)."""

MAX_EXPONENT: Final = 64
"""The exponent stops growing here, so ``multiplier**n`` never overflows (the ceiling is far
past any cap by then)."""


class Jitter(Enum):
    """How a delay is drawn under its ceiling (see the module docstring)."""

    NONE = "none"
    FULL = "full"
    EQUAL = "equal"


class AtBudget(Enum):
    """What :func:`retry` does when the next wait does not fit in the budget."""

    GIVE_UP = "give-up"
    CUT = "cut"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, bounded by a budget and/or attempts.

    ``initial``: the ceiling of the first wait (seconds, > 0); ``multiplier`` (>= 1): its
    growth per wait; ``cap``: the largest ceiling (``math.inf``: none); ``jitter``: how a
    delay is drawn under its ceiling; ``budget``: seconds from the first attempt's start
    within which :func:`retry` retries (None: no time bound); ``max_attempts``: attempts in
    all, the first included (None: no count bound); ``at_budget``: what happens to a wait that
    does not fit in the budget; ``rng``: the random source of the jitter (inject a seeded
    :class:`random.Random` for reproducible delays; not compared, not in the repr).
    """

    initial: float
    cap: float = math.inf
    multiplier: float = 2.0
    jitter: Jitter = Jitter.FULL
    budget: float | None = None
    max_attempts: int | None = None
    at_budget: AtBudget = AtBudget.GIVE_UP
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.cap:
            raise ValueError("need 0 < initial <= cap")
        if not self.multiplier >= 1:
            raise ValueError("need multiplier >= 1")
        if self.budget is not None and not self.budget >= 0:
            raise ValueError("need budget >= 0")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("need max_attempts >= 1")

    def ceiling(self, attempt: int) -> float:
        """The largest delay of wait number ``attempt`` (from 0): ``min(cap, initial *
        multiplier**attempt)``. Deterministic."""
        if attempt < 0:
            raise ValueError("attempt counts from 0")
        return min(self.cap, self.initial * self.multiplier ** min(attempt, MAX_EXPONENT))

    def delay(self, attempt: int) -> float:
        """The delay of wait number ``attempt`` (from 0), drawn from :attr:`rng` by
        :attr:`jitter` (one draw for ``FULL`` and ``EQUAL``, none for ``NONE``). Never sleeps;
        always within ``[0, ceiling(attempt)]`` (``[ceiling / 2, ceiling]`` for ``EQUAL``)."""
        ceiling = self.ceiling(attempt)
        if self.jitter is Jitter.FULL:
            return self.rng.uniform(0.0, ceiling)
        if self.jitter is Jitter.EQUAL:
            return ceiling * (0.5 + 0.5 * self.rng.random())
        return ceiling

    def using(self, rng: random.Random | None) -> RetryPolicy:
        """This policy drawing from ``rng`` (itself when ``rng`` is None)."""
        return self if rng is None else replace(self, rng=rng)


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """A retry about to wait: ``attempt`` attempts failed so far (from 1), the last with
    ``error``; the next starts after ``delay`` seconds."""

    attempt: int
    delay: float
    error: BaseException

    def log_fields(self) -> dict[str, object]:
        """The retry's fields of a log event: ``attempt``, ``delay_s`` (ms precision), ``error``."""
        return {"attempt": self.attempt, "delay_s": round(self.delay, 3), "error": str(self.error)}


async def retry(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retry_on: tuple[type[BaseException], ...],
    unless: Callable[[BaseException], bool] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    sleep: Sleep = asyncio.sleep,
    on_retry: Callable[[RetryEvent], None] | None = None,
    started: float | None = None,
) -> T:
    """Await ``attempt()`` until it returns, retrying under ``policy``; its result.

    What is retried: an exception that is an instance of ``retry_on`` and for which ``unless``
    (if given) is false. Anything else (``unless`` true, another exception, cancellation)
    propagates at once, unchanged. When the policy's ``max_attempts`` are used, or its budget
    (measured on ``clock``'s monotonic time from ``started``, default now) leaves no room for
    the next wait (see :class:`AtBudget`), the last error is re-raised unchanged.

    Before each wait ``on_retry`` is called with the :class:`RetryEvent` (for the caller's log
    and counters); then ``sleep(delay)`` is awaited: every wait goes through ``sleep``, none
    through the event loop's own timers. A new awaitable is made by ``attempt()`` for every
    attempt.

    Cancel-safe: cancelled during an attempt or a wait, it stops there and propagates the
    cancellation; it holds nothing of its own (what the attempt did is the attempt's).
    """
    start = clock.monotonic() if started is None else started
    budget = policy.budget
    failures = 0
    while True:
        try:
            return await attempt()
        except retry_on as exc:
            if unless is not None and unless(exc):
                raise
            failures += 1
            if policy.max_attempts is not None and failures >= policy.max_attempts:
                raise
            if budget is not None and policy.at_budget is AtBudget.CUT:
                left = start + budget - clock.monotonic()
                if left <= 0:
                    raise
                delay = min(left, policy.delay(failures - 1))
            else:
                delay = policy.delay(failures - 1)
                if budget is not None and clock.monotonic() - start + delay > budget:
                    raise
            if on_retry is not None:
                on_retry(RetryEvent(attempt=failures, delay=delay, error=exc))
            await sleep(delay)
