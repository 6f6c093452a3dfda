"""The fake exchange's order books (docs: testing.md#order-books-on-the-fake-exchange): the book
market and its ledger without a network, then every protocol's book channel and REST snapshot
over real WebSockets and HTTP on loopback, parsed by the client feeds (``connectors/books``)
into books compared level by level with the ledger's, and each book fault seen by the feed as
the resync it must cause. The clock is a FakeClock; every wait is bounded (tests/harness.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from connectors.base import ControlEvent
from connectors.books.base import BookFeed, FetchSnapshot, Resubscribe, Resync
from connectors.books.registry import get_book_feed
from connectors.fake.book_ledger import CHECKPOINT, BookLedger
from connectors.fake.book_market import MAX_LEVELS, BookMarket, BookMessage
from connectors.fake.faults import Count, Faults
from connectors.fake.ledger import Ledger
from connectors.fake.server import FakeExchange
from engine.book import SIDES, OrderBook
from engine.book_records import BookLevel, BookReplica
from engine.clock import FakeClock
from tests.harness import listening_process, sigterm_exits_0, until
from tests.wsclient import client

WAIT = 10.0


def levels(book: OrderBook) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Both sides best first as (price, size) text."""
    bids, asks = ([(lv.price, lv.size) for lv in book.levels(side)] for side in SIDES)
    return bids, asks


# -- the market and its ledger, no network ---------------------------------------------------------


def _market(clock: FakeClock, ledger: BookLedger, **kw: object) -> BookMarket:
    return BookMarket(["BTCUSDT", "ETHUSDT"], clock=clock, record=ledger.made, **kw)  # type: ignore[arg-type]


def test_market_messages_follow_each_other_and_never_cross() -> None:
    clock, ledger = FakeClock(), BookLedger()
    market = _market(clock, ledger, rate=500, seed=4)
    clock.advance(2.0)
    out = market.advance()
    msgs = out[("BTCUSDT", None)]
    assert len(msgs) == 1000 and len(out[("ETHUSDT", None)]) == 1000
    book = ledger.book_at("BTCUSDT", msgs[0].prev_id)
    for prev, msg in itertools.pairwise(msgs):
        assert msg.first_id == prev.update_id + 1 and msg.prev_id == prev.update_id
        assert msg.number == prev.number + 1 and msg.ts_us > prev.ts_us
    for msg in msgs:
        assert msg.update_id - msg.first_id + 1 == msg.changes
        prices = [p for p, _ in msg.bids] + [p for p, _ in msg.asks]
        assert len(set(prices)) == len(prices)
        for side, pairs in (("bid", msg.bids), ("ask", msg.asks)):
            for price, size in pairs:
                assert price.endswith("000000") and len(price.split(".")[1]) == 8  # 0.01 ticks
                book.apply(side, price, size)  # type: ignore[arg-type]
        assert not book.crossed
        assert 1 <= book.depth("bid") <= MAX_LEVELS and 1 <= book.depth("ask") <= MAX_LEVELS
    assert levels(book) == levels(ledger.book_at("BTCUSDT", msgs[-1].update_id))
    middle = msgs[500].update_id
    replay = ledger.book_at("BTCUSDT", msgs[0].prev_id)
    for msg in msgs[:501]:
        for side, pairs in (("bid", msg.bids), ("ask", msg.asks)):
            for price, size in pairs:
                replay.apply(side, price, size)  # type: ignore[arg-type]
    assert levels(replay) == levels(ledger.book_at("BTCUSDT", middle))


def test_market_is_deterministic_and_timed_by_the_clock() -> None:
    def run(seed: int) -> list[BookMessage]:
        clock, ledger = FakeClock(), BookLedger()
        market = _market(clock, ledger, rate=10, seed=seed)
        assert market.advance() == {}
        clock.advance(0.25)
        first = market.advance()[("BTCUSDT", None)]
        assert len(first) == 2
        clock.advance(1.0)
        return first + market.advance()[("BTCUSDT", None)]

    assert len(run(5)) == 12
    assert run(5) == run(5)
    assert run(5) != run(6)


