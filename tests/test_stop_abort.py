"""The stop sequence cut short (issue 7): a second SIGTERM and SIGKILL.

* A second SIGTERM while uploads are held by the fault proxy: exit 1 within the grace period,
  the not-yet-durable windows in ``SPILL_DIR`` (body and sidecar each), the manifest
  ``incomplete`` naming exactly them, and the ledger's trades each in S3 or in the spill
  directory, exactly once. The same while a multipart part is held: the window is spilled whole
  and the multipart upload aborted.
* SIGKILL after some windows are uploaded: no manifest; ``feedvault verify`` reports the run as
  one without a manifest and exits non-zero.

Real processes on loopback: the engine and the fake exchange as subprocesses, moto's S3 server
behind the fault proxy.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sinks.spill import load_spilled
from tests.conftest import S3Server
from tests.faultproxy import put_object, timeout, upload_part
from tests.harness import (
    assert_stored_exactly_once,
    decode_object,
    read_manifest,
    run_verify,
    stored_trades,
    trade_identity,
)
from tests.stop_harness import (
    GRACE,
    MULTIPART,
    PREFIX,
    WatchedProxy,
    run_with_signals,
    send,
    sleep_until,
    two_sigterms_after_a_fault,
)

HELD_UPLOADS = 200
"""Trade PUTs the proxy holds (and then drops, never forwarded): more than a run makes."""


@pytest.mark.parametrize("seed", [0, 1])
def test_second_sigterm_spills_what_is_not_durable_and_exits_1(
    s3_server: S3Server, bucket: str, tmp_path: Path, watched: WatchedProxy, seed: int
) -> None:
    rng = random.Random(f"issue7-second-signal-{seed}")
    # Every trade PUT is held without an answer; the manifest PUT goes through.
    watched.schedule(put_object("/trades/"), *[timeout(60)] * HELD_UPLOADS)

    trigger = two_sigterms_after_a_fault(watched, rng, wait=40, second_after=(0.3, 1.5))
    run = run_with_signals(watched, bucket, tmp_path, trigger, WINDOW_SECONDS="1")

    assert run.returncode == 1, run.describe()
    assert run.took < GRACE, f"exit {run.took:.1f}s after the first SIGTERM"
    assert run.events("signal") and run.events("second_signal") and run.events("abort")
    spilled_log = run.events("spilled")
    assert spilled_log, run.describe()

    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "incomplete"
    assert manifest["stop_reason"] == "signal"
    assert manifest["spilled"], "the manifest names no spilled window"
    run_id = manifest["run_id"]

    spill_dir = tmp_path / "spill"
    on_disk = load_spilled(spill_dir, run_id)  # checks each body against its sidecar
    assert sorted(s.entry.key for s in on_disk) == sorted(manifest["spilled"])
    assert spilled_log[-1]["objects"] == len(on_disk)
    held_keys = {a.request.path.split("/", 2)[2] for a in watched.applied()}
    assert held_keys <= set(manifest["spilled"]), "a held upload was neither durable nor spilled"
    assert not set(manifest["spilled"]) & {o["key"] for o in manifest["objects"]}

    spilled_trades: list[dict[str, Any]] = []
    for item in on_disk:
        records = decode_object(item.window.body, item.window.key)
        assert len(records) == item.window.records
        spilled_trades += records
    stored = stored_trades(s3_server.client(), bucket, PREFIX)
    assert_stored_exactly_once(run.ledger, stored + spilled_trades)

    verified = run_verify(s3_server.env(), bucket, PREFIX)
    assert verified.returncode != 0
    assert "incomplete" in verified.stdout + verified.stderr


def test_sigkill_leaves_a_running_manifest_that_verify_reports_as_never_finished(
    s3_server: S3Server, bucket: str, tmp_path: Path, watched: WatchedProxy
) -> None:
    rng = random.Random("issue7-sigkill")
    run_ids: list[str] = []

    def trigger(proc: subprocess.Popen[str], logs: list[dict[str, Any]]) -> list[float]:
        run_ids.append(logs[-1]["run_id"])
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until two objects are durable (stats lines)
            line = proc.stdout.readline()
            if not line:
                break
            doc = json.loads(line)
            logs.append(doc)
            if doc.get("event") == "stats" and doc["objects"] >= 2:
                break
        else:
            raise AssertionError("no two objects uploaded within 30 s")
        sleep_until(time.monotonic() + rng.uniform(0.0, 0.8))
        return [send(proc, signal.SIGKILL)]

    run = run_with_signals(watched, bucket, tmp_path, trigger, WINDOW_SECONDS="1")

    assert run.returncode == -signal.SIGKILL
    assert not run.events("run_end")
    (run_id,) = run_ids
    # Its manifest is the running one of its start: the run is visible, not only its objects.
    [key] = s3_server.keys(bucket, PREFIX + "_manifests/")
    assert key == f"{PREFIX}_manifests/{run_id}.json"
    running = json.loads(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    assert running["status"] == "running" and running["stop_reason"] is None
    objects = s3_server.keys(bucket, PREFIX + "trades/")
    assert len(objects) >= 2

    verified = run_verify(s3_server.env(), bucket, PREFIX)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    text = verified.stdout + verified.stderr
    assert f"run {run_id} never finished (killed?)" in text, text

    as_json = run_verify(s3_server.env(), bucket, PREFIX, "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert sorted(item["key"] for item in report["unfinished_objects"]) == sorted(objects)
    assert report["runs_without_manifest"] == []
    # what it did upload is intact: each object decodes to ledger trades, none twice
    stored = stored_trades(s3_server.client(), bucket, PREFIX)
    sent = {(t["symbol"], t["trade_id"]) for t in run.ledger}
    got = {(t["symbol"], t["trade_id"]) for t in stored}
    assert len(got) == len(stored) and got <= sent


def test_second_sigterm_during_a_multipart_upload_spills_it_and_aborts_the_upload(
    s3_server: S3Server, bucket: str, tmp_path: Path, watched: WatchedProxy
) -> None:
    """Windows of 5.5 MiB go up as multipart uploads; the first part is held unanswered. Two
    SIGTERMs: the window is spilled whole, the multipart upload is aborted (none is left in
    progress), exit 1, and S3 plus the spill directory hold every parsed trade once."""
    rng = random.Random("issue7-second-signal-multipart")
    watched.schedule(upload_part(1), timeout(60))

    trigger = two_sigterms_after_a_fault(watched, rng, wait=60, second_after=(0.5, 1.5))
    run = run_with_signals(
        watched,
        bucket,
        tmp_path,
        trigger,
        **MULTIPART,
    )

    assert run.returncode == 1, run.describe()
    assert run.took < GRACE
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "incomplete"
    held_key = watched.applied()[0].request.path.split("/", 2)[2]
    assert held_key in manifest["spilled"]
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket)
    assert not uploads.get("Uploads"), f"multipart uploads left in progress: {uploads['Uploads']}"
    spilled = load_spilled(tmp_path / "spill", manifest["run_id"])
    assert sorted(s.entry.key for s in spilled) == sorted(manifest["spilled"])
    on_disk = [t for s in spilled for t in decode_object(s.window.body, s.window.key)]
    stored = stored_trades(s3_server.client(), bucket, PREFIX)
    kept = [trade_identity(t) for t in stored + on_disk]
    assert len(kept) == len(set(kept)) == manifest["counters"]["parsed"]
    assert set(kept) <= {trade_identity(t) for t in run.ledger}
