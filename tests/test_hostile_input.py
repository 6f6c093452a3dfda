"""Hostile feed input (issue 7): oversized frames, invalid UTF-8, deep nesting, huge numbers,
symbols with ``/``, ``..`` and NUL. Counted as invalid, logged once per kind, never a crash,
never a key outside the prefix.

Three levels: the pure limits (:mod:`connectors.limits`; every protocol's parser under
hypothesis is in tests/test_protocol_contract.py); the session against the in-process fake
exchange's ``hostile`` fault (in tests/test_session_conformance.py, on both transports); and a
real ``feedvault stream`` run against ``feedvault fake-exchange --faults
hostile=...,oversized=...`` into moto's S3 server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from connectors.fake.hostile import HOSTILE_KINDS
from connectors.limits import MAX_JSON_DEPTH, classify, exceeds_depth
from engine.errors import MalformedFrame
from tests.conftest import S3Server
from tests.harness import (
    assert_stored_exactly_once,
    fake_exchange,
    fake_stream_env,
    read_manifest,
    run_stream,
    run_verify,
    stored_trades,
)
from tests.strategies import json_values

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


# -- a real run -----------------------------------------------------------------------------------


def test_a_stream_run_survives_hostile_input(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    prefix = "hostile/run/"
    with fake_exchange(
        tmp_path, symbols="BTCUSDT,ETHUSDT", rate="500", faults="hostile=0.03,oversized=0.004"
    ) as fx:
        env = fake_stream_env(s3_server.env(), fx.url, bucket, prefix, "5")
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
