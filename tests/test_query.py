"""``feedvault query`` (docs: lake.md#feedvault-query): views over a destination's datasets.

The data is the compact job's seeded streaming prefix (:mod:`batch.compact_sample`: three runs,
duplicates, a conflicting copy, two bad records), with the objects no manifest lists rewritten
by the sink's own encoders as Parquet and ``ndjson.zst``, so one ``trades`` view reads the three
formats. Checked against the project's own decoder (counts per symbol) and the compact job's
own 1-minute bars, on ``file://`` and on a moto-hosted prefix; pruning by the objects fetched.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import io
import json
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from batch.compact_sample import FIRST_DAY, generate_compact
from engine.records import Trade
from feedvault.batch_run import run_batch
from feedvault.cli import main
from feedvault.query import Lake, QueryFailed, execute, open_lake, run, write_result
from sinks.encoders import decode_object, make_encoder
from sinks.manifest import Manifest
from tests.conftest import S3Server
from tests.harness import damaged_parquet_page

SEED = 3


@cache
def lake_files() -> tuple[dict[str, bytes], dict[str, int]]:
    """The sample prefix with its manifest-less objects as Parquet and ndjson.zst (the one
    with bad records stays gzip), and the distinct valid trades per ``exchange:symbol``."""
    files, expect = generate_compact(SEED)
    listed = {
        entry.key
        for key, body in files.items()
        if key.startswith("_manifests/")
        for entry in Manifest.from_json(body).objects
    }
    out: dict[str, bytes] = {}
    converted = 0
    for key, body in files.items():
        records = decode_object(key, body) if key.startswith("trades/") else []
        clean = all("side" in r and "e" not in str(r["price"]) for r in records)
        if key in listed or not records or not clean:
            out[key] = body
            continue
        fmt = "parquet" if converted % 2 == 0 else "ndjson.zst"
        partition = {"exchange": str(records[0]["exchange"]), "symbol": str(records[0]["symbol"])}
        encoder = make_encoder(fmt, dataset="trades", partition=partition)
        encoder.write([Trade.from_dict(r) for r in records])
        out[key.replace(".ndjson.gz", f".{fmt}")] = encoder.finish()
        converted += 1
    assert converted >= 4
    return out, dict(expect.trades)


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for key, body in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def decoded_counts(files: dict[str, bytes]) -> dict[tuple[str, str], int]:
    """Trades per (exchange, symbol) as the project's own decoder reads the objects."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for key, body in files.items():
        if key.startswith("trades/"):
            for record in decode_object(key, body):
                counts[(str(record["exchange"]), str(record["symbol"]))] += 1
    return dict(counts)


def rows(lake: Lake, sql: str) -> list[tuple[Any, ...]]:
    reader = execute(lake, sql)
    assert reader is not None
    return [tuple(row.values()) for row in reader.read_all().to_pylist()]


COUNTS = """
SELECT exchange, symbol, count(*),
       count(DISTINCT trade_id) FILTER (WHERE side IS NOT NULL AND price_text NOT ILIKE '%e%')
FROM trades GROUP BY ALL ORDER BY ALL
"""

#: compact's rules in SQL: valid trades, the first received copy of each id, ordered by
#: (ts_event, numeric id, text id, ts_recv) within the minute.
BARS = """
WITH valid AS (
  SELECT * FROM trades
  WHERE side IS NOT NULL AND price IS NOT NULL AND price_text NOT ILIKE '%e%'
  QUALIFY row_number() OVER (PARTITION BY exchange, symbol, trade_id ORDER BY ts_recv) = 1
)
SELECT exchange, symbol, date_trunc('minute', ts_event) AS minute,
  first(price ORDER BY ts_event, try_cast(trade_id AS HUGEINT) NULLS LAST, trade_id, ts_recv),
  max(price), min(price),
  last(price ORDER BY ts_event, try_cast(trade_id AS HUGEINT) NULLS LAST, trade_id, ts_recv),
  sum(size), count(*)
FROM valid GROUP BY ALL ORDER BY ALL
"""

COMPACT_BARS = """
SELECT exchange, symbol, minute, open, high, low, close, volume, trades
FROM bars_1m ORDER BY ALL
"""


