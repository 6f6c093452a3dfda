"""Binance spot (and Binance.US) trade protocol, both directions (docs: exchanges.md).

Pure: no network, no clock, no sleeping. The client side (:class:`BinanceProtocol`) builds the
connection URL and subscribe frames and parses received frames; the server side (the ``encode_*``
functions and :func:`parse_client_request`) is what the fake exchange speaks.

Wire facts used here:

- raw stream ``/ws/btcusdt@trade`` sends the event object itself; combined streams
  ``/stream?streams=a/b`` wrap it as ``{"stream": "btcusdt@trade", "data": {...}}``;
- ``trade`` carries the per-symbol contiguous id in ``t``, ``aggTrade`` in ``a``; ``p``/``q`` are
  decimal strings, ``T`` the trade time in ms, ``m=true`` means the buyer was the maker, so the
  TAKER SOLD;
- ``{"result": null, "id": 1}`` acknowledges a request, ``{"code": 2, "msg": "...", "id": 1}``
  rejects it, ``{"e": "serverShutdown", ...}`` (combined stream ``!serverShutdown``) asks for a
  reconnect.

``parse`` is the hot path (hundreds of thousands of calls per second): one ``orjson.loads``, direct
dict indexing in one ``try``, exact type checks, a 1-tuple result. Everything else is slow path.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from connectors.base import Ack, ExchangeError, ParseResult, ReconnectNotice
from connectors.wire import SymbolCached, shape_error
from engine.errors import MalformedFrame
from engine.records import BUY, SELL, Trade

StreamType = Literal["trade", "aggTrade"]

BINANCE_URL: Final = "wss://stream.binance.com:9443"
BINANCE_US_URL: Final = "wss://stream.binance.us:9443"
MAX_STREAMS_PER_CONNECTION: Final = 1024
"""Binance's limit of streams on one connection."""

STREAM_TYPES: Final[tuple[StreamType, ...]] = ("trade", "aggTrade")
_MAX_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_NOTHING: Final[tuple[Trade, ...]] = ()
_DECIMAL: Final = re.compile(r"[0-9]{1,40}(?:\.[0-9]{1,40})?", re.ASCII).fullmatch
_JSON_SAFE: Final = re.compile(r"[0-9A-Za-z.]*", re.ASCII).fullmatch
_SYMBOL_TEXT: Final = re.compile(r"[0-9A-Za-z]{2,40}", re.ASCII).fullmatch
_loads: Final = orjson.loads

# The fast path of :meth:`BinanceProtocol.parse`: a combined-stream ``trade`` event exactly as
# Binance formats it (its keys in its order, integers without leading zeros, prices and sizes
# of digits and dots, Binance.US's optional ``b``/``a`` order ids). A frame this pattern matches
# is valid JSON whose parse by the JSON path gives the same trade; anything else (other
# events, other spacing or key order, escapes, out-of-range numbers) takes the JSON path. One
# match costs about a sixth less than ``orjson.loads`` and the checks after it
# (docs: architecture.md#the-hot-path).
_INT = r"(?:0|[1-9][0-9]{0,17})"
_FAST_TRADE = (
    r'\{"stream":"[a-z0-9]{1,40}@trade","data":\{"e":"trade","E":'
    + _INT
    + r',"s":"([A-Z0-9]{1,40})",'
    r'"t":(' + _INT + r'),"p":"([0-9.]{1,80})","q":"([0-9.]{1,80})",'
    r'(?:"b":' + _INT + r',"a":' + _INT + r",)?"
    r'"T":(' + _INT + r'),"m":(?:(true)|false),"M":(?:true|false)\}\}'
)
_fast_text: Final = re.compile(_FAST_TRADE, re.ASCII).fullmatch


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def stream_name(raw_symbol: str, stream_type: StreamType) -> str:
    """The Binance stream name of a symbol: ``btcusdt@trade``.

    Raises :class:`ValueError` for a symbol that is not 2-40 ASCII letters/digits (it would
    otherwise end up verbatim in a URL).
    """
    if not _SYMBOL_TEXT(raw_symbol):
        raise ValueError(f"binance symbol {raw_symbol!r} is not 2-40 letters and digits")
    return f"{raw_symbol.lower()}@{stream_type}"


