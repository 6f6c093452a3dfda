"""Recovery of an earlier run's spill: uploads, the completed manifest, what is removed when."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.clock import FakeClock
from engine.errors import IntegrityError, StorageError
from engine.records import Trade
from sinks.encoders import decode_object
from sinks.manifest import Lost, Manifest, StoredObjectEntry, iso_utc, manifest_key
from sinks.memory import MemoryWriter
from sinks.recovery import RecoveryReport, recover_spilled, updated_manifest
from sinks.s3 import S3Writer
from sinks.spill import (
    check_key_under,
    load_spilled_manifest,
    scan_spilled,
    spill_manifest,
    spill_windows,
)
from sinks.spilllock import claim_run_lock, hold_run_lock, run_is_live
from sinks.verify import verify_run
from sinks.windowing import ClosedWindow
from sinks.writer import ObjectWriter, StoredObject
from tests.conftest import S3Server
from tests.harness import (
    REPO,
    fake_exchange,
    fake_stream_env,
    make_windower,
    reap,
    start_stream,
    wait_for_log,
)

NS = 1_000_000_000
DEST = "s3://bucket-a/p/"
PREFIX = "p/"


class ManifestsRefused(MemoryWriter):
    """The store takes windows but refuses manifests while ``refuse`` is set."""

    refuse = True

    async def put(self, key: str, body: bytes) -> StoredObject:
        if self.refuse and "/_manifests/" in key:
            raise StorageError(f"injected: manifest {key} refused")
        return await super().put(key, body)


def windows(
    run_id: str, n: int, clock: FakeClock, prefix: str = PREFIX, fmt: str = "ndjson.gz"
) -> list[ClosedWindow]:
    windower = make_windower(clock, 4, prefix, run_id, fmt)
    trades = [
        Trade("binance", "BTC-USDT", "BTCUSDT", str(i), "1.5", "2", "buy", 1_000 + i, 7)
        for i in range(1, 4 * n + 1)
    ]
    closed = windower.add(trades)
    assert len(closed) == n
    return closed


def manifest(
    run_id: str,
    objects: list[StoredObjectEntry],
    spilled: list[str],
    error: str | None = None,
) -> Manifest:
    return Manifest(
        run_id=run_id,
        version="test",
        command="feedvault stream",
        started_at=iso_utc(1_700_000_000 * NS),
        stopped_at=iso_utc(1_700_000_060 * NS),
        stop_reason="signal",
        status="incomplete",
        objects=objects,
        counters={"received": 12, "parsed": 12, "invalid": 0, "dropped": 0, "reconnects": 0},
        spilled=spilled,
        error=error,
    )


async def earlier_run(
    writer: ObjectWriter,
    spill_dir: Path,
    clock: FakeClock,
    *,
    run_id: str = "run-1",
    manifest_spilled: bool = True,
    error: str | None = None,
    fmt: str = "ndjson.gz",
) -> tuple[list[ClosedWindow], Manifest]:
    """What a run whose S3 failed leaves: one window in the store, two spilled, and its
    incomplete manifest spilled (or in the store)."""
    first, *rest = windows(run_id, 3, clock, fmt=fmt)
    stored = await writer.put(first.key, first.body)
    spill_windows(rest, spill_dir, run_id, destination=DEST)
    doc = manifest(run_id, [StoredObjectEntry.of(first, stored)], [w.key for w in rest], error)
    if manifest_spilled:
        spill_manifest(
            spill_dir, run_id, manifest_key(PREFIX, run_id), doc.to_json(), destination=DEST
        )
    else:
        await writer.put(manifest_key(PREFIX, run_id), doc.to_json())
    return [first, *rest], doc


async def recover(
    writer: ObjectWriter, spill_dir: Path, clock: FakeClock, current_run: str = "run-2"
) -> RecoveryReport:
    return await recover_spilled(
        writer, spill_dir, destination=DEST, prefix=PREFIX, current_run=current_run, clock=clock
    )


def stored_manifest(writer: MemoryWriter, run_id: str = "run-1") -> Manifest:
    return Manifest.from_json(writer.objects[manifest_key(PREFIX, run_id)])


@pytest.mark.parametrize("fmt", ["ndjson.gz", "ndjson.zst", "parquet"])
async def test_a_spilled_manifest_and_its_windows_are_uploaded_and_the_run_verifies(
    tmp_path: Path, fmt: str
) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    made, before = await earlier_run(writer, tmp_path, clock, fmt=fmt)
    assert all(w.key.endswith("." + fmt) for w in made)
    assert not (await verify_run(writer, PREFIX, "run-1")).ok  # no manifest in the store yet
    report = await recover(writer, tmp_path, clock)
    assert report.uploaded == [w.key for w in made[1:]]
    assert report.manifests == ["run-1"]
    assert report.complete_runs == ["run-1"]
    assert report.done
    assert report.left == 0
    after = stored_manifest(writer)
    assert after.status == "complete"
    assert after.spilled == []
    assert [o.key for o in after.objects] == [w.key for w in made]
    assert after.recovered == [
        {"key": w.key, "recovered_at": iso_utc(clock.time_ns()), "recovered_by": "run-2"}
        for w in made[1:]
    ]
    assert (after.counters, after.stop_reason, after.started_at) == (
        before.counters,
        before.stop_reason,
        before.started_at,
    )
    report_ok = await verify_run(writer, PREFIX, "run-1")
    assert report_ok.ok, report_ok.problems
    assert report_ok.records == 12
    stored = [t for w in made for t in decode_object(w.key, writer.objects[w.key])]
    assert [t["trade_id"] for t in stored] == [str(i) for i in range(1, 13)]
    # Removed only now that the windows and the manifest naming them are durable.
    assert scan_spilled(tmp_path).entries == []
    assert load_spilled_manifest(tmp_path, "run-1") is None


async def test_an_incomplete_manifest_in_the_store_is_completed(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    made, _ = await earlier_run(writer, tmp_path, clock, manifest_spilled=False)
    assert stored_manifest(writer).status == "incomplete"
    report = await recover(writer, tmp_path, clock)
    assert report.complete_runs == ["run-1"]
    after = stored_manifest(writer)
    assert after.status == "complete"
    assert [o.key for o in after.objects] == [w.key for w in made]
    assert (await verify_run(writer, PREFIX, "run-1")).ok
    assert scan_spilled(tmp_path).entries == []


async def test_nothing_is_removed_until_the_updated_manifest_is_durable(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = ManifestsRefused()
    made, _ = await earlier_run(writer, tmp_path, clock)
    report = await recover(writer, tmp_path, clock)
    assert report.storage_error is not None and "refused" in report.storage_error
    assert not report.done
    # The windows went up, but without the manifest naming them nothing leaves the disk.
    assert all(w.key in writer.objects for w in made)
    assert len(scan_spilled(tmp_path).entries) == 2
    assert load_spilled_manifest(tmp_path, "run-1") is not None
    # The next attempt does it again (same keys, same bytes) and completes the run once.
    writer.refuse = False
    clock.advance(30)
    again = await recover(writer, tmp_path, clock, current_run="run-3")
    assert again.done
    after = stored_manifest(writer)
    assert [o.key for o in after.objects] == [w.key for w in made]
    assert [r["recovered_by"] for r in after.recovered] == ["run-3", "run-3"]
    assert (await verify_run(writer, PREFIX, "run-1")).ok
    assert scan_spilled(tmp_path).entries == []


async def test_a_store_still_down_ends_the_attempt_and_loses_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    await earlier_run(writer, tmp_path, clock)
    before = dict(writer.objects)
    writer.fail_next(1)
    report = await recover(writer, tmp_path, clock)
    assert report.storage_error == "injected failure"
    assert report.uploaded == []
    assert not report.done
    assert writer.objects == before
    assert len(scan_spilled(tmp_path).entries) == 2
    assert load_spilled_manifest(tmp_path, "run-1") is not None


async def test_other_destinations_and_the_current_run_are_left_alone(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    spill_windows(windows("elsewhere", 1, clock), tmp_path, "elsewhere", destination="s3://b2/p/")
    spill_windows(windows("run-2", 1, clock), tmp_path, "run-2", destination=DEST)
    report = await recover(writer, tmp_path, clock)
    assert report.other_destinations == 1
    assert report.uploaded == []
    assert report.done
    assert writer.objects == {}
    assert len(scan_spilled(tmp_path).entries) == 2


async def test_windows_spilled_before_destinations_were_recorded_go_by_their_prefix(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    [mine] = windows("old", 1, clock)
    spill_windows([mine], tmp_path, "old")  # no destination: an older sidecar
    report = await recover(writer, tmp_path, clock)
    assert report.uploaded == [mine.key]
    assert writer.objects == {mine.key: mine.body}


async def test_a_run_without_a_manifest_gets_its_windows_uploaded_without_one(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    made = windows("killed", 2, clock)
    spill_windows(made, tmp_path, "killed", destination=DEST)
    report = await recover(writer, tmp_path, clock)
    assert report.uploaded == [w.key for w in made]
    assert report.manifests == []
    assert writer.objects == {w.key: w.body for w in made}  # no manifest is made up
    assert scan_spilled(tmp_path).entries == []


async def test_a_run_that_failed_stays_incomplete_after_recovery(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    await earlier_run(writer, tmp_path, clock, error="exchange rejected the subscription")
    report = await recover(writer, tmp_path, clock)
    assert report.manifests == ["run-1"]
    assert report.complete_runs == []
    after = stored_manifest(writer)
    assert after.status == "incomplete"
    assert after.spilled == []
    assert len(after.recovered) == 2
    assert not (await verify_run(writer, PREFIX, "run-1")).ok


async def test_an_unreadable_spill_file_is_left_in_place_and_stays_named(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    made, _ = await earlier_run(writer, tmp_path, clock)
    damaged = next(e for e in scan_spilled(tmp_path).entries if e.key == made[1].key)
    damaged.path.write_bytes(b"damaged")
    report = await recover(writer, tmp_path, clock)
    assert report.uploaded == [made[2].key]
    assert report.stuck == 1
    assert report.done  # another attempt would not help
    assert "does not match" in report.problems[0]
    after = stored_manifest(writer)
    assert after.status == "incomplete"
    assert after.spilled == [made[1].key]
    assert [e.key for e in scan_spilled(tmp_path).entries] == [made[1].key]


def test_updating_a_manifest_twice_with_the_same_uploads_changes_nothing_more() -> None:
    clock = FakeClock()
    made = windows("run-1", 2, clock)
    entries = [StoredObjectEntry.of(w, StoredObject(w.key, len(w.body), "0" * 64), 5) for w in made]
    base = manifest("run-1", entries[:1], [made[1].key])
    once = updated_manifest(base, entries[1:], recovered_by="run-2", now_ns=10 * NS)
    twice = updated_manifest(once, entries[1:], recovered_by="run-3", now_ns=20 * NS)
    assert once.status == twice.status == "complete"
    assert twice.objects == once.objects == entries
    assert twice.recovered == once.recovered
    assert once.recovered[0]["recovered_by"] == "run-2"
    assert Manifest.from_json(twice.to_json()) == twice
    # Nothing recovered: a run's own incomplete status is not changed.
    assert updated_manifest(base, [], recovered_by="x", now_ns=0).status == "incomplete"


def test_recovery_never_makes_a_killed_or_lossy_run_complete() -> None:
    clock = FakeClock()
    made = windows("run-1", 2, clock)
    entries = [StoredObjectEntry.of(w, StoredObject(w.key, len(w.body), "0" * 64), 5) for w in made]
    killed = dataclasses.replace(
        manifest("run-1", [], [made[1].key]), status="running", stop_reason=None, stopped_at=None
    )
    after = updated_manifest(killed, entries, recovered_by="run-2", now_ns=10 * NS)
    assert after.status == "running"  # what was recovered joins it; it never finished
    assert [e.key for e in after.objects] == [w.key for w in made]
    lossy = dataclasses.replace(
        manifest("run-1", entries[:1], [made[1].key]),
        lost=[Lost(key="p/trades/x.ndjson.gz", records=7, reason="spill files are gone")],
    )
    assert updated_manifest(lossy, entries[1:], recovered_by="r", now_ns=0).status == "incomplete"


def test_a_run_alive_in_another_process_is_left_alone_until_it_ends(tmp_path: Path) -> None:
    """Two processes on one SPILL_DIR: the recovery of one skips the other's live run (its
    lock is held), and recovers it once that run is gone."""
    clock = FakeClock()
    writer = MemoryWriter()
    made, _ = asyncio.run(earlier_run(writer, tmp_path, clock))
    with lock_holder(tmp_path, "run-1"):
        assert run_is_live(tmp_path, "run-1")
        report = asyncio.run(recover(writer, tmp_path, clock))
        assert report.live == ["run-1"] and report.uploaded == []
        assert manifest_key(PREFIX, "run-1") not in writer.objects
    assert not run_is_live(tmp_path, "run-1")
    report = asyncio.run(recover(writer, tmp_path, clock))
    assert report.live == [] and report.uploaded == [w.key for w in made[1:]]
    assert stored_manifest(writer).status == "complete"


def test_the_lock_is_released_and_its_file_removed_but_spilled_windows_stay(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    with hold_run_lock(tmp_path, "run-9") as held:
        assert held is not None and held.locked and run_is_live(tmp_path, "run-9")
        spill_windows(windows("run-9", 1, clock), tmp_path, "run-9", destination=DEST)
    assert not run_is_live(tmp_path, "run-9")
    assert not (tmp_path / "run-9" / ".lock").exists()
    assert len(scan_spilled(tmp_path).entries) == 1
    with hold_run_lock(tmp_path, "run-8") as held:
        assert held is not None and held.locked
    assert not (tmp_path / "run-8").exists()  # nothing spilled: the directory is gone too


class HeldAfterFirstPut(MemoryWriter):
    """Takes the first put, then holds every later one until :meth:`release_puts`."""

    def __init__(self) -> None:
        super().__init__()
        self.first_done = asyncio.Event()

    async def put(self, key: str, body: bytes) -> StoredObject:
        stored = await super().put(key, body)
        if not self.first_done.is_set():
            self.first_done.set()
            self.hold_puts()
        return stored


async def test_a_recovery_holds_the_run_so_a_second_recovery_leaves_it_alone(
    tmp_path: Path,
) -> None:
    """Two recoveries of one dead run at once (two tasks sharing a SPILL_DIR): the first claims
    the run's lock and holds it until it is done, so the second skips the run instead of
    uploading it again and overwriting the first's manifest. Once done, the run's directory is
    gone: lock file, spilled windows and spilled manifest alike."""
    clock = FakeClock()
    writer = HeldAfterFirstPut()
    made, _ = await earlier_run(MemoryWriter(), tmp_path, clock)
    async with asyncio.timeout(10):
        first = asyncio.create_task(recover(writer, tmp_path, clock))
        await writer.first_done.wait()  # the first recovery is in the middle of the run
        assert run_is_live(tmp_path, "run-1")
        second = await recover(writer, tmp_path, clock, current_run="run-3")
        assert second.live == ["run-1"] and second.uploaded == [] and second.manifests == []
        writer.release_puts()
        report = await first
    assert report.uploaded == [w.key for w in made[1:]] and report.complete_runs == ["run-1"]
    assert not (tmp_path / "run-1").exists()
    assert not run_is_live(tmp_path, "run-1")


def test_a_claim_is_exclusive_and_its_release_removes_an_emptied_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "run-7").mkdir()
    lock = claim_run_lock(tmp_path, "run-7")
    assert lock is not None and run_is_live(tmp_path, "run-7")
    assert claim_run_lock(tmp_path, "run-7") is None  # another open file: a second claimant
    lock.release()
    lock.release()  # idempotent
    assert not (tmp_path / "run-7").exists()
    assert claim_run_lock(tmp_path, "run-7") is None  # no directory: nothing to claim
    assert not (tmp_path / "run-7").exists()


class Gated(MemoryWriter):
    """Holds every put (see :meth:`MemoryWriter.hold_puts`) and says when the first began."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        super().__init__()
        self.objects = objects  # one store shared with another writer
        self.began = asyncio.Event()
        self.hold_puts()

    async def put(self, key: str, body: bytes) -> StoredObject:
        self.began.set()
        async with asyncio.timeout(10):
            return await super().put(key, body)


