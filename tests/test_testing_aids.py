"""The testing aids of :mod:`feedvault.testing`, used as a user's test would use them: the
in-process fake exchange, a stream run on a ``FakeClock`` storing into a ``MemoryWriter``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from feedvault.config import load_stream_config
from feedvault.runner import StreamRun
from feedvault.testing import (
    FakeClock,
    Faults,
    MemoryWriter,
    fake_exchange,
    stored_trades,
    stream_env,
)
from sinks.manifest import Manifest, manifest_key


@pytest.mark.parametrize(
    ("protocol", "symbols"), [("binance", "BTCUSDT,ETHUSDT"), ("kraken", ["BTC/USD"])]
)
async def test_a_stream_run_stores_every_trade_the_in_process_fake_exchange_sent(
    tmp_path: Path, protocol: str, symbols: str | list[str]
) -> None:
    clock, writer = FakeClock(), MemoryWriter()
    async with fake_exchange(
        protocol, symbols=symbols, rate=1000, clock=clock, max_trades=300
    ) as fake:
        assert fake.url.startswith("ws://127.0.0.1:")
        env = stream_env(
            fake, S3_BUCKET="unused", MAX_RUNTIME_SECONDS="60", SPILL_DIR=str(tmp_path)
        )
        run = StreamRun(
            load_stream_config(env), clock=clock, writer=writer, install_signal_handlers=False
        )
        task = asyncio.create_task(run.run())
        await fake.wait_ready(1)
        for _ in range(3):  # 0.3 s of market time: about 300 trades
            clock.advance(0.1)
            await fake.wait_tick()
        assert not task.done()  # nothing ends the run but the clock
        clock.advance(60)  # past MAX_RUNTIME_SECONDS
        async with asyncio.timeout(30):
            status = await task
    assert status == 0
    manifest = Manifest.from_json(writer.objects[manifest_key("test/", "test-run")])
    assert (manifest.status, manifest.stop_reason) == ("complete", "deadline")
    sent = sorted((t.symbol, t.trade_id, t.price, t.size) for t in fake.ledger.trades())
    stored = sorted((t.symbol, t.trade_id, t.price, t.size) for t in stored_trades(writer))
    assert len(sent) >= 200
    assert stored == sent
    assert {t.exchange for t in stored_trades(writer)} == {protocol}


async def test_fake_exchange_takes_symbols_and_faults_as_text_and_stops_on_leaving() -> None:
    async with fake_exchange(
        "okx", symbols="BTC-USDT, ETH-USDT", rate=None, faults="reject-unknown,drop-pongs"
    ) as fake:
        assert fake.symbols == {"BTC-USDT", "ETH-USDT"}
        assert fake.faults == Faults(reject_unknown=True, drop_pongs=True)
        assert fake.live_connections == 0
        env = stream_env(fake, RUN_ID="mine")
        assert env["OKX_WS_URL"] == fake.url
        assert env["STREAMS"] == "okx:BTC-USDT,okx:ETH-USDT"
        assert env["RUN_ID"] == "mine"
        client = await connect(fake.url + "/ws/v5/public")
        await fake.wait_ready(1)
        assert fake.live_connections == 1
    assert fake.live_connections == 0  # leaving the block closed the connection (going away)
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(10):
            await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_fake_exchange_refuses_an_unknown_protocol_and_bad_fault_text() -> None:
    with pytest.raises(ValueError, match="does not speak 'nasdaq'"):
        async with fake_exchange("nasdaq"):
            pass
    with pytest.raises(ValueError, match="malformed"):
        async with fake_exchange(faults="malformed=2"):
            pass


def test_memory_writer_and_fake_clock_are_the_shipped_ones() -> None:
    from engine.clock import FakeClock as EngineFakeClock
    from sinks.memory import MemoryWriter as SinksMemoryWriter

    assert FakeClock is EngineFakeClock and MemoryWriter is SinksMemoryWriter
    clock = FakeClock()
    start = clock.monotonic(), clock.time_ns()
    clock.advance(1.5)
    assert (clock.monotonic(), clock.time_ns()) == (start[0] + 1.5, start[1] + 1_500_000_000)
