"""``loadtest.png``: the load test's chart, drawn with matplotlib from the report alone.

Four panels share one time axis, seconds since the engine's ``run_start`` line (the report's
``series`` and ``latency_series``, :mod:`feedvault.loadtest_report`):

1. **throughput**: trades/s per stats interval, against the target rate (``--rate``; none for
   ``max``) and the run's sustained rate;
2. **queue depth**: each interval's high-water mark (the stats line's ``queue_depth_peak``),
   against the bound ``QUEUE_MAXSIZE``; a report made before the mark existed gives the depth
   sampled at the end of each interval, and the legend says so;
3. **memory**: the engine's RSS per interval and its peak (``VmHWM``);
4. **latency**: receive-to-durable p50, p99 and max of the trades received in each second.

The title names the run, its date and the verdict (PASS in green, FAIL in red); a second line
gives the settings and the headline figures. The chart is one a report can carry: it reads
without the JSON next to it.

matplotlib is the ``chart`` extra (``pip install 'feedvault[chart]'``) and is imported only when
a chart is drawn; :func:`require` checks for it before a load test starts, so a run without it
stops at once with one line naming the extra. The figure is a plain
:class:`matplotlib.figure.Figure` on the Agg canvas: no pyplot, no global state, no display
(docs: load-testing.md).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from engine.errors import ConfigError
from engine.text import plural

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL_HINT: Final = "pip install 'feedvault[chart]'"
CHART_MODULES: Final = {"matplotlib": "the load test's chart", "tqdm": "its progress bar"}
"""What the ``chart`` extra installs, and what needs it."""

PANEL_TITLES: Final = (
    "throughput (trades/s)",
    "queue depth (records)",
    "memory (RSS, MB)",
    "receive-to-durable latency (ms)",
)
PASS_COLOR: Final = "#1a7f37"
FAIL_COLOR: Final = "#cf222e"
COLORS: Final = {
    "rate": "#0969da",
    "target": "#57606a",
    "queue": "#bc4c00",
    "bound": "#57606a",
    "rss": "#8250df",
    "p50": "#0969da",
    "p99": "#bc4c00",
    "max": "#cf222e",
}
HEADROOM: Final = 1.3
"""The y axes reach 30% above the highest value, so the legend does not hide the lines."""
BOUND_SHOWN_FROM: Final = 0.2
"""The queue's bound is drawn as a line once the depth reaches this share of it."""
WIDTH_IN: Final = 11.0
HEIGHT_IN: Final = 10.0
DPI: Final = 100


def require() -> None:
    """:class:`ConfigError` naming the ``chart`` extra unless its libraries import."""
    for name, user in CHART_MODULES.items():
        try:
            __import__(name)
        except ImportError:
            raise ConfigError(name, f"is not installed; {user} needs it: {INSTALL_HINT}") from None


def _points(series: Sequence[Mapping[str, Any]], name: str) -> tuple[list[float], list[float]]:
    """The (t, value) pairs of ``series`` where both are numbers."""
    ts: list[float] = []
    values: list[float] = []
    for point in series:
        t, value = point.get("t"), point.get(name)
        if isinstance(t, int | float) and isinstance(value, int | float):
            ts.append(float(t))
            values.append(float(value))
    return ts, values


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a positive number (or a numeric string), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _date(report: Mapping[str, Any]) -> str:
    """``2026-12-06 06:31 UTC`` from the report's ``started_at``, else from the run id."""
    stamp = str(report.get("started_at") or "")
    if len(stamp) >= 16 and stamp[10] == "T":
        return f"{stamp[:10]} {stamp[11:16]} UTC"
    run_id = str(report.get("run_id") or "")
    if len(run_id) >= 13 and run_id[8] == "T" and run_id[:8].isdigit():
        return f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]} {run_id[9:11]}:{run_id[11:13]} UTC"
    return "date unknown"


def title_lines(report: Mapping[str, Any]) -> tuple[str, str]:
    """The title (run id, date, verdict) and the line of settings and headline figures."""
    verdict = "PASS" if report.get("passed") else "FAIL"
    title = f"feedvault loadtest  ·  run {report.get('run_id')}  ·  {_date(report)}  ·  {verdict}"
    settings = report.get("settings") or {}
    figures = report.get("figures") or {}
    latency = figures.get("latency") or {}
    rate = settings.get("rate")
    parts = [
        str(settings.get("protocol", "?")),
        "rate max" if rate == "max" else f"target {_fmt(_number(rate), ',.0f')} trades/s",
        plural(len(settings.get("symbols") or []), "symbol"),
        f"{_fmt(_number(settings.get('duration_s')), 'g')} s",
        str(settings.get("format", "?")),
        f"{_fmt(figures.get('trades'), ',d')} trades",
        f"sustained {_fmt(figures.get('trades_per_s'), ',.0f')}/s",
        f"p99 {_fmt(latency.get('p99_ms'), ',.0f')} ms",
        f"peak RSS {_fmt(figures.get('peak_rss_mb'), '.0f')} MB",
    ]
    return title, "  ·  ".join(parts)


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if not isinstance(value, int | float) else format(value, spec)


