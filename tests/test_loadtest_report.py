"""Load-test pieces as pure functions: exactly-once check, percentiles, report, table, progress,
symbols and options."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest

from engine.errors import ConfigError, IntegrityError
from feedvault.config import parse_streams
from feedvault.loadtest import SPELLING, LoadtestOptions, check_options, generate_symbols
from feedvault.loadtest_check import ExactlyOnceCheck, iter_ndjson, iter_ndjson_file
from feedvault.loadtest_cli import PROTOCOLS
from feedvault.loadtest_report import (
    RunFacts,
    build_report,
    latency_series,
    latency_summary,
    percentile,
    summary_table,
)
from feedvault.progress import Progress, render_bar

MS = 1_000_000


def trade(tid: int, *, price: str = "1.5", ts_recv: int = 0) -> dict[str, Any]:
    return {
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "raw_symbol": "BTCUSDT",
        "trade_id": str(tid),
        "price": price,
        "size": "2",
        "side": "buy",
        "ts_event": 7,
        "ts_recv": ts_recv,
    }


# -- exactly once ------------------------------------------------------------------------------


def test_exactly_once_passes_whatever_the_order() -> None:
    check = ExactlyOnceCheck()
    check.add_sent([trade(i) for i in range(1, 6)])
    check.add_stored([trade(i) for i in (3, 1, 2)], stored_at_ns=None)
    check.add_stored([trade(i) for i in (5, 4)], stored_at_ns=None)
    result = check.result()
    assert result.passed
    assert (result.sent, result.stored) == (5, 5)


def test_exactly_once_counts_missing_duplicated_and_unexpected() -> None:
    check = ExactlyOnceCheck()
    check.add_sent([trade(i) for i in range(1, 6)])
    stored = [trade(1), trade(2), trade(2), trade(3), trade(4, price="1.50"), trade(9)]
    check.add_stored(stored, stored_at_ns=None)
    result = check.result()
    assert not result.passed
    # 4 (price text differs) and 5 are missing; 2 is duplicated; 4 as "1.50" and 9 unexpected.
    assert (result.missing, result.duplicated, result.unexpected) == (2, 1, 2)
    examples = check.examples(result, [trade(i) for i in range(1, 6)])
    assert {e[2] for e in examples} == {"2", "4", "5"}


def test_nothing_sent_is_not_a_pass() -> None:
    assert not ExactlyOnceCheck().result().passed


def test_latency_and_ingest_span_from_stored_at() -> None:
    check = ExactlyOnceCheck()
    check.add_stored([trade(1, ts_recv=1000 * MS), trade(2, ts_recv=1500 * MS)], 2000 * MS)
    check.add_stored([trade(3, ts_recv=3000 * MS)], 3010 * MS)
    check.add_stored([trade(4, ts_recv=500 * MS)], None)  # spilled: no latency
    assert sorted(check.latencies_ns) == [10 * MS, 500 * MS, 1000 * MS]
    assert check.ingest_seconds == 2.5


def test_iter_ndjson_chunks_and_errors(tmp_path: Any) -> None:
    lines = [orjson.dumps(trade(i)) for i in range(100)]
    text = b"\n".join(lines) + b"\n\n"
    parsed = [r for chunk in iter_ndjson(text, chunk_bytes=300) for r in chunk]
    assert [r["trade_id"] for r in parsed] == [str(i) for i in range(100)]
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(text[:-2])  # no trailing newline on the last line
    from_file = [r for chunk in iter_ndjson_file(path, chunk_bytes=256) for r in chunk]
    assert from_file == parsed
    with pytest.raises(IntegrityError):
        list(iter_ndjson(b'{"a":1}\nnot json\n'))
    with pytest.raises(IntegrityError):
        list(iter_ndjson(b"[1]\n"))


# -- figures -----------------------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7], 99) == 7
    assert percentile([1, 2], 50) == 1
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 0)


def test_latency_summary() -> None:
    assert latency_summary([]) == {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    summary = latency_summary([i * MS for i in range(200, 0, -1)])
    assert summary == {"samples": 200, "p50_ms": 100.0, "p99_ms": 198.0, "max_ms": 200.0}


def stats(t: float, rate: float, depth: int, high_water: int, rss: float) -> dict[str, Any]:
    return {
        "event": "stats",
        "t": t,
        "trades_per_s": rate,
        "queue_depth": depth,
        "queue_high_water": high_water,
        "rss_mb": rss,
    }


def facts(**overrides: Any) -> RunFacts:
    check = ExactlyOnceCheck()
    check.add_sent([trade(i) for i in range(1, 5)])
    check.add_stored([trade(i, ts_recv=i * 1_000_000_000) for i in range(1, 5)], 5_000_000_000)
    values: dict[str, Any] = {
        "settings": {"protocol": "binance", "rate": "max", "symbols": ["BTCUSDT"],
                     "duration_s": 4.0, "format": "ndjson.gz"},
        "run_id": "R1",
        "engine_exit": 0,
        "cpu_seconds": 0.002,
        "stats": [stats(1.0, 10.0, 3, 5, 60.0), stats(2.0, 12.0, 0, 9, 61.5)],
        "run_end": {"event": "run_end", "peak_rss_mb": 62.5},
        "manifest": {"status": "complete", "stop_reason": "deadline",
                     "objects": [{"records": 4, "bytes": 100}], "counters": {"parsed": 4}},
        "check": check.result(),
        "ingest_seconds": check.ingest_seconds,
        "latency": latency_summary(check.latencies_ns),
    }  # fmt: skip
    values.update(overrides)
    return RunFacts(**values)


def test_report_figures() -> None:
    report = build_report(facts())
    assert report["passed"] is True
    figures = report["figures"]
    assert figures["trades"] == 4
    assert figures["ingest_seconds"] == 3.0
    assert figures["trades_per_s"] == round(4 / 3, 1)
    assert figures["cpu_us_per_trade"] == 500.0
    assert figures["peak_rss_mb"] == 62.5
    assert figures["queue_high_water"] == 9
    assert figures["latency"]["p50_ms"] == 2000.0 and figures["latency"]["p99_ms"] == 4000.0
    assert report["exactly_once"]["passed"] is True
    assert [point["t"] for point in report["series"]] == [1.0, 2.0]
    orjson.dumps(report)  # serializable


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"engine_exit": 1}, "exited with status 1"),
        ({"manifest": None}, "wrote no manifest"),
        ({"problems": ["checksum differs"]}, "checksum differs"),
    ],
)
def test_report_fails_on_any_problem(overrides: dict[str, Any], problem: str) -> None:
    report = build_report(facts(**overrides))
    assert report["passed"] is False
    assert any(problem in text for text in report["problems"])


def test_report_fails_when_a_trade_is_missing() -> None:
    check = ExactlyOnceCheck()
    check.add_sent([trade(1), trade(2)])
    check.add_stored([trade(1)], None)
    report = build_report(facts(check=check.result()))
    assert report["passed"] is False
    assert report["exactly_once"]["missing"] == 1
    table = summary_table(report)
    assert "FAIL" in table and "RESULT: FAIL" in table


def test_summary_table_lists_every_figure() -> None:
    table = summary_table(build_report(facts()))
    for label in ("sustained trades/s", "CPU µs per trade", "peak RSS MB", "queue high-water",
                  "latency p50 ms", "latency p99 ms", "exactly once", "RESULT: PASS"):  # fmt: skip
        assert label in table
    assert "n/a" not in table


def test_series_for_the_chart() -> None:
    # The chart's panels (tests/test_loadtest_chart.py) draw these from the report alone.
    stats_lines = [{**line, "queue_depth_peak": 7} for line in facts().stats]
    report = build_report(facts(stats=stats_lines, started_at="2026-12-06T06:27:00.623Z"))
    assert report["started_at"] == "2026-12-06T06:27:00.623Z"
    assert report["series"] == [
        {"t": 1.0, "trades_per_s": 10.0, "queue_depth": 3, "queue_depth_peak": 7, "rss_mb": 60.0},
        {"t": 2.0, "trades_per_s": 12.0, "queue_depth": 0, "queue_depth_peak": 7, "rss_mb": 61.5},
    ]
    assert report["latency_series"] == []


def test_latency_by_receive_second() -> None:
    check = ExactlyOnceCheck()
    second = 1_000_000_000
    # received in seconds 100 and 101, durable at 103.5 s and 104 s
    check.add_stored([trade(1, ts_recv=100 * second), trade(2, ts_recv=100 * second + MS)], None)
    check.add_stored(
        [trade(3, ts_recv=100 * second + 500 * MS), trade(4, ts_recv=101 * second)],
        int(103.5 * second),
    )
    check.add_stored([trade(5, ts_recv=101 * second + 250 * MS)], 104 * second)
    assert sorted(check.latency_by_second) == [100, 101]
    assert list(check.latencies_ns) == [3000 * MS, 2500 * MS, 2750 * MS]
    series = latency_series(check.latency_by_second, origin_s=99.5)
    assert series == [
        {"t": 1.5, "samples": 1, "p50_ms": 3000.0, "p99_ms": 3000.0, "max_ms": 3000.0},
        {"t": 2.5, "samples": 2, "p50_ms": 2500.0, "p99_ms": 2750.0, "max_ms": 2750.0},
    ]
    assert latency_series(check.latency_by_second, None)[0]["t"] == 1.0
    assert latency_series({}, 99.5) == []


# -- progress ----------------------------------------------------------------------------------


def test_progress_bar_on_a_tty_and_lines_otherwise() -> None:
    assert render_bar(15, 30, width=10) == "[#####.....]"
    assert render_bar(99, 30, width=4) == "[####]"
    tty = io.StringIO()
    bar = Progress(30, label="lt", stream=tty, is_tty=True)
    bar.update(3.0, "100 trades/s")
    bar.update(3.1, "ignored: redrawn at most every 0.2 s")
    bar.update(6.0, "200 trades/s")
    bar.finish()
    assert tty.getvalue().count("\r") == 2 and "200 trades/s" in tty.getvalue()
    assert tty.getvalue().endswith("\n")
    plain = io.StringIO()
    lines = Progress(30, label="lt", stream=plain, is_tty=False, line_seconds=5)
    for tenth in range(0, 121):
        lines.update(tenth / 10, "x")
    assert plain.getvalue().count("\n") == 2  # at 5 s and 10 s
    assert "\r" not in plain.getvalue()


# -- symbols and options -----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_generated_symbols_are_valid_streams(protocol: str) -> None:
    symbols = generate_symbols(protocol, 40)
    assert len(set(symbols)) == 40
    specs = parse_streams(",".join(f"{protocol}:{s}" for s in symbols))
    assert len(specs) == 40


def test_every_protocol_has_a_spelling() -> None:
    assert set(SPELLING) == set(PROTOCOLS)
    assert generate_symbols("binance", 3) == ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    assert generate_symbols("kraken", 1) == ["BTC/USD"]


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        (LoadtestOptions(rate="fast"), "--rate"),
        (LoadtestOptions(rate="-5"), "--rate"),
        (LoadtestOptions(symbols=0), "--symbols"),
        (LoadtestOptions(duration=0), "--duration"),
        (LoadtestOptions(protocol="nasdaq"), "--protocol"),
        (LoadtestOptions(format="csv"), "--format"),
    ],
)
def test_bad_options(options: LoadtestOptions, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        check_options(options)
