"""engine.stats' memory readings: RSS through psutil equals the kernel's own figure, and the
peak (``VmHWM``) is at least that."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engine.stats import peak_rss_bytes, rss_bytes

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
SLACK = 4 << 20  # what the interpreter may allocate between two readings


def statm_rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


@linux_only
def test_rss_is_the_resident_size_the_kernel_reports() -> None:
    before, now, after = statm_rss(), rss_bytes(), statm_rss()
    assert min(before, after) - SLACK <= now <= max(before, after) + SLACK


@linux_only
def test_peak_rss_is_this_image_high_water_mark() -> None:
    ballast = b"\x01" * (32 << 20)  # 32 MiB written: the mark rises
    peak = peak_rss_bytes()
    assert peak >= rss_bytes() - SLACK
    assert peak >= len(ballast)
    assert abs(peak - status_kib("VmHWM")) <= SLACK
    del ballast
