"""Coinbase Exchange ``matches`` channel, both directions (docs: exchanges.md).

Pure: no network, no clock, no sleeping. The client side (:class:`CoinbaseProtocol`) builds the
subscribe frame and parses received frames; the server side (the ``encode_*`` functions and
:func:`parse_client_request`) is what the fake exchange speaks.

Wire facts used here (Coinbase Exchange WebSocket feed documentation):

- one endpoint, ``wss://ws-feed.exchange.coinbase.com``; a client must subscribe within 5 s;
  ``{"type":"subscribe","product_ids":[..],"channels":["matches","heartbeat"]}`` is answered with
  ``{"type":"subscriptions","channels":[{"name":"matches","product_ids":[..]},..]}``;
- after subscribing, each product first gets one ``last_match`` (the most recent trade), then a
  ``match`` per trade: ``trade_id`` (integer, contiguous per product), ``price``/``size``
  (decimal strings), ``side`` — the MAKER's side, so the taker's is the opposite — and ``time``
  (RFC 3339 with µs). ``sequence`` is the product's full-feed sequence and has gaps on this
  channel, so continuity is checked on ``trade_id``;
- the ``heartbeat`` channel sends ``{"type":"heartbeat","last_trade_id":..,"product_id":..}``
  once a second per product: it keeps a quiet product's connection provably alive;
- errors are ``{"type":"error","message":"Failed to subscribe","reason":"BTC-XYZ is not a valid
  product"}``; other errors (``ErrSlowConsume``, ``Message too big``, ...) come before Coinbase
  drops the connection, which the session then re-opens;
- new message types may appear at any time and must be ignored (l2update, ticker, snapshot,
  received, open, done, change, activate, status, ...).

``last_match`` after a reconnect repeats a trade the client usually has already: the session's
per-symbol trade-id check (``sequenced``) drops it as a duplicate; when the client has NOT seen it
(trades happened while disconnected), it is a genuine trade and the ids before it are a gap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from connectors.base import Ack, ExchangeError, Heartbeat, ParseResult
from connectors.wire import SymbolCached, stream_names
from engine.errors import MalformedFrame
from engine.records import BUY, SELL, Trade
from engine.timefmt import format_us, parse_us

COINBASE_URL: Final = "wss://ws-feed.exchange.coinbase.com"
MAX_PRODUCTS_PER_CONNECTION: Final = 50
"""Products per connection. Coinbase documents no hard limit per connection, but its best
practices ask to spread subscriptions over several connections (a connection that falls behind
is dropped with ``ErrSlowConsume``) while connection attempts are rate limited per IP. 50
products cost at most 50 heartbeats/s plus their trades on one connection, and even 500 products
need only 10 connections (well inside the burst allowance for connection attempts)."""

CHANNELS: Final = ("matches", "heartbeat")
"""The channels the client subscribes to."""

_NOTHING: Final[tuple[Trade, ...]] = ()
_MAX_TRADE_ID: Final = (1 << 63) - 1
_DECIMAL: Final = re.compile(r"[0-9]{1,40}(?:\.[0-9]{1,40})?", re.ASCII).fullmatch
_PRODUCT: Final = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}", re.ASCII).fullmatch
_INVALID_PRODUCT: Final = re.compile(
    r"([0-9A-Za-z]{1,20}-[0-9A-Za-z]{1,20}) is not a valid product", re.ASCII
)
_JSON_SAFE: Final = re.compile(r"[0-9A-Za-z.:-]*", re.ASCII).fullmatch
_loads: Final = orjson.loads


def _text(value: object, limit: int = 200) -> str:
    """Exchange-supplied text made safe to log and print (no lone surrogates, bounded)."""
    text = value if isinstance(value, str) else repr(value)
    return text[:limit].encode("utf-8", "replace").decode("utf-8")


def product_ids(symbols: Sequence[str]) -> list[str]:
    """Coinbase product ids (upper case) for these symbols.

    Raises ValueError for more than :data:`MAX_PRODUCTS_PER_CONNECTION` or for a symbol that is
    not ``BASE-QUOTE`` of ASCII letters and digits.
    """
    return stream_names("coinbase", "products", MAX_PRODUCTS_PER_CONNECTION, symbols, _product)


def _product(symbol: str) -> str:
    product = symbol.upper()
    if not _PRODUCT(product):
        raise ValueError(f"coinbase product {symbol!r} is not BASE-QUOTE (e.g. BTC-USD)")
    return product


class CoinbaseProtocol(SymbolCached):
    """The client side of Coinbase's ``matches`` channel (implements ``ExchangeProtocol``)."""

    name = "coinbase"
    default_url = COINBASE_URL

    sequenced = True
    """``trade_id`` rises by exactly one per product."""

    max_streams_per_connection = MAX_PRODUCTS_PER_CONNECTION

    keepalive_interval: float | None = None
    """The ``heartbeat`` channel proves liveness once a second; silence means stale."""

    # -- client requests ------------------------------------------------------------------------

    def keepalive_message(self) -> str | None:
        return None

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """The base URL itself (Coinbase subscribes by message). Raises ValueError for too many
        or ill-formed symbols, so a bad list fails before anything connects."""
        product_ids(symbols)
        return base_url

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """One ``subscribe`` frame for ``matches`` and ``heartbeat`` of all symbols (empty when
        there are none)."""
        products = product_ids(symbols)
        if not products:
            return []
        request = {"type": "subscribe", "product_ids": products, "channels": list(CHANNELS)}
        return [orjson.dumps(request).decode()]

    # -- received frames ------------------------------------------------------------------------

    def parse(self, frame: str | bytes, ts_recv: int) -> ParseResult:
        """Decode one received frame.

        ``match`` and ``last_match`` give a 1-tuple of :class:`Trade` (taker side = the opposite
        of Coinbase's maker ``side``); ``subscriptions`` gives :class:`Ack`, ``heartbeat``
        :class:`Heartbeat`, ``error`` :class:`ExchangeError` (fatal for a failed subscription);
        every other message type an empty tuple. Raises only :class:`MalformedFrame`.
        """
        try:
            msg = _loads(frame)
        except (ValueError, TypeError) as exc:
            raise MalformedFrame("json", str(exc)[:120]) from None
        try:
            kind = msg.get("type")
            if kind != "match" and kind != "last_match":  # not `in`: kind may be unhashable
                return self._parse_other(msg, kind)
            tid = msg["trade_id"]
            price = msg["price"]
            size = msg["size"]
            maker = msg["side"]
            when = msg["time"]
            raw = msg["product_id"]
            symbol = self._symbols.get(raw)  # TypeError when raw is unhashable
        except AttributeError:
            raise MalformedFrame("not-object", "frame is not a JSON object") from None
        except KeyError as exc:
            raise MalformedFrame("missing-field", f"{kind} has no field {exc}") from None
        except TypeError:
            raise MalformedFrame("type", "product_id has the wrong type") from None
        if type(price) is not str or type(size) is not str:
            raise MalformedFrame("type", "price and size must be strings")
        if not _DECIMAL(price) or not _DECIMAL(size):
            raise MalformedFrame("decimal", "price and size must be plain decimal text")
        if type(tid) is not int or not 0 <= tid <= _MAX_TRADE_ID:
            raise MalformedFrame("type", "trade_id must be a non-negative integer")
        if maker == "sell":
            side = BUY  # the maker sold: the taker bought
        elif maker == "buy":
            side = SELL
        else:
            raise MalformedFrame("type", "side must be 'buy' or 'sell'")
        if type(when) is not str:
            raise MalformedFrame("type", "time must be a string")
        try:
            ts_event = parse_us(when)
        except ValueError as exc:
            raise MalformedFrame("time", str(exc)) from None
        if symbol is None:
            symbol = self._canonical(raw)
        return (Trade(self.name, symbol, raw, str(tid), price, size, side, ts_event, ts_recv),)

    def _parse_other(self, msg: dict[str, object], kind: object) -> ParseResult:
        """Everything that is not a trade (slow path)."""
        if kind == "heartbeat":
            return Heartbeat()
        if kind == "subscriptions":
            return Ack("subscriptions")
        if kind == "error":
            message, reason = msg.get("message"), msg.get("reason")
            if type(message) is not str or (reason is not None and type(reason) is not str):
                raise MalformedFrame("type", "error message and reason must be strings")
            text = f"{_text(message)}: {_text(reason)}" if reason else _text(message)
            fatal = message.strip().lower().startswith("failed to subscribe")
            # "NOPE-USD is not a valid product": the refused product
            refused = tuple(dict.fromkeys(_INVALID_PRODUCT.findall(reason or "")))
            return ExchangeError(f"coinbase error: {text}", fatal=fatal, symbols=refused)
        if kind is None:
            raise MalformedFrame("missing-field", "message has no type")
        if type(kind) is not str:
            raise MalformedFrame("type", "type must be a string")
        return _NOTHING  # l2update, ticker, snapshot, received, open, done, status, ...


