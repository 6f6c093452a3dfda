"""OKX API v5 public ``books`` channel, both directions (docs: order-books.md#okx).

Pure: no network, no clock. :class:`OkxBookFeed` is the client side; :func:`encode_books` is
what the fake exchange sends (requests are decoded by :func:`connectors.okx.parse_client_request`,
which takes any channel name; the subscription is acknowledged with
:func:`connectors.okx.encode_event`).

Wire facts used here (OKX v5 WebSocket documentation, "Order book channel"):

- same public endpoint, keepalive (text ``ping``/``pong``), acknowledgements, errors and
  reconnect notice (64008) as the ``trades`` channel (:mod:`connectors.okx`); subscribe
  ``{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}``;
- ``{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot"|"update","data":[{
  "asks":[["41006.8","0.60038921","0","1"]],"bids":[..],"ts":"1597026383085","checksum":0,
  "prevSeqId":-1,"seqId":123456}]}``: first a snapshot of 400 levels a side, then an update
  every 100 ms with the levels that changed (absolute size, ``"0"`` removes); a level is
  ``[price, size, "0" (deprecated), number of orders]``; ``ts`` in ms;
- sequence: a snapshot has ``prevSeqId`` -1; an update follows when its ``prevSeqId`` is the
  ``seqId`` of the message before it. ``seqId`` normally rises; an update with no change
  repeats the previous ``seqId`` (``prevSeqId`` = ``seqId``); after maintenance ``seqId`` may
  fall below ``prevSeqId`` (a reset), which is still in sequence when ``prevSeqId`` matches;
- ``checksum`` (CRC32 of the top 25 levels) is deprecated: OKX now sends 0. It is ignored.

A resync (an update whose ``prevSeqId`` is not the last ``seqId``: cause ``sequence``) is an
``unsubscribe`` and ``subscribe`` of ``books`` for that instrument on the same connection; OKX
answers with a snapshot. Each costs one request of OKX's 480 per hour and connection. Rows have
``seq`` = ``seqId`` as text and ``ts_event`` = ``ts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Final, Literal

import orjson

from connectors.base import ControlEvent
from connectors.books.base import SymbolBook, control_only, text_levels
from connectors.books.inband import InBandBookFeed
from connectors.okx import (
    KEEPALIVE_SECONDS,
    MAX_STREAMS_PER_CONNECTION,
    OKX_URL,
    PING,
    PUBLIC_PATH,
    OkxProtocol,
    inst_id,
)
from connectors.wire import DIGITS_MS, MAX_MS, json_text, stream_names, with_default_path
from engine.book_records import BookLevel
from engine.errors import MalformedFrame

CHANNEL: Final = "books"
_MAX_SEQ: Final = 1 << 63
_loads: Final = orjson.loads


class OkxBookFeed(InBandBookFeed):
    """The client side of OKX's ``books`` channel (implements ``BookFeed``)."""

    name = "okx"
    default_url = OKX_URL
    max_streams_per_connection = MAX_STREAMS_PER_CONNECTION
    keepalive_interval: float | None = KEEPALIVE_SECONDS

    def __init__(self) -> None:
        super().__init__()
        self._control = OkxProtocol()

    # -- client requests ------------------------------------------------------------------------

    def keepalive_message(self) -> str | None:
        return PING

    def _inst_ids(self, symbols: Sequence[str]) -> list[str]:
        return stream_names(self.name, "instruments", MAX_STREAMS_PER_CONNECTION, symbols, inst_id)

    def connection_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """``base_url`` when it names a path, else ``{base_url}/ws/v5/public``; ValueError for
        too many or ill-formed symbols."""
        self._inst_ids(symbols)
        return with_default_path(base_url, PUBLIC_PATH)

    @staticmethod
    def _request(op: str, ids: Sequence[str]) -> str:
        args = [{"channel": CHANNEL, "instId": i} for i in ids]
        return orjson.dumps({"op": op, "args": args}).decode()

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """One ``subscribe`` frame with a ``books`` argument per instrument (empty without
        symbols)."""
        ids = self._inst_ids(symbols)
        return [self._request("subscribe", ids)] if ids else []

    def _resubscribe_messages(self, raw_symbol: str) -> tuple[str, ...]:
        return self._request("unsubscribe", [raw_symbol]), self._request("subscribe", [raw_symbol])

    # -- received frames ------------------------------------------------------------------------

    def parse(self, frame: str | bytes, ts_recv: int) -> Sequence[BookLevel] | ControlEvent:
        """Decode one received frame: the rows of a ``books`` push (each entry of ``data`` in
        order, checked against the sequence; see the module docstring); the control event of
        a ``pong``, acknowledgement, error or notice (as :mod:`connectors.okx` decodes them);
        no rows for other channels (trades included). Raises only :class:`MalformedFrame`."""
        try:
            msg = _loads(frame)
        except (ValueError, TypeError):
            return control_only(self._control.parse(frame, ts_recv))  # "pong", or malformed
        if type(msg) is not dict:
            raise MalformedFrame("not-object", "frame is not a JSON object")
        arg = msg.get("arg")
        if type(arg) is not dict or arg.get("channel") != CHANNEL or "data" not in msg:
            return control_only(self._control.parse(frame, ts_recv))
        raw = arg.get("instId")
        if type(raw) is not str:
            raise MalformedFrame("type", "arg.instId must be a string")
        action, data = msg.get("action"), msg.get("data")
        if action not in ("snapshot", "update") or type(data) is not list:
            raise MalformedFrame("type", "books needs action snapshot/update and a data list")
        snapshot = action == "snapshot"
        state = self._book(raw)
        out: list[BookLevel] = []
        for entry in data:
            apply = partial(self._entry, state, entry, snapshot, ts_recv)
            out.extend(self._guarded(state, snapshot, ts_recv, apply))
        return out

    def _entry(
        self, state: SymbolBook, entry: object, snapshot: bool, ts_recv: int
    ) -> list[BookLevel]:
        """Apply one entry of ``data``; its rows, or none when it is out of sequence."""
        if type(entry) is not dict:
            raise MalformedFrame("not-object", "a books entry is not a JSON object")
        seq_id, prev = entry.get("seqId"), entry.get("prevSeqId")
        if type(seq_id) is not int or not 0 <= seq_id < _MAX_SEQ:
            raise MalformedFrame("type", "seqId must be a non-negative integer")
        if type(prev) is not int or not -1 <= prev < _MAX_SEQ:
            raise MalformedFrame("type", "prevSeqId must be an integer")
        ts = entry.get("ts")
        if type(ts) is not str or not DIGITS_MS(ts) or (ms := int(ts)) > MAX_MS:
            raise MalformedFrame("type", "ts must be decimal text of a time in range")
        bids, asks = text_levels(entry.get("bids"), "bids"), text_levels(entry.get("asks"), "asks")
        if not snapshot and str(prev) != state.seq:
            detail = f"prevSeqId {prev} after seqId {state.seq}"
            self._resync(state, "sequence", ts_recv, detail)
            return []
        rows = state.rows(
            bids, asks, snapshot=snapshot, seq=str(seq_id), ts_event=ms * 1000, ts_recv=ts_recv
        )
        return self._done(state, snapshot, ts_recv, rows)


