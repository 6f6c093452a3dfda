"""Durable file writes on a local filesystem (blocking; call from a thread in async code)."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

TMP_SUFFIX = ".tmp"


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file left by :func:`atomic_write`."""
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either the old or the whole new content.

    A temporary file in the same directory is written and fsynced, renamed over ``path``, and
    the directory is fsynced: durable when this returns. Missing parent directories are
    created. Raises ``OSError``; the temporary file is removed on failure.
    """
    tmp = _synced_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def exclusive_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` only if ``path`` does not exist: all or nothing, durable when
    this returns. A temporary file is written and fsynced, then hard-linked to ``path`` (which
    fails with ``FileExistsError`` if ``path`` exists, atomically) and removed. Missing parent
    directories are created. Raises ``OSError``."""
    tmp = _synced_temp(path, data)
    try:
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            _create_exclusive(path, data)  # a filesystem without hard links
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}
)


def _create_exclusive(path: Path, data: bytes) -> None:
    """``O_CREAT | O_EXCL``: exclusive, though not all-or-nothing (a crash mid-write leaves a
    short file, which readers reject as a malformed manifest)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _synced_temp(path: Path, data: bytes) -> Path:
    """``data`` in a new fsynced temporary file beside ``path`` (its directory created);
    removed again if writing it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp
