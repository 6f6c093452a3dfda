"""Trade-id continuity per symbol: gap detection and duplicate suppression.

For exchanges whose trade ids rise by exactly one per symbol (Binance ``t``/``a``), a trade whose
id is more than one above the last seen id means trades were missed (a *gap*, recorded with the
missing id range); a trade whose id is not above the last seen one was seen before (after a
reconnect overlap) and is dropped as a *duplicate*, so nothing is written twice.

The tracker is shared by every session of a run (a symbol may move between connections).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Gap:
    """Ids ``from_id`` .. ``to_id`` (inclusive) of one symbol were never received."""

    from_id: int
    to_id: int

    @property
    def missing(self) -> int:
        return self.to_id - self.from_id + 1


class GapTracker:
    """Per-key (``"exchange:symbol"``) last sequence number, gaps and duplicate count."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self.gaps: dict[str, list[Gap]] = {}
        self.duplicates = 0

    def accept(self, key: str, seq: int) -> bool:
        """Record ``seq`` for ``key``. False means a duplicate the caller must drop."""
        last = self._last.get(key)
        if last is None or seq == last + 1:
            self._last[key] = seq
            return True
        if seq <= last:
            self.duplicates += 1
            return False
        self.gaps.setdefault(key, []).append(Gap(last + 1, seq - 1))
        self._last[key] = seq
        return True

    @property
    def gap_count(self) -> int:
        return sum(len(g) for g in self.gaps.values())

    @property
    def missing_total(self) -> int:
        return sum(gap.missing for gaps in self.gaps.values() for gap in gaps)
