"""``feedvault sample JOB`` then ``feedvault batch JOB`` for each job that reads input, as an ECS
task would run them: subprocesses configured by environment variables only, against moto's S3."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from batch.samples import SAMPLERS
from tests.conftest import S3Server
from tests.harness import FEEDVAULT, base_env

PREFIX = "batch/"
INPUT_PREFIX = "input/"

OUTPUTS = {
    "ecommerce": [
        "category_kpis.jsonl",
        "category_kpis/category_kpis.parquet",
        "orders_kpis.jsonl",
        "orders_kpis/orders_kpis.parquet",
        "rejected/rejected.csv",
    ],
    "reconcile": [
        "details.jsonl",
        "details/details.parquet",
        "rejected.csv",
        "summary.json",
        "summary.md",
    ],
    "weather": [
        "anomalies.jsonl",
        "anomalies/anomalies.parquet",
        "daily.jsonl",
        "daily/daily.parquet",
        "observations.jsonl",
        "observations/observations.parquet",
        "quality.json",
        "rejected/rejected.csv",
    ],
}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEEDVAULT, *args], env=env, capture_output=True, text=True, timeout=60)


def batch_env(s3: S3Server, bucket: str) -> dict[str, str]:
    return base_env(
        OUTPUT_BUCKET=bucket,
        OUTPUT_PREFIX=PREFIX,
        INPUT_BUCKET=bucket,
        INPUT_PREFIX=INPUT_PREFIX,
        RUN_ID="run-1",
        **s3.env(),
    )


def get(s3: S3Server, bucket: str, key: str) -> bytes:
    body: bytes = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def manifest(s3: S3Server, bucket: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(get(s3, bucket, f"{PREFIX}_manifests/run-1.json"))
    return loaded


@pytest.mark.parametrize("job", sorted(OUTPUTS))
def test_sample_then_batch_completes_with_every_output(
    job: str, s3_server: S3Server, bucket: str
) -> None:
    env = batch_env(s3_server, bucket)
    sample = run(["sample", job, "--out", f"s3://{bucket}/{INPUT_PREFIX}", "--seed", "7"], env)
    assert sample.returncode == 0, sample.stderr[-2000:]
    result = run(["batch", job], env)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = [f"{PREFIX}{job}/{name}" for name in OUTPUTS[job]]
    assert s3_server.keys(bucket, f"{PREFIX}{job}/") == expected
    doc = manifest(s3_server, bucket)
    assert doc["status"] == "complete" and doc["stop_reason"] == "end"
    assert [o["key"] for o in doc["objects"]] == expected
    assert all(o["kind"] == "output" for o in doc["objects"])
    # the planted bad rows are rejected with reasons
    rejected_key = next(k for k in expected if k.endswith("rejected.csv"))
    rejected = get(s3_server, bucket, rejected_key).decode().splitlines()
    assert rejected[0] == "source,row_number,kind,reason,raw_line" and len(rejected) > 1
    if job == "reconcile":
        summary = json.loads(get(s3_server, bucket, f"{PREFIX}reconcile/summary.json"))
        assert summary["balanced"] is False and summary["counts"]["matched"] > 0
    if job == "weather":
        anomalies = get(s3_server, bucket, f"{PREFIX}weather/anomalies.jsonl").decode()
        assert '"station_id":"ST01"' in anomalies


BAD_INPUTS = {
    # an empty CSV among good ones
    "ecommerce": {"orders-001.csv": b"", "orders-002.csv": None},
    # the processor file is missing
    "reconcile": {"ledger.csv": None},
    # an empty observation file
    "weather": {"station-ST01.csv": None, "station-ST02.csv": b"  \n"},
}


@pytest.mark.parametrize("job", sorted(BAD_INPUTS))
def test_bad_input_fails_the_run_incomplete_exit_1(
    job: str, s3_server: S3Server, bucket: str
) -> None:
    env = batch_env(s3_server, bucket)
    good = SAMPLERS[job](7)
    client = s3_server.client()
    for name, body in BAD_INPUTS[job].items():
        data = good[name] if body is None else body
        client.put_object(Bucket=bucket, Key=INPUT_PREFIX + name, Body=data)
    result = run(["batch", job], env)
    assert result.returncode == 1, result.stderr[-2000:]
    doc = manifest(s3_server, bucket)
    assert doc["status"] == "incomplete" and doc["stop_reason"] == "error"
    assert doc["objects"] == []
    if job == "reconcile":
        assert "no processor*.csv file" in doc["error"]
    else:
        assert "empty file" in doc["error"]
    assert s3_server.keys(bucket, f"{PREFIX}{job}/") == []


def test_missing_input_prefix_fails_the_run(s3_server: S3Server, bucket: str) -> None:
    result = run(["batch", "ecommerce"], batch_env(s3_server, bucket))
    assert result.returncode == 1, result.stderr[-2000:]
    doc = manifest(s3_server, bucket)
    assert doc["status"] == "incomplete" and "no input objects" in doc["error"]
    assert s3_server.keys(bucket, f"{PREFIX}ecommerce/") == []
