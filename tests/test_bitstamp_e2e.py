"""End to end, as the Fargate task runs: fake Bitstamp -> `feedvault stream` (env only) -> S3,
including reconnect notices (``bts:request_reconnect``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import S3Server
from tests.harness import (
    assert_stored_exactly_once,
    exchange_stream_env,
    fake_exchange,
    read_manifest,
    run_verify,
    start_stream,
    stop_after_connections,
    stored_trades,
)

PREFIX = "streaming/bitstamp/"


def _run(
    s3: S3Server, bucket: str, tmp_path: Path, faults: str | None, connections: int | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """(ledger, manifest, stored trades) of a run on BTCUSD and ETHUSD; exit 0 asserted.
    Without ``connections``, a 6 s run that ends on its deadline; with it, a run stopped
    (SIGTERM) once it has connected that many times, however long the start and the
    reconnects took on a loaded machine."""
    with fake_exchange(
        tmp_path, protocol="bitstamp", symbols="BTCUSD,ETHUSD", rate="500", faults=faults
    ) as fx:
        env = exchange_stream_env(
            s3.env(),
            bucket=bucket,
            prefix=PREFIX,
            streams="bitstamp:BTCUSD,bitstamp:ethusd",  # both spellings are accepted
            url_variable="BITSTAMP_WS_URL",
            url=fx.url,
            runtime="6" if connections is None else "120",
        )
        proc = start_stream(env)
        if connections is None:
            out, err = proc.communicate(timeout=60)
        else:
            out, err = stop_after_connections(proc, connections)
        ledger = fx.stop()
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    manifest = read_manifest(s3.client(), bucket, PREFIX)
    reason = "deadline" if connections is None else "signal"
    assert (manifest["status"], manifest["stop_reason"]) == ("complete", reason)
    return ledger, manifest, stored_trades(s3.client(), bucket, PREFIX)


def test_deadline_run_stores_every_ledger_trade_once(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    ledger, manifest, stored = _run(s3_server, bucket, tmp_path, None)
    assert_stored_exactly_once(ledger, stored)
    assert manifest["counters"]["parsed"] == len(stored)
    assert sum(o["records"] for o in manifest["objects"]) == len(stored)
    assert {(t["exchange"], t["symbol"], t["raw_symbol"]) for t in stored} == {
        ("bitstamp", "BTC-USD", "btcusd"),
        ("bitstamp", "ETH-USD", "ethusd"),
    }
    assert {t["side"] for t in stored} == {"buy", "sell"}
    assert not any(manifest["gaps"].values())  # unsequenced: no gap detection
    result = run_verify(s3_server.env(), bucket, PREFIX)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reconnect_notices_reconnect_and_lose_nothing(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    # a notice at each connection's age 2 s: the second connection lived between two notices
    ledger, manifest, stored = _run(
        s3_server, bucket, tmp_path, "shutdown-notice-every=2", connections=3
    )
    assert manifest["counters"]["reconnects"] >= 2  # three connections
    assert len({t["conn"] for t in ledger}) >= 2  # the fake saw the client come back
    assert_stored_exactly_once(ledger, stored)
    assert manifest["counters"]["parsed"] == len(stored)
