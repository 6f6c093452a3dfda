"""Which runs of a spill directory are alive: one advisory lock per run.

A run holds an exclusive ``flock`` on ``SPILL_DIR/<run_id>/.lock`` from its start to its end
(:func:`hold_run_lock`); the recovery of another process skips a run whose lock is held
(:func:`run_is_live`), since that run may still spill, retry or upload its own windows. A run
that died (SIGKILL, OOM) holds nothing: the kernel releases a lock with its process, so its
windows are recoverable at once. Locks are advisory and local to the host (on a network file
system such as EFS, ``flock`` is honoured between clients of NFSv4.1).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from sinks.spill import run_dir

LOCK_NAME: Final = ".lock"


def _lock_path(spill_dir: Path, run_id: str) -> Path:
    return run_dir(spill_dir, run_id) / LOCK_NAME


@contextlib.contextmanager
def hold_run_lock(spill_dir: Path, run_id: str) -> Iterator[bool]:
    """Hold the run's lock while the block runs; yields whether it is held. Best effort: a
    spill directory that cannot be created or locked yields ``False`` (spilling into it would
    fail too, and reports that itself). On exit the lock file goes, and the run's directory
    with it when nothing else is in it."""
    path = _lock_path(spill_dir, run_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only if empty: spilled windows stay
    finally:
        os.close(fd)


def run_is_live(spill_dir: Path, run_id: str) -> bool:
    """True when another open file description holds ``run_id``'s lock (a live run)."""
    try:
        fd = os.open(_lock_path(spill_dir, run_id), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