def expected_counts() -> list[tuple[Any, ...]]:
    files, distinct = lake_files()
    decoded = decoded_counts(files)
    return [
        (exchange, symbol, decoded[(exchange, symbol)], distinct[f"{exchange}:{symbol}"])
        for exchange, symbol in sorted(decoded)
    ]


def test_counts_and_1_minute_bars_equal_the_decoder_and_the_compact_job(tmp_path: Path) -> None:
    files, _ = lake_files()
    src, out = tmp_path / "src", tmp_path / "out"
    write_tree(src, files)
    env = {
        "LOG_FORMAT": "json",
        "COMPACT_FROM": FIRST_DAY.isoformat(),
        "COMPACT_TO": (FIRST_DAY + dt.timedelta(days=1)).isoformat(),
        "RUN_ID": "compact-q",
    }
    assert run_batch("compact", env, f"file://{src}/", f"file://{out}/") == 0
    with open_lake(f"file://{src}/") as lake:
        assert {"trades", "manifests"} <= set(lake.views)
        assert rows(lake, COUNTS) == expected_counts()
        computed = rows(lake, BARS)
    with open_lake(f"file://{out}/") as compacted:
        assert compacted.views["bars_1m"] is compacted.views["compact_bars_1m"]
        assert "trades" in compacted.views, "compact's trades: the one dataset of that name"
        assert rows(compacted, COMPACT_BARS) == computed
        assert len(computed) > 1000
        # the batch run's manifest is a row; its JSON is there for any other field
        (manifest,) = rows(
            compacted, "SELECT run_id, status, manifest->>'$.command' FROM manifests"
        )
        assert manifest[:2] == ("compact-q", "complete")


def test_on_a_moto_prefix_counts_per_symbol_and_pruning_by_partition(
    s3_server: S3Server, bucket: str, aws_env: dict[str, str]
) -> None:
    files, _ = lake_files()
    client = s3_server.client()
    for key, body in files.items():
        client.put_object(Bucket=bucket, Key=f"lake/{key}", Body=body)
    url = f"s3://{bucket}/lake/"
    buffer = io.StringIO()
    assert run(url, COUNTS, "csv", out=buffer) == 0
    header, *lines = list(csv.reader(io.StringIO(buffer.getvalue())))
    assert header[:3] == ["exchange", "symbol", "count_star()"]
    assert [(e, s, int(n), int(d)) for e, s, n, d in lines] == expected_counts()

    partition = "trades/exchange=binance/symbol=ETH-USDT/date=2026-01-06/"
    wanted = sorted(f"lake/{key}" for key in files if key.startswith(partition))
    with open_lake(url) as lake:
        where = "WHERE exchange = 'binance' AND symbol = 'ETH-USDT' AND date = '2026-01-06'"
        (count,) = rows(lake, f"SELECT count(*) FROM trades {where}")
        assert sorted(lake.fetched) == wanted, "only that partition's objects were fetched"
        assert 0 < len(wanted) < len([k for k in files if k.startswith("trades/")]) / 4
        expected = sum(len(decode_object(key, files[key[len("lake/") :]])) for key in wanted)
        assert count == (expected,)
        plan = rows(lake, f"EXPLAIN SELECT count(*) FROM trades {where}")[0][1]
        assert "Filters:" in plan and "ETH-USDT" in plan


