"""engine.retry: the one retry policy. Time is a FakeClock moved only by the injected sleep;
randomness is a seeded random.Random. Nothing sleeps."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.clock import FakeClock
from engine.retry import AtBudget, Jitter, RetryEvent, RetryPolicy, retry


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


class Recorder:
    """An attempt that fails ``failures`` times (with ``error``), then returns ``"ok"``;
    and a sleep that moves ``clock`` by the delay and records it."""

    def __init__(self, clock: FakeClock, failures: int, error: type[Exception] = Flaky) -> None:
        self.clock = clock
        self.failures = failures
        self.error = error
        self.attempted_at: list[float] = []
        self.slept: list[float] = []

    async def attempt(self) -> str:
        self.attempted_at.append(self.clock.monotonic())
        if len(self.attempted_at) <= self.failures:
            raise self.error(f"failure {len(self.attempted_at)}")
        return "ok"

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


def test_ceilings_grow_by_the_multiplier_up_to_the_cap() -> None:
    policy = RetryPolicy(initial=0.5, cap=30.0, jitter=Jitter.NONE)
    assert [policy.delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert RetryPolicy(initial=1, multiplier=3, jitter=Jitter.NONE).delay(3) == 27
    assert RetryPolicy(initial=0.1).ceiling(10_000) == 0.1 * 2.0**64  # no overflow, no cap
    with pytest.raises(ValueError):
        policy.ceiling(-1)


@pytest.mark.parametrize(
    "options",
    [
        {"initial": 0},
        {"initial": 2, "cap": 1},
        {"initial": 1, "multiplier": 0.5},
        {"initial": 1, "budget": -1},
        {"initial": 1, "max_attempts": 0},
    ],
)
def test_invalid_policies_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**options)  # type: ignore[arg-type]


def test_full_jitter_is_the_random_sources_uniform_draw_under_the_ceiling() -> None:
    """The reconnect backoff's former sequence: ``rng.uniform(0, min(cap, base * 2**n))``."""
    policy = RetryPolicy(initial=1, cap=8, rng=random.Random(7))
    reference = random.Random(7)
    expected = [reference.uniform(0.0, min(8, 2**n)) for n in range(10)]
    assert [policy.delay(n) for n in range(10)] == expected
    assert all(0 <= d <= 8 for d in expected) and expected[0] <= 1 and expected[1] <= 2


def test_equal_jitter_keeps_at_least_half_the_ceiling() -> None:
    """The sink's former sequence: ``ceiling * (0.5 + 0.5 * rng.random())``."""
    policy = RetryPolicy(initial=1, cap=8, jitter=Jitter.EQUAL, rng=random.Random(7))
    reference = random.Random(7)
    expected = [min(8, 2**n) * (0.5 + 0.5 * reference.random()) for n in range(10)]
    assert [policy.delay(n) for n in range(10)] == expected


def test_a_seeded_source_reproduces_the_delays_and_using_swaps_it() -> None:
    base = RetryPolicy(initial=0.5, cap=10)
    one, two = base.using(random.Random(3)), base.using(random.Random(3))
    assert [one.delay(n) for n in range(6)] == [two.delay(n) for n in range(6)]
    assert base.using(None) is base
    assert one == base  # the source is not part of the value


