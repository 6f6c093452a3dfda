"""Bybit's server side for the fake exchange: the spot endpoint, subscriptions, frames.

Path: ``/v5/public/spot`` only; anything else is 404. A ``subscribe`` request is answered with
``{"success":true,"ret_msg":"subscribe",...}`` when every topic is ``publicTrade.<symbol>`` of a
symbol the server trades; otherwise nothing of it is subscribed and the answer is
``"success":false`` with ``"Invalid symbol :[publicTrade.NOPEUSDT]"`` (Bybit validates symbols,
so always, not only with the ``reject-unknown`` fault; the connection stays open). More than 10
topics in one request is refused too (Bybit spot's documented limit; the wording is the fake's).
``{"op":"ping"}`` is answered with ``"ret_msg":"pong"`` (unless the ``drop-pongs`` fault is on).

Books (docs: testing.md#order-books-on-the-fake-exchange): ``orderbook.{depth}.{symbol}`` (depth
1, 50, 200 or 1000) is served from the book market's view of that depth: a ``snapshot`` on each
subscription, then a ``delta`` whenever the top ``depth`` levels change; ``u`` counts the view's
messages (1 again after the ``book-restart`` fault's snapshot), ``seq`` is the update id.

One trade per push: the server's ledger counts one trade per frame it sends, so the fake does
not batch (Bybit itself does; :func:`connectors.bybit.encode_trades` builds such pushes for
tests). Bybit has no reconnect notice: :meth:`BybitSession.shutdown_notice` is None.
"""

from __future__ import annotations

import itertools

from connectors.books.bybit import DEPTHS, TOPIC, encode_orderbook
from connectors.bybit import (
    MAX_ARGS_PER_REQUEST,
    SPOT_PATH,
    RequestError,
    encode_response,
    encode_trade,
    parse_client_request,
    symbol_of,
)
from connectors.fake.adapters import Malformations, Reply, SessionBase
from connectors.fake.book_channels import BookChannel
from connectors.fake.book_market import BookMessage
from connectors.fake.faults import Faults
from engine.records import Trade


class BybitSession(SessionBase):
    """One connection to the fake Bybit (implements ``ServerSession``; ``streams`` are the
    subscribed topics). Bybit subscribes by message only, sends no heartbeats of its own (the
    client sends op ping; the server answers) and announces no reconnects."""

    PURE_ENCODE = True  # encode() is a function of the trade and the stream

    MALFORMATIONS = Malformations(
        item=("data", 0),
        missing=("i", "p", "v", "S", "T", "s"),
        wrong={"i": 7, "p": 1.5, "v": 2, "S": "buy", "T": "soon"},
    )

    def __init__(self, conn_id: str, symbols: frozenset[str], faults: Faults) -> None:
        super().__init__(symbols, faults)
        self.conn_id = conn_id

    def market_symbol(self, stream: str) -> str | None:
        symbol = symbol_of(stream)
        return symbol if symbol is not None and symbol in self._symbols else None

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
        unknown = [
            t
            for t in request.args
            if self.market_symbol(t) is None and self.book_channel(t) is None
        ]
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

    def book_channel(self, stream: str) -> BookChannel | None:
        topic, _, rest = stream.partition(".")
        depth, _, symbol = rest.partition(".")
        if topic != TOPIC or not depth.isdigit() or int(depth) not in DEPTHS:
            return None
        return BookChannel(symbol, int(depth)) if symbol in self._symbols else None

    def encode_book(self, msg: BookMessage, stream: str, corrupt: bool) -> str | None:
        return encode_orderbook(
            msg.raw_symbol,
            msg.bids,
            msg.asks,
            depth=int(stream.split(".")[1]),
            kind="snapshot" if msg.snapshot else "delta",
            update_id=msg.number,
            seq=msg.update_id,
            ts_ms=msg.ts_us // 1000,
        )

    def encode(self, trade: Trade, stream: str) -> str:
        return encode_trade(trade)


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
