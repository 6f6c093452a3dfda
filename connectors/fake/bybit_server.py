"""Bybit's server side for the fake exchange: the spot endpoint, subscriptions, frames.

Path: ``/v5/public/spot`` only; anything else is 404. A ``subscribe`` request is answered with
``{"success":true,"ret_msg":"subscribe",...}`` when every topic is ``publicTrade.<symbol>`` of a
symbol the server trades; otherwise nothing of it is subscribed and the answer is
``"success":false`` with ``"Invalid symbol :[publicTrade.NOPEUSDT]"`` (Bybit validates symbols,
so always, not only with the ``reject-unknown`` fault; the connection stays open). More than 10
topics in one request is refused too (Bybit spot's documented limit; the wording is the fake's).
``{"op":"ping"}`` is answered with ``"ret_msg":"pong"`` (unless the ``drop-pongs`` fault is on).

One trade per push: the server's ledger counts one trade per frame it sends, so the fake does
not batch (Bybit itself does; :func:`connectors.bybit.encode_trades` builds such pushes for
tests). Bybit has no reconnect notice: :meth:`BybitSession.shutdown_notice` is None.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence

import orjson

from connectors.bybit import (
    MAX_ARGS_PER_REQUEST,
    SPOT_PATH,
    RequestError,
    encode_response,
    encode_trade,
    parse_client_request,
    symbol_of,
)
from connectors.fake.adapters import Reply
from connectors.fake.faults import Faults
from engine.records import Trade


class BybitSession:
    """One connection to the fake Bybit (implements ``ServerSession``)."""

    def __init__(self, conn_id: str, symbols: frozenset[str], faults: Faults) -> None:
        self.conn_id = conn_id
        self._symbols = symbols
        self._drop_pongs = faults.drop_pongs
        self.topics: dict[str, None] = {}  # ordered set of subscribed topics
        self._routes: dict[str, list[str]] = {}

    def _market_symbol(self, topic: str) -> str | None:
        symbol = symbol_of(topic)
        return symbol if symbol is not None and symbol in self._symbols else None

    def opening(self) -> Reply:
        return Reply()  # Bybit subscribes by message only

    def on_message(self, frame: str | bytes) -> Reply:
        request = parse_client_request(frame)
        conn_id = self.conn_id
        if isinstance(request, RequestError):
            failure = encode_response(
                request.op, request.req_id, conn_id, success=False, ret_msg=request.ret_msg
            )
            return Reply(frames=(failure,))
        if request.op == "ping":
            pong = encode_response("ping", request.req_id, conn_id, ret_msg="pong")
            return Reply() if self._drop_pongs else Reply(frames=(pong,))
        if request.op == "unsubscribe":
            done = encode_response("unsubscribe", request.req_id, conn_id)
            return Reply(frames=(done,), unsubscribe=request.args)
        unknown = [t for t in request.args if self._market_symbol(t) is None]
        if unknown or len(request.args) > MAX_ARGS_PER_REQUEST:
            reason = (
                f"Invalid symbol :[{','.join(unknown)}]"
                if unknown
                else f"args size {len(request.args)} exceeds {MAX_ARGS_PER_REQUEST}"
            )
            failure = encode_response(
                "subscribe", request.req_id, conn_id, success=False, ret_msg=reason
            )
            return Reply(frames=(failure,))
        done = encode_response("subscribe", request.req_id, conn_id, ret_msg="subscribe")
        return Reply(frames=(done,), subscribe=request.args)

    def apply(self, reply: Reply) -> None:
        for topic in reply.unsubscribe:
            self.topics.pop(topic, None)
        for topic in reply.subscribe:
            self.topics[topic] = None
        if reply.subscribe or reply.unsubscribe:
            routes: dict[str, list[str]] = {}
            for topic in self.topics:
                symbol = self._market_symbol(topic)
                if symbol is not None:
                    routes.setdefault(symbol, []).append(topic)
            self._routes = routes

    def routes(self) -> Mapping[str, Sequence[str]]:
        return self._routes

    def encode(self, trade: Trade, stream: str) -> str:
        return encode_trade(trade)

    def heartbeats(self, ts_ms: int) -> Sequence[str]:
        return ()  # the client sends op ping; the server only answers

    def shutdown_notice(self, ts_ms: int) -> str | None:
        return None  # Bybit announces no reconnects

    def malformed(self, trade: Trade, stream: str, rng: random.Random) -> str:
        """One of: a truncated frame, non-JSON text, a missing field, a wrong-typed field,
        a JSON array. Every one makes ``BybitProtocol.parse`` raise ``MalformedFrame``."""
        good = self.encode(trade, stream)
        choice = rng.randrange(5)
        if choice == 0:
            return good[: rng.randrange(1, len(good) - 1)]
        if choice == 1:
            return "\x00not json " + good[:20]
        msg = orjson.loads(good)
        item = msg["data"][0]
        if choice == 2:
            del item[rng.choice(("i", "p", "v", "S", "T", "s"))]
        elif choice == 3:
            field = rng.choice(("i", "p", "v", "S", "T"))
            item[field] = {"i": 7, "p": 1.5, "v": 2, "S": "buy", "T": "soon"}[field]
        else:
            msg = [msg]
        return orjson.dumps(msg).decode()


class BybitServer:
    """Bybit's spot endpoint and subscription protocol (implements ``ServerAdapter``).

    Connection ids (``conn_id``) count up per server.
    """

    name = "bybit"

    def __init__(self) -> None:
        self._conn_ids = itertools.count(1)

    def session(self, path: str, symbols: frozenset[str], faults: Faults) -> BybitSession | None:
        if path.partition("?")[0].rstrip("/") != SPOT_PATH:
            return None
        return BybitSession(f"fake-{next(self._conn_ids):08x}", symbols, faults)
