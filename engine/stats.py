"""Run counters and the periodic stats line.

:class:`Counters` is plain mutable state shared by the sources of one run (single event loop, so
no locking). :class:`StatsReporter` turns two snapshots into rates for the stats line;
:class:`StreamMetrics` turns them into the CloudWatch EMF members of that line (``METRICS=emf``).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from feedvault.emf import Metric, emf_document, summary_values

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``), else its peak."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
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

    Not ``ru_maxrss``: Linux carries the pre-``exec`` image's high-water mark into it, so a
    process started by a large parent would report the parent's size.
    """
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True, slots=True)
class RunTotals:
    """Cumulative counts of a run at one moment (what :class:`StreamMetrics` differences)."""

    parsed: int = 0
    bytes_uploaded: int = 0
    reconnects: int = 0
    gaps: int = 0
    dropped: int = 0
    invalid: int = 0


class StreamMetrics:
    """The metrics of a stream (or replay) run per stats interval, as an EMF document.

    Each call of :meth:`document` covers the interval since the previous call (or since
    construction): ``TradesPerSecond`` (Count/Second) is the interval's rate; ``BytesUploaded``
    (Bytes), ``Reconnects``, ``Gaps``, ``DroppedTrades`` and ``InvalidFrames`` (Count) are the
    interval's increments, so CloudWatch's Sum over any period is that period's total;
    ``QueueDepth`` (Count) is the depth at the moment; ``UploadLatency`` (Milliseconds) holds the
    duration of each upload completed in the interval (at most 100 values standing for them
    all, see :func:`feedvault.emf.summary_values`), so CloudWatch's p50/p99/Maximum are those of
    the uploads; it is left out when no upload completed.
    """

    def __init__(
        self, *, dimensions: Mapping[str, str], properties: Mapping[str, Any], now: float
    ) -> None:
        self.dimensions = dict(dimensions)
        self.properties = dict(properties)
        self._at = now
        self._last = RunTotals()

    def document(
        self,
        *,
        now: float,
        wall_ns: int,
        totals: RunTotals,
        queue_depth: int,
        upload_seconds: Sequence[float],
    ) -> dict[str, Any]:
        """The EMF document of the interval ending at ``now`` (monotonic seconds), stamped
        ``wall_ns`` (wall time, ns since the epoch)."""
        last = self._last
        elapsed = max(now - self._at, 1e-9)
        self._at, self._last = now, totals
        metrics = [
            Metric(
                "TradesPerSecond", "Count/Second", round((totals.parsed - last.parsed) / elapsed, 3)
            ),
            Metric("QueueDepth", "Count", queue_depth),
            Metric("BytesUploaded", "Bytes", totals.bytes_uploaded - last.bytes_uploaded),
            Metric("Reconnects", "Count", totals.reconnects - last.reconnects),
            Metric("Gaps", "Count", totals.gaps - last.gaps),
            Metric("DroppedTrades", "Count", totals.dropped - last.dropped),
            Metric("InvalidFrames", "Count", totals.invalid - last.invalid),
        ]
        if upload_seconds:
            values = [round(s * 1000, 3) for s in summary_values(upload_seconds)]
            metrics.append(Metric("UploadLatency", "Milliseconds", values))
        return emf_document(
            timestamp_ms=wall_ns // 1_000_000,
            dimensions=self.dimensions,
            metrics=metrics,
            properties=self.properties,
        )
