"""Kraken v2's server side for the fake exchange: status, subscriptions, pings, frames.

The endpoint is ``/v2``; ``/`` is accepted as an alias (on Kraken it is the v1 protocol, which
the fake does not speak), so that ``KRAKEN_WS_URL=<the fake's url>`` works like every other
exchange's override; any other path is 404. On connect the fake sends the ``status`` update
(``system: online``), as Kraken does. Requests:

- ``subscribe``/``unsubscribe`` on the ``trade`` (or ``book``) channel get one response per
  symbol: success for
  a pair the fake trades; ``Currency pair not supported NOPE/USD`` (``success: false``) for one
  it does not — Kraken validates pairs, so this happens whatever the ``reject-unknown`` fault
  says, and the connection stays open; ``Already subscribed``/``Subscription Not Found`` as on
  Kraken. Another channel is refused. A requested trade snapshot is acknowledged but never sent
  (the ledger could not account for trades from before the subscription);
- ``ping`` gets a ``pong`` echoing ``req_id`` — unless the ``drop-pongs`` fault is set;
- anything else gets a ``success: false`` response naming the problem.

Trades go out one per ``update`` frame with ``price``/``qty`` as JSON numbers written with the
exact decimal text of the trade (the fake market's 8-decimal text stays 8 decimals: a client that
went through float would lose the trailing zeros, which is what the tests want to catch).
``{"channel":"heartbeat"}`` is sent when a subscribed connection has had no trade for a second.
Kraken has no reconnect notice (``shutdown_notice`` is None).

Books (docs: testing.md#order-books-on-the-fake-exchange): the ``book`` channel at the
requested ``depth`` (10, 25, 100, 500 or 1000; 10 when absent) is served from the book market's
view of that depth: a ``snapshot`` on each subscription, then an ``update`` whenever the top
``depth`` levels change, with the CRC32 ``checksum`` of the top 10 after it (the
``book-checksum`` fault makes it wrong). A level pushed out of the depth by a better one is not
sent: the client truncates, as on Kraken.

The ``time_in``/``time_out`` stamps of responses use the latest wall time the server handed this
session (heartbeat ticks, trade times), or the system clock before there is one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Final
from urllib.parse import urlsplit

from connectors.books.kraken import CHECKSUM_LEVELS, DEPTHS, book_checksum, encode_book
from connectors.fake.adapters import Malformations, Reply, SessionBase
from connectors.fake.book_channels import BookChannel
from connectors.fake.book_market import BookMessage
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
BOOK_DEPTH: Final = 10
"""The ``book`` channel's depth when a subscription names none (Kraken's default)."""
_CHANNELS: Final = ("trade", "book")


def _stream(symbol: str, channel: str = "trade") -> str:
    return f"{channel}:{symbol}"


class KrakenSession(SessionBase):
    """One connection to the fake Kraken (implements ``ServerSession``; ``streams`` are
    ``"trade:<symbol>"``)."""

    def __init__(self, symbols: frozenset[str], faults: Faults, ids: Iterator[int]) -> None:
        super().__init__(symbols, faults)
        self._ids = ids
        self._now_us = SYSTEM_CLOCK.time_ns() // 1000
        self._quiet_since_ms: int | None = None
        self._depths: dict[str, int] = {}  # book depth per subscribed symbol

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
        method, req_id, channel = request.method, request.req_id, request.channel
        if channel not in _CHANNELS:
            refusal = f"Channel {channel!r} is not supported by the fake exchange"
            return Reply(frames=(encode_response(method, req_id, now, now, error=refusal),))
        depth = BOOK_DEPTH if request.depth is None else request.depth
        if channel == "book" and depth not in DEPTHS:
            refusal = f"EGeneral:Invalid arguments:depth must be one of {list(DEPTHS)}"
            return Reply(frames=(encode_response(method, req_id, now, now, error=refusal),))
        frames: list[str] = []
        changed: list[str] = []
        pending = dict(self.streams)
        for symbol in request.symbols:
            error: str | None = None
            if symbol not in self._symbols:
                error = f"Currency pair not supported {symbol}"
            elif method == "subscribe" and _stream(symbol, channel) in pending:
                error = "Already subscribed"
            elif method == "unsubscribe" and _stream(symbol, channel) not in pending:
                error = "Subscription Not Found"
            if error is not None:
                frames.append(encode_response(method, req_id, now, now, error=error, symbol=symbol))
                continue
            result: dict[str, object] = {"channel": channel}
            if channel == "book":
                result["depth"] = depth
            if method == "subscribe":
                pending[_stream(symbol, channel)] = None
                result["snapshot"] = request.snapshot
                if channel == "book":
                    self._depths[symbol] = depth
            else:
                pending.pop(_stream(symbol, channel), None)
            result["symbol"] = symbol
            frames.append(encode_response(method, req_id, now, now, result=result))
            changed.append(_stream(symbol, channel))
        if method == "subscribe":
            return Reply(frames=tuple(frames), subscribe=tuple(changed))
        return Reply(frames=tuple(frames), unsubscribe=tuple(changed))

    def market_symbol(self, stream: str) -> str | None:
        channel, _, symbol = stream.partition(":")
        return symbol if channel == "trade" else None  # only pairs the server trades

    def book_channel(self, stream: str) -> BookChannel | None:
        channel, _, symbol = stream.partition(":")
        if channel != "book":
            return None
        depth = self._depths.get(symbol, BOOK_DEPTH)
        return BookChannel(symbol, depth, pushout=False, top_levels=CHECKSUM_LEVELS)

    def encode_book(self, msg: BookMessage, stream: str, corrupt: bool) -> str | None:
        assert msg.top is not None  # the view keeps the top 10 (book_channel asks for it)
        checksum = book_checksum(msg.top[0], msg.top[1])
        if corrupt:
            checksum = (checksum + 1) & 0xFFFFFFFF
        ts_ms = msg.ts_us // 1000
        if self._quiet_since_ms is None or ts_ms > self._quiet_since_ms:
            self._quiet_since_ms = ts_ms
        return encode_book(
            msg.raw_symbol,
            msg.bids,
            msg.asks,
            snapshot=msg.snapshot,
            checksum=checksum,
            timestamp=msg.ts_us,
        )

    def encode(self, trade: Trade, stream: str) -> str:
        ts_ms = trade.ts_event // 1000
        if self._quiet_since_ms is None or ts_ms > self._quiet_since_ms:
            self._quiet_since_ms = ts_ms
        self._now_us = max(self._now_us, trade.ts_event)
        return encode_trades((trade,))

    def heartbeats(self, ts_ms: int) -> Sequence[str]:
        self._now_us = ts_ms * 1000
        if not self.streams:
            return ()
        if self._quiet_since_ms is None:
            self._quiet_since_ms = ts_ms  # the quiet period starts with the first subscription
            return ()
        if ts_ms - self._quiet_since_ms < HEARTBEAT_MS:
            return ()
        self._quiet_since_ms = ts_ms
        return (HEARTBEAT,)

    def plain_frame(self, trade: Trade, stream: str) -> str:
        return encode_trades((trade,))  # encode() also moves the heartbeat's quiet period

    def malformations(self, trade: Trade) -> Malformations:
        """A price sent as a JSON string (the right digits) among the wrong-typed fields."""
        return Malformations(
            item=("data", 0),
            missing=("symbol", "side", "price", "qty", "trade_id", "timestamp"),
            wrong={
                "price": trade.price,
                "qty": None,
                "trade_id": 1.5,
                "side": "up",
                "timestamp": 1700000000,
            },
        )


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
