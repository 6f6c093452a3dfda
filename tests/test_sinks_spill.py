"""Disk spill: write, read back, integrity, paths that cannot escape."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import orjson
import pytest

from engine.errors import IntegrityError, StorageError
from sinks.manifest import Manifest
from sinks.spill import (
    SIDECAR_SUFFIX,
    load_spilled,
    load_spilled_manifest,
    read_spilled,
    remove_spilled,
    remove_spilled_manifest,
    scan_spilled,
    spill_manifest,
    spill_path,
    spill_windows,
)
from sinks.windowing import ClosedWindow


def window(key: str, body: bytes = b"compressed", records: int = 3) -> ClosedWindow:
    return ClosedWindow(
        key=key,
        body=body,
        records=records,
        window_start_ns=1_700_000_040 * 10**9,
        first_ts_event=11,
        last_ts_event=22,
        symbols={"binance:BTC-USDT": ("1", "3")},
        format="ndjson.gz",
    )


def test_spill_and_load_round_trip(tmp_path: Path) -> None:
    windows = [window("p/trades/a/x-000000.ndjson.gz"), window("p/trades/b/y.ndjson.gz", b"zz")]
    entries = spill_windows(windows, tmp_path, "run-1")
    assert [e.key for e in entries] == [w.key for w in windows]
    assert entries[0].path == tmp_path / "run-1/p/trades/a/x-000000.ndjson.gz"
    assert entries[0].sidecar.name == "x-000000.ndjson.gz" + SIDECAR_SUFFIX
    assert entries[1].sha256 == hashlib.sha256(b"zz").hexdigest()
    loaded = load_spilled(tmp_path)
    assert [s.window for s in loaded] == windows
    assert [s.entry for s in loaded] == entries
    assert load_spilled(tmp_path, "run-1") == loaded
    assert load_spilled(tmp_path, "other") == []
    remove_spilled(entries[0])
    assert [s.window.key for s in load_spilled(tmp_path)] == [windows[1].key]


def test_hostile_keys_stay_inside_spill_dir(tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"
    [entry] = spill_windows([window("../../../etc/x")], spill_dir, "../run")
    assert entry.path.resolve().is_relative_to(spill_dir.resolve())
    assert spill_path(spill_dir, "..", "/a/../b") == spill_dir / "__" / "_" / "a" / "__" / "b"
    [loaded] = load_spilled(spill_dir)
    assert loaded.window.key == "../../../etc/x"


def test_body_without_sidecar_is_ignored(tmp_path: Path) -> None:
    [entry] = spill_windows([window("k.ndjson.gz")], tmp_path, "r")
    entry.sidecar.unlink()
    assert load_spilled(tmp_path) == []


def test_corrupted_body_is_detected(tmp_path: Path) -> None:
    [entry] = spill_windows([window("k.ndjson.gz")], tmp_path, "r")
    entry.path.write_bytes(b"compresseX")
    with pytest.raises(IntegrityError, match="does not match"):
        load_spilled(tmp_path)


def test_malformed_sidecar(tmp_path: Path) -> None:
    [entry] = spill_windows([window("k.ndjson.gz")], tmp_path, "r")
    entry.sidecar.write_bytes(b"{}")
    with pytest.raises(IntegrityError, match="malformed"):
        load_spilled(tmp_path)


def test_unwritable_spill_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError, match="could not spill 1 window: k: NotADirectoryError"):
        spill_windows([window("k")], blocker, "r")


def test_no_temp_files_left(tmp_path: Path) -> None:
    spill_windows([window(f"d/k{n}") for n in range(3)], tmp_path, "r")
    names = sorted(os.listdir(tmp_path / "r" / "d"))
    assert names == sorted(
        [f"k{n}" for n in range(3)] + [f"k{n}{SIDECAR_SUFFIX}" for n in range(3)]
    )


def test_destination_is_recorded_and_older_sidecars_read_without_one(tmp_path: Path) -> None:
    [entry] = spill_windows([window("p/k.ndjson.gz")], tmp_path, "r", destination="s3://b/p/")
    assert entry.destination == "s3://b/p/"
    [scanned] = scan_spilled(tmp_path).entries
    assert scanned == entry
    meta = orjson.loads(entry.sidecar.read_bytes())
    del meta["destination"]  # as written before destinations were recorded
    entry.sidecar.write_bytes(orjson.dumps(meta))
    [old] = scan_spilled(tmp_path).entries
    assert old.destination is None
    assert read_spilled(old).window == window("p/k.ndjson.gz")


def test_scan_reads_sidecars_only_and_reports_bad_ones_without_failing(tmp_path: Path) -> None:
    good, bad = spill_windows([window("a.ndjson.gz"), window("b.ndjson.gz")], tmp_path, "r")
    bad.sidecar.write_bytes(b"not json")
    good.path.write_bytes(b"changed")  # bodies are not read by a scan
    scan = scan_spilled(tmp_path)
    assert [e.key for e in scan.entries] == ["a.ndjson.gz"]
    assert len(scan.problems) == 1 and "malformed" in scan.problems[0]
    assert scan.run_ids == ["r"]
    with pytest.raises(IntegrityError, match="does not match"):
        read_spilled(good)


def test_a_spilled_manifest_round_trips_and_is_no_window(tmp_path: Path) -> None:
    manifest = Manifest(
        run_id="run-1",
        version="1",
        command="feedvault stream",
        started_at="2026-01-01T00:00:00.000000Z",
        stopped_at="2026-01-01T00:01:00.000000Z",
        stop_reason="deadline",
        status="incomplete",
        spilled=["p/k.ndjson.gz"],
    )
    spill_windows([window("p/k.ndjson.gz")], tmp_path, "run-1")
    written = spill_manifest(
        tmp_path, "run-1", "p/_manifests/run-1.json", manifest.to_json(), destination="s3://b/p/"
    )
    assert written.path == tmp_path / "run-1" / "@manifest.spill.json"
    loaded = load_spilled_manifest(tmp_path, "run-1")
    assert loaded is not None
    assert loaded.body == manifest.to_json()
    assert (loaded.key, loaded.destination) == ("p/_manifests/run-1.json", "s3://b/p/")
    scan = scan_spilled(tmp_path)
    assert [e.key for e in scan.entries] == ["p/k.ndjson.gz"]  # the manifest is not a window
    assert list(scan.manifests) == ["run-1"]
    assert [s.window.key for s in load_spilled(tmp_path)] == ["p/k.ndjson.gz"]
    remove_spilled_manifest(loaded)
    assert load_spilled_manifest(tmp_path, "run-1") is None
    assert load_spilled_manifest(tmp_path, "never") is None


def test_a_manifest_that_cannot_be_spilled_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError, match="could not spill the manifest"):
        spill_manifest(blocker, "r", "k.json", b"{}")
