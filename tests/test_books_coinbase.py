"""CoinbaseBookFeed: requests, sync from the in-band snapshot, resyncs (update before a
snapshot, reconnect, malformed update) recorded and ended by the next snapshot, crossed books
counted, other channels, the fake exchange's encoders, and hostile frames."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base import Ack, ExchangeError, Heartbeat
from connectors.books.base import Resubscribe
from connectors.books.coinbase import CoinbaseBookFeed, encode_l2_snapshot, encode_l2update
from connectors.coinbase import encode_error, encode_heartbeat, encode_subscriptions
from engine.errors import MalformedFrame
from tests.books_inband import Rebuild, parse_only_malformed, rows_of, sides
from tests.strategies import COINBASE_MATCH, json_values

T0 = "2024-03-01T12:00:00.000001Z"
T0_US = 1_709_294_400_000_001
BIDS = [("100.50", "1.0"), ("100.40", "2.5")]
ASKS = [("100.60", "0.7"), ("100.70", "3")]


def _synced() -> tuple[CoinbaseBookFeed, Rebuild]:
    feed = CoinbaseBookFeed()
    rebuild = Rebuild(feed)
    rebuild.parse(encode_l2_snapshot("BTC-USD", BIDS, ASKS, time_iso=T0), 10)
    return feed, rebuild


# -- requests ---------------------------------------------------------------------------------


def test_subscribes_to_level2_batch_and_heartbeat() -> None:
    feed = CoinbaseBookFeed()
    [frame] = feed.subscribe_messages(["btc-usd", "ETH-USD"])
    assert json.loads(frame) == {
        "type": "subscribe",
        "product_ids": ["BTC-USD", "ETH-USD"],
        "channels": ["level2_batch", "heartbeat"],
    }
    assert feed.subscribe_messages([]) == []
    assert feed.connection_url("ws://127.0.0.1:9", ["BTC-USD"]) == "ws://127.0.0.1:9"
    assert feed.keepalive_message() is None and feed.rest_url is None and not feed.sequenced
    with pytest.raises(ValueError):
        feed.connection_url("ws://x", ["BTCUSD"])


# -- sync -------------------------------------------------------------------------------------


def test_snapshot_then_updates_rows_and_book() -> None:
    feed = CoinbaseBookFeed()
    rebuild = Rebuild(feed)
    rows = rebuild.parse(encode_l2_snapshot("BTC-USD", BIDS, ASKS), 5_000_123_456)
    assert [(r.side, r.price, r.size, r.snapshot, r.seq) for r in rows] == [
        ("bid", "100.50", "1.0", True, None),
        ("bid", "100.40", "2.5", True, None),
        ("ask", "100.60", "0.7", True, None),
        ("ask", "100.70", "3", True, None),
    ]
    assert {(r.ts_event, r.ts_recv, r.symbol, r.raw_symbol) for r in rows} == {
        (5_000_123, 5_000_123_456, "BTC-USD", "BTC-USD")  # no time: the receive time in µs
    }
    state = feed.books["BTC-USD"]
    assert state.synced and state.resync is None and feed.take_resyncs() == []
    changes = [("sell", "100.60", "0"), ("buy", "100.55", "4"), ("buy", "100.40", "2.0")]
    rows = rebuild.parse(encode_l2update("BTC-USD", changes, time_iso=T0), 6)
    assert [(r.side, r.price, r.size, r.snapshot) for r in rows] == [
        ("bid", "100.55", "4", False),
        ("bid", "100.40", "2.0", False),
        ("ask", "100.60", "0", False),
    ]
    assert {r.ts_event for r in rows} == {T0_US}
    assert sides(state.book) == (
        [("100.55", "4"), ("100.50", "1.0"), ("100.40", "2.0")],
        [("100.70", "3")],
    )
    assert rebuild.agrees("BTC-USD")
    assert not feed.has_actions and state.crossed == 0


def test_snapshot_with_time_uses_it() -> None:
    feed = CoinbaseBookFeed()
    rows = rows_of(feed.parse(encode_l2_snapshot("ETH-USD", BIDS, [], time_iso=T0), 99))
    assert {r.ts_event for r in rows} == {T0_US}


def test_crossed_book_is_counted_not_resynced() -> None:
    feed, rebuild = _synced()
    rebuild.parse(encode_l2update("BTC-USD", [("buy", "100.65", "1")], time_iso=T0), 11)
    rebuild.parse(encode_l2update("BTC-USD", [("buy", "100.66", "1")], time_iso=T0), 12)
    state = feed.books["BTC-USD"]
    assert state.crossed == 2 and state.synced and not feed.has_actions


# -- resyncs ----------------------------------------------------------------------------------


def test_update_before_any_snapshot_resubscribes_and_the_snapshot_ends_it() -> None:
    feed = CoinbaseBookFeed()
    rebuild = Rebuild(feed)
    update = encode_l2update("BTC-USD", [("buy", "1", "1")], time_iso=T0)
    assert rebuild.parse(update, 1) == []
    assert rebuild.parse(update, 2) == []
    [action] = feed.take_actions()
    assert isinstance(action, Resubscribe) and action.raw_symbol == "BTC-USD"
    assert [json.loads(m) for m in action.messages] == [
        {"type": "unsubscribe", "product_ids": ["BTC-USD"], "channels": ["level2_batch"]},
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2_batch"]},
    ]
    rebuild.parse(encode_l2_snapshot("BTC-USD", BIDS, ASKS), 3)
    # the symbol's first book ends it: no resync (no book had been written before)
    assert feed.take_resyncs() == []
    assert rebuild.agrees("BTC-USD")


def test_reconnect_voids_the_book_until_the_next_snapshot() -> None:
    feed, rebuild = _synced()
    feed._resync(feed.books["BTC-USD"], "sequence", 11, "test")  # a resubscription queued
    feed.connected(20)
    assert not feed.has_actions  # the new connection's subscribe brings the snapshot
    update = encode_l2update("BTC-USD", [("buy", "1", "1")], time_iso=T0)
    assert rebuild.parse(update, 21) == [] and rebuild.parse(update, 22) == []
    rows = rebuild.parse(encode_l2_snapshot("BTC-USD", BIDS[:1], ASKS[:1]), 30)
    assert rows and all(r.snapshot for r in rows)
    [resync] = feed.take_resyncs()
    assert (resync.cause, resync.at_ns, resync.done_ns) == ("sequence", 11, 30)
    assert resync.superseded == 3  # the reconnect and two updates, all covered by the snapshot
    assert rebuild.agrees("BTC-USD") and feed.books["BTC-USD"].synced


def test_plain_reconnect_is_a_reconnect_resync() -> None:
    feed, rebuild = _synced()
    feed.connected(20)
    rebuild.parse(encode_l2_snapshot("BTC-USD", BIDS, ASKS), 30)
    [resync] = feed.take_resyncs()
    assert (resync.cause, resync.at_ns, resync.done_ns, resync.superseded) == (
        "reconnect",
        20,
        30,
        0,
    )


def test_malformed_update_breaks_the_book_and_resubscribes() -> None:
    feed, rebuild = _synced()
    bad = encode_l2update("BTC-USD", [("buy", "100.1", "1"), ("buy", "x", "1")], time_iso=T0)
    with pytest.raises(MalformedFrame):
        feed.parse(bad, 11)
    state = feed.books["BTC-USD"]
    assert not state.synced and state.resync is not None
    assert state.resync.cause == "sequence" and state.resync.detail.startswith("malformed")
    [action] = feed.take_actions()
    assert isinstance(action, Resubscribe)
    rebuild.parse(encode_l2_snapshot("BTC-USD", BIDS, ASKS), 12)
    assert rebuild.agrees("BTC-USD") and [r.cause for r in feed.take_resyncs()] == ["sequence"]


# -- other channels ---------------------------------------------------------------------------


def test_trades_and_controls_of_the_same_exchange() -> None:
    feed, _ = _synced()
    assert feed.parse(COINBASE_MATCH, 1) == ()
    assert feed.parse(COINBASE_MATCH.replace('"match"', '"last_match"'), 1) == ()
    assert feed.parse('{"type":"ticker","product_id":"BTC-USD"}', 1) == ()
    assert feed.parse(encode_heartbeat("BTC-USD", 5, T0_US), 1) == Heartbeat()
    subscribed = encode_subscriptions({"level2_batch": ["BTC-USD"], "heartbeat": ["BTC-USD"]})
    assert feed.parse(subscribed, 1) == Ack("subscriptions")
    error = feed.parse(encode_error("Failed to subscribe", "NOPE-USD is not a valid product"), 1)
    assert isinstance(error, ExchangeError) and error.fatal and error.symbols == ("NOPE-USD",)
    assert feed.books["BTC-USD"].synced and not feed.has_actions


# -- the fake exchange's encoders -------------------------------------------------------------


def test_encoders_round_trip() -> None:
    snap = encode_l2_snapshot("BTC-USD", BIDS, ASKS, time_iso=T0)
    assert orjson.loads(snap) == {
        "type": "snapshot",
        "product_id": "BTC-USD",
        "bids": [list(level) for level in BIDS],
        "asks": [list(level) for level in ASKS],
        "time": T0,
    }
    update = encode_l2update("BTC-USD", [("sell", "100.60", "0")], time_iso=T0)
    assert orjson.loads(update)["changes"] == [["sell", "100.60", "0"]]
    with pytest.raises(ValueError):
        encode_l2update("BTC-USD", [("bid", "1", "1")], time_iso=T0)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["buy", "sell"]),
            st.decimals(min_value=1, max_value=10**6, places=4).map(str),
            st.decimals(min_value=0, max_value=10**4, places=8).map(str),
        ),
        max_size=20,
    )
)
def test_random_updates_rebuild_from_rows(changes: list[tuple[str, str, str]]) -> None:
    _, rebuild = _synced()
    rows = rebuild.parse(encode_l2update("BTC-USD", changes, time_iso=T0), 11)
    assert len(rows) == len(changes)
    assert sorted((r.side, r.price, r.size) for r in rows) == sorted(
        ("bid" if s == "buy" else "ask", p, z) for s, p, z in changes
    )
    assert rebuild.agrees("BTC-USD")


# -- hostile frames ---------------------------------------------------------------------------

_SNAPSHOT = encode_l2_snapshot("BTC-USD", BIDS, ASKS, time_iso=T0)
_UPDATE = encode_l2update("BTC-USD", [("buy", "100.1", "1")], time_iso=T0)


@given(
    st.sampled_from([_SNAPSHOT, _UPDATE, COINBASE_MATCH]),
    st.sampled_from(["type", "product_id", "bids", "asks", "changes", "time", "side", "price"]),
    json_values,
)
def test_only_malformed_frame_escapes(frame: str, field: str, value: Any) -> None:
    feed, _ = _synced()
    msg = json.loads(frame)
    msg[field] = value
    parse_only_malformed(feed, json.dumps(msg))
    for level_field in ("bids", "changes"):
        if level_field in json.loads(frame):
            msg = json.loads(frame)
            msg[level_field] = [value] if not isinstance(value, list) else [value, value]
            parse_only_malformed(feed, json.dumps(msg))


@given(st.binary(max_size=80) | st.text(max_size=80))
def test_garbage_is_malformed(frame: bytes | str) -> None:
    parse_only_malformed(CoinbaseBookFeed(), frame)
