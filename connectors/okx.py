"""OKX API v5 public ``trades`` channel, both directions (docs: exchanges.md).

Pure: no network, no clock, no sleeping. The client side (:class:`OkxProtocol`) builds the
connection URL and subscribe frame and parses received frames; the server side (the
``encode_*`` functions and :func:`parse_client_request`) is what the fake exchange speaks.

Wire facts used here (https://www.okx.com/docs-v5/en/#overview-websocket):

- public endpoint ``wss://ws.okx.com:8443/ws/v5/public``; subscribe
  ``{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}, ...]}``; each argument is
  acknowledged with ``{"event":"subscribe","arg":{..},"connId":".."}``; a refusal is
  ``{"event":"error","code":"60018","msg":"Wrong URL or channel:trades,instId:.. doesn't exist...",
  "connId":".."}``. Errors answer requests and this client sends only subscriptions (and the
  text ``ping``, answered by ``pong``), so every ``error`` event is a refused subscription: fatal;
- a push carries one or more trades: ``{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":
  [{"instId":"BTC-USDT","tradeId":"..","px":"..","sz":"..","side":"sell","ts":"..","count":"1",
  "source":"0","seqId":..}]}``; every field a string except ``seqId``; ``ts`` in ms; ``side`` is
  the taker's. The channel aggregates fills of one taker order at one price into one trade
  (``count`` > 1) whose ``tradeId`` is the first of the fills, so ids skip: trades are not
  ``sequenced`` (no gap detection);
- keepalive: the server drops a connection that has sent nothing for 30 s; the client sends the
  bare text frame ``ping`` and the server answers the bare text ``pong`` (not JSON);
- ``{"event":"notice","code":"64008","msg":"The connection will soon be closed for a service
  upgrade..."}`` asks the client to reconnect now;
- limits: subscribe/unsubscribe/login requests are rate limited per connection (480 per hour,
  one request whatever its number of arguments), and a request's arguments may total at most
  64 KB.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from connectors.base import Ack, ExchangeError, Heartbeat, ParseResult, ReconnectNotice
from connectors.wire import (
    DIGITS_MS,
    MAX_MS,
    SymbolCached,
    json_text,
    shape_error,
    short,
    stream_names,
    with_default_path,
)
from engine.errors import MalformedFrame
from engine.records import BUY, SELL, Trade

OKX_URL: Final = "wss://ws.okx.com:8443/ws/v5/public"
PUBLIC_PATH: Final = "/ws/v5/public"
MAX_STREAMS_PER_CONNECTION: Final = 500
"""Instruments per connection, all in one subscribe request (one token of OKX's 480/hour
budget). OKX caps a request's arguments at 64 KB; 500 arguments stay under 40 KB even with the
longest instrument id accepted (41 characters)."""
KEEPALIVE_SECONDS: Final = 20.0
"""Seconds between text ``ping`` frames: OKX drops a connection silent for 30 s."""
CHANNEL: Final = "trades"
PING: Final = "ping"
PONG: Final = "pong"
NOTICE_RECONNECT: Final = "64008"
NOTICE_MSG: Final = "The connection will soon be closed for a service upgrade. Please reconnect."

_INST_ID: Final = re.compile(r"[0-9A-Za-z]{1,20}-[0-9A-Za-z]{1,20}", re.ASCII).fullmatch
_SIDES: Final = {"buy": BUY, "sell": SELL}
_SEQ_TEXT: Final = re.compile(r"[0-9]{1,18}", re.ASCII).fullmatch
_REFUSED_INSTRUMENT: Final = re.compile(r"instId:([0-9A-Za-z]{1,20}-[0-9A-Za-z]{1,20})", re.ASCII)
_NOTHING: Final[tuple[Trade, ...]] = ()
_loads: Final = orjson.loads


def inst_id(raw_symbol: str) -> str:
    """OKX's instrument id for the spot pair ``raw_symbol`` (upper case, ``BTC-USDT``).

    Raises :class:`ValueError` unless it is ``BASE-QUOTE`` in letters and digits: derivatives
    (``BTC-USDT-SWAP``) have no canonical ``BASE-QUOTE`` symbol and are not supported.
    """
    if not _INST_ID(raw_symbol):
        raise ValueError(f"okx instrument {raw_symbol!r} is not like BTC-USDT")
    return raw_symbol.upper()


class OkxProtocol(SymbolCached):
    """The client side of OKX's public ``trades`` channel (implements ``ExchangeProtocol``)."""

    name = "okx"
    default_url = OKX_URL
    max_streams_per_connection = MAX_STREAMS_PER_CONNECTION
    sequenced = False
    """``tradeId`` skips when fills are aggregated (``count`` > 1)."""
    keepalive_interval: float | None = KEEPALIVE_SECONDS

    # -- client requests ------------------------------------------------------------------------

    def keepalive_message(self) -> str | None:
        return PING

    def inst_ids(self, symbols: Sequence[str]) -> list[str]:
        """Instrument ids for these symbols; ValueError beyond the limit or on a bad id."""
        return stream_names(self.name, "instruments", MAX_STREAMS_PER_CONNECTION, symbols, inst_id)

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """``base_url`` when it names a path, else ``{base_url}/ws/v5/public`` (so
        ``OKX_WS_URL=ws://127.0.0.1:9001`` reaches the public endpoint). Raises ValueError for
        too many or ill-formed symbols."""
        self.inst_ids(symbols)
        return with_default_path(base_url, PUBLIC_PATH)

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """One ``subscribe`` frame with a ``trades`` argument per instrument; empty without
        symbols."""
        ids = self.inst_ids(symbols)
        if not ids:
            return []
        args = [{"channel": CHANNEL, "instId": i} for i in ids]
        return [orjson.dumps({"op": "subscribe", "args": args}).decode()]

    # -- received frames ------------------------------------------------------------------------

    def parse(self, frame: str | bytes, ts_recv: int) -> ParseResult:
        """Decode one received frame.

        Returns every trade of a ``trades`` push in order (a list, possibly empty), an empty
        tuple for other channels and events, :class:`Heartbeat` for the text ``pong``,
        :class:`Ack` for a subscription, a fatal :class:`ExchangeError` for an ``error`` event
        and :class:`ReconnectNotice` for notice 64008. Raises only :class:`MalformedFrame`.
        """
        try:
            msg = _loads(frame)
        except (ValueError, TypeError) as exc:
            if frame == PONG or frame == b"pong":
                return Heartbeat()
            raise MalformedFrame("json", str(exc)[:120]) from None
        try:
            data = msg.get("data")
            if data is None:
                return self._parse_other(msg)
            arg = msg["arg"]
            if arg["channel"] != CHANNEL:
                return _NOTHING
            raw = arg["instId"]
            symbol = self._symbols.get(raw)  # TypeError when raw is unhashable
            if symbol is None:
                symbol = self._canonical(raw)
            if type(data) is not list:
                raise MalformedFrame("type", "data must be a list of trades")
            out: list[Trade] = []
            for item in data:
                tid = item["tradeId"]
                price = item["px"]
                size = item["sz"]
                side = _SIDES.get(item["side"])
                ts = item["ts"]
                if type(price) is not str or type(size) is not str or not price or not size:
                    raise MalformedFrame("type", "px and sz must be non-empty strings")
                if type(tid) is not str or not tid or side is None:
                    raise MalformedFrame("type", "tradeId must be text, side buy or sell")
                if type(ts) is not str or not DIGITS_MS(ts) or (ms := int(ts)) > MAX_MS:
                    raise MalformedFrame("type", "ts must be decimal text of a time in range")
                out.append(
                    Trade(self.name, symbol, raw, tid, price, size, side, ms * 1000, ts_recv)
                )
        except (AttributeError, KeyError, TypeError) as exc:
            raise shape_error(
                exc,
                "frame or arg is not a JSON object",
                "trade push",
                "arg, data or a trade has the wrong type",
            ) from None
        return out

    def _parse_other(self, msg: dict[str, object]) -> ParseResult:
        """Events (no ``data``): acknowledgements, errors, notices (slow path)."""
        event = msg.get("event")
        if event is None:
            return _NOTHING
        if type(event) is not str:
            raise MalformedFrame("type", "event must be a string")
        if event in ("subscribe", "unsubscribe"):
            arg = msg.get("arg")
            detail = f"{arg.get('channel')}:{arg.get('instId')}" if isinstance(arg, dict) else ""
            return Ack(f"{event} {detail}".rstrip())
        if event in ("error", "notice"):
            code, text = msg.get("code"), msg.get("msg", "")
            if type(code) is not str or type(text) is not str:
                raise MalformedFrame("type", "code and msg must be strings")
            if event == "error":
                # "Wrong URL or channel:trades,instId:NOPE-USDT doesn't exist": the instrument
                refused = tuple(dict.fromkeys(_REFUSED_INSTRUMENT.findall(text)))
                return ExchangeError(f"okx error {code}: {text}", fatal=True, symbols=refused)
            if code == NOTICE_RECONNECT:
                return ReconnectNotice(f"okx notice {code}")
            return ExchangeError(f"okx notice {code}: {text}")
        if event == "channel-conn-count-error":
            return ExchangeError(f"okx {event}: {short(msg.get('channel'))}")
        return _NOTHING  # login, channel-conn-count, future events


