from __future__ import annotations

import random

from connectors.backoff import Backoff


def test_backoff_is_capped_jittered_and_resettable() -> None:
    b = Backoff(base=1, cap=8, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(10)]
    assert all(0 <= d <= 8 for d in delays)
    assert delays[0] <= 1 and delays[1] <= 2
    b.reset()
    assert b.attempt == 0 and b.next_delay() <= 1
