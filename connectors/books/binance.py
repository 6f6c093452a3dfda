"""Binance spot (and Binance.US) level-2 books: ``<symbol>@depth@100ms`` over a REST snapshot
(docs: order-books.md#binance-and-binanceus).

Pure: no network, no clock. The client side (:class:`BinanceBookFeed`) builds the combined-stream
URL, parses depth updates, buffers them until a REST snapshot arrives and checks the update ids;
the server side (:func:`encode_depth_update`, :func:`encode_depth_snapshot`) is what the fake
exchange speaks.

Wire facts (Binance's "How to manage a local order book correctly", spot):

- ``{"e":"depthUpdate","E":<ms>,"s":"BNBBTC","U":<first id>,"u":<final id>,"b":[["p","q"]],
  "a":[..]}``, wrapped on a combined stream as ``{"stream":"bnbbtc@depth@100ms","data":{..}}``;
  quantities are absolute, ``"0"`` removes the level;
- snapshot ``GET /api/v3/depth?symbol=BNBBTC&limit=1000`` -> ``{"lastUpdateId":..,"bids":[..],
  "asks":[..]}``; its request weight is 50 (limit 501-1000);
- sync: buffer the stream, fetch the snapshot; a snapshot whose ``lastUpdateId`` is older than
  the buffered diffs (the first kept diff has ``U > lastUpdateId + 1``) is fetched again; drop
  buffered diffs with ``u <= lastUpdateId``; then apply a diff when ``U <= last + 1 <= u``
  (``last`` the book's update id), ignore it when ``u <= last`` (already in the book), and
  resync when ``U > last + 1`` (diffs were missed).

Control frames (acks, errors, ``serverShutdown``) are parsed by
:class:`connectors.binance.BinanceProtocol`; trade and other market-data events yield no rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, quote, urlsplit

import orjson

from connectors.base import ControlEvent
from connectors.binance import (
    BINANCE_URL,
    BINANCE_US_URL,
    MAX_STREAMS_PER_CONNECTION,
    BinanceProtocol,
)
from connectors.books.base import NO_ROWS, Pairs, ResyncCause, SymbolBook, control_only, text_levels
from connectors.books.buffered import (
    BufferedBookFeed,
    Pending,
    RestSnapshot,
    encode_pairs,
    rest_book,
)
from connectors.wire import MAX_MS, shape_error
from engine.book_records import BookLevel
from engine.errors import MalformedFrame

BINANCE_REST_URL: Final = "https://api.binance.com"
BINANCE_US_REST_URL: Final = "https://api.binance.us"
DEPTH_STREAM: Final = "depth@100ms"
SNAPSHOT_LIMIT: Final = 1000
SNAPSHOT_WEIGHT: Final = 50
"""The request weight of ``/api/v3/depth`` with ``limit`` 501-1000 (Binance spot's table:
1-100: 5, 101-500: 25, 501-1000: 50, 1001-5000: 250)."""
WEIGHT_PER_MINUTE: Final = 6000
"""Binance spot's ``REQUEST_WEIGHT`` limit per IP and minute."""

_SYMBOL_TEXT: Final = re.compile(r"[0-9A-Za-z]{2,40}", re.ASCII).fullmatch
_MAX_ID: Final = (1 << 63) - 1
_loads: Final = orjson.loads


def depth_stream(raw_symbol: str) -> str:
    """``btcusdt@depth@100ms``; ValueError for a symbol that is not 2-40 letters and digits."""
    if not _SYMBOL_TEXT(raw_symbol):
        raise ValueError(f"binance symbol {raw_symbol!r} is not 2-40 letters and digits")
    return f"{raw_symbol.lower()}@{DEPTH_STREAM}"


@dataclass(slots=True)
class _Diff:
    """One depth update, checked (its levels are valid decimal text)."""

    first: int
    final: int
    ts_event: int
    ts_recv: int
    bids: Pairs
    asks: Pairs


