"""OkxProtocol: URL, subscribe frame, parsing (documented example, multi-trade pushes, text
pong, controls) and the server-side encoders, both directions."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from connectors.fake.faults import Faults
from connectors.fake.okx_server import OkxSession
from connectors.okx import (
    MAX_STREAMS_PER_CONNECTION,
    OkxProtocol,
    encode_trade,
    encode_trades,
)
from engine.errors import MalformedFrame
from engine.records import Trade
from tests.strategies import OKX_TRADE, SIDES_AND_FRAME_TYPES, encoded, make_trade


def _trade(**changes: Any) -> Trade:
    defaults: dict[str, Any] = {
        "trade_id": "1051102133",
        "price": "78808.90",
        "size": "0.00100000",
        "ts_event": 1_788_118_931_678_000,
    }
    return make_trade("okx", "BTC-USDT", "BTC-USDT", **{**defaults, **changes})


# -- identity and client requests -----------------------------------------------------------------


def test_keepalive_is_a_text_ping() -> None:
    assert OkxProtocol().keepalive_message() == "ping"


def test_a_full_connection_fits_one_request() -> None:
    # the subscribe frame: tests/test_protocol_tables.py
    longest = ["A" * 20 + f"-{i:020d}" for i in range(MAX_STREAMS_PER_CONNECTION)]
    (big,) = OkxProtocol().subscribe_messages(longest)
    assert len(big.encode()) < 64 * 1024  # OKX's request limit (and the fake's frame limit)


# -- parsing trades -------------------------------------------------------------------------------


def test_older_traffic_without_count_source_seq() -> None:
    msg = orjson.loads(OKX_TRADE)
    for key in ("count", "source", "seqId", "instId"):
        del msg["data"][0][key]
    (trade,) = OkxProtocol().parse(orjson.dumps(msg), 1)  # type: ignore[misc]
    assert trade.trade_id == "1051102132" and trade.symbol == "BTC-USDT"


@SIDES_AND_FRAME_TYPES
def test_round_trip(side: str, as_bytes: bool) -> None:
    original = _trade(side=side)
    frame, msg = encoded(original, encode_trade)
    assert msg["arg"] == {"channel": "trades", "instId": "BTC-USDT"}
    (item,) = msg["data"]
    assert item["side"] == side and item["ts"] == "1788118931678" and item["px"] == "78808.90"
    assert OkxProtocol().parse(frame.encode() if as_bytes else frame, 7) == [original]


def test_many_trades_in_one_push_all_in_order() -> None:
    trades = [
        _trade(trade_id=str(100 + 3 * n), side="sell" if n % 2 else "buy", price=f"{n}.50")
        for n in range(50)
    ]
    assert OkxProtocol().parse(encode_trades(trades), 7) == trades
    assert (
        OkxProtocol().parse('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[]}', 0) == []
    )
    with pytest.raises(ValueError):
        encode_trades([])


# -- controls -------------------------------------------------------------------------------------


def test_one_bad_trade_rejects_the_whole_push() -> None:
    msg = orjson.loads(encode_trades([_trade(), _trade(trade_id="2")]))
    msg["data"][1]["px"] = 1.5
    with pytest.raises(MalformedFrame):
        OkxProtocol().parse(orjson.dumps(msg), 0)


# -- server side ----------------------------------------------------------------------------------


def test_server_malformed_frames_are_all_rejected() -> None:
    session = OkxSession("x", frozenset({"BTC-USDT"}), Faults())
    rng = random.Random(3)
    kinds = set()
    for _ in range(300):
        frame = session.malformed(_trade(), "trades:BTC-USDT", rng)
        with pytest.raises(MalformedFrame) as info:
            OkxProtocol().parse(frame, 0)
        kinds.add(info.value.kind)
    assert kinds == {"json", "missing-field", "type", "not-object"}
