"""What every exchange protocol module provides (docs: exchanges.md), with no network code.

A protocol module turns text frames into trades and control events, and (for the fake exchange)
trades back into frames. It never opens a socket, never sleeps and never reads a clock: the caller
passes the receive time in.

``parse()`` returns either a sequence of :class:`~engine.records.Trade` (possibly empty, for a
frame that is valid but carries no trade, such as a depth update) or one control event. The only
exception it may raise is :class:`~engine.errors.MalformedFrame`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.records import Trade


@dataclass(frozen=True, slots=True)
class Ack:
    """The exchange confirmed a request (a subscription, a ping)."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A keepalive from the exchange; it proves the connection is alive."""


@dataclass(frozen=True, slots=True)
class ExchangeError:
    """The exchange reported an error. ``fatal`` is true for a rejected subscription.

    ``symbols``: the raw symbols the exchange's message names as refused (Kraken's ``symbol``,
    OKX's ``instId:..``, Bybit's ``publicTrade.X``, Coinbase's ``X is not a valid product``,
    Bitstamp's ``live_trades_x`` channel), empty when it names none (Binance's ``Invalid
    symbol``): :func:`rejected_symbols` then names every symbol of the connection."""

    message: str
    fatal: bool = False
    symbols: tuple[str, ...] = ()


def rejected_symbols(event: ExchangeError, connection: Sequence[str]) -> tuple[str, ...]:
    """The symbols a rejection is about, spelled as configured: those of ``connection`` that
    ``event`` names (compared without case: Bitstamp's channels are lower case); the names of
    ``event`` as they are when ``connection`` holds none of them; every symbol of
    ``connection`` when ``event`` names none (the exchange did not say which one it refused)."""
    named = {symbol.lower() for symbol in event.symbols}
    if not named:
        return tuple(connection)
    ours = tuple(symbol for symbol in connection if symbol.lower() in named)
    return ours or event.symbols


@dataclass(frozen=True, slots=True)
class ReconnectNotice:
    """The exchange asks the client to reconnect now (``serverShutdown`` and the like)."""

    reason: str


ControlEvent = Ack | Heartbeat | ExchangeError | ReconnectNotice
ParseResult = Sequence[Trade] | ControlEvent


class ExchangeProtocol(Protocol):
    """The client side of one exchange's trade protocol."""

    name: str
    """The exchange's name in ``STREAMS`` and in records (``"binance"``)."""

    default_url: str
    """The public WebSocket base URL (overridden by ``<EXCHANGE>_WS_URL``)."""

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """The URL to connect to for these raw symbols."""
        ...

    keepalive_interval: float | None
    """Seconds between the client's keepalive messages (OKX ``ping``, Bybit ``op: ping``,
    Bitstamp ``bts:heartbeat``), or None when the server keeps the connection alive itself
    (WebSocket pings, heartbeat messages)."""

    def keepalive_message(self) -> str | None:
        """The client keepalive frame to send every ``keepalive_interval`` seconds."""
        ...

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """Text frames to send after connecting (may be empty when the URL subscribes)."""
        ...

    def parse(self, frame: str | bytes, ts_recv: int) -> ParseResult:
        """Decode one received frame. Raises only :class:`~engine.errors.MalformedFrame`."""
        ...

    max_streams_per_connection: int
    """How many symbols one connection may carry; more symbols open more connections."""

    sequenced: bool
    """True when ``trade_id`` is the decimal text of a sequence that rises by exactly one per
    symbol (then gaps and duplicates are detected); False when the exchange offers none."""
