"""The protocol contract, one suite for the seven exchanges (connectors/registry.py).

Every client protocol's ``parse``:

- lets only :class:`MalformedFrame` escape (with a kind and a text detail), for any text, any
  bytes, any truncation of a documented trade, any JSON value in place of any field, any JSON
  document, deep nesting, huge numbers, any text in the text fields, and the fake exchange's
  hostile frames (issue 7: invalid UTF-8, symbols with ``/``, ``..`` and NUL);
- returns only well-formed results: trades with a taker side, text prices and ids, a canonical
  symbol whose key stays under the prefix, writable by the sink; or the controls its exchange
  has (:attr:`Contract.controls`), their messages printable;
- reads back exactly the trade the fake exchange wrote (records -> frames, written by the fake's
  server side for a client subscribed as feedvault subscribes -> records).

What differs by exchange is in :data:`CONTRACTS`, one row each: its documented sample frame,
where its fields sit, its nesting, its numbers and its text fields. Exchange-specific tests
(documented examples by hand, the recordings, controls, malformed tables) stay in
tests/test_<exchange>_protocol.py. The numbers of hypothesis examples are those of the
per-exchange tests this suite replaced.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.base import Ack, ExchangeError, Heartbeat, ReconnectNotice
from connectors.binance import encode_trade as binance_encode_trade
from connectors.fake.adapters import get_adapter
from connectors.fake.hostile import HOSTILE_KINDS, HOSTILE_SYMBOLS, hostile_frame
from connectors.limits import MAX_JSON_DEPTH, classify
from connectors.registry import PROTOCOLS, get_protocol
from engine.errors import MalformedFrame
from engine.records import Trade
from sinks.keys import KeyTemplate
from tests.strategies import (
    BINANCE_TRADE,
    BITSTAMP_TRADE,
    BYBIT_TRADE,
    COINBASE_MATCH,
    DROP,
    KRAKEN_REFUSED,
    KRAKEN_STATUS,
    KRAKEN_SUBSCRIBED,
    KRAKEN_TRADE,
    OKX_TRADE,
    Locate,
    edited,
    json_values,
    make_trade,
    subscribed_session,
)

Frames = Callable[[str, Any], Sequence[str | bytes]]
"""(field, value) -> frames that carry ``value`` in that field."""


def _replacing(sample: str) -> Callable[[str, int], str]:
    """A huge number put in front of ``field``'s value in ``sample`` (the old value follows
    under ``"_"``)."""
    return lambda name, number: sample.replace(f'"{name}":', f'"{name}":{number},"_":', 1)


@dataclass(frozen=True)
class Contract:
    """What the contract tests need to know of one exchange."""

    exchange: str
    sample: str
    """A documented trade frame."""
    locate: Locate | None
    """Where a field of :attr:`sample` sits (None: the top level)."""
    controls: tuple[type, ...]
    """What ``parse`` may return besides trades."""
    server_symbol: str
    """A raw symbol the fake exchange trades; :attr:`raw_symbol` is how the client reads it."""
    raw_symbol: str
    symbol: str
    ts_step: int
    """The exchange's time resolution in microseconds (1000: milliseconds)."""
    fields: dict[str, tuple[tuple[str, ...], Frames]]
    """Name -> fields fuzzed with any JSON value, and the frames that carry one."""
    nesting: tuple[tuple[str, str, str], ...]
    """(open, core, close): the frame ``open * depth + core + close * depth``."""
    huge_fields: tuple[str, ...]
    huge_bound: int = 10**40
    huge: Callable[[str, int], str] | None = None
    """(field, number) -> the sample with a huge number there (default: put in front)."""
    unicode: st.SearchStrategy[str | bytes] | None = None
    """Frames with any text in the text fields."""
    truncated: tuple[str, ...] = field(default=())
    """Frames truncated anywhere besides :attr:`sample`."""

    def with_huge(self, name: str, number: int) -> str:
        return (self.huge or _replacing(self.sample))(name, number)

    def edit(self, **changes: Any) -> str:
        return edited(self.sample, changes, self.locate)


def _binance_frames(name: str, value: Any) -> list[str]:
    msg = orjson.loads(BINANCE_TRADE)
    msg[name] = value
    return [json.dumps(msg), json.dumps({"stream": "bnbbtc@trade", "data": msg})]


def _coinbase_frames(name: str, value: Any) -> list[str]:
    msg = orjson.loads(COINBASE_MATCH)
    msg[name] = value
    as_error = {**msg, "type": "error"}
    return [json.dumps(msg), json.dumps(as_error)]


def _kraken_entry(msg: Any, name: str) -> Any:
    return msg["data"][0]


def _kraken_entry_frames(name: str, value: Any) -> list[str]:
    return [edited(KRAKEN_TRADE, {name: value}, _kraken_entry)]


def _kraken_top_frames(name: str, value: Any) -> list[str]:
    bases = (KRAKEN_TRADE, KRAKEN_STATUS, KRAKEN_SUBSCRIBED, KRAKEN_REFUSED)
    return [edited(base, {name: value}) for base in bases]


def _bitstamp_locate(msg: Any, name: str) -> Any:
    return msg if name in ("channel", "event", "data") else msg["data"]


def _okx_locate(msg: Any, name: str) -> Any:
    if name in ("arg", "data"):
        return msg
    return msg["arg"] if name in ("channel", "instId") else msg["data"][0]


def _bybit_locate(msg: Any, name: str) -> Any:
    return msg if name in ("topic", "data", "op") else msg["data"][0]


