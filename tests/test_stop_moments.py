"""SIGTERM at 20 moments of a run (issue 7): during reads, at a window close, during an upload,
during a multipart upload (a part or CompleteMultipartUpload) and during the manifest write.

Each moment is made real rather than left to a random wall time: the fault proxy in front of
moto's S3 server holds the chosen request (``slow``: forwarded late, never lost) and reports when
it arrived, and a seeded random delay from there places the SIGTERM while it is held; a window
close is aimed at a wall-clock window boundary (``WINDOW_SECONDS=1``); reads are signalled
before any window could close. Each run must exit 0 within ``STOP_GRACE_SECONDS`` with a
complete manifest, ``feedvault verify`` must pass, every trade of the fake exchange's ledger
must be stored exactly once, and the run's logs and the proxy's record must show the moment was
hit.

Seeds 0 and 1 of each kind run in ``make test``; ``make bench`` runs all 20
(``FEEDVAULT_STOP_MOMENTS=all``), and runs seeds 0 and 1 twenty times more while CPU burners load
the machine (``benchmarks/stress_stop.py``): a loaded machine makes every stop slow, and none may
lose a trade.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import S3Server
from tests.faultproxy import complete_multipart, final_manifest_put, put_object, slow, upload_part
from tests.harness import (
    assert_stored_exactly_once,
    read_manifest,
    run_verify,
    stored_trades,
    stream_settings,
    wait_for_log,
)
from tests.stop_harness import (
    GRACE,
    MULTIPART,
    PREFIX,
    MiB,
    StopRun,
    WatchedProxy,
    run_with_signals,
    send,
    sleep_until,
    window_start_of,
)

HOLD_SECONDS = 3.0
"""How long the proxy holds the chosen upload request (the SIGTERM lands inside it)."""
MANIFEST_HOLD_SECONDS = 2.0
"""How long the manifest PUT is held (inside the engine's manifest-write bound)."""

KINDS = {
    "reads": 4,
    "window-close": 4,
    "upload": 4,
    "multipart": 4,
    "manifest": 4,
}
MOMENTS = [(kind, seed) for kind, count in KINDS.items() for seed in range(count)]
assert len(MOMENTS) == 20
MULTIPART_TARGETS = ["part-1", "complete", "part-2", "part-1"]
"""Which multipart request is held, by seed."""
ALL_MOMENTS = os.environ.get("FEEDVAULT_STOP_MOMENTS") == "all"
"""``make test`` runs seeds 0 and 1 of each kind (10 runs, about a minute: a multipart moment
streams some 400k trades); ``make bench`` sets ``FEEDVAULT_STOP_MOMENTS=all`` for all 20."""


def _moment_param(kind: str, seed: int) -> Any:
    skip = pytest.mark.skipif(
        not ALL_MOMENTS and seed >= 2,
        reason="one of the 20 moments run by make bench (FEEDVAULT_STOP_MOMENTS=all)",
    )
    return pytest.param(kind, seed, id=f"{kind}-{seed}", marks=skip)


@pytest.mark.parametrize(("kind", "seed"), [_moment_param(kind, seed) for kind, seed in MOMENTS])
def test_sigterm_at_a_moment_stores_every_trade_once(
    s3_server: S3Server,
    bucket: str,
    tmp_path: Path,
    watched: WatchedProxy,
    kind: str,
    seed: int,
) -> None:
    rng = random.Random(f"issue7-{kind}-{seed}")
    evidence: dict[str, Any] = {}
    run = MOMENT_RUNS[kind](watched, bucket, tmp_path, rng, seed, evidence)

    assert run.returncode == 0, run.describe()
    assert run.took < GRACE, f"exit {run.took:.1f}s after SIGTERM, over STOP_GRACE_SECONDS"
    client = s3_server.client()
    manifest = read_manifest(client, bucket, PREFIX)
    assert manifest["status"] == "complete", manifest
    assert manifest["stop_reason"] == ("deadline" if kind == "manifest" else "signal")
    assert manifest["spilled"] == []
    stored = stored_trades(client, bucket, PREFIX)
    assert_stored_exactly_once(run.ledger, stored)
    assert manifest["counters"]["parsed"] == len(stored) == len(run.ledger)
    verified = run_verify(s3_server.env(), bucket, PREFIX)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    CHECKS[kind](run, manifest, watched, evidence)


# -- the moments ---------------------------------------------------------------------------------


def _reads(
    proxy: WatchedProxy,
    bucket: str,
    tmp_path: Path,
    rng: random.Random,
    seed: int,
    evidence: dict[str, Any],
) -> StopRun:
    """Windows of an hour: nothing is uploaded before the stop, so the signal lands while the
    only work is reading the socket; a seeded delay after the first stats line."""

    def trigger(proc: subprocess.Popen[str], logs: list[dict[str, Any]]) -> list[float]:
        logs += wait_for_log(proc, "stats", timeout=30)
        sleep_until(time.monotonic() + rng.uniform(0.0, 1.5))
        at = send(proc)
        evidence["requests_before"] = list(proxy.log)
        return [at]

    return run_with_signals(proxy, bucket, tmp_path, trigger, WINDOW_SECONDS="3600")


def _check_reads(
    run: StopRun, manifest: dict[str, Any], proxy: WatchedProxy, evidence: dict[str, Any]
) -> None:
    before = evidence["requests_before"]
    assert not [r for r in before if "/trades/" in r[1]], "an upload began before the signal"
    stats = run.events("stats")
    assert stats and stats[0]["trades_per_s"] > 0, "no trades were being read"
    assert stats[0]["objects"] == 0 and stats[0]["uploads_in_flight"] == 0


def _window_close(
    proxy: WatchedProxy,
    bucket: str,
    tmp_path: Path,
    rng: random.Random,
    seed: int,
    evidence: dict[str, Any],
) -> StopRun:
    """``WINDOW_SECONDS=1`` windows are aligned to wall-clock seconds: the signal goes out a
    seeded 0-300 ms after a boundary, as that second's windows are being closed and uploaded
    (housekeeping closes them within 250 ms)."""

    def trigger(proc: subprocess.Popen[str], logs: list[dict[str, Any]]) -> list[float]:
        logs += wait_for_log(proc, "stats", timeout=30)
        boundary = math.floor(time.time()) + 2
        offset = rng.uniform(0.0, 0.3)
        sleep_until(time.monotonic() + (boundary + offset - time.time()))
        at = send(proc)
        evidence["boundary"] = boundary
        evidence["late_by"] = time.time() - boundary
        return [at]

    return run_with_signals(proxy, bucket, tmp_path, trigger, WINDOW_SECONDS="1")


def _check_window_close(
    run: StopRun, manifest: dict[str, Any], proxy: WatchedProxy, evidence: dict[str, Any]
) -> None:
    boundary = evidence["boundary"]
    assert evidence["late_by"] >= 0.0, evidence
    # The engine's own time of handling the signal: sent 0-300 ms after the boundary, as the
    # closed second's windows were being closed (housekeeping closes them within 250 ms). A
    # loaded machine may deliver it later; within that second is still the stop of a run
    # whose windows had just closed, and later would be another moment: a failure.
    (signalled,) = run.events("signal")
    handled = datetime.strptime(signalled["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
    handled_at = handled.replace(tzinfo=UTC).timestamp()
    assert 0.0 <= handled_at - boundary < 1.0, (
        f"the signal was handled {handled_at - boundary:.3f} s after the boundary",
        signalled["ts"],
        evidence,
    )
    starts = {window_start_of(o["key"]) for o in manifest["objects"]}
    closing = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(boundary - 1))
    # Records go to the window of the consumer's clock when they reach it: those the stop
    # drains after the signal's second has ended may open its next second's windows; no
    # later one.
    after = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(boundary + 2))
    assert closing in starts, f"no window of the second that closed at the signal: {starts}"
    assert all(s is not None and s < after for s in starts), (
        f"a window after the signal's second was opened: {sorted(s or '' for s in starts)}"
    )


def _held_upload(
    proxy: WatchedProxy,
    bucket: str,
    tmp_path: Path,
    rng: random.Random,
    hold: float,
    *,
    rate: str = "3000",
    symbols: str = "BTCUSDT,ETHUSDT,BNBUSDT",
    runtime: str = "60",
    **extra: str,
) -> StopRun:
    """Signal a seeded delay after the first held request arrived, while it is held."""

    def trigger(proc: subprocess.Popen[str], logs: list[dict[str, Any]]) -> list[float]:
        arrived = proxy.wait_applied(1, timeout=40)[0].at
        sleep_until(arrived + rng.uniform(0.05, hold - 0.5))
        return [send(proc)]

    return run_with_signals(
        proxy, bucket, tmp_path, trigger, rate=rate, symbols=symbols, runtime=runtime, env=extra
    )


def _upload(
    proxy: WatchedProxy,
    bucket: str,
    tmp_path: Path,
    rng: random.Random,
    seed: int,
    evidence: dict[str, Any],
) -> StopRun:
    proxy.schedule(put_object("/trades/"), slow(HOLD_SECONDS))
    return _held_upload(proxy, bucket, tmp_path, rng, HOLD_SECONDS, WINDOW_SECONDS="1")


def _multipart(
    proxy: WatchedProxy,
    bucket: str,
    tmp_path: Path,
    rng: random.Random,
    seed: int,
    evidence: dict[str, Any],
) -> StopRun:
    """One symbol as fast as the engine reads; windows close at 5.5 MiB (compressed) and go up
    as multipart uploads of a 5 MiB part and a smaller one (``S3_MULTIPART_THRESHOLD``)."""
    target = MULTIPART_TARGETS[seed % len(MULTIPART_TARGETS)]
    evidence["target"] = target
    matcher = {
        "part-1": upload_part(1),
        "part-2": upload_part(2),
        "complete": complete_multipart,
    }[target]
    proxy.schedule(matcher, slow(HOLD_SECONDS))
    return _held_upload(
        proxy,
        bucket,
        tmp_path,
        rng,
        HOLD_SECONDS,
        **MULTIPART,
    )


def _manifest(
    proxy: WatchedProxy,
    bucket: str,
    tmp_path: Path,
    rng: random.Random,
    seed: int,
    evidence: dict[str, Any],
) -> StopRun:
    """The manifest is written by the stop sequence, so the run stops at its deadline and the
    SIGTERM lands while the manifest PUT is held: the run must still end complete, exit 0."""
    proxy.schedule(final_manifest_put(), slow(MANIFEST_HOLD_SECONDS))
    return _held_upload(
        proxy,
        bucket,
        tmp_path,
        rng,
        MANIFEST_HOLD_SECONDS,
        runtime="2",
        WINDOW_SECONDS="1",
    )


def _check_held(
    run: StopRun, manifest: dict[str, Any], proxy: WatchedProxy, evidence: dict[str, Any]
) -> None:
    """The signal went out while the held request was still held (it is forwarded only after
    its hold, so it cannot have been answered before)."""
    applied = proxy.applied()
    assert len(applied) == 1, applied
    held = applied[0]
    signal_at = run.signalled_at[0]
    assert held.at < signal_at < held.at + held.fault.seconds, (held, signal_at)
    evidence["held"] = held


def _check_upload(
    run: StopRun, manifest: dict[str, Any], proxy: WatchedProxy, evidence: dict[str, Any]
) -> None:
    _check_held(run, manifest, proxy, evidence)
    request = evidence["held"].request
    assert request.method == "PUT" and "/trades/" in request.path
    keys = {o["key"] for o in manifest["objects"]}
    assert request.path.split("/", 2)[2] in keys


def _check_multipart(
    run: StopRun, manifest: dict[str, Any], proxy: WatchedProxy, evidence: dict[str, Any]
) -> None:
    _check_held(run, manifest, proxy, evidence)
    request = evidence["held"].request
    target = evidence["target"]
    if target == "complete":
        assert request.method == "POST" and "uploadId" in request.query
    else:
        assert request.query.get("partNumber") == target.removeprefix("part-")
    key = request.path.split("/", 2)[2]
    sizes = {o["key"]: o["bytes"] for o in manifest["objects"]}
    assert sizes.get(key, 0) > 5 * MiB, f"the held multipart object is not in the manifest: {key}"


def _check_manifest(
    run: StopRun, manifest: dict[str, Any], proxy: WatchedProxy, evidence: dict[str, Any]
) -> None:
    _check_held(run, manifest, proxy, evidence)
    assert "/_manifests/" in evidence["held"].request.path
    assert run.events("deadline"), "the run did not stop at its deadline"
    (late,) = run.events("second_signal")  # seen, and nothing aborted: the run is finishing
    assert late["action"] == "none", late


MOMENT_RUNS = {
    "reads": _reads,
    "window-close": _window_close,
    "upload": _upload,
    "multipart": _multipart,
    "manifest": _manifest,
}
CHECKS = {
    "reads": _check_reads,
    "window-close": _check_window_close,
    "upload": _check_upload,
    "multipart": _check_multipart,
    "manifest": _check_manifest,
}


def test_multipart_threshold_is_configurable_and_at_least_five_mib() -> None:
    from engine.errors import ConfigError
    from feedvault.config import load_stream_config

    env = stream_settings()
    assert load_stream_config(env).sink.multipart_threshold == 16 * MiB
    config = load_stream_config({**env, "S3_MULTIPART_THRESHOLD": str(5 * MiB)})
    assert (config.sink.multipart_threshold, config.sink.part_size) == (5 * MiB, 5 * MiB)
    assert config.public_dict()["multipart_threshold"] == 5 * MiB
    with pytest.raises(ConfigError, match="S3_MULTIPART_THRESHOLD"):
        load_stream_config({**env, "S3_MULTIPART_THRESHOLD": str(5 * MiB - 1)})


def test_a_slow_manifest_write_gets_the_rest_of_the_grace(
    s3_server: S3Server, bucket: str, tmp_path: Path, watched: WatchedProxy
) -> None:
    """The manifest PUT answered after 5 s (a throttled, retried request takes as long): the
    stop has most of its grace left, so the run still ends complete, exit 0, within it."""
    watched.schedule(final_manifest_put(), slow(5.0))

    def trigger(proc: subprocess.Popen[str], logs: list[dict[str, Any]]) -> list[float]:
        logs += wait_for_log(proc, "stats", timeout=30)
        return [send(proc)]

    run = run_with_signals(watched, bucket, tmp_path, trigger, WINDOW_SECONDS="1")

    assert run.returncode == 0, run.describe()
    assert run.took < GRACE
    assert watched.outcomes("slow") == 1
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "complete"
    assert_stored_exactly_once(run.ledger, stored_trades(s3_server.client(), bucket, PREFIX))


@pytest.mark.parametrize("seed", [0, 1])
def test_sigterm_during_a_reconnect_backoff(
    s3_server: S3Server, bucket: str, tmp_path: Path, watched: WatchedProxy, seed: int
) -> None:
    """The fake exchange drops the connection every second; the SIGTERM lands while the
    session waits out its reconnect backoff (no socket open): it must stop at once, cleanly."""
    rng = random.Random(f"issue7-backoff-{seed}")
    evidence: dict[str, Any] = {}

    def trigger(proc: subprocess.Popen[str], logs: list[dict[str, Any]]) -> list[float]:
        for _ in range(20):  # reconnects, about one a second
            logs += wait_for_log(proc, "reconnecting", timeout=10)
            seen_at = time.monotonic()
            delay = float(logs[-1]["delay_s"])
            if delay >= 0.3:  # P(none in 20) = 0.6**20 < 1e-4 (delays uniform in [0, 0.5])
                break
        else:
            raise AssertionError("no reconnect backoff of 300 ms or more in 20 reconnects")
        evidence["backoff"] = (len(logs) - 1, seen_at, delay)
        # at least 300 ms before the backoff ends: a loaded machine's lag in reading the line
        # and delivering the signal must not let the reconnect come first
        sleep_until(seen_at + rng.uniform(0.0, delay - 0.3))
        return [send(proc)]

    run = run_with_signals(
        watched, bucket, tmp_path, trigger, faults="disconnect-every=1", WINDOW_SECONDS="1"
    )

    assert run.returncode == 0, run.describe()
    assert run.took < GRACE
    index, seen_at, delay = evidence["backoff"]
    assert run.signalled_at[0] < seen_at + delay, "the signal came after the backoff"
    after = [doc.get("event") for doc in run.logs[index + 1 :]]
    assert "signal" in after
    assert "connected" not in after[: after.index("signal")], "it reconnected before the signal"
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "complete" and manifest["counters"]["reconnects"] >= 1
    assert_stored_exactly_once(run.ledger, stored_trades(s3_server.client(), bucket, PREFIX))
    verified = run_verify(s3_server.env(), bucket, PREFIX)
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize("seed", [0, 1])
def test_sigterm_during_start_up_is_held_and_obeyed(
    s3_server: S3Server, bucket: str, tmp_path: Path, watched: WatchedProxy, seed: int
) -> None:
    """A SIGTERM while the process is still importing and checking its configuration (ECS may
    stop a task at any time) is held until the run's loop handles it: a clean stop before any
    connection, a complete (empty) manifest, exit 0; not a death by the default action."""
    rng = random.Random(f"issue7-start-up-{seed}")

    def trigger(proc: subprocess.Popen[str], logs: list[dict[str, Any]]) -> list[float]:
        # Until the process catches SIGTERM (the CLI's first act), then a seeded 0-20 ms.
        deadline = time.monotonic() + 15
        while not _catches_sigterm(proc.pid):
            assert time.monotonic() < deadline and proc.poll() is None, "never caught SIGTERM"
            time.sleep(0.001)  # a bounded poll of /proc, the only view of it
        sleep_until(time.monotonic() + rng.uniform(0.0, 0.02))
        return [send(proc)]

    run = run_with_signals(watched, bucket, tmp_path, trigger, wait_start=False)

    assert run.returncode == 0, run.describe()
    events = [doc.get("event") for doc in run.logs]
    assert events.index("signal") < events.index("run_start"), "signalled after start-up"
    assert "connected" not in events
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "complete" and manifest["stop_reason"] == "signal"
    assert manifest["objects"] == [] and run.ledger == []


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a SIGTERM handler (``SigCgt`` in ``/proc/PID/status``)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False