def build_figure(report: Mapping[str, Any]) -> Figure:
    """The chart of ``report`` (a ``loadtest.json`` document) as a matplotlib Figure, one
    axes per :data:`PANEL_TITLES` in that order, sharing x; each line has a legend label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import StrMethodFormatter

    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(PANEL_TITLES), 1, sharex=True)
    series: list[Mapping[str, Any]] = list(report.get("series") or [])
    latencies: list[Mapping[str, Any]] = list(report.get("latency_series") or [])
    settings = report.get("settings") or {}
    figures = report.get("figures") or {}

    throughput, queue, memory, latency = axes
    _throughput(throughput, series, settings, figures)
    _queue(queue, series, settings)
    _memory(memory, series, figures)
    _latency(latency, latencies)

    for ax, name in zip(axes, PANEL_TITLES, strict=True):
        ax.set_title(name, loc="left", fontsize=10, fontweight="bold")
        ax.grid(True, color="#d0d7de", linewidth=0.6)
        ax.set_ylim(0, max(ax.get_ylim()[1], 1.0) * HEADROOM)  # room for the legend
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        if ax.get_lines():
            ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="#57606a")
    duration = _number(settings.get("duration_s")) or 0.0
    last = max(_points(series, "trades_per_s")[0] + _points(latencies, "p50_ms")[0], default=0.0)
    latency.set_xlim(0, max(duration, last, 1.0))
    latency.set_xlabel("seconds since the engine started")

    title, subtitle = title_lines(report)
    figure.suptitle(
        f"{title}\n{subtitle}",
        fontsize=11,
        color=PASS_COLOR if report.get("passed") else FAIL_COLOR,
    )
    return figure


def _throughput(
    ax: Axes,
    series: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    figures: Mapping[str, Any],
) -> None:
    ts, rates = _points(series, "trades_per_s")
    if ts:
        ax.plot(ts, rates, color=COLORS["rate"], marker=".", label="trades/s per interval")
    _level(ax, settings.get("rate"), COLORS["target"], "--", "target {:,.0f}/s")
    if ts:
        _level(ax, figures.get("trades_per_s"), COLORS["rate"], ":", "sustained {:,.0f}/s")


def _queue(ax: Axes, series: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> None:
    ts, peaks = _points(series, "queue_depth_peak")
    label = "high-water mark per interval"
    if not ts:  # a report from before the stats line carried the interval's mark
        ts, peaks = _points(series, "queue_depth")
        label = "depth at the end of each interval"
    if ts:
        ax.step(ts, peaks, where="pre", color=COLORS["queue"], label=label)
    bound = _number((settings.get("engine_config") or {}).get("queue_maxsize"))
    if bound is not None and max(peaks, default=0.0) >= bound * BOUND_SHOWN_FROM:
        ax.axhline(bound, color=COLORS["bound"], linestyle="--", label=f"bound {bound:,.0f}")
    elif bound is not None:  # a line at the bound would flatten the depth to nothing
        ax.set_title(f"bound {bound:,.0f} (QUEUE_MAXSIZE), off the scale", loc="right", fontsize=8)


def _memory(ax: Axes, series: Sequence[Mapping[str, Any]], figures: Mapping[str, Any]) -> None:
    ts, rss = _points(series, "rss_mb")
    if ts:
        ax.plot(ts, rss, color=COLORS["rss"], marker=".", label="RSS")
    _level(ax, figures.get("peak_rss_mb"), COLORS["rss"], "--", "peak {:,.1f} MB")


def _level(ax: Axes, value: Any, color: str, linestyle: str, label: str) -> None:
    """A horizontal line at ``value`` of the report, labelled ``label.format(value)``; none when
    ``value`` is not a positive number (:func:`_number`)."""
    number = _number(value)
    if number is not None:
        ax.axhline(number, color=color, linestyle=linestyle, label=label.format(number))


def _latency(ax: Axes, latencies: Sequence[Mapping[str, Any]]) -> None:
    for name, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")):
        ts, values = _points(latencies, name)
        if ts:
            ax.plot(ts, values, color=COLORS[label], label=f"{label} per receive second")


def figure_png(figure: Figure) -> bytes:
    """``figure`` as PNG bytes (the Agg canvas)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_chart(report: Mapping[str, Any], path: Path) -> None:
    """Draw ``report`` and write it to ``path`` as a PNG."""
    path.write_bytes(figure_png(build_figure(report)))