def _editing(sample: str, locate: Locate | None) -> Frames:
    return lambda name, value: [edited(sample, {name: value}, locate)]


_text = st.text(min_size=1)
_TRADES_AND_ERRORS = (Ack, Heartbeat, ExchangeError)
_WITH_NOTICES = (Ack, Heartbeat, ExchangeError, ReconnectNotice)
_BINANCE_FIELDS = ("e", "E", "s", "t", "a", "p", "q", "T", "m", "stream", "data", "result")
_COINBASE_FIELDS = ("type", "trade_id", "price", "size", "side", "time", "product_id", "message")
_COINBASE_FIELDS += ("reason",)
_OKX_FIELDS = ("arg", "data", "channel", "instId", "tradeId", "px", "sz", "side", "ts", "event")
_OKX_FIELDS += ("code",)
_BINANCE = dict(
    sample=BINANCE_TRADE,
    locate=None,
    controls=(Ack, ExchangeError, ReconnectNotice),
    ts_step=1000,
    fields={"fields": (_BINANCE_FIELDS, _binance_frames)},
    nesting=(('{"e":"trade","data":', "1", "}"), ("[", "", "]")),
    huge_fields=("t", "T", "E"),
    unicode=st.builds(
        lambda p, q, s: edited(BINANCE_TRADE, {"p": p, "q": q, "s": s}), _text, _text, st.text()
    ),
    truncated=(binance_encode_trade(make_trade("binance", "BTC-USDT", "BTCUSDT"), combined=True),),
)

CONTRACTS: dict[str, Contract] = {
    contract.exchange: contract
    for contract in [
        Contract(
            "binance", server_symbol="BTCUSDT", raw_symbol="BTCUSDT", symbol="BTC-USDT", **_BINANCE
        ),
        Contract(
            "binanceus", server_symbol="BTCUSD", raw_symbol="BTCUSD", symbol="BTC-USD", **_BINANCE
        ),
        Contract(
            "coinbase",
            sample=COINBASE_MATCH,
            locate=None,
            controls=_TRADES_AND_ERRORS,
            server_symbol="BTC-USD",
            raw_symbol="BTC-USD",
            symbol="BTC-USD",
            ts_step=1,
            fields={
                "fields": (
                    _COINBASE_FIELDS,
                    _coinbase_frames,
                )
            },
            nesting=(('{"type":"match","price":', "1", "}"), ("[", "", "]")),
            huge_fields=("trade_id", "size"),
            unicode=st.builds(
                lambda text, name: edited(COINBASE_MATCH, {name: text}),
                st.text(min_size=1, max_size=30),
                st.sampled_from(["price", "size", "time", "product_id"]),
            ),
        ),
        Contract(
            "kraken",
            sample=KRAKEN_TRADE,
            locate=_kraken_entry,
            controls=_TRADES_AND_ERRORS,
            server_symbol="BTC/USD",
            raw_symbol="BTC/USD",
            symbol="BTC-USD",
            ts_step=1,
            fields={
                "entry": (
                    ("symbol", "side", "price", "qty", "trade_id", "timestamp", "ord_type"),
                    _kraken_entry_frames,
                ),
                "top": (
                    ("channel", "type", "data", "method", "success", "error", "symbol", "result"),
                    _kraken_top_frames,
                ),
            },
            nesting=(('{"channel":"trade","data":', "1", "}"), ("[", "", "]")),
            huge_fields=("price", "qty", "trade_id"),
            huge_bound=10**60,
            unicode=st.builds(
                lambda text, name: json.dumps(
                    edited_object(KRAKEN_TRADE, {name: text}, _kraken_entry), ensure_ascii=False
                ).encode("utf-8", "surrogatepass"),
                st.text(min_size=1, max_size=30),
                st.sampled_from(["symbol", "side", "timestamp"]),
            ),
        ),
        Contract(
            "bitstamp",
            sample=BITSTAMP_TRADE,
            locate=_bitstamp_locate,
            controls=_WITH_NOTICES,
            server_symbol="BTCUSD",
            raw_symbol="btcusd",
            symbol="BTC-USD",
            ts_step=1,
            fields={
                "fields": (
                    (
                        "id",
                        "price_str",
                        "amount_str",
                        "type",
                        "microtimestamp",
                        "channel",
                        "event",
                        "data",
                    ),
                    _editing(BITSTAMP_TRADE, _bitstamp_locate),
                )
            },
            nesting=(
                ('{"event":"trade","data":', "1", "}"),
                ('{"event":"bts:error","data":', "{}", "}"),
            ),
            huge_fields=("id", "type"),
            unicode=st.builds(
                lambda p, s, c: edited(
                    BITSTAMP_TRADE,
                    {"price_str": p, "amount_str": s, "channel": c},
                    _bitstamp_locate,
                ),
                _text,
                _text,
                st.sampled_from(["live_trades_btcusd", "ü"]),
            ),
        ),
        Contract(
            "okx",
            sample=OKX_TRADE,
            locate=_okx_locate,
            controls=_WITH_NOTICES,
            server_symbol="BTC-USDT",
            raw_symbol="BTC-USDT",
            symbol="BTC-USDT",
            ts_step=1000,
            fields={
                "fields": (
                    _OKX_FIELDS,
                    _editing(OKX_TRADE, _okx_locate),
                )
            },
            nesting=(
                ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":', "[]", "}"),
                ("[", "", "]"),
            ),
            huge_fields=("ts", "seqId"),
            huge=lambda name, number: edited(OKX_TRADE, {name: number}, _okx_locate),
            unicode=st.builds(
                lambda p, s, i: edited(OKX_TRADE, {"px": p, "sz": s, "tradeId": i}, _okx_locate),
                _text,
                _text,
                st.text(),
            ),
        ),
        Contract(
            "bybit",
            sample=BYBIT_TRADE,
            locate=_bybit_locate,
            controls=_WITH_NOTICES,
            server_symbol="BTCUSDT",
            raw_symbol="BTCUSDT",
            symbol="BTC-USDT",
            ts_step=1000,
            fields={
                "fields": (
                    ("topic", "data", "op", "i", "T", "p", "v", "S", "s", "seq"),
                    _editing(BYBIT_TRADE, _bybit_locate),
                )
            },
            nesting=(
                ('{"topic":"publicTrade.BTCUSDT","data":', "[]", "}"),
                ('{"op":"subscribe","success":', "true", "}"),
            ),
            huge_fields=("T", "seq", "ts"),
            unicode=st.builds(
                lambda p, v, s: edited(BYBIT_TRADE, {"p": p, "v": v, "s": s}, _bybit_locate),
                _text,
                _text,
                st.text(),
            ),
        ),
    ]
}
EXCHANGES = sorted(CONTRACTS)
FIELD_CASES = [
    pytest.param(CONTRACTS[name], fields, frames, id=f"{name}-{label}")
    for name in EXCHANGES
    for label, (fields, frames) in CONTRACTS[name].fields.items()
]
CANONICAL = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}")


