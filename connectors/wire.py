"""Small wire-format helpers shared by the protocol modules of Bitstamp, OKX and Bybit.

Pure functions only: strict decimal-digit integers (``int()`` alone would accept ``" 1"``,
``"+1"``, ``"1_0"`` and non-ASCII digits), the time ranges a trade may carry, JSON string
escaping for the encoders of the fake exchange, and a length-capped ``repr`` for messages.
"""

from __future__ import annotations

import math
import re
from typing import Final

import orjson

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
