"""End to end, as the Fargate task runs: fake Coinbase -> `feedvault stream` (env only) -> S3.

The engine and the fake exchange run as subprocesses; the fake keeps a ledger of every trade it
sent (``match`` and ``last_match`` alike); S3 is moto's server on loopback.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import S3Server
from tests.harness import (
    assert_stored_exactly_once,
    exchange_stream_env,
    fake_exchange,
    ledger_missing_ids,
    manifest_gap_ids,
    read_manifest,
    run_verify,
    start_stream,
    stop_after_connections,
    stored_trades,
)

PREFIX = "streaming/coinbase/"
SYMBOLS = "BTC-USD,ETH-USD"
STREAMS = "coinbase:BTC-USD,coinbase:ETH-USD"


def env(
    s3: S3Server, bucket: str, url: str, runtime: str, streams: str = STREAMS
) -> dict[str, str]:
    return exchange_stream_env(
        s3.env(),
        bucket=bucket,
        prefix=PREFIX,
        streams=streams,
        url_variable="COINBASE_WS_URL",
        url=url,
        runtime=runtime,
    )


def test_deadline_run_stores_every_ledger_trade_once(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    with fake_exchange(tmp_path, protocol="coinbase", symbols=SYMBOLS, rate="500") as fx:
        proc = start_stream(env(s3_server, bucket, fx.url, "6"))
        out, err = proc.communicate(timeout=60)
        ledger = fx.stop()
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert (manifest["status"], manifest["stop_reason"]) == ("complete", "deadline")
    stored = stored_trades(s3_server.client(), bucket, PREFIX)
    assert_stored_exactly_once(ledger, stored)  # exact price/size text and the taker side
    assert manifest["counters"]["parsed"] == len(stored)
    assert manifest["counters"]["invalid"] == 0
    assert sum(o["records"] for o in manifest["objects"]) == len(stored)
    assert {(t["exchange"], t["symbol"], t["raw_symbol"]) for t in stored} == {
        ("coinbase", "BTC-USD", "BTC-USD"),
        ("coinbase", "ETH-USD", "ETH-USD"),
    }
    assert {t["side"] for t in stored} == {"buy", "sell"}
    assert manifest_gap_ids(manifest) == {}
    result = run_verify(s3_server.env(), bucket, PREFIX)
    assert result.returncode == 0, result.stdout + result.stderr


def test_disconnects_reconnect_and_the_gaps_are_what_the_ledger_lacks(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The run is stopped (SIGTERM) once it has connected three times, however long the start
    and the reconnects took on a loaded machine: the second connection, between two faults,
    delivered the trades after the first gap."""
    with fake_exchange(
        tmp_path, protocol="coinbase", symbols=SYMBOLS, rate="400", faults="disconnect-every=1.2"
    ) as fx:
        proc = start_stream(env(s3_server, bucket, fx.url, "120"))
        out, err = stop_after_connections(proc, 3)
        ledger = fx.stop()
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert (manifest["status"], manifest["stop_reason"]) == ("complete", "signal")
    assert manifest["counters"]["reconnects"] >= 2  # three connections
    assert_stored_exactly_once(ledger, stored_trades(s3_server.client(), bucket, PREFIX))
    expected = ledger_missing_ids(ledger)
    assert expected, "the fault produced no gap"
    assert manifest_gap_ids(manifest) == expected


def test_a_refused_product_ends_the_run_with_the_exchange_message(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    with fake_exchange(tmp_path, protocol="coinbase", symbols="BTC-USD", rate="100") as fx:
        streams = "coinbase:BTC-USD,coinbase:NOPE-USD"
        proc = start_stream(env(s3_server, bucket, fx.url, "30", streams=streams))
        out, err = proc.communicate(timeout=60)
        fx.stop()
    assert proc.returncode == 1, err[-2000:] + out[-2000:]
    assert "NOPE-USD is not a valid product" in out + err
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["stop_reason"] == "error"
