"""``compact``'s pure parts: record checks, deduplication, order, bars, plan, gap report."""

from __future__ import annotations

import datetime as dt
import decimal
import io
from decimal import Decimal
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.compact import (
    BARS_SCHEMA,
    TRADES_SCHEMA,
    CompactTrade,
    DayTrades,
    bars,
    bars_parquet,
    notional_column,
    ordered,
    parse_records,
    trades_parquet,
)
from batch.compact_job import CompactParameters
from batch.compact_plan import DayRange, plan_objects, run_id_from_key
from batch.compact_report import Continuity, RunSeen, recorded_gaps, uncovered
from batch.compact_sample import generate_compact
from connectors.registry import PROTOCOLS
from connectors.symbols import canonical_symbol
from engine.errors import ConfigError
from engine.settings import Env
from sinks.keys import sanitize
from sinks.manifest import OUTPUT_KIND, Gap, Manifest, StoredObjectEntry
from sinks.writer import ListedObject
from tests.strategies import json_values

DAY = dt.date(2026, 3, 1)
DAY_US = int(dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
MINUTE = 60_000_000


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "raw_symbol": "BTCUSDT",
        "trade_id": "100",
        "price": "100.50",
        "size": "0.200",
        "side": "buy",
        "ts_event": DAY_US + 1,
        "ts_recv": (DAY_US + 5) * 1000,
    }
    base.update(changes)
    return base


def trade(trade_id: str, price: str, size: str, ts_event: int, **changes: Any) -> CompactTrade:
    trades, rejected = parse_records(
        "k", [record(trade_id=trade_id, price=price, size=size, ts_event=ts_event, **changes)]
    )
    assert not rejected
    return trades[0]


# --- record checks -------------------------------------------------------------------------


def test_a_valid_record_keeps_its_exact_decimals() -> None:
    trades, rejected = parse_records("key", [record()])
    assert rejected == []
    assert trades[0].price == Decimal("100.50") and str(trades[0].price) == "100.50"
    assert trades[0].day == 20513


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"side": None}, "bad-field"),
        ({"side": "hold"}, "bad-side"),
        ({"price": "1e5"}, "bad-decimal"),
        ({"price": "abc"}, "bad-decimal"),
        ({"price": "NaN"}, "bad-decimal"),
        ({"price": " 1.0"}, "bad-decimal"),
        ({"size": "0"}, "non-positive"),
        ({"price": "-1"}, "non-positive"),
        ({"price": "1.0000000000001"}, "out-of-range"),
        ({"size": "123456789012345"}, "out-of-range"),
        ({"ts_event": "12"}, "bad-timestamp"),
        ({"ts_recv": True}, "bad-timestamp"),
        ({"trade_id": ""}, "bad-field"),
        ({"symbol": 7}, "bad-field"),
    ],
)
def test_each_kind_of_bad_record_is_rejected_with_its_line(
    changes: dict[str, Any], kind: str
) -> None:
    trades, rejected = parse_records("obj.ndjson.gz", [record(trade_id="1"), record(**changes)])
    assert [t.trade_id for t in trades] == ["1"]
    assert [(r.source, r.row_number, r.kind) for r in rejected] == [("obj.ndjson.gz", 2, kind)]
    assert rejected[0].reason.startswith(kind)


def test_a_record_without_fields_names_them() -> None:
    incomplete = {k: v for k, v in record().items() if k not in ("side", "ts_recv")}
    _, rejected = parse_records("k", [incomplete])
    assert rejected[0].kind == "missing-field"
    assert "side" in rejected[0].reason and "ts_recv" in rejected[0].reason


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*record(), "x"]), json_values, max_size=12))
def test_any_decoded_object_is_a_trade_or_a_rejection(doc: dict[str, Any]) -> None:
    trades, rejected = parse_records("k", [doc])
    assert len(trades) + len(rejected) == 1


# --- deduplication and order ---------------------------------------------------------------


