"""Real Coinbase traffic (cryptofeed's capture ``COINBASE.ws.28.0``: ten products' ``snapshot``
and 9,719 ``l2update`` messages, with trades, tickers and acknowledgements in between) through
:class:`CoinbaseBookFeed`: every book equals, level for level, an independent rebuild written
here from the raw JSON, and so does the rebuild of the emitted rows by ``BookReplica``."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.books.coinbase import CoinbaseBookFeed
from engine.book_records import BookReplica
from tests.books_inband import CONTROL, rows_of
from tests.strategies import RECORDINGS, read_cryptofeed

RECORDING = RECORDINGS / "COINBASE.ws.28.0"

pytestmark = pytest.mark.skipif(not RECORDING.exists(), reason="recordings not available")

Book = dict[str, dict[Decimal, tuple[str, str]]]


def _independent(frames: list[tuple[int, str]]) -> dict[str, Book]:
    """Each product's book from the raw messages: a snapshot replaces it, a change sets a
    level's size (a zero size removes the level)."""
    books: dict[str, Book] = {}
    for _, text in frames:
        msg = json.loads(text)
        if msg.get("type") == "snapshot":
            books[msg["product_id"]] = {
                "bid": {Decimal(p): (p, s) for p, s in msg["bids"]},
                "ask": {Decimal(p): (p, s) for p, s in msg["asks"]},
            }
        elif msg.get("type") == "l2update":
            book = books[msg["product_id"]]
            for side, price, size in msg["changes"]:
                levels = book["bid" if side == "buy" else "ask"]
                if Decimal(size) == 0:
                    levels.pop(Decimal(price), None)
                else:
                    levels[Decimal(price)] = (price, size)
    return books


def _best_first(levels: dict[Decimal, tuple[str, str]], side: str) -> list[tuple[str, str]]:
    return [levels[key] for key in sorted(levels, reverse=side == "bid")]


def test_recorded_books_match_an_independent_rebuild() -> None:
    _, _, received = read_cryptofeed(RECORDING)
    feed = CoinbaseBookFeed()
    replica = BookReplica()
    counts = {"snapshot": 0, "delta": 0, "frames with rows": 0}
    controls = 0
    for ts_recv, text in received:
        result = feed.parse(text, ts_recv)
        if isinstance(result, CONTROL):
            controls += 1
            continue
        rows = rows_of(result)
        kind = json.loads(text)["type"]
        assert bool(rows) == (kind in ("snapshot", "l2update")), kind
        if rows:
            counts["frames with rows"] += 1
        for row in rows:
            counts["snapshot" if row.snapshot else "delta"] += 1
        replica.apply_all(rows)
    expected = _independent(received)
    assert sorted(expected) == sorted(feed.books) and len(expected) == 10
    levels = 0
    for product, book in expected.items():
        state = feed.books[product]
        assert state.synced and state.resync is None
        rebuilt = replica.book("coinbase", state.symbol)
        for side in ("bid", "ask"):
            want = _best_first(book[side], side)
            got = [(lv.price, lv.size) for lv in state.book.levels(side)]  # type: ignore[arg-type]
            assert got == want, (product, side)
            assert [(lv.price, lv.size) for lv in rebuilt.levels(side)] == want  # type: ignore[arg-type]
            levels += len(want)
    assert feed.take_resyncs() == [] and not feed.has_actions
    assert counts["snapshot"] == sum(
        len(m["bids"]) + len(m["asks"])
        for m in (json.loads(t) for _, t in received if '"type":"snapshot"' in t)
    )
    assert counts["delta"] >= 9_719 and levels > 1_000
    assert counts["frames with rows"] == 10 + 9_719 and controls > 0


def test_replayed_with_trades_the_stored_books_are_the_independent_ones(tmp_path: Path) -> None:
    """End to end: the capture converted to a recording, ``feedvault replay`` with
    ``CHANNELS=trades,book`` (each frame to both), ``feedvault verify``; each product's book
    rebuilt from its stored objects in key order is the independent book, and its trades are
    stored too (the same frames' trades, from the trade protocol)."""
    from connectors.recording_cli import convert
    from connectors.symbols import canonical_symbol
    from tests.books_replayed import book_objects, rebuilt, replay_and_verify

    recording = tmp_path / "coinbase.jsonl.zst"
    convert(RECORDING, recording, "coinbase")
    out = tmp_path / "out"
    replay_and_verify(recording, out, "trades,book")
    _, _, received = read_cryptofeed(RECORDING)
    for product, book in _independent(received).items():
        symbol = canonical_symbol(product, "coinbase")
        replica = rebuilt(book_objects(out, "coinbase", symbol))
        for side in ("bid", "ask"):
            got = [(lv.price, lv.size) for lv in replica.book("coinbase", symbol).levels(side)]  # type: ignore[arg-type]
            assert got == _best_first(book[side], side), (product, side)
    assert list((out / "trades" / "exchange=coinbase").rglob("*.gz"))


@pytest.mark.parametrize(
    ("channels", "books"),
    [("book", True), ("trades@binance,book@coinbase", True), ("book@binance", False)],
)
def test_a_replay_writes_only_the_channels_asked_for(
    tmp_path: Path, channels: str, books: bool
) -> None:
    """``CHANNELS`` without trades for Coinbase: its frames' trades are not written (nor its
    books, when no entry names them)."""
    from connectors.recording_cli import convert
    from tests.books_replayed import replay_and_verify

    recording = tmp_path / "coinbase.jsonl.zst"
    convert(RECORDING, recording, "coinbase")
    out = tmp_path / "out"
    replay_and_verify(recording, out, channels)
    assert bool(list((out / "book").rglob("*.gz"))) == books
    assert not (out / "trades").exists()
