"""S3 outages end to end: `feedvault stream` (env only) -> fault proxy -> moto's S3 server.

The fake exchange and the engine run as subprocesses; the proxy (tests/faultproxy.py) makes S3
unavailable while the run goes on. What must hold (docs: operations.md#spill-and-recovery, issue 7):

- an outage of 30 s mid-run: windows spill past ``UPLOAD_RETRY_SECONDS`` and are uploaded in
  the background once S3 is back; nothing lost, nothing twice, manifest complete, exit 0;
- an outage through the stop: the windows are on disk, the manifest (which S3 refused too) is
  spilled beside them, incomplete and naming them, exit 1; the next run with the same
  ``SPILL_DIR`` uploads them, completes that manifest and ``feedvault verify`` passes for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sinks.encoders import decode_body
from sinks.manifest import Manifest
from sinks.spill import load_spilled, load_spilled_manifest, scan_spilled
from tests.conftest import S3Server
from tests.faultproxy import RESET, SLOWDOWN, FaultProxy
from tests.harness import (
    assert_stored_exactly_once,
    decode_object,
    fake_exchange,
    fake_stream_env,
    parse_logs,
    read_manifest,
    reap,
    run_stream,
    run_verify,
    start_stream,
    stored_trades,
)

PREFIX = "streaming/outage/"
SYMBOLS = "BTCUSDT,ETHUSDT,BNBUSDT"


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as started:
        yield started


def stream_env(
    proxy: FaultProxy, bucket: str, url: str, runtime: str, spill_dir: Path, **extra: str
) -> dict[str, str]:
    settings = {**extra, "SPILL_DIR": str(spill_dir)}
    return fake_stream_env(proxy.env(), url, bucket, PREFIX, runtime, SYMBOLS, **settings)


def log_events(out: str, event: str) -> list[dict[str, Any]]:
    return [doc for doc in parse_logs(out) if doc.get("event") == event]


def wait_for_objects(s3: S3Server, bucket: str, timeout: float) -> None:
    """Poll S3 (a real server: there is nothing to wait on) until a trade object exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if s3.keys(bucket, PREFIX + "trades/"):
            return
        time.sleep(0.2)
    raise AssertionError(f"no trade object within {timeout}s")


def trades_of_run(s3: S3Server, bucket: str, run_id: str) -> list[dict[str, Any]]:
    client = s3.client()
    out: list[dict[str, Any]] = []
    for key in s3.keys(bucket, PREFIX + "trades/"):
        if f"-{run_id}-" in key:
            out += decode_object(client.get_object(Bucket=bucket, Key=key)["Body"].read(), key)
    return out


