"""Order books captured and replayed end to end (docs: order-books.md#replaying-books), as
subprocesses over loopback: ``feedvault stream`` with ``CAPTURE=1`` and ``CHANNELS=book`` against
the fake exchange (with a fault, so the book is resynced) into moto's S3 server, then ``feedvault
replay`` of the run's raw objects with ``CHANNELS=book`` into another prefix. The replay writes the
live run's book rows field for field (``ts_recv`` included) and its manifest the same resyncs; both
verify. Six exchanges, each with faults that make it resync (a sequence gap, a failed checksum, a
reconnect, Bybit's restart, a late REST snapshot). For Binance and Bitstamp the capture holds the
REST snapshots as ``http`` lines, so the replay needs no network (the fake is stopped before it
starts).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import S3Server
from tests.harness import (
    FEEDVAULT,
    base_env,
    decode_object,
    exchange_stream_env,
    fake_exchange,
    read_manifest,
    run_verify,
    start_stream,
    stop_after_connections,
)


@dataclass(frozen=True)
class Case:
    exchange: str
    symbols: str
    faults: str
    causes: tuple[str, ...]
    """The causes of the live run's resyncs (each one at least once)."""
    rest: bool = False
    connections: int | None = None
    """Stop the run once it has connected this many times (None: it ends by itself)."""

    @property
    def streams(self) -> str:
        return ",".join(f"{self.exchange}:{s}" for s in self.symbols.split(","))


IN_BENCH = pytest.mark.skipif(
    not os.environ.get("FEEDVAULT_BENCH"),
    reason="make bench (FEEDVAULT_BENCH=1): the suite replays binance (REST snapshot lines, a "
    "sequence resync, reconnects); each exchange's fault is run live in tests/test_books_e2e.py",
)

CASES = [
    Case(
        "binance",
        "BTCUSDT,ETHUSDT",
        "book-gap=once@15,disconnect-every=2",
        ("sequence", "reconnect"),
        rest=True,
        connections=3,
    ),
    pytest.param(
        Case("okx", "BTC-USDT", "book-gap=once@15", ("sequence",)), marks=IN_BENCH, id="okx"
    ),
    pytest.param(
        Case("kraken", "XBT/USD", "book-checksum=once@15", ("checksum",)),
        marks=IN_BENCH,
        id="kraken",
    ),
    pytest.param(
        Case("coinbase", "BTC-USD", "disconnect-every=1.5", ("reconnect",), connections=3),
        marks=IN_BENCH,
        id="coinbase",
    ),
    pytest.param(
        Case(
            "bitstamp",
            "btcusd",
            "disconnect-every=1.5,late-snapshot=0.3",
            ("reconnect",),
            rest=True,
            connections=3,
        ),
        marks=IN_BENCH,
        id="bitstamp",
    ),
    pytest.param(
        Case("bybit", "BTCUSDT", "book-restart=1.5", ("restart",)), marks=IN_BENCH, id="bybit"
    ),
]


def book_objects(client: Any, bucket: str, prefix: str) -> list[list[dict[str, Any]]]:
    """The rows of each book object of the run at ``prefix`` (its manifest's), each symbol's
    objects in window order."""
    manifest = read_manifest(client, bucket, prefix)
    keys = [o["key"] for o in manifest["objects"] if o["key"].startswith(f"{prefix}book/")]
    assert keys, f"no book object under {prefix}"
    keys.sort(key=lambda k: (k.split("/date=")[0], int(k.rsplit("-", 1)[1].split(".")[0])))
    out = []
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        out.append([json.loads(line) for line in gzip.decompress(body).splitlines()])
    return out


def restates(row: dict[str, Any], before: dict[str, Any]) -> bool:
    """Whether ``row`` carries the message identity (``seq``, ``ts_recv``) of ``before``."""
    return bool((row["seq"], row["ts_recv"]) == (before["seq"], before["ts_recv"]))


