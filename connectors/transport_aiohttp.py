"""The transport seam on aiohttp's WebSocket client (``WS_TRANSPORT=aiohttp``, the default).

See docs/architecture.md. The contract is :mod:`connectors.transport`'s; this module maps it
onto :meth:`aiohttp.ClientSession.ws_connect` (one ``ClientSession`` and ``TCPConnector`` per
connection, closed with it):

- ``max_msg_size`` is the frame limit, ``compress=0``, ``heartbeat=None`` (the session pings
  itself), ``decode_text=False`` (text frames arrive as bytes), TLS with aiohttp's default SSL
  context (``ssl=True``: certificates always verified);
- frames are read straight from aiohttp's reader queue (the parsed messages waiting behind the
  socket), not through ``ClientWebSocketResponse.receive()``: one wait, then every message
  already queued, in one batch. ``receive()`` swallows pongs when ``autoping`` is on (so no
  pong waiter could see them) and its ``close()`` discards the data frames that arrive before
  the peer's close frame (a graceful stop must keep them). This module therefore answers the
  server's pings itself, as ``autoping`` would, when receive() reads them (websockets answers
  them as it reads the socket), resolves pong waiters, and does the close handshake itself;
- a frame over the limit: aiohttp's parser raises ``WebSocketError`` 1009 after queueing every
  frame before it; the close frame 1009 is sent and the socket closed (the parser cannot go on
  past the frame), mapped to :class:`~engine.errors.FrameTooLarge`;
- ``rcvbuf`` is set on the socket before it connects (the connector's ``socket_factory``).

The reader queue, the writer's transport and the handshake's response are aiohttp internals
(``_reader``, ``_writer``, ``_response``): read in :func:`_internals` only, checked when the
connection opens; the conformance suite (tests/test_transport_conformance.py) pins their
behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import aiohttp
from aiohttp import WSMsgType

from connectors.transport import (
    ABNORMAL_CLOSURE,
    MESSAGE_TOO_BIG,
    NORMAL_CLOSURE,
    ConnectOptions,
    ended,
)
from engine.errors import ConnectFailed, ConnectionEnded, FrameTooLarge

FAIL_CLOSE_TIMEOUT: Final = 5.0
"""aiohttp's own ``ws_close`` timeout (unused by this module's close, which has its deadline)."""

_TEXT: Final = WSMsgType.TEXT
_BINARY: Final = WSMsgType.BINARY
NO_STATUS: Final = 1005
"""The code of a close frame that carries none (RFC 6455 §7.1.5)."""


def _socket_factory(rcvbuf: int | None) -> Callable[[tuple[Any, ...]], socket.socket]:
    """A connector's ``socket_factory``: a socket with ``SO_RCVBUF`` set before it connects."""

    def make(addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family=family, type=type_, proto=proto)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        return sock

    return make


def _internals(
    ws: aiohttp.ClientWebSocketResponse[Any],
) -> tuple[Any, asyncio.Transport, aiohttp.ClientResponse]:
    """aiohttp's reader queue, the connection's transport and the handshake's response (whose
    ``close()`` releases the connection to the connector: see the module docstring)."""
    reader = getattr(ws, "_reader", None)
    writer = getattr(ws, "_writer", None)
    transport = getattr(writer, "transport", None)
    response = getattr(ws, "_response", None)
    if (
        reader is None
        or not hasattr(reader, "_buffer")
        or transport is None
        or not isinstance(response, aiohttp.ClientResponse)
    ):
        raise RuntimeError(f"aiohttp {aiohttp.__version__}: its WebSocket internals changed")
    return reader, transport, response


