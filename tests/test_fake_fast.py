"""The fake exchange's fast path for max mode (:mod:`connectors.fake.fast`): what it sends is what
its ledger says, decoded by the real protocol parsers, and byte for byte what the exact path's
encoder gives for the same trades, on every protocol; the ledger's runs read back as every trade
(in memory and in the streamed JSONL file); the market's runs number trades as ``take`` does;
a send cut short by an abort records exactly the frames that left."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from connectors.fake.adapters import ADAPTERS, get_adapter
from connectors.fake.fast import (
    Ring,
    Run,
    RunFrames,
    Template,
    frame_header,
    frame_texts,
    frames_within,
    interleave,
)
from connectors.fake.faults import Faults
from connectors.fake.ledger import Ledger, ledger_line
from connectors.fake.market import RING_SIZE, Market
from connectors.fake.server import FAST_BATCH, FakeExchange
from connectors.registry import get_protocol
from engine.clock import FakeClock
from engine.errors import MalformedFrame
from engine.records import Trade

WAIT = 10.0

SYMBOLS = {
    "binance": ["BTCUSDT", "ETHUSDT", "BNBUSDT"],
    "binanceus": ["BTCUSD", "ETHUSD"],
    "coinbase": ["BTC-USD", "ETH-USD"],
    "kraken": ["BTC/USD", "ETH/USD"],
    "bitstamp": ["BTCUSD", "ETHUSD"],
    "okx": ["BTC-USDT", "ETH-USDT"],
    "bybit": ["BTCUSDT", "ETHUSDT"],
}
"""Symbols each protocol's fake trades in these tests (every protocol of the fake)."""


def view(trades: list[Trade]) -> list[tuple[str, str, str, str, str, int]]:
    """What must survive the wire (the parsers' ``raw_symbol`` spelling may differ)."""
    return [(t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event) for t in trades]


async def read_trades(
    ws: ClientConnection, name: str, count: int
) -> tuple[list[Trade], list[str | bytes]]:
    """Read until ``count`` trades were parsed (bounded); the trades and the frames that carried
    them, in order."""
    proto = get_protocol(name)
    trades: list[Trade] = []
    frames: list[str | bytes] = []
    async with asyncio.timeout(WAIT):
        while len(trades) < count:
            frame = await ws.recv()
            try:
                result = proto.parse(frame, 0)
            except MalformedFrame:  # pragma: no cover - the assertion below names it
                raise AssertionError(f"malformed frame: {frame!r}") from None
            if isinstance(result, (tuple, list)) and result:
                trades.extend(result)
                frames.append(frame)
    return trades, frames


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "exact"])
@pytest.mark.parametrize("name", sorted(ADAPTERS))
async def test_max_mode_sends_the_ledgers_trades_as_the_exact_encoder_frames_them(
    name: str, fast: bool
) -> None:
    """Every protocol at ``rate=None``: the frames, parsed by the real client protocol, carry
    exactly the ledger's trades (ids counting up per symbol from 1), and each frame is byte for
    byte what a server session of the exact path encodes for that trade. On the fast path the
    values are the market's rings'; several batches (and a last, shorter one) are sent."""
    symbols, n = SYMBOLS[name], 2 * FAST_BATCH + 100
    proto = get_protocol(name)
    async with FakeExchange(name, rate=None, symbols=symbols, max_trades=n, fast=fast) as fx:
        url = proto.connection_url(fx.url, symbols)
        async with connect(url, max_queue=None) as ws:
            for message in proto.subscribe_messages(symbols):
                await ws.send(message)
            trades, frames = await read_trades(ws, name, n)
    sent = list(fx.ledger.trades())
    assert len(trades) == n == fx.ledger.total
    assert view(trades) == view(sent)
    for symbol in symbols:
        ids = [int(t.trade_id) for t in sent if t.raw_symbol == symbol.upper()]
        assert ids == list(range(1, len(ids) + 1)) == fx.ledger.sent_ids(symbol.upper())
    # the exact path's encoder, in a session subscribed as the client subscribed
    path = url[len(fx.url) :] or "/"
    session = get_adapter(name).session(path, fx.symbols, Faults())
    assert session is not None
    session.apply(session.opening())
    for message in proto.subscribe_messages(symbols):
        session.apply(session.on_message(message))
    routes = session.routes()
    assert [session.encode(t, routes[t.raw_symbol][0]) for t in sent] == frames
    market = fx.market
    assert market is not None
    from_rings = [
        (t.price, t.size, t.side) == market.ring(t.raw_symbol).values[int(t.trade_id) % RING_SIZE]
        for t in sent
    ]
    assert all(from_rings) if fast else not all(from_rings)