def test_both_record_formats_give_one_schema_and_exact_text(tmp_path: Path) -> None:
    files, _ = lake_files()
    write_tree(tmp_path, files)
    with open_lake(f"file://{tmp_path}/") as lake:
        types = {name: type_ for name, type_, *_ in rows(lake, "DESCRIBE trades")}
        assert types["price"] == types["size"] == "DECIMAL(38,18)"
        assert types["ts_event"] == "TIMESTAMP WITH TIME ZONE"
        assert types["ts_recv"] == "TIMESTAMPTZ_NS"
        assert (types["date"], types["hour"], types["symbol"]) == ("DATE", "INTEGER", "VARCHAR")
        by_format = rows(
            lake,
            "SELECT count(*) FILTER (WHERE price_text IS NULL OR price IS NULL "
            "OR price <> price_text::DECIMAL(38,18)) FROM trades WHERE price_text NOT ILIKE '%e%'",
        )
        assert by_format == [(0,)]
    key = next(k for k in files if k.endswith(".parquet"))
    record = decode_object(key, files[key])[0]
    with open_lake(f"file://{tmp_path}/") as lake:
        found = rows(
            lake,
            f"SELECT price_text, size_text, epoch_us(ts_event) FROM trades "
            f"WHERE trade_id = '{record['trade_id']}' AND symbol = '{record['symbol']}'",
        )
    assert (record["price"], record["size"], record["ts_event"]) in found


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    status = main(["query", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.splitlines()


def test_refusals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files, _ = lake_files()
    write_tree(tmp_path / "lake", files)
    url = f"file://{tmp_path}/lake/"
    status, _, err = cli(capsys, "ftp://host/dir/", "SELECT 1")
    assert status == 2 and len(err) == 1 and "must start with s3:// or file://" in err[0]
    status, _, err = cli(capsys, url, "SELECT * FROM bars_1m")
    assert status == 1
    assert err == [f"feedvault query: no dataset bars_1m under {url} (views: manifests, trades)"]
    status, _, err = cli(capsys, url, "SELEC 1")
    assert status == 1 and len(err) == 1 and "syntax error" in err[0]
    status, _, err = cli(capsys, url, "SELECT price / 0 FROM trades WHERE nope")
    assert status == 1 and len(err) == 1 and "nope" in err[0]
    bad = next(k for k in files if k.startswith("trades/exchange=bybit/") and k.endswith(".gz"))
    (tmp_path / "lake" / bad).write_bytes(b"not gzip")
    status, _, err = cli(capsys, url, "SELECT count(*) FROM trades WHERE exchange = 'bybit'")
    assert status == 1 and len(err) == 1 and f"{bad}: corrupt ndjson.gz data" in err[0]
    status, out, _ = cli(capsys, url, "SELECT count(*) FROM trades WHERE exchange = 'binance'")
    assert status == 0 and out.splitlines()[-1] == "(1 row)", "the other partitions still read"
    (tmp_path / "empty").mkdir()
    status, _, err = cli(capsys, f"file://{tmp_path}/empty/", "SELECT 1")
    assert (status, err) == (1, [f"feedvault query: no dataset under file://{tmp_path}/empty/"])


def test_nothing_is_downloaded_nor_read_outside_the_views(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every way to get an extension or reach a file or URL fails; DuckDB's own extension
    directory (under HOME) is never even created."""
    files, _ = lake_files()
    write_tree(tmp_path / "lake", files)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with open_lake(f"file://{tmp_path}/lake/") as lake:
        settings = rows(
            lake,
            "SELECT current_setting('autoinstall_known_extensions'), "
            "current_setting('autoload_known_extensions'), "
            "current_setting('enable_external_access'), current_setting('lock_configuration')",
        )
        assert settings == [(False, False, False, True)]
        for sql in (
            "INSTALL httpfs",
            "LOAD httpfs",
            "SET autoinstall_known_extensions = true",
            "SET enable_external_access = true",
            f"SELECT * FROM read_parquet('{tmp_path}/lake/**/*.parquet')",
            "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
            f"COPY (SELECT 1) TO '{tmp_path}/out.csv'",
        ):
            with pytest.raises(QueryFailed, match=r"disabled|locked"):
                execute(lake, sql)
        assert rows(lake, "SELECT count(*) FROM trades")[0][0] > 0
    assert not (tmp_path / "home").exists()
    assert not (tmp_path / "out.csv").exists()


VALUES = (
    "SELECT 1.50::DECIMAL(10, 2) AS d, 'a,b' AS s, NULL::INTEGER AS n, "
    "TIMESTAMPTZ '2026-01-05 00:00:00.5+00' AS t, 7 AS i FROM manifests LIMIT 1"
)


def test_output_formats(tmp_path: Path) -> None:
    files, _ = lake_files()
    write_tree(tmp_path, {k: v for k, v in files.items() if k.startswith("_manifests/")})
    outputs = {}
    for format in ("table", "csv", "json"):
        with open_lake(f"file://{tmp_path}/") as lake:
            buffer = io.StringIO()
            assert write_result(execute(lake, VALUES), format, buffer) == 1
            outputs[format] = buffer.getvalue()
    assert outputs["table"].splitlines() == [
        "  d  s       n  t                            i",
        "---  ---  ----  ---------------------------  -",
        "1.5  a,b  NULL  2026-01-05T00:00:00.500000Z  7",
        "(1 row)",
    ]
    assert outputs["csv"] == 'd,s,n,t,i\n1.5,"a,b",,2026-01-05T00:00:00.500000Z,7\n'
    assert json.loads(outputs["json"]) == {
        "d": "1.5",
        "s": "a,b",
        "n": None,
        "t": "2026-01-05T00:00:00.500000Z",
        "i": 7,
    }
    assert Decimal(json.loads(outputs["json"])["d"]) == Decimal("1.50")


def test_the_demo_ends_with_a_query_whose_counts_add_up_to_what_verify_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make demo``'s last step: ``feedvault query`` over the demo's bucket, trades per symbol;
    they add up to the trades the demo's verify counted."""
    from feedvault.demo import DEMO_QUERY, SYMBOLS, run_demo

    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "restored-after-the-test")  # run_demo sets them for itself
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, "us-east-1")
    assert run_demo(seconds=2, rate=100, output=str(tmp_path / "demo")) == 0
    out = capsys.readouterr().out.splitlines()
    verified = next(line for line in out if " trades, " in line and "trades/s" in line)
    trades = int(verified.split(" trades, ")[0].split(", ")[-1].replace(",", ""))
    start = out.index(f'feedvault query s3://feedvault-demo/streaming/demo/ "{DEMO_QUERY}"')
    header, _rule, *table = out[start + 1 :]
    assert header.split() == ["symbol", "trades", "low", "high", "volume"]
    assert table[-1] == f"({len(SYMBOLS)} rows)"
    counts = {line.split()[0]: int(line.split()[1]) for line in table[:-1]}
    assert sorted(counts) == ["BNB-USDT", "BTC-USDT", "ETH-USDT"]
    assert sum(counts.values()) == trades > 0


def test_without_the_lake_extra_the_command_names_it(tmp_path: Path) -> None:
    from tests.test_dependencies import feedvault_without

    done = feedvault_without("duckdb", "query", f"file://{tmp_path}/", "SELECT 1")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "feedvault query: configuration error: duckdb: is not installed; feedvault query needs "
        "it: pip install 'feedvault[lake]'"
    ]


