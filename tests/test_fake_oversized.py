"""The fake exchange's ``oversized`` fault over real WebSockets (protocol-neutral server).

A frame above the client's 1 MiB ``max_size`` makes the client's websockets fail the connection
with 1009; nothing after it on that connection arrives, so the server stops there and the ledger
holds exactly the trades sent ahead of it. No test sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from connectors.base import ExchangeProtocol
from connectors.binance import BinanceProtocol
from connectors.fake.faults import Faults
from connectors.fake.server import OVERSIZED_BYTES, FakeExchange, oversized_frame
from connectors.gaps import GapTracker
from connectors.registry import get_protocol
from connectors.session import InvalidFrameLog, SessionSettings, WebSocketSession
from engine.batchqueue import BatchQueue
from engine.clock import FakeClock
from engine.errors import MalformedFrame
from engine.records import Trade
from engine.retry import RetryPolicy
from engine.stats import Counters
from tests.wsclient import WAIT, Received, read_until, trade_view

ONE_MIB = 1 << 20


def test_faults_parse_and_print() -> None:
    faults = Faults.parse("oversized=0.25,drop-pongs")
    assert (faults.oversized, faults.drop_pongs) == (0.25, True)
    assert str(faults) == "oversized=0.25,drop-pongs"
    assert Faults.parse(str(faults)) == faults
    for bad in ("oversized=2", "oversized=x", "drop-pongs=3"):
        with pytest.raises(ValueError, match=bad.partition("=")[0]):
            Faults.parse(bad)


def test_the_frame_is_over_the_client_limit_and_no_json() -> None:
    frame = oversized_frame()
    assert len(frame.encode()) == OVERSIZED_BYTES > ONE_MIB
    with pytest.raises(MalformedFrame):
        BinanceProtocol().parse(frame, 0)


async def test_client_fails_with_1009_and_received_the_ledger_exactly() -> None:
    clock = FakeClock()
    proto = BinanceProtocol()
    faults = Faults(oversized=0.01)
    async with FakeExchange(
        rate=1000, symbols=["BTCUSDT"], clock=clock, faults=faults, seed=2
    ) as fx:
        got = Received()
        url = proto.connection_url(fx.url, ["BTCUSDT"])
        async with connect(url, max_size=ONE_MIB, max_queue=None) as ws:
            await fx.wait_ready(1)
            clock.advance(1.0)  # 1000 trades; about 10 of them drew the fault
            with pytest.raises(ConnectionClosedError) as info:
                await read_until(ws, proto, got, lambda: False)
        assert info.value.sent is not None and info.value.sent.code == 1009
        assert got.malformed == [] and got.trades  # the trades ahead of the big frame came
        assert trade_view(got.trades) == trade_view(list(fx.ledger.trades()))
        assert fx.ledger.oversized_sent == 1
        assert fx.ledger.total + 1 + fx.ledger.undelivered == 1000


async def test_blast_mode_stops_at_the_oversized_frame_too() -> None:
    proto = BinanceProtocol()
    async with FakeExchange(
        rate=None, symbols=["ETHUSDT"], faults=Faults(oversized=0.001), max_trades=20_000, seed=5
    ) as fx:
        got = Received()
        url = proto.connection_url(fx.url, ["ETHUSDT"])
        async with connect(url, max_size=ONE_MIB, max_queue=None) as ws:
            with pytest.raises(ConnectionClosedError):
                await read_until(ws, proto, got, lambda: False)
        ids = got.ids("ETHUSDT")
        assert ids == fx.ledger.sent_ids("ETHUSDT") == list(range(1, len(ids) + 1))
        assert fx.ledger.oversized_sent == 1 and 0 < len(ids) < 20_000


async def test_a_client_without_a_limit_sees_junk_then_a_close() -> None:
    clock = FakeClock()
    proto = BinanceProtocol()
    async with FakeExchange(
        rate=200, symbols=["BTCUSDT"], clock=clock, faults=Faults(oversized=1.0)
    ) as fx:
        url = proto.connection_url(fx.url, ["BTCUSDT"])
        async with connect(url, max_size=None, max_queue=None) as ws:
            await fx.wait_ready(1)
            clock.advance(1.0)
            got = Received()
            with pytest.raises(ConnectionClosed):
                await read_until(ws, proto, got, lambda: False)
            assert ws.close_code == 1001
        assert [e.kind for e in got.malformed] == ["json"] and got.trades == []
        assert fx.ledger.total == 0 and fx.ledger.oversized_sent == 1


def make_session(
    protocol: ExchangeProtocol, url: str, symbols: Sequence[str], clock: FakeClock
) -> tuple[WebSocketSession, BatchQueue[Trade], GapTracker]:
    counters = Counters()
    queue: BatchQueue[Trade] = BatchQueue(100_000)
    gaps = GapTracker()
    session = WebSocketSession(
        protocol,
        url,
        symbols,
        queue,
        counters=counters,
        gaps=gaps,
        invalid_log=InvalidFrameLog(counters),
        settings=SessionSettings(),
        backoff=RetryPolicy(initial=0.01, cap=0.02),
        clock=clock,
    )
    return session, queue, gaps


def drained(queue: BatchQueue[Trade]) -> list[Trade]:
    out: list[Trade] = []
    while (batch := queue.get_nowait()) is not None:
        out += batch
    return out


@pytest.mark.parametrize(
    ("exchange", "symbol", "path"),
    [("coinbase", "BTC-USD", ""), ("kraken", "ETH/USD", "/v2"), ("binance", "BTCUSDT", "")],
)
async def test_the_engine_session_reconnects_and_its_gaps_are_what_the_ledger_lacks(
    exchange: str, symbol: str, path: str
) -> None:
    clock = FakeClock()
    protocol = get_protocol(exchange)
    async with FakeExchange(
        exchange, rate=200, symbols=[symbol], clock=clock, faults=Faults(oversized=0.02), seed=3
    ) as fx:
        session, queue, gaps = make_session(protocol, fx.url + path, [symbol], clock)
        stop = asyncio.Event()
        task = asyncio.create_task(session.run(stop))
        async with asyncio.timeout(WAIT):
            while fx.connections_opened < 4:  # three connections ended by an oversized frame
                clock.advance(0.25)
                await fx.wait_tick()
        stop.set()
        async with asyncio.timeout(WAIT):
            await task
    stored = drained(queue)
    assert fx.ledger.oversized_sent >= 3 and session.counters.reconnects >= 3
    # The big frames never reach the parser; each one the client read (1009) is counted.
    assert 3 <= session.counters.invalid <= fx.ledger.oversized_sent
    assert trade_view(stored) == trade_view(list(fx.ledger.trades()))
    sent = fx.ledger.sent_ids(symbol)
    missing = sorted(set(range(sent[0], sent[-1] + 1)) - set(sent))
    gaps.finish()  # what the run does at its end: pending gaps become final
    reported = [n for gap in gaps.gaps.get(f"{exchange}:{stored[0].symbol}", []) for n in
                range(gap.from_id, gap.to_id + 1)]  # fmt: skip
    assert missing and reported == missing
