"""The stop sequence in-process, with an injected clock: no sleeping, no real deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path

from connectors.fake.server import FakeExchange
from engine.clock import FakeClock
from engine.lifecycle import StopController
from engine.records import Trade
from feedvault.config import StreamConfig, load_stream_config
from feedvault.runner import StreamRun
from sinks.encoders import decode_body, decode_object
from sinks.manifest import Manifest, iso_utc, manifest_key
from sinks.memory import MemoryWriter
from sinks.spill import (
    load_spilled,
    load_spilled_manifest,
    scan_spilled,
    spill_manifest,
    spill_windows,
)
from sinks.spilllock import claim_run_lock, run_is_live
from sinks.verify import verify_run
from tests.harness import make_windower, past_the_deadline
from tests.logcapture import captured_logs

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def config(url: str, spill_dir: Path, **extra: str) -> StreamConfig:
    env = {
        "S3_BUCKET": "unused-bucket",
        "S3_PREFIX": "streaming/test/",
        "MAX_RUNTIME_SECONDS": "60",
        "STREAMS": ",".join(f"binance:{s}" for s in SYMBOLS),
        "BINANCE_WS_URL": url,
        "STALE_SECONDS": "100000",
        "STOP_GRACE_SECONDS": "10",
        "SPILL_DIR": str(spill_dir),
        "RUN_ID": "test-run",
    }
    env.update(extra)
    return load_stream_config(env)


def start(
    exchange: FakeExchange, spill_dir: Path, clock: FakeClock, writer: MemoryWriter
) -> tuple[StreamRun, asyncio.Task[int]]:
    """A run against ``exchange`` with the default :func:`config`, and the task running it."""
    run = StreamRun(
        config(exchange.url, spill_dir), clock=clock, writer=writer, install_signal_handlers=False
    )
    return run, asyncio.create_task(run.run())


def stored_ids(writer: MemoryWriter) -> list[tuple[str, str]]:
    out = []
    for key, body in writer.objects.items():
        if "/trades/" in key:
            out += [(r["symbol"], r["trade_id"]) for r in decode_object(key, body)]
    return sorted(out)  # type: ignore[arg-type]


def ledger_ids(exchange: FakeExchange) -> list[tuple[str, str]]:
    return sorted((t.symbol, t.trade_id) for t in exchange.ledger.trades())


async def test_the_deadline_on_an_injected_clock_stops_the_run(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    # max_trades: the market's last trades come as the deadline passes, not 60 s of them at once
    async with FakeExchange(
        "binance", rate=1000, symbols=SYMBOLS, clock=clock, max_trades=1000
    ) as exchange:
        _, task = start(exchange, tmp_path, clock, writer)
        await exchange.wait_ready(1)
        for _ in range(5):  # 0.5 s of market time: about 500 trades
            clock.advance(0.1)
            await exchange.wait_tick()
        assert not task.done()
        clock.advance(60)  # past MAX_RUNTIME_SECONDS
        async with asyncio.timeout(30):
            status = await task
    assert status == 0
    manifest = Manifest.from_json(writer.objects[manifest_key("streaming/test/", "test-run")])
    assert manifest.stop_reason == "deadline"
    assert manifest.status == "complete"
    assert stored_ids(writer) == ledger_ids(exchange)
    assert len(stored_ids(writer)) >= 400


async def test_a_second_signal_spills_what_is_not_durable_and_exits_1(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    writer.hold_puts()  # S3 accepts connections but never answers
    controller = StopController(clock=clock)
    async with FakeExchange("binance", rate=1000, symbols=SYMBOLS, clock=clock) as exchange:
        run = StreamRun(
            config(exchange.url, tmp_path, STOP_GRACE_SECONDS="2.5"),
            clock=clock,
            writer=writer,
            controller=controller,
            install_signal_handlers=False,
        )
        task = asyncio.create_task(run.run())
        await exchange.wait_ready(1)
        for _ in range(3):
            clock.advance(0.1)
            await exchange.wait_tick()
        controller.on_signal("SIGTERM")
        async with asyncio.timeout(30):
            await run.ingest_done.wait()  # every source closed and drained
        controller.on_signal("SIGTERM")
        async with asyncio.timeout(30):
            status = await task
    assert status == 1
    assert run.aborted
    spilled = load_spilled(tmp_path, "test-run")
    records = []
    for item in spilled:
        records += [
            (r["symbol"], r["trade_id"]) for r in decode_body(item.window.body, item.window.format)
        ]
    assert sorted(records) == ledger_ids(exchange)
    assert len(records) >= 200
    # Nothing but the running manifest of the start could be written: it stays, saying so.
    [key] = writer.objects
    assert key == manifest_key("streaming/test/", "test-run")
    assert Manifest.from_json(writer.objects[key]).status == "running"
    # The manifest waits beside the windows, naming them, for a later run to write it.
    spilled_manifest = load_spilled_manifest(tmp_path, "test-run")
    assert spilled_manifest is not None
    manifest = Manifest.from_json(spilled_manifest.body)
    assert manifest.status == "incomplete"
    assert sorted(manifest.spilled) == sorted(item.window.key for item in spilled)


async def test_server_shutdown_notice_reconnects_at_once_without_loss(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    from connectors.fake.faults import Faults

    faults = Faults.parse("shutdown-notice-every=5")
    async with FakeExchange(
        "binance", rate=1000, symbols=SYMBOLS, clock=clock, faults=faults, max_trades=6000
    ) as exchange:
        run, task = start(exchange, tmp_path, clock, writer)
        await exchange.wait_ready(1)
        clock.advance(0.2)
        await exchange.wait_tick()
        clock.advance(5)  # the notice is due
        await exchange.wait_tick()
        await exchange.wait_ready(2)  # the engine came back on a new connection
        clock.advance(0.2)
        await exchange.wait_tick()
        clock.advance(60)
        async with asyncio.timeout(30):
            status = await task
    assert status == 0
    assert run.counters.reconnects >= 1
    assert stored_ids(writer) == ledger_ids(exchange)


def test_more_symbols_than_one_connection_carries_open_more_connections(tmp_path: Path) -> None:
    from connectors.gaps import GapTracker
    from engine.batchqueue import BatchQueue
    from engine.stats import Counters
    from feedvault.sessions import build_sessions

    symbols = [f"S{n:04d}USDT" for n in range(2050)]
    cfg = config("ws://127.0.0.1:9", tmp_path, STREAMS=",".join(f"binance:{s}" for s in symbols))
    sessions = build_sessions(cfg, BatchQueue(10), Counters(), GapTracker(), FakeClock())
    assert [len(s.symbols) for s in sessions] == [1024, 1024, 2]
    assert [s for session in sessions for s in session.symbols] == symbols
    assert all(s.url.startswith("ws://127.0.0.1:9/stream?streams=") for s in sessions)


async def test_binance_aggregated_trades_on_request(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    async with FakeExchange(
        "binance", rate=500, symbols=SYMBOLS, clock=clock, max_trades=400
    ) as exchange:
        cfg = config(exchange.url, tmp_path, BINANCE_STREAM="aggTrade")
        run = StreamRun(cfg, clock=clock, writer=writer, install_signal_handlers=False)
        task = asyncio.create_task(run.run())
        await exchange.wait_ready(1)
        clock.advance(0.4)
        await exchange.wait_tick()
        assert await past_the_deadline(task, clock) == 0
    assert all("@aggTrade" in s.url for s in run.sessions)
    assert stored_ids(writer) == ledger_ids(exchange)
    assert len(stored_ids(writer)) >= 100


async def test_a_run_uploads_what_an_earlier_run_left_in_the_spill_dir(tmp_path: Path) -> None:
    """Run "earlier" had its S3 fail: one window spilled, its manifest spilled too. The next run
    (same SPILL_DIR and destination) uploads it while streaming and completes that manifest."""
    clock = FakeClock()
    writer = MemoryWriter()
    prefix = "streaming/test/"
    earlier = make_windower(clock, 3, prefix, "earlier")
    [window] = earlier.add(
        [Trade("binance", "BTC-USDT", "BTCUSDT", str(i), "1", "1", "buy", 5, 6) for i in (1, 2, 3)]
    )
    cfg = config("ws://127.0.0.1:9", tmp_path)
    spill_windows([window], tmp_path, "earlier", destination=cfg.destination.url)
    incomplete = Manifest(
        run_id="earlier",
        version="0",
        command="feedvault stream",
        started_at=iso_utc(clock.time_ns()),
        stopped_at=iso_utc(clock.time_ns()),
        stop_reason="deadline",
        status="incomplete",
        spilled=[window.key],
    )
    spill_manifest(
        tmp_path,
        "earlier",
        manifest_key(prefix, "earlier"),
        incomplete.to_json(),
        destination=cfg.destination.url,
    )
    async with FakeExchange(
        "binance", rate=1000, symbols=SYMBOLS, clock=clock, max_trades=600
    ) as exchange:
        _, task = start(exchange, tmp_path, clock, writer)
        await exchange.wait_ready(1)
        async with asyncio.timeout(10):  # the recovery runs beside ingest (worker threads)
            while manifest_key(prefix, "earlier") not in writer.objects:  # noqa: ASYNC110
                await asyncio.sleep(0)
        clock.advance(0.3)
        await exchange.wait_tick()
        clock.advance(60)
        async with asyncio.timeout(30):
            status = await task
    assert status == 0
    recovered = Manifest.from_json(writer.objects[manifest_key(prefix, "earlier")])
    assert recovered.status == "complete"
    assert recovered.recovered[0]["recovered_by"] == "test-run"
    assert writer.objects[window.key] == window.body
    assert (await verify_run(writer, prefix, "earlier")).ok
    assert scan_spilled(tmp_path).entries == []
    assert load_spilled_manifest(tmp_path, "earlier") is None
    # This run's own data is unaffected: complete, every ledger trade once.
    own = Manifest.from_json(writer.objects[manifest_key(prefix, "test-run")])
    assert own.status == "complete"
    assert stored_ids(writer) == sorted(
        [("BTC-USDT", "1"), ("BTC-USDT", "2"), ("BTC-USDT", "3"), *ledger_ids(exchange)]
    )


async def test_a_run_whose_lock_another_process_holds_says_so_and_still_runs(
    tmp_path: Path,
) -> None:
    """A RUN_ID reused while its first run still holds the spill lock: the second run warns
    (``spill_lock_unavailable``) and runs to a complete manifest; the holder's lock stays."""
    (tmp_path / "test-run").mkdir()
    held = claim_run_lock(tmp_path, "test-run")
    assert held is not None and held.locked
    clock = FakeClock()
    writer = MemoryWriter()
    try:
        with captured_logs("INFO") as logs:
            async with FakeExchange("binance", rate=100, symbols=SYMBOLS, clock=clock) as exchange:
                _, task = start(exchange, tmp_path, clock, writer)
                await exchange.wait_ready(1)
                clock.advance(61)  # past MAX_RUNTIME_SECONDS
                async with asyncio.timeout(30):
                    status = await task
        (warning,) = logs.docs("spill_lock_unavailable")
        assert warning["level"] == "warning" and "another process" in warning["reason"]
        assert status == 0
        assert run_is_live(tmp_path, "test-run")  # still the first holder's
    finally:
        held.release()
    manifest = Manifest.from_json(writer.objects[manifest_key("streaming/test/", "test-run")])
    assert manifest.status == "complete"
