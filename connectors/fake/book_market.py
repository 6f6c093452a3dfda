"""The fake exchange's order books: one seeded, evolving level-2 book per symbol
(docs: testing.md#order-books-on-the-fake-exchange).

Per symbol the market holds bids and asks on the symbol's tick grid (integer ticks and lots,
rendered as exact decimal text the way the exchange writes them: Binance with 8 decimals,
the others at the symbol's tick and lot decimals). Each step is one exchange message's worth of
level changes (1 to :data:`MAX_CHANGES` distinct prices: a size changed, a level added, a level
removed; a side never emptied, the book never crossed), with a monotonically rising *update
id*: a message spans ids ``first_id..update_id``, one id per level change (Binance's
``U``..``u``; OKX's ``seqId``, whose ``prevSeqId`` is the previous message's ``update_id``), and
a *number* that rises by one per message (Bybit's ``u``; back to 1 after a restart).
Everything comes from one ``random.Random`` seeded from the fake's seed, so a seed reproduces
the same messages.

Timed, like the trade market (:mod:`connectors.fake.market`): :meth:`BookMarket.advance` returns
the messages due since the last call by the injected clock, ``rate`` messages per second per
symbol, whether or not anyone listens (a disconnect or a stall is a real gap). With ``rate``
None the market is on demand instead: :meth:`BookMarket.take` makes the next messages when a
reader asks (the fake's ``--book-rate max``). A few warm-up messages are made at construction,
so a book has a history from the start.

*Cycles*: on demand, :meth:`BookMarket.start_cycle` turns each symbol's messages into a
:class:`BookCycle` (a run of steps, then their inverses: the book returns to where it started
each turn), taken as :class:`CycleRun` s by :meth:`BookMarket.take_runs` (the fake's fast path
for ``--book-rate max``: frames from templates, the ledger recording runs).

*Views*: a channel subscribed at a depth (Kraken's ``depth``, Bybit's ``orderbook.1``) sees the
best ``depth`` levels of each side. :meth:`BookMarket.view` gives the view of a (symbol, depth),
shared by every connection that subscribes to it and kept from its creation on: its messages
carry the changes of its top levels (a level that enters the top because a better one left is
sent with its size; one pushed out by a better level is sent as a removal unless the view
leaves that to the client's truncation, as Kraken does), its own ``number`` (Bybit counts per
topic) and, when asked, the best levels after the message (Kraken's checksum covers the top 10).
A depth of None, or at least :data:`MAX_LEVELS`, is the market itself.

A *restart* (:meth:`BookMarket.restart`, the ``book-restart`` fault) changes the book without
a diff and emits a snapshot message with number 1 on every view: Bybit's ``u=1``.

Every message the market makes is handed to ``record`` (the ledger's history, so a test can
rebuild the book as of any update id); the first one, a snapshot, is the book the market
starts from.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from connectors.fake.market import spec_for
from connectors.symbols import canonical_symbol
from engine.clock import SYSTEM_CLOCK, Clock

MAX_LEVELS: Final = 50
"""Levels per side at most: adding beyond it removes the worst level in the same message."""
MIN_LEVELS: Final = 5
"""Levels per side at least: a removal that would go below it changes the size instead."""
BAND: Final = 60
"""Ticks from the best price within which a step picks its prices (skewed to the top)."""
MAX_CHANGES: Final = 20
"""Prices picked by one message at most (uniformly 1 to this many; a price picked twice, or
off the grid, changes once or not at all): about 10 level changes a message on average, as a
busy symbol's 100 ms diff carries."""
SIZES: Final = 1000
"""Distinct sizes a level takes: multiples of a unit of the symbol's lots (their text cached)."""
WARM_UP: Final = 20
"""Messages made per symbol at construction (a history before the first connection)."""
FIRST_UPDATE_ID: Final = 1_000_000
"""The update id of the book the market starts from."""
MAX_BATCH: Final = 1000
"""Messages per symbol per :meth:`BookMarket.advance` at most; a longer pause (or a rate the
machine cannot make) skips the rest, so one tick never holds the event loop for long."""
DEFAULT_RATE: Final = 10.0
"""Messages per second per symbol by default (Binance's ``@depth@100ms`` pace)."""

