"""The one bounded queue between sources and the sink (docs: architecture.md).

Sources put *batches* (lists of records) so the per-item cost of the queue is paid once per
batch. The bound counts records, not batches, so memory is bounded whatever the batch size.

Two overflow policies:

* ``block``: ``put()`` waits until there is room. A source that awaits ``put()`` stops reading its
  socket, so the exchange sees TCP backpressure. Nothing is ever dropped.
* ``drop-oldest``: ``put()`` never waits; when full, the oldest queued batches are discarded and
  their records counted in :attr:`BatchQueue.dropped`.

A single batch larger than the bound is accepted when the queue is empty, so a put can never wait
forever. After :meth:`close`, ``get()`` returns the remaining batches and then ``None``.

Releasing the bound: a source that stops (the run's graceful stop) must read its socket to the
end, and a source waiting for room would not. :meth:`put_or_hand_over` takes a ``release`` event:
once it is set, the batch is queued at once whatever the bound (as :meth:`force_put`), and a put
already waiting is woken to do so. What a stopping source still has to queue is bounded by its
socket buffers (the peer stops sending when it reads the close frame), so memory stays bounded.
A put that must not wait at all (a source's timer flushing a small batch while its reader may be
the one waiting) checks :meth:`fits` and calls :meth:`put_nowait`; ``fits`` is False while another
put waits, so batches keep their order.

High-water marks: :attr:`BatchQueue.high_water` is the largest depth a put reached over the
queue's life; :meth:`BatchQueue.take_peak` the largest since its previous call (the stats line's
``queue_depth_peak``: a 1 s point sample misses the bursts between samples). Both cost the put
path one comparison.
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
        self._peak = 0  # largest depth since the last take_peak()
        self._waiting = 0  # puts waiting for room

    @property
    def size(self) -> int:
        """Records currently queued."""
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def take_peak(self) -> int:
        """The largest number of records queued since the previous call (or since the queue was
        made), at least the depth now; the mark then restarts from the depth now. Counts what
        puts queued as :attr:`high_water` does, and a :meth:`force_put` through the depth now."""
        peak = max(self._peak, self._size)
        # Never above high_water (a force_put can exceed it), so the put path's one comparison
        # against the peak also keeps high_water right.
        self._peak = min(self._size, self.high_water)
        return peak

    def _has_room(self, n: int) -> bool:
        return self._size == 0 or self._size + n <= self.maxsize

    def fits(self, n: int) -> bool:
        """Whether a put of ``n`` records would not wait now: always under ``drop-oldest``;
        under ``block`` when there is room and no other put is waiting (so order is kept)."""
        return self.overflow != "block" or (self._waiting == 0 and self._has_room(n))

    def put_nowait(self, batch: Sequence[T]) -> None:
        """Queue one batch that :meth:`fits` (drops the oldest under ``drop-oldest``). Raises
        :class:`QueueClosed` once closed, ``RuntimeError`` when the batch would have to wait."""
        if not batch:
            return
        if self._closed:
            raise QueueClosed
        if not self.fits(len(batch)):
            raise RuntimeError("put_nowait() of a batch that does not fit")
        self._append(batch)

    async def put(self, batch: Sequence[T]) -> None:
        """Queue one batch. With ``block``, waits for room; cancel-safe (a cancelled put has
        queued nothing). Raises :class:`QueueClosed` once the queue is closed."""
        if not batch:
            return
        n = len(batch)
        if self.overflow == "block" and not self._has_room(n):
            self._waiting += 1
            try:
                while not self._has_room(n):
                    if self._closed:
                        raise QueueClosed
                    self._not_full.clear()
                    await self._not_full.wait()
            finally:
                self._waiting -= 1
        if self._closed:
            raise QueueClosed
        self._append(batch)

    def _append(self, batch: Sequence[T]) -> None:
        """Queue ``batch``: under ``drop-oldest`` dropping the oldest batches to make room."""
        n = len(batch)
        if self.overflow != "block":
            while not self._has_room(n):
                old = self._batches.popleft()
                self._size -= len(old)
                self.dropped += len(old)
        self._batches.append(batch)
        self._size += n
        self._empty.clear()
        if self._size > self._peak:
            self._peak = self._size
            if self._size > self.high_water:
                self.high_water = self._size
        self._not_empty.set()

    async def put_or_hand_over(
        self, batch: Sequence[T], release: asyncio.Event | None = None
    ) -> None:
        """:meth:`put`; if cancelled while waiting for room, :meth:`force_put` the batch and
        re-raise. For a source whose batch is already taken out of its own buffer and counted:
        a cancellation (the stop's abort) hands it over to be written or spilled, never lost.

        ``release``: once it is set (before or while this waits), the batch is queued at once
        regardless of the bound and of the closed state (:meth:`force_put`): a stopping source
        reads its socket to the end instead of waiting on a slow consumer."""
        try:
            if release is None or self.overflow != "block":
                await self.put(batch)
            else:
                await self._put_unless_released(batch, release)
        except asyncio.CancelledError:
            self.force_put(batch)
            raise

    async def _put_unless_released(self, batch: Sequence[T], release: asyncio.Event) -> None:
        """:meth:`put` under ``block``, until ``release`` is set; then :meth:`force_put`."""
        if not batch:
            return
        n = len(batch)
        if self._has_room(n) or release.is_set():
            if release.is_set():
                self.force_put(batch)
            else:
                await self.put(batch)
            return
        self._waiting += 1
        released = asyncio.ensure_future(release.wait())
        try:
            while not self._has_room(n) and not release.is_set():
                if self._closed:
                    raise QueueClosed
                self._not_full.clear()
                room = asyncio.ensure_future(self._not_full.wait())
                try:
                    await asyncio.wait((room, released), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    room.cancel()
        finally:
            released.cancel()
            self._waiting -= 1
        if release.is_set():
            self.force_put(batch)
            return
        if self._closed:
            raise QueueClosed
        self._append(batch)

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
