"""Binance's server side for the fake exchange: paths, live subscriptions, frames.

Paths: ``/ws`` (raw form, subscribe with JSON requests), ``/ws/<stream>[/<stream>...]`` (raw form)
and ``/stream?streams=a/b`` (combined form, ``{"stream":..,"data":..}``); anything else is 404.
Live requests (``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``) are acknowledged with
``{"result":null,"id":N}``; a bad request gets ``{"code":2,"msg":..,"id":N}`` and the connection
stays open, as on Binance.

A stream for a symbol the server does not trade is accepted and stays silent, as on Binance; with
the ``reject-unknown`` fault it is answered with ``{"code":2,"msg":"Invalid symbol","id":N}`` and
the connection is closed (code 1008).

Books (docs: testing.md#order-books-on-the-fake-exchange): ``<symbol>@depth@100ms`` (or
``@depth``) carries the book market's updates as ``depthUpdate`` events (``U``/``u`` the
message's update ids), with no snapshot on the stream; ``GET /api/v3/depth?symbol=..&limit=..``
on the same port answers the snapshot (``lastUpdateId``, at most ``limit`` levels per side,
default 100, capped at 5000), ``{"code":-1121,"msg":"Invalid symbol."}`` (HTTP 400) for a
symbol the server does not trade.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qs, urlsplit

from connectors.binance import (
    ClientRequest,
    RequestError,
    StreamType,
    encode_ack,
    encode_error,
    encode_server_shutdown,
    encode_trade,
    parse_client_request,
    parse_stream_name,
)
from connectors.books.binance import encode_depth_snapshot, encode_depth_update
from connectors.fake.adapters import Malformations, Reply, SessionBase
from connectors.fake.book_channels import BookChannel, RestError, RestQuery
from connectors.fake.book_market import BookMessage
from connectors.fake.faults import Faults
from engine.records import Trade

_INVALID_SYMBOL: Final = "Invalid symbol"
_REJECT_CLOSE: Final = (1008, "invalid symbol")
_DATA_KINDS: Final[dict[str, StreamType]] = {"trade": "trade", "aggTrade": "aggTrade"}
_BOOK_KINDS: Final = frozenset({"depth@100ms", "depth"})
DEPTH_PATH: Final = "/api/v3/depth"
DEPTH_DEFAULT_LIMIT: Final = 100
DEPTH_MAX_LIMIT: Final = 5000
_BAD_LIMIT: Final = '{"code":-1100,"msg":"Illegal characters found in parameter \'limit\'."}'
_MISSING: Final = ("p", "q", "T", "s", "m")
_WRONG: Final = {"p": 1.5, "q": 2, "T": "soon", "m": "yes"}
_MALFORMATIONS: Final = {
    False: Malformations(item=(), missing=_MISSING, wrong=_WRONG),
    True: Malformations(item=("data",), missing=_MISSING, wrong=_WRONG),
}
"""Raw form: the trade is the frame; combined form: it is the frame's ``data``."""


