"""Running coroutines on the best event loop available (uvloop on Linux when installed)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is importable, else None (asyncio's default)."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` with uvloop when installed."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


GC_GEN0_THRESHOLD = 50_000


def tune_gc_for_throughput() -> None:
    """Make the cyclic garbage collector cheap on the hot path.

    Trades are freed by reference counting as soon as their window is encoded, so the cyclic
    collector finds almost nothing; at its default threshold (700 allocations) it still runs
    hundreds of times a second at full rate and walks every queued trade. Freeze what start-up
    allocated (modules, config) and collect the young generation every 50,000 allocations
    instead: measured 3.5 -> 2.3 µs per parsed frame under load.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 100)
