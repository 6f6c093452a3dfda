"""End to end, as the Fargate task runs: fake Bybit -> `feedvault stream` (env only) -> S3,
including a subscription Bybit refuses."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import S3Server
from tests.harness import (
    assert_stored_exactly_once,
    exchange_stream_env,
    fake_exchange,
    read_manifest,
    run_verify,
    start_stream,
    stored_trades,
)

PREFIX = "streaming/bybit/"


def test_deadline_run_stores_every_ledger_trade_once(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    with fake_exchange(tmp_path, protocol="bybit", symbols="BTCUSDT,ETHUSDT", rate="500") as fx:
        env = exchange_stream_env(
            s3_server.env(),
            bucket=bucket,
            prefix=PREFIX,
            streams="bybit:BTCUSDT,bybit:ETHUSDT",
            url_variable="BYBIT_WS_URL",
            url=fx.url,
            runtime="6",
        )
        proc = start_stream(env)
        out, err = proc.communicate(timeout=60)
        ledger = fx.stop()
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "complete" and manifest["stop_reason"] == "deadline"
    stored = stored_trades(s3_server.client(), bucket, PREFIX)
    assert_stored_exactly_once(ledger, stored)
    assert manifest["counters"]["parsed"] == len(stored)
    assert sum(o["records"] for o in manifest["objects"]) == len(stored)
    assert {(t["exchange"], t["symbol"], t["raw_symbol"]) for t in stored} == {
        ("bybit", "BTC-USDT", "BTCUSDT"),
        ("bybit", "ETH-USDT", "ETHUSDT"),
    }
    assert {t["side"] for t in stored} == {"buy", "sell"}
    result = run_verify(s3_server.env(), bucket, PREFIX)
    assert result.returncode == 0, result.stdout + result.stderr


def test_refused_subscription_exits_1_with_bybits_message(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    with fake_exchange(tmp_path, protocol="bybit", symbols="BTCUSDT", rate="200") as fx:
        env = exchange_stream_env(
            s3_server.env(),
            bucket=bucket,
            prefix=PREFIX,
            streams="bybit:BTCUSDT,bybit:NOPEUSDT",
            url_variable="BYBIT_WS_URL",
            url=fx.url,
            runtime="30",
        )
        proc = start_stream(env)
        out, err = proc.communicate(timeout=60)
        fx.stop()
    assert proc.returncode == 1, err[-2000:] + out[-2000:]
    assert "Invalid symbol :[publicTrade.NOPEUSDT]" in out + err
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["stop_reason"] == "error"
    assert "Invalid symbol :[publicTrade.NOPEUSDT]" in manifest["error"]
    assert "rejected the subscription to bybit:NOPEUSDT:" in manifest["error"]  # named
    assert manifest["counters"]["parsed"] == 0  # the whole request was refused
