"""The in-memory level-2 book (engine/book.py): levels keyed by decimal value with the
exchange's text kept, zero sizes removing, best-first views, the crossed check, truncation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.book import ASK, BID, Level, OrderBook, Side
from engine.errors import MalformedFrame

_PRICES = st.sampled_from(["1", "1.0", "1.50", "1.5", "2", "2.25", "10", "0.1", "0.10", "3"])
_SIZES = st.sampled_from(["0", "0.000", "1", "2.5", "0.001", "7"])
_UPDATES = st.lists(st.tuples(st.sampled_from([BID, ASK]), _PRICES, _SIZES), max_size=60)


@given(_UPDATES, st.integers(min_value=1, max_value=12))
def test_the_book_is_the_last_update_of_each_price_value(
    updates: list[tuple[Side, str, str]], depth: int
) -> None:
    """Against an independent rebuild: per side, the last non-zero update of each price value,
    with its own text, best first; a zero size removes."""
    book = OrderBook()
    reference: dict[str, dict[Decimal, tuple[str, str]]] = {BID: {}, ASK: {}}
    for side, price, size in updates:
        book.apply(side, price, size)
        if Decimal(size) == 0:
            reference[side].pop(Decimal(price), None)
        else:
            reference[side][Decimal(price)] = (price, size)
    for side in (BID, ASK):
        keys = sorted(reference[side], reverse=side == BID)
        expected = [Level(*reference[side][key]) for key in keys]
        assert book.levels(side) == expected
        assert book.levels(side, depth) == expected[:depth]
        assert book.depth(side) == len(expected)
        assert book.best(side) == (expected[0] if expected else None)
    bids, asks = reference[BID], reference[ASK]
    assert book.crossed == bool(bids and asks and max(bids) >= min(asks))


def test_crossed_and_truncated() -> None:
    book = OrderBook()
    for price in ("100", "99.5", "99", "98"):
        book.apply(BID, price, "1")
    for price in ("101", "102", "103"):
        book.apply(ASK, price, "2")
    assert not book.crossed
    book.apply(ASK, "99.50", "1")
    assert book.crossed and book.best(ASK) == Level("99.50", "1")
    book.truncate(2)
    assert book.levels(BID) == [Level("100", "1"), Level("99.5", "1")]
    assert book.levels(ASK) == [Level("99.50", "1"), Level("101", "2")]
    book.clear()
    assert book.levels(BID) == [] and book.best(ASK) is None and not book.crossed


@pytest.mark.parametrize(
    ("side", "price", "size"),
    [("buy", "1", "1"), (BID, "abc", "1"), (BID, "1", "-1"), (ASK, "NaN", "1"), (ASK, "1", "inf")],
)
def test_a_bad_level_is_malformed_and_changes_nothing(side: str, price: str, size: str) -> None:
    book = OrderBook()
    book.apply(BID, "5", "1")
    with pytest.raises(MalformedFrame):
        book.apply(side, price, size)  # type: ignore[arg-type]
    assert book.levels(BID) == [Level("5", "1")] and book.levels(ASK) == []
