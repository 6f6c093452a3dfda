"""Kraken spot WebSocket v2 ``trade`` channel, both directions (docs: exchanges.md).

Pure: no network, no clock, no sleeping. The client side (:class:`KrakenProtocol`) builds the
subscribe and ping frames and parses received frames; the server side (the ``encode_*``
functions and :func:`parse_client_request`) is what the fake exchange speaks.

Wire facts used here (Kraken's v2 WebSocket documentation):

- endpoint ``wss://ws.kraken.com/v2``; on connect the server sends
  ``{"channel":"status","type":"update","data":[{"system":"online","api_version":"v2",..}]}``
  (``system`` also ``maintenance``, ``cancel_only``, ``post_only``: no matching happens then);
- ``{"method":"subscribe","params":{"channel":"trade","symbol":[..],"snapshot":false},
  "req_id":N}`` is acknowledged once per symbol with ``{"method":"subscribe","result":{..},
  "success":true,..}``; a refused symbol gets ``{"method":"subscribe","success":false,
  "error":"Currency pair not supported XBT/USD","symbol":"XBT/USD",..}``;
- trades: ``{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",
  "price":105944.2,"qty":0.00027625,"ord_type":"limit","trade_id":10218208,
  "timestamp":"2023-10-06T17:35:55.440295Z"}]}`` (``type":"snapshot"`` for the optional initial
  50 trades); ``side`` is the TAKER's; ``trade_id`` is a sequence number per book; ``price`` and
  ``qty`` are JSON NUMBERS;
- ``{"channel":"heartbeat"}`` about once a second without other traffic; the application ping
  ``{"method":"ping","req_id":N}`` is answered ``{"method":"pong","req_id":N,..}``.

Exact decimals: ``orjson`` (and ``json`` by default) turn ``105944.2`` into a float, which can
change the text (``0.1000`` becomes ``0.1``; long mantissas round). This module decodes with the
standard library's ``json`` and ``parse_float``/``parse_int`` hooks that keep each number's exact
text in a marker ``str`` subclass, so a number can still be told from a JSON string. The cost,
measured on this machine with a one-trade frame: decoding takes about 2.5 µs against 0.7 µs with
orjson (+1.8 µs per frame, whatever the number of trades in it); the whole ``parse`` about
5.4 µs against Binance's 1.5 µs. Kraken's trade rates (tens to hundreds per second per pair)
are far below where that matters; the Binance hot path keeps orjson.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from connectors.base import Ack, ExchangeError, Heartbeat, ParseResult
from connectors.limits import MAX_JSON_DEPTH, exceeds_depth
from connectors.wire import SymbolCached, stream_names
from engine.errors import MalformedFrame
from engine.records import BUY, SELL, Trade
from engine.timefmt import format_us, parse_us

KRAKEN_URL: Final = "wss://ws.kraken.com/v2"
MAX_SYMBOLS_PER_CONNECTION: Final = 50
"""Pairs per connection. Kraken documents no per-connection pair limit (subscribe requests are
rate limited per connection); 50 pairs keep one subscribe frame small and bound what one
dropped connection costs, at one connection per 50 pairs."""

KEEPALIVE_SECONDS: Final = 30.0
"""Seconds between application pings (Kraken's own heartbeats come about once a second)."""

_NOTHING: Final[tuple[Trade, ...]] = ()
_PAIR: Final = re.compile(r"[A-Z0-9]{1,20}/[A-Z0-9]{1,20}", re.ASCII).fullmatch
_NUMBER: Final = re.compile(r"[0-9]{1,40}(?:\.[0-9]{1,40})?(?:[eE][+-]?[0-9]{1,3})?", re.ASCII)
_TRADE_ID: Final = re.compile(r"[0-9]{1,18}", re.ASCII).fullmatch
_DECIMAL_OUT: Final = re.compile(r"[0-9]{1,40}(?:\.[0-9]{1,40})?", re.ASCII).fullmatch


class JsonFloat(str):
    """The exact text of a JSON number with a fraction or exponent (``105944.2``)."""

    __slots__ = ()


class JsonInt(str):
    """The exact text of a JSON integer (``10218208``)."""

    __slots__ = ()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder: Final = json.JSONDecoder(
    parse_float=JsonFloat, parse_int=JsonInt, parse_constant=_no_constant
)


def loads_exact(frame: str | bytes) -> Any:
    """Decode JSON keeping every number's text (:class:`JsonFloat`, :class:`JsonInt`).

    Raises ValueError for invalid JSON or UTF-8, NaN/Infinity, or nesting deeper than
    :data:`~connectors.limits.MAX_JSON_DEPTH` (checked before the recursive decoder runs).
    """
    if exceeds_depth(frame):
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    text = frame if isinstance(frame, str) else frame.decode("utf-8")
    try:
        return _decoder.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _text(value: object, limit: int = 200) -> str:
    """Exchange-supplied text made safe to log and print (no lone surrogates, bounded)."""
    text = str.__str__(value) if isinstance(value, str) else repr(value)
    return text[:limit].encode("utf-8", "replace").decode("utf-8")


def pairs(symbols: Sequence[str]) -> list[str]:
    """Kraken v2 pair names (upper case, ``BTC/USD``) for these symbols.

    Raises ValueError for more than :data:`MAX_SYMBOLS_PER_CONNECTION` or a symbol that is not
    ``BASE/QUOTE`` of ASCII letters and digits. Legacy names (``XBT/USD``) are passed on as
    given: Kraken v2 refuses them, and that refusal is the configuration error to report.
    """
    return stream_names("kraken", "pairs", MAX_SYMBOLS_PER_CONNECTION, symbols, _pair)


def _pair(symbol: str) -> str:
    pair = symbol.upper()
    if not _PAIR(pair):
        raise ValueError(f"kraken pair {symbol!r} is not BASE/QUOTE (e.g. BTC/USD)")
    return pair


class KrakenProtocol(SymbolCached):
    """The client side of Kraken v2's ``trade`` channel (implements ``ExchangeProtocol``)."""

    name = "kraken"
    default_url = KRAKEN_URL

    sequenced = True
    """``trade_id`` rises by exactly one per pair (book)."""

    max_streams_per_connection = MAX_SYMBOLS_PER_CONNECTION

    keepalive_interval: float | None = KEEPALIVE_SECONDS
    """An application ping every 30 s, on top of Kraken's ~1/s heartbeats."""

    def __init__(self) -> None:
        super().__init__()
        self._request_ids = itertools.count(1)

    # -- client requests ------------------------------------------------------------------------

    def keepalive_message(self) -> str | None:
        """``{"method":"ping","req_id":N}``; request ids are shared with subscriptions."""
        return f'{{"method":"ping","req_id":{next(self._request_ids)}}}'

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """The base URL itself (``.../v2``; Kraken subscribes by message). Raises ValueError for
        too many or ill-formed symbols, so a bad list fails before anything connects."""
        pairs(symbols)
        return base_url

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """One ``subscribe`` frame for the ``trade`` channel of all symbols, without snapshot
        (empty when there are no symbols)."""
        names = pairs(symbols)
        if not names:
            return []
        request = {
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": names, "snapshot": False},
            "req_id": next(self._request_ids),
        }
        return [orjson.dumps(request).decode()]

    # -- received frames ------------------------------------------------------------------------

    def parse(self, frame: str | bytes, ts_recv: int) -> ParseResult:
        """Decode one received frame.

        A ``trade`` update or snapshot gives a tuple of :class:`Trade` (one per entry, price and
        size as the exact number text); ``heartbeat``, ``pong`` and an ``online`` status give
        :class:`Heartbeat`; successful requests :class:`Ack`; a refused subscription a fatal
        :class:`ExchangeError` with Kraken's message; any other failed request, or a system
        status other than ``online``, a non-fatal one; other channels an empty tuple. Raises
        only :class:`MalformedFrame`.
        """
        try:
            msg = loads_exact(frame)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
            raise MalformedFrame("json", str(exc)[:120]) from None
        if type(msg) is not dict:
            raise MalformedFrame("not-object", "frame is not a JSON object")
        channel = msg.get("channel")
        if channel != "trade":
            return self._parse_other(msg, channel)
        data = msg.get("data")
        if msg.get("type") not in ("update", "snapshot") or type(data) is not list:
            raise MalformedFrame("type", "trade needs type update/snapshot and a data list")
        return tuple([self._trade(item, ts_recv) for item in data])

    def _trade(self, item: object, ts_recv: int) -> Trade:
        try:
            raw = item["symbol"]  # type: ignore[index]
            taker = item["side"]  # type: ignore[index]
            price = item["price"]  # type: ignore[index]
            qty = item["qty"]  # type: ignore[index]
            tid = item["trade_id"]  # type: ignore[index]
            when = item["timestamp"]  # type: ignore[index]
        except KeyError as exc:
            raise MalformedFrame("missing-field", f"trade has no field {exc}") from None
        except TypeError:
            raise MalformedFrame("not-object", "a trade entry is not a JSON object") from None
        price_type, qty_type = type(price), type(qty)
        if (price_type is not JsonFloat and price_type is not JsonInt) or (
            qty_type is not JsonFloat and qty_type is not JsonInt
        ):
            raise MalformedFrame("type", "price and qty must be JSON numbers")
        if not _NUMBER.fullmatch(price) or not _NUMBER.fullmatch(qty):
            raise MalformedFrame("decimal", "price and qty must be non-negative numbers")
        if type(tid) is not JsonInt or not _TRADE_ID(tid):
            raise MalformedFrame("type", "trade_id must be a non-negative integer")
        if taker == "buy":
            side = BUY
        elif taker == "sell":
            side = SELL
        else:
            raise MalformedFrame("type", "side must be 'buy' or 'sell'")
        if type(when) is not str:
            raise MalformedFrame("type", "timestamp must be a string")
        try:
            ts_event = parse_us(when)
        except ValueError as exc:
            raise MalformedFrame("time", str(exc)) from None
        if type(raw) is not str:
            raise MalformedFrame("type", "symbol must be a string")
        symbol = self._symbols.get(raw)
        if symbol is None:
            symbol = self._canonical(raw)
        return Trade(
            self.name, symbol, raw, str.__str__(tid), str.__str__(price), str.__str__(qty),
            side, ts_event, ts_recv,
        )  # fmt: skip

    def _parse_other(self, msg: dict[str, object], channel: object) -> ParseResult:
        """Everything that is not a trade (slow path)."""
        if channel == "heartbeat":
            return Heartbeat()
        if channel == "status":
            return _status(msg)
        if channel is not None:
            if type(channel) is not str:
                raise MalformedFrame("type", "channel must be a string")
            return _NOTHING  # book, ticker, ohlc, instrument, ...
        method = msg.get("method")
        if method == "pong":
            return Heartbeat()
        if method is None:
            if "error" in msg:
                return ExchangeError(f"kraken error: {_text(msg['error'])}", fatal=False)
            return _NOTHING
        if type(method) is not str:
            raise MalformedFrame("type", "method must be a string")
        return _response(msg, method)


def _status(msg: dict[str, object]) -> Heartbeat | ExchangeError:
    """The system status Kraken sends on connect: ``online`` proves the connection is alive
    (a :class:`Heartbeat`), not that a subscription is served; anything else means no
    trading."""
    data = msg.get("data")
    entry = data[0] if type(data) is list and data else None
    system = entry.get("system") if type(entry) is dict else None
    if type(system) is not str:
        raise MalformedFrame("type", "status needs data[0].system as a string")
    if system == "online":
        return Heartbeat()
    return ExchangeError(f"kraken system status {_text(system, 40)}: no trading", fatal=False)


def _response(msg: dict[str, object], method: str) -> Ack | ExchangeError:
    """A response to a request: ``subscribe``, ``unsubscribe`` and the like."""
    success = msg.get("success")
    symbol = msg.get("symbol")
    if symbol is None and type(msg.get("result")) is dict:
        symbol = msg["result"].get("symbol")  # type: ignore[attr-defined]
    where = f" {_text(symbol, 40)}" if type(symbol) is str else ""
    if success is True:
        return Ack(f"{_text(method, 40)}{where} req_id={_text(msg.get('req_id'), 20)}")
    if success is not False:
        raise MalformedFrame("type", "success must be a boolean")
    error = _text(msg.get("error", "no error text"))
    fatal = method == "subscribe" and "already subscribed" not in error.lower()
    refused = (_text(symbol, 40),) if type(symbol) is str else ()
    return ExchangeError(
        f"kraken {_text(method, 40)} failed{where}: {error}", fatal=fatal, symbols=refused
    )


# -- server side (the fake exchange) ----------------------------------------------------------


def _number(text: str) -> str:
    if not _DECIMAL_OUT(text):
        raise ValueError(f"{text!r} cannot be written as a plain JSON number")
    return text


def encode_trades(trades: Sequence[Trade], *, snapshot: bool = False) -> str:
    """The ``trade`` frame carrying ``trades`` (``type`` update, or snapshot).

    ``price``/``qty`` are written as JSON numbers with exactly the trades' decimal text;
    ValueError for a price, size or trade id that is not plain decimal digits.
    """
    entries = []
    for trade in trades:
        tid = int(trade.trade_id)
        raw = trade.raw_symbol
        if not _PAIR(raw):
            raw = orjson.dumps(raw).decode()[1:-1]
        ord_type = "market" if tid % 3 == 0 else "limit"
        entries.append(
            f'{{"symbol":"{raw}","side":"{trade.side}","price":{_number(trade.price)},'
            f'"qty":{_number(trade.size)},"ord_type":"{ord_type}","trade_id":{tid},'
            f'"timestamp":"{format_us(trade.ts_event)}"}}'
        )
    kind = "snapshot" if snapshot else "update"
    return f'{{"channel":"trade","type":"{kind}","data":[{",".join(entries)}]}}'


def encode_status(system: str = "online", connection_id: int = 1) -> str:
    """The ``status`` update Kraken sends on connect and when the engine's status changes."""
    return orjson.dumps(
        {
            "channel": "status",
            "type": "update",
            "data": [
                {
                    "api_version": "v2",
                    "connection_id": connection_id,
                    "system": system,
                    "version": "2.0.0",
                }
            ],
        }
    ).decode()


HEARTBEAT: Final = '{"channel":"heartbeat"}'


def encode_response(
    method: str,
    req_id: int | None,
    time_in_us: int,
    time_out_us: int,
    *,
    result: dict[str, object] | None = None,
    error: str | None = None,
    symbol: str | None = None,
) -> str:
    """A response: success with ``result`` (when ``error`` is None), or failure with ``error``.

    ``symbol`` names the refused pair of a failed subscription. ``req_id`` is echoed when given.
    """
    body: dict[str, object] = {"method": method}
    if error is None:
        if result is not None:
            body["result"] = result
        body["success"] = True
    else:
        body["error"] = error
        body["success"] = False
        if symbol is not None:
            body["symbol"] = symbol
    body["time_in"] = format_us(time_in_us)
    body["time_out"] = format_us(time_out_us)
    if req_id is not None:
        body["req_id"] = req_id
    return orjson.dumps(body).decode()


def encode_pong(req_id: int | None, time_in_us: int, time_out_us: int) -> str:
    """``{"method":"pong","req_id":N,"time_in":..,"time_out":..}`` (no ``req_id`` when None)."""
    body: dict[str, object] = {"method": "pong"}
    if req_id is not None:
        body["req_id"] = req_id
    body["time_in"] = format_us(time_in_us)
    body["time_out"] = format_us(time_out_us)
    return orjson.dumps(body).decode()


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client request: ``subscribe``/``unsubscribe`` (``channel``, ``symbols``) or ``ping``;
    ``depth`` as requested (the ``book`` channel's), None when absent."""

    method: Literal["subscribe", "unsubscribe", "ping"]
    req_id: int | None
    channel: str = ""
    symbols: tuple[str, ...] = ()
    snapshot: bool = False
    depth: int | None = None


@dataclass(frozen=True, slots=True)
class RequestError:
    """A request Kraken would refuse; answer with :func:`encode_response` and ``error``."""

    method: str
    error: str
    req_id: int | None = None


def parse_client_request(frame: str | bytes) -> ClientRequest | RequestError:
    """Decode a client's request the way Kraken v2 does (never raises)."""
    try:
        msg = orjson.loads(frame)
    except (ValueError, TypeError):
        return RequestError("", "EGeneral:Invalid arguments: the request is not JSON")
    if type(msg) is not dict:
        return RequestError("", "EGeneral:Invalid arguments: the request is not an object")
    method, req_id = msg.get("method"), msg.get("req_id")
    name = method if type(method) is str else ""
    if req_id is not None and (type(req_id) is not int or req_id < 0):
        return RequestError(name, "EGeneral:Invalid arguments: req_id must be an integer")
    if method == "ping":
        return ClientRequest("ping", req_id)
    if method not in ("subscribe", "unsubscribe"):
        return RequestError(name, f"Method not found: {_text(method, 40)}", req_id)
    params = msg.get("params")
    if type(params) is not dict or type(params.get("channel")) is not str:
        return RequestError(name, "EGeneral:Invalid arguments: params.channel missing", req_id)
    symbols = params.get("symbol", [])
    if type(symbols) is not list or not all(type(s) is str for s in symbols):
        return RequestError(name, "EGeneral:Invalid arguments: symbol must be a list", req_id)
    snapshot = params.get("snapshot", False)
    if type(snapshot) is not bool:
        return RequestError(name, "EGeneral:Invalid arguments: snapshot must be a boolean", req_id)
    depth = params.get("depth")
    if depth is not None and type(depth) is not int:
        return RequestError(name, "EGeneral:Invalid arguments: depth must be an integer", req_id)
    kind: Literal["subscribe", "unsubscribe"] = (
        "subscribe" if method == "subscribe" else "unsubscribe"
    )
    return ClientRequest(kind, req_id, params["channel"], tuple(symbols), snapshot, depth)
