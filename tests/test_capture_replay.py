"""Record and replay in-process (docs: recording-and-replay.md): the replay clock, the replay
source, and capture -> replay round trips through StreamRun with an injected clock. No sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson
import pytest

from connectors.fake.server import FakeExchange
from connectors.gaps import GapTracker
from connectors.recording import RecordedFrame, parse_line
from connectors.replay import ReplaySource
from connectors.session import InvalidFrameLog
from engine.batchqueue import BatchQueue
from engine.clock import FakeClock, ReplayClock
from engine.errors import ConfigError
from engine.records import Trade
from engine.stats import Counters
from feedvault.config import load_stream_config
from feedvault.replay import ReplayRun, load_replay_config, parse_speed
from feedvault.runner import StreamRun
from sinks.encoders import decode_object
from sinks.manifest import Manifest, manifest_key
from sinks.memory import MemoryWriter
from sinks.verify import verify_run
from tests.harness import past_the_deadline
from tests.logcapture import captured_logs

NS = 1_000_000_000
T0 = 1_700_000_000 * NS  # a multiple of 60 s


def trade_frame(symbol: str, trade_id: int, ms: int) -> str:
    data = {
        "e": "trade",
        "E": ms,
        "s": symbol,
        "t": trade_id,
        "p": "1.50",
        "q": "2.0",
        "T": ms,
        "m": False,
    }
    return orjson.dumps({"stream": f"{symbol.lower()}@trade", "data": data}).decode()


def recording(frames: Sequence[tuple[float, int]], symbol: str = "BTCUSDT") -> list[RecordedFrame]:
    """A connect line, then one trade frame per (seconds after T0, trade id)."""
    out = [RecordedFrame(T0, "binance", "out", "", "ws://x/stream?streams=btcusdt@trade")]
    for seconds, trade_id in frames:
        ts = T0 + int(seconds * NS)
        out.append(RecordedFrame(ts, "binance", "in", trade_frame(symbol, trade_id, ts // 10**6)))
    return out


async def chunked(
    frames: Sequence[RecordedFrame], size: int = 3
) -> AsyncIterator[list[RecordedFrame]]:
    for start in range(0, len(frames), size):
        yield list(frames[start : start + size])


class Harness:
    def __init__(self, frames: Sequence[RecordedFrame], speed: float | None = None) -> None:
        self.base = FakeClock(start_ns=0)
        self.clock = ReplayClock(T0, self.base)
        self.queue: BatchQueue[Trade] = BatchQueue(10_000)
        self.counters = Counters()
        self.gaps = GapTracker()
        self.pauses: list[float] = []
        self.ended = 0

        async def pause(stop: asyncio.Event, seconds: float) -> None:
            self.pauses.append(seconds)
            self.base.advance(seconds)

        def on_end() -> None:
            self.ended += 1

        self.source = ReplaySource(
            chunked(frames),
            self.queue,
            clock=self.clock,
            window_seconds=60,
            counters=self.counters,
            gaps=self.gaps,
            invalid_log=InvalidFrameLog(self.counters),
            speed=speed,
            pause=pause,
            on_end=on_end,
            batch_size=2,
        )

    def drained(self) -> list[Trade]:
        out: list[Trade] = []
        while (batch := self.queue.get_nowait()) is not None:
            out += batch
        return out


def test_replay_clock_follows_the_recording_and_never_goes_back() -> None:
    base = FakeClock()
    clock = ReplayClock(5, base)
    assert clock.time_ns() == 5
    clock.advance_to(10)
    clock.advance_to(7)
    assert clock.time_ns() == 10
    base.advance(2.5)
    assert clock.monotonic() == base.monotonic()


def test_parse_speed() -> None:
    assert parse_speed("max") is None
    assert parse_speed("10") == 10.0
    for bad in ("0", "-1", "fast", "inf", "nan"):
        with pytest.raises(ConfigError, match="--speed"):
            parse_speed(bad)


async def test_source_parses_with_the_recorded_ts_and_ends() -> None:
    frames = recording([(0.5, 1), (1.0, 2), (1.5, 3)])
    h = Harness(frames)
    stop = asyncio.Event()
    async with asyncio.timeout(5):
        await h.source.run(stop)
    trades = h.drained()
    assert [t.trade_id for t in trades] == ["1", "2", "3"]
    assert [t.ts_recv for t in trades] == [f.ts for f in frames[1:]]
    assert h.ended == 1 and h.source.ended
    assert h.source.frames == 3 and h.counters.parsed == 3
    assert h.clock.time_ns() == frames[-1].ts
    assert h.pauses == []  # max speed never waits


async def test_source_tracks_gaps_drops_duplicates_and_counts_bad_frames() -> None:
    frames = recording([(0.1, 1), (0.2, 2), (0.3, 5), (0.4, 5), (0.5, 6)])
    frames.insert(3, RecordedFrame(T0 + NS // 4, "binance", "in", "{not json"))
    frames.insert(4, RecordedFrame(T0 + NS // 4, "binance", "out", "", "ws://x/again"))
    h = Harness(frames)
    async with asyncio.timeout(5):
        await h.source.run(asyncio.Event())
    assert [t.trade_id for t in h.drained()] == ["1", "2", "5", "6"]
    h.gaps.finish()  # what the run does at its end: pending gaps become final
    assert [(g.from_id, g.to_id) for g in h.gaps.gaps["binance:BTC-USDT"]] == [(3, 4)]
    assert h.gaps.duplicates == 1
    assert h.counters.invalid == 1
    assert h.counters.reconnects == 1


async def test_paced_replay_waits_the_recorded_span_divided_by_the_speed() -> None:
    frames = recording([(0.0, 1), (2.0, 2), (2.0, 3), (10.0, 4)])
    h = Harness(frames, speed=4.0)
    async with asyncio.timeout(5):
        await h.source.run(asyncio.Event())
    assert sum(h.pauses) == pytest.approx(10.0 / 4)
    assert h.pauses == pytest.approx([0.5, 2.0])
    assert len(h.drained()) == 4


async def test_stop_mid_replay_queues_what_was_read() -> None:
    frames = recording([(float(i), i + 1) for i in range(10)])
    h = Harness(frames, speed=1.0)
    stop = asyncio.Event()

    async def pause(event: asyncio.Event, seconds: float) -> None:
        h.base.advance(seconds)
        if h.source.frames >= 4:
            stop.set()

    h.source.pause = pause
    async with asyncio.timeout(5):
        await h.source.run(stop)
    assert [t.trade_id for t in h.drained()] == ["1", "2", "3", "4"]
    assert h.ended == 0 and not h.source.ended


async def test_crossing_a_window_slot_waits_for_the_consumer() -> None:
    frames = recording([(10.0, 1), (70.0, 2)])
    h = Harness(frames)
    task = asyncio.create_task(h.source.run(asyncio.Event()))
    for _ in range(20):
        await asyncio.sleep(0)
    # The first slot's trade is queued; time has not moved into the next slot yet.
    assert not task.done()
    assert h.clock.time_ns() == frames[1].ts
    assert [t.trade_id for t in h.queue.get_nowait() or []] == ["1"]
    async with asyncio.timeout(5):
        await task
    assert h.clock.time_ns() == frames[2].ts


def replay_config(tmp_path: Path, **extra: str):  # type: ignore[no-untyped-def]
    env = {
        "S3_BUCKET": "out-bucket",
        "S3_PREFIX": "replayed/",
        "RUN_ID": "replay-run",
        "SPILL_DIR": str(tmp_path),
        "WINDOW_SECONDS": "60",
    }
    env.update(extra)
    return load_replay_config(env, ["unused.jsonl"])


async def test_replay_run_windows_by_recorded_time_and_writes_a_manifest(tmp_path: Path) -> None:
    frames = recording([(1.0, 1), (30.0, 2), (61.0, 3), (125.0, 4)])
    writer = MemoryWriter()
    run = ReplayRun(
        replay_config(tmp_path),
        chunked(frames),
        clock=ReplayClock(T0, FakeClock()),
        writer=writer,
        install_signal_handlers=False,
    )
    async with asyncio.timeout(10):
        assert await run.run() == 0
    keys = sorted(k for k in writer.objects if "/trades/" in k)
    starts = [k.rsplit("/", 1)[1].split("-")[0] for k in keys]
    assert starts == ["20231114T221300Z", "20231114T221400Z", "20231114T221500Z"]
    manifest = Manifest.from_json(writer.objects[manifest_key("replayed/", "replay-run")])
    assert manifest.status == "complete"
    assert manifest.config["inputs"] == ["unused.jsonl"] and manifest.config["speed"] == "max"
    assert manifest.counters["received"] == 4 and manifest.counters["parsed"] == 4
    report = await verify_run(writer, "replayed/", "replay-run")
    assert report.ok, report.problems


async def test_an_unreadable_input_midway_stops_with_an_error(tmp_path: Path) -> None:
    from engine.errors import RecordingError

    async def broken() -> AsyncIterator[list[RecordedFrame]]:
        yield recording([(1.0, 1)])
        raise RecordingError("f.jsonl:3: not JSON")

    writer = MemoryWriter()
    run = ReplayRun(
        replay_config(tmp_path),
        broken(),
        clock=ReplayClock(T0, FakeClock()),
        writer=writer,
        install_signal_handlers=False,
    )
    async with asyncio.timeout(10):
        assert await run.run() == 1
    manifest = Manifest.from_json(writer.objects[manifest_key("replayed/", "replay-run")])
    assert manifest.stop_reason == "error" and "not JSON" in (manifest.error or "")
    assert manifest.objects[0].records == 1  # what was read is durable


def decoded(writer: MemoryWriter, part: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for key in sorted(writer.objects):
        if part in key:
            out += decode_object(key, writer.objects[key])
    return out


@pytest.mark.parametrize("fmt", ["ndjson.gz", "parquet"])
async def test_capture_then_replay_gives_the_same_trades_in_process(
    tmp_path: Path, fmt: str
) -> None:
    """With ``FORMAT=parquet`` too: trades (live and replayed) in Parquet, raw frames in
    ``ndjson.zst`` (docs: lake.md#formats)."""
    clock = FakeClock()
    writer = MemoryWriter()
    env = {
        "S3_BUCKET": "unused-bucket",
        "S3_PREFIX": "live/",
        "MAX_RUNTIME_SECONDS": "60",
        "STREAMS": "binance:BTCUSDT,binance:ETHUSDT",
        "STALE_SECONDS": "100000",
        "SPILL_DIR": str(tmp_path),
        "RUN_ID": "live-run",
        "CAPTURE": "1",
        "FORMAT": fmt,
    }
    async with FakeExchange(
        "binance", rate=1000, symbols=["BTCUSDT", "ETHUSDT"], clock=clock
    ) as fx:
        env["BINANCE_WS_URL"] = fx.url
        run = StreamRun(
            load_stream_config(env), clock=clock, writer=writer, install_signal_handlers=False
        )
        task = asyncio.create_task(run.run())
        await fx.wait_ready(1)
        for _ in range(5):
            clock.advance(0.1)
            await fx.wait_tick()
        assert await past_the_deadline(task, clock) == 0
    live = decoded(writer, "live/trades/")
    raw_keys = sorted(k for k in writer.objects if k.startswith("live/raw/exchange=binance/"))
    raw_format = "ndjson.zst" if fmt == "parquet" else fmt
    assert live and raw_keys and all(k.endswith(raw_format) for k in raw_keys)
    assert all(k.endswith(fmt) for k in writer.objects if k.startswith("live/trades/"))
    lines = [parse_line(orjson.dumps(obj)) for obj in decoded(writer, "live/raw/")]
    connects = [f for f in lines if f.is_connect]
    assert connects and connects[0].url is not None and connects[0].url.startswith(fx.url)
    assert any(f.dir == "in" for f in lines)
    assert {f.ts for f in lines if f.dir == "in"} >= {t["ts_recv"] for t in live}
    manifest = Manifest.from_json(writer.objects[manifest_key("live/", "live-run")])
    assert {o.key for o in manifest.objects} == {k for k in writer.objects if "_manifests" not in k}
    assert all(not o.symbols for o in manifest.objects if "/raw/" in o.key)
    assert (await verify_run(writer, "live/", "live-run")).ok

    replayed = MemoryWriter()
    rerun = ReplayRun(
        replay_config(tmp_path, FORMAT=fmt),
        chunked(lines, 100),
        clock=ReplayClock(lines[0].ts, FakeClock()),
        writer=replayed,
        install_signal_handlers=False,
    )
    async with asyncio.timeout(30):
        assert await rerun.run() == 0

    def key(t: dict[str, object]) -> tuple[str, str, int]:
        return (str(t["symbol"]), str(t["trade_id"]), int(t["ts_recv"]))  # type: ignore[call-overload]

    assert sorted(decoded(replayed, "replayed/trades/"), key=key) == sorted(live, key=key)
    assert (await verify_run(replayed, "replayed/", "replay-run")).ok


async def test_a_replayed_bad_frame_is_counted_under_its_refined_kind() -> None:
    """A recorded frame nested too deep is counted as a session would count it: ``nesting``."""
    frames = recording([(0.5, 1), (1.5, 2)])
    deep = "[" * 100 + "]" * 100
    frames.insert(2, RecordedFrame(T0 + NS, "binance", "in", deep))
    h = Harness(frames)
    with captured_logs("INFO") as logs:
        async with asyncio.timeout(5):
            await h.source.run(asyncio.Event())
    assert [t.trade_id for t in h.drained()] == ["1", "2"]
    assert h.counters.invalid == 1
    assert [doc["kind"] for doc in logs.docs("invalid_frame")] == ["nesting"]
