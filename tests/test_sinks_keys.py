"""Object keys: sanitizing, the key template, prefixes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import ConfigError
from sinks.keys import DEFAULT_KEY_TEMPLATE, KeyTemplate, sanitize, validate_prefix

# 2023-11-14T22:13:20Z
START_NS = 1_700_000_000 * 1_000_000_000


def render(template: KeyTemplate, **overrides: object) -> str:
    args: dict[str, object] = {
        "prefix": "streaming/bnb/",
        "dataset": "trades",
        "partition": {"exchange": "binance", "symbol": "BNB-USDT"},
        "window_start_ns": START_NS,
        "run_id": "20231114T221320Z-abcd",
        "seq": 7,
        "ext": "ndjson.gz",
    }
    args.update(overrides)
    return template.render(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("BTC-USDT", "BTC-USDT"),
        ("XBT/USD", "XBT_USD"),
        ("../../etc", ".._.._etc"),
        ("..", "__"),
        (".", "_"),
        ("", "_"),
        ("a\x00b", "a_b"),
        ("ÉTH€", "_TH_"),
        ("a b=c", "a_b_c"),
        ("v1.2_x-y", "v1.2_x-y"),
    ],
)
def test_sanitize(value: str, expected: str) -> None:
    assert sanitize(value) == expected


def test_default_template_renders_hive_layout() -> None:
    key = render(KeyTemplate(DEFAULT_KEY_TEMPLATE))
    assert key == (
        "streaming/bnb/trades/exchange=binance/symbol=BNB-USDT/date=2023-11-14/hour=22/"
        "20231114T221320Z-20231114T221320Z-abcd-000007.ndjson.gz"
    )


def test_partition_fields() -> None:
    assert KeyTemplate().partition_fields == ("exchange", "symbol")
    by_exchange = KeyTemplate("{prefix}{dataset}/{exchange}/{date}/{run_id}-{seq}.{ext}")
    assert by_exchange.partition_fields == ("exchange",)
    flat = KeyTemplate("{prefix}{dataset}/{window_start}-{run_id}-{seq:08d}.{ext}")
    assert flat.partition_fields == ()
    assert render(flat, partition={}).endswith("-00000007.ndjson.gz")


@pytest.mark.parametrize(
    ("template", "hive"),
    [
        (DEFAULT_KEY_TEMPLATE, ("exchange", "symbol")),
        ("{prefix}{dataset}/{exchange}/{symbol}/{date}/{run_id}-{seq}.{ext}", ()),
        ("{prefix}exchange={exchange}/{symbol}/{run_id}-{seq}.{ext}", ("exchange",)),
        (
            "{prefix}{dataset}/exchange={exchange}-x/symbol={symbol}/{run_id}-{seq}.{ext}",
            ("symbol",),
        ),
        ("{prefix}{dataset}/symbol={exchange}/s={symbol}/{run_id}-{seq}.{ext}", ()),
        ("{prefix}{dataset}/{run_id}-{seq}-symbol={symbol}.{ext}", ()),
    ],
)
def test_hive_fields_are_the_partition_fields_rendered_as_whole_name_value_segments(
    template: str, hive: tuple[str, ...]
) -> None:
    assert KeyTemplate(template).hive_fields == hive


def test_extra_time_fields() -> None:
    template = KeyTemplate(
        "{prefix}y={year}/m={month}/d={day}/h={hour}/mi={minute}/{run_id}-{seq}.{ext}"
    )
    assert render(template).startswith("streaming/bnb/y=2023/m=11/d=14/h=22/mi=13/")


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{prefix}{dataset}/{bogus}/{run_id}-{seq}.{ext}", "unknown field {bogus}"),
        ("{prefix}{dataset}/{run_id}.{ext}", "{seq}"),
        ("{prefix}{dataset}/{seq}.{ext}", "{run_id}"),
        ("{dataset}/{prefix}{run_id}-{seq}.{ext}", "start with {prefix}"),
        ("{prefix}{dataset}/{run_id}-{seq}", "end with .{ext}"),
        ("{prefix}../{run_id}-{seq}.{ext}", "'..'"),
        ("{prefix}/{run_id}-{seq}.{ext}", "empty"),
        ("{prefix}a//{run_id}-{seq}.{ext}", "empty"),
        ("{prefix}{symbol!r}/{run_id}-{seq}.{ext}", "conversion"),
        ("{prefix}{symbol:/>9}/{run_id}-{seq}.{ext}", "format spec"),
        ("{prefix}{run_id}-{seq:6}.{ext}", "format spec"),
        ("{prefix}{symbol[0]}/{run_id}-{seq}.{ext}", "unknown field"),
        ("{prefix}a b/{run_id}-{seq}.{ext}", "characters"),
        ("{prefix}{run_id}-{seq}.{ext", "cannot parse"),
    ],
)
def test_invalid_templates(template: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        KeyTemplate(template)
    assert info.value.variable == "KEY_TEMPLATE"
    assert problem in info.value.problem


@pytest.mark.parametrize("symbol", ["../../etc", "A/B", "a\x00b", "..", ".", "", "€/..", "\n"])
def test_hostile_symbols_stay_inside_prefix(symbol: str) -> None:
    key = render(KeyTemplate(), partition={"exchange": "../x", "symbol": symbol})
    assert key.startswith("streaming/bnb/trades/exchange=.._x/symbol=")
    assert ".." not in key.split("/")
    assert "\x00" not in key


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("", ""), ("streaming/bnbusd/", "streaming/bnbusd/"), ("streaming", "streaming/")],
)
def test_validate_prefix(prefix: str, expected: str) -> None:
    assert validate_prefix(prefix) == expected


@pytest.mark.parametrize("prefix", ["/abs/", "a//b/", "a/../b/", "./a/", "a b/", "a/\x00/"])
def test_validate_prefix_refuses(prefix: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_prefix(prefix, "S3_PREFIX")
    assert info.value.variable == "S3_PREFIX"


@given(st.text())
def test_sanitize_property(value: str) -> None:
    out = sanitize(value)
    assert out
    assert out not in (".", "..")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in out)
    assert len(out) == max(len(value), 1)


@given(
    exchange=st.text(),
    symbol=st.text(),
    run_id=st.text(),
    dataset=st.text(),
    seq=st.integers(min_value=0, max_value=10**7),
    start=st.integers(min_value=0, max_value=4_000_000_000 * 10**9),
)
def test_render_property(
    exchange: str, symbol: str, run_id: str, dataset: str, seq: int, start: int
) -> None:
    key = render(
        KeyTemplate(),
        partition={"exchange": exchange, "symbol": symbol},
        run_id=run_id,
        dataset=dataset,
        seq=seq,
        window_start_ns=start,
    )
    assert key.startswith("streaming/bnb/")
    segments = key.split("/")
    assert ".." not in segments
    assert "." not in segments
    assert "" not in segments
    assert len(segments) == 8
    assert key.endswith(".ndjson.gz")