# -- server side (the fake exchange) ----------------------------------------------------------


def _trade_body(trade: Trade) -> str:
    raw = json_text(trade.raw_symbol)
    return (
        f'{{"instId":"{raw}","tradeId":"{json_text(trade.trade_id)}",'
        f'"px":"{json_text(trade.price)}","sz":"{json_text(trade.size)}",'
        f'"side":"{trade.side}","ts":"{trade.ts_event // 1000}","count":"1","source":"0",'
        f'"seqId":{trade.trade_id if _SEQ_TEXT(trade.trade_id) else 0}}}'
    )


def encode_trades(trades: Sequence[Trade]) -> str:
    """One ``trades`` push carrying ``trades`` (at least one, all of one instrument), in order.

    ``ts`` is ``ts_event`` in ms (truncated); ``raw_symbol`` is the ``instId``. Built by string
    formatting (the fake exchange renders many per second).
    """
    if not trades:
        raise ValueError("a trades push carries at least one trade")
    raw = json_text(trades[0].raw_symbol)
    body = ",".join(_trade_body(t) for t in trades)
    return f'{{"arg":{{"channel":"trades","instId":"{raw}"}},"data":[{body}]}}'


def encode_trade(trade: Trade) -> str:
    """The push OKX would send for one trade."""
    raw = json_text(trade.raw_symbol)
    return f'{{"arg":{{"channel":"trades","instId":"{raw}"}},"data":[{_trade_body(trade)}]}}'


