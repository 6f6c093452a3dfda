"""What the benchmarks measure and how they hand it over: one :class:`Stopwatch` for wall and
CPU time, :func:`rates` for the figures every benchmark prints (seconds, items per second, CPU
microseconds per item, peak RSS) and :func:`last_json` to read a child benchmark's printed line
(see docs/load-testing.md).
"""

from __future__ import annotations

import json
import time
from typing import Any

from engine.stats import peak_rss_bytes


class Stopwatch:
    """Wall (monotonic) and CPU (process) time from its creation."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._cpu0 = time.process_time()

    def read(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds) since the stopwatch was created."""
        return time.monotonic() - self.started, time.process_time() - self._cpu0


def rates(count: int, elapsed: float, cpu: float, unit: str = "trade") -> dict[str, float]:
    """``seconds``, ``<unit>s_per_s``, ``cpu_us_per_<unit>`` and ``peak_rss_mb`` of ``count``
    items handled in ``elapsed`` wall and ``cpu`` CPU seconds (rounded as printed)."""
    return {
        "seconds": round(elapsed, 3),
        f"{unit}s_per_s": round(count / elapsed, 1),
        f"cpu_us_per_{unit}": round(cpu / max(count, 1) * 1e6, 3),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
    }


def last_json(out: str) -> dict[str, Any]:
    """The JSON object on the last line of a child benchmark's output."""
    doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return doc


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median trades/s (the lower middle one), with every run's rate in
    ``runs``; a single row that could not run is returned as it is."""
    measured = sorted(
        (row for row in rows if "trades_per_s" in row), key=lambda row: row["trades_per_s"]
    )
    if not measured:
        return rows[0]
    row = dict(measured[(len(measured) - 1) // 2])
    row["runs"] = [r["trades_per_s"] for r in measured]
    return row
