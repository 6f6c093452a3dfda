"""KrakenBookFeed: requests, the CRC32 checksum (Kraken's documented example), sync, truncation
to the depth as delete rows, a failed checksum recorded as a resync and ended by the next
snapshot, crossed books counted, other channels, the fake exchange's encoders, and hostile
frames."""

from __future__ import annotations

import json
import zlib
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base import Ack, ExchangeError, Heartbeat
from connectors.books.base import Resubscribe
from connectors.books.kraken import KrakenBookFeed, book_checksum, encode_book
from connectors.kraken import ClientRequest, parse_client_request
from engine.errors import MalformedFrame
from tests.books_inband import Rebuild, parse_only_malformed, sides
from tests.strategies import (
    KRAKEN_REFUSED,
    KRAKEN_STATUS,
    KRAKEN_SUBSCRIBED,
    KRAKEN_TRADE,
    json_values,
)

T0 = 1_700_000_000_000_000

# Kraken's documented checksum example (WebSocket book checksum guide): ten asks from 0.05005
# and ten bids from 0.05000, each of qty 0.00000500, give 974947235.
DOC_ASKS = [
    (p, "0.00000500")
    for p in (
        "0.05005", "0.05010", "0.05015", "0.05020", "0.05025",
        "0.05030", "0.05035", "0.05040", "0.05045", "0.05050",
    )
]  # fmt: skip
DOC_BIDS = [
    (p, "0.00000500")
    for p in (
        "0.05000", "0.04995", "0.04990", "0.04980", "0.04975",
        "0.04970", "0.04965", "0.04960", "0.04955", "0.04950",
    )
]  # fmt: skip
DOC_CHECKSUM = 974947235


