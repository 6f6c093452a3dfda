"""The fake exchange over real WebSockets on 127.0.0.1, driven by an injected clock.

No test sleeps to synchronise: each waits for what it expects (frames, readiness) under
``asyncio.timeout``. Trades appear only when a test advances the FakeClock.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from connectors.base import Ack, ExchangeError, ReconnectNotice
from connectors.binance import BinanceProtocol, encode_trade
from connectors.fake.cli import add_arguments, run
from connectors.fake.faults import Faults, Stall
from connectors.fake.market import Market
from connectors.fake.server import FakeExchange
from engine.clock import FakeClock
from engine.records import Trade
from tests.harness import listening_process, sigterm_exits_0
from tests.wsclient import WAIT, Received, client
from tests.wsclient import read_until as read_parsed_until

ROOT = Path(__file__).resolve().parent.parent


async def read_until(ws: ClientConnection, got: Received, done: Callable[[], bool]) -> None:
    """Read and parse Binance frames until ``done()`` (at most WAIT s); ConnectionClosed
    propagates."""
    await read_parsed_until(ws, BinanceProtocol(), got, done)


async def read_trades(ws: ClientConnection, got: Received, count: int) -> None:
    """Read until ``got`` holds at least ``count`` trades."""
    await read_until(ws, got, lambda: len(got.trades) >= count)


async def read_until_closed(ws: ClientConnection, got: Received) -> None:
    with pytest.raises(ConnectionClosed):
        await read_until(ws, got, lambda: False)


def ledger_view(fx: FakeExchange) -> list[Trade]:
    return list(fx.ledger.trades())


def combined(fx: FakeExchange, *symbols: str, kind: str = "trade") -> str:
    return f"{fx.url}/stream?streams=" + "/".join(f"{s.lower()}@{kind}" for s in symbols)


async def test_timed_sequential_ids_and_ledger_equals_received() -> None:
    clock = FakeClock()
    async with (
        FakeExchange(rate=200, symbols=["BTCUSDT", "ETHUSDT"], clock=clock, seed=4) as fx,
        client(combined(fx, "BTCUSDT", "ETHUSDT")) as ws,
    ):
        await fx.wait_ready(1)
        got = Received()
        for second in range(1, 4):
            clock.advance(1.0)
            await read_trades(ws, got, 200 * second)
        assert len(got.trades) == 600 and got.malformed == [] and got.controls == []
        for raw in ("BTCUSDT", "ETHUSDT"):
            ids = got.ids(raw)
            assert ids == list(range(1, len(ids) + 1))
            assert fx.ledger.sent_ids(raw) == ids
        # the parsed trades are exactly what the ledger says was sent (ts_recv aside)
        assert [
            (t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event) for t in got.trades
        ] == [(t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event) for t in ledger_view(fx)]


async def test_aggtrade_raw_stream_path() -> None:
    clock = FakeClock()
    async with (
        FakeExchange(rate=100, symbols=["BNBBTC"], clock=clock) as fx,
        client(f"{fx.url}/ws/bnbbtc@aggTrade") as ws,
    ):
        await fx.wait_ready(1)
        clock.advance(1.0)
        first = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert first["e"] == "aggTrade" and first["a"] == 1 and first["s"] == "BNBBTC"
        assert "stream" not in first


async def test_disconnect_fault_gap_matches_ledger() -> None:
    clock = FakeClock()
    faults = Faults(disconnect_every=5)
    async with FakeExchange(rate=100, symbols=["BTCUSDT"], clock=clock, faults=faults) as fx:
        got = Received()
        async with client(combined(fx, "BTCUSDT")) as ws:
            await fx.wait_ready(1)
            clock.advance(1.0)
            await read_until(ws, got, lambda: len(got.trades) >= 100)
            clock.advance(4.0)  # age 5: the server closes; this tick's 400 trades are lost
            await read_until_closed(ws, got)
            assert ws.close_code == 1001
        clock.advance(2.0)  # 200 more trades while nobody listens
        await fx.wait_tick()
        async with client(combined(fx, "BTCUSDT")) as ws:
            await fx.wait_ready(2)
            clock.advance(1.0)
            await read_until(ws, got, lambda: len(got.trades) >= 200)
        ids = got.ids("BTCUSDT")
        assert ids == fx.ledger.sent_ids("BTCUSDT")
        assert ids == list(range(1, 101)) + list(range(701, 801))
        missing = sorted(set(range(1, fx.market.next_id("BTCUSDT"))) - set(ids))
        assert missing == list(range(101, 701))
        assert fx.ledger.connections() == [1, 2] and fx.connections_opened == 2


async def test_stall_keeps_socket_open_and_drops_trades() -> None:
    clock = FakeClock()
    faults = Faults(stall=Stall(seconds=2, every=5))
    async with (
        FakeExchange(rate=100, symbols=["BTCUSDT"], clock=clock, faults=faults) as fx,
        client(combined(fx, "BTCUSDT")) as ws,
    ):
        await fx.wait_ready(1)
        got = Received()
        clock.advance(1.0)
        await read_until(ws, got, lambda: len(got.trades) >= 100)
        clock.advance(4.0)  # age 5: stalled, 400 trades not delivered
        await fx.wait_tick()
        clock.advance(2.0)  # age 7: flowing again
        await read_until(ws, got, lambda: got.ids("BTCUSDT")[-1] >= 700)
        ids = got.ids("BTCUSDT")
        assert ids == fx.ledger.sent_ids("BTCUSDT")
        assert ids[:100] == list(range(1, 101)) and ids[-1] == 700
        assert fx.live_connections == 1 and fx.ledger.undelivered >= 400


RECEIVE_BUFFER = 1 << 16
"""SO_RCVBUF of the backlog test's client (set before it connects, which stops the kernel from
growing it; Linux then reports twice this)."""


async def small_receive_buffer_socket(fx: FakeExchange) -> socket.socket:
    """A TCP socket connected to ``fx`` whose receive buffer is fixed at ``RECEIVE_BUFFER``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.setblocking(False)
        async with asyncio.timeout(WAIT):
            await asyncio.get_running_loop().sock_connect(sock, (fx.host, fx.port))
    except BaseException:
        sock.close()
        raise
    return sock


