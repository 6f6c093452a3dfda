"""Capped exponential backoff with full jitter, for reconnects.

``Backoff`` is pure: it hands out delays and never sleeps. Randomness is injected (``rng``) so
tests are deterministic. Delay ``n`` (from 0) is uniform in ``[0, min(cap, base * 2**n)]`` ("full
jitter"), so many tasks restarting together do not reconnect in lock-step.
"""

from __future__ import annotations

import random
from typing import Final

DEFAULT_BASE_SECONDS: Final = 0.5
DEFAULT_CAP_SECONDS: Final = 30.0


class Backoff:
    """Delays for successive failed attempts; :meth:`reset` after a healthy connection."""

    def __init__(
        self,
        base: float = DEFAULT_BASE_SECONDS,
        cap: float = DEFAULT_CAP_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0
