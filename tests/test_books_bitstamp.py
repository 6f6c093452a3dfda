"""Bitstamp's book feed (connectors/books/bitstamp.py): the encoders the fake exchange uses,
the diff channel over a REST snapshot (diffs not newer than the snapshot dropped, a snapshot
older than the buffer fetched again, microtimestamps that must rise), control frames reused
from the trade protocol, and hostile input (only MalformedFrame escapes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import Ack, ExchangeError, Heartbeat, ReconnectNotice
from connectors.bitstamp import (
    HEARTBEAT_REPLY,
    HEARTBEAT_REQUEST,
    RECONNECT_NOTICE,
    encode_error,
    encode_subscribed,
    encode_trade,
)
from connectors.books.base import MAX_BUFFERED_MESSAGES, FetchSnapshot
from connectors.books.bitstamp import (
    BITSTAMP_REST_URL,
    BitstampBookFeed,
    encode_diff,
    encode_order_book,
)
from connectors.books.registry import get_book_feed
from engine.book_records import BookLevel, BookReplica
from engine.errors import MalformedFrame
from tests.books_inband import rows_of, sides
from tests.books_rest import (
    edited_frames,
    level_lists,
    parse_only_malformed,
    snapshot_only_malformed,
)
from tests.strategies import json_values, make_trade

PAIR = "btcusd"
T0 = 1_700_000_000_000_000_000
US = 1_700_000_000_000_000
_LEVELS = level_lists(2, 8)


def feed() -> BitstampBookFeed:
    f = BitstampBookFeed()
    f.subscribe_messages([PAIR])
    f.connected(T0)
    return f


def diff(us: int, bids: Any = (), asks: Any = ()) -> str:
    return encode_diff(PAIR, bids, asks, microtimestamp=us)


def levels(f: BitstampBookFeed) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    return sides(f.books[PAIR].book)


def replica_levels(
    rows: Sequence[BookLevel],
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    replica = BookReplica()
    replica.apply_all(rows)
    return sides(replica.book("bitstamp", "BTC-USD"))


# -- encoders ------------------------------------------------------------------------------


@given(_LEVELS, _LEVELS, st.integers(1, 2 * US))
def test_encoded_diff_parses_to_its_rows(
    bids: list[tuple[str, str]], asks: list[tuple[str, str]], us: int
) -> None:
    f = feed()
    f.parse(diff(us - 1), T0)
    f.snapshot_fetched(PAIR, encode_order_book([], [], microtimestamp=us - 1), T0)
    rows = rows_of(f.parse(diff(us, bids, asks), T0 + 1))
    assert [(r.side, r.price, r.size) for r in rows] == [("bid", p, s) for p, s in bids] + [
        ("ask", p, s) for p, s in asks
    ]
    assert all(r.seq == str(us) and r.ts_event == us and not r.snapshot for r in rows)
    assert all(r.symbol == "BTC-USD" and r.raw_symbol == PAIR for r in rows)


@given(_LEVELS, _LEVELS, st.integers(0, 2 * US))
def test_encoded_order_book_parses_to_its_rows(
    bids: list[tuple[str, str]], asks: list[tuple[str, str]], us: int
) -> None:
    f = feed()
    rows = f.snapshot_fetched(PAIR, encode_order_book(bids, asks, microtimestamp=us), T0)
    assert [(r.side, r.price, r.size) for r in rows] == [("bid", p, s) for p, s in bids] + [
        ("ask", p, s) for p, s in asks
    ]
    assert all(r.snapshot and r.seq == str(us) and r.ts_event == us for r in rows)


def test_wire_forms() -> None:
    doc = orjson.loads(diff(1641343699596123, [("3805.44", "0.5")], [("3806", "0")]))
    assert doc == {
        "data": {
            "timestamp": "1641343699",
            "microtimestamp": "1641343699596123",
            "bids": [["3805.44", "0.5"]],
            "asks": [["3806", "0"]],
        },
        "channel": "diff_order_book_btcusd",
        "event": "data",
    }
    body = orjson.loads(encode_order_book([("1", "2")], [], microtimestamp=5_000_001))
    assert body == {"timestamp": "5", "microtimestamp": "5000001", "bids": [["1", "2"]], "asks": []}


def test_requests_and_registry() -> None:
    f = get_book_feed("bitstamp")
    assert isinstance(f, BitstampBookFeed) and f.rest_url == BITSTAMP_REST_URL
    assert f.subscribe_messages(["BTCUSD", "ethusd"]) == [
        '{"event":"bts:subscribe","data":{"channel":"diff_order_book_btcusd"}}',
        '{"event":"bts:subscribe","data":{"channel":"diff_order_book_ethusd"}}',
    ]
    assert f.connection_url("wss://ws.bitstamp.net/", ["btcusd"]) == "wss://ws.bitstamp.net"
    assert f.keepalive_message() == HEARTBEAT_REQUEST and f.keepalive_interval
    assert f.snapshot_url("http://h:1/", "BTCUSD") == "http://h:1/api/v2/order_book/btcusd/"
    assert f.symbol_of_snapshot("https://www.bitstamp.net/api/v2/order_book/btcusd/") == "btcusd"
    assert f.symbol_of_snapshot("https://www.bitstamp.net/api/v2/ticker/btcusd/") is None
    with pytest.raises(ValueError):
        f.subscribe_messages(["btc/usd"])


# -- synchronisation -----------------------------------------------------------------------


def test_diffs_wait_for_the_snapshot_and_those_not_newer_are_dropped() -> None:
    f = feed()
    assert f.parse(diff(US + 10, [("100", "1")]), T0) == ()
    assert f.parse(diff(US + 20, [("101", "1")]), T0 + 1) == ()
    assert f.take_actions() == [
        FetchSnapshot(PAIR, f"{BITSTAMP_REST_URL}/api/v2/order_book/btcusd/", 1)
    ]
    body = encode_order_book([("100", "1"), ("99", "2")], [("105", "1")], microtimestamp=US + 15)
    rows = list(f.snapshot_fetched(PAIR, body, T0 + 2))
    assert [r.seq for r in rows] == [str(US + 15)] * 3 + [str(US + 20)]
    rows += rows_of(f.parse(diff(US + 30, [], [("105", "0"), ("106", "3")]), T0 + 3))
    assert levels(f) == ([("101", "1"), ("100", "1"), ("99", "2")], [("106", "3")])
    assert replica_levels(rows) == levels(f)
    assert f.take_resyncs() == []


def test_snapshot_older_than_the_buffer_is_fetched_again() -> None:
    f = feed()
    f.parse(diff(US + 10, [("1", "1")]), T0)
    f.take_actions()
    assert f.snapshot_fetched(PAIR, encode_order_book([], [], microtimestamp=US + 5), T0 + 1) == ()
    assert len(f.take_actions()) == 1 and not f.books[PAIR].synced
    rows = f.snapshot_fetched(PAIR, encode_order_book([], [], microtimestamp=US + 10), T0 + 2)
    assert rows == [] and f.books[PAIR].synced  # the buffered diff is in the snapshot
    assert f.take_resyncs() == []  # the first book: no resync (nothing was written before)


def test_a_diff_earlier_than_the_last_breaks_the_book() -> None:
    f = feed()
    f.parse(diff(US + 1), T0)
    f.snapshot_fetched(PAIR, encode_order_book([("1", "1")], [], microtimestamp=US + 1), T0)
    f.take_actions()
    assert f.parse(diff(US + 1, [("9", "1")]), T0 + 1) == ()  # the snapshot's time: in it
    rows_of(f.parse(diff(US + 4, [("2", "1")]), T0 + 1))
    assert len(rows_of(f.parse(diff(US + 4, [("2", "2")]), T0 + 1))) == 1  # same µs: applied
    assert levels(f) == ([("2", "2"), ("1", "1")], [])
    rows_of(f.parse(diff(US + 5, [("2", "1")]), T0 + 1))
    assert f.parse(diff(US + 4, [("3", "1")]), T0 + 2) == ()  # earlier: out of order
    assert not f.books[PAIR].synced and len(f.take_actions()) == 1
    f.snapshot_fetched(PAIR, encode_order_book([("3", "1")], [], microtimestamp=US + 6), T0 + 3)
    (resync,) = f.take_resyncs()
    assert (resync.cause, resync.from_seq, resync.to_seq) == ("sequence", str(US + 5), str(US + 6))
    assert resync.superseded == 1  # the breaking diff is older than the new snapshot


def test_reconnect_resyncs_and_old_diffs_after_an_empty_buffer_snapshot_are_ignored() -> None:
    f = feed()
    f.parse(diff(US + 1), T0)
    f.snapshot_fetched(PAIR, encode_order_book([("1", "1")], [], microtimestamp=US + 1), T0)
    f.connected(T0 + 1)
    assert not f.books[PAIR].synced
    f.snapshot_fetched(PAIR, encode_order_book([("2", "1")], [], microtimestamp=US + 9), T0 + 2)
    assert f.parse(diff(US + 8, [("7", "1")]), T0 + 3) == ()  # in the snapshot already
    assert f.books[PAIR].synced and levels(f) == ([("2", "1")], [])
    (resync,) = f.take_resyncs()
    assert resync.cause == "reconnect"


def test_buffer_bound() -> None:
    f = feed()
    for i in range(MAX_BUFFERED_MESSAGES + 3):
        f.parse(diff(US + i), T0 + i)
    f.snapshot_fetched(PAIR, encode_order_book([], [], microtimestamp=US), T0)
    assert not f.books[PAIR].synced  # older than what is left after the overflow


def test_control_frames_come_from_the_trade_protocol() -> None:
    f = feed()
    assert isinstance(f.parse(HEARTBEAT_REPLY, T0), Heartbeat)
    assert isinstance(f.parse(RECONNECT_NOTICE, T0), ReconnectNotice)
    assert isinstance(f.parse(encode_subscribed("diff_order_book_btcusd"), T0), Ack)
    error = f.parse(encode_error("Bad subscription string."), T0)
    assert isinstance(error, ExchangeError) and error.fatal
    assert f.parse(encode_trade(make_trade("bitstamp", "BTC-USD", PAIR)), T0) == ()
    other = '{"data":{"bids":[],"asks":[]},"channel":"order_book_btcusd","event":"data"}'
    assert f.parse(other, T0) == ()
    with pytest.raises(MalformedFrame):
        f.parse(encode_diff("ethusd", [], [], microtimestamp=1), T0)  # not subscribed
    assert not f.has_actions


# -- hostile input -------------------------------------------------------------------------


def _frames() -> st.SearchStrategy[str]:
    valid = diff(US, [("1", "1")], [("2", "1")])
    data = [("data", key) for key in ("microtimestamp", "bids", "asks")]
    return edited_frames(valid, [("event",), ("channel",), ("data",), *data])


@settings(max_examples=300)
@given(st.lists(_frames(), max_size=6), st.booleans())
def test_only_malformed_frame_escapes_parse(frames: list[str], synced: bool) -> None:
    f = feed()
    if synced:
        f.parse(diff(US - 1), T0)
        f.snapshot_fetched(PAIR, encode_order_book([("1", "1")], [], microtimestamp=US - 1), T0)
    parse_only_malformed(f, frames, T0 + 1)


@settings(max_examples=300)
@given(st.sampled_from(["microtimestamp", "bids", "asks", None]), json_values)
def test_only_malformed_frame_escapes_snapshot_fetched(key: str | None, value: Any) -> None:
    f = feed()
    f.parse(diff(US), T0)
    f.take_actions()
    doc = {"timestamp": "1", "microtimestamp": str(US), "bids": [["1", "1"]], "asks": []}
    snapshot_only_malformed(f, PAIR, doc, key, value, T0)


def test_a_malformed_diff_is_a_lost_update() -> None:
    """The channel has no sequence: a diff that cannot be decoded is a resync at once, and a
    snapshot asked for before it is fetched again rather than trusted."""
    f = feed()
    f.parse(diff(US + 1), T0)
    assert len(f.take_actions()) == 1
    with pytest.raises(MalformedFrame):
        f.parse(diff(US + 2, [("x", "1")]), T0 + 1)
    body = encode_order_book([("1", "1")], [], microtimestamp=US + 1)
    assert f.snapshot_fetched(PAIR, body, T0 + 2) == ()  # may predate the lost diff
    assert len(f.take_actions()) == 1 and not f.books[PAIR].synced
    f.parse(diff(US + 3, [("2", "1")]), T0 + 3)
    body = encode_order_book([("1", "1")], [], microtimestamp=US + 3)
    f.snapshot_fetched(PAIR, body, T0 + 4)
    assert f.books[PAIR].synced
    with pytest.raises(MalformedFrame):
        f.parse(diff(US + 4, [], [("2", "-1")]), T0 + 5)
    resync = f.books[PAIR].resync
    assert resync is not None and (resync.cause, resync.detail) == ("sequence", "malformed")
    assert len(f.take_actions()) == 1
