"""KrakenProtocol: subscribe/ping frames, exact JSON-number parsing, encoders (its controls
and malformed input: tests/test_protocol_tables.py, tests/test_protocol_contract.py)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from connectors.gaps import GapTracker
from connectors.kraken import (
    JsonFloat,
    JsonInt,
    KrakenProtocol,
    encode_pong,
    encode_response,
    encode_trades,
    loads_exact,
)
from engine.records import Trade
from tests.strategies import KRAKEN_REFUSED, KRAKEN_SUBSCRIBED, KRAKEN_TRADE, make_trade


def _trade(**changes: Any) -> Trade:
    return make_trade("kraken", "BTC-USD", "BTC/USD", **changes)


# -- client requests ------------------------------------------------------------------------------


def test_subscribe_and_ping_share_request_ids() -> None:
    # the subscribe frame: tests/test_protocol_tables.py
    proto = KrakenProtocol()
    assert orjson.loads(proto.subscribe_messages(["BTC/USD"])[0])["req_id"] == 1
    assert orjson.loads(proto.keepalive_message() or "") == {"method": "ping", "req_id": 2}
    assert orjson.loads(proto.keepalive_message() or "") == {"method": "ping", "req_id": 3}


def test_legacy_pair_names_pass() -> None:
    # bad pairs and the limit per connection: tests/test_protocol_contract.py
    # legacy names pass: Kraken v2 refuses them itself, with a message worth reporting
    assert "XBT/USD" in KrakenProtocol().subscribe_messages(["XBT/USD"])[0]


# -- exact numbers ------------------------------------------------------------------------------


def test_loads_exact_keeps_number_text() -> None:
    msg = loads_exact(b'{"a":0.10000000,"b":105944,"c":1e-8,"d":"0.1","e":[-0.0,true,null]}')
    assert msg == {
        "a": "0.10000000",
        "b": "105944",
        "c": "1e-8",
        "d": "0.1",
        "e": ["-0.0", True, None],
    }
    assert type(msg["a"]) is JsonFloat and type(msg["b"]) is JsonInt and type(msg["d"]) is str
    for bad in ("NaN", '{"a":Infinity}', "-Infinity", "[" * 100_000):
        with pytest.raises(ValueError):
            loads_exact(bad)


# -- trades -------------------------------------------------------------------------------------


def test_text_survives_where_a_float_would_not() -> None:
    frame = KRAKEN_TRADE.replace("105944.2", "105944.20000000").replace(
        "0.00027625", "12345678.123456789"
    )
    (trade,) = KrakenProtocol().parse(frame.encode(), 0)  # type: ignore[misc]
    assert (trade.price, trade.size) == ("105944.20000000", "12345678.123456789")
    assert repr(float(trade.size)) != trade.size  # what a float round trip would have stored
    (whole,) = KrakenProtocol().parse(KRAKEN_TRADE.replace("105944.2", "105944"), 0)  # type: ignore[misc]
    assert whole.price == "105944"


def test_batched_update_snapshot_and_legacy_symbol() -> None:
    entry = orjson.loads(KRAKEN_TRADE)["data"][0]
    second = {**entry, "trade_id": 10218209, "side": "sell", "symbol": "XBT/USD"}
    frame = orjson.dumps({"channel": "trade", "type": "snapshot", "data": [entry, second]})
    first, other = KrakenProtocol().parse(frame, 0)  # type: ignore[misc]
    assert (first.trade_id, other.trade_id, other.side) == ("10218208", "10218209", "sell")
    assert (other.symbol, other.raw_symbol) == ("BTC-USD", "XBT/USD")
    assert KrakenProtocol().parse('{"channel":"trade","type":"update","data":[]}', 0) == ()


@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("snapshot", [False, True])
def test_round_trip_exact_text_and_taker_side(side: str, snapshot: bool) -> None:
    trades = [
        _trade(side=side),
        _trade(
            trade_id="43", price="0.00001000", size="12", raw_symbol="ETH/USD", symbol="ETH-USD"
        ),
    ]
    frame = encode_trades(trades, snapshot=snapshot)
    assert '"price":27123.45000000,"qty":0.01230000' in frame  # JSON numbers, exact text
    assert f'"side":"{side}"' in frame  # Kraken's side is the taker's already
    msg = json.loads(frame)
    assert msg["type"] == ("snapshot" if snapshot else "update")
    assert msg["data"][0]["timestamp"] == "2023-11-14T22:13:20.123456Z"
    assert KrakenProtocol().parse(frame, 7) == tuple(trades)


def test_encode_refuses_text_that_is_no_json_number() -> None:
    for bad in ({"price": "1e5"}, {"size": "-1"}, {"price": "NaN"}, {"trade_id": "x"}):
        with pytest.raises(ValueError):
            encode_trades([_trade(**bad)])


def test_reconnect_without_snapshot_records_a_gap_and_no_duplicate() -> None:
    proto, gaps = KrakenProtocol(), GapTracker()
    frames = [encode_trades([_trade(trade_id=str(i))]) for i in (1, 2, 3, 7, 8)]
    batch = [t for frame in frames for t in proto.parse(frame, 0)]  # type: ignore[union-attr]
    assert len(gaps.filter("kraken", batch)) == 5
    gaps.finish()  # the gap is pending until then (ids 4..6 might still arrive)
    assert [(g.from_id, g.to_id) for g in gaps.gaps["kraken:BTC-USD"]] == [(4, 6)]


# -- server side helpers --------------------------------------------------------------------------


def test_responses_encode_as_kraken_does() -> None:
    ok = orjson.loads(
        encode_response(
            "subscribe",
            1,
            1_695_632_671_742_599,
            1_695_632_671_742_648,
            result={"channel": "trade", "snapshot": False, "symbol": "BTC/USD"},
        )
    )
    assert ok == orjson.loads(KRAKEN_SUBSCRIBED)
    refused = encode_response(
        "subscribe",
        1,
        1_695_632_671_742_599,
        1_695_632_671_742_648,
        error="Currency pair not supported XBT/USD",
        symbol="XBT/USD",
    )
    assert orjson.loads(refused) == orjson.loads(KRAKEN_REFUSED)
    assert orjson.loads(encode_pong(101, 0, 0)) == {
        "method": "pong",
        "req_id": 101,
        "time_in": "1970-01-01T00:00:00.000000Z",
        "time_out": "1970-01-01T00:00:00.000000Z",
    }
