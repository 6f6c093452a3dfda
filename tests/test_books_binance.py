"""Binance's book feed (connectors/books/binance.py): the encoders the fake exchange uses, the
REST-snapshot synchronisation by Binance's documented U/u rules, resyncs, and hostile input
(only MalformedFrame escapes ``parse`` and ``snapshot_fetched``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import Ack, ExchangeError, ReconnectNotice
from connectors.binance import encode_ack, encode_error, encode_server_shutdown, encode_trade
from connectors.books.base import MAX_BUFFERED_MESSAGES, FetchSnapshot
from connectors.books.binance import (
    BINANCE_REST_URL,
    SNAPSHOT_WEIGHT,
    BinanceBookFeed,
    encode_depth_snapshot,
    encode_depth_update,
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

SYM = "BTCUSDT"
T0 = 1_700_000_000_000_000_000
_LEVELS = level_lists(4, 3)


def feed(exchange: str = "binance") -> BinanceBookFeed:
    f = BinanceBookFeed(exchange)
    f.connection_url(f.default_url, [SYM])
    f.connected(T0)
    return f


def diff(
    first: int, final: int, bids: Any = (), asks: Any = (), ms: int = 1_700_000_000_000
) -> str:
    return encode_depth_update(SYM, first, final, bids, asks, event_ms=ms, combined=True)


def book_of(rows: Sequence[BookLevel]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    replica = BookReplica()
    replica.apply_all(rows)
    return sides(replica.book("binance", "BTC-USDT"))


def levels(f: BinanceBookFeed) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    return sides(f.books[SYM].book)


# -- encoders ------------------------------------------------------------------------------


@given(_LEVELS, _LEVELS, st.integers(1, 10**12), st.integers(0, 10**6), st.booleans())
def test_encoded_depth_update_parses_to_its_rows(
    bids: list[tuple[str, str]], asks: list[tuple[str, str]], first: int, span: int, combined: bool
) -> None:
    f = feed()
    f.snapshot_fetched(SYM, encode_depth_snapshot(first - 1, [], []), T0)
    frame = encode_depth_update(
        SYM, first, first + span, bids, asks, event_ms=1_650_000_000_123, combined=combined
    )
    rows = f.parse(frame, T0 + 1)
    assert isinstance(rows, list)
    assert [(r.side, r.price, r.size) for r in rows] == [("bid", p, s) for p, s in bids] + [
        ("ask", p, s) for p, s in asks
    ]
    assert all(r.seq == str(first + span) and not r.snapshot for r in rows)
    assert all(r.ts_event == 1_650_000_000_123_000 and r.ts_recv == T0 + 1 for r in rows)
    assert all(r.symbol == "BTC-USDT" and r.raw_symbol == SYM for r in rows)


@given(_LEVELS, _LEVELS, st.integers(0, 2**62))
def test_encoded_snapshot_parses_to_its_rows(
    bids: list[tuple[str, str]], asks: list[tuple[str, str]], last: int
) -> None:
    f = feed()
    rows = f.snapshot_fetched(SYM, encode_depth_snapshot(last, bids, asks), T0 + 5_000)
    # the book keeps the last text of each price value; the rows are the body's levels
    assert [(r.side, r.price, r.size) for r in rows] == [("bid", p, s) for p, s in bids] + [
        ("ask", p, s) for p, s in asks
    ]
    assert all(
        r.snapshot and r.seq == str(last) and r.ts_event == (T0 + 5_000) // 1000 for r in rows
    )
    assert f.books[SYM].synced


def test_raw_form_and_documented_sample() -> None:
    raw = encode_depth_update(
        SYM,
        157,
        160,
        [("0.0024", "10")],
        [("0.0026", "100")],
        event_ms=1672515782136,
        combined=False,
    )
    assert orjson.loads(raw) == {
        "e": "depthUpdate",
        "E": 1672515782136,
        "s": "BTCUSDT",
        "U": 157,
        "u": 160,
        "b": [["0.0024", "10"]],
        "a": [["0.0026", "100"]],
    }
    combined = orjson.loads(diff(1, 2))
    assert combined["stream"] == "btcusdt@depth@100ms"


# -- requests ------------------------------------------------------------------------------


def test_urls_and_registry() -> None:
    f = BinanceBookFeed()
    assert f.connection_url("wss://x:9443/", ["BTCUSDT", "ethbtc"]) == (
        "wss://x:9443/stream?streams=btcusdt@depth@100ms/ethbtc@depth@100ms"
    )
    assert f.connection_url("wss://x", []) == "wss://x/ws"
    assert f.subscribe_messages(["BTCUSDT"]) == []
    assert f.snapshot_url("http://127.0.0.1:8/", "btcusdt") == (
        "http://127.0.0.1:8/api/v3/depth?symbol=BTCUSDT&limit=1000"
    )
    assert (
        f.symbol_of_snapshot("https://api.binance.com/api/v3/depth?symbol=NKNUSDT&limit=1000")
        == "NKNUSDT"
    )
    assert f.symbol_of_snapshot("https://api.binance.com/api/v3/trades?symbol=NKNUSDT") is None
    assert f.symbol_of_snapshot("https://api.binance.com/api/v3/depth?limit=1000") is None
    with pytest.raises(ValueError):
        f.connection_url("wss://x", ["BTC/USDT"])
    with pytest.raises(ValueError):
        f.connection_url("wss://x", ["AB"] * 1025)
    us = get_book_feed("binanceus")
    assert isinstance(us, BinanceBookFeed)
    assert us.name == "binanceus" and us.default_url == "wss://stream.binance.us:9443"
    assert us.rest_url == "https://api.binance.us"
    assert get_book_feed("binance").rest_url == BINANCE_REST_URL
    with pytest.raises(ValueError):
        BinanceBookFeed("kraken")


# -- synchronisation -----------------------------------------------------------------------


def test_first_sync_buffers_asks_once_and_applies_what_follows_the_snapshot() -> None:
    f = feed()
    assert f.parse(diff(100, 102, [("10", "1")]), T0 + 1) == ()
    assert f.parse(diff(103, 105, [("11", "2")], [("20", "3")]), T0 + 2) == ()
    assert f.take_actions() == [
        FetchSnapshot(
            SYM, f"{BINANCE_REST_URL}/api/v3/depth?symbol={SYM}&limit=1000", SNAPSHOT_WEIGHT
        )
    ]
    assert SNAPSHOT_WEIGHT == 50
    body = encode_depth_snapshot(103, [("10", "5"), ("9", "1")], [("21", "1")])
    rows = f.snapshot_fetched(SYM, body, T0 + 3)
    # 100-102 is older than the snapshot (dropped); 103-105 straddles 104 and is applied
    assert [r.seq for r in rows] == ["103"] * 3 + ["105"] * 2
    assert levels(f) == ([("11", "2"), ("10", "5"), ("9", "1")], [("20", "3"), ("21", "1")])
    assert book_of(rows) == levels(f)
    assert f.take_resyncs() == [] and not f.has_actions
    # live: the next diff must follow u=105
    assert len(rows_of(f.parse(diff(106, 106, [("9", "0")]), T0 + 4))) == 1
    assert f.parse(diff(100, 106, [("1", "1")]), T0 + 5) == ()  # already in the book
    assert levels(f)[0] == [("11", "2"), ("10", "5")]


def test_gap_resyncs_buffering_meanwhile_and_the_resync_is_recorded() -> None:
    f = feed()
    f.parse(diff(10, 10), T0)
    f.take_actions()
    rows = list(
        f.snapshot_fetched(SYM, encode_depth_snapshot(10, [("1", "1")], [("5", "1")]), T0 + 1)
    )
    rows += rows_of(f.parse(diff(11, 12, [("2", "1")]), T0 + 2))
    assert f.parse(diff(14, 15, [("3", "1")]), T0 + 3) == ()  # 13 is missing
    assert not f.books[SYM].synced
    assert [a.raw_symbol for a in f.take_actions()] == [SYM]
    assert f.parse(diff(16, 16, [("4", "1")]), T0 + 4) == ()  # buffered, not asked again
    assert not f.has_actions
    rows += f.snapshot_fetched(
        SYM, encode_depth_snapshot(15, [("3", "1"), ("1", "1")], [("5", "1")]), T0 + 5
    )
    assert f.books[SYM].synced and f.books[SYM].seq == "16"
    (resync,) = f.take_resyncs()
    assert (resync.cause, resync.from_seq, resync.to_seq) == ("sequence", "12", "15")
    assert (resync.at_ns, resync.done_ns, resync.superseded) == (T0 + 3, T0 + 5, 1)
    assert levels(f) == ([("4", "1"), ("3", "1"), ("1", "1")], [("5", "1")])
    assert book_of(rows) == levels(f)


def test_stale_snapshot_is_fetched_again() -> None:
    f = feed()
    f.parse(diff(50, 52, [("2", "1")]), T0)
    f.take_actions()
    assert f.snapshot_fetched(SYM, encode_depth_snapshot(40, [("1", "1")], []), T0 + 1) == ()
    (again,) = f.take_actions()
    assert again.raw_symbol == SYM
    assert not f.books[SYM].synced
    rows = f.snapshot_fetched(SYM, encode_depth_snapshot(51, [("1", "1")], []), T0 + 2)
    assert [r.seq for r in rows] == ["51", "52"]
    assert f.books[SYM].synced and f.books[SYM].seq == "52"
    # the symbol's first book: what went wrong before it is no resync (nothing was written)
    assert f.take_resyncs() == []


def test_gap_right_after_a_snapshot_newer_than_the_buffer_is_a_sequence_break() -> None:
    """Every buffered diff was in the snapshot: the snapshot is not older than the stream, so
    a gap in the next diff is a diff missed."""
    f = feed()
    f.parse(diff(1, 3), T0)
    f.snapshot_fetched(SYM, encode_depth_snapshot(4, [("1", "1")], []), T0 + 1)
    assert f.parse(diff(6, 6), T0 + 2) == ()
    resync = f.books[SYM].resync
    assert resync is not None and (resync.cause, resync.from_seq) == ("sequence", "4")


def test_snapshot_older_than_the_stream_with_nothing_buffered() -> None:
    """After a reconnect the old request's answer can arrive with nothing buffered: the next
    diff shows the snapshot was stale."""
    f = feed()
    f.parse(diff(1, 1), T0)
    f.take_actions()
    f.connected(T0 + 1)  # buffers dropped
    f.snapshot_fetched(SYM, encode_depth_snapshot(5, [("1", "1")], []), T0 + 2)
    assert f.books[SYM].synced
    assert f.parse(diff(9, 9), T0 + 3) == ()
    resync = f.books[SYM].resync
    assert resync is not None and resync.cause == "stale-snapshot"


def test_reconnect_is_a_resync_ended_by_the_next_snapshot() -> None:
    f = feed()
    f.parse(diff(1, 1), T0)
    f.take_actions()
    f.snapshot_fetched(SYM, encode_depth_snapshot(1, [("1", "1")], []), T0 + 1)
    f.parse(diff(2, 2, [("2", "1")]), T0 + 2)
    f.connected(T0 + 3)
    assert not f.books[SYM].synced
    assert f.parse(diff(7, 8), T0 + 4) == ()
    assert len(f.take_actions()) == 1
    f.snapshot_fetched(SYM, encode_depth_snapshot(7, [("3", "1")], []), T0 + 5)
    (resync,) = f.take_resyncs()
    assert (resync.cause, resync.from_seq, resync.to_seq) == ("reconnect", "2", "7")


def test_a_snapshot_for_a_book_in_sync_changes_nothing() -> None:
    f = feed()
    f.parse(diff(1, 1), T0)
    f.snapshot_fetched(SYM, encode_depth_snapshot(1, [("1", "1")], []), T0 + 1)
    f.parse(diff(2, 3, [("2", "1")]), T0 + 2)
    assert f.snapshot_fetched(SYM, encode_depth_snapshot(2, [], []), T0 + 3) == ()
    assert f.snapshot_fetched(SYM, encode_depth_snapshot(9, [], []), T0 + 3) == ()
    assert levels(f) == ([("2", "1"), ("1", "1")], []) and f.take_resyncs() == []


def test_buffer_is_bounded_and_overflow_is_counted() -> None:
    f = feed()
    f.parse(diff(1, 1), T0)
    f.snapshot_fetched(SYM, encode_depth_snapshot(1, [], []), T0)
    f.parse(diff(5, 5), T0 + 1)  # gap: resync, buffered
    for i in range(6, 6 + MAX_BUFFERED_MESSAGES):
        f.parse(diff(i, i), T0 + i)
    resync = f.books[SYM].resync
    assert resync is not None and resync.superseded == 1
    f.snapshot_fetched(SYM, encode_depth_snapshot(5, [], []), T0 + 10**6)
    assert f.books[SYM].synced and f.books[SYM].seq == str(5 + MAX_BUFFERED_MESSAGES)


def test_other_frames_are_not_errors() -> None:
    f = feed()
    trade = make_trade("binance", "BTC-USDT", SYM)
    assert f.parse(encode_trade(trade, combined=True), T0) == ()
    assert f.parse(encode_trade(trade, combined=True, stream_type="aggTrade"), T0) == ()
    assert f.parse(encode_trade(trade, combined=False), T0) == ()
    ticker = (
        '{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1","B":"1","a":"2",'
        '"A":"1"}}'
    )
    assert f.parse(ticker, T0) == ()
    assert isinstance(f.parse(encode_ack(1), T0), Ack)
    error = f.parse(encode_error(2, "Invalid symbol", 1), T0)
    assert isinstance(error, ExchangeError) and error.fatal
    assert isinstance(f.parse(encode_server_shutdown(1, True), T0), ReconnectNotice)
    assert not f.has_actions and f.books == {}


def test_unsubscribed_symbol_is_malformed_and_asks_nothing() -> None:
    f = feed()
    frame = encode_depth_update("ETHBTC", 1, 1, [], [], event_ms=1, combined=True)
    with pytest.raises(MalformedFrame):
        f.parse(frame, T0)
    assert not f.has_actions


def test_bad_level_in_a_synced_book_resyncs() -> None:
    f = feed()
    f.parse(diff(1, 1), T0)
    f.snapshot_fetched(SYM, encode_depth_snapshot(1, [("1", "1")], []), T0)
    f.take_actions()
    with pytest.raises(MalformedFrame):
        f.parse(diff(2, 2, [("3", "1"), ("x", "1")]), T0 + 1)
    assert not f.books[SYM].synced and len(f.take_actions()) == 1


# -- hostile input -------------------------------------------------------------------------


def _frames() -> st.SearchStrategy[str]:
    valid = diff(1, 2, [("1", "1")], [("2", "1")])
    return edited_frames(valid, [("data", key) for key in ("e", "E", "s", "U", "u", "b", "a")])


@settings(max_examples=300)
@given(st.lists(_frames(), max_size=6), st.booleans())
def test_only_malformed_frame_escapes_parse(frames: list[str], synced: bool) -> None:
    f = feed()
    if synced:
        f.parse(diff(0, 0), T0)
        f.snapshot_fetched(SYM, encode_depth_snapshot(0, [("1", "1")], []), T0)
    parse_only_malformed(f, frames, T0 + 1)


@settings(max_examples=300)
@given(st.sampled_from(["lastUpdateId", "bids", "asks", None]), json_values)
def test_only_malformed_frame_escapes_snapshot_fetched(key: str | None, value: Any) -> None:
    f = feed()
    f.parse(diff(1, 1), T0)
    f.take_actions()
    doc = {"lastUpdateId": 1, "bids": [["1", "1"]], "asks": [["2", "1"]]}
    snapshot_only_malformed(f, SYM, doc, key, value, T0)