def _model_checksum(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> int:
    """Kraken's rule written out again for the tests: top 10 asks low to high, then top 10
    bids high to low, ``.`` and leading zeros removed, CRC32 unsigned."""

    def text(levels: list[tuple[str, str]], reverse: bool) -> str:
        top = sorted(levels, key=lambda lv: Decimal(lv[0]), reverse=reverse)[:10]
        return "".join(
            p.replace(".", "").lstrip("0") + q.replace(".", "").lstrip("0") for p, q in top
        )

    return zlib.crc32((text(asks, False) + text(bids, True)).encode()) & 0xFFFFFFFF


def _snapshot(bids: list[tuple[str, str]], asks: list[tuple[str, str]], **kw: Any) -> str:
    checksum = kw.pop("checksum", _model_checksum(bids, asks))
    return encode_book("BTC/USD", bids, asks, snapshot=True, checksum=checksum, timestamp=T0, **kw)


def _synced(depth: int = 10) -> tuple[KrakenBookFeed, Rebuild]:
    feed = KrakenBookFeed(depth=depth)
    rebuild = Rebuild(feed)
    assert len(rebuild.parse(_snapshot(DOC_BIDS, DOC_ASKS), 10)) == 20
    return feed, rebuild


def _update(feed: KrakenBookFeed, bids: list[tuple[str, str]], asks: list[tuple[str, str]], *,
            checksum: int | None = None) -> str:  # fmt: skip
    """An update whose checksum is right for ``feed``'s book after it (unless given)."""
    if checksum is None:
        state = feed.books["BTC/USD"]
        book_bids, book_asks = (dict(s) for s in sides(state.book))
        for levels, book in ((bids, book_bids), (asks, book_asks)):
            for price, qty in levels:
                match = [p for p in book if Decimal(p) == Decimal(price)]
                for p in match:
                    del book[p]
                if Decimal(qty) != 0:
                    book[price] = qty
        top = feed.depth
        model_bids = sorted(book_bids.items(), key=lambda lv: -Decimal(lv[0]))[:top]
        model_asks = sorted(book_asks.items(), key=lambda lv: Decimal(lv[0]))[:top]
        checksum = _model_checksum(model_bids, model_asks)
    return encode_book("BTC/USD", bids, asks, snapshot=False, checksum=checksum, timestamp=T0 + 1)


# -- checksum ---------------------------------------------------------------------------------


def test_checksum_of_krakens_documented_example() -> None:
    assert book_checksum(DOC_BIDS, DOC_ASKS) == DOC_CHECKSUM
    assert _model_checksum(DOC_BIDS, DOC_ASKS) == DOC_CHECKSUM
    # only the top 10 of each side count
    assert book_checksum([*DOC_BIDS, ("0.01", "9")], [*DOC_ASKS, ("0.09", "9")]) == DOC_CHECKSUM
    # the guide's formatting example: 45285.2 x 0.00100000 is written 452852100000
    assert book_checksum([], [("45285.2", "0.00100000")]) == zlib.crc32(b"452852100000")


def test_documented_example_as_a_snapshot_syncs() -> None:
    feed = KrakenBookFeed(depth=10)
    frame = encode_book("BTC/USD", DOC_BIDS, DOC_ASKS, snapshot=True, checksum=DOC_CHECKSUM,
                        timestamp="2023-10-06T17:35:55.440295Z")  # fmt: skip
    rows = feed.parse(frame, 5)
    assert isinstance(rows, list) and len(rows) == 20
    assert rows[0].price == "0.05000" and rows[0].size == "0.00000500"  # exact number text
    assert rows[0].ts_event == 1_696_613_755_440_295 and rows[0].seq is None
    assert feed.books["BTC/USD"].synced and feed.books["BTC/USD"].symbol == "BTC-USD"


# -- requests ---------------------------------------------------------------------------------


def test_requests() -> None:
    feed = KrakenBookFeed()
    assert feed.depth == 100
    [frame] = feed.subscribe_messages(["btc/usd", "ETH/USD"])
    msg = json.loads(frame)
    assert msg["method"] == "subscribe" and isinstance(msg["req_id"], int)
    assert msg["params"] == {
        "channel": "book",
        "symbol": ["BTC/USD", "ETH/USD"],
        "depth": 100,
        "snapshot": True,
    }
    assert json.loads(feed.keepalive_message() or "")["method"] == "ping"
    assert feed.subscribe_messages([]) == []
    assert feed.connection_url("ws://127.0.0.1:9/v2", ["BTC/USD"]) == "ws://127.0.0.1:9/v2"
    with pytest.raises(ValueError):
        KrakenBookFeed(depth=50)
    request = parse_client_request(frame)
    assert isinstance(request, ClientRequest) and request.depth == 100
    assert request.channel == "book" and request.snapshot


# -- sync and truncation ----------------------------------------------------------------------


def test_updates_apply_in_order_and_keep_exact_text() -> None:
    feed, rebuild = _synced()
    bids = [("0.04995", "0.1"), ("0.04995", "0.20000000")]  # one level changed twice
    rows = rebuild.parse(_update(feed, bids, [("0.05005", "0")]), 11)
    assert [(r.side, r.price, r.size, r.snapshot) for r in rows] == [
        ("bid", "0.04995", "0.1", False),
        ("bid", "0.04995", "0.20000000", False),
        ("ask", "0.05005", "0", False),
    ]
    assert feed.books["BTC/USD"].synced and rebuild.agrees("BTC/USD")
    assert sides(feed.books["BTC/USD"].book)[0][1] == ("0.04995", "0.20000000")


def test_truncation_to_the_depth_is_emitted_as_delete_rows() -> None:
    feed, rebuild = _synced(depth=10)
    rows = rebuild.parse(_update(feed, [("0.05001", "1.5"), ("0.05002", "1")], []), 11)
    assert [(r.side, r.price, r.size, r.snapshot) for r in rows] == [
        ("bid", "0.05001", "1.5", False),
        ("bid", "0.05002", "1", False),
        ("bid", "0.04955", "0", False),  # fell out of the top 10, worst last
        ("bid", "0.04950", "0", False),
    ]
    assert {(r.ts_event, r.ts_recv, r.seq) for r in rows} == {(T0 + 1, 11, None)}
    state = feed.books["BTC/USD"]
    assert state.book.depth("bid") == 10 and state.synced and rebuild.agrees("BTC/USD")


def test_snapshot_deeper_than_the_depth_is_cut() -> None:
    feed = KrakenBookFeed(depth=10)
    bids = [*DOC_BIDS, ("0.04900", "1")]
    rows = feed.parse(_snapshot(bids, DOC_ASKS, checksum=DOC_CHECKSUM), 5)
    assert isinstance(rows, list) and len(rows) == 20 and all(r.snapshot for r in rows)
    assert feed.books["BTC/USD"].synced


@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(min_value=4_900, max_value=5_100).map(lambda n: f"0.0{n}"),
            st.sampled_from(["0", "0.00000500", "1.25", "3"]),
        ),
        max_size=30,
    )
)
def test_random_updates_stay_in_sync_and_rebuild(changes: list[tuple[bool, str, str]]) -> None:
    feed, rebuild = _synced(depth=10)
    for n, (is_bid, price, qty) in enumerate(changes):
        if is_bid and Decimal(price) >= Decimal("0.05005"):
            continue  # keep the book uncrossed
        if not is_bid and Decimal(price) <= Decimal("0.05000"):
            continue
        level = [(price, qty)]
        rebuild.parse(_update(feed, level if is_bid else [], [] if is_bid else level), 11 + n)
        state = feed.books["BTC/USD"]
        assert state.synced, state.resync
        assert state.book.depth("bid") <= 10 and state.book.depth("ask") <= 10
        assert rebuild.agrees("BTC/USD")
    assert feed.take_resyncs() == []


