from __future__ import annotations

import asyncio

import pytest

from engine.batchqueue import BatchQueue, QueueClosed


async def test_block_policy_waits_for_room_and_keeps_order() -> None:
    q: BatchQueue[int] = BatchQueue(4, "block")
    await q.put([1, 2, 3])
    put = asyncio.create_task(q.put([4, 5]))
    await asyncio.sleep(0)
    assert not put.done() and q.size == 3
    assert await q.get() == [1, 2, 3]
    await put
    assert await q.get() == [4, 5]
    assert q.dropped == 0 and q.high_water == 3


async def test_drop_oldest_counts_what_it_drops() -> None:
    q: BatchQueue[int] = BatchQueue(4, "drop-oldest")
    await q.put([1, 2])
    await q.put([3, 4])
    await q.put([5])
    assert q.dropped == 2
    assert q.get_nowait() == [3, 4]
    assert q.get_nowait() == [5]


async def test_an_oversized_batch_is_accepted_when_empty() -> None:
    q: BatchQueue[int] = BatchQueue(2, "block")
    async with asyncio.timeout(1):
        await q.put([1, 2, 3])
    assert q.size == 3


async def a_waiting_put() -> tuple[BatchQueue[int], asyncio.Task[None]]:
    """A blocking queue of 1 holding ``[1]``, and a put of ``[2]`` waiting for room in it."""
    q: BatchQueue[int] = BatchQueue(1, "block")
    await q.put([1])
    waiting = asyncio.create_task(q.put([2]))
    await asyncio.sleep(0)
    return q, waiting


async def test_close_drains_then_returns_none_and_wakes_putters() -> None:
    q, blocked = await a_waiting_put()
    q.close()
    with pytest.raises(QueueClosed):
        await blocked
    assert await q.get() == [1]
    assert await q.get() is None


async def test_cancelled_put_queues_nothing() -> None:
    q, put = await a_waiting_put()
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    assert q.get_nowait() == [1]
    assert q.get_nowait() is None


async def test_force_put_ignores_the_bound() -> None:
    q: BatchQueue[int] = BatchQueue(1, "block")
    await q.put([1])
    q.close()
    q.force_put([2, 3])
    assert q.size == 3


async def test_a_cancelled_put_or_hand_over_queues_its_batch_past_the_bound() -> None:
    """A source cancelled while waiting for room (an aborted stop) hands its batch over."""
    q: BatchQueue[int] = BatchQueue(2, "block")
    await q.put([1, 2])
    put = asyncio.create_task(q.put_or_hand_over([3]))
    await asyncio.sleep(0)  # the put is now waiting for room
    assert not put.done() and q.size == 2
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    assert q.get_nowait() == [1, 2] and q.get_nowait() == [3]


async def test_take_peak_is_the_high_water_mark_since_the_previous_take() -> None:
    q: BatchQueue[int] = BatchQueue(10, "block")
    assert q.take_peak() == 0
    await q.put([1, 2, 3])
    await q.put([4, 5])
    assert q.get_nowait() == [1, 2, 3]
    assert q.size == 2
    assert q.take_peak() == 5, "the burst between two takes, not the depth now"
    assert q.take_peak() == 2, "a new interval starts from the depth now"
    assert q.get_nowait() == [4, 5]
    assert q.take_peak() == 2
    assert q.take_peak() == 0
    await q.put([6])
    assert (q.take_peak(), q.high_water) == (1, 5)


async def test_take_peak_counts_a_forced_depth_and_keeps_high_water_right() -> None:
    q: BatchQueue[int] = BatchQueue(3, "block")
    await q.put([1, 2])
    q.force_put(list(range(8)))  # beyond the bound: the stop path
    assert q.take_peak() == 10 and q.high_water == 2
    while q.get_nowait() is not None:
        pass
    await q.put([1, 2, 3])
    assert q.high_water == 3, "a later put above the old mark still raises high_water"
    assert q.take_peak() == 3
