"""Kraken v2's server side for the fake exchange: status, subscriptions, pings, frames.

The endpoint is ``/v2``; ``/`` is accepted as an alias (on Kraken it is the v1 protocol, which
the fake does not speak), so that ``KRAKEN_WS_URL=<the fake's url>`` works like every other
exchange's override; any other path is 404. On connect the fake sends the ``status`` update
(``system: online``), as Kraken does. Requests:

- ``subscribe``/``unsubscribe`` on the ``trade`` channel get one response per symbol: success for
  a pair the fake trades; ``Currency pair not supported NOPE/USD`` (``success: false``) for one
  it does not — Kraken validates pairs, so this happens whatever the ``reject-unknown`` fault
  says, and the connection stays open; ``Already subscribed``/``Subscription Not Found`` as on
  Kraken. Another channel is refused. A requested snapshot is acknowledged but never sent (the
  ledger could not account for trades from before the subscription);
- ``ping`` gets a ``pong`` echoing ``req_id`` — unless the ``drop-pongs`` fault is set;
- anything else gets a ``success: false`` response naming the problem.

Trades go out one per ``update`` frame with ``price``/``qty`` as JSON numbers written with the
exact decimal text of the trade (the fake market's 8-decimal text stays 8 decimals: a client that
went through float would lose the trailing zeros, which is what the tests want to catch).
``{"channel":"heartbeat"}`` is sent when a subscribed connection has had no trade for a second.
Kraken has no reconnect notice (``shutdown_notice`` is None).

The ``time_in``/``time_out`` stamps of responses use the latest wall time the server handed this
session (heartbeat ticks, trade times), or the system clock before there is one.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Final
from urllib.parse import urlsplit

import orjson

from connectors.fake.adapters import Reply
from connectors.fake.faults import Faults
from connectors.kraken import (
    HEARTBEAT,
    ClientRequest,
    RequestError,
    encode_pong,
    encode_response,
    encode_status,
    encode_trades,
    parse_client_request,
)
from engine.clock import SYSTEM_CLOCK
from engine.records import Trade

PATH: Final = "/v2"
HEARTBEAT_MS: Final = 1000
"""A heartbeat after this long without a trade on a subscribed connection."""


def _stream(symbol: str) -> str:
    return f"trade:{symbol}"


class KrakenSession:
    """One connection to the fake Kraken (implements ``ServerSession``)."""

    def __init__(self, symbols: frozenset[str], faults: Faults, ids: Iterator[int]) -> None:
        self._symbols = symbols
        self._drop_pongs = faults.drop_pongs
        self._ids = ids
        self._subscribed: dict[str, None] = {}
        self._routes: dict[str, list[str]] = {}
        self._now_us = SYSTEM_CLOCK.time_ns() // 1000
        self._quiet_since_ms: int | None = None

    def opening(self) -> Reply:
        return Reply(frames=(encode_status("online", next(self._ids)),))

    def on_message(self, frame: str | bytes) -> Reply:
        request = parse_client_request(frame)
        now = self._now_us
        if isinstance(request, RequestError):
            error = encode_response(request.method, request.req_id, now, now, error=request.error)
            return Reply(frames=(error,))
        if request.method == "ping":
            if self._drop_pongs:
                return Reply()
            return Reply(frames=(encode_pong(request.req_id, now, now),))
        return self._answer(request, now)

    def _answer(self, request: ClientRequest, now: int) -> Reply:
        method, req_id = request.method, request.req_id
        if request.channel != "trade":
            refusal = f"Channel {request.channel!r} is not supported by the fake exchange"
            return Reply(frames=(encode_response(method, req_id, now, now, error=refusal),))
        frames: list[str] = []
        changed: list[str] = []
        pending = dict(self._subscribed)
        for symbol in request.symbols:
            error: str | None = None
            if symbol not in self._symbols:
                error = f"Currency pair not supported {symbol}"
            elif method == "subscribe" and symbol in pending:
                error = "Already subscribed"
            elif method == "unsubscribe" and symbol not in pending:
                error = "Subscription Not Found"
            if error is not None:
                frames.append(encode_response(method, req_id, now, now, error=error, symbol=symbol))
                continue
            if method == "subscribe":
                pending[symbol] = None
                result: dict[str, object] = {
                    "channel": "trade",
                    "snapshot": request.snapshot,
                    "symbol": symbol,
                }
            else:
                pending.pop(symbol, None)
                result = {"channel": "trade", "symbol": symbol}
            frames.append(encode_response(method, req_id, now, now, result=result))
            changed.append(_stream(symbol))
        if method == "subscribe":
            return Reply(frames=tuple(frames), subscribe=tuple(changed))
        return Reply(frames=tuple(frames), unsubscribe=tuple(changed))

    def apply(self, reply: Reply) -> None:
        for stream in reply.unsubscribe:
            self._subscribed.pop(stream.partition(":")[2], None)
        for stream in reply.subscribe:
            self._subscribed[stream.partition(":")[2]] = None
        if reply.subscribe or reply.unsubscribe:
            self._routes = {s: [_stream(s)] for s in self._subscribed}

    def routes(self) -> Mapping[str, Sequence[str]]:
        return self._routes

    def encode(self, trade: Trade, stream: str) -> str:
        ts_ms = trade.ts_event // 1000
        if self._quiet_since_ms is None or ts_ms > self._quiet_since_ms:
            self._quiet_since_ms = ts_ms
        self._now_us = max(self._now_us, trade.ts_event)
        return encode_trades((trade,))

    def heartbeats(self, ts_ms: int) -> Sequence[str]:
        self._now_us = ts_ms * 1000
        if not self._subscribed:
            return ()
        if self._quiet_since_ms is None:
            self._quiet_since_ms = ts_ms  # the quiet period starts with the first subscription
            return ()
        if ts_ms - self._quiet_since_ms < HEARTBEAT_MS:
            return ()
        self._quiet_since_ms = ts_ms
        return (HEARTBEAT,)

    def shutdown_notice(self, ts_ms: int) -> str | None:
        return None  # Kraken has no reconnect notice

    def malformed(self, trade: Trade, stream: str, rng: random.Random) -> str:
        """One of: a truncated frame, non-JSON text, a missing field, a wrong-typed field (a
        price sent as a JSON string among them), a JSON array. Every one makes
        ``KrakenProtocol.parse`` raise ``MalformedFrame``."""
        good = encode_trades((trade,))
        choice = rng.randrange(5)
        if choice == 0:
            return good[: rng.randrange(1, len(good) - 1)]
        if choice == 1:
            return "\x00not json " + good[:20]
        msg = orjson.loads(good)
        entry = msg["data"][0]
        if choice == 2:
            del entry[rng.choice(("symbol", "side", "price", "qty", "trade_id", "timestamp"))]
        elif choice == 3:
            field = rng.choice(("price", "qty", "trade_id", "side", "timestamp"))
            entry[field] = {
                "price": trade.price,  # the right digits, but a JSON string
                "qty": None,
                "trade_id": 1.5,
                "side": "up",
                "timestamp": 1700000000,
            }[field]
        else:
            msg = [msg]
        return orjson.dumps(msg).decode()


class KrakenServer:
    """Kraken v2's endpoint and request protocol (implements ``ServerAdapter``)."""

    name = "kraken"

    def __init__(self) -> None:
        self._connection_ids = itertools.count(1)  # taken when a connection opens

    def session(self, path: str, symbols: frozenset[str], faults: Faults) -> KrakenSession | None:
        """A session for ``/v2`` (or ``/``); None (404) for any other path."""
        if urlsplit(path).path.rstrip("/") not in ("", PATH):
            return None
        return KrakenSession(symbols, faults, self._connection_ids)
