"""The soak of `make bench` (issue 7): a 10-minute ``feedvault loadtest`` with flat RSS.

``python -m benchmarks.soak`` runs ``feedvault loadtest --duration 600 --rate 20000`` (the fake
exchange, a local S3 server and the engine, every sent trade checked to be stored exactly once)
and reads the engine's RSS back from ``loadtest.json`` (its ``series``: one engine ``stats``
line per second with ``rss_mb`` and ``t``, seconds since the run started). RSS settles in the
first two minutes (allocator arenas, the first windows and uploads), so it is judged after a
two-minute warm-up:

* ``warm``: the third minute (120-180 s), the post-warm-up level, against ``last``: the last
  minute of streaming, by their medians (RSS between window closes);
* peaks: the post-warm-up time in two halves, each holding several window closes (with the
  default ``WINDOW_SECONDS=60`` a close briefly holds a compressed window and its upload
  buffers: the peaks), the later half's peak against the earlier's;
* ``slope``: least-squares growth of RSS after the warm-up, in MB per minute.

Flat means: the last minute's median within ``--median-tolerance`` (5%) of the warm one, the
later peak within ``--peak-tolerance`` (10%) of the earlier, and a slope under 1 MB/min. The
figures (with a per-minute median/peak table) are printed and written to ``DIR/soak.json``;
exit 0 when the loadtest passed and RSS is flat, 1 otherwise. ``--from-report DIR`` judges an
existing loadtest report instead of running one. Rate 20,000 trades/s keeps the 2-core machine
busy (engine, fake exchange and S3 server together) but not saturated; the engine alone does
~130,000/s flat out.

Usage: ``python -m benchmarks.soak [--duration 600] [--rate 20000] [--report DIR]
[--from-report DIR]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
WARM_UP_S = 120.0
WINDOW_S = 60.0
MAX_SLOPE_MB_PER_MIN = 1.0


def run_loadtest(report: Path, duration: float, rate: int) -> int:
    """Run the loadtest (bounded: its own safety limit, plus ours); return its exit status."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    for name in ("S3_BUCKET", "S3_PREFIX"):  # always the local S3 server
        env.pop(name, None)
    cmd = [
        PY,
        "-m",
        "feedvault",
        "loadtest",
        "--duration",
        f"{duration:g}",
        "--rate",
        str(rate),
        "--report",
        str(report),
    ]
    print(f"soak: {' '.join(cmd[2:])} (about {duration / 60:.0f} min + read-back)", flush=True)
    try:
        return subprocess.run(cmd, env=env, timeout=duration * 2 + 900, check=False).returncode
    except subprocess.TimeoutExpired:
        print("soak: the loadtest did not finish in time", file=sys.stderr)
        return 1


def _summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    values = [rss for _, rss in samples]
    return {
        "samples": len(values),
        "median_mb": round(statistics.median(values), 1),
        "peak_mb": round(max(values), 1),
        "min_mb": round(min(values), 1),
    }