Pair = tuple[str, str]
"""A level as (price, size) text."""
ZERO_SIZES: Final = frozenset({"0", "0.00000000"})
"""The texts of a zero size (a removal) the market writes."""


@dataclass(slots=True)
class BookMessage:
    """One message of a symbol's book, as the market (or a view of it) made it.

    ``bids``/``asks`` are (price, size) text: for an update, the levels it sets (size zero
    removes); for a snapshot, the whole book (of the view's depth), best first. ``first_id``
    and ``update_id`` span the message's update ids (a snapshot: both the book's id);
    ``prev_id`` is the update id of the view's previous message (-1 for a snapshot: OKX's
    ``prevSeqId``); ``number`` counts the view's messages (Bybit's ``u``); ``ts_us`` is the
    event time in µs, strictly rising per symbol (Bitstamp's ``microtimestamp``). ``top``: the
    best levels of each side after the message, for views that keep them (Kraken's checksum),
    else None."""

    raw_symbol: str
    symbol: str
    first_id: int
    update_id: int
    prev_id: int
    number: int
    ts_us: int
    snapshot: bool
    bids: tuple[Pair, ...]
    asks: tuple[Pair, ...]
    top: tuple[tuple[Pair, ...], tuple[Pair, ...]] | None = None

    @property
    def changes(self) -> int:
        """Level changes (rows) in the message."""
        return len(self.bids) + len(self.asks)


ViewKey = tuple[str, int | None]
"""(raw symbol, depth or None for the whole book)."""

CYCLE_STEPS: Final = 256
"""Messages of a cycle's forward run (:meth:`BookMarket.start_cycle`); the cycle is twice as
long (the run, then its inverses)."""