# -- server side (the fake exchange) ----------------------------------------------------------


def _side(levels: Sequence[tuple[str, str]]) -> str:
    return ",".join(
        f'["{json_text(price)}","{json_text(size)}","0","{0 if _zero(size) else 1}"]'
        for price, size in levels
    )


def _zero(size: str) -> bool:
    return size.strip("0.") == ""


def encode_books(
    inst_id: str,
    bids: Sequence[tuple[str, str]],
    asks: Sequence[tuple[str, str]],
    *,
    action: Literal["snapshot", "update"],
    seq_id: int,
    prev_seq_id: int,
    ts_ms: int,
    checksum: int = 0,
) -> str:
    """A ``books`` push for ``inst_id`` with one entry: ``bids``/``asks`` as (price, size)
    text (written ``[price, size, "0", orders]``, orders 1, or 0 for a removal);
    ``checksum`` 0 as OKX now sends it. A snapshot's ``prev_seq_id`` is -1."""
    raw = json_text(inst_id)
    return (
        f'{{"arg":{{"channel":"books","instId":"{raw}"}},"action":"{action}","data":[{{'
        f'"asks":[{_side(asks)}],"bids":[{_side(bids)}],"ts":"{int(ts_ms)}",'
        f'"checksum":{int(checksum)},"prevSeqId":{int(prev_seq_id)},"seqId":{int(seq_id)}}}]}}'
    )
