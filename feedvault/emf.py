"""CloudWatch Embedded Metric Format (EMF) documents for ``METRICS=emf`` (docs: operations.md).

An EMF document is one JSON object on one log line; CloudWatch Logs (the ECS ``awslogs`` driver
sends stdout there) extracts the metrics it declares, so a task needs no metrics agent::

    {"_aws": {"Timestamp": 1700000000000,
              "CloudWatchMetrics": [{"Namespace": "feedvault",
                                     "Dimensions": [["Command", "Exchange"]],
                                     "Metrics": [{"Name": "TradesPerSecond",
                                                  "Unit": "Count/Second"}]}]},
     "Command": "stream", "Exchange": "binance", "TradesPerSecond": 812.5, "run_id": "..."}

:func:`emf_document` builds one and enforces the specification's rules, raising
:class:`ValueError` (a programming error, never input) when one is broken: ``Timestamp`` an
integer of milliseconds since the epoch; at most :data:`MAX_METRICS` metric definitions and
:data:`MAX_DIMENSIONS` dimension keys per set; every referenced name present as a top-level
member; metric values finite numbers, or arrays of at most :data:`MAX_VALUES` of them;
dimension values strings; units among :data:`UNITS`.

Dimensions are kept to low-cardinality values (the command, the exchanges, the batch job):
every distinct combination is a separate custom metric. Identifiers such as the run id go in as
plain properties (``run_id``), which are searchable in Logs Insights but create no metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

NAMESPACE: Final = "feedvault"
MAX_METRICS: Final = 100
"""Metric definitions per directive (EMF specification)."""
MAX_DIMENSIONS: Final = 30
"""Dimension keys per dimension set (EMF specification; CloudWatch's limit per metric)."""
MAX_VALUES: Final = 100
"""Values of one metric given as an array (EMF specification)."""
MAX_NAME_LENGTH: Final = 255
"""Longest metric or dimension name CloudWatch accepts."""

UNITS: Final = frozenset(
    {
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    }
)
"""The units of CloudWatch's ``MetricDatum``; anything else is not a unit CloudWatch knows."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric of a document: ``value`` is a number, or up to :data:`MAX_VALUES` numbers
    (CloudWatch aggregates them as separate samples, so percentiles work)."""

    name: str
    unit: str
    value: float | Sequence[float]


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ValueError(f"{what} name {name!r} must be 1..{MAX_NAME_LENGTH} characters")


def _check_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"metric {name!r}: {value!r} is not a number")
    if not math.isfinite(value):
        raise ValueError(f"metric {name!r}: {value!r} is not finite")
    return value


def _metric_value(metric: Metric) -> float | list[float]:
    value = metric.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _check_number(value, metric.name)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"metric {metric.name!r}: {value!r} is not a number or numbers")
    if not 1 <= len(value) <= MAX_VALUES:
        raise ValueError(f"metric {metric.name!r}: 1..{MAX_VALUES} values, got {len(value)}")
    return [_check_number(item, metric.name) for item in value]


def emf_document(
    *,
    timestamp_ms: int,
    dimensions: Mapping[str, str],
    metrics: Sequence[Metric],
    properties: Mapping[str, Any] | None = None,
    namespace: str = NAMESPACE,
) -> dict[str, Any]:
    """One EMF document: ``metrics`` under one directive with one dimension set (the keys of
    ``dimensions``, in order), their values and the dimension values as top-level members, and
    ``properties`` as further members (no metric). :class:`ValueError` if it would break the
    specification (see the module docstring) or two members would share a name."""
    if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int) or timestamp_ms < 0:
        raise ValueError(f"Timestamp must be a non-negative integer of ms, got {timestamp_ms!r}")
    _check_name(namespace, "namespace")
    if len(dimensions) > MAX_DIMENSIONS:
        raise ValueError(f"at most {MAX_DIMENSIONS} dimensions, got {len(dimensions)}")
    if not 1 <= len(metrics) <= MAX_METRICS:
        raise ValueError(f"1..{MAX_METRICS} metrics per directive, got {len(metrics)}")
    document: dict[str, Any] = {}
    definitions: list[dict[str, str]] = []
    for key, value in dimensions.items():
        _check_name(key, "dimension")
        if not isinstance(value, str) or not value:
            raise ValueError(f"dimension {key!r} must have a non-empty string value")
        document[key] = value
    for metric in metrics:
        _check_name(metric.name, "metric")
        if metric.unit not in UNITS:
            raise ValueError(f"metric {metric.name!r}: {metric.unit!r} is not a CloudWatch unit")
        if metric.name in document:
            raise ValueError(f"member {metric.name!r} is defined twice")
        document[metric.name] = _metric_value(metric)
        definitions.append({"Name": metric.name, "Unit": metric.unit})
    for key, value in (properties or {}).items():
        if key in document or key == "_aws":
            raise ValueError(f"property {key!r} collides with a metric or dimension")
        document[key] = value
    document["_aws"] = {
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [
            {"Namespace": namespace, "Dimensions": [list(dimensions)], "Metrics": definitions}
        ],
    }
    return document


def summary_values(samples: Sequence[float], limit: int = MAX_VALUES) -> list[float]:
    """At most ``limit`` values that stand for ``samples``: all of them when few enough, else
    ``limit`` evenly spaced order statistics (minimum and maximum included), so the
    percentiles CloudWatch computes from them stay close to those of all the samples."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    if len(samples) <= limit:
        return list(samples)
    ordered = sorted(samples)
    last = len(ordered) - 1
    return [ordered[round(i * last / (limit - 1))] for i in range(limit)]


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
    all, see :func:`summary_values`), so CloudWatch's p50/p99/Maximum are those of
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
