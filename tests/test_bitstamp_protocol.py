"""BitstampProtocol: subscribe frames, parsing the documented example, and the server-side
encoders, both directions."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from connectors.bitstamp import (
    HEARTBEAT_REQUEST,
    BitstampProtocol,
    encode_trade,
)
from connectors.fake.bitstamp_server import BitstampSession
from connectors.fake.faults import Faults
from engine.errors import MalformedFrame
from engine.records import Trade
from tests.strategies import BITSTAMP_TRADE, SIDES_AND_FRAME_TYPES, encoded, make_trade


def _trade(**changes: Any) -> Trade:
    defaults: dict[str, Any] = {"trade_id": "216000478", "price": "41234.56", "size": "0.00012000"}
    return make_trade("bitstamp", "BTC-USD", "btcusd", **{**defaults, **changes})


# -- identity and client requests -----------------------------------------------------------------


def test_keepalive_is_a_heartbeat_request() -> None:
    assert BitstampProtocol().keepalive_message() == HEARTBEAT_REQUEST


# -- parsing trades -------------------------------------------------------------------------------


def test_float_fields_are_never_used() -> None:
    msg = orjson.loads(BITSTAMP_TRADE)
    msg["data"].update(price=1.0, amount=2.0, type=1)
    (trade,) = BitstampProtocol().parse(orjson.dumps(msg), 0)  # type: ignore[misc]
    assert (trade.price, trade.size, trade.side) == ("3805.44", "0.07920000", "sell")


@SIDES_AND_FRAME_TYPES
def test_round_trip(side: str, as_bytes: bool) -> None:
    original = _trade(side=side)
    frame, msg = encoded(original, encode_trade)
    assert msg["event"] == "trade" and msg["channel"] == "live_trades_btcusd"
    data = msg["data"]
    assert data["type"] == (1 if side == "sell" else 0)
    assert (data["price"], data["amount"]) == (41234.56, 0.00012)  # the float fields, too
    assert data["microtimestamp"] == "1700000000123456" and data["timestamp"] == "1700000000"
    assert BitstampProtocol().parse(frame.encode() if as_bytes else frame, 7) == (original,)


def test_round_trip_upper_case_market_symbol_and_escapes() -> None:
    # The fake market spells symbols upper case; the channel (and the parsed raw_symbol) does not.
    sent = _trade(raw_symbol="BTCUSD")
    (got,) = BitstampProtocol().parse(encode_trade(sent), 7)  # type: ignore[misc]
    assert got.raw_symbol == "btcusd" and got.symbol == "BTC-USD" and got.price == sent.price
    odd = _trade(price='1"2', size="3\\4")
    msg = orjson.loads(encode_trade(odd))
    assert msg["data"]["price_str"] == '1"2' and msg["data"]["price"] is None


# -- server side ----------------------------------------------------------------------------------


def test_server_malformed_frames_are_all_rejected() -> None:
    session = BitstampSession(frozenset({"BTCUSD"}), Faults())
    rng = random.Random(3)
    kinds = set()
    for _ in range(300):
        frame = session.malformed(_trade(raw_symbol="BTCUSD"), "live_trades_btcusd", rng)
        with pytest.raises(MalformedFrame) as info:
            BitstampProtocol().parse(frame, 0)
        kinds.add(info.value.kind)
    assert kinds == {"json", "missing-field", "type", "not-object"}
