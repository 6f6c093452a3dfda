"""``feedvault batch compact`` end to end against moto's S3 server, run as an ECS task would
(subprocesses configured by environment variables only): over ``feedvault sample compact``,
over a real ``feedvault stream`` run against the fake exchange, and over tampered input."""

from __future__ import annotations

import collections
import decimal
import io
import json
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batch.compact_sample import generate_compact
from tests.conftest import S3Server
from tests.harness import (
    FEEDVAULT,
    base_env,
    fake_exchange,
    fake_stream_env,
    read_manifest,
    run_stream,
)

STREAM_PREFIX = "streaming/sample/"
OUT_PREFIX = "batch/"
RANGE = {"COMPACT_FROM": "2026-01-05", "COMPACT_TO": "2026-01-06"}
REPORT = f"{OUT_PREFIX}compact/reports/2026-01-05_2026-01-06/"


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEEDVAULT, *args], env=env, capture_output=True, text=True, timeout=120)


def compact_env(s3: S3Server, bucket: str, prefix: str, **extra: str) -> dict[str, str]:
    """A compact task's environment, run id ``compact-1`` unless ``extra`` says otherwise
    (a run id is used once per destination)."""
    env = base_env(
        INPUT_BUCKET=bucket,
        INPUT_PREFIX=prefix,
        OUTPUT_BUCKET=bucket,
        OUTPUT_PREFIX=OUT_PREFIX,
        RUN_ID="compact-1",
        **s3.env(),
    )
    env.update(extra)
    return env


def get(s3: S3Server, bucket: str, key: str) -> bytes:
    body: bytes = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def put(s3: S3Server, bucket: str, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=body)


def batch_manifest(s3: S3Server, bucket: str, run_id: str = "compact-1") -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(get(s3, bucket, f"{OUT_PREFIX}_manifests/{run_id}.json"))
    return loaded


