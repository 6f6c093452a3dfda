"""`make bench`'s book row (docs: load-testing.md#make-bench): the rows of stored book objects
counted as the sink writes them, the row's figures from made-up results, and the report's
book table and ratio line against the ``zst`` trade row. Figures are checked for shape and
arithmetic, never for speed."""

from __future__ import annotations

from benchmarks import bare_recv
from benchmarks.__main__ import book_report, report, target_line
from benchmarks.book_path import book_row, count_rows, generator_row
from connectors.fake.server import FakeExchange
from engine.book_records import BookLevel
from sinks.encoders import make_encoder


def _level(seq: int, snapshot: bool, price: str, size: str = "1.5") -> BookLevel:
    return BookLevel(
        "binance", "BTC-USDT", "BTCUSDT", 1_700_000_000_000_000, 1, str(seq), snapshot, "bid",
        price, size,
    )  # fmt: skip


def test_rows_and_snapshot_rows_are_counted_as_the_sink_writes_them() -> None:
    first, second = make_encoder("ndjson.zst"), make_encoder("ndjson.zst")
    first.write([_level(1, True, "100.0"), _level(1, True, "99.0"), _level(2, False, "98.0")])
    first.write([_level(3, False, "100.0", "0")])
    # a delta whose text holds the flag's spelling (escaped quotes in JSON) is still a delta
    second.write([_level(4, False, '"snapshot":true'), _level(4, True, "97.0")])
    assert count_rows([first.finish(), second.finish()]) == (6, 3)
    assert count_rows([]) == (0, 0)


def _engine_run() -> dict[str, object]:
    return {
        "exit": 0,
        "status": "complete",
        "trades": 1_000_500,
        "trades_per_s": 33_350.0,
        "cpu_us_per_trade": 5.0,
        "cpu_seconds": 6.0,
        "peak_rss_mb": 90.0,
        "objects": 9,
    }


def test_the_book_row_counts_level_changes_without_the_snapshot_rows() -> None:
    row = book_row(_engine_run(), rows=1_000_500, snapshot_rows=500, resyncs=0, seconds=30.0)
    assert row["level_changes"] == 1_000_000
    assert row["level_changes_per_s"] == round(1_000_000 / 30, 1)
    assert row["cpu_us_per_level_change"] == 6.0
    assert (row["rows"], row["snapshot_rows"], row["resyncs"]) == (1_000_500, 500, 0)
    assert (row["peak_rss_mb"], row["objects"], row["status"]) == (90.0, 9, "complete")
    assert not {"trades", "trades_per_s", "cpu_us_per_trade"} & set(row)  # no trade figures
    empty = book_row(_engine_run(), rows=0, snapshot_rows=0, resyncs=2, seconds=30.0)
    assert empty["level_changes"] == 0 and empty["cpu_us_per_level_change"] == 6e6


def test_the_generator_row_states_its_cpu_per_level_change_sent_and_its_core_share() -> None:
    assert generator_row(2_000_000, cpu_seconds=3.0, peak_rss_mb=40.0, seconds=20.0) == {
        "level_changes_per_s": 100_000.0,
        "cpu_us_per_level_change": 1.5,
        "peak_rss_mb": 40.0,
        "cpu_share": 0.15,
        "level_changes_sent": 2_000_000,
    }


def test_target_line_states_a_ceiling_with_at_most() -> None:
    assert target_line("x", 1.5, 1.5, at_most=True) == "x: 1.50x (target <= 1.5x: met)"
    assert target_line("x", 1.51, 1.5, at_most=True) == "x: 1.51x (target <= 1.5x: NOT met)"
    assert target_line("x", 1.49, 1.5) == "x: 1.49x (target >= 1.5x: NOT met)"


def _book(cpu_us: float) -> dict[str, object]:
    return {
        "level_changes_per_s": 80_000.0,
        "cpu_us_per_level_change": cpu_us,
        "peak_rss_mb": 95.0,
        "snapshot_rows": 1_234,
        "resyncs": 0,
        "generator_cpu_share": 0.42,
    }


def test_the_report_states_the_book_cpu_against_the_zst_trade_row() -> None:
    results: dict[str, dict[str, object]] = {
        "zst": {"trades_per_s": 250_000.0, "cpu_us_per_trade": 4.0, "peak_rss_mb": 100.0},
        "book": _book(5.6),
        "book-generator": {
            "level_changes_per_s": 250_000.0,
            "cpu_us_per_level_change": 2.0,
            "peak_rss_mb": 60.0,
            "cpu_share": 0.42,
        },
    }
    lines = book_report(results)
    assert lines[0].split() == [
        *("book", "path", "level", "chg/s", "cpu", "us/chg", "peak", "RSS", "MB"),
        *("snapshot", "rows", "resyncs"),
    ]
    assert lines[1].split() == ["book", "80,000", "5.60", "95.0", "1,234", "0"]
    assert lines[2].split() == ["book-generator", "250,000", "2.00", "60.0", "-", "-"]
    ratio = "book CPU per level change vs trade CPU per trade: 1.40x (target <= 1.5x: met)"
    assert lines[3:] == [
        ratio,
        "book generator vs engine: 3.1x (target >= 3x: met)",
        "book generator during the book run: 42% of one core "
        "(near 100%: it, not the engine, set the rate)",
    ]
    assert ratio in report(results).splitlines()
    results["book"] = _book(6.4)
    assert book_report(results)[3] == (
        "book CPU per level change vs trade CPU per trade: 1.60x (target <= 1.5x: NOT met)"
    )


def test_the_ratio_needs_the_zst_row_of_the_same_run() -> None:
    lines = book_report({"book": _book(5.0)})
    assert len(lines) == 3 and not any("vs trade" in line for line in lines)
    assert book_report({"zst": {"cpu_us_per_trade": 4.0}}) == []


async def test_the_bare_loop_reads_books_made_on_demand() -> None:
    """The ``book-generator`` row's reader against a fake at ``--book-rate max``: depth updates
    keep coming with no clock moving (the clock is read every 1024 frames)."""
    fx = FakeExchange("binance", rate=None, symbols=["BTCUSDT", "ETHUSDT"], book_rate=None)
    async with fx:
        url = fx.url + "/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms"
        result = await bare_recv.receive(url, 0.05, "aiohttp")
    messages = result["messages"]
    assert isinstance(messages, int) and messages >= 1024 and messages % 1024 == 0
    assert fx.ledger.books.changes >= messages  # each update sets at least one level