def edited_object(frame: str, changes: dict[str, Any], locate: Locate) -> Any:
    """:func:`edited`, decoded."""
    return json.loads(edited(frame, changes, locate))


def test_every_exchange_has_its_contract() -> None:
    assert set(CONTRACTS) == set(PROTOCOLS)


def check(exchange: str, frame: str | bytes) -> Any:
    """Parse ``frame``: a :class:`MalformedFrame` (returned, classified) is the only exception
    allowed; anything returned is well-formed (see the module docstring)."""
    contract = CONTRACTS[exchange]
    try:
        result = get_protocol(exchange).parse(frame, 0)
    except MalformedFrame as exc:
        assert exc.kind and isinstance(exc.detail, str)
        return classify(frame, exc)
    if isinstance(result, tuple | list):
        for trade in result:
            assert isinstance(trade, Trade) and trade.side in ("buy", "sell")
            assert type(trade.price) is str and type(trade.trade_id) is str
            orjson.dumps(trade)  # everything in a trade can be written by the sink
            assert CANONICAL.fullmatch(trade.symbol), trade
            key = KeyTemplate().render(
                prefix="p/",
                dataset="trades",
                partition={"exchange": trade.exchange, "symbol": trade.symbol},
                window_start_ns=0,
                run_id="r",
                seq=0,
                ext="ndjson.gz",
            )
            assert key.startswith("p/trades/") and "/../" not in key and "\x00" not in key
    else:
        assert isinstance(result, contract.controls), result
        if isinstance(result, ExchangeError):
            result.message.encode("utf-8")  # printable: no lone surrogates from the frame
    return result


# -- malformed frames, by exchange: each is rejected with MalformedFrame of its kind -------------

_binance = CONTRACTS["binance"].edit
_coinbase = CONTRACTS["coinbase"].edit
_bitstamp = CONTRACTS["bitstamp"].edit
_okx = CONTRACTS["okx"].edit
_bybit = CONTRACTS["bybit"].edit


def _kraken(**changes: Any) -> str:
    """The documented sample trade with its entry's fields changed (values as JSON text)."""
    msg = orjson.loads(KRAKEN_TRADE)
    entry = msg["data"][0]
    entry["price"], entry["qty"] = "@P", "@Q"
    for key, value in changes.items():
        if value is DROP:
            del entry[key]
        else:
            entry[key] = f"@{key}"
    text = orjson.dumps(msg).decode()
    text = text.replace('"@P"', "105944.2", 1).replace('"@Q"', "0.00027625", 1)
    for key, value in changes.items():
        if value is not DROP:
            text = text.replace(f'"@{key}"', value, 1)
    return text


