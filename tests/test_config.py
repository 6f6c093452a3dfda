from __future__ import annotations

import socket
from pathlib import Path

import pytest

from batch.computation import RiskParameters
from batch.config import load_batch_config
from engine.errors import ConfigError
from engine.settings import RANGES, Env
from feedvault.config import StreamSpec, load_stream_config
from feedvault.replay import parse_speed
from sinks.writer import parse_destination
from tests.harness import base_env, run_feedvault

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
        ("MAX_RUNTIME_SECONDS", "0", "greater than 0 and at most 31622400"),
        ("MAX_RUNTIME_SECONDS", "nan", "greater than 0 and at most 31622400"),
        ("STREAMS", "binance:", "exchange:SYMBOL"),
        ("STREAMS", "binance:BTCUSDT,binance:BTCUSDT", "twice"),
        ("OVERFLOW", "drop-newest", "block, drop-oldest"),
        ("FORMAT", "csv", "ndjson.gz"),
        ("WINDOW_SECONDS", "1.5", "integer"),
        ("QUEUE_MAXSIZE", "0", "from 1 to 10000000"),
        ("BINANCE_WS_URL", "http://x", "ws://"),
        ("RUN_ID", "a/b", "letters"),
        ("KEY_TEMPLATE", "{prefix}{nope}", "KEY_TEMPLATE"),
        ("LOG_LEVEL", "LOUD", "one of"),
        ("WS_TRANSPORT", "bogus", "one of aiohttp, websockets; got 'bogus'"),
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


# -- ranges of the numeric settings (issue 12) ----------------------------------------------------

ABSURD = "100000000000000000000"

STREAM_NUMERIC = [
    "MAX_RUNTIME_SECONDS",
    "WINDOW_SECONDS",
    "WINDOW_MAX_BYTES",
    "WINDOW_MAX_RECORDS",
    "QUEUE_MAXSIZE",
    "UPLOAD_CONCURRENCY",
    "UPLOAD_RETRY_SECONDS",
    "S3_MULTIPART_THRESHOLD",
    "STOP_GRACE_SECONDS",
    "STATS_INTERVAL_SECONDS",
    "STALE_SECONDS",
]


def _high(variable: str) -> str:
    return str(int(RANGES[variable].high))


@pytest.mark.parametrize("variable", STREAM_NUMERIC)
@pytest.mark.parametrize("value", [ABSURD, "1e20", "-1", "inf"])
def test_an_absurd_number_is_refused_naming_the_variable_and_its_range(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_stream_config(dict(BASE, **{variable: value}))
    assert info.value.variable == variable
    assert f"at most {_high(variable)}" in str(info.value) or f"to {_high(variable)}," in str(
        info.value
    )
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("variable", STREAM_NUMERIC)
def test_the_upper_bound_itself_is_accepted(variable: str) -> None:
    load_stream_config(dict(BASE, **{variable: _high(variable)}))


@pytest.mark.parametrize("seconds", ["7", "11", "2700", "5400", "9000", "50000"])
def test_a_window_that_would_cross_an_hour_or_a_day_partition_is_refused(seconds: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_stream_config(dict(BASE, WINDOW_SECONDS=seconds))
    assert info.value.variable == "WINDOW_SECONDS"
    assert "divide" in str(info.value)


@pytest.mark.parametrize("seconds", ["1", "2", "15", "60", "900", "3600", "7200", "21600", "86400"])
def test_windows_that_tile_hours_or_days_are_accepted(seconds: str) -> None:
    assert load_stream_config(dict(BASE, WINDOW_SECONDS=seconds)).sink.window_seconds == int(
        seconds
    )


BATCH = {"OUTPUT_BUCKET": "out-bucket", "OUTPUT_PREFIX": "batch/"}


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("MAX_RUNTIME_SECONDS", ABSURD, "at most 31622400"),
        ("BATCH_CPU_WORKERS", "65", "from 1 to 64"),
        ("BATCH_CPU_WORKERS", ABSURD, "from 1 to 64"),
        ("STOP_GRACE_SECONDS", "1e9", "at most 3600"),
        ("STATS_INTERVAL_SECONDS", ABSURD, "at most 86400"),
    ],
)
def test_batch_settings_have_ranges_too(variable: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_batch_config("computation", dict(BATCH, **{variable: value}), needs_input=False)
    assert info.value.variable == variable
    assert words in str(info.value)


@pytest.mark.parametrize("speed", ["1e-300", "0", "1e9", ABSURD])
def test_a_replay_speed_outside_its_range_is_refused(speed: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_speed(speed)
    assert str(info.value) == (
        f"--speed: must be 'max' or a number from 0.001 to 1000000, got {speed!r}"
    )


def test_a_seed_beyond_64_bits_is_refused() -> None:
    # orjson cannot write it: the run would end with no manifest
    with pytest.raises(ConfigError) as info:
        RiskParameters.from_env(Env({"COMPUTATION_SEED": str(2**64)}))
    assert info.value.variable == "COMPUTATION_SEED"
    assert f"to {2**63 - 1}" in str(info.value)


def test_an_absurd_window_exits_2_before_connecting_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with socket.socket() as listener:  # the "exchange": must never see a connection
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        env = base_env(
            MAX_RUNTIME_SECONDS="5",
            STREAMS="binance:BTCUSDT",
            BINANCE_WS_URL=f"ws://127.0.0.1:{port}",
            WINDOW_SECONDS=ABSURD,
            SPILL_DIR=str(tmp_path / "spill"),
        )
        done = run_feedvault(env, "stream", "--out", f"file://{out}/")
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "feedvault stream: configuration error: WINDOW_SECONDS: must be an integer from 1 to "
        f"86400, got '{ABSURD}'"
    ]
    assert done.stdout == ""
    assert list(out.iterdir()) == []
