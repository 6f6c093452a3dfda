"""A replay voids only the books of the connection a book connect line names: an exchange's
book symbols may span several connections (more symbols than one connection carries), and a
reconnect of one of them leaves the others' books in sync, live and replayed alike."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from connectors.books.okx import encode_books
from connectors.capture import connected, received
from connectors.recording import RecordedFrame, parse_line, to_line
from tests.books_replayed import replay_and_verify

T0 = 1_765_000_000_000_000_000
MS = 1_000_000


def _line(ts: int, frame: str) -> bytes:
    raw = received(ts, "okx", frame)
    return to_line(RecordedFrame(raw.ts, raw.exchange, raw.dir, raw.frame))


def _connect(ts: int, symbols: list[str]) -> bytes:
    line = json.dumps(
        connected(ts, "okx", "wss://ws.okx.com/ws/v5/public", "book", symbols).__dict__
    )
    return line.encode() + b"\n"


def test_a_book_connect_line_names_its_symbols() -> None:
    frame = parse_line(_connect(T0, ["BTC-USDT", "ETH-USDT"]))
    assert (frame.channel, frame.symbols, frame.is_connect) == (
        "book",
        ("BTC-USDT", "ETH-USDT"),
        True,
    )
    assert parse_line(to_line(frame)) == frame


def test_a_reconnect_voids_only_its_own_connections_books(tmp_path: Path) -> None:
    def snapshot(symbol: str, seq: int, ts: int) -> bytes:
        frame = encode_books(
            symbol,
            [("100", "1")],
            [("101", "1")],
            action="snapshot",
            seq_id=seq,
            prev_seq_id=-1,
            ts_ms=ts // MS,
        )
        return _line(ts, frame)

    def update(symbol: str, seq: int, prev: int, ts: int) -> bytes:
        frame = encode_books(
            symbol,
            [("99", str(seq))],
            [],
            action="update",
            seq_id=seq,
            prev_seq_id=prev,
            ts_ms=ts // MS,
        )
        return _line(ts, frame)

    lines = [
        _connect(T0, ["BTC-USDT"]),
        _connect(T0 + 1, ["ETH-USDT"]),
        snapshot("BTC-USDT", 10, T0 + 2),
        snapshot("ETH-USDT", 20, T0 + 3),
        update("BTC-USDT", 11, 10, T0 + 4),
        update("ETH-USDT", 21, 20, T0 + 5),
        _connect(T0 + 6, ["BTC-USDT"]),  # BTC's connection reconnects
        update("ETH-USDT", 22, 21, T0 + 7),  # ETH's book is still in sync: written
        snapshot("BTC-USDT", 30, T0 + 8),  # BTC's new subscription's snapshot ends its resync
        update("BTC-USDT", 31, 30, T0 + 9),
    ]
    recording = tmp_path / "okx.jsonl"
    recording.write_bytes(b"".join(lines))
    out = tmp_path / "out"
    replay_and_verify(recording, out, "book")
    [manifest_path] = (out / "_manifests").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert list(manifest["resyncs"]) == ["okx:BTC-USDT:book"]
    [resync] = manifest["resyncs"]["okx:BTC-USDT:book"]
    assert (resync["cause"], resync["from_seq"], resync["to_seq"]) == ("reconnect", "11", "30")
    eth = [
        json.loads(line)
        for path in sorted((out / "book" / "exchange=okx" / "symbol=ETH-USDT").rglob("*.gz"))
        for line in gzip.decompress(path.read_bytes()).splitlines()
    ]
    assert [row["seq"] for row in eth if not row["snapshot"]] == ["21", "22"]