def encode_event(event: str, channel: str, instrument: str, conn_id: str) -> str:
    """``{"event":"subscribe","arg":{"channel":..,"instId":..},"connId":..}`` (or unsubscribe)."""
    arg = {"channel": channel, "instId": instrument}
    return orjson.dumps({"event": event, "arg": arg, "connId": conn_id}).decode()


def encode_error(code: str, msg: str, conn_id: str) -> str:
    """``{"event":"error","code":"60018","msg":..,"connId":..}``."""
    return orjson.dumps({"event": "error", "code": code, "msg": msg, "connId": conn_id}).decode()


def encode_notice(conn_id: str) -> str:
    """Notice 64008: the connection closes soon for a service upgrade; reconnect."""
    doc = {"event": "notice", "code": NOTICE_RECONNECT, "msg": NOTICE_MSG, "connId": conn_id}
    return orjson.dumps(doc).decode()


def unknown_channel_msg(channel: str, instrument: str) -> str:
    """OKX's text for a subscription to an instrument (or channel) that does not exist."""
    return (
        f"Wrong URL or channel:{channel},instId:{instrument} doesn't exist. "
        "Please use the correct URL, channel and parameters referring to API document."
    )


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client's ``subscribe``/``unsubscribe`` with its (channel, instId) arguments, or the
    text ``ping``."""

    op: Literal["subscribe", "unsubscribe", "ping"]
    args: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RequestError:
    """A request OKX would answer with :func:`encode_error`."""

    code: str
    msg: str


def parse_client_request(frame: str | bytes) -> ClientRequest | RequestError:
    """Decode a client's frame the way OKX does (never raises): 60012 for an invalid request."""
    if frame == PING or frame == b"ping":
        return ClientRequest("ping")
    text = frame.decode(errors="replace") if isinstance(frame, bytes) else frame
    invalid = RequestError("60012", f"Invalid request: {text[:200]}")
    try:
        msg = orjson.loads(frame)
    except (ValueError, TypeError):
        return invalid
    if type(msg) is not dict or msg.get("op") not in ("subscribe", "unsubscribe"):
        return invalid
    args = msg.get("args")
    if type(args) is not list or not args:
        return invalid
    pairs: list[tuple[str, str]] = []
    for arg in args:
        channel = arg.get("channel") if type(arg) is dict else None
        instrument = arg.get("instId") if type(arg) is dict else None
        if type(channel) is not str or type(instrument) is not str:
            return invalid
        pairs.append((channel, instrument))
    op: Literal["subscribe", "unsubscribe"] = (
        "subscribe" if msg["op"] == "subscribe" else "unsubscribe"
    )
    return ClientRequest(op, tuple(pairs))
