"""``feedvault batch computation`` as an ECS task would run it: a subprocess configured by
environment variables only, against moto's S3 server."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

from tests.conftest import S3Server
from tests.harness import FEEDVAULT, base_env, reap, run_feedvault, run_verify, wait_for_log

PREFIX = "batch/"
# Big enough to run for tens of seconds: 10M paths x 250 daily steps.
LONG_JOB = {"COMPUTATION_PATHS": "10000000", "COMPUTATION_HORIZONS": "250"}


def batch_env(s3: S3Server, bucket: str, **extra: str) -> dict[str, str]:
    return base_env(
        OUTPUT_BUCKET=bucket,
        OUTPUT_PREFIX=PREFIX,
        STATS_INTERVAL_SECONDS="0.2",
        **s3.env(),
        **extra,
    )


def run_batch_process(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_feedvault(env, "batch", "computation", timeout=timeout)


def get(s3: S3Server, bucket: str, key: str) -> bytes:
    body: bytes = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def manifests(s3: S3Server, bucket: str) -> list[dict[str, Any]]:
    keys = s3.keys(bucket, PREFIX + "_manifests/")
    return [json.loads(get(s3, bucket, key)) for key in keys]


def test_computation_completes_verifies_and_a_rerun_replaces_its_outputs(
    s3_server: S3Server, bucket: str
) -> None:
    env = batch_env(
        s3_server,
        bucket,
        COMPUTATION_SEED="42",
        COMPUTATION_PATHS="30000",
        COMPUTATION_HORIZONS="1,10",
        COMPUTATION_CONFIDENCE="0.95,0.99",
        RUN_ID="run-1",
    )
    first = run_batch_process(env)
    assert first.returncode == 0, first.stderr[-2000:]
    outputs = ["batch/computation/risk.csv", "batch/computation/risk.json"]
    assert s3_server.keys(bucket) == ["batch/_manifests/run-1.json", *outputs]
    (manifest,) = manifests(s3_server, bucket)
    assert manifest["status"] == "complete" and manifest["stop_reason"] == "end"
    assert manifest["command"] == "feedvault batch computation"
    assert manifest["config"]["parameters"]["seed"] == 42
    assert [o["key"] for o in manifest["objects"]] == outputs
    assert [o["records"] for o in manifest["objects"]] == [4, 4]
    risk = json.loads(get(s3_server, bucket, outputs[1]))
    assert [h["horizon_days"] for h in risk["horizons"]] == [1, 10]
    csv_lines = get(s3_server, bucket, outputs[0]).decode().splitlines()
    assert csv_lines[0].startswith("horizon_days,confidence,var,expected_shortfall,")
    assert len(csv_lines) == 5

    verify = run_verify(s3_server.env(), bucket, PREFIX, "--run", "run-1")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "OK (2 objects" in verify.stdout

    before = {key: get(s3_server, bucket, key) for key in outputs}
    second = run_batch_process({**env, "RUN_ID": "run-2"})
    assert second.returncode == 0, second.stderr[-2000:]
    assert s3_server.keys(bucket) == [
        "batch/_manifests/run-1.json",
        "batch/_manifests/run-2.json",
        *outputs,
    ]
    assert {key: get(s3_server, bucket, key) for key in outputs} == before
    sums = [[o["sha256"] for o in m["objects"]] for m in manifests(s3_server, bucket)]
    assert sums[0] == sums[1]


def test_missing_or_bad_settings_exit_2_and_write_nothing(s3_server: S3Server, bucket: str) -> None:
    for drop, extra, variable in [
        ("OUTPUT_BUCKET", {}, "OUTPUT_BUCKET"),
        ("OUTPUT_PREFIX", {}, "OUTPUT_PREFIX"),
        (None, {"COMPUTATION_CONFIDENCE": "0.95,1.5"}, "COMPUTATION_CONFIDENCE"),
    ]:
        env = batch_env(s3_server, bucket, **extra)
        if drop is not None:
            del env[drop]
        result = run_batch_process(env, timeout=30)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"feedvault batch: configuration error: {variable}: ")
        assert result.stderr.count("\n") == 1
    assert s3_server.keys(bucket) == []


def test_deadline_stops_an_overrunning_job_incomplete_exit_1(
    s3_server: S3Server, bucket: str
) -> None:
    env = batch_env(s3_server, bucket, MAX_RUNTIME_SECONDS="1", **LONG_JOB)
    started = time.monotonic()
    result = run_batch_process(env, timeout=30)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    assert took < 10, f"the deadline stop took {took:.1f}s"
    (manifest,) = manifests(s3_server, bucket)
    assert manifest["status"] == "incomplete" and manifest["stop_reason"] == "deadline"
    assert manifest["objects"] == []
    assert 0 < manifest["counters"]["rows"] < 10_000_000
    assert s3_server.keys(bucket, PREFIX + "computation/") == []


def test_sigterm_during_the_computation_stops_promptly_incomplete_exit_1(
    s3_server: S3Server, bucket: str
) -> None:
    env = batch_env(s3_server, bucket, **LONG_JOB)
    proc = subprocess.Popen(
        [*FEEDVAULT, "batch", "computation"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = wait_for_log(proc, "progress", timeout=30)  # the simulation is running
        assert seen[-1]["rows"] > 0
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        out, err = proc.communicate(timeout=20)
        took = time.monotonic() - signalled
    finally:
        reap(proc)
    assert proc.returncode == 1, err[-2000:]
    assert took < 5, f"SIGTERM took {took:.1f}s to stop the job"
    assert '"event":"job_cancelled","reason":"signal"' in out
    (manifest,) = manifests(s3_server, bucket)
    assert manifest["status"] == "incomplete" and manifest["stop_reason"] == "signal"
    assert manifest["error"] == "job did not finish: stopped by a signal"
    assert s3_server.keys(bucket, PREFIX + "computation/") == []