def test_a_depth_view_follows_the_top_of_the_book() -> None:
    clock, ledger = FakeClock(), BookLedger()
    market = _market(clock, ledger, rate=1000, seed=2, exchange="kraken")
    key = market.view("BTCUSDT", 10, pushout=False, top_levels=10)
    start = market.snapshot(key)
    assert len(start.bids) == len(start.asks) == 10 and start.top is not None
    clock.advance(1.0)
    view = OrderBook()
    for side, pairs in (("bid", start.bids), ("ask", start.asks)):
        for price, size in pairs:
            view.apply(side, price, size)  # type: ignore[arg-type]
    sent = market.advance()[key]
    assert 0 < len(sent) < 1000  # changes below the top 10 are not sent
    numbers = [m.number for m in sent]
    assert numbers == list(range(start.number + 1, start.number + 1 + len(sent)))
    for msg in sent:
        for side, pairs in (("bid", msg.bids), ("ask", msg.asks)):
            for price, size in pairs:
                view.apply(side, price, size)  # type: ignore[arg-type]
        view.truncate(10)  # Kraken's client rule
        assert msg.top is not None
        assert levels(view) == (list(msg.top[0]), list(msg.top[1]))
        assert levels(view) == levels(ledger.book_at("BTCUSDT", msg.update_id, 10))
    assert "." in sent[0].bids[0][0] if sent[0].bids else True


def test_restart_resets_numbers_and_changes_the_book() -> None:
    clock, ledger = FakeClock(), BookLedger()
    market = _market(clock, ledger, rate=100, seed=1, exchange="bybit")
    key = market.view("BTCUSDT", 1)
    clock.advance(0.5)
    market.advance()
    before = ledger.book_at("BTCUSDT", market.update_id("BTCUSDT"))
    market.restart("BTCUSDT")
    clock.advance(0.05)
    out = market.advance()
    whole = out[("BTCUSDT", None)]
    assert whole[0].snapshot and whole[0].number == 1 and whole[1].number == 2
    assert out[key][0].snapshot and out[key][0].number == 1 and len(out[key][0].bids) == 1
    after = ledger.book_at("BTCUSDT", whole[0].update_id)
    assert levels(after) != levels(before)
    assert levels(after) == (list(whole[0].bids), list(whole[0].asks))


def test_history_beyond_its_limit_is_dropped_and_books_come_from_checkpoints() -> None:
    clock, ledger = FakeClock(), BookLedger(history_limit=50)
    market = _market(clock, ledger, rate=10_000, seed=1)
    first = ledger.book_at("BTCUSDT", market.update_id("BTCUSDT"))
    msgs: list[BookMessage] = []
    for _ in range(3):
        clock.advance(0.1)
        msgs += market.advance()[("BTCUSDT", None)]
    assert len(msgs) == 3000
    kept = ledger.ids("BTCUSDT")
    assert 50 <= len(kept) <= 50 + CHECKPOINT and kept[-1] == msgs[-1].update_id
    with pytest.raises(ValueError, match="before the history"):
        ledger.book_at("BTCUSDT", msgs[100].update_id)
    book = first
    for index, msg in enumerate(msgs):  # an independent rebuild, message by message
        for side, pairs in (("bid", msg.bids), ("ask", msg.asks)):
            for price, size in pairs:
                book.apply(side, price, size)  # type: ignore[arg-type]
        if (msg.update_id >= kept[0] and index % 97 == 0) or index == len(msgs) - 1:
            assert levels(book) == levels(ledger.book_at("BTCUSDT", msg.update_id))


def test_ledger_finds_books_by_time_number_and_connection() -> None:
    clock, ledger = FakeClock(), BookLedger()
    market = _market(clock, ledger, rate=100, seed=9, exchange="bitstamp")
    clock.advance(1.0)
    msgs = market.advance()[("BTCUSDT", None)]
    tenth = msgs[9]
    assert ledger.update_id_at("BTCUSDT", ts_us=tenth.ts_us) == tenth.update_id
    assert ledger.update_id_at("BTCUSDT", ts_us=tenth.ts_us + 1) == tenth.update_id
    assert ledger.update_id_at("BTCUSDT", number=tenth.number) == tenth.update_id
    before = ledger.message_before("BTCUSDT", tenth.update_id)
    assert before.snapshot and before.update_id == msgs[8].update_id
    assert before.ts_us == msgs[8].ts_us
    assert levels(ledger.book_at("BTCUSDT", msgs[8].update_id)) == (
        list(before.bids),
        list(before.asks),
    )
    with pytest.raises(ValueError, match="no book message"):
        ledger.book("BTCUSDT")
    ledger.sent(2, None, msgs[3], False)
    ledger.sent(1, 5, msgs[7], True)
    assert ledger.connections() == [1, 2] and ledger.corrupted == 1
    assert levels(ledger.book("BTCUSDT")) == levels(ledger.book_at("BTCUSDT", msgs[3].update_id))
    assert levels(ledger.book("BTCUSDT", 1)) == levels(
        ledger.book_at("BTCUSDT", msgs[7].update_id, 5)
    )
    assert [r.message for r in ledger.sent_messages("BTCUSDT", 2)] == [msgs[3]]