# -- resyncs ----------------------------------------------------------------------------------


def test_checksum_mismatch_resubscribes_and_the_snapshot_ends_it() -> None:
    feed, rebuild = _synced()
    assert rebuild.parse(_update(feed, [("0.04995", "7")], [], checksum=123), 11) == []
    state = feed.books["BTC/USD"]
    assert not state.synced and state.resync is not None
    assert state.resync.cause == "checksum" and "123" in state.resync.detail
    [action] = feed.take_actions()
    assert isinstance(action, Resubscribe) and action.raw_symbol == "BTC/USD"
    unsubscribe, subscribe = (json.loads(m) for m in action.messages)
    assert unsubscribe["method"] == "unsubscribe" and subscribe["method"] == "subscribe"
    assert unsubscribe["params"]["symbol"] == subscribe["params"]["symbol"] == ["BTC/USD"]
    assert subscribe["params"]["snapshot"] is True and subscribe["params"]["depth"] == 10
    # updates meanwhile are superseded, the snapshot ends the resync
    assert rebuild.parse(_update(feed, [("0.04995", "8")], [], checksum=1), 12) == []
    assert not feed.has_actions
    assert rebuild.parse(_snapshot(DOC_BIDS[:3], DOC_ASKS[:3]), 13)
    [resync] = feed.take_resyncs()
    assert (resync.cause, resync.at_ns, resync.done_ns, resync.superseded) == (
        "checksum",
        11,
        13,
        1,
    )
    assert state.synced and rebuild.agrees("BTC/USD")


def test_snapshot_with_a_wrong_checksum_is_not_a_sync() -> None:
    feed = KrakenBookFeed(depth=10)
    assert feed.parse(_snapshot(DOC_BIDS, DOC_ASKS, checksum=DOC_CHECKSUM + 1), 5) == []
    assert not feed.books["BTC/USD"].synced and feed.has_actions


def test_reconnect_then_snapshot() -> None:
    feed, rebuild = _synced()
    feed.connected(50)
    assert rebuild.parse(_update(feed, [("0.04995", "8")], []), 51) == []
    rebuild.parse(_snapshot(DOC_BIDS, DOC_ASKS), 52)
    [resync] = feed.take_resyncs()
    assert (resync.cause, resync.superseded, resync.done_ns) == ("reconnect", 1, 52)
    assert rebuild.agrees("BTC/USD")


