"""Windowing: time/bytes/records triggers, partitions, sequence numbers, decoded contents."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.clock import FakeClock
from engine.errors import ConfigError
from engine.records import SymbolBatch, Trade, by_symbol
from sinks.encoders import decode_body
from sinks.keys import KeyTemplate
from sinks.windowing import ClosedWindow, Windower, WindowPolicy

NS = 1_000_000_000
T0 = 1_700_000_040  # 2023-11-14T22:14:00Z, a multiple of 60 s
RUN = "20231114T221400Z-test"


class Feed:
    """Makes trades with increasing ids per symbol, received "now" on the clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.ids: Counter[str] = Counter()

    def trades(self, n: int, symbol: str = "BTC-USDT", exchange: str = "binance") -> list[Trade]:
        now = self.clock.time_ns()
        out = []
        for i in range(n):
            self.ids[symbol] += 1
            tid = self.ids[symbol]
            out.append(
                Trade(
                    exchange,
                    symbol,
                    symbol.replace("-", ""),
                    str(tid),
                    f"{100 + tid % 7}.5",
                    "1",
                    "buy",
                    now // 1000 - 5 + i,
                    now,
                )
            )
        return out


def make(
    clock: FakeClock,
    *,
    seconds: int = 60,
    max_bytes: int = 1 << 30,
    max_records: int = 1_000_000,
    template: str | None = None,
    fmt: str = "ndjson.gz",
) -> Windower:
    return Windower(
        WindowPolicy(seconds, max_bytes, max_records),
        KeyTemplate(template) if template else KeyTemplate(),
        prefix="p/",
        run_id=RUN,
        format=fmt,
        clock=clock,
    )


def decoded(window: ClosedWindow) -> list[Trade]:
    return [Trade.from_dict(obj) for obj in decode_body(window.body, window.format)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ns=(T0 + 37) * NS)  # 22:14:37


def test_time_trigger_is_aligned_to_wall_clock_multiples(clock: FakeClock) -> None:
    feed = Feed(clock)
    windower = make(clock)
    batch = feed.trades(5)
    assert windower.add(batch) == []
    assert windower.open_count == 1
    clock.advance(22)  # 22:14:59
    assert windower.due() == []
    clock.advance(1)  # 22:15:00
    [window] = windower.due()
    assert windower.open_count == 0
    assert window.window_start_ns == T0 * NS
    assert window.key == (
        "p/trades/exchange=binance/symbol=BTC-USDT/date=2023-11-14/hour=22/"
        f"20231114T221400Z-{RUN}-000000.ndjson.gz"
    )
    assert window.records == 5
    assert decoded(window) == batch
    assert window.first_ts_event == batch[0].ts_event
    assert window.last_ts_event == batch[-1].ts_event
    assert window.symbols == {"binance:BTC-USDT": ("1", "5")}
    assert window.format == "ndjson.gz"


def test_add_closes_windows_whose_slot_ended(clock: FakeClock) -> None:
    feed = Feed(clock)
    windower = make(clock)
    first = feed.trades(3)
    windower.add(first)
    clock.advance(30)  # 22:15:07, next slot
    second = feed.trades(2)
    [closed] = windower.add(second)
    assert decoded(closed) == first
    assert windower.open_count == 1
    [last] = windower.close_all()
    assert decoded(last) == second
    assert last.window_start_ns == (T0 + 60) * NS
    assert last.key.endswith("-000001.ndjson.gz")


def test_batch_spanning_two_slots_is_split_by_ts_recv(clock: FakeClock) -> None:
    feed = Feed(clock)
    windower = make(clock)
    batch = feed.trades(4)
    late = [dataclasses.replace(t, ts_recv=(T0 + 60) * NS + i) for i, t in enumerate(batch)]
    mixed = batch[:2] + late[2:]
    assert windower.add(mixed) == []
    windows = windower.close_all()
    assert [w.window_start_ns for w in windows] == [T0 * NS, (T0 + 60) * NS]
    assert [decoded(w) for w in windows] == [mixed[:2], mixed[2:]]


def test_record_trigger_splits_exactly(clock: FakeClock) -> None:
    feed = Feed(clock)
    windower = make(clock, max_records=100)
    batch = feed.trades(250)
    closed = windower.add(batch)
    assert [w.records for w in closed] == [100, 100]
    assert windower.open_count == 1
    closed += windower.close_all()
    assert [w.records for w in closed] == [100, 100, 50]
    assert [w.key[-len("000000.ndjson.gz") :] for w in closed] == [
        "000000.ndjson.gz",
        "000001.ndjson.gz",
        "000002.ndjson.gz",
    ]
    assert [t for w in closed for t in decoded(w)] == batch
    assert closed[1].symbols == {"binance:BTC-USDT": ("101", "200")}


