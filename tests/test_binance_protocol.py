"""BinanceProtocol by hand: URLs, subscribe frames, parsing (the recorded fixture), encoders
(tables: tests/test_protocol_tables.py; the contract: tests/test_protocol_contract.py)."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import binance
from connectors.binance import (
    BinanceProtocol,
    encode_trade,
    parse_stream_name,
)
from engine.errors import MalformedFrame
from engine.records import Trade
from tests.strategies import BINANCE_TRADE, RECORDINGS, make_trade, read_cryptofeed

FIXTURE = RECORDINGS / "BINANCE.ws.1.0"


def _trade(**changes: Any) -> Trade:
    defaults: dict[str, Any] = {"ts_event": 1_700_000_000_123_000}
    return make_trade("binance", "BTC-USDT", "BTCUSDT", **{**defaults, **changes})


# -- client requests ------------------------------------------------------------------------------


def test_aggtrade_streams_in_the_url() -> None:
    # its URLs and subscribe frames: tests/test_protocol_tables.py
    agg = BinanceProtocol("aggTrade").connection_url("ws://127.0.0.1:1", ["BNBBTC"])
    assert agg == "ws://127.0.0.1:1/stream?streams=bnbbtc@aggTrade"


def test_only_trade_and_aggtrade_streams() -> None:
    # bad symbols and the limit per connection: tests/test_protocol_contract.py
    with pytest.raises(ValueError):
        BinanceProtocol("depth")  # type: ignore[arg-type]


def test_subscribe_messages_count_ids() -> None:
    proto = BinanceProtocol()
    proto.subscribe_messages(["BTCUSDT", "ETHUSDT"])
    assert orjson.loads(proto.subscribe_messages(["BNBBTC"])[0])["id"] == 2


# -- parsing trades -------------------------------------------------------------------------------


def test_parse_bytes_and_exchange_name() -> None:
    proto = BinanceProtocol(exchange="binanceus")
    (trade,) = proto.parse(BINANCE_TRADE.encode(), 1)  # type: ignore[misc]
    assert trade.exchange == "binanceus" and trade.side == "sell"
    assert proto.sequenced and int(trade.trade_id) == 12345


@pytest.mark.parametrize("stream_type", ["trade", "aggTrade"])
@pytest.mark.parametrize("combined", [False, True])
@pytest.mark.parametrize("side", ["buy", "sell"])
def test_round_trip(stream_type: Any, combined: bool, side: str) -> None:
    original = _trade(side=side)
    frame = encode_trade(original, combined=combined, stream_type=stream_type)
    msg = orjson.loads(frame)
    data = msg["data"] if combined else msg
    assert data["e"] == stream_type
    assert data["m"] is (side == "sell")
    if combined:
        assert msg["stream"] == f"btcusdt@{stream_type}"
    assert BinanceProtocol(stream_type).parse(frame, 7) == (original,)
    assert BinanceProtocol().parse(frame, 7) == (original,)  # parse accepts both kinds


def test_encode_escapes_unsafe_text() -> None:
    odd = _trade(price='1"2', raw_symbol="BTC\\USDT")
    msg = orjson.loads(encode_trade(odd, combined=False))
    assert msg["p"] == '1"2' and msg["s"] == "BTC\\USDT"


# -- the recorded fixture -------------------------------------------------------------------------


def test_fixture_parses_exact_aggtrades() -> None:
    connects, sent, received = read_cryptofeed(FIXTURE)
    assert len(connects) == 1 and "@aggTrade" in connects[0]
    assert sent == []  # combined streams: subscribed by the URL
    assert len(received) == 265
    proto = BinanceProtocol("aggTrade")
    trades: list[Trade] = []
    for ts_recv, frame in received:
        result = proto.parse(frame, ts_recv)
        assert isinstance(result, tuple), frame  # no controls in this capture
        trades.extend(result)
    # The fixture README says 3 aggTrade messages; the file holds 2 (lines 110 and 209).
    assert trades == [
        Trade(
            "binance",
            "NKN-USDT",
            "NKNUSDT",
            "15683430",
            "0.35280000",
            "58.00000000",
            "buy",
            1633998523963000,
            1633998523957215000,
        ),
        Trade(
            "binance",
            "LRC-BTC",
            "LRCBTC",
            "9213679",
            "0.00000638",
            "177.00000000",
            "buy",
            1633998534486000,
            1633998534481201000,
        ),
    ]


# -- server side helpers --------------------------------------------------------------------------


def test_parse_stream_name() -> None:
    assert parse_stream_name("btcusdt@trade") == ("BTCUSDT", "trade")
    assert parse_stream_name("btcusdt@depth@100ms") == ("BTCUSDT", "depth@100ms")
    assert parse_stream_name("!serverShutdown") is None
    assert parse_stream_name("btcusdt") is None


# -- the fast path of parse -----------------------------------------------------------------------

_DIGITS = st.text("0123456789", min_size=1, max_size=22)
_FAST_FIELDS = st.fixed_dictionaries(
    {
        "raw": st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12),
        "tid": _DIGITS,
        "price": st.text("0123456789.", min_size=1, max_size=20),
        "size": st.text("0123456789.", min_size=1, max_size=20),
        "ms": _DIGITS,
        "maker": st.sampled_from(["true", "false", "null", "1"]),
        "ids": st.sampled_from(["", '"b":1,"a":2,', '"b":01,"a":2,', '"a":2,']),
        "event": st.sampled_from(["trade", "aggTrade", "Trade"]),
    }
)


def _frame(f: dict[str, str]) -> str:
    """A combined-stream trade frame in Binance's layout from raw field texts (which may be
    out of range, have leading zeros or be no JSON at all)."""
    return (
        f'{{"stream":"{f["raw"].lower()}@trade","data":{{"e":"{f["event"]}","E":{f["ms"]},'
        f'"s":"{f["raw"]}","t":{f["tid"]},"p":"{f["price"]}","q":"{f["size"]}",{f["ids"]}'
        f'"T":{f["ms"]},"m":{f["maker"]},"M":true}}}}'
    )


def _outcome(parse: Any, frame: str | bytes) -> object:
    """What ``parse`` makes of ``frame``: its result, or the kind of MalformedFrame."""
    try:
        return parse(frame, 7)
    except MalformedFrame as exc:
        return ("malformed", exc.kind)


def _assert_same(frame: str | bytes) -> None:
    protocol = BinanceProtocol()
    assert _outcome(protocol.parse, frame) == _outcome(protocol.parse_json, frame), frame


@settings(max_examples=400, deadline=None)
@given(_FAST_FIELDS, st.integers(min_value=0, max_value=400), st.binary(max_size=2))
def test_the_fast_path_gives_what_the_json_path_gives(
    fields: dict[str, str], at: int, splice: bytes
) -> None:
    """Every frame, in Binance's layout or one byte away from it, as text and as bytes:
    ``parse`` (fast path where it matches) and ``parse_json`` agree, result or error kind."""
    text = _frame(fields)
    for frame in (text, text.encode()):
        _assert_same(frame)
    data = text.encode()
    cut = min(at, len(data))
    mutated = data[:cut] + splice + data[cut + 1 :]
    _assert_same(mutated)
    with contextlib.suppress(UnicodeDecodeError):
        _assert_same(mutated.decode())


def test_the_fast_path_takes_binances_own_frames() -> None:
    """encode_trade's frames (Binance's layout) and Binance.US's with order ids match the
    pattern, so the property above exercises the fast path and not only the JSON path."""
    trade = _trade(trade_id="12345", price="97000.12000000", size="0.00100000")
    frame = encode_trade(trade, combined=True)
    assert binance._fast_text(frame) is not None
    assert BinanceProtocol().parse(frame.encode(), 7) == BinanceProtocol().parse(frame, 7)
    us = frame.replace('"T":', '"b":88,"a":99,"T":')
    assert binance._fast_text(us) is not None
    assert BinanceProtocol().parse(us, 7) == BinanceProtocol().parse_json(us, 7)
    assert BinanceProtocol().parse(frame, 7) == (
        Trade(
            "binance",
            "BTC-USDT",
            "BTCUSDT",
            "12345",
            "97000.12000000",
            "0.00100000",
            trade.side,
            trade.ts_event // 1000 * 1000,
            7,
        ),
    )
