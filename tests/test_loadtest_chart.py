"""The load test's chart (feedvault.loadtest_chart), drawn from a recorded report.

tests/data/loadtest_report.json is the ``loadtest.json`` of a real run (``feedvault loadtest
--duration 8 --rate 2000 --symbols 3``). The figure is checked as matplotlib objects (panels,
titles, the lines and what they hold) before it is saved, and the saved file as a PNG.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.text import Text

from feedvault.loadtest_chart import (
    FAIL_COLOR,
    PANEL_TITLES,
    PASS_COLOR,
    build_figure,
    figure_png,
    title_lines,
    write_chart,
)

REPORT = Path(__file__).parent / "data" / "loadtest_report.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def recorded() -> dict[str, Any]:
    report: dict[str, Any] = json.loads(REPORT.read_text())
    return report


def lines_by_label(ax: Any) -> dict[str, Any]:
    return {line.get_label(): line for line in ax.get_lines()}


def suptitle_color(figure: Figure) -> Any:
    (title,) = [text for text in figure.findobj(Text) if text.get_text() == figure.get_suptitle()]
    return title.get_color()


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a PNG has first."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_recorded_report_is_a_real_passing_run() -> None:
    report = recorded()
    assert report["passed"] is True
    assert len(report["series"]) >= 5 and len(report["latency_series"]) >= 5
    assert all(point["queue_depth_peak"] >= point["queue_depth"] for point in report["series"])


def test_the_chart_has_four_panels_on_one_time_axis() -> None:
    report = recorded()
    figure = build_figure(report)
    axes = figure.axes
    assert [ax.get_title(loc="left") for ax in axes] == list(PANEL_TITLES)
    shared = axes[0].get_shared_x_axes()
    assert all(shared.joined(axes[0], ax) for ax in axes[1:])
    assert axes[-1].get_xlabel() == "seconds since the engine started"
    assert axes[-1].get_xlim()[1] >= report["settings"]["duration_s"]


def test_the_title_names_run_date_and_verdict() -> None:
    report = recorded()
    figure = build_figure(report)
    title = figure.get_suptitle()
    first, second = title.split("\n")
    assert report["run_id"] in first and first.endswith("PASS")
    assert report["started_at"][:10] in first and "UTC" in first
    assert "target 2,000 trades/s" in second and "3 symbols" in second
    assert suptitle_color(figure) == PASS_COLOR

    failed = {**report, "passed": False}
    assert title_lines(failed)[0].endswith("FAIL")
    assert suptitle_color(build_figure(failed)) == FAIL_COLOR


def test_each_panel_draws_the_report_series() -> None:
    report = recorded()
    series, latencies = report["series"], report["latency_series"]
    throughput, queue, memory, latency = build_figure(report).axes

    lines = lines_by_label(throughput)
    assert list(lines["trades/s per interval"].get_ydata()) == [p["trades_per_s"] for p in series]
    assert list(lines["trades/s per interval"].get_xdata()) == [p["t"] for p in series]
    assert set(lines["target 2,000/s"].get_ydata()) == {2000.0}
    assert "sustained 2,003/s" in lines

    lines = lines_by_label(queue)
    peaks = lines["high-water mark per interval"]
    assert list(peaks.get_ydata()) == [p["queue_depth_peak"] for p in series]
    assert peaks.get_drawstyle() == "steps-pre"  # each value holds for the interval it ends
    assert "200,000" in queue.get_title(loc="right")  # far above the depth: named, not drawn

    lines = lines_by_label(memory)
    assert list(lines["RSS"].get_ydata()) == [p["rss_mb"] for p in series]
    assert set(lines["peak 68.3 MB"].get_ydata()) == {report["figures"]["peak_rss_mb"]}

    lines = lines_by_label(latency)
    for name in ("p50", "p99", "max"):
        drawn = lines[f"{name} per receive second"]
        assert list(drawn.get_ydata()) == [p[f"{name}_ms"] for p in latencies]
        assert list(drawn.get_xdata()) == [p["t"] for p in latencies]


def test_a_queue_near_its_bound_gets_the_bound_drawn() -> None:
    report = recorded()
    report["settings"]["engine_config"]["queue_maxsize"] = 150
    _, queue, _, _ = build_figure(report).axes
    assert set(lines_by_label(queue)["bound 150"].get_ydata()) == {150.0}
    assert queue.get_title(loc="right") == ""


def test_an_older_report_without_the_interval_peak_charts_the_sampled_depth() -> None:
    report = recorded()
    for point in report["series"]:
        del point["queue_depth_peak"]
    del report["latency_series"], report["started_at"]
    figure = build_figure(report)
    _, queue, _, latency = figure.axes
    assert "depth at the end of each interval" in lines_by_label(queue)
    assert latency.get_lines() == [] and [t.get_text() for t in latency.texts] == ["no data"]
    assert "2026-12-06 06:26 UTC" in figure.get_suptitle()  # the date from the run id


def test_the_chart_is_written_as_a_png(tmp_path: Path) -> None:
    data = figure_png(build_figure(recorded()))
    assert png_size(data) == (1100, 1000)
    assert len(data) > 20_000  # four panels of lines and text, not an empty canvas
    path = tmp_path / "loadtest.png"
    write_chart(recorded(), path)
    assert png_size(path.read_bytes()) == (1100, 1000)