class BookCycle:
    """One symbol's messages on demand as a cycle (the fake's fast path for ``--book-rate
    max``; docs: testing.md#order-books-on-the-fake-exchange): a run of :data:`CYCLE_STEPS`
    messages made by the market's own step from the book ``S0`` it started from, followed by
    their inverses in reverse order (each sets the levels the message changed back to what
    they were), so the book is ``S0`` again after each turn of :attr:`length` messages.

    Message ``n`` (0-based, counted from the cycle's start over all turns) is the cycle's
    message ``n % length``: its level changes are fixed (rendered once, :attr:`pairs`), its
    update ids continue the market's (``base_id`` + :attr:`total` per turn + the changes
    before it in the turn), so a reader sees one gap-free, uncrossed book. The book after
    ``n`` messages is :meth:`state` (rebuilt from ``S0`` when asked)."""

    __slots__ = (
        "_sym",
        "asks",
        "base_id",
        "base_number",
        "bids",
        "changes",
        "length",
        "pairs",
        "prefix",
        "raw_symbol",
        "symbol",
        "total",
    )

    def __init__(
        self, sym: _Symbol, messages: Sequence[tuple[dict[int, int], dict[int, int]]]
    ) -> None:
        self._sym = sym
        self.raw_symbol, self.symbol = sym.raw, sym.symbol
        self.bids, self.asks = dict(sym.bids), dict(sym.asks)
        """``S0``: the book (ticks -> lots) at the start of each turn."""
        self.base_id, self.base_number = sym.update_id, sym.number
        self.changes = tuple(messages)
        """Each message's changes (ticks -> lots, 0 removes) per side."""
        self.pairs = tuple((sym.render(b), sym.render(a)) for b, a in messages)
        """Each message's changes as (price, size) text per side."""
        self.length = len(messages)
        prefix = [0]
        for b, a in messages:
            prefix.append(prefix[-1] + len(b) + len(a))
        self.prefix = tuple(prefix)
        """Level changes of the turn before each message (and, last, of the whole turn)."""
        self.total = prefix[-1]
        """Level changes in one turn."""

    def ids(self, n: int) -> tuple[int, int]:
        """(first, last) update id of message ``n``."""
        turn, pos = divmod(n, self.length)
        start = self.base_id + turn * self.total
        return start + self.prefix[pos] + 1, start + self.prefix[pos + 1]

    def applied(self, update_id: int) -> int:
        """How many messages have an update id up to ``update_id`` (at least ``base_id``)."""
        turn, rem = divmod(update_id - self.base_id, self.total)
        return turn * self.length + bisect.bisect_right(self.prefix, rem) - 1

    def state(self, n: int) -> tuple[dict[int, int], dict[int, int]]:
        """The book (ticks -> lots per side) after messages ``0 .. n - 1``."""
        bids, asks = dict(self.bids), dict(self.asks)
        for bid_changes, ask_changes in self.changes[: n % self.length]:
            for levels, changes in ((bids, bid_changes), (asks, ask_changes)):
                for k, v in changes.items():
                    if v:
                        levels[k] = v
                    else:
                        levels.pop(k, None)
        return bids, asks

    def levels(self, n: int) -> tuple[dict[str, str], dict[str, str]]:
        """:meth:`state` as price text -> size text per side, best first."""
        price, size = self._sym.price, self._sym.size
        bids, asks = self.state(n)
        return (
            {price(k): size(bids[k]) for k in sorted(bids, reverse=True)},
            {price(k): size(asks[k]) for k in sorted(asks)},
        )

    def message(self, n: int, ts_us: int) -> BookMessage:
        """Message ``n`` at event time ``ts_us``."""
        first, last = self.ids(n)
        bids, asks = self.pairs[n % self.length]
        number = self.base_number + n + 1
        return BookMessage(
            self.raw_symbol, self.symbol, first, last, first - 1, number, ts_us, False, bids, asks
        )


@dataclass(frozen=True, slots=True)
class CycleRun:
    """``count`` consecutive messages of ``cycle`` from message ``first``, made together:
    message ``first + i`` has event time ``ts_us + i``."""

    cycle: BookCycle
    first: int
    count: int
    ts_us: int

    @property
    def changes(self) -> int:
        """Level changes in the run."""
        if self.count <= 0:
            return 0
        return self.cycle.ids(self.first + self.count - 1)[1] - self.cycle.ids(self.first)[0] + 1

    def head(self, count: int) -> CycleRun:
        """The run's first ``count`` messages."""
        return CycleRun(self.cycle, self.first, count, self.ts_us)

    def messages(self) -> Iterator[BookMessage]:
        """The run's messages, in order."""
        message, first, ts_us = self.cycle.message, self.first, self.ts_us
        for i in range(self.count):
            yield message(first + i, ts_us + i)


def _text_style(exchange: str, price_decimals: int, size_decimals: int) -> tuple[int, int, str]:
    """(price decimals, size decimals, the text of a zero size) as ``exchange`` writes them."""
    if exchange in ("binance", "binanceus"):
        return 8, 8, "0.00000000"
    if exchange in ("okx", "bybit"):
        return price_decimals, size_decimals, "0"
    return price_decimals, 8, "0.00000000"


