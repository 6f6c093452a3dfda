"""Bitstamp WebSocket API v2 ``live_trades`` protocol, both directions (docs: exchanges.md).

Pure: no network, no clock, no sleeping. The client side (:class:`BitstampProtocol`) builds the
subscribe frames and parses received frames; the server side (the ``encode_*`` functions and
:func:`parse_client_request`) is what the fake exchange speaks.

Wire facts used here (https://www.bitstamp.net/websocket/v2/):

- one endpoint, ``wss://ws.bitstamp.net``; one ``bts:subscribe`` message per channel
  (``{"event":"bts:subscribe","data":{"channel":"live_trades_btcusd"}}``), acknowledged with
  ``{"event":"bts:subscription_succeeded","channel":"live_trades_btcusd","data":{}}``. Channel
  names use the lower-case pair (``btcusd``);
- a trade: ``{"data":{"id":..,"timestamp":"..","amount":0.0792,"amount_str":"0.07920000",
  "price":3805.44,"price_str":"3805.44","type":0,"microtimestamp":"1641343699596000",
  "buy_order_id":..,"sell_order_id":..},"channel":"live_trades_ethusd","event":"trade"}``.
  ``price``/``amount`` are floats and are never read: ``price_str``/``amount_str`` are the exact
  text. ``type`` 0 means the taker bought, 1 that the taker sold. ``microtimestamp`` is the trade
  time in µs, as a string;
- ``id`` is one counter shared by every pair, so per-pair ids have gaps by design: trades are
  not ``sequenced`` (no gap detection);
- keepalive: the client sends ``{"event":"bts:heartbeat"}``; the answer is
  ``{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}``;
- ``{"event":"bts:request_reconnect",...}`` asks the client to reconnect (maintenance);
- errors: ``{"event":"bts:error","channel":"","data":{"code":null,"message":"..."}}``. They do
  not name the request they answer; this client only sends subscriptions and heartbeats (valid
  by construction), so an error means a channel was refused: it is fatal.

``parse`` is the hot path: one ``orjson.loads``, direct indexing inside one ``try``, exact type
checks, a 1-tuple result. Everything else is slow path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from connectors.base import Ack, ExchangeError, Heartbeat, ParseResult, ReconnectNotice
from connectors.symbols import canonical_symbol
from connectors.wire import (
    DIGITS_US,
    MAX_US,
    PrefixedNames,
    json_number,
    json_text,
    shape_error,
    short,
    stream_names,
)
from engine.errors import MalformedFrame
from engine.records import BUY, SELL, Trade

BITSTAMP_URL: Final = "wss://ws.bitstamp.net"
MAX_STREAMS_PER_CONNECTION: Final = 100
"""Bitstamp documents no per-connection channel limit. Each channel costs one subscribe message
and the session paces control messages at 4/s, so 100 channels keep a (re)connection's
subscribe burst under 25 s; more symbols open more connections."""
KEEPALIVE_SECONDS: Final = 20.0
"""Seconds between ``bts:heartbeat`` requests. Bitstamp sets no interval; 20 s keeps a quiet
connection's frames (the heartbeat answers) well inside the session's staleness limit."""
CHANNEL_PREFIX: Final = "live_trades_"
HEARTBEAT_REQUEST: Final = '{"event":"bts:heartbeat"}'
HEARTBEAT_REPLY: Final = '{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}'
RECONNECT_NOTICE: Final = '{"event":"bts:request_reconnect","channel":"","data":""}'

_CACHE_MAX: Final = 4096
_NOTHING: Final[tuple[Trade, ...]] = ()
_loads: Final = orjson.loads


_NAMES: Final = PrefixedNames("bitstamp", CHANNEL_PREFIX, str.lower)
channel_name: Final = _NAMES.name
"""The trade channel of a pair: ``live_trades_btcusd`` for ``BTCUSD`` or ``btcusd``;
:class:`ValueError` for a symbol that is not 2-40 ASCII letters/digits."""
pair_of: Final = _NAMES.symbol
"""The pair of a trade channel (``live_trades_btcusd`` -> ``btcusd``), or None."""


class BitstampProtocol:
    """The client side of Bitstamp's ``live_trades`` channels (implements ``ExchangeProtocol``).

    Records carry ``raw_symbol`` as Bitstamp spells the pair in the channel name (``btcusd``)
    and the canonical ``symbol`` (``BTC-USD``).
    """

    name = "bitstamp"
    default_url = BITSTAMP_URL
    max_streams_per_connection = MAX_STREAMS_PER_CONNECTION
    sequenced = False
    """``id`` is global across pairs: a pair's ids skip whenever another pair trades."""
    keepalive_interval: float | None = KEEPALIVE_SECONDS

    def __init__(self) -> None:
        self._channels: dict[str, tuple[str, str]] = {}  # channel -> (raw, canonical)

    # -- client requests ------------------------------------------------------------------------

    def keepalive_message(self) -> str | None:
        return HEARTBEAT_REQUEST

    def channels(self, symbols: Sequence[str]) -> list[str]:
        """Channel names for these symbols; ValueError beyond the limit or on a bad name."""
        limit = MAX_STREAMS_PER_CONNECTION
        return stream_names(self.name, "channels", limit, symbols, channel_name)

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """``base_url`` itself (Bitstamp has one endpoint; channels are subscribed by message).

        Raises ValueError for too many or ill-formed symbols, like :meth:`subscribe_messages`.
        """
        self.channels(symbols)
        return base_url.rstrip("/") or base_url

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """One ``bts:subscribe`` frame per channel, in the order given."""
        return [
            f'{{"event":"bts:subscribe","data":{{"channel":"{channel}"}}}}'
            for channel in self.channels(symbols)
        ]

    # -- received frames ------------------------------------------------------------------------

    def parse(self, frame: str | bytes, ts_recv: int) -> ParseResult:
        """Decode one received frame.

        Returns a 1-tuple of :class:`Trade` for a ``trade`` event on a ``live_trades_`` channel,
        an empty tuple for any other data event, :class:`Ack` for a (un)subscription success,
        :class:`Heartbeat` for a heartbeat answer, :class:`ReconnectNotice` for
        ``bts:request_reconnect`` and a fatal :class:`ExchangeError` for ``bts:error``.
        Raises only :class:`MalformedFrame`.
        """
        try:
            msg = _loads(frame)
        except (ValueError, TypeError) as exc:
            raise MalformedFrame("json", str(exc)[:120]) from None
        try:
            event = msg.get("event")
            if event != "trade":
                return self._parse_other(msg, event)
            channel = msg["channel"]
            data = msg["data"]
            tid = data["id"]
            price = data["price_str"]
            size = data["amount_str"]
            kind = data["type"]
            micro = data["microtimestamp"]
            known = self._channels.get(channel)  # TypeError when channel is unhashable
        except (AttributeError, KeyError, TypeError) as exc:
            raise shape_error(
                exc, "frame is not a JSON object", "trade", "data or channel has the wrong type"
            ) from None
        if type(price) is not str or type(size) is not str or not price or not size:
            raise MalformedFrame("type", "price_str and amount_str must be non-empty strings")
        if type(micro) is not str or not DIGITS_US(micro) or (us := int(micro)) > MAX_US:
            raise MalformedFrame("type", "microtimestamp must be decimal text of a time in range")
        if type(tid) is not int or tid < 0:
            raise MalformedFrame("type", "id must be a non-negative integer")
        if type(kind) is not int or kind not in (0, 1):
            raise MalformedFrame("type", "type must be 0 (buy) or 1 (sell)")
        if known is None:
            known = self._channel(channel)
        raw, symbol = known
        side = BUY if kind == 0 else SELL
        return (Trade(self.name, symbol, raw, str(tid), price, size, side, us, ts_recv),)

    def _channel(self, channel: object) -> tuple[str, str]:
        """(raw pair, canonical symbol) of a trade channel not seen before (slow path)."""
        if type(channel) is not str:
            raise MalformedFrame("type", "channel must be a string")
        pair = pair_of(channel)
        if pair is None:
            raise MalformedFrame("symbol", f"not a live_trades channel: {short(channel)}")
        try:
            known = (pair, canonical_symbol(pair, self.name))
        except ValueError as exc:
            raise MalformedFrame("symbol", str(exc)[:120]) from None
        if len(self._channels) < _CACHE_MAX:
            self._channels[channel] = known
        return known

    def _parse_other(self, msg: dict[str, object], event: object) -> ParseResult:
        """Everything that is not a trade (slow path)."""
        if event is None:
            return _NOTHING
        if type(event) is not str:
            raise MalformedFrame("type", "event must be a string")
        if event in ("bts:subscription_succeeded", "bts:unsubscription_succeeded"):
            channel = msg.get("channel")
            return Ack(f"{event[4:]} {channel}" if type(channel) is str else event[4:])
        if event == "bts:heartbeat":
            return Heartbeat()
        if event == "bts:request_reconnect":
            return ReconnectNotice("bts:request_reconnect")
        if event in ("bts:error", "bts:subscription_failed"):
            data = msg.get("data")
            text = data.get("message") if isinstance(data, dict) else None
            if text is not None and type(text) is not str:
                raise MalformedFrame("type", "error message must be a string")
            channel = msg.get("channel")
            # "bts:error" names no channel: the session then names the connection's pairs
            pair = pair_of(channel) if type(channel) is str else None
            return ExchangeError(
                f"bitstamp {event[4:]}: {text or 'no message'}",
                fatal=True,
                symbols=(pair,) if pair else (),
            )
        return _NOTHING  # order books, live orders and other channels


