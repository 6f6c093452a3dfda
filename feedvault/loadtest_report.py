"""The load test's figures and report, as pure functions of what the run produced.

:func:`build_report` turns a :class:`RunFacts` (the engine's exit status and CPU time, its stats
and ``run_end`` log lines, the manifest, the exactly-once result, the latency samples) into the
JSON document written to ``loadtest.json``; :func:`summary_table` renders its figures for the
terminal; :mod:`feedvault.loadtest_chart` draws ``loadtest.png`` from that document alone.

Definitions (docs: load-testing.md#the-report):

- sustained trades/s = records in the manifest / ingest seconds (first to last ``ts_recv`` of
  the stored records);
- CPU µs per trade = user + system CPU of the engine process (``os.wait4``) / records;
- peak RSS = the engine's own ``peak_rss_mb`` from its ``run_end`` line (``VmHWM``);
- queue high-water = the largest ``queue_high_water`` of its stats lines;
- latency = per stored record, its object's ``stored_at`` minus its ``ts_recv``; p50/p99 by the
  nearest-rank method over every stored record.

Over time (the chart's data): ``series`` has one point per stats line (``t``: seconds since the
engine's ``run_start`` line, at the end of the interval; ``queue_depth_peak``: the interval's
high-water mark); ``latency_series`` one per second of receive time (``t``: the end of that
second, on the same axis) with the p50/p99/max latency of the records received in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.text import plural
from feedvault.loadtest_check import CheckResult, Identity


def percentile(sorted_values: Sequence[int] | Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ascending ``sorted_values``.

    The smallest value with at least q% of the values at or below it. ValueError when empty or
    ``q`` is out of range."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    rank = math.ceil(q / 100 * len(sorted_values))
    return float(sorted_values[max(rank, 1) - 1])


def latency_summary(latencies_ns: Sequence[int]) -> dict[str, float | int | None]:
    """p50, p99 and max receive-to-durable latency in milliseconds (None without samples)."""
    if not latencies_ns:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(latencies_ns)
    return {
        "samples": len(ordered),
        "p50_ms": round(percentile(ordered, 50) / 1e6, 3),
        "p99_ms": round(percentile(ordered, 99) / 1e6, 3),
        "max_ms": round(ordered[-1] / 1e6, 3),
    }


def latency_series(
    by_second: Mapping[int, Sequence[int]], origin_s: float | None
) -> list[dict[str, float | int | None]]:
    """:func:`latency_summary` of each receive second (epoch seconds -> latencies in ns), in
    order, with ``t`` = the end of that second minus ``origin_s`` (the run's start, epoch
    seconds; None: the first second's start)."""
    if not by_second:
        return []
    seconds = sorted(by_second)
    origin = float(seconds[0]) if origin_s is None else origin_s
    return [
        {"t": round(second + 1 - origin, 3), **latency_summary(by_second[second])}
        for second in seconds
    ]


@dataclass
class RunFacts:
    """Everything measured about one load-test run (inputs of :func:`build_report`)."""

    settings: dict[str, Any]
    run_id: str
    engine_exit: int | None
    cpu_seconds: float | None
    stats: list[dict[str, Any]]
    run_end: dict[str, Any] | None
    manifest: dict[str, Any] | None
    check: CheckResult | None
    ingest_seconds: float
    latency: dict[str, float | int | None]
    fake_exchange: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    examples: list[Identity] = field(default_factory=list)
    latency_series: list[dict[str, float | int | None]] = field(default_factory=list)
    started_at: str | None = None
    """When the run started (ISO 8601 UTC, the manifest's ``started_at``), for the chart."""


def build_report(facts: RunFacts) -> dict[str, Any]:
    """The ``loadtest.json`` document. ``passed`` needs the engine to exit 0, a complete
    manifest, the exactly-once check passed and no other problem."""
    manifest = facts.manifest or {}
    objects = manifest.get("objects", [])
    records = sum(int(o.get("records", 0)) for o in objects)
    cpu_us = (
        round(facts.cpu_seconds / records * 1e6, 3)
        if facts.cpu_seconds is not None and records
        else None
    )
    rate = round(records / facts.ingest_seconds, 1) if facts.ingest_seconds > 0 else None
    high_water = max((int(s.get("queue_high_water", 0)) for s in facts.stats), default=None)
    peak_rss = facts.run_end.get("peak_rss_mb") if facts.run_end else None
    problems = list(facts.problems)
    if facts.engine_exit != 0:
        problems.append(f"the engine exited with status {facts.engine_exit}")
    if manifest and manifest.get("status") != "complete":
        problems.append(f"the manifest status is {manifest.get('status')!r}")
    if not manifest:
        problems.append(f"the run wrote no manifest ({facts.run_id})")
    check: dict[str, Any] = facts.check.as_dict() if facts.check is not None else {"passed": False}
    if facts.check is not None and facts.check.sent == 0:
        problems.append("the fake exchange sent no trades (see its ledger and log)")
    elif facts.check is not None and not facts.check.passed:
        problems.append(
            f"exactly-once check failed: {facts.check.missing} missing, "
            f"{facts.check.duplicated} duplicated, {facts.check.unexpected} unexpected "
            f"of {facts.check.sent} sent"
        )
    check["examples"] = [list(example) for example in facts.examples]
    return {
        "passed": not problems and bool(check["passed"]),
        "run_id": facts.run_id,
        "started_at": facts.started_at,
        "settings": facts.settings,
        "figures": {
            "trades": records,
            "ingest_seconds": round(facts.ingest_seconds, 3),
            "trades_per_s": rate,
            "cpu_seconds": None if facts.cpu_seconds is None else round(facts.cpu_seconds, 3),
            "cpu_us_per_trade": cpu_us,
            "peak_rss_mb": peak_rss,
            "queue_high_water": high_water,
            "latency": facts.latency,
        },
        "exactly_once": check,
        "engine": {
            "exit_status": facts.engine_exit,
            "manifest_status": manifest.get("status"),
            "stop_reason": manifest.get("stop_reason"),
            "objects": len(objects),
            "bytes": sum(int(o.get("bytes", 0)) for o in objects),
            "counters": manifest.get("counters"),
        },
        "fake_exchange": facts.fake_exchange,
        "problems": problems,
        "series": [
            {
                "t": s.get("t"),
                "trades_per_s": s.get("trades_per_s"),
                "queue_depth": s.get("queue_depth"),
                "queue_depth_peak": s.get("queue_depth_peak"),
                "rss_mb": s.get("rss_mb"),
            }
            for s in facts.stats
        ],
        "latency_series": facts.latency_series,
    }


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def summary_table(report: dict[str, Any]) -> str:
    """The figures of ``report`` as an aligned two-column table, verdict last."""
    figures, check, settings = report["figures"], report["exactly_once"], report["settings"]
    latency = figures["latency"]
    rows = [
        ("trades stored", _fmt(figures["trades"], ",d")),
        ("ingest seconds", _fmt(figures["ingest_seconds"], ".2f")),
        ("sustained trades/s", _fmt(figures["trades_per_s"], ",.0f")),
        ("CPU µs per trade", _fmt(figures["cpu_us_per_trade"], ".2f")),
        ("peak RSS MB", _fmt(figures["peak_rss_mb"], ".1f")),
        ("queue high-water", _fmt(figures["queue_high_water"], ",d")),
        ("latency p50 ms", _fmt(latency.get("p50_ms"), ",.1f")),
        ("latency p99 ms", _fmt(latency.get("p99_ms"), ",.1f")),
        (
            "exactly once",
            ("PASS" if check.get("passed") else "FAIL")
            + f" ({_fmt(check.get('stored'), ',d')} of {_fmt(check.get('sent'), ',d')})",
        ),
    ]
    head = (
        f"feedvault loadtest  {settings.get('protocol')}  rate {settings.get('rate')}  "
        f"{plural(len(settings.get('symbols', [])), 'symbol')}  "
        f"{_fmt(settings.get('duration_s'), 'g')} s  "
        f"{settings.get('format')}  run {report['run_id']}"
    )
    width = max(len(name) for name, _ in rows)
    lines = [head, "-" * len(head)]
    lines += [f"{name:<{width}}  {value:>16}" for name, value in rows]
    lines += [f"problem: {problem}" for problem in report["problems"]]
    lines.append("RESULT: " + ("PASS" if report["passed"] else "FAIL"))
    return "\n".join(lines)
