"""Who owns a run's spill directory: one advisory lock per run.

A run holds an exclusive ``flock`` on ``SPILL_DIR/<run_id>/.lock`` from its start to its end
(:func:`hold_run_lock`). The recovery of another process claims a run's lock before it reads
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

Every locked claim writes its process id into the lock file once it holds the lock (the file's
*mark*). A run killed while holding its lock (SIGKILL, OOM) leaves its marked file behind; when
it spilled nothing, no recovery claims that run, so :func:`clear_dead_locks` removes such files
(and their directories once empty): it only touches a marked file, which a claimant locked
before marking it, so a file just created by a claimant that has not locked it yet (empty) is
never taken from under it; and it claims the file first, so a live holder's stays.

Only another holder makes a claim fail. Where this file system can give no lock at all (no
``flock``, no room for an absent lock file), the claim is *unlocked*: the caller goes on as it
would with no other process, and is told why (:attr:`RunLock.problem`). Any other failure
(permissions, I/O) leaves it unknown whether the run is alive: the claim raises.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from engine.errors import StorageError
from sinks.spill import SIDECAR_SUFFIX, run_dir

LOCK_NAME: Final = ".lock"
CLAIM_ATTEMPTS: Final = 3
"""Tries of :func:`claim_run_lock` when the file it locked was removed under it meanwhile."""


def _lock_path(spill_dir: Path, run_id: str) -> Path:
    return run_dir(spill_dir, run_id) / LOCK_NAME


class RunLock:
    """A claim on one run's spill directory, held until :meth:`release`: locked, or unlocked
    when no lock can be had on this file system (:attr:`problem` says why)."""

    def __init__(self, path: Path, fd: int | None, problem: str | None = None) -> None:
        self.path = path
        self._fd = fd
        self.problem = problem
        """Why the claim holds no lock (None: it does)."""
        self._released = False

    @property
    def locked(self) -> bool:
        return self.problem is None

    def release(self) -> None:
        """Remove the lock file (still locked), close it, then remove the run's directories
        that are empty (those of windows uploaded since they spilled, and the run's own when
        nothing is left in it): spilled windows stay, and so do their directories. An unlocked
        claim only removes empty directories. Idempotent; never raises."""
        if self._released:
            return
        self._released = True
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        _remove_empty_directories(self.path.parent)


def _remove_empty_directories(top: Path) -> None:
    """Remove every empty directory under ``top`` and ``top`` itself if it ends up empty,
    deepest first; a directory that is not empty (or cannot be removed) stays."""
    for directory, _subdirectories, _files in os.walk(top, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(directory)


_HELD: Final = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})
"""``flock`` errors that mean another holder (EACCES: POSIX-lock emulations of ``flock``)."""
_NO_LOCKS: Final = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL})
"""``flock`` errors that mean this file system has no locks to give."""
_NO_ROOM: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
"""Errors creating an absent lock file that mean it cannot be created here (while a holder
always keeps its file, so none is held)."""
_GONE: Final = frozenset({errno.ENOENT, errno.ESTALE})
"""The file was removed under us (ESTALE: how NFS says so): look again."""


def _why(action: str, path: Path, exc: OSError) -> str:
    return f"cannot {action} {path}: {exc.strerror or exc}"


def claim_run_lock(spill_dir: Path, run_id: str) -> RunLock | None:
    """Take ``run_id``'s lock without waiting, creating its lock file in the run's existing
    directory if there is none. Returns:

    - a locked :class:`RunLock`, its file marked with this process's id (best effort: a file
      that cannot be written stays unmarked);
    - ``None`` when another open file description holds it (a live run, or a recovery of
      it), when the run's directory is gone (recovered meanwhile), or when the lock file kept
      changing under it;
    - an unlocked :class:`RunLock` when this file system cannot give a lock (no ``flock``
      support, or no room to create an absent lock file): nobody else can hold it either.

    Raises :class:`~engine.errors.StorageError` for any other failure (permissions, too many
    open files, I/O errors): whether the run is alive is then unknown."""
    path = _lock_path(spill_dir, run_id)
    for _ in range(CLAIM_ATTEMPTS):
        created = False
        try:
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
                created = True
        except FileExistsError:
            continue  # created by another claimant meanwhile: open that one
        except FileNotFoundError:
            return None  # the run's directory went: another recovery finished it
        except OSError as exc:
            if exc.errno in _GONE:
                continue
            if exc.errno in _NO_ROOM:
                return RunLock(path, None, _why("create", path, exc))
            raise StorageError(_why("open", path, exc)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except OSError as exc:
            if created and exc.errno in _NO_LOCKS:
                with contextlib.suppress(OSError):
                    path.unlink()  # ours, and nobody can lock it: leave no file behind
            with contextlib.suppress(OSError):
                os.close(fd)
            if exc.errno in _GONE:
                continue
            if exc.errno in _HELD:
                return None
            if exc.errno in _NO_LOCKS:
                return RunLock(path, None, _why("lock", path, exc))
            raise StorageError(_why("lock", path, exc)) from exc
        if same:
            _mark(fd)
            return RunLock(path, fd)
        os.close(fd)  # locked a file its holder had just removed: lock the one there now
    return None


def _mark(fd: int) -> None:
    """Write this process's id into a lock file it holds locked (see the module docstring)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def remove_dead_lock(spill_dir: Path, run_id: str) -> bool:
    """Remove the lock file a dead holder left in ``run_id``'s directory, then the directory's
    empty directories (itself too once empty). Only a marked lock file is touched, and only
    once this claim holds it (:func:`claim_run_lock`): True when it was removed; False when
    there is no marked lock file, when a live process (or a recovery) holds it, or when this
    file system gives no lock (alive or not is then unknown, so it stays). Raises
    :class:`~engine.errors.StorageError` when the claim fails otherwise."""
    try:
        if _lock_path(spill_dir, run_id).stat().st_size == 0:
            return False  # never marked: perhaps a claimant between creating and locking it
    except OSError:
        return False
    lock = claim_run_lock(spill_dir, run_id)
    if lock is None or not lock.locked:
        return False
    lock.release()
    return True