def test_crossed_book_is_counted() -> None:
    feed, rebuild = _synced()
    rebuild.parse(_update(feed, [("0.05010", "1")], []), 11)
    state = feed.books["BTC/USD"]
    assert state.crossed == 1 and state.synced


def test_malformed_level_breaks_the_book() -> None:
    feed, _ = _synced()
    frame = _update(feed, [], [], checksum=1).replace('"bids":[]', '"bids":[{"price":-1,"qty":1}]')
    with pytest.raises(MalformedFrame):
        feed.parse(frame, 11)
    assert feed.books["BTC/USD"].resync is not None and feed.has_actions


def test_a_bad_entry_changes_no_other_symbols_book() -> None:
    feed, rebuild = _synced()
    good = json.loads(_update(feed, [("0.04995", "9")], []))["data"][0]
    bad = {**good, "symbol": "ETH/USD", "checksum": "x"}
    frame = json.dumps({"channel": "book", "type": "update", "data": [good, bad]})
    with pytest.raises(MalformedFrame):
        feed.parse(frame, 11)
    state = feed.books["BTC/USD"]
    assert state.synced and sides(state.book) == (DOC_BIDS, DOC_ASKS)  # nothing applied
    assert feed.books["ETH/USD"].resync is not None
    assert rebuild.agrees("BTC/USD")


# -- other channels ---------------------------------------------------------------------------


def test_trades_and_controls_of_the_same_exchange() -> None:
    feed, _ = _synced()
    assert feed.parse(KRAKEN_TRADE, 1) == ()
    assert feed.parse('{"channel":"ticker","type":"update","data":[]}', 1) == ()
    assert feed.parse('{"channel":"heartbeat"}', 1) == Heartbeat()
    assert feed.parse(KRAKEN_STATUS, 1) == Heartbeat()
    assert isinstance(feed.parse(KRAKEN_SUBSCRIBED.replace('"trade"', '"book"'), 1), Ack)
    refused = feed.parse(KRAKEN_REFUSED, 1)
    assert isinstance(refused, ExchangeError) and refused.fatal and refused.symbols == ("XBT/USD",)
    assert feed.books["BTC/USD"].synced and not feed.has_actions


# -- the fake exchange's encoders -------------------------------------------------------------


def test_encode_book_writes_numbers_with_the_exact_text() -> None:
    frame = encode_book("BTC/USD", [("0.10", "1.000")], [], snapshot=False, checksum=7,
                        timestamp=T0)  # fmt: skip
    assert '"price":0.10,"qty":1.000' in frame
    msg = json.loads(frame)
    assert msg["type"] == "update" and msg["data"][0]["checksum"] == 7
    assert msg["data"][0]["timestamp"] == "2023-11-14T22:13:20.000000Z"
    with pytest.raises(ValueError):
        encode_book("BTC/USD", [("1e5", "1")], [], snapshot=True, checksum=0, timestamp=T0)


# -- hostile frames ---------------------------------------------------------------------------

_SNAPSHOT = _snapshot(DOC_BIDS[:2], DOC_ASKS[:2])


@given(
    st.sampled_from(["type", "data", "symbol", "bids", "asks", "checksum", "timestamp", "level"]),
    json_values,
)
def test_only_malformed_frame_escapes(field: str, value: Any) -> None:
    feed, _ = _synced()
    for frame in (_SNAPSHOT, _update(feed, [("0.04995", "1")], [], checksum=1)):
        msg = json.loads(frame)
        if field in ("type", "data"):
            msg[field] = value
        elif field == "level":
            msg["data"][0]["bids"][0]["price"] = value
        else:
            msg["data"][0][field] = value
        parse_only_malformed(feed, json.dumps(msg))


@given(st.binary(max_size=80) | st.text(max_size=80))
def test_garbage_is_malformed(frame: bytes | str) -> None:
    parse_only_malformed(KrakenBookFeed(), frame)
