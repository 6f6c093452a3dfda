"""Trade-id continuity per symbol: gaps, duplicates, late trades and sequence resets.

For exchanges whose trade ids rise by exactly one per symbol (Binance ``t``/``a``, Coinbase and
Kraken ``trade_id``), the tracker keeps, per exchange and symbol, the highest id seen (``high``),
the lowest (``low``) and the *pending gaps*: ranges of ids between them not received yet. Every
other id between ``low`` and ``high`` was seen. An incoming id ``x`` is:

- ``high + 1``: the common case, the only work is storing the new ``high``;
- above ``high + 1``: ids ``high + 1 .. x - 1`` become a pending gap;
- inside a pending gap: a *late* trade; it is kept, counted in :attr:`GapTracker.out_of_order`,
  and the gap shrinks or splits around it;
- any other id from ``low`` to ``high`` within the reorder window: seen before (a reconnect
  overlap, Coinbase's ``last_match``, Kraken's snapshot): dropped and counted in
  :attr:`GapTracker.duplicates`, so nothing is written twice;
- below ``low`` but within the reorder window (at least ``high -`` :data:`REORDER_WINDOW`): a
  trade older than the first one seen, arriving late: kept and counted as out of order (the ids
  between it and ``low`` become a pending gap);
- below ``high -`` :data:`REORDER_WINDOW` (beyond the window) and in no pending gap: a *reset*,
  the exchange restarted its sequence (after a reconnect, say). The trade is kept, the reset
  recorded in :attr:`GapTracker.resets` and the symbol's sequence starts again from ``x``; the
  old sequence's pending gaps become final.

A pending gap becomes *final* (listed in :attr:`GapTracker.gaps`) once the reorder window has
passed all of its ids (its last id is below ``high -`` :data:`REORDER_WINDOW`), at a reset, or at
:meth:`GapTracker.finish` (the end of the run). Until then any of its ids may still arrive.

Limits, by design of a bounded window: a trade more than :data:`REORDER_WINDOW` ids late, and
outside any pending gap, is taken for a reset; a sequence restarting at an id that is still
within the window of the old one is taken for duplicates (a restart to a much lower id, as seen
in practice, is not).

Memory per symbol is bounded: pending gaps are disjoint, separated by received ids and all but
one lie inside the window, so there are at most ``REORDER_WINDOW // 2 + 1`` of them. The final
gaps and the resets are the run's findings and are kept whole.

The tracker is shared by every session of a run (a symbol may move between connections). It
checks whole batches with C-level iteration (``map``/``zip``); in the common case
(``id == high + 1``: one dictionary lookup, one comparison, one store) a trade costs about a
quarter of a microsecond, as before the reorder window; with 1% of trades late by one, under
half a microsecond on average.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from operator import attrgetter
from typing import Final

from engine.records import SymbolBatch, Trade

REORDER_WINDOW: Final = 1_000
"""How many ids below a symbol's highest id a trade may arrive late and still be placed: a late
trade that far back fills its pending gap; one further back, outside every pending gap, is a
reset. Also how far the highest id must have moved past a pending gap for it to be final."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Ids ``from_id`` .. ``to_id`` (inclusive) of one symbol were never received."""

    from_id: int
    to_id: int

    @property
    def missing(self) -> int:
        return self.to_id - self.from_id + 1


@dataclass(frozen=True, slots=True)
class Reset:
    """A symbol's ids jumped back from ``from_id`` (the highest seen until then) to ``to_id``,
    beyond the reorder window, with the trade received at ``ts_recv`` (ns since the epoch)."""

    from_id: int
    to_id: int
    ts_recv: int


_symbol_of = attrgetter("symbol")
_trade_id_of = attrgetter("trade_id")


def _start(gap: list[int]) -> int:
    return gap[0]


class _Sequence:
    """One symbol's sequence beyond its highest id: the lowest id and the pending gaps, as
    ``[from_id, to_id]`` lists sorted by ``from_id`` (the highest id lives in the tracker's
    per-exchange dictionary, the hot path's only state)."""

    __slots__ = ("key", "low", "pending")

    def __init__(self, key: str, low: int) -> None:
        self.key = key
        self.low = low
        self.pending: list[list[int]] = []