def parquet_rows(s3: S3Server, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every row of the files under ``prefix``, with the exchange and symbol of its key (the
    files do not hold them)."""
    rows: list[dict[str, Any]] = []
    for key in sorted(s3.keys(bucket, prefix)):
        table = pq.read_table(io.BytesIO(get(s3, bucket, key)))
        assert "exchange" not in table.column_names and "symbol" not in table.column_names
        if "ts_recv" in table.column_names:  # ns: no datetime holds it; compare as integers
            index = table.column_names.index("ts_recv")
            table = table.set_column(index, "ts_recv", table["ts_recv"].cast(pa.int64()))
        segments = dict(s.split("=", 1) for s in key.split("/") if "=" in s)
        partition = {name: segments[name] for name in ("exchange", "symbol")}
        rows += [{**partition, **row} for row in table.to_pylist()]
    return rows


def write_sample(s3: S3Server, bucket: str) -> None:
    env = base_env(**s3.env())
    result = run(
        ["sample", "compact", "--out", f"s3://{bucket}/{STREAM_PREFIX}", "--seed", "5"], env
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_sample_then_compact_finds_what_was_planted(s3_server: S3Server, bucket: str) -> None:
    write_sample(s3_server, bucket)
    result = run(["batch", "compact"], compact_env(s3_server, bucket, STREAM_PREFIX, **RANGE))
    assert result.returncode == 0, result.stderr[-3000:]
    _, expect = generate_compact(5, STREAM_PREFIX)

    manifest = batch_manifest(s3_server, bucket)
    assert manifest["status"] == "complete" and manifest["stop_reason"] == "end"
    assert manifest["config"]["parameters"] == {
        "from": "2026-01-05",
        "to": "2026-01-06",
        "book_snapshot_levels": 25,
        "book_snapshot_interval": 1.0,
    }
    keys = {obj["key"] for obj in manifest["objects"]}
    assert keys == set(s3_server.keys(bucket, f"{OUT_PREFIX}compact/"))
    assert len([k for k in keys if k.endswith("trades.parquet")]) == 6  # 3 symbols x 2 days
    assert len([k for k in keys if k.endswith("bars.parquet")]) == 6

    report = json.loads(get(s3_server, bucket, REPORT + "gaps.json"))
    for name, count in expect.trades.items():
        assert report["symbols"][name]["trades"] == count
        assert report["symbols"][name]["duplicates_removed"] == expect.duplicates[name]
    assert sum(doc["conflicting_duplicates"] for doc in report["symbols"].values()) == 1
    assert report["rejected"] == expect.rejected
    assert report["runs_without_manifest"] == expect.runs_without_manifest
    recorded = report["symbols"]["binance:BTC-USDT"]["recorded_gaps"]
    low, high = expect.lost_gap_ids
    assert [(g["from_id"], g["still_missing"]) for g in recorded] == [
        (expect.recovered_gap_ids[0], 0),  # run A had them
        (low, high - low + 1),  # nobody had them
    ]
    assert report["symbols"]["bybit:BTC-USDT"]["data_gaps"] == []
    assert [hole["from"][:13] for hole in report["uncovered"]] == ["2026-01-06T12", "2026-01-06T19"]
    rejected = get(s3_server, bucket, REPORT + "rejected.csv").decode()
    assert rejected.count("\n") == 3 and "bad-decimal" in rejected and "missing-field" in rejected
    assert "# Compaction gap report" in get(s3_server, bucket, REPORT + "gaps.md").decode()

    trades = parquet_rows(s3_server, bucket, f"{OUT_PREFIX}compact/trades/")
    identities = [(t["exchange"], t["symbol"], t["trade_id"]) for t in trades]
    assert len(identities) == len(set(identities)) == sum(expect.trades.values())

    verify = run(["verify", f"s3://{bucket}/{OUT_PREFIX}"], compact_env(s3_server, bucket, ""))
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # a rerun over the same input replaces the outputs: same keys, same bytes
    before = {key: get(s3_server, bucket, key) for key in keys}
    again = run(
        ["batch", "compact"],
        compact_env(s3_server, bucket, STREAM_PREFIX, RUN_ID="compact-2", **RANGE),
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert {key: get(s3_server, bucket, key) for key in keys} == before


def first_object(s3: S3Server, bucket: str) -> str:
    return next(k for k in sorted(s3.keys(bucket, STREAM_PREFIX + "trades/")) if "a1a1a1a1" in k)


def assert_failed_with_nothing(
    result: subprocess.CompletedProcess[str],
    s3: S3Server,
    bucket: str,
    words: str,
    run_id: str = "compact-1",
) -> None:
    assert result.returncode == 1, result.stderr[-2000:]
    manifest = batch_manifest(s3, bucket, run_id)
    assert manifest["status"] == "incomplete" and manifest["stop_reason"] == "error"
    assert words in manifest["error"], manifest["error"]
    assert manifest["objects"] == []
    assert s3.keys(bucket, f"{OUT_PREFIX}compact/") == []


def test_an_altered_object_fails_the_run_naming_it(s3_server: S3Server, bucket: str) -> None:
    write_sample(s3_server, bucket)
    key = first_object(s3_server, bucket)
    put(s3_server, bucket, key, get(s3_server, bucket, key) + b"\x00")
    result = run(["batch", "compact"], compact_env(s3_server, bucket, STREAM_PREFIX, **RANGE))
    assert_failed_with_nothing(result, s3_server, bucket, f"object {key!r} does not match")


def test_a_lost_object_fails_the_run_naming_it(s3_server: S3Server, bucket: str) -> None:
    write_sample(s3_server, bucket)
    key = first_object(s3_server, bucket)
    s3_server.client().delete_object(Bucket=bucket, Key=key)
    result = run(["batch", "compact"], compact_env(s3_server, bucket, STREAM_PREFIX, **RANGE))
    assert_failed_with_nothing(result, s3_server, bucket, "manifest but missing")


def test_a_broken_manifest_or_object_fails_the_run(s3_server: S3Server, bucket: str) -> None:
    write_sample(s3_server, bucket)
    put(s3_server, bucket, STREAM_PREFIX + "_manifests/broken.json", b"{not json")
    result = run(["batch", "compact"], compact_env(s3_server, bucket, STREAM_PREFIX, **RANGE))
    assert_failed_with_nothing(result, s3_server, bucket, "broken.json' is malformed")

    s3_server.client().delete_object(Bucket=bucket, Key=STREAM_PREFIX + "_manifests/broken.json")
    orphan = STREAM_PREFIX + "trades/exchange=x/symbol=Y/date=2026-01-05/hour=03/T-r-1.ndjson.gz"
    put(s3_server, bucket, orphan, b"not gzip")
    env = compact_env(s3_server, bucket, STREAM_PREFIX, RUN_ID="compact-2", **RANGE)
    result = run(["batch", "compact"], env)
    assert_failed_with_nothing(result, s3_server, bucket, "cannot read trade object", "compact-2")


def test_a_range_without_trades_fails(s3_server: S3Server, bucket: str) -> None:
    write_sample(s3_server, bucket)
    env = compact_env(s3_server, bucket, STREAM_PREFIX, COMPACT_FROM="2025-01-01")
    assert_failed_with_nothing(
        run(["batch", "compact"], env), s3_server, bucket, "no trade objects for 2025-01-01"
    )


def test_missing_range_exits_2_naming_it_and_writes_nothing(
    s3_server: S3Server, bucket: str
) -> None:
    result = run(["batch", "compact"], compact_env(s3_server, bucket, STREAM_PREFIX))
    assert result.returncode == 2
    assert "COMPACT_FROM" in result.stderr and result.stderr.count("\n") == 1
    assert s3_server.keys(bucket) == []


# --- over a real stream run ----------------------------------------------------------------


def minute_bars(ledger: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """1-minute bars worked out from the ledger, independently of ``batch.compact``."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = collections.defaultdict(list)
    for trade in ledger:
        groups[(trade["symbol"], trade["ts_event"] // 60_000_000)].append(trade)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    context = decimal.Context(prec=60)
    for (symbol, minute), trades in groups.items():
        trades.sort(key=lambda t: (t["ts_event"], int(t["trade_id"])))
        prices = [Decimal(t["price"]) for t in trades]
        volume = sum((Decimal(t["size"]) for t in trades), Decimal(0))
        notional = sum((Decimal(t["price"]) * Decimal(t["size"]) for t in trades), Decimal(0))
        places = max(-p.as_tuple().exponent for p in prices)  # type: ignore[operator]
        vwap = context.divide(notional, volume).quantize(
            Decimal(1).scaleb(-(places + 4)), rounding=decimal.ROUND_HALF_EVEN
        )
        out[(symbol, minute)] = {
            "open": prices[0],
            "high": max(prices),
            "low": min(prices),
            "close": prices[-1],
            "volume": volume,
            "notional": notional,
            "vwap": vwap,
            "trades": len(trades),
        }
    return out


def test_compact_over_a_real_stream_run_keeps_every_ledger_trade_once(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    prefix = "streaming/live/"
    with fake_exchange(tmp_path, rate="1500", symbols="BTCUSDT,ETHUSDT") as fx:
        env = fake_stream_env(s3_server.env(), fx.url, bucket, prefix, "5")
        done = run_stream(env)
        out, err = done.stdout, done.stderr
        ledger = fx.stop()
    assert done.returncode == 0, err[-2000:] + out[-2000:]
    assert read_manifest(s3_server.client(), bucket, prefix)["status"] == "complete"
    # the same trades stored twice, as a second task on the same feed would: deduplicated
    copy_key = sorted(s3_server.keys(bucket, prefix + "trades/"))[0]
    put(
        s3_server,
        bucket,
        copy_key.replace(".ndjson", "-copy.ndjson"),
        get(s3_server, bucket, copy_key),
    )

    result = run(
        ["batch", "compact"],
        compact_env(s3_server, bucket, prefix, COMPACT_FROM="yesterday", COMPACT_TO="today"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert batch_manifest(s3_server, bucket)["status"] == "complete"

    trades = parquet_rows(s3_server, bucket, f"{OUT_PREFIX}compact/trades/")
    stored = collections.Counter(
        (t["exchange"], t["symbol"], t["trade_id"], t["price"], t["size"], t["side"])
        for t in trades
    )
    sent = collections.Counter(
        (
            t["exchange"],
            t["symbol"],
            t["trade_id"],
            Decimal(t["price"]),
            Decimal(t["size"]),
            t["side"],
        )
        for t in ledger
    )
    assert sent and stored == sent  # every ledger trade exactly once, nothing else
    by_symbol: dict[str, list[int]] = collections.defaultdict(list)
    for t in trades:
        by_symbol[t["symbol"]].append(int(t["trade_id"]))
    assert all(ids == sorted(ids) for ids in by_symbol.values())  # ordered

    expected = minute_bars(ledger)
    bars = parquet_rows(s3_server, bucket, f"{OUT_PREFIX}compact/bars_1m/")
    got = {
        (bar["symbol"], int(bar["minute"].timestamp()) // 60): {
            name: bar[name]
            for name in ("open", "high", "low", "close", "volume", "notional", "vwap", "trades")
        }
        for bar in bars
    }
    assert got == expected

    report = json.loads(
        get(s3_server, bucket, next(iter(s3_server.keys(bucket, f"{OUT_PREFIX}compact/reports/"))))
    )
    assert report["missing_ids"] == 0
    assert sum(doc["duplicates_removed"] for doc in report["symbols"].values()) > 0


def test_one_object_is_not_a_streaming_prefix(s3_server: S3Server, bucket: str) -> None:
    write_sample(s3_server, bucket)
    key = first_object(s3_server, bucket)
    env = compact_env(s3_server, bucket, STREAM_PREFIX, **RANGE)
    del env["INPUT_BUCKET"], env["INPUT_PREFIX"]
    result = run(["batch", "compact", "--in", f"s3://{bucket}/{key}"], env)
    assert_failed_with_nothing(result, s3_server, bucket, "not one object")