MALFORMED: dict[str, list[tuple[str | bytes, str]]] = {
    "binance": [
        ("", "json"),
        ("{", "json"),
        ("not json", "json"),
        (b"\xff\xfe{}", "json"),
        ('{"e":"trade","s":"\ud800"}', "json"),
        ("[" * 2000 + "]" * 2000, "json"),
        ("[]", "not-object"),
        ("1", "not-object"),
        ('"text"', "not-object"),
        ("null", "not-object"),
        ('{"stream":"x","data":[1]}', "not-object"),
        ('{"stream":"x","data":null}', "not-object"),
        ('{"e":["trade"]}', "type"),
        ('{"e":5}', "type"),
        ('{"code":"2","msg":"x"}', "type"),
        (_binance(p=DROP), "missing-field"),
        (_binance(q=DROP), "missing-field"),
        (_binance(T=DROP), "missing-field"),
        (_binance(t=DROP), "missing-field"),
        (_binance(s=DROP), "missing-field"),
        (_binance(m=DROP), "missing-field"),
        (_binance(p=0.001), "type"),
        (_binance(q=100), "type"),
        (_binance(p=""), "type"),
        (_binance(p=None), "type"),
        (_binance(T="1672515782136"), "type"),
        (_binance(T=1.5), "type"),
        (_binance(T=-1), "type"),
        (_binance(T=10**18), "type"),
        (_binance(t="12345"), "type"),
        (_binance(t=True), "type"),
        (_binance(t=-5), "type"),
        (_binance(m="true"), "type"),
        (_binance(m=1), "type"),
        (_binance(s=["BNBBTC"]), "type"),
        (_binance(s=5), "type"),
        (_binance(s="FOO"), "symbol"),
        (BINANCE_TRADE.replace("12345", "123456789012345678901234567890"), "type"),
        (BINANCE_TRADE.replace("1672515782136", "1e400"), "json"),
    ],
    "coinbase": [
        ("", "json"),
        ("{", "json"),
        (b"\xff\xfe{}", "json"),
        ('{"type":"match","product_id":"\ud800"}', "json"),
        ("[" * 2000 + "]" * 2000, "json"),
        ("[]", "not-object"),
        ("null", "not-object"),
        ('"match"', "not-object"),
        ("{}", "missing-field"),
        ('{"type":5}', "type"),
        ('{"type":["match"]}', "type"),
        ('{"type":"error","message":5}', "type"),
        ('{"type":"error","message":"x","reason":[1]}', "type"),
        (_coinbase(trade_id=DROP), "missing-field"),
        (_coinbase(price=DROP), "missing-field"),
        (_coinbase(size=DROP), "missing-field"),
        (_coinbase(side=DROP), "missing-field"),
        (_coinbase(time=DROP), "missing-field"),
        (_coinbase(product_id=DROP), "missing-field"),
        (_coinbase(price=0.791), "type"),
        (_coinbase(size=450), "type"),
        (_coinbase(price=None), "type"),
        (_coinbase(price=""), "decimal"),
        (_coinbase(price="1e5"), "decimal"),
        (_coinbase(size="-1"), "decimal"),
        (_coinbase(price="NaN"), "decimal"),
        (_coinbase(price="٣"), "decimal"),
        (_coinbase(trade_id="1568268"), "type"),
        (_coinbase(trade_id=-1), "type"),
        (_coinbase(trade_id=1.5), "type"),
        (_coinbase(trade_id=True), "type"),
        (_coinbase(trade_id=2**63), "type"),
        (_coinbase(side="up"), "type"),
        (_coinbase(side=None), "type"),
        (_coinbase(time=1618677817), "type"),
        (_coinbase(time="2021-04-17 16:43:37"), "time"),
        (_coinbase(time="2021-02-30T16:43:37Z"), "time"),
        (_coinbase(time="1969-12-31T23:59:59Z"), "time"),
        (_coinbase(product_id=["SKL-USD"]), "type"),
        (_coinbase(product_id=5), "type"),
        (_coinbase(product_id="SKL-USD-EUR"), "symbol"),
        (_coinbase(product_id="SKL_USD"), "symbol"),
        (COINBASE_MATCH.replace("1568268", "1" * 30), "type"),
    ],
    "kraken": [
        ("", "json"),
        ("{", "json"),
        (b"\xff\xfe{}", "json"),
        ("[" * 5000 + "]" * 5000, "json"),
        (KRAKEN_TRADE.replace("105944.2", "NaN"), "json"),
        (KRAKEN_TRADE.replace("105944.2", "Infinity"), "json"),
        (KRAKEN_TRADE + "x", "json"),
        ("[]", "not-object"),
        ("null", "not-object"),
        ("1.5", "not-object"),
        ('{"channel":5}', "type"),
        ('{"method":["pong"]}', "type"),
        ('{"method":"subscribe","success":"yes"}', "type"),
        ('{"channel":"status","data":[]}', "type"),
        ('{"channel":"status","data":[{"system":1}]}', "type"),
        ('{"channel":"trade","type":"update","data":{}}', "type"),
        ('{"channel":"trade","type":"delete","data":[]}', "type"),
        ('{"channel":"trade","data":[]}', "type"),
        ('{"channel":"trade","type":"update","data":[1]}', "not-object"),
        ('{"channel":"trade","type":"update","data":["x"]}', "not-object"),
        ('{"channel":"trade","type":"update","data":[[]]}', "not-object"),
        (_kraken(symbol=DROP), "missing-field"),
        (_kraken(side=DROP), "missing-field"),
        (_kraken(price=DROP), "missing-field"),
        (_kraken(qty=DROP), "missing-field"),
        (_kraken(trade_id=DROP), "missing-field"),
        (_kraken(timestamp=DROP), "missing-field"),
        (_kraken(price='"105944.2"'), "type"),  # a string, not a number
        (_kraken(qty="null"), "type"),
        (_kraken(qty="true"), "type"),
        (_kraken(price="-105944.2"), "decimal"),
        (_kraken(price="1" * 41), "decimal"),
        (_kraken(qty="1e1000"), "decimal"),
        (_kraken(trade_id="1.5"), "type"),
        (_kraken(trade_id='"10218208"'), "type"),
        (_kraken(trade_id="-1"), "type"),
        (_kraken(trade_id="1" * 19), "type"),
        (_kraken(side='"up"'), "type"),
        (_kraken(side="1"), "type"),
        (_kraken(timestamp="1696613755"), "type"),
        (_kraken(timestamp='"2023-10-06"'), "time"),
        (_kraken(timestamp='"2023-10-06T25:35:55Z"'), "time"),
        (_kraken(symbol="5"), "type"),
        (_kraken(symbol='["BTC/USD"]'), "type"),
        (_kraken(symbol='"BTCUSD_"'), "symbol"),
        (_kraken(symbol='"BTC/USD/EUR"'), "symbol"),
    ],
    "bitstamp": [
        ("", "json"),
        ("{", "json"),
        (b"\xff\xfe{}", "json"),
        ('{"event":"trade","channel":"\ud800"}', "json"),
        ("[" * 2000 + "]" * 2000, "json"),
        ("[]", "not-object"),
        ("null", "not-object"),
        ('"trade"', "not-object"),
        ('{"event":"trade","channel":"live_trades_btcusd","data":[1]}', "type"),
        ('{"event":"trade","channel":"live_trades_btcusd","data":null}', "type"),
        ('{"event":["trade"]}', "type"),
        ('{"event":5}', "type"),
        ('{"event":"bts:error","data":{"message":5}}', "type"),
        (_bitstamp(price_str=DROP), "missing-field"),
        (_bitstamp(amount_str=DROP), "missing-field"),
        (_bitstamp(microtimestamp=DROP), "missing-field"),
        (_bitstamp(type=DROP), "missing-field"),
        (_bitstamp(id=DROP), "missing-field"),
        (_bitstamp(channel=DROP), "missing-field"),
        (_bitstamp(data=DROP), "missing-field"),
        (_bitstamp(price_str=3805.44), "type"),
        (_bitstamp(amount_str=None), "type"),
        (_bitstamp(price_str=""), "type"),
        (_bitstamp(microtimestamp=1641343699596000), "type"),
        (_bitstamp(microtimestamp="soon"), "type"),
        (_bitstamp(microtimestamp=" 1641343699596000"), "type"),
        (_bitstamp(microtimestamp="1_641_343_699_596_000"), "type"),
        (_bitstamp(microtimestamp="\uff11\uff16\uff14"), "type"),
        (_bitstamp(microtimestamp="9" * 18), "type"),
        (_bitstamp(microtimestamp="9" * 40), "type"),
        (_bitstamp(type=2), "type"),
        (_bitstamp(type=True), "type"),
        (_bitstamp(type="0"), "type"),
        (_bitstamp(type=0.0), "type"),
        (_bitstamp(id="216000477"), "type"),
        (_bitstamp(id=-1), "type"),
        (_bitstamp(id=1.5), "type"),
        (_bitstamp(channel=["live_trades_btcusd"]), "type"),
        (_bitstamp(channel=5), "type"),
        (_bitstamp(channel="order_book_btcusd"), "symbol"),
        (_bitstamp(channel="live_trades_"), "symbol"),
        (_bitstamp(channel="live_trades_foo"), "symbol"),
        (BITSTAMP_TRADE.replace("216000477", "1" * 30), "type"),  # orjson: a float
        (BITSTAMP_TRADE.replace("216000477", "1e400"), "json"),
    ],
    "okx": [
        ("", "json"),
        ("ping", "json"),
        ("pongs", "json"),
        (b"\xff\xfe{}", "json"),
        ("[" * 2000 + "]" * 2000, "json"),
        ("[]", "not-object"),
        ('"pong"', "not-object"),
        ("null", "not-object"),
        ('{"arg":[1],"data":[]}', "type"),
        ('{"arg":"trades","data":[]}', "type"),
        ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":{"px":"1"}}', "type"),
        ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":""}', "type"),
        ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[1]}', "type"),
        ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[null]}', "type"),
        ('{"event":5}', "type"),
        ('{"event":"error","code":60012,"msg":"x"}', "type"),
        ('{"event":"notice","code":"64008","msg":null}', "type"),
        (_okx(arg=DROP), "missing-field"),
        (_okx(channel=DROP), "missing-field"),
        (_okx(instId=DROP), "missing-field"),
        (_okx(tradeId=DROP), "missing-field"),
        (_okx(px=DROP), "missing-field"),
        (_okx(sz=DROP), "missing-field"),
        (_okx(side=DROP), "missing-field"),
        (_okx(ts=DROP), "missing-field"),
        (_okx(px=78808.8), "type"),
        (_okx(sz=None), "type"),
        (_okx(px=""), "type"),
        (_okx(tradeId=1051102132), "type"),
        (_okx(tradeId=""), "type"),
        (_okx(side="Buy"), "type"),
        (_okx(side=["buy"]), "type"),
        (_okx(side=None), "type"),
        (_okx(ts=1788118931677), "type"),
        (_okx(ts="soon"), "type"),
        (_okx(ts="-1"), "type"),
        (_okx(ts="1.5"), "type"),
        (_okx(ts="\uff11\uff17\uff18"), "type"),
        (_okx(ts="9" * 15), "type"),
        (_okx(instId=["BTC-USDT"]), "type"),
        (_okx(instId=5), "type"),
        (_okx(instId="BTCXYZ"), "symbol"),
        (_okx(instId="A-B-C"), "symbol"),
    ],
    "bybit": [
        ("", "json"),
        ("pong", "json"),
        (b"\xff\xfe{}", "json"),
        ("[" * 2000 + "]" * 2000, "json"),
        ("[]", "not-object"),
        ("null", "not-object"),
        ('{"topic":5}', "type"),
        ('{"topic":["publicTrade.BTCUSDT"]}', "type"),
        ('{"op":5}', "type"),
        ('{"op":"subscribe","success":"true","ret_msg":""}', "type"),
        ('{"op":"subscribe","success":false,"ret_msg":5}', "type"),
        ('{"op":"subscribe"}', "type"),
        ('{"topic":"publicTrade.BTCUSDT","data":{"p":"1"}}', "type"),
        ('{"topic":"publicTrade.BTCUSDT","data":null}', "type"),
        ('{"topic":"publicTrade.BTCUSDT","data":[1]}', "type"),
        (_bybit(data=DROP), "missing-field"),
        (_bybit(i=DROP), "missing-field"),
        (_bybit(p=DROP), "missing-field"),
        (_bybit(v=DROP), "missing-field"),
        (_bybit(S=DROP), "missing-field"),
        (_bybit(T=DROP), "missing-field"),
        (_bybit(s=DROP), "missing-field"),
        (_bybit(p=115440.7), "type"),
        (_bybit(v=None), "type"),
        (_bybit(p=""), "type"),
        (_bybit(i=2290000000923750370), "type"),
        (_bybit(i=""), "type"),
        (_bybit(S="buy"), "type"),
        (_bybit(S=["Buy"]), "type"),
        (_bybit(T="1761583474343"), "type"),
        (_bybit(T=1.5), "type"),
        (_bybit(T=True), "type"),
        (_bybit(T=-1), "type"),
        (_bybit(T=10**16), "type"),
        (_bybit(T=10**30), "type"),
        (_bybit(s=["BTCUSDT"]), "type"),
        (_bybit(s=5), "type"),
        (_bybit(s="FOO"), "symbol"),
    ],
}
"""Exchange -> (frame, the kind of MalformedFrame its parser raises)."""


