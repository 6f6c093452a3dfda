"""Order books end to end, as the Fargate task runs, for every exchange: ``feedvault
fake-exchange`` (its evolving books, ``--book-ledger``) -> ``feedvault stream`` with
``CHANNELS=book`` (environment only) -> moto's S3 server on loopback, both subprocesses.

Per exchange: the book rebuilt from the stored objects (by the rule of
docs/order-books.md#rebuilding-a-book, written out again here) equals, level for level, the book
the fake served the run's last connection at its stop; ``feedvault verify`` passes. With each
fault the exchange's channel can show, the manifest records the resync with its cause, and the
book rebuilt at the end is right again.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import S3Server
from tests.harness import (
    exchange_stream_env,
    fake_exchange,
    run_verify,
    start_stream,
    stop_after_connections,
)

Book = dict[str, dict[Decimal, str]]


@dataclass(frozen=True)
class BookExchange:
    name: str
    symbols: str
    rest: bool = False

    @property
    def streams(self) -> str:
        return ",".join(f"{self.name}:{s}" for s in self.symbols.split(","))


EXCHANGES = {
    e.name: e
    for e in [
        BookExchange("binance", "BTCUSDT,ETHUSDT", rest=True),
        BookExchange("binanceus", "BTCUSD", rest=True),
        BookExchange("coinbase", "BTC-USD,ETH-USD"),
        BookExchange("kraken", "XBT/USD"),
        BookExchange("bitstamp", "btcusd", rest=True),
        BookExchange("okx", "BTC-USDT"),
        BookExchange("bybit", "BTCUSDT"),
    ]
}


def rebuild(rows: list[dict[str, Any]]) -> dict[str, Book]:
    """Per raw symbol, the book the rows leave (docs: order-books.md#rebuilding-a-book)."""
    books: dict[str, Book] = {}
    last: dict[str, dict[str, Any]] = {}
    for row in rows:
        symbol = row["raw_symbol"]
        before = last.get(symbol)
        if row["snapshot"] and (
            before is None
            or not before["snapshot"]
            or (before["seq"], before["ts_recv"]) != (row["seq"], row["ts_recv"])
        ):
            books[symbol] = {"bid": {}, "ask": {}}
        book = books.setdefault(symbol, {"bid": {}, "ask": {}})
        price = Decimal(row["price"])
        if Decimal(row["size"]) == 0:
            book[row["side"]].pop(price, None)
        else:
            book[row["side"]][price] = row["size"]
        last[symbol] = row
    return books


def stored_rows(s3: S3Server, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """The book rows of the run's objects, each symbol's objects in window order."""
    manifest_keys = [
        o["Key"]
        for o in s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}_manifests/")[
            "Contents"
        ]
    ]
    assert len(manifest_keys) == 1
    manifest = json.loads(
        s3.client().get_object(Bucket=bucket, Key=manifest_keys[0])["Body"].read()
    )
    keys = [o["key"] for o in manifest["objects"] if o["key"].startswith(f"{prefix}book/")]
    assert keys, "no book object stored"
    keys.sort(key=lambda k: (k.split("/date=")[0], int(k.rsplit("-", 1)[1].split(".")[0])))
    rows: list[dict[str, Any]] = []
    for key in keys:
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        rows += [json.loads(line) for line in gzip.decompress(body).splitlines()]
    return rows


def served_books(path: Path) -> dict[str, list[Book]]:
    """Per raw symbol, the books the fake served its connections at their ends, in the order
    of the connections (those that got none left out)."""
    served: dict[str, dict[int, Book]] = {}
    for line in path.read_text().splitlines():
        doc = json.loads(line)
        if doc["kind"] != "served" or not (doc["bids"] or doc["asks"]):
            continue
        book: Book = {
            "bid": {Decimal(p): s for p, s in doc["bids"]},
            "ask": {Decimal(p): s for p, s in doc["asks"]},
        }
        served.setdefault(doc["raw_symbol"], {})[doc["conn"]] = book
    return {symbol: [books[c] for c in sorted(books)] for symbol, books in served.items()}


def unfinished_symbols(manifest: dict[str, Any]) -> set[str]:
    """The raw symbols (lower case) whose last resync was still in progress at the stop."""
    return {
        name.split(":")[1].lower()
        for name, items in manifest.get("resyncs", {}).items()
        if items and items[-1]["done"] is None
    }


def run_books(
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    exchange: BookExchange,
    *,
    faults: str | None = None,
    connections: int | None = None,
    runtime: str = "4",
) -> tuple[int, str, dict[str, Any], dict[str, Book], dict[str, list[Book]]]:
    """One run; (exit status, stderr, manifest, the stored books, the fake's served books)."""
    prefix = f"books/{exchange.name}/"
    ledger = tmp_path / "books.jsonl"
    with fake_exchange(
        tmp_path,
        protocol=exchange.name,
        symbols=exchange.symbols,
        rate="5",
        faults=faults,
        args=("--book-rate", "40", "--book-ledger", str(ledger)),
    ) as fx:
        extra = {"CHANNELS": "book"}
        if exchange.rest:
            extra[f"{exchange.name.upper()}_REST_URL"] = fx.url.replace("ws://", "http://")
        env = exchange_stream_env(
            s3.env(),
            bucket=bucket,
            prefix=prefix,
            streams=exchange.streams,
            url_variable=f"{exchange.name.upper()}_WS_URL",
            url=fx.url,
            runtime=runtime,
            **extra,
        )
        proc = start_stream(env)
        if connections is None:
            _out, err = proc.communicate(timeout=90)
        else:
            _out, err = stop_after_connections(proc, connections)
        fx.stop()
    manifest_key = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}_manifests/")
    manifest = json.loads(
        s3.client().get_object(Bucket=bucket, Key=manifest_key["Contents"][0]["Key"])["Body"].read()
    )
    stored = rebuild(stored_rows(s3, bucket, prefix))
    assert proc.returncode is not None
    return proc.returncode, err, manifest, stored, served_books(ledger)