def test_a_template_reproduces_its_encoder_or_is_refused() -> None:
    """A template made from an encoder gives its text for any id and time (across the ring's
    wrap); an encoder that derives text from the id or the time otherwise than by writing them
    gets none."""
    ring = Market(["BTCUSDT"], rate=None, seed=2).ring("BTCUSDT")

    def plain(t: Trade) -> str:
        return f'{{"t":{t.trade_id},"p":"{t.price}","T":{t.ts_event // 1000},"us":{t.ts_event}}}'

    template = Template.of(ring, plain, ascii_only=True)
    assert template is not None
    for first in (1, RING_SIZE - 3, 10**12 + 5):
        texts = template.texts(first, RING_SIZE + 7, 1_765_000_000_123)
        assert texts == [
            plain(ring.trade(tid, 1_765_000_000_123)) for tid in range(first, first + RING_SIZE + 7)
        ]
    assert Template.of(ring, lambda t: f'{{"o":{2 * int(t.trade_id)}}}', ascii_only=True) is None
    assert Template.of(ring, lambda t: f'{{"s":{t.ts_event // 10**6}}}', ascii_only=True) is None
    assert Template.of(ring, lambda t: f'{{"k":{int(t.trade_id) % 3}}}', ascii_only=True) is None
    assert Template.of(ring, lambda t: f'"é{t.trade_id}"', ascii_only=True) is None
    assert Template.of(ring, lambda t: f'"é{t.trade_id}"', ascii_only=False) is not None


def test_rendered_runs_are_frames_of_the_encoders_text_and_partial_counts_are_whole_frames() -> (
    None
):
    market = Market(["BTCUSDT", "ETHUSDT"], rate=None, seed=3)
    run = market.take_run(["BTCUSDT", "ETHUSDT"], 301, 1_765_000_000_000)
    assert run is not None

    def encode(trade: Trade, stream: str) -> str:
        return f'{{"s":"{stream}","t":{trade.trade_id},"p":"{trade.price}"}}'

    streams = ["btc", "eth"]
    expected = frame_texts([encode(t, streams[i % 2]) for i, t in enumerate(run.trades())])
    for pure in (True, False):
        assert RunFrames(encode, pure).render(run, streams) == expected
    one = len(frame_header(40)) + 40
    data = frame_texts(["x" * 40] * 3)
    assert [frames_within(data, k) for k in (0, one - 1, one, 3 * one - 1, 3 * one, 10**6)] == [
        0,
        0,
        1,
        2,
        3,
        3,
    ]
    assert frames_within(frame_texts(["y" * 70_000, "z"]), 70_010) == 1
    assert interleave([[1, 3, 5], [2, 4]], 5) == [1, 2, 3, 4, 5]


def test_take_run_numbers_and_orders_trades_as_take_does() -> None:
    """Runs and ``take`` give the same ids in the same order and leave the same round-robin
    turn, whatever the symbols of each call; ``max_trades`` caps both alike."""
    by_take = Market(["A1USDT", "B2USDT", "C3USDT"], rate=None, max_trades=1000)
    by_run = Market(["A1USDT", "B2USDT", "C3USDT"], rate=None, max_trades=1000)
    calls = [(["A1USDT", "B2USDT", "C3USDT"], 7), (["B2USDT", "C3USDT"], 5), (["A1USDT"], 2)]
    for symbols, n in calls * 3 + [(["A1USDT", "B2USDT", "C3USDT"], 2000)]:
        taken = [(t.raw_symbol, t.trade_id) for t in by_take.take(symbols, n)]
        run = by_run.take_run(symbols, n, 5)
        assert run is not None
        assert [(t.raw_symbol, t.trade_id) for t in run.trades()] == taken
    assert by_run.produced == by_take.produced == 1000 and by_run.exhausted
    assert by_run.take_run(["A1USDT"], 5, 5) is None
    # a ring depends on the seed and the symbol, not on what the market made before
    assert by_take.ring("B2USDT") == Market(["B2USDT"], rate=None).ring("B2USDT")
    assert by_take.ring("B2USDT") != Market(["B2USDT"], rate=None, seed=2).ring("B2USDT")