def book_rows(objects: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rows of ``objects`` without the snapshots that open a window by restating the book
    (docs: order-books.md#the-book-schema: snapshot rows at an object's start with the ``seq``
    and ``ts_recv`` of the symbol's previous row). Where a window closes depends on when the
    sink saw a row (live) or on its recorded time (replay), so the restatements may fall
    elsewhere; every other row is an exchange message's, the same in both."""
    rows: list[dict[str, Any]] = []
    last: dict[str, dict[str, Any]] = {}
    for obj in objects:
        opening = True
        for row in obj:
            before = last.get(row["raw_symbol"])
            opening = opening and row["snapshot"] and before is not None
            if opening and before is not None and restates(row, before):
                continue
            opening = False
            rows.append(row)
            last[row["raw_symbol"]] = row
    return rows


def raw_lines(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every recording line of the run's raw objects (``{prefix}raw/``)."""
    out: list[dict[str, Any]] = []
    for key in s3_keys(client, bucket, f"{prefix}raw/"):
        out += decode_object(client.get_object(Bucket=bucket, Key=key)["Body"].read(), key)
    return out


def s3_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for obj in listing.get("Contents", [])]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.exchange)
def test_captured_books_replay_to_the_same_rows_and_resyncs(
    s3_server: S3Server, bucket: str, tmp_path: Path, case: Case
) -> None:
    with fake_exchange(
        tmp_path,
        protocol=case.exchange,
        symbols=case.symbols,
        rate="5",
        faults=case.faults,
        args=("--book-rate", "30"),
    ) as fx:
        extra = {"CHANNELS": "book", "CAPTURE": "1"}
        rest_url = fx.url.replace("ws://", "http://")
        if case.rest:
            extra[f"{case.exchange.upper()}_REST_URL"] = rest_url
        env = exchange_stream_env(
            s3_server.env(),
            bucket=bucket,
            prefix="live/",
            streams=case.streams,
            url_variable=f"{case.exchange.upper()}_WS_URL",
            url=fx.url,
            runtime="4" if case.connections is None else "60",
            **extra,
        )
        proc = start_stream(env)
        if case.connections is None:
            out, err = proc.communicate(timeout=60)
        else:
            out, err = stop_after_connections(proc, case.connections)
        fx.stop()
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    client = s3_server.client()
    live = read_manifest(client, bucket, "live/")
    assert live["status"] == "complete"
    causes = {r["cause"] for items in live.get("resyncs", {}).values() for r in items}
    assert causes >= set(case.causes), live.get("resyncs")
    for items in live["resyncs"].values():  # repaired, but perhaps a reconnect at the stop
        assert all(r["done"] is not None for r in items[:-1]), items
        assert items[-1]["done"] is not None or items[-1]["cause"] == "reconnect", items
    lines = raw_lines(client, bucket, "live/")
    connects = [line for line in lines if "url" in line]
    assert connects and all(line["channel"] == "book" for line in connects), connects
    if case.rest:  # every REST snapshot the fake answered is a recording line (but for
        # one per symbol that the stop may have cut short)
        fetched = [line for line in lines if "http" in line]
        assert fx.summary is not None
        answered = fx.summary["rest_snapshots"]
        assert answered - len(case.symbols.split(",")) <= len(fetched) <= answered, fx.summary
        assert len(fetched) > len(case.symbols.split(","))  # the first ones and a resync's
        assert all(line["status"] == 200 and line["dir"] == "in" for line in fetched)
        assert all(line["http"].startswith(f"GET {rest_url}/api/") for line in fetched)

    extra_rest = {k: v for k, v in extra.items() if k.endswith("_REST_URL")}
    result = subprocess.run(
        [*FEEDVAULT, "replay", f"s3://{bucket}/live/raw/", "--out", f"s3://{bucket}/again/"],
        # the fake is gone: a snapshot fetched rather than replayed would fail
        env=base_env(**s3_server.env(), CHANNELS="book", WINDOW_SECONDS="2", **extra_rest),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    again = read_manifest(client, bucket, "again/")
    assert again["status"] == "complete"
    assert again.get("resyncs") == live.get("resyncs")  # times, causes, ranges, superseded
    assert again.get("crossed") == live.get("crossed")
    replayed = book_objects(client, bucket, "again/")
    stored = book_objects(client, bucket, "live/")
    assert book_rows(replayed) == book_rows(stored)
    for prefix in ("live/", "again/"):
        verified = run_verify(s3_server.env(), bucket, prefix)
        assert verified.returncode == 0, verified.stdout + verified.stderr
