"""The WebSocket sessions of a stream run, built from its configuration (docs: exchanges.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from connectors.capture import RawFrame
from connectors.gaps import GapTracker
from connectors.registry import BINANCE_FAMILY, get_protocol
from connectors.session import InvalidFrameLog, SessionSettings, WebSocketSession
from connectors.transports import get_transport
from engine.batchqueue import BatchQueue
from engine.clock import Clock
from engine.pipeline import Source
from engine.records import Trade
from engine.stats import Counters
from feedvault.config import StreamConfig


class CountingSource(Source, Protocol):
    """A source that counts the frames it received (the manifest's ``received`` counter)."""

    frames: int


def build_sessions(
    config: StreamConfig,
    queue: BatchQueue[Trade],
    counters: Counters,
    gaps: GapTracker,
    clock: Clock,
    capture: BatchQueue[RawFrame] | None = None,
    drain_deadline: Callable[[], float | None] | None = None,
) -> list[WebSocketSession]:
    """One session per exchange connection; an exchange's symbols are split into groups no
    larger than its per-connection stream limit. ``capture``: the raw frames' queue;
    ``drain_deadline``: when the stopping sessions must have read their sockets to the end."""
    invalid_log = InvalidFrameLog(counters)
    settings = SessionSettings(stale_seconds=config.stale_seconds)
    transport = get_transport(config.ws_transport)
    by_exchange: dict[str, list[str]] = {}
    for spec in config.streams:
        by_exchange.setdefault(spec.exchange, []).append(spec.symbol)
    sessions: list[WebSocketSession] = []
    for exchange, symbols in by_exchange.items():
        options = {"stream_type": config.binance_stream} if exchange in BINANCE_FAMILY else {}
        protocol = get_protocol(exchange, **options)
        base_url = config.ws_urls.get(exchange, protocol.default_url)
        limit = protocol.max_streams_per_connection
        for start in range(0, len(symbols), limit):
            sessions.append(
                WebSocketSession(
                    protocol,
                    base_url,
                    symbols[start : start + limit],
                    queue,
                    counters=counters,
                    gaps=gaps,
                    invalid_log=invalid_log,
                    settings=settings,
                    clock=clock,
                    capture=capture,
                    drain_deadline=drain_deadline,
                    transport=transport,
                )
            )
    return sessions
