"""BybitBookFeed: requests, sync from the snapshot, ``u`` rising by one (a gap recorded as a
resync and ended by the next snapshot), a ``u`` = 1 snapshot recorded as a ``restart``, a
snapshot mid-stream replacing the book, crossed books counted, other topics, the fake
exchange's encoders, and hostile frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base import Ack, ExchangeError, Heartbeat
from connectors.books.base import Resubscribe
from connectors.books.bybit import BybitBookFeed, encode_orderbook
from connectors.bybit import ClientRequest, encode_response, parse_client_request
from engine.errors import MalformedFrame
from tests.books_inband import Rebuild, parse_only_malformed, sides
from tests.strategies import BYBIT_TRADE, json_values

BIDS = [("16493.50", "0.006"), ("16493.00", "0.100")]
ASKS = [("16611.00", "0.029"), ("16612.00", "0.213")]
# Bybit's documented push shape (v5 "Orderbook")
DOC_SNAPSHOT = (
    '{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1672304484978,"data":{'
    '"s":"BTCUSDT","b":[["16493.50","0.006"],["16493.00","0.100"]],'
    '"a":[["16611.00","0.029"],["16612.00","0.213"]],"u":18521288,"seq":7961638724},'
    '"cts":1672304484976}'
)


def _push(bids: Any, asks: Any, u: int, kind: str = "delta", depth: int = 200) -> str:
    return encode_orderbook(
        "BTCUSDT",
        bids,
        asks,
        depth=depth,
        kind=kind,
        update_id=u,
        seq=u * 7,
        ts_ms=1_700_000_000_000 + u,
    )  # type: ignore[arg-type]


def _synced() -> tuple[BybitBookFeed, Rebuild]:
    feed = BybitBookFeed()
    rebuild = Rebuild(feed)
    rebuild.parse(_push(BIDS, ASKS, 500, "snapshot"), 10)
    return feed, rebuild


# -- requests ---------------------------------------------------------------------------------


def test_requests() -> None:
    feed = BybitBookFeed()
    assert feed.depth == 200
    frames = feed.subscribe_messages([f"S{n}USDT" for n in range(12)])
    assert [len(json.loads(f)["args"]) for f in frames] == [10, 2]
    first = json.loads(frames[0])
    assert first["op"] == "subscribe" and first["args"][0] == "orderbook.200.S0USDT"
    request = parse_client_request(frames[0])
    assert isinstance(request, ClientRequest) and request.args[1] == "orderbook.200.S1USDT"
    assert json.loads(feed.keepalive_message() or "")["op"] == "ping"
    assert feed.connection_url("ws://127.0.0.1:9", ["BTCUSDT"]) == "ws://127.0.0.1:9/v5/public/spot"
    assert json.loads(BybitBookFeed(depth=50).subscribe_messages(["btcusdt"])[0])["args"] == [
        "orderbook.50.BTCUSDT"
    ]
    with pytest.raises(ValueError):
        BybitBookFeed(depth=25)  # not a spot depth


# -- sync and sequence ------------------------------------------------------------------------


def test_documented_snapshot_and_deltas() -> None:
    feed = BybitBookFeed(depth=50)
    rebuild = Rebuild(feed)
    rows = rebuild.parse(DOC_SNAPSHOT, 5)
    assert [(r.side, r.price, r.size) for r in rows] == [
        ("bid", *BIDS[0]),
        ("bid", *BIDS[1]),
        ("ask", *ASKS[0]),
        ("ask", *ASKS[1]),
    ]
    assert {(r.seq, r.ts_event, r.symbol, r.raw_symbol) for r in rows} == {
        ("18521288", 1_672_304_484_978_000, "BTC-USDT", "BTCUSDT")
    }
    rows = rebuild.parse(_push([("16493.50", "0")], [("16611.00", "1")], 18521289, depth=50), 6)
    assert [(r.side, r.price, r.size, r.seq, r.snapshot) for r in rows] == [
        ("bid", "16493.50", "0", "18521289", False),
        ("ask", "16611.00", "1", "18521289", False),
    ]
    assert rebuild.agrees("BTCUSDT") and feed.books["BTCUSDT"].synced
    # another depth's topic is not this feed's: no rows
    assert feed.parse(_push([("1", "1")], [], 18521290, depth=200), 7) == ()


def test_gap_resubscribes_and_the_snapshot_ends_it() -> None:
    feed, rebuild = _synced()
    rebuild.parse(_push([("16493.50", "1")], [], 501), 11)
    assert rebuild.parse(_push([("16493.50", "2")], [], 503), 12) == []
    state = feed.books["BTCUSDT"]
    assert state.resync is not None and state.resync.cause == "sequence"
    [action] = feed.take_actions()
    assert isinstance(action, Resubscribe)
    unsubscribe, subscribe = (json.loads(m) for m in action.messages)
    assert (unsubscribe["op"], unsubscribe["args"]) == ("unsubscribe", ["orderbook.200.BTCUSDT"])
    assert (subscribe["op"], subscribe["args"]) == ("subscribe", ["orderbook.200.BTCUSDT"])
    assert rebuild.parse(_push([("16493.50", "3")], [], 504), 13) == []
    rebuild.parse(_push(BIDS, ASKS, 510, "snapshot"), 14)
    [resync] = feed.take_resyncs()
    assert (resync.cause, resync.from_seq, resync.to_seq) == ("sequence", "501", "510")
    assert (resync.at_ns, resync.done_ns, resync.superseded) == (12, 14, 1)
    assert state.synced and rebuild.agrees("BTCUSDT") and sides(state.book) == (BIDS, ASKS)


def test_u1_snapshot_is_a_restart() -> None:
    feed, rebuild = _synced()
    rebuild.parse(_push([("16493.50", "1")], [], 501), 11)
    rows = rebuild.parse(_push(BIDS[:1], ASKS[:1], 1, "snapshot"), 12)
    assert len(rows) == 2 and all(r.snapshot and r.seq == "1" for r in rows)
    [resync] = feed.take_resyncs()
    assert (resync.cause, resync.from_seq, resync.to_seq) == ("restart", "501", "1")
    assert (resync.at_ns, resync.done_ns) == (12, 12)
    rebuild.parse(_push([("16493.00", "5")], [], 2), 13)  # the sequence goes on from 1
    assert feed.books["BTCUSDT"].synced and not feed.has_actions and rebuild.agrees("BTCUSDT")
    # a symbol's very first snapshot with u = 1 is a plain sync
    fresh = BybitBookFeed()
    fresh.parse(_push(BIDS, ASKS, 1, "snapshot"), 1)
    assert fresh.books["BTCUSDT"].synced and fresh.take_resyncs() == []


def test_snapshot_mid_stream_replaces_the_book() -> None:
    feed, rebuild = _synced()
    rebuild.parse(_push([("16400", "1")], [], 501), 11)
    rebuild.parse(_push([("16000", "2")], [("17000", "1")], 502, "snapshot"), 12)
    state = feed.books["BTCUSDT"]
    assert sides(state.book) == ([("16000", "2")], [("17000", "1")])
    # recorded (the data holds a fresh snapshot: verify expects its resync), begun and ended
    [resync] = feed.take_resyncs()
    assert (resync.cause, resync.from_seq, resync.to_seq) == ("snapshot", "501", "502")
    assert (resync.at_ns, resync.done_ns) == (12, 12)
    assert rebuild.agrees("BTCUSDT")
    rebuild.parse(_push([("16001", "1")], [], 503), 13)
    assert state.synced and state.seq == "503"


def test_reconnect_and_delta_before_snapshot() -> None:
    feed, rebuild = _synced()
    feed.connected(20)
    assert rebuild.parse(_push([("1", "1")], [], 501), 21) == []
    rebuild.parse(_push(BIDS, ASKS, 900, "snapshot"), 22)
    [resync] = feed.take_resyncs()
    assert (resync.cause, resync.superseded, resync.to_seq) == ("reconnect", 1, "900")
    fresh = BybitBookFeed()
    assert fresh.parse(_push([("1", "1")], [], 7), 1) == ()
    assert fresh.has_actions


def test_crossed_book_is_counted() -> None:
    feed, rebuild = _synced()
    rebuild.parse(_push([("16700", "1")], [], 501), 11)
    assert feed.books["BTCUSDT"].crossed == 1 and feed.books["BTCUSDT"].synced


def test_malformed_delta_breaks_the_book() -> None:
    feed, _ = _synced()
    with pytest.raises(MalformedFrame):
        feed.parse(_push([("16493.50", "-1")], [], 501), 11)
    assert feed.books["BTCUSDT"].resync is not None and feed.has_actions


# -- other topics -----------------------------------------------------------------------------


def test_trades_and_controls_of_the_same_exchange() -> None:
    feed, _ = _synced()
    assert feed.parse(BYBIT_TRADE, 1) == ()
    assert feed.parse('{"topic":"tickers.BTCUSDT","type":"snapshot","data":{}}', 1) == ()
    assert isinstance(feed.parse(encode_response("subscribe", "book-1", "c"), 1), Ack)
    assert feed.parse(encode_response("ping", "1", "c", ret_msg="pong"), 1) == Heartbeat()
    refused = feed.parse(
        encode_response(
            "subscribe", "1", "c", success=False, ret_msg="Invalid symbol :[orderbook.200.NOPEUSDT]"
        ),
        1,
    )
    assert isinstance(refused, ExchangeError) and refused.fatal
    assert refused.symbols == ("NOPEUSDT",)
    assert feed.books["BTCUSDT"].synced and not feed.has_actions


# -- the fake exchange's encoders -------------------------------------------------------------


def test_encode_orderbook() -> None:
    msg = json.loads(_push([("1.0", "2")], [], 7, "snapshot", depth=1000))
    assert msg["topic"] == "orderbook.1000.BTCUSDT" and msg["type"] == "snapshot"
    assert msg["data"] == {"s": "BTCUSDT", "b": [["1.0", "2"]], "a": [], "u": 7, "seq": 49}
    assert msg["ts"] == msg["cts"] == 1_700_000_000_007


# -- hostile frames ---------------------------------------------------------------------------

_DELTA = _push([("16493.50", "1")], [], 501)


@given(st.sampled_from(["type", "ts", "data", "s", "b", "a", "u", "level"]), json_values)
def test_only_malformed_frame_escapes(field: str, value: Any) -> None:
    for frame in (_push(BIDS, ASKS, 9, "snapshot"), _DELTA):
        feed, _ = _synced()
        msg = json.loads(frame)
        if field in ("type", "ts", "data"):
            msg[field] = value
        elif field == "level":
            msg["data"]["b"][0] = value
        else:
            msg["data"][field] = value
        parse_only_malformed(feed, json.dumps(msg))


@given(st.binary(max_size=80) | st.text(max_size=80))
def test_garbage_is_malformed(frame: bytes | str) -> None:
    parse_only_malformed(BybitBookFeed(), frame)
