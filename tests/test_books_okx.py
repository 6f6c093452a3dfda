"""OkxBookFeed: requests, sync from the snapshot, the ``prevSeqId`` rule (no-change updates,
a sequence reset after maintenance, a gap recorded as a resync and ended by the next
snapshot), the deprecated checksum ignored, crossed books counted, other channels, the fake
exchange's encoders, and hostile frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base import Ack, ExchangeError, Heartbeat, ReconnectNotice
from connectors.books.base import Resubscribe
from connectors.books.okx import OkxBookFeed, encode_books
from connectors.okx import (
    ClientRequest,
    encode_error,
    encode_event,
    encode_notice,
    parse_client_request,
    unknown_channel_msg,
)
from engine.errors import MalformedFrame
from tests.books_inband import Rebuild, parse_only_malformed, sides
from tests.strategies import OKX_TRADE, json_values

BIDS = [("41006.8", "0.60038921"), ("41006.3", "0.30178218")]
ASKS = [("41006.9", "0.2"), ("41007.5", "1.5")]
# OKX's documented push shape (v5 "Order book channel")
DOC_SNAPSHOT = (
    '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[{'
    '"asks":[["8476.98","415","0","13"],["8477","7","0","2"]],'
    '"bids":[["8476.97","256","0","12"],["8475.55","101","0","1"]],'
    '"ts":"1597026383085","checksum":-855196043,"prevSeqId":-1,"seqId":123456}]}'
)


def _push(bids: Any, asks: Any, *, seq: int, prev: int, action: str = "update") -> str:
    return encode_books(
        "BTC-USDT", bids, asks, action=action, seq_id=seq, prev_seq_id=prev, ts_ms=1_700_000_000_123
    )  # type: ignore[arg-type]


def _synced() -> tuple[OkxBookFeed, Rebuild]:
    feed = OkxBookFeed()
    rebuild = Rebuild(feed)
    rebuild.parse(_push(BIDS, ASKS, seq=100, prev=-1, action="snapshot"), 10)
    return feed, rebuild


# -- requests ---------------------------------------------------------------------------------


def test_requests() -> None:
    feed = OkxBookFeed()
    [frame] = feed.subscribe_messages(["BTC-USDT", "eth-usdt"])
    assert json.loads(frame) == {
        "op": "subscribe",
        "args": [
            {"channel": "books", "instId": "BTC-USDT"},
            {"channel": "books", "instId": "ETH-USDT"},
        ],
    }
    assert feed.keepalive_message() == "ping"
    assert feed.connection_url("ws://127.0.0.1:9", ["BTC-USDT"]) == "ws://127.0.0.1:9/ws/v5/public"
    assert parse_client_request(frame) == ClientRequest(
        "subscribe", (("books", "BTC-USDT"), ("books", "ETH-USDT"))
    )
    with pytest.raises(ValueError):
        feed.subscribe_messages(["BTC-USDT-SWAP"])


# -- sync and sequence ------------------------------------------------------------------------


def test_documented_snapshot() -> None:
    feed = OkxBookFeed()
    rows = feed.parse(DOC_SNAPSHOT, 5)
    assert isinstance(rows, list)
    assert [(r.side, r.price, r.size) for r in rows] == [
        ("bid", "8476.97", "256"),
        ("bid", "8475.55", "101"),
        ("ask", "8476.98", "415"),
        ("ask", "8477", "7"),
    ]
    assert {(r.seq, r.ts_event, r.snapshot) for r in rows} == {
        ("123456", 1_597_026_383_085_000, True)
    }
    assert feed.books["BTC-USDT"].synced  # the deprecated checksum is not checked


def test_updates_follow_prev_seq_id() -> None:
    feed, rebuild = _synced()
    rows = rebuild.parse(_push([("41006.8", "0")], [("41006.95", "3")], seq=105, prev=100), 11)
    assert [(r.side, r.price, r.size, r.seq, r.snapshot) for r in rows] == [
        ("bid", "41006.8", "0", "105", False),
        ("ask", "41006.95", "3", "105", False),
    ]
    # no change for a while: the same seqId again, no levels
    assert rebuild.parse(_push([], [], seq=105, prev=105), 12) == []
    # maintenance resets the sequence: seqId below prevSeqId is still in sequence
    rebuild.parse(_push([("41006.3", "1")], [], seq=3, prev=105), 13)
    rebuild.parse(_push([("41006.2", "1")], [], seq=5, prev=3), 14)
    state = feed.books["BTC-USDT"]
    assert state.synced and state.seq == "5" and not feed.has_actions
    assert feed.take_resyncs() == [] and rebuild.agrees("BTC-USDT")


def test_gap_resubscribes_and_the_snapshot_ends_it() -> None:
    feed, rebuild = _synced()
    rebuild.parse(_push([("41006.8", "1")], [], seq=101, prev=100), 11)
    assert rebuild.parse(_push([("41006.8", "2")], [], seq=107, prev=103), 12) == []
    state = feed.books["BTC-USDT"]
    assert not state.synced and state.resync is not None and state.resync.cause == "sequence"
    [action] = feed.take_actions()
    assert isinstance(action, Resubscribe)
    assert [json.loads(m) for m in action.messages] == [
        {"op": "unsubscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]},
        {"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]},
    ]
    # even an update that would follow is superseded now
    assert rebuild.parse(_push([("41006.8", "3")], [], seq=108, prev=107), 13) == []
    assert not feed.has_actions
    rebuild.parse(_push(BIDS, ASKS, seq=200, prev=-1, action="snapshot"), 14)
    [resync] = feed.take_resyncs()
    assert (resync.cause, resync.from_seq, resync.to_seq) == ("sequence", "101", "200")
    assert (resync.at_ns, resync.done_ns, resync.superseded) == (12, 14, 1)
    assert state.synced and rebuild.agrees("BTC-USDT")
    assert sides(state.book) == (BIDS, ASKS)


def test_reconnect_and_update_before_snapshot() -> None:
    feed, rebuild = _synced()
    feed.connected(20)
    assert rebuild.parse(_push([("1", "1")], [], seq=101, prev=100), 21) == []
    rebuild.parse(_push(BIDS, ASKS, seq=300, prev=-1, action="snapshot"), 22)
    [resync] = feed.take_resyncs()
    assert (resync.cause, resync.from_seq, resync.to_seq, resync.superseded) == (
        "reconnect",
        "100",
        "300",
        1,
    )
    fresh = OkxBookFeed()
    assert fresh.parse(_push([("1", "1")], [], seq=1, prev=0), 1) == []
    assert fresh.has_actions and fresh.books["BTC-USDT"].resync is not None


def test_crossed_book_is_counted() -> None:
    feed, rebuild = _synced()
    rebuild.parse(_push([("41007", "1")], [], seq=101, prev=100), 11)
    assert feed.books["BTC-USDT"].crossed == 1 and feed.books["BTC-USDT"].synced


def test_malformed_entry_breaks_the_book() -> None:
    feed, _ = _synced()
    frame = _push([("41006.8", "1")], [], seq=101, prev=100).replace('"seqId":101', '"seqId":"x"')
    with pytest.raises(MalformedFrame):
        feed.parse(frame, 11)
    assert feed.books["BTC-USDT"].resync is not None and feed.has_actions


# -- other channels ---------------------------------------------------------------------------


def test_trades_and_controls_of_the_same_exchange() -> None:
    feed, _ = _synced()
    assert feed.parse(OKX_TRADE, 1) == ()
    assert feed.parse("pong", 1) == Heartbeat() and feed.parse(b"pong", 1) == Heartbeat()
    assert isinstance(feed.parse(encode_event("subscribe", "books", "BTC-USDT", "c1"), 1), Ack)
    refused = feed.parse(encode_error("60018", unknown_channel_msg("books", "NOPE-USDT"), "c"), 1)
    assert isinstance(refused, ExchangeError) and refused.fatal
    assert refused.symbols == ("NOPE-USDT",)
    assert isinstance(feed.parse(encode_notice("c1"), 1), ReconnectNotice)
    assert feed.books["BTC-USDT"].synced and not feed.has_actions


# -- the fake exchange's encoders -------------------------------------------------------------


def test_encode_books() -> None:
    msg = json.loads(_push([("1.0", "2")], [("3", "0")], seq=9, prev=8))
    assert msg["arg"] == {"channel": "books", "instId": "BTC-USDT"} and msg["action"] == "update"
    [entry] = msg["data"]
    assert entry["bids"] == [["1.0", "2", "0", "1"]] and entry["asks"] == [["3", "0", "0", "0"]]
    assert (entry["seqId"], entry["prevSeqId"], entry["checksum"]) == (9, 8, 0)
    assert entry["ts"] == "1700000000123"


# -- hostile frames ---------------------------------------------------------------------------

_UPDATE = _push([("41006.8", "1")], [], seq=101, prev=100)


@given(
    st.sampled_from(["action", "arg", "data", "bids", "asks", "ts", "seqId", "prevSeqId", "level"]),
    json_values,
)
def test_only_malformed_frame_escapes(field: str, value: Any) -> None:
    for frame in (DOC_SNAPSHOT, _UPDATE):
        feed, _ = _synced()
        msg = json.loads(frame)
        if field in ("action", "arg", "data"):
            msg[field] = value
        elif field == "level":
            msg["data"][0]["bids"][0] = value
        else:
            msg["data"][0][field] = value
        parse_only_malformed(feed, json.dumps(msg))


@given(st.binary(max_size=80) | st.text(max_size=80))
def test_garbage_is_malformed(frame: bytes | str) -> None:
    parse_only_malformed(OkxBookFeed(), frame)
