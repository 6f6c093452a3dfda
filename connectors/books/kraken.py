"""Kraken spot WebSocket v2 ``book`` channel, both directions (docs: order-books.md#kraken).

Pure: no network, no clock. :class:`KrakenBookFeed` is the client side; :func:`encode_book` and
:func:`book_checksum` are what the fake exchange needs (requests are decoded by
:func:`connectors.kraken.parse_client_request`, which reads ``depth`` too).

Wire facts used here (Kraken's v2 WebSocket documentation, ``book`` channel and the "Book
checksum (WebSocket v2)" guide):

- same endpoint, keepalive and responses as the ``trade`` channel (:mod:`connectors.kraken`);
  ``{"method":"subscribe","params":{"channel":"book","symbol":[..],"depth":100,
  "snapshot":true},"req_id":N}``, ``depth`` one of 10, 25, 100, 500, 1000 (Kraken's default
  is 10; this feed's is 100);
- ``{"channel":"book","type":"snapshot"|"update","data":[{"symbol":"BTC/USD","bids":[{"price":
  45283.5,"qty":0.1}],"asks":[..],"checksum":3310070434,"timestamp":"2023-10-06T17:35:55.440295Z"}]}``;
  ``price``/``qty`` are JSON numbers carrying the full precision (their exact text is kept, see
  :func:`connectors.kraken.loads_exact`), ``qty`` 0 removes the level, one message may change a
  level several times (apply in order);
- after applying a message the client truncates its book to the subscribed depth: Kraken sends
  no ``qty`` 0 for levels that fall out of scope;
- ``checksum`` is the CRC32 (unsigned) of the top 10 asks (low to high) then the top 10 bids
  (high to low), each level written as its price then its qty, each with the decimal point and
  the leading zeros removed; it is sent with snapshots and updates alike.

What the feed does: after each message it truncates the book and checks the checksum. The
levels the truncation removes are book changes the rows must carry (a reader rebuilds the book
from rows only): they are emitted as rows of size ``"0"`` after the message's own rows, with the
message's ``ts_event``, ``ts_recv`` and ``snapshot`` flag. A checksum that does not match
breaks the book (cause ``checksum``; the message's rows are not emitted) and the feed
resubscribes the symbol (``unsubscribe`` then ``subscribe`` with ``snapshot`` true) on the same
connection. The channel has no sequence number: rows have ``seq`` None; ``ts_event`` is the
message's ``timestamp`` (the receive time when it has none).
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Iterable, Sequence
from typing import Final

import orjson

from connectors.base import ControlEvent
from connectors.books.base import SymbolBook, control_only
from connectors.books.inband import InBandBookFeed, event_time
from connectors.kraken import (
    KEEPALIVE_SECONDS,
    KRAKEN_URL,
    MAX_SYMBOLS_PER_CONNECTION,
    JsonInt,
    KrakenProtocol,
    loads_exact,
    pairs,
)
from engine.book import SIDES
from engine.book_records import BookLevel, snapshot_rows
from engine.errors import MalformedFrame
from engine.timefmt import format_us

CHANNEL: Final = "book"
DEPTHS: Final = (10, 25, 100, 500, 1000)
"""The depths Kraken serves."""
DEFAULT_DEPTH: Final = 100
CHECKSUM_LEVELS: Final = 10
"""Levels of each side the checksum covers, whatever the depth."""

_Entry = tuple[SymbolBook, list[tuple[str, str]], list[tuple[str, str]], int, int]
"""A decoded entry: state, bids, asks, checksum, ts_event."""

_PLAIN_NUMBER: Final = re.compile(r"[0-9]{1,40}(?:\.[0-9]{1,40})?", re.ASCII).fullmatch


def _digits(text: str) -> str:
    """A price or qty as the checksum writes it: no decimal point, no leading zeros."""
    return text.replace(".", "").lstrip("0")


def book_checksum(bids_top: Iterable[Sequence[str]], asks_top: Iterable[Sequence[str]]) -> int:
    """Kraken's CRC32 of a book: ``asks_top`` (best, i.e. lowest, first) then ``bids_top``
    (best, i.e. highest, first), at most 10 of each used, each a (price, qty) text pair as
    Kraken writes it."""
    parts = [
        _digits(level[0]) + _digits(level[1])
        for side in (asks_top, bids_top)
        for level in itertools.islice(side, CHECKSUM_LEVELS)
    ]
    return zlib.crc32("".join(parts).encode("ascii", "replace")) & 0xFFFFFFFF


class KrakenBookFeed(InBandBookFeed):
    """The client side of Kraken v2's ``book`` channel at ``depth`` levels (implements
    ``BookFeed``); ValueError for a depth Kraken does not serve."""

    name = "kraken"
    default_url = KRAKEN_URL
    max_streams_per_connection = MAX_SYMBOLS_PER_CONNECTION
    keepalive_interval: float | None = KEEPALIVE_SECONDS

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        if depth not in DEPTHS:
            raise ValueError(f"kraken book depth must be one of {DEPTHS}, got {depth!r}")
        super().__init__()
        self.depth = depth
        self._control = KrakenProtocol()
        self._request_ids = itertools.count(1)

    # -- client requests ------------------------------------------------------------------------

    def keepalive_message(self) -> str | None:
        """Kraken's application ping (as :class:`connectors.kraken.KrakenProtocol` sends it)."""
        return self._control.keepalive_message()

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """The base URL itself; ValueError for too many or ill-formed symbols."""
        pairs(symbols)
        return base_url

    def _request(self, method: str, names: list[str]) -> str:
        params: dict[str, object] = {"channel": CHANNEL, "symbol": names, "depth": self.depth}
        if method == "subscribe":
            params["snapshot"] = True
        req_id = next(self._request_ids)
        return orjson.dumps({"method": method, "params": params, "req_id": req_id}).decode()

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """One ``subscribe`` frame for the ``book`` channel of all symbols at the feed's
        depth, with snapshot (empty without symbols)."""
        names = pairs(symbols)
        return [self._request("subscribe", names)] if names else []

    def _resubscribe_messages(self, raw_symbol: str) -> tuple[str, ...]:
        return (
            self._request("unsubscribe", [raw_symbol]),
            self._request("subscribe", [raw_symbol]),
        )

    # -- received frames ------------------------------------------------------------------------

    def parse(self, frame: str | bytes, ts_recv: int) -> Sequence[BookLevel] | ControlEvent:
        """Decode one received frame: the rows of the ``book`` messages it carries (each
        symbol's entry applied, truncated and checked in order; see the module docstring);
        the control event of a heartbeat, status, pong or response (as
        :mod:`connectors.kraken` decodes them); no rows for other channels (trades
        included). Raises only :class:`MalformedFrame`."""
        try:
            msg = loads_exact(frame)
        except ValueError as exc:
            raise MalformedFrame("json", str(exc)[:120]) from None
        if type(msg) is not dict:
            raise MalformedFrame("not-object", "frame is not a JSON object")
        if msg.get("channel") != CHANNEL:
            return control_only(self._control.parse(frame, ts_recv))
        kind, data = msg.get("type"), msg.get("data")
        if kind not in ("snapshot", "update") or type(data) is not list:
            raise MalformedFrame("type", "book needs type snapshot/update and a data list")
        snapshot = kind == "snapshot"
        # decode every entry before applying any, so that a bad entry leaves no other
        # symbol's book changed without its rows
        entries = [self._decode(entry, ts_recv) for entry in data]
        out: list[BookLevel] = []
        for state, bids, asks, checksum, ts_event in entries:
            if not snapshot and not state.synced:
                self._not_synced(state, ts_recv)
                continue
            out.extend(self._apply(state, bids, asks, checksum, snapshot, ts_event, ts_recv))
        return out

    def _decode(self, entry: object, ts_recv: int) -> _Entry:
        """One symbol's entry: its state, levels, checksum and event time. A symbol's entry
        that cannot be decoded breaks its book (see :mod:`connectors.books.inband`)."""
        if type(entry) is not dict:
            raise MalformedFrame("not-object", "a book entry is not a JSON object")
        raw = entry.get("symbol")
        if type(raw) is not str:
            raise MalformedFrame("type", "a book entry needs symbol as a string")
        state = self._book(str.__str__(raw))
        try:
            ts_event = event_time(entry.get("timestamp"), ts_recv, "timestamp", missing_ok=True)
            checksum = entry.get("checksum")
            if type(checksum) is not JsonInt or len(checksum) > 20:
                raise MalformedFrame("type", "checksum must be an integer")
            return state, _levels(entry, "bids"), _levels(entry, "asks"), int(checksum), ts_event
        except MalformedFrame as exc:
            self._malformed(state, ts_recv, str(exc))
            raise

    def _apply(
        self,
        state: SymbolBook,
        bids: list[tuple[str, str]],
        asks: list[tuple[str, str]],
        expected: int,
        snapshot: bool,
        ts_event: int,
        ts_recv: int,
    ) -> list[BookLevel]:
        """Apply one decoded entry, truncate, check the checksum; its rows, or none when the
        checksum fails."""
        rows = state.rows(
            bids, asks, snapshot=snapshot, seq=None, ts_event=ts_event, ts_recv=ts_recv
        )
        book = state.book
        depth = self.depth
        if book.depth("bid") > depth or book.depth("ask") > depth:
            if snapshot:
                book.truncate(depth)
                rows = snapshot_rows(
                    book,
                    exchange=state.exchange,
                    symbol=state.symbol,
                    raw_symbol=state.raw_symbol,
                    ts_event=ts_event,
                    ts_recv=ts_recv,
                    seq=None,
                )
            else:
                rows.extend(_truncate(state, depth, ts_event, ts_recv))
        actual = book_checksum(
            ((lv.price, lv.size) for lv in book.levels("bid", CHECKSUM_LEVELS)),
            ((lv.price, lv.size) for lv in book.levels("ask", CHECKSUM_LEVELS)),
        )
        if actual != expected:
            self._resync(state, "checksum", ts_recv, f"checksum {actual} != {expected}")
            return []
        return self._done(state, snapshot, ts_recv, rows)


