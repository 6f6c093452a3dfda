"""Disk spill: write, read back, integrity, paths that cannot escape."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from engine.errors import IntegrityError, StorageError
from sinks.spill import SIDECAR_SUFFIX, load_spilled, remove_spilled, spill_path, spill_windows
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
    with pytest.raises(StorageError, match="could not spill 1 windows"):
        spill_windows([window("k")], blocker, "r")


def test_no_temp_files_left(tmp_path: Path) -> None:
    spill_windows([window(f"d/k{n}") for n in range(3)], tmp_path, "r")
    names = sorted(os.listdir(tmp_path / "r" / "d"))
    assert names == sorted(
        [f"k{n}" for n in range(3)] + [f"k{n}{SIDECAR_SUFFIX}" for n in range(3)]
    )
