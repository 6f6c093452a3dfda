"""CHANNELS (feedvault/channels.py): which channels each stream records, and the errors."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from feedvault.channels import parse_channels
from feedvault.config import load_stream_config

STREAMS = [("binance", "BTCUSDT"), ("binance", "ETHUSDT"), ("okx", "BTC-USDT")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("trades", {s: ("trades",) for s in STREAMS}),
        ("book , trades", {s: ("trades", "book") for s in STREAMS}),
        (
            "trades,book@binance:BTCUSDT",
            {
                ("binance", "BTCUSDT"): ("trades", "book"),
                ("binance", "ETHUSDT"): ("trades",),
                ("okx", "BTC-USDT"): ("trades",),
            },
        ),
        (
            "book@OKX,trades@binance",
            {
                ("binance", "BTCUSDT"): ("trades",),
                ("binance", "ETHUSDT"): ("trades",),
                ("okx", "BTC-USDT"): ("book",),
            },
        ),
    ],
)
def test_channels_per_stream(text: str, expected: dict[tuple[str, str], tuple[str, ...]]) -> None:
    assert parse_channels(text, STREAMS) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "names no channel"),
        ("trades,depth", "unknown channel 'depth'"),
        ("book@kraken", "exchange 'kraken', which no STREAMS entry uses"),
        ("book@binance:XRPUSDT", "'binance:XRPUSDT', which is not in STREAMS"),
        ("book@okx", "gives stream binance:BTCUSDT no channel"),
    ],
)
def test_bad_channels_name_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="CHANNELS") as caught:
        parse_channels(text, STREAMS)
    assert message in str(caught.value)


def test_the_config_splits_streams_by_channel() -> None:
    config = load_stream_config(
        {
            "STREAMS": "binance:BTCUSDT,okx:BTC-USDT",
            "CHANNELS": "trades@binance,book",
            "S3_BUCKET": "bucket-1",
            "S3_PREFIX": "p/",
            "MAX_RUNTIME_SECONDS": "5",
            "BINANCE_REST_URL": "http://127.0.0.1:9/",
        }
    )
    assert [str(s) for s in config.streams_of("trades")] == ["binance:BTCUSDT"]
    assert [str(s) for s in config.streams_of("book")] == ["binance:BTCUSDT", "okx:BTC-USDT"]
    assert config.public_dict()["channels"] == "trades@binance,book"
    assert config.rest_urls == {"binance": "http://127.0.0.1:9"}


def test_a_rest_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="OKX_REST_URL"):
        load_stream_config(
            {
                "STREAMS": "okx:BTC-USDT",
                "S3_BUCKET": "bucket-1",
                "S3_PREFIX": "p/",
                "MAX_RUNTIME_SECONDS": "5",
                "OKX_REST_URL": "ws://x",
            }
        )
