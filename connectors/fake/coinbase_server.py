"""Coinbase Exchange's server side for the fake exchange: subscriptions, heartbeats, frames.

One endpoint, ``/`` (anything else is 404). Nothing is sent before the client subscribes (the
real feed would also drop a client that does not subscribe within 5 s; the fake does not).
``subscribe``/``unsubscribe`` requests accept the ``matches`` and ``heartbeat`` channels, as
names with top-level ``product_ids`` or as ``{"name":..,"product_ids":[..]}`` objects, and are
answered with a ``subscriptions`` message listing everything now subscribed.

Like Coinbase, the fake validates products: a request naming a product it does not trade (or a
channel it does not serve) is answered with ``{"type":"error","message":"Failed to subscribe",
"reason":"NOPE-USD is not a valid product"}`` and the connection is closed (code 1008), whatever
the ``reject-unknown`` fault says. A request that is not understood gets an error message and the
connection stays open.

``last_match``: on Coinbase it is the product's most recent trade BEFORE the subscription.
The fake cannot send such a trade exactly-once-safely: the ledger records only trades that go
through the server's data path, and a trade from before the subscription belongs to no
connection's data path. So the fake sends the FIRST trade of each product on a connection (after
each subscription to it) as ``last_match`` instead of ``match``. The client sees the real shape
(``subscriptions``, one ``last_match`` per product, then contiguous ``match`` ids), every
``last_match`` is a trade in the ledger, and the e2e exactly-once check holds. The other
real-world case, a ``last_match`` that repeats a trade the client already has after a
reconnect, is covered by the protocol tests (the session's trade-id check drops it).

Books (docs: testing.md#order-books-on-the-fake-exchange): ``level2_batch`` is served from the
book market: a ``snapshot`` of the whole book on each subscription, then one ``l2update`` per
book message (``changes`` as ``buy``/``sell``, price, new size). The channel has no sequence,
so the ``book-gap`` fault leaves it alone.

Heartbeats: one ``heartbeat`` per product subscribed on that channel, each time the wall clock
enters a new second, with ``last_trade_id`` = the last trade id this connection was sent for the
product (0 before any). Coinbase has no application-level ping, so ``drop-pongs`` changes nothing
here, and no reconnect notice (``shutdown_notice`` is None).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from connectors.books.coinbase import encode_l2_snapshot, encode_l2update
from connectors.coinbase import (
    ClientRequest,
    RequestError,
    encode_error,
    encode_heartbeat,
    encode_match,
    encode_subscriptions,
    parse_client_request,
)
from connectors.fake.adapters import Malformations, Reply, SessionBase
from connectors.fake.book_channels import BookChannel
from connectors.fake.book_market import BookMessage
from connectors.fake.faults import Faults
from engine.records import Trade
from engine.timefmt import format_us

CHANNELS: Final = ("matches", "heartbeat", "level2_batch")
"""The channels the fake serves."""
_REJECT_CLOSE: Final = (1008, "failed to subscribe")


def _stream(channel: str, product: str) -> str:
    return f"{channel}:{product}"


class CoinbaseSession(SessionBase):
    """One connection to the fake Coinbase (implements ``ServerSession``; ``streams`` are
    ``"<channel>:<product>"``). Coinbase has no reconnect notice."""

    BOOK_SEQUENCED = False  # level2_batch has no sequence: a lost message cannot be seen

    def __init__(self, symbols: frozenset[str]) -> None:
        super().__init__(symbols, Faults())
        self._started: set[str] = set()
        self._last_id: dict[str, int] = {}
        self._beat_second: int | None = None

    def _products(self, channel: str, streams: Sequence[str]) -> list[str]:
        """The products of ``channel`` among ``streams``, in order."""
        return [p for c, _, p in (s.partition(":") for s in streams) if c == channel]

    def market_symbol(self, stream: str) -> str | None:
        channel, _, product = stream.partition(":")
        return product if channel == "matches" else None

    def book_channel(self, stream: str) -> BookChannel | None:
        channel, _, product = stream.partition(":")
        return BookChannel(product) if channel == "level2_batch" else None

    def encode_book(self, msg: BookMessage, stream: str, corrupt: bool) -> str | None:
        time_iso = format_us(msg.ts_us)
        if msg.snapshot:
            return encode_l2_snapshot(msg.raw_symbol, msg.bids, msg.asks, time_iso=time_iso)
        changes = [("buy", price, size) for price, size in msg.bids]
        changes += [("sell", price, size) for price, size in msg.asks]
        return encode_l2update(msg.raw_symbol, changes, time_iso=time_iso)

    def on_message(self, frame: str | bytes) -> Reply:
        request = parse_client_request(frame)
        if isinstance(request, RequestError):
            return Reply(frames=(encode_error(request.message, request.reason),))
        return self._answer(request)

    def _answer(self, request: ClientRequest) -> Reply:
        failed = "Failed to subscribe" if request.type == "subscribe" else "Failed to unsubscribe"
        for channel, products in request.channels.items():
            if channel not in CHANNELS:
                reason = f"{channel} is not a valid channel"
                return Reply(frames=(encode_error(failed, reason),), close=_REJECT_CLOSE)
            for product in products:
                if product not in self._symbols:
                    reason = f"{product} is not a valid product"
                    return Reply(frames=(encode_error(failed, reason),), close=_REJECT_CLOSE)
        streams = tuple(
            _stream(channel, product)
            for channel, products in request.channels.items()
            for product in products
        )
        after = dict(self.streams)
        for stream in streams:
            if request.type == "subscribe":
                after[stream] = None
            else:
                after.pop(stream, None)
        listed = list(after)
        frames = (encode_subscriptions({c: self._products(c, listed) for c in CHANNELS}),)
        if request.type == "subscribe":
            return Reply(frames=frames, subscribe=streams)
        return Reply(frames=frames, unsubscribe=streams)

    def apply(self, reply: Reply) -> None:
        for stream in reply.unsubscribe:
            channel, _, product = stream.partition(":")
            if channel == "matches":
                self._started.discard(product)  # a new subscription gets a new last_match
        super().apply(reply)

    def encode(self, trade: Trade, stream: str) -> str:
        product = trade.raw_symbol
        first = product not in self._started
        if first:
            self._started.add(product)
        self._last_id[product] = int(trade.trade_id)
        return encode_match(trade, last=first)

    def heartbeats(self, ts_ms: int) -> Sequence[str]:
        products = self._products("heartbeat", list(self.streams))
        second = ts_ms // 1000
        if not products or second == self._beat_second:
            return ()
        self._beat_second = second
        ts_us = ts_ms * 1000
        return [encode_heartbeat(p, self._last_id.get(p, 0), ts_us) for p in products]

    def plain_frame(self, trade: Trade, stream: str) -> str:
        return encode_match(trade)  # encode() also marks the product's first trade as sent

    def malformations(self, trade: Trade) -> Malformations:
        """A trade id sent as a JSON string among the wrong-typed fields."""
        return Malformations(
            item=(),
            missing=("trade_id", "price", "size", "side", "time", "product_id"),
            wrong={
                "trade_id": str(int(trade.trade_id)),
                "price": 1.5,
                "size": None,
                "side": "up",
                "time": "yesterday",
            },
        )


class CoinbaseServer:
    """Coinbase Exchange's endpoint and subscription protocol (implements ``ServerAdapter``)."""

    name = "coinbase"

    def session(self, path: str, symbols: frozenset[str], faults: Faults) -> CoinbaseSession | None:
        """A session for ``/`` (the feed has no other path); None (404) for anything else.
        ``faults`` changes nothing here: products are always validated, and there are no pongs
        to drop."""
        if urlsplit(path).path not in ("", "/"):
            return None
        return CoinbaseSession(symbols)
