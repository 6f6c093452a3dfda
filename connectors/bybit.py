"""Bybit v5 public spot ``publicTrade`` topic, both directions (docs: exchanges.md).

Pure: no network, no clock, no sleeping. The client side (:class:`BybitProtocol`) builds the
connection URL and subscribe frames and parses received frames; the server side (the
``encode_*`` functions and :func:`parse_client_request`) is what the fake exchange speaks.

Wire facts used here (https://bybit-exchange.github.io/docs/v5/ws/connect and
.../v5/websocket/public/trade):

- spot endpoint ``wss://stream.bybit.com/v5/public/spot``; subscribe
  ``{"req_id":"1","op":"subscribe","args":["publicTrade.BTCUSDT"]}``, answered
  ``{"success":true,"ret_msg":"subscribe","conn_id":"..","req_id":"1","op":"subscribe"}``; a
  refusal has ``"success":false`` and the reason in ``ret_msg``
  (``"Invalid symbol :[publicTrade.NOPEUSDT]"``): fatal;
- limits: spot takes at most 10 args per subscribe request, and one public connection's
  ``args`` may total at most 21,000 characters;
- a push: ``{"topic":"publicTrade.BTCUSDT","ts":..,"type":"snapshot","data":[{"i":"..",
  "T":1761583474343,"p":"115440.7","v":"0.00903","S":"Buy","seq":..,"s":"BTCUSDT","BT":false}]}``,
  up to 1024 trades per message, sorted by match time. ``p``/``v`` are decimal strings, ``T``
  the trade time in ms, ``S`` the taker's side (``Buy``/``Sell``), ``i`` the trade id (text);
  ``i`` is not a contiguous counter and ``seq`` has gaps, so trades are not ``sequenced``;
- keepalive: the client sends ``{"req_id":"..","op":"ping"}`` (Bybit recommends every 20 s);
  the answer is ``{"success":true,"ret_msg":"pong","conn_id":"..","op":"ping"}`` (private
  channels answer ``{"op":"pong",...}``). Bybit sends no reconnect notice.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from connectors.base import Ack, ExchangeError, Heartbeat, ParseResult
from connectors.wire import (
    MAX_MS,
    PrefixedNames,
    SymbolCached,
    json_text,
    shape_error,
    stream_names,
    with_default_path,
)
from engine.errors import MalformedFrame
from engine.records import BUY, SELL, Trade

BYBIT_URL: Final = "wss://stream.bybit.com/v5/public/spot"
SPOT_PATH: Final = "/v5/public/spot"
TOPIC_PREFIX: Final = "publicTrade."
MAX_ARGS_PER_REQUEST: Final = 10
"""Bybit spot accepts at most 10 args in one subscribe request."""
MAX_ARGS_CHARS: Final = 21_000
"""Bybit's limit on the total length of one public connection's ``args``."""
MAX_STREAMS_PER_CONNECTION: Final = 300
"""Topics per connection: 300 topics of the longest symbol the configuration allows (40
characters, 55 with prefix, quotes and comma) stay under :data:`MAX_ARGS_CHARS`."""
KEEPALIVE_SECONDS: Final = 20.0
"""Bybit recommends a ping every 20 seconds."""

_SIDES: Final = {"Buy": BUY, "Sell": SELL}
_SEQ_TEXT: Final = re.compile(r"[0-9]{1,18}", re.ASCII).fullmatch
_REFUSED_TOPIC: Final = re.compile(r"publicTrade\.([0-9A-Za-z]{2,40})", re.ASCII)
_NOTHING: Final[tuple[Trade, ...]] = ()
_loads: Final = orjson.loads


_NAMES: Final = PrefixedNames("bybit", TOPIC_PREFIX, str.upper)
topic_name: Final = _NAMES.name
"""The trade topic of a symbol: ``publicTrade.BTCUSDT`` (upper case); :class:`ValueError` for
a symbol that is not 2-40 ASCII letters/digits."""
symbol_of: Final = _NAMES.symbol
"""The symbol of a trade topic (``publicTrade.BTCUSDT`` -> ``BTCUSDT``), or None."""


class BybitProtocol(SymbolCached):
    """The client side of Bybit's spot ``publicTrade`` topics (implements ``ExchangeProtocol``).

    Request ids (``req_id``) count up from 1 per instance, shared by subscriptions and pings.
    """

    name = "bybit"
    default_url = BYBIT_URL
    max_streams_per_connection = MAX_STREAMS_PER_CONNECTION
    sequenced = False
    """``i`` is not a contiguous per-symbol counter (and ``seq`` has gaps)."""
    keepalive_interval: float | None = KEEPALIVE_SECONDS

    def __init__(self) -> None:
        super().__init__()
        self._request_ids = itertools.count(1)

    # -- client requests ------------------------------------------------------------------------

    def keepalive_message(self) -> str | None:
        return f'{{"req_id":"{next(self._request_ids)}","op":"ping"}}'

    def topics(self, symbols: Sequence[str]) -> list[str]:
        """Trade topics for these symbols; ValueError beyond the limit or on a bad name."""
        return stream_names(self.name, "topics", MAX_STREAMS_PER_CONNECTION, symbols, topic_name)

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """``base_url`` when it names a path, else ``{base_url}/v5/public/spot`` (so
        ``BYBIT_WS_URL=ws://127.0.0.1:9001`` reaches the spot endpoint). Raises ValueError for
        too many or ill-formed symbols."""
        self.topics(symbols)
        return with_default_path(base_url, SPOT_PATH)

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """``subscribe`` frames of at most 10 topics each (Bybit spot's limit)."""
        topics = self.topics(symbols)
        return [
            orjson.dumps(
                {
                    "req_id": str(next(self._request_ids)),
                    "op": "subscribe",
                    "args": topics[start : start + MAX_ARGS_PER_REQUEST],
                }
            ).decode()
            for start in range(0, len(topics), MAX_ARGS_PER_REQUEST)
        ]

    # -- received frames ------------------------------------------------------------------------

    def parse(self, frame: str | bytes, ts_recv: int) -> ParseResult:
        """Decode one received frame.

        Returns every trade of a ``publicTrade`` push in order (a list, possibly empty), an
        empty tuple for other topics, :class:`Ack` for a successful subscription,
        :class:`Heartbeat` for a pong and :class:`ExchangeError` for ``"success":false``
        (fatal when it answers a subscription). Raises only :class:`MalformedFrame`.
        """
        try:
            msg = _loads(frame)
        except (ValueError, TypeError) as exc:
            raise MalformedFrame("json", str(exc)[:120]) from None
        try:
            topic = msg.get("topic")
            if type(topic) is not str or not topic.startswith(TOPIC_PREFIX):
                return self._parse_other(msg, topic)
            data = msg["data"]
            if type(data) is not list:
                raise MalformedFrame("type", "data must be a list of trades")
            out: list[Trade] = []
            for item in data:
                tid = item["i"]
                price = item["p"]
                size = item["v"]
                side = _SIDES.get(item["S"])
                ts = item["T"]
                raw = item["s"]
                symbol = self._symbols.get(raw)  # TypeError when raw is unhashable
                if type(price) is not str or type(size) is not str or not price or not size:
                    raise MalformedFrame("type", "p and v must be non-empty strings")
                if type(tid) is not str or not tid or side is None:
                    raise MalformedFrame("type", "i must be text, S Buy or Sell")
                if type(ts) is not int or not 0 <= ts <= MAX_MS:
                    raise MalformedFrame("type", "T must be an integer time in range")
                if symbol is None:
                    symbol = self._canonical(raw)
                out.append(
                    Trade(self.name, symbol, raw, tid, price, size, side, ts * 1000, ts_recv)
                )
        except (AttributeError, KeyError, TypeError) as exc:
            raise shape_error(
                exc, "frame is not a JSON object", "trade", "data or a trade has the wrong type"
            ) from None
        return out

    def _parse_other(self, msg: dict[str, object], topic: object) -> ParseResult:
        """Everything that is not a trade push (slow path)."""
        if topic is not None:
            if type(topic) is not str:
                raise MalformedFrame("type", "topic must be a string")
            return _NOTHING  # orderbook, tickers and other topics
        op = msg.get("op")
        if op is None:
            return _NOTHING
        if type(op) is not str:
            raise MalformedFrame("type", "op must be a string")
        if op == "pong":
            return Heartbeat()
        success, text = msg.get("success"), msg.get("ret_msg", "")
        if type(success) is not bool or type(text) is not str:
            raise MalformedFrame("type", "success must be a boolean, ret_msg a string")
        if not success:
            # "Invalid symbol :[publicTrade.NOPEUSDT]": the refused topics' symbols
            refused = tuple(dict.fromkeys(_REFUSED_TOPIC.findall(text)))
            return ExchangeError(
                f"bybit {op} failed: {text}", fatal=op == "subscribe", symbols=refused
            )
        if op == "ping":
            return Heartbeat()
        return Ack(f"{op} req_id={msg.get('req_id')}")


# -- server side (the fake exchange) ----------------------------------------------------------


def _trade_body(trade: Trade) -> str:
    side = "Sell" if trade.side == SELL else "Buy"
    tid = json_text(trade.trade_id)
    seq = trade.trade_id if _SEQ_TEXT(trade.trade_id) else "0"  # stays a 64-bit integer
    return (
        f'{{"i":"{tid}","T":{trade.ts_event // 1000},"p":"{json_text(trade.price)}",'
        f'"v":"{json_text(trade.size)}","S":"{side}","seq":{seq},'
        f'"s":"{json_text(trade.raw_symbol)}","BT":false,"RPI":false}}'
    )


def encode_trades(trades: Sequence[Trade], ts_ms: int | None = None) -> str:
    """One ``publicTrade`` push carrying ``trades`` (at least one, all of one symbol), in order.

    ``T`` is ``ts_event`` in ms (truncated); the message ``ts`` is ``ts_ms`` or the last trade's
    time. ``raw_symbol`` is the topic's symbol.
    """
    if not trades:
        raise ValueError("a publicTrade push carries at least one trade")
    ts = trades[-1].ts_event // 1000 if ts_ms is None else ts_ms
    topic = json_text(TOPIC_PREFIX + trades[0].raw_symbol)
    body = ",".join(_trade_body(t) for t in trades)
    return f'{{"topic":"{topic}","ts":{ts},"type":"snapshot","data":[{body}]}}'


def encode_trade(trade: Trade) -> str:
    """The push Bybit would send for one trade."""
    return encode_trades((trade,))


def encode_response(
    op: str, req_id: str | None, conn_id: str, *, success: bool = True, ret_msg: str = ""
) -> str:
    """``{"success":true,"ret_msg":..,"conn_id":..,"req_id":..,"op":..}`` (``req_id`` only when
    the request had one)."""
    doc: dict[str, object] = {"success": success, "ret_msg": ret_msg, "conn_id": conn_id}
    if req_id is not None:
        doc["req_id"] = req_id
    doc["op"] = op
    return orjson.dumps(doc).decode()


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client's ``subscribe``/``unsubscribe`` (with topics) or ``ping``."""

    op: Literal["subscribe", "unsubscribe", "ping"]
    args: tuple[str, ...] = ()
    req_id: str | None = None


@dataclass(frozen=True, slots=True)
class RequestError:
    """A request Bybit would answer with ``"success":false``."""

    op: str
    ret_msg: str
    req_id: str | None = None


def parse_client_request(frame: str | bytes) -> ClientRequest | RequestError:
    """Decode a client's frame the way Bybit does (never raises)."""
    try:
        msg = orjson.loads(frame)
    except (ValueError, TypeError):
        return RequestError("", "Invalid request: not JSON")
    if type(msg) is not dict:
        return RequestError("", "Invalid request: not a JSON object")
    req_id, op, args = msg.get("req_id"), msg.get("op"), msg.get("args", [])
    if req_id is not None and type(req_id) is not str:
        req_id = str(req_id)
    if op == "ping":
        return ClientRequest("ping", (), req_id)
    if op not in ("subscribe", "unsubscribe"):
        return RequestError(op if type(op) is str else "", f"Invalid op: {op!r}", req_id)
    if type(args) is not list or not args or not all(type(a) is str for a in args):
        return RequestError(op, "Invalid request: args must be a list of topics", req_id)
    kind: Literal["subscribe", "unsubscribe"] = "subscribe" if op == "subscribe" else "unsubscribe"
    return ClientRequest(kind, tuple(args), req_id)