class GapTracker:
    """Per exchange and symbol: the highest id, the pending gaps; the run's final gaps, resets,
    duplicates dropped and late trades kept.

    Gaps and resets are reported under ``"exchange:symbol"`` keys (the manifest's form); a key's
    gaps are listed in the order they became final (by id within one sequence).
    """

    def __init__(self, window: int = REORDER_WINDOW) -> None:
        if window < 1:
            raise ValueError("the reorder window must be at least one id")
        self.window = window
        self._high: dict[str, dict[str, int]] = {}
        self._sequences: dict[str, dict[str, _Sequence]] = {}
        self._open: dict[str, set[str]] = {}
        """Per exchange, the symbols with pending gaps (checked at the end of every batch)."""
        self.gaps: dict[str, list[Gap]] = {}
        """Final gaps (pending ones are in :attr:`pending_gaps` until they are final)."""
        self.resets: dict[str, list[Reset]] = {}
        """Sequence restarts, in the order they happened."""
        self.duplicates = 0
        """Trades dropped because their id was seen before."""
        self.out_of_order = 0
        """Trades kept although they arrived after a higher id of their symbol."""

    def filter(self, exchange: str, trades: list[Trade]) -> list[Trade]:
        """Check a batch of one exchange's trades, in arrival order, whose ``trade_id`` is the
        decimal text of a contiguous per-symbol sequence. Records gaps, late trades and resets;
        returns the batch without the duplicates (the same list when there are none, the
        common case).

        One symbol's batch whose ids continue its sequence exactly (the common case: the
        sessions hand over :class:`engine.records.SymbolBatch` es) is checked in one C-level
        comparison."""
        high = self._high.setdefault(exchange, {})
        first = trades[0].symbol if trades else None
        top = high.get(first) if first is not None else None
        if top is not None and trades[-1].symbol == first:
            run = list(map(int, map(_trade_id_of, trades)))
            if run == list(range(top + 1, top + 1 + len(run))) and (
                type(trades) is SymbolBatch or all(map(first.__eq__, map(_symbol_of, trades)))
            ):
                high[first] = run[-1]
                if self._open.get(exchange):
                    self._expire(exchange, high)
                return trades
        kept: list[Trade] | None = None
        ids = map(int, map(_trade_id_of, trades))
        for index, (symbol, seq) in enumerate(zip(map(_symbol_of, trades), ids, strict=True)):
            if seq - 1 != high.get(symbol):  # not the next id (or a new symbol)
                if not self._irregular(exchange, high, symbol, seq, trades[index]):
                    if kept is None:
                        kept = trades[:index]
                    continue
            else:
                high[symbol] = seq
            if kept is not None:
                kept.append(trades[index])
        if self._open.get(exchange):
            self._expire(exchange, high)
        return trades if kept is None else kept

    def finish(self) -> None:
        """The end of the run: every pending gap becomes final (no trade can fill it any
        more). Idempotent; the tracker must not be given trades afterwards."""
        for exchange, symbols in self._open.items():
            sequences = self._sequences[exchange]
            for symbol in symbols:
                self._finalize(sequences[symbol], len(sequences[symbol].pending))
            symbols.clear()

    @property
    def pending_gaps(self) -> dict[str, list[Gap]]:
        """Gaps not final yet (their ids may still arrive), by ``"exchange:symbol"``."""
        return {
            sequence.key: [Gap(first, last) for first, last in sequence.pending]
            for exchange, symbols in self._open.items()
            for symbol in sorted(symbols)
            if (sequence := self._sequences[exchange][symbol]).pending
        }

    @property
    def gap_count(self) -> int:
        """Final gaps so far."""
        return sum(len(g) for g in self.gaps.values())

    @property
    def missing_total(self) -> int:
        """Ids in the final gaps so far."""
        return sum(gap.missing for gaps in self.gaps.values() for gap in gaps)

    @property
    def reset_count(self) -> int:
        return sum(len(r) for r in self.resets.values())

    # -- the slow path ---------------------------------------------------------------------------

    def _irregular(
        self, exchange: str, high: dict[str, int], symbol: str, seq: int, trade: Trade
    ) -> bool:
        """Place an id that is not ``high + 1``; True when the trade is kept."""
        sequences = self._sequences.setdefault(exchange, {})
        sequence = sequences.get(symbol)
        top = high.get(symbol)
        if sequence is None or top is None:  # the first trade of the symbol
            sequences[symbol] = _Sequence(f"{exchange}:{symbol}", seq)
            high[symbol] = seq
            return True
        if seq > top:
            high[symbol] = seq
            sequence.pending.append([top + 1, seq - 1])
            self._open.setdefault(exchange, set()).add(symbol)
            self._expire_one(sequence, seq)
            return True
        pending = sequence.pending
        if pending:
            index = bisect_right(pending, seq, key=_start) - 1
            if index >= 0 and seq <= pending[index][1]:
                self._fill(pending, index, seq)
                self.out_of_order += 1
                return True
        if seq < top - self.window:  # beyond the window: the sequence restarted
            self._finalize(sequence, len(pending))
            self.resets.setdefault(sequence.key, []).append(Reset(top, seq, trade.ts_recv))
            sequence.low = seq
            high[symbol] = seq
            return True
        if seq >= sequence.low:
            self.duplicates += 1
            return False
        # older than the first trade seen, still in the window: it was never seen
        if seq < sequence.low - 1:
            pending.insert(0, [seq + 1, sequence.low - 1])
            self._open.setdefault(exchange, set()).add(symbol)
        sequence.low = seq
        self.out_of_order += 1
        return True

    @staticmethod
    def _fill(pending: list[list[int]], index: int, seq: int) -> None:
        """Remove ``seq`` from the pending gap at ``index`` (which holds it)."""
        gap = pending[index]
        first, last = gap
        if first == last:
            del pending[index]
        elif seq == first:
            gap[0] = seq + 1
        elif seq == last:
            gap[1] = seq - 1
        else:
            gap[1] = seq - 1
            pending.insert(index + 1, [seq + 1, last])

    def _expire(self, exchange: str, high: dict[str, int]) -> None:
        """Make final the pending gaps the window has passed, for every open symbol."""
        symbols = self._open[exchange]
        sequences = self._sequences[exchange]
        for symbol in list(symbols):
            sequence = sequences[symbol]
            self._expire_one(sequence, high[symbol])
            if not sequence.pending:
                symbols.discard(symbol)

    def _expire_one(self, sequence: _Sequence, top: int) -> None:
        limit = top - self.window
        pending = sequence.pending
        count = 0
        while count < len(pending) and pending[count][1] < limit:
            count += 1
        if count:
            self._finalize(sequence, count)

    def _finalize(self, sequence: _Sequence, count: int) -> None:
        """Move the first ``count`` pending gaps of ``sequence`` to the final gaps."""
        if not count:
            return
        final = self.gaps.setdefault(sequence.key, [])
        final += [Gap(first, last) for first, last in sequence.pending[:count]]
        del sequence.pending[:count]
