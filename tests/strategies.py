"""Hypothesis strategies and helpers shared by the protocol parsers' tests: any JSON value,
edited sample frames, the cryptofeed recordings, trades, and the fake exchange's server side."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import strategies as st

from connectors.fake.adapters import ServerSession, get_adapter
from connectors.fake.faults import Faults
from connectors.registry import get_protocol
from engine.records import Trade

Locate = Callable[[Any, str], Any]
"""Where a field of a decoded frame lives: (message, field) -> the object holding it."""

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
"""Any JSON document: what a hostile or broken feed may put where a field belongs."""


# -- documented sample frames (the exchanges' API docs) ------------------------------
BINANCE_TRADE = (
    '{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.00100000",'
    '"q":"100.00000000","T":1672515782136,"m":true,"M":true}'
)
COINBASE_MATCH = (
    '{"type":"match","trade_id":1568268,"maker_order_id":"cac01d6d-8009-4c33-8e0d-f7f853d7c1bc",'
    '"taker_order_id":"3dec64e4-f6ad-4ca8-ad3f-e5b1a0eb0d06","side":"sell","size":"450",'
    '"price":"0.791","product_id":"SKL-USD","sequence":201390075,'
    '"time":"2021-04-17T16:43:37.121358Z"}'
)
KRAKEN_TRADE = (
    '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",'
    '"price":105944.2,"qty":0.00027625,"ord_type":"limit","trade_id":10218208,'
    '"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
)
KRAKEN_STATUS = (
    '{"channel":"status","type":"update","data":[{"api_version":"v2",'
    '"connection_id":13834774380200032777,"system":"online","version":"2.0.0"}]}'
)
KRAKEN_SUBSCRIBED = (
    '{"method":"subscribe","result":{"channel":"trade","snapshot":false,"symbol":"BTC/USD"},'
    '"success":true,"time_in":"2023-09-25T09:04:31.742599Z",'
    '"time_out":"2023-09-25T09:04:31.742648Z","req_id":1}'
)
KRAKEN_REFUSED = (
    '{"error":"Currency pair not supported XBT/USD","method":"subscribe","success":false,'
    '"symbol":"XBT/USD","time_in":"2023-09-25T09:04:31.742599Z",'
    '"time_out":"2023-09-25T09:04:31.742648Z","req_id":1}'
)
BITSTAMP_TRADE = (
    '{"data":{"id":216000477,"timestamp":"1641343699","amount":0.0792,"amount_str":"0.07920000",'
    '"price":3805.44,"price_str":"3805.44","type":0,"microtimestamp":"1641343699596000",'
    '"buy_order_id":1448061493522432,"sell_order_id":1448061484036097},'
    '"channel":"live_trades_ethusd","event":"trade"}'
)
OKX_TRADE = (
    '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
    '"tradeId":"1051102132","px":"78808.8","sz":"0.00504905","side":"sell","ts":"1788118931677",'
    '"count":"1","source":"0","seqId":80559459948}]}'
)
BYBIT_TRADE = (
    '{"topic":"publicTrade.BTCUSDT","ts":1761583474344,"type":"snapshot","data":[{'
    '"i":"2290000000923750370","T":1761583474343,"p":"115440.7","v":"0.00903","S":"Buy",'
    '"seq":89200463112,"s":"BTCUSDT","BT":false}]}'
)


# -- protocol test helpers ------------------------------------------------------------------------

RECORDINGS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cryptofeed-recordings"
"""The cryptofeed captures of real exchange traffic (``COINBASE.ws.28.0``, ``BINANCE.ws.1.0``)."""

DROP: Any = object()
"""A value for :func:`edited`: delete the field instead."""


def edited(frame: str, changes: Mapping[str, Any], locate: Locate | None = None) -> str:
    """``frame`` (a JSON object) with ``changes`` applied: each field set to its value, or
    deleted for :data:`DROP`, in the object ``locate(message, field)`` returns (the top level
    when None). Written by :mod:`json`, so integers beyond 64 bits survive."""
    msg = json.loads(frame)
    for key, value in changes.items():
        target = msg if locate is None else locate(msg, key)
        if value is DROP:
            del target[key]
        else:
            target[key] = value
    return json.dumps(msg, separators=(",", ":"))


def read_cryptofeed(path: Path) -> tuple[list[str], list[str], list[tuple[int, str]]]:
    """(connect urls, client frames, [(ts_recv ns, received frame)]) of a cryptofeed capture."""
    connects: list[str] = []
    sent: list[str] = []
    received: list[tuple[int, str]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if " <-> " in line:
                connects.append(line.split(" <-> ")[0])
            elif " <- " in line:
                sent.append(line.split(": ", 1)[1])
            else:
                epoch, text = line.split(": ", 1)
                received.append((int(Decimal(epoch) * 1_000_000_000), text))
    return connects, sent, received


def make_trade(exchange: str, symbol: str, raw_symbol: str, /, **changes: Any) -> Trade:
    """A trade of ``exchange`` (42 at 27123.45000000 x 0.01230000, a buy, at
    2023-11-14T22:13:20.123456Z, received at 7 ns) with ``changes``."""
    fields: dict[str, Any] = {
        "exchange": exchange,
        "symbol": symbol,
        "raw_symbol": raw_symbol,
        "trade_id": "42",
        "price": "27123.45000000",
        "size": "0.01230000",
        "side": "buy",
        "ts_event": 1_700_000_000_123_456,
        "ts_recv": 7,
    }
    fields.update(changes)
    return Trade(**fields)


SIDES_AND_FRAME_TYPES = pytest.mark.parametrize(
    ("side", "as_bytes"),
    [(side, as_bytes) for as_bytes in (False, True) for side in ("buy", "sell")],
)
"""A round trip's cases: each taker side, the frame as text and as bytes."""


def encoded(trade: Trade, encode: Callable[[Trade], str]) -> tuple[str, Any]:
    """``encode(trade)``: the frame, and the frame decoded."""
    frame = encode(trade)
    return frame, json.loads(frame)


def subscribed_session(exchange: str, raw_symbol: str) -> tuple[ServerSession, str]:
    """The fake exchange's session of ``exchange`` for a client that connected and subscribed
    to ``raw_symbol`` as feedvault's client does (its URL, then its subscribe frames), and the
    stream that carries the symbol's trades."""
    proto = get_protocol(exchange)
    path = urlsplit(proto.default_url).path
    url = urlsplit(proto.connection_url("ws://127.0.0.1:9" + path, [raw_symbol]))
    session = get_adapter(exchange).session(
        (url.path or "/") + (f"?{url.query}" if url.query else ""),
        frozenset([raw_symbol]),
        Faults(),
    )
    assert session is not None, f"{exchange}: the fake refuses {url.geturl()}"
    session.apply(session.opening())
    for frame in proto.subscribe_messages([raw_symbol]):
        session.apply(session.on_message(frame))
    return session, session.routes()[raw_symbol][0]
