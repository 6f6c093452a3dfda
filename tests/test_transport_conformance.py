"""The transport seam's contract (:mod:`connectors.transport`) on both transports.

Every test runs on aiohttp and on websockets, against real servers on loopback: the fake
exchange, a self-signed TLS server, small websockets servers, and a bare server that completes
the handshake and then never answers (a peer that never sends its close frame). No sleeps:
every wait ends on a real event, bounded by ``WAIT``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from connectors.binance import BinanceProtocol
from connectors.bybit import BybitProtocol
from connectors.fake.faults import Faults
from connectors.fake.server import FakeExchange
from connectors.transport import Connection, ConnectOptions, Transport
from connectors.transports import DEFAULT_TRANSPORT, TRANSPORTS, get_transport
from engine.clock import FakeClock
from engine.errors import (
    ConnectError,
    ConnectFailed,
    ConnectionEnded,
    FrameTooLarge,
    MalformedFrame,
    TransportError,
)
from engine.records import Trade
from tests.test_session_tls import self_signed, tls_server
from tests.wsclient import WAIT, trade_view

ONE_MIB = 1 << 20

pytestmark = pytest.mark.parametrize("name", sorted(TRANSPORTS))


async def open_(name: str, url: str, *, rcvbuf: int | None = None) -> Connection:
    """A connection by transport ``name`` (1 MiB frame limit)."""
    transport: Transport = get_transport(name)
    return await transport.connect(url, ConnectOptions(WAIT, ONE_MIB, rcvbuf=rcvbuf))


async def receive_all(conn: Connection, into: list[bytes]) -> ConnectionEnded:
    """Receive until the connection ends (at most ``WAIT`` s); the error that ended it."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                into += await conn.receive()
            except ConnectionEnded as exc:
                return exc


@asynccontextmanager
async def server(handler: Callable[[ServerConnection], Awaitable[None]]) -> AsyncIterator[str]:
    """A websockets server on loopback running ``handler``; its ``ws://`` URL."""
    async with serve(handler, "127.0.0.1", 0, compression=None) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


@asynccontextmanager
async def bare_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A TCP server on loopback running ``handle``; its port. On exit its connections are
    closed too (and waited for, at most ``WAIT`` s)."""
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await handle(reader, writer)

    srv = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        async with srv:
            yield srv.sockets[0].getsockname()[1]
    finally:
        async with asyncio.timeout(WAIT):
            for writer in writers:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()


@asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A bare server: completes the WebSocket handshake, then reads and never answers (so a
    client's close frame is never answered)."""
    guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + guid).digest())  # RFC 6455
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    async with bare_server(handle) as port:
        yield f"ws://127.0.0.1:{port}/"


async def hold(ws: ServerConnection) -> None:
    """A peer that keeps the connection open until the client closes it."""
    await ws.wait_closed()


def test_the_names_map_to_transports(name: str) -> None:
    assert get_transport(name).name == name
    assert get_transport(f" {name.upper()} ").name == name
    assert get_transport().name == DEFAULT_TRANSPORT == "aiohttp"
    with pytest.raises(KeyError, match="aiohttp, websockets"):
        get_transport("picows")
    assert issubclass(FrameTooLarge, ConnectionEnded)
    assert issubclass(ConnectionEnded, TransportError) and issubclass(ConnectFailed, ConnectError)


async def test_subscribe_and_receive_the_ledger(name: str) -> None:
    proto, symbols, n = BybitProtocol(), ["BTCUSDT", "ETHUSDT"], 3000
    async with FakeExchange("bybit", rate=None, symbols=symbols, max_trades=n) as fx:
        conn = await open_(name, proto.connection_url(fx.url, symbols), rcvbuf=1 << 18)
        assert (conn.receive_buffer_bytes() or 0) >= 1 << 18  # Linux reports it doubled
        for message in proto.subscribe_messages(symbols):
            await conn.send(message)
        trades: list[Trade] = []
        batches = frames = 0
        async with asyncio.timeout(WAIT):
            while len(trades) < n:
                batch = await conn.receive()
                assert batch and all(isinstance(frame, bytes) for frame in batch)
                batches, frames = batches + 1, frames + len(batch)
                for frame in batch:
                    result = proto.parse(frame, 0)
                    if isinstance(result, (tuple, list)):
                        trades += result
        assert batches < frames  # the frames already buffered came in batches
        assert trade_view(trades) == trade_view(list(fx.ledger.trades()))
        assert conn.write_buffer_size() == 0
        assert await conn.close(drain_seconds=WAIT, discard=True)


