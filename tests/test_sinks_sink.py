"""WindowedSink: uploads, backpressure, retries, failures, cancellation, spill."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.errors import StorageError
from engine.records import Trade
from sinks.encoders import decode_body
from sinks.local import FileWriter
from sinks.memory import MemoryWriter
from sinks.s3 import S3Writer
from sinks.sink import WindowedSink
from sinks.spill import load_spilled, spill_windows
from sinks.writer import ObjectWriter
from tests.harness import make_windower

NS = 1_000_000_000
T0 = 1_700_000_040  # 2023-11-14T22:14:00Z


class Feed:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.next_id = 0

    def trades(self, n: int, symbol: str = "BTC-USDT") -> list[Trade]:
        now = self.clock.time_ns()
        out = []
        for _ in range(n):
            self.next_id += 1
            out.append(
                Trade("binance", symbol, symbol, str(self.next_id), "1.5", "2", "buy", 7, now)
            )
        return out


def make_sink(
    clock: FakeClock,
    writer: ObjectWriter,
    *,
    max_records: int = 1000,
    **options: Any,
) -> WindowedSink:
    windower = make_windower(clock, max_records)
    options.setdefault("rng", random.Random(1))
    return WindowedSink(windower, writer, clock=clock, **options)


def fake_sleep(clock: FakeClock) -> Callable[[float], Any]:
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    return sleep


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to the loop until ``predicate`` holds (no wall-clock waiting)."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def stored_trades(writer: MemoryWriter) -> list[Trade]:
    return [
        Trade.from_dict(obj)
        for key in sorted(writer.objects)
        for obj in decode_body(writer.objects[key], "ndjson.gz")
    ]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ns=(T0 + 10) * NS)


async def test_windows_are_uploaded_and_recorded(clock: FakeClock) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    sent: list[Trade] = []
    async with make_sink(clock, writer) as sink:
        for symbol in ("BTC-USDT", "ETH-USDT", "BTC-USDT"):
            batch = feed.trades(10, symbol)
            sent += batch
            await sink.write(batch)
        assert sink.open_windows == 2
        clock.advance(60)
        await sink.tick()
        assert sink.open_windows == 0
        late = feed.trades(5)
        sent += late
        await sink.write(late)
        await sink.close()
        assert sink.uploads_in_flight == 0
        assert sink.unfinished() == []
    assert len(sink.objects) == 3
    assert sum(entry.records for entry in sink.objects) == 35
    assert sink.records_uploaded == 35
    assert sink.windows_closed == 3
    assert sink.bytes_uploaded == sum(len(body) for body in writer.objects.values())
    assert {entry.key for entry in sink.objects} == set(writer.objects)
    btc = next(e for e in sink.objects if "BTC" in e.key and "221400Z" in e.key)
    assert btc.symbols == {"binance:BTC-USDT": ("1", "30")}
    assert btc.records == 20
    assert sorted(stored_trades(writer), key=lambda t: int(t.trade_id)) == sent
    assert len(sink.upload_latencies) == 3
    # Durable at the clock's wall time of the upload (the fake writer stores instantly).
    assert {entry.stored_at for entry in sink.objects} == {(T0 + 70) * NS}


async def test_stored_at_is_the_wall_time_the_upload_became_durable(clock: FakeClock) -> None:
    feed = Feed(clock)
    async with make_sink(clock, MemoryWriter(), max_records=5) as sink:
        await sink.write(feed.trades(5))  # closes a window by record count
        await until(lambda: len(sink.objects) == 1)
        clock.advance(2.5)
        await sink.write(feed.trades(5))
        await sink.close()
    assert [entry.stored_at for entry in sink.objects] == [
        (T0 + 10) * NS,
        (T0 + 10) * NS + 2_500_000_000,
    ]


async def test_backpressure_waits_for_a_free_upload_slot(clock: FakeClock) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.hold_puts()
    async with make_sink(clock, writer, max_records=5, max_concurrent_uploads=2) as sink:
        await sink.write(feed.trades(10))  # two full windows: both slots busy
        await until(lambda: writer.puts_started == 2)
        assert sink.uploads_in_flight == 2
        blocked = asyncio.create_task(sink.write(feed.trades(5)))
        await until(lambda: sink.uploads_queued == 1)
        for _ in range(50):
            await asyncio.sleep(0)
        assert not blocked.done()
        assert writer.puts_started == 2
        clock.advance(3)
        writer.release_puts()
        await blocked
        await sink.close()
    assert len(writer.objects) == 3
    assert list(sink.upload_latencies)[:2] == [3.0, 3.0]


async def test_failed_puts_are_retried_with_backoff(clock: FakeClock) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(3)
    async with make_sink(clock, writer, sleep=fake_sleep(clock)) as sink:
        await sink.write(feed.trades(4))
        await sink.close()
    assert writer.put_attempts == 4
    assert sink.upload_retries == 3
    assert len(sink.objects) == 1
    assert sink.failed == []
    assert sink.last_error == "injected failure"


async def test_window_past_retry_budget_is_kept_as_failed(clock: FakeClock) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(1000)
    async with make_sink(
        clock, writer, sleep=fake_sleep(clock), retry_budget_seconds=5, max_records=4
    ) as sink:
        await sink.write(feed.trades(4))
        await until(lambda: sink.failed != [])
        assert sink.objects == []
        assert 2 <= writer.put_attempts <= 10
        [failed] = sink.failed
        assert sink.unfinished() == [failed]
        writer.clear_failures()
        await sink.close()  # retried once more at stop
    assert sink.failed == []
    assert [entry.key for entry in sink.objects] == [failed.key]


async def test_unexpected_writer_error_does_not_crash_the_sink(clock: FakeClock) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(1, RuntimeError("bug"))
    async with make_sink(clock, writer, max_records=2) as sink:
        await sink.write(feed.trades(4))
        await until(lambda: sink.uploads_in_flight == 0)
        assert len(sink.failed) == 1
        assert len(sink.objects) == 1
        assert sink.last_error == "RuntimeError: bug"


async def test_cancelled_close_leaves_windows_unfinished_and_spillable(
    clock: FakeClock, tmp_path: Path
) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.hold_puts()
    sent = feed.trades(12)
    async with make_sink(clock, writer, max_records=5, max_concurrent_uploads=2) as sink:
        await sink.write(sent[:10])
        await sink.write(sent[10:])  # stays open
        closing = asyncio.create_task(sink.close())
        await until(lambda: writer.puts_started == 2)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        unfinished = sink.unfinished()
    assert sink.objects == []
    assert writer.objects == {}
    assert sorted(w.records for w in unfinished) == [2, 5, 5]
    spill_windows(unfinished, tmp_path, "run1")
    loaded = load_spilled(tmp_path)
    assert sorted(s.window.key for s in loaded) == sorted(w.key for w in unfinished)
    trades = [
        Trade.from_dict(obj)
        for s in sorted(loaded, key=lambda s: s.window.key)
        for obj in decode_body(s.window.body, s.window.format)
    ]
    assert trades == sent


async def test_leaving_with_an_error_cancels_uploads_and_propagates_it(clock: FakeClock) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.hold_puts()
    sink = make_sink(clock, writer, max_records=3)
    with pytest.raises(KeyError):
        async with sink:
            await sink.write(feed.trades(3))
            await until(lambda: writer.puts_started == 1)
            raise KeyError("boom")
    assert sink.uploads_in_flight == 0
    assert [w.records for w in sink.unfinished()] == [3]
    assert writer.objects == {}


async def test_write_outside_context_is_an_error(clock: FakeClock) -> None:
    feed = Feed(clock)
    sink = make_sink(clock, MemoryWriter(), max_records=1)
    with pytest.raises(RuntimeError, match="async with"):
        await sink.write(feed.trades(1))
    assert [w.records for w in sink.unfinished()] == [1]


async def test_sink_into_local_directory(clock: FakeClock, tmp_path: Path) -> None:
    feed = Feed(clock)
    writer = FileWriter(tmp_path)
    async with make_sink(clock, writer, max_records=100) as sink:
        for _ in range(5):
            await sink.write(feed.trades(50))
        await sink.close()
    keys = [obj.key for obj in await writer.list("p/")]
    assert keys == sorted(entry.key for entry in sink.objects)
    assert len(keys) == 3


async def test_sink_into_s3(clock: FakeClock, aws_env: dict[str, str], bucket: str) -> None:
    feed = Feed(clock)
    async with S3Writer.open(bucket) as writer:
        async with make_sink(clock, writer, max_records=100) as sink:
            for _ in range(5):
                await sink.write(feed.trades(60))
            await sink.close()
        listed = await writer.list("p/")
        body = await writer.get(sink.objects[0].key)
    assert sorted(obj.key for obj in listed) == sorted(entry.key for entry in sink.objects)
    assert sum(entry.records for entry in sink.objects) == 300
    assert len(decode_body(body, "ndjson.gz")) == sink.objects[0].records


async def test_storage_error_type_is_retried_not_raised(clock: FakeClock) -> None:
    feed = Feed(clock)
    writer = MemoryWriter()
    writer.fail_next(1, StorageError("throttled"))
    async with make_sink(clock, writer, sleep=fake_sleep(clock)) as sink:
        await sink.write(feed.trades(1))
        await sink.close()
    assert len(sink.objects) == 1
