"""Canonical symbols (docs: data-formats.md): ``BASE-QUOTE``, upper case, for every exchange.

Exchanges that separate base and quote (``BTC-USD``, ``XBT/USD``) are split on the separator.
Exchanges that run them together (``BTCUSDT``) are split with a list of known quote assets,
longest match first (``BTCTUSD`` is ``BTC-TUSD``, not ``BTCT-USD``), except that a split leaving
a well-known base wins (``BNBUSD`` is ``BNB-USD``, not ``BN-BUSD``). Legacy Kraken names are
mapped (``XBT`` -> ``BTC``, ``XDG`` -> ``DOGE``).

This module is pure; :func:`canonical_symbol` raises :class:`ValueError` for a symbol it cannot
split, and callers map that to their own error (a protocol parser to ``MalformedFrame``, the
configuration to ``ConfigError``).
"""

from __future__ import annotations

import re
from typing import Final

from engine.errors import MalformedFrame

ALIASES: Final[dict[str, str]] = {"XBT": "BTC", "XDG": "DOGE"}
"""Legacy asset names and their canonical spelling."""

KNOWN_QUOTES: Final[tuple[str, ...]] = tuple(
    sorted(
        {
            # stablecoins
            "USDT",
            "USDC",
            "FDUSD",
            "BUSD",
            "TUSD",
            "USDP",
            "USDS",
            "DAI",
            "PAX",
            "UST",
            "AEUR",
            "EURI",
            # fiat
            "USD",
            "EUR",
            "GBP",
            "TRY",
            "BRL",
            "JPY",
            "AUD",
            "CAD",
            "CHF",
            "RUB",
            "UAH",
            "NGN",
            "ZAR",
            "PLN",
            "RON",
            "ARS",
            "MXN",
            "COP",
            "CZK",
            "IDRT",
            "BIDR",
            "BVND",
            # crypto quotes
            "BTC",
            "XBT",
            "ETH",
            "BNB",
            "XRP",
            "TRX",
            "DOGE",
            "SOL",
        },
        key=lambda quote: (-len(quote), quote),
    )
)
"""Quote assets recognised in run-together symbols, longest first."""

KNOWN_BASES: Final[frozenset[str]] = frozenset(
    ("ADA", "AVAX", "DOT", "LINK", "LTC", "MATIC", "SHIB", "TON", "UNI", "XLM", "BCH", "ETC")
)
"""Well-known base assets, used only to break a tie between two possible splits."""

_KNOWN_ASSETS: Final = KNOWN_BASES | frozenset(KNOWN_QUOTES)
_SEPARATORS: Final = re.compile(r"[-/]")
_ASSET: Final = re.compile(r"[A-Z0-9]{1,20}")


def _asset(name: str, raw: str) -> str:
    if not _ASSET.fullmatch(name):
        raise ValueError(f"symbol {raw!r}: {name!r} is not an asset name")
    return ALIASES.get(name, name)


def canonical_symbol(raw: str, exchange: str = "") -> str:
    """The canonical ``BASE-QUOTE`` form of an exchange's symbol ``raw``.

    ``exchange`` names the exchange the symbol comes from (for error messages; the rules are the
    same for every exchange today). Raises :class:`ValueError` when ``raw`` cannot be split into
    two asset names of ``[A-Z0-9]`` (after upper-casing).
    """
    if not isinstance(raw, str):
        raise ValueError(f"symbol {raw!r} is not text")
    upper = raw.upper()
    where = f" ({exchange})" if exchange else ""
    if _SEPARATORS.search(upper):
        parts = _SEPARATORS.split(upper)
        if len(parts) != 2:
            raise ValueError(f"symbol {raw!r}{where} does not have exactly one separator")
        return f"{_asset(parts[0], raw)}-{_asset(parts[1], raw)}"
    splits = [
        (upper[: -len(quote)], quote)
        for quote in KNOWN_QUOTES
        if upper.endswith(quote) and len(upper) > len(quote)
    ]
    if not splits:
        raise ValueError(f"symbol {raw!r}{where} has no known quote asset")
    # Longest quote first, unless only a shorter quote leaves a well-known base:
    # BNBUSD is BNB-USD, not BN-BUSD; BTCTUSD stays BTC-TUSD.
    base, quote = next((s for s in splits if s[0] in _KNOWN_ASSETS), splits[0])
    return f"{_asset(base, raw)}-{ALIASES.get(quote, quote)}"


SYMBOL_CACHE_MAX: Final = 4096
"""Raw symbols a :class:`SymbolCache` remembers at most (a hostile feed cannot grow it)."""


class SymbolCache:
    """One exchange's raw symbols mapped to canonical ones, for the parsers' hot path.

    A parser looks a raw symbol up in :attr:`known` (one dict lookup); on a miss it calls
    :meth:`resolve`, which raises :class:`~engine.errors.MalformedFrame` for a symbol that is
    not text or cannot be split, and remembers up to :data:`SYMBOL_CACHE_MAX` answers.
    """

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.known: dict[str, str] = {}

    def resolve(self, raw: object) -> str:
        if type(raw) is not str:
            raise MalformedFrame("type", f"{self.exchange} symbol must be a string")
        try:
            symbol = canonical_symbol(raw, self.exchange)
        except ValueError as exc:
            raise MalformedFrame("symbol", str(exc)[:120]) from None
        if len(self.known) < SYMBOL_CACHE_MAX:
            self.known[raw] = symbol
        return symbol