def test_s3_down_for_30s_mid_run_loses_nothing_and_the_run_completes(
    s3_server: S3Server, bucket: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    spill_dir = tmp_path / "spill"
    with fake_exchange(tmp_path, rate="300") as fx:
        # A window spills at its first failed put (which the S3 client already retried five
        # times, 8-17 s here), so windows spill well within the outage whatever the timing.
        env = stream_env(
            proxy, bucket, fx.url, "48", spill_dir, UPLOAD_RETRY_SECONDS="0.1", RUN_ID="outage-30s"
        )
        proc = start_stream(env)
        try:
            wait_for_objects(s3_server, bucket, timeout=30)
            proxy.set_outage(SLOWDOWN)  # every S3 request: 503 SlowDown
            time.sleep(30)  # the outage itself
            proxy.set_outage(None)
            out, err = proc.communicate(timeout=60)
        finally:
            proxy.set_outage(None)
            reap(proc)
        ledger = fx.stop()
    assert proc.returncode == 0, err[-3000:] + out[-3000:]
    assert proxy.outcomes("slowdown") > 0
    [run_end] = log_events(out, "run_end")
    assert run_end["windows_spilled"] > 0, "the outage was meant to outlast the retry budget"
    assert run_end["windows_recovered"] == run_end["windows_spilled"]
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "complete"
    assert manifest["spilled"] == []
    stored = stored_trades(s3_server.client(), bucket, PREFIX)
    assert_stored_exactly_once(ledger, stored)
    # No duplicate object: S3 holds exactly the manifest's objects, each once.
    keys = [o["key"] for o in manifest["objects"]]
    assert len(keys) == len(set(keys))
    assert sorted(s3_server.keys(bucket, PREFIX + "trades/")) == sorted(keys)
    assert scan_spilled(spill_dir).entries == []  # removed once durable
    result = run_verify(s3_server.env(), bucket, PREFIX, "--run", "outage-30s")
    assert result.returncode == 0, result.stdout + result.stderr


def test_s3_down_through_the_stop_spills_and_the_next_run_recovers_it(
    s3_server: S3Server, bucket: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    spill_dir = tmp_path / "spill"
    first = "20261130T000000Z-first"
    # Run 1: S3 goes away two windows in and stays away through the stop.
    with fake_exchange(tmp_path, rate="300", name="first") as fx:
        env = stream_env(
            proxy,
            bucket,
            fx.url,
            "8",
            spill_dir,
            UPLOAD_RETRY_SECONDS="2",
            STOP_GRACE_SECONDS="10",
            RUN_ID=first,
        )
        proc = start_stream(env)
        try:
            wait_for_objects(s3_server, bucket, timeout=30)
            proxy.set_outage(RESET)  # every S3 connection dropped
            started = time.monotonic()
            out, err = proc.communicate(timeout=60)
            took = time.monotonic() - started
        finally:
            reap(proc)
        ledger = fx.stop()
    assert proc.returncode == 1, err[-3000:] + out[-3000:]
    assert took < 8 + 10 + 5, f"run 1 took {took:.1f}s after the outage began"
    assert proxy.outcomes("reset") > 0
    assert log_events(out, "manifest_failed")
    assert log_events(out, "manifest_spilled")
    # What S3 holds of run 1, and what is on disk: together every ledger trade, once. Of its
    # manifest S3 holds the running one of its start only.
    assert s3_server.keys(bucket, PREFIX + "_manifests/") == [f"{PREFIX}_manifests/{first}.json"]
    running = s3_server.client().get_object(Bucket=bucket, Key=f"{PREFIX}_manifests/{first}.json")
    assert json.loads(running["Body"].read())["status"] == "running"
    spilled = load_spilled(spill_dir, first)
    assert spilled, "nothing was spilled"
    on_disk = [t for s in spilled for t in decode_body(s.window.body, s.window.format)]
    in_s3 = stored_trades(s3_server.client(), bucket, PREFIX)
    assert_stored_exactly_once(ledger, in_s3 + on_disk)
    # The manifest waits beside them: incomplete, naming exactly what is on disk.
    spilled_manifest = load_spilled_manifest(spill_dir, first)
    assert spilled_manifest is not None
    manifest = Manifest.from_json(spilled_manifest.body)
    assert manifest.run_id == first
    assert manifest.status == "incomplete"
    assert sorted(manifest.spilled) == sorted(s.window.key for s in spilled)
    assert {o.key for o in manifest.objects} == set(s3_server.keys(bucket, PREFIX + "trades/"))

    # Run 2: S3 is back; same SPILL_DIR, its own run id and feed.
    proxy.set_outage(None)
    with fake_exchange(tmp_path, rate="300", name="second") as fx2:
        env = stream_env(proxy, bucket, fx2.url, "4", spill_dir, RUN_ID="20261130T010000Z-second")
        done2 = run_stream(env)
        out2, err2 = done2.stdout, done2.stderr
        ledger2 = fx2.stop()
    [recovery] = [e for e in log_events(out2, "recovery") if e["uploaded"]]
    assert recovery["uploaded"] == len(spilled)
    assert recovery["complete_runs"] == [first]
    assert scan_spilled(spill_dir).entries == []
    assert load_spilled_manifest(spill_dir, first) is None
    # Run 1's manifest is now in S3, complete, saying what was recovered, by whom and when.
    body = s3_server.client().get_object(Bucket=bucket, Key=f"{PREFIX}_manifests/{first}.json")
    recovered = json.loads(body["Body"].read())
    assert recovered["status"] == "complete"
    assert recovered["spilled"] == []
    assert sorted(r["key"] for r in recovered["recovered"]) == sorted(manifest.spilled)
    assert {r["recovered_by"] for r in recovered["recovered"]} == {"20261130T010000Z-second"}
    assert recovered["counters"] == manifest.counters  # the run's own figures, kept
    result = run_verify(s3_server.env(), bucket, PREFIX, "--run", first)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every trade of each run is in S3 exactly once, in that run's objects.
    assert_stored_exactly_once(ledger, trades_of_run(s3_server, bucket, first))
    assert_stored_exactly_once(ledger2, trades_of_run(s3_server, bucket, "20261130T010000Z-second"))
    second = run_verify(s3_server.env(), bucket, PREFIX, "--run", "20261130T010000Z-second")
    assert second.returncode == 0, second.stdout + second.stderr + err2[-2000:]
