"""End to end, as the Fargate task ran: fake exchange -> `feedvault stream` (env only) -> S3.

The engine runs as a subprocess configured only by environment variables; the fake exchange runs
as another subprocess and keeps a ledger of every trade it sent; S3 is moto's server on loopback.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import S3Server
from tests.harness import (
    FEEDVAULT,
    base_env,
    fake_exchange,
    read_manifest,
    start_stream,
    stored_trades,
    trade_identity,
    wait_for_log,
)

PREFIX = "streaming/bnbusd/"
STREAMS = "binance:BTCUSDT,binance:ETHUSDT,binance:BNBUSDT"


def stream_env(s3: S3Server, bucket: str, url: str, runtime: str, **extra: str) -> dict[str, str]:
    return base_env(
        S3_BUCKET=bucket,
        S3_PREFIX=PREFIX,
        MAX_RUNTIME_SECONDS=runtime,
        STREAMS=STREAMS,
        BINANCE_WS_URL=url,
        STATS_INTERVAL_SECONDS="1",
        WINDOW_SECONDS="2",
        SPILL_DIR=str(Path("/tmp") / f"fv-spill-{bucket}"),
        **s3.env(),
        **extra,
    )


def assert_exactly_once(ledger: list[dict[str, Any]], stored: list[dict[str, Any]]) -> None:
    sent = [trade_identity(t) for t in ledger]
    got = [trade_identity(t) for t in stored]
    assert len(sent) > 0
    dupes = [k for k, n in collections.Counter(got).items() if n > 1]
    assert not dupes, f"{len(dupes)} trades stored more than once, e.g. {dupes[:3]}"
    missing = set(sent) - set(got)
    extra = set(got) - set(sent)
    assert not missing, f"{len(missing)} ledger trades not in S3, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} stored trades not in the ledger, e.g. {sorted(extra)[:3]}"


def verify(s3: S3Server, bucket: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEEDVAULT, "verify", f"s3://{bucket}/{PREFIX}"],
        env=base_env(**s3.env()),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_deadline_run_stores_every_ledger_trade_once(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    with fake_exchange(tmp_path, rate="2000") as fx:
        proc = start_stream(stream_env(s3_server, bucket, fx.url, "6"))
        out, err = proc.communicate(timeout=60)
        ledger = fx.stop()
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "complete"
    assert manifest["stop_reason"] == "deadline"
    stored = stored_trades(s3_server.client(), bucket, PREFIX)
    assert_exactly_once(ledger, stored)
    assert manifest["counters"]["parsed"] == len(stored)
    assert sum(o["records"] for o in manifest["objects"]) == len(stored)
    assert {t["symbol"] for t in stored} == {"BTC-USDT", "ETH-USDT", "BNB-USDT"}
    assert '"event": "stats"' in out or '"event":"stats"' in out
    result = verify(s3_server, bucket)
    assert result.returncode == 0, result.stdout + result.stderr


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
    assert_exactly_once(ledger, stored_trades(s3_server.client(), bucket, PREFIX))


def missing_ids(ledger: list[dict[str, Any]]) -> dict[str, set[int]]:
    """Per symbol, the ids between the first and last delivered that were never delivered."""
    ids: dict[str, set[int]] = collections.defaultdict(set)
    for t in ledger:
        ids[f"{t['exchange']}:{t['symbol']}"].add(int(t["trade_id"]))
    return {key: set(range(min(got), max(got) + 1)) - got for key, got in ids.items()}


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
    with fake_exchange(tmp_path, rate="600", faults=faults) as fx:
        proc = start_stream(stream_env(s3_server, bucket, fx.url, "7", **extra))
        out, err = proc.communicate(timeout=60)
        ledger = fx.stop()
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "complete"
    assert manifest["counters"]["reconnects"] >= 2
    stored = stored_trades(s3_server.client(), bucket, PREFIX)
    assert_exactly_once(ledger, stored)
    expected = missing_ids(ledger)
    reported: dict[str, set[int]] = collections.defaultdict(set)
    for key, gaps in manifest["gaps"].items():
        for gap in gaps:
            reported[key].update(range(gap["from_id"], gap["to_id"] + 1))
    assert sum(len(v) for v in expected.values()) > 0, "the fault produced no gap"
    assert {k: v for k, v in reported.items() if v} == {k: v for k, v in expected.items() if v}


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
    result = subprocess.run(
        [*FEEDVAULT, "stream"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr
    assert s3_server.keys("cfg-bucket") == []
