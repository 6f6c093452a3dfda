"""A recorded feed for the fake exchange (``feedvault fake-exchange --recording FILE``).

The fake server sends each subscribed connection the recording's received frames (``dir="in"``)
of its exchange, unchanged and in file order, from the start of the recording: at the recorded
pace (``speed=1``), ``speed`` times faster, or as fast as the socket takes them (``speed=None``);
once, or over and over (``loop``). This module holds the pure parts: which frames, when each is
due, which trades a frame carries.

Contracts:

- :meth:`RecordedFeed.frames` yields ``(ts, text)`` of one pass, streaming (bounded memory);
  frames of other exchanges and sent frames (``dir="out"``, connects) are skipped.
- :class:`Pace` maps a frame's recorded time to the monotonic time it is due: the first frame of a
  pass is due when the pass starts, the others ``(ts - first_ts) / speed`` later (never earlier
  than a previous frame: a recording whose clock steps back does not make frames overtake).
- :meth:`RecordedFeed.trades_in` parses a frame with the exchange's own client protocol, so the
  ledger records exactly the trades a client will find in it (none for a frame that is not a
  trade or does not parse).
- :meth:`RecordedFeed.scan` reads the whole recording once and raises
  :class:`~engine.errors.RecordingError` (``FILE:LINE``) on bad input, so a server can refuse a
  bad file before listening.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

from connectors.base import ExchangeProtocol
from connectors.recording import DIR_IN, iter_records
from connectors.registry import get_protocol
from engine.errors import MalformedFrame
from engine.records import Trade

_NS: float = 1e9


@dataclass(frozen=True, slots=True)
class Scan:
    """What one pass through a recording sends."""

    frames: int
    trades: int
    symbols: frozenset[str]
    """Raw symbols of the trades (a server must accept subscriptions to them)."""


@dataclass(frozen=True)
class RecordedFeed:
    """The recording a fake server plays: ``paths`` in order, frames of ``exchange``.

    ``speed``: 1.0 is the recorded pace, 10.0 ten times faster, None as fast as possible;
    ``loop``: start again from the first frame after the last one. Raises :class:`ValueError`
    for a speed that is not a positive finite number, or no paths.
    """

    paths: tuple[Path, ...]
    exchange: str
    speed: float | None = 1.0
    loop: bool = False

    def __post_init__(self) -> None:
        if not self.paths:
            raise ValueError("a recorded feed needs at least one file")
        if self.speed is not None and not 0 < self.speed < float("inf"):
            raise ValueError(f"speed must be a positive number, not {self.speed!r}")

    @classmethod
    def of(
        cls,
        paths: Sequence[str | Path],
        exchange: str,
        *,
        speed: float | None = 1.0,
        loop: bool = False,
    ) -> RecordedFeed:
        """Build a feed from path names."""
        return cls(tuple(Path(p) for p in paths), exchange, speed, loop)

    def frames(self) -> Generator[tuple[int, str], None, None]:
        """``(ts ns, text)`` of every received frame of :attr:`exchange`, one pass, in order.
        Raises :class:`~engine.errors.RecordingError` on bad input."""
        exchange = self.exchange
        for record in iter_records(self.paths):
            if record.dir == DIR_IN and record.exchange == exchange:
                yield record.ts, record.frame

    def scan(self) -> Scan:
        """Read every file once: frames and trades per pass, and the raw symbols traded. Raises
        :class:`~engine.errors.RecordingError` on the first bad line."""
        protocol, trades_in = self.protocol(), self.trades_in
        frames = trades = 0
        symbols: set[str] = set()
        for ts, text in self.frames():
            frames += 1
            for trade in trades_in(protocol, text, ts):
                trades += 1
                symbols.add(trade.raw_symbol)
        return Scan(frames, trades, frozenset(symbols))

    def protocol(self) -> ExchangeProtocol:
        """A fresh client protocol of :attr:`exchange` (one per connection: protocols keep
        per-connection state)."""
        return get_protocol(self.exchange)

    @staticmethod
    def trades_in(protocol: ExchangeProtocol, text: str, ts: int) -> tuple[Trade, ...]:
        """The trades ``text`` carries, as ``protocol`` parses them (empty when none)."""
        try:
            result = protocol.parse(text, ts)
        except MalformedFrame:
            return ()
        return tuple(result) if isinstance(result, (tuple, list)) else ()


class Pace:
    """When each frame of one pass is due, in the server clock's monotonic seconds."""

    def __init__(self, start: float, speed: float | None) -> None:
        self._start = start
        self._speed = speed
        self._first: int | None = None
        self._last_due = start

    def due(self, ts: int) -> float:
        """The monotonic time the frame recorded at ``ts`` (ns) is due; ``-inf`` at max speed."""
        if self._speed is None:
            return float("-inf")
        if self._first is None:
            self._first = ts
        due = self._start + (ts - self._first) / _NS / self._speed
        if due < self._last_due:
            due = self._last_due
        self._last_due = due
        return due
