"""``feedvault verify`` against tampered and killed runs (issue 7).

One real ``feedvault stream`` run against the fake exchange writes a run into moto's S3 server
(module fixture). Each test copies that run into a fresh bucket, damages the copy one way, runs
the real ``feedvault verify`` CLI as a subprocess, and checks that it exits 1 with a message
saying what is wrong. Runs without a manifest (what SIGKILL leaves) are made by copying the
run's objects under a newer run id without its manifest.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sinks.memory import MemoryWriter
from sinks.verify import run_id_of_key, verify_run
from tests.conftest import S3Server
from tests.harness import (
    base_env,
    fake_exchange,
    fake_stream_env,
    run_feedvault,
    run_stream,
    run_verify,
    start_stream,
)

PREFIX = "streaming/tamper/"
RUN_ID = "20260101T000000Z-tamper01"
NEWER_RUN = "20260101T000500Z-killed01"


@dataclass(frozen=True)
class SourceRun:
    bucket: str
    manifest: dict[str, Any]

    @property
    def manifest_records(self) -> int:
        return sum(int(entry["records"]) for entry in self.manifest["objects"])


@pytest.fixture(scope="module")
def source_run(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> SourceRun:
    """A real short stream run (two symbols, 1 s windows) stored under ``PREFIX``."""
    tmp = tmp_path_factory.mktemp("tamper")
    bucket = s3_server.make_bucket("verify-tamper-source")
    with fake_exchange(tmp, symbols="BTCUSDT,ETHUSDT", rate="400") as fx:
        env = fake_stream_env(s3_server.env(), fx.url, bucket, PREFIX, "3", RUN_ID=RUN_ID)
        env["WINDOW_SECONDS"] = "1"
        done = run_stream(env)
    assert done.returncode == 0, done.stderr[-2000:]
    client = s3_server.client()
    key = f"{PREFIX}_manifests/{RUN_ID}.json"
    manifest: dict[str, Any] = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    trade_objects = [o for o in manifest["objects"] if "/trades/" in f"/{o['key']}"]
    assert len(trade_objects) >= 3, manifest["objects"]
    return SourceRun(bucket, manifest)


_copies = 0


@pytest.fixture
def run_copy(s3_server: S3Server, source_run: SourceRun) -> Iterator[str]:
    """A fresh bucket holding a copy of the source run (same keys)."""
    global _copies
    _copies += 1
    bucket = s3_server.make_bucket(f"verify-tamper-{_copies}")
    client = s3_server.client()
    for key in [*s3_server.keys(source_run.bucket, PREFIX)]:
        client.copy_object(
            Bucket=bucket, Key=key, CopySource={"Bucket": source_run.bucket, "Key": key}
        )
    yield bucket


def verify(s3_server: S3Server, bucket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_verify(s3_server.env(), bucket, PREFIX, *args)


def get(s3_server: S3Server, bucket: str, key: str) -> bytes:
    body: bytes = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def put(s3_server: S3Server, bucket: str, key: str, body: bytes) -> None:
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=body)


def trade_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in manifest["objects"] if o["key"].startswith(f"{PREFIX}trades/")]


def rewrite_manifest(s3_server: S3Server, bucket: str, manifest: dict[str, Any]) -> None:
    put(s3_server, bucket, f"{PREFIX}_manifests/{RUN_ID}.json", json.dumps(manifest).encode())


def lines_of(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(body).splitlines() if line]


def encode(lines: list[dict[str, Any]]) -> bytes:
    return gzip.compress(b"".join(json.dumps(t).encode() + b"\n" for t in lines))


def failed_with(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    for text in expected:
        assert text in done.stdout, (text, done.stdout)


def test_the_untouched_copy_passes(s3_server: S3Server, run_copy: str) -> None:
    done = verify(s3_server, run_copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"run {RUN_ID}: OK")
    assert "without a manifest" not in done.stdout


def test_missing_object(s3_server: S3Server, run_copy: str, source_run: SourceRun) -> None:
    gone = trade_entries(source_run.manifest)[1]["key"]
    s3_server.client().delete_object(Bucket=run_copy, Key=gone)
    failed_with(
        verify(s3_server, run_copy), f"{gone}: missing (listed in the manifest, not in storage)"
    )


def test_altered_bytes_same_size(s3_server: S3Server, run_copy: str, source_run: SourceRun) -> None:
    entry = trade_entries(source_run.manifest)[0]
    body = bytearray(get(s3_server, run_copy, entry["key"]))
    body[len(body) // 2] ^= 0x20
    put(s3_server, run_copy, entry["key"], bytes(body))
    failed_with(
        verify(s3_server, run_copy),
        f"{entry['key']}: sha256 is {hashlib.sha256(body).hexdigest()}, "
        f"manifest says {entry['sha256']}",
    )


def test_truncated_object(s3_server: S3Server, run_copy: str, source_run: SourceRun) -> None:
    entry = trade_entries(source_run.manifest)[0]
    body = get(s3_server, run_copy, entry["key"])[:-7]
    put(s3_server, run_copy, entry["key"], body)
    failed_with(
        verify(s3_server, run_copy),
        f"{entry['key']}: size is {len(body)} bytes, manifest says {entry['bytes']}",
        f"{entry['key']}: cannot decode",
    )


def _replace_object(
    s3_server: S3Server, bucket: str, manifest: dict[str, Any], index: int, lines: list[Any]
) -> dict[str, Any]:
    """Store ``lines`` as the object of entry ``index`` and make the manifest agree with its
    bytes, checksum, record count and first/last trade ids (a consistent forgery)."""
    entry = manifest["objects"][index]
    body = encode(lines)
    put(s3_server, bucket, entry["key"], body)
    entry.update(bytes=len(body), sha256=hashlib.sha256(body).hexdigest(), records=len(lines))
    symbols: dict[str, dict[str, str]] = {}
    for t in lines:
        name = f"{t['exchange']}:{t['symbol']}"
        ids = symbols.setdefault(name, {"first_trade_id": t["trade_id"]})
        ids["last_trade_id"] = t["trade_id"]
    entry["symbols"] = symbols
    return entry


def test_duplicate_trade_ids_across_objects(
    s3_server: S3Server, run_copy: str, source_run: SourceRun
) -> None:
    manifest = json.loads(json.dumps(source_run.manifest))
    entries = trade_entries(manifest)
    first, second = entries[0], entries[1]
    copied = lines_of(get(s3_server, run_copy, first["key"]))[0]
    target = manifest["objects"].index(second)
    lines = [*lines_of(get(s3_server, run_copy, second["key"])), copied]
    _replace_object(s3_server, run_copy, manifest, target, lines)
    rewrite_manifest(s3_server, run_copy, manifest)
    name = f"{copied['exchange']}:{copied['symbol']}"
    failed_with(
        verify(s3_server, run_copy),
        f"duplicate trade id {name}:{copied['trade_id']} in {second['key']} "
        f"(first in {first['key']})",
    )


def test_record_count_disagrees_with_manifest(
    s3_server: S3Server, run_copy: str, source_run: SourceRun
) -> None:
    manifest = json.loads(json.dumps(source_run.manifest))
    entry = trade_entries(manifest)[0]
    recorded = entry["records"]
    entry["records"] = recorded + 5
    rewrite_manifest(s3_server, run_copy, manifest)
    failed_with(
        verify(s3_server, run_copy),
        f"{entry['key']}: holds {recorded} records, manifest says {recorded + 5}",
    )


def test_records_removed_from_an_object(
    s3_server: S3Server, run_copy: str, source_run: SourceRun
) -> None:
    """An object rewritten without its last record: the bytes, checksum and count all differ."""
    entry = trade_entries(source_run.manifest)[0]
    lines = lines_of(get(s3_server, run_copy, entry["key"]))
    put(s3_server, run_copy, entry["key"], encode(lines[:-1]))
    failed_with(
        verify(s3_server, run_copy),
        f"{entry['key']}: holds {len(lines) - 1} records, manifest says {entry['records']}",
        f"{entry['key']}: sha256 is ",
    )


def test_first_last_trade_ids_disagree(
    s3_server: S3Server, run_copy: str, source_run: SourceRun
) -> None:
    manifest = json.loads(json.dumps(source_run.manifest))
    entry = trade_entries(manifest)[0]
    ids = next(iter(entry["symbols"].values()))
    ids["last_trade_id"] = str(int(ids["last_trade_id"]) + 1)
    rewrite_manifest(s3_server, run_copy, manifest)
    failed_with(
        verify(s3_server, run_copy),
        f"{entry['key']}: first/last trade ids per symbol ",
        "differ from the manifest",
    )


def _copy_as_killed_run(s3_server: S3Server, bucket: str, source_run: SourceRun) -> list[str]:
    """The source run's trade objects again under :data:`NEWER_RUN`, with no manifest: what
    a task killed by SIGKILL after some uploads leaves behind."""
    client = s3_server.client()
    keys = []
    for entry in trade_entries(source_run.manifest)[:3]:
        key = entry["key"].replace(RUN_ID, NEWER_RUN)
        client.copy_object(
            Bucket=bucket, Key=key, CopySource={"Bucket": source_run.bucket, "Key": entry["key"]}
        )
        keys.append(key)
    return keys


def test_newest_run_without_manifest_fails(
    s3_server: S3Server, run_copy: str, source_run: SourceRun
) -> None:
    keys = _copy_as_killed_run(s3_server, run_copy, source_run)
    size = sum(len(get(s3_server, run_copy, k)) for k in keys)
    done = verify(s3_server, run_copy)
    failed_with(
        done,
        f"run {NEWER_RUN}: FAILED",
        f"manifest {PREFIX}_manifests/{NEWER_RUN}.json not found",
        f"run {NEWER_RUN} has no manifest: it left 3 objects ({size} bytes)",
        "runs without a manifest (incomplete): 1",
        f"    {NEWER_RUN}: 3 objects, {size} bytes",
    )
    for key in keys:
        assert key in done.stdout
    report = json.loads(verify(s3_server, run_copy, "--json").stdout)
    assert report["ok"] is False
    assert report["runs_without_manifest"] == [{"run_id": NEWER_RUN, "objects": 3, "bytes": size}]


def test_complete_run_passes_and_lists_the_killed_one(
    s3_server: S3Server, run_copy: str, source_run: SourceRun
) -> None:
    """``--run`` of the complete run passes; the manifest-less run beside it is reported."""
    _copy_as_killed_run(s3_server, run_copy, source_run)
    done = verify(s3_server, run_copy, "--run", RUN_ID)
    assert done.returncode == 0, done.stdout
    assert f"run {RUN_ID}: OK" in done.stdout
    assert "runs without a manifest (incomplete): 1" in done.stdout
    assert f"{NEWER_RUN}: 3 objects" in done.stdout
    # ... and naming the killed run fails.
    failed_with(verify(s3_server, run_copy, "--run", NEWER_RUN), f"run {NEWER_RUN} has no manifest")


def test_manifest_deleted_after_a_run(
    s3_server: S3Server, run_copy: str, source_run: SourceRun
) -> None:
    s3_server.client().delete_object(Bucket=run_copy, Key=f"{PREFIX}_manifests/{RUN_ID}.json")
    n = len(source_run.manifest["objects"])
    failed_with(verify(s3_server, run_copy), f"run {RUN_ID} has no manifest: it left {n} objects")


def test_a_run_killed_by_sigkill_is_reported(
    s3_server: S3Server, bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A real stream killed (SIGKILL) once it has uploaded objects leaves the manifest it wrote
    at its start (``running``): verify names the run as never finished, checks and lists its
    objects, and exits 1."""
    killed = "20260101T001000Z-sigkill1"
    with fake_exchange(tmp_path_factory.mktemp("kill"), symbols="BTCUSDT", rate="300") as fx:
        env = fake_stream_env(
            s3_server.env(), fx.url, bucket, PREFIX, "60", "BTCUSDT", RUN_ID=killed
        )
        env["WINDOW_SECONDS"] = "1"
        proc = start_stream(env)
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 30
            uploaded = 0
            while uploaded < 2 and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                if '"event":"stats"' in line:
                    uploaded = json.loads(line)["objects"]
            assert uploaded >= 2, "the run uploaded no objects in 30 s"
        finally:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == -9
    running = f"{PREFIX}_manifests/{killed}.json"
    keys = s3_server.keys(bucket, PREFIX)
    assert running in keys  # written at the start, never replaced
    assert json.loads(get(s3_server, bucket, running))["status"] == "running"
    objects = [key for key in keys if key != running]
    assert objects
    done = verify(s3_server, bucket)
    failed_with(
        done,
        f"run {killed}: FAILED",
        f"run {killed} never finished (killed?): {len(objects)} objects of it found",
        f"  objects of the unfinished run: {len(objects)}",
    )
    for key in objects:
        assert f"    {key} (" in done.stdout
    assert "stray" not in done.stdout


