"""The one bounded queue between sources and the sink (SPEC §5).

Sources put *batches* (lists of records) so the per-item cost of the queue is paid once per
batch. The bound counts records, not batches, so memory is bounded whatever the batch size.

Two overflow policies:

* ``block``: ``put()`` waits until there is room. A source that awaits ``put()`` stops reading its
  socket, so the exchange sees TCP backpressure. Nothing is ever dropped.
* ``drop-oldest``: ``put()`` never waits; when full, the oldest queued batches are discarded and
  their records counted in :attr:`BatchQueue.dropped`.

A single batch larger than the bound is accepted when the queue is empty, so a put can never wait
forever. After :meth:`close`, ``get()`` returns the remaining batches and then ``None``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueClosed(Exception):
    """``put()`` on a closed queue."""


class BatchQueue(Generic[T]):
    """A FIFO of batches bounded by the total number of records it holds."""

    def __init__(self, maxsize: int, overflow: str = "block") -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if overflow not in ("block", "drop-oldest"):
            raise ValueError(f"unknown overflow policy {overflow!r}")
        self.maxsize = maxsize
        self.overflow = overflow
        self._batches: deque[Sequence[T]] = deque()
        self._size = 0
        self._closed = False
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self.dropped = 0
        self.high_water = 0

    @property
    def size(self) -> int:
        """Records currently queued."""
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def _has_room(self, n: int) -> bool:
        return self._size == 0 or self._size + n <= self.maxsize

    async def put(self, batch: Sequence[T]) -> None:
        """Queue one batch. With ``block``, waits for room; cancel-safe (a cancelled put has
        queued nothing). Raises :class:`QueueClosed` once the queue is closed."""
        if not batch:
            return
        n = len(batch)
        if self.overflow == "block":
            while not self._has_room(n):
                if self._closed:
                    raise QueueClosed
                self._not_full.clear()
                await self._not_full.wait()
        else:
            while not self._has_room(n):
                old = self._batches.popleft()
                self._size -= len(old)
                self.dropped += len(old)
        if self._closed:
            raise QueueClosed
        self._batches.append(batch)
        self._size += n
        self._empty.clear()
        if self._size > self.high_water:
            self.high_water = self._size
        self._not_empty.set()

    async def put_or_hand_over(self, batch: Sequence[T]) -> None:
        """:meth:`put`; if cancelled while waiting for room, :meth:`force_put` the batch and
        re-raise. For a source whose batch is already taken out of its own buffer and counted:
        a cancellation (the stop's abort) hands it over to be written or spilled, never lost."""
        try:
            await self.put(batch)
        except asyncio.CancelledError:
            self.force_put(batch)
            raise

    def force_put(self, batch: Sequence[T]) -> None:
        """Queue ``batch`` ignoring the bound and the closed state. Only for the stop path: a
        source being torn down hands over what it parsed so it can be written or spilled."""
        if batch:
            self._batches.append(batch)
            self._size += len(batch)
            self._empty.clear()
            self._not_empty.set()

    def get_nowait(self) -> Sequence[T] | None:
        """The oldest batch, or None when the queue is empty."""
        if not self._batches:
            return None
        batch = self._batches.popleft()
        self._size -= len(batch)
        if not self._batches:
            self._not_empty.clear()
            self._empty.set()
        self._not_full.set()
        return batch

    async def wait_empty(self) -> None:
        """Wait until every queued batch has been taken by a getter. A single consumer that
        hands each batch on without awaiting in between (the run's consumer does) has then
        handed on everything put before. Cancel-safe."""
        await self._empty.wait()

    async def get(self) -> Sequence[T] | None:
        """The oldest batch; waits for one. Returns None once closed and empty. Cancel-safe."""
        while not self._batches:
            if self._closed:
                return None
            await self._not_empty.wait()
        return self.get_nowait()

    def close(self) -> None:
        """No more puts; getters drain what is queued and then see None. Waiting putters
        are woken and raise :class:`QueueClosed`."""
        self._closed = True
        self._not_empty.set()
        self._not_full.set()
