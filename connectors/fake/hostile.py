"""Hostile feed input for the fake exchange's ``hostile`` fault (issue 7).

Each frame is something a client must count as invalid and survive; :data:`HOSTILE_KINDS` in
turn (``number`` picks the kind: ``number % 4``):

- ``utf8``: the trade's frame with the bytes ``FF FE`` after its first byte (not UTF-8). The
  server's text is ``str``: the bytes travel as lone surrogates and are written with
  ``surrogateescape`` (see ``connectors.fake.server.send_many``);
- ``nesting``: ``[`` 100,000 deep (200 kB, under the 1 MiB frame limit);
- ``number``: a JSON number of 400 digits, far beyond the float range;
- ``symbol``: the trade itself, its symbol replaced by one of :data:`HOSTILE_SYMBOLS` (path
  separators, ``..``, NUL), in the trade and in the stream's name where the exchange names the
  symbol there (Bitstamp's channel), encoded by the exchange's own encoder (JSON-escaped).

The frames are the same for every exchange except ``symbol`` (the exchange's trade format).
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Final

from connectors.fake.adapters import ServerSession
from engine.records import Trade

HOSTILE_KINDS: Final = ("utf8", "nesting", "number", "symbol")
HOSTILE_SYMBOLS: Final = ("../../../etc/passwd", "BTC\x00USDT", "BTC/../USDT", "/BTC/USDT")
NESTING_DEPTH: Final = 100_000


@cache
def nested_frame() -> str:
    """Arrays nested :data:`NESTING_DEPTH` deep."""
    return "[" * NESTING_DEPTH + "]" * NESTING_DEPTH


def hostile_frame(session: ServerSession, trade: Trade, stream: str, number: int) -> str:
    """Hostile frame ``number`` (its kind is ``HOSTILE_KINDS[number % 4]``) in place of
    ``trade`` on ``stream``."""
    kind = HOSTILE_KINDS[number % len(HOSTILE_KINDS)]
    if kind == "utf8":
        good = session.encode(trade, stream).encode()
        return (good[:1] + b"\xff\xfe" + good[1:]).decode("utf-8", "surrogateescape")
    if kind == "nesting":
        return nested_frame()
    if kind == "number":
        return "9" * 400
    symbol = HOSTILE_SYMBOLS[(number // len(HOSTILE_KINDS)) % len(HOSTILE_SYMBOLS)]
    at = stream.lower().find(trade.raw_symbol.lower()) if trade.raw_symbol else -1
    if at >= 0:
        # An exchange that names the symbol in the stream (Bitstamp's channel) reads it there.
        stream = stream[:at] + symbol + stream[at + len(trade.raw_symbol) :]
    return session.encode(dataclasses.replace(trade, raw_symbol=symbol), stream)
