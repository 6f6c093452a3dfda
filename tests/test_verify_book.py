"""verify's checks of book objects (sinks/verify_book.py), on objects the sink's own windower
made (openings included), then tampered with: each tampering is found."""

from __future__ import annotations

import copy

import pytest

from engine.book_records import BookLevel
from engine.clock import FakeClock
from sinks.encoders import decode_body
from sinks.manifest import BookResync
from sinks.verify_book import BookChecker
from tests.harness import make_book_windower

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def _msg(seq: int, ts: int, snapshot: bool, levels: list[tuple[str, str, str]]) -> list[BookLevel]:
    return [
        BookLevel("binance", "BTC-USDT", "BTC-USDT", ts // 1000, ts, str(seq), snapshot, s, p, q)
        for s, p, q in levels
    ]


def _objects() -> list[tuple[str, list[dict[str, object]]]]:
    """Three one-second windows: a snapshot, deltas, a resync (fresh snapshot, seq 20)."""
    clock = FakeClock(start_ns=T0)
    windower = make_book_windower(clock, seconds=1)
    closed = []
    plan = [
        (1, 0, True, [("bid", "100", "1"), ("bid", "99", "2"), ("ask", "101", "1")]),
        (2, NS // 2, False, [("bid", "100", "0"), ("ask", "102", "4")]),
        (3, NS + 1, False, [("ask", "101", "3")]),
        (4, NS + 2, False, [("bid", "98", "1")]),
        (20, 2 * NS + 5, True, [("bid", "97", "1"), ("ask", "103", "1")]),
        (21, 2 * NS + 6, False, [("ask", "104", "2")]),
    ]
    for seq, offset, snapshot, levels in plan:
        clock.set_wall(T0 + offset)
        closed += windower.add(_msg(seq, T0 + offset, snapshot, levels))
    closed += windower.close_all()
    return [(w.key, list(decode_body(w.body, "ndjson.gz"))) for w in closed]


RESYNC = BookResync(
    at="x", cause="sequence", from_seq="4", to_seq="20", done="y", superseded=0, detail=""
)


def _check(
    objects: list[tuple[str, list[dict[str, object]]]], resyncs: list[BookResync]
) -> list[str]:
    problems: list[str] = []
    exchange = objects[0][1][0]["exchange"]
    checker = BookChecker(problems, {f"{exchange}:BTC-USDT:book": resyncs})
    for key, records in objects:
        checker.add(key, records)
    checker.finish()
    return problems


def test_the_sinks_objects_verify() -> None:
    objects = _objects()
    assert len(objects) == 3
    assert _check(objects, [RESYNC]) == []
    assert _check(list(reversed(objects)), [RESYNC]) == []  # ordered by the keys' sequence


def test_an_unrecorded_resync_is_found() -> None:
    problems = _check(_objects(), [])
    assert problems == [
        "binance:BTC-USDT:book: 1 fresh snapshot(s) after the first in the data, the manifest "
        "records 0 finished resync(s)"
    ]


def test_a_recorded_resync_missing_from_the_data_is_found() -> None:
    other = dict(RESYNC, to_seq="19")
    problems = _check(_objects(), [other])  # type: ignore[list-item]
    assert any("(to seq 19) has no snapshot in the data" in p for p in problems)


@pytest.mark.parametrize("tamper", ["drop-opening", "change-opening", "seq-back"])
def test_tampering_is_found(tamper: str) -> None:
    objects = copy.deepcopy(_objects())
    key, second = objects[1]
    assert second[0]["snapshot"] is True  # the restated book after seq 2
    if tamper == "drop-opening":
        objects[1] = (key, [row for row in second if not row["snapshot"]])
        expected = "does not begin with a snapshot"
    elif tamper == "change-opening":
        second[0]["size"] = "7"
        expected = "differs from the book at the end of"
    else:
        second[-1]["seq"] = "1"
        expected = "sequence goes back (3 -> 1)"
    problems = _check(objects, [RESYNC])
    assert any(expected in p for p in problems), problems


def test_a_snapshot_split_across_objects_verifies() -> None:
    """A window closed (by its record limit) inside a snapshot message: the next object
    restates the part written so far and goes on with the rest of the same message."""
    clock = FakeClock(start_ns=T0)
    windower = make_book_windower(clock, max_records=3)
    levels = [("bid", "1", "1"), ("bid", "2", "1"), ("ask", "3", "1"), ("ask", "4", "1")]
    closed = windower.add(_msg(10, T0, True, [*levels, ("ask", "5", "1")]))
    closed += windower.add(_msg(11, T0 + 1, False, [("bid", "1", "0")]))
    closed += windower.close_all()
    objects = [(w.key, list(decode_body(w.body, "ndjson.gz"))) for w in closed]
    assert len(objects) >= 2 and objects[1][1][0]["seq"] == "10"
    assert _check(objects, []) == []


def test_an_okx_sequence_may_fall_in_sync() -> None:
    objects = copy.deepcopy(_objects())
    _, second = objects[1]
    second[-1]["seq"] = "1"
    problems = _check(objects, [RESYNC])
    assert any("sequence goes back (3 -> 1)" in p for p in problems), problems
    for _, rows in objects:  # OKX after maintenance: prevSeqId followed, seqId fell
        for row in rows:
            row["exchange"] = "okx"
    assert _check(objects, [RESYNC]) == []
