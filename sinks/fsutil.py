"""Durable file writes on a local filesystem (blocking; call from a thread in async code)."""

from __future__ import annotations

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
