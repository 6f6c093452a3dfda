"""``FORMAT=parquet`` end to end (docs: lake.md#formats): the fake exchange (the same seed, the
same clock, 500 trades) -> a ``feedvault stream`` run with ``CHANNELS=trades,book`` -> moto's S3
server, once with ``FORMAT=parquet`` and once with ``FORMAT=ndjson.gz``, with a
``WINDOW_MAX_BYTES`` small enough that Parquet objects have several row groups.

The Parquet run verifies (trades and the book rules alike), its trades equal the NDJSON run's
field for field, and its objects, downloaded as they are, read as one dataset per directory with
``pyarrow.parquet.read_table``, ``pandas.read_parquet``, ``pyarrow.dataset`` (Hive partitioning)
and DuckDB (``hive_partitioning=true``), with the partition columns from the path only.

The runs are in process, on a :class:`FakeClock`: each tenth of a second of market time is
generated, sent and received before the clock moves on, so both runs receive every trade at the
same ``ts_recv``.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from engine.records import Trade
from feedvault.config import load_stream_config
from feedvault.runner import StreamRun
from feedvault.testing import FakeClock, fake_exchange, stream_env
from sinks.encoders import make_encoder
from sinks.keys import KeyTemplate
from sinks.verify import verify_run
from sinks.windowing import Windower, WindowPolicy
from sinks.writer import open_writer, parse_destination
from tests.conftest import S3Server
from tests.harness import decode_object, until

START_NS = 1_765_000_000_000_000_000  # 2025-12-06T05:46:40Z
SYMBOLS = ["BTC-USDT", "ETH-USDT"]


async def stream(fmt: str, bucket: str, spill: Path) -> tuple[str, int]:
    """A run of ``FORMAT=fmt`` into ``s3://bucket/{fmt}/``: its prefix and trade count."""
    prefix = fmt.replace(".", "-") + "/"
    clock = FakeClock(START_NS)
    async with fake_exchange(
        "okx", symbols=SYMBOLS, rate=200, clock=clock, seed=16, book_rate=20, max_trades=500
    ) as fake:
        env = stream_env(
            fake,
            S3_BUCKET=bucket,
            S3_PREFIX=prefix,
            FORMAT=fmt,
            CHANNELS="trades,book",
            WINDOW_SECONDS="1",
            WINDOW_MAX_BYTES="40000",  # Parquet: row groups of 19 rows, several per object
            MAX_RUNTIME_SECONDS="60",
            SPILL_DIR=str(spill),
        )
        run = StreamRun(load_stream_config(env), clock=clock, install_signal_handlers=False)
        task = asyncio.create_task(run.run())
        await fake.wait_ready(2)  # the trades connection and the book connection are open,
        await until(lambda: all(s.frames for s in run.sessions))  # and their subscriptions answered
        sent = 0
        for _ in range(100):  # 2.5 s of market time make the 500 trades, received tick by tick
            clock.advance(0.1)
            await fake.wait_tick()
            sent = sum(1 for _ in fake.ledger.trades())
            await until(lambda: run.counters.parsed >= sent)  # noqa: B023
            if sent == 500:
                break
        run.controller.request_stop("signal")  # as SIGTERM does, the clock where it is
        async with asyncio.timeout(60):
            assert await task == 0
    return prefix, sent


