"""The WebSocket transport seam: what a session needs of a WebSocket client library.

See docs/architecture.md.

A :class:`Transport` opens :class:`Connection` objects. Two implementations exist, one per
library: :mod:`connectors.transport_aiohttp` (aiohttp's client) and
:mod:`connectors.transport_websockets` (websockets' asyncio client); :mod:`connectors.transports`
names them. Everything above the seam sees frames as bytes and one set of errors
(:class:`~engine.errors.TransportError` and its subclasses in :mod:`engine.errors`); no library
error crosses it (each is mapped with ``raise X from exc``).

What every connection does the same way, whichever library is underneath:

- opened with an open timeout, a frame-size limit (a larger frame fails the connection with
  1009: :class:`~engine.errors.FrameTooLarge`), no compression, and the library's own keepalive
  off (the session pings itself with :meth:`Connection.ping`, aware of backpressure); the
  server's pings are answered while frames are being received;
- certificates always verified for ``wss://`` (the default SSL context; nothing turns it off):
  a certificate that fails is :class:`~engine.errors.ConnectFailed`;
- frames are taken undecoded, as bytes (text frames too: the parser checks UTF-8 itself);
- the close handshake: :meth:`Connection.close` sends the close frame once, then waits until the
  peer's close frame has been read and the socket is closed, bounded by a deadline, and aborts
  the socket if the deadline passes. Frames that arrive before the peer's close frame are still
  returned by a :meth:`Connection.receive` the caller keeps running (the drain of a graceful
  stop), which then raises :class:`~engine.errors.ConnectionEnded`.

Cancel-safety (as websockets documents it for its own coroutines):

- :meth:`Transport.connect` is cancel-safe: a cancelled attempt leaves no socket open.
- :meth:`Connection.receive` is cancel-safe: it suspends only while it holds no frame, so a
  cancellation never loses one (the next call returns it).
- :meth:`Connection.send` and :meth:`Connection.ping` write the whole frame into the socket's
  buffer at once, then may wait for room in it (the peer's TCP backpressure); cancelling them is
  safe (the frame is in the buffer or not; nothing is half written).
- :meth:`Connection.close` is not cancel-safe: cancelled, the handshake may be half done; call
  :meth:`Connection.abort` then.

Where the libraries still differ (both within the contract; a caller must not depend on them):

- the server's pings: websockets answers them as it reads the socket (until its buffer of
  ``MAX_QUEUE`` frames is full), aiohttp only inside :meth:`Connection.receive`;
- the receive buffer's bound: websockets' is 1024 frames, aiohttp's 512 KiB of frames;
  past it, each stops reading the socket (the peer sees TCP backpressure);
- a frame over the limit: websockets waits for the peer's answer to its 1009 close frame
  (:class:`~engine.errors.FrameTooLarge` may then be clean), aiohttp closes the socket at once
  (never clean);
- a close with no task receiving and no ``discard``: websockets still reads the peer's close
  frame while its buffer has room, aiohttp never does (the deadline ends it);
- ``rcvbuf``: aiohttp sets it before the socket connects, websockets just after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from engine.errors import ConnectionEnded

ABNORMAL_CLOSURE: Final = 1006
"""The close code reported when no close frame was read (RFC 6455 §7.1.5)."""
MESSAGE_TOO_BIG: Final = 1009
"""The close code of a frame over the limit."""
NORMAL_CLOSURE: Final = 1000


class Connection(Protocol):
    """One open WebSocket connection.

    One task may call :meth:`receive` at a time; :meth:`send`, :meth:`ping` and :meth:`close`
    may be called from another task meanwhile (the session's supervisor does).
    """

    @property
    def url(self) -> str:
        """The URL the connection was opened to."""

    async def receive(self) -> list[bytes]:
        """The next frames: at least one, and every complete frame already buffered behind it
        (a batch; frames in the order the peer sent them). Waits only when none is buffered.

        Answers the server's pings read meanwhile. Raises :class:`ConnectionEnded` once the
        connection has ended and every frame received before its end was returned (the peer's
        close frame, an abort, a reset), :class:`~engine.errors.FrameTooLarge` for a frame over
        the limit (after every frame before it). Cancel-safe."""

    async def send(self, text: str) -> None:
        """Send ``text`` as one text frame. Raises :class:`ConnectionEnded` when the connection
        is closing or closed."""

    async def ping(self) -> asyncio.Future[float]:
        """Send a ping with a fresh payload; return the waiter of its pong: done with the
        round trip in seconds (the event loop's clock) when the pong arrived, with
        :class:`ConnectionEnded` when the connection ended first (a pong answers
        every ping sent before it, as RFC 6455 allows). The pong is only read while frames are
        received: behind every frame the peer sent before it. Raises :class:`ConnectionEnded`
        when the connection is closing or closed."""

    async def close(
        self,
        code: int = NORMAL_CLOSURE,
        reason: str = "",
        *,
        drain_seconds: float,
        discard: bool = False,
    ) -> bool:
        """Close with ``code`` and ``reason`` and wait, at most ``drain_seconds``, until the
        peer's close frame has been read and the socket is closed; past it, abort the socket.

        The peer's close frame is read by :meth:`receive`: the caller keeps a task receiving
        until it raises :class:`ConnectionEnded` (so the frames that arrive before the peer's
        close frame are kept), or passes ``discard=True`` when no task receives: close() then
        reads and discards them itself. (Without either, aiohttp never sees the peer's close
        frame and websockets only while its buffer has room: the deadline then aborts.)
        True when the peer's close frame was read (a clean close: the peer sent nothing after
        it, so nothing was lost). Safe to call more than once and after the connection ended
        (then it only reports). Not cancel-safe: see the module docstring.
        """

    def abort(self) -> None:
        """Drop the socket now, without a close handshake (data buffered either way is lost).
        A concurrent :meth:`receive` raises :class:`ConnectionEnded` (not clean)."""

    @property
    def close_code(self) -> int | None:
        """The code the connection ended with: the peer's close frame's, 1009 when this side
        failed it for a frame over the limit, 1006 when no close frame was read; None while it
        is open (websockets reports its closing state here too; use it once ended)."""

    @property
    def close_reason(self) -> str:
        """The peer's close reason (``""`` when none, or while open)."""

    @property
    def close_received(self) -> bool:
        """True once the peer's close frame has been read."""

    def write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel (TCP backpressure from the peer)."""

    def receive_buffer_bytes(self) -> int | None:
        """The socket's receive buffer size as the kernel reports it (``SO_RCVBUF``), None
        when the socket is gone."""


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How a connection is opened: within ``open_timeout`` seconds (TCP, TLS and the
    WebSocket handshake together), sending ``headers`` with the handshake; frames over
    ``max_frame_bytes`` fail it (1009); ``rcvbuf`` sets the socket's ``SO_RCVBUF`` (None: the
    kernel's default)."""

    open_timeout: float
    max_frame_bytes: int
    headers: Mapping[str, str] = field(default_factory=dict)
    rcvbuf: int | None = None


class Transport(Protocol):
    """A WebSocket client library behind the seam."""

    name: str
    """The ``WS_TRANSPORT`` name: ``"aiohttp"`` or ``"websockets"``."""

    async def connect(self, url: str, options: ConnectOptions) -> Connection:
        """Open a connection to ``url`` (``ws://`` or ``wss://``) as ``options`` say.
        Raises :class:`~engine.errors.ConnectFailed`. Cancel-safe."""


def ended(code: int | None, reason: str, *, clean: bool) -> ConnectionEnded:
    """The :class:`ConnectionEnded` for a connection that ended with ``code`` (None: no close
    frame was read, reported as 1006)."""
    return ConnectionEnded(ABNORMAL_CLOSURE if code is None else code, reason, clean=clean)