@pytest.mark.parametrize(
    ("exchange", "frame", "kind"),
    [
        pytest.param(exchange, frame, kind, id=f"{exchange}-{number}")
        for exchange, rows in MALFORMED.items()
        for number, (frame, kind) in enumerate(rows)
    ],
)
def test_malformed(exchange: str, frame: str | bytes, kind: str) -> None:
    with pytest.raises(MalformedFrame) as info:
        get_protocol(exchange).parse(frame, 0)
    assert info.value.kind == kind


# -- only MalformedFrame escapes ------------------------------------------------------------------

per_exchange = pytest.mark.parametrize("exchange", EXCHANGES)


@per_exchange
@given(st.text())
def test_fuzz_text(exchange: str, frame: str) -> None:
    check(exchange, frame)


@per_exchange
@given(st.binary())
def test_fuzz_bytes(exchange: str, frame: bytes) -> None:
    check(exchange, frame)


@per_exchange
@given(st.data())
def test_fuzz_truncated(exchange: str, data: st.DataObject) -> None:
    contract = CONTRACTS[exchange]
    frame = data.draw(st.sampled_from((contract.sample, *contract.truncated)))
    cut = data.draw(st.integers(min_value=0, max_value=len(frame)))
    check(exchange, frame[:cut])
    check(exchange, frame.encode()[:cut])


