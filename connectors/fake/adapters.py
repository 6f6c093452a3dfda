"""The server side of an exchange protocol, as the fake exchange needs it.

The fake server (:mod:`connectors.fake.server`) is protocol-neutral: it accepts connections,
generates trades, applies faults and keeps the ledger. Everything exchange-specific (which paths
exist, how a client subscribes, what the frames look like) sits behind :class:`ServerAdapter`, one
per exchange, registered in :data:`ADAPTERS`. A new exchange plugs in by adding an adapter.

Each connection gets its own :class:`ServerSession` from :meth:`ServerAdapter.session`.
Subscription changes come back in a :class:`Reply`; the server sends ``reply.frames`` first and
only then calls :meth:`ServerSession.apply`, so an acknowledgement always precedes the first trade
of a new subscription.

:class:`SessionBase` holds what the exchanges' sessions share (the ordered set of subscribed
streams, their routes, the quiet defaults) and :func:`malformed_frame` the five ways a trade's
frame is spoiled for the ``malformed`` fault; an adapter names only where its trade's fields sit
(:class:`Malformations`).
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, cast

import orjson

from connectors.fake.book_channels import BookChannel
from connectors.fake.book_market import BookMessage
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


Path = tuple[str | int, ...]
"""Keys and indexes from a decoded frame's top level down to one value."""


@dataclass(frozen=True, slots=True)
class Malformations:
    """Where a trade frame's fields sit, for :func:`malformed_frame`.

    ``item`` leads from the frame's top level to the object holding the trade's fields (``()``
    for the top level itself, ``("data", 0)`` for the first entry of a ``data`` array).
    ``missing`` names the fields one of which is deleted: a name is a field of the item, a
    :data:`Path` leads from the top level (a channel or instrument outside the item).
    ``wrong`` maps fields of the item to a value of the wrong type that replaces them. The
    order of both is part of the fake's output: a seeded run picks by position.
    """

    item: Path
    missing: tuple[str | Path, ...]
    wrong: Mapping[str, object]


def _at(doc: Any, path: Path) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def malformed_frame(good: str, rng: random.Random, spec: Malformations) -> str:
    """``good`` (a trade's frame, a JSON object) spoiled in one of five ways, picked with ``rng``:
    cut short, prefixed so that it is not JSON, a field missing, a field of the wrong type
    (:class:`Malformations` says which fields), or the object wrapped in a JSON array. A
    protocol's ``parse`` must raise ``MalformedFrame`` for every one.

    The draws from ``rng`` (one ``randrange(5)``, then at most one more) are fixed: a seeded
    fake exchange sends the same bytes run after run.
    """
    choice = rng.randrange(5)
    if choice == 0:
        return good[: rng.randrange(1, len(good) - 1)]
    if choice == 1:
        return "\x00not json " + good[:20]
    msg = orjson.loads(good)
    if choice == 2:
        target = rng.choice(spec.missing)
        path = (*spec.item, target) if isinstance(target, str) else target
        del _at(msg, path[:-1])[path[-1]]
    elif choice == 3:
        field = rng.choice(tuple(spec.wrong))
        _at(msg, spec.item)[field] = spec.wrong[field]
    else:
        msg = [msg]
    return orjson.dumps(msg).decode()


class SessionBase:
    """What the exchanges' :class:`ServerSession` implementations share.

    ``streams`` is the ordered set of subscribed stream names (the exchange's own spelling:
    channels, topics, ``"<kind>:<symbol>"``); :meth:`apply` updates it and rebuilds the routes
    from :meth:`market_symbol`. The defaults say what most exchanges do: nothing on opening
    (they subscribe by message), no server-initiated heartbeats, no reconnect notice.
    :meth:`malformed` spoils the frame :meth:`plain_frame` gives with :func:`malformed_frame` at
    the places :attr:`MALFORMATIONS` (or :meth:`malformations`, for values that depend on the
    trade) names. A subclass writes :meth:`on_message`, :meth:`encode` and
    :meth:`market_symbol`.
    """

    MALFORMATIONS: ClassVar[Malformations]
    PURE_ENCODE: ClassVar[bool] = False
    """True when :meth:`encode` depends only on its arguments (and the session's fixed
    settings) and changes no state: max mode's fast path may then render frames from templates
    made by calling it (:mod:`connectors.fake.fast`); otherwise it calls it per trade."""

    BOOK_IN_BAND: ClassVar[bool] = True
    """Book subscriptions are answered with a snapshot on the stream (see
    :class:`connectors.fake.book_channels.BookSession`)."""
    BOOK_SEQUENCED: ClassVar[bool] = True
    """A client can see a book message left out (the ``book-gap`` fault applies)."""

    def __init__(self, symbols: frozenset[str], faults: Faults) -> None:
        self._symbols = symbols
        self._drop_pongs = faults.drop_pongs
        self.streams: dict[str, None] = {}  # ordered set of subscribed streams
        self._routes: dict[str, list[str]] = {}

    def market_symbol(self, stream: str) -> str | None:
        """The raw symbol of the market's trades ``stream`` carries, or None (not a trade
        stream, or a symbol the server does not trade)."""
        raise NotImplementedError

    def opening(self) -> Reply:
        return Reply()

    def on_message(self, frame: str | bytes) -> Reply:
        raise NotImplementedError

    def apply(self, reply: Reply) -> None:
        for name in reply.unsubscribe:
            self.streams.pop(name, None)
        for name in reply.subscribe:
            self.streams[name] = None
        if reply.subscribe or reply.unsubscribe:
            self.rebuild_routes()

    def rebuild_routes(self) -> None:
        """Recompute :meth:`routes` from ``streams`` (called when a reply changed them)."""
        routes: dict[str, list[str]] = {}
        for name in self.streams:
            symbol = self.market_symbol(name)
            if symbol is not None:
                routes.setdefault(symbol, []).append(name)
        self._routes = routes

    def routes(self) -> Mapping[str, Sequence[str]]:
        return self._routes

    def encode(self, trade: Trade, stream: str) -> str:
        raise NotImplementedError

    def heartbeats(self, ts_ms: int) -> Sequence[str]:
        return ()

    def book_channel(self, stream: str) -> BookChannel | None:
        """The book channel ``stream`` is (None: none; the default serves no books)."""
        return None

    def encode_book(self, msg: BookMessage, stream: str, corrupt: bool) -> str | None:
        """The frame of a book message on ``stream`` (None: not sent on this channel)."""
        return None

    def shutdown_notice(self, ts_ms: int) -> str | None:
        return None

    def plain_frame(self, trade: Trade, stream: str) -> str:
        """The frame :meth:`malformed` spoils; :meth:`encode` unless that has side effects."""
        return self.encode(trade, stream)

    def malformations(self, trade: Trade) -> Malformations:
        """Where :meth:`malformed` may spoil ``trade``'s frame; :attr:`MALFORMATIONS`."""
        return self.MALFORMATIONS

    def malformed(self, trade: Trade, stream: str, rng: random.Random) -> str:
        return malformed_frame(self.plain_frame(trade, stream), rng, self.malformations(trade))


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
