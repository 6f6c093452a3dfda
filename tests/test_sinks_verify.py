"""verify_run: a good run passes; each kind of damage is reported."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine.clock import FakeClock
from engine.records import Trade
from sinks.keys import KeyTemplate
from sinks.local import FileWriter
from sinks.manifest import Gap, Manifest, iso_utc, manifest_key, write_manifest
from sinks.memory import MemoryWriter
from sinks.s3 import S3Writer
from sinks.sink import WindowedSink
from sinks.verify import verify_run
from sinks.windowing import Windower, WindowPolicy
from sinks.writer import ObjectWriter

NS = 1_000_000_000
START = 1_700_000_040 * NS
PREFIX = "p/"


def trades(symbol: str, first: int, n: int) -> list[Trade]:
    return [
        Trade("binance", symbol, symbol, str(i), "1.0", "2", "sell", 5, START + i)
        for i in range(first, first + n)
    ]


async def make_run(
    writer: ObjectWriter,
    run_id: str = "20231114T221400Z-aaaa",
    batches: list[list[Trade]] | None = None,
    fmt: str = "ndjson.gz",
) -> Manifest:
    clock = FakeClock(start_ns=START + 10 * NS)
    windower = Windower(
        WindowPolicy(60, 1 << 30, 25),
        KeyTemplate(),
        prefix=PREFIX,
        run_id=run_id,
        format=fmt,
        clock=clock,
    )
    if batches is None:
        batches = [trades("BTC-USDT", 1, 40), trades("ETH-USDT", 1, 10), trades("BTC-USDT", 41, 5)]
    async with WindowedSink(windower, writer, clock=clock) as sink:
        for batch in batches:
            await sink.write(batch)
        await sink.close()
    manifest = Manifest(
        run_id=run_id,
        version="0.1.0",
        command="stream",
        started_at=iso_utc(START),
        stopped_at=iso_utc(START + 60 * NS),
        stop_reason="deadline",
        status="complete",
        objects=list(sink.objects),
        gaps={"binance:BTC-USDT": [Gap(from_id=3, to_id=7, missing=5)]},
    )
    await write_manifest(writer, PREFIX, manifest)
    return manifest


async def test_good_run_passes() -> None:
    writer = MemoryWriter()
    manifest = await make_run(writer)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert report.problems == []
    assert report.ok
    assert report.objects == 3
    assert report.records == 55
    assert report.gaps == {"binance:BTC-USDT": [Gap(from_id=3, to_id=7, missing=5)]}
    summary = report.summary()
    assert summary.startswith("run 20231114T221400Z-aaaa: OK (3 objects, 55 records, 0 problems)")
    assert "gaps binance:BTC-USDT: 1 gaps, 5 trade ids missing" in summary


async def test_newest_run_is_verified_by_default() -> None:
    writer = MemoryWriter()
    await make_run(writer, "20231114T221400Z-aaaa")
    await make_run(writer, "20231115T080000Z-bbbb", [trades("X-Y", 1, 3)])
    report = await verify_run(writer, PREFIX, None)
    assert report.run_id == "20231115T080000Z-bbbb"
    assert report.ok, report.problems
    assert report.records == 3


async def test_no_manifest() -> None:
    report = await verify_run(MemoryWriter(), PREFIX, None)
    assert not report.ok
    assert report.problems == ["no run manifest found under 'p/_manifests/'"]
    report = await verify_run(MemoryWriter(), PREFIX, "R")
    assert report.problems == ["manifest p/_manifests/R.json not found"]


async def test_unreadable_manifest() -> None:
    writer = MemoryWriter()
    await writer.put(manifest_key(PREFIX, "R"), b"{not json")
    report = await verify_run(writer, PREFIX, "R")
    assert not report.ok
    assert report.problems[0].startswith("manifest p/_manifests/R.json is unreadable")


async def test_missing_object() -> None:
    writer = MemoryWriter()
    manifest = await make_run(writer)
    gone = manifest.objects[1].key
    await writer.delete(gone)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert not report.ok
    assert report.problems == [f"{gone}: missing (listed in the manifest, not in storage)"]


async def test_altered_bytes() -> None:
    writer = MemoryWriter()
    manifest = await make_run(writer)
    key = manifest.objects[0].key
    body = bytearray(writer.objects[key])
    body[len(body) // 2] ^= 0x01
    writer.objects[key] = bytes(body)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert not report.ok
    assert any(p.startswith(f"{key}: sha256 is ") for p in report.problems)
    assert f"manifest says {manifest.objects[0].sha256}" in report.problems[0]


async def test_truncated_object_reports_size() -> None:
    writer = MemoryWriter()
    manifest = await make_run(writer)
    entry = manifest.objects[0]
    writer.objects[entry.key] = writer.objects[entry.key][:-10]
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert f"{entry.key}: size is {entry.bytes - 10} bytes, manifest says {entry.bytes}" in (
        report.problems
    )
    assert any("cannot decode" in p for p in report.problems)


async def test_record_count_mismatch() -> None:
    writer = MemoryWriter()
    manifest = await make_run(writer)
    entry = manifest.objects[0]
    manifest.objects[0] = dataclasses.replace(entry, records=entry.records + 1)
    await write_manifest(writer, PREFIX, manifest)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert report.problems == [
        f"{entry.key}: holds {entry.records} records, manifest says {entry.records + 1}"
    ]


async def test_trade_id_range_mismatch() -> None:
    writer = MemoryWriter()
    manifest = await make_run(writer)
    entry = manifest.objects[0]
    manifest.objects[0] = dataclasses.replace(entry, symbols={"binance:BTC-USDT": ("1", "99")})
    await write_manifest(writer, PREFIX, manifest)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert len(report.problems) == 1
    assert "first/last trade ids per symbol" in report.problems[0]


async def test_duplicate_trade_id_across_objects() -> None:
    writer = MemoryWriter()
    batches = [trades("BTC-USDT", 1, 25), trades("BTC-USDT", 25, 3)]  # id 25 twice
    manifest = await make_run(writer, batches=batches)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    first, second = (entry.key for entry in manifest.objects)
    assert report.problems == [
        f"duplicate trade id binance:BTC-USDT:25 in {second} (first in {first})"
    ]


async def test_many_duplicates_are_summarized() -> None:
    writer = MemoryWriter()
    batches = [trades("BTC-USDT", 1, 20), trades("BTC-USDT", 1, 20)]
    manifest = await make_run(writer, batches=batches)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert len(report.problems) == 11
    assert report.problems[-1] == "... and 10 more duplicate trade ids"


async def test_incomplete_run() -> None:
    writer = MemoryWriter()
    manifest = await make_run(writer)
    manifest.status = "incomplete"
    manifest.stop_reason = "signal"
    manifest.error = "second signal"
    manifest.spilled = ["p/trades/x.ndjson.gz"]
    await write_manifest(writer, PREFIX, manifest)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert report.problems == [
        "run status is incomplete (stop reason signal): second signal",
        "1 windows were left in the spill directory: p/trades/x.ndjson.gz",
    ]
    assert "FAILED" in report.summary()


async def test_stray_object_of_the_run() -> None:
    writer = MemoryWriter()
    manifest = await make_run(writer)
    stray = f"{PREFIX}trades/exchange=x/20231114T221400Z-{manifest.run_id}-000009.ndjson.gz"
    await writer.put(stray, b"")
    await writer.put(f"{PREFIX}trades/other-run-000000.ndjson.gz", b"")
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert report.problems == [f"{stray}: stray object of this run, not in the manifest"]


@pytest.mark.parametrize("fmt", ["ndjson.gz", "ndjson.zst"])
async def test_good_run_in_s3(aws_env: dict[str, str], bucket: str, fmt: str) -> None:
    async with S3Writer.open(bucket) as writer:
        manifest = await make_run(writer, fmt=fmt)
        report = await verify_run(writer, PREFIX, None)
        assert report.ok, report.problems
        assert report.run_id == manifest.run_id
        await writer.delete(manifest.objects[0].key)
        report = await verify_run(writer, PREFIX, None)
        assert not report.ok


async def test_good_run_in_directory(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    manifest = await make_run(writer)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert report.ok, report.problems
