"""Every Parquet dataset the batch side writes reads with every reader of the dev extra
(docs: lake.md#reading-the-datasets): ``pyarrow.parquet.read_table(dir)``,
``pandas.read_parquet(dir)``, ``pyarrow.dataset`` with Hive partitioning (inferred and with an
explicit schema) and DuckDB's ``read_parquet('dir/**/*.parquet', hive_partitioning=true)``.

``compact`` runs once (in-process, local files) over objects written by the sink's own
:class:`~sinks.windowing.Windower`: three exchanges, two days, prices of very different decimal
scales (``27123.5`` and ``0.00001234``), trades and books. Each reader must return, for every
dataset, exactly the rows of the files with the partition values of their keys (one column
each, no error), and the exact decimals: ``0.00001234`` stays ``0.00001234`` in DuckDB too.
Then the e-commerce, weather and reconcile jobs' Parquet tables, each read as its folder."""

from __future__ import annotations

import collections
import datetime as dt
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from batch.samples import SAMPLERS
from engine.book_records import BookLevel
from engine.clock import FakeClock
from engine.records import Trade
from feedvault.batch_run import run_batch
from sinks.keys import KeyTemplate
from sinks.windowing import ClosedWindow, Windower, WindowPolicy
from tests.harness import damaged_parquet_page

NS: Final = 1_000_000_000
DAYS: Final = (dt.date(2026, 3, 1), dt.date(2026, 3, 2))
PARTITIONS: Final = ("exchange", "symbol", "date")
ENV: Final = {"LOG_FORMAT": "json", "STATS_INTERVAL_SECONDS": "60"}


@dataclass(frozen=True)
class Market:
    exchange: str
    symbol: str
    raw_symbol: str
    prices: tuple[str, ...]
    sizes: tuple[str, ...]
    books: bool


MARKETS: Final = (
    Market("binance", "BTC-USDT", "BTCUSDT", ("27123.5", "27124.25"), ("0.001", "1.5"), True),
    Market(
        "kraken", "SHIB-USD", "SHIB/USD", ("0.00001234", "0.00001235"), ("1250000", "99.5"), True
    ),
    Market("coinbase", "ETH-USD", "ETH-USD", ("2301.17", "2301.2"), ("0.00000001", "3"), False),
)
"""Price scales 1-2, 8 and 2; size scales 3, 0-1 and 8: one file alone would pick each."""