def test_duplicates_keep_the_first_received_copy_and_count_conflicts() -> None:
    day = DayTrades(DAY_US // 86_400_000_000)
    early = trade("7", "10", "1", DAY_US + 10, ts_recv=2_000)
    late_same = trade("7", "10", "1", DAY_US + 10, ts_recv=3_000)
    late_other = trade("7", "10", "2", DAY_US + 10, ts_recv=1_000)
    day.add([early, late_same])
    day.add([late_other])
    assert len(day) == 1
    stats = day.stats[("binance", "BTC-USDT")]
    assert (stats.duplicates, stats.conflicts) == (2, 1)
    # the conflicting copy was received first (ts_recv 1000), so it is the one kept
    assert day.by_symbol()[("binance", "BTC-USDT")] == [late_other]
    assert day.conflict_examples == [(early, late_other)]


def test_a_trade_of_another_day_is_refused() -> None:
    with pytest.raises(ValueError):
        DayTrades(0).add([trade("1", "1", "1", DAY_US)])


def test_order_is_time_then_numeric_id_then_text_ids() -> None:
    items = [
        trade("10", "1", "1", DAY_US + 5),
        trade("9", "1", "1", DAY_US + 5),
        trade("abc", "1", "1", DAY_US + 5),
        trade("100", "1", "1", DAY_US + 1),
    ]
    assert [t.trade_id for t in ordered(items)] == ["100", "9", "10", "abc"]


# --- bars ----------------------------------------------------------------------------------


def test_bars_worked_by_hand() -> None:
    minute = DAY_US + 5 * MINUTE
    trades = ordered(
        [
            trade("1", "100.00", "0.5", minute + 1),
            trade("2", "101.50", "0.25", minute + 2),
            trade("3", "99.00", "1.25", minute + 3),
            trade("4", "100.10", "2", minute + MINUTE + 7),
        ]
    )
    first, second = bars(trades)
    # minute 1: open 100.00, high 101.50, low 99.00, close 99.00; volume 0.5+0.25+1.25 = 2.00
    # notional 50.000 + 25.3750 + 123.7500 = 199.1250; vwap 199.125 / 2 = 99.5625
    assert (first.open, first.high, first.low, first.close) == (
        Decimal("100.00"),
        Decimal("101.50"),
        Decimal("99.00"),
        Decimal("99.00"),
    )
    assert first.volume == Decimal("2.00") and first.notional == Decimal("199.1250")
    assert str(first.vwap) == "99.562500"  # price places (2) + 4
    assert (first.trades, first.first_trade_id, first.last_trade_id) == (3, "1", "3")
    assert first.minute == minute
    assert (second.open, second.close, second.volume, second.trades) == (
        Decimal("100.10"),
        Decimal("100.10"),
        Decimal("2"),
        1,
    )
    assert second.minute == minute + MINUTE


def test_vwap_rounds_half_even_at_its_scale() -> None:
    # notional 1*1 + 2*2 = 5, volume 3: 1.6666... -> 1.6667 (0 price places + 4)
    (bar,) = bars([trade("1", "1", "1", DAY_US), trade("2", "2", "2", DAY_US + 1)])
    assert str(bar.vwap) == "1.6667"


def test_parquet_outputs_hold_exact_decimals() -> None:
    trades = ordered([trade("1", "0.1", "3", DAY_US), trade("2", "12.34500", "0.001", DAY_US + 1)])
    table = pq.read_table(io.BytesIO(trades_parquet(trades)))
    assert table.column("price").to_pylist() == [Decimal("0.1"), Decimal("12.345")]
    assert table.schema == TRADES_SCHEMA  # one fixed type per column, whatever the file holds
    assert str(table.schema.field("price").type) == "decimal128(38, 12)"
    assert str(table.schema.field("ts_event").type) == "timestamp[us, tz=UTC]"
    assert "exchange" not in table.column_names and "symbol" not in table.column_names
    bar_table = pq.read_table(io.BytesIO(bars_parquet(bars(trades))))
    assert bar_table.schema == BARS_SCHEMA
    assert bar_table.column("notional").to_pylist() == [Decimal("0.3") + Decimal("0.012345")]
    assert bar_table.column("notional_text").to_pylist() == ["0.31234500"]  # places as sent
    assert str(bar_table.schema.field("vwap").type) == "decimal128(38, 16)"


# --- parameters ----------------------------------------------------------------------------


def test_parameters_from_env() -> None:
    today = dt.date(2026, 11, 30)
    params = CompactParameters.from_env(Env({"COMPACT_FROM": "yesterday"}), today=today)
    assert (params.first, params.last) == (dt.date(2026, 11, 29), dt.date(2026, 11, 29))
    params = CompactParameters.from_env(
        Env({"COMPACT_FROM": "2026-11-01", "COMPACT_TO": "today"}), today=today
    )
    assert params.days.days == range(params.days.first, params.days.first + 30)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "COMPACT_FROM"),
        ({"COMPACT_FROM": "2026-1-1"}, "COMPACT_FROM"),
        ({"COMPACT_FROM": "2026-11-02", "COMPACT_TO": "2026-11-01"}, "COMPACT_TO"),
        ({"COMPACT_FROM": "2024-01-01", "COMPACT_TO": "2025-06-01"}, "COMPACT_TO"),
        ({"COMPACT_FROM": "2026-11-01", "INPUT_KEY": "a/b"}, "INPUT_KEY"),
    ],
)
def test_bad_parameters_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        CompactParameters.from_env(Env(env), today=dt.date(2026, 11, 30))
    assert info.value.variable == variable


