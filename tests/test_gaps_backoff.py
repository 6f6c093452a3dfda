from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from connectors.backoff import Backoff
from connectors.gaps import Gap, GapTracker


def test_gap_and_duplicate_detection() -> None:
    g = GapTracker()
    assert g.accept("b:X", 10)
    assert g.accept("b:X", 11)
    assert g.accept("b:X", 15)
    assert not g.accept("b:X", 15)
    assert not g.accept("b:X", 12)
    assert g.accept("b:Y", 1)
    assert g.gaps == {"b:X": [Gap(12, 14)]}
    assert g.duplicates == 2
    assert g.gaps["b:X"][0].missing == 3


@given(st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=200))
def test_accepted_plus_gaps_cover_the_range_exactly(ids: list[int]) -> None:
    g = GapTracker()
    accepted = [i for i in ids if g.accept("k", i)]
    assert accepted == sorted(set(accepted))
    covered = set(accepted)
    for gap in g.gaps.get("k", []):
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
