"""The exchanges whose level-2 books feedvault records, by the name used in ``STREAMS``.

Each call builds a fresh feed (a feed holds the books of its connection's symbols, so sessions
never share one). Modules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Final, cast

from connectors.books.base import BookFeed

FEEDS: Final[dict[str, tuple[str, str, dict[str, str]]]] = {
    "binance": ("connectors.books.binance", "BinanceBookFeed", {}),
    "binanceus": ("connectors.books.binance", "BinanceBookFeed", {"exchange": "binanceus"}),
    "coinbase": ("connectors.books.coinbase", "CoinbaseBookFeed", {}),
    "kraken": ("connectors.books.kraken", "KrakenBookFeed", {}),
    "bitstamp": ("connectors.books.bitstamp", "BitstampBookFeed", {}),
    "okx": ("connectors.books.okx", "OkxBookFeed", {}),
    "bybit": ("connectors.books.bybit", "BybitBookFeed", {}),
}
"""Exchange name -> (module, class, keyword arguments) of its book feed."""


def get_book_feed(name: str) -> BookFeed:
    """A new book feed for exchange ``name``; ValueError naming the known ones otherwise."""
    try:
        module, cls, options = FEEDS[name]
    except KeyError:
        known = ", ".join(sorted(FEEDS))
        raise ValueError(f"unknown exchange {name!r} (known: {known})") from None
    return cast(BookFeed, getattr(importlib.import_module(module), cls)(**options))
