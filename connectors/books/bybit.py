"""Bybit v5 public spot ``orderbook.{depth}.{symbol}`` topic, both directions (docs:
order-books.md#bybit).

Pure: no network, no clock. :class:`BybitBookFeed` is the client side; :func:`encode_orderbook`
is what the fake exchange sends (requests are decoded by
:func:`connectors.bybit.parse_client_request`, which takes any topic, and answered with
:func:`connectors.bybit.encode_response`).

Wire facts used here (Bybit v5 documentation, WebSocket "Orderbook"):

- same spot endpoint, request limits (10 args per subscribe), keepalive (``op`` ``ping``),
  responses and errors as the ``publicTrade`` topic (:mod:`connectors.bybit`); subscribe
  ``{"req_id":"1","op":"subscribe","args":["orderbook.200.BTCUSDT"]}``;
- spot depths and push intervals: 1 (10 ms), 50 (20 ms), 200 (200 ms), 1000 (200 ms); depth 1
  sends snapshots only (again every 3 s without change, with the same ``u``);
- ``{"topic":"orderbook.200.BTCUSDT","type":"snapshot"|"delta","ts":1672304484978,"data":{
  "s":"BTCUSDT","b":[["16493.50","0.006"]],"a":[..],"u":18521288,"seq":7961638724},
  "cts":1672304484976}``: after subscribing, a snapshot; then deltas (absolute sizes, ``"0"``
  removes the level). ``u`` rises by one per message; a snapshot with ``u`` = 1 means Bybit's
  service restarted: the book must be replaced. Bybit may also send a snapshot at any time for
  its own reasons; it replaces the book;
- ``ts`` is when the push was generated (ms), ``seq`` the matching engine's cross sequence
  (shared by all depths, with gaps).

What the feed does: a delta whose ``u`` is not the last ``u`` + 1 breaks the book (cause
``sequence``) and the feed resubscribes the topic (``unsubscribe`` then ``subscribe``) on the
same connection, which brings a snapshot. A snapshot with ``u`` = 1 after the symbol had a book
is recorded as a resync of cause ``restart``, begun and ended by that snapshot; any other
snapshot while in sync (Bybit's own) as one of cause ``snapshot``, likewise. Rows have
``seq`` = ``u`` as text and ``ts_event`` = ``ts``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Final, Literal

import orjson

from connectors.base import ControlEvent, ExchangeError
from connectors.books.base import SymbolBook, control_only, text_levels
from connectors.books.inband import InBandBookFeed, json_object
from connectors.bybit import (
    BYBIT_URL,
    KEEPALIVE_SECONDS,
    MAX_ARGS_PER_REQUEST,
    MAX_STREAMS_PER_CONNECTION,
    SPOT_PATH,
    BybitProtocol,
)
from connectors.wire import MAX_MS, PrefixedNames, json_text, stream_names, with_default_path
from engine.book_records import BookLevel
from engine.errors import MalformedFrame

TOPIC: Final = "orderbook"
DEPTHS: Final = (1, 50, 200, 1000)
"""The spot depths Bybit serves."""
DEFAULT_DEPTH: Final = 200
"""200 levels pushed every 200 ms: deep enough for most research at a modest rate (50 levels
come every 20 ms)."""

_MAX_ID: Final = 1 << 63
_REFUSED_TOPIC: Final = re.compile(r"orderbook\.[0-9]{1,4}\.([0-9A-Za-z]{2,40})", re.ASCII)


class BybitBookFeed(InBandBookFeed):
    """The client side of Bybit's spot ``orderbook.{depth}.{symbol}`` topics (implements
    ``BookFeed``); ValueError for a depth Bybit spot does not serve."""

    name = "bybit"
    default_url = BYBIT_URL
    max_streams_per_connection = MAX_STREAMS_PER_CONNECTION
    keepalive_interval: float | None = KEEPALIVE_SECONDS

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        if depth not in DEPTHS:
            raise ValueError(f"bybit spot book depth must be one of {DEPTHS}, got {depth!r}")
        super().__init__()
        self.depth = depth
        self._prefix = f"{TOPIC}.{depth}."
        self._names = PrefixedNames(self.name, self._prefix, str.upper)
        self._control = BybitProtocol()
        self._request_ids = itertools.count(1)

    # -- client requests ------------------------------------------------------------------------

    def keepalive_message(self) -> str | None:
        """Bybit's ``ping`` (as :class:`connectors.bybit.BybitProtocol` sends it)."""
        return self._control.keepalive_message()

    def topics(self, symbols: Sequence[str]) -> list[str]:
        """Book topics for these symbols; ValueError beyond the limit or on a bad name."""
        return stream_names(
            self.name, "topics", MAX_STREAMS_PER_CONNECTION, symbols, self._names.name
        )

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """``base_url`` when it names a path, else ``{base_url}/v5/public/spot``; ValueError
        for too many or ill-formed symbols."""
        self.topics(symbols)
        return with_default_path(base_url, SPOT_PATH)

    def _request(self, op: str, topics: Sequence[str]) -> str:
        return orjson.dumps(
            {"req_id": f"book-{next(self._request_ids)}", "op": op, "args": list(topics)}
        ).decode()

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """``subscribe`` frames of at most 10 topics each (Bybit spot's limit)."""
        topics = self.topics(symbols)
        return [
            self._request("subscribe", topics[start : start + MAX_ARGS_PER_REQUEST])
            for start in range(0, len(topics), MAX_ARGS_PER_REQUEST)
        ]

    def _resubscribe_messages(self, raw_symbol: str) -> tuple[str, ...]:
        topic = self._names.name(raw_symbol)
        return self._request("unsubscribe", [topic]), self._request("subscribe", [topic])

    # -- received frames ------------------------------------------------------------------------

    def parse(self, frame: str | bytes, ts_recv: int) -> Sequence[BookLevel] | ControlEvent:
        """Decode one received frame: the rows of an ``orderbook`` push of the feed's depth
        (see the module docstring); the control event of a pong, response or error (as
        :mod:`connectors.bybit` decodes them, a refused book topic naming its symbol); no rows
        for other topics (trades included). Raises only :class:`MalformedFrame`."""
        msg = json_object(frame)
        topic = msg.get("topic")
        if type(topic) is not str or not topic.startswith(self._prefix):
            return self._other(frame, ts_recv)
        kind, data = msg.get("type"), msg.get("data")
        if kind not in ("snapshot", "delta") or type(data) is not dict:
            raise MalformedFrame("type", "orderbook needs type snapshot/delta and a data object")
        raw = data.get("s")
        if type(raw) is not str:
            raise MalformedFrame("type", "orderbook data needs s as a string")
        state = self._book(raw)
        snapshot = kind == "snapshot"
        return self._guarded(
            state, snapshot, ts_recv, lambda: self._apply(state, msg, data, snapshot, ts_recv)
        )

    def _other(self, frame: str | bytes, ts_recv: int) -> Sequence[BookLevel] | ControlEvent:
        """Not a book push of this feed: the trade protocol's control event, with the symbols
        of refused book topics."""
        result = control_only(self._control.parse(frame, ts_recv))
        if isinstance(result, ExchangeError) and not result.symbols:
            refused = tuple(dict.fromkeys(_REFUSED_TOPIC.findall(result.message)))
            if refused:
                return ExchangeError(result.message, fatal=result.fatal, symbols=refused)
        return result

    def _apply(
        self,
        state: SymbolBook,
        msg: dict[str, object],
        data: dict[str, object],
        snapshot: bool,
        ts_recv: int,
    ) -> list[BookLevel]:
        """Apply one push; its rows, or none when a delta is out of sequence."""
        update_id, ts = data.get("u"), msg.get("ts")
        if type(update_id) is not int or not 0 < update_id < _MAX_ID:
            raise MalformedFrame("type", "u must be a positive integer")
        if type(ts) is not int or not 0 <= ts <= MAX_MS:
            raise MalformedFrame("type", "ts must be an integer time in range")
        bids, asks = text_levels(data.get("b"), "b"), text_levels(data.get("a"), "a")
        if not snapshot:
            if state.seq is None or update_id != int(state.seq) + 1:
                self._resync(state, "sequence", ts_recv, f"u {update_id} after {state.seq}")
                return []
        elif update_id == 1 and state.snapshots:
            # Bybit's service restarted: the book before this snapshot is void
            state.break_sync("restart", ts_recv, f"u 1 after {state.seq}")
        elif state.snapshots and state.synced:
            # A snapshot Bybit sent of its own accord: it replaces the book, and a reader sees
            # a fresh snapshot in the data; the manifest says why (verify expects it there).
            state.break_sync("snapshot", ts_recv, f"u {update_id} after {state.seq}")
        rows = state.rows(
            bids, asks, snapshot=snapshot, seq=str(update_id), ts_event=ts * 1000, ts_recv=ts_recv
        )
        return self._done(state, snapshot, ts_recv, rows)


