"""Small wire-format helpers shared by the exchanges' protocol modules.

Pure functions only: strict decimal-digit integers (``int()`` alone would accept ``" 1"``,
``"+1"``, ``"1_0"`` and non-ASCII digits), the time ranges a trade may carry, JSON string
escaping for the encoders of the fake exchange, a length-capped ``repr`` for messages, the
error of a frame of the wrong shape, the per-connection symbol limit and the default endpoint
path of a base URL. :class:`PrefixedNames` spells an exchange's ``prefix + symbol`` stream
names; :class:`SymbolCached` gives a protocol its hot-path symbol cache.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import orjson

from connectors.symbols import SymbolCache
from engine.errors import MalformedFrame

MAX_MS: Final = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z in milliseconds: the latest trade time a parser accepts."""
MAX_US: Final = MAX_MS * 1000 + 999
"""The same instant in microseconds."""

DIGITS_MS: Final = re.compile(r"[0-9]{1,15}", re.ASCII).fullmatch
"""Matches the decimal text of a millisecond time that can be in range (at most 15 digits)."""
DIGITS_US: Final = re.compile(r"[0-9]{1,18}", re.ASCII).fullmatch
"""Matches the decimal text of a microsecond time that can be in range (at most 18 digits)."""

_JSON_SAFE: Final = re.compile(r"[0-9A-Za-z._-]*", re.ASCII).fullmatch


def json_text(value: str) -> str:
    """``value`` ready to sit between double quotes in JSON: unchanged when it needs no
    escaping (the common case, checked with one regex), else escaped by orjson."""
    if _JSON_SAFE(value):
        return value
    return orjson.dumps(value).decode()[1:-1]


def json_number(decimal_text: str) -> str:
    """The JSON number a float-minded exchange (Bitstamp's ``price``/``amount``) would send for
    ``decimal_text``: the shortest float repr, or ``null`` when the text is not a finite number.
    For the fake exchange only; parsers never read these fields."""
    try:
        number = float(decimal_text)
    except ValueError:
        return "null"
    return repr(number) if math.isfinite(number) else "null"


def short(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def stream_names(
    exchange: str, what: str, limit: int, symbols: Sequence[str], name: Callable[[str], str]
) -> list[str]:
    """``name(symbol)`` for each symbol, in order: the exchange's spelling of one connection's
    streams (``what``: "topics", "pairs" ...). ValueError ``"<exchange>: at most <limit> <what>
    per connection, got <n>"`` for more than ``limit`` symbols; ``name`` raises ValueError for
    a symbol it cannot spell."""
    if len(symbols) > limit:
        raise ValueError(f"{exchange}: at most {limit} {what} per connection, got {len(symbols)}")
    return [name(symbol) for symbol in symbols]


def shape_error(exc: Exception, not_object: str, missing: str, wrong_type: str) -> MalformedFrame:
    """The :class:`MalformedFrame` for what a parser's field access raised on a frame of the
    wrong shape: ``KeyError`` -> ``missing-field`` (``"<missing> has no field 'x'"``),
    ``AttributeError`` (a part is not a JSON object) -> ``not-object`` with ``not_object``,
    ``TypeError`` -> ``type`` with ``wrong_type``. Called only for a failing frame, so the
    parser's hot path is still a plain ``try``."""
    if isinstance(exc, KeyError):
        return MalformedFrame("missing-field", f"{missing} has no field {exc}")
    if isinstance(exc, AttributeError):
        return MalformedFrame("not-object", not_object)
    return MalformedFrame("type", wrong_type)


def with_default_path(base_url: str, path: str) -> str:
    """``base_url`` (without a trailing ``/``) when it names a path, else ``base_url + path``:
    so ``OKX_WS_URL=ws://127.0.0.1:9001`` reaches the exchange's endpoint on a fake exchange."""
    base = base_url.rstrip("/")
    return base if urlsplit(base).path else base + path


_SYMBOL_TEXT: Final = re.compile(r"[0-9A-Za-z]{2,40}", re.ASCII).fullmatch


@dataclass(frozen=True, slots=True)
class PrefixedNames:
    """The stream names of an exchange that spells a symbol's stream ``prefix`` + the symbol
    (2-40 ASCII letters and digits) in one case (``case``: ``str.upper`` or ``str.lower``):
    Bybit's ``publicTrade.BTCUSDT``, Bitstamp's ``live_trades_btcusd``."""

    exchange: str
    prefix: str
    case: Callable[[str], str]

    def name(self, raw_symbol: str) -> str:
        """``prefix`` + ``raw_symbol`` in the exchange's case. :class:`ValueError` for a symbol
        that is not 2-40 ASCII letters/digits."""
        if not _SYMBOL_TEXT(raw_symbol):
            raise ValueError(
                f"{self.exchange} symbol {raw_symbol!r} is not 2-40 letters and digits"
            )
        return self.prefix + self.case(raw_symbol)

    def symbol(self, name: str) -> str | None:
        """The symbol of the stream ``name`` as it is spelled there, or None when ``name`` is
        not ``prefix`` + 2-40 letters/digits."""
        if not name.startswith(self.prefix):
            return None
        symbol = name[len(self.prefix) :]
        return symbol if _SYMBOL_TEXT(symbol) else None


class SymbolCached:
    """A protocol's raw -> canonical symbol cache for its parser's hot path:
    ``self._symbols.get(raw)`` (one dict lookup), on a miss ``self._canonical(raw)``, which
    raises ``MalformedFrame`` (see :class:`connectors.symbols.SymbolCache`). ``name`` must be
    set before ``__init__`` runs."""

    name: str

    def __init__(self) -> None:
        cache = SymbolCache(self.name)
        self._symbols = cache.known
        self._canonical = cache.resolve