def frames_beyond_the_buffers(sock: socket.socket, frame_bytes: int) -> int:
    """Trades (a multiple of 1000, at least 100_000) whose frames are twice what loopback can
    hold of the connection outside the fake exchange's process: the server's send buffer, which
    the kernel grows up to tcp_wmem's maximum, plus the client's fixed receive buffer (a few
    hundred KiB that the client's event loop reads ahead are well inside the margin)."""
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    needed = -(-2 * (wmem_max + rcvbuf) // frame_bytes)
    return max(100_000, -(-needed // 1000) * 1000)


async def test_send_backlog_peak_counts_the_trades_that_waited_for_the_socket() -> None:
    """A reader keeping up has one tick's batch waiting at most; a reader that stops makes
    the batches behind a large one (more than the socket's buffers take) wait together."""
    clock = FakeClock()
    async with FakeExchange(rate=1000, symbols=["BTCUSDT"], clock=clock) as fx:
        sock = await small_receive_buffer_socket(fx)
        # reads only as the test does (max_queue): the socket's buffers fill up behind it
        async with connect(combined(fx, "BTCUSDT"), sock=sock, max_queue=4) as ws:
            await fx.wait_ready(1)
            got = Received()
            for total in (500, 1000):
                clock.advance(0.5)
                await read_trades(ws, got, total)
            assert fx.ledger.send_backlog_peak == 500  # each batch sent before the next came

            # the smallest frame so far (later ids are longer): 4 bytes of header, then the text
            frame_bytes = 4 + min(len(encode_trade(t, combined=True)) for t in got.trades)
            big = frames_beyond_the_buffers(sock, frame_bytes)
            if big > Market.MAX_BATCH:  # one tick's batch is at most this
                pytest.skip(f"this host's socket buffers take {big} trades' frames")
            clock.advance(big / 1000)
            await fx.wait_tick()
            clock.advance(1.0)  # 1000 more, behind the big batch the socket is still taking
            await fx.wait_tick()
            assert fx.ledger.send_backlog_peak == big + 1000
            await read_trades(ws, got, 1000 + big + 1000)
            assert got.ids("BTCUSDT") == fx.ledger.sent_ids("BTCUSDT") == list(range(1, big + 2001))
            assert fx.ledger.summary()["send_backlog_peak"] == big + 1000


async def test_malformed_frames_are_malformed_and_not_in_ledger() -> None:
    async def once() -> tuple[Received, int]:
        clock = FakeClock()
        faults = Faults(malformed=0.3)
        async with (
            FakeExchange(rate=1000, symbols=["ETHUSDT"], clock=clock, faults=faults, seed=9) as fx,
            client(combined(fx, "ETHUSDT")) as ws,
        ):
            await fx.wait_ready(1)
            clock.advance(1.0)
            got = Received()
            await read_until(ws, got, lambda: got.frames >= 1000)
            assert got.ids("ETHUSDT") == fx.ledger.sent_ids("ETHUSDT")
            assert len(got.malformed) == fx.ledger.malformed_sent
            return got, fx.ledger.total

    got, total = await once()
    assert len(got.trades) == total and 200 < len(got.malformed) < 400
    assert {exc.kind for exc in got.malformed} <= {"json", "missing-field", "type", "not-object"}
    again, _ = await once()
    assert again.ids("ETHUSDT") == got.ids("ETHUSDT")  # deterministic from the seed


async def test_live_subscribe_ack_list_and_unsubscribe() -> None:
    clock = FakeClock()
    proto = BinanceProtocol()
    async with (
        FakeExchange(rate=100, symbols=["BTCUSDT"], clock=clock) as fx,
        client(f"{fx.url}/ws") as ws,
    ):
        (request,) = proto.subscribe_messages(["BTCUSDT", "NOPEUSDT"])
        await ws.send(request)
        assert proto.parse(await asyncio.wait_for(ws.recv(), WAIT), 0) == Ack("id=1")
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":2}')
        listed = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert listed == {"result": ["btcusdt@trade", "nopeusdt@trade"], "id": 2}
        clock.advance(1.0)
        got = Received()
        await read_until(ws, got, lambda: len(got.trades) >= 100)
        assert {t.raw_symbol for t in got.trades} == {"BTCUSDT"}  # unknown symbol: silent
        await ws.send('{"method":"UNSUBSCRIBE","params":["btcusdt@trade"],"id":3}')
        await read_until(ws, got, lambda: Ack("id=3") in got.controls)
        clock.advance(1.0)
        await ws.send("garbage")
        error = proto.parse(await asyncio.wait_for(ws.recv(), WAIT), 0)
        assert isinstance(error, ExchangeError)  # answered, connection still open
        assert fx.ledger.sent_ids("BTCUSDT") == got.ids("BTCUSDT")


@pytest.mark.parametrize("live", [True, False])
async def test_reject_unknown_fault(live: bool) -> None:
    proto = BinanceProtocol()
    async with FakeExchange(
        rate=10, symbols=["BTCUSDT"], clock=FakeClock(), faults=Faults(reject_unknown=True)
    ) as fx:
        url = f"{fx.url}/ws" if live else combined(fx, "NOPEUSDT")
        async with client(url) as ws:
            if live:
                await ws.send(proto.subscribe_messages(["NOPEUSDT"])[0])
            event = proto.parse(await asyncio.wait_for(ws.recv(), WAIT), 0)
            assert event == ExchangeError("binance error 2: Invalid symbol", fatal=True)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), WAIT)
            assert ws.close_code == 1008


async def test_shutdown_notice_fault() -> None:
    clock = FakeClock()
    faults = Faults(shutdown_notice_every=3)
    async with (
        FakeExchange(rate=10, symbols=["BTCUSDT"], clock=clock, faults=faults) as fx,
        client(combined(fx, "BTCUSDT")) as ws,
    ):
        await fx.wait_ready(1)
        clock.advance(3.0)
        got = Received()
        await read_until(ws, got, lambda: ReconnectNotice("serverShutdown") in got.controls)


async def test_unknown_path_is_404() -> None:
    async with FakeExchange(rate=10, symbols=["BTCUSDT"], clock=FakeClock()) as fx:
        with pytest.raises(InvalidStatus) as info:
            async with client(f"{fx.url}/nope"):
                pass
        assert info.value.response.status_code == 404


async def test_blast_mode_delivers_n_trades() -> None:
    n = 20_000
    async with (
        FakeExchange(rate=None, symbols=["BTCUSDT", "ETHUSDT"], max_trades=n) as fx,
        connect(combined(fx, "BTCUSDT", "ETHUSDT"), max_queue=64) as ws,
    ):
        got = Received()
        await read_until(ws, got, lambda: len(got.trades) >= n)
        assert got.ids("BTCUSDT") == list(range(1, n // 2 + 1))
        assert got.ids("ETHUSDT") == list(range(1, n // 2 + 1))
        assert fx.ledger.total == n and fx.market.exhausted


async def test_cli_bad_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert await run(parser.parse_args(["--rate", "fast"])) == 2
    assert capsys.readouterr().err.startswith("--rate: ")
    assert await run(parser.parse_args(["--faults", "explode=1"])) == 2


async def test_cli_process_listening_line_sigterm_and_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    command = ["-m", "connectors.fake.cli", "--rate", "2000", "--symbols", "BTCUSDT,ETHUSDT"]
    async with listening_process(*command, "--seed", "5", "--ledger", str(ledger)) as (
        proc,
        listening,
    ):
        assert listening == {
            "event": "listening",
            "protocol": "binance",
            "url": f"ws://127.0.0.1:{listening['port']}",
            "port": listening["port"],
        }
        got = Received()
        url = BinanceProtocol().connection_url(listening["url"], ["BTCUSDT"])
        async with client(url) as ws:
            await read_until(ws, got, lambda: len(got.trades) >= 100)
        rest = await sigterm_exits_0(proc)
    stopped = orjson.loads(rest.splitlines()[-1])
    lines = [orjson.loads(line) for line in ledger.read_bytes().splitlines()]
    assert stopped["event"] == "stopped" and stopped["trades"] == len(lines) >= 100
    assert [x["trade_id"] for x in lines[:100]] == [t.trade_id for t in got.trades[:100]]
    assert [x["price"] for x in lines[:100]] == [t.price for t in got.trades[:100]]


async def test_what_its_send_buffer_held_when_it_aborts_is_undelivered_not_sent() -> None:
    """The client stops reading with more trades on their way than the socket's buffers hold;
    the fake exchange then stops: its close frame waits behind the unread trades, its close
    timeout passes and websockets aborts the connection, discarding what the server's own
    buffer held. Those trades are undelivered, never sent: the client, reading what the kernel
    still delivers, gets exactly the ledger's trades, and every trade made is sent or
    undelivered."""
    clock = FakeClock()
    fx = FakeExchange(rate=1000, symbols=["BTCUSDT"], clock=clock)
    got = Received()
    async with fx:
        sock = await small_receive_buffer_socket(fx)
        ws = await connect(combined(fx, "BTCUSDT"), sock=sock, max_queue=4, ping_interval=None)
        await fx.wait_ready(1)
        await read_trades(ws, got, 0)
        clock.advance(0.5)
        await read_trades(ws, got, 500)
        frame_bytes = 4 + min(len(encode_trade(t, combined=True)) for t in got.trades)
        big = frames_beyond_the_buffers(sock, frame_bytes)
        if big > Market.MAX_BATCH:  # one tick's batch is at most this
            pytest.skip(f"this host's socket buffers take {big} trades' frames")
        clock.advance(big / 1000)  # more than the buffers hold: the send waits for the client
        await fx.wait_tick()
    try:
        await read_until_closed(ws, got)  # what the kernel had taken still arrives
    finally:
        await ws.close()
    ledger, market = fx.ledger, fx.market
    assert market is not None
    assert ledger.undelivered > 0, "the server's buffer held nothing when it aborted"
    assert got.ids("BTCUSDT") == ledger.sent_ids("BTCUSDT")
    assert ledger.total + ledger.undelivered == market.produced


def test_the_fake_serves_and_counts_on_uvloop_as_in_feedvault_demo() -> None:
    """`feedvault demo` runs the fake in-process on uvloop, whose transports' methods cannot
    be replaced: the fake still serves, and its ledger still equals what was received."""
    pytest.importorskip("uvloop")
    from engine import aio

    async def main() -> tuple[list[int], list[int]]:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        clock = FakeClock()
        async with (
            FakeExchange(rate=100, symbols=["BTCUSDT"], clock=clock) as fx,
            client(combined(fx, "BTCUSDT")) as ws,
        ):
            await fx.wait_ready(1)
            got = Received()
            clock.advance(1.0)
            await read_trades(ws, got, 100)
            return got.ids("BTCUSDT"), fx.ledger.sent_ids("BTCUSDT")

    received, sent = aio.run(main())  # on uvloop, as the demo runs
    assert received == list(range(1, 101)) == sent


def test_the_fake_aborts_a_connection_on_uvloop_without_an_error() -> None:
    """An abort of a connection on uvloop (a stuck close at the fake's exit, or websockets
    giving up a close) goes through the counting wrapper to the transport's own abort(): no
    TypeError from uvloop's _force_close, and the bytes it still held are counted."""
    pytest.importorskip("uvloop")
    from engine import aio

    async def main() -> tuple[list[int | None], bool]:
        clock = FakeClock()
        async with (
            FakeExchange(rate=100, symbols=["BTCUSDT"], clock=clock) as fx,
            client(combined(fx, "BTCUSDT")) as ws,
        ):
            await fx.wait_ready(1)
            clock.advance(1.0)
            await read_trades(ws, Received(), 100)
            conns = list(fx._conns.values())
            fx._abort_connections()  # what the fake's exit does with a stuck close
            async with asyncio.timeout(10):
                await ws.wait_closed()
            return [conn.ws.unsent_at_end for conn in conns], ws.state.name == "CLOSED"

    unsent, closed = aio.run(main())
    assert closed and unsent == [0]
