"""The session's close reasons: named states, their log text, and the transitions they have."""

from __future__ import annotations

import pytest

from connectors.binance import BinanceProtocol
from connectors.gaps import GapTracker
from connectors.session import (
    RECONNECT,
    Closed,
    CloseReason,
    InvalidFrameLog,
    WebSocketSession,
)
from engine.batchqueue import BatchQueue
from engine.records import Trade
from engine.retry import Jitter
from engine.stats import Counters


def session() -> WebSocketSession:
    counters = Counters()
    return WebSocketSession(
        BinanceProtocol(),
        "ws://127.0.0.1:9",
        ["BTCUSDT"],
        BatchQueue[Trade](10),
        counters=counters,
        gaps=GapTracker(),
        invalid_log=InvalidFrameLog(counters),
    )


@pytest.mark.parametrize(
    ("closed", "text"),
    [
        (Closed(CloseReason.STOP), "stop"),
        (Closed(CloseReason.NOTICE), "notice"),
        (Closed(CloseReason.STALE), "stale"),
        (Closed(CloseReason.KEEPALIVE_TIMEOUT), "keepalive timeout"),
        (Closed(CloseReason.MAX_AGE), "max-age"),
        (Closed(CloseReason.OVERSIZED), "oversized frame"),
        (
            Closed(CloseReason.CONNECT_FAILED, "OSError: [Errno 111] refused"),
            "connect failed: OSError: [Errno 111] refused",
        ),
        (Closed(CloseReason.CLOSED_BY_PEER, "code 1000"), "closed by peer: code 1000"),
    ],
)
def test_each_reason_logs_its_former_text(closed: Closed, text: str) -> None:
    assert str(closed) == text


def test_the_first_reason_wins_but_a_notice_is_always_recorded() -> None:
    s = session()
    assert s._close_text() is None
    s._close(CloseReason.STALE)
    s._close(CloseReason.STOP)
    s._close(CloseReason.CLOSED_BY_PEER, "code 1000")
    assert s._close_text() == "stale"
    s._close(CloseReason.NOTICE)  # read while draining after the close: reconnect at once
    assert s._is_closing(CloseReason.NOTICE) and s._close_text() == "notice"
    s._close(CloseReason.STOP)
    assert s._close_text() == "notice"


def test_the_default_reconnect_backoff_keeps_its_numbers() -> None:
    """The former Backoff's defaults: 0.5 s doubling up to 30 s, full jitter, no end."""
    p = RECONNECT
    assert (p.initial, p.multiplier, p.cap, p.jitter) == (0.5, 2.0, 30.0, Jitter.FULL)
    assert p.budget is None and p.max_attempts is None
    s = session()
    assert s.backoff is RECONNECT and s.failures == 0
