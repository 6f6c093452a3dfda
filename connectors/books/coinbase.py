"""Coinbase Exchange ``level2_batch`` book channel, both directions (docs:
order-books.md#coinbase).

Pure: no network, no clock. :class:`CoinbaseBookFeed` is the client side; the ``encode_*``
functions are what the fake exchange sends (requests are decoded by
:func:`connectors.coinbase.parse_client_request`, which takes any channel name).

Wire facts used here (Coinbase Exchange WebSocket feed documentation):

- same endpoint and subscribe message as the ``matches`` channel (:mod:`connectors.coinbase`),
  with the channels ``level2_batch`` (public; ``level2`` itself needs authentication) and
  ``heartbeat`` (liveness once a second per product);
- after subscribing, one ``{"type":"snapshot","product_id":"BTC-USD","bids":[["10101.10",
  "0.45054140"],..],"asks":[..]}`` per product (the whole book; older traffic has no ``time``),
  then ``{"type":"l2update","product_id":"BTC-USD","time":"2019-08-14T20:42:27.265Z",
  "changes":[["buy","10101.80000000","0.162567"],..]}`` batched every 50 ms: ``side``
  ``buy`` is a bid and ``sell`` an ask, the size is the level's new absolute size, ``"0"``
  removes it;
- there is no sequence number on this channel: integrity rests on the snapshot every
  (re)subscription brings and on the connection staying up (a reconnect resyncs). Rows have
  ``seq`` None; ``ts_event`` is ``time`` (a snapshot without ``time``: the receive time).

A resync (after a reconnect, or a book message that cannot be decoded) is an ``unsubscribe``
and ``subscribe`` of ``level2_batch`` for that product on the same connection: Coinbase answers
the subscription with a fresh snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import orjson

from connectors.base import ControlEvent
from connectors.books.base import Pairs, SymbolBook, control_only, text_levels
from connectors.books.inband import InBandBookFeed, event_time, json_object
from connectors.coinbase import (
    COINBASE_URL,
    MAX_PRODUCTS_PER_CONNECTION,
    CoinbaseProtocol,
    product_ids,
)
from connectors.wire import json_text
from engine.book_records import BookLevel
from engine.errors import MalformedFrame

BOOK_CHANNEL: Final = "level2_batch"
CHANNELS: Final = (BOOK_CHANNEL, "heartbeat")
"""The channels the book feed subscribes to."""

_SIDES: Final = {"buy": "bid", "sell": "ask"}


class CoinbaseBookFeed(InBandBookFeed):
    """The client side of Coinbase's ``level2_batch`` channel (implements ``BookFeed``)."""

    name = "coinbase"
    default_url = COINBASE_URL
    max_streams_per_connection = MAX_PRODUCTS_PER_CONNECTION
    keepalive_interval: float | None = None
    """The ``heartbeat`` channel proves liveness once a second; silence means stale."""

    def __init__(self) -> None:
        super().__init__()
        self._control = CoinbaseProtocol()

    # -- client requests ------------------------------------------------------------------------

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """The base URL itself; ValueError for too many or ill-formed symbols."""
        product_ids(symbols)
        return base_url

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """One ``subscribe`` frame for ``level2_batch`` and ``heartbeat`` of all symbols (empty
        without symbols)."""
        products = product_ids(symbols)
        if not products:
            return []
        request = {"type": "subscribe", "product_ids": products, "channels": list(CHANNELS)}
        return [orjson.dumps(request).decode()]

    def _resubscribe_messages(self, raw_symbol: str) -> tuple[str, ...]:
        return tuple(
            orjson.dumps(
                {"type": kind, "product_ids": [raw_symbol], "channels": [BOOK_CHANNEL]}
            ).decode()
            for kind in ("unsubscribe", "subscribe")
        )

    # -- received frames ------------------------------------------------------------------------

    def parse(self, frame: str | bytes, ts_recv: int) -> Sequence[BookLevel] | ControlEvent:
        """Decode one received frame: the rows of a ``snapshot`` or of an ``l2update`` of a
        book in sync (none otherwise, see :mod:`connectors.books.inband`); the control event
        of a ``heartbeat``, ``subscriptions`` or ``error`` (as :mod:`connectors.coinbase`
        decodes them); no rows for anything else (trades included). Raises only
        :class:`MalformedFrame`."""
        msg = json_object(frame)
        kind = msg.get("type")
        if kind == "l2update":
            snapshot = False
        elif kind == "snapshot":
            snapshot = True
        else:
            return control_only(self._control.parse(frame, ts_recv))
        raw = msg.get("product_id")
        if type(raw) is not str:
            raise MalformedFrame("type", f"{kind} needs product_id as a string")
        state = self._book(raw)
        return self._guarded(
            state, snapshot, ts_recv, lambda: self._apply(state, msg, snapshot, ts_recv)
        )

    def _apply(
        self, state: SymbolBook, msg: dict[str, object], snapshot: bool, ts_recv: int
    ) -> list[BookLevel]:
        """Apply a ``snapshot`` or an ``l2update`` (no sequence: each is applied as it comes;
        a snapshot may lack ``time``: its receive time is used)."""
        ts_event = event_time(msg.get("time"), ts_recv, "time", missing_ok=snapshot)
        bids: Pairs
        asks: Pairs
        if snapshot:
            bids, asks = text_levels(msg.get("bids"), "bids"), text_levels(msg.get("asks"), "asks")
        else:
            bids, asks = _changes(msg.get("changes"))
        rows = state.rows(
            bids, asks, snapshot=snapshot, seq=None, ts_event=ts_event, ts_recv=ts_recv
        )
        return self._done(state, snapshot, ts_recv, rows)


