"""``compact`` over order books (batch/compact_book.py): book objects written by the project's
own windowing (``sinks.windowing.Windower``, dataset ``book``), each beginning with a snapshot as
the stream's sink writes them, stored in a ``file://`` directory with run manifests; the job run
in-process. The Parquet rows must equal the objects' rows, and every top-N snapshot must equal
an independent rebuild (a dict per side applied row by row) at its instant."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import random
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.compact_book import (
    SymbolDay,
    book_source,
    is_book_key,
    parse_book_records,
    plan_book_objects,
    snapshot_schema,
)
from batch.compact_job import CompactParameters
from batch.compact_plan import DayRange, plan_objects
from engine.book_records import BookLevel
from engine.clock import FakeClock
from engine.errors import ConfigError
from engine.records import Trade
from engine.settings import Env
from engine.timefmt import parse_us
from feedvault.batch_run import run_batch
from sinks.encoders import decode_body
from sinks.keys import KeyTemplate
from sinks.manifest import BookResync, Manifest, StoredObjectEntry, iso_utc
from sinks.windowing import ClosedWindow, Windower, WindowPolicy
from sinks.writer import ListedObject, StoredObject, sha256_hex
from tests.conftest import S3Server
from tests.harness import (
    FEEDVAULT,
    base_env,
    fake_exchange,
    fake_stream_env,
    read_manifest,
    run_stream,
)

NS = 1_000_000_000
DAY = dt.date(2026, 3, 1)
DAY_NUMBER = (DAY - dt.date(1970, 1, 1)).days
D0 = DAY_NUMBER * 86_400 * NS
LEVELS = 4
INTERVAL = 0.5
ENV = {"LOG_FORMAT": "json", "STATS_INTERVAL_SECONDS": "60"}


# -- the independent rebuild ----------------------------------------------------------------


class DictBook:
    """The rebuild rule written out again: a snapshot row after a delta row, or after a
    snapshot row of another message (seq, ts_recv), empties the book; every row sets its level
    (size zero removes it). Levels keyed by decimal value."""

    def __init__(self) -> None:
        self.sides: dict[str, dict[Decimal, tuple[str, str]]] = {"bid": {}, "ask": {}}
        self.last: dict[str, Any] | None = None

    def apply(self, row: dict[str, Any]) -> None:
        last = self.last
        if row["snapshot"] and (
            last is None
            or not last["snapshot"]
            or (last["seq"], last["ts_recv"]) != (row["seq"], row["ts_recv"])
        ):
            self.sides = {"bid": {}, "ask": {}}
        levels = self.sides[row["side"]]
        if Decimal(row["size"]) == 0:
            levels.pop(Decimal(row["price"]), None)
        else:
            levels[Decimal(row["price"])] = (row["price"], row["size"])
        self.last = row

    def top(self, side: str, n: int) -> list[tuple[str, str]]:
        levels = self.sides[side]
        return [levels[k] for k in sorted(levels, reverse=side == "bid")[:n]]


# -- writing book objects as the stream's sink does -----------------------------------------


@dataclass
class Market:
    """One symbol's messages: a snapshot, or 1-4 level changes near ``mid``."""

    exchange: str
    symbol: str
    rng: random.Random
    sequenced: bool = True
    seq: int = 1000

    def _row(self, ts: int, snapshot: bool, side: str, price: str, size: str) -> BookLevel:
        seq = str(self.seq) if self.sequenced else None
        raw = self.symbol.replace("-", "")
        return BookLevel(
            self.exchange, self.symbol, raw, ts // 1000 - 3, ts, seq, snapshot, side, price, size
        )

    def _size(self) -> str:
        return f"{self.rng.randint(1, 900) / 1000:.3f}"

    def snapshot(self, ts: int, mid: int) -> list[BookLevel]:
        self.seq += 1
        return [
            self._row(ts, True, side, f"{mid + sign * (k + 1)}.{self.rng.randint(0, 9)}0", size)
            for side, sign in (("bid", -1), ("ask", 1))
            for k in range(12)
            for size in [self._size()]
        ]

    def delta(self, ts: int, mid: int) -> list[BookLevel]:
        self.seq += self.rng.randint(1, 3)
        rows = []
        for _ in range(self.rng.randint(1, 4)):
            side = self.rng.choice(("bid", "ask"))
            sign = -1 if side == "bid" else 1
            price = f"{mid + sign * self.rng.randint(1, 14)}.{self.rng.randint(0, 9)}0"
            size = "0" if self.rng.random() < 0.3 else self._size()
            rows.append(self._row(ts, False, side, price, size))
        return rows