# --- plan ----------------------------------------------------------------------------------


def entry(key: str, first: int, last: int, kind: str | None = None) -> StoredObjectEntry:
    return StoredObjectEntry(key, 1, 1, "0" * 64, first, last, {}, kind=kind)


def manifest(
    run_id: str, *objects: StoredObjectEntry, command: str = "feedvault stream"
) -> Manifest:
    return Manifest(run_id, "1", command, "", "", "deadline", "complete", objects=list(objects))


def test_plan_reads_each_object_once_on_the_first_day_it_may_hold() -> None:
    days = DayRange.of(DAY, DAY + dt.timedelta(days=1))
    key = "p/trades/exchange=binance/symbol=B/date=2026-03-0{}/hour={}/T-r1-{}.ndjson.gz"
    listed = [
        ListedObject(key.format(1, "00", 1), 1),  # may hold 02-28 (outside): read on 03-01
        ListedObject(key.format(1, "23", 2), 1),  # may hold 03-02: read on 03-01
        ListedObject(key.format(2, "00", 3), 1),  # may hold 03-01: read on 03-01
        ListedObject(key.format(2, "05", 4), 1),  # read on 03-02
        ListedObject(key.format(3, "00", 5), 1),  # may hold 03-02: read on 03-02
        ListedObject(key.format(3, "01", 6), 1),  # 03-03 only: not read
        ListedObject("p/trades/odd.ndjson.gz", 1),  # no partition: read on the first day
    ]
    in_manifest = entry("p/trades/x/20260301T120000Z-r2-000001.ndjson.gz", DAY_US + 1, DAY_US + 2)
    raw = entry("p/raw/exchange=binance/x.ndjson.gz", DAY_US, DAY_US)
    batch = manifest("b", entry("p/compact/x.json", 0, 0, kind=OUTPUT_KIND), command="f batch c")
    plan = plan_objects("p/", [manifest("r2", in_manifest, raw), batch], listed, days)
    read = {source.key.rsplit("-", 1)[-1]: source.read_day(days) - days.first for source in plan}
    assert read == {
        "1.ndjson.gz": 0,
        "2.ndjson.gz": 0,
        "3.ndjson.gz": 0,
        "4.ndjson.gz": 1,
        "5.ndjson.gz": 1,
        "p/trades/odd.ndjson.gz": 0,
        "000001.ndjson.gz": 0,
    }
    listed_entry = next(s for s in plan if s.entry is not None)
    assert listed_entry.run_id == "r2" and listed_entry.entry == in_manifest


def test_run_id_from_default_file_names() -> None:
    assert run_id_from_key("a/20260301T000000Z-20260301T000000Z-ab12-000003.ndjson.zst") == (
        "20260301T000000Z-ab12"
    )
    assert run_id_from_key("a/custom.ndjson.gz") is None


# --- gap report ----------------------------------------------------------------------------


def test_continuity_across_days_and_recorded_gaps_still_missing() -> None:
    continuity = Continuity({"binance": True, "bybit": False})
    key = ("binance", "BTC-USDT")
    day1 = ordered([trade(str(i), "1", "1", DAY_US + i) for i in (1, 2, 3, 7, 8)])
    day2 = ordered([trade(str(i), "1", "1", DAY_US + 86_400_000_000 + i) for i in (9, 12)])
    continuity.add_day(key, "d1", day1, None)
    continuity.add_day(key, "d2", day2, None)
    report = continuity.symbols[key]
    assert [(g.from_id, g.to_id, g.missing) for g in report.gaps] == [(4, 6, 3), (10, 11, 2)]
    assert report.gaps[0].after_us == DAY_US + 3 and report.gaps[0].before_us == DAY_US + 7
    assert (report.trades, report.days) == (7, ["d1", "d2"])
    run = RunSeen(
        "r",
        Manifest(
            "r",
            "1",
            "feedvault stream",
            "",
            "",
            "deadline",
            "complete",
            gaps={
                "binance:BTC-USDT": [
                    Gap(from_id=4, to_id=7, missing=4),  # 7 arrived in another run: 3 still missing
                    Gap(from_id=100, to_id=120, missing=21),  # outside the range's ids
                ]
            },
        ),
    )
    assert recorded_gaps([run], continuity.symbols) == {
        "binance:BTC-USDT": [
            {"run_id": "r", "from_id": 4, "to_id": 7, "missing": 4, "still_missing": 3}
        ]
    }