def _slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over time, MB per minute."""
    ts = [t for t, _ in samples]
    mean_t = statistics.fmean(ts)
    mean_r = statistics.fmean(r for _, r in samples)
    var = sum((t - mean_t) ** 2 for t in ts)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    return cov / var * 60.0


def judge(report: dict[str, Any], median_tolerance: float, peak_tolerance: float) -> dict[str, Any]:
    """The soak's figures and verdict from a loadtest report."""
    samples = sorted(
        (float(doc["t"]), float(doc["rss_mb"]))
        for doc in report.get("series") or []
        if doc.get("t") is not None and doc.get("rss_mb") is not None
    )
    duration = float(report.get("settings", {}).get("duration_s") or 0)
    end = min(duration, samples[-1][0]) if samples and duration else 0.0
    if not samples or end < 3 * WINDOW_S:
        return {"flat": False, "problem": "too short a series to judge (needs 3 minutes)"}
    mid = (WARM_UP_S + end) / 2
    warm = [s for s in samples if WARM_UP_S <= s[0] < WARM_UP_S + WINDOW_S]
    last = [s for s in samples if end - WINDOW_S <= s[0] <= end]
    earlier = [s for s in samples if WARM_UP_S <= s[0] < mid]
    later = [s for s in samples if mid <= s[0] <= end]
    figures: dict[str, Any] = {
        "first_minute": _summary([s for s in samples if s[0] < WINDOW_S]),
        "warm": _summary(warm),
        "last_minute": _summary(last),
        "earlier_half": _summary(earlier),
        "later_half": _summary(later),
        "slope_mb_per_min": round(_slope(earlier + later), 3),
        "per_minute": [
            {"minute": m, **_summary(chunk)}
            for m in range(math.ceil(end / WINDOW_S))
            if (chunk := [s for s in samples if m * WINDOW_S <= s[0] < (m + 1) * WINDOW_S])
        ],
    }
    median_growth = figures["last_minute"]["median_mb"] / figures["warm"]["median_mb"] - 1
    peak_growth = figures["later_half"]["peak_mb"] / figures["earlier_half"]["peak_mb"] - 1
    figures["median_growth"] = round(median_growth, 4)
    figures["peak_growth"] = round(peak_growth, 4)
    figures["flat"] = (
        median_growth <= median_tolerance
        and peak_growth <= peak_tolerance
        and figures["slope_mb_per_min"] < MAX_SLOPE_MB_PER_MIN
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--report", type=Path, default=REPO / "bench-output" / "soak")
    parser.add_argument("--from-report", type=Path, help="judge an existing loadtest report")
    parser.add_argument("--median-tolerance", type=float, default=0.05)
    parser.add_argument("--peak-tolerance", type=float, default=0.10)
    args = parser.parse_args(argv)

    report_dir: Path = args.from_report or args.report
    status = 0
    if args.from_report is None:
        status = run_loadtest(report_dir, args.duration, args.rate)
    path = report_dir / "loadtest.json"
    if not path.exists():
        print(f"soak: no report at {path}", file=sys.stderr)
        return 1
    report = json.loads(path.read_text())
    figures = judge(report, args.median_tolerance, args.peak_tolerance)
    loadtest_figures = report.get("figures") or {}
    figures.update(
        {
            "loadtest_exit": status,
            "loadtest_passed": bool(report.get("passed")),
            "settings": {
                k: report.get("settings", {}).get(k) for k in ("rate", "duration_s", "format")
            },
            "trades": loadtest_figures.get("trades"),
            "trades_per_s": loadtest_figures.get("trades_per_s"),
            "cpu_us_per_trade": loadtest_figures.get("cpu_us_per_trade"),
            "engine_peak_rss_mb": loadtest_figures.get("peak_rss_mb"),
            "exactly_once": report.get("exactly_once"),
        }
    )
    (report_dir / "soak.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(format_figures(figures))
    ok = figures["loadtest_passed"] and figures.get("flat", False)
    print(f"soak: {'PASSED' if ok else 'FAILED'} (report {report_dir / 'soak.json'})")
    return 0 if ok else 1


def format_figures(figures: dict[str, Any]) -> str:
    if "problem" in figures:
        return f"soak: {figures['problem']}"
    lines = [f"{'RSS MB':<22}{'median':>8}{'peak':>8}{'min':>8}{'samples':>9}"]
    rows = [(f"minute {m['minute']}", m) for m in figures["per_minute"]]
    rows += [
        ("warm (120-180 s)", figures["warm"]),
        ("last minute", figures["last_minute"]),
        ("earlier half", figures["earlier_half"]),
        ("later half", figures["later_half"]),
    ]
    for label, s in rows:
        lines.append(
            f"{label:<22}{s['median_mb']:>8.1f}{s['peak_mb']:>8.1f}{s['min_mb']:>8.1f}"
            f"{s['samples']:>9}"
        )
    lines.append(
        f"last minute vs warm median {figures['median_growth']:+.1%}; later vs earlier peak "
        f"{figures['peak_growth']:+.1%}; slope {figures['slope_mb_per_min']:+.2f} MB/min; "
        f"flat: {figures['flat']}"
    )
    lines.append(
        f"loadtest: {figures.get('trades')} trades, {figures.get('trades_per_s')} trades/s, "
        f"{figures.get('cpu_us_per_trade')} CPU us/trade, engine peak RSS "
        f"{figures.get('engine_peak_rss_mb')} MB, exactly once: "
        f"{(figures.get('exactly_once') or {}).get('passed')}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
