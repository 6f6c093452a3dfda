"""A run's manifest never claims more than happened, and a bad destination fails at once.

End to end: ``feedvault stream``/``replay``/``batch`` as subprocesses, the fake exchange over
real WebSockets, moto's S3 server on loopback. Each test here failed on the code before the
running manifest, the per-stream figures and the ``lost`` list existed.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from tests.conftest import S3Server, free_port
from tests.harness import (
    base_env,
    fake_exchange,
    fake_stream_env,
    parse_logs,
    reap,
    run_feedvault,
    run_stream,
    start_stream,
    wait_for_log,
)

PREFIX = "streaming/truth/"


def env_for(s3: S3Server, bucket: str, url: str, runtime: str, **extra: str) -> dict[str, str]:
    """A stream task's environment; ``extra`` adds or replaces variables."""
    env = fake_stream_env(s3.env(), url, bucket, PREFIX, runtime, "BTCUSDT")
    env.update(extra)
    return env


def manifests(s3: S3Server, bucket: str) -> dict[str, dict[str, Any]]:
    client = s3.client()
    out = {}
    for key in s3.keys(bucket, PREFIX + "_manifests/"):
        out[key] = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    return out


def stderr_lines(err: str) -> list[str]:
    """stderr without the JSON log lines (there are none there, but be exact)."""
    return [line for line in err.splitlines() if line.strip()]


def test_a_missing_bucket_exits_2_at_once_with_one_line_and_connects_nowhere(
    s3_server: S3Server, tmp_path: Path
) -> None:
    with fake_exchange(tmp_path, rate="200") as fx:
        env = env_for(s3_server, "no-such-bucket-here", fx.url, "30")
        done = run_stream(env, timeout=60)
        fx.stop()
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = stderr_lines(done.stderr)
    assert "S3_BUCKET: bucket 'no-such-bucket-here' does not exist (NoSuchBucket)" in line
    # Nothing connected: the engine never logged a connection, the fake served none.
    assert not [d for d in parse_logs(done.stdout) if d.get("event") == "connected"]
    assert fx.summary is not None and fx.summary["per_connection"] == {}


def test_a_file_destination_under_a_missing_directory_exits_2(tmp_path: Path) -> None:
    with fake_exchange(tmp_path, rate="200") as fx:
        env = base_env(
            STREAMS="binance:BTCUSDT",
            BINANCE_WS_URL=fx.url,
            MAX_RUNTIME_SECONDS="30",
            SPILL_DIR=str(tmp_path / "spill"),
        )
        missing = tmp_path / "not" / "there"
        done = run_feedvault(env, "stream", "--out", f"file://{missing}/")
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = stderr_lines(done.stderr)
    assert line.startswith("feedvault stream: configuration error: --out: ")
    assert "does not exist" in line
    assert not missing.exists()