async def test_a_recovery_reads_a_claimed_run_afresh_so_it_never_undoes_another_one(
    tmp_path: Path,
) -> None:
    """Task B scans two dead runs and is held recovering the first; meanwhile task A recovers
    the second completely. When B then claims the second run (its directory stays: it also
    holds a window of another destination), it reads that run's spill again, finds nothing
    left of its destination, and leaves A's complete manifest as it is."""
    clock = FakeClock()
    shared = MemoryWriter()
    made0, _ = await earlier_run(shared, tmp_path, clock, run_id="run-0")
    made1, _ = await earlier_run(shared, tmp_path, clock, run_id="run-1")
    other = dataclasses.replace(windows("run-1", 1, clock)[0], key="q/other/x.ndjson.gz")
    spill_windows([other], tmp_path, "run-1", destination="s3://other/q/")
    b_writer = Gated(shared.objects)
    async with asyncio.timeout(20):
        task_b = asyncio.create_task(recover(b_writer, tmp_path, clock, current_run="b"))
        await b_writer.began.wait()  # B has scanned both runs and holds run-0
        a = await recover(shared, tmp_path, clock)
        assert a.live == ["run-0"] and a.complete_runs == ["run-1"]
        assert stored_manifest(shared, "run-1").status == "complete"
        b_writer.release_puts()
        b = await task_b
    assert b.complete_runs == ["run-0"] and b.uploaded == [w.key for w in made0[1:]]
    after = stored_manifest(shared, "run-1")
    assert after.status == "complete" and after.spilled == []
    assert [o.key for o in after.objects] == [w.key for w in made1]
    assert b.other_destinations == 1 and b.left == 0


