"""The exchanges feedvault speaks, by the name used in ``STREAMS`` and in records.

Each entry builds a fresh client-side protocol object (protocol objects keep small per-connection
state such as request ids and a symbol cache, so sessions do not share them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Final, cast

from connectors.base import ExchangeProtocol
from connectors.binance import BINANCE_US_URL, BinanceProtocol


def _lazy(module: str, name: str) -> Callable[[], ExchangeProtocol]:
    """A factory that imports ``module`` on first use (start-up pays only for what it uses)."""

    def factory() -> ExchangeProtocol:
        return cast(ExchangeProtocol, getattr(importlib.import_module(module), name)())

    return factory


PROTOCOLS: Final[dict[str, Callable[[], ExchangeProtocol]]] = {
    "binance": BinanceProtocol,
    "binanceus": lambda: BinanceProtocol(exchange="binanceus", default_url=BINANCE_US_URL),
    "coinbase": _lazy("connectors.coinbase", "CoinbaseProtocol"),
    "kraken": _lazy("connectors.kraken", "KrakenProtocol"),
    "bitstamp": _lazy("connectors.bitstamp", "BitstampProtocol"),
    "okx": _lazy("connectors.okx", "OkxProtocol"),
    "bybit": _lazy("connectors.bybit", "BybitProtocol"),
}
"""Exchange name -> factory of its client protocol."""


def get_protocol(name: str) -> ExchangeProtocol:
    """A new protocol object for exchange ``name``; ValueError naming the known ones otherwise."""
    try:
        factory = PROTOCOLS[name]
    except KeyError:
        known = ", ".join(sorted(PROTOCOLS))
        raise ValueError(f"unknown exchange {name!r} (known: {known})") from None
    return factory()
