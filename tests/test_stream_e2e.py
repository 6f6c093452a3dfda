"""End to end, as the Fargate task ran: fake exchange -> `feedvault stream` (env only) -> S3.

The engine runs as a subprocess configured only by environment variables; the fake exchange runs
as another subprocess and keeps a ledger of every trade it sent; S3 is moto's server on loopback.
The deadline run of every exchange (Binance and Binance.US among them) is in
tests/test_exchanges_e2e.py.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.conftest import S3Server
from tests.harness import (
    assert_stored_exactly_once,
    base_env,
    fake_exchange,
    fake_stream_env,
    ledger_missing_ids,
    manifest_gap_ids,
    read_manifest,
    run_stream,
    start_stream,
    stop_after_connections,
    stored_trades,
    wait_for_log,
)

PREFIX = "streaming/bnbusd/"
SYMBOLS = "BTCUSDT,ETHUSDT,BNBUSDT"


def stream_env(s3: S3Server, bucket: str, url: str, runtime: str, **extra: str) -> dict[str, str]:
    return fake_stream_env(s3.env(), url, bucket, PREFIX, runtime, SYMBOLS, **extra)


def test_sigterm_mid_run_stops_cleanly_with_nothing_lost(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    with fake_exchange(tmp_path, rate="2000") as fx:
        proc = start_stream(stream_env(s3_server, bucket, fx.url, "120"))
        wait_for_log(proc, "stats", timeout=30)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        out, err = proc.communicate(timeout=40)
        took = time.monotonic() - signalled
        ledger = fx.stop()
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    assert took < 20, f"stop took {took:.1f}s, over STOP_GRACE_SECONDS"
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "complete"
    assert manifest["stop_reason"] == "signal"
    assert_stored_exactly_once(ledger, stored_trades(s3_server.client(), bucket, PREFIX))


@pytest.mark.parametrize(
    ("faults", "extra"),
    [
        ("disconnect-every=1.5", {}),
        ("stall=2@2", {"STALE_SECONDS": "0.8"}),
    ],
    ids=["disconnect", "stall"],
)
def test_faults_reconnect_and_gaps_match_the_ledger(
    s3_server: S3Server, bucket: str, tmp_path: Path, faults: str, extra: dict[str, str]
) -> None:
    """The run is stopped (SIGTERM) once it has connected three times, however long the
    start and the reconnects took on a loaded machine."""
    with fake_exchange(tmp_path, rate="600", faults=faults) as fx:
        proc = start_stream(stream_env(s3_server, bucket, fx.url, "120", **extra))
        out, err = stop_after_connections(proc, 3)
        ledger = fx.stop()
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "complete"
    assert manifest["counters"]["reconnects"] >= 2
    stored = stored_trades(s3_server.client(), bucket, PREFIX)
    assert_stored_exactly_once(ledger, stored)
    expected = ledger_missing_ids(ledger)
    assert expected, "the fault produced no gap"
    assert manifest_gap_ids(manifest) == expected


VALID = {
    "S3_BUCKET": "cfg-bucket",
    "S3_PREFIX": "streaming/x/",
    "MAX_RUNTIME_SECONDS": "5",
    "STREAMS": "binance:BTCUSDT",
}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("S3_BUCKET", None),
        ("S3_BUCKET", "Not_A_Bucket!"),
        ("S3_PREFIX", None),
        ("S3_PREFIX", "/abs/../x"),
        ("MAX_RUNTIME_SECONDS", None),
        ("MAX_RUNTIME_SECONDS", "ten"),
        ("MAX_RUNTIME_SECONDS", "-5"),
        ("STREAMS", None),
        ("STREAMS", "BTCUSDT"),
        ("STREAMS", "nosuchexchange:BTCUSDT"),
        ("WS_TRANSPORT", "bogus"),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable(
    s3_server: S3Server, variable: str, value: str | None
) -> None:
    s3_server.make_bucket("cfg-bucket")
    env = base_env(**VALID, **s3_server.env(), BINANCE_WS_URL="ws://127.0.0.1:9")
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    result = run_stream(env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr
    assert s3_server.keys("cfg-bucket") == []


def test_malformed_frames_are_counted_and_the_session_goes_on(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    with fake_exchange(tmp_path, rate="600", faults="malformed=0.05") as fx:
        proc = start_stream(stream_env(s3_server, bucket, fx.url, "5"))
        out, err = proc.communicate(timeout=60)
        ledger = fx.stop()
        summary = fx.summary
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "complete"
    assert manifest["counters"]["invalid"] == summary["malformed_sent"] > 0
    assert manifest["counters"]["reconnects"] == 0
    assert_stored_exactly_once(ledger, stored_trades(s3_server.client(), bucket, PREFIX))
    # logged once per kind of bad frame, not once per frame
    kinds = [line for line in out.splitlines() if '"invalid_frame"' in line]
    assert 0 < len(kinds) <= 5 < summary["malformed_sent"]