def test_the_ledger_reads_runs_back_as_every_trade_in_memory_and_in_its_file(
    tmp_path: Path,
) -> None:
    """Runs and single trades, mixed: ``trades``, ``sent_ids``, the summary, ``write`` and the
    streamed file give each trade as :func:`ledger_line` would, in send order; ``memory_limit``
    keeps the first trades of a run."""
    market = Market(["BTCUSDT", "ETHUSDT"], rate=None, seed=9)
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    run1 = market.take_run(["BTCUSDT", "ETHUSDT"], 101, 1_765_000_000_001)
    single = market.take(["BTCUSDT"], 1)[0]
    run2 = market.take_run(["ETHUSDT", "BTCUSDT"], 50, 1_765_000_000_002)
    assert run1 is not None and run2 is not None
    ledger.add_run(1, run1)
    ledger.add(2, single)
    ledger.add_run(1, run2)
    expected = [(1, t) for t in run1.trades()] + [(2, single)] + [(1, t) for t in run2.trades()]
    ledger.close()
    lines = path.read_bytes().splitlines(keepends=True)
    assert lines == [ledger_line(conn, t) for conn, t in expected]
    assert list(ledger.trades()) == [t for _, t in expected]
    assert list(ledger.trades(2)) == [single]
    assert ledger.sent_ids("ETH-USDT") == list(range(1, 51)) + list(range(51, 76))
    assert ledger.sent_ids("BTCUSDT", 1) == list(range(1, 52)) + list(range(53, 78))
    summary = ledger.summary()
    assert summary["trades"] == 152 and summary["per_connection"] == {"1": 151, "2": 1}
    copy = tmp_path / "copy.jsonl"
    assert ledger.write(copy) == 152 and copy.read_bytes() == path.read_bytes()
    capped = Ledger(memory_limit=60)
    capped.add_run(1, run1)
    assert [t.trade_id for t in capped.trades()] == [t.trade_id for t in run1.trades()][:60]
    assert capped.total == 101 and not capped.complete_in_memory
    line = orjson.loads(lines[0])
    assert line["ts_event"] == 1_765_000_000_001_000 and line["conn"] == 1


def test_a_ring_trade_is_its_slots_values() -> None:
    ring = Ring("binance", "BTC-USDT", "BTCUSDT", (("1.0", "2.0", "buy"), ("3.0", "4.0", "sell")))
    assert ring.trade(5, 7) == Trade(
        "binance", "BTC-USDT", "BTCUSDT", "5", "3.0", "4.0", "sell", 7000, 0
    )
    run = Run((ring,), (4,), 2, 7)
    assert [t.trade_id for t in run.trades()] == ["4", "5"] and run.head(1).count == 1


async def test_an_abort_mid_write_records_exactly_the_frames_that_left() -> None:
    """A client stops reading while the fast path blasts; at the fake's exit its close waits
    behind the unread frames until the exit aborts the connection, discarding what the
    server's buffer held. The client then reads what the kernel had taken: exactly the
    ledger's trades; every trade made is sent or undelivered."""
    fx = FakeExchange("binance", rate=None, symbols=["BTCUSDT"], clock=FakeClock())
    got: list[int] = []
    async with fx:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        async with asyncio.timeout(WAIT):
            await asyncio.get_running_loop().sock_connect(sock, (fx.host, fx.port))
        ws = await connect(f"{fx.url}/ws/btcusdt@trade", sock=sock, max_queue=4, ping_interval=None)
        await fx.wait_ready(1)
        async with asyncio.timeout(WAIT):
            got += [orjson.loads(await ws.recv())["t"] for _ in range(1000)]
        # the server is now blocked on a write the client does not read
    try:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(60):
                while True:
                    got.append(orjson.loads(await ws.recv())["t"])
    finally:
        await ws.close()
    market, ledger = fx.market, fx.ledger
    assert market is not None
    assert ledger.undelivered > 0, "the server's buffer held nothing when it aborted"
    assert got == ledger.sent_ids("BTCUSDT") == list(range(1, len(got) + 1))
    assert ledger.total + ledger.undelivered == market.produced


def test_the_fast_path_counts_what_left_on_uvloop_too() -> None:
    """On uvloop (as `feedvault demo` runs the fake) the connection's transport is wrapped to
    count the bytes written: the fast path's writes are counted there, and the ledger still
    equals what was received."""
    pytest.importorskip("uvloop")
    from engine import aio

    async def main() -> tuple[list[int], list[int], int]:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        fx = FakeExchange("binance", rate=None, symbols=["BTCUSDT"], max_trades=1500)
        async with fx, connect(f"{fx.url}/ws/btcusdt@trade", max_queue=None) as ws:
            trades, _ = await read_trades(ws, "binance", 1500)
        return [int(t.trade_id) for t in trades], fx.ledger.sent_ids("BTCUSDT"), fx.ledger.total

    received, sent, total = aio.run(main())
    assert received == sent == list(range(1, 1501)) and total == 1500
