"""Bitstamp's server side for the fake exchange: one endpoint, channel subscriptions, frames.

Path: ``/`` only (Bitstamp's endpoint is the root of ``wss://ws.bitstamp.net``); anything else
is 404. A client subscribes one channel per ``bts:subscribe`` message and gets
``bts:subscription_succeeded`` back; ``bts:heartbeat`` is answered (unless the ``drop-pongs``
fault is on).

Bitstamp validates channels: a channel that is not ``live_trades_<pair>`` for a pair the server
trades is answered with ``bts:error`` "Invalid channel provided." (always, not only with the
``reject-unknown`` fault) and the connection stays open, as on Bitstamp. Channel pairs are lower
case (``live_trades_btcusd``); the market's raw symbols are upper case (``BTCUSD``), so routes
map ``BTCUSD`` to ``live_trades_btcusd``.

Books (docs: testing.md#order-books-on-the-fake-exchange): ``diff_order_book_<pair>`` carries
the book market's messages (``microtimestamp`` strictly rising), with no snapshot on the
channel; ``GET /api/v2/order_book/<pair>/`` on the same port answers the snapshot (HTTP 404
``{"status":"error",...}`` for a pair the server does not trade). The channel has no sequence,
so the ``book-gap`` fault leaves it alone.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from connectors.bitstamp import (
    HEARTBEAT_REPLY,
    INVALID_CHANNEL,
    RECONNECT_NOTICE,
    RequestError,
    encode_error,
    encode_subscribed,
    encode_trade,
    pair_of,
    parse_client_request,
)
from connectors.books.bitstamp import CHANNEL_PREFIX, encode_diff, encode_order_book
from connectors.books.bitstamp import pair_of as book_pair_of
from connectors.fake.adapters import Malformations, Reply, SessionBase
from connectors.fake.book_channels import BookChannel, RestError, RestQuery
from connectors.fake.book_market import BookMessage
from connectors.fake.faults import Faults
from engine.records import Trade

_ROOT_PATHS: Final = ("", "/")
ORDER_BOOK_PATH: Final = "/api/v2/order_book/"
_UNKNOWN_PAIR: Final = '{"status":"error","reason":"Unknown currency pair","code":"404"}'


class BitstampSession(SessionBase):
    """One connection to the fake Bitstamp (implements ``ServerSession``; ``streams`` are the
    subscribed channels). Bitstamp subscribes by message only and sends no heartbeats of its
    own: the client sends ``bts:heartbeat`` and the server answers."""

    PURE_ENCODE = True  # encode() is a function of the trade and the stream
    BOOK_IN_BAND = False  # the snapshot comes over REST
    BOOK_SEQUENCED = False  # microtimestamps only: a lost message cannot be seen

    MALFORMATIONS = Malformations(
        item=("data",),
        missing=("price_str", "amount_str", "microtimestamp", "type", "id", ("channel",)),
        wrong={"price_str": 1.5, "amount_str": 2, "microtimestamp": "soon", "type": 2, "id": "7"},
    )

    def market_symbol(self, stream: str) -> str | None:
        pair = pair_of(stream)
        if pair is None or pair != pair.lower() or pair.upper() not in self._symbols:
            return None
        return pair.upper()

    def on_message(self, frame: str | bytes) -> Reply:
        request = parse_client_request(frame)
        if isinstance(request, RequestError):
            return Reply(frames=(encode_error(request.message),))
        if request.event == "bts:heartbeat":
            return Reply() if self._drop_pongs else Reply(frames=(HEARTBEAT_REPLY,))
        channel = request.channel
        if request.event == "bts:unsubscribe":
            return Reply(
                frames=(encode_subscribed(channel, unsubscribed=True),), unsubscribe=(channel,)
            )
        if self.market_symbol(channel) is None and self.book_channel(channel) is None:
            return Reply(frames=(encode_error(INVALID_CHANNEL),))
        return Reply(frames=(encode_subscribed(channel),), subscribe=(channel,))

    def book_channel(self, stream: str) -> BookChannel | None:
        pair = book_pair_of(stream)
        if pair is None or pair != pair.lower() or pair.upper() not in self._symbols:
            return None
        return BookChannel(pair.upper())

    def encode_book(self, msg: BookMessage, stream: str, corrupt: bool) -> str | None:
        if msg.snapshot:
            return None  # no snapshot on the diff channel
        return encode_diff(msg.raw_symbol, msg.bids, msg.asks, microtimestamp=msg.ts_us)

    def encode(self, trade: Trade, stream: str) -> str:
        return encode_trade(trade, stream)

    def shutdown_notice(self, ts_ms: int) -> str | None:
        return RECONNECT_NOTICE


class BitstampServer:
    """Bitstamp's endpoint and subscription protocol (implements ``ServerAdapter``)."""

    name = "bitstamp"
    BOOK_RESTARTS = False
    """The ``book-restart`` fault is not applied: the diff channel has neither a sequence nor
    a snapshot, so no client could notice."""

    def rest(self, path: str, symbols: frozenset[str]) -> RestQuery | RestError | None:
        """``GET /api/v2/order_book/<pair>/``; None (404) for another path."""
        route = urlsplit(path).path
        if not route.startswith(ORDER_BOOK_PATH):
            return None
        pair = book_pair_of(CHANNEL_PREFIX + route[len(ORDER_BOOK_PATH) :].strip("/"))
        if pair is None or pair.upper() not in symbols:
            return RestError(404, _UNKNOWN_PAIR)
        return RestQuery(pair.upper())

    def encode_rest_snapshot(self, msg: BookMessage) -> str:
        return encode_order_book(msg.bids, msg.asks, microtimestamp=msg.ts_us)

    def session(self, path: str, symbols: frozenset[str], faults: Faults) -> BitstampSession | None:
        if path.partition("?")[0] not in _ROOT_PATHS:
            return None
        return BitstampSession(symbols, faults)
