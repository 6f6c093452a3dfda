"""What the fake exchange's server adapters say about order-book channels and REST snapshots
(docs: testing.md#order-books-on-the-fake-exchange).

A session that serves books answers :meth:`BookSession.book_channel` for a subscribed stream
(which symbol, at which depth, how the view treats levels pushed out of it) and encodes the
book market's messages with the client feeds' own encoders (``connectors/books/*``). An adapter
whose exchange has a REST snapshot endpoint (Binance, Binance.US, Bitstamp) answers
:meth:`RestAdapter.rest` for a plain HTTP GET: a :class:`RestQuery`, or a
:class:`RestError` to send as is, or None (404).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol, runtime_checkable

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from connectors.fake.book_market import BookMessage


@dataclass(frozen=True, slots=True)
class BookChannel:
    """A subscribed book stream: ``raw_symbol``'s book at ``depth`` levels per side (None: the
    whole book). ``pushout=False``: a level pushed out of the depth by a better one is not sent
    as a removal (Kraken). ``top_levels``: the messages carry that many best levels (Kraken's
    checksum)."""

    raw_symbol: str
    depth: int | None = None
    pushout: bool = True
    top_levels: int = 0


@runtime_checkable
class BookSession(Protocol):
    """The book side of a server session (the :class:`~connectors.fake.adapters.SessionBase`
    defaults serve no books)."""

    BOOK_IN_BAND: bool
    """True: a subscription is answered with a snapshot on the stream (Coinbase, Kraken, OKX,
    Bybit); False: the client fetches it over REST (Binance, Bitstamp)."""
    BOOK_SEQUENCED: bool
    """True when the client can see a message left out (``book-gap`` applies)."""

    def book_channel(self, stream: str) -> BookChannel | None:
        """The book channel ``stream`` is, or None (not a book stream of a traded symbol)."""
        ...

    def encode_book(self, msg: BookMessage, stream: str, corrupt: bool) -> str | None:
        """The frame of ``msg`` on ``stream`` (``corrupt``: with a wrong checksum), or None when
        the channel has no such frame (a snapshot on a REST exchange's diff stream)."""
        ...


@dataclass(frozen=True, slots=True)
class RestQuery:
    """A REST snapshot request: ``raw_symbol``'s book, at most ``limit`` levels per side."""

    raw_symbol: str
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class RestError:
    """A REST request answered with an error: HTTP ``status`` and a JSON ``body``."""

    status: int
    body: str


class RestAdapter(Protocol):
    """An adapter with REST snapshot endpoints."""

    def rest(self, path: str, symbols: frozenset[str]) -> RestQuery | RestError | None:
        """The request ``path`` (with its query) asks for, or None (404)."""
        ...

    def encode_rest_snapshot(self, msg: BookMessage) -> str:
        """The response body for the snapshot ``msg``."""
        ...


def is_upgrade(request: Request) -> bool:
    """True for a WebSocket opening handshake (anything else is a plain HTTP request)."""
    return "websocket" in request.headers.get("Upgrade", "").lower()


def json_response(connection: ServerConnection, status: int, body: str) -> Response:
    """An HTTP response with a JSON ``body`` (the connection closes after it)."""
    response = connection.respond(HTTPStatus(status), body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response