def download(s3: S3Server, bucket: str, prefix: str, into: Path) -> dict[str, bytes]:
    """Every object under ``prefix``, written under ``into`` (its key less the prefix)."""
    client = s3.client()
    out: dict[str, bytes] = {}
    for key in s3.keys(bucket, prefix):
        body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        out[key] = body
        path = into / key[len(prefix) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return out


def by_trade(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: (r["symbol"], int(r["trade_id"])))


@pytest.mark.usefixtures("aws_env")
async def test_a_parquet_run_verifies_equals_the_ndjson_run_and_reads_everywhere(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    parquet_prefix, sent = await stream("parquet", bucket, tmp_path / "spill")
    ndjson_prefix, ndjson_sent = await stream("ndjson.gz", bucket, tmp_path / "spill")
    assert sent == ndjson_sent == 500

    async with open_writer(parse_destination(f"s3://{bucket}/{parquet_prefix}")) as writer:
        report = await verify_run(writer, parquet_prefix)
    assert report.ok, report.problems

    lake = tmp_path / "lake"
    objects = download(s3_server, bucket, parquet_prefix, lake)
    keys = [k for k in objects if "/_manifests/" not in f"/{k}"]
    assert keys and all(k.endswith(".parquet") for k in keys)
    assert {k[len(parquet_prefix) :].split("/")[0] for k in keys} == {"trades", "book"}
    ndjson = download(s3_server, bucket, ndjson_prefix, tmp_path / "ndjson")

    def records(stored: dict[str, bytes], dataset: str) -> list[dict[str, Any]]:
        return [
            r
            for key, body in stored.items()
            if f"/{dataset}/" in key
            for r in decode_object(body, key)
        ]

    groups = [pq.ParquetFile(lake / k[len(parquet_prefix) :]).num_row_groups for k in keys]
    assert max(groups) > 1  # what verify and the readers check spans row groups
    trades = by_trade(records(objects, "trades"))
    assert len(trades) == sent
    assert trades == by_trade(records(ndjson, "trades"))  # every field, ts_recv included
    rows = records(objects, "book")
    assert rows and {r["snapshot"] for r in rows} == {True, False}

    # The datasets as the readers see them: partition columns from the path, nothing to merge.
    per_symbol = Counter(t["symbol"] for t in trades)
    table = pq.read_table(lake / "trades")
    assert Counter(table.column("symbol").to_pylist()) == per_symbol
    assert sorted(table.column("trade_id").to_pylist()) == sorted(t["trade_id"] for t in trades)
    exact = [Decimal(text) for text in table.column("price_text").to_pylist()]
    assert table.column("price").to_pylist() == exact
    assert pq.read_table(lake / "book").num_rows == len(rows)

    frame = pd.read_parquet(lake / "trades")
    assert frame.groupby("symbol", observed=True).size().to_dict() == dict(per_symbol)
    assert str(frame["ts_recv"].dtype) == "datetime64[ns, UTC]"

    dataset = ds.dataset(lake / "trades", format="parquet", partitioning="hive")
    assert {"exchange", "symbol", "date", "hour"} <= set(dataset.schema.names)
    assert dataset.count_rows(filter=ds.field("symbol") == "ETH-USDT") == per_symbol["ETH-USDT"]

    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    got = con.execute(
        "SELECT exchange, symbol, count(*), sum(price), max(ts_recv) "
        f"FROM read_parquet('{lake}/trades/**/*.parquet', hive_partitioning=true) "
        "GROUP BY ALL ORDER BY symbol"
    ).fetchall()
    assert [(e, s, n) for e, s, n, _, _ in got] == [
        ("okx", s, per_symbol[s]) for s in sorted(per_symbol)
    ]
    assert [total for _, _, _, total, _ in got] == [
        sum(Decimal(t["price"]) for t in trades if t["symbol"] == s) for s in sorted(per_symbol)
    ]
    books = con.execute(
        f"SELECT count(*) FROM read_parquet('{lake}/book/**/*.parquet', hive_partitioning=true) "
        "WHERE symbol = 'BTC-USDT'"
    ).fetchone()
    assert books == (sum(1 for r in rows if r["symbol"] == "BTC-USDT"),)

    # A Parquet object short of its last trade, put back in place of the original: verify
    # counts its records and finds the manifest's last trade id missing, as with NDJSON.
    key = sorted(k for k in keys if "/trades/" in k)[0]
    kept = decode_object(objects[key], key)[:-1]
    symbol = kept[0]["symbol"]
    encoder = make_encoder("parquet", partition={"exchange": "okx", "symbol": symbol})
    encoder.write([Trade(**r) for r in kept])
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=encoder.finish())
    async with open_writer(parse_destination(f"s3://{bucket}/{parquet_prefix}")) as writer:
        problems = (await verify_run(writer, parquet_prefix)).problems
    assert any(
        f"{key}: holds {len(kept)} records, manifest says {len(kept) + 1}" in p for p in problems
    )
    assert any(f"{key}: first/last trade ids" in p for p in problems)


def test_compact_makes_the_same_outputs_from_a_parquet_run_as_from_an_ndjson_run(
    tmp_path: Path,
) -> None:
    """The same records, stored once as Parquet and once as ``ndjson.gz`` objects (the stream
    sink's windowers, a manifest), compacted by ``feedvault batch compact``: every output table
    is the same, row for row."""
    from tests.test_batch_compact_book import Market, Recorder, at, compact, record

    outputs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for fmt in ("ndjson.gz", "parquet"):
        recorder = Recorder(tmp_path / fmt / "src", "20260301T000000Z-aaaa")
        common: dict[str, Any] = {"prefix": "", "run_id": recorder.run_id, "format": fmt}
        common["clock"] = recorder.clock
        policy = WindowPolicy(seconds=60)
        recorder.books = Windower(policy, KeyTemplate(), dataset="book", trade_ids=False, **common)
        recorder.trades = Windower(policy, KeyTemplate(), **common)
        record(recorder, Market("binance", "BTC-USDT", random.Random(5)), at(0.5), at(2.5))
        for n in range(1, 200):
            ts = at(2.5) + n * 7_000_000
            price, size = f"{50_000 + n % 13}.{n % 100:02d}", f"0.{n:04d}"
            side = "buy" if n % 3 else "sell"
            recorder.trade(
                Trade("binance", "BTC-USDT", "BTCUSDT", str(n), price, size, side, ts // 1000, ts)
            )
        closed = recorder.close()
        assert all(w.key.endswith(fmt) for w in closed)
        recorder.write_manifest()
        out = tmp_path / fmt / "out"
        assert compact(recorder.root, out) == 0
        outputs[fmt] = {
            path.relative_to(out).as_posix(): pq.read_table(path).to_pylist()
            for path in sorted(out.rglob("*.parquet"))
        }
    assert outputs["parquet"] == outputs["ndjson.gz"]
    assert sorted(key.split("/")[1] for key in outputs["parquet"]) == [
        "bars_1m",
        "book",
        "book_snapshots",
        "trades",
    ]
