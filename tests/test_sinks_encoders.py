"""Encoders: NDJSON + gzip/zstd, decoding, corrupt data (Parquet: tests/test_sinks_parquet.py)."""

from __future__ import annotations

import dataclasses
import gzip

import pytest
import zstandard

from engine.errors import ConfigError, IntegrityError
from engine.records import TRADE_FIELDS, Trade
from sinks.encoders import (
    FORMATS,
    NDJSON_FORMATS,
    decode_body,
    decode_object,
    extension,
    format_from_key,
    make_encoder,
)


def trades(n: int, start: int = 0, symbol: str = "BTC-USDT") -> list[Trade]:
    return [
        Trade(
            "binance",
            symbol,
            symbol.replace("-", ""),
            str(1000 + i),
            f"43000.{i % 100:02d}",
            "0.00120000",
            "buy" if i % 2 else "sell",
            1_700_000_000_000_000 + i,
            1_700_000_000_000_000_000 + i * 1000,
        )
        for i in range(start, start + n)
    ]


@pytest.mark.parametrize("fmt", NDJSON_FORMATS)
def test_round_trip_in_order(fmt: str) -> None:
    encoder = make_encoder(fmt)
    batches = [trades(3), trades(500, 3), trades(1, 503)]
    for batch in batches:
        encoder.write(batch)
    raw_size = encoder.raw_size
    body = encoder.finish()
    decoded = decode_body(body, fmt)
    expected = [t for batch in batches for t in batch]
    assert [Trade.from_dict(obj) for obj in decoded] == expected
    assert list(decoded[0]) == list(TRADE_FIELDS)
    assert raw_size == sum(len(line) + 1 for line in decompressed_lines(body, fmt))
    assert encoder.compressed_size == len(body)


def decompressed_lines(body: bytes, fmt: str) -> list[bytes]:
    if fmt == "ndjson.gz":
        text = gzip.decompress(body)
    else:
        text = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return text.splitlines()


def test_gzip_is_readable_by_gzip_module() -> None:
    encoder = make_encoder("ndjson.gz", level=6)
    encoder.write(trades(10))
    text = gzip.decompress(encoder.finish())
    assert text.count(b"\n") == 10
    assert text.startswith(b'{"exchange":"binance","symbol":"BTC-USDT"')


def test_prices_stay_exact_text() -> None:
    encoder = make_encoder("ndjson.zst")
    encoder.write([dataclasses.replace(trades(1)[0], price="0.000000010000")])
    assert decode_body(encoder.finish(), "ndjson.zst")[0]["price"] == "0.000000010000"


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_body_decodes_to_nothing(fmt: str) -> None:
    assert decode_object(f"p/x-000001.{fmt}", make_encoder(fmt).finish()) == []


def test_finished_encoder_is_unusable() -> None:
    encoder = make_encoder("ndjson.gz")
    encoder.finish()
    with pytest.raises(RuntimeError):
        encoder.write(trades(1))
    with pytest.raises(RuntimeError):
        encoder.finish()


def test_compressed_size_grows_for_large_input() -> None:
    encoder = make_encoder("ndjson.gz")
    for start in range(0, 20_000, 1000):
        encoder.write(trades(1000, start))
    assert encoder.compressed_size > 0
    assert encoder.raw_size > 20_000 * 150


@pytest.mark.parametrize("fmt", NDJSON_FORMATS)
def test_corrupt_and_truncated_bodies(fmt: str) -> None:
    encoder = make_encoder(fmt)
    encoder.write(trades(200))
    body = encoder.finish()
    with pytest.raises(IntegrityError, match=r"truncated|corrupt"):
        decode_body(body[: len(body) // 2], fmt)
    flipped = bytearray(body)
    flipped[len(body) // 2] ^= 0xFF
    with pytest.raises(IntegrityError):
        decode_body(bytes(flipped), fmt)
    with pytest.raises(IntegrityError, match="trailing"):
        decode_body(body + b"junk", fmt)
    with pytest.raises(IntegrityError):
        decode_body(b"not compressed at all", fmt)


def test_non_json_lines_are_integrity_errors() -> None:
    with pytest.raises(IntegrityError, match="line 2"):
        decode_body(gzip.compress(b'{"a":1}\nnope\n'), "ndjson.gz")
    with pytest.raises(IntegrityError, match="not a JSON object"):
        decode_body(gzip.compress(b"[1]\n"), "ndjson.gz")


def test_format_names() -> None:
    assert FORMATS == ("ndjson.gz", "ndjson.zst", "parquet")
    assert extension("ndjson.zst") == "ndjson.zst"
    assert format_from_key("p/x-000001.ndjson.gz") == "ndjson.gz"
    assert format_from_key("p/x-000001.ndjson.zst") == "ndjson.zst"
    assert format_from_key("p/x-000001.parquet") == "parquet"
    with pytest.raises(IntegrityError):
        format_from_key("p/x.json")
    with pytest.raises(ConfigError) as info:
        make_encoder("csv")
    assert info.value.variable == "FORMAT"
    with pytest.raises(ConfigError):
        make_encoder("ndjson.gz", level=42)
