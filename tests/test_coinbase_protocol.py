"""CoinbaseProtocol by hand: subscribe frames, parsing (the real recording), encoders; its
controls and malformed frames are in the tables of tests/test_protocol_*.py."""

from __future__ import annotations

import collections
import json
from typing import Any

import orjson
import pytest

from connectors.base import Ack
from connectors.coinbase import (
    CoinbaseProtocol,
    encode_heartbeat,
    encode_match,
)
from connectors.gaps import GapTracker
from engine.records import Trade
from tests.strategies import COINBASE_MATCH, RECORDINGS, make_trade, read_cryptofeed

RECORDING = RECORDINGS / "COINBASE.ws.28.0"


def _trade(**changes: Any) -> Trade:
    return make_trade("coinbase", "BTC-USD", "BTC-USD", **changes)


# -- trades -----------------------------------------------------------------------------------


def test_last_match_states_the_makers_side_too() -> None:
    # the documented match by hand: tests/test_protocol_contract.py
    last = COINBASE_MATCH.replace('"match"', '"last_match"').replace('"sell"', '"buy"')
    (trade,) = CoinbaseProtocol().parse(last.encode(), 5)  # type: ignore[misc]
    assert trade.side == "sell" and trade.trade_id == "1568268"


@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize("last", [False, True])
def test_round_trip_exact_text_and_taker_side(side: str, last: bool) -> None:
    original = _trade(side=side, price="0.00001305", size="985.10000000")
    frame = encode_match(original, last=last)
    msg = orjson.loads(frame)
    assert msg["type"] == ("last_match" if last else "match")
    assert msg["side"] == ("sell" if side == "buy" else "buy")  # written as the maker's side
    assert msg["price"] == "0.00001305" and msg["size"] == "985.10000000"
    assert msg["time"] == "2023-11-14T22:13:20.123456Z"
    assert CoinbaseProtocol().parse(frame, 7) == (original,)


def test_encode_escapes_unsafe_text() -> None:
    odd = _trade(raw_symbol='BTC"USD', price="1\\2")
    msg = orjson.loads(encode_match(odd))
    assert msg["product_id"] == 'BTC"USD' and msg["price"] == "1\\2"


def test_last_match_repeated_after_reconnect_is_a_duplicate() -> None:
    """A reconnect's last_match repeats a trade the client has: the session's trade-id check
    (this GapTracker) drops it; the following matches continue without a gap."""
    proto, gaps = CoinbaseProtocol(), GapTracker()
    first = [proto.parse(encode_match(_trade(trade_id=str(i)), last=i == 1), 0) for i in (1, 2, 3)]
    again = [proto.parse(encode_match(_trade(trade_id=str(i)), last=i == 3), 0) for i in (3, 4)]
    batch = [t for result in first + again for t in result]  # type: ignore[union-attr]
    kept = gaps.filter("coinbase", batch)
    assert [t.trade_id for t in kept] == ["1", "2", "3", "4"]
    assert gaps.duplicates == 1 and gaps.gaps == {}


# -- the real recording -------------------------------------------------------------------------


def test_recording_every_frame_parses_and_exactly_the_matches_become_trades() -> None:
    connects, sent, received = read_cryptofeed(RECORDING)
    assert connects == ["wss://ws-feed.pro.coinbase.com"] and len(sent) == 3
    assert len(received) == 9946
    raw = [json.loads(text) for _, text in received]
    kinds = collections.Counter(m["type"] for m in raw)
    expected = [m for m in raw if m["type"] in ("match", "last_match")]
    assert (kinds["match"], kinds["last_match"], len(expected)) == (97, 10, 107)

    proto = CoinbaseProtocol()
    trades: list[Trade] = []
    controls = []
    for (ts_recv, text), msg in zip(received, raw, strict=True):
        result = proto.parse(text, ts_recv)  # never raises on real traffic
        if isinstance(result, tuple):
            assert result == () or msg["type"] in ("match", "last_match"), text[:100]
            trades.extend(result)
        else:
            controls.append(result)
    assert controls == [Ack("subscriptions")] * kinds["subscriptions"]
    # exactly the match/last_match messages, in order, with their exact text
    assert [(t.raw_symbol, t.trade_id, t.price, t.size) for t in trades] == [
        (m["product_id"], str(m["trade_id"]), m["price"], m["size"]) for m in expected
    ]
    assert all(t.side != m["side"] for t, m in zip(trades, expected, strict=True))  # maker's side
    # the ticker channel states the TAKER's side of the same trades: it must agree
    ticker_side = {
        (m["product_id"], str(m["trade_id"])): m["side"] for m in raw if m["type"] == "ticker"
    }
    checked = [t for t in trades if (t.raw_symbol, t.trade_id) in ticker_side]
    assert len(checked) == 107
    assert all(t.side == ticker_side[(t.raw_symbol, t.trade_id)] for t in checked)
    # real trade ids are contiguous per product after the last_match
    gaps = GapTracker()
    assert len(gaps.filter("coinbase", trades)) == 107 and gaps.gaps == {}
    # a few checked by hand against the file
    by_id = {(t.raw_symbol, t.trade_id): t for t in trades}
    assert by_id[("SKL-USD", "1568268")] == Trade(
        "coinbase", "SKL-USD", "SKL-USD", "1568268", "0.791", "450", "buy",
        1_618_677_817_121_358, 1_618_677_817_129_917_900,
    )  # fmt: skip
    assert by_id[("BAND-GBP", "881613")] == Trade(  # the first last_match of the file
        "coinbase", "BAND-GBP", "BAND-GBP", "881613", "14.7775", "0.04", "buy",
        1_618_677_810_244_075, 1_618_677_817_079_762_000,
    )  # fmt: skip
    skl_btc = by_id[("SKL-BTC", "280232")]
    assert (skl_btc.symbol, skl_btc.price, skl_btc.size, skl_btc.side) == (
        "SKL-BTC",
        "0.00001305",
        "985",
        "buy",
    )


# -- controls -------------------------------------------------------------------------------------


def test_heartbeat_encoding() -> None:
    assert orjson.loads(encode_heartbeat("BTC-USD", 20, 1_415_348_368_464_459)) == {
        "type": "heartbeat",
        "last_trade_id": 20,
        "product_id": "BTC-USD",
        "sequence": 1060,
        "time": "2014-11-07T08:19:28.464459Z",
    }


# -- server side helpers --------------------------------------------------------------------------
