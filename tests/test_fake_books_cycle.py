"""The fake's fast path for books at ``--book-rate max`` (docs:
testing.md#order-books-on-the-fake-exchange): each symbol's messages as a cycle (a run of the
market's own steps, then their inverses), frames from templates, the ledger recording runs;
and the fallback to the exact path (``fast=False``, the book faults). Books are compared level
by level with replays of the messages; the end-to-end case reads a fake whose clock never
moves with the Binance book feed over real WebSockets and HTTP on loopback. Every wait is
bounded (tests/harness.py)."""

from __future__ import annotations

import itertools
import json

import pytest

from connectors.books.binance import encode_depth_update
from connectors.fake.book_fast import BookRunFrames, BookTemplate
from connectors.fake.book_ledger import BookLedger
from connectors.fake.book_market import BookMarket, BookMessage
from connectors.fake.faults import Faults
from connectors.fake.server import BOOK_BATCH, FakeExchange
from engine.book import OrderBook
from engine.clock import FakeClock
from tests.test_fake_books import assert_same_book, levels, read_binance_books_to_the_stop

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def _apply(book: OrderBook, msg: BookMessage) -> None:
    for side, pairs in (("bid", msg.bids), ("ask", msg.asks)):
        for price, size in pairs:
            book.apply(side, price, size)  # type: ignore[arg-type]


def _cycling(steps: int = 16) -> tuple[FakeClock, BookLedger, BookMarket]:
    clock, ledger = FakeClock(), BookLedger()
    market = BookMarket(SYMBOLS, rate=None, clock=clock, record=ledger.made, seed=3)
    market.take(4)  # an exact history before the cycle
    market.start_cycle(ledger.made_run, steps=steps)
    return clock, ledger, market


def test_a_cycle_continues_the_ids_never_crosses_and_returns_to_its_start() -> None:
    _clock, ledger, market = _cycling()
    start_id = market.update_id("BTCUSDT")
    book = ledger.book_at("BTCUSDT", start_id)
    start = levels(book)
    length = 32
    runs = [r for _ in range(5) for r in market.take_runs(13) if r.cycle.raw_symbol == "BTCUSDT"]
    msgs = [m for run in runs for m in run.messages()]
    assert len(msgs) == 65 and msgs[0].first_id == start_id + 1
    prev_id, prev_ts = start_id, 0
    for n, msg in enumerate(msgs, 1):
        assert msg.first_id == prev_id + 1 and msg.prev_id == prev_id and msg.ts_us > prev_ts
        assert msg.update_id - msg.first_id + 1 == msg.changes and not msg.snapshot
        prev_id, prev_ts = msg.update_id, msg.ts_us
        _apply(book, msg)
        assert not book.crossed and book.depth("bid") >= 1 and book.depth("ask") >= 1
        assert levels(book) == levels(ledger.book_at("BTCUSDT", msg.update_id))
        if n % length == 0:
            assert levels(book) == start  # a whole turn: the book it started from
    # an id inside a message: the book after the messages wholly before it
    inside = msgs[40].first_id
    replay = ledger.book_at("BTCUSDT", start_id)
    for msg in msgs[:40]:
        _apply(replay, msg)
    if msgs[40].changes > 1:
        assert levels(replay) == levels(ledger.book_at("BTCUSDT", inside))
    # the market's snapshot (a REST answer) and the ledger's latest are the book now
    assert market.update_id("BTCUSDT") == msgs[-1].update_id
    snap = market.snapshot(("BTCUSDT", None))
    assert snap.update_id == msgs[-1].update_id
    assert (list(snap.bids), list(snap.asks)) == levels(book)
    assert ledger.message_at("BTCUSDT", msgs[-1].update_id).ts_us == msgs[-1].ts_us
    before = market.changes
    assert market.changes - before == sum(r.changes for r in market.take_runs(0))
    more = market.take_runs(3)
    assert market.changes - before == sum(r.changes for r in more) > 0


def test_a_cycling_market_refuses_the_exact_path() -> None:
    _clock, _ledger, market = _cycling()
    with pytest.raises(RuntimeError):
        market.take(1)
    with pytest.raises(RuntimeError):
        market.restart("BTCUSDT")
    with pytest.raises(ValueError, match="whole book"):
        market.view("BTCUSDT", 10)
    timed = BookMarket(SYMBOLS, rate=10.0, clock=FakeClock())
    with pytest.raises(ValueError, match="on demand"):
        timed.start_cycle()
    with pytest.raises(RuntimeError, match="start_cycle"):
        BookMarket(SYMBOLS, rate=None, clock=FakeClock()).take_runs(1)


