"""The fake exchange's books on demand, ``--book-rate max`` (docs:
testing.md#order-books-on-the-fake-exchange): the book market's :meth:`BookMarket.take`, and a
Binance book feed reading a fake whose clock never moves (so every message it gets was made on
demand) in sync, level for level with the ledger's book, over real WebSockets and HTTP on
loopback. Every wait is bounded (tests/harness.py)."""

from __future__ import annotations

import argparse
import asyncio
import itertools

import pytest

from connectors.fake.book_ledger import BookLedger
from connectors.fake.book_market import BookMarket
from connectors.fake.server import BOOK_BATCH, FakeExchange
from engine.clock import FakeClock
from tests.test_fake_books import assert_same_book, read_binance_books_to_the_stop

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def test_market_on_demand_makes_only_what_is_taken() -> None:
    clock, ledger = FakeClock(), BookLedger()
    market = BookMarket(SYMBOLS, rate=None, clock=clock, record=ledger.made)
    start = market.update_id("BTCUSDT")
    clock.advance(60.0)
    assert market.advance() == {}  # no clock-driven messages on demand
    out = market.take(5)
    assert sorted(out) == [("BTCUSDT", None), ("ETHUSDT", None)]
    msgs = out[("BTCUSDT", None)]
    assert len(msgs) == 5 and len(out[("ETHUSDT", None)]) == 5
    assert msgs[0].first_id == start + 1
    for prev, msg in itertools.pairwise(msgs):
        assert msg.first_id == prev.update_id + 1 and not msg.snapshot
    assert market.update_id("BTCUSDT") == msgs[-1].update_id
    assert market.take(0) == {}


def test_on_demand_books_need_max_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="max mode"):
        FakeExchange("binance", rate=100, symbols=SYMBOLS, book_rate=None)
    from connectors.fake.cli import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    refused = asyncio.run(run(parser.parse_args(["--rate", "100", "--book-rate", "max"])))
    assert refused == 2
    assert capsys.readouterr().err.startswith("--book-rate: max needs --rate max")
    assert asyncio.run(run(parser.parse_args(["--book-rate", "fast"]))) == 2
    assert "'fast' is not a number or 'max'" in capsys.readouterr().err


async def test_binance_feed_reads_books_made_on_demand_in_sync() -> None:
    """No clock moves, yet the feed gets many rounds of diffs (``U``/``u`` without a gap: no
    resync), its REST snapshot fits them, and after the fake's stop (every frame sent read)
    its books equal the ledger's, level by level."""
    clock = FakeClock()
    fx = FakeExchange("binance", rate=None, symbols=SYMBOLS, clock=clock, book_rate=None)
    wanted = 4 * BOOK_BATCH
    book_client = await read_binance_books_to_the_stop(fx, clock, SYMBOLS, wanted)
    assert book_client.resyncs == [] and book_client.fetches == 2
    for raw in SYMBOLS:
        assert_same_book(book_client, fx.ledger, raw, 1)
    assert fx.ledger.books.gaps == 0