def _levels(entry: dict[str, object], name: str) -> list[tuple[str, str]]:
    """An entry's ``bids`` or ``asks`` as (price, qty) text: JSON numbers (or strings) of
    plain decimal digits."""
    levels = entry.get(name)
    if type(levels) is not list:
        raise MalformedFrame("type", f"book entry needs {name} as a list")
    out: list[tuple[str, str]] = []
    for level in levels:
        if type(level) is not dict:
            raise MalformedFrame("not-object", f"a level of {name} is not a JSON object")
        price, qty = level.get("price"), level.get("qty")
        if not isinstance(price, str) or not isinstance(qty, str):
            raise MalformedFrame("type", "price and qty must be numbers")
        price, qty = str.__str__(price), str.__str__(qty)
        if not _PLAIN_NUMBER(price) or not _PLAIN_NUMBER(qty):
            raise MalformedFrame("decimal", "price and qty must be plain non-negative decimals")
        out.append((price, qty))
    return out


def _truncate(state: SymbolBook, depth: int, ts_event: int, ts_recv: int) -> list[BookLevel]:
    """Remove the levels beyond ``depth`` from ``state``'s book; their delete rows (size
    ``"0"``, bids first, each side best first)."""
    book = state.book
    out: list[BookLevel] = []
    for side in SIDES:
        if book.depth(side) <= depth:
            continue
        for level in book.levels(side)[depth:]:
            book.apply(side, level.price, "0")
            out.append(
                BookLevel(
                    state.exchange,
                    state.symbol,
                    state.raw_symbol,
                    ts_event,
                    ts_recv,
                    None,
                    False,
                    side,
                    level.price,
                    "0",
                )
            )
    return out


