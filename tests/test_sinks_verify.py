"""verify_run: a good run passes; each kind of damage is reported."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.records import Trade
from sinks.local import FileWriter
from sinks.manifest import (
    Gap,
    Lost,
    Manifest,
    Reset,
    StreamFigures,
    iso_utc,
    manifest_key,
    write_manifest,
)
from sinks.memory import MemoryWriter
from sinks.s3 import S3Writer
from sinks.sink import WindowedSink
from sinks.verify import verify_run
from sinks.writer import ObjectWriter
from tests.harness import make_windower

NS = 1_000_000_000
START = 1_700_000_040 * NS
PREFIX = "p/"


def trades(symbol: str, first: int, n: int) -> list[Trade]:
    return [
        Trade("binance", symbol, symbol, str(i), "1.0", "2", "sell", 5, START + i)
        for i in range(first, first + n)
    ]


def figures(
    records: int = 0,
    seconds: float = 0.0,
    *,
    reconnects: int = 0,
    first: int | None = None,
    last: int | None = None,
    error: str | None = None,
) -> StreamFigures:
    """A stream's manifest figures: ``records`` over ``seconds`` subscribed (and connected)."""
    return StreamFigures(
        records=records,
        subscribed_seconds=seconds,
        connected_seconds=seconds,
        reconnects=reconnects,
        first_ts_event=first,
        last_ts_event=last,
        last_error=error,
    )


async def make_run(
    writer: ObjectWriter,
    run_id: str = "20231114T221400Z-aaaa",
    batches: list[list[Trade]] | None = None,
    fmt: str = "ndjson.gz",
    prefix: str = PREFIX,
    *,
    recorded: bool = False,
    max_records: int = 25,
    **fields: Any,
) -> Manifest:
    """A run's objects (windows of ``max_records``) and complete manifest under ``prefix``;
    ``recorded``: the manifest records its ``prefix`` and ``destination`` (else it is an older
    manifest without them); ``fields`` replace the manifest's (its gaps, its resets...)."""
    clock = FakeClock(start_ns=START + 10 * NS)
    windower = make_windower(clock, max_records, prefix, run_id, fmt)
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
        prefix=prefix if recorded else None,
        destination=f"s3://b/{prefix}" if recorded else None,
        **{"gaps": {"binance:BTC-USDT": [Gap(from_id=3, to_id=7, missing=5)]}, **fields},
    )
    await write_manifest(writer, prefix, manifest)
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
    assert "gaps binance:BTC-USDT: 1 gap, 5 trade ids missing" in summary


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
        "1 window was left in the spill directory: p/trades/x.ndjson.gz",
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


# -- issue 12: exact run ids, copies, prefixes, unfinished runs -----------------------------------


async def copy_objects(source: ObjectWriter, prefix: str, target: ObjectWriter, to: str) -> int:
    """What ``aws s3 sync`` of ``prefix`` to ``to`` does: every object, its key re-rooted."""
    listed = await source.list(prefix)
    for obj in listed:
        await target.put(to + obj.key[len(prefix) :], await source.get(obj.key))
    return len(listed)


async def test_run_ids_match_exactly() -> None:
    """``run1``'s check is not disturbed by ``run10``'s objects beside it (nor the reverse)."""
    writer = MemoryWriter()
    await make_run(writer, "run1")
    await make_run(writer, "run10", [trades("X-Y", 1, 3)])
    for run_id in ("run1", "run10"):
        report = await verify_run(writer, PREFIX, run_id)
        assert report.problems == [], run_id
    stray = next(key for key in writer.objects if "-run10-" in key).replace("run10", "run1")
    stray = stray.replace("-000000.", "-000042.")
    await writer.put(stray, b"")
    report = await verify_run(writer, PREFIX, "run1")
    assert report.problems == [f"{stray}: stray object of this run, not in the manifest"]
    assert (await verify_run(writer, PREFIX, "run10")).ok


