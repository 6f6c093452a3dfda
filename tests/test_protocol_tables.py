"""What each exchange's parser makes of its controls and other messages, what its fake's
server side makes of client requests, its connection URLs and its subscribe frames: one table
by exchange each, one test each.

(The contract every parser keeps is in tests/test_protocol_contract.py; what is tested by hand
is in tests/test_<exchange>_protocol.py.)
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from connectors import binance, bitstamp, bybit, coinbase, kraken, okx
from connectors.base import Ack, ExchangeError, Heartbeat, ReconnectNotice
from connectors.registry import get_protocol
from tests.strategies import KRAKEN_REFUSED, KRAKEN_STATUS, KRAKEN_SUBSCRIBED

CONTROLS: dict[str, list[tuple[str | bytes, object]]] = {
    "binance": [
        ('{"result":null,"id":1}', Ack("id=1")),
        ('{"result":["btcusdt@trade"],"id":3}', Ack("id=3")),
        (
            '{"code":2,"msg":"Invalid symbol","id":1}',
            ExchangeError("binance error 2: Invalid symbol", fatal=True),
        ),
        ('{"e":"serverShutdown","E":1770123456789}', ReconnectNotice("serverShutdown")),
        (
            '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}',
            ReconnectNotice("serverShutdown"),
        ),
        (binance.encode_server_shutdown(5, False), ReconnectNotice("serverShutdown")),
        (binance.encode_server_shutdown(5, True), ReconnectNotice("serverShutdown")),
        (binance.encode_ack(9), Ack("id=9")),
        (
            binance.encode_error(2, "Invalid symbol", None),
            ExchangeError("binance error 2: Invalid symbol", True),
        ),
        ('{"u":400900217,"s":"BNBUSDT","b":"25.3","B":"31.2","a":"25.4","A":"40.6"}', ()),
        ('{"e":"depthUpdate","E":1,"s":"BNBBTC","U":1,"u":2,"b":[],"a":[]}', ()),
        ('{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{}}}', ()),
        ("{}", ()),
    ],
    "coinbase": [
        (
            '{"type":"subscriptions","channels":[{"name":"matches","product_ids":["BTC-USD"]}]}',
            Ack("subscriptions"),
        ),
        (
            '{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD",'
            '"time":"2014-11-07T08:19:28.464459Z"}',
            Heartbeat(),
        ),
        (
            '{"type":"error","message":"Failed to subscribe",'
            '"reason":"BTC-XYZ is not a valid product"}',
            ExchangeError(
                "coinbase error: Failed to subscribe: BTC-XYZ is not a valid product",
                fatal=True,
                symbols=("BTC-XYZ",),
            ),
        ),
        (
            '{"type":"error","message":"ErrSlowConsume"}',
            ExchangeError("coinbase error: ErrSlowConsume", fatal=False),
        ),
        (
            coinbase.encode_error("Failed to subscribe", "NOPE-USD is not a valid product"),
            ExchangeError(
                "coinbase error: Failed to subscribe: NOPE-USD is not a valid product",
                True,
                ("NOPE-USD",),
            ),
        ),
        (
            coinbase.encode_error("Failed to subscribe", "full is not a valid channel"),
            ExchangeError("coinbase error: Failed to subscribe: full is not a valid channel", True),
        ),
        (coinbase.encode_heartbeat("ETH-USD", 7, 1_700_000_000_000_000), Heartbeat()),
        (
            coinbase.encode_subscriptions({"matches": ["BTC-USD"], "heartbeat": []}),
            Ack("subscriptions"),
        ),
        ('{"type":"l2update","product_id":"BTC-USD","changes":[["sell","1","2"]]}', ()),
        ('{"type":"ticker","product_id":"BTC-USD","price":"1","side":"buy","trade_id":1}', ()),
        ('{"type":"snapshot","product_id":"BTC-USD","asks":[],"bids":[]}', ()),
        ('{"type":"received","order_id":"x","side":"buy"}', ()),
        ('{"type":"open"}', ()),
        ('{"type":"done","reason":"filled"}', ()),
        ('{"type":"status","products":[]}', ()),
    ],
    "kraken": [
        (KRAKEN_STATUS, Heartbeat()),
        (kraken.encode_status("online", 7), Heartbeat()),
        (
            kraken.encode_status("maintenance"),
            ExchangeError("kraken system status maintenance: no trading", fatal=False),
        ),
        (
            kraken.encode_status("cancel_only"),
            ExchangeError("kraken system status cancel_only: no trading", fatal=False),
        ),
        (KRAKEN_SUBSCRIBED, Ack("subscribe BTC/USD req_id=1")),
        (
            KRAKEN_REFUSED,
            ExchangeError(
                "kraken subscribe failed XBT/USD: Currency pair not supported XBT/USD",
                fatal=True,
                symbols=("XBT/USD",),
            ),
        ),
        (
            kraken.encode_response(
                "subscribe", 3, 0, 0, error="Already subscribed", symbol="BTC/USD"
            ),
            ExchangeError(
                "kraken subscribe failed BTC/USD: Already subscribed",
                fatal=False,
                symbols=("BTC/USD",),
            ),
        ),
        (
            kraken.encode_response("unsubscribe", 3, 0, 0, error="Subscription Not Found"),
            ExchangeError("kraken unsubscribe failed: Subscription Not Found", fatal=False),
        ),
        (kraken.HEARTBEAT, Heartbeat()),
        ('{"method":"pong","req_id":101,"time_in":"x","time_out":"y"}', Heartbeat()),
        (kraken.encode_pong(5, 0, 0), Heartbeat()),
        (
            '{"error":"EGeneral:Invalid arguments","success":false}',
            ExchangeError("kraken error: EGeneral:Invalid arguments", fatal=False),
        ),
        ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[]}]}', ()),
        ('{"channel":"ticker","type":"snapshot","data":[]}', ()),
        ('{"channel":"instrument","type":"snapshot","data":{}}', ()),
        ("{}", ()),
    ],
    "bitstamp": [
        (
            '{"event":"bts:subscription_succeeded","channel":"live_trades_btcusd","data":{}}',
            Ack("subscription_succeeded live_trades_btcusd"),
        ),
        (bitstamp.encode_subscribed("live_trades_x"), Ack("subscription_succeeded live_trades_x")),
        (
            bitstamp.encode_subscribed("live_trades_x", unsubscribed=True),
            Ack("unsubscription_succeeded live_trades_x"),
        ),
        (bitstamp.HEARTBEAT_REPLY, Heartbeat()),
        (bitstamp.RECONNECT_NOTICE, ReconnectNotice("bts:request_reconnect")),
        (
            '{"event":"bts:request_reconnect","channel":"","data":null}',
            ReconnectNotice("bts:request_reconnect"),
        ),
        (
            '{"event":"bts:error","channel":"",'
            '"data":{"code":null,"message":"Invalid channel provided."}}',
            ExchangeError("bitstamp error: Invalid channel provided.", fatal=True),
        ),
        (
            bitstamp.encode_error("Bad subscription string."),
            ExchangeError("bitstamp error: Bad subscription string.", True),
        ),
        ('{"event":"bts:error"}', ExchangeError("bitstamp error: no message", fatal=True)),
        (
            '{"event":"bts:subscription_failed","channel":"live_trades_nopeusd",'
            '"data":{"message":"Invalid channel"}}',
            ExchangeError(
                "bitstamp subscription_failed: Invalid channel", fatal=True, symbols=("nopeusd",)
            ),
        ),
        ('{"event":"data","channel":"order_book_btcusd","data":{"bids":[],"asks":[]}}', ()),
        ('{"event":"order_created","channel":"live_orders_btcusd","data":{}}', ()),
        ("{}", ()),
    ],
    "okx": [
        ("pong", Heartbeat()),
        (b"pong", Heartbeat()),
        (
            '{"event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT"},"connId":"a4d3ae55"}',
            Ack("subscribe trades:BTC-USDT"),
        ),
        (
            okx.encode_event("unsubscribe", "trades", "ETH-USDT", "x"),
            Ack("unsubscribe trades:ETH-USDT"),
        ),
        (
            '{"event":"error","code":"60012","msg":"Invalid request: {\\"op\\": \\"subscribe\\"}"}',
            ExchangeError('okx error 60012: Invalid request: {"op": "subscribe"}', fatal=True),
        ),
        (
            okx.encode_error(
                "60018", "Wrong URL or channel:trades,instId:NOPE-USDT doesn't exist.", "x"
            ),
            ExchangeError(
                "okx error 60018: Wrong URL or channel:trades,instId:NOPE-USDT doesn't exist.",
                True,
                ("NOPE-USDT",),
            ),
        ),
        (okx.encode_notice("a4d3ae55"), ReconnectNotice("okx notice 64008")),
        ('{"event":"notice","code":"64008","msg":""}', ReconnectNotice("okx notice 64008")),
        (
            '{"event":"notice","code":"64009","msg":"other"}',
            ExchangeError("okx notice 64009: other"),
        ),
        ('{"event":"channel-conn-count","channel":"trades","connCount":"2","connId":"x"}', ()),
        (
            '{"event":"channel-conn-count-error","channel":"orders"}',
            ExchangeError("okx channel-conn-count-error: 'orders'"),
        ),
        ('{"event":"login","code":"0","msg":""}', ()),
        ('{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"last":"1"}]}', ()),
        ("{}", ()),
    ],
    "bybit": [
        (
            '{"success":true,"ret_msg":"subscribe","conn_id":"c","req_id":"1","op":"subscribe"}',
            Ack("subscribe req_id=1"),
        ),
        (
            '{"success":true,"ret_msg":"","op":"subscribe","conn_id":"c"}',
            Ack("subscribe req_id=None"),
        ),
        (
            '{"success":false,"ret_msg":"Invalid symbol :[publicTrade.NOPEUSDT]",'
            '"conn_id":"c","req_id":"1","op":"subscribe"}',
            ExchangeError(
                "bybit subscribe failed: Invalid symbol :[publicTrade.NOPEUSDT]",
                fatal=True,
                symbols=("NOPEUSDT",),
            ),
        ),
        (
            '{"success":false,"ret_msg":"Invalid symbol :[publicTrade.NOPEUSDT,publicTrade.X1]",'
            '"op":"subscribe"}',
            ExchangeError(
                "bybit subscribe failed: Invalid symbol :[publicTrade.NOPEUSDT,publicTrade.X1]",
                fatal=True,
                symbols=("NOPEUSDT", "X1"),
            ),
        ),
        (
            '{"success":false,"ret_msg":"error:handler not found,topic:publicTrade.NOPEUSDT",'
            '"op":"subscribe"}',
            ExchangeError(
                "bybit subscribe failed: error:handler not found,topic:publicTrade.NOPEUSDT",
                fatal=True,
                symbols=("NOPEUSDT",),
            ),
        ),
        (
            '{"success":false,"ret_msg":"args size >10","op":"subscribe"}',
            ExchangeError("bybit subscribe failed: args size >10", fatal=True),
        ),
        ('{"success":true,"ret_msg":"pong","conn_id":"c","op":"ping"}', Heartbeat()),
        (bybit.encode_response("ping", "9", "c", ret_msg="pong"), Heartbeat()),
        ('{"req_id":"test","op":"pong","args":["1675418560633"],"conn_id":"c"}', Heartbeat()),
        (
            '{"success":false,"ret_msg":"boom","op":"ping"}',
            ExchangeError("bybit ping failed: boom"),
        ),
        (bybit.encode_response("unsubscribe", "3", "c"), Ack("unsubscribe req_id=3")),
        ('{"topic":"orderbook.1.BTCUSDT","type":"snapshot","data":{"b":[],"a":[]}}', ()),
        ('{"topic":"tickers.BTCUSDT","data":{}}', ()),
        ("{}", ()),
    ],
}
"""Exchange -> (frame, what ``parse`` returns: a control event, or no trades)."""

SERVER_PARSERS: dict[str, Callable[[str], object]] = {
    "binance": binance.parse_client_request,
    "coinbase": coinbase.parse_client_request,
    "kraken": kraken.parse_client_request,
    "bitstamp": bitstamp.parse_client_request,
    "okx": okx.parse_client_request,
    "bybit": bybit.parse_client_request,
}
CLIENT_REQUESTS: dict[str, list[tuple[str | bytes, object]]] = {
    "binance": [
        (
            '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}',
            binance.ClientRequest("SUBSCRIBE", ("btcusdt@trade",), 1),
        ),
        (
            '{"method":"UNSUBSCRIBE","params":[],"id":"a"}',
            binance.ClientRequest("UNSUBSCRIBE", (), "a"),
        ),
        (
            '{"method":"LIST_SUBSCRIPTIONS","id":3}',
            binance.ClientRequest("LIST_SUBSCRIPTIONS", (), 3),
        ),
        ("nope", binance.RequestError(3, "Invalid JSON: frame is not JSON")),
        ("[1]", binance.RequestError(2, "Invalid request: not a JSON object")),
        (
            '{"method":"SUBSCRIBE","params":"x","id":1}',
            binance.RequestError(2, "Invalid request: params must be a list of strings", 1),
        ),
        (
            '{"method":"SUBSCRIBE","params":[1],"id":1}',
            binance.RequestError(2, "Invalid request: params must be a list of strings", 1),
        ),
        (
            '{"method":"SUBSCRIBE","params":[],"id":1.5}',
            binance.RequestError(2, "Invalid request: invalid id"),
        ),
        (
            '{"method":"PING","id":4}',
            binance.RequestError(2, "Invalid request: unknown method 'PING'", 4),
        ),
    ],
    "coinbase": [
        (
            '{"type":"subscribe","product_ids":["BTC-USD"],"channels":["matches","heartbeat"]}',
            coinbase.ClientRequest(
                "subscribe", {"matches": ("BTC-USD",), "heartbeat": ("BTC-USD",)}
            ),
        ),
        (
            '{"type":"subscribe","channels":[{"name":"heartbeat","product_ids":["ETH-EUR"]}]}',
            coinbase.ClientRequest("subscribe", {"heartbeat": ("ETH-EUR",)}),
        ),
        (
            '{"type":"unsubscribe","product_ids":["A-B"],"channels":["matches",'
            '{"name":"matches","product_ids":["A-B","C-D"]}]}',
            coinbase.ClientRequest("unsubscribe", {"matches": ("A-B", "C-D")}),
        ),
        ("nope", coinbase.RequestError("Malformed JSON", "the message is not JSON")),
        ("[1]", coinbase.RequestError("Malformed JSON", "the message is not a JSON object")),
        ('{"type":"hello"}', coinbase.RequestError("Unknown message type hello")),
        (
            '{"type":"subscribe","product_ids":"BTC-USD","channels":["matches"]}',
            coinbase.RequestError("Failed to subscribe", "product_ids must be a list of strings"),
        ),
        (
            '{"type":"subscribe","product_ids":["BTC-USD"],"channels":[]}',
            coinbase.RequestError("Failed to subscribe", "channels must be a non-empty list"),
        ),
        (
            '{"type":"subscribe","channels":[{"product_ids":["BTC-USD"]}]}',
            coinbase.RequestError(
                "Failed to subscribe", "a channel must be a name or {name, product_ids}"
            ),
        ),
    ],
    "kraken": [
        (
            '{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"],'
            '"snapshot":false},"req_id":1}',
            kraken.ClientRequest("subscribe", 1, "trade", ("BTC/USD",), False),
        ),
        (
            '{"method":"unsubscribe","params":{"channel":"trade","symbol":["A/B"]}}',
            kraken.ClientRequest("unsubscribe", None, "trade", ("A/B",)),
        ),
        ('{"method":"ping","req_id":101}', kraken.ClientRequest("ping", 101)),
        ('{"method":"ping"}', kraken.ClientRequest("ping", None)),
        ("nope", kraken.RequestError("", "EGeneral:Invalid arguments: the request is not JSON")),
        ("[]", kraken.RequestError("", "EGeneral:Invalid arguments: the request is not an object")),
        (
            '{"method":"ping","req_id":"x"}',
            kraken.RequestError("ping", "EGeneral:Invalid arguments: req_id must be an integer"),
        ),
        (
            '{"method":"add_order","req_id":4}',
            kraken.RequestError("add_order", "Method not found: add_order", 4),
        ),
        (
            '{"method":"subscribe","params":{"symbol":["BTC/USD"]},"req_id":2}',
            kraken.RequestError(
                "subscribe", "EGeneral:Invalid arguments: params.channel missing", 2
            ),
        ),
        (
            '{"method":"subscribe","params":{"channel":"trade","symbol":"BTC/USD"},"req_id":2}',
            kraken.RequestError(
                "subscribe", "EGeneral:Invalid arguments: symbol must be a list", 2
            ),
        ),
    ],
    "bitstamp": [
        (
            '{"event":"bts:subscribe","data":{"channel":"live_trades_btcusd"}}',
            bitstamp.ClientRequest("bts:subscribe", "live_trades_btcusd"),
        ),
        (
            '{"event":"bts:unsubscribe","data":{"channel":"live_trades_btcusd"}}',
            bitstamp.ClientRequest("bts:unsubscribe", "live_trades_btcusd"),
        ),
        (bitstamp.HEARTBEAT_REQUEST, bitstamp.ClientRequest("bts:heartbeat")),
        ("nope", bitstamp.RequestError("Incorrect JSON format.")),
        ("[1]", bitstamp.RequestError("Incorrect JSON format.")),
        ('{"event":"bts:subscribe"}', bitstamp.RequestError("Bad subscription string.")),
        (
            '{"event":"bts:subscribe","data":{"channel":5}}',
            bitstamp.RequestError("Bad subscription string."),
        ),
        ('{"event":"bts:explode"}', bitstamp.RequestError("Bad subscription string.")),
    ],
    "okx": [
        ("ping", okx.ClientRequest("ping")),
        (b"ping", okx.ClientRequest("ping")),
        (
            '{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}',
            okx.ClientRequest("subscribe", (("trades", "BTC-USDT"),)),
        ),
        (
            '{"op":"unsubscribe","args":[{"channel":"trades","instId":"A-B"},{"channel":"x","instId":"C-D"}]}',
            okx.ClientRequest("unsubscribe", (("trades", "A-B"), ("x", "C-D"))),
        ),
        ("nope", okx.RequestError("60012", "Invalid request: nope")),
        (
            '{"op":"login","args":[]}',
            okx.RequestError("60012", 'Invalid request: {"op":"login","args":[]}'),
        ),
        (
            '{"op":"subscribe","args":[]}',
            okx.RequestError("60012", 'Invalid request: {"op":"subscribe","args":[]}'),
        ),
        (
            '{"op":"subscribe","args":["x"]}',
            okx.RequestError("60012", 'Invalid request: {"op":"subscribe","args":["x"]}'),
        ),
    ],
    "bybit": [
        ('{"req_id":"1","op":"ping"}', bybit.ClientRequest("ping", (), "1")),
        ('{"op":"ping"}', bybit.ClientRequest("ping")),
        (
            '{"req_id":"2","op":"subscribe","args":["publicTrade.BTCUSDT"]}',
            bybit.ClientRequest("subscribe", ("publicTrade.BTCUSDT",), "2"),
        ),
        (
            '{"req_id":3,"op":"unsubscribe","args":["a"]}',
            bybit.ClientRequest("unsubscribe", ("a",), "3"),
        ),
        ("nope", bybit.RequestError("", "Invalid request: not JSON")),
        ("[1]", bybit.RequestError("", "Invalid request: not a JSON object")),
        ('{"op":"auth"}', bybit.RequestError("auth", "Invalid op: 'auth'")),
        (
            '{"op":"subscribe","args":[1]}',
            bybit.RequestError("subscribe", "Invalid request: args must be a list of topics"),
        ),
        (
            '{"op":"subscribe","args":[]}',
            bybit.RequestError("subscribe", "Invalid request: args must be a list of topics"),
        ),
    ],
}
"""Exchange -> (client frame, what the fake's ``parse_client_request`` makes of it)."""


def _rows(tables: dict[str, list[tuple[str | bytes, object]]]) -> list[object]:
    return [
        pytest.param(exchange, frame, expected, id=f"{exchange}-{number}")
        for exchange, rows in tables.items()
        for number, (frame, expected) in enumerate(rows)
    ]


@pytest.mark.parametrize(("exchange", "frame", "expected"), _rows(CONTROLS))
def test_controls_and_other_messages(exchange: str, frame: str | bytes, expected: object) -> None:
    assert get_protocol(exchange).parse(frame, 0) == expected


@pytest.mark.parametrize(("exchange", "frame", "expected"), _rows(CLIENT_REQUESTS))
def test_parse_client_request(exchange: str, frame: str, expected: object) -> None:
    assert SERVER_PARSERS[exchange](frame) == expected


URLS: dict[str, list[tuple[str, list[str], str]]] = {
    "binance": [
        (
            "wss://stream.binance.com:9443/",
            ["BTCUSDT", "ethusdt"],
            "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade",
        ),
        ("ws://h:1", [], "ws://h:1/ws"),
    ],
    "coinbase": [("wss://ws-feed.exchange.coinbase.com", ["BTC-USD"], "=")],
    "kraken": [("wss://ws.kraken.com/v2", ["BTC/USD"], "=")],
    "bitstamp": [
        ("wss://ws.bitstamp.net/", ["BTCUSD"], "wss://ws.bitstamp.net"),
        ("ws://127.0.0.1:9", [], "="),
    ],
    "okx": [  # the public path is appended only when the URL has none
        ("ws://127.0.0.1:9", ["BTC-USDT"], "ws://127.0.0.1:9/ws/v5/public"),
        ("ws://127.0.0.1:9/", [], "ws://127.0.0.1:9/ws/v5/public"),
        ("wss://ws.okx.com:8443/ws/v5/public", [], "="),
        ("ws://h:1/custom/", [], "ws://h:1/custom"),
    ],
    "bybit": [  # the spot path is appended only when the URL has none
        ("ws://127.0.0.1:9", ["BTCUSDT"], "ws://127.0.0.1:9/v5/public/spot"),
        ("wss://stream.bybit.com/v5/public/spot", [], "="),
        ("wss://stream.bybit.com/v5/public/linear", [], "="),
    ],
}
"""Exchange -> (a base URL, symbols, the connection URL; ``=``: the base URL itself)."""

SUBSCRIPTIONS: dict[str, tuple[list[str], list[object]]] = {
    "binance": (
        ["BTCUSDT", "ETHUSDT"],
        [{"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@trade"], "id": 1}],
    ),
    "coinbase": (
        ["BTC-USD", "eth-usd"],
        [
            {
                "type": "subscribe",
                "product_ids": ["BTC-USD", "ETH-USD"],
                "channels": ["matches", "heartbeat"],
            }
        ],
    ),
    "kraken": (
        ["BTC/USD", "eth/usd"],
        [
            {
                "method": "subscribe",
                "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": False},
                "req_id": 1,
            }
        ],
    ),
    "bitstamp": (  # one message per channel
        ["BTCUSD", "ethusd"],
        [
            {"event": "bts:subscribe", "data": {"channel": "live_trades_btcusd"}},
            {"event": "bts:subscribe", "data": {"channel": "live_trades_ethusd"}},
        ],
    ),
    "okx": (  # one frame for all instruments
        ["BTC-USDT", "eth-usdt"],
        [
            {
                "op": "subscribe",
                "args": [
                    {"channel": "trades", "instId": "BTC-USDT"},
                    {"channel": "trades", "instId": "ETH-USDT"},
                ],
            }
        ],
    ),
    "bybit": (
        ["BTCUSDT", "ethusdt"],
        [
            {
                "req_id": "1",
                "op": "subscribe",
                "args": ["publicTrade.BTCUSDT", "publicTrade.ETHUSDT"],
            }
        ],
    ),
}
"""Exchange -> (symbols, the decoded frames a new protocol object subscribes to them with)."""


@pytest.mark.parametrize(
    ("exchange", "base", "symbols", "expected"),
    [(exchange, *row) for exchange, rows in URLS.items() for row in rows],
)
def test_connection_url(exchange: str, base: str, symbols: list[str], expected: str) -> None:
    assert get_protocol(exchange).connection_url(base, symbols) == (
        base if expected == "=" else expected
    )


@pytest.mark.parametrize("exchange", list(SUBSCRIPTIONS))
def test_subscribe_messages(exchange: str) -> None:
    symbols, frames = SUBSCRIPTIONS[exchange]
    proto = get_protocol(exchange)
    assert proto.subscribe_messages([]) == []
    assert [orjson.loads(frame) for frame in proto.subscribe_messages(symbols)] == frames
