"""The server side of an exchange protocol, as the fake exchange needs it.

The fake server (:mod:`connectors.fake.server`) is protocol-neutral: it accepts connections,
generates trades, applies faults and keeps the ledger. Everything exchange-specific (which paths
exist, how a client subscribes, what the frames look like) sits behind :class:`ServerAdapter`, one
per exchange, registered in :data:`ADAPTERS`. A new exchange plugs in by adding an adapter.

Each connection gets its own :class:`ServerSession` from :meth:`ServerAdapter.session`.
Subscription changes come back in a :class:`Reply`; the server sends ``reply.frames`` first and
only then calls :meth:`ServerSession.apply`, so an acknowledgement always precedes the first trade
of a new subscription.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from connectors.fake.faults import Faults
from engine.records import Trade


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server does in answer to a connection opening or a client frame."""

    frames: tuple[str, ...] = ()
    """Text frames to send, in order."""
    subscribe: tuple[str, ...] = ()
    """Streams to add once the frames are sent."""
    unsubscribe: tuple[str, ...] = ()
    """Streams to remove once the frames are sent."""
    close: tuple[int, str] | None = None
    """Close the connection with (code, reason) after the frames."""


class ServerSession(Protocol):
    """One client connection's protocol state on the server."""

    def opening(self) -> Reply:
        """What happens right after the handshake (subscriptions named in the URL)."""
        ...

    def on_message(self, frame: str | bytes) -> Reply:
        """Answer one client frame."""
        ...

    def apply(self, reply: Reply) -> None:
        """Apply a reply's subscription changes (called after its frames were sent)."""
        ...

    def routes(self) -> Mapping[str, Sequence[str]]:
        """Raw symbol -> the subscribed streams that carry its trades (known symbols only)."""
        ...

    def encode(self, trade: Trade, stream: str) -> str:
        """The frame carrying ``trade`` on ``stream``."""
        ...

    def heartbeats(self, ts_ms: int) -> Sequence[str]:
        """Frames the server sends on its own at wall time ``ts_ms`` (called every tick in
        timed mode): Kraken's and Coinbase's heartbeats. Empty for exchanges that use
        WebSocket pings (Binance) or client-initiated keepalives (OKX, Bybit, Bitstamp)."""
        ...

    def shutdown_notice(self, ts_ms: int) -> str | None:
        """The exchange's reconnect notice, or None when it has none."""
        ...

    def malformed(self, trade: Trade, stream: str, rng: random.Random) -> str:
        """A frame that looks like ``trade`` on ``stream`` but that a client must reject."""
        ...


class ServerAdapter(Protocol):
    """The server side of one exchange's protocol."""

    name: str

    def session(self, path: str, symbols: frozenset[str], faults: Faults) -> ServerSession | None:
        """A session for a connection to ``path`` (with query), or None: HTTP 404.

        ``symbols`` are the raw symbols the server trades; ``faults`` may change how unknown
        symbols are treated (``reject_unknown``).
        """
        ...


def _lazy(module: str, cls_name: str, **kwargs: str) -> Callable[[], ServerAdapter]:
    """A factory that imports the adapter's module on first use."""

    def factory() -> ServerAdapter:
        cls = getattr(importlib.import_module(module), cls_name)
        return cast(ServerAdapter, cls(**kwargs))

    return factory


ADAPTERS: dict[str, Callable[[], ServerAdapter]] = {
    "binance": _lazy("connectors.fake.binance_server", "BinanceServer"),
    "binanceus": _lazy("connectors.fake.binance_server", "BinanceServer", name="binanceus"),
    "coinbase": _lazy("connectors.fake.coinbase_server", "CoinbaseServer"),
    "kraken": _lazy("connectors.fake.kraken_server", "KrakenServer"),
    "bitstamp": _lazy("connectors.fake.bitstamp_server", "BitstampServer"),
    "okx": _lazy("connectors.fake.okx_server", "OkxServer"),
    "bybit": _lazy("connectors.fake.bybit_server", "BybitServer"),
}
"""Protocol name -> factory of its server adapter."""


def get_adapter(name: str) -> ServerAdapter:
    """The server adapter of protocol ``name``; ValueError naming the known ones otherwise."""
    try:
        factory = ADAPTERS[name]
    except KeyError:
        raise ValueError(
            f"the fake exchange does not speak {name!r} (known: {', '.join(sorted(ADAPTERS))})"
        ) from None
    return factory()
