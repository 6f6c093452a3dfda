"""Run counters and the periodic stats line.

:class:`Counters` is plain mutable state shared by the sources of one run (single event loop, so
no locking). :class:`StatsReporter` turns two snapshots into rates for the stats line; the
application's :class:`feedvault.emf.StreamMetrics` turns them into CloudWatch EMF documents.
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass

import psutil


def rss_bytes() -> int:
    """This process's resident set size now (psutil's ``memory_info().rss``: on Linux the
    resident pages of ``/proc/self/statm``), else, where psutil cannot read it, its peak."""
    try:
        return int(psutil.Process().memory_info().rss)
    except (psutil.Error, OSError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(slots=True)
class Counters:
    """What the sources saw. ``received`` counts frames; ``parsed`` counts trades accepted."""

    received: int = 0
    parsed: int = 0
    invalid: int = 0
    dropped: int = 0
    reconnects: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    """Trades whose id arrived late, inside the reorder window: stored, filling their gap."""
    resets: int = 0
    """Times a symbol's trade ids jumped back beyond the reorder window (the manifest's
    ``resets`` lists them)."""
    unclean_closes: int = 0
    """Connections that ended after the stop without the peer's close frame (trades on their
    way may be lost: the run is not complete)."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StatsSample:
    at: float
    parsed: int
    bytes_uploaded: int


class StatsReporter:
    """Rates between successive calls of :meth:`sample`."""

    def __init__(self, now: float) -> None:
        self._last = StatsSample(now, 0, 0)

    def sample(self, now: float, parsed: int, bytes_uploaded: int) -> dict[str, float]:
        last = self._last
        elapsed = max(now - last.at, 1e-9)
        self._last = StatsSample(now, parsed, bytes_uploaded)
        return {
            "trades_per_s": round((parsed - last.parsed) / elapsed, 1),
            "upload_bytes_per_s": round((bytes_uploaded - last.bytes_uploaded) / elapsed, 1),
        }


def peak_rss_bytes() -> int:
    """The largest resident set size of this process image (``VmHWM`` on Linux).

    Read from ``/proc/self/status``, not through psutil: psutil has no peak RSS on Linux (its
    ``memory_info`` gives a peak working set on Windows only). Not ``ru_maxrss`` either, except
    where ``/proc`` cannot be read: Linux carries the pre-``exec`` image's high-water mark into
    it, so a process started by a large parent would report the parent's size.
    """
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
