"""WindowedSink: every window it holds is in one named WindowState, moved only along the
transitions the enum documents. Time is a FakeClock moved by the sink's own sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.clock import FakeClock
from engine.records import Trade
from sinks.memory import MemoryWriter
from sinks.sink import _TRANSITIONS, WindowedSink, WindowState
from sinks.spill import SpillDir
from tests.harness import make_windower, until

NS = 1_000_000_000
T0 = 1_700_000_040


def trades(first: int, n: int) -> list[Trade]:
    return [
        Trade("binance", "BTC-USDT", "BTCUSDT", str(i), "1.5", "2", "buy", 7, 1)
        for i in range(first, first + n)
    ]


def make_sink(clock: FakeClock, writer: MemoryWriter, spill_dir: Path | None) -> WindowedSink:
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    windower = make_windower(clock, 4)  # a window every 4 records
    return WindowedSink(
        windower,
        writer,
        clock=clock,
        sleep=sleep,
        rng=random.Random(7),
        retry_budget_seconds=5.0,
        retry_initial_seconds=1.0,
        retry_max_seconds=8.0,
        spill=SpillDir(spill_dir, "run1", "s3://b/p/") if spill_dir is not None else None,
    )


def held(sink: WindowedSink) -> dict[str, int]:
    return {state.value: n for state, n in sink.states.items() if n}


def test_the_transitions_lead_every_state_to_durable_or_a_named_end() -> None:
    assert _TRANSITIONS[WindowState.QUEUED] == {WindowState.UPLOADING}
    assert _TRANSITIONS[WindowState.UPLOADING] == {
        WindowState.QUEUED,
        WindowState.FAILED,
        WindowState.SPILLED,
    }
    assert _TRANSITIONS[WindowState.SPILLED] == {WindowState.UNREADABLE}
    assert not _TRANSITIONS[WindowState.FAILED] and not _TRANSITIONS[WindowState.UNREADABLE]


async def test_a_window_moves_uploading_spilled_then_durable(tmp_path: Path) -> None:
    clock = FakeClock(start_ns=(T0 + 10) * NS)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    async with make_sink(clock, writer, tmp_path) as sink:
        assert held(sink) == {}
        writer.hold_puts()
        await sink.write(trades(1, 4))
        await until(lambda: writer.put_attempts == 1)
        assert held(sink) == {"uploading": 1}
        writer.release_puts()
        await until(lambda: sink.backlog == 1)
        assert held(sink) == {"spilled": 1}
        writer.clear_failures()
        await sink.write(trades(5, 4))  # its success wakes the backlog's retries
        await until(lambda: len(sink.objects) == 2)
        assert held(sink) == {}
        await sink.close()
    assert sink.windows_spilled == 1 and sink.windows_recovered == 1
    assert len(writer.objects) == 2


async def test_without_a_spill_directory_the_window_is_failed_in_memory() -> None:
    clock = FakeClock(start_ns=(T0 + 10) * NS)
    writer = MemoryWriter()
    writer.fail_next(10_000)
    async with make_sink(clock, writer, None) as sink:
        await sink.write(trades(1, 4))
        await until(lambda: sink.backlog == 1)
        assert held(sink) == {"failed": 1}
        assert [w.records for w in sink.failed] == [4]
        sink.cancel_uploads()


@contextlib.asynccontextmanager
async def uploading_one_window() -> AsyncIterator[WindowedSink]:
    """A sink (no spill directory) uploading its first window of 4 records, the put held until
    the sink is closed."""
    clock = FakeClock(start_ns=(T0 + 10) * NS)
    writer = MemoryWriter()
    writer.hold_puts()
    async with make_sink(clock, writer, None) as sink:
        await sink.write(trades(1, 4))
        await until(lambda: writer.put_attempts == 1)
        yield sink
    writer.release_puts()


async def test_a_cancelled_upload_is_queued_again_in_front() -> None:
    async with uploading_one_window() as sink:
        assert held(sink) == {"uploading": 1}
        sink.cancel_uploads()
        await until(lambda: sink.uploads_in_flight == 0)
        assert held(sink) == {"queued": 1}
        [window] = sink.unfinished()
        assert window.records == 4


async def test_an_impossible_transition_is_refused() -> None:
    async with uploading_one_window() as sink:
        [one] = list(sink._held)
        with pytest.raises(AssertionError, match="no transition"):
            sink._move(one, WindowState.UNREADABLE)  # only a spilled window can be
        sink.cancel_uploads()
