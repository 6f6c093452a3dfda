"""``feedvault loadtest`` end to end, as a subprocess: fake exchange, S3 server, engine."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from feedvault.subproc import Child
from tests.conftest import S3Server
from tests.harness import FEEDVAULT, base_env, run_feedvault

FIGURES = ("trades_per_s", "cpu_us_per_trade", "peak_rss_mb", "queue_high_water")


def run_loadtest(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEEDVAULT, "loadtest", "--rate", "2000", "--symbols", "3", "--duration", "6",
         "--report", str(tmp_path / "report")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def check_report(tmp_path: Path, done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report" / "loadtest.json").read_text())
    assert report["passed"] is True, report["problems"]
    check = report["exactly_once"]
    assert check["passed"] is True and check["sent"] == check["stored"] > 4000
    figures = report["figures"]
    for name in FIGURES:
        assert isinstance(figures[name], int | float) and figures[name] > 0, name
    assert 1500 < figures["trades_per_s"] < 2500
    latency = figures["latency"]
    assert latency["samples"] == check["stored"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"] < 30_000
    assert len(report["series"]) >= 2
    png = (tmp_path / "report" / "loadtest.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 0 and height > 0
    assert len(report["latency_series"]) >= 2
    assert all(p["queue_depth_peak"] >= p["queue_depth"] for p in report["series"])
    for label in ("sustained trades/s", "latency p99 ms", "RESULT: PASS"):
        assert label in done.stdout
    return report


def test_loadtest_with_its_own_s3_server(tmp_path: Path) -> None:
    done = run_loadtest(tmp_path, base_env())
    report = check_report(tmp_path, done)
    assert "local S3 server" in str(report["settings"])
    assert "loadtest" in done.stderr  # progress lines go to stderr


def test_loadtest_into_configured_s3(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    env = base_env(S3_BUCKET=bucket, S3_PREFIX="lt/", **s3_server.env())
    report = check_report(tmp_path, run_loadtest(tmp_path, env))
    run_id = str(report["run_id"])
    assert f"lt/_manifests/{run_id}.json" in s3_server.keys(bucket, "lt/")


def test_bad_flag_is_a_usage_error(tmp_path: Path) -> None:
    done = run_feedvault(
        base_env(), "loadtest", "--rate", "fast", "--report", str(tmp_path), timeout=30
    )
    assert done.returncode == 2
    assert "--rate" in done.stderr
    assert not (tmp_path / "loadtest.json").exists()


def test_child_that_ignores_sigterm_is_killed_and_reaped(tmp_path: Path) -> None:
    code = (
        "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        'print(\'{"event": "ready"}\', flush=True); sys.stdin.read()'
    )
    child = Child(
        "stubborn",
        [sys.executable, "-c", code],
        base_env(),
        stderr_path=tmp_path / "stderr",
        keep_stdin=True,
    )
    try:
        assert child.wait_for_event("ready", 20) == {"event": "ready"}
        assert child.wait(0.01) is False
        assert child.stop(0.2) == -9
        assert child.rusage is not None and child.rusage.ru_utime >= 0
        assert child.read_line(5) is None  # stdout closed
    finally:
        child.stop(1)


@pytest.mark.parametrize("line", ['{"event": "other"}', "not json"])
def test_child_exiting_before_its_event_is_an_error(tmp_path: Path, line: str) -> None:
    from feedvault.subproc import ChildError

    child = Child(
        "quitter",
        [sys.executable, "-c", f"print({line!r}); import sys; print('boom', file=sys.stderr)"],
        base_env(),
        stderr_path=tmp_path / "stderr",
    )
    try:
        with pytest.raises(ChildError, match="boom"):
            child.wait_for_event("listening", 20)
        assert child.wait(10) and child.exit_status == 0
    finally:
        child.stop(1)
