"""The fake exchange's pieces without a network: market, ledger, faults."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from connectors.fake.faults import Faults, Stall
from connectors.fake.ledger import Ledger
from connectors.fake.market import Market
from engine.clock import FakeClock

DECIMAL_8 = re.compile(r"[0-9]+\.[0-9]{8}")


def test_take_sequential_ids_and_exact_decimals() -> None:
    market = Market(["BTCUSDT", "ETHUSDT"], rate=None, seed=3, clock=FakeClock())
    trades = market.take(["BTCUSDT", "ETHUSDT"], 1000)
    for raw, symbol in (("BTCUSDT", "BTC-USDT"), ("ETHUSDT", "ETH-USDT")):
        mine = [t for t in trades if t.raw_symbol == raw]
        assert [int(t.trade_id) for t in mine] == list(range(1, 501))
        assert {t.symbol for t in mine} == {symbol}
    for t in trades:
        assert DECIMAL_8.fullmatch(t.price) and DECIMAL_8.fullmatch(t.size), t
        assert t.side in ("buy", "sell") and t.exchange == "binance"
        assert float(t.size) > 0 and float(t.price) > 0
    btc = next(t for t in trades if t.raw_symbol == "BTCUSDT")
    assert btc.price.endswith("000000") and 27000 < float(btc.price) < 27300  # 0.01 ticks


def test_same_seed_same_trades() -> None:
    def run(seed: int) -> list[tuple[str, str, str, str]]:
        market = Market(["BNBBTC", "NEWCOINUSDT"], rate=None, seed=seed, clock=FakeClock())
        return [(t.trade_id, t.price, t.size, t.side) for t in market.take(["BNBBTC"], 50)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_timed_advance_follows_the_clock() -> None:
    clock = FakeClock()
    market = Market(["BTCUSDT", "ETHUSDT"], rate=200, seed=1, clock=clock, first_id=100)
    assert market.advance() == []
    clock.advance(0.5)
    first = market.advance()
    assert len(first) == 100
    assert market.advance() == []
    clock.advance(1.0)
    second = market.advance()
    assert len(second) == 200
    ids = [int(t.trade_id) for t in first + second if t.raw_symbol == "BTCUSDT"]
    assert ids == list(range(100, 100 + len(ids)))
    stamps = [t.ts_event for t in second]
    assert stamps == sorted(stamps) and stamps[-1] == clock.time_ns() // 1_000_000 * 1000


def test_max_trades_caps_production() -> None:
    clock = FakeClock()
    market = Market(["BTCUSDT"], rate=1000, clock=clock, max_trades=150)
    clock.advance(1)
    assert len(market.advance()) == 150 and market.exhausted
    clock.advance(1)
    assert market.advance() == []
    blast = Market(["BTCUSDT"], rate=None, clock=clock, max_trades=10)
    assert len(blast.take(["BTCUSDT"], 256)) == 10 and blast.take(["BTCUSDT"], 1) == []


def test_market_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        Market([], rate=1)
    with pytest.raises(ValueError):
        Market(["BTCUSDT"], rate=0)
    with pytest.raises(ValueError):
        Market(["NOQUOTE"], rate=1)


def test_ledger_runs_files_and_summary(tmp_path: Path) -> None:
    market = Market(["BTCUSDT", "ETHUSDT"], rate=None, clock=FakeClock())
    trades = market.take(["BTCUSDT", "ETHUSDT"], 10)
    stream_path = tmp_path / "stream.jsonl"
    ledger = Ledger(stream_path)
    ledger.record(trades[:6], connection=1)
    ledger.record(trades[8:], connection=2)  # ids 5 of each symbol skipped
    assert ledger.sent_ids("BTCUSDT") == [1, 2, 3, 5]
    assert ledger.sent_ids("BTC-USDT", connection=2) == [5]
    assert ledger.connections() == [1, 2]
    assert list(ledger.trades(connection=2)) == trades[8:]
    ledger.close()
    written = ledger.write(tmp_path / "ledger.jsonl")
    assert written == 8
    lines = [orjson.loads(x) for x in (tmp_path / "ledger.jsonl").read_bytes().splitlines()]
    assert lines == [orjson.loads(x) for x in stream_path.read_bytes().splitlines()]
    first = trades[0]
    assert lines[0] == {
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "raw_symbol": "BTCUSDT",
        "trade_id": "1",
        "price": first.price,
        "size": first.size,
        "side": first.side,
        "ts_event": first.ts_event,
        "conn": 1,
    }
    summary = ledger.summary()
    assert summary["trades"] == 8
    assert summary["per_symbol"] == {"BTCUSDT": 4, "ETHUSDT": 4}
    assert summary["per_connection"] == {"1": 6, "2": 2}


def test_ledger_memory_limit(tmp_path: Path) -> None:
    trades = Market(["BTCUSDT"], rate=None, clock=FakeClock()).take(["BTCUSDT"], 5)
    ledger = Ledger(memory_limit=2)
    ledger.record(trades)
    assert ledger.sent_ids("BTCUSDT") == [1, 2, 3, 4, 5] and not ledger.complete_in_memory
    with pytest.raises(ValueError):
        ledger.write(tmp_path / "x.jsonl")


def test_faults_parse_and_render() -> None:
    faults = Faults.parse(
        "disconnect-every=5, stall=3@10,malformed=0.01,shutdown-notice-every=30,reject-unknown"
    )
    assert faults == Faults(5.0, Stall(3.0, 10.0), 0.01, 30.0, True)
    assert Faults.parse(str(faults)) == faults
    assert Faults.parse("") == Faults() == Faults.parse(None)
    for bad in [
        "disconnect-every=0",
        "disconnect-every=x",
        "stall=3",
        "malformed=2",
        "nope=1",
        "malformed=0.1,malformed=0.2",
        "reject-unknown=maybe",
    ]:
        with pytest.raises(ValueError):
            Faults.parse(bad)


def test_stall_longer_than_period_is_silent_for_good() -> None:
    stall = Faults.parse("stall=2@2").stall
    assert stall is not None
    assert [stall.active(a) for a in (1.9, 2, 3.99, 4, 100)] == [False, True, True, True, True]


def test_stall_windows() -> None:
    stall = Stall(seconds=2, every=5)
    assert [stall.active(a) for a in (0, 4.9, 5, 6.9, 7, 10, 12.5)] == [
        False,
        False,
        True,
        True,
        False,
        True,
        False,
    ]