# -- server side (the fake exchange) ----------------------------------------------------------


def _side(levels: Sequence[tuple[str, str]]) -> str:
    return ",".join(f'["{json_text(price)}","{json_text(size)}"]' for price, size in levels)


def encode_orderbook(
    symbol: str,
    bids: Sequence[tuple[str, str]],
    asks: Sequence[tuple[str, str]],
    *,
    depth: int,
    kind: Literal["snapshot", "delta"],
    update_id: int,
    seq: int,
    ts_ms: int,
    cts_ms: int | None = None,
) -> str:
    """An ``orderbook.{depth}.{symbol}`` push: ``bids``/``asks`` as (price, size) text,
    ``u`` = ``update_id`` (1 after a restart), ``seq`` the cross sequence, ``ts``/``cts`` in
    ms (``cts`` defaults to ``ts_ms``)."""
    raw = json_text(symbol)
    cts = ts_ms if cts_ms is None else cts_ms
    return (
        f'{{"topic":"{TOPIC}.{int(depth)}.{raw}","type":"{kind}","ts":{int(ts_ms)},'
        f'"data":{{"s":"{raw}","b":[{_side(bids)}],"a":[{_side(asks)}],'
        f'"u":{int(update_id)},"seq":{int(seq)}}},"cts":{int(cts)}}}'
    )
