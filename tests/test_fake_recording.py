"""The fake exchange serving a recorded feed, over real WebSockets on 127.0.0.1.

No test sleeps: each waits (bounded) for frames, or for the server's pass counter.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from connectors.binance import BinanceProtocol, encode_trade
from connectors.coinbase import CoinbaseProtocol
from connectors.fake.cli import add_arguments, run
from connectors.fake.recorded import Pace, RecordedFeed
from connectors.fake.server import FakeExchange
from connectors.recording import RecordedFrame, RecordingWriter, convert_cryptofeed
from engine.clock import FakeClock
from engine.records import SELL, Trade
from tests.conftest import FIXTURES
from tests.harness import listening_process, sigterm_exits_0
from tests.wsclient import client

WAIT = 10.0
ROOT = Path(__file__).resolve().parent.parent
COINBASE_FILE = Path(FIXTURES) / "cryptofeed-recordings" / "COINBASE.ws.28.0"
BINANCE_FILE = Path(FIXTURES) / "cryptofeed-recordings" / "BINANCE.ws.1.0"


def _trade(i: int, symbol: str = "BTCUSDT") -> Trade:
    side = SELL if i % 3 else "buy"
    return Trade("binance", "BTC-USDT", symbol, str(i), f"{i}.5", "0.01", side, i * 1000, 0)


def _binance_recording(path: Path, trades: int) -> list[RecordedFrame]:
    """A recording of ``trades`` trade frames, one second apart, with a depth frame after every
    tenth and frames that must not be served (sent frames, another exchange's) in between.
    Returns the frames a client must receive."""
    served: list[RecordedFrame] = []
    with RecordingWriter(path) as writer:
        writer.write(RecordedFrame(0, "binance", "out", "", "wss://stream.binance.com:9443/ws"))
        writer.write(RecordedFrame(1, "binance", "out", '{"method":"SUBSCRIBE","id":1}'))
        for i in range(1, trades + 1):
            ts = i * 1_000_000_000
            frame = RecordedFrame(ts, "binance", "in", encode_trade(_trade(i), combined=True))
            writer.write(frame)
            served.append(frame)
            if i % 10 == 0:
                depth = '{"stream":"btcusdt@depth","data":{"e":"depthUpdate","b":[],"a":[]}}'
                extra = RecordedFrame(ts + 1, "binance", "in", depth)
                writer.write(extra)
                served.append(extra)
                writer.write(RecordedFrame(ts + 2, "coinbase", "in", '{"type":"heartbeat"}'))
    return served


async def _recv(ws: ClientConnection, count: int) -> list[str]:
    out: list[str] = []
    async with asyncio.timeout(WAIT):
        while len(out) < count:
            frame = await ws.recv()
            assert isinstance(frame, str)
            out.append(frame)
    return out


def _combined(fx: FakeExchange, *symbols: str) -> str:
    return BinanceProtocol().connection_url(fx.url, list(symbols))


def _ids(fx: FakeExchange) -> list[str]:
    return [t.trade_id for t in fx.ledger.trades()]


async def test_every_recorded_frame_arrives_once_in_order(tmp_path: Path) -> None:
    path = tmp_path / "rec.zst"
    served = _binance_recording(path, 1000)
    feed = RecordedFeed.of([path], "binance", speed=None)
    async with FakeExchange(symbols=["BTCUSDT"], rate=None, recording=feed) as fx:
        async with client(_combined(fx, "BTCUSDT")) as ws:
            got = await _recv(ws, len(served))
            assert got == [f.frame for f in served]
            await fx.wait_passes(1)
        assert fx.recorded_frames_sent == len(served)
        # the ledger holds exactly the trades the frames carried, once each, in order
        assert _ids(fx) == [str(i) for i in range(1, 1001)]
        assert fx.ledger.sent_ids("BTCUSDT") == list(range(1, 1001))
        assert [t.ts_event for t in fx.ledger.trades()] == [i * 1000 for i in range(1, 1001)]


async def test_each_connection_gets_the_whole_recording(tmp_path: Path) -> None:
    path = tmp_path / "rec.gz"
    served = _binance_recording(path, 50)
    feed = RecordedFeed.of([path], "binance", speed=None)
    async with FakeExchange(symbols=[], rate=None, recording=feed) as fx:
        async with client(_combined(fx, "BTCUSDT")) as one, client(_combined(fx, "ETHUSDT")) as two:
            assert await _recv(one, len(served)) == [f.frame for f in served]
            assert await _recv(two, len(served)) == [f.frame for f in served]
            await fx.wait_passes(2)
        assert fx.ledger.connections() == [1, 2] and fx.ledger.total == 100


async def test_loop_repeats_the_recording(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    served = _binance_recording(path, 30)
    feed = RecordedFeed.of([path], "binance", speed=None, loop=True)
    async with (
        FakeExchange(symbols=["BTCUSDT"], rate=None, recording=feed) as fx,
        client(_combined(fx, "BTCUSDT")) as ws,
    ):
        got = await _recv(ws, 3 * len(served))
        await fx.wait_passes(3)
    assert got == [f.frame for f in served] * 3
    assert _ids(fx)[:90] == [str(i) for i in range(1, 31)] * 3


async def test_frames_start_only_after_a_subscription(tmp_path: Path) -> None:
    path = tmp_path / "rec.zst"
    served = _binance_recording(path, 20)
    feed = RecordedFeed.of([path], "binance", speed=None)
    async with (
        FakeExchange(symbols=["BTCUSDT"], rate=None, recording=feed) as fx,
        client(f"{fx.url}/ws") as ws,
    ):
        await fx.wait_ready(1)
        await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 7}))
        got = await _recv(ws, 1 + len(served))
        # had the server sent anything before the subscription, it would precede the ack
        assert orjson.loads(got[0]) == {"result": None, "id": 7}
        assert got[1:] == [f.frame for f in served]


async def test_recorded_pace_scaled_by_speed(tmp_path: Path) -> None:
    path = tmp_path / "rec.zst"
    served = _binance_recording(path, 5)  # trades 1 s apart (recorded time)
    clock = FakeClock()
    feed = RecordedFeed.of([path], "binance", speed=2.0)
    async with (
        FakeExchange(symbols=["BTCUSDT"], rate=None, recording=feed, clock=clock) as fx,
        client(_combined(fx, "BTCUSDT")) as ws,
    ):
        assert await _recv(ws, 1) == [served[0].frame]  # due at once
        for n in range(2, 6):
            clock.advance(0.5)  # 1 recorded second at speed 2
            assert await _recv(ws, 1) == [served[n - 1].frame]
            # the next frame is due 0.5 s later on the (frozen) clock: not sent yet
            assert fx.recorded_frames_sent == n


def test_pace_is_monotonic_and_max_is_never_late() -> None:
    pace = Pace(100.0, 4.0)
    assert pace.due(10_000_000_000) == 100.0
    assert pace.due(14_000_000_000) == 101.0
    assert pace.due(12_000_000_000) == 101.0  # a clock step back does not reorder
    assert Pace(5.0, None).due(123) == float("-inf")
    with pytest.raises(ValueError, match="speed"):
        RecordedFeed.of(["x"], "binance", speed=0)


async def test_real_coinbase_capture_served_to_a_coinbase_client(tmp_path: Path) -> None:
    path = tmp_path / "coinbase.zst"
    with RecordingWriter(path) as writer:
        for frame in convert_cryptofeed(COINBASE_FILE, "coinbase"):
            writer.write(frame)
    feed = RecordedFeed.of([path], "coinbase", speed=None)
    scan = feed.scan()
    proto = CoinbaseProtocol()
    async with (
        FakeExchange("coinbase", symbols=sorted(scan.symbols), rate=None, recording=feed) as fx,
        client(fx.url) as ws,
    ):
        for message in proto.subscribe_messages(["SKL-USD"]):
            await ws.send(message)
        got = await _recv(ws, 1 + scan.frames)  # our subscriptions reply, then the recording
        await fx.wait_passes(1)
    trades = [t for text in got[1:] for t in _as_trades(proto.parse(text, 0))]
    assert len(trades) == scan.trades == fx.ledger.total > 100
    view = [(t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event) for t in trades]
    sent = [(t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event) for t in fx.ledger.trades()]
    assert view == sent


async def test_cli_serves_a_converted_binance_capture(tmp_path: Path) -> None:
    path = tmp_path / "binance.gz"
    with RecordingWriter(path) as writer:
        for frame in convert_cryptofeed(BINANCE_FILE, "binance"):
            writer.write(frame)
    command = ["-m", "feedvault", "fake-exchange", "--recording", str(path), "--speed", "max"]
    async with listening_process(*command, "--ledger", str(tmp_path / "ledger.jsonl")) as (
        proc,
        listening,
    ):
        assert listening["recorded_frames"] == 265 and listening["recorded_trades"] == 2
        url = BinanceProtocol("aggTrade").connection_url(listening["url"], ["NKNUSDT"])
        async with client(url) as ws:
            got = await _recv(ws, 265)
        proto = BinanceProtocol()
        trades = [t for text in got for t in _as_trades(proto.parse(text, 0))]
        assert [t.trade_id for t in trades] == ["15683430", "9213679"]
        stopped = orjson.loads((await sigterm_exits_0(proc)).splitlines()[-1])
        assert stopped["trades"] == 2 and stopped["recorded_frames_sent"] == 265
        ledger = (tmp_path / "ledger.jsonl").read_text().splitlines()
        assert [orjson.loads(line)["trade_id"] for line in ledger] == ["15683430", "9213679"]


async def test_cli_refuses_a_bad_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ts":1,"exchange":"binance","dir":"in","frame":"x"}\nnope\n')
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert await run(parser.parse_args(["--recording", str(bad)])) == 2
    assert capsys.readouterr().err.startswith(f"--recording: {bad}:2: not JSON")
    assert await run(parser.parse_args(["--recording", str(bad), "--speed", "-1"])) == 2
    assert capsys.readouterr().err.startswith("--speed: ")


def _as_trades(result: object) -> tuple[Trade, ...]:
    return result if isinstance(result, tuple) else ()