def test_datasets_and_view_names_from_a_listing() -> None:
    """Dataset = the folder above the first Hive segment (or a batch table's folder); view =
    its path with ``_``, and its last segment when no other dataset has it. A file directly in
    a folder not named like it (the batch layout before the lake: ``{job}/{table}.parquet``)
    is a dataset of its own, named with its extension, never merged with ``{job}/{table}/``."""
    from feedvault.query_datasets import discover
    from sinks.writer import ListedObject

    keys = [
        "p/trades/exchange=binance/symbol=BTC-USDT/date=2026-01-05/hour=00/w-1.ndjson.gz",
        "p/trades/exchange=binance/symbol=BTC-USDT/date=2026-01-05/hour=01/w-2.parquet",
        "p/book/exchange=okx/symbol=BTC-USDT/date=2026-01-05/hour=00/w-1.ndjson.zst",
        "p/raw/exchange=binance/date=2026-01-05/hour=00/w-1.ndjson.zst",
        "p/_manifests/run-1.json",
        "p/_spill/x.parquet",
        "p/out/compact/trades/exchange=binance/symbol=BTC-USDT/date=2026-01-05/trades.parquet",
        "p/out/compact/bars_1m/exchange=binance/symbol=BTC-USDT/date=2026-01-05/bars.parquet",
        "p/out/compact/reports/2026-01-05_2026-01-05/gaps.json",
        "p/out/ecommerce/orders_kpis/orders_kpis.parquet",
        "p/out/ecommerce/orders_kpis.jsonl",
        "p/out/ecommerce/orders_kpis.parquet",
        "p/out/weather/daily.parquet",
        "p/out/_manifests/batch-1.json",
        "other/trades/exchange=binance/symbol=X/date=2026-01-05/hour=00/w.ndjson.gz",
    ]
    views = discover("p/", [ListedObject(key, 1) for key in keys])
    paths = {name: plan.path for name, plan in views.items()}
    assert paths == {
        "trades": "trades",
        "book": "book",
        "manifests": "_manifests",
        "out_compact_trades": "out/compact/trades",
        "out_compact_bars_1m": "out/compact/bars_1m",
        "bars_1m": "out/compact/bars_1m",
        "out_ecommerce_orders_kpis": "out/ecommerce/orders_kpis",
        "orders_kpis": "out/ecommerce/orders_kpis",
        "out_ecommerce_orders_kpis_parquet": "out/ecommerce/orders_kpis.parquet",
        "orders_kpis_parquet": "out/ecommerce/orders_kpis.parquet",
        "out_weather_daily_parquet": "out/weather/daily.parquet",
        "daily_parquet": "out/weather/daily.parquet",
        "out_manifests": "out/_manifests",
    }
    assert [o.format for o in views["trades"].objects] == ["ndjson.gz", "parquet"]
    assert views["trades"].kind == views["book"].kind == "stream"
    assert views["bars_1m"].kind == views["orders_kpis_parquet"].kind == "parquet"
    assert [o.key for o in views["orders_kpis"].objects] == [
        "p/out/ecommerce/orders_kpis/orders_kpis.parquet"
    ]
    assert str(views["trades"].partition_schema) == (
        "exchange: string\nsymbol: string\ndate: date32[day]\nhour: int32"
    )