async def test_server_pings_are_answered(name: str) -> None:
    async def pinger(ws: ServerConnection) -> None:
        latency = await asyncio.wait_for(await ws.ping(b"from-server"), WAIT)
        await ws.send(f"pong after {latency:.6f}")
        await ws.wait_closed()

    async with server(pinger) as url:
        conn = await open_(name, url)
        async with asyncio.timeout(WAIT):
            frames = await conn.receive()
        assert frames[0].startswith(b"pong after ")
        assert await conn.close(drain_seconds=WAIT, discard=True)


async def test_client_ping_gets_its_pong_while_receiving(name: str) -> None:
    async with server(hold) as url:
        conn = await open_(name, url)
        frames: list[bytes] = []
        reader = asyncio.create_task(receive_all(conn, frames))
        first, second = await conn.ping(), await conn.ping()
        async with asyncio.timeout(WAIT):
            assert await first >= 0.0 and await second >= 0.0
        assert await conn.close(drain_seconds=WAIT)
        end = await reader
        assert end.clean and end.code == 1000 and frames == []
        with pytest.raises(ConnectionEnded):
            await conn.ping()
        with pytest.raises(ConnectionEnded):
            await conn.send("late")


async def test_a_frame_over_the_limit_is_1009_after_the_frames_before_it(name: str) -> None:
    clock, proto = FakeClock(), BinanceProtocol()
    faults = Faults(oversized=0.01)
    async with FakeExchange(
        rate=1000, symbols=["BTCUSDT"], clock=clock, faults=faults, seed=2
    ) as fx:
        conn = await open_(name, proto.connection_url(fx.url, ["BTCUSDT"]))
        await fx.wait_ready(1)
        clock.advance(1.0)  # 1000 trades; about 10 of them drew the fault
        frames: list[bytes] = []
        end = await receive_all(conn, frames)
        assert isinstance(end, FrameTooLarge)
        assert (end.code, end.limit) == (1009, ONE_MIB)
        assert conn.close_code == 1009
        trades: list[Trade] = []
        for frame in frames:
            with contextlib.suppress(MalformedFrame):
                result = proto.parse(frame, 0)
                if isinstance(result, (tuple, list)):
                    trades += result
        assert trades and trade_view(trades) == trade_view(list(fx.ledger.trades()))
        assert fx.ledger.oversized_sent == 1
        await conn.close(drain_seconds=WAIT)  # only reports, once ended