def test_record_trigger_exact_fill_closes_immediately(clock: FakeClock) -> None:
    feed = Feed(clock)
    windower = make(clock, max_records=10)
    assert windower.add(feed.trades(7)) == []
    [closed] = windower.add(feed.trades(3))
    assert closed.records == 10
    assert windower.open_count == 0


@pytest.mark.parametrize("fmt", ["ndjson.gz", "ndjson.zst"])
def test_byte_trigger(clock: FakeClock, fmt: str) -> None:
    rng = random.Random(7)
    feed = Feed(clock)
    windower = make(clock, max_bytes=20_000, fmt=fmt)
    sent: list[Trade] = []
    closed: list[ClosedWindow] = []
    for _ in range(100):
        batch = feed.trades(100)
        for trade in batch:  # incompressible-ish prices so output appears early
            trade.price = f"{rng.random():.17f}"
            trade.size = f"{rng.random():.17f}"
        sent += batch
        closed += windower.add(batch)
    assert len(closed) >= 2
    assert all(len(w.body) >= 20_000 for w in closed)
    closed += windower.close_all()
    assert [t for w in closed for t in decoded(w)] == sent
    assert len({w.key for w in closed}) == len(closed)


def test_partitions_by_symbol_with_own_sequences(clock: FakeClock) -> None:
    feed = Feed(clock)
    windower = make(clock, max_records=3)
    btc = feed.trades(4, "BTC-USDT")
    eth = feed.trades(2, "ETH-USDT")
    batch = [btc[0], eth[0], btc[1], btc[2], eth[1], btc[3]]
    closed = windower.add(batch)
    assert [w.key.split("/")[3] for w in closed] == ["symbol=BTC-USDT"]
    closed += windower.close_all()
    by_symbol = {w.key: decoded(w) for w in closed}
    assert sorted(by_symbol) == [
        f"p/trades/exchange=binance/symbol=BTC-USDT/date=2023-11-14/hour=22/"
        f"20231114T221400Z-{RUN}-00000{n}.ndjson.gz"
        for n in (0, 1)
    ] + [
        "p/trades/exchange=binance/symbol=ETH-USDT/date=2023-11-14/hour=22/"
        f"20231114T221400Z-{RUN}-000000.ndjson.gz"
    ]
    assert [t for w in closed if "BTC" in w.key for t in decoded(w)] == btc
    assert [t for w in closed if "ETH" in w.key for t in decoded(w)] == eth


@pytest.mark.parametrize(
    "template", [None, "{prefix}{dataset}/{exchange}/{window_start}-{run_id}-{seq}.{ext}"]
)
def test_symbol_batches_land_as_the_same_windows_as_mixed_batches(
    clock: FakeClock, template: str | None
) -> None:
    """The sessions hand over one SymbolBatch per symbol, which the windower takes as one
    partition without checking each trade's key: the same windows, keys and bodies as the
    mixed batch they came from (per symbol, arrival order kept)."""
    feed = Feed(clock)
    btc = feed.trades(4, "BTC-USDT")
    eth = feed.trades(2, "ETH-USDT")
    mixed = [btc[0], eth[0], btc[1], btc[2], eth[1], btc[3]]
    grouped = by_symbol(mixed)
    assert [type(g) for g in grouped] == [SymbolBatch, SymbolBatch]
    results = []
    for batches in ([mixed], grouped):
        windower = make(clock, max_records=3, template=template)
        closed = [w for batch in batches for w in windower.add(batch)] + windower.close_all()
        results.append(
            sorted((w.key, [(t.symbol, t.trade_id) for t in decoded(w)]) for w in closed)
        )
    if template is None:
        assert results[0] == results[1]
    else:  # windows per exchange: which trades share one follows the batches' order
        assert [key for key, _ in results[0]] == [key for key, _ in results[1]]
        assert sorted(t for _, ts in results[0] for t in ts) == sorted(
            t for _, ts in results[1] for t in ts
        )


def test_exchange_only_template_mixes_symbols_in_one_window(clock: FakeClock) -> None:
    feed = Feed(clock)
    windower = make(
        clock, template="{prefix}{dataset}/{exchange}/{window_start}-{run_id}-{seq}.{ext}"
    )
    batch = feed.trades(2, "BTC-USDT") + feed.trades(3, "ETH-USDT") + feed.trades(1, "BTC-USDT")
    windower.add(batch)
    [window] = windower.close_all()
    assert decoded(window) == batch
    assert window.symbols == {"binance:BTC-USDT": ("1", "3"), "binance:ETH-USDT": ("1", "3")}
    assert window.key == f"p/trades/binance/20231114T221400Z-{RUN}-0.ndjson.gz"


def test_hostile_symbol_cannot_escape_prefix(clock: FakeClock) -> None:
    feed = Feed(clock)
    windower = make(clock)
    windower.add(feed.trades(1, "../../etc/passwd"))
    [window] = windower.close_all()
    assert window.key.startswith("p/trades/exchange=binance/symbol=.._.._etc_passwd/")
    assert decoded(window)[0].symbol == "../../etc/passwd"


