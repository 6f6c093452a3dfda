"""Progress of a batch job: the counters the job moves (rows read, files done, optional totals).

The application shows them (:mod:`feedvault.batch_progress`): a bar on a TTY, progress log lines
and EMF metrics otherwise.
"""

from __future__ import annotations


class JobProgress:
    """Counters a job updates as it goes. Call from the event loop only (not thread-safe):
    a job updates them after ``await ctx.run_cpu(...)`` returns, not inside the worker.

    ``unit`` names what ``rows`` counts (``rows``, ``paths``); totals are optional and make
    the TTY bar fill (files when ``total_files`` is known, else rows)."""

    def __init__(self, unit: str = "rows") -> None:
        self.unit = unit
        self.rows = 0
        self.files = 0
        self.total_rows: int | None = None
        self.total_files: int | None = None

    def add_rows(self, count: int) -> None:
        """``count`` more rows (or paths, ...) read or processed."""
        self.rows += count

    def file_done(self, count: int = 1) -> None:
        """``count`` more input files finished."""
        self.files += count

    def set_totals(self, *, rows: int | None = None, files: int | None = None) -> None:
        """What the job expects in all (either may stay unknown)."""
        if rows is not None:
            self.total_rows = rows
        if files is not None:
            self.total_files = files

    def fraction(self) -> tuple[float, float]:
        """``(done, total)`` for the bar: files if their total is known, else rows; total 0
        when unknown (an empty bar)."""
        if self.total_files:
            return float(self.files), float(self.total_files)
        if self.total_rows:
            return float(self.rows), float(self.total_rows)
        return 0.0, 0.0

    def as_dict(self) -> dict[str, int | None]:
        """The counters for log lines and the manifest."""
        return {
            "rows": self.rows,
            "total_rows": self.total_rows,
            "files": self.files,
            "total_files": self.total_files,
        }
