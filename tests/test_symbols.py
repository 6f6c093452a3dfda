"""canonical_symbol: separators, known quotes longest first, aliases, rejections."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.symbols import KNOWN_QUOTES, canonical_symbol


@pytest.mark.parametrize(
    ("raw", "exchange", "expected"),
    [
        ("BTCUSDT", "binance", "BTC-USDT"),
        ("btcusdt", "binance", "BTC-USDT"),
        ("BNBBTC", "binance", "BNB-BTC"),
        ("ETHBTC", "binance", "ETH-BTC"),
        ("NKNUSDT", "binance", "NKN-USDT"),
        ("LRCBTC", "binance", "LRC-BTC"),
        ("RUNEEUR", "binance", "RUNE-EUR"),
        ("BLZETH", "binance", "BLZ-ETH"),
        ("BTCTUSD", "binance", "BTC-TUSD"),  # longest first: TUSD, not USD
        ("ETHBUSD", "binance", "ETH-BUSD"),
        ("BTCFDUSD", "binance", "BTC-FDUSD"),
        ("USDTTRY", "binance", "USDT-TRY"),
        ("BNBUSD", "binanceus", "BNB-USD"),  # not BN-BUSD
        ("OPBUSD", "binance", "OP-BUSD"),
        ("TUSDUSDT", "binance", "TUSD-USDT"),
        ("BTC-USD", "coinbase", "BTC-USD"),
        ("btc-usd", "coinbase", "BTC-USD"),
        ("XBT/USD", "kraken", "BTC-USD"),
        ("XDG/EUR", "kraken", "DOGE-EUR"),
        ("ETHXBT", "kraken", "ETH-BTC"),
        ("BTC-USDT", "okx", "BTC-USDT"),
        ("1000SHIBUSDT", "bybit", "1000SHIB-USDT"),
    ],
)
def test_canonical(raw: str, exchange: str, expected: str) -> None:
    assert canonical_symbol(raw, exchange) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "USDT",
        "FOO",
        "BTC-",
        "-USD",
        "BTC/USD/EUR",
        "BTC-USDT-SWAP",
        "BT C-USD",
        "ÉTHUSDT",
        "BTC_USD",
    ],
)
def test_unsplittable_raises_value_error(raw: str) -> None:
    with pytest.raises(ValueError):
        canonical_symbol(raw, "binance")


def test_quotes_sorted_longest_first() -> None:
    lengths = [len(q) for q in KNOWN_QUOTES]
    assert lengths == sorted(lengths, reverse=True)


@given(st.text(max_size=30))
def test_any_text_gives_canonical_or_value_error(raw: str) -> None:
    try:
        out = canonical_symbol(raw, "binance")
    except ValueError:
        return
    assert re.fullmatch(r"[A-Z0-9]+-[A-Z0-9]+", out)
