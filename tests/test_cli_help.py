"""``feedvault --help``, ``feedvault batch --help`` and ``feedvault sample --help`` name every
job with its one-line summary (issue 12: the help said only ``computation``)."""

from __future__ import annotations

import pytest

from batch.registry import JOBS
from tests.harness import base_env, run_feedvault


def _help(*command: str) -> str:
    done = run_feedvault(base_env(COLUMNS="100"), *command, "--help")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _job_lines(text: str) -> dict[str, str]:
    """``{job: summary}`` of the lines ``  job  summary`` in ``text``."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, _, summary = line.strip().partition("  ")
        if name in JOBS and summary.strip():
            found[name] = summary.strip()
    return found


@pytest.mark.parametrize("command", [(), ("batch",)], ids=["feedvault", "batch"])
def test_the_help_lists_every_job_with_its_summary(command: tuple[str, ...]) -> None:
    text = _help(*command)
    assert _job_lines(text) == {name: spec.summary for name, spec in JOBS.items()}


def test_sample_help_lists_the_jobs_that_read_input() -> None:
    expected = {name: spec.summary for name, spec in JOBS.items() if spec.needs_input}
    assert _job_lines(_help("sample")) == expected
    assert "computation" in JOBS and "computation" not in expected
