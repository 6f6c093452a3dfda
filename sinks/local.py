"""An :class:`~sinks.writer.ObjectWriter` on a local directory (``--out file:///dir/``).

A key is a ``/``-separated relative path under ``root``. ``put`` writes a temporary file in the
target directory, fsyncs it, renames it into place and fsyncs the directory, so an object is
either absent or complete, and durable when ``put`` returns. A key that is absolute, has an
empty, ``.`` or ``..`` segment, contains NUL, or resolves outside ``root`` (through a symlink)
is refused with :class:`~engine.errors.StorageError`.

Blocking file I/O runs in a worker thread (``asyncio.to_thread``); a cancelled ``put`` may still
complete in its thread, which is harmless because puts are idempotent.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import os
from pathlib import Path

from engine.errors import AlreadyExists, ObjectNotFound, StorageError, StorageRefused
from sinks.fsutil import atomic_write, exclusive_write, is_temp_name
from sinks.writer import ListedObject, StoredObject, sha256_hex

_REFUSALS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.ENOSPC}
    | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())
)
"""Errors writing a file that no retry fixes (:class:`StorageRefused`)."""


class FileWriter:
    """Objects as files under ``root`` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"FileWriter({str(self.root)!r})"

    def path_of(self, key: str) -> Path:
        """The file of ``key``; :class:`StorageError` if the key would leave ``root``."""
        segments = key.split("/")
        if (
            not key
            or "\x00" in key
            or "\\" in key
            or any(seg in ("", ".", "..") for seg in segments)
        ):
            raise StorageError(f"refusing key {key!r}: not a safe relative path")
        path = self.root.joinpath(*segments)
        root = self.root.resolve()
        resolved = path.resolve()
        if not resolved.is_relative_to(root) or resolved == root:
            raise StorageError(f"refusing key {key!r}: it resolves outside {self.root}")
        return path

    async def put(self, key: str, body: bytes) -> StoredObject:
        path = self.path_of(key)
        digest = await asyncio.to_thread(self._put, key, path, body)
        return StoredObject(key=key, bytes=len(body), sha256=digest)

    def _put(self, key: str, path: Path, body: bytes) -> str:
        try:
            atomic_write(path, body)
        except OSError as exc:
            raise StorageError(f"cannot write {key!r} to {path}: {exc}") from exc
        return sha256_hex(body)

    async def create(self, key: str, body: bytes) -> StoredObject:
        """Like ``put``, only if ``key`` has no file yet (:class:`AlreadyExists` otherwise).

        The root directory is created if its parent exists; a root whose parent is missing
        (most likely a mistyped path), a read-only or unwritable directory and a full disk are
        :class:`StorageRefused`."""
        path = self.path_of(key)
        digest = await asyncio.to_thread(self._create, key, path, body)
        return StoredObject(key=key, bytes=len(body), sha256=digest)

    def _create(self, key: str, path: Path, body: bytes) -> str:
        if not self.root.is_dir() and not self.root.parent.is_dir():
            raise StorageRefused(
                f"directory {self.root} does not exist, nor its parent {self.root.parent}",
                "ENOENT",
            )
        try:
            exclusive_write(path, body)
        except FileExistsError as exc:
            raise AlreadyExists(f"{path} already exists") from exc
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0, "OSError")
            message = f"cannot write {key!r} to {path}: {exc.strerror or exc} ({code})"
            if exc.errno in _REFUSALS:
                raise StorageRefused(message, code) from exc
            raise StorageError(message) from exc
        return sha256_hex(body)

    async def get(self, key: str) -> bytes:
        path = self.path_of(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"no object {key!r} in {self.root}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {key!r} from {path}: {exc}") from exc

    async def list(self, prefix: str) -> list[ListedObject]:
        try:
            return await asyncio.to_thread(self._list, prefix)
        except OSError as exc:
            raise StorageError(f"cannot list {self.root}: {exc}") from exc

    def _list(self, prefix: str) -> builtins.list[ListedObject]:
        found: builtins.list[ListedObject] = []
        if not self.root.is_dir():
            return found
        for directory, _dirs, files in os.walk(self.root):
            rel = os.path.relpath(directory, self.root)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in files:
                key = base + name
                if is_temp_name(name) or not key.startswith(prefix):
                    continue
                found.append(ListedObject(key, os.path.getsize(os.path.join(directory, name))))
        found.sort(key=lambda obj: obj.key)
        return found

    async def delete(self, key: str) -> None:
        path = self.path_of(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except NotADirectoryError:  # a parent is a file: there is no such key
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r} at {path}: {exc}") from exc

    async def aclose(self) -> None:
        return None
