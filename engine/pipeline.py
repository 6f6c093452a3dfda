"""The pipeline loop: sources -> bounded queues -> sinks (docs: architecture.md).

Written against two small protocols, so the loop is the same whether its sources are WebSocket
sessions or a recording, and whatever the sink stores:

* a :class:`Source` puts batches on its queue until the stop event is set (or it ends), and
  returns once everything it received is queued;
* a :class:`Sink` takes batches (:meth:`Sink.write`), closes what is due on a tick
  (:meth:`Sink.tick`) and, at the end, closes everything and makes it durable
  (:meth:`Sink.close`).

A :class:`Lane` pairs one queue with the sink it feeds (a stream has its trades' lane and,
when it captures raw frames, a second one). :meth:`Pipeline.run` owns every task it starts: one
consumer per lane, the housekeeping tick, the caller's background tasks (stats), and the sources;
when the sources have returned it closes the queues, waits for the consumers to drain them into
the sinks and close the sinks, then cancels its background tasks. Cancelling :meth:`Pipeline.run`
cancels all of them (the owner then spills what is not durable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar

from engine.batchqueue import BatchQueue
from engine.errors import SubscriptionRejected

HOUSEKEEPING_TICK_SECONDS: Final = 0.25
"""How often the sinks are ticked (windows whose time is up are closed)."""
CONSUMER_BATCHES_PER_YIELD: Final = 8
"""A consumer yields to the loop after this many batches, so uploads, pings and the other
sources run between bursts."""

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Source(Protocol):
    """What the pipeline needs of a source (a WebSocket session, the replay source)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Put batches on the run's queue until ``stop`` is set (or the source ends); return
        once everything received is queued."""
        ...


class Sink(Protocol[T_contra]):
    """What the pipeline needs of a sink (:class:`sinks.sink.WindowedSink`)."""

    async def write(self, batch: Sequence[T_contra]) -> None:
        """Take a batch; may wait for room (an upload slot)."""
        ...

    async def tick(self) -> None:
        """Close what is due by time."""
        ...

    async def close(self) -> None:
        """Close everything and make it durable (or spilled)."""
        ...


@dataclass(frozen=True, slots=True)
class Lane(Generic[T]):
    """One bounded queue and the sink its consumer feeds."""

    queue: BatchQueue[T]
    sink: Sink[T]


Background = Callable[[], Coroutine[Any, Any, None]]
"""A task the pipeline runs beside its consumers until they are done (e.g. the stats line)."""


class Pipeline:
    """Sources into lanes, until the sources end; see the module docstring.

    ``on_rejected`` is told of a :class:`~engine.errors.SubscriptionRejected` raised by a
    source (the other sources are then cancelled, what they queued is kept and drained); any
    other error of a source, consumer or background task propagates from :meth:`run`.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        lanes: Sequence[Lane[Any]],
        stop: asyncio.Event,
        *,
        background: Sequence[Background] = (),
        on_rejected: Callable[[SubscriptionRejected], None] | None = None,
        ingest_done: asyncio.Event | None = None,
    ) -> None:
        self.sources = list(sources)
        self.lanes = list(lanes)
        self.stop = stop
        self.background = list(background)
        self.on_rejected = on_rejected
        #: Set once every source has returned and the queues are closed (the stop is draining).
        self.ingest_done = ingest_done or asyncio.Event()

    async def run(self) -> None:
        """Run to the end of the sources and the drain of every lane. Not cancel-safe in the
        sense of durability: a cancellation leaves batches queued and windows open, which the
        owner spills (:meth:`sinks.sink.WindowedSink.unfinished`)."""
        async with asyncio.TaskGroup() as tg:
            consumers = [tg.create_task(consume(lane.queue, lane.sink)) for lane in self.lanes]
            helpers = [tg.create_task(self._housekeeping())]
            helpers += [tg.create_task(task()) for task in self.background]
            await self._ingest()
            for lane in self.lanes:
                lane.queue.close()
            self.ingest_done.set()
            for consumer in consumers:
                await consumer
            for helper in helpers:
                helper.cancel()

    async def _ingest(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for source in self.sources:
                    tg.create_task(source.run(self.stop))
        except* SubscriptionRejected as group:
            if self.on_rejected is None:
                raise
            rejected = group.exceptions[0]
            assert isinstance(rejected, SubscriptionRejected)
            self.on_rejected(rejected)

    async def _housekeeping(self) -> None:
        """Tick every sink. A tick waits for an upload slot when the store is slow, so the
        stats line has its own task: it must go on then."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_TICK_SECONDS)
            for lane in self.lanes:
                await lane.sink.tick()


async def consume(queue: BatchQueue[T], sink: Sink[T]) -> None:
    """Move batches from ``queue`` into ``sink`` until the queue is closed and empty; then close
    the sink.

    Nothing is awaited between taking a batch and handing it to the sink, so once the queue is
    empty every batch put before is in the sink (replay relies on it)."""
    handled = 0
    while (batch := await queue.get()) is not None:
        await sink.write(batch)
        handled += 1
        if handled % CONSUMER_BATCHES_PER_YIELD == 0:
            await asyncio.sleep(0)
    await sink.close()