class BinanceProtocol(SymbolCached):
    """The client side of Binance's trade streams (implements ``ExchangeProtocol``).

    ``stream_type`` chooses what :meth:`connection_url` and :meth:`subscribe_messages` ask for;
    :meth:`parse` accepts both ``trade`` and ``aggTrade`` events whatever it is. ``exchange``
    names the records (``"binanceus"`` reuses this class with :data:`BINANCE_US_URL`).
    """

    sequenced = True
    """Trade ids (``t``, or ``a`` for aggTrade) rise by exactly one per symbol."""

    max_streams_per_connection = MAX_STREAMS_PER_CONNECTION

    keepalive_interval: float | None = None
    """Binance pings the client every 20 s; websockets answers with a pong automatically."""

    def __init__(
        self,
        stream_type: StreamType = "trade",
        *,
        exchange: str = "binance",
        default_url: str = BINANCE_URL,
    ) -> None:
        if stream_type not in STREAM_TYPES:
            raise ValueError(f"binance stream type must be one of {STREAM_TYPES}")
        self.name = exchange
        self.default_url = default_url
        self.stream_type: StreamType = stream_type
        self._request_ids = itertools.count(1)
        super().__init__()

    # -- client requests ------------------------------------------------------------------------

    def keepalive_message(self) -> str | None:
        return None

    def streams(self, symbols: Sequence[str]) -> list[str]:
        """Stream names for these raw symbols; raises ValueError beyond 1024 or on a bad name."""
        if len(symbols) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(
                f"binance allows {MAX_STREAMS_PER_CONNECTION} streams per connection, "
                f"got {len(symbols)}"
            )
        return [stream_name(symbol, self.stream_type) for symbol in symbols]

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """The combined-stream URL ``{base}/stream?streams=btcusdt@trade/ethusdt@trade``.

        With no symbols, the bare ``{base}/ws`` endpoint (subscribe with
        :meth:`subscribe_messages`). Raises ValueError for too many or ill-formed symbols.
        """
        base = base_url.rstrip("/")
        streams = self.streams(symbols)
        if not streams:
            return f"{base}/ws"
        return f"{base}/stream?streams={'/'.join(streams)}"

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """The live ``SUBSCRIBE`` frame for these symbols, for a connection to ``/ws``.

        One frame for all streams (at most 1024); request ids count up from 1 per instance.
        Empty when there are no symbols.
        """
        streams = self.streams(symbols)
        if not streams:
            return []
        request = {"method": "SUBSCRIBE", "params": streams, "id": next(self._request_ids)}
        return [orjson.dumps(request).decode()]

    # -- received frames ------------------------------------------------------------------------

    def parse(self, frame: str | bytes, ts_recv: int) -> ParseResult:
        """Decode one received frame (raw or combined form).

        Returns a 1-tuple of :class:`Trade` for a ``trade``/``aggTrade`` event, an empty tuple for
        any other market-data event, :class:`Ack` for ``{"result":..,"id":..}``,
        :class:`ExchangeError` (fatal) for ``{"code":..,"msg":..}`` and :class:`ReconnectNotice`
        for ``serverShutdown``. Raises only :class:`MalformedFrame`.

        A ``trade`` event in Binance's own layout takes a fast path (one regular-expression
        match instead of a JSON parse); its result is the JSON path's (:meth:`parse_json`) for
        every frame, which the tests check property by property.
        """
        found = None
        if type(frame) is bytes:
            try:  # noqa: SIM105 (a context manager per frame costs more than the match)
                found = _fast_text(frame.decode())
            except UnicodeDecodeError:
                pass  # the JSON path names the error
        elif type(frame) is str:
            found = _fast_text(frame)
        if found is not None:
            raw, tid, price, size, ms, maker = found.groups()
            ts = int(ms)
            if ts <= _MAX_MS:
                symbol = self._symbols.get(raw)
                if symbol is None:
                    symbol = self._canonical(raw)
                side = BUY if maker is None else SELL
                return (Trade(self.name, symbol, raw, tid, price, size, side, ts * 1000, ts_recv),)
        return self.parse_json(frame, ts_recv)

    def parse_json(self, frame: str | bytes, ts_recv: int) -> ParseResult:
        """:meth:`parse` through ``orjson.loads``: every frame the fast path does not take."""
        try:
            msg = _loads(frame)
        except (ValueError, TypeError) as exc:
            raise MalformedFrame("json", str(exc)[:120]) from None
        try:
            data = msg.get("data", msg)
            event = data.get("e")
            if event == "trade":
                tid = data["t"]
            elif event == "aggTrade":
                tid = data["a"]
            else:
                return self._parse_other(msg, data)
            price = data["p"]
            size = data["q"]
            ts = data["T"]
            raw = data["s"]
            maker = data["m"]
            symbol = self._symbols.get(raw)  # TypeError when raw is unhashable
        except (AttributeError, KeyError, TypeError) as exc:
            raise shape_error(
                exc, "frame or its data is not a JSON object", "trade", "e or s has the wrong type"
            ) from None
        if type(price) is not str or type(size) is not str or not price or not size:
            raise MalformedFrame("type", "p and q must be non-empty strings")
        if type(ts) is not int or type(tid) is not int or tid < 0 or not 0 <= ts <= _MAX_MS:
            raise MalformedFrame("type", "T and the trade id must be integers in range")
        if maker is True:
            side = SELL
        elif maker is False:
            side = BUY
        else:
            raise MalformedFrame("type", "m must be a boolean")
        if symbol is None:
            symbol = self._canonical(raw)  # not cached yet (or not text: MalformedFrame)
        return (Trade(self.name, symbol, raw, str(tid), price, size, side, ts * 1000, ts_recv),)

    def _parse_other(self, msg: dict[str, object], data: dict[str, object]) -> ParseResult:
        """Everything that is not a trade event (slow path)."""
        event = data.get("e")
        if event == "serverShutdown" or msg.get("stream") == "!serverShutdown":
            return ReconnectNotice("serverShutdown")
        if event is not None:
            if type(event) is not str:
                raise MalformedFrame("type", "e must be a string")
            return _NOTHING
        if data is msg:
            if "result" in msg and "id" in msg:
                return Ack(f"id={msg['id']}")
            if "code" in msg:
                code, text = msg["code"], msg.get("msg")
                if type(code) is not int or type(text) is not str:
                    raise MalformedFrame("type", "error code must be an integer, msg a string")
                return ExchangeError(f"binance error {code}: {text}", fatal=True)
        return _NOTHING  # bookTicker and other events without "e"


