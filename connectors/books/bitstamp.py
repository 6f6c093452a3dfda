"""Bitstamp level-2 books: ``diff_order_book_{pair}`` over a REST snapshot
(docs: order-books.md#bitstamp).

Pure: no network, no clock. The client side (:class:`BitstampBookFeed`) subscribes, parses the
diffs, buffers them until the REST snapshot arrives and checks their times; the server side
(:func:`encode_diff`, :func:`encode_order_book`) is what the fake exchange speaks.

Wire facts (Bitstamp's WebSocket API v2 and REST API v2):

- channel ``diff_order_book_btcusd``, subscribed with ``bts:subscribe`` like the trade channels;
  a message is ``{"data":{"timestamp":"..","microtimestamp":"..","bids":[["p","a"]],
  "asks":[..]},"channel":"diff_order_book_btcusd","event":"data"}``: the changed levels of the
  full book, amounts absolute, ``"0"`` removes the level (``"0.00000000"`` in practice);
- snapshot ``GET /api/v2/order_book/btcusd/`` -> ``{"timestamp":"..","microtimestamp":"..",
  "bids":[..],"asks":[..]}``;
- the channel carries no sequence number: ``microtimestamp`` (µs, text) is the only order.
  So the feed checks what it can: buffered diffs not newer than the snapshot are dropped, a
  snapshot older than the oldest buffered diff is fetched again (cause ``stale-snapshot``: the
  changes between it and the stream would be missing), and once in sync each diff's
  ``microtimestamp`` must not be earlier than the previous one's (two changes may share a
  microsecond): one that is (a message out of order) breaks the book (cause ``sequence``) and a
  new snapshot is fetched. A message lost in between cannot be detected on this channel; a
  diff that cannot be decoded is treated as one lost; a reconnect always resyncs;
- keepalive ``bts:heartbeat``, reconnect notice ``bts:request_reconnect``, acks and errors:
  parsed by :class:`connectors.bitstamp.BitstampProtocol` (reused, not copied).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from connectors.base import ControlEvent
from connectors.bitstamp import (
    BITSTAMP_URL,
    HEARTBEAT_REQUEST,
    KEEPALIVE_SECONDS,
    MAX_STREAMS_PER_CONNECTION,
    BitstampProtocol,
)
from connectors.books.base import NO_ROWS, Pairs, SymbolBook, control_only, text_levels
from connectors.books.buffered import (
    BufferedBookFeed,
    Pending,
    RestSnapshot,
    check_decimals,
    encode_pairs,
    rest_book,
)
from connectors.wire import DIGITS_US, MAX_US, PrefixedNames, shape_error, stream_names
from engine.book_records import BookLevel
from engine.errors import MalformedFrame

BITSTAMP_REST_URL: Final = "https://www.bitstamp.net"
CHANNEL_PREFIX: Final = "diff_order_book_"
SNAPSHOT_WEIGHT: Final = 1
"""Bitstamp counts requests, not weights."""
REQUESTS_PER_MINUTE: Final = 1000
"""Bitstamp's public limit is 400 requests a second and 10,000 per 10 minutes: 1000 a minute
on average."""

_NAMES: Final = PrefixedNames("bitstamp", CHANNEL_PREFIX, str.lower)
channel_name: Final = _NAMES.name
"""``diff_order_book_btcusd`` for ``btcusd`` or ``BTCUSD``; ValueError for a bad pair."""
pair_of: Final = _NAMES.symbol
"""``diff_order_book_btcusd`` -> ``btcusd``, or None for another channel."""

_loads: Final = orjson.loads


@dataclass(slots=True)
class _Diff:
    """One diff, checked (its levels are valid decimal text)."""

    micro: int
    text: str
    ts_recv: int
    bids: Pairs
    asks: Pairs


def _micro(value: object, what: str) -> int:
    """A ``microtimestamp`` (decimal text of µs) as an int; MalformedFrame otherwise."""
    if type(value) is not str or not DIGITS_US(value) or (us := int(value)) > MAX_US:
        raise MalformedFrame("type", f"{what} must be decimal text of a time in µs, in range")
    return us


class BitstampBookFeed(BufferedBookFeed[_Diff]):
    """The client side of Bitstamp's ``diff_order_book`` channels (implements ``BookFeed``).

    Records carry ``raw_symbol`` as the channel spells the pair (``btcusd``), ``seq`` and
    ``ts_event`` from the message's (or the snapshot's) ``microtimestamp``.
    """

    name = "bitstamp"
    default_url = BITSTAMP_URL
    rest_url: str | None = BITSTAMP_REST_URL
    max_streams_per_connection = MAX_STREAMS_PER_CONNECTION
    snapshot_weight = SNAPSHOT_WEIGHT
    keepalive_interval: float | None = KEEPALIVE_SECONDS

    def __init__(self) -> None:
        self._control = BitstampProtocol()
        super().__init__()  # _subscribed: the pairs (lower case), filled by channels()

    # -- requests --------------------------------------------------------------------------

    def keepalive_message(self) -> str | None:
        return HEARTBEAT_REQUEST

    def channels(self, symbols: Sequence[str]) -> list[str]:
        """Channel names; ValueError beyond the per-connection limit or for a bad pair."""
        limit = MAX_STREAMS_PER_CONNECTION
        names = stream_names(self.name, "channels", limit, symbols, channel_name)
        self._subscribed.update(name[len(CHANNEL_PREFIX) :] for name in names)
        return names

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """``base_url`` (one endpoint; channels are subscribed by message)."""
        self.channels(symbols)
        return base_url.rstrip("/") or base_url

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """One ``bts:subscribe`` frame per channel, in the order given."""
        return [
            f'{{"event":"bts:subscribe","data":{{"channel":"{channel}"}}}}'
            for channel in self.channels(symbols)
        ]

    def snapshot_url(self, base_url: str, raw_symbol: str) -> str | None:
        """``{base}/api/v2/order_book/btcusd/``. The feed's own :class:`FetchSnapshot` actions
        use :attr:`rest_url` as the base (the session sets it to ``BITSTAMP_REST_URL``)."""
        pair = pair_of(channel_name(raw_symbol))
        return f"{base_url.rstrip('/')}/api/v2/order_book/{pair}/"

    def symbol_of_snapshot(self, url: str) -> str | None:
        """The pair of an ``/api/v2/order_book/{pair}/`` URL (None for any other URL)."""
        path = url.split("?", 1)[0].rstrip("/")
        head, _, pair = path.rpartition("/")
        if not head.endswith("/api/v2/order_book"):
            return None
        return pair_of(CHANNEL_PREFIX + pair)

    # -- received frames -------------------------------------------------------------------

    def parse(self, frame: str | bytes, ts_recv: int) -> Sequence[BookLevel] | ControlEvent:
        """Decode one frame: a diff gives the rows it applied (none while the book waits for
        its snapshot: it is buffered); other channels' data gives none; acks, heartbeats,
        errors and reconnect notices give the control event. Raises only MalformedFrame."""
        try:
            msg = _loads(frame)
        except (ValueError, TypeError) as exc:
            raise MalformedFrame("json", str(exc)[:120]) from None
        try:
            event = msg.get("event")
            if event != "data":
                return self._other(event, frame, ts_recv)
            channel = msg["channel"]
            if type(channel) is not str:
                raise MalformedFrame("type", "channel must be a string")
            pair = pair_of(channel)
            if pair is None:
                return NO_ROWS  # order_book_, live_orders_ ... on the same connection
        except (AttributeError, KeyError, TypeError) as exc:
            raise shape_error(
                exc, "frame is not a JSON object", "diff", "event or channel has a bad type"
            ) from None
        if self._subscribed and pair not in self._subscribed:
            raise MalformedFrame("symbol", f"diff of a pair not subscribed: {pair}")
        state = self._books.get(pair)
        try:
            diff = _diff(msg, ts_recv)
            if state is None or not state.synced:
                check_decimals(diff.bids, diff.asks)
        except MalformedFrame:
            self._lost(pair, ts_recv)
            raise
        if state is None:
            state = self._book(pair)
        return self._take(state, diff)

    def _lost(self, pair: str, ts_recv: int) -> None:
        """A diff of ``pair`` could not be decoded: an update is lost, and this channel has no
        sequence to show it later. A book in sync resyncs (cause ``sequence``, detail
        ``malformed``); a book waiting for its snapshot drops its buffer, and a snapshot
        already asked for (it may predate the loss) is fetched again when it arrives."""
        state = self._books.get(pair)
        if state is None:
            return
        sync = self._sync_of(pair)
        sync.buffer.clear()
        if state.synced:
            state.break_sync("sequence", ts_recv, "malformed")
            self._fetch(state, sync)
        elif sync.fetching:
            sync.tainted = True

    def _other(
        self, event: object, frame: str | bytes, ts_recv: int
    ) -> Sequence[BookLevel] | ControlEvent:
        """Every frame that is not a diff: Bitstamp's trade protocol decides (trades give
        nothing here)."""
        if event == "trade":
            return NO_ROWS
        return control_only(self._control.parse(frame, ts_recv))

    # -- synchronisation (Bitstamp's rules; the rest is BufferedBookFeed's) -----------------

    def _apply_live(self, state: SymbolBook, diff: _Diff) -> Sequence[BookLevel]:
        """Apply a diff to a book in sync; one earlier than the last diff applied breaks it
        (one at the same microsecond is applied: two changes can share it). Right after a
        snapshot, a diff not newer than the snapshot is in it and is skipped."""
        last = int(state.seq or 0)
        sync = self._sync_of(state.raw_symbol)
        if diff.micro < last or (diff.micro == last and not sync.bridged):
            if not sync.bridged:
                return NO_ROWS  # not newer than the snapshot: already in it
            return self._gap(state, diff, "sequence", f"microtimestamp {diff.text} after {last}")
        return self._applied(state, diff, seq=diff.text, ts_event=diff.micro)

    def _snapshot_key(self, raw_symbol: str) -> str:
        return pair_of(CHANNEL_PREFIX + raw_symbol.lower()) or raw_symbol

    def _decode_snapshot(self, body: str | bytes) -> RestSnapshot:
        micro, text, bids, asks = _order_book(body)
        return RestSnapshot(micro, text, micro, bids, asks)

    def _apply_snapshot(
        self, state: SymbolBook, sync: Pending[_Diff], snap: RestSnapshot, ts_recv: int
    ) -> Sequence[BookLevel]:
        """A snapshot older than the oldest buffered diff is stale and fetched again;
        otherwise the buffered diffs not newer than it are dropped (they are in it) and it
        syncs the book. The diffs after it are not known to follow yet (``bridged`` false:
        one at the snapshot's microsecond is skipped)."""
        buffer = sync.buffer
        if buffer and snap.order < buffer[0].micro:
            detail = f"snapshot microtimestamp {snap.seq} before the buffered {buffer[0].text}"
            return self._stale(state, sync, ts_recv, detail, 0)
        dropped = sync.drop_while(lambda diff: diff.micro <= snap.order)
        return self._synced(state, sync, snap, ts_recv, dropped=dropped, bridged=False)


def _diff(msg: dict[str, object], ts_recv: int) -> _Diff:
    """The checked fields of a diff message (decimal text not checked here)."""
    try:
        data: Any = msg["data"]
        micro = data["microtimestamp"]
        bids = data["bids"]
        asks = data["asks"]
    except (AttributeError, KeyError, TypeError) as exc:
        raise shape_error(exc, "data is not a JSON object", "diff", "data has a bad type") from None
    return _Diff(
        _micro(micro, "microtimestamp"),
        micro,
        ts_recv,
        text_levels(bids, "bids"),
        text_levels(asks, "asks"),
    )


def _order_book(body: str | bytes) -> tuple[int, str, Pairs, Pairs]:
    """``(microtimestamp, its text, bids, asks)`` of a REST order book, every level checked."""
    text, bids, asks = rest_book(body, "microtimestamp", "order book")
    return _micro(text, "microtimestamp"), str(text), bids, asks


# -- server side (the fake exchange) ----------------------------------------------------------


def _timed_levels(
    bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]], microtimestamp: int
) -> dict[str, object]:
    """The fields a diff's ``data`` and an order book share: its times and levels."""
    us = int(microtimestamp)
    return {
        "timestamp": str(us // 1_000_000),
        "microtimestamp": str(us),
        "bids": encode_pairs(bids),
        "asks": encode_pairs(asks),
    }


def encode_diff(
    pair: str,
    bids: Sequence[tuple[str, str]],
    asks: Sequence[tuple[str, str]],
    *,
    microtimestamp: int,
) -> str:
    """The ``diff_order_book_{pair}`` message Bitstamp would send (``pair`` lower-cased in the
    channel name); ``bids``/``asks`` are (price, size) text, size ``"0"`` removes."""
    data = _timed_levels(bids, asks, microtimestamp)
    channel = CHANNEL_PREFIX + pair.lower()
    return orjson.dumps({"data": data, "channel": channel, "event": "data"}).decode()


def encode_order_book(
    bids: Sequence[tuple[str, str]],
    asks: Sequence[tuple[str, str]],
    *,
    microtimestamp: int,
) -> str:
    """The body of ``GET /api/v2/order_book/{pair}/``."""
    return orjson.dumps(_timed_levels(bids, asks, microtimestamp)).decode()
