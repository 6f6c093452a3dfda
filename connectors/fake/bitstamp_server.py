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

import random
from collections.abc import Mapping, Sequence
from typing import Final

import orjson

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
from connectors.fake.adapters import Reply
from connectors.fake.faults import Faults
from engine.records import Trade

_ROOT_PATHS: Final = ("", "/")


class BitstampSession:
    """One connection to the fake Bitstamp (implements ``ServerSession``)."""

    def __init__(self, symbols: frozenset[str], faults: Faults) -> None:
        self._symbols = symbols
        self._drop_pongs = faults.drop_pongs
        self.channels: dict[str, None] = {}  # ordered set of subscribed channels
        self._routes: dict[str, list[str]] = {}

    def _market_symbol(self, channel: str) -> str | None:
        """The market's raw symbol of a trade channel it serves, or None."""
        pair = pair_of(channel)
        if pair is None or pair != pair.lower() or pair.upper() not in self._symbols:
            return None
        return pair.upper()

    def opening(self) -> Reply:
        return Reply()  # Bitstamp subscribes by message only

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
        if self._market_symbol(channel) is None:
            return Reply(frames=(encode_error(INVALID_CHANNEL),))
        return Reply(frames=(encode_subscribed(channel),), subscribe=(channel,))

    def apply(self, reply: Reply) -> None:
        for channel in reply.unsubscribe:
            self.channels.pop(channel, None)
        for channel in reply.subscribe:
            self.channels[channel] = None
        if reply.subscribe or reply.unsubscribe:
            routes: dict[str, list[str]] = {}
            for channel in self.channels:
                symbol = self._market_symbol(channel)
                if symbol is not None:
                    routes.setdefault(symbol, []).append(channel)
            self._routes = routes

    def routes(self) -> Mapping[str, Sequence[str]]:
        return self._routes

    def encode(self, trade: Trade, stream: str) -> str:
        return encode_trade(trade, stream)

    def heartbeats(self, ts_ms: int) -> Sequence[str]:
        return ()  # the client sends bts:heartbeat; the server only answers

    def shutdown_notice(self, ts_ms: int) -> str | None:
        return RECONNECT_NOTICE

    def malformed(self, trade: Trade, stream: str, rng: random.Random) -> str:
        """One of: a truncated frame, non-JSON text, a missing field, a wrong-typed field,
        a JSON array. Every one makes ``BitstampProtocol.parse`` raise ``MalformedFrame``."""
        good = self.encode(trade, stream)
        choice = rng.randrange(5)
        if choice == 0:
            return good[: rng.randrange(1, len(good) - 1)]
        if choice == 1:
            return "\x00not json " + good[:20]
        msg = orjson.loads(good)
        data = msg["data"]
        if choice == 2:
            field = rng.choice(("price_str", "amount_str", "microtimestamp", "type", "id", "-"))
            if field == "-":
                del msg["channel"]
            else:
                del data[field]
        elif choice == 3:
            field = rng.choice(("price_str", "amount_str", "microtimestamp", "type", "id"))
            data[field] = {
                "price_str": 1.5,
                "amount_str": 2,
                "microtimestamp": "soon",
                "type": 2,
                "id": "7",
            }[field]
        else:
            msg = [msg]
        return orjson.dumps(msg).decode()


class BitstampServer:
    """Bitstamp's endpoint and subscription protocol (implements ``ServerAdapter``)."""

    name = "bitstamp"

    def session(self, path: str, symbols: frozenset[str], faults: Faults) -> BitstampSession | None:
        if path.partition("?")[0] not in _ROOT_PATHS:
            return None
        return BitstampSession(symbols, faults)
