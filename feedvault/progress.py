"""Progress for long-running commands: a redrawn bar on a TTY, plain lines otherwise.

::

    progress = Progress(total=30.0, label="loadtest")
    progress.update(elapsed, "137,233 trades/s")   # as often as you like
    progress.finish()

On a TTY the bar is redrawn in place (``\\r``) at most every ``redraw_seconds``; otherwise one
line is printed every ``line_seconds`` of elapsed time, so logs stay short. Output goes to
``stream`` (stderr by default), leaving stdout for results.

The bar is tqdm's (the ``chart`` and ``batch`` extras; imported only when a bar is drawn, so a
log-only run never needs it): :func:`tqdm.tqdm.format_meter` renders the meter and
:func:`tqdm.tqdm.status_printer` redraws the line in place, blanking what a longer line left.
tqdm rather than rich: one small package with no dependencies of its own (rich brings pygments
and markdown-it), and its ASCII meter draws the bar this command always drew, so the output is
unchanged. The redraws stay paced by the ``elapsed`` value callers pass rather than by tqdm's
wall clock, and the bar is not redrawn on finish: what callers (and tests, with no clock) see
depends only on what they report.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Final, TextIO

BAR_CHARS: Final = ".#"
"""tqdm's meter characters: empty, then full (an ASCII bar: ``[#####.....]``)."""


def render_bar(elapsed: float, total: float, width: int = 30) -> str:
    """``[#########.....]`` filled in proportion to ``elapsed / total`` (clamped to 0..1)."""
    from tqdm import tqdm

    fraction = 0.0 if total <= 0 else min(max(elapsed / total, 0.0), 1.0)
    meter: str = tqdm.format_meter(
        fraction, 1.0, 0.0, bar_format=f"[{{bar:{width}}}]", ascii=BAR_CHARS
    )
    return meter


def progress_text(
    label: str, elapsed: float, total: float, detail: str, position: str | None = None
) -> str:
    """``label  12.0/30 s  detail`` (the part shared by the bar and the plain lines);
    ``position`` replaces the ``12.0/30 s`` part (e.g. ``12,000/50,000 rows``)."""
    where = position if position is not None else f"{elapsed:5.1f}/{total:g} s"
    return f"{label}  {where}  {detail}".rstrip()


class Progress:
    """See the module docstring. Not thread-safe."""

    def __init__(
        self,
        total: float,
        *,
        label: str,
        stream: TextIO | None = None,
        is_tty: bool | None = None,
        line_seconds: float = 5.0,
        redraw_seconds: float = 0.2,
        position: Callable[[float, float], str] | None = None,
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = self.stream.isatty() if is_tty is None else is_tty
        self.line_seconds = line_seconds
        self.redraw_seconds = redraw_seconds
        #: Renders ``(done, total)`` in place of ``12.0/30 s`` when the bar counts something
        #: other than seconds (rows, files); None keeps the seconds form.
        self.position = position
        self._next_line = line_seconds
        self._last_draw = float("-inf")
        self._width = 0
        self._printer: Callable[[str], None] | None = None

    def update(self, elapsed: float, detail: str = "") -> None:
        """Report ``elapsed`` seconds of ``total``, with a short ``detail``."""
        where = self.position(elapsed, self.total) if self.position is not None else None
        text = progress_text(self.label, elapsed, self.total, detail, where)
        if self.is_tty:
            if elapsed - self._last_draw < self.redraw_seconds:
                return
            self._last_draw = elapsed
            line = f"{render_bar(elapsed, self.total)} {text}"
            self._redraw(line)
        elif elapsed >= self._next_line:
            while self._next_line <= elapsed:
                self._next_line += self.line_seconds
            self.stream.write(text + "\n")
        else:
            return
        self.stream.flush()

    def _redraw(self, line: str) -> None:
        """``\\r`` and ``line`` over the bar drawn before (tqdm's status printer pads it)."""
        if self._printer is None:
            from tqdm import tqdm

            self._printer = tqdm.status_printer(self.stream)
        self._printer(line)
        self._width = len(line)

    def note(self, text: str) -> None:
        """A message of its own line (clears the bar first on a TTY)."""
        if self.is_tty and self._width:
            self._redraw("")
            self.stream.write("\r")
            self._width = 0
            self._last_draw = float("-inf")
            self._printer = None
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the bar's line on a TTY (nothing otherwise)."""
        if self.is_tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
