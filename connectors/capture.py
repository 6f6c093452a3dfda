"""Raw capture (``feedvault stream --capture``): the records of the ``raw`` dataset.

See docs/recording-and-replay.md#capture.

With capture on, every session turns each frame it receives (``dir="in"``, stamped with the
very ``ts`` its trades get as ``ts_recv``), each frame it sends (``dir="out"``: subscribe
messages, keepalives) and each connection it opens (``dir="out"``, empty frame, ``url``) into a
:class:`RawFrame` or :class:`RawConnect`. They travel in batches on their own
:class:`~engine.batchqueue.BatchQueue` to a second :class:`~sinks.sink.WindowedSink`, whose
windows go under ``{prefix}raw/`` (:data:`sinks.keys.RAW_KEY_TEMPLATE`).

``orjson`` encodes these dataclasses field by field, so each record becomes exactly one line of
the recording format of :mod:`connectors.recording`: ``{"ts", "exchange", "dir", "frame"}`` and
``"url"`` on connect lines only (``to_line`` of the same frame gives the same bytes), and
``"http"``/``"status"`` on the lines of REST responses (book snapshots, :class:`RawHttp`).

Received frames arrive as bytes; they are decoded as UTF-8 with replacement (a frame that is not
valid UTF-8 was malformed anyway and stays so when replayed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DIR_IN: Final = "in"
DIR_OUT: Final = "out"


@dataclass(eq=True)
class RawFrame:
    """One frame received (``dir="in"``) or sent (``dir="out"``) by a session.

    Deliberately a plain ``__dict__`` dataclass (like :class:`~engine.records.Trade`): orjson
    serializes it fastest. ``ts_recv``/``ts_event`` are properties for the windower (slot by
    ``ts``; the manifest's first/last ``ts_event`` of a raw object are its first/last ``ts`` in
    microseconds); properties are not serialized.
    """

    ts: int
    exchange: str
    dir: str
    frame: str

    @property
    def ts_recv(self) -> int:
        return self.ts

    @property
    def ts_event(self) -> int:
        return self.ts // 1000


@dataclass(eq=True)
class RawConnect(RawFrame):
    """A connection opened to ``url`` (``dir="out"``, empty ``frame``) for ``channel``
    (``trades`` or ``book``: a replay tells the book's reconnects from the trades')."""

    url: str
    channel: str


@dataclass(eq=True)
class RawBookConnect(RawConnect):
    """A book connection opened (``channel="book"``) for ``symbols``: a replay voids only
    their books, as the live reconnect did (an exchange's symbols may span connections)."""

    symbols: list[str]


@dataclass(eq=True)
class RawHttp(RawFrame):
    """A REST response the session fetched (a book snapshot): ``dir="in"``, ``frame`` the
    body, ``http`` the request (``"GET <url>"``) and its ``status``."""

    http: str
    status: int


RawRecord = RawFrame
"""Either kind (``RawConnect`` is a ``RawFrame``)."""


def received(ts: int, exchange: str, frame: str | bytes) -> RawFrame:
    """The raw record of a received frame."""
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    return RawFrame(ts, exchange, DIR_IN, text)


def sent(ts: int, exchange: str, frame: str) -> RawFrame:
    """The raw record of a frame sent by the client."""
    return RawFrame(ts, exchange, DIR_OUT, frame)


def fetched(ts: int, exchange: str, url: str, status: int, body: bytes) -> RawHttp:
    """The raw record of a REST response (a book snapshot) fetched from ``url``."""
    return RawHttp(ts, exchange, DIR_IN, body.decode("utf-8", "replace"), f"GET {url}", status)


def connected(
    ts: int, exchange: str, url: str, channel: str = "trades", symbols: list[str] | None = None
) -> RawConnect:
    """The raw record of a connection opened to ``url`` for ``channel`` (and, for a book
    connection, its ``symbols``)."""
    if symbols is not None:
        return RawBookConnect(ts, exchange, DIR_OUT, "", url, channel, symbols)
    return RawConnect(ts, exchange, DIR_OUT, "", url, channel)