async def test_a_failing_certificate_is_a_failed_connection(name: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    reached: list[str] = []
    async with tls_server(cert, key, reached) as port:
        with pytest.raises(ConnectFailed, match=r"(?i)certificate"):
            await open_(name, f"wss://127.0.0.1:{port}/")
    assert reached == []


async def test_a_refused_connection_is_a_failed_connection(name: str) -> None:
    async with silent_server() as url:
        pass  # closed: its port now refuses
    with pytest.raises(ConnectFailed):
        await open_(name, url)


async def test_close_drains_the_frames_before_the_peers_close_frame(name: str) -> None:
    sent = [f"frame {i}".encode() for i in range(200)]
    peer_got_close = asyncio.Event()

    async def burst(ws: ServerConnection) -> None:
        for frame in sent:
            await ws.send(frame.decode())
        await ws.wait_closed()
        peer_got_close.set()

    async with server(burst) as url:
        conn = await open_(name, url)
        frames: list[bytes] = []
        async with asyncio.timeout(WAIT):
            frames += await conn.receive()  # the burst has begun
        reader = asyncio.create_task(receive_all(conn, frames))
        assert await conn.close(drain_seconds=WAIT) is True
        end = await reader
        assert frames == sent
        assert (end.clean, end.code, conn.close_code, conn.close_received) == (
            True,
            1000,
            1000,
            True,
        )
        async with asyncio.timeout(WAIT):
            await peer_got_close.wait()


async def test_close_without_the_peers_answer_is_bounded_and_not_clean(name: str) -> None:
    async with silent_server() as url:
        conn = await open_(name, url)
        frames: list[bytes] = []
        reader = asyncio.create_task(receive_all(conn, frames))
        async with asyncio.timeout(WAIT):
            assert await conn.close(drain_seconds=0.2) is False
        end = await reader
        assert (end.clean, end.code, conn.close_code, conn.close_received) == (
            False,
            1006,
            1006,
            False,
        )


async def test_close_without_a_reader_reads_to_the_close_frame(name: str) -> None:
    async with server(hold) as url:
        conn = await open_(name, url)
        async with asyncio.timeout(WAIT):
            assert await conn.close(4000, "done", drain_seconds=WAIT, discard=True) is True
        assert conn.close_code == 4000  # the peer echoes the code
        async with asyncio.timeout(WAIT):
            assert await conn.close(drain_seconds=WAIT) is True  # again: only reports


async def test_abort_ends_the_connection_at_once(name: str) -> None:
    async with silent_server() as url:
        conn = await open_(name, url)
        frames: list[bytes] = []
        reader = asyncio.create_task(receive_all(conn, frames))
        conn.abort()
        end = await reader
        assert (end.clean, end.code) == (False, 1006)
        assert conn.receive_buffer_bytes() is None


async def test_a_peer_that_closes_with_a_code_reports_it(name: str) -> None:
    async def going(ws: ServerConnection) -> None:
        await ws.send("last words")
        await ws.close(4001, "maintenance")

    async with server(going) as url:
        conn = await open_(name, url)
        frames: list[bytes] = []
        end = await receive_all(conn, frames)
        assert frames == [b"last words"]
        assert (end.code, end.reason, end.clean) == (4001, "maintenance", True)
        assert (conn.close_code, conn.close_reason, conn.close_received) == (
            4001,
            "maintenance",
            True,
        )


async def test_headers_reach_the_handshake(name: str) -> None:
    seen: list[str | None] = []

    async def record(ws: ServerConnection) -> None:
        seen.append(ws.request.headers.get("X-Feedvault-Test") if ws.request else None)
        await ws.close()

    async with server(record) as url:
        transport = get_transport(name)
        conn = await transport.connect(
            url, ConnectOptions(WAIT, ONE_MIB, headers={"X-Feedvault-Test": "yes"})
        )
        await receive_all(conn, [])
    assert seen == ["yes"]


async def test_an_unanswered_handshake_fails_after_the_open_timeout(name: str) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    async with bare_server(mute) as port, asyncio.timeout(WAIT):
        with pytest.raises(ConnectFailed, match="TimeoutError"):
            await get_transport(name).connect(
                f"ws://127.0.0.1:{port}/", ConnectOptions(open_timeout=0.2, max_frame_bytes=ONE_MIB)
            )


async def test_a_cancelled_receive_loses_no_frame(name: str) -> None:
    async def on_request(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(f"reply to {message!s}")

    async with server(on_request) as url:
        conn = await open_(name, url)
        waiting = asyncio.create_task(conn.receive())
        await conn.send("one")  # a suspension: the receive may be waiting by now, or not
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            frames = await waiting  # it may have had the reply already
        if not waiting.cancelled():
            assert frames == [b"reply to one"]
        else:
            async with asyncio.timeout(WAIT):
                assert await conn.receive() == [b"reply to one"]
        await conn.send("two")
        async with asyncio.timeout(WAIT):
            assert await conn.receive() == [b"reply to two"]
        assert await conn.close(drain_seconds=WAIT, discard=True)


async def test_close_with_no_reader_and_no_discard_is_bounded(name: str) -> None:
    """The difference the contract names: without a receiving task (and without ``discard``)
    websockets still reads the peer's close frame (its own buffer has room), aiohttp never does
    (only receive() reads its queue): the deadline ends it, not clean."""
    async with server(hold) as url:
        conn = await open_(name, url)
        async with asyncio.timeout(WAIT):
            clean = await conn.close(drain_seconds=0.5)
        assert clean is (name == "websockets")
        assert conn.close_code == (1000 if clean else 1006)
