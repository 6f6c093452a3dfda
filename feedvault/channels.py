"""``CHANNELS``: which channels (``trades``, ``book``) each stream records
(docs: order-books.md#choosing-channels).

A comma-separated list of entries; an entry is a channel, optionally ``@`` and what it is for: an
exchange (``book@okx``) or one stream (``book@binance:BTCUSDT``). A stream records every channel
whose entry names it, its exchange, or nothing. One environment variable per task, whatever the
mix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from engine.errors import ConfigError

TRADES: Final = "trades"
BOOK: Final = "book"
CHANNEL_NAMES: Final = (TRADES, BOOK)
DEFAULT_CHANNELS: Final = TRADES


def _entries(text: str, variable: str) -> list[tuple[str, str, str, str]]:
    """The entries of ``text``, each as (entry, channel, ``"@"`` or ``""``, target); a
    :class:`ConfigError` naming ``variable`` for none at all or an unknown channel."""
    entries: list[tuple[str, str, str, str]] = []
    for item in text.split(","):
        entry = item.strip()
        if not entry:
            continue
        channel, at, target = (part.strip() for part in entry.partition("@"))
        if channel not in CHANNEL_NAMES:
            raise ConfigError(
                variable,
                f"unknown channel {channel!r} in {entry!r}; choose from {', '.join(CHANNEL_NAMES)}",
            )
        entries.append((entry, channel, at, target))
    if not entries:
        raise ConfigError(variable, f"names no channel; choose from {', '.join(CHANNEL_NAMES)}")
    return entries


def parse_channels(
    text: str, streams: Sequence[tuple[str, str]], variable: str = "CHANNELS"
) -> Mapping[tuple[str, str], tuple[str, ...]]:
    """Per ``(exchange, symbol)`` of ``streams``, its channels in :data:`CHANNEL_NAMES` order.

    Raises :class:`ConfigError` naming ``variable`` for an unknown channel, an entry naming an
    exchange or stream not in ``streams``, and a stream left with no channel."""
    chosen: dict[tuple[str, str], set[str]] = {stream: set() for stream in streams}
    exchanges = {exchange for exchange, _ in streams}
    for entry, channel, at, target in _entries(text, variable):
        if not at:
            matching = list(chosen)
        elif ":" in target:
            exchange, _, symbol = target.partition(":")
            key = (exchange.strip().lower(), symbol.strip())
            if key not in chosen:
                raise ConfigError(variable, f"{entry!r} names {target!r}, which is not in STREAMS")
            matching = [key]
        else:
            if target.lower() not in exchanges:
                raise ConfigError(
                    variable, f"{entry!r} names exchange {target!r}, which no STREAMS entry uses"
                )
            matching = [key for key in chosen if key[0] == target.lower()]
        for key in matching:
            chosen[key].add(channel)
    for (exchange, symbol), channels in chosen.items():
        if not channels:
            raise ConfigError(
                variable,
                f"gives stream {exchange}:{symbol} no channel (add e.g. "
                f"'trades@{exchange}:{symbol}')",
            )
    return {
        key: tuple(name for name in CHANNEL_NAMES if name in channels)
        for key, channels in chosen.items()
    }


def replay_channels(text: str, variable: str = "CHANNELS") -> Mapping[str | None, tuple[str, ...]]:
    """``CHANNELS`` for a replay, which has no ``STREAMS``: per exchange named by an entry
    (``book@okx``), and under None for every other exchange, the channels replayed. An entry
    for one stream (``book@binance:BTCUSDT``) is a :class:`ConfigError`: a replay chooses
    channels per exchange."""
    chosen: dict[str | None, set[str]] = {None: set()}
    for entry, channel, at, target in _entries(text, variable):
        if at and ":" in target:
            raise ConfigError(
                variable,
                f"{entry!r}: a replay chooses channels per exchange (use {channel}@"
                f"{target.partition(':')[0]})",
            )
        if at:
            chosen.setdefault(target.lower(), set()).add(channel)
        else:
            for channels in chosen.values():
                channels.add(channel)
    everyone = chosen[None]
    return {
        key: tuple(name for name in CHANNEL_NAMES if name in channels | everyone)
        for key, channels in chosen.items()
    }