@pytest.mark.parametrize(("contract", "fields", "frames"), FIELD_CASES)
@settings(max_examples=300)
@given(st.data(), json_values)
def test_fuzz_field_values(
    contract: Contract, fields: tuple[str, ...], frames: Frames, data: st.DataObject, value: Any
) -> None:
    for frame in frames(data.draw(st.sampled_from(fields)), value):
        check(contract.exchange, frame)


@per_exchange
@given(json_values)
def test_fuzz_any_json(exchange: str, value: Any) -> None:
    check(exchange, json.dumps(value))
    check(exchange, json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


@per_exchange
@given(st.integers(min_value=1, max_value=5000))
def test_fuzz_deep_nesting(exchange: str, depth: int) -> None:
    for opening, core, closing in CONTRACTS[exchange].nesting:
        check(exchange, opening * depth + core + closing * depth)


@per_exchange
@given(st.data())
def test_fuzz_huge_numbers(exchange: str, data: st.DataObject) -> None:
    contract = CONTRACTS[exchange]
    bound = contract.huge_bound
    number = data.draw(st.integers(min_value=-bound, max_value=bound))
    check(exchange, contract.with_huge(data.draw(st.sampled_from(contract.huge_fields)), number))


@per_exchange
@given(st.data())
def test_fuzz_unicode_text_fields(exchange: str, data: st.DataObject) -> None:
    unicode = CONTRACTS[exchange].unicode
    assert unicode is not None
    check(exchange, data.draw(unicode))


# -- records -> frames (the fake's server side) -> records ----------------------------------------

_decimal_text = st.builds(
    lambda whole, fraction: f"{whole}.{fraction}" if fraction else str(whole),
    st.integers(min_value=0, max_value=10**9),
    st.text(alphabet="0123456789", max_size=8),
).filter(lambda text: text.strip("0.") != "")


@per_exchange
@given(
    trade_id=st.integers(min_value=1, max_value=2**53),
    price=_decimal_text,
    size=_decimal_text,
    side=st.sampled_from(["buy", "sell"]),
    ms=st.integers(min_value=1_500_000_000_000, max_value=2_500_000_000_000),
    us=st.integers(min_value=0, max_value=999),
)
def test_round_trip_through_the_fake_exchange(
    exchange: str, trade_id: int, price: str, size: str, side: str, ms: int, us: int
) -> None:
    contract = CONTRACTS[exchange]
    session, stream = subscribed_session(exchange, contract.server_symbol)
    ts_event = ms * 1000 + us - us % contract.ts_step
    sent = make_trade(
        exchange,
        contract.symbol,
        contract.server_symbol,
        trade_id=str(trade_id),
        price=price,
        size=size,
        side=side,
        ts_event=ts_event,
        ts_recv=5,
    )
    frame = session.encode(sent, stream)
    got = get_protocol(exchange).parse(frame, 5)
    assert isinstance(got, tuple | list)
    assert list(got) == [dataclasses.replace(sent, raw_symbol=contract.raw_symbol)]
    assert list(get_protocol(exchange).parse(frame.encode(), 5)) == list(got)


# -- the fake exchange's hostile frames (issue 7) --------------------------------------------------


def a_trade(exchange: str, raw_symbol: str | None = None) -> Trade:
    contract = CONTRACTS[exchange]
    raw = raw_symbol if raw_symbol is not None else contract.server_symbol
    return Trade(exchange, "BTC-USD", raw, "12345", "1.5", "2", "buy", 1_700_000_000 * 10**6, 1)


@per_exchange
def test_every_hostile_frame_of_the_fault_is_rejected(exchange: str) -> None:
    session, stream = subscribed_session(exchange, CONTRACTS[exchange].server_symbol)
    for number in range(len(HOSTILE_KINDS) * len(HOSTILE_SYMBOLS)):
        frame = hostile_frame(session, a_trade(exchange), stream, number)
        with pytest.raises(MalformedFrame):
            get_protocol(exchange).parse(frame.encode("utf-8", "surrogateescape"), 1)


_hostile_text = st.text(
    alphabet=st.sampled_from(["/", ".", "\x00", "\\", "A", "B", "1", "-", "é", "\u202e", " "]),
    min_size=1,
    max_size=24,
)


@per_exchange
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(symbol=_hostile_text | st.sampled_from(HOSTILE_SYMBOLS))
def test_hostile_symbols_never_leave_the_prefix(exchange: str, symbol: str) -> None:
    session, stream = subscribed_session(exchange, CONTRACTS[exchange].server_symbol)
    check(exchange, session.encode(a_trade(exchange, symbol), stream).encode())


@per_exchange
@settings(max_examples=40)
@given(digits=st.integers(min_value=19, max_value=2000), sign=st.sampled_from(["", "-"]))
def test_huge_numbers_in_place_of_every_number(exchange: str, digits: int, sign: str) -> None:
    session, stream = subscribed_session(exchange, CONTRACTS[exchange].server_symbol)
    good = session.encode(a_trade(exchange), stream)
    huge = re.sub(r"(?<![\w.\"])\d+(?![\w\"])", sign + "9" * digits, good)
    check(exchange, huge.encode())


@per_exchange
@settings(max_examples=40)
@given(levels=st.integers(min_value=1, max_value=3000), where=st.sampled_from(["front", "all"]))
def test_deep_nesting_anywhere_in_a_frame(exchange: str, levels: int, where: str) -> None:
    session, stream = subscribed_session(exchange, CONTRACTS[exchange].server_symbol)
    good = session.encode(a_trade(exchange), stream)
    deep = "[" * levels + "]" * levels
    frame = '{"deep":' + deep + "," + good[1:] if where == "front" else deep[:levels] + good
    result = check(exchange, frame.encode())
    if exchange == "kraken" and levels + 1 > MAX_JSON_DEPTH:
        assert isinstance(result, MalformedFrame) and result.kind == "nesting"


@per_exchange
@settings(max_examples=40)
@given(position=st.integers(min_value=0, max_value=400), junk=st.binary(min_size=1, max_size=4))
def test_invalid_utf8_anywhere_in_a_frame(exchange: str, position: int, junk: bytes) -> None:
    session, stream = subscribed_session(exchange, CONTRACTS[exchange].server_symbol)
    good = session.encode(a_trade(exchange), stream).encode()
    at = position % (len(good) + 1)
    frame = good[:at] + b"\xff" + junk + good[at:]
    assert isinstance(check(exchange, frame), MalformedFrame)


# -- symbols: a bad one is refused, and so is one too many for a connection ----------------------

SYMBOL_RULES: dict[str, tuple[list[str], str, str]] = {
    "binance": (["btc/usdt", "btcusdt&x=1", "", "B"], "S{}USDT", "connection_url"),
    "binanceus": (["btc/usdt", "btcusdt&x=1", "", "B"], "S{}USD", "connection_url"),
    "coinbase": (
        ["BTCUSD", "BTC/USD", "BTC-USD-X", "", "BTC-US D", "BTC-€"],
        "C{}-USD",
        "subscribe_messages",
    ),
    "kraken": (
        ["BTCUSD", "BTC-USD", "BTC/USD/EUR", "", "BTC/U SD"],
        "C{}/USD",
        "subscribe_messages",
    ),
    "bitstamp": (["btc/usd", "btc-usd", "", "b", 'btc"usd'], "x{}usd", "connection_url"),
    "okx": (
        ["BTCUSDT", "BTC/USDT", "BTC-", "-USDT", "", 'BTC-"USDT', "BTC-USDT-SWAP"],
        "X{}-USDT",
        "connection_url",
    ),
    "bybit": (["BTC-USDT", "BTC/USDT", "", "B", 'BTC"USDT'], "X{}USDT", "connection_url"),
}
"""Exchange -> (symbols it refuses, a pattern of valid symbols, the call that refuses one too
many for a connection)."""


def _calls(exchange: str, symbols: list[str]) -> dict[str, Callable[[], object]]:
    proto = get_protocol(exchange)
    url = proto.default_url
    return {
        "subscribe_messages": lambda: proto.subscribe_messages(symbols),
        "connection_url": lambda: proto.connection_url(url, symbols),
    }


@per_exchange
def test_a_bad_symbol_is_refused(exchange: str) -> None:
    bad_symbols, _, _ = SYMBOL_RULES[exchange]
    for bad in bad_symbols:
        for name, call in _calls(exchange, [bad]).items():
            with pytest.raises(ValueError):
                call()
                pytest.fail(f"{name} took {bad!r}")


@per_exchange
def test_one_symbol_too_many_for_a_connection_is_refused(exchange: str) -> None:
    _, pattern, refusing = SYMBOL_RULES[exchange]
    limit = get_protocol(exchange).max_streams_per_connection
    many = [pattern.format(i) for i in range(limit + 1)]
    for call in _calls(exchange, many[:-1]).values():
        call()
    with pytest.raises(ValueError):
        _calls(exchange, many)[refusing]()


# -- identity: the registry builds a fresh protocol object of the exchange's kind ----------------

IDENTITY: dict[str, tuple[str, str, bool, float | None, int]] = {
    "binance": ("BinanceProtocol", "wss://stream.binance.com:9443", True, None, 1024),
    "binanceus": ("BinanceProtocol", "wss://stream.binance.us:9443", True, None, 1024),
    "coinbase": ("CoinbaseProtocol", "wss://ws-feed.exchange.coinbase.com", True, None, 50),
    "kraken": ("KrakenProtocol", "wss://ws.kraken.com/v2", True, 30, 50),
    # unsequenced: Bitstamp's ids are global across pairs, OKX's tradeId skips on aggregated
    # fills, Bybit's "i" is not contiguous
    "bitstamp": ("BitstampProtocol", "wss://ws.bitstamp.net", False, 20, 100),
    "okx": ("OkxProtocol", "wss://ws.okx.com:8443/ws/v5/public", False, 20, 500),
    "bybit": ("BybitProtocol", "wss://stream.bybit.com/v5/public/spot", False, 20, 300),
}
"""Exchange -> (protocol class, default URL, sequenced ids, keepalive interval (None: the
exchange pings), streams per connection)."""


LIMIT_CONSTANTS = {
    "binance": "connectors.binance:MAX_STREAMS_PER_CONNECTION",
    "binanceus": "connectors.binance:MAX_STREAMS_PER_CONNECTION",
    "coinbase": "connectors.coinbase:MAX_PRODUCTS_PER_CONNECTION",
    "kraken": "connectors.kraken:MAX_SYMBOLS_PER_CONNECTION",
    "bitstamp": "connectors.bitstamp:MAX_STREAMS_PER_CONNECTION",
    "okx": "connectors.okx:MAX_STREAMS_PER_CONNECTION",
    "bybit": "connectors.bybit:MAX_STREAMS_PER_CONNECTION",
}
"""Exchange -> the module constant of its streams per connection."""


@per_exchange
def test_identity_and_limits(exchange: str) -> None:
    kind, url, sequenced, keepalive, streams = IDENTITY[exchange]
    proto = get_protocol(exchange)
    assert type(proto).__name__ == kind and proto is not get_protocol(exchange)
    assert (proto.name, proto.default_url, proto.sequenced) == (exchange, url, sequenced)
    assert proto.keepalive_interval == keepalive
    assert (proto.keepalive_message() is None) == (keepalive is None)
    assert proto.max_streams_per_connection == streams
    module, constant = LIMIT_CONSTANTS[exchange].split(":")
    assert getattr(importlib.import_module(module), constant) == streams
    assert get_adapter(exchange).name == exchange


def test_an_unknown_exchange_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown exchange 'nope' \\(known: binance, "):
        get_protocol("nope")


# -- the documented sample of each exchange, by hand ----------------------------------------------

DOCUMENTED: dict[str, tuple[str, type, str]] = {
    "binance": (BINANCE_TRADE, tuple, "BNB-BTC BNBBTC 12345 0.00100000 100.00000000 sell"),
    "binanceus": (BINANCE_TRADE, tuple, "BNB-BTC BNBBTC 12345 0.00100000 100.00000000 sell"),
    # side "sell" is the maker's: the taker bought. 2021-04-17T16:43:37Z is 1618677817 s.
    "coinbase": (COINBASE_MATCH, tuple, "SKL-USD SKL-USD 1568268 0.791 450 buy"),
    # 2023-10-06T17:35:55Z is 1696613755 s; the price keeps its text, never a float repr.
    "kraken": (KRAKEN_TRADE, tuple, "BTC-USD BTC/USD 10218208 105944.2 0.00027625 buy"),
    # type 0: the taker bought
    "bitstamp": (BITSTAMP_TRADE, tuple, "ETH-USD ethusd 216000477 3805.44 0.07920000 buy"),
    "okx": (OKX_TRADE, list, "BTC-USDT BTC-USDT 1051102132 78808.8 0.00504905 sell"),
    "bybit": (BYBIT_TRADE, list, "BTC-USDT BTCUSDT 2290000000923750370 115440.7 0.00903 buy"),
}
"""Exchange -> (its documented trade frame, the container ``parse`` returns, the trade's symbol,
raw symbol, id, price, size and taker side); :data:`DOCUMENTED_TIMES` has its ``ts_event``."""
DOCUMENTED_TIMES = {
    "binance": 1_672_515_782_136_000,
    "binanceus": 1_672_515_782_136_000,
    "coinbase": 1_618_677_817_121_358,
    "kraken": 1_696_613_755_440_295,
    "bitstamp": 1_641_343_699_596_000,
    "okx": 1_788_118_931_677_000,
    "bybit": 1_761_583_474_343_000,
}


@per_exchange
def test_the_documented_sample_parses_exactly(exchange: str) -> None:
    frame, container, fields = DOCUMENTED[exchange]
    symbol, raw, trade_id, price, size, side = fields.split()
    ts_event = DOCUMENTED_TIMES[exchange]
    expected = Trade(exchange, symbol, raw, trade_id, price, size, side, ts_event, 99)
    assert get_protocol(exchange).parse(frame, 99) == container([expected])