class Recorder:
    """One run as the stream's sink writes it: a book Windower (which opens every window of a
    symbol with the book as written so far) and a trade Windower."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = root
        self.run_id = run_id
        self.clock = FakeClock(D0)
        common: dict[str, Any] = {
            "prefix": "",
            "run_id": run_id,
            "format": "ndjson.gz",
            "clock": self.clock,
        }
        policy = WindowPolicy(seconds=60)
        self.books = Windower(policy, KeyTemplate(), dataset="book", trade_ids=False, **common)
        self.trades = Windower(policy, KeyTemplate(), **common)
        self.closed: list[ClosedWindow] = []
        self.resyncs: dict[str, list[BookResync]] = {}

    def message(self, rows: list[BookLevel]) -> None:
        self.clock.set_wall(rows[0].ts_recv)
        self.closed += self.books.add(rows)

    def trade(self, trade: Trade) -> None:
        self.clock.set_wall(trade.ts_recv)
        self.closed += self.trades.add([trade])

    def close(self) -> list[ClosedWindow]:
        """Close every window and store the objects under ``root``."""
        self.closed += self.books.close_all() + self.trades.close_all()
        for window in self.closed:
            path = self.root / window.key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(window.body)
        return self.closed

    def write_manifest(self) -> None:
        entries = [
            StoredObjectEntry.of(w, StoredObject(w.key, len(w.body), sha256_hex(w.body)))
            for w in self.closed
        ]
        manifest = Manifest(
            run_id=self.run_id,
            version="test",
            command="feedvault stream",
            started_at="2026-02-28T23:58:00.000000Z",
            stopped_at="2026-03-01T00:10:00.000000Z",
            stop_reason="end",
            status="complete",
            objects=entries,
            resyncs=self.resyncs,
        )
        path = self.root / "_manifests" / f"{self.run_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(manifest.to_json())


def record(
    recorder: Recorder,
    market: Market,
    start: int,
    stop: int,
    *,
    step_ms: tuple[int, int] = (40, 400),
    resync_at: int | None = None,
) -> None:
    """``market``'s messages from ``start`` to ``stop`` (ns) into ``recorder``: a snapshot
    first, then deltas. The first message at or after ``resync_at`` breaks the book: nothing
    is written for 1.5 s, then a new snapshot, and the resync goes in the run's manifest."""
    rng = market.rng
    mid = 50_000
    ts = start
    recorder.message(market.snapshot(ts, mid))
    while True:
        ts += rng.randint(*step_ms) * 1_000_000
        if ts >= stop:
            return
        mid += rng.randint(-1, 1)
        if resync_at is not None and ts >= resync_at:
            resync_at = None
            broke = ts
            ts += 1_500_000_000
            recorder.message(market.snapshot(ts, mid + 40))
            stream = f"{market.exchange}:{market.symbol.replace('-', '')}:book"
            recorder.resyncs.setdefault(stream, []).append(
                BookResync(
                    at=iso_utc(broke),
                    cause="sequence",
                    from_seq=None,
                    to_seq=str(market.seq),
                    done=iso_utc(ts),
                    superseded=0,
                    detail="",
                )
            )
        else:
            recorder.message(market.delta(ts, mid))


def at(minutes: float) -> int:
    """``minutes`` after midnight of DAY, in ns."""
    return D0 + round(minutes * 60 * NS)


# -- the end-to-end scenario ----------------------------------------------------------------


@dataclass
class Scenario:
    src: Path
    a: list[ClosedWindow]
    b: list[ClosedWindow]
    c: list[ClosedWindow]
    resync: tuple[int, int]
    """Run A's BTC-USDT resync: from the break to its snapshot (ns)."""


