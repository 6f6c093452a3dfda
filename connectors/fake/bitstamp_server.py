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
"""

from __future__ import annotations

from typing import Final

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
from connectors.fake.adapters import Malformations, Reply, SessionBase
from connectors.fake.faults import Faults
from engine.records import Trade

_ROOT_PATHS: Final = ("", "/")


class BitstampSession(SessionBase):
    """One connection to the fake Bitstamp (implements ``ServerSession``; ``streams`` are the
    subscribed channels). Bitstamp subscribes by message only and sends no heartbeats of its
    own: the client sends ``bts:heartbeat`` and the server answers."""

    PURE_ENCODE = True  # encode() is a function of the trade and the stream

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
        if self.market_symbol(channel) is None:
            return Reply(frames=(encode_error(INVALID_CHANNEL),))
        return Reply(frames=(encode_subscribed(channel),), subscribe=(channel,))

    def encode(self, trade: Trade, stream: str) -> str:
        return encode_trade(trade, stream)

    def shutdown_notice(self, ts_ms: int) -> str | None:
        return RECONNECT_NOTICE


class BitstampServer:
    """Bitstamp's endpoint and subscription protocol (implements ``ServerAdapter``)."""

    name = "bitstamp"

    def session(self, path: str, symbols: frozenset[str], faults: Faults) -> BitstampSession | None:
        if path.partition("?")[0] not in _ROOT_PATHS:
            return None
        return BitstampSession(symbols, faults)
