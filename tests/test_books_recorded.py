"""Real recorded Binance traffic: the depth updates of ``BINANCE.ws.1.0`` synchronised with the
REST snapshots of ``BINANCE.http.0.0`` (cryptofeed's capture of one 2021 session).

``feedvault recording convert --from cryptofeed`` merges the ``*.http.*`` file into the recording
by time; its lines are fed in order into a :class:`BinanceBookFeed` (frames to ``parse``, REST
lines to ``snapshot_fetched``, each :class:`FetchSnapshot` answered by the next REST line of its
symbol). Every level of every resulting book is checked against a rebuild written here from the
raw JSON with none of the feed's code, and :class:`BookReplica` over the emitted rows gives the
same books. (Coinbase's recorded books: tests/test_books_recorded_coinbase.py.)
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.books.base import FetchSnapshot
from connectors.books.binance import BinanceBookFeed
from connectors.recording import http_siblings, iter_records
from connectors.recording_cli import convert
from connectors.symbols import canonical_symbol
from engine.book_records import BookLevel, BookReplica
from tests.strategies import RECORDINGS

WS = RECORDINGS / "BINANCE.ws.1.0"
HTTP = RECORDINGS / "BINANCE.http.0.0"
SYMBOLS = {"NKNUSDT", "LRCBTC", "BLZETH", "RUNEEUR"}

pytestmark = pytest.mark.skipif(not WS.is_file(), reason="the cryptofeed recordings are absent")

Levels = dict[str, list[tuple[str, str]]]


def converted(tmp_path: Path) -> Path:
    out = tmp_path / "binance.jsonl.zst"
    counts = convert(WS, out, "binance")
    lines = [line for line in WS.read_text(encoding="utf-8").splitlines() if line]
    assert counts["http"] == 4 and counts["frames"] == len(lines) + 4
    return out


def independent_books() -> tuple[dict[str, Levels], dict[str, int]]:
    """The books at the end of the capture, from the raw files: per symbol the snapshot, then
    every depth update after it in receive order (the update ids checked to chain), each size
    setting its price's level (zero removes). Also the rows each symbol's book produced."""
    snapshots: dict[str, dict[str, Any]] = {}
    for line in filter(None, HTTP.read_text(encoding="utf-8").splitlines()):
        url, _, rest = line.partition(" -> ")
        symbol = url.split("symbol=")[1].split("&")[0]
        snapshots[symbol] = json.loads(rest.partition(": ")[2])
    books: dict[str, dict[str, dict[Decimal, tuple[str, str]]]] = {}
    last: dict[str, int] = {}
    rows: dict[str, int] = {}
    for symbol, snap in snapshots.items():
        books[symbol] = {
            "bid": {Decimal(p): (p, q) for p, q in snap["bids"]},
            "ask": {Decimal(p): (p, q) for p, q in snap["asks"]},
        }
        last[symbol] = snap["lastUpdateId"]
        rows[symbol] = len(snap["bids"]) + len(snap["asks"])
    for line in filter(None, WS.read_text(encoding="utf-8").splitlines()[1:]):
        data = json.loads(line.partition(": ")[2])["data"]
        if data.get("e") != "depthUpdate":
            continue
        symbol = data["s"]
        if data["u"] <= last[symbol]:
            continue  # in the snapshot already
        assert data["U"] <= last[symbol] + 1, "the capture has a gap: the test needs redoing"
        last[symbol] = data["u"]
        for side, key in (("bid", "b"), ("ask", "a")):
            for price, size in data[key]:
                rows[symbol] += 1
                if Decimal(size) == 0:
                    books[symbol][side].pop(Decimal(price), None)
                else:
                    books[symbol][side][Decimal(price)] = (price, size)
    result = {
        symbol: {
            side: [levels[k] for k in sorted(levels, reverse=side == "bid")]
            for side, levels in sides.items()
        }
        for symbol, sides in books.items()
    }
    return result, rows


def test_the_http_file_beside_the_capture_is_found() -> None:
    assert http_siblings(WS) == [HTTP]
    assert http_siblings(HTTP) == []


def test_recorded_binance_books_match_an_independent_rebuild(tmp_path: Path) -> None:
    feed = BinanceBookFeed()
    rows: list[BookLevel] = []
    asked: dict[str, int] = {}
    answered = 0
    for recorded in iter_records([converted(tmp_path)]):
        if recorded.is_connect:
            feed.connected(recorded.ts)
            continue
        if recorded.dir != "in":
            continue
        if recorded.http is not None:
            symbol = feed.symbol_of_snapshot(recorded.http.removeprefix("GET "))
            assert symbol is not None and asked.get(symbol, 0) > 0, "a snapshot nobody asked for"
            asked[symbol] -= 1
            answered += 1
            rows += feed.snapshot_fetched(symbol, recorded.frame, recorded.ts)
        else:
            result = feed.parse(recorded.frame, recorded.ts)
            assert isinstance(result, list | tuple), result
            rows += result
        for action in feed.take_actions():
            assert isinstance(action, FetchSnapshot) and action.weight == 50
            asked[action.raw_symbol] = asked.get(action.raw_symbol, 0) + 1
    assert answered == 4 and set(asked) == SYMBOLS and not any(asked.values())
    assert feed.take_resyncs() == []
    expected, row_counts = independent_books()
    assert set(expected) == SYMBOLS
    replica = BookReplica()
    replica.apply_all(rows)
    for symbol, sides in expected.items():
        state = feed.books[symbol]
        assert state.synced and state.crossed == 0
        replicated = replica.book("binance", state.symbol)
        for side in ("bid", "ask"):
            got = [(lv.price, lv.size) for lv in state.book.levels(side)]
            assert got == sides[side], (symbol, side)
            again = [(lv.price, lv.size) for lv in replicated.levels(side)]
            assert again == sides[side], (symbol, side)
        assert sum(r.raw_symbol == symbol for r in rows) == row_counts[symbol]
    # the first rows of each symbol are its snapshot, with the snapshot's id as seq
    first = {r.raw_symbol: r for r in reversed(rows)}
    assert first["NKNUSDT"].snapshot and first["NKNUSDT"].seq == "499869752"
    assert all(len(expected[s]["bid"]) > 10 and len(expected[s]["ask"]) > 10 for s in SYMBOLS)


@pytest.mark.parametrize(
    ("flags", "http_lines"), [([], 4), (["--no-http"], 0), (["--http", str(HTTP)], 4)]
)
def test_convert_command_merges_http_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], http_lines: int
) -> None:
    import argparse

    from connectors.recording_cli import add_arguments, main

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "out.jsonl"
    args = parser.parse_args(
        ["convert", "--from", "cryptofeed", "--exchange", "binance", *flags, str(WS), str(out)]
    )
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["http"] == http_lines
    assert summary["http_files"] == ([str(HTTP)] if http_lines else [])
    records = list(iter_records([out]))
    http = [r for r in records if r.http is not None]
    assert len(http) == http_lines and all(r.status == 200 for r in http)
    assert [r.ts for r in records[1:]] == sorted(r.ts for r in records[1:])  # merged by time
    if http:
        assert http[0].http == "GET https://api.binance.com/api/v3/depth?symbol=NKNUSDT&limit=1000"
        assert json.loads(http[0].frame)["lastUpdateId"] == 499869752


def test_replayed_recording_stores_books_that_rebuild_to_the_independent_ones(
    tmp_path: Path,
) -> None:
    """End to end: ``feedvault replay`` of the converted recording with ``CHANNELS=book`` (the
    REST lines in place of the fetches, no network), then ``feedvault verify``; the book rows
    stored under ``book/``, rebuilt object by object in key order, are the independent books."""
    from tests.books_replayed import book_objects, rebuilt, replay_and_verify

    out = tmp_path / "out"
    replay_and_verify(converted(tmp_path), out, "book")
    expected, _ = independent_books()
    for symbol, sides in expected.items():
        canonical = canonical_symbol(symbol, "binance")
        objects = book_objects(out, "binance", canonical)
        replica = rebuilt(objects)
        book = replica.book("binance", canonical)
        for side in ("bid", "ask"):
            assert [(lv.price, lv.size) for lv in book.levels(side)] == sides[side], symbol
        # the last object alone rebuilds the book too (it opens with a snapshot)
        alone = rebuilt(objects[-1:])
        assert [(lv.price, lv.size) for lv in alone.book("binance", canonical).levels("bid")] == (
            sides["bid"]
        )