def test_empty_batch_and_empty_windower(clock: FakeClock) -> None:
    windower = make(clock)
    assert windower.add([]) == []
    assert windower.due() == []
    assert windower.close_all() == []


def test_policy_validation() -> None:
    with pytest.raises(ConfigError) as info:
        WindowPolicy(0, 10, 10)
    assert info.value.variable == "WINDOW_SECONDS"
    with pytest.raises(ConfigError):
        WindowPolicy(60, -1, 10)
    with pytest.raises(ConfigError):
        WindowPolicy(60, 10, True)


# -- property ---------------------------------------------------------------------------------

SYMBOLS = ("BTC-USDT", "ETH-USDT", "../X")

batch_spec = st.tuples(
    st.integers(min_value=0, max_value=90),  # how far back (s) the batch was received
    st.lists(st.sampled_from(range(len(SYMBOLS))), min_size=0, max_size=40),
)
operation = st.one_of(
    st.tuples(st.just("advance"), st.floats(min_value=0, max_value=100)),
    st.tuples(st.just("batch"), batch_spec),
    st.tuples(st.just("due"), st.none()),
)


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(operation, max_size=30),
    max_records=st.integers(min_value=1, max_value=60),
    max_bytes=st.sampled_from([200, 5_000, 1 << 30]),
    fmt=st.sampled_from(["ndjson.gz", "ndjson.zst"]),
)
def test_every_record_lands_in_exactly_one_window_in_order(
    ops: list[tuple[str, object]], max_records: int, max_bytes: int, fmt: str
) -> None:
    clock = FakeClock(start_ns=(T0 + 37) * NS)
    windower = make(clock, max_records=max_records, max_bytes=max_bytes, fmt=fmt)
    sent: list[Trade] = []
    closed: list[ClosedWindow] = []
    ids: Counter[str] = Counter()
    for kind, arg in ops:
        if kind == "advance":
            assert isinstance(arg, float)
            clock.advance(arg)
        elif kind == "due":
            closed += windower.due()
        else:
            assert isinstance(arg, tuple)
            lag, picks = arg
            base = clock.time_ns() - lag * NS
            batch = []
            for i, pick in enumerate(picks):
                symbol = SYMBOLS[pick]
                ids[symbol] += 1
                ts_recv = min(base + i * 7 * NS, clock.time_ns())
                batch.append(
                    Trade("ex", symbol, symbol, str(ids[symbol]), "1", "1", "buy", i, ts_recv)
                )
            sent += batch
            closed += windower.add(batch)
        if kind != "advance":  # add() and due() leave no window whose slot has ended
            assert windower.due() == []
    closed += windower.close_all()
    assert windower.open_count == 0

    position = {(t.symbol, t.trade_id): n for n, t in enumerate(sent)}
    seen: list[int] = []
    keys = set()
    for window in closed:
        records = decoded(window)
        assert 0 < window.records == len(records) <= max_records
        assert window.key not in keys
        keys.add(window.key)
        assert len({r.symbol for r in records}) == 1
        start = window.window_start_ns
        # On time: in its own slot; late (its slot had ended when it arrived): a later one.
        assert all(r.ts_recv < start + 60 * NS for r in records)
        indices = [position[(r.symbol, r.trade_id)] for r in records]
        assert indices == sorted(indices)
        assert [sent[i] for i in indices] == records
        seen += indices
        first, last = records[0], records[-1]
        assert window.symbols == {f"ex:{first.symbol}": (first.trade_id, last.trade_id)}
    assert sorted(seen) == list(range(len(sent)))


def trade(symbol: str, n: int, *, ts_recv: int) -> Trade:
    return Trade("binance", symbol, symbol.replace("-", ""), str(n), "1.5", "1", "buy", n, ts_recv)


def test_a_late_record_goes_to_the_current_window_instead_of_reopening_a_closed_one() -> None:
    clock = FakeClock(start_ns=(T0 + 50) * NS)
    windower = make(clock)
    assert windower.add([trade("BTC-USDT", 1, ts_recv=(T0 + 50) * NS)]) == []
    clock.advance(15)  # 12:01:05: the first window's slot has ended
    [first] = windower.due()
    # A backlog from before the boundary arrives now: it joins the 12:01 window.
    late = [trade("BTC-USDT", n, ts_recv=(T0 + 55) * NS) for n in (2, 3)]
    assert windower.add(late) == []
    assert windower.add([trade("BTC-USDT", 4, ts_recv=(T0 + 65) * NS)]) == []
    [second] = windower.close_all()
    assert first.records == 1 and second.records == 3
    assert second.window_start_ns == (T0 + 60) * NS