def test_the_book_view_reads_ndjson_and_parquet_rows_alike(tmp_path: Path) -> None:
    from engine.book_records import BookLevel

    def level(n: int, seq: str | None) -> BookLevel:
        return BookLevel(
            "okx", "BTC-USDT", "BTC-USDT", 1_767_571_200_000_000 + n, 1_767_571_200_000_000_123,
            seq, n == 0, "bid" if n % 2 else "ask", f"43000.{n}", "0.0" if n == 3 else "1.25",
        )  # fmt: skip

    base = "book/exchange=okx/symbol=BTC-USDT/date=2026-01-05/hour=00/"
    partition = {"exchange": "okx", "symbol": "BTC-USDT"}
    for ext, levels in (
        ("ndjson.gz", [level(0, "7"), level(1, "8")]),
        ("parquet", [level(3, None)]),
    ):
        encoder = make_encoder(ext, dataset="book", partition=partition)
        encoder.write(levels)
        (tmp_path / base).mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{base}w-{ext}.{ext}").write_bytes(encoder.finish())
    with open_lake(f"file://{tmp_path}/") as lake:
        found = rows(
            lake,
            "SELECT seq, snapshot, side, price, price_text, size, epoch_us(ts_event), "
            "epoch_ns(ts_recv), exchange, hour FROM book ORDER BY ts_event",
        )
    assert found == [
        ("7", True, "ask", Decimal("43000.0"), "43000.0", Decimal("1.25"),
         1_767_571_200_000_000, 1_767_571_200_000_000_123, "okx", 0),
        ("8", False, "bid", Decimal("43000.1"), "43000.1", Decimal("1.25"),
         1_767_571_200_000_001, 1_767_571_200_000_000_123, "okx", 0),
        (None, False, "bid", Decimal("43000.3"), "43000.3", Decimal("0"),
         1_767_571_200_000_003, 1_767_571_200_000_000_123, "okx", 0),
    ]  # fmt: skip


