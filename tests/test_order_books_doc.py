"""The rebuild example of docs/order-books.md#rebuilding-a-book runs as written (its S3 read
replaced by an object's body) and gives the book the project's own rule gives."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from engine.book_records import BookLevel, BookReplica
from engine.clock import FakeClock
from sinks.encoders import decode_body
from tests.harness import make_book_windower

DOC = Path(__file__).resolve().parent.parent / "docs" / "order-books.md"
S3_READ = 'boto3.client("s3").get_object(Bucket="my-bucket", Key=key)["Body"].read()'
NS = 1_000_000_000
T0 = 1_765_000_000 * NS


def _example() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Rebuilding a book", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    assert S3_READ in code.group(1)
    return code.group(1).replace("import boto3\n", "").replace(S3_READ, "_body")


def _object() -> bytes:
    """The second object of a run: it opens with a restated book, then deltas."""
    clock = FakeClock(start_ns=T0)
    windower = make_book_windower(clock)

    def message(
        seq: int, ts: int, snapshot: bool, levels: list[tuple[str, str, str]]
    ) -> list[BookLevel]:
        return [
            BookLevel("binance", "BTC-USDT", "BTCUSDT", ts // 1000, ts, str(seq), snapshot, *lv)
            for lv in levels
        ]

    windower.add(
        message(1, T0, True, [("bid", "10.0", "1"), ("bid", "9.5", "2"), ("ask", "11", "1")])
    )
    windower.add(message(2, T0 + 1, False, [("bid", "10", "0"), ("ask", "12", "3")]))
    clock.advance(61)
    later = T0 + 61 * NS
    windower.add(message(3, later, False, [("bid", "9.75", "4"), ("ask", "11.0", "0")]))
    [second] = windower.close_all()
    return second.body


def test_the_documented_rebuild_runs_and_agrees_with_the_rule() -> None:
    body = _object()
    scope: dict[str, object] = {"_body": body, "key": "object.ndjson.gz"}
    exec(compile(_example(), str(DOC), "exec"), scope)
    replica = BookReplica()
    replica.apply_all(BookLevel.from_dict(row) for row in decode_body(body, "ndjson.gz"))
    book = replica.book("binance", "BTC-USDT")
    assert scope["book"] == {
        side: {Decimal(level.price): level.size for level in book.levels(side)}  # type: ignore[arg-type]
        for side in ("bid", "ask")
    }
    assert (scope["best_bid"], scope["best_ask"]) == (Decimal("9.75"), Decimal("12"))