# -- server side (the fake exchange) ----------------------------------------------------------


def encode_trade(trade: Trade, *, combined: bool, stream_type: StreamType = "trade") -> str:
    """The frame Binance would send for ``trade`` (raw form, or combined when ``combined``).

    ``trade.trade_id`` must be decimal digits (ValueError otherwise). Built by string
    formatting (the fake exchange renders hundreds of thousands per second); text that would
    need JSON escaping goes through orjson instead.
    """
    tid = int(trade.trade_id)
    ms = trade.ts_event // 1000
    maker = "true" if trade.side == SELL else "false"
    raw, price, size = trade.raw_symbol, trade.price, trade.size
    if not _JSON_SAFE(raw + price + size):
        raw, price, size = (orjson.dumps(v).decode()[1:-1] for v in (raw, price, size))
    if stream_type == "trade":
        body = (
            f'{{"e":"trade","E":{ms},"s":"{raw}","t":{tid},"p":"{price}","q":"{size}",'
            f'"T":{ms},"m":{maker},"M":true}}'
        )
    else:
        body = (
            f'{{"e":"aggTrade","E":{ms},"s":"{raw}","a":{tid},"p":"{price}","q":"{size}",'
            f'"f":{tid},"l":{tid},"T":{ms},"m":{maker},"M":true}}'
        )
    if combined:
        return f'{{"stream":"{raw.lower()}@{stream_type}","data":{body}}}'
    return body


def encode_ack(request_id: int | str | None, result: object = None) -> str:
    """``{"result":null,"id":N}`` (``result`` is a list for LIST_SUBSCRIPTIONS)."""
    return orjson.dumps({"result": result, "id": request_id}).decode()


def encode_error(code: int, msg: str, request_id: int | str | None) -> str:
    """``{"code":2,"msg":"Invalid symbol","id":N}``."""
    return orjson.dumps({"code": code, "msg": msg, "id": request_id}).decode()


def encode_server_shutdown(ts_ms: int, combined: bool) -> str:
    """The ``serverShutdown`` event (combined: on stream ``!serverShutdown``)."""
    body = f'{{"e":"serverShutdown","E":{int(ts_ms)}}}'
    return f'{{"stream":"!serverShutdown","data":{body}}}' if combined else body


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A control request from a client: SUBSCRIBE, UNSUBSCRIBE or LIST_SUBSCRIPTIONS."""

    method: Literal["SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS"]
    params: tuple[str, ...]
    id: int | str | None


@dataclass(frozen=True, slots=True)
class RequestError:
    """A client request Binance would reject; answer it with :func:`encode_error`."""

    code: int
    msg: str
    id: int | str | None = None


def parse_client_request(frame: str | bytes) -> ClientRequest | RequestError:
    """Decode a client's control frame the way Binance does (never raises).

    Error codes as Binance: 3 invalid JSON, 2 invalid request (unknown method, bad params or id).
    """
    try:
        msg = orjson.loads(frame)
    except (ValueError, TypeError):
        return RequestError(3, "Invalid JSON: frame is not JSON")
    if type(msg) is not dict:
        return RequestError(2, "Invalid request: not a JSON object")
    request_id = msg.get("id")
    if request_id is not None and type(request_id) not in (int, str):
        return RequestError(2, "Invalid request: invalid id")
    assert request_id is None or isinstance(request_id, (int, str))
    method = msg.get("method")
    params = msg.get("params", [])
    if method == "LIST_SUBSCRIPTIONS":
        return ClientRequest("LIST_SUBSCRIPTIONS", (), request_id)
    if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
        return RequestError(2, f"Invalid request: unknown method {_short(method)}", request_id)
    if type(params) is not list or not all(type(p) is str for p in params):
        return RequestError(2, "Invalid request: params must be a list of strings", request_id)
    if len(params) > MAX_STREAMS_PER_CONNECTION:
        return RequestError(2, "Invalid request: too many streams", request_id)
    return ClientRequest(method, tuple(params), request_id)


def parse_stream_name(name: str) -> tuple[str, str] | None:
    """Split ``btcusdt@trade`` into ``("BTCUSDT", "trade")``; None when it is not ``sym@kind``.

    ``kind`` is whatever follows the first ``@`` (``depth@100ms`` included).
    """
    symbol, at, kind = name.partition("@")
    if not at or not kind or not _SYMBOL_TEXT(symbol):
        return None
    return symbol.upper(), kind
