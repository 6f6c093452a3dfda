from __future__ import annotations

import pytest

from engine.config import StreamSpec, load_stream_config, parse_destination
from engine.errors import ConfigError

BASE = {
    "S3_BUCKET": "my-bucket",
    "S3_PREFIX": "streaming/bnbusd",
    "MAX_RUNTIME_SECONDS": "7200",
    "STREAMS": "binance:BNBUSDT, binance:BTCUSDT",
}


def test_the_original_task_environment_parses() -> None:
    cfg = load_stream_config(BASE)
    assert cfg.destination.bucket == "my-bucket"
    assert cfg.destination.prefix == "streaming/bnbusd/"
    assert cfg.max_runtime_seconds == 7200
    assert cfg.streams == (StreamSpec("binance", "BNBUSDT"), StreamSpec("binance", "BTCUSDT"))
    assert cfg.sink.format == "ndjson.gz"
    assert cfg.overflow == "block"
    assert cfg.runtime.stop_grace_seconds == 20


def test_out_flag_replaces_bucket_and_prefix() -> None:
    env = {k: v for k, v in BASE.items() if not k.startswith("S3_")}
    cfg = load_stream_config(env, out="file:///tmp/fv-out/")
    assert cfg.destination.scheme == "file"
    assert str(cfg.destination.root) == "/tmp/fv-out"


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("S3_BUCKET", "", "required"),
        ("S3_PREFIX", "a/../b", "'..'"),
        ("MAX_RUNTIME_SECONDS", "0", "greater than"),
        ("MAX_RUNTIME_SECONDS", "nan", "finite"),
        ("STREAMS", "binance:", "exchange:SYMBOL"),
        ("STREAMS", "binance:BTCUSDT,binance:BTCUSDT", "twice"),
        ("OVERFLOW", "drop-newest", "block, drop-oldest"),
        ("FORMAT", "csv", "ndjson.gz"),
        ("WINDOW_SECONDS", "1.5", "integer"),
        ("QUEUE_MAXSIZE", "0", "at least 1"),
        ("BINANCE_WS_URL", "http://x", "ws://"),
        ("RUN_ID", "a/b", "letters"),
        ("KEY_TEMPLATE", "{prefix}{nope}", "KEY_TEMPLATE"),
        ("LOG_LEVEL", "LOUD", "one of"),
    ],
)
def test_each_bad_setting_names_its_variable(variable: str, value: str, words: str) -> None:
    env = dict(BASE, **{variable: value})
    with pytest.raises(ConfigError) as info:
        load_stream_config(env)
    assert info.value.variable == variable
    assert words in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["s3://UPPER/x/", "s3://a/../x/", "file://relative/dir", "ftp://x/y"]
)
def test_bad_destination_urls(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_destination(url)
    assert info.value.variable == "--out"


def test_secrets_never_reach_the_public_config() -> None:
    env = dict(BASE, AWS_SECRET_ACCESS_KEY="s3cr3t", AWS_SESSION_TOKEN="t0ken")
    text = repr(load_stream_config(env).public_dict())
    assert "s3cr3t" not in text and "t0ken" not in text


@pytest.mark.parametrize("streams", ["binance:BTC/USDT", "binance:ZZZQQQ"])
def test_a_symbol_the_exchange_cannot_take_is_a_configuration_error(streams: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_stream_config(dict(BASE, STREAMS=streams))
    assert info.value.variable == "STREAMS"
    assert streams in str(info.value)
