"""WindowedSink's backlog: spill past the retry budget, background retries, the last pass.

Time is a FakeClock; every sleep of the sink (upload backoff, backlog backoff) is a timer on that
clock which fires only when the test moves the clock (:class:`Timers`), so nothing here waits on
wall-clock time and every delay the sink asks for can be checked.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.records import Trade
from sinks.memory import MemoryWriter
from sinks.sink import WindowedSink
from sinks.spill import SpillDir, load_spilled, scan_spilled
from tests.harness import make_windower, until

NS = 1_000_000_000
T0 = 1_700_000_040


class Timers:
    """``sleep`` on a FakeClock: a sleeper wakes only when :meth:`fire_next` moves the clock to
    its deadline. ``requested`` lists every duration asked for, in order."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.requested: list[float] = []
        self._waiting: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep(self, seconds: float) -> None:
        self.requested.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = (self.clock.monotonic() + seconds, future)
        self._waiting.append(item)
        try:
            await future
        finally:
            self._waiting = [other for other in self._waiting if other is not item]

    @property
    def waiting(self) -> int:
        return sum(1 for _, future in self._waiting if not future.done())

    def fire_next(self) -> float:
        """Move the clock to the earliest deadline and wake every sleeper due; return the
        seconds the clock moved."""
        due = min(when for when, future in self._waiting if not future.done())
        step = max(due - self.clock.monotonic(), 0.0)
        self.clock.advance(step)
        for when, future in self._waiting:
            if when <= self.clock.monotonic() and not future.done():
                future.set_result(None)
        return step


class Feed:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.next_id = 0

    def trades(self, n: int, symbol: str = "BTC-USDT") -> list[Trade]:
        out = []
        for _ in range(n):
            self.next_id += 1
            out.append(Trade("binance", symbol, symbol, str(self.next_id), "1.5", "2", "buy", 7, 1))
        return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ns=(T0 + 10) * NS)


@pytest.fixture
def timers(clock: FakeClock) -> Timers:
    return Timers(clock)


def make_sink(
    clock: FakeClock,
    timers: Timers,
    writer: MemoryWriter,
    spill_dir: Path | None,
    **options: Any,
) -> WindowedSink:
    windower = make_windower(clock, 4)  # a window every 4 records
    options.setdefault("retry_budget_seconds", 5.0)
    options.setdefault("retry_initial_seconds", 1.0)
    options.setdefault("retry_max_seconds", 8.0)
    return WindowedSink(
        windower,
        writer,
        clock=clock,
        sleep=timers.sleep,
        rng=random.Random(7),
        spill=SpillDir(spill_dir, "run1", "s3://b/p/") if spill_dir is not None else None,
        **options,
    )


async def fail_past_budget(sink: WindowedSink, timers: Timers, parked: int) -> None:
    """Fire the upload backoff timers until ``parked`` windows are in the backlog."""
    async with asyncio.timeout(10):
        while True:
            await until(lambda: sink.backlog >= parked or timers.waiting > 0)
            if sink.backlog >= parked:
                return
            timers.fire_next()


async def test_a_window_past_the_retry_budget_spills_and_leaves_memory(
    clock: FakeClock, timers: Timers, tmp_path: Path
) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    async with make_sink(clock, timers, writer, tmp_path) as sink:
        await sink.write(feed.trades(4))
        await fail_past_budget(sink, timers, 1)
        # Retried within the budget only: every backoff fitted in the 5 s measured from the
        # first failure.
        assert 0 < sum(timers.requested) <= 5.0
        assert writer.put_attempts == len(timers.requested) + 1
        [key] = sink.spilled_keys
        assert sink.failed == []
        assert sink.unfinished() == []  # nothing of it is held in memory
        assert sink.windows_spilled == 1
        [spilled] = load_spilled(tmp_path, "run1")
        assert spilled.window.key == key
        assert spilled.window.records == 4
        assert spilled.entry.destination == "s3://b/p/"
        sink.cancel_uploads()
    assert sink.objects == []
    assert writer.objects == {}


