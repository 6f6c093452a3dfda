"""Who owns a run's spill directory: one advisory lock per run.

A run holds an exclusive ``flock`` on ``SPILL_DIR/<run_id>/.lock`` from its start to its end
(:func:`hold_run_lock`). The recovery of another process claims a run's lock before it touches
that run's spill (:func:`claim_run_lock`) and holds it until it is done, so it skips a live run
(which may still spill, retry or upload its own windows), and two recoveries never work on the
same dead run at once. A run that died (SIGKILL, OOM) holds nothing: the kernel releases a lock
with its process, so its windows are claimable at once.

The lock file is removed by its holder while it still holds the lock, and a claim checks after
locking that the file it locked is still the one at the path (else it tries again): so at any
moment at most one holder has a lock on the file the path names. Locks are advisory; on a
network file system such as EFS, ``flock`` is honoured between clients of NFSv4.1. The holder
closes the file before removing the directory, so an NFS client's rename of a removed open file
(``.nfs...``) is gone by then and an emptied directory really goes.
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
CLAIM_ATTEMPTS: Final = 3
"""Tries of :func:`claim_run_lock` when the file it locked was removed under it meanwhile."""


def _lock_path(spill_dir: Path, run_id: str) -> Path:
    return run_dir(spill_dir, run_id) / LOCK_NAME


class RunLock:
    """An exclusive lock on one run's spill directory, held until :meth:`release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Remove the lock file (still locked), close it, then remove the run's directories
        that are empty (those of windows uploaded since they spilled, and the run's own when
        nothing is left in it): spilled windows stay, and so do their directories.
        Idempotent; never raises."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(fd)
        _remove_empty_directories(self.path.parent)


def _remove_empty_directories(top: Path) -> None:
    """Remove every empty directory under ``top`` and ``top`` itself if it ends up empty,
    deepest first; a directory that is not empty (or cannot be removed) stays."""
    for directory, _subdirectories, _files in os.walk(top, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def claim_run_lock(spill_dir: Path, run_id: str) -> RunLock | None:
    """Take ``run_id``'s lock without waiting, creating its lock file in the run's existing
    directory if there is none. ``None`` when another open file description holds it (a live
    run, or another recovery of it), when the run's directory is gone, or when the lock cannot
    be taken (an unusable file system: then nobody else can take it either)."""
    path = _lock_path(spill_dir, run_id)
    for _ in range(CLAIM_ATTEMPTS):
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return RunLock(path, fd)
        except OSError:  # held (BlockingIOError), or the file went under it (then: again)
            os.close(fd)
            if not path.exists():
                continue
            return None
        os.close(fd)  # locked a file its holder had just removed: lock the new one
    return None


@contextlib.contextmanager
def hold_run_lock(spill_dir: Path, run_id: str) -> Iterator[bool]:
    """Hold the run's lock while the block runs; yields whether it is held. Best effort: a
    spill directory that cannot be created or locked yields ``False`` (spilling into it would
    fail too, and reports that itself). On exit the lock is released (:meth:`RunLock.release`):
    the lock file goes, and the run's directory with it when nothing else is in it."""
    try:
        run_dir(spill_dir, run_id).mkdir(parents=True, exist_ok=True)
    except OSError:
        yield False
        return
    lock = claim_run_lock(spill_dir, run_id)
    try:
        yield lock is not None
    finally:
        if lock is not None:
            lock.release()


def run_is_live(spill_dir: Path, run_id: str) -> bool:
    """True when another open file description holds ``run_id``'s lock (a live run, or a
    recovery of it). Only looks: never creates the lock file."""
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