def test_book_faults_parse_and_print() -> None:
    text = "book-gap=once@3,book-checksum=5,stale-snapshot=2,late-snapshot=1.5,book-restart=4"
    faults = Faults.parse(text)
    assert faults.book_gap == Count(3, once=True) and faults.book_checksum == Count(5)
    assert faults.late_snapshot == 1.5 and faults.book_restart == 4.0
    assert Faults.parse(str(faults)) == faults
    assert [n for n in range(1, 12) if Count(5).hits(n)] == [5, 10]
    assert [n for n in range(1, 12) if Count(3, once=True).hits(n)] == [3]
    for bad, message in (
        ("book-gap=0", "N >= 1"),
        ("book-gap=twice@2", "once@N"),
        ("late-snapshot=9", "at most 5"),
        ("book-restart=-1", "positive"),
    ):
        with pytest.raises(ValueError, match=message):
            Faults.parse(bad)


# -- over the network ------------------------------------------------------------------------------


@dataclass
class BookClient:
    """A small client of one book feed on one connection: every frame parsed by the feed, its
    actions carried out (REST snapshots fetched over HTTP from the fake, resubscriptions sent),
    its rows and finished resyncs kept. ``extra`` parses every frame too (a trade protocol)."""

    feed: BookFeed
    clock: FakeClock
    rows: list[BookLevel] = field(default_factory=list)
    resyncs: list[Resync] = field(default_factory=list)
    controls: list[ControlEvent] = field(default_factory=list)
    frames: int = 0
    fetches: int = 0
    extra: Callable[[str | bytes], None] | None = None
    ws: ClientConnection | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _http: aiohttp.ClientSession | None = None

    def ts(self) -> int:
        return self.clock.time_ns()

    async def run(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.feed.connected(self.ts())
        async for frame in ws:
            self.frames += 1
            if self.extra is not None:
                self.extra(frame)
            result = self.feed.parse(frame, self.ts())
            if isinstance(result, ControlEvent):
                self.controls.append(result)
            else:
                self.rows.extend(result)
            await self._act()

    async def _act(self) -> None:
        self.resyncs.extend(self.feed.take_resyncs())
        for action in self.feed.take_actions():
            if isinstance(action, FetchSnapshot):
                task = asyncio.create_task(self._fetch(action))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(action, Resubscribe):
                assert self.ws is not None
                for message in action.messages:
                    await self.ws.send(message)

    async def _fetch(self, action: FetchSnapshot) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        async with self._http.get(action.url) as response:
            assert response.status == 200, await response.text()
            body = await response.read()
        self.fetches += 1
        self.rows.extend(self.feed.snapshot_fetched(action.raw_symbol, body, self.ts()))
        await self._act()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.close()

    def state(self, raw: str) -> object:
        return self.feed.books.get(raw)


@contextlib.asynccontextmanager
async def connected(
    fx: FakeExchange, feed: BookFeed, clock: FakeClock, symbols: list[str], url: str | None = None
) -> AsyncIterator[BookClient]:
    """``feed`` connected to ``fx`` (its REST base pointed at the fake), subscribed to the
    books of ``symbols`` (by URL or message), reading in a task until the block ends."""
    if feed.rest_url is not None:
        feed.rest_url = f"http://127.0.0.1:{fx.port}"
    book_client = BookClient(feed, clock)
    async with client(url or feed.connection_url(fx.url, symbols)) as ws:
        for message in feed.subscribe_messages(symbols):
            await ws.send(message)
        reader = asyncio.create_task(book_client.run(ws))
        try:
            yield book_client
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await book_client.close()


async def step(fx: FakeExchange, clock: FakeClock, seconds: float = 0.5) -> None:
    """Move the clock on and let the fake's ticker send what became due."""
    clock.advance(seconds)
    await fx.wait_tick()


def feed_symbol(feed: BookFeed, raw: str) -> str:
    """How ``feed`` spells the fake's raw symbol ``raw`` (Bitstamp's channels: lower case)."""
    return raw.lower() if feed.name == "bitstamp" else raw


def in_sync_with_ledger(book_client: BookClient, ledger: Ledger, raw: str, conn: int) -> bool:
    """The feed's book of ``raw`` is in sync and as of the last message sent to ``conn``."""
    state = book_client.feed.books.get(feed_symbol(book_client.feed, raw))
    last = ledger.books.last(raw, conn)
    if state is None or not state.synced or last is None or state.seq is None:
        return False
    return seq_of(book_client.feed.name, last.message) == state.seq


async def synced(book_client: BookClient, fx: FakeExchange, raw: str, conn: int) -> None:
    """Wait until the feed's book of ``raw`` is in sync with the last message sent to
    ``conn`` (bounded)."""
    await until(lambda: in_sync_with_ledger(book_client, fx.ledger, raw, conn), WAIT)


def seq_of(exchange: str, msg: BookMessage) -> str | None:
    """The ``seq`` a feed records for ``msg`` (docs: order-books.md)."""
    if exchange in ("binance", "binanceus", "okx"):
        return str(msg.update_id)
    if exchange == "bybit":
        return str(msg.number)
    if exchange == "bitstamp":
        return str(msg.ts_us)
    return None


def assert_same_book(book_client: BookClient, ledger: Ledger, raw: str, conn: int) -> None:
    """The feed's book, the book rebuilt from its rows and the ledger's book of ``conn`` are
    the same, level by level."""
    state = book_client.feed.books[feed_symbol(book_client.feed, raw)]
    served = ledger.books.book(raw, conn)
    assert levels(state.book) == levels(served)
    replica = BookReplica()
    replica.apply_all(book_client.rows)
    assert levels(replica.book(state.exchange, state.symbol)) == levels(served)
    assert served.depth("bid") >= 1 and served.depth("ask") >= 1


async def read_binance_books_to_the_stop(
    fx: FakeExchange, clock: FakeClock, symbols: list[str], updates: int
) -> BookClient:
    """The Binance book feed reads ``fx`` (max mode: no clock moves) until each of ``symbols``
    has applied ``updates`` diffs in sync; then the fake stops (closing the connection, 1001)
    and the reader reads every frame up to the close. ``fx`` is entered and left here."""
    feed = get_book_feed("binance")
    book_client = BookClient(feed, clock)

    def applied() -> bool:
        states = [feed.books.get(raw) for raw in symbols]
        return all(s is not None and s.synced and s.updates >= updates for s in states)

    await fx.__aenter__()
    stopped = False
    try:
        feed.rest_url = fx.http_url
        async with client(feed.connection_url(fx.url, symbols)) as ws:
            reader = asyncio.create_task(book_client.run(ws))
            await until(applied, WAIT)
            stopped = True
            await fx.__aexit__(None, None, None)
            async with asyncio.timeout(WAIT):
                await reader
    finally:
        await book_client.close()
        if not stopped:
            await fx.__aexit__(None, None, None)
    return book_client


def fake(protocol: str, clock: FakeClock, faults: str = "", **kw: object) -> FakeExchange:
    return FakeExchange(
        protocol,
        rate=50,
        symbols=kw.pop("symbols", ["BTCUSDT"]),  # type: ignore[arg-type]
        clock=clock,
        faults=Faults.parse(faults),
        seed=kw.pop("seed", 1),  # type: ignore[arg-type]
        book_rate=kw.pop("book_rate", 40),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("exchange", ["binance", "binanceus"])
async def test_binance_depth_stream_and_rest_snapshot(exchange: str) -> None:
    clock = FakeClock()
    fx = fake(exchange, clock, symbols=["BTCUSDT", "ETHUSDT"])
    async with fx, connected(fx, get_book_feed(exchange), clock, ["BTCUSDT", "ETHUSDT"]) as bc:
        await fx.wait_ready(1)
        for _ in range(4):
            await step(fx, clock)
        for raw in ("BTCUSDT", "ETHUSDT"):
            await synced(bc, fx, raw, 1)
            assert_same_book(bc, fx.ledger, raw, 1)
        assert bc.resyncs == [] and bc.fetches == 2
    assert [r.raw_symbol for r in fx.ledger.books.rest] == ["BTCUSDT", "ETHUSDT"] or [
        r.raw_symbol for r in fx.ledger.books.rest
    ] == ["ETHUSDT", "BTCUSDT"]


# -- every protocol ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One protocol's book channel as a test subscribes to it."""

    symbols: tuple[str, ...]
    make: Callable[[], BookFeed]


def _kraken(depth: int) -> Callable[[], BookFeed]:
    from connectors.books.kraken import KrakenBookFeed

    return lambda: KrakenBookFeed(depth=depth)


def _bybit(depth: int) -> Callable[[], BookFeed]:
    from connectors.books.bybit import BybitBookFeed

    return lambda: BybitBookFeed(depth=depth)


CASES: dict[str, Case] = {
    "binance": Case(("BTCUSDT", "ETHUSDT"), lambda: get_book_feed("binance")),
    "binanceus": Case(("BTCUSD",), lambda: get_book_feed("binanceus")),
    "coinbase": Case(("BTC-USD", "ETH-USD"), lambda: get_book_feed("coinbase")),
    "kraken": Case(("BTC/USD", "ETH/USD"), _kraken(10)),
    "kraken-100": Case(("BTC/USD",), _kraken(100)),
    "bitstamp": Case(("BTCUSD", "ETHUSD"), lambda: get_book_feed("bitstamp")),
    "okx": Case(("BTC-USDT", "ETH-USDT"), lambda: get_book_feed("okx")),
    "bybit": Case(("BTCUSDT", "ETHUSDT"), _bybit(50)),
    "bybit-1": Case(("BTCUSDT",), _bybit(1)),
}


def protocol_of(case: str) -> str:
    return case.partition("-")[0]


async def caught_up(book_client: BookClient, fx: FakeExchange, raw: str, conn: int) -> None:
    """Wait until the feed's book of ``raw`` is in sync and equal to the book the ledger says
    ``conn`` was served (bounded); then the book rebuilt from the feed's rows is that book too."""

    def same() -> bool:
        state = book_client.feed.books.get(feed_symbol(book_client.feed, raw))
        if state is None or not state.synced or fx.ledger.books.last(raw, conn) is None:
            return False
        return levels(state.book) == levels(fx.ledger.books.book(raw, conn))

    await until(same, WAIT)
    assert_same_book(book_client, fx.ledger, raw, conn)


@pytest.mark.parametrize("case", list(CASES))
async def test_each_protocol_serves_books_the_feed_rebuilds(case: str) -> None:
    clock, spec = FakeClock(), CASES[case]
    symbols = list(spec.symbols)
    fx = fake(protocol_of(case), clock, symbols=symbols)
    async with fx, connected(fx, spec.make(), clock, symbols) as bc:
        await fx.wait_ready(1)
        for _ in range(3):
            await step(fx, clock)
            for raw in symbols:
                await caught_up(bc, fx, raw, 1)
        assert bc.resyncs == []
        assert not any(state.crossed for state in bc.feed.books.values())
        for raw in symbols:
            state = bc.feed.books[feed_symbol(bc.feed, raw)]
            assert state.updates > 0 and state.snapshots == 1
            last = fx.ledger.books.last(raw, 1)
            assert last is not None and state.seq == seq_of(bc.feed.name, last.message)
    books = fx.ledger.books
    assert books.messages == sum(1 for _ in books.sent_messages())
    assert books.undelivered == 0 and books.gaps == 0
    rest = protocol_of(case) in ("binance", "binanceus", "bitstamp")
    assert len(books.rest) == (len(symbols) if rest else 0)
    if case == "kraken":  # depth 10 of up to 50 levels: the truncation is exercised
        assert max(len(m.message.bids) + len(m.message.asks) for m in books.sent_messages()) > 0
        assert all(len(bc.feed.books[raw].book.levels("bid")) == 10 for raw in symbols)


# -- faults ----------------------------------------------------------------------------------------


async def run_steps(
    fx: FakeExchange, bc: BookClient, clock: FakeClock, raw: str, steps: int
) -> None:
    """``steps`` half seconds of book messages, the feed caught up after each."""
    await fx.wait_ready(1)
    for _ in range(steps):
        await step(fx, clock)
        await caught_up(bc, fx, raw, 1)


@pytest.mark.parametrize(
    ("case", "cause", "nth"),
    [
        ("binance", "sequence", 30),
        ("okx", "sequence", 30),
        ("bybit", "sequence", 30),
        ("bybit-1", "sequence", 5),  # the top level changes in a few messages only
        ("kraken", "checksum", 30),
        ("coinbase", None, 30),
        ("bitstamp", None, 30),
    ],
)
async def test_book_gap_is_a_broken_sequence(case: str, cause: str | None, nth: int) -> None:
    clock, spec = FakeClock(), CASES[case]
    raw = spec.symbols[0]
    fx = fake(protocol_of(case), clock, f"book-gap=once@{nth}", symbols=[raw])
    async with fx, connected(fx, spec.make(), clock, [raw]) as bc:
        await run_steps(fx, bc, clock, raw, 4)
        if cause is None:  # no sequence on the channel: the fault is not applied
            assert fx.ledger.books.gaps == 0 and bc.resyncs == []
            return
        assert fx.ledger.books.gaps == 1
        assert [(r.raw_symbol, r.cause) for r in bc.resyncs] == [(feed_symbol(bc.feed, raw), cause)]
        assert bc.resyncs[0].done_ns is not None


@pytest.mark.parametrize("case", ["kraken", "kraken-100"])
async def test_book_checksum_fault_is_a_checksum_resync(case: str) -> None:
    clock, spec = FakeClock(), CASES[case]
    raw = spec.symbols[0]
    fx = fake("kraken", clock, "book-checksum=once@30", symbols=[raw])
    async with fx, connected(fx, spec.make(), clock, [raw]) as bc:
        await run_steps(fx, bc, clock, raw, 3)
        assert fx.ledger.books.corrupted == 1
        assert [r.cause for r in bc.resyncs] == ["checksum"]
        snapshots = [m for m in fx.ledger.books.sent_messages(raw) if m.message.snapshot]
        assert len(snapshots) == 2  # the subscription's and the resubscription's


@pytest.mark.parametrize("case", ["binance", "bitstamp"])
async def test_late_snapshot_is_answered_by_the_clock_and_diffs_are_buffered(case: str) -> None:
    clock, spec = FakeClock(), CASES[case]
    raw = spec.symbols[0]
    fx = fake(case, clock, "late-snapshot=1", symbols=[raw])
    async with fx, connected(fx, spec.make(), clock, [raw]) as bc:
        await fx.wait_ready(1)
        await step(fx, clock)
        await until(lambda: fx.rest_held == 1, WAIT)
        await step(fx, clock, 0.8)  # 0.8 s after the request: still held
        assert bc.fetches == 0 and fx.rest_held == 1
        state = bc.feed.books[feed_symbol(bc.feed, raw)]
        assert not state.synced and len(bc.rows) == 0
        await step(fx, clock, 0.3)
        await caught_up(bc, fx, raw, 1)
        assert bc.fetches == 1 and bc.resyncs == []
        (answered,) = fx.ledger.books.rest
        last = fx.ledger.books.last(raw, 1)
        assert last is not None and answered.update_id < last.message.update_id
        # the diffs buffered while the snapshot was late, after it, were applied
        assert sum(1 for row in bc.rows if not row.snapshot) > 0


def snapshots_applied(book_client: BookClient) -> int:
    """How many snapshots the feed applied (each is a run of snapshot rows)."""
    starts = 0
    previous: BookLevel | None = None
    for row in book_client.rows:
        if row.snapshot and (previous is None or not previous.snapshot):
            starts += 1
        previous = row
    return starts


@pytest.mark.parametrize("case", ["binance", "bitstamp"])
async def test_a_stale_first_snapshot_is_fetched_again(case: str) -> None:
    clock, spec = FakeClock(), CASES[case]
    raw = spec.symbols[0]
    fx = fake(case, clock, "stale-snapshot=once@1", symbols=[raw])
    async with fx, connected(fx, spec.make(), clock, [raw]) as bc:
        await run_steps(fx, bc, clock, raw, 2)
        assert [r.stale for r in fx.ledger.books.rest] == [True, False]
        assert bc.fetches == 2 and snapshots_applied(bc) == 1  # the stale one was not applied


async def test_a_stale_snapshot_during_a_resync_is_fetched_again() -> None:
    clock, spec = FakeClock(), CASES["binance"]
    raw = spec.symbols[0]
    fx = fake("binance", clock, "book-gap=once@30,stale-snapshot=once@2", symbols=[raw])
    async with fx, connected(fx, spec.make(), clock, [raw]) as bc:
        await run_steps(fx, bc, clock, raw, 4)
        assert [r.stale for r in fx.ledger.books.rest] == [False, True, False]
        assert bc.fetches == 3 and snapshots_applied(bc) == 2
        assert [r.cause for r in bc.resyncs] == ["sequence"]
        (resync,) = bc.resyncs
        assert resync.to_seq == str(fx.ledger.books.rest[2].update_id)


@pytest.mark.parametrize(
    ("case", "causes"),
    [
        ("bybit", ["restart"]),
        ("bybit-1", ["restart"]),
        ("binance", ["sequence"]),
        ("okx", None),
        ("kraken", None),
        ("coinbase", None),
        ("bitstamp", []),
    ],
)
async def test_book_restart(case: str, causes: list[str] | None) -> None:
    clock, spec = FakeClock(), CASES[case]
    raw = spec.symbols[0]
    fx = fake(protocol_of(case), clock, "book-restart=1.2", symbols=[raw])
    async with fx, connected(fx, spec.make(), clock, [raw]) as bc:
        await run_steps(fx, bc, clock, raw, 3)  # a restart at 1.5 s (the tick after 1.2 s)
        if causes is not None:
            assert [r.cause for r in bc.resyncs] == causes
    snapshots = [m.message for m in fx.ledger.books.sent_messages(raw) if m.message.snapshot]
    if protocol_of(case) in ("binance", "bitstamp"):
        assert snapshots == []  # no snapshot on a diff stream
    else:
        assert len(snapshots) == 2 and snapshots[1].number == 1


# -- REST and mixed subscriptions ------------------------------------------------------------------


async def test_rest_endpoints_answer_beside_the_websocket() -> None:
    clock = FakeClock()
    async with (
        fake("binance", clock, symbols=["BTCUSDT"]) as fx,
        aiohttp.ClientSession(f"http://127.0.0.1:{fx.port}") as http,
    ):
        async with http.get("/api/v3/depth?symbol=BTCUSDT&limit=5") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
            doc = await response.json()
        assert doc["lastUpdateId"] == fx.books.update_id("BTCUSDT")  # type: ignore[union-attr]
        assert len(doc["bids"]) == len(doc["asks"]) == 5
        book = fx.ledger.books.book_at("BTCUSDT", doc["lastUpdateId"], 5)
        assert levels(book) == ([tuple(p) for p in doc["bids"]], [tuple(p) for p in doc["asks"]])
        async with http.get("/api/v3/depth?symbol=BTCUSDT") as response:
            assert len((await response.json())["bids"]) > 5  # limit 100 by default
        async with http.get("/api/v3/depth?symbol=NOPEUSDT") as response:
            assert response.status == 400
            assert (await response.json())["code"] == -1121
        async with http.get("/api/v3/depth?symbol=BTCUSDT&limit=x") as response:
            assert response.status == 400
        async with http.get("/api/v3/nothing") as response:
            assert response.status == 404
        # the WebSocket on the same port still works
        async with client(f"{fx.url}/ws/btcusdt@depth@100ms") as ws:
            await fx.wait_ready(1)
            await step(fx, clock)
            async with asyncio.timeout(WAIT):
                assert '"depthUpdate"' in str(await ws.recv())
    async with (
        fake("bitstamp", clock, symbols=["BTCUSD"]) as fx,
        aiohttp.ClientSession(f"http://127.0.0.1:{fx.port}") as http,
    ):
        async with http.get("/api/v2/order_book/btcusd/") as response:
            doc = await response.json()
        assert int(doc["microtimestamp"]) > 0 and len(doc["bids"]) > 5
        async with http.get("/api/v2/order_book/nopeusd/") as response:
            assert response.status == 404
            assert (await response.json())["status"] == "error"
    async with (
        fake("okx", clock, symbols=["BTC-USDT"]) as fx,
        aiohttp.ClientSession(f"http://127.0.0.1:{fx.port}") as http,
        http.get("/api/v5/market/books?instId=BTC-USDT") as response,
    ):
        assert response.status == 404  # OKX's snapshot comes in band
    assert fx.ledger.books.rest == []


def binance_trade_ids() -> tuple[list[int], Callable[[str | bytes], None]]:
    """A list, and a frame callback that appends the ids of the Binance trades a frame holds
    (frames of other kinds, books, are left alone)."""
    from connectors.registry import get_protocol

    protocol = get_protocol("binance")
    ids: list[int] = []

    def on_frame(frame: str | bytes) -> None:
        result = protocol.parse(frame, 0)
        if isinstance(result, list | tuple):
            ids.extend(int(t.trade_id) for t in result)

    return ids, on_frame


async def test_trades_and_books_on_one_connection() -> None:
    clock = FakeClock()
    trade_ids, on_frame = binance_trade_ids()

    fx = fake("binance", clock, symbols=["BTCUSDT"])
    async with fx:
        url = f"{fx.url}/stream?streams=btcusdt@trade/btcusdt@depth@100ms"
        async with connected(fx, get_book_feed("binance"), clock, ["BTCUSDT"], url=url) as bc:
            bc.extra = on_frame
            await run_steps(fx, bc, clock, "BTCUSDT", 2)
            await until(lambda: len(trade_ids) == fx.ledger.total, WAIT)
    assert trade_ids == fx.ledger.sent_ids("BTCUSDT") and len(trade_ids) == 50
    assert fx.ledger.books.messages == 40


async def test_books_in_max_mode_and_a_stall_loses_them() -> None:
    clock = FakeClock()
    fx = FakeExchange(
        "okx", rate=None, symbols=["BTC-USDT"], clock=clock, faults=Faults.parse("stall=1@2")
    )
    async with fx, connected(fx, get_book_feed("okx"), clock, ["BTC-USDT"]) as bc:
        await fx.wait_ready(1)
        await step(fx, clock, 1.5)
        await caught_up(bc, fx, "BTC-USDT", 1)
        sent = fx.ledger.books.messages
        await step(fx, clock, 1.0)  # stalled from 2 s to 3 s of the connection's age
        assert fx.ledger.books.messages == sent and fx.ledger.books.undelivered > 0
        await step(fx, clock, 1.0)
        await until(lambda: len(bc.resyncs) == 1, WAIT)  # the next update does not follow
        await caught_up(bc, fx, "BTC-USDT", 1)
        assert bc.resyncs[0].cause == "sequence"


# -- the command line ------------------------------------------------------------------------------


async def test_cli_serves_books_and_writes_the_book_ledger(tmp_path: Path) -> None:
    book_ledger = tmp_path / "books.jsonl"
    command = ["-m", "connectors.fake.cli", "--rate", "10", "--symbols", "BTCUSDT"]
    async with listening_process(
        *command, "--book-rate", "50", "--book-ledger", str(book_ledger)
    ) as (proc, listening):
        feed = get_book_feed("binance")
        feed.rest_url = f"http://127.0.0.1:{listening['port']}"
        bc = BookClient(feed, FakeClock())
        async with client(feed.connection_url(listening["url"], ["BTCUSDT"])) as ws:
            reader = asyncio.create_task(bc.run(ws))

            def applied() -> bool:
                state = feed.books.get("BTCUSDT")
                return state is not None and state.synced and state.updates >= 10

            await until(applied, WAIT)
            rest = await sigterm_exits_0(proc)
            async with asyncio.timeout(WAIT):
                await reader  # every frame up to the fake's close
            await bc.close()
    stopped = orjson.loads(rest.splitlines()[-1])
    assert stopped["event"] == "stopped" and stopped["rest_snapshots"] == 1
    assert stopped["book_messages"] >= 10 and stopped["book_gaps"] == 0
    lines = [orjson.loads(line) for line in book_ledger.read_bytes().splitlines()]
    served = [line for line in lines if line["kind"] == "served"]
    market = [line for line in lines if line["kind"] == "market"]
    assert [(s["conn"], s["raw_symbol"]) for s in served] == [(1, "BTCUSDT")]
    assert [m["raw_symbol"] for m in market] == ["BTCUSDT"]
    state = feed.books["BTCUSDT"]
    bids, asks = levels(state.book)
    assert (served[0]["bids"], served[0]["asks"]) == (
        [list(p) for p in bids],
        [list(p) for p in asks],
    )
    assert str(served[0]["update_id"]) == state.seq


async def test_cli_refuses_a_bad_book_rate(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from connectors.fake.cli import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert await run(parser.parse_args(["--book-rate", "0"])) == 2
    assert capsys.readouterr().err.startswith("--book-rate: ")
    assert await run(parser.parse_args(["--faults", "book-gap=x"])) == 2
    assert "book-gap" in capsys.readouterr().err


async def test_books_beside_trades_in_max_mode() -> None:
    clock = FakeClock()
    trade_ids, on_frame = binance_trade_ids()

    fx = FakeExchange("binance", rate=None, symbols=["BTCUSDT"], clock=clock, max_trades=20_000)
    async with fx:
        url = f"{fx.url}/stream?streams=btcusdt@trade/btcusdt@depth@100ms"
        async with connected(fx, get_book_feed("binance"), clock, ["BTCUSDT"], url=url) as bc:
            bc.extra = on_frame
            await fx.wait_ready(1)
            for _ in range(3):
                await step(fx, clock)
            await until(lambda: len(trade_ids) == 20_000, WAIT)
            await caught_up(bc, fx, "BTCUSDT", 1)
    assert trade_ids == list(range(1, 20_001)) == fx.ledger.sent_ids("BTCUSDT")
    assert fx.ledger.books.messages == 15 and bc.resyncs == []
