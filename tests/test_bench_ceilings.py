"""`make bench`'s ceilings and generator figure: the bare receive loops of both transports
(:mod:`benchmarks.bare_recv`) against the fake exchange at ``--rate max``, the readings of
another process's CPU time and peak RSS, and the ratio lines of the report
(docs/load-testing.md#make-bench). Figures are checked for shape, never for speed."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import orjson
import pytest

from benchmarks import bare_recv, blaster
from benchmarks.__main__ import peak_rss_of, process_cpu_seconds, report, ws_ratios
from benchmarks.figures import median_row
from connectors.binance import BinanceProtocol
from connectors.fake.server import FakeExchange
from engine.stats import peak_rss_bytes

STREAMS = "/stream?streams=btcusdt@trade/ethusdt@trade"


@pytest.mark.parametrize("transport", bare_recv.TRANSPORTS)
@pytest.mark.parametrize("parse", [False, True])
async def test_bare_loop_receives_blasted_frames(transport: str, parse: bool) -> None:
    async with FakeExchange("binance", rate=None, symbols=["BTCUSDT", "ETHUSDT"]) as fx:
        result = await bare_recv.receive(fx.url + STREAMS, 0.05, transport, parse)
    assert result["transport"] == transport
    assert result["parse"] is parse
    messages = result["messages"]
    assert isinstance(messages, int)
    # the clock is read every 1024 frames: the loop ends on such a frame
    assert messages >= 1024 and messages % 1024 == 0
    assert {"seconds", "msgs_per_s", "cpu_us_per_msg", "peak_rss_mb"} <= set(result)


async def test_bare_aiohttp_loop_ends_when_the_server_closes() -> None:
    """The server closing the connection ends the aiohttp loop with what it counted, before
    its first clock check (100 frames at most, fewer than 1024)."""
    async with FakeExchange("binance", rate=None, symbols=["BTCUSDT"], max_trades=100) as fx:
        running = asyncio.create_task(
            bare_recv.receive(fx.url + "/ws/btcusdt@trade", 3600.0, "aiohttp")
        )
        await fx.wait_ready(1)
    # leaving the context closed every connection (1001)
    async with asyncio.timeout(10):
        result = await running
    assert isinstance(result["messages"], int) and 0 <= result["messages"] <= 100


def test_parse_sink_is_orjson() -> None:
    assert bare_recv._sink(True) is orjson.loads
    assert bare_recv._sink(False)(b"not json") is None


def test_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="picows"):
        asyncio.run(bare_recv.receive("ws://127.0.0.1:1", 1.0, "picows"))


def test_another_process_cpu_and_peak_rss_are_read_from_proc() -> None:
    pid = os.getpid()
    before = process_cpu_seconds(pid)
    assert 0 < before <= time.process_time() + 0.05  # clock ticks round down
    assert peak_rss_of(pid) > 0
    assert abs(peak_rss_of(pid) - peak_rss_bytes()) <= 1 << 20


def _row(rate: float) -> dict[str, float]:
    return {"trades_per_s": rate, "cpu_us_per_trade": 1.0, "peak_rss_mb": 50.0}


def test_ratios_state_each_ceiling_and_the_generator_against_the_engine() -> None:
    results = {
        "bare": _row(200_000),
        "bare-aiohttp": _row(400_000),
        "generator": _row(400_000),
        "zst": _row(100_000),
    }
    assert ws_ratios(results) == [
        "stream (zst) vs bare websockets loop: 50%",
        "stream (zst) vs bare aiohttp loop: 25% (target >= 25%: met)",
        "generator vs engine: 4.0x (target >= 3x: met)",
    ]
    results["generator"] = _row(180_000)
    assert ws_ratios(results)[-1] == "generator vs engine: 1.8x (target >= 3x: NOT met)"
    table = report(results)
    for name in ("bare-aiohttp", "generator", "zst"):
        assert f"  {name} " in table
    assert "generator vs engine: 1.8x (target >= 3x: NOT met)" in table


def test_ratios_state_the_targets_against_the_baseline_and_the_other_transport() -> None:
    """The rows run by the baseline's code (a git worktree of the commit before the transport
    work) give the issue's targets: stream at least 2.5x, replay at least 1.5x; peak RSS of
    the short and the long run under 300 MB."""
    results = {
        "bare-aiohttp": _row(1_000_000),
        "zst": {**_row(240_000), "peak_rss_mb": 120.0},
        "zst-websockets": _row(120_000),
        "zst-before": _row(100_000),
        "zst-long": {**_row(240_000), "peak_rss_mb": 126.0},
        "replay": _row(300_000),
        "replay-before": _row(250_000),
    }
    lines = ws_ratios(results)
    assert lines[0] == "stream (zst) vs before: 2.40x (target >= 2.5x: NOT met)"
    assert "stream (zst) vs bare aiohttp loop: 24% (target >= 25%: NOT met)" in lines
    assert "stream (zst), aiohttp vs websockets transport: 2.00x" in lines
    table = report(results)
    assert "peak RSS, long run vs short run: 1.05x (120 MB, 126 MB; bound 300 MB: met)" in table
    assert "replay vs before: 1.20x (target >= 1.5x: NOT met)" in table
    for name in ("zst-websockets", "zst-before", "replay-before"):
        assert f"  {name} " in table
    results["zst-before"] = _row(90_000)
    assert ws_ratios(results)[0] == "stream (zst) vs before: 2.67x (target >= 2.5x: met)"


def test_ratios_need_the_engine_run() -> None:
    assert ws_ratios({"bare": _row(1.0), "generator": _row(1.0)}) == []


async def test_blaster_sends_valid_gapless_binance_trades() -> None:
    """The bench's blaster: frames Binance's client protocol parses, each symbol's ids from 1
    without a gap, round-robin over the URL's streams; a bare loop reads them."""
    stop = asyncio.Event()
    ports: asyncio.Queue[object] = asyncio.Queue()
    async with asyncio.TaskGroup() as group:
        server = group.create_task(
            blaster.run("127.0.0.1", 0, 64, stop, lambda line: ports.put_nowait(line["port"]))
        )
        async with asyncio.timeout(10):
            port = await ports.get()
        url = f"ws://127.0.0.1:{port}/stream?streams=btcusdt@trade/ethusdt@trade"
        protocol = BinanceProtocol()
        ids: dict[str, list[int]] = {}
        # aiohttp's close discards what is still in flight (websockets' would wait for its
        # paused reader until close_timeout)
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            for _ in range(300):
                parsed = protocol.parse(await ws.receive_str(), 0)
                assert isinstance(parsed, list | tuple) and len(parsed) == 1
                trade = parsed[0]
                ids.setdefault(trade.raw_symbol, []).append(int(trade.trade_id))
                assert float(trade.price) > 0 and float(trade.size) > 0
        result = await bare_recv.receive(url, 0.05, "aiohttp")
        stop.set()
    assert server.done()
    assert ids == {"BTCUSDT": list(range(1, 151)), "ETHUSDT": list(range(1, 151))}
    assert isinstance(result["messages"], int) and result["messages"] >= 1024


def test_blaster_frames_and_paths() -> None:
    assert blaster.frame_header(5) == b"\x81\x05"
    assert blaster.frame_header(300) == b"\x81\x7e\x01\x2c"
    assert blaster.frame_header(1 << 16) == b"\x81\x7f" + (1 << 16).to_bytes(8, "big")
    assert blaster.symbols_of("/stream?streams=btcusdt@trade/ethusdt@aggTrade") == ["BTCUSDT"]
    assert blaster.symbols_of("/ws") == []


def test_the_median_run_is_kept_with_every_runs_rate() -> None:
    rows = [_row(300.0), _row(100.0), _row(200.0), {"available": False, "note": "no manifest"}]
    assert median_row(rows) == {**_row(200.0), "runs": [100.0, 200.0, 300.0]}
    assert median_row([_row(1.0), _row(3.0)])["trades_per_s"] == 1.0  # the lower middle
    failed = {"available": False, "note": "exit 1"}
    assert median_row([failed]) == failed