# -- server side (the fake exchange) ----------------------------------------------------------


def sequence_of(trade_id: int) -> int:
    """The fake's full-feed ``sequence`` for a trade: rising, with gaps (as on ``matches``)."""
    return 1_000 + 3 * trade_id


def _order_id(number: int) -> str:
    return f"00000000-0000-4000-8000-{number & 0xFFFF_FFFF_FFFF:012x}"


def encode_match(trade: Trade, *, last: bool = False) -> str:
    """The ``match`` (or, with ``last``, ``last_match``) frame for ``trade``.

    ``side`` is written as the MAKER's side (the opposite of ``trade.side``); ``trade_id`` must
    be decimal digits (ValueError otherwise). Built by string formatting; text that would need
    JSON escaping goes through orjson instead.
    """
    tid = int(trade.trade_id)
    maker = "sell" if trade.side == BUY else "buy"
    raw, price, size = trade.raw_symbol, trade.price, trade.size
    if not _JSON_SAFE(raw + price + size):
        raw, price, size = (orjson.dumps(v).decode()[1:-1] for v in (raw, price, size))
    kind = "last_match" if last else "match"
    return (
        f'{{"type":"{kind}","trade_id":{tid},"maker_order_id":"{_order_id(2 * tid)}",'
        f'"taker_order_id":"{_order_id(2 * tid + 1)}","side":"{maker}","size":"{size}",'
        f'"price":"{price}","product_id":"{raw}","sequence":{sequence_of(tid)},'
        f'"time":"{format_us(trade.ts_event)}"}}'
    )