def day_ns(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * 86_400 * NS


def events(market: Market, day: dt.date) -> Iterator[Trade | list[BookLevel]]:
    """Trades every 20 s for 3 minutes from 00:01 and, with books, a snapshot at 00:01 then
    one level change every 30 s."""
    start = day_ns(day) + 60 * NS
    for n in range(9):
        ts = start + n * 20 * NS + len(market.exchange) * 1000
        trade_id = f"{(day.day * 100) + n}"
        price, size = market.prices[n % 2], market.sizes[n % 2]
        side = "buy" if n % 3 else "sell"
        yield Trade(
            market.exchange,
            market.symbol,
            market.raw_symbol,
            trade_id,
            price,
            size,
            side,
            ts // 1000,
            ts,
        )
    if not market.books:
        return
    low, high = market.prices

    def row(ts: int, seq: int, snapshot: bool, side: str, price: str, size: str) -> BookLevel:
        return BookLevel(
            market.exchange,
            market.symbol,
            market.raw_symbol,
            ts // 1000,
            ts,
            str(seq),
            snapshot,
            side,
            price,
            size,
        )

    yield [row(start + 1, 1, True, "bid", low, "5"), row(start + 1, 1, True, "ask", high, "7")]
    for n in range(1, 6):
        ts = start + n * 30 * NS + 1
        yield [row(ts, 1 + n, False, "bid", low, f"{n}.5" if n % 2 else "0")]


def write_stream(src: Path) -> dict[str, list[dict[str, Any]]]:
    """The markets' objects under ``src`` as one ``feedvault stream`` run (no manifest: a run
    killed before it, whose objects compact reads all the same); returns the trades and book
    rows written, per dataset, as NDJSON records."""
    clock = FakeClock(day_ns(DAYS[0]))
    common: dict[str, Any] = {"prefix": "", "run_id": "run-a", "format": "ndjson.gz"}
    policy = WindowPolicy(seconds=60)
    trades = Windower(policy, KeyTemplate(), clock=clock, **common)
    books = Windower(policy, KeyTemplate(), dataset="book", trade_ids=False, clock=clock, **common)
    timeline: list[tuple[int, Trade | list[BookLevel]]] = []
    for market in MARKETS:
        for day in DAYS:
            for event in events(market, day):
                ts = event[0].ts_recv if isinstance(event, list) else event.ts_recv
                timeline.append((ts, event))
    closed: list[ClosedWindow] = []
    written: dict[str, list[dict[str, Any]]] = {"trades": [], "book": []}
    for ts, event in sorted(timeline, key=lambda item: item[0]):
        clock.set_wall(ts)
        if isinstance(event, list):
            closed += books.add(event)
            written["book"] += [row.__dict__ for row in event]
        else:
            closed += trades.add([event])
            written["trades"].append(event.__dict__)
    for window in closed + trades.close_all() + books.close_all():
        path = src / window.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(window.body)
    return written


@dataclass(frozen=True)
class Compacted:
    root: Path
    written: dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def compacted(tmp_path_factory: pytest.TempPathFactory) -> Compacted:
    base = tmp_path_factory.mktemp("lake")
    written = write_stream(base / "src")
    env = {
        **ENV,
        "COMPACT_FROM": DAYS[0].isoformat(),
        "COMPACT_TO": DAYS[1].isoformat(),
        "BOOK_SNAPSHOT_LEVELS": "2",
        "BOOK_SNAPSHOT_INTERVAL": "60",
        "RUN_ID": "compact-1",
    }
    assert run_batch("compact", env, f"file://{base}/src/", f"file://{base}/out/") == 0
    return Compacted(base / "out" / "compact", written)


# -- one normal form of a row, whatever read it ---------------------------------------------

Row = tuple[tuple[str, Any], ...]


def arrow_rows(table: pa.Table) -> list[Row]:
    """``table``'s rows, timestamps as ns integers, partition values as text (dictionary or
    date), decimals as :class:`Decimal`, floats' NaN as None."""
    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        type_ = column.type
        if pa.types.is_timestamp(type_):
            column = column.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
        elif pa.types.is_dictionary(type_) or pa.types.is_date(type_):
            column = column.cast(pa.string())
        columns[name] = column
    return [normal(row) for row in pa.table(columns).to_pylist()]


def normal(row: dict[str, Any]) -> Row:
    out = []
    for name, value in row.items():
        if isinstance(value, float) and math.isnan(value):
            value = None
        elif isinstance(value, pd.Timestamp):
            value = value.value
        elif value is pd.NaT:
            value = None
        out.append((name, value))
    return tuple(sorted(out))


def pandas_rows(frame: pd.DataFrame) -> list[Row]:
    return [normal(row) for row in frame.to_dict("records")]


def file_rows(dataset: Path) -> collections.Counter[Row]:
    """The reference: each file read alone, plus the partition values of its path."""
    rows: collections.Counter[Row] = collections.Counter()
    for path in sorted(dataset.rglob("*.parquet")):
        table = pq.read_table(path)
        assert not set(PARTITIONS) & set(table.column_names), path
        parts = dict(p.split("=", 1) for p in path.relative_to(dataset).parts if "=" in p)
        rows.update(normal({**dict(r), **parts}) for r in arrow_rows(table))
    return rows


def read_pq(path: Path) -> pa.Table:
    return pq.read_table(path)


def read_pandas(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def read_dataset(path: Path) -> pa.Table:
    return ds.dataset(path, partitioning="hive").to_table()


HIVE_SCHEMA: Final = pa.schema(
    [("exchange", pa.string()), ("symbol", pa.string()), ("date", pa.date32())]
)


def read_dataset_typed(path: Path) -> pa.Table:
    partitioning = ds.partitioning(HIVE_SCHEMA, flavor="hive")
    return ds.dataset(path, partitioning=partitioning).to_table()


def read_duckdb(path: Path) -> pa.Table:
    with duckdb.connect(config={"autoinstall_known_extensions": False}) as con:
        glob = f"{path}/**/*.parquet"
        query = "SELECT * FROM read_parquet($glob, hive_partitioning = true)"
        table: pa.Table = con.sql(query, params={"glob": glob}).to_arrow_table()
        return table


READERS: Final[dict[str, Callable[[Path], Any]]] = {
    "pq.read_table": read_pq,
    "pandas.read_parquet": read_pandas,
    "ds.dataset(hive)": read_dataset,
    "ds.dataset(hive, schema)": read_dataset_typed,
    "duckdb": read_duckdb,
}
PARTITION_TYPES: Final = {
    "pq.read_table": "dictionary<values=string, indices=int32, ordered=0>",
    "pandas.read_parquet": "category",
    "ds.dataset(hive)": "string",
    "ds.dataset(hive, schema)": "string",
    "duckdb": "string",
}


def rows_of(reader: str, path: Path) -> tuple[list[str], list[Row]]:
    """The column names and normal rows ``reader`` returns for the dataset at ``path``."""
    got = READERS[reader](path)
    if isinstance(got, pd.DataFrame):
        return [str(name) for name in got.columns], pandas_rows(got)
    return list(got.column_names), arrow_rows(got)


# -- compact's datasets ---------------------------------------------------------------------

DATASETS: Final = ("trades", "bars_1m", "book", "book_snapshots")


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("dataset", DATASETS)
def test_each_reader_reads_each_compact_dataset_as_its_files_and_keys(
    compacted: Compacted, dataset: str, reader: str
) -> None:
    path = compacted.root / dataset
    expected = file_rows(path)
    assert sum(expected.values()) > 0
    names, rows = rows_of(reader, path)
    for name in PARTITIONS:
        assert names.count(name) == 1, (name, names)
    assert collections.Counter(rows) == expected


@pytest.mark.parametrize("reader", sorted(READERS))
def test_the_partition_columns_get_each_readers_documented_types(
    compacted: Compacted, reader: str
) -> None:
    got = READERS[reader](compacted.root / "trades")
    if isinstance(got, pd.DataFrame):
        types = {name: str(got[name].dtype) for name in PARTITIONS}
    else:
        types = {name: str(got.schema.field(name).type) for name in PARTITIONS}
    date_type = {
        "ds.dataset(hive, schema)": "date32[day]",
        "duckdb": "date32[day]",  # DuckDB DATE
    }.get(reader, PARTITION_TYPES[reader])
    assert types == {
        "exchange": PARTITION_TYPES[reader],
        "symbol": PARTITION_TYPES[reader],
        "date": date_type,
    }


def test_trades_are_the_written_ones_with_exact_decimals_in_every_reader(
    compacted: Compacted,
) -> None:
    expected = collections.Counter(
        (
            t["exchange"],
            t["symbol"],
            dt.datetime.fromtimestamp(t["ts_event"] / 1e6, dt.UTC).date().isoformat(),
            t["trade_id"],
            Decimal(t["price"]),
            Decimal(t["size"]),
            t["side"],
            t["ts_recv"],
        )
        for t in compacted.written["trades"]
    )
    assert len(expected) == len(MARKETS) * len(DAYS) * 9
    fields = ("exchange", "symbol", "date", "trade_id", "price", "size", "side", "ts_recv")
    for reader in READERS:
        _, rows = rows_of(reader, compacted.root / "trades")
        got = collections.Counter(tuple(dict(row)[name] for name in fields) for row in rows)
        assert got == expected, reader


def test_duckdb_keeps_the_smallest_and_largest_scales_exact(compacted: Compacted) -> None:
    """The second bug of docs/lake.md#reading-the-datasets: a scale chosen per file made
    DuckDB read every file with the first one's type (0.00001234 -> 0.00)."""
    with duckdb.connect(config={"autoinstall_known_extensions": False}) as con:
        glob = f"{compacted.root}/trades/**/*.parquet"
        types = dict(
            con.execute(
                "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                "read_parquet(?, hive_partitioning = true))",
                [glob],
            ).fetchall()
        )
        prices = con.execute(
            "SELECT symbol, min(price)::VARCHAR, max(price)::VARCHAR, sum(size)::VARCHAR "
            "FROM read_parquet(?, hive_partitioning = true) GROUP BY symbol ORDER BY symbol",
            [glob],
        ).fetchall()
        bars = con.execute(
            "SELECT min(open), max(vwap), sum(notional), count(*) FROM read_parquet(?, "
            "hive_partitioning = true) WHERE exchange = 'kraken' AND date = DATE '2026-03-02'",
            [f"{compacted.root}/bars_1m/**/*.parquet"],
        ).fetchone()
    assert types["price"] == "DECIMAL(38,12)" and types["size"] == "DECIMAL(38,12)"
    assert (types["exchange"], types["symbol"], types["date"]) == ("VARCHAR", "VARCHAR", "DATE")
    assert prices == [
        # per day 5 x 0.001 + 4 x 1.5; 5 x 0.00000001 + 4 x 3; 5 x 1250000 + 4 x 99.5
        ("BTC-USDT", "27123.500000000000", "27124.250000000000", "12.010000000000"),
        ("ETH-USD", "2301.170000000000", "2301.200000000000", "24.000000100000"),
        ("SHIB-USD", "0.000012340000", "0.000012350000", "12500796.000000000000"),
    ]
    assert bars is not None
    # 5 x 1250000 x 0.00001234 + 4 x 99.5 x 0.00001235 = 77.125 + 0.0049153
    assert bars[0] == Decimal("0.00001234") and bars[3] == 3
    assert bars[2] == Decimal("77.1299153")
    assert Decimal("0.00001234") <= bars[1] <= Decimal("0.00001235")


def test_book_rows_keep_the_exact_text_and_the_keys_their_partitions(
    compacted: Compacted,
) -> None:
    written = collections.Counter(
        (
            r["exchange"],
            r["symbol"],
            r["ts_recv"],
            r["side"],
            r["price"],
            r["size"],
            r["snapshot"],
        )
        for r in compacted.written["book"]
    )
    fields = ("exchange", "symbol", "ts_recv", "side", "price", "size", "snapshot")
    table = pq.read_table(compacted.root / "book")
    rows = arrow_rows(table)
    got = collections.Counter(tuple(dict(row)[name] for name in fields) for row in rows)
    # each day's first object restates the book: day 2 begins with the book of day 1's end
    assert set(got) >= set(written) and sum(got.values()) > sum(written.values())
    assert {"0.00001234", "27123.5"} <= {row[4] for row in got}


def test_a_typed_hive_partitioning_prunes_by_date(compacted: Compacted) -> None:
    partitioning = ds.partitioning(HIVE_SCHEMA, flavor="hive")
    dataset = ds.dataset(compacted.root / "bars_1m", partitioning=partitioning)
    day = dataset.to_table(filter=ds.field("date") == DAYS[1])
    assert day.num_rows > 0 and set(day["date"].to_pylist()) == {DAYS[1]}
    chosen = list(dataset.get_fragments(filter=ds.field("date") == DAYS[1]))
    assert len(chosen) == len(MARKETS)  # one file per symbol of that day, none of the other


# -- the batch jobs' tables -----------------------------------------------------------------

TABLES: Final = {
    "ecommerce": ("orders_kpis", "category_kpis"),
    "weather": ("observations", "daily", "anomalies"),
    "reconcile": ("details",),
}


@pytest.fixture(scope="module")
def batch_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("jobs")
    for job in TABLES:
        src = base / "in" / job
        for name, body in SAMPLERS[job](7).items():
            path = src / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        env = {**ENV, "RUN_ID": f"{job}-1"}
        assert run_batch(job, env, f"file://{src}/", f"file://{base}/out/") == 0
    return base / "out"


@pytest.mark.parametrize("reader", sorted(set(READERS) - {"ds.dataset(hive, schema)"}))
@pytest.mark.parametrize("job", sorted(TABLES))
def test_each_reader_reads_each_batch_table_as_its_folder(
    batch_out: Path, job: str, reader: str
) -> None:
    for table in TABLES[job]:
        folder = batch_out / job / table
        assert [p.name for p in folder.iterdir()] == [f"{table}.parquet"]
        assert (batch_out / job / f"{table}.jsonl").is_file()  # the JSON lines stay beside it
        alone = pq.read_table(folder / f"{table}.parquet")
        names, rows = rows_of(reader, folder)
        assert names == alone.column_names, (table, names)
        assert collections.Counter(rows) == collections.Counter(arrow_rows(alone))
        assert len(rows) > 0, table


def test_every_parquet_file_carries_page_checksums(compacted: Compacted, batch_out: Path) -> None:
    """Compact's and the batch jobs' files are written with page checksums (as the stream's
    are), so a reader that verifies them (``feedvault query``) refuses a damaged page that would
    otherwise decode to other values."""
    files = sorted(compacted.root.rglob("*.parquet")) + sorted(batch_out.rglob("*.parquet"))
    checked = 0
    for path in files:
        damaged = damaged_parquet_page(path.read_bytes())
        if damaged is None:
            continue  # no flip of this page decodes silently: nothing a checksum must catch
        with pytest.raises(OSError, match=r"CRC|checksum"):
            pq.ParquetFile(pa.BufferReader(damaged), page_checksum_verification=True).read()
        checked += 1
    assert checked >= len(files) // 2, (checked, len(files))
