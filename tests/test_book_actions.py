"""BookActions (connectors/book_actions.py) with a real feed and a fake clock: resubscriptions go
out from tasks, in order, and one left unanswered past its timeout asks for a reconnect."""

from __future__ import annotations

import asyncio

from connectors.book_actions import BookActions
from connectors.books.okx import OkxBookFeed, encode_books
from engine.clock import FakeClock
from engine.errors import MalformedFrame

T0 = 1_765_000_000_000_000_000


def _snapshot(seq: int) -> str:
    return encode_books(
        "BTC-USDT",
        [("100", "1")],
        [("101", "1")],
        action="snapshot",
        seq_id=seq,
        prev_seq_id=-1,
        ts_ms=T0 // 1_000_000,
    )


def _update(seq: int, prev: int) -> str:
    return encode_books(
        "BTC-USDT",
        [("99", "1")],
        [],
        action="update",
        seq_id=seq,
        prev_seq_id=prev,
        ts_ms=T0 // 1_000_000,
    )


def test_an_unanswered_resubscription_reconnects_after_its_timeout() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        clock = FakeClock()
        feed = OkxBookFeed()
        feed.subscribe_messages(["BTC-USDT"])
        sent: list[str] = []
        reconnects: list[str] = []

        async def send(message: str) -> None:
            sent.append(message)

        def invalid(exc: MalformedFrame) -> None:
            raise AssertionError(exc)

        actions = BookActions(
            feed,
            fetcher=None,
            deliver=lambda rows: None,
            send=send,
            captured=None,
            log=lambda *args, **fields: None,
            invalid=invalid,
            control_interval=0.0,
            clock=clock,
            reconnect=reconnects.append,
            resubscribe_timeout=30.0,
        )
        async with asyncio.TaskGroup() as tg:
            feed.parse(_snapshot(10), T0)
            assert feed.parse(_update(12, 11), T0 + 1) == []  # a gap: resubscribe
            await actions.after_batch(tg)
        assert len(sent) == 2 and not reconnects  # unsubscribe, subscribe
        clock.advance(29.0)
        await actions.after_batch(None)
        assert not reconnects  # still within its time
        clock.advance(1.0)
        await actions.after_batch(None)
        return sent, reconnects

    sent, reconnects = asyncio.run(scenario())
    assert reconnects == ["book resync of BTC-USDT unanswered"]
    assert '"unsubscribe"' in sent[0] and '"subscribe"' in sent[1]


def test_an_answered_resubscription_is_forgotten() -> None:
    async def scenario() -> list[str]:
        clock = FakeClock()
        feed = OkxBookFeed()
        feed.subscribe_messages(["BTC-USDT"])
        reconnects: list[str] = []

        async def send(message: str) -> None:
            pass

        actions = BookActions(
            feed,
            fetcher=None,
            deliver=lambda rows: None,
            send=send,
            captured=None,
            log=lambda *args, **fields: None,
            invalid=lambda exc: None,
            control_interval=0.0,
            clock=clock,
            reconnect=reconnects.append,
        )
        async with asyncio.TaskGroup() as tg:
            feed.parse(_snapshot(10), T0)
            feed.parse(_update(12, 11), T0 + 1)
            await actions.after_batch(tg)
        assert feed.parse(_snapshot(20), T0 + 2)  # the answer
        clock.advance(60.0)
        await actions.after_batch(None)
        return reconnects

    assert asyncio.run(scenario()) == []