async def test_the_background_retries_back_off_and_upload_the_spill_when_the_store_returns(
    clock: FakeClock, timers: Timers, tmp_path: Path
) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    # No retry budget: each window spills at its first failure, so every timer is the backlog's.
    async with make_sink(clock, timers, writer, tmp_path, retry_budget_seconds=0) as sink:
        sent = feed.trades(12)
        await sink.write(sent)  # three windows
        await until(lambda: sink.backlog == 3 and timers.waiting == 1)
        body = {s.window.key: s.window.body for s in load_spilled(tmp_path)}
        assert len(body) == 3
        # The backlog is retried: one put per pass while the store fails (a pass stops at
        # its first failure), with capped exponential backoff and jitter between passes.
        backoffs = list(timers.requested)
        for _ in range(5):
            attempts = writer.put_attempts
            timers.fire_next()
            await until(lambda: timers.waiting == 1)
            assert writer.put_attempts == attempts + 1
        backoffs = timers.requested[len(backoffs) - 1 :]
        assert len(backoffs) == 6
        for n, delay in enumerate(backoffs):
            base = min(8.0, 1.0 * 2**n)
            assert base / 2 <= delay <= base, (n, backoffs)
        assert sink.objects == []
        backlog = sink.spilled_keys  # in the order they spilled
        assert sorted(backlog) == sorted(body)
        # The store is back: the next pass uploads the whole backlog, oldest first.
        writer.clear_failures()
        timers.fire_next()
        await until(lambda: sink.backlog == 0)
        assert [entry.key for entry in sink.objects] == backlog
        assert sink.windows_recovered == 3
        await until(lambda: scan_spilled(tmp_path).entries == [])  # removed once durable
        await sink.close()
    assert writer.objects == body
    assert sink.spilled_keys == []
    assert sink.records_uploaded == 12


async def test_a_successful_upload_wakes_the_backlog_retries_at_once(
    clock: FakeClock, timers: Timers, tmp_path: Path
) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    async with make_sink(clock, timers, writer, tmp_path, retry_budget_seconds=0) as sink:
        await sink.write(feed.trades(4))
        await until(lambda: sink.backlog == 1 and timers.waiting == 1)
        [spilled_key] = sink.spilled_keys
        for _ in range(4):  # the backlog's backoff grows to its cap
            timers.fire_next()
            await until(lambda: timers.waiting == 1)
        assert timers.requested[-1] >= 4.0  # waiting several seconds for the next pass
        now = clock.monotonic()
        writer.clear_failures()
        await sink.write(feed.trades(4))  # a fresh window: its upload succeeds
        await until(lambda: sink.backlog == 0)
        assert clock.monotonic() == now  # woken by the success, not by the timer
        assert timers.waiting == 0
        assert [entry.key for entry in sink.objects][-1] == spilled_key
        await sink.close()
    assert len(writer.objects) == 2


async def test_close_makes_one_last_pass_and_names_what_is_left(
    clock: FakeClock, timers: Timers, tmp_path: Path
) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    sink = make_sink(clock, timers, writer, tmp_path)
    async with sink:
        await sink.write(feed.trades(8))  # two windows, then two more records left open
        await sink.write(feed.trades(2))
        await fail_past_budget(sink, timers, 2)
        await until(lambda: timers.waiting == 1)  # the backlog retries are waiting
        attempts, timed = writer.put_attempts, len(timers.requested)
        closing = asyncio.create_task(sink.close())
        # The open window is uploaded with the usual retries: fire its backoff timers.
        async with asyncio.timeout(10):
            while not closing.done():
                await until(lambda: closing.done() or timers.waiting > 0)
                if not closing.done():
                    timers.fire_next()
        await closing
    assert sink.objects == []
    assert len(sink.spilled_keys) == 3  # the last window failed past its budget and spilled
    assert sink.failed == []
    spilled = load_spilled(tmp_path)
    assert {s.window.key for s in spilled} == set(sink.spilled_keys)
    assert sum(s.window.records for s in spilled) == 10
    # The last window: one put per backoff timer plus the first; then the last pass over the
    # backlog stopped at its first failure: one put, not one per window.
    last_window_puts = len(timers.requested) - timed + 1
    assert last_window_puts >= 2
    assert writer.put_attempts - attempts == last_window_puts + 1


async def test_close_uploads_the_backlog_when_the_store_is_back(
    clock: FakeClock, timers: Timers, tmp_path: Path
) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    async with make_sink(clock, timers, writer, tmp_path) as sink:
        await sink.write(feed.trades(8))
        await fail_past_budget(sink, timers, 2)
        await until(lambda: timers.waiting == 1)
        writer.clear_failures()
        await sink.close()  # no timer fired: the last pass does it
    assert sink.spilled_keys == []
    assert len(sink.objects) == 2
    assert scan_spilled(tmp_path).entries == []
    assert sink.records_uploaded == 8


