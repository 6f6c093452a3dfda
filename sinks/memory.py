"""An in-memory :class:`~sinks.writer.ObjectWriter`, shipped as a testing helper.

Besides storing objects in a dict it can inject failures (:meth:`MemoryWriter.fail_next`) and
hold puts until released (:meth:`MemoryWriter.hold_puts`), so tests can drive retries,
backpressure and cancellation without sleeping.
"""

from __future__ import annotations

import asyncio
from collections import deque

from engine.errors import AlreadyExists, ObjectNotFound, StorageError
from sinks.writer import ListedObject, StoredObject, sha256_hex


class MemoryWriter:
    """Objects in a dict. ``objects`` maps key to body; ``put_attempts`` counts put calls."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.put_attempts = 0
        self.puts_started = 0
        self.closed = False
        self._failures: deque[BaseException] = deque()
        self._released = asyncio.Event()
        self._released.set()

    def fail_next(self, n: int = 1, exc: BaseException | None = None) -> None:
        """Make the next ``n`` puts raise ``exc`` (default: a :class:`StorageError`)."""
        for _ in range(n):
            self._failures.append(exc if exc is not None else StorageError("injected failure"))

    def clear_failures(self) -> None:
        """Forget the failures still pending from :meth:`fail_next`."""
        self._failures.clear()

    def hold_puts(self) -> None:
        """Make puts wait (after counting ``puts_started``) until :meth:`release_puts`."""
        self._released.clear()

    def release_puts(self) -> None:
        """Let held and future puts proceed."""
        self._released.set()

    async def put(self, key: str, body: bytes) -> StoredObject:
        self._check_open()
        self.put_attempts += 1
        if self._failures:
            raise self._failures.popleft()
        self.puts_started += 1
        await self._released.wait()
        self.objects[key] = bytes(body)
        return StoredObject(key=key, bytes=len(body), sha256=sha256_hex(body))

    async def create(self, key: str, body: bytes) -> StoredObject:
        """Conditional create (the run's first write). Injected failures apply; held puts
        (:meth:`hold_puts`) do not hold it, so a held writer still lets a run start."""
        self._check_open()
        if self._failures:
            raise self._failures.popleft()
        if key in self.objects:
            raise AlreadyExists(f"object {key!r} already exists")
        self.objects[key] = bytes(body)
        return StoredObject(key=key, bytes=len(body), sha256=sha256_hex(body))

    async def get(self, key: str) -> bytes:
        self._check_open()
        try:
            return self.objects[key]
        except KeyError:
            raise ObjectNotFound(f"no object {key!r}") from None

    async def list(self, prefix: str) -> list[ListedObject]:
        self._check_open()
        return [
            ListedObject(key, len(body))
            for key, body in sorted(self.objects.items())
            if key.startswith(prefix)
        ]

    async def delete(self, key: str) -> None:
        self._check_open()
        self.objects.pop(key, None)

    async def aclose(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise StorageError("writer is closed")
