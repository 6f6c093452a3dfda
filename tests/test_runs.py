"""``feedvault runs``: the runs under a prefix, newest first (issue 12, the operator's view)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

from sinks.local import FileWriter
from sinks.manifest import Lost, iso_utc, manifest_key, write_manifest
from sinks.memory import MemoryWriter
from sinks.runs import NO_MANIFEST, UNREADABLE, RunRow, list_runs
from sinks.s3 import S3Writer
from tests.conftest import S3Server
from tests.harness import FEEDVAULT, base_env
from tests.test_sinks_verify import NS, PREFIX, START, figures, make_run, trades

QUIET = figures(reconnects=3, error="connection refused")


def row_ids(rows: list[RunRow]) -> list[tuple[str, str]]:
    return [(row.run_id, row.status) for row in rows]


async def three_runs(writer: MemoryWriter | FileWriter | S3Writer) -> None:
    """A complete run, a later incomplete one with a stream that stored nothing, and a newest
    one still ``running`` (killed) with two objects, all under ``PREFIX``."""
    await make_run(writer, "20231114T221400Z-aaaa")
    later = await make_run(writer, "20231114T230000Z-bbbb", [trades("A-B", 1, 4)])
    later.started_at = iso_utc(START + 3600 * NS)
    later.stopped_at = iso_utc(START + 3600 * NS + 4000 * NS)
    later.status, later.stop_reason, later.error = "incomplete", "error", "no data"
    later.streams = {"kraken:XBT/USD:trades": QUIET}
    later.lost = [Lost(key="p/x.ndjson.gz", records=3, reason="ENOSPC")]
    await write_manifest(writer, PREFIX, later)
    killed = await make_run(writer, "20231115T000000Z-cccc", [trades("A-B", 1, 30)])
    killed = dataclasses.replace(
        killed,
        started_at=iso_utc(START + 7200 * NS),
        stopped_at=None,
        stop_reason=None,
        status="running",
        objects=[],
    )
    await write_manifest(writer, PREFIX, killed)


async def test_runs_newest_first_with_their_figures() -> None:
    writer = MemoryWriter()
    await three_runs(writer)
    report = await list_runs(writer, PREFIX)
    assert row_ids(report.runs) == [
        ("20231115T000000Z-cccc", "running"),
        ("20231114T230000Z-bbbb", "incomplete"),
        ("20231114T221400Z-aaaa", "complete"),
    ]
    killed, later, first = report.runs
    assert (killed.objects, killed.records, killed.duration_seconds) == (2, None, None)
    assert killed.stop_reason is None
    assert (later.objects, later.records, later.stop_reason) == (1, 4, "error")
    assert later.duration_seconds == 4000.0
    assert later.streams_without_data == ["kraken:XBT/USD:trades"]
    assert later.lost == 1
    assert (first.objects, first.records, first.duration_seconds) == (3, 55, 60.0)
    table = report.table().splitlines()
    header = "RUN ID  STATUS  STOP  STARTED  DURATION  OBJECTS  RECORDS  STREAMS WITHOUT DATA"
    assert table[0].split() == header.split()
    running = "20231115T000000Z-cccc  running  -  2023-11-15 00:14:00  -  2  -  -"
    assert table[1].split() == running.split()
    assert table[2].split() == [
        "20231114T230000Z-bbbb",
        "incomplete",
        "error",
        "2023-11-14",
        "23:14:00",
        "1h06m40s",
        "1",
        "4",
        "kraken:XBT/USD:trades",
    ]
    assert table[3].split()[5:] == ["1m00s", "3", "55", "-"]
    assert "20231114T230000Z-bbbb: 1 window lost" in table


async def test_runs_without_a_manifest_and_unreadable_manifests_are_listed() -> None:
    writer = MemoryWriter()
    await make_run(writer, "20231114T221400Z-aaaa")
    orphan = await make_run(writer, "20231116T000000Z-dddd", [trades("A-B", 1, 2)])
    await writer.delete(manifest_key(PREFIX, orphan.run_id))
    await writer.put(manifest_key(PREFIX, "20231113T000000Z-eeee"), b"{not json")
    report = await list_runs(writer, PREFIX)
    assert row_ids(report.runs) == [
        ("20231116T000000Z-dddd", NO_MANIFEST),
        ("20231114T221400Z-aaaa", "complete"),
        ("20231113T000000Z-eeee", UNREADABLE),
    ]
    assert report.runs[0].started_at == "2023-11-14T22:14:00Z"  # its first window
    assert report.runs[0].objects == 1
    assert report.runs[2].problem is not None
    assert report.runs[2].problem.startswith("manifest is not valid JSON")


async def test_a_prefix_without_runs_of_its_own_names_where_they_are(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    await make_run(writer, prefix="streaming/t/")
    report = await list_runs(writer, "")
    assert report.ok and report.runs == []
    assert report.nested == ["streaming/t/"]
    assert report.table() == "no runs here; runs found under streaming/t/"
    assert [row.run_id for row in (await list_runs(writer, "streaming/t/")).runs] == [
        "20231114T221400Z-aaaa"
    ]
    missing = await list_runs(FileWriter(tmp_path / "nope"), "")
    assert not missing.ok
    assert missing.table() == f"directory {tmp_path / 'nope'} does not exist"


def feedvault_runs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEEDVAULT, "runs", *args],
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_runs_command_on_s3_and_a_directory(
    aws_env: dict[str, str], bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    async with S3Writer.open(bucket) as writer:
        await three_runs(writer)
    done = feedvault_runs(s3_server.env(), f"s3://{bucket}/{PREFIX}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("RUN ID")
    assert [line.split()[0] for line in lines[1:4]] == [
        "20231115T000000Z-cccc",
        "20231114T230000Z-bbbb",
        "20231114T221400Z-aaaa",
    ]
    done = feedvault_runs(s3_server.env(), f"s3://{bucket}/{PREFIX}", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["prefix"] == PREFIX
    assert [run["status"] for run in document["runs"]] == ["running", "incomplete", "complete"]
    assert document["runs"][1]["streams_without_data"] == ["kraken:XBT/USD:trades"]
    assert document["runs"][2]["records"] == 55
    # The bucket root: no runs of its own.
    done = feedvault_runs(s3_server.env(), f"s3://{bucket}/")
    assert (done.returncode, done.stdout) == (0, "no runs here; runs found under p/\n")
    # A directory that does not exist.
    done = feedvault_runs({}, f"file://{tmp_path}/nope/")
    assert done.returncode == 1
    assert done.stdout == f"directory {tmp_path}/nope does not exist\n"
