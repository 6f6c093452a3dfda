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

Factory = Callable[..., ExchangeProtocol]
"""Builds a protocol object; keyword options are exchange-specific (Binance: ``stream_type``)."""


def _lazy(module: str, name: str) -> Factory:
    """A factory that imports ``module`` on first use (start-up pays only for what it uses)."""

    def factory(**options: str) -> ExchangeProtocol:
        cls = getattr(importlib.import_module(module), name)
        return cast(ExchangeProtocol, cls(**options))

    return factory


def _binance_us(**options: str) -> ExchangeProtocol:
    return BinanceProtocol(exchange="binanceus", default_url=BINANCE_US_URL, **options)  # type: ignore[arg-type]


BINANCE_FAMILY: Final = frozenset({"binance", "binanceus"})
"""Exchanges that take the ``stream_type`` option (``BINANCE_STREAM``)."""

PROTOCOLS: Final[dict[str, Factory]] = {
    "binance": BinanceProtocol,
    "binanceus": _binance_us,
    "coinbase": _lazy("connectors.coinbase", "CoinbaseProtocol"),
    "kraken": _lazy("connectors.kraken", "KrakenProtocol"),
    "bitstamp": _lazy("connectors.bitstamp", "BitstampProtocol"),
    "okx": _lazy("connectors.okx", "OkxProtocol"),
    "bybit": _lazy("connectors.bybit", "BybitProtocol"),
}
"""Exchange name -> factory of its client protocol."""


def get_protocol(name: str, **options: str) -> ExchangeProtocol:
    """A new protocol object for exchange ``name`` with its ``options``; ValueError naming the
    known ones otherwise."""
    try:
        factory = PROTOCOLS[name]
    except KeyError:
        known = ", ".join(sorted(PROTOCOLS))
        raise ValueError(f"unknown exchange {name!r} (known: {known})") from None
    return factory(**options)