@pytest.mark.parametrize("recorded", [True, False], ids=["prefix-recorded", "older-manifest"])
async def test_a_local_mirror_of_a_prefix_verifies(
    aws_env: dict[str, str], bucket: str, tmp_path: Path, recorded: bool
) -> None:
    """``aws s3 sync s3://b/streaming/t/ ./copy/``, then ``verify file:///.../copy/``."""
    prefix = "streaming/t/"
    async with S3Writer.open(bucket) as s3:
        manifest = await make_run(s3, prefix=prefix, recorded=recorded)
        copy = FileWriter(tmp_path / "copy")
        assert await copy_objects(s3, prefix, copy, "") == 4
        # ... and a copy under another bucket prefix.
        assert await copy_objects(s3, prefix, s3, "backup/") == 4
        report = await verify_run(s3, "backup/", None)
        assert report.ok, report.problems
    report = await verify_run(copy, "", None)
    assert report.problems == []
    assert (report.run_id, report.objects, report.records) == (manifest.run_id, 3, 55)
    assert report.recorded_prefix == prefix
    assert "a copy: keys written under 'streaming/t/' looked up under ''" in report.summary()
    # A damaged copy still fails, on the copy's own key.
    first = manifest.objects[0].key[len(prefix) :]
    (tmp_path / "copy" / first).write_bytes(b"")
    report = await verify_run(copy, "", manifest.run_id)
    assert f"{first}: size is 0 bytes, manifest says {manifest.objects[0].bytes}" in (
        report.problems
    )


async def test_an_older_manifest_takes_its_prefix_from_its_configuration(tmp_path: Path) -> None:
    source = MemoryWriter()
    manifest = await make_run(source, prefix="a/b/")
    manifest.config = {"destination": "s3://bucket/a/b/"}
    await write_manifest(source, "a/b/", manifest)
    copy = FileWriter(tmp_path)
    await copy_objects(source, "a/b/", copy, "")
    report = await verify_run(copy, "", None)
    assert report.ok, report.problems
    assert report.recorded_prefix == "a/b/"


@pytest.mark.parametrize("recorded", [True, False], ids=["prefix-recorded", "older-manifest"])
async def test_objects_outside_the_verified_prefix_fail(recorded: bool) -> None:
    """A manifest under ``p/`` listing another prefix's objects (all intact) is not a run of
    ``p/``: today it passes."""
    writer = MemoryWriter()
    other = await make_run(writer, "20231114T221400Z-other", prefix="q/")
    forged = await make_run(writer, "20231114T221400Z-forged", [], recorded=recorded)
    forged.objects = other.objects
    await write_manifest(writer, PREFIX, forged)
    report = await verify_run(writer, PREFIX, forged.run_id)
    assert not report.ok
    if recorded:
        assert report.problems == [
            f"{entry.key}: outside the run's prefix 'p/', not checked" for entry in other.objects
        ]
    else:  # the keys say they were written under q/: looked up under p/, they are not there
        assert report.problems == [
            f"{PREFIX}{entry.key[2:]}: missing (listed in the manifest, not in storage)"
            for entry in other.objects
        ]


async def test_a_prefix_without_runs_of_its_own_says_where_they_are() -> None:
    writer = MemoryWriter()
    await make_run(writer, prefix="streaming/t/")
    await make_run(writer, "20231115T000000Z-zz", prefix="streaming/u/v/")
    report = await verify_run(writer, "streaming/", None)
    assert report.problems == ["no runs here; runs found under streaming/t/, streaming/u/v/"]
    assert report.runs_without_manifest == []
    report = await verify_run(writer, "", "20231114T221400Z-aaaa")
    assert report.problems == [
        "manifest _manifests/20231114T221400Z-aaaa.json not found",
        "no runs here; runs found under streaming/t/, streaming/u/v/",
    ]
    # Runs of their own are checked; deeper runs are theirs, not strays nor killed runs.
    await make_run(writer, "20231114T221400Z-aaaa", prefix="streaming/")
    report = await verify_run(writer, "streaming/", None)
    assert report.ok, report.problems
    assert report.runs_without_manifest == []