# -- server side (the fake exchange) ----------------------------------------------------------


def _number(text: str) -> str:
    if not _PLAIN_NUMBER(text):
        raise ValueError(f"{text!r} cannot be written as a plain JSON number")
    return text


def _side(levels: Sequence[tuple[str, str]]) -> str:
    return ",".join(f'{{"price":{_number(price)},"qty":{_number(qty)}}}' for price, qty in levels)


def encode_book(
    symbol: str,
    bids: Sequence[tuple[str, str]],
    asks: Sequence[tuple[str, str]],
    *,
    snapshot: bool,
    checksum: int,
    timestamp: int | str,
) -> str:
    """A ``book`` message for ``symbol``: ``bids``/``asks`` as (price, qty) text written as
    JSON numbers with exactly that text (ValueError for text that is not plain decimal
    digits); ``checksum`` as given (:func:`book_checksum` of the book after the message, or a
    wrong one for a fault); ``timestamp`` in µs since the epoch, or RFC 3339 text."""
    when = format_us(timestamp) if isinstance(timestamp, int) else timestamp
    entry = (
        f'{{"symbol":{orjson.dumps(symbol).decode()},"bids":[{_side(bids)}],'
        f'"asks":[{_side(asks)}],"checksum":{int(checksum)},'
        f'"timestamp":{orjson.dumps(when).decode()}}}'
    )
    kind = "snapshot" if snapshot else "update"
    return f'{{"channel":"book","type":"{kind}","data":[{entry}]}}'