def encode_subscriptions(channels: Mapping[str, Sequence[str]]) -> str:
    """``{"type":"subscriptions","channels":[{"name":..,"product_ids":[..]},..]}``."""
    listed = [{"name": name, "product_ids": list(ids)} for name, ids in channels.items() if ids]
    return orjson.dumps({"type": "subscriptions", "channels": listed}).decode()


def encode_heartbeat(product_id: str, last_trade_id: int, ts_us: int) -> str:
    """``{"type":"heartbeat","last_trade_id":..,"product_id":..,"sequence":..,"time":..}``."""
    return orjson.dumps(
        {
            "type": "heartbeat",
            "last_trade_id": last_trade_id,
            "product_id": product_id,
            "sequence": sequence_of(last_trade_id),
            "time": format_us(ts_us),
        }
    ).decode()


def encode_error(message: str, reason: str | None = None) -> str:
    """``{"type":"error","message":..,"reason":..}`` (no ``reason`` when None)."""
    body: dict[str, str] = {"type": "error", "message": message}
    if reason is not None:
        body["reason"] = reason
    return orjson.dumps(body).decode()


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A ``subscribe`` or ``unsubscribe`` request: channel name -> product ids."""

    type: Literal["subscribe", "unsubscribe"]
    channels: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class RequestError:
    """A request Coinbase would answer with an error message."""

    message: str
    reason: str | None = None


def parse_client_request(frame: str | bytes) -> ClientRequest | RequestError:
    """Decode a client's request the way Coinbase does (never raises).

    Channels may be names (using the top-level ``product_ids``) or
    ``{"name":..,"product_ids":[..]}`` objects. Product ids are returned as sent; the server
    decides which it trades.
    """
    try:
        msg = orjson.loads(frame)
    except (ValueError, TypeError):
        return RequestError("Malformed JSON", "the message is not JSON")
    if type(msg) is not dict:
        return RequestError("Malformed JSON", "the message is not a JSON object")
    kind: Literal["subscribe", "unsubscribe"]
    if msg.get("type") == "subscribe":
        kind = "subscribe"
    elif msg.get("type") == "unsubscribe":
        kind = "unsubscribe"
    else:
        return RequestError(f"Unknown message type {_text(msg.get('type'), 40)}")
    top = msg.get("product_ids", [])
    channels = msg.get("channels")
    failed = "Failed to subscribe" if kind == "subscribe" else "Failed to unsubscribe"
    if not _strings(top):
        return RequestError(failed, "product_ids must be a list of strings")
    if type(channels) is not list or not channels:
        return RequestError(failed, "channels must be a non-empty list")
    out: dict[str, tuple[str, ...]] = {}
    for channel in channels:
        if type(channel) is str:
            name, ids = channel, top
        elif type(channel) is dict and type(channel.get("name")) is str:
            name, ids = channel["name"], channel.get("product_ids", top)
            if not _strings(ids):
                return RequestError(failed, f"product_ids of {_text(name, 40)} must be strings")
        else:
            return RequestError(failed, "a channel must be a name or {name, product_ids}")
        assert isinstance(ids, list)
        out[name] = tuple(dict.fromkeys((*out.get(name, ()), *ids)))
    return ClientRequest(kind, out)


def _strings(value: object) -> bool:
    return type(value) is list and all(type(v) is str for v in value)
