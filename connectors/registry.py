"""The exchanges feedvault speaks, by the name used in ``STREAMS`` and in records.

Each entry builds a fresh client-side protocol object (protocol objects keep small per-connection
state such as request ids and a symbol cache, so sessions do not share them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from connectors.base import ExchangeProtocol
from connectors.binance import BINANCE_US_URL, BinanceProtocol

PROTOCOLS: Final[dict[str, Callable[[], ExchangeProtocol]]] = {
    "binance": BinanceProtocol,
    "binanceus": lambda: BinanceProtocol(exchange="binanceus", default_url=BINANCE_US_URL),
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
