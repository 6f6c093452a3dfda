"""Trade-id resets and late trades through the whole system: the fake exchange's ``restart-ids``
fault, ``feedvault stream`` into moto's S3 server, the manifest's ``resets``, and ``verify``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors.fake.faults import Faults
from engine.records import Trade
from sinks.manifest import Manifest, Reset, iso_utc
from sinks.memory import MemoryWriter
from sinks.verify import verify_run
from tests.conftest import S3Server
from tests.harness import (
    assert_stored_exactly_once,
    fake_exchange,
    fake_stream_env,
    read_manifest,
    run_verify,
    start_stream,
    stop_after_connections,
    stored_trades,
)
from tests.test_sinks_verify import make_run

NS = 1_000_000_000
START = 1_700_000_040 * NS
PREFIX = "streaming/resets/"
FIRST_ID = 1_000_000
"""The fake's first trade id: its restart to 1 is a jump back far beyond the reorder window."""


def test_the_restart_ids_fault_parses_and_prints() -> None:
    faults = Faults.parse("disconnect-every=1.5,restart-ids=2")
    assert faults.restart_ids == 2
    assert str(faults) == "disconnect-every=1.5,restart-ids=2"
    for bad in ("restart-ids", "restart-ids=1", "restart-ids=x"):
        with pytest.raises(ValueError, match="restart-ids"):
            Faults.parse(bad)


def missing_between(ids: list[int]) -> set[int]:
    return set(range(min(ids), max(ids) + 1)) - set(ids)


def test_a_reset_after_a_reconnect_stores_both_ranges_and_the_manifest_records_it(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Connection 2 gets ids from 1 again (the first got ids from 1,000,000): every trade sent
    is stored once, the manifest has the reset (from the highest id of the first sequence to
    the first of the second) and the gaps of each sequence, the run is complete and verifies.
    Before the reorder window, the second sequence was dropped as duplicates."""
    faults = "disconnect-every=2.5,restart-ids=2"
    with fake_exchange(
        tmp_path, symbols="BTCUSDT", rate="600", faults=faults, first_id=FIRST_ID
    ) as fx:
        env = fake_stream_env(s3_server.env(), fx.url, bucket, PREFIX, "120", "BTCUSDT")
        proc = start_stream(env)
        out, err = stop_after_connections(proc, 3)
        ledger = fx.stop()
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    old = [int(t["trade_id"]) for t in ledger if t["conn"] == 1]
    new = [int(t["trade_id"]) for t in ledger if t["conn"] > 1]
    assert old and new and min(old) >= FIRST_ID > max(new)
    stored = stored_trades(s3_server.client(), bucket, PREFIX)
    assert_stored_exactly_once(ledger, stored)
    manifest: dict[str, Any] = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "complete"
    assert manifest["counters"]["duplicates"] == 0
    [reset] = manifest["resets"]["binance:BTC-USDT"]
    assert (reset["from_id"], reset["to_id"]) == (max(old), new[0])
    assert manifest["started_at"] <= reset["at"] <= manifest["stopped_at"]
    gap_ids = {
        i
        for gap in manifest["gaps"].get("binance:BTC-USDT", [])
        for i in range(gap["from_id"], gap["to_id"] + 1)
    }
    assert gap_ids == missing_between(old) | missing_between(new)
    result = run_verify(s3_server.env(), bucket, PREFIX)
    assert result.returncode == 0, result.stdout + result.stderr


# -- verify: late trades and restarted sequences ---------------------------------------------


def trades(ids: list[int]) -> list[Trade]:
    return [Trade("binance", "BTC-USDT", "BTCUSDT", str(i), "1", "2", "buy", 5, START) for i in ids]


async def stored_run(writer: MemoryWriter, batches: list[list[int]], resets: int) -> Manifest:
    """A complete run holding ``batches`` (one object each) whose manifest records ``resets``
    resets of ``binance:BTC-USDT``."""
    reset = Reset(from_id=30, to_id=1, at=iso_utc(START))
    return await make_run(
        writer,
        "20231114T221400Z-rest",
        [trades(batch) for batch in batches],
        prefix=PREFIX,
        max_records=1_000_000,
        gaps={},
        resets={"binance:BTC-USDT": [reset] * resets},
    )


async def test_verify_accepts_late_ids_and_ids_again_after_a_recorded_reset() -> None:
    writer = MemoryWriter()
    batches = [[1, 2, 4, 3, 5, *range(6, 31)], list(range(1, 11)), [12, 11]]
    manifest = await stored_run(writer, batches, resets=1)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert report.problems == [] and report.ok


async def test_verify_still_finds_an_id_stored_more_often_than_its_sequences() -> None:
    writer = MemoryWriter()
    manifest = await stored_run(writer, [list(range(1, 31)), [1, 2], [2]], resets=1)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert len(report.problems) == 1
    assert report.problems[0].startswith("duplicate trade id binance:BTC-USDT:2 in ")