def test_unsequenced_exchanges_get_no_id_gaps() -> None:
    continuity = Continuity({"bybit": False})
    continuity.add_day(
        ("bybit", "X"), "d", [trade("1", "1", "1", DAY_US), trade("9", "1", "1", DAY_US + 1)], None
    )
    assert continuity.symbols[("bybit", "X")].gaps == []


def test_uncovered_time() -> None:
    assert uncovered([(10, 20), (15, 30), (40, 50)], 0, 60) == [(0, 10), (30, 40), (50, 60)]
    assert uncovered([(0, 100)], 10, 60) == []
    assert uncovered([], 5, 6) == [(5, 6)]


# --- sample --------------------------------------------------------------------------------


def test_the_sample_is_reproducible_and_keyed_under_its_prefix() -> None:
    files, expect = generate_compact(3, "s/p/")
    again, _ = generate_compact(3, "s/p/")
    assert files == again
    assert all(key.startswith("s/p/") for key in files)
    assert sum(key.startswith("s/p/_manifests/") for key in files) == 2
    assert expect.runs_without_manifest == ["20260106T130000Z-c3c3c3c3"]
    assert expect.lost_gap_ids[1] - expect.lost_gap_ids[0] >= 0
    assert generate_compact(4)[0] != generate_compact(3)[0]


def test_the_largest_accepted_values_stay_exact_and_the_notional_text_beyond_38_digits() -> None:
    big = "99999999999999.999999999999"  # 14 integer digits, 12 places: the limits
    trades = ordered([trade("1", big, big, DAY_US), trade("2", "1", "1", DAY_US + 1)])
    (bar,) = bars(trades)
    table = pq.read_table(io.BytesIO(bars_parquet([bar])))
    assert table.schema == BARS_SCHEMA  # never decimal256, never a per-file scale
    exact = decimal.Context(prec=80)
    expected = exact.add(exact.multiply(Decimal(big), Decimal(big)), Decimal(1))
    assert table.column("notional").to_pylist() == [None]  # 52 digits: no decimal128 holds it
    assert table.column("notional_text").to_pylist() == [format(expected, "f")]
    assert table.column("open").to_pylist() == [Decimal(big)]
    assert table.column("volume").to_pylist() == [Decimal(big) + 1]


def test_a_notional_past_18_places_is_rounded_half_even_and_kept_exact_as_text() -> None:
    # 0.0000000001 x 0.000000015 = 1.5e-18 exactly: 19 places -> 0.000000000000000002 (even)
    cheap = trade("1", "0.0000000001", "0.000000015", DAY_US)
    assert notional_column(Decimal("0.0000000000000000015")) == Decimal("2E-18")
    assert notional_column(Decimal("0.0000000000000000025")) == Decimal("2E-18")
    assert notional_column(Decimal("1.25")) == Decimal("1.25")  # exact values stay as they are
    assert notional_column(Decimal(10) ** 20) is None
    table = pq.read_table(io.BytesIO(bars_parquet(bars([cheap]))))
    assert table.column("notional").to_pylist() == [Decimal("0.000000000000000002")]
    assert table.column("notional_text").to_pylist() == ["0.0000000000000000015"]


@pytest.mark.parametrize("field", ["exchange", "symbol"])
@pytest.mark.parametrize("value", ["BTC/USDT", "btc usdt", "..", "BTC=USDT", "é"])
def test_a_name_the_key_would_alter_is_rejected_not_renamed(field: str, value: str) -> None:
    trades, rejected = parse_records("k", [record(**{field: value})])
    assert trades == [] and [r.kind for r in rejected] == ["bad-partition-value"]
    assert field in rejected[0].reason and repr(value) in rejected[0].reason


def test_canonical_names_are_their_own_key_segments() -> None:
    assert all(sanitize(name) == name for name in PROTOCOLS)
    raw = ["XBT/USD", "btcusdt", "1000SHIBUSDT", "ETH-USD", "shib/usd"]
    assert all(sanitize(canonical_symbol(name)) == canonical_symbol(name) for name in raw)
    trades, rejected = parse_records("k", [record(exchange="okx", symbol="1000SHIB-USDT")])
    assert not rejected and trades[0].symbol == "1000SHIB-USDT"


@given(st.text(alphabet="AbXU0-/_. =é", max_size=12))
@settings(max_examples=200, deadline=None)
def test_every_canonical_symbol_survives_the_key_unchanged(raw: str) -> None:
    try:
        symbol = canonical_symbol(raw)
    except ValueError:
        return
    assert sanitize(symbol) == symbol