class _Symbol:
    """The generating state of one symbol's book (integer ticks and lots)."""

    __slots__ = (
        "ask_best",
        "asks",
        "bid_best",
        "bids",
        "changed",
        "cycle",
        "cycle_made",
        "last_ts_us",
        "lot_unit",
        "number",
        "price_cache",
        "price_digits",
        "price_div",
        "price_pad",
        "raw",
        "size_cache",
        "size_digits",
        "size_div",
        "size_pad",
        "symbol",
        "update_id",
        "views",
        "zero",
    )

    def __init__(self, raw: str, exchange: str, rng: random.Random) -> None:
        self.raw = raw
        self.symbol = canonical_symbol(raw, exchange)
        spec = spec_for(raw)
        price_out, size_out, self.zero = _text_style(
            exchange, spec.price_decimals, spec.size_decimals
        )
        self.price_digits = spec.price_decimals
        self.price_div = 10**spec.price_decimals
        self.price_pad = "0" * (price_out - spec.price_decimals)
        self.size_digits = spec.size_decimals
        self.size_div = 10**spec.size_decimals
        self.size_pad = "0" * (size_out - spec.size_decimals)
        self.lot_unit = max(1, spec.max_lots // 10 // SIZES)
        self.size_cache: dict[int, str] = {}
        self.price_cache: dict[int, str] = {}
        self.update_id = FIRST_UPDATE_ID
        self.number = 1
        self.last_ts_us = 0
        self.views: dict[int, _View] = {}
        self.changed: tuple[dict[int, int], dict[int, int]] = ({}, {})
        """The last step's changes (ticks -> lots, 0 removes) per side: what a cycle keeps."""
        self.cycle: BookCycle | None = None
        self.cycle_made = 0
        """Messages made from :attr:`cycle` since it started."""
        mid = max(spec.start_ticks, 2 * BAND + 2)
        self.bid_best, self.ask_best = mid - 1, mid + 1
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        rnd = rng.random
        for k in range(BAND):
            if k == 0 or rnd() < 0.6:
                self.bids[mid - 1 - k] = self.lots(rnd)
            if k == 0 or rnd() < 0.6:
                self.asks[mid + 1 + k] = self.lots(rnd)

    def lots(self, rnd: Callable[[], float]) -> int:
        return (1 + int(rnd() * rnd() * SIZES)) * self.lot_unit

    def price(self, ticks: int) -> str:
        text = self.price_cache.get(ticks)
        if text is None:
            if len(self.price_cache) > 100_000:
                self.price_cache.clear()
            digits = self.price_digits
            if digits == 0:
                text = f"{ticks}" + (f".{self.price_pad}" if self.price_pad else "")
            else:
                div = self.price_div
                text = f"{ticks // div}.{ticks % div:0{digits}d}{self.price_pad}"
            self.price_cache[ticks] = text
        return text

    def size(self, lots: int) -> str:
        text = self.size_cache.get(lots)
        if text is None:
            text = self.size_cache[lots] = self._size(lots)
        return text

    def _size(self, lots: int) -> str:
        if lots == 0:
            return self.zero
        digits = self.size_digits
        if digits == 0:
            return f"{lots}" + (f".{self.size_pad}" if self.size_pad else "")
        div = self.size_div
        return f"{lots // div}.{lots % div:0{digits}d}{self.size_pad}"

    def render(self, changes: dict[int, int]) -> tuple[Pair, ...]:
        """``changes`` (ticks -> lots) as (price, size) text, in order."""
        prices, sizes = self.price_cache, self.size_cache
        price, size = self.price, self.size
        return tuple(
            (
                prices[k] if k in prices else price(k),
                sizes[v] if v in sizes else size(v),
            )
            for k, v in changes.items()
        )

    def pairs(self, levels: dict[int, int], keys: Sequence[int]) -> tuple[Pair, ...]:
        price, size = self.price, self.size
        return tuple((price(k), size(levels[k])) for k in keys)

    def sorted_side(self, bid: bool, depth: int | None = None) -> list[int]:
        keys = sorted(self.bids if bid else self.asks, reverse=bid)
        return keys if depth is None else keys[:depth]

    def snapshot(self, depth: int | None, number: int) -> BookMessage:
        """The book (best ``depth`` levels of each side) as a snapshot message."""
        if self.cycle is not None:  # the book is the cycle's state, not bids/asks
            bid_levels, ask_levels = self.cycle.state(self.cycle_made)
            bid_keys = sorted(bid_levels, reverse=True)[:depth]
            ask_keys = sorted(ask_levels)[:depth]
            bids, asks = self.pairs(bid_levels, bid_keys), self.pairs(ask_levels, ask_keys)
        else:
            bids = self.pairs(self.bids, self.sorted_side(True, depth))
            asks = self.pairs(self.asks, self.sorted_side(False, depth))
        uid = self.update_id
        return BookMessage(
            self.raw, self.symbol, uid, uid, -1, number, self.last_ts_us, True, bids, asks
        )


class _View:
    """The best ``depth`` levels of one symbol's book, followed message by message."""

    __slots__ = ("asks", "bids", "depth", "last_id", "number", "pushout", "top_levels")

    def __init__(self, sym: _Symbol, depth: int, pushout: bool, top_levels: int) -> None:
        self.depth = depth
        self.pushout = pushout
        self.top_levels = top_levels
        self.number = sym.number
        self.last_id = sym.update_id
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.reset(sym)

    def reset(self, sym: _Symbol) -> None:
        self.bids = {k: sym.bids[k] for k in sym.sorted_side(True, self.depth)}
        self.asks = {k: sym.asks[k] for k in sym.sorted_side(False, self.depth)}

    def _side(
        self, sym: _Symbol, bid: bool, changed: bool
    ) -> tuple[list[tuple[int, int]], list[int]]:
        """(changes, the new top keys best first) of one side."""
        levels = sym.bids if bid else sym.asks
        old = self.bids if bid else self.asks
        keys = sorted(levels, reverse=bid)[: self.depth]
        if not changed:
            return [], keys
        new = {k: levels[k] for k in keys}
        out = [(k, v) for k, v in new.items() if old.get(k) != v]
        for k in old:
            if k not in new and (self.pushout or k not in levels):
                out.append((k, 0))
        if bid:
            self.bids = new
        else:
            self.asks = new
        return out, keys

    def follow(self, sym: _Symbol, msg: BookMessage) -> BookMessage | None:
        """This view's message for the market's ``msg`` (None when its top did not change)."""
        bid_changes, bid_keys = self._side(sym, True, bool(msg.bids))
        ask_changes, ask_keys = self._side(sym, False, bool(msg.asks))
        if not bid_changes and not ask_changes:
            return None
        price, size = sym.price, sym.size
        top = None
        if self.top_levels:
            n = self.top_levels
            top = (
                sym.pairs(sym.bids, bid_keys[:n]),
                sym.pairs(sym.asks, ask_keys[:n]),
            )
        self.number += 1
        prev, self.last_id = self.last_id, msg.update_id
        return BookMessage(
            msg.raw_symbol,
            msg.symbol,
            msg.first_id,
            msg.update_id,
            prev,
            self.number,
            msg.ts_us,
            False,
            tuple((price(k), size(v)) for k, v in bid_changes),
            tuple((price(k), size(v)) for k, v in ask_changes),
            top,
        )

    def snapshot(self, sym: _Symbol) -> BookMessage:
        msg = sym.snapshot(self.depth, self.number)
        if self.top_levels:
            n = self.top_levels
            msg.top = (msg.bids[:n], msg.asks[:n])
        return msg


class BookMarket:
    """Seeded level-2 books for ``symbols`` (raw exchange spelling), ``rate`` messages per
    second per symbol by ``clock`` (None: on demand, :meth:`take`). ``exchange`` decides the
    canonical symbols and how prices and sizes are written. ``record`` receives every message
    the market makes (identity view), starting with each symbol's initial book as a
    snapshot."""

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        rate: float | None = DEFAULT_RATE,
        seed: int = 1,
        exchange: str = "binance",
        clock: Clock = SYSTEM_CLOCK,
        record: Callable[[BookMessage], None] | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("the book market needs at least one symbol")
        if rate is not None and not rate > 0:
            raise ValueError("the book rate must be positive")
        self.exchange = exchange
        self.rate = rate
        self._clock = clock
        self._rng = random.Random(f"{seed}:book")
        self._record = record
        self._symbols = {raw: _Symbol(raw, exchange, self._rng) for raw in dict.fromkeys(symbols)}
        self._out: dict[ViewKey, list[BookMessage]] = {}
        self._cycling = False
        self._record_run: Callable[[CycleRun], None] | None = None
        self.produced = 0
        """Messages made per symbol since the start (warm-up excluded)."""
        self.skipped = 0
        self.changes = 0
        """Level changes made in all (warm-up excluded)."""
        self._start = clock.monotonic()
        self._last_us = clock.time_ns() // 1000
        for sym in self._symbols.values():
            sym.last_ts_us = self._last_us - WARM_UP
            if record is not None:
                record(sym.snapshot(None, sym.number))
            for i in range(WARM_UP):
                self._emit(sym, self._step(sym, self._last_us - WARM_UP + i + 1))
        self._out.clear()

    @property
    def symbols(self) -> list[str]:
        """The raw symbols, in the order given."""
        return list(self._symbols)

    def update_id(self, raw_symbol: str) -> int:
        """The update id of ``raw_symbol``'s book now (its last message's)."""
        return self._symbols[raw_symbol].update_id

    def view(
        self,
        raw_symbol: str,
        depth: int | None = None,
        *,
        pushout: bool = True,
        top_levels: int = 0,
    ) -> ViewKey:
        """The key of ``raw_symbol``'s view at ``depth`` (created now if new: it follows the
        book from now on). ``pushout=False``: a level pushed out of the top by a better one is
        not sent as a removal (the client truncates, as on Kraken). ``top_levels``: messages
        carry that many best levels per side after them. KeyError for an unknown symbol."""
        sym = self._symbols[raw_symbol]
        if (depth is None or depth >= MAX_LEVELS) and not top_levels:
            return (raw_symbol, None)
        key = depth if depth is not None else MAX_LEVELS
        if self._cycling and key not in sym.views:
            raise ValueError("the book market is cycling: the whole book only")
        if key not in sym.views:
            sym.views[key] = _View(sym, key, pushout, top_levels)
        return (raw_symbol, key)

    def snapshot(self, key: ViewKey, limit: int | None = None) -> BookMessage:
        """The book of view ``key`` now as a snapshot message (at most ``limit`` levels per
        side): what a subscription or a REST request is answered with."""
        raw, depth = key
        sym = self._symbols[raw]
        if depth is None:
            return sym.snapshot(limit, sym.number)
        msg = sym.views[depth].snapshot(sym)
        if limit is not None:
            msg.bids, msg.asks = msg.bids[:limit], msg.asks[:limit]
        return msg

    def advance(self) -> dict[ViewKey, list[BookMessage]]:
        """The messages due since the last call, per view (in order per view), plus those of
        restarts since then (only those on demand: ``rate`` None)."""
        if self.rate is None:
            out, self._out = self._out, {}
            return out
        due = int((self._clock.monotonic() - self._start) * self.rate) - self.produced
        due -= self.skipped
        if due > MAX_BATCH:
            self.skipped += due - MAX_BATCH
            due = MAX_BATCH
        return self._make(due)

    def take(self, count: int) -> dict[ViewKey, list[BookMessage]]:
        """On demand (``rate`` None, the fake's ``--book-rate max``): ``count`` messages per
        symbol made now, per view as :meth:`advance` gives them (restarts' included)."""
        return self._make(min(count, MAX_BATCH))

    @property
    def cycling(self) -> bool:
        """True once :meth:`start_cycle` has run: messages come from :meth:`take_runs`."""
        return self._cycling

    def start_cycle(
        self, record_run: Callable[[CycleRun], None] | None = None, steps: int = CYCLE_STEPS
    ) -> None:
        """On demand only (``rate`` None), with no view but the whole book's: from now on each
        symbol's messages are its :class:`BookCycle` (made now from the book as it is, with
        this market's own steps), taken by :meth:`take_runs`; ``record_run`` receives every
        run taken (the ledger's). :meth:`take`, :meth:`restart` and depth views are refused
        from then on. A second call does nothing."""
        if self.rate is not None:
            raise ValueError("a book cycle needs books on demand (rate None)")
        if self._cycling:
            return
        if any(sym.views for sym in self._symbols.values()):
            raise ValueError("a book cycle serves the whole book only (a depth view exists)")
        changes = self.changes
        for sym in self._symbols.values():
            start = (dict(sym.bids), dict(sym.asks), sym.update_id, sym.number, sym.last_ts_us)
            bests = sym.bid_best, sym.ask_best
            forward: list[tuple[dict[int, int], dict[int, int]]] = []
            backward: list[tuple[dict[int, int], dict[int, int]]] = []
            for _ in range(steps):
                bids, asks = dict(sym.bids), dict(sym.asks)
                self._step(sym, sym.last_ts_us)
                bid_changes, ask_changes = sym.changed
                forward.append((bid_changes, ask_changes))
                backward.append(
                    (
                        {k: bids.get(k, 0) for k in bid_changes},
                        {k: asks.get(k, 0) for k in ask_changes},
                    )
                )
            sym.bids, sym.asks, sym.update_id, sym.number, sym.last_ts_us = start
            sym.bid_best, sym.ask_best = bests
            sym.cycle = BookCycle(sym, forward + backward[::-1])
            sym.cycle_made = 0
        self.changes = changes
        self._record_run = record_run
        self._cycling = True

    def take_runs(self, count: int) -> list[CycleRun]:
        """After :meth:`start_cycle`: the next ``count`` messages (at most :data:`MAX_BATCH`)
        of each symbol, one run per symbol in symbol order, event times from now on."""
        if not self._cycling:
            raise RuntimeError("take_runs needs start_cycle first")
        count = min(count, MAX_BATCH)
        if count <= 0:
            return []
        now_us = self._clock.time_ns() // 1000
        runs = []
        for sym in self._symbols.values():
            cycle = sym.cycle
            assert cycle is not None
            run = CycleRun(cycle, sym.cycle_made, count, max(now_us, sym.last_ts_us + 1))
            sym.cycle_made += count
            sym.last_ts_us = run.ts_us + count - 1
            sym.update_id = cycle.ids(sym.cycle_made - 1)[1]
            sym.number += count
            self.changes += run.changes
            runs.append(run)
            if self._record_run is not None:
                self._record_run(run)
        self.produced += count
        return runs

    def _make(self, due: int) -> dict[ViewKey, list[BookMessage]]:
        """Make ``due`` messages per symbol, event times spread up to now; hand over all."""
        if self._cycling:
            raise RuntimeError("the book market is cycling: take_runs gives its messages")
        if due > 0:
            now_us = self._clock.time_ns() // 1000
            first_us = min(self._last_us, now_us)
            self._last_us = now_us
            span = now_us - first_us
            syms = list(self._symbols.values())
            step, emit = self._step, self._emit
            for i in range(due):
                ts_us = first_us + span * (i + 1) // due
                for sym in syms:
                    emit(sym, step(sym, ts_us))
            self.produced += due
        out, self._out = self._out, {}
        return out

    def _emit(self, sym: _Symbol, msg: BookMessage) -> None:
        out = self._out
        key: ViewKey = (sym.raw, None)
        listed = out.get(key)
        if listed is None:
            out[key] = [msg]
        else:
            listed.append(msg)
        for depth, view in sym.views.items():
            seen = view.follow(sym, msg)
            if seen is not None:
                out.setdefault((sym.raw, depth), []).append(seen)
        if self._record is not None:
            self._record(msg)

    def _step(self, sym: _Symbol, ts_us: int) -> BookMessage:
        """One message of ``sym``'s book at event time ``ts_us`` (moves the book). The hot
        path of the book market: the best prices are kept in locals, sizes drawn inline."""
        rnd = self._rng.random
        bids, asks = sym.bids, sym.asks
        bid_best, ask_best = sym.bid_best, sym.ask_best
        unit = sym.lot_unit
        bid_changes: dict[int, int] = {}
        ask_changes: dict[int, int] = {}
        for _ in range(1 + int(rnd() * MAX_CHANGES)):
            is_bid = rnd() < 0.5
            r = rnd()
            if is_bid:
                levels, changes, other = bids, bid_changes, ask_changes
                if r < 0.1 and bid_best + 1 < ask_best:
                    price = bid_best + 1
                else:
                    price = bid_best - int(rnd() * rnd() * BAND)
            else:
                levels, changes, other = asks, ask_changes, bid_changes
                if r < 0.1 and ask_best - 1 > bid_best:
                    price = ask_best - 1
                else:
                    price = ask_best + int(rnd() * rnd() * BAND)
            if price <= 0 or price in other:
                continue  # off the grid, or a price the other side changed in this message
            if price in levels:
                if r > 0.65 and len(levels) > MIN_LEVELS:
                    del levels[price]
                    changes[price] = 0
                    if price == bid_best:
                        bid_best = max(levels)
                    elif price == ask_best:
                        ask_best = min(levels)
                    continue
            elif len(levels) >= MAX_LEVELS:
                worst = min(levels) if is_bid else max(levels)
                if (price < worst) if is_bid else (price > worst):
                    continue  # beyond the book's depth: nothing to add
                del levels[worst]
                changes[worst] = 0
            levels[price] = changes[price] = (1 + int(rnd() * rnd() * SIZES)) * unit
            if is_bid:
                if price > bid_best:
                    bid_best = price
            elif price < ask_best:
                ask_best = price
        sym.bid_best, sym.ask_best = bid_best, ask_best
        count = len(bid_changes) + len(ask_changes)
        if count == 0:  # every pick fell off the grid: change the best bid's size
            bids[bid_best] = bid_changes[bid_best] = sym.lots(rnd)
            count = 1
        sym.changed = bid_changes, ask_changes
        first = sym.update_id + 1
        prev, sym.update_id = sym.update_id, sym.update_id + count
        sym.number += 1
        ts_us = max(ts_us, sym.last_ts_us + 1)
        sym.last_ts_us = ts_us
        self.changes += count
        return BookMessage(
            sym.raw,
            sym.symbol,
            first,
            sym.update_id,
            prev,
            sym.number,
            ts_us,
            False,
            sym.render(bid_changes),
            sym.render(ask_changes),
        )

    def restart(self, raw_symbol: str) -> None:
        """The exchange restarted ``raw_symbol``'s book (the ``book-restart`` fault): the book
        changes without a diff (a third of its levels go, some sizes change), its update id
        moves on by one, and every view emits a snapshot with number 1 (Bybit's ``u=1``) in
        the next :meth:`advance`."""
        if self._cycling:
            raise RuntimeError("the book market is cycling: no restart")
        sym = self._symbols[raw_symbol]
        rnd = self._rng.random
        for levels in (sym.bids, sym.asks):
            for k in list(levels):
                if len(levels) > MIN_LEVELS and rnd() < 0.33:
                    del levels[k]
                elif rnd() < 0.3:
                    levels[k] = sym.lots(rnd)
        sym.bid_best, sym.ask_best = max(sym.bids), min(sym.asks)
        sym.update_id += 1
        sym.number = 1
        sym.last_ts_us = max(self._clock.time_ns() // 1000, sym.last_ts_us + 1)
        msg = sym.snapshot(None, 1)
        self._out.setdefault((raw_symbol, None), []).append(msg)
        for depth, view in sym.views.items():
            view.reset(sym)
            view.number = 1
            view.last_id = sym.update_id
            self._out.setdefault((raw_symbol, depth), []).append(view.snapshot(sym))
        if self._record is not None:
            self._record(msg)