def _update_id(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_ID:
        raise MalformedFrame("type", f"{what} must be a non-negative integer")
    return value


class BinanceBookFeed(BufferedBookFeed[_Diff]):
    """The client side of Binance's diff depth stream (implements ``BookFeed``).

    ``exchange`` is ``"binance"`` or ``"binanceus"`` (Binance.US's stream and REST hosts, the
    same protocol). Records carry ``raw_symbol`` as Binance spells it (``BTCUSDT``), ``seq``
    the update's final id ``u`` (a snapshot's ``lastUpdateId``), ``ts_event`` the event time
    ``E`` (a snapshot's: its receive time).
    """

    max_streams_per_connection = MAX_STREAMS_PER_CONNECTION
    snapshot_weight = SNAPSHOT_WEIGHT
    keepalive_interval: float | None = None
    """Binance pings; the WebSocket library answers."""

    def __init__(self, exchange: str = "binance") -> None:
        if exchange == "binance":
            self.default_url, self.rest_url = BINANCE_URL, BINANCE_REST_URL
        elif exchange == "binanceus":
            self.default_url, self.rest_url = BINANCE_US_URL, BINANCE_US_REST_URL
        else:
            raise ValueError(f"exchange must be binance or binanceus, got {exchange!r}")
        self.name = exchange
        self._control = BinanceProtocol(exchange=exchange, default_url=self.default_url)
        super().__init__()  # _subscribed: upper case, filled when a URL is built

    # -- requests --------------------------------------------------------------------------

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """``{base}/stream?streams=btcusdt@depth@100ms/...`` (``{base}/ws`` with no symbols).
        ValueError beyond 1024 streams or for an ill-formed symbol."""
        if len(symbols) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(
                f"binance allows {MAX_STREAMS_PER_CONNECTION} streams per connection, "
                f"got {len(symbols)}"
            )
        base = base_url.rstrip("/")
        streams = [depth_stream(symbol) for symbol in symbols]
        self._subscribed.update(symbol.upper() for symbol in symbols)
        if not streams:
            return f"{base}/ws"
        return f"{base}/stream?streams={'/'.join(streams)}"

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """Nothing: the combined-stream URL subscribes."""
        for symbol in symbols:
            depth_stream(symbol)
        return []

    def snapshot_url(self, base_url: str, raw_symbol: str) -> str | None:
        """``{base}/api/v3/depth?symbol=BTCUSDT&limit=1000``. The feed's own
        :class:`FetchSnapshot` actions use :attr:`rest_url` as the base (the session sets it
        to ``<EXCHANGE>_REST_URL`` when that is set)."""
        depth_stream(raw_symbol)
        base = base_url.rstrip("/")
        return f"{base}/api/v3/depth?symbol={quote(raw_symbol.upper())}&limit={SNAPSHOT_LIMIT}"

    def symbol_of_snapshot(self, url: str) -> str | None:
        """The ``symbol=`` of a depth snapshot URL (None for any other URL)."""
        parts = urlsplit(url)
        if not parts.path.endswith("/api/v3/depth"):
            return None
        values = parse_qs(parts.query).get("symbol")
        return values[0] if values and _SYMBOL_TEXT(values[0]) else None

    # -- received frames -------------------------------------------------------------------

    def parse(self, frame: str | bytes, ts_recv: int) -> Sequence[BookLevel] | ControlEvent:
        """Decode one frame: a ``depthUpdate`` gives the rows it applied (none while the book
        waits for its snapshot: it is buffered); trades and other events give none; acks,
        errors and ``serverShutdown`` give the control event. Raises only MalformedFrame."""
        try:
            msg = _loads(frame)
        except (ValueError, TypeError) as exc:
            raise MalformedFrame("json", str(exc)[:120]) from None
        try:
            data = msg.get("data", msg)
            if data.get("e") != "depthUpdate":
                return self._other(data, frame, ts_recv)
            raw = data["s"]
            first = data["U"]
            final = data["u"]
            ms = data["E"]
            bids = data["b"]
            asks = data["a"]
        except (AttributeError, KeyError, TypeError) as exc:
            raise shape_error(
                exc, "frame or its data is not a JSON object", "depthUpdate", "e has a bad type"
            ) from None
        if type(raw) is not str:
            raise MalformedFrame("type", "s must be a string")
        if self._subscribed and raw not in self._subscribed:
            raise MalformedFrame("symbol", f"depth update of a symbol not subscribed: {raw:.40}")
        if type(ms) is not int or not 0 <= ms <= MAX_MS:
            raise MalformedFrame("type", "E must be an integer time in range")
        diff = _Diff(
            _update_id(first, "U"),
            _update_id(final, "u"),
            ms * 1000,
            ts_recv,
            text_levels(bids, "b"),
            text_levels(asks, "a"),
        )
        if diff.first > diff.final:
            raise MalformedFrame("type", f"U {first} is after u {final}")
        return self._take(self._book(raw), diff)

    def _other(
        self, data: dict[str, object], frame: str | bytes, ts_recv: int
    ) -> Sequence[BookLevel] | ControlEvent:
        """Every frame that is not a depth update: Binance's trade protocol decides."""
        event = data.get("e")
        if event in ("trade", "aggTrade"):
            return NO_ROWS
        return control_only(self._control.parse_json(frame, ts_recv))  # bookTicker, kline: none

    # -- synchronisation (Binance's rules; the rest is BufferedBookFeed's) ------------------

    def _apply_live(self, state: SymbolBook, diff: _Diff) -> Sequence[BookLevel]:
        """Apply a diff to a book in sync when ``U <= last + 1 <= u``; ignore it when
        ``u <= last``; resync when ``U > last + 1`` (diffs were missed; ``stale-snapshot``
        when the snapshot was not yet known to follow the stream)."""
        last = int(state.seq or 0)
        if diff.final <= last:
            return NO_ROWS  # already in the book (Binance: "ignore the event")
        if diff.first > last + 1:
            bridged = self._sync_of(state.raw_symbol).bridged
            cause: ResyncCause = "sequence" if bridged else "stale-snapshot"
            return self._gap(state, diff, cause, f"U {diff.first} after u {last}")
        return self._applied(state, diff, seq=str(diff.final), ts_event=diff.ts_event)

    def _decode_snapshot(self, body: str | bytes) -> RestSnapshot:
        last, bids, asks = _snapshot(body)
        return RestSnapshot(last, str(last), None, bids, asks)

    def _apply_snapshot(
        self, state: SymbolBook, sync: Pending[_Diff], snap: RestSnapshot, ts_recv: int
    ) -> Sequence[BookLevel]:
        """Drop the buffered diffs with ``u <= lastUpdateId``; a snapshot older than the first
        diff left (``U > lastUpdateId + 1``) is stale and fetched again; else it syncs the
        book (its event time: its receive time)."""
        last = snap.order
        dropped = sync.drop_while(lambda diff: diff.final <= last)
        buffer = sync.buffer
        if buffer and buffer[0].first > last + 1:
            detail = f"snapshot lastUpdateId {last} before the buffered U {buffer[0].first}"
            return self._stale(state, sync, ts_recv, detail, dropped)
        # With diffs buffered, the snapshot is known not to be older than the stream (else it
        # was fetched again above): a later gap is a diff missed (``sequence``). With nothing
        # buffered (a snapshot asked for on a connection since replaced) it is not known.
        bridged = dropped > 0 or bool(buffer)
        return self._synced(state, sync, snap, ts_recv, dropped=dropped, bridged=bridged)


def _snapshot(body: str | bytes) -> tuple[int, Pairs, Pairs]:
    """``(lastUpdateId, bids, asks)`` of a REST depth body, every level checked."""
    last, bids, asks = rest_book(body, "lastUpdateId", "snapshot")
    return _update_id(last, "lastUpdateId"), bids, asks


# -- server side (the fake exchange) ----------------------------------------------------------


def encode_depth_update(
    raw_symbol: str,
    first_id: int,
    final_id: int,
    bids: Sequence[tuple[str, str]],
    asks: Sequence[tuple[str, str]],
    *,
    event_ms: int,
    combined: bool,
) -> str:
    """The ``depthUpdate`` event Binance would send (raw form, or on the combined stream
    ``<symbol>@depth@100ms`` when ``combined``). ``bids``/``asks`` are (price, size) text."""
    data = {
        "e": "depthUpdate",
        "E": int(event_ms),
        "s": raw_symbol,
        "U": int(first_id),
        "u": int(final_id),
        "b": encode_pairs(bids),
        "a": encode_pairs(asks),
    }
    if combined:
        stream = f"{raw_symbol.lower()}@{DEPTH_STREAM}"
        return orjson.dumps({"stream": stream, "data": data}).decode()
    return orjson.dumps(data).decode()


def encode_depth_snapshot(
    last_update_id: int, bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]
) -> str:
    """The body of ``GET /api/v3/depth``: ``{"lastUpdateId":..,"bids":[..],"asks":[..]}``."""
    doc = {
        "lastUpdateId": int(last_update_id),
        "bids": encode_pairs(bids),
        "asks": encode_pairs(asks),
    }
    return orjson.dumps(doc).decode()