def _changes(changes: object) -> tuple[list[list[str]], list[list[str]]]:
    """An ``l2update``'s ``changes`` split into bids and asks, each in message order."""
    if type(changes) is not list:
        raise MalformedFrame("type", "l2update needs changes as a list")
    bids: list[list[str]] = []
    asks: list[list[str]] = []
    for change in changes:
        if type(change) is not list or len(change) != 3:
            raise MalformedFrame("type", "a change is not [side, price, size]")
        side, price, size = change
        if type(price) is not str or type(size) is not str:
            raise MalformedFrame("type", "price and size must be strings")
        if side == "buy":
            bids.append([price, size])
        elif side == "sell":
            asks.append([price, size])
        else:
            raise MalformedFrame("type", "side must be 'buy' or 'sell'")
    return bids, asks


# -- server side (the fake exchange) ----------------------------------------------------------


def _pairs(levels: Sequence[tuple[str, str]]) -> str:
    return ",".join(f'["{json_text(price)}","{json_text(size)}"]' for price, size in levels)


def encode_l2_snapshot(
    product: str,
    bids: Sequence[tuple[str, str]],
    asks: Sequence[tuple[str, str]],
    *,
    time_iso: str | None = None,
) -> str:
    """The ``snapshot`` of ``product``'s book: ``bids`` best first, ``asks`` best first, as
    (price, size) text; with ``"time"`` when ``time_iso`` is given (RFC 3339)."""
    when = "" if time_iso is None else f',"time":"{json_text(time_iso)}"'
    return (
        f'{{"type":"snapshot","product_id":"{json_text(product)}",'
        f'"bids":[{_pairs(bids)}],"asks":[{_pairs(asks)}]{when}}}'
    )


def encode_l2update(product: str, changes: Sequence[tuple[str, str, str]], *, time_iso: str) -> str:
    """An ``l2update`` of ``product``: ``changes`` as (side ``buy``/``sell``, price, new size)
    text, in order; ValueError for another side."""
    parts = []
    for side, price, size in changes:
        if side not in _SIDES:
            raise ValueError(f"side must be buy or sell, got {side!r}")
        parts.append(f'["{side}","{json_text(price)}","{json_text(size)}"]')
    return (
        f'{{"type":"l2update","product_id":"{json_text(product)}",'
        f'"changes":[{",".join(parts)}],"time":"{json_text(time_iso)}"}}'
    )
