"""Stacked line charts as PNG files, with no plotting library (see :mod:`feedvault.png`).

::

    png = render_chart(
        [Panel("trades/s", [(0.0, 0.0), (1.0, 1200.0)], BLUE), Panel("RSS MB", [...], RED)],
        title="feedvault loadtest",
        x_label="time (s)",
    )

Each :class:`Panel` is drawn in its own band, one under the other, sharing the x range: a title,
a left axis and a bottom axis with tick marks at "nice" values (1, 2 or 5 times a power of ten)
and their labels, light grid lines, and the series as a 2-pixel polyline. Text uses the 5x7
bitmap font (upper case, digits and a little punctuation).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from feedvault.png import Canvas, Color

BLACK: Final[Color] = (0, 0, 0)
GREY: Final[Color] = (110, 110, 110)
GRID: Final[Color] = (225, 225, 225)
BLUE: Final[Color] = (31, 119, 180)
ORANGE: Final[Color] = (230, 120, 20)
GREEN: Final[Color] = (44, 160, 44)
RED: Final[Color] = (214, 39, 40)

SCALE: Final = 2
"""Font scale for every label (5x7 glyphs drawn as 10x14)."""
LEFT: Final = 100
RIGHT: Final = 24
TITLE_BAND: Final = 40
PANEL_GAP: Final = 12
X_LABEL_BAND: Final = 34


@dataclass(frozen=True, slots=True)
class Panel:
    """One band of the chart: ``points`` are (x, y) pairs in x order."""

    title: str
    points: Sequence[tuple[float, float]]
    color: Color = BLUE


def nice_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Tick values covering ``[lo, hi]``: evenly spaced by 1, 2 or 5 times a power of ten,
    first <= lo, last >= hi, at most ``max_ticks + 1`` of them. ``lo == hi`` widens to
    ``[lo, lo + 1]``. Raises ValueError when ``lo > hi``, a bound is not finite or
    ``max_ticks < 1``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or max_ticks < 1:
        raise ValueError(f"bad tick range [{lo}, {hi}] / {max_ticks}")
    if hi == lo:
        hi = lo + 1
    raw = (hi - lo) / max_ticks
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    first = math.floor(lo / step + 1e-9) * step
    count = math.ceil((hi - first) / step - 1e-9)
    return [_clean(first + i * step) for i in range(count + 1)]


def _clean(value: float) -> float:
    """Round away float noise (0.30000000000000004 -> 0.3)."""
    return float(f"{value:.12g}")


def format_tick(value: float) -> str:
    """A short label: ``0``, ``2.5``, ``750``, ``12K``, ``1.5M``, ``2G``."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    if value == int(value):
        return str(int(value))
    return f"{value:.3g}"


def render_chart(
    panels: Sequence[Panel],
    *,
    title: str = "",
    x_label: str = "",
    width: int = 1000,
    panel_height: int = 240,
    x_max: float = 0.0,
) -> bytes:
    """The PNG of ``panels`` stacked top to bottom over one shared x range (from 0, or the
    smallest x if negative, to the largest x or ``x_max``). Raises ValueError without panels
    or when the size leaves no room to plot."""
    if not panels:
        raise ValueError("a chart needs at least one panel")
    if width < LEFT + RIGHT + 50 or panel_height < 100:
        raise ValueError("chart too small")
    height = TITLE_BAND + len(panels) * (panel_height + PANEL_GAP) + X_LABEL_BAND
    canvas = Canvas(width, height)
    if title:
        canvas.text((width - Canvas.text_width(title, SCALE)) // 2, 12, title, BLACK, SCALE)
    xs = [x for panel in panels for x, _ in panel.points]
    x_ticks = nice_ticks(min([0.0, *xs]), max([x_max, *xs]), max_ticks=10)
    for index, panel in enumerate(panels):
        top = TITLE_BAND + index * (panel_height + PANEL_GAP)
        _draw_panel(canvas, panel, top, panel_height, x_ticks)
    if x_label:
        canvas.text(
            LEFT + (width - LEFT - RIGHT - Canvas.text_width(x_label, SCALE)) // 2,
            height - Canvas.text_height(SCALE) - 6,
            x_label,
            BLACK,
            SCALE,
        )
    return canvas.to_png()


def _draw_panel(
    canvas: Canvas, panel: Panel, top: int, panel_height: int, x_ticks: list[float]
) -> None:
    text_h = Canvas.text_height(SCALE)
    canvas.text(LEFT, top, panel.title, panel.color, SCALE)
    plot_top = top + text_h + 10
    plot_bottom = top + panel_height - text_h - 12
    plot_left, plot_right = LEFT, canvas.width - RIGHT
    ys = [y for _, y in panel.points]
    y_ticks = nice_ticks(min([0.0, *ys]), max([0.0, *ys]), max_ticks=4)
    x_lo, x_hi = x_ticks[0], x_ticks[-1]
    y_lo, y_hi = y_ticks[0], y_ticks[-1]

    def px(x: float) -> int:
        return plot_left + round((x - x_lo) / (x_hi - x_lo) * (plot_right - plot_left))

    def py(y: float) -> int:
        return plot_bottom - round((y - y_lo) / (y_hi - y_lo) * (plot_bottom - plot_top))

    for tick in y_ticks:
        y = py(tick)
        canvas.line(plot_left + 1, y, plot_right, y, GRID)
        canvas.line(plot_left - 6, y, plot_left - 1, y, BLACK)
        label = format_tick(tick)
        canvas.text(
            plot_left - 10 - Canvas.text_width(label, SCALE), y - text_h // 2, label, GREY, SCALE
        )
    for tick in x_ticks:
        x = px(tick)
        canvas.line(x, plot_bottom + 1, x, plot_bottom + 6, BLACK)
        label = format_tick(tick)
        canvas.text(x - Canvas.text_width(label, SCALE) // 2, plot_bottom + 9, label, GREY, SCALE)
    canvas.line(plot_left, plot_top, plot_left, plot_bottom, BLACK)
    canvas.line(plot_left, plot_bottom, plot_right, plot_bottom, BLACK)
    points = [(px(x), py(y)) for x, y in panel.points]
    if not points:
        label = "NO DATA"
        canvas.text(
            (plot_left + plot_right - Canvas.text_width(label, SCALE)) // 2,
            (plot_top + plot_bottom) // 2,
            label,
            GREY,
            SCALE,
        )
    elif len(points) == 1:
        (x, y) = points[0]
        canvas.fill(x - 2, y - 2, x + 2, y + 2, panel.color)
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        canvas.line(x0, y0, x1, y1, panel.color, width=2)