@given(
    initial=st.floats(min_value=1e-6, max_value=100.0),
    factor=st.floats(min_value=1.0, max_value=1e6),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    attempt=st.integers(min_value=0, max_value=10_000),
    jitter=st.sampled_from(Jitter),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_delay_is_within_its_ceiling_and_the_cap(
    initial: float, factor: float, multiplier: float, attempt: int, jitter: Jitter, seed: int
) -> None:
    cap = initial * factor
    policy = RetryPolicy(
        initial=initial, cap=cap, multiplier=multiplier, jitter=jitter, rng=random.Random(seed)
    )
    ceiling = policy.ceiling(attempt)
    assert initial <= ceiling <= cap or math.isclose(ceiling, cap)
    assert ceiling <= min(cap, initial * multiplier ** min(attempt, 64))
    delay = policy.delay(attempt)
    assert 0.0 <= delay <= ceiling
    if jitter is Jitter.EQUAL:
        assert delay >= ceiling / 2
    if jitter is Jitter.NONE:
        assert delay == ceiling
    if attempt:
        assert policy.ceiling(attempt - 1) <= ceiling  # never shrinks


async def test_retry_returns_after_failures_with_each_wait_through_the_sleep() -> None:
    clock = FakeClock()
    rec = Recorder(clock, failures=3)
    events: list[RetryEvent] = []
    policy = RetryPolicy(initial=1, cap=2, jitter=Jitter.NONE)
    result = await retry(
        rec.attempt,
        policy,
        retry_on=(Flaky,),
        clock=clock,
        sleep=rec.sleep,
        on_retry=events.append,
    )
    assert result == "ok"
    assert rec.slept == [1, 2, 2]
    assert rec.attempted_at == [1000.0, 1001.0, 1003.0, 1005.0]
    assert [(e.attempt, e.delay, str(e.error)) for e in events] == [
        (1, 1, "failure 1"),
        (2, 2, "failure 2"),
        (3, 2, "failure 3"),
    ]


async def test_retry_stops_after_max_attempts_reraising_the_last_error() -> None:
    clock = FakeClock()
    rec = Recorder(clock, failures=10)
    policy = RetryPolicy(initial=0.1, jitter=Jitter.NONE, max_attempts=3)
    with pytest.raises(Flaky, match="failure 3"):
        await retry(rec.attempt, policy, retry_on=(Flaky,), clock=clock, sleep=rec.sleep)
    assert len(rec.attempted_at) == 3
    assert rec.slept == [0.1, 0.2]


async def test_give_up_never_starts_a_wait_that_ends_past_the_budget() -> None:
    """Waits 1, 2, 4 start by 7 s; the next (8) would end at 15 > 10: the 4th error is raised
    at once, so the last attempt started within the budget."""
    clock = FakeClock()
    rec = Recorder(clock, failures=100)
    policy = RetryPolicy(initial=1, cap=8, jitter=Jitter.NONE, budget=10)
    with pytest.raises(Flaky, match="failure 4"):
        await retry(rec.attempt, policy, retry_on=(Flaky,), clock=clock, sleep=rec.sleep)
    assert rec.slept == [1, 2, 4]
    assert clock.monotonic() - 1000.0 == 7


async def test_the_budget_counts_the_attempts_time_too() -> None:
    clock = FakeClock()
    rec = Recorder(clock, failures=100)

    async def slow() -> str:
        clock.advance(3)  # each attempt takes 3 s of the budget
        return await rec.attempt()

    policy = RetryPolicy(initial=1, cap=1, jitter=Jitter.NONE, budget=10)
    with pytest.raises(Flaky, match="failure 3"):
        await retry(slow, policy, retry_on=(Flaky,), clock=clock, sleep=rec.sleep)
    assert rec.slept == [1, 1]  # 3+1+3+1+3 = 11: a third wait would end at 12 > 10


async def test_a_zero_budget_is_one_attempt() -> None:
    clock = FakeClock()
    rec = Recorder(clock, failures=1)
    policy = RetryPolicy(initial=0.5, budget=0.0, rng=random.Random(1))
    with pytest.raises(Flaky):
        await retry(rec.attempt, policy, retry_on=(Flaky,), clock=clock, sleep=rec.sleep)
    assert len(rec.attempted_at) == 1 and rec.slept == []


async def test_cut_ends_the_last_wait_at_the_budget_for_one_last_attempt() -> None:
    clock = FakeClock()
    rec = Recorder(clock, failures=100)
    policy = RetryPolicy(initial=1, cap=8, jitter=Jitter.NONE, budget=10, at_budget=AtBudget.CUT)
    with pytest.raises(Flaky, match="failure 5"):
        await retry(rec.attempt, policy, retry_on=(Flaky,), clock=clock, sleep=rec.sleep)
    assert rec.slept == [1, 2, 4, 3]  # the fourth wait (8) is cut to the 3 s left
    assert rec.attempted_at[-1] == 1010.0


async def test_the_budget_may_start_before_the_call() -> None:
    clock = FakeClock()
    rec = Recorder(clock, failures=100)
    started = clock.monotonic()
    clock.advance(9.5)
    policy = RetryPolicy(initial=1, jitter=Jitter.NONE, budget=10, at_budget=AtBudget.CUT)
    with pytest.raises(Flaky, match="failure 2"):
        await retry(
            rec.attempt, policy, retry_on=(Flaky,), clock=clock, sleep=rec.sleep, started=started
        )
    assert rec.slept == [0.5]


async def test_other_errors_and_unless_propagate_at_once() -> None:
    clock = FakeClock()
    rec = Recorder(clock, failures=5, error=Fatal)
    policy = RetryPolicy(initial=1)
    with pytest.raises(Fatal):
        await retry(rec.attempt, policy, retry_on=(Flaky,), clock=clock, sleep=rec.sleep)
    assert len(rec.attempted_at) == 1

    rec = Recorder(clock, failures=5)
    with pytest.raises(Flaky, match="failure 2"):
        await retry(
            rec.attempt,
            policy,
            retry_on=(Flaky,),
            unless=lambda exc: str(exc) == "failure 2",
            clock=clock,
            sleep=rec.sleep,
        )
    assert len(rec.attempted_at) == 2 and len(rec.slept) == 1


async def test_a_cancelled_wait_cancels_the_retry() -> None:
    clock = FakeClock()
    rec = Recorder(clock, failures=100)
    waiting = asyncio.Event()

    async def forever(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(
        retry(rec.attempt, RetryPolicy(initial=1), retry_on=(Flaky,), clock=clock, sleep=forever)
    )
    async with asyncio.timeout(10):
        await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(rec.attempted_at) == 1


def test_replace_keeps_the_random_source() -> None:
    rng = random.Random(5)
    policy = RetryPolicy(initial=1, rng=rng)
    assert replace(policy, budget=0.0).rng is rng


def test_a_retry_event_logs_its_attempt_rounded_delay_and_error() -> None:
    event = RetryEvent(attempt=2, delay=0.12345, error=TimeoutError("slow"))
    assert event.log_fields() == {"attempt": 2, "delay_s": 0.123, "error": "slow"}
    assert list(event.log_fields()) == ["attempt", "delay_s", "error"]
