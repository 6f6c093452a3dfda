"""What each configured stream of a session did: the manifest's ``streams`` figures.

A :class:`StreamTally` belongs to one :class:`~connectors.session.WebSocketSession` and
follows its connections: when one opened, when its subscription became live, when it ended and
why, and the trades each of its symbols delivered (counted per batch, after duplicates are
dropped, so a record counted here is a record handed to the sink).

A connection counts as *subscribed* from the first sign that the exchange serves its
subscription: the exchange's acknowledgement of it, or a trade (a heartbeat or a pong only
proves the connection is alive); for an exchange subscribed by its URL alone (no subscribe
message), from the moment it opened. Per connection: every symbol of it is subscribed together
(a symbol the exchange refuses ends the run as a rejected subscription). A stream that was
never subscribed during the whole run although it had its chance is a failed run (the runner's
decision); one that was subscribed and saw no trade is a warning.

Counting costs one C-level pass per batch (``Counter``/``dict`` over ``map``), never a Python
loop per trade.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from connectors.symbols import canonical_symbol
from engine.records import SymbolBatch, Trade

_symbol_of = attrgetter("symbol")
_ts_event_of = attrgetter("ts_event")


@dataclass(slots=True)
class SymbolTally:
    """Trades of one symbol handed to the run's queue (duplicates already dropped): how many,
    and the first and last ``ts_event`` (µs)."""

    records: int = 0
    first_ts_event: int | None = None
    last_ts_event: int | None = None


@dataclass(slots=True)
class StreamTally:
    """One session's connection history and its symbols' trade counts.

    ``symbols`` are the configured (exchange-spelled) symbols; figures are reported under
    ``exchange:SYMBOL:channel`` with that spelling. Times are the session clock's monotonic
    seconds."""

    exchange: str
    symbols: Sequence[str]
    channel: str = "trades"
    reconnects: int = 0
    last_error: str | None = None
    ever_subscribed: bool = False
    connected_seconds: float = 0.0
    subscribed_seconds: float = 0.0
    first_attempt_at: float | None = None
    """When the session first tried to connect (None: the run stopped before it tried)."""
    _connected_at: float | None = None
    _subscribed_at: float | None = None
    _by_canonical: dict[str, SymbolTally] = field(default_factory=dict)
    _per_symbol: list[SymbolTally] = field(default_factory=list)
    """The tally of each configured symbol, in :attr:`symbols` order (two spellings of one
    canonical symbol share theirs)."""

    def __post_init__(self) -> None:
        for symbol in self.symbols:
            try:
                canonical = canonical_symbol(symbol, self.exchange)
            except ValueError:
                canonical = symbol
            self._per_symbol.append(self._by_canonical.setdefault(canonical, SymbolTally()))

    def configured(self, raw_symbol: str) -> str:
        """The configured spelling of the symbol an exchange spells ``raw_symbol`` (a book
        feed's key: ``BTCUSDT`` for ``btcusdt``, ``BTCUSD`` for Bitstamp's ``btcusd``), so that
        its manifest entries name the stream as :attr:`symbols` does; ``raw_symbol`` itself when
        no configured symbol has its canonical form."""
        try:
            canonical = canonical_symbol(raw_symbol, self.exchange)
        except ValueError:
            return raw_symbol
        for symbol in self.symbols:
            try:
                if canonical_symbol(symbol, self.exchange) == canonical:
                    return symbol
            except ValueError:
                continue
        return raw_symbol

    def stream_name(self, symbol: str) -> str:
        """A configured symbol's stream, as the manifest names it: ``exchange:SYMBOL:channel``."""
        return f"{self.exchange}:{symbol}:{self.channel}"

    def attempting(self, now: float) -> None:
        """A connection attempt begins."""
        if self.first_attempt_at is None:
            self.first_attempt_at = now

    def failed_to_subscribe(self, now: float, patience: float) -> bool:
        """Whether the stream was never subscribed although it had its chance: an attempt
        failed (an error is recorded), or it kept trying for ``patience`` seconds (an open
        timeout's worth: a connect that hangs until the stop). A run stopped before its first
        attempt, or moments after it, is not the exchange's failure."""
        if self.ever_subscribed or self.first_attempt_at is None:
            return False
        return self.last_error is not None or now - self.first_attempt_at >= patience

    def connected(self, now: float) -> None:
        """A connection opened (not yet subscribed: see :meth:`subscribed`)."""
        self._connected_at = now

    def subscribed(self, now: float) -> None:
        """The exchange serves the open connection (its ack, or a trade). Idempotent."""
        if self._subscribed_at is None and self._connected_at is not None:
            self._subscribed_at = now
            self.ever_subscribed = True

    @property
    def is_subscribed(self) -> bool:
        return self._subscribed_at is not None

    def disconnected(self, now: float) -> None:
        """The connection ended: its time is added up."""
        if self._connected_at is not None:
            self.connected_seconds += max(now - self._connected_at, 0.0)
        if self._subscribed_at is not None:
            self.subscribed_seconds += max(now - self._subscribed_at, 0.0)
        self._connected_at = self._subscribed_at = None

    def error(self, message: str) -> None:
        """The last connection or subscription error (kept for the manifest)."""
        self.last_error = message[:300]

    def count(self, trades: Sequence[Trade]) -> None:
        """Add a batch of trades (arrival order) to their symbols' tallies."""
        if not trades:
            return
        tallies = self._by_canonical
        only = trades[0].symbol
        if type(trades) is SymbolBatch or (
            trades[-1].symbol == only
            and (len(tallies) == 1 or all(map(only.__eq__, map(_symbol_of, trades))))
        ):  # one symbol's batch: one step
            found = tallies.get(only)
            if found is not None:
                self._add(found, len(trades), trades[0].ts_event, trades[-1].ts_event)
                return
        symbols = list(map(_symbol_of, trades))
        stamps = list(map(_ts_event_of, trades))
        last = dict(zip(symbols, stamps, strict=True))
        first = dict(zip(reversed(symbols), reversed(stamps), strict=True))
        for symbol, count in Counter(symbols).items():
            found = tallies.get(symbol)
            if found is not None:
                self._add(found, count, first[symbol], last[symbol])

    @staticmethod
    def _add(tally: SymbolTally, count: int, first: int, last: int) -> None:
        tally.records += count
        if tally.first_ts_event is None:
            tally.first_ts_event = first
        tally.last_ts_event = last

    def figures(self, now: float) -> dict[str, dict[str, Any]]:
        """The manifest's ``streams`` entries of this session's symbols, as of ``now`` (an
        open connection's time counts up to ``now``)."""
        connected = self.connected_seconds
        subscribed = self.subscribed_seconds
        if self._connected_at is not None:
            connected += max(now - self._connected_at, 0.0)
        if self._subscribed_at is not None:
            subscribed += max(now - self._subscribed_at, 0.0)
        figures: dict[str, dict[str, Any]] = {}
        for symbol, tally in zip(self.symbols, self._per_symbol, strict=True):
            figures[self.stream_name(symbol)] = {
                "records": tally.records,
                "subscribed_seconds": round(subscribed, 3),
                "connected_seconds": round(connected, 3),
                "reconnects": self.reconnects,
                "first_ts_event": tally.first_ts_event,
                "last_ts_event": tally.last_ts_event,
                "last_error": self.last_error,
            }
        return figures
