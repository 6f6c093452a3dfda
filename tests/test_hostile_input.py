"""Hostile feed input (issue 7): oversized frames, invalid UTF-8, deep nesting, huge numbers,
symbols with ``/``, ``..`` and NUL. Counted as invalid, logged once per kind, never a crash,
never a key outside the prefix.

Three levels: the pure limits (:mod:`connectors.limits`) and every protocol's parser under
hypothesis; the session against the in-process fake exchange's ``hostile`` fault; and a real
``feedvault stream`` run against ``feedvault fake-exchange --faults hostile=...,oversized=...``
into moto's S3 server.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.fake.adapters import ServerSession, get_adapter
from connectors.fake.faults import Faults
from connectors.fake.hostile import HOSTILE_KINDS, HOSTILE_SYMBOLS, hostile_frame
from connectors.fake.server import FakeExchange
from connectors.gaps import GapTracker
from connectors.limits import MAX_JSON_DEPTH, classify, exceeds_depth
from connectors.registry import PROTOCOLS, get_protocol
from connectors.session import InvalidFrameLog, SessionSettings, WebSocketSession
from engine.batchqueue import BatchQueue
from engine.clock import FakeClock
from engine.errors import MalformedFrame
from engine.records import Trade
from engine.retry import RetryPolicy
from engine.stats import Counters
from sinks.keys import KeyTemplate
from tests.conftest import S3Server
from tests.harness import (
    assert_stored_exactly_once,
    exchange_stream_env,
    fake_exchange,
    read_manifest,
    run_stream,
    run_verify,
    stored_trades,
)
from tests.logcapture import captured_logs
from tests.strategies import json_values

#: One raw symbol each exchange trades, and a server path that subscribes to it.
SYMBOLS = {
    "binance": "BTCUSDT",
    "binanceus": "BTCUSD",
    "coinbase": "BTC-USD",
    "kraken": "BTC/USD",
    "bitstamp": "BTCUSD",
    "okx": "BTC-USDT",
    "bybit": "BTCUSDT",
}
CANONICAL = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}")
NS = 1_000_000_000


# -- the limits -----------------------------------------------------------------------------------


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@given(json_values, st.integers(min_value=0, max_value=6))
def test_exceeds_depth_is_exact_for_json(value: Any, limit: int) -> None:
    text = json.dumps(value)
    assert exceeds_depth(text, limit) == (depth(value) > limit)
    assert exceeds_depth(text.encode(), limit) == (depth(value) > limit)


@given(st.integers(min_value=0, max_value=300), st.sampled_from(["[]", "{}"]))
def test_exceeds_depth_at_the_limit(n: int, pair: str) -> None:
    nested = pair[0] * n + pair[1] * n
    wrapped = '{"a":"]]]]}}}","b":' + (nested or "0") + "}"
    assert exceeds_depth(nested) == (n > MAX_JSON_DEPTH)
    assert exceeds_depth(wrapped) == (n + 1 > MAX_JSON_DEPTH)


def test_exceeds_depth_of_brackets_inside_strings_and_truncated_frames() -> None:
    assert not exceeds_depth(json.dumps(["[" * 1000, "{" * 1000]))
    assert exceeds_depth("[" * 65)  # truncated, still too deep
    assert not exceeds_depth("]" * 500)


def test_classify_names_the_problem() -> None:
    json_error = MalformedFrame("json", "x")
    assert classify(b'{"a":"\xff"}', json_error).kind == "utf8"
    assert classify("[" * 2000 + "]" * 2000, json_error).kind == "nesting"
    inf = MalformedFrame("json", "number is infinity when parsed as double: line 1")
    assert classify(b"9" * 400, inf).kind == "number"
    assert classify(b"{", json_error) is json_error
    symbol = MalformedFrame("symbol", "x")
    assert classify(b"[" * 100, symbol) is symbol  # a parser's own diagnosis is kept


# -- every parser ---------------------------------------------------------------------------------


def server_session(exchange: str) -> tuple[ServerSession, str]:
    """A fake-exchange session of ``exchange`` subscribed to its symbol, and a stream name."""
    adapter = get_adapter(exchange)
    symbol = SYMBOLS[exchange]
    paths = (
        "/stream?streams=btcusdt@trade/btcusd@trade",
        "/v2",
        "/ws/v5/public",
        "/v5/public/spot",
        "/",
    )
    for path in paths:
        session = adapter.session(path, frozenset([symbol]), Faults())
        if session is not None:
            return session, next(iter(session.opening().subscribe), "trades")
    raise AssertionError(exchange)


def a_trade(exchange: str, raw_symbol: str | None = None, trade_id: int = 12345) -> Trade:
    raw = raw_symbol if raw_symbol is not None else SYMBOLS[exchange]
    return Trade(
        exchange, "BTC-USD", raw, str(trade_id), "1.5", "2", "buy", 1_700_000_000 * 10**6, 1
    )


def parse_safely(exchange: str, frame: bytes) -> Any:
    """Parse ``frame``; a rejection is fine, any other exception fails the test. Every trade
    that comes out has a canonical symbol and renders to a key under the prefix."""
    try:
        result = get_protocol(exchange).parse(frame, 1)
    except MalformedFrame as exc:
        return classify(frame, exc)
    for trade in result if isinstance(result, tuple | list) else ():
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
    return result


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
def test_every_hostile_frame_of_the_fault_is_rejected(exchange: str) -> None:
    session, stream = server_session(exchange)
    for number in range(len(HOSTILE_KINDS) * len(HOSTILE_SYMBOLS)):
        frame = hostile_frame(session, a_trade(exchange), stream, number)
        with pytest.raises(MalformedFrame):
            get_protocol(exchange).parse(frame.encode("utf-8", "surrogateescape"), 1)


_hostile_text = st.text(
    alphabet=st.sampled_from(["/", ".", "\x00", "\\", "A", "B", "1", "-", "é", "\u202e", " "]),
    min_size=1,
    max_size=24,
)


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(symbol=_hostile_text | st.sampled_from(HOSTILE_SYMBOLS))
def test_hostile_symbols_never_leave_the_prefix(exchange: str, symbol: str) -> None:
    session, stream = server_session(exchange)
    frame = session.encode(a_trade(exchange, symbol), stream).encode()
    parse_safely(exchange, frame)


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
@settings(max_examples=40)
@given(digits=st.integers(min_value=19, max_value=2000), sign=st.sampled_from(["", "-"]))
def test_huge_numbers_in_place_of_every_number(exchange: str, digits: int, sign: str) -> None:
    session, stream = server_session(exchange)
    good = session.encode(a_trade(exchange), stream)
    huge = re.sub(r"(?<![\w.\"])\d+(?![\w\"])", sign + "9" * digits, good)
    parse_safely(exchange, huge.encode())


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
@settings(max_examples=40)
@given(levels=st.integers(min_value=1, max_value=3000), where=st.sampled_from(["front", "all"]))
def test_deep_nesting_anywhere_in_a_frame(exchange: str, levels: int, where: str) -> None:
    session, stream = server_session(exchange)
    good = session.encode(a_trade(exchange), stream)
    deep = "[" * levels + "]" * levels
    frame = '{"deep":' + deep + "," + good[1:] if where == "front" else deep[:levels] + good
    result = parse_safely(exchange, frame.encode())
    if exchange == "kraken" and levels + 1 > MAX_JSON_DEPTH:
        assert isinstance(result, MalformedFrame) and result.kind == "nesting"


@pytest.mark.parametrize("exchange", sorted(PROTOCOLS))
@settings(max_examples=40)
@given(position=st.integers(min_value=0, max_value=400), junk=st.binary(min_size=1, max_size=4))
def test_invalid_utf8_anywhere_in_a_frame(exchange: str, position: int, junk: bytes) -> None:
    session, stream = server_session(exchange)
    good = session.encode(a_trade(exchange), stream).encode()
    at = position % (len(good) + 1)
    frame = good[:at] + b"\xff" + junk + good[at:]
    assert isinstance(parse_safely(exchange, frame), MalformedFrame)


# -- the session against the in-process fake exchange ---------------------------------------------


async def test_the_session_counts_each_kind_and_logs_it_once() -> None:
    clock = FakeClock()
    async with FakeExchange(
        "binance",
        rate=400,
        symbols=["BTCUSDT"],
        clock=clock,
        faults=Faults(hostile=0.2),
        seed=11,
    ) as fx:
        counters = Counters()
        queue: BatchQueue[Trade] = BatchQueue(100_000)
        session = WebSocketSession(
            get_protocol("binance"),
            fx.url,
            ["BTCUSDT"],
            queue,
            counters=counters,
            gaps=GapTracker(),
            invalid_log=InvalidFrameLog(counters),
            settings=SessionSettings(),
            backoff=RetryPolicy(initial=0.01, cap=0.02),
            clock=clock,
        )
        stop = asyncio.Event()
        with captured_logs("INFO") as logs:
            task = asyncio.create_task(session.run(stop))
            await fx.wait_ready(1)
            async with asyncio.timeout(30):
                while sum(fx.ledger.hostile_sent.values()) < 40:
                    clock.advance(0.1)
                    await fx.wait_tick()
            # The clock stands still now: nothing more is sent; the stop drains what arrived.
            stop.set()
            async with asyncio.timeout(10):
                await task
    sent = fx.ledger.hostile_sent
    assert set(sent) == set(HOSTILE_KINDS)
    assert counters.invalid == sum(sent.values())
    assert counters.reconnects == 0  # nothing hostile ended the connection
    logged = logs.docs("invalid_frame")
    assert sorted(doc["kind"] for doc in logged) == sorted(HOSTILE_KINDS)
    stored: list[Trade] = []
    while (batch := queue.get_nowait()) is not None:
        stored += batch
    assert [t.trade_id for t in stored] == [t.trade_id for t in fx.ledger.trades()]


# -- a real run -----------------------------------------------------------------------------------


def test_a_stream_run_survives_hostile_input(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    prefix = "hostile/run/"
    with fake_exchange(
        tmp_path, symbols="BTCUSDT,ETHUSDT", rate="500", faults="hostile=0.03,oversized=0.004"
    ) as fx:
        env = exchange_stream_env(
            s3_server.env(),
            bucket=bucket,
            prefix=prefix,
            streams="binance:BTCUSDT,binance:ETHUSDT",
            url_variable="BINANCE_WS_URL",
            url=fx.url,
            runtime="5",
        )
        done = run_stream(env, timeout=90)
        ledger = fx.stop()
        summary = fx.summary
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert summary is not None
    hostile = summary["hostile_sent"]
    assert set(hostile) == set(HOSTILE_KINDS), summary
    oversized = summary["oversized_sent"]
    assert oversized >= 1, summary
    manifest = read_manifest(s3_server.client(), bucket, prefix)
    assert manifest["status"] == "complete"
    invalid = manifest["counters"]["invalid"]
    # Every hostile frame was read and counted; every oversized frame the client read, too
    # (one sent as the run stopped may have gone unread).
    assert sum(hostile.values()) + oversized - 1 <= invalid <= sum(hostile.values()) + oversized
    assert manifest["counters"]["reconnects"] >= 1  # each oversized frame ends a connection
    logged = [json.loads(line) for line in done.stdout.splitlines() if '"invalid_frame"' in line]
    assert sorted(doc["kind"] for doc in logged) == sorted([*HOSTILE_KINDS, "oversized"])
    keys = s3_server.keys(bucket)
    assert keys and all(key.startswith(prefix) for key in keys)
    for key in keys:
        assert ".." not in key.split("/") and "\x00" not in key and "\\" not in key
        assert re.fullmatch(r"[A-Za-z0-9._=/-]+", key), key
    assert_stored_exactly_once(ledger, stored_trades(s3_server.client(), bucket, prefix))
    verified = run_verify(s3_server.env(), bucket, prefix)
    assert verified.returncode == 0, verified.stdout
