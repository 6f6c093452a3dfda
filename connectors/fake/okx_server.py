"""OKX's server side for the fake exchange: the public endpoint, subscriptions, frames.

Path: ``/ws/v5/public`` only; anything else is 404. ``{"op":"subscribe","args":[..]}`` is
answered per argument, in order: ``{"event":"subscribe","arg":..,"connId":..}`` for a ``trades``
channel of an instrument the server trades, else ``{"event":"error","code":"60018",...}`` (OKX
validates instruments, so always, not only with the ``reject-unknown`` fault; the connection
stays open and the valid arguments are subscribed). A request that is not valid JSON of that
shape gets error 60012. The text ``ping`` is answered with the text ``pong`` (unless the
``drop-pongs`` fault is on).

Books (docs: testing.md#order-books-on-the-fake-exchange): the ``books`` channel is served from
the book market: a ``snapshot`` (``prevSeqId`` -1) on each subscription, then an ``update`` per
book message, ``seqId`` its update id and ``prevSeqId`` the previous message's (``checksum`` 0,
as OKX now sends it).

One trade per push: the server's ledger counts one trade per frame it sends, so the fake does
not batch (OKX itself may; :func:`connectors.okx.encode_trades` builds such pushes for tests).
"""

from __future__ import annotations

import itertools
from typing import Final

from connectors.books.okx import CHANNEL as BOOK_CHANNEL
from connectors.books.okx import encode_books
from connectors.fake.adapters import Malformations, Reply, SessionBase
from connectors.fake.book_channels import BookChannel
from connectors.fake.book_market import BookMessage
from connectors.fake.faults import Faults
from connectors.okx import (
    CHANNEL,
    PONG,
    PUBLIC_PATH,
    RequestError,
    encode_error,
    encode_event,
    encode_notice,
    encode_trade,
    parse_client_request,
    unknown_channel_msg,
)
from engine.records import Trade

_STREAM_PREFIX: Final = CHANNEL + ":"
_BOOK_PREFIX: Final = BOOK_CHANNEL + ":"


class OkxSession(SessionBase):
    """One connection to the fake OKX (implements ``ServerSession``; ``streams`` are
    ``"trades:<instId>"``). OKX subscribes by message only and sends no heartbeats of its own
    (the client sends "ping"; the server answers)."""

    PURE_ENCODE = True  # encode() is a function of the trade and the stream

    MALFORMATIONS = Malformations(
        item=("data", 0),
        missing=("tradeId", "px", "sz", "side", "ts", ("arg", "instId")),
        wrong={"tradeId": 7, "px": 1.5, "sz": 2, "side": "up", "ts": "soon"},
    )

    def __init__(self, conn_id: str, symbols: frozenset[str], faults: Faults) -> None:
        super().__init__(symbols, faults)
        self.conn_id = conn_id

    def market_symbol(self, stream: str) -> str | None:
        if not stream.startswith(_STREAM_PREFIX):
            return None
        return stream[len(_STREAM_PREFIX) :]  # only subscribed instruments the server trades

    def book_channel(self, stream: str) -> BookChannel | None:
        if not stream.startswith(_BOOK_PREFIX):
            return None
        return BookChannel(stream[len(_BOOK_PREFIX) :])  # 400 levels: the whole book

    def encode_book(self, msg: BookMessage, stream: str, corrupt: bool) -> str | None:
        return encode_books(
            msg.raw_symbol,
            msg.bids,
            msg.asks,
            action="snapshot" if msg.snapshot else "update",
            seq_id=msg.update_id,
            prev_seq_id=msg.prev_id,
            ts_ms=msg.ts_us // 1000,
        )

    def on_message(self, frame: str | bytes) -> Reply:
        request = parse_client_request(frame)
        if isinstance(request, RequestError):
            return Reply(frames=(encode_error(request.code, request.msg, self.conn_id),))
        if request.op == "ping":
            return Reply() if self._drop_pongs else Reply(frames=(PONG,))
        frames: list[str] = []
        streams: list[str] = []
        for channel, instrument in request.args:
            if request.op == "subscribe" and (
                channel not in (CHANNEL, BOOK_CHANNEL) or instrument not in self._symbols
            ):
                msg = unknown_channel_msg(channel, instrument)
                frames.append(encode_error("60018", msg, self.conn_id))
                continue
            frames.append(encode_event(request.op, channel, instrument, self.conn_id))
            streams.append(f"{channel}:{instrument}")
        if request.op == "unsubscribe":
            return Reply(frames=tuple(frames), unsubscribe=tuple(streams))
        return Reply(frames=tuple(frames), subscribe=tuple(streams))

    def encode(self, trade: Trade, stream: str) -> str:
        return encode_trade(trade)

    def shutdown_notice(self, ts_ms: int) -> str | None:
        return encode_notice(self.conn_id)


class OkxServer:
    """OKX's public endpoint and subscription protocol (implements ``ServerAdapter``).

    Connection ids (``connId``) are eight hex digits counting up per server.
    """

    name = "okx"

    def __init__(self) -> None:
        self._conn_ids = itertools.count(0xA4D3AE55)

    def session(self, path: str, symbols: frozenset[str], faults: Faults) -> OkxSession | None:
        if path.partition("?")[0].rstrip("/") != PUBLIC_PATH:
            return None
        return OkxSession(f"{next(self._conn_ids) & 0xFFFFFFFF:08x}", symbols, faults)
