"""RFC 3339 timestamps <-> integer microseconds, exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.timefmt import format_us, parse_us, parse_us_strict

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2021-04-17T16:43:37.121358Z", 1_618_677_817_121_358),
        ("2023-10-06T17:35:55.440295Z", 1_696_613_755_440_295),
        ("2021-04-17T16:43:37Z", 1_618_677_817_000_000),
        ("2021-04-17T16:43:37.1Z", 1_618_677_817_100_000),
        ("2021-04-17T16:43:37.123456789Z", 1_618_677_817_123_456),  # ns truncated
        ("2021-04-17t16:43:37.5z", 1_618_677_817_500_000),
        ("2021-04-17T18:43:37.121358+02:00", 1_618_677_817_121_358),
        ("2021-04-17T11:13:37.121358-05:30", 1_618_677_817_121_358),
        ("2016-12-31T23:59:60Z", 1_483_228_800_000_000),  # leap second: next minute
        ("2024-02-29T00:00:00Z", 1_709_164_800_000_000),
        ("9999-12-31T23:59:59.999999Z", 253_402_300_799_999_999),
    ],
)
def test_parse_examples(text: str, micros: int) -> None:
    assert parse_us(text) == micros


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2021-04-17",
        "2021-04-17 16:43:37Z",
        "2021-04-17T16:43:37",
        "2021-04-17T16:43:37.Z",
        "2021-04-17T16:43:37.1234567890Z",
        "2021-04-17T24:00:00Z",
        "2021-04-17T23:60:00Z",
        "2021-04-17T23:59:61Z",
        "2021-02-29T00:00:00Z",
        "2021-13-01T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999Z",
        "2021-04-17T16:43:37+24:00",
        "2021-04-17T16:43:37+0200",
        "\uff12\uff10\uff12\uff11-04-17T16:43:37Z",  # full-width digits
        "2021-04-17T16:43:37Z ",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_us(text)


def test_format_examples_and_range() -> None:
    assert format_us(0) == "1970-01-01T00:00:00.000000Z"
    assert format_us(1_618_677_817_121_358) == "2021-04-17T16:43:37.121358Z"
    assert format_us(253_402_300_799_999_999) == "9999-12-31T23:59:59.999999Z"
    for bad in (-1, 253_402_300_800_000_000):
        with pytest.raises(ValueError):
            format_us(bad)


@given(st.integers(min_value=0, max_value=253_402_300_799_999_999))
def test_round_trip_agrees_with_datetime(micros: int) -> None:
    text = format_us(micros)
    assert parse_us(text) == micros
    expected = EPOCH + timedelta(microseconds=micros)
    assert text == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(st.text(max_size=40))
def test_parse_raises_only_value_error(text: str) -> None:
    try:
        micros = parse_us(text)
    except ValueError:
        return
    assert micros >= 0


def _outcome(parse: object, text: str) -> int | None:
    try:
        return parse(text)  # type: ignore[operator, no-any-return]
    except ValueError:
        return None


@given(
    st.integers(min_value=0, max_value=253_402_300_799_999_999),
    st.lists(
        st.tuples(st.integers(0, 26), st.sampled_from("0123456789-:.TtZz+ W٣\x00")), max_size=3
    ),
)
def test_fast_path_agrees_with_the_strict_parser(micros: int, edits: list[tuple[int, str]]) -> None:
    chars = list(format_us(micros))
    for index, char in edits:
        chars[index] = char
    text = "".join(chars)
    assert _outcome(parse_us, text) == _outcome(parse_us_strict, text)