# -- issue 12: copies, exact run ids, unfinished runs, objects outside the prefix ---------------


def download(s3_server: S3Server, bucket: str, prefix: str, root: Path, strip: str) -> int:
    """Every object under ``prefix`` into ``root``, its key without ``strip``: ``aws s3 sync``
    of ``s3://bucket/{strip}`` (or, ``strip=""``, what ``feedvault demo`` copies out)."""
    keys = s3_server.keys(bucket, prefix)
    for key in keys:
        target = root / key[len(strip) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(get(s3_server, bucket, key))
    return len(keys)


def verify_dir(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``feedvault verify file://{root}/ [args...]``."""
    return run_feedvault(base_env(), "verify", f"file://{root}/", *args)


def test_an_aws_s3_sync_copy_verifies(
    s3_server: S3Server, source_run: SourceRun, tmp_path: Path
) -> None:
    """``aws s3 sync s3://b/streaming/tamper/ ./copy/`` verifies as ``file:///.../copy/``."""
    copy = tmp_path / "copy"
    assert download(s3_server, source_run.bucket, PREFIX, copy, PREFIX) > 3
    done = verify_dir(copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"run {RUN_ID}: OK")
    assert f"a copy: keys written under {PREFIX!r} looked up under ''" in done.stdout
    # A damaged copy fails, naming the copy's key.
    entry = trade_entries(source_run.manifest)[0]
    local = entry["key"][len(PREFIX) :]
    (copy / local).write_bytes(b"")
    failed_with(verify_dir(copy), f"{local}: size is 0 bytes, manifest says {entry['bytes']}")


def test_a_copy_of_the_bucket_says_where_the_runs_are(
    s3_server: S3Server, source_run: SourceRun, tmp_path: Path
) -> None:
    """The layout ``feedvault demo`` copies out (full keys): its root has no run of its own and
    says where the runs are; the run's own directory verifies."""
    out = tmp_path / "demo-output"
    download(s3_server, source_run.bucket, PREFIX, out, "")
    failed_with(verify_dir(out), f"no runs here; runs found under {PREFIX}")
    assert "has no manifest" not in verify_dir(out).stdout
    done = verify_dir(out / PREFIX.rstrip("/"))
    assert done.returncode == 0, done.stdout + done.stderr
    # A directory that does not exist says so.
    failed_with(verify_dir(tmp_path / "nope"), f"directory {tmp_path / 'nope'} does not exist")


def test_a_run_whose_id_extends_the_checked_one_is_not_its_stray(
    s3_server: S3Server, run_copy: str, source_run: SourceRun
) -> None:
    """Run ``...-tamper010`` beside ``...-tamper01``: each verifies (today the first fails, the
    second's objects being taken for its strays)."""
    longer = f"{RUN_ID}0"
    manifest = json.loads(json.dumps(source_run.manifest).replace(RUN_ID, longer))
    client = s3_server.client()
    for entry in source_run.manifest["objects"]:
        client.copy_object(
            Bucket=run_copy,
            Key=entry["key"].replace(RUN_ID, longer),
            CopySource={"Bucket": source_run.bucket, "Key": entry["key"]},
        )
    put(s3_server, run_copy, f"{PREFIX}_manifests/{longer}.json", json.dumps(manifest).encode())
    for run_id in (RUN_ID, longer):
        done = verify(s3_server, run_copy, "--run", run_id)
        assert done.returncode == 0, done.stdout
        assert "stray" not in done.stdout


def test_a_running_manifest_is_a_run_that_never_finished(
    s3_server: S3Server, run_copy: str, source_run: SourceRun
) -> None:
    """The manifest a run writes at its start, left as is (the task was killed)."""
    manifest = dict(source_run.manifest, status="running", stopped_at=None, stop_reason=None)
    manifest["objects"] = []
    rewrite_manifest(s3_server, run_copy, manifest)
    keys = [entry["key"] for entry in source_run.manifest["objects"]]
    done = verify(s3_server, run_copy)
    failed_with(
        done,
        f"run {RUN_ID}: FAILED ({len(keys)} objects, {source_run.manifest_records} records, "
        "1 problem)",
        f"run {RUN_ID} never finished (killed?): {len(keys)} objects of it found",
    )
    for key in keys:
        assert f"    {key} (" in done.stdout
    assert "stray" not in done.stdout
    report = json.loads(verify(s3_server, run_copy, "--json").stdout)
    assert sorted(obj["key"] for obj in report["unfinished_objects"]) == sorted(keys)


@pytest.mark.parametrize("claim", [False, True], ids=["as-copied", "prefix-edited"])
def test_a_manifest_listing_objects_outside_the_prefix_fails(
    s3_server: S3Server, run_copy: str, source_run: SourceRun, claim: bool
) -> None:
    """The run's manifest put under another prefix, its objects left where they are (intact):
    verifying that prefix fails (today it passes). Edited to claim that prefix, its keys lie
    outside it."""
    other = "streaming/other/"
    manifest = json.loads(json.dumps(source_run.manifest))
    if claim:
        manifest["prefix"] = other
        manifest["config"]["destination"] = f"s3://{run_copy}/{other}"
    put(s3_server, run_copy, f"{other}_manifests/{RUN_ID}.json", json.dumps(manifest).encode())
    done = run_verify(s3_server.env(), run_copy, other)
    entry = source_run.manifest["objects"][0]
    if claim:
        failed_with(done, f"{entry['key']}: outside the run's prefix {other!r}, not checked")
    else:
        local = other + entry["key"][len(PREFIX) :]
        failed_with(done, f"{local}: missing (listed in the manifest, not in storage)")


# -- in-process: run ids from key names -----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "run_id"),
    [
        (
            "p/trades/exchange=b/symbol=X/date=2026-01-01/hour=00/20260101T000000Z-R-000001.ndjson.gz",
            "R",
        ),
        ("20260101T000000Z-20260101T000000Z-ab12-000000.ndjson.zst", "20260101T000000Z-ab12"),
        ("raw/x/20260101T000000Z-a.b_c-d-1234567.ndjson.gz", "a.b_c-d"),
        ("_manifests/R.json", None),
        ("compute/risk.json", None),
        ("x/20260101T000000Z-R-00001.ndjson.gz", None),
        ("x/20260101T000000Z--000001.ndjson.gz", None),
    ],
)
def test_run_id_of_key(key: str, run_id: str | None) -> None:
    assert run_id_of_key(key) == run_id


async def test_only_manifest_less_objects_in_process() -> None:
    writer = MemoryWriter()
    key = "p/trades/exchange=b/symbol=X/date=2026-01-01/hour=00/20260101T000000Z-R1-000000.x"
    await writer.put(key, b"12345")
    report = await verify_run(writer, "p/")
    assert report.run_id == "R1"
    assert not report.ok
    assert report.problems == [
        "manifest p/_manifests/R1.json not found",
        "run R1 has no manifest: it left 1 object (5 bytes) under 'p/' with no proof that they "
        "are all it received; the task was stopped before writing its manifest (SIGKILL, out of "
        "memory): the run is incomplete",
    ]
    assert f"      {key} (5 bytes)" in report.summary()
