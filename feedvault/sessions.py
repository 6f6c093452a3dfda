"""The WebSocket sessions of a stream run, built from its configuration (docs: exchanges.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from connectors.book_actions import SnapshotFetcher
from connectors.books.registry import get_book_feed
from connectors.capture import RawFrame
from connectors.gaps import GapTracker
from connectors.registry import BINANCE_FAMILY, get_protocol
from connectors.session import InvalidFrameLog, SessionSettings, WebSocketSession
from connectors.transports import get_transport
from engine.batchqueue import BatchQueue
from engine.book_records import BookLevel
from engine.clock import Clock
from engine.pipeline import Source
from engine.records import Trade
from engine.stats import Counters
from feedvault.channels import BOOK, TRADES
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
    book_queue: BatchQueue[BookLevel] | None = None,
    fetchers: Mapping[str, SnapshotFetcher] | None = None,
) -> list[WebSocketSession]:
    """One session per exchange connection and channel; an exchange's symbols are split into
    groups no larger than its per-connection stream limit. ``capture``: the raw frames' queue;
    ``drain_deadline``: when the stopping sessions must have read their sockets to the end.
    Streams recording books (``CHANNELS``) get book sessions, each with its own feed, putting
    rows on ``book_queue`` and fetching REST snapshots through their exchange's ``fetchers``."""
    invalid_log = InvalidFrameLog(counters)
    settings = SessionSettings(stale_seconds=config.stale_seconds)
    transport = get_transport(config.ws_transport)
    by_exchange: dict[str, list[str]] = {}
    for spec in config.streams_of(TRADES):
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
    books: dict[str, list[str]] = {}
    for spec in config.streams_of(BOOK):
        books.setdefault(spec.exchange, []).append(spec.symbol)
    if not books:
        return sessions
    if book_queue is None:
        raise ValueError("book streams need a book queue")
    for exchange, symbols in books.items():
        probe = get_book_feed(exchange)
        limit = probe.max_streams_per_connection
        for start in range(0, len(symbols), limit):
            feed = get_book_feed(exchange)
            feed.rest_url = config.rest_urls.get(exchange, feed.rest_url)
            sessions.append(
                WebSocketSession(
                    feed,
                    config.ws_urls.get(exchange, feed.default_url),
                    symbols[start : start + limit],
                    book_queue,
                    counters=counters,
                    gaps=gaps,
                    invalid_log=invalid_log,
                    settings=settings,
                    clock=clock,
                    capture=capture,
                    drain_deadline=drain_deadline,
                    transport=transport,
                    fetcher=(fetchers or {}).get(exchange),
                )
            )
    return sessions
