"""End to end, as the Fargate task runs: fake OKX -> `feedvault stream` (env only) -> S3."""

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

PREFIX = "streaming/okx/"


def test_deadline_run_stores_every_ledger_trade_once(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    with fake_exchange(tmp_path, protocol="okx", symbols="BTC-USDT,ETH-USDT", rate="500") as fx:
        env = exchange_stream_env(
            s3_server.env(),
            bucket=bucket,
            prefix=PREFIX,
            streams="okx:BTC-USDT,okx:ETH-USDT",
            url_variable="OKX_WS_URL",
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
        ("okx", "BTC-USDT", "BTC-USDT"),
        ("okx", "ETH-USDT", "ETH-USDT"),
    }
    assert {t["side"] for t in stored} == {"buy", "sell"}
    assert all(t["ts_event"] % 1000 == 0 for t in stored)  # ms on the wire, µs in the record
    result = run_verify(s3_server.env(), bucket, PREFIX)
    assert result.returncode == 0, result.stdout + result.stderr
