"""Helpers shared by the tests that replay a real recording into books end to end
(tests/test_books_recorded.py, tests/test_books_recorded_coinbase.py): ``feedvault replay``
then ``feedvault verify`` in subprocesses, and a symbol's book rebuilt from the stored
objects."""

from __future__ import annotations

import subprocess
from pathlib import Path

from engine.book_records import BookLevel, BookReplica
from tests.harness import FEEDVAULT, base_env, decode_object, run_feedvault


def replay_and_verify(recording: Path, out: Path, channels: str) -> None:
    """``feedvault replay recording --speed max`` into ``file://out/`` with ``CHANNELS``
    ``channels``, then ``feedvault verify`` of the output: both must succeed."""
    done = subprocess.run(
        [*FEEDVAULT, "replay", str(recording), "--speed", "max", "--out", f"file://{out}/"],
        env=base_env(CHANNELS=channels),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    verified = run_feedvault(base_env(), "verify", f"file://{out}/")
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]


def book_objects(out: Path, exchange: str, symbol: str) -> list[Path]:
    """The stored book objects of ``exchange``'s canonical ``symbol`` in key order (by
    window, then sequence number); at least one."""
    objects = sorted((out / "book" / f"exchange={exchange}" / f"symbol={symbol}").rglob("*.gz"))
    assert objects, (exchange, symbol)
    return objects


def rebuilt(objects: list[Path]) -> BookReplica:
    """The books a reader rebuilds from ``objects``' rows, applied in order."""
    replica = BookReplica()
    for path in objects:
        for row in decode_object(path.read_bytes(), path.name):
            replica.apply(BookLevel.from_dict(row))
    return replica
