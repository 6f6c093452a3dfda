"""The run manifest: JSON round trip, validation, key, writing."""

from __future__ import annotations

import orjson
import pytest

from engine.errors import IntegrityError
from sinks.manifest import (
    Gap,
    Manifest,
    StoredObjectEntry,
    iso_utc,
    manifest_key,
    write_manifest,
)
from sinks.memory import MemoryWriter


def sample() -> Manifest:
    return Manifest(
        run_id="20231114T221400Z-abcd",
        version="0.1.0",
        command="stream",
        started_at=iso_utc(1_700_000_040 * 10**9),
        stopped_at=iso_utc(1_700_000_100 * 10**9 + 123_456_789),
        stop_reason="deadline",
        status="complete",
        config={"STREAMS": "binance:BNBUSDT", "WINDOW_SECONDS": 60},
        objects=[
            StoredObjectEntry(
                key="p/trades/x-000000.ndjson.gz",
                records=3,
                bytes=120,
                sha256="ab" * 32,
                first_ts_event=1,
                last_ts_event=3,
                symbols={"binance:BNB-USDT": ("10", "12")},
                stored_at=1_700_000_100 * 10**9,
            )
        ],
        counters={"received": 3, "parsed": 3, "invalid": 0, "dropped": 0, "reconnects": 1},
        gaps={"binance:BNB-USDT": [Gap(from_id=7, to_id=10, missing=4)]},
        spilled=[],
        error=None,
    )


def test_json_round_trip() -> None:
    manifest = sample()
    data = manifest.to_json()
    assert Manifest.from_json(data) == manifest
    document = orjson.loads(data)
    assert list(document) == sorted(document)
    assert document["objects"][0]["symbols"] == {
        "binance:BNB-USDT": {"first_trade_id": "10", "last_trade_id": "12"}
    }
    assert document["started_at"] == "2023-11-14T22:14:00.000000Z"
    assert document["stopped_at"] == "2023-11-14T22:15:00.123456Z"
    assert b'\n  "command"' in data  # indented


def test_stored_at_is_written_and_optional_when_reading() -> None:
    document = orjson.loads(sample().to_json())
    assert document["objects"][0]["stored_at"] == 1_700_000_100 * 10**9
    del document["objects"][0]["stored_at"]  # a manifest written before the field existed
    older = Manifest.from_json(orjson.dumps(document))
    assert older.objects[0].stored_at is None
    assert "stored_at" not in older.objects[0].to_dict()
    assert Manifest.from_json(older.to_json()) == older


def test_default_counters() -> None:
    manifest = Manifest("r", "v", "stream", "a", "b", "signal", "incomplete")
    assert manifest.counters == {
        "received": 0,
        "parsed": 0,
        "invalid": 0,
        "dropped": 0,
        "reconnects": 0,
        "duplicates": 0,
    }


def test_manifest_key() -> None:
    assert manifest_key("streaming/bnb/", "R1") == "streaming/bnb/_manifests/R1.json"
    assert manifest_key("", "R1") == "_manifests/R1.json"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("run_id"), "run_id"),
        (lambda d: d.update(status="done"), "status"),
        (lambda d: d.update(stop_reason="crash"), "stop_reason"),
        (lambda d: d.update(objects={}), "objects"),
        (lambda d: d["objects"][0].update(records="3"), "records"),
        (lambda d: d["objects"][0].update(records=True), "records"),
        (lambda d: d["objects"][0].update(stored_at="1"), "stored_at"),
        (lambda d: d["objects"][0].update(stored_at=1.5), "stored_at"),
        (lambda d: d["objects"][0]["symbols"].update(x=["1", "2"]), "symbols"),
        (lambda d: d["counters"].update(received=1.5), "received"),
        (lambda d: d["gaps"]["binance:BNB-USDT"][0].pop("missing"), "missing"),
        (lambda d: d.update(spilled=[1]), "spilled"),
        (lambda d: d.update(error=5), "error"),
        (lambda d: d.update(config=[]), "config"),
    ],
)
def test_invalid_manifests(mutate: object, message: str) -> None:
    document = orjson.loads(sample().to_json())
    mutate(document)  # type: ignore[operator]
    with pytest.raises(IntegrityError, match=message):
        Manifest.from_json(orjson.dumps(document))


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b"null"])
def test_garbage_is_integrity_error(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        Manifest.from_json(data)


async def test_write_manifest() -> None:
    writer = MemoryWriter()
    manifest = sample()
    stored = await write_manifest(writer, "p/", manifest)
    assert stored.key == "p/_manifests/20231114T221400Z-abcd.json"
    assert Manifest.from_json(writer.objects[stored.key]) == manifest
