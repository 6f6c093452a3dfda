"""The transport seam on websockets' asyncio client (``WS_TRANSPORT=websockets``).

See docs/architecture.md. The contract is :mod:`connectors.transport`'s; this module maps it
onto :func:`websockets.asyncio.client.connect`:

- ``max_size`` is the frame limit; websockets fails the connection with 1009 when it reads an
  oversized frame's header (``ConnectionClosed`` with ``sent.code == 1009``, sent first), mapped
  to :class:`~engine.errors.FrameTooLarge`;
- its keepalive is off (``ping_interval=None``); websockets answers the server's pings itself as
  it reads the socket (which stops while its receive buffer, ``max_queue`` frames, is full);
- a batch is the frames already in websockets' receive buffer (its assembler's queue: read
  without a suspension point, so the batch is cancel-safe);
- the close handshake is websockets' own, its ``close_timeout`` set to the deadline given;
- ``rcvbuf`` is set on the socket once it is connected (websockets opens the socket itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from connectors.transport import MESSAGE_TOO_BIG, NORMAL_CLOSURE, ConnectOptions, ended
from engine.errors import ConnectFailed, ConnectionEnded, FrameTooLarge

MAX_QUEUE: Final = 1024
"""Frames websockets buffers before it stops reading the socket (the session's bound)."""
FAIL_CLOSE_TIMEOUT: Final = 5.0
"""How long a connection websockets fails itself (an oversized frame) waits for the peer's
close frame."""


class WebsocketsTransport:
    """:class:`~connectors.transport.Transport` on websockets."""

    name = "websockets"

    async def connect(self, url: str, options: ConnectOptions) -> WebsocketsConnection:
        """See :meth:`connectors.transport.Transport.connect`."""
        try:
            ws = await connect(
                url,
                additional_headers=dict(options.headers) or None,
                open_timeout=options.open_timeout,
                close_timeout=FAIL_CLOSE_TIMEOUT,
                max_size=options.max_frame_bytes,
                max_queue=MAX_QUEUE,
                compression=None,
                ping_interval=None,
                ping_timeout=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        if options.rcvbuf is not None:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.rcvbuf)
        return WebsocketsConnection(url, ws, options.max_frame_bytes)


class WebsocketsConnection:
    """:class:`~connectors.transport.Connection` on a websockets ``ClientConnection``."""

    def __init__(self, url: str, ws: ClientConnection, max_frame_bytes: int) -> None:
        self._url = url
        self._ws = ws
        self._limit = max_frame_bytes
        self._too_large = False  # this side failed the connection for an oversized frame
        # The assembler's queue of buffered data frames (websockets' receive buffer).
        self._buffered = ws.recv_messages.frames.queue

    @property
    def url(self) -> str:
        """See :attr:`connectors.transport.Connection.url`."""
        return self._url

    def _ended(self, exc: ConnectionClosed) -> ConnectionEnded:
        """The seam's error for websockets' ``exc``."""
        sent, rcvd = exc.sent, exc.rcvd
        if sent is not None and sent.code == MESSAGE_TOO_BIG and not exc.rcvd_then_sent:
            self._too_large = True
            return FrameTooLarge(self._limit, clean=rcvd is not None)
        if rcvd is None:
            return ended(None, "", clean=False)
        return ended(rcvd.code, rcvd.reason, clean=True)

    async def receive(self) -> list[bytes]:
        """See :meth:`connectors.transport.Connection.receive`."""
        recv = self._ws.recv
        try:
            frames = [await recv(decode=False)]
            buffered = self._buffered
            # Complete frames already buffered: recv() returns them without suspending.
            while buffered and buffered[0].fin:
                frames.append(await recv(decode=False))
        except ConnectionClosed as exc:
            raise self._ended(exc) from exc
        return frames  # decode=False: bytes

    async def send(self, text: str) -> None:
        """See :meth:`connectors.transport.Connection.send`."""
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise self._ended(exc) from exc

    async def ping(self) -> asyncio.Future[float]:
        """See :meth:`connectors.transport.Connection.ping`."""
        try:
            waiter = asyncio.ensure_future(await self._ws.ping())
        except ConnectionClosed as exc:
            raise self._ended(exc) from exc
        result: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        def settle(done: asyncio.Future[float]) -> None:
            if result.done():
                return
            if done.cancelled():
                result.cancel()
                return
            error = done.exception()
            if error is None:
                result.set_result(done.result())
                return
            mapped: BaseException = error
            if isinstance(error, ConnectionClosed):
                mapped = self._ended(error)
                mapped.__cause__ = error
            result.set_exception(mapped)
            result.exception()  # retrieved: a waiter nobody awaits is not an error

        waiter.add_done_callback(settle)
        return result

    async def close(
        self,
        code: int = NORMAL_CLOSURE,
        reason: str = "",
        *,
        drain_seconds: float,
        discard: bool = False,
    ) -> bool:
        """See :meth:`connectors.transport.Connection.close`."""
        ws = self._ws
        ws.close_timeout = max(0.0, drain_seconds)
        drain = None
        if discard:
            # Nobody reads: read (and discard) here, so a full buffer cannot hide the close.
            drain = asyncio.ensure_future(self._discard())
        try:
            await ws.close(code, reason)
        finally:
            if drain is not None:
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
        return self.close_received

    async def _discard(self) -> None:
        """Read frames until the connection ends (close() without a concurrent receive)."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self._ws.recv(decode=False)

    def abort(self) -> None:
        """See :meth:`connectors.transport.Connection.abort`."""
        self._ws.transport.abort()

    @property
    def close_code(self) -> int | None:
        """See :attr:`connectors.transport.Connection.close_code`."""
        if self._too_large:
            return MESSAGE_TOO_BIG
        return self._ws.close_code

    @property
    def close_reason(self) -> str:
        """See :attr:`connectors.transport.Connection.close_reason`."""
        return self._ws.close_reason or ""

    @property
    def close_received(self) -> bool:
        """See :attr:`connectors.transport.Connection.close_received`."""
        return self._ws.protocol.close_rcvd is not None

    def write_buffer_size(self) -> int:
        """See :meth:`connectors.transport.Connection.write_buffer_size`."""
        return self._ws.transport.get_write_buffer_size()

    def receive_buffer_bytes(self) -> int | None:
        """See :meth:`connectors.transport.Connection.receive_buffer_bytes`."""
        sock = self._ws.transport.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return None
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