async def test_a_directory_that_does_not_exist_says_so(tmp_path: Path) -> None:
    report = await verify_run(FileWriter(tmp_path / "nope"), "", None)
    assert report.problems == [f"directory {tmp_path / 'nope'} does not exist"]
    assert not report.ok


async def running(writer: ObjectWriter, manifest: Manifest) -> None:
    """Put back the manifest the run wrote at its start (what a killed run leaves)."""
    await write_manifest(
        writer,
        PREFIX,
        dataclasses.replace(
            manifest, status="running", stopped_at=None, stop_reason=None, objects=[], gaps={}
        ),
    )


async def test_a_running_manifest_is_a_run_that_never_finished() -> None:
    writer = MemoryWriter()
    manifest = await make_run(writer)
    await running(writer, manifest)
    report = await verify_run(writer, PREFIX, None)
    assert report.run_id == manifest.run_id
    assert report.problems == [
        f"run {manifest.run_id} never finished (killed?): 3 objects of it found"
    ]
    assert (report.objects, report.records) == (3, 55)
    assert [obj.key for obj in report.unfinished] == sorted(e.key for e in manifest.objects)
    summary = report.summary()
    assert summary.startswith(f"run {manifest.run_id}: FAILED (3 objects, 55 records, 1 problem)")
    assert "  objects of the unfinished run: 3" in summary
    for entry in manifest.objects:
        assert f"    {entry.key} ({entry.bytes} bytes)" in summary


async def test_the_objects_of_an_unfinished_run_are_checked() -> None:
    writer = MemoryWriter()
    manifest = await make_run(writer, batches=[trades("A-B", 1, 25), trades("A-B", 25, 2)])
    await running(writer, manifest)
    first, second = (entry.key for entry in manifest.objects)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert report.problems[1:] == [
        f"duplicate trade id binance:A-B:25 in {second} (first in {first})"
    ]
    writer.objects[first] = b"not gzip"
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert any(p.startswith(f"{first}: cannot decode") for p in report.problems)


async def test_lost_windows_warnings_and_streams_without_data_are_shown() -> None:
    writer = MemoryWriter()
    manifest = await make_run(writer)
    manifest.status, manifest.stop_reason = "incomplete", "deadline"
    manifest.lost = [Lost(key="p/trades/w.ndjson.gz", records=11649, reason="ENOSPC")]
    manifest.warnings = ["binance:ETHUSDT:trades was subscribed 60.0 s and saw no trade"]
    quiet = figures(seconds=60.0)
    never = figures(reconnects=4, error="connection refused")
    busy = figures(55, 60.0, reconnects=1, first=START, last=START + 1)
    manifest.streams = {
        "binance:ETHUSDT:trades": quiet,
        "kraken:XBT/USD:trades": never,
        "binance:BTCUSDT:trades": busy,
    }
    manifest.resets = {"binance:BTCUSDT": [Reset(from_id=1050, to_id=1, at=iso_utc(START))]}
    await write_manifest(writer, PREFIX, manifest)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    assert report.problems == [
        "run status is incomplete (stop reason deadline)",
        "p/trades/w.ndjson.gz: lost, 11649 records neither uploaded nor spilled (ENOSPC)",
    ]
    summary = report.summary()
    assert "  warning: binance:ETHUSDT:trades was subscribed 60.0 s and saw no trade" in summary
    assert "  no data from binance:ETHUSDT:trades: subscribed 60.0 s, 0 reconnects" in summary
    assert (
        "  no data from kraken:XBT/USD:trades: subscribed 0.0 s, 4 reconnects, "
        "last error: connection refused"
    ) in summary
    assert "no data from binance:BTCUSDT" not in summary
    assert "  reset binance:BTCUSDT: trade ids went back from 1050 to 1 at " in summary
    document = report.to_dict()
    assert document["lost"] == manifest.lost
    assert sorted(document["streams_without_data"]) == [  # type: ignore[call-overload]
        "binance:ETHUSDT:trades",
        "kraken:XBT/USD:trades",
    ]