def test_the_documented_first_queries_run(tmp_path: Path) -> None:
    """The SQL block of docs/lake.md#feedvault-query, as written (its day moved to the
    sample's), returns rows."""
    text = (Path(__file__).parents[1] / "docs" / "lake.md").read_text(encoding="utf-8")
    section = text.split("## feedvault query", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sql\n", 1)[1].split("```", 1)[0]
    statements = [s for s in block.split(";") if s.strip()]
    assert len(statements) == 2
    files, _ = lake_files()
    write_tree(tmp_path, files)
    with open_lake(f"file://{tmp_path}/") as lake:
        for statement in statements:
            found = rows(lake, statement.replace("2026-03-01", FIRST_DAY.isoformat()))
            assert len(found) > 5


def test_a_query_that_stops_early_exits_cleanly(tmp_path: Path) -> None:
    """A ``LIMIT`` leaves objects unread: the process still exits 0 (a scan reading ahead on
    threads of its own aborted the interpreter at exit), printing the rows."""
    import subprocess
    import sys

    from tests.harness import base_env

    files, _ = lake_files()
    write_tree(tmp_path, files)
    done = subprocess.run(
        [sys.executable, "-m", "feedvault", "query", f"file://{tmp_path}/",
         "SELECT trade_id FROM trades LIMIT 1", "--format", "csv"],
        env=base_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert len(done.stdout.splitlines()) == 2


DECIMALS = """
SELECT n, x::DECIMAL(38, 18) AS d18, y::DECIMAL(38, 12) AS d12 FROM (VALUES
  (1, '0.00000001', '-0.0000001'), (2, '0', '0'), (3, '0.000000000000000001', '-123.4500'),
  (4, '10000000000000000000', '99999999999999.999999999999'), (5, '-42.500', NULL),
  (6, NULL, '0.000001')) v(n, x, y) ORDER BY n
"""


def test_decimals_are_plain_and_exact_in_every_format(tmp_path: Path) -> None:
    """Below 1e-6 Arrow's text of a decimal is scientific (``1.0000000000E-8``, ``0E-18``):
    every format still writes the plain number, without trailing zeros."""
    files, _ = lake_files()
    write_tree(tmp_path, {k: v for k, v in files.items() if k.startswith("_manifests/")})
    expected = [
        ("1", "0.00000001", "-0.0000001"),
        ("2", "0", "0"),
        ("3", "0.000000000000000001", "-123.45"),
        ("4", "10000000000000000000", "99999999999999.999999999999"),
        ("5", "-42.5", None),
        ("6", None, "0.000001"),
    ]
    outputs = {}
    for format in ("table", "csv", "json"):
        with open_lake(f"file://{tmp_path}/") as lake:
            buffer = io.StringIO()
            assert write_result(execute(lake, DECIMALS), format, buffer) == len(expected)
            outputs[format] = buffer.getvalue()
    table = [line.split() for line in outputs["table"].splitlines()[2:-1]]
    assert table == [[c or "NULL" for c in row] for row in expected]
    assert list(csv.reader(io.StringIO(outputs["csv"])))[1:] == [
        [c or "" for c in row] for row in expected
    ]
    documents = [json.loads(line) for line in outputs["json"].splitlines()]
    assert [(str(d["n"]), d["d18"], d["d12"]) for d in documents] == expected
    for _, *texts in expected:  # exact: each text is the SQL literal's value
        for text in texts:
            assert text is None or "E" not in text


def test_a_damaged_parquet_page_that_still_decodes_fails_on_its_checksum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A byte flipped inside a data page of a stream Parquet object whose zstd frame still
    decompresses (to other trade ids) is an error naming the object, not wrong values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    trades = [
        Trade("binance", "BTC-USDT", "BTCUSDT", str(1000 + i), f"43000.{i}", "0.5",
              "buy" if i % 2 else "sell", 1_767_571_200_000_000 + i, 1_767_571_200_000_000_000 + i)
        for i in range(50)
    ]  # fmt: skip
    partition = {"exchange": "binance", "symbol": "BTC-USDT"}
    encoder = make_encoder("parquet", dataset="trades", partition=partition)
    encoder.write(trades)
    body = encoder.finish()
    damaged = damaged_parquet_page(body, "trade_id")
    assert damaged is not None, "no byte of the page decodes to other values"
    assert pq.read_table(pa.BufferReader(damaged)).column("trade_id").to_pylist() != [
        t.trade_id for t in trades
    ]
    key = "trades/exchange=binance/symbol=BTC-USDT/date=2026-01-05/hour=00/w-1.parquet"
    write_tree(tmp_path, {key: damaged})
    status, out, err = cli(capsys, f"file://{tmp_path}/", "SELECT trade_id FROM trades")
    assert (status, out, len(err)) == (1, "", 1)
    assert f"{key}: " in err[0] and "checksum" in err[0]


def test_no_thread_outlives_the_lake(tmp_path: Path) -> None:
    """``file://`` I/O runs on the I/O loop's default executor: its ``asyncio_N`` threads and
    the loop's own thread are joined before :func:`open_lake` returns. Threads merely told to
    stop end a moment later, once they get the GIL, which the long switch interval keeps with
    this thread until it blocks: they are seen in most of the ten rounds; joined ones never."""
    import sys
    import threading

    files, _ = lake_files()
    write_tree(tmp_path, {k: v for k, v in files.items() if k.startswith("_manifests/")})
    before = set(threading.enumerate())
    interval = sys.getswitchinterval()
    left: list[list[str]] = []
    try:
        for _ in range(10):
            with open_lake(f"file://{tmp_path}/") as lake:
                assert rows(lake, "SELECT count(*) > 0 FROM manifests") == [(True,)]
                assert any(t.name.startswith("asyncio_") for t in threading.enumerate())
                sys.setswitchinterval(30.0)
            left.append([t.name for t in threading.enumerate() if t not in before])
            sys.setswitchinterval(interval)
    finally:
        sys.setswitchinterval(interval)
    assert left == [[]] * 10


def compact_file(symbol: str, old: bool = False, scale: int = 12) -> bytes:
    """One day of compacted trades: the current layout (:data:`batch.compact.TRADES_SCHEMA`),
    or ``old`` (exchange/symbol inside the file) and/or another decimal ``scale``, as compact
    wrote them before the lake's fixed schemas."""
    import pyarrow as pa

    from batch.compact import TRADES_SCHEMA
    from batch.csvutil import parquet_bytes

    schema = TRADES_SCHEMA
    for name in ("price", "size"):
        index = schema.get_field_index(name)
        schema = schema.set(index, pa.field(name, pa.decimal128(38, scale)))
    rows = [
        {"raw_symbol": symbol.replace("-", ""), "trade_id": str(i), "price": Decimal(f"1{i}.5"),
         "size": Decimal("2"), "side": "buy", "ts_event": 1_767_571_200_000_000 + i,
         "ts_recv": 1_767_571_200_000_000_000 + i}
        for i in range(3)
    ]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=schema)
    if old:
        table = table.add_column(0, "symbol", pa.array([symbol] * 3))
        table = table.add_column(0, "exchange", pa.array(["binance"] * 3))
    return parquet_bytes(table)


def test_old_compact_files_in_a_dataset_fail_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A compact output written before the fixed schemas (exchange/symbol inside the file, a
    decimal scale of its own) fails the query with one line naming it and what to do; the
    current files still read where the filter prunes the old one away."""
    day = "date=2026-01-05/trades.parquet"
    current = f"compact/trades/exchange=binance/symbol=BTC-USDT/{day}"
    for folder, old, message in (
        ("held", compact_file("ETH-USDT", old=True, scale=2), "Hive key(s) exchange, symbol"),
        ("scaled", compact_file("ETH-USDT", scale=2), "is decimal128(38, 2), the view's is"),
        ("first", compact_file("AAA-USDT", old=True, scale=2), "Hive key(s) exchange, symbol"),
    ):
        symbol = "AAA-USDT" if folder == "first" else "ETH-USDT"
        stale = f"compact/trades/exchange=binance/symbol={symbol}/{day}"
        write_tree(tmp_path / folder, {current: compact_file("BTC-USDT"), stale: old})
        url = f"file://{tmp_path}/{folder}/"
        status, out, err = cli(capsys, url, "SELECT symbol, sum(price) FROM trades GROUP BY ALL")
        assert (status, out, len(err)) == (1, "", 1), folder
        assert f"{stale}: " in err[0] and message in err[0], err
        assert "recompute the dataset" in err[0] and "delete the old outputs" in err[0]
        if folder != "first":  # the schema is the current file's: it reads alone
            sql = "SELECT sum(price) FROM trades WHERE symbol = 'BTC-USDT'"
            status, out, err = cli(capsys, url, sql, "--format", "csv")
            assert (status, out, err) == (0, "sum(price)\n34.5\n", [])