async def test_a_run_of_another_destination_is_not_claimed(tmp_path: Path) -> None:
    """A task leaves the lock of another destination's run alone, so that destination's own
    task never finds it taken by a task that had nothing to do there."""
    clock = FakeClock()
    await earlier_run(MemoryWriter(), tmp_path, clock)
    held_by_its_own_task = claim_run_lock(tmp_path, "run-1")
    assert held_by_its_own_task is not None and held_by_its_own_task.locked
    try:
        report = await recover_spilled(
            MemoryWriter(),
            tmp_path,
            destination="s3://other/q/",
            prefix="q/",
            current_run="run-9",
            clock=clock,
        )
    finally:
        held_by_its_own_task.release()
    assert report.live == [] and report.other_destinations == 3  # two windows, one manifest
    assert report.done


def _break_lock_file(spill_dir: Path, run_id: str) -> None:
    """Put a directory where the run's lock file goes: opening it fails (EISDIR), an error
    that says nothing about whether the run is alive."""
    (spill_dir / run_id / ".lock").mkdir(parents=True)


async def test_a_run_whose_lock_cannot_be_opened_is_left_for_a_later_attempt(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    writer = MemoryWriter()
    await earlier_run(writer, tmp_path, clock)
    _break_lock_file(tmp_path, "run-1")
    report = await recover(writer, tmp_path, clock)
    assert report.uploaded == [] and report.live == []
    assert any("run-1: cannot open" in problem for problem in report.problems), report.problems
    assert report.left == 2 and not report.done  # retried, never taken as recovered
    assert len(scan_spilled(tmp_path).entries) == 2
    (tmp_path / "run-1" / ".lock").rmdir()
    report = await recover(writer, tmp_path, clock)
    assert report.done and stored_manifest(writer).status == "complete"


def test_a_run_that_cannot_open_its_lock_runs_unlocked_and_removes_nothing(
    tmp_path: Path,
) -> None:
    _break_lock_file(tmp_path, "run-5")
    (tmp_path / "run-5" / "empty").mkdir()
    with hold_run_lock(tmp_path, "run-5") as lock:
        assert lock is not None and not lock.locked
        assert lock.problem is not None and "cannot open" in lock.problem
    assert (tmp_path / "run-5" / "empty").is_dir()  # whose it is is unknown: left alone


# Recovery never writes outside the prefix (docs: operations.md#spill-and-recovery).

ESCAPING_KEYS = [
    "../escaped-000001.ndjson.gz",  # above the prefix
    "q/another-prefix-000001.ndjson.gz",  # another prefix
    "/p/absolute-000001.ndjson.gz",  # an absolute key
    "p/trades/../../escaped-000001.ndjson.gz",  # under the prefix, then out of it
]


def tamper(path: Path, **fields: object) -> None:
    """Rewrite fields of a spilled JSON file, as an adversary with the spill directory would."""
    document = orjson.loads(path.read_bytes())
    document.update(fields)
    path.write_bytes(orjson.dumps(document))


def files(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}


def bucket_names(s3: S3Server) -> set[str]:
    client: Any = s3.client()  # type: ignore[no-untyped-call]
    return {b["Name"] for b in client.list_buckets()["Buckets"]}


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize("tampered", ESCAPING_KEYS)
async def test_a_sidecar_whose_key_leaves_the_prefix_is_refused_and_left_on_disk(
    tmp_path: Path, s3_server: S3Server, bucket: str, tampered: str
) -> None:
    """Recovered into moto's S3 server: the window whose sidecar names a key outside the
    prefix is uploaded nowhere (the whole bucket and the server's buckets are listed), is
    reported, and its files stay on disk as they were; the other window is recovered and the
    run stays incomplete, still naming the refused window as spilled."""
    clock = FakeClock()
    buckets = bucket_names(s3_server)
    async with S3Writer.open(bucket, endpoint_url=s3_server.endpoint) as writer:
        made, _ = await earlier_run(writer, tmp_path, clock)
        [entry] = [e for e in scan_spilled(tmp_path).entries if e.key == made[1].key]
        tamper(entry.sidecar, key=tampered)
        before = files(tmp_path)
        report = await recover(writer, tmp_path, clock)
        after = Manifest.from_json(await writer.get(manifest_key(PREFIX, "run-1")))
    assert sorted(s3_server.keys(bucket)) == sorted(
        [made[0].key, made[2].key, manifest_key(PREFIX, "run-1")]
    )
    assert bucket_names(s3_server) == buckets
    assert report.uploaded == [made[2].key]
    assert report.stuck == 1 and report.left == 1 and report.done
    [problem] = report.problems
    assert f"key {tampered!r} leaves the destination prefix {PREFIX!r}" in problem
    assert str(entry.sidecar) in problem
    left = files(tmp_path)
    assert (left[entry.sidecar], left[entry.path]) == (before[entry.sidecar], before[entry.path])
    assert after.status == "incomplete" and after.spilled == [made[1].key]


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize(
    "forged_key",
    [
        "q/_manifests/run-1.json",  # another prefix
        "../_manifests/run-1.json",  # above the prefix
        "p/_manifests/run-0.json",  # another run's manifest
    ],
)
async def test_a_spilled_manifest_naming_another_key_is_refused_with_its_run(
    tmp_path: Path, s3_server: S3Server, bucket: str, forged_key: str
) -> None:
    """A run whose spilled manifest names a key other than its own manifest's is refused
    whole, like a malformed manifest: nothing of it is uploaded, its files stay."""
    clock = FakeClock()
    async with S3Writer.open(bucket, endpoint_url=s3_server.endpoint) as writer:
        made, doc = await earlier_run(writer, tmp_path, clock)
        spill_manifest(tmp_path, "run-1", forged_key, doc.to_json(), destination=DEST)
        before = files(tmp_path)
        report = await recover(writer, tmp_path, clock)
    assert s3_server.keys(bucket) == [made[0].key]  # only what the run itself stored
    assert report.uploaded == [] and report.manifests == []
    assert report.stuck == 2 and report.left == 2 and report.done
    [problem] = report.problems
    assert problem.startswith("run run-1: ") and f"{forged_key!r}" in problem
    assert problem.endswith(": refused")
    assert files(tmp_path) == before


@pytest.mark.usefixtures("aws_env")
async def test_a_run_id_that_would_put_its_manifest_outside_the_prefix_is_refused(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    """A forged spilled manifest whose run id leaves the prefix through the manifest key
    (``p/_manifests/../escaped.json``) is refused; the genuine run beside it is recovered."""
    clock = FakeClock()
    buckets = bucket_names(s3_server)
    async with S3Writer.open(bucket, endpoint_url=s3_server.endpoint) as writer:
        made, doc = await earlier_run(writer, tmp_path, clock)
        forged = spill_manifest(
            tmp_path,
            "../escaped",
            manifest_key(PREFIX, "../escaped"),
            doc.to_json(),
            destination=DEST,
        )
        report = await recover(writer, tmp_path, clock)
    keys = s3_server.keys(bucket)
    assert sorted(keys) == sorted([w.key for w in made] + [manifest_key(PREFIX, "run-1")])
    assert bucket_names(s3_server) == buckets
    assert report.complete_runs == ["run-1"]
    [problem] = report.problems
    assert "'p/_manifests/../escaped.json' leaves the destination prefix 'p/'" in problem
    assert forged.path.is_file()


def test_keys_under_the_prefix_pass_the_check_and_no_other_does() -> None:
    clock = FakeClock()
    for window in windows("run-1", 2, clock):
        check_key_under(PREFIX, window.key)
    check_key_under(PREFIX, manifest_key(PREFIX, "20261130T010000Z-a.b_c"))
    check_key_under("", "trades/x.ndjson.gz")  # the bucket root as prefix
    for key in [*ESCAPING_KEYS, "p/", "p//x.gz", "p/./x.gz", "p/x\x00.gz", "p\\..\\x.gz", ""]:
        with pytest.raises(IntegrityError, match="leaves the destination prefix"):
            check_key_under(PREFIX, key)
    for key in ["/x.gz", "../x.gz", "a/../../x.gz"]:
        with pytest.raises(IntegrityError):
            check_key_under("", key)


HOLD_RUN_LOCK = (
    "import sys, pathlib\n"
    "from sinks.spilllock import hold_run_lock\n"
    "with hold_run_lock(pathlib.Path(sys.argv[1]), sys.argv[2]) as held:\n"
    "    print(held is not None and held.locked, flush=True)\n"
    "    sys.stdin.readline()\n"
)


@contextlib.contextmanager
def lock_holder(spill_dir: Path, run_id: str) -> Iterator[subprocess.Popen[str]]:
    """A process holding ``run_id``'s lock (as a run does) until it reads a line or is
    killed; yielded once it holds the lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_RUN_LOCK, str(spill_dir), run_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], 30)
        assert ready, "the lock holder printed nothing within 30s"
        assert holder.stdout.readline().strip() == "True"
        yield holder
    finally:
        if holder.poll() is None:
            try:
                holder.communicate("\n", timeout=30)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
                raise


def killed_run(spill_dir: Path, run_id: str) -> int:
    """What a run killed (SIGKILL) with nothing spilled leaves: its lock file, marked with its
    process id, and the empty directories of windows it spilled and uploaded itself. Returns
    the dead process's id."""
    with lock_holder(spill_dir, run_id) as holder:
        (spill_dir / run_id / "p" / "trades").mkdir(parents=True)
        holder.kill()
        holder.wait(timeout=30)
    return holder.pid


def test_a_killed_runs_lock_with_nothing_spilled_is_removed_by_the_next_recovery(
    tmp_path: Path,
) -> None:
    pid = killed_run(tmp_path, "killed")
    assert (tmp_path / "killed" / ".lock").read_text() == f"{pid}\n"  # the dead holder's mark
    report = asyncio.run(recover(MemoryWriter(), tmp_path, FakeClock()))
    assert report.cleared_locks == ["killed"] and report.worth_logging and report.done
    assert report.problems == [] and report.live == []
    assert list(tmp_path.iterdir()) == []  # its directory went with its lock


def test_a_live_runs_lock_with_nothing_spilled_is_left_alone(tmp_path: Path) -> None:
    with lock_holder(tmp_path, "alive") as holder:
        report = asyncio.run(recover(MemoryWriter(), tmp_path, FakeClock()))
        assert report.cleared_locks == [] and not report.worth_logging
        assert (tmp_path / "alive" / ".lock").read_text() == f"{holder.pid}\n"
        assert run_is_live(tmp_path, "alive")
    assert not (tmp_path / "alive").exists()  # its holder removed it at its end


def test_an_unmarked_lock_file_is_never_taken(tmp_path: Path) -> None:
    """An empty lock file may be one a starting run has created and not locked yet: a
    recovery leaves it, so that run's claim cannot fail because of it."""
    (tmp_path / "starting").mkdir()
    (tmp_path / "starting" / ".lock").touch()
    report = asyncio.run(recover(MemoryWriter(), tmp_path, FakeClock()))
    assert report.cleared_locks == []
    assert (tmp_path / "starting" / ".lock").is_file()
    lock = claim_run_lock(tmp_path, "starting")
    assert lock is not None and lock.locked
    lock.release()


def test_a_stream_run_reports_a_refused_key_and_clears_a_killed_runs_lock(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    """``feedvault stream`` (fake exchange, moto's server) whose ``SPILL_DIR`` holds what two
    killed runs left: one spilled two windows, one sidecar rewritten to another prefix; the
    other spilled nothing and left its lock. The run's ``recovery`` line reports the refused
    key in ``problems`` and the removed lock in ``cleared_locks``; the bucket holds nothing
    outside the run's prefix; the refused files are still on disk."""
    prefix = "streaming/guarded/"
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    made = windows("killed-1", 2, FakeClock(), prefix=prefix)
    entries = spill_windows(made, spill_dir, "killed-1", destination=f"s3://{bucket}/{prefix}")
    escaped = "streaming/elsewhere/escaped-000001.ndjson.gz"
    tamper(entries[0].sidecar, key=escaped)
    killed_run(spill_dir, "killed-0")
    with fake_exchange(tmp_path, symbols="BTCUSDT", rate="50") as fx:
        env = fake_stream_env(
            s3_server.env(), fx.url, bucket, prefix, "60", "BTCUSDT", RUN_ID="guarded-run"
        )
        env["SPILL_DIR"] = str(spill_dir)
        proc = start_stream(env)
        try:
            [*_, recovery] = wait_for_log(proc, "recovery", timeout=60)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        finally:
            reap(proc)
    assert proc.returncode == 0, err[-3000:] + out[-3000:]
    assert recovery["level"] == "warning"
    assert recovery["uploaded"] == 1 and recovery["cleared_locks"] == ["killed-0"]
    [problem] = recovery["problems"]
    assert f"key {escaped!r} leaves the destination prefix {prefix!r}: refused" in problem
    keys = s3_server.keys(bucket)
    assert made[1].key in keys and escaped not in keys
    assert all(key.startswith(prefix) for key in keys), keys
    assert not (spill_dir / "killed-0").exists()
    assert entries[0].sidecar.is_file() and entries[0].path.is_file()
