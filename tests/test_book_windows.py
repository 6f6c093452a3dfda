"""Window-opening snapshots of the book dataset (sinks/book_windows.py): every object rebuilds the
book on its own, and all objects in order rebuild it too; checked against an independent
rebuild (a dict per side, applied row by row) for random row streams split by every trigger."""

from __future__ import annotations

from decimal import Decimal

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.book_records import BookLevel, BookReplica
from engine.clock import FakeClock
from sinks.encoders import decode_body
from sinks.windowing import ClosedWindow, Windower
from tests.harness import make_book_windower

NS = 1_000_000_000
T0 = 1_700_000_000


def _windower(clock: FakeClock, *, seconds: int = 60, max_records: int = 1_000_000) -> Windower:
    return make_book_windower(clock, seconds=seconds, max_records=max_records)


def _rows(window: ClosedWindow) -> list[BookLevel]:
    return [BookLevel.from_dict(obj) for obj in decode_body(window.body, "ndjson.gz")]


def _raw(window: ClosedWindow) -> list[dict[str, object]]:
    return list(decode_body(window.body, "ndjson.gz"))


def _independent(rows: list[dict[str, object]]) -> dict[str, dict[Decimal, str]]:
    """The rule of docs/order-books.md#rebuilding-a-book, written out again."""
    book: dict[str, dict[Decimal, str]] = {"bid": {}, "ask": {}}
    last: dict[str, object] | None = None
    for row in rows:
        if row["snapshot"] and (
            last is None
            or not last["snapshot"]
            or (last["seq"], last["ts_recv"]) != (row["seq"], row["ts_recv"])
        ):
            book = {"bid": {}, "ask": {}}
        price = Decimal(str(row["price"]))
        if Decimal(str(row["size"])) == 0:
            book[str(row["side"])].pop(price, None)
        else:
            book[str(row["side"])][price] = str(row["size"])
        last = row
    return book


def _message(
    seq: int,
    ts: int,
    snapshot: bool,
    levels: list[tuple[str, object, object]],
    symbol: str = "BTC-USDT",
) -> list[BookLevel]:
    return [
        BookLevel(
            "binance",
            symbol,
            symbol.replace("-", ""),
            ts // 1000,
            ts,
            str(seq),
            snapshot,
            side,
            str(price),
            str(size),
        )
        for side, price, size in levels
    ]


messages = st.lists(
    st.tuples(
        st.booleans(),
        st.lists(
            st.tuples(
                st.sampled_from(["bid", "ask"]),
                st.sampled_from(["1", "1.0", "2", "2.50", "2.5", "3", "03", "4"]),
                st.sampled_from(["0", "0.00", "1", "2.0", "3"]),
            ),
            min_size=1,
            max_size=6,
        ),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(messages, st.integers(1, 9), st.lists(st.integers(0, 3), min_size=40, max_size=40))
def test_every_object_rebuilds_the_book_alone(msgs, max_records, steps) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock(start_ns=T0 * NS)
    windower = _windower(clock, seconds=1, max_records=max_records)
    closed: list[ClosedWindow] = []
    applied: list[dict[str, object]] = []
    ts = T0 * NS
    for seq, ((snapshot, levels), step) in enumerate(zip(msgs, steps, strict=False)):
        ts += step * NS // 2  # sometimes the same slot, sometimes the next ones
        clock.set_wall(max(clock.time_ns(), ts))
        rows = _message(seq, ts, snapshot, levels)
        applied += [orjson.loads(orjson.dumps(row)) for row in rows]
        closed += windower.add(rows)
        # The state after every message, from an object alone, equals the whole stream's.
    closed += windower.close_all()
    # Objects in the order of their sequence number (windows close in another order: a full
    # one before an older one whose slot ended).
    closed.sort(key=lambda window: int(window.key.rsplit("-", 1)[1].split(".")[0]))
    expected = _independent(applied)
    # Each object alone rebuilds the book that all objects up to it rebuild; the last one
    # therefore the final book.
    so_far: list[dict[str, object]] = []
    for window in closed:
        alone = _raw(window)
        so_far += alone
        assert _independent(alone) == _independent(so_far), window.key
    assert _independent(so_far) == expected
    replica = BookReplica()
    replica.apply_all([row for window in closed for row in _rows(window)])
    got = replica.book("binance", "BTC-USDT")
    assert {
        side: {Decimal(level.price): level.size for level in got.levels(side)}
        for side in ("bid", "ask")
    } == expected


def test_the_opening_snapshot_restates_the_previous_row() -> None:
    clock = FakeClock(start_ns=T0 * NS)
    windower = _windower(clock)
    ts = T0 * NS
    assert not windower.add(_message(7, ts, True, [("bid", 10, 1), ("ask", 11, 2)]))
    assert not windower.add(_message(8, ts + 1, False, [("bid", 10, 0), ("bid", 9, 5)]))
    clock.set_wall(ts + 61 * NS)
    first = windower.add(_message(9, ts + 61 * NS, False, [("ask", 12, 1)]))
    assert len(first) == 1 and first[0].records == 4
    [second] = windower.close_all()
    rows = _rows(second)
    # The book after seq 8 (bid 9, ask 11), marked as seq 8's, then seq 9's delta.
    assert [(r.snapshot, r.seq, r.ts_recv, r.side, r.price, r.size) for r in rows] == [
        (True, "8", ts + 1, "bid", "9", "5"),
        (True, "8", ts + 1, "ask", "11", "2"),
        (False, "9", ts + 61 * NS, "ask", "12", "1"),
    ]
    assert second.records == 3


def test_a_window_that_starts_with_a_fresh_snapshot_gets_no_opening() -> None:
    clock = FakeClock(start_ns=T0 * NS)
    windower = _windower(clock)
    ts = T0 * NS
    windower.add(_message(1, ts, True, [("bid", 10, 1)]))
    clock.set_wall(ts + 61 * NS)
    assert len(windower.add(_message(5, ts + 61 * NS, True, [("ask", 11, 1)]))) == 1
    [second] = windower.close_all()
    assert [(r.seq, r.side) for r in _rows(second)] == [("5", "ask")]


def test_symbols_sharing_a_window_each_get_their_opening() -> None:
    clock = FakeClock(start_ns=T0 * NS)
    windower = make_book_windower(  # one window for both symbols
        clock, template="{prefix}{dataset}/exchange={exchange}/{window_start}-{run_id}-{seq}.{ext}"
    )
    ts = T0 * NS
    windower.add(
        _message(1, ts, True, [("bid", 10, 1)], "BTC-USDT")
        + _message(1, ts, True, [("bid", 20, 1)], "ETH-USDT")
    )
    clock.set_wall(ts + 61 * NS)
    assert windower.add(
        _message(2, ts + 61 * NS, False, [("ask", 30, 1)], "ETH-USDT")
        + _message(2, ts + 61 * NS, False, [("ask", 11, 1)], "BTC-USDT")
    )
    [second] = windower.close_all()
    assert [(r.symbol, r.snapshot, r.price) for r in _rows(second)] == [
        ("ETH-USDT", True, "20"),
        ("ETH-USDT", False, "30"),
        ("BTC-USDT", True, "10"),
        ("BTC-USDT", False, "11"),
    ]
