from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from connectors.backoff import Backoff
from connectors.gaps import Gap, GapTracker
from engine.records import Trade


def trades(*pairs: tuple[str, int]) -> list[Trade]:
    return [Trade("b", sym, sym, str(i), "1", "1", "buy", 0, 0) for sym, i in pairs]


def test_gap_and_duplicate_detection() -> None:
    g = GapTracker()
    batch = trades(("X", 10), ("X", 11), ("Y", 1), ("X", 15))
    assert g.filter("b", batch) is batch  # nothing dropped: the same list back
    kept = g.filter("b", trades(("X", 15), ("X", 12), ("Y", 2), ("X", 16)))
    assert [(t.symbol, t.trade_id) for t in kept] == [("Y", "2"), ("X", "16")]
    assert g.gaps == {"b:X": [Gap(12, 14)]}
    assert g.duplicates == 2
    assert g.gaps["b:X"][0].missing == 3


@given(
    st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=200),
    st.integers(min_value=1, max_value=50),
)
def test_accepted_plus_gaps_cover_the_range_exactly(ids: list[int], batch: int) -> None:
    g = GapTracker()
    accepted: list[int] = []
    for start in range(0, len(ids), batch):
        chunk = trades(*(("k", i) for i in ids[start : start + batch]))
        accepted += [int(t.trade_id) for t in g.filter("b", chunk)]
    assert accepted == sorted(set(accepted))
    covered = set(accepted)
    for gap in g.gaps.get("b:k", []):
        span = set(range(gap.from_id, gap.to_id + 1))
        assert not span & covered
        covered |= span
    assert covered == set(range(accepted[0], accepted[-1] + 1))


def test_backoff_is_capped_jittered_and_resettable() -> None:
    b = Backoff(base=1, cap=8, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(10)]
    assert all(0 <= d <= 8 for d in delays)
    assert delays[0] <= 1 and delays[1] <= 2
    b.reset()
    assert b.attempt == 0 and b.next_delay() <= 1