def _has_spill(directory: Path) -> bool:
    """Whether ``directory`` holds a spilled window or manifest (a ``*.spill.json`` file),
    readable or not."""
    return any(
        name.endswith(SIDECAR_SUFFIX)
        for _dir, _subdirs, files in os.walk(directory)
        for name in files
    )


def clear_dead_locks(spill_dir: Path, *, skip: str) -> tuple[list[str], list[str]]:
    """Remove the lock files of dead runs that spilled nothing, and their directories once
    empty (:func:`remove_dead_lock`), in every run directory of ``spill_dir`` but ``skip``'s
    (the current run). A directory with a spilled file (``*.spill.json``) is the recovery's,
    never touched here. Returns the names of the directories whose lock was removed and one
    problem line per lock whose claim failed (left as it is)."""
    own = run_dir(spill_dir, skip).name
    try:
        with os.scandir(spill_dir) as listing:
            names = sorted(
                entry.name
                for entry in listing
                if entry.name != own and entry.is_dir(follow_symlinks=False)
            )
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [_why("list", spill_dir, exc)]
    cleared: list[str] = []
    problems: list[str] = []
    for name in names:
        directory = Path(spill_dir, name)
        if not (directory / LOCK_NAME).is_file() or _has_spill(directory):
            continue
        try:
            if remove_dead_lock(spill_dir, name):
                cleared.append(name)
        except StorageError as exc:
            problems.append(f"run {name}: {exc}")
    return cleared, problems


@contextlib.contextmanager
def hold_run_lock(spill_dir: Path, run_id: str) -> Iterator[RunLock | None]:
    """Hold the run's lock while the block runs. Yields the claim (unlocked when no lock can be
    had: :attr:`RunLock.problem` says why), or None when another process holds this run id's
    lock. On exit the claim is released (:meth:`RunLock.release`): the lock file goes, and the
    run's directory with it when nothing else is in it."""
    directory = run_dir(spill_dir, run_id)
    lock: RunLock | None = None
    failure: str | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = claim_run_lock(spill_dir, run_id)
    except OSError as exc:
        failure = _why("create", directory, exc)
    except StorageError as exc:
        failure = str(exc)
    if failure is not None:  # unknown who holds what: this run touches nothing on release
        yield RunLock(directory / LOCK_NAME, None, failure)
        return
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def run_is_live(spill_dir: Path, run_id: str) -> bool:
    """True when another open file description holds ``run_id``'s lock. For tests and
    diagnostics only: it takes the lock for a moment itself, so a claim made at that moment
    fails."""
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