@pytest.mark.parametrize("combined", [True, False])
def test_templates_give_the_encoders_frames(combined: bool) -> None:
    _clock, _ledger, market = _cycling()
    run = market.take_runs(70)[0]

    def encode(msg: BookMessage) -> str:
        return encode_depth_update(
            msg.raw_symbol,
            msg.first_id,
            msg.update_id,
            msg.bids,
            msg.asks,
            event_ms=msg.ts_us // 1000,
            combined=combined,
        )

    template = BookTemplate.of(run.cycle, encode)
    assert template is not None
    assert template.texts(run) == [encode(m) for m in run.messages()]
    # an encoder that writes a field the template does not fill: no template, and the
    # connection's frames are that encoder's, message by message

    def with_prev(msg: BookMessage, _stream: str) -> str:
        return encode(msg)[:-1] + f',"pu":{msg.prev_id}}}'

    assert BookTemplate.of(run.cycle, lambda m: with_prev(m, "")) is None
    frames = BookRunFrames(with_prev).render([("s", run)])
    expected = b"".join(
        bytes((0x81, 126)) + len(t).to_bytes(2, "big") + t.encode()
        if len(t) >= 126
        else bytes((0x81, len(t))) + t.encode()
        for t in (with_prev(m, "s") for m in run.messages())
    )
    assert frames == expected


def test_the_ledger_records_runs_sent_as_their_messages() -> None:
    _clock, ledger, market = _cycling()
    runs = market.take_runs(10)
    ledger.sent_run(1, None, runs[0].head(7))
    ledger.sent_run(1, None, runs[1])
    ledger.sent_run(2, None, runs[0].head(0))
    kept = list(ledger.sent_messages("BTCUSDT", 1))
    assert [r.message.update_id for r in kept] == [m.update_id for m in runs[0].head(7).messages()]
    assert ledger.messages == 17 and ledger.per_symbol == {"BTCUSDT": 7, "ETHUSDT": 10}
    assert ledger.changes == runs[0].head(7).changes + runs[1].changes
    assert ledger.connections() == [1]
    last = kept[-1].message
    assert levels(ledger.book("BTCUSDT", 1)) == levels(ledger.book_at("BTCUSDT", last.update_id))
    other = BookLedger()  # a cycle that does not start from the book the history holds
    other.made(BookMarket(["BTCUSDT"], rate=None, seed=9).snapshot(("BTCUSDT", None)))
    with pytest.raises(ValueError, match="does not follow"):
        other.made_run(runs[0])


@pytest.mark.parametrize(
    ("fast", "faults", "cycling"),
    [(True, "", True), (False, "", False), (True, "stale-snapshot=once@9", False)],
)
async def test_binance_feed_stays_in_sync_with_the_cycle_or_the_exact_path(
    fast: bool, faults: str, cycling: bool
) -> None:
    """No clock moves, yet the feed gets many rounds of diffs without a resync, and after the
    fake's stop its books equal the ledger's, level by level: with the cycle (several turns),
    and on the exact path when the fast path is off or a book fault needs it."""
    clock = FakeClock()
    fx = FakeExchange(
        "binance",
        rate=None,
        symbols=SYMBOLS,
        clock=clock,
        book_rate=None,
        fast=fast,
        faults=Faults.parse(faults),
    )
    wanted = 40 * BOOK_BATCH  # over two turns of a cycle
    book_client = await read_binance_books_to_the_stop(fx, clock, SYMBOLS, wanted)
    assert fx.books is not None and fx.books.cycling == cycling
    assert book_client.resyncs == []
    for raw in SYMBOLS:
        assert_same_book(book_client, fx.ledger, raw, 1)
        sent = [r.message for r in fx.ledger.books.sent_messages(raw, 1)]
        assert len(sent) >= wanted
        assert all(b.first_id == a.update_id + 1 for a, b in itertools.pairwise(sent))
    # the --book-ledger lines: the served books and the market's latest, as the ledger's
    lines = [json.loads(line) for line in fx.ledger.books.lines()]
    served = {d["raw_symbol"]: d for d in lines if d["kind"] == "served"}
    market = {d["raw_symbol"]: d for d in lines if d["kind"] == "market"}
    for raw in SYMBOLS:
        bids, asks = levels(fx.ledger.books.book(raw, 1))
        assert (served[raw]["bids"], served[raw]["asks"]) == (
            [list(b) for b in bids],
            [list(a) for a in asks],
        )
        now = fx.ledger.books.book_at(raw, fx.books.update_id(raw))
        assert market[raw]["update_id"] == fx.books.update_id(raw)
        assert market[raw]["bids"] == [list(b) for b in levels(now)[0]]
        assert market[raw]["ts_us"] > 0
