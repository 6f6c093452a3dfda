"""The helpers the exchanges, the fake exchange's adapters and the benchmarks share: the
malformed-frame maker, the per-connection limit, the default endpoint path, the ``--rate``
parser and the benchmarks' figures."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import pytest

from benchmarks.figures import last_json, rates
from connectors.fake.adapters import Malformations, malformed_frame
from connectors.fake.market import rate_from_text
from connectors.wire import PrefixedNames, shape_error, stream_names, with_default_path
from engine.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import SupportsLenAndGetItem

T = TypeVar("T")

GOOD = '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"px":"1.5","sz":"2","ts":"7"}]}'
SPEC = Malformations(
    item=("data", 0), missing=("px", "sz", ("arg", "instId")), wrong={"px": 1.5, "ts": "soon"}
)


class Scripted(random.Random):
    """A random source that answers ``randrange`` and ``choice`` from a script."""

    def __init__(self, *answers: int) -> None:
        super().__init__(0)
        self.answers = list(answers)

    def randrange(self, *args: Any, **kwargs: Any) -> int:
        return self.answers.pop(0)

    def choice(self, seq: SupportsLenAndGetItem[T]) -> T:
        return seq[self.answers.pop(0)]


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ((0, 10), GOOD[:10]),
        ((1,), "\x00not json " + GOOD[:20]),
        (
            (2, 0),
            {"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [{"sz": "2", "ts": "7"}]},
        ),
        ((2, 2), {"arg": {"channel": "trades"}, "data": [{"px": "1.5", "sz": "2", "ts": "7"}]}),
        (
            (3, 1),
            {
                "arg": {"channel": "trades", "instId": "BTC-USDT"},
                "data": [{"px": "1.5", "sz": "2", "ts": "soon"}],
            },
        ),
        ((4,), [orjson.loads(GOOD)]),
    ],
)
def test_malformed_frame_spoils_the_frame_at_the_named_places(
    answers: tuple[int, ...], expected: object
) -> None:
    rng = Scripted(*answers)
    frame = malformed_frame(GOOD, rng, SPEC)
    assert rng.answers == []  # exactly the draws the choice needs, no more
    assert (frame if isinstance(expected, str) else orjson.loads(frame)) == expected


def test_malformed_frame_is_the_same_for_the_same_seed() -> None:
    first = [malformed_frame(GOOD, random.Random(5), SPEC) for _ in range(3)]
    assert first == [malformed_frame(GOOD, random.Random(5), SPEC) for _ in range(3)]


def test_stream_names_checks_the_limit_then_each_name() -> None:
    assert stream_names("x", "topics", 2, ["a", "b"], str.upper) == ["A", "B"]
    with pytest.raises(ValueError, match=r"^x: at most 2 topics per connection, got 3$"):
        stream_names("x", "topics", 2, ["a", "b", "c"], str.upper)

    def refuse(symbol: str) -> str:
        raise ValueError(f"bad {symbol}")

    with pytest.raises(ValueError, match="bad a"):
        stream_names("x", "topics", 2, ["a"], refuse)


def test_prefixed_names_spell_and_read_back_a_symbols_stream() -> None:
    names = PrefixedNames("bybit", "publicTrade.", str.upper)
    assert names.name("btcUSDT") == "publicTrade.BTCUSDT"
    assert names.symbol("publicTrade.BTCUSDT") == "BTCUSDT"
    assert names.symbol("orderbook.1.BTCUSDT") is None
    assert names.symbol("publicTrade.B") is None
    with pytest.raises(
        ValueError, match=r"^bybit symbol 'BTC-USD' is not 2-40 letters and digits$"
    ):
        names.name("BTC-USD")


@pytest.mark.parametrize(
    ("exc", "reason", "message"),
    [
        (KeyError("px"), "missing-field", "trade push has no field 'px'"),
        (AttributeError("get"), "not-object", "frame is not a JSON object"),
        (TypeError("unhashable"), "type", "arg has the wrong type"),
    ],
)
def test_shape_error_names_the_reason_of_each_access_error(
    exc: Exception, reason: str, message: str
) -> None:
    error = shape_error(exc, "frame is not a JSON object", "trade push", "arg has the wrong type")
    assert (error.kind, error.detail) == (reason, message)


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("ws://127.0.0.1:9001", "ws://127.0.0.1:9001/ws/v5/public"),
        ("ws://127.0.0.1:9001/", "ws://127.0.0.1:9001/ws/v5/public"),
        ("wss://ws.example/custom", "wss://ws.example/custom"),
        ("wss://ws.example/custom/", "wss://ws.example/custom"),
    ],
)
def test_with_default_path_adds_the_path_only_to_a_bare_host(base: str, url: str) -> None:
    assert with_default_path(base, "/ws/v5/public") == url


@pytest.mark.parametrize(("text", "rate"), [("max", None), ("MAX", None), ("250", 250.0)])
def test_rate_from_text(text: str, rate: float | None) -> None:
    assert rate_from_text(text) == rate


@pytest.mark.parametrize("text", ["fast", "0", "-5", "inf", "nan"])
def test_rate_from_text_refuses_what_is_not_a_positive_rate(text: str) -> None:
    with pytest.raises(ConfigError, match="--rate"):
        rate_from_text(text)


def test_benchmark_figures_name_the_unit_and_survive_zero_items() -> None:
    figures = rates(0, 2.0, 0.5, unit="msg")
    assert list(figures) == ["seconds", "msgs_per_s", "cpu_us_per_msg", "peak_rss_mb"]
    assert (figures["msgs_per_s"], figures["cpu_us_per_msg"]) == (0.0, 500000.0)
    assert rates(4, 2.0, 0.001)["cpu_us_per_trade"] == 250.0
    assert last_json('noise\n{"trades": 3}\n\n') == {"trades": 3}