def assert_same_books(
    stored: dict[str, Book],
    served: dict[str, list[Book]],
    symbols: str,
    manifest: dict[str, Any] | None = None,
) -> None:
    """Each symbol's stored book is the book the fake served its last connection; or, for a
    symbol whose last resync was still in progress at the stop (a reconnect whose snapshot had
    not come: the client kept nothing of that connection), the book of the connection before
    it (the last connection may have been served nothing at all, so either of the last two)."""
    unfinished = unfinished_symbols(manifest) if manifest is not None else set()
    for symbol in symbols.split(","):
        key = symbol.upper() if symbol.islower() else symbol
        mine = stored.get(symbol) or stored.get(key)
        theirs = served.get(symbol) or served.get(key)
        assert mine is not None and theirs, (symbol, list(stored), list(served))
        assert all(book["bid"] and book["ask"] for book in theirs)
        if symbol.lower() in unfinished:
            assert mine in theirs[-2:], symbol
        else:
            assert mine == theirs[-1], symbol


IN_BENCH = pytest.mark.skipif(
    not os.environ.get("FEEDVAULT_BENCH"),
    reason="make bench (FEEDVAULT_BENCH=1): each exchange's fault run in the suite checks its "
    "stored book against the fake's too",
)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=IN_BENCH) for n in sorted(EXCHANGES)],
)
def test_the_stored_book_is_the_fakes_book(
    s3_server: S3Server, bucket: str, tmp_path: Path, name: str
) -> None:
    exchange = EXCHANGES[name]
    status, err, manifest, stored, served = run_books(s3_server, bucket, tmp_path, exchange)
    assert status == 0, err[-2000:]
    assert manifest["status"] == "complete"
    assert not manifest.get("resyncs"), manifest.get("resyncs")
    assert all(name.endswith(":book") for name in manifest["streams"])
    assert_same_books(stored, served, exchange.symbols, manifest)
    verified = run_verify(s3_server.env(), bucket, f"books/{name}/")
    assert verified.returncode == 0, verified.stdout + verified.stderr


FAULTS = [
    ("binance", "book-gap=once@20,stale-snapshot=once@2", ("sequence",)),
    # the first snapshot stale, then late: fetched again, waited for, no book broke
    ("binanceus", "stale-snapshot=once@1,late-snapshot=1", ()),
    ("kraken", "book-checksum=once@20", ("checksum",)),
    ("okx", "book-gap=once@20", ("sequence",)),
    ("bybit", "book-gap=once@20,book-restart=2", ("sequence", "restart")),
    ("coinbase", "disconnect-every=2", ("reconnect",)),
    ("bitstamp", "disconnect-every=2", ("reconnect",)),
    # each fault alone (make bench)
    pytest.param("binance", "book-gap=once@20", ("sequence",), marks=IN_BENCH),
    pytest.param("binance", "stale-snapshot=once@1", (), marks=IN_BENCH),
    pytest.param("binance", "late-snapshot=1", (), marks=IN_BENCH),
    pytest.param("bybit", "book-restart=2", ("restart",), marks=IN_BENCH),
]


@pytest.mark.parametrize(("name", "faults", "expected"), FAULTS)
def test_a_broken_book_is_resynced_and_right_again(
    s3_server: S3Server,
    bucket: str,
    tmp_path: Path,
    name: str,
    faults: str,
    expected: tuple[str, ...],
) -> None:
    exchange = EXCHANGES[name]
    reconnects = "reconnect" in expected
    status, err, manifest, stored, served = run_books(
        s3_server,
        bucket,
        tmp_path,
        exchange,
        faults=faults,
        connections=3 if reconnects else None,
        runtime="120" if reconnects else "4",
    )
    assert status == 0, err[-2000:]
    assert manifest["status"] == "complete"
    causes = {r["cause"] for items in manifest.get("resyncs", {}).values() for r in items}
    assert causes == set(expected), manifest.get("resyncs")
    for items in manifest.get("resyncs", {}).values():
        for resync in items[:-1]:
            assert resync["done"] is not None, resync  # repaired before the next one
        # the last may be in progress only when the stop came right after a reconnect
        assert items[-1]["done"] is not None or items[-1]["cause"] == "reconnect"
    assert_same_books(stored, served, exchange.symbols, manifest)
    verified = run_verify(s3_server.env(), bucket, f"books/{name}/")
    assert verified.returncode == 0, verified.stdout + verified.stderr
