"""A seeded synthetic market for the fake exchange (docs: testing.md#the-fake-exchange).

Per symbol: trade ids rise by exactly one from ``first_id``; the price is a random walk on the
symbol's tick size, rendered as exact decimal text with Binance's 8 decimals
(``"27123.45000000"``); sizes are random multiples of the lot size; the taker side is random.
Everything comes from one ``random.Random(seed)``, so a seed reproduces the same trades.

Two ways to produce:

- timed (``rate`` trades/s in total across the symbols): :meth:`Market.advance` returns the trades
  that became due since the last call, by the injected clock. The market keeps producing whether
  or not anyone listens, which is how a disconnect turns into a real gap in trade ids.
- on demand (``rate=None``, "max"): :meth:`Market.take` makes ``n`` trades right now for the given
  symbols, as fast as the consumer asks. The fast path (:mod:`connectors.fake.fast`) takes
  :meth:`Market.take_run` instead: the same ids in the same order, as a run over each symbol's
  :meth:`Market.ring` of values made once (no trade is made until a reader asks).

``max_trades`` (optional) caps the total ever produced.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from connectors.fake.fast import Ring, Run
from connectors.symbols import canonical_symbol
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import ConfigError
from engine.records import BUY, SELL, Trade

RENDER_DECIMALS: Final = 8
"""Binance renders every price and quantity with 8 decimals."""
RING_SIZE: Final = 64
"""Values in a symbol's :meth:`Market.ring` (the fast path's prices, sizes and sides)."""


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """How one symbol trades: start price in ticks, tick and lot decimals, typical lots."""

    start_ticks: int
    price_decimals: int
    size_decimals: int
    max_lots: int


KNOWN_SPECS: Final[dict[str, SymbolSpec]] = {
    "BTCUSDT": SymbolSpec(2_712_345, 2, 5, 50_000),
    "ETHUSDT": SymbolSpec(165_012, 2, 4, 100_000),
    "BNBUSDT": SymbolSpec(2_153, 1, 3, 50_000),
    "BNBUSD": SymbolSpec(21_530, 2, 3, 50_000),
    "SOLUSDT": SymbolSpec(2_137, 2, 2, 100_000),
    "XRPUSDT": SymbolSpec(5_123, 4, 0, 20_000),
    "DOGEUSDT": SymbolSpec(6_123, 5, 0, 200_000),
    "ETHBTC": SymbolSpec(6_123, 5, 4, 50_000),
    "BNBBTC": SymbolSpec(7_812, 6, 3, 50_000),
    "BTCUSD": SymbolSpec(2_712_345, 2, 8, 5_000_000),
    "ETHUSD": SymbolSpec(165_012, 2, 8, 50_000_000),
}
_SEPARATORS: Final = re.compile(r"[-/]")


def spec_for(raw_symbol: str) -> SymbolSpec:
    """The known spec of a symbol, or a plausible one derived from its name (stable per name).

    Symbols with a separator (Coinbase ``BTC-USD``, Kraken ``BTC/USD``) share the spec of their
    run-together spelling (``BTCUSD``)."""
    known = KNOWN_SPECS.get(raw_symbol) or KNOWN_SPECS.get(_SEPARATORS.sub("", raw_symbol))
    if known is not None:
        return known
    rng = random.Random(f"spec:{raw_symbol}")
    price_decimals = rng.randint(2, 6)
    return SymbolSpec(
        start_ticks=rng.randint(10, 99_999) * 10 ** (price_decimals - 2),
        price_decimals=price_decimals,
        size_decimals=rng.randint(0, 4),
        max_lots=rng.choice((1_000, 10_000, 100_000)),
    )


class _Book:
    """The generating state of one symbol."""

    __slots__ = (
        "next_id",
        "price_div",
        "price_pad",
        "raw",
        "size_div",
        "size_pad",
        "spec",
        "symbol",
        "ticks",
    )

    def __init__(self, raw: str, exchange: str, first_id: int) -> None:
        self.raw = raw
        self.symbol = canonical_symbol(raw, exchange)
        self.spec = spec_for(raw)
        self.next_id = first_id
        self.ticks = self.spec.start_ticks
        self.price_div = 10**self.spec.price_decimals
        self.price_pad = "0" * (RENDER_DECIMALS - self.spec.price_decimals)
        self.size_div = 10**self.spec.size_decimals
        self.size_pad = "0" * (RENDER_DECIMALS - self.spec.size_decimals)


def _decimal(units: int, div: int, digits: int, pad: str) -> str:
    if digits == 0:
        return f"{units}.{pad}"
    return f"{units // div}.{units % div:0{digits}d}{pad}"


class Market:
    """Synthetic trades for ``symbols`` (raw exchange spelling, e.g. ``BTCUSDT``).

    ``rate`` is trades per second in total (timed mode) or None (on-demand mode). ``clock``
    supplies trade times (wall) and, in timed mode, the pace (monotonic).
    """

    MAX_BATCH: Final = 100_000
    """At most this many trades per :meth:`advance`; a longer pause skips the excess."""

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        rate: float | None,
        seed: int = 1,
        first_id: int = 1,
        exchange: str = "binance",
        clock: Clock = SYSTEM_CLOCK,
        max_trades: int | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("the market needs at least one symbol")
        if rate is not None and not rate > 0:
            raise ValueError("rate must be positive (or None for on demand)")
        self.exchange = exchange
        self.rate = rate
        self._clock = clock
        self._rng = random.Random(seed)
        self._books = {raw: _Book(raw, exchange, first_id) for raw in dict.fromkeys(symbols)}
        self._order = list(self._books.values())
        self._max_trades = max_trades
        self._seed = seed
        self._rings: dict[str, Ring] = {}
        self.produced = 0
        self.skipped = 0
        self._start = clock.monotonic()
        self._last_wall_ms = clock.time_ns() // 1_000_000
        self._rr = 0

    @property
    def symbols(self) -> list[str]:
        """The raw symbols of this market, in the order given."""
        return list(self._books)

    @property
    def exhausted(self) -> bool:
        """True once ``max_trades`` trades were produced."""
        return self._max_trades is not None and self.produced >= self._max_trades

    def next_id(self, raw_symbol: str) -> int:
        """The id the next trade of ``raw_symbol`` will get."""
        return self._books[raw_symbol].next_id

    def restart_ids(self) -> None:
        """Every symbol's next trade id is 1 again (the ``restart-ids`` fault: an exchange that
        restarted its sequence)."""
        for book in self._order:
            book.next_id = 1

    def _room(self, wanted: int) -> int:
        if self._max_trades is None:
            return wanted
        return max(0, min(wanted, self._max_trades - self.produced))

    @staticmethod
    def _step(book: _Book, rnd: Callable[[], float]) -> tuple[str, str, str]:
        """The next (price, size, side) of ``book``'s random walk (moves its price)."""
        r = rnd()
        ticks = book.ticks + (1 if r < 0.3 else -1 if r < 0.6 else 0)
        book.ticks = ticks = ticks if ticks > 0 else 1
        spec = book.spec
        lots = 1 + int(rnd() * rnd() * spec.max_lots)
        return (
            _decimal(ticks, book.price_div, spec.price_decimals, book.price_pad),
            _decimal(lots, book.size_div, spec.size_decimals, book.size_pad),
            SELL if rnd() < 0.5 else BUY,
        )

    def _make(self, book: _Book, ts_ms: int) -> Trade:
        price, size, side = self._step(book, self._rng.random)
        tid = book.next_id
        book.next_id = tid + 1
        return Trade(
            self.exchange, book.symbol, book.raw, str(tid), price, size, side, ts_ms * 1000, 0
        )

    def ring(self, raw_symbol: str) -> Ring:
        """``raw_symbol``'s ring of :data:`RING_SIZE` values for the fast path: a random walk
        from the symbol's start price, made on first use from the seed and the symbol alone (not
        from the market's own random sequence, which it leaves untouched)."""
        ring = self._rings.get(raw_symbol)
        if ring is None:
            book = self._books[raw_symbol]
            walker = _Book(book.raw, self.exchange, 1)
            rnd = random.Random(f"{self._seed}:ring:{raw_symbol}").random
            values = tuple(self._step(walker, rnd) for _ in range(RING_SIZE))
            ring = self._rings[raw_symbol] = Ring(self.exchange, book.symbol, book.raw, values)
        return ring

    def advance(self) -> list[Trade]:
        """Timed mode: the trades due since the last call (random symbols, times spread over
        the interval by the wall clock). Empty in on-demand mode."""
        if self.rate is None:
            return []
        due = int((self._clock.monotonic() - self._start) * self.rate) - self.produced
        due -= self.skipped
        if due <= 0:
            return []
        if due > self.MAX_BATCH:
            self.skipped += due - self.MAX_BATCH
            due = self.MAX_BATCH
        count = self._room(due)
        now_ms = self._clock.time_ns() // 1_000_000
        first_ms = min(self._last_wall_ms, now_ms)
        self._last_wall_ms = now_ms
        span = now_ms - first_ms
        books, choose = self._order, self._rng.randrange
        out = [
            self._make(books[choose(len(books))], first_ms + span * (i + 1) // count)
            for i in range(count)
        ]
        self.produced += count
        if count < due:
            self.skipped += due - count  # exhausted: keep the pace arithmetic settled
        return out

    def take(self, raw_symbols: Sequence[str], n: int) -> list[Trade]:
        """On-demand mode: up to ``n`` trades now, round-robin over ``raw_symbols`` (which must
        belong to this market). Fewer (or none) once ``max_trades`` is reached."""
        count = self._room(n)
        if count <= 0 or not raw_symbols:
            return []
        books = [self._books[raw] for raw in raw_symbols]
        ts_ms = self._clock.time_ns() // 1_000_000
        start, width = self._rr, len(books)
        out = [self._make(books[(start + i) % width], ts_ms) for i in range(count)]
        self._rr = (start + count) % width
        self.produced += count
        return out

    def take_run(self, raw_symbols: Sequence[str], n: int, ts_ms: int) -> Run | None:
        """On-demand mode, fast path: the next up to ``n`` trades as :meth:`take` would number
        and order them (round-robin over ``raw_symbols``, the same ids, the same turn kept for
        the next call), at event time ``ts_ms``, as a :class:`~connectors.fake.fast.Run` over
        the symbols' rings; None once ``max_trades`` is reached (or without symbols)."""
        count = self._room(n)
        if count <= 0 or not raw_symbols:
            return None
        width, start = len(raw_symbols), self._rr
        order = [raw_symbols[(start + j) % width] for j in range(min(width, count))]
        whole, extra = divmod(count, width)
        firsts = []
        for j, raw in enumerate(order):
            book = self._books[raw]
            firsts.append(book.next_id)
            book.next_id += whole + (1 if j < extra else 0)
        self._rr = (start + count) % width
        self.produced += count
        return Run(tuple(self.ring(raw) for raw in order), tuple(firsts), count, ts_ms)


def rate_from_text(text: str) -> float | None:
    """A market's ``rate`` from the ``--rate`` flag's text: trades per second (a positive,
    finite number), or None for ``max`` (any case). :class:`ConfigError` naming ``--rate``
    otherwise."""
    if text.lower() == "max":
        return None
    try:
        rate = float(text)
    except ValueError:
        raise ConfigError("--rate", f"{text!r} is not a number or 'max'") from None
    if not 0 < rate < float("inf"):
        raise ConfigError("--rate", "must be positive")
    return rate
