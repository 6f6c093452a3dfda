"""BybitProtocol: URL, subscribe frames (10 args each), parsing (documented example, pushes of
1024 trades) and the server-side encoders, both directions."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from connectors.bybit import (
    MAX_ARGS_CHARS,
    MAX_ARGS_PER_REQUEST,
    MAX_STREAMS_PER_CONNECTION,
    BybitProtocol,
    encode_trade,
    encode_trades,
)
from connectors.fake.bybit_server import BybitSession
from connectors.fake.faults import Faults
from engine.errors import MalformedFrame
from engine.records import Trade
from tests.strategies import BYBIT_TRADE, SIDES_AND_FRAME_TYPES, encoded, make_trade


def _trade(**changes: Any) -> Trade:
    defaults: dict[str, Any] = {
        "trade_id": "2290000000923750371",
        "price": "115440.70",
        "size": "0.00100",
        "side": "sell",
        "ts_event": 1_761_583_474_345_000,
    }
    return make_trade("bybit", "BTC-USDT", "BTCUSDT", **{**defaults, **changes})


# -- identity and client requests -----------------------------------------------------------------


def test_keepalive_is_a_ping_with_a_request_id() -> None:
    proto = BybitProtocol()
    assert orjson.loads(proto.keepalive_message() or "") == {"req_id": "1", "op": "ping"}
    assert orjson.loads(proto.keepalive_message() or "")["req_id"] == "2"


def test_subscribe_frames_hold_at_most_ten_topics() -> None:
    proto = BybitProtocol()
    assert proto.subscribe_messages([]) == []
    symbols = [f"S{i}USDT" for i in range(23)]
    frames = [orjson.loads(f) for f in proto.subscribe_messages(symbols)]
    assert [len(f["args"]) for f in frames] == [10, 10, 3]
    assert [f["req_id"] for f in frames] == ["1", "2", "3"]
    assert all(f["op"] == "subscribe" for f in frames)
    assert [a for f in frames for a in f["args"]] == [f"publicTrade.{s}" for s in symbols]
    assert orjson.loads(proto.subscribe_messages(["btcusdt"])[0])["args"] == ["publicTrade.BTCUSDT"]


def test_connection_limit_respects_the_args_length_limit() -> None:
    longest = ["A" * 36 + f"{i:04d}" for i in range(MAX_STREAMS_PER_CONNECTION)]
    args = [a for f in BybitProtocol().subscribe_messages(longest) for a in orjson.loads(f)["args"]]
    assert len(json.dumps(args)) < MAX_ARGS_CHARS
    assert MAX_ARGS_PER_REQUEST == 10


# -- parsing trades -------------------------------------------------------------------------------


def test_uuid_trade_ids_of_linear_feeds() -> None:
    msg = orjson.loads(BYBIT_TRADE)
    msg["data"][0].update(i="20f43950-d8dd-5b31-9112-a178eb6023af", L="PlusTick")
    (trade,) = BybitProtocol().parse(orjson.dumps(msg), 0)  # type: ignore[misc]
    assert trade.trade_id == "20f43950-d8dd-5b31-9112-a178eb6023af"


@SIDES_AND_FRAME_TYPES
def test_round_trip(side: str, as_bytes: bool) -> None:
    original = _trade(side=side)
    frame, msg = encoded(original, encode_trade)
    assert msg["topic"] == "publicTrade.BTCUSDT" and msg["type"] == "snapshot"
    (item,) = msg["data"]
    assert (
        item["S"] == side.capitalize() and item["T"] == 1761583474345 and item["p"] == "115440.70"
    )
    assert BybitProtocol().parse(frame.encode() if as_bytes else frame, 7) == [original]


def test_1024_trades_in_one_push_all_in_order() -> None:
    trades = [
        _trade(trade_id=str(10**18 + 7 * n), side="buy" if n % 3 else "sell", size=f"0.{n:05d}")
        for n in range(1024)
    ]
    frame = encode_trades(trades, ts_ms=1761583474400)
    assert orjson.loads(frame)["ts"] == 1761583474400
    assert BybitProtocol().parse(frame, 7) == trades
    with pytest.raises(ValueError):
        encode_trades([])


# -- server side ----------------------------------------------------------------------------------


def test_server_malformed_frames_are_all_rejected() -> None:
    session = BybitSession("c", frozenset({"BTCUSDT"}), Faults())
    rng = random.Random(3)
    kinds = set()
    for _ in range(300):
        frame = session.malformed(_trade(), "publicTrade.BTCUSDT", rng)
        with pytest.raises(MalformedFrame) as info:
            BybitProtocol().parse(frame, 0)
        kinds.add(info.value.kind)
    assert kinds == {"json", "missing-field", "type", "not-object"}