class BinanceSession(SessionBase):
    """One connection to the fake Binance (implements ``ServerSession``). ``malformed`` spoils
    ``p``, ``q``, ``T``, ``s`` or ``m`` (see :func:`connectors.fake.adapters.malformed_frame`)."""

    PURE_ENCODE = True  # encode() is a function of the trade and the stream
    BOOK_IN_BAND = False  # the snapshot comes over REST

    def __init__(
        self, combined: bool, url_streams: Sequence[str], symbols: frozenset[str], faults: Faults
    ) -> None:
        super().__init__(symbols, faults)
        self.combined = combined
        self._url_streams = tuple(url_streams)
        self._reject_unknown = faults.reject_unknown
        self._kinds: dict[str, StreamType] = {}

    def _unknown(self, streams: Sequence[str]) -> bool:
        for name in streams:
            parsed = parse_stream_name(name)
            if parsed is None or parsed[0] not in self._symbols:
                return True
        return False

    def opening(self) -> Reply:
        if self._reject_unknown and self._unknown(self._url_streams):
            error = encode_error(2, _INVALID_SYMBOL, None)
            return Reply(frames=(error,), close=_REJECT_CLOSE)
        return Reply(subscribe=self._url_streams)

    def on_message(self, frame: str | bytes) -> Reply:
        request = parse_client_request(frame)
        if isinstance(request, RequestError):
            return Reply(frames=(encode_error(request.code, request.msg, request.id),))
        return self._answer(request)

    def _answer(self, request: ClientRequest) -> Reply:
        if request.method == "LIST_SUBSCRIPTIONS":
            return Reply(frames=(encode_ack(request.id, list(self.streams)),))
        if request.method == "UNSUBSCRIBE":
            return Reply(frames=(encode_ack(request.id),), unsubscribe=request.params)
        if self._reject_unknown and self._unknown(request.params):
            return Reply(
                frames=(encode_error(2, _INVALID_SYMBOL, request.id),), close=_REJECT_CLOSE
            )
        return Reply(frames=(encode_ack(request.id),), subscribe=request.params)

    def market_symbol(self, stream: str) -> str | None:
        parsed = parse_stream_name(stream)
        if parsed is None or parsed[1] not in _DATA_KINDS or parsed[0] not in self._symbols:
            return None
        return parsed[0]

    def rebuild_routes(self) -> None:
        super().rebuild_routes()
        self._kinds = {
            name: _DATA_KINDS[name.partition("@")[2]]
            for names in self._routes.values()
            for name in names
        }

    def book_channel(self, stream: str) -> BookChannel | None:
        parsed = parse_stream_name(stream)
        if parsed is None or parsed[1] not in _BOOK_KINDS or parsed[0] not in self._symbols:
            return None
        return BookChannel(parsed[0])

    def encode_book(self, msg: BookMessage, stream: str, corrupt: bool) -> str | None:
        if msg.snapshot:
            return None  # no snapshot on the diff stream: a restart shows as a gap in ids
        return encode_depth_update(
            msg.raw_symbol,
            msg.first_id,
            msg.update_id,
            msg.bids,
            msg.asks,
            event_ms=msg.ts_us // 1000,
            combined=self.combined,
        )

    def encode(self, trade: Trade, stream: str) -> str:
        kind = self._kinds.get(stream, "trade")
        return encode_trade(trade, combined=self.combined, stream_type=kind)

    # heartbeats: none, Binance keeps connections alive with WebSocket pings, not messages

    def shutdown_notice(self, ts_ms: int) -> str | None:
        return encode_server_shutdown(ts_ms, self.combined)

    def malformations(self, trade: Trade) -> Malformations:
        return _MALFORMATIONS[self.combined]


class BinanceServer:
    """Binance's paths and subscription protocol (implements ``ServerAdapter``). Binance.US
    speaks the same protocol: ``BinanceServer(name="binanceus")``."""

    def __init__(self, name: str = "binance") -> None:
        self.name = name

    def rest(self, path: str, symbols: frozenset[str]) -> RestQuery | RestError | None:
        """``GET /api/v3/depth?symbol=..&limit=..``; None (404) for another path."""
        parts = urlsplit(path)
        if parts.path.rstrip("/") != DEPTH_PATH:
            return None
        query = parse_qs(parts.query)
        symbol = query.get("symbol", [""])[0]
        if symbol not in symbols:
            return RestError(400, '{"code":-1121,"msg":"Invalid symbol."}')
        text = query.get("limit", [str(DEPTH_DEFAULT_LIMIT)])[0]
        if not text.isdigit() or int(text) < 1:
            return RestError(400, _BAD_LIMIT)
        return RestQuery(symbol, min(int(text), DEPTH_MAX_LIMIT))

    def encode_rest_snapshot(self, msg: BookMessage) -> str:
        return encode_depth_snapshot(msg.update_id, msg.bids, msg.asks)

    def session(self, path: str, symbols: frozenset[str], faults: Faults) -> BinanceSession | None:
        parts = urlsplit(path)
        route = parts.path.rstrip("/")
        if route == "/ws":
            return BinanceSession(False, (), symbols, faults)
        if route.startswith("/ws/"):
            streams = [s for s in route[len("/ws/") :].split("/") if s]
            return BinanceSession(False, streams, symbols, faults)
        if route == "/stream":
            query = parse_qs(parts.query)
            streams = [s for value in query.get("streams", []) for s in value.split("/") if s]
            return BinanceSession(True, streams, symbols, faults)
        return None
