"""The fake exchange's ``oversized`` fault over real WebSockets (protocol-neutral server).

A frame above the client's 1 MiB ``max_size`` makes the client's websockets fail the connection
with 1009; nothing after it on that connection arrives, so the server stops there and the ledger
holds exactly the trades sent ahead of it. No test sleeps to synchronise. The engine's session
against this fault (1009, reconnect, the gaps the ledger lacks) is in
tests/test_session_conformance.py, on both transports.
"""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from connectors.binance import BinanceProtocol
from connectors.fake.faults import Faults
from connectors.fake.server import OVERSIZED_BYTES, FakeExchange, oversized_frame
from engine.clock import FakeClock
from engine.errors import MalformedFrame
from tests.wsclient import Received, read_until, trade_view

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
