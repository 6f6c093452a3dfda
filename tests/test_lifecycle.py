"""The run lifecycle (engine.lifecycle) and the pipeline loop (engine.pipeline) on their own:
time is a FakeClock, sources and sinks are small in-memory implementations of the protocols.
Every wait is bounded; nothing sleeps to synchronise."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from engine.batchqueue import BatchQueue
from engine.clock import FakeClock
from engine.errors import DestinationUnavailable, StorageError, SubscriptionRejected, first_leaf
from engine.lifecycle import RunLifecycle, StopController, StopPolicy
from engine.pipeline import Lane, Pipeline
from tests.logcapture import captured_logs

WAIT = 10.0


class _Run(RunLifecycle):
    """A run whose work waits until cancelled (or raises ``failure``)."""

    def __init__(
        self,
        policy: StopPolicy,
        clock: FakeClock,
        *,
        max_runtime: float | None = 60.0,
        failure: BaseException | None = None,
    ) -> None:
        super().__init__(
            clock=clock,
            controller=StopController(clock=clock),
            install_signal_handlers=False,
            max_runtime_seconds=max_runtime,
        )
        self.stop_policy = policy
        self.failure = failure
        self.work_started = asyncio.Event()
        self.work_cancelled = False

    async def identify(self) -> None:
        return None

    def start_fields(self) -> dict[str, Any]:
        return {"run_id": "r1"}

    async def _work(self) -> None:
        self.work_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.work_cancelled = True
            raise

    async def execute(self) -> int:
        if self.failure is not None:
            raise self.failure
        work = asyncio.create_task(self._work())
        guard = asyncio.create_task(self.guard(work, abort_budget=8.0))
        work.add_done_callback(lambda _: guard.cancel())
        await asyncio.gather(work, guard, return_exceptions=True)
        return 1 if self.aborted else 0


async def _started(run: _Run) -> asyncio.Task[int]:
    task = asyncio.create_task(run.run())
    async with asyncio.timeout(WAIT):
        await run.work_started.wait()
    return task


async def test_a_cancel_policy_cancels_the_work_at_the_deadline() -> None:
    clock = FakeClock()
    run = _Run(StopPolicy.CANCEL, clock)
    task = await _started(run)
    with captured_logs("INFO") as logs:
        clock.advance(60.0)
        async with asyncio.timeout(WAIT):
            status = await task
    assert status == 1 and run.work_cancelled and run.aborted
    assert run.controller.reason == "deadline"
    assert logs.docs("deadline") and logs.docs("abort")


async def test_a_cancel_policy_cancels_the_work_at_the_first_signal() -> None:
    clock = FakeClock()
    run = _Run(StopPolicy.CANCEL, clock, max_runtime=None)
    task = await _started(run)
    run.controller.on_signal("SIGTERM")
    async with asyncio.timeout(WAIT):
        assert await task == 1
    assert run.work_cancelled and run.controller.reason == "signal"


async def test_a_graceful_stop_cancels_the_work_only_when_its_budget_is_spent() -> None:
    clock = FakeClock()
    run = _Run(StopPolicy.GRACEFUL, clock, max_runtime=None)
    task = await _started(run)
    with captured_logs("INFO") as logs:
        run.controller.on_signal("SIGTERM")  # the stop: the work is asked, not cancelled
        clock.advance(8.0)  # the budget: now it is
        async with asyncio.timeout(WAIT):
            assert await task == 1
    (abort,) = logs.docs("abort")
    assert abort["reason"] == "stop grace expired" and run.work_cancelled


async def test_a_second_signal_aborts_a_graceful_stop_at_once() -> None:
    clock = FakeClock()
    run = _Run(StopPolicy.GRACEFUL, clock, max_runtime=None)
    task = await _started(run)
    with captured_logs("INFO") as logs:
        run.controller.on_signal("SIGTERM")
        run.controller.on_signal("SIGTERM")
        async with asyncio.timeout(WAIT):
            assert await task == 1
    (abort,) = logs.docs("abort")
    assert abort["reason"] == "second signal"


@pytest.mark.parametrize(
    ("failure", "line"),
    [
        (DestinationUnavailable("S3_BUCKET: the store did not answer"), "the store did not"),
        (StorageError("cannot open the store"), "cannot open the store"),
    ],
)
async def test_an_unreachable_store_is_one_line_and_exit_1(
    failure: BaseException, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _Run(StopPolicy.GRACEFUL, FakeClock(), failure=failure)
    async with asyncio.timeout(WAIT):
        assert await run.run() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("feedvault: ") and line in err[0]


class _ListSink:
    """A sink that keeps what it is given (an implementation of engine.pipeline.Sink)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.closed = False

    async def write(self, batch: Sequence[int]) -> None:
        self.batches.append(list(batch))

    async def tick(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


class _CountingSource:
    """Puts ``count`` batches on its queue, then returns (or raises ``failure``)."""

    def __init__(
        self, queue: BatchQueue[int], count: int, failure: Exception | None = None
    ) -> None:
        self.queue = queue
        self.count = count
        self.failure = failure
        self.frames = 0

    async def run(self, stop: asyncio.Event) -> None:
        for n in range(self.count):
            await self.queue.put([n, n + 1])
            self.frames += 1
        if self.failure is not None:
            raise self.failure


async def test_the_pipeline_drains_every_lane_into_its_sink_and_closes_it() -> None:
    trades, raw = BatchQueue[int](4), BatchQueue[int](4)
    sinks = _ListSink(), _ListSink()
    ran = asyncio.Event()

    async def background() -> None:
        ran.set()
        await asyncio.Event().wait()

    pipeline = Pipeline(
        [_CountingSource(trades, 20), _CountingSource(raw, 5)],
        [Lane(trades, sinks[0]), Lane(raw, sinks[1])],
        asyncio.Event(),
        background=[background],
    )
    async with asyncio.timeout(WAIT):
        await pipeline.run()
    assert pipeline.ingest_done.is_set() and ran.is_set()
    assert sinks[0].batches == [[n, n + 1] for n in range(20)] and sinks[0].closed
    assert sinks[1].batches == [[n, n + 1] for n in range(5)] and sinks[1].closed


async def test_a_rejected_subscription_is_reported_and_what_was_queued_is_kept() -> None:
    queue = BatchQueue[int](100)
    sink = _ListSink()
    rejected: list[SubscriptionRejected] = []
    pipeline = Pipeline(
        [_CountingSource(queue, 3, SubscriptionRejected("binance", "unknown symbol", ["NOPE"]))],
        [Lane(queue, sink)],
        asyncio.Event(),
        on_rejected=rejected.append,
    )
    async with asyncio.timeout(WAIT):
        await pipeline.run()
    assert [exc.streams for exc in rejected] == [("binance:NOPE",)]
    assert sink.batches == [[0, 1], [1, 2], [2, 3]] and sink.closed


async def test_without_a_handler_a_rejected_subscription_propagates() -> None:
    queue = BatchQueue[int](100)
    pipeline = Pipeline(
        [_CountingSource(queue, 1, SubscriptionRejected("binance", "no"))],
        [Lane(queue, _ListSink())],
        asyncio.Event(),
    )
    with pytest.raises(ExceptionGroup) as caught:
        async with asyncio.timeout(WAIT):
            await pipeline.run()
    assert caught.group_contains(SubscriptionRejected)


async def test_the_guard_leaves_finished_work_alone() -> None:
    """A guard that looks after the work ended (before the owner cancelled it) does not mark
    the run aborted, even with the stop grace spent."""
    clock = FakeClock()
    run = _Run(StopPolicy.GRACEFUL, clock, max_runtime=None)
    work = asyncio.create_task(asyncio.sleep(0))
    async with asyncio.timeout(WAIT):
        await work
    run.controller.request_stop("signal")
    clock.advance(100.0)
    async with asyncio.timeout(WAIT):
        await run.guard(work, abort_budget=1.0)
    assert not run.aborted


def test_first_leaf_names_the_error_inside_nested_groups() -> None:
    inner = StorageError("the store said no")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [inner]), ValueError("later")])
    assert first_leaf(nested) is inner
    assert first_leaf(inner) is inner