async def test_without_a_spill_directory_failed_windows_stay_in_memory_and_are_retried(
    clock: FakeClock, timers: Timers
) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    async with make_sink(clock, timers, writer, None) as sink:
        await sink.write(feed.trades(4))
        await fail_past_budget(sink, timers, 1)
        [failed] = sink.failed
        assert sink.unfinished() == [failed]
        assert sink.spilled_keys == []
        await until(lambda: timers.waiting == 1)
        writer.clear_failures()
        timers.fire_next()
        await until(lambda: sink.backlog == 0)
        await sink.close()
    assert [entry.key for entry in sink.objects] == [failed.key]
    assert sink.failed == []


async def test_a_disk_that_refuses_the_spill_keeps_the_window_in_memory(
    clock: FakeClock, timers: Timers, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    async with make_sink(clock, timers, writer, blocker) as sink:
        await sink.write(feed.trades(4))
        await fail_past_budget(sink, timers, 1)
        assert len(sink.failed) == 1
        assert sink.spilled_keys == []
        assert sink.windows_spilled == 0
        writer.clear_failures()
        await sink.close()
    assert len(sink.objects) == 1
    assert sink.failed == []


async def test_a_spilled_file_damaged_on_disk_stays_named_and_the_rest_is_uploaded(
    clock: FakeClock, timers: Timers, tmp_path: Path
) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    async with make_sink(clock, timers, writer, tmp_path) as sink:
        await sink.write(feed.trades(8))
        await fail_past_budget(sink, timers, 2)
        first, second = sink.spilled_keys
        [damaged] = [s for s in load_spilled(tmp_path) if s.window.key == first]
        damaged.entry.path.write_bytes(b"not what was spilled")
        writer.clear_failures()
        await sink.close()
    assert [entry.key for entry in sink.objects] == [second]
    assert sink.spilled_keys == [first]  # named for the manifest, left on disk
    assert [entry.key for entry in scan_spilled(tmp_path).entries] == [first]


async def test_leaving_with_an_error_cancels_the_background_retries(
    clock: FakeClock, timers: Timers, tmp_path: Path
) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    sink = make_sink(clock, timers, writer, tmp_path)
    with pytest.raises(KeyError):
        async with sink:
            await sink.write(feed.trades(4))
            await fail_past_budget(sink, timers, 1)
            await until(lambda: timers.waiting == 1)
            raise KeyError("boom")
    assert timers.waiting == 0  # the backoff wait was cancelled with its task
    assert len(sink.spilled_keys) == 1
    assert len(load_spilled(tmp_path)) == 1
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_a_spill_deleted_from_disk_is_lost_not_spilled(
    clock: FakeClock, timers: Timers, tmp_path: Path
) -> None:
    """``spilled`` names only what is on disk: a spilled window whose files were removed
    (the directory deleted, a volume gone) is reported lost, with its record count."""
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    spill_dir = tmp_path / "spill"
    async with make_sink(clock, timers, writer, spill_dir) as sink:
        await sink.write(feed.trades(8))  # two windows of 4
        await fail_past_budget(sink, timers, 2)
        first, second = sink.spilled_keys
        [gone] = [s for s in load_spilled(spill_dir, "run1") if s.window.key == first]
        gone.entry.path.unlink()
        on_disk, lost = sink.spilled_on_disk()
        sink.cancel_uploads()
    assert on_disk == [second]
    assert lost == [{"key": first, "records": 4, "reason": "spill files are gone"}]


async def test_while_the_backlog_waits_a_new_window_gets_one_attempt_then_spills(
    clock: FakeClock, timers: Timers, tmp_path: Path
) -> None:
    """The store is known to fail (a window is in the backlog): a new window does not hold
    its upload slot for a whole retry budget, it spills after one attempt, so windows keep
    leaving memory and reading goes on whatever the number of streams."""
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    async with make_sink(clock, timers, writer, tmp_path) as sink:
        await sink.write(feed.trades(4))
        await fail_past_budget(sink, timers, 1)  # retried within its budget, then spilled
        await until(lambda: timers.waiting > 0)  # the background retries' first pass failed
        attempts, backoffs = writer.put_attempts, len(timers.requested)
        await sink.write(feed.trades(4))
        await until(lambda: sink.backlog >= 2)
        assert writer.put_attempts == attempts + 1  # one attempt, no retry
        assert len(timers.requested) == backoffs  # no backoff waited for it
        assert len(sink.spilled_keys) == 2
        sink.cancel_uploads()