def test_an_unreachable_store_is_retried_for_a_bounded_time_then_exits_1(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    with fake_exchange(tmp_path, rate="200") as fx:
        env = env_for(s3_server, bucket, fx.url, "60", UPLOAD_RETRY_SECONDS="2")
        env["AWS_ENDPOINT_URL_S3"] = dead
        done = run_stream(env, timeout=120)
        fx.stop()
    assert done.returncode == 1, done.stderr[-2000:]
    [line] = stderr_lines(done.stderr)
    assert line.startswith(f"feedvault: S3_BUCKET: s3://{bucket}/{PREFIX} did not answer")
    assert "attempt" in line  # how long, and how often, it tried
    assert not [d for d in parse_logs(done.stdout) if d.get("event") == "connected"]


def test_a_reused_run_id_is_refused_and_the_first_run_is_left_intact(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    with fake_exchange(tmp_path, rate="500") as fx:
        env = env_for(s3_server, bucket, fx.url, "3", RUN_ID="same-id")
        first = run_stream(env)
        assert first.returncode == 0, first.stderr[-2000:]
        before = {
            key: s3_server.client().head_object(Bucket=bucket, Key=key)["ETag"]
            for key in s3_server.keys(bucket, PREFIX)
        }
        second = run_stream(env)
        fx.stop()
    assert second.returncode == 2, second.stderr[-2000:]
    [line] = stderr_lines(second.stderr)
    assert "RUN_ID: run id 'same-id' is already used" in line
    assert f"s3://{bucket}/{PREFIX}_manifests/same-id.json exists" in line
    after = {
        key: s3_server.client().head_object(Bucket=bucket, Key=key)["ETag"]
        for key in s3_server.keys(bucket, PREFIX)
    }
    assert after == before  # not one object of the first run replaced, none added
    assert not [d for d in parse_logs(second.stdout) if d.get("event") == "connected"]


def test_a_killed_run_leaves_its_running_manifest(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    with fake_exchange(tmp_path, rate="500") as fx:
        proc = start_stream(env_for(s3_server, bucket, fx.url, "120", RUN_ID="killed"))
        try:
            wait_for_log(proc, "connected", timeout=60)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        finally:
            reap(proc)
        fx.stop()
    [(key, manifest)] = manifests(s3_server, bucket).items()
    assert key == f"{PREFIX}_manifests/killed.json"
    assert manifest["status"] == "running"
    assert manifest["stop_reason"] is None and manifest["stopped_at"] is None
    assert manifest["destination"] == f"s3://{bucket}/{PREFIX}"
    assert manifest["config"]["streams"] == ["binance:BTCUSDT"]


def test_a_stream_never_subscribed_makes_the_run_incomplete_and_names_it(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    refused = f"ws://127.0.0.1:{free_port()}"  # every attempt refused
    with fake_exchange(tmp_path, rate="500") as fx:
        env = env_for(
            s3_server,
            bucket,
            fx.url,
            "8",
            STREAMS="binance:BTCUSDT,kraken:BTC/USD",
            KRAKEN_WS_URL=refused,
            RUN_ID="half",
        )
        done = run_stream(env)
        fx.stop()
    assert done.returncode == 1, done.stderr[-2000:]
    manifest = manifests(s3_server, bucket)[f"{PREFIX}_manifests/half.json"]
    assert manifest["status"] == "incomplete"
    assert manifest["stop_reason"] == "error"
    assert "kraken:BTC/USD:trades" in manifest["error"]
    assert "ConnectionRefusedError" in manifest["error"]
    kraken = manifest["streams"]["kraken:BTC/USD:trades"]
    assert kraken["records"] == 0 and kraken["subscribed_seconds"] == 0
    assert kraken["reconnects"] >= 1 and "ConnectionRefusedError" in kraken["last_error"]
    binance = manifest["streams"]["binance:BTCUSDT:trades"]
    assert binance["records"] == sum(o["records"] for o in manifest["objects"]) > 0
    assert binance["subscribed_seconds"] > 0
    assert binance["first_ts_event"] <= binance["last_ts_event"]
    [end] = [d for d in parse_logs(done.stdout) if d.get("event") == "run_end"]
    assert end["status"] == "incomplete"


def test_per_stream_figures_and_a_quiet_stream_is_a_warning_not_a_failure(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    # The fake serves BTCUSDT only: ETHUSDT is subscribed and sees no trade.
    with fake_exchange(tmp_path, rate="500", symbols="BTCUSDT") as fx:
        env = env_for(
            s3_server, bucket, fx.url, "8", STREAMS="binance:BTCUSDT,binance:ETHUSDT", RUN_ID="q"
        )
        done = run_stream(env)
        ledger = fx.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = manifests(s3_server, bucket)[f"{PREFIX}_manifests/q.json"]
    assert manifest["status"] == "complete"
    btc = manifest["streams"]["binance:BTCUSDT:trades"]
    eth = manifest["streams"]["binance:ETHUSDT:trades"]
    assert btc["records"] == len(ledger) > 0
    assert eth["records"] == 0 and eth["subscribed_seconds"] > 0
    assert eth["first_ts_event"] is None and eth["last_error"] is None
    assert manifest["warnings"] == [
        f"binance:ETHUSDT:trades: subscribed for {eth['subscribed_seconds']:g} s but saw no trade"
    ]
    [end] = [d for d in parse_logs(done.stdout) if d.get("event") == "run_end"]
    assert end["warnings"] == manifest["warnings"]


def test_a_batch_job_claims_its_destination_first(s3_server: S3Server, tmp_path: Path) -> None:
    env = base_env(
        **s3_server.env(),
        OUTPUT_BUCKET="no-such-batch-bucket",
        OUTPUT_PREFIX="batch/",
        SIMULATIONS="1000",
    )
    done = run_feedvault(env, "batch", "computation")
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = stderr_lines(done.stderr)
    assert "OUTPUT_BUCKET: bucket 'no-such-batch-bucket' does not exist (NoSuchBucket)" in line
    assert not [d for d in parse_logs(done.stdout) if d.get("event") == "job_start"]


def test_windows_that_could_not_be_spilled_are_lost_not_spilled(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """S3 refuses every window (not the manifests) and the spill directory cannot be written:
    the windows are named under ``lost`` with their record counts, ``spilled`` names nothing
    (nothing is on disk), the run is incomplete, exit 1."""
    from tests.faultproxy import SLOWDOWN, FaultProxy, not_manifest

    blocker = tmp_path / "spill-is-a-file"
    blocker.write_bytes(b"")
    with FaultProxy(s3_server.endpoint) as proxy, fake_exchange(tmp_path, rate="500") as fx:
        proxy.set_outage(SLOWDOWN, where=not_manifest)
        env = env_for(
            s3_server,
            bucket,
            fx.url,
            "3",
            RUN_ID="lossy",
            UPLOAD_RETRY_SECONDS="1",
            SPILL_DIR=str(blocker / "spill"),
        )
        env["AWS_ENDPOINT_URL_S3"] = proxy.url
        done = run_stream(env, timeout=120)
        ledger = fx.stop()
    assert done.returncode == 1, done.stderr[-2000:]
    manifest = manifests(s3_server, bucket)[f"{PREFIX}_manifests/lossy.json"]
    assert manifest["status"] == "incomplete"
    assert manifest["spilled"] == []
    assert manifest["objects"] == []
    assert manifest["lost"], manifest
    assert sum(item["records"] for item in manifest["lost"]) == len(ledger) > 0
    assert all(item["key"].startswith(PREFIX + "trades/") for item in manifest["lost"])
    assert all("NotADirectoryError" in item["reason"] for item in manifest["lost"])
    [end] = [d for d in parse_logs(done.stdout) if d.get("event") == "run_end"]
    assert end["lost_records"] == len(ledger)
    assert blocker.is_file()


def test_a_replay_claims_its_destination_and_refuses_a_used_run_id(tmp_path: Path) -> None:
    from tests.test_capture_replay_e2e import RECORDINGS, convert, replay

    recording = tmp_path / "binance.jsonl.zst"
    convert(RECORDINGS / "BINANCE.ws.1.0", recording, "binance")
    out = tmp_path / "out"
    args = (str(recording), "--speed", "max", "--out", f"file://{out}/", "--run-id", "replay-1")
    first = replay(base_env(), *args)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    second = replay(base_env(), *args)
    assert second.returncode == 2, second.stderr[-2000:]
    [line] = stderr_lines(second.stderr)
    assert "RUN_ID: run id 'replay-1' is already used" in line
    assert f"{out}/_manifests/replay-1.json exists" in line
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_a_first_write_that_landed_unanswered_is_the_runs_own_not_a_reused_id(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The running manifest's PUT reaches S3 but its answer is lost: the retry finds the
    manifest there, reads it back, sees its own, and the run goes on (not exit 2)."""
    from tests.faultproxy import LOST_ANSWER, FaultProxy, manifest_put

    with FaultProxy(s3_server.endpoint) as proxy, fake_exchange(tmp_path, rate="300") as fx:
        proxy.schedule(manifest_put, LOST_ANSWER)
        env = env_for(s3_server, bucket, fx.url, "3", RUN_ID="unanswered")
        env["AWS_ENDPOINT_URL_S3"] = proxy.url
        done = run_stream(env, timeout=90)
        ledger = fx.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    assert proxy.outcomes("lost-answer") == 1
    manifest = manifests(s3_server, bucket)[f"{PREFIX}_manifests/unanswered.json"]
    assert manifest["status"] == "complete"
    assert manifest["streams"]["binance:BTCUSDT:trades"]["records"] == len(ledger)


def test_a_sigterm_while_the_store_does_not_answer_ends_the_start_at_once(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The store hangs on the first write and the retry budget is long: a SIGTERM still ends
    the run within its stop grace (exit 1, one line), it does not wait out the budget."""
    from tests.faultproxy import HANG, FaultProxy

    with FaultProxy(s3_server.endpoint) as proxy, fake_exchange(tmp_path, rate="300") as fx:
        proxy.set_outage(HANG)
        env = env_for(
            s3_server, bucket, fx.url, "600", UPLOAD_RETRY_SECONDS="3600", STOP_GRACE_SECONDS="8"
        )
        env["AWS_ENDPOINT_URL_S3"] = proxy.url
        proc = start_stream(env)
        try:
            wait_for_log(proc, "run_start", timeout=60)
            proc.send_signal(signal.SIGTERM)
            # Bounded by the stop grace, not by UPLOAD_RETRY_SECONDS (an hour).
            out, err = proc.communicate(timeout=120)
        finally:
            reap(proc)
        fx.stop()
    assert proc.returncode == 1, err[-2000:]
    [line] = stderr_lines(err)
    assert "did not answer" in line and "the run was asked to stop" in line
    assert not [d for d in parse_logs(out) if d.get("event") == "connected"]


def test_access_denied_exits_2_and_a_5xx_store_exits_1_each_with_one_line(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The two kinds of refusal at the first write: 403 AccessDenied is permanent (exit 2 at
    once, the variable named); 500s are transient (retried for UPLOAD_RETRY_SECONDS, exit 1)."""
    from tests.faultproxy import DENIED, ERROR500, FaultProxy

    results = {}
    with FaultProxy(s3_server.endpoint) as proxy, fake_exchange(tmp_path, rate="200") as fx:
        for name, fault in (("denied", DENIED), ("error500", ERROR500)):
            proxy.set_outage(fault)
            env = env_for(s3_server, bucket, fx.url, "60", UPLOAD_RETRY_SECONDS="2")
            env["AWS_ENDPOINT_URL_S3"] = proxy.url
            results[name] = run_stream(env, timeout=120)
        fx.stop()
    denied, failing = results["denied"], results["error500"]
    assert denied.returncode == 2, denied.stderr[-2000:]
    [line] = stderr_lines(denied.stderr)
    assert line.startswith("feedvault stream: configuration error: S3_BUCKET: ")
    assert "(AccessDenied)" in line
    assert failing.returncode == 1, failing.stderr[-2000:]
    [line] = stderr_lines(failing.stderr)
    assert line.startswith(f"feedvault: S3_BUCKET: s3://{bucket}/{PREFIX} did not answer")
    assert s3_server.keys(bucket) == []  # nothing written by either
    for done in results.values():
        assert not [d for d in parse_logs(done.stdout) if d.get("event") == "connected"]