def build(src: Path) -> Scenario:
    """Run A (manifest) records BTC-USDT from the day before to 00:04:30 with a resync at
    00:02:10, ETH-USD (no sequence) and three trades; run B (no manifest: killed) records
    BTC-USDT 00:06:20-00:09:42; run C (manifest) overlaps B in the 00:07 window with fewer
    messages."""
    a = Recorder(src, "20260228T235800Z-aaaa")
    record(
        a, Market("binance", "BTC-USDT", random.Random(1)), at(-1.5), at(4.5), resync_at=at(2.17)
    )
    record(a, Market("coinbase", "ETH-USD", random.Random(2), sequenced=False), at(0.3), at(3.2))
    for n, minute in enumerate((1.0, 1.1, 2.0), start=1):
        ts = at(minute)
        a.trade(
            Trade("binance", "BTC-USDT", "BTCUSDT", str(n), "50000.1", "0.5", "buy", ts // 1000, ts)
        )
    b = Recorder(src, "20260301T000620Z-bbbb")
    record(b, Market("binance", "BTC-USDT", random.Random(3)), at(6.33), at(9.7))
    c = Recorder(src, "20260301T000700Z-cccc")
    record(
        c, Market("binance", "BTC-USDT", random.Random(4)), at(7.1), at(7.8), step_ms=(1500, 2500)
    )
    (resync,) = a.resyncs["binance:BTCUSDT:book"]
    span = (parse_us(resync["at"]) * 1000, parse_us(resync["done"] or "") * 1000)
    scenario = Scenario(src, a.close(), b.close(), c.close(), span)
    a.write_manifest()
    c.write_manifest()
    return scenario


def book_windows(windows: list[ClosedWindow], symbol: str) -> list[ClosedWindow]:
    """``windows``' book objects of ``symbol`` on DAY, in window order."""
    chosen = [
        w
        for w in windows
        if w.key.startswith("book/")
        and f"/symbol={symbol}/" in w.key
        and D0 <= w.window_start_ns < D0 + 86_400 * NS
    ]
    return sorted(chosen, key=lambda w: (w.window_start_ns, w.key))


def rows_of(windows: list[ClosedWindow]) -> list[dict[str, Any]]:
    return [row for w in windows for row in decode_body(w.body, "ndjson.gz")]


def expected_snapshots(
    segments: list[list[dict[str, Any]]],
    levels: int,
    step: int,
    resyncs: Sequence[tuple[int, int]] = (),
) -> list[dict[str, Any]]:
    """At every instant from a segment's first row (a snapshot) to its last row, except
    during ``resyncs`` (``[at, done)``): the book of the segment's rows received at or before
    it, rebuilt by :class:`DictBook`."""
    out: list[dict[str, Any]] = []
    for rows in segments:
        assert rows[0]["snapshot"]
        book = DictBook()
        applied = 0
        instant = -(-rows[0]["ts_recv"] // step) * step
        while instant <= rows[-1]["ts_recv"]:
            while applied < len(rows) and rows[applied]["ts_recv"] <= instant:
                book.apply(rows[applied])
                applied += 1
            last = book.last
            assert last is not None
            if any(low <= instant < high for low, high in resyncs):
                instant += step
                continue
            doc: dict[str, Any] = {
                "exchange": last["exchange"],
                "symbol": last["symbol"],
                "ts": instant,
                "last_ts_event": last["ts_event"],
                "last_ts_recv": last["ts_recv"],
                "last_seq": last["seq"],
                "bid_levels": len(book.sides["bid"]),
                "ask_levels": len(book.sides["ask"]),
            }
            tops = {side: book.top(side, levels) for side in ("bid", "ask")}
            for i in range(levels):
                for side in ("bid", "ask"):
                    level = tops[side][i] if i < len(tops[side]) else None
                    doc[f"{side}_price_{i}"] = None if level is None else float(level[0])
                    doc[f"{side}_size_{i}"] = None if level is None else float(level[1])
            out.append(doc)
            instant += step
    return out


def read_parquet(path: Path, key: str | None = None) -> list[dict[str, Any]]:
    """The rows of a Parquet file, timestamps as integers (ns ones fit no datetime), with the
    exchange and symbol of its key (``key``, else the path): the file does not hold them."""
    table = pq.read_table(io.BytesIO(path.read_bytes()))
    assert "exchange" not in table.column_names and "symbol" not in table.column_names
    for index, name in enumerate(table.column_names):
        if pa.types.is_timestamp(table.schema.field(name).type):
            table = table.set_column(index, name, table[name].cast(pa.int64()))
    segments = dict(s.split("=", 1) for s in (key or path.as_posix()).split("/") if "=" in s)
    partition = {name: segments[name] for name in ("exchange", "symbol")}
    return [{**partition, **row} for row in table.to_pylist()]


def compact(src: Path, out: Path, run_id: str = "compact-1", **extra: str) -> int:
    env = {
        **ENV,
        "COMPACT_FROM": DAY.isoformat(),
        "BOOK_SNAPSHOT_LEVELS": str(LEVELS),
        "BOOK_SNAPSHOT_INTERVAL": str(INTERVAL),
        "RUN_ID": run_id,
        **extra,
    }
    return run_batch("compact", env, f"file://{src}/", f"file://{out}/")


def test_compact_writes_the_days_book_rows_and_snapshots_that_match_a_rebuild(
    tmp_path: Path,
) -> None:
    scenario = build(tmp_path / "src")
    out = tmp_path / "out"
    assert compact(scenario.src, out) == 0
    root = out / "compact"
    partition = "exchange=binance/symbol=BTC-USDT/date=2026-03-01"

    # rows: every row of the kept objects, in window order (C's overlapping window skipped)
    a_rows = rows_of(book_windows(scenario.a, "BTC-USDT"))
    b_rows = rows_of(book_windows(scenario.b, "BTC-USDT"))
    got = read_parquet(root / "book" / partition / "book.parquet")
    assert got == a_rows + b_rows
    assert a_rows[0]["snapshot"] and a_rows[0]["ts_recv"] < D0  # restates the book at midnight
    assert all(rows_of([w])[0]["snapshot"] for w in book_windows(scenario.a, "BTC-USDT"))
    eth_rows = rows_of(book_windows(scenario.a, "ETH-USD"))
    eth_partition = "exchange=coinbase/symbol=ETH-USD/date=2026-03-01"
    assert read_parquet(root / "book" / eth_partition / "book.parquet") == eth_rows
    assert {row["seq"] for row in eth_rows} == {None}

    # snapshots: each instant against the independent rebuild; none while the book is unknown
    step = round(INTERVAL * NS)
    snapshots = read_parquet(root / "book_snapshots" / partition / "book_snapshots.parquet")
    resync = scenario.resync
    expected = expected_snapshots([a_rows, b_rows], LEVELS, step, [resync])
    assert len(snapshots) == len(expected) > 900
    assert snapshots[0]["ts"] == D0  # midnight: the book restated by the day's first object
    for got_row, want in zip(snapshots, expected, strict=True):
        assert got_row == want, want["ts"]
    assert not any(a_rows[-1]["ts_recv"] < s["ts"] < b_rows[0]["ts_recv"] for s in snapshots)
    assert not any(resync[0] <= s["ts"] < resync[1] for s in snapshots)
    assert resync[1] - resync[0] >= 1_500_000_000
    assert any(s["bid_levels"] > LEVELS for s in snapshots)  # the top N is a cut
    eth_snapshots = read_parquet(root / "book_snapshots" / eth_partition / "book_snapshots.parquet")
    assert eth_snapshots == expected_snapshots([eth_rows], LEVELS, step)

    # the report: the overlapping run skipped, the spans without a book
    report = json.loads((root / "reports/2026-03-01_2026-03-01/book.json").read_bytes())
    c_keys = [w.key for w in scenario.c if w.key.startswith("book/")]
    assert c_keys and report["skipped_overlapping"] == c_keys
    day = report["symbols"]["binance:BTC-USDT"]["2026-03-01"]
    assert day["rows"] == len(a_rows) + len(b_rows)
    assert day["snapshots"] == len(expected)
    assert day["runs"] == ["20260228T235800Z-aaaa", "20260301T000620Z-bbbb"]
    assert day["unknown_spans"] == 3  # the resync, between runs A and B, after B
    assert day["resyncs"] == 1
    assert day["unknown"][0] == {"from": iso_utc(resync[0]), "to": iso_utc(resync[1])}
    gap = day["unknown"][1]
    assert gap["from"] < gap["to"] and gap["from"].startswith("2026-03-01T00:04:")
    assert gap["to"].startswith("2026-03-01T00:06:")

    # trades beside books: book objects listed in a manifest are not read as trades
    assert len(read_parquet(root / "trades" / partition / "trades.parquet")) == 3
    rejected = (root / "reports/2026-03-01_2026-03-01/rejected.csv").read_text()
    assert rejected.count("\n") == 1
    manifest = json.loads((out / "_manifests" / "compact-1.json").read_bytes())
    assert manifest["status"] == "complete"
    assert manifest["config"]["parameters"]["book_snapshot_levels"] == LEVELS


def test_an_altered_book_object_fails_the_run_naming_it(tmp_path: Path) -> None:
    scenario = build(tmp_path / "src")
    key = book_windows(scenario.a, "ETH-USD")[0].key
    path = scenario.src / key
    path.write_bytes(path.read_bytes() + b"\x00")
    out = tmp_path / "out"
    assert compact(scenario.src, out) == 1
    manifest = json.loads((out / "_manifests" / "compact-1.json").read_bytes())
    assert f"object {key!r} does not match" in manifest["error"]
    assert not (out / "compact").exists()


def test_books_alone_are_compacted_and_zero_levels_write_no_snapshots(tmp_path: Path) -> None:
    src = tmp_path / "src"
    recorder = Recorder(src, "run-x")
    record(recorder, Market("bybit", "SOL-USDT", random.Random(9)), at(10), at(12.5))
    recorder.close()
    out = tmp_path / "out"
    assert compact(src, out, BOOK_SNAPSHOT_LEVELS="0") == 0
    keys = sorted(str(p.relative_to(out / "compact")) for p in (out / "compact").rglob("*.*"))
    assert keys == [
        "book/exchange=bybit/symbol=SOL-USDT/date=2026-03-01/book.parquet",
        "reports/2026-03-01_2026-03-01/book.json",
        "reports/2026-03-01_2026-03-01/gaps.json",
        "reports/2026-03-01_2026-03-01/gaps.md",
        "reports/2026-03-01_2026-03-01/rejected.csv",
    ]
    rows = read_parquet(out / "compact" / keys[0])
    assert rows == rows_of(sorted(recorder.closed, key=lambda w: w.window_start_ns))


# -- the pure parts -------------------------------------------------------------------------


def level(ts_s: float, snapshot: bool, side: str, price: str, size: str, seq: str) -> BookLevel:
    ts = D0 + round(ts_s * NS)
    return BookLevel("x", "A-B", "AB", ts // 1000, ts, seq, snapshot, side, price, size)


def test_snapshots_worked_by_hand() -> None:
    """Run r1 snapshots at 0.5 s and changes the book at 2.0 s and 3.5 s; run r2's object
    begins with a change at 5.2 s (book unknown: no snapshot before it) and snapshots at 6.0 s.
    Instants every second, two levels: 1, 2, 3 from r1 (2 includes the change at exactly 2.0),
    then 6 and 7 from r2; nothing after r2's last row at 7.3 s."""
    day = SymbolDay("x", "A-B", DAY_NUMBER, levels=2, interval_ns=NS)
    day.add(
        "r1",
        [
            level(0.5, True, "bid", "10", "1", "1"),
            level(0.5, True, "bid", "9.50", "2", "1"),
            level(0.5, True, "bid", "9", "3", "1"),
            level(0.5, True, "ask", "11", "4", "1"),
            level(2.0, False, "ask", "11.0", "0", "2"),
            level(2.0, False, "ask", "12", "5", "2"),
            level(3.5, False, "bid", "10.5", "6", "3"),
        ],
    )
    day.add(
        "r2",
        [
            level(5.2, False, "bid", "20", "1", "7"),
            level(6.0, True, "bid", "30", "1", "8"),
            level(6.0, True, "ask", "31", "2", "8"),
            level(7.3, False, "ask", "30.5", "3", "9"),
        ],
    )
    outputs = dict((key, body) for key, body, _ in day.finish())
    body = outputs["book_snapshots/exchange=x/symbol=A-B/date=2026-03-01/book_snapshots.parquet"]
    table = pq.read_table(io.BytesIO(body))
    seconds = [(t.value - D0) // NS for t in table["ts"]]
    assert seconds == [1, 2, 3, 6, 7]
    assert table["last_seq"].to_pylist() == ["1", "2", "2", "8", "8"]
    assert table["bid_price_0"].to_pylist() == [10.0, 10.0, 10.0, 30.0, 30.0]
    assert table["bid_price_1"].to_pylist() == [9.5, 9.5, 9.5, None, None]
    assert table["ask_price_0"].to_pylist() == [11.0, 12.0, 12.0, 31.0, 31.0]
    assert table["ask_size_0"].to_pylist() == [4.0, 5.0, 5.0, 2.0, 2.0]
    assert table["bid_levels"].to_pylist() == [3, 3, 3, 1, 1]
    assert table.schema == snapshot_schema(2)
    assert [(low - D0, high - D0) for low, high in day.unknown()] == [
        (0, NS // 2),
        (round(3.5 * NS) + 1, 6 * NS),
        (round(7.3 * NS) + 1, 86_400 * NS),
    ]
    rows = pq.read_table(
        io.BytesIO(outputs["book/exchange=x/symbol=A-B/date=2026-03-01/book.parquet"])
    )
    assert rows["price"].to_pylist()[:5] == ["10", "9.50", "9", "11", "11.0"]
    assert rows.num_rows == 11 and day.report()["books_started"] == 2


def test_the_plan_keeps_the_largest_run_of_each_window_and_reports_unplaced_keys() -> None:
    folder = "p/book/exchange=binance/symbol=BTC-USDT/date=2026-03-01"
    names = {
        "a1": f"{folder}/hour=00/20260301T000000Z-run-a-000001.ndjson.gz",
        "a2": f"{folder}/hour=00/20260301T000100Z-run-a-000002.ndjson.gz",
        "b2": f"{folder}/hour=00/20260301T000100Z-run-b-000000.ndjson.gz",
        "b3": f"{folder}/hour=00/20260301T000200Z-run-b-000001.ndjson.gz",
        "c3": f"{folder}/hour=00/20260301T000200Z-run-c-000000.ndjson.gz",
        "old": "p/book/exchange=binance/symbol=BTC-USDT/date=2026-02-28/hour=23/"
        "20260228T235900Z-run-a-000000.ndjson.gz",
        "odd": f"{folder}/hour=00/custom.ndjson.gz",
    }
    sizes = {"a1": 10, "a2": 50, "b2": 40, "b3": 30, "c3": 30, "old": 5, "odd": 5}
    entry = StoredObjectEntry(names["a2"], 3, 50, "0" * 64, 0, 0, {})
    listed_a = Manifest(
        run_id="run-a",
        version="t",
        command="feedvault stream",
        started_at="x",
        stopped_at="y",
        stop_reason="end",
        status="complete",
        objects=[entry],
    )
    listed = [ListedObject(names[n], size) for n, size in sizes.items()]
    plan = plan_book_objects("p/", [listed_a], listed, DAY_NUMBER, DAY_NUMBER)
    assert [s.key for s in plan.sources] == [names["a1"], names["a2"], names["b3"]]
    assert [s.key for s in plan.skipped] == [names["b2"], names["c3"]]
    assert plan.unplaced == [names["odd"]]
    assert plan.sources[1].entry == entry and plan.sources[1].run_id == "run-a"
    assert plan.sources[2].entry is None and plan.sources[2].run_id == "run-b"
    source = book_source("p/", names["a1"], 1, None, None)
    assert source is not None
    assert (source.stream, source.window, source.seq) == (
        "book/exchange=binance/symbol=BTC-USDT",
        "20260301T000000Z",
        1,
    )
    # the trade plan does not take book objects a manifest lists, whatever the key template
    custom = "p/x/book/binance/BTC-USDT/20260301T000000Z-run-a-000003.ndjson.gz"
    listed_a.objects.append(StoredObjectEntry(custom, 3, 50, "0" * 64, 0, 0, {}))
    trade_plan = plan_objects("p/", [listed_a], [], DayRange(DAY_NUMBER, DAY_NUMBER))
    assert trade_plan == []
    assert is_book_key("p/", custom) and not is_book_key("p/", "p/trades/symbol=book/book.gz")
    again = plan_book_objects("p/", [listed_a], [], DAY_NUMBER, DAY_NUMBER)
    assert [s.key for s in again.sources] == [names["a2"], custom]


def test_each_bad_book_row_is_rejected_with_its_line() -> None:
    good = level(1, False, "bid", "1.5", "0", "1").__dict__
    records = [
        good,
        {**good, "side": "buy"},
        {**good, "price": "abc"},
        {**good, "size": "-1"},
        {k: v for k, v in good.items() if k != "seq"},
        {**good, "snapshot": "yes"},
        {**good, "symbol": "A/B"},  # the key would say A_B
        {**good, "exchange": ".."},
    ]
    rows, rejected = parse_book_records("obj", records)
    assert [r.__dict__ for r in rows] == [good]
    assert [(r.row_number, r.kind) for r in rejected] == [
        (2, "bad-book-row"),
        (3, "bad-decimal"),
        (4, "bad-decimal"),
        (5, "bad-book-row"),
        (6, "bad-book-row"),
        (7, "bad-partition-value"),
        (8, "bad-partition-value"),
    ]
    assert "'A/B'" in rejected[5].reason


def test_snapshot_settings_from_env() -> None:
    base = {"COMPACT_FROM": "2026-03-01"}
    params = CompactParameters.from_env(Env(base))
    assert (params.snapshot_levels, params.snapshot_interval, params.interval_ns) == (25, 1.0, NS)
    params = CompactParameters.from_env(
        Env({**base, "BOOK_SNAPSHOT_LEVELS": "0", "BOOK_SNAPSHOT_INTERVAL": "0.25"})
    )
    assert (params.snapshot_levels, params.interval_ns) == (0, NS // 4)
    assert (
        CompactParameters.from_env(Env({**base, "BOOK_SNAPSHOT_INTERVAL": "60"})).interval_ns
        == 60 * NS
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BOOK_SNAPSHOT_LEVELS", "-1"),
        ("BOOK_SNAPSHOT_LEVELS", "1001"),
        ("BOOK_SNAPSHOT_LEVELS", "2.5"),
        ("BOOK_SNAPSHOT_INTERVAL", "0"),
        ("BOOK_SNAPSHOT_INTERVAL", "0.0005"),
        ("BOOK_SNAPSHOT_INTERVAL", "7"),
        ("BOOK_SNAPSHOT_INTERVAL", "1s"),
        ("BOOK_SNAPSHOT_INTERVAL", "172800"),
    ],
)
def test_bad_snapshot_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        CompactParameters.from_env(Env({"COMPACT_FROM": "2026-03-01", name: value}))
    assert info.value.variable == name


def test_a_resync_in_the_manifest_blanks_the_book_until_its_snapshot() -> None:
    """The manifest says the book broke at 2.5 s. Instants 1 and 2 come before it; a snapshot
    at 3.0 s that restates the book before the break (same seq and ts_recv as the last row)
    does not end the resync; the fresh snapshot at 4.2 s does: instants 5 and 6 follow."""
    day = SymbolDay("x", "A-B", DAY_NUMBER, levels=1, interval_ns=NS)
    before = [
        level(0.5, True, "bid", "10", "1", "1"),
        level(0.5, True, "ask", "11", "1", "1"),
        level(2.0, False, "bid", "10", "2", "2"),
    ]
    day.add("r", before, [D0 + round(2.5 * NS), D0 - NS])  # a break of the day before: ignored
    restated = [
        level(2.0, True, "bid", "10", "2", "2"),
        level(2.0, True, "ask", "11", "1", "2"),
    ]
    fresh = [
        level(4.2, True, "bid", "20", "1", "9"),
        level(4.2, True, "ask", "21", "1", "9"),
        level(6.1, False, "bid", "20", "3", "10"),
    ]
    day.add("r", restated + fresh)
    body = dict((key, body) for key, body, _ in day.finish())[
        "book_snapshots/exchange=x/symbol=A-B/date=2026-03-01/book_snapshots.parquet"
    ]
    table = pq.read_table(io.BytesIO(body))
    assert [(t.value - D0) // NS for t in table["ts"]] == [1, 2, 5, 6]
    assert table["bid_price_0"].to_pylist() == [10.0, 10.0, 20.0, 20.0]
    assert table["bid_size_0"].to_pylist() == [1.0, 2.0, 1.0, 1.0]
    assert day.report()["resyncs"] == 1
    assert [(low - D0, high - D0) for low, high in day.unknown()][:2] == [
        (0, NS // 2),
        (round(2.5 * NS), round(4.2 * NS)),
    ]


# -- over a real stream run -----------------------------------------------------------------


def resync_spans(rows: list[dict[str, Any]], breaks: list[int]) -> list[tuple[int, int]]:
    """Each break to the first row at or after it that starts a book and does not restate the
    previous row's message (the snapshot that ended the resync), found in the rows."""
    spans = []
    for at in breaks:
        for previous, row in itertools.pairwise(rows):
            new_message = (previous["seq"], previous["ts_recv"]) != (row["seq"], row["ts_recv"])
            if row["ts_recv"] >= at and row["snapshot"] and new_message:
                spans.append((at, row["ts_recv"]))
                break
    return spans


def test_compact_over_a_real_stream_run_with_books_and_a_resync(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """``feedvault stream`` with ``CHANNELS=trades,book`` against the fake exchange, one book
    update of each symbol lost (a resync), then ``feedvault batch compact`` as an ECS task
    would run it: the book rows are the objects' rows and the snapshots the rebuild's."""
    prefix = "streaming/books/"
    with fake_exchange(
        tmp_path, rate="300", symbols="BTCUSDT,ETHUSDT", faults="book-gap=once@20"
    ) as fx:
        env = fake_stream_env(
            s3_server.env(),
            fx.url,
            bucket,
            prefix,
            "5",
            CHANNELS="trades,book",
            BINANCE_REST_URL=f"http://127.0.0.1:{fx.port}",
        )
        done = run_stream(env)
        fx.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    stream_manifest = read_manifest(s3_server.client(), bucket, prefix)
    assert stream_manifest["status"] == "complete"
    resyncs = stream_manifest.get("resyncs", {})
    assert set(resyncs) == {"binance:BTCUSDT:book", "binance:ETHUSDT:book"}, resyncs

    env = base_env(
        INPUT_BUCKET=bucket,
        INPUT_PREFIX=prefix,
        OUTPUT_BUCKET=bucket,
        OUTPUT_PREFIX="batch/",
        RUN_ID="compact-books",
        COMPACT_FROM="yesterday",
        COMPACT_TO="today",
        BOOK_SNAPSHOT_LEVELS="3",
        BOOK_SNAPSHOT_INTERVAL="0.1",
        **s3_server.env(),
    )
    result = subprocess.run(
        [*FEEDVAULT, "batch", "compact"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]

    client = s3_server.client()

    def body(key: str) -> bytes:
        data: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    def table(key: str) -> list[dict[str, Any]]:
        path = tmp_path / "t.parquet"
        path.write_bytes(body(key))
        return read_parquet(path, key)

    outputs = s3_server.keys(bucket, "batch/compact/")
    for raw, symbol in (("BTCUSDT", "BTC-USDT"), ("ETHUSDT", "ETH-USDT")):
        objects = sorted(s3_server.keys(bucket, f"{prefix}book/exchange=binance/symbol={symbol}/"))
        by_day: dict[str, list[dict[str, Any]]] = {}
        for key in objects:
            date = key.split("/date=")[1][:10]
            by_day.setdefault(date, []).extend(decode_body(body(key), "ndjson.gz"))
        breaks = [parse_us(r["at"]) * 1000 for r in resyncs[f"binance:{raw}:book"]]
        for date, rows in by_day.items():
            partition = f"exchange=binance/symbol={symbol}/date={date}"
            assert table(f"batch/compact/book/{partition}/book.parquet") == rows
            snapshots = table(f"batch/compact/book_snapshots/{partition}/book_snapshots.parquet")
            expected = expected_snapshots([rows], 3, NS // 10, resync_spans(rows, breaks))
            assert snapshots == expected and len(snapshots) > 10
        assert len(by_day) >= 1 and all(
            f"batch/compact/book/exchange=binance/symbol={symbol}/date={d}/book.parquet" in outputs
            for d in by_day
        )
    report = json.loads(body(next(k for k in outputs if k.endswith("/book.json"))))
    assert sum(day["resyncs"] for days in report["symbols"].values() for day in days.values()) == 2