def _describe(exc: BaseException) -> str:
    """``Type: message`` of the error that failed a connection attempt. aiohttp wraps the
    operating system's error (a refused connection, a failed certificate) in its own
    ``ClientConnectorError``; the log and the manifest name the underlying one, as they do on
    the websockets transport (``ConnectionRefusedError: [Errno 111] ...``)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        exc = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    return f"{type(exc).__name__}: {exc}"


class AiohttpTransport:
    """:class:`~connectors.transport.Transport` on aiohttp."""

    name = "aiohttp"

    async def connect(self, url: str, options: ConnectOptions) -> AiohttpConnection:
        """See :meth:`connectors.transport.Transport.connect`."""
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, socket_factory=_socket_factory(options.rcvbuf)),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        try:
            async with asyncio.timeout(options.open_timeout):
                ws = await http.ws_connect(
                    url,
                    headers=dict(options.headers) or None,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=FAIL_CLOSE_TIMEOUT),
                    autoclose=False,
                    autoping=False,
                    heartbeat=None,
                    max_msg_size=options.max_frame_bytes,
                    compress=0,
                    decode_text=False,
                    ssl=True,
                )
            reader, transport, response = _internals(ws)
        except BaseException as exc:
            await asyncio.shield(http.close())
            if isinstance(exc, (aiohttp.ClientError, OSError, TimeoutError, ValueError)):
                raise ConnectFailed(_describe(exc)) from exc
            raise
        return AiohttpConnection(
            url, http, ws, (reader, transport, response), options.max_frame_bytes
        )


class AiohttpConnection:
    """:class:`~connectors.transport.Connection` on an aiohttp WebSocket response."""

    def __init__(
        self,
        url: str,
        http: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse[Any],
        internals: tuple[Any, asyncio.Transport, aiohttp.ClientResponse],
        max_frame_bytes: int,
    ) -> None:
        reader, transport, response = internals
        self._url = url
        self._http = http
        self._ws = ws
        self._response = response
        self._reader = reader
        self._buffer: deque[Any] = reader._buffer
        self._transport = transport
        self._limit = max_frame_bytes
        self._close_sent = False
        self._ended: ConnectionEnded | None = None
        self._end = asyncio.Event()  # set once the connection has ended (any way)
        self._pings: dict[bytes, tuple[float, asyncio.Future[float]]] = {}
        self._ping_count = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._code: int | None = None
        self._reason = ""
        self._close_received = False

    @property
    def url(self) -> str:
        """See :attr:`connectors.transport.Connection.url`."""
        return self._url

    async def receive(self) -> list[bytes]:
        """See :meth:`connectors.transport.Connection.receive`."""
        frames: list[bytes] = []
        buffer = self._buffer
        read = self._reader.read
        while True:
            if self._ended is not None:
                if frames:
                    return frames
                raise self._ended
            if frames and not buffer:
                return frames
            try:
                # Without a suspension point while frames are in hand (the buffer is not
                # empty): cancel-safe.
                msg = await read()
            except aiohttp.WebSocketError as exc:
                self._fail(exc)
                continue
            except (aiohttp.EofStream, aiohttp.ClientError, OSError) as exc:
                self._finish(None, "", clean=False, cause=exc, drop=True)
                continue
            kind, data, _ = msg  # a 3-tuple (NamedTuple): unpacked faster than its properties
            if kind is _TEXT or kind is _BINARY:
                frames.append(data)
            elif kind is WSMsgType.PING:
                self._control(msg.data, WSMsgType.PONG)
            elif kind is WSMsgType.PONG:
                self._pong(msg.data)
            elif kind is WSMsgType.CLOSE:
                self._close_received = True
                code = msg.data or NO_STATUS  # aiohttp reports a close frame without one as 0
                if not self._close_sent:  # the peer closes: answer with its code
                    self._close_sent = True
                    self._control(struct.pack("!H", code) if msg.data else b"", WSMsgType.CLOSE)
                self._finish(code, msg.extra or "", clean=True)

    def _control(self, payload: bytes, opcode: WSMsgType) -> None:
        """Send a control frame (a pong, a close) without suspending the reader."""

        async def send() -> None:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await self._ws.send_frame(payload, opcode)

        task = asyncio.ensure_future(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail(self, exc: aiohttp.WebSocketError) -> None:
        """aiohttp's parser refused a frame: fail the connection with its code."""
        code = exc.code
        if not self._close_sent:
            self._close_sent = True
            self._control(struct.pack("!H", code), WSMsgType.CLOSE)
        if code == MESSAGE_TOO_BIG:
            error: ConnectionEnded = FrameTooLarge(self._limit)
            error.__cause__ = exc
            self._finish(code, "", clean=False, error=error)
        else:
            self._finish(None, "", clean=False, cause=exc)

    def _finish(
        self,
        code: int | None,
        reason: str,
        *,
        clean: bool,
        cause: BaseException | None = None,
        error: ConnectionEnded | None = None,
        drop: bool = False,
    ) -> None:
        """The connection ended: record how, release the waiters and the socket: aborted
        at once when ``drop``, else closed once the control frames queued are written."""
        if self._ended is not None:
            return
        if error is None:
            error = ended(code, reason, clean=clean)
            error.__cause__ = cause
        self._ended = error
        self._code = ABNORMAL_CLOSURE if code is None else code
        self._reason = reason
        for _, waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # retrieved: a waiter nobody awaits is not an error
        self._pings.clear()
        if drop:
            self._transport.abort()
        self._end.set()
        task = asyncio.ensure_future(self._release())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release(self) -> None:
        """Close the per-connection ``ClientSession`` once the control frames are out."""
        pending = [t for t in self._tasks if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending)
        # After the close frame: closes the socket (no-op once aborted) and releases aiohttp's
        # connection object, then the per-connection ClientSession.
        self._response.close()
        await self._http.close()

    def _pong(self, payload: bytes) -> None:
        """A pong answers its ping and every ping sent before it."""
        if payload not in self._pings:
            return
        now = asyncio.get_running_loop().time()
        for key in list(self._pings):
            sent, waiter = self._pings.pop(key)
            if not waiter.done():
                waiter.set_result(now - sent)
            if key == payload:
                break

    async def send(self, text: str) -> None:
        """See :meth:`connectors.transport.Connection.send`."""
        self._check_open()
        try:
            await self._ws.send_frame(text.encode(), WSMsgType.TEXT)
        except (aiohttp.ClientError, OSError) as exc:
            raise ended(self._code, self._reason, clean=self._close_received) from exc

    def _check_open(self) -> None:
        if self._ended is not None:
            raise self._ended
        if self._close_sent:
            raise ended(self._code, self._reason, clean=self._close_received)

    async def ping(self) -> asyncio.Future[float]:
        """See :meth:`connectors.transport.Connection.ping`."""
        self._check_open()
        self._ping_count += 1
        payload = struct.pack("!I", self._ping_count)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[float] = loop.create_future()
        self._pings[payload] = (loop.time(), waiter)
        try:
            await self._ws.send_frame(payload, WSMsgType.PING)
        except (aiohttp.ClientError, OSError) as exc:
            del self._pings[payload]
            raise ended(self._code, self._reason, clean=self._close_received) from exc
        return waiter

    async def close(
        self,
        code: int = NORMAL_CLOSURE,
        reason: str = "",
        *,
        drain_seconds: float,
        discard: bool = False,
    ) -> bool:
        """See :meth:`connectors.transport.Connection.close`."""
        deadline = asyncio.get_running_loop().time() + max(0.0, drain_seconds)
        drain = None
        try:
            # Everything within the deadline: the close frame (its write may wait for room),
            # the peer's close frame, and the socket's close (its buffer flushed).
            async with asyncio.timeout_at(deadline):
                if self._ended is None and not self._close_sent:
                    self._close_sent = True
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        await self._ws.send_frame(
                            struct.pack("!H", code) + reason.encode(), WSMsgType.CLOSE
                        )
                if discard and self._ended is None:
                    drain = asyncio.ensure_future(self._discard())
                await self._end.wait()
                if self._tasks:
                    await asyncio.wait(set(self._tasks))
        except TimeoutError:
            self._finish(None, "", clean=False, drop=True)
            self._transport.abort()  # also when the peer's close frame came but not the rest
        finally:
            if drain is not None:
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
        if self._tasks:  # after an abort: settles at once
            await asyncio.wait(set(self._tasks))
        return self._close_received

    async def _discard(self) -> None:
        """Read frames until the connection ends (close() without a concurrent receive)."""
        with contextlib.suppress(ConnectionEnded):
            while True:
                await self.receive()

    def abort(self) -> None:
        """See :meth:`connectors.transport.Connection.abort`."""
        self._finish(None, "", clean=False, drop=True)

    @property
    def close_code(self) -> int | None:
        """See :attr:`connectors.transport.Connection.close_code`."""
        return self._code

    @property
    def close_reason(self) -> str:
        """See :attr:`connectors.transport.Connection.close_reason`."""
        return self._reason

    @property
    def close_received(self) -> bool:
        """See :attr:`connectors.transport.Connection.close_received`."""
        return self._close_received

    def write_buffer_size(self) -> int:
        """See :meth:`connectors.transport.Connection.write_buffer_size`."""
        return self._transport.get_write_buffer_size()

    def receive_buffer_bytes(self) -> int | None:
        """See :meth:`connectors.transport.Connection.receive_buffer_bytes`."""
        sock = self._transport.get_extra_info("socket")
        if sock is None or self._ended is not None:
            return None
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
