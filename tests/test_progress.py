"""feedvault.progress: tqdm's bar on a TTY, byte for byte the bar it replaced; plain lines
otherwise, without importing tqdm."""

from __future__ import annotations

import io
import subprocess
import sys

from feedvault.progress import Progress
from tests.harness import base_env


def test_tty_output_is_redrawn_in_place_and_cleared_for_notes() -> None:
    tty = io.StringIO()
    bar = Progress(30, label="lt", stream=tty, is_tty=True)
    bar.update(3.0, "100 trades/s")
    bar.note("a note")
    bar.update(6.0, "200 trades/s")
    bar.update(9.0, "2")
    bar.finish()
    first = "[###...........................] lt    3.0/30 s  100 trades/s"
    second = "[######........................] lt    6.0/30 s  200 trades/s"
    third = "[#########.....................] lt    9.0/30 s  2"
    assert tty.getvalue() == (
        f"\r{first}\r{' ' * len(first)}\ra note\n"
        f"\r{second}\r{third}{' ' * (len(second) - len(third))}\n"
    )


def test_a_finished_bar_is_full_and_a_bar_without_total_empty() -> None:
    tty = io.StringIO()
    bar = Progress(
        10,
        label="job",
        stream=tty,
        is_tty=True,
        redraw_seconds=0.0,  # as the batch reporter draws: every call
        position=lambda done, total: f"{done:g}/{total:g}",
    )
    bar.update(12, "over")  # past the total: clamped
    bar.total = 0
    bar.update(15, "unknown total")
    assert tty.getvalue().split("\r")[1:] == [
        "[##############################] job  12/10  over",
        "[..............................] job  15/0  unknown total",
    ]


def test_plain_lines_do_not_load_tqdm() -> None:
    code = (
        "import io, sys; from feedvault.progress import Progress; "
        "p = Progress(30, label='lt', stream=io.StringIO(), is_tty=False, line_seconds=5); "
        "[p.update(t, 'x') for t in range(12)]; p.note('n'); p.finish(); "
        "print('tqdm' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "False"
