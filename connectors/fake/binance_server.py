"""Binance's server side for the fake exchange: paths, live subscriptions, frames.

Paths: ``/ws`` (raw form, subscribe with JSON requests), ``/ws/<stream>[/<stream>...]`` (raw form)
and ``/stream?streams=a/b`` (combined form, ``{"stream":..,"data":..}``); anything else is 404.
Live requests (``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``) are acknowledged with
``{"result":null,"id":N}``; a bad request gets ``{"code":2,"msg":..,"id":N}`` and the connection
stays open, as on Binance.

A stream for a symbol the server does not trade is accepted and stays silent, as on Binance; with
the ``reject-unknown`` fault it is answered with ``{"code":2,"msg":"Invalid symbol","id":N}`` and
the connection is closed (code 1008).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import parse_qs, urlsplit

import orjson

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
from connectors.fake.adapters import Reply
from connectors.fake.faults import Faults
from engine.records import Trade

_INVALID_SYMBOL: Final = "Invalid symbol"
_REJECT_CLOSE: Final = (1008, "invalid symbol")
_DATA_KINDS: Final[dict[str, StreamType]] = {"trade": "trade", "aggTrade": "aggTrade"}


class BinanceSession:
    """One connection to the fake Binance (implements ``ServerSession``)."""

    def __init__(
        self, combined: bool, url_streams: Sequence[str], symbols: frozenset[str], faults: Faults
    ) -> None:
        self.combined = combined
        self._url_streams = tuple(url_streams)
        self._symbols = symbols
        self._reject_unknown = faults.reject_unknown
        self.streams: dict[str, None] = {}  # ordered set of subscribed stream names
        self._routes: dict[str, list[str]] = {}
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

    def apply(self, reply: Reply) -> None:
        for name in reply.unsubscribe:
            self.streams.pop(name, None)
        for name in reply.subscribe:
            self.streams[name] = None
        if reply.subscribe or reply.unsubscribe:
            self._rebuild_routes()

    def _rebuild_routes(self) -> None:
        routes: dict[str, list[str]] = {}
        kinds: dict[str, StreamType] = {}
        for name in self.streams:
            parsed = parse_stream_name(name)
            if parsed is None:
                continue
            symbol, kind = parsed
            stream_type = _DATA_KINDS.get(kind)
            if stream_type is not None and symbol in self._symbols:
                routes.setdefault(symbol, []).append(name)
                kinds[name] = stream_type
        self._routes, self._kinds = routes, kinds

    def routes(self) -> Mapping[str, Sequence[str]]:
        return self._routes

    def encode(self, trade: Trade, stream: str) -> str:
        kind = self._kinds.get(stream, "trade")
        return encode_trade(trade, combined=self.combined, stream_type=kind)

    def heartbeats(self, ts_ms: int) -> Sequence[str]:
        return ()  # Binance keeps connections alive with WebSocket pings, not messages

    def shutdown_notice(self, ts_ms: int) -> str | None:
        return encode_server_shutdown(ts_ms, self.combined)

    def malformed(self, trade: Trade, stream: str, rng: random.Random) -> str:
        """One of: a truncated frame, non-JSON text, a missing field, a wrong-typed field,
        a JSON array. Every one makes ``BinanceProtocol.parse`` raise ``MalformedFrame``."""
        good = self.encode(trade, stream)
        choice = rng.randrange(5)
        if choice == 0:
            return good[: rng.randrange(1, len(good) - 1)]
        if choice == 1:
            return "\x00not json " + good[:20]
        msg = orjson.loads(good)
        data = msg["data"] if self.combined else msg
        if choice == 2:
            del data[rng.choice(("p", "q", "T", "s", "m"))]
        elif choice == 3:
            field = rng.choice(("p", "q", "T", "m"))
            data[field] = {"p": 1.5, "q": 2, "T": "soon", "m": "yes"}[field]
        else:
            msg = [msg]
        return orjson.dumps(msg).decode()


class BinanceServer:
    """Binance's paths and subscription protocol (implements ``ServerAdapter``). Binance.US
    speaks the same protocol: ``BinanceServer(name="binanceus")``."""

    def __init__(self, name: str = "binance") -> None:
        self.name = name

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