# -- server side (the fake exchange) ----------------------------------------------------------


def encode_trade(trade: Trade, channel: str | None = None) -> str:
    """The ``trade`` event Bitstamp would send for ``trade`` on ``channel`` (default: the
    trade channel of ``trade.raw_symbol``).

    Carries both the float fields and the exact ``_str`` fields, ``microtimestamp`` (from
    ``ts_event``, µs) and ``timestamp`` (s). ``trade.trade_id`` must be decimal digits
    (ValueError otherwise); the order ids are derived from it.
    """
    tid = int(trade.trade_id)
    us = trade.ts_event
    if channel is None:
        channel = CHANNEL_PREFIX + trade.raw_symbol.lower()
    price, size = trade.price, trade.size
    return (
        f'{{"data":{{"id":{tid},"timestamp":"{us // 1_000_000}",'
        f'"amount":{json_number(size)},"amount_str":"{json_text(size)}",'
        f'"price":{json_number(price)},"price_str":"{json_text(price)}",'
        f'"type":{1 if trade.side == SELL else 0},"microtimestamp":"{us}",'
        f'"buy_order_id":{1_500_000_000_000_000 + 2 * tid},'
        f'"sell_order_id":{1_500_000_000_000_001 + 2 * tid}}},'
        f'"channel":"{json_text(channel)}","event":"trade"}}'
    )


def encode_subscribed(channel: str, *, unsubscribed: bool = False) -> str:
    """``{"event":"bts:subscription_succeeded","channel":..,"data":{}}`` (or the
    ``bts:unsubscription_succeeded`` form)."""
    event = "bts:unsubscription_succeeded" if unsubscribed else "bts:subscription_succeeded"
    return orjson.dumps({"event": event, "channel": channel, "data": {}}).decode()


def encode_error(message: str) -> str:
    """``{"event":"bts:error","channel":"","data":{"code":null,"message":..}}``."""
    data = {"code": None, "message": message}
    return orjson.dumps({"event": "bts:error", "channel": "", "data": data}).decode()


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client's control message: subscribe, unsubscribe (with a channel) or heartbeat."""

    event: Literal["bts:subscribe", "bts:unsubscribe", "bts:heartbeat"]
    channel: str = ""


@dataclass(frozen=True, slots=True)
class RequestError:
    """A client message Bitstamp would answer with :func:`encode_error`."""

    message: str


INCORRECT_JSON: Final = "Incorrect JSON format."
BAD_SUBSCRIPTION: Final = "Bad subscription string."
INVALID_CHANNEL: Final = "Invalid channel provided."


def parse_client_request(frame: str | bytes) -> ClientRequest | RequestError:
    """Decode a client's control frame the way Bitstamp does (never raises)."""
    try:
        msg = orjson.loads(frame)
    except (ValueError, TypeError):
        return RequestError(INCORRECT_JSON)
    if type(msg) is not dict:
        return RequestError(INCORRECT_JSON)
    event = msg.get("event")
    if event == "bts:heartbeat":
        return ClientRequest("bts:heartbeat")
    if event not in ("bts:subscribe", "bts:unsubscribe"):
        return RequestError(BAD_SUBSCRIPTION)
    data = msg.get("data")
    channel = data.get("channel") if type(data) is dict else None
    if type(channel) is not str or not channel:
        return RequestError(BAD_SUBSCRIPTION)
    return ClientRequest(event, channel)
