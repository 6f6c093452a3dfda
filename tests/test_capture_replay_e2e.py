"""Record and replay end to end (docs: recording-and-replay.md), as subprocesses over loopback:
`feedvault stream --capture` against the fake exchange into moto's S3, then `feedvault replay` of
the captured raw objects; and the real cryptofeed recordings, converted, replayed at max and paced
speed."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.recording_cli import convert
from connectors.transports import TRANSPORTS
from tests.conftest import FIXTURES, S3Server
from tests.harness import (
    FEEDVAULT,
    base_env,
    fake_exchange,
    fake_stream_env,
    read_manifest,
    run_feedvault,
    run_verify,
    start_stream,
    stored_trades,
)

RECORDINGS = Path(FIXTURES) / "cryptofeed-recordings"


def by_identity(trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(trades, key=lambda t: (t["exchange"], t["symbol"], int(t["trade_id"])))


def replay(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEEDVAULT, "replay", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("ws_transport", sorted(TRANSPORTS))
def test_captured_live_run_replays_to_the_same_trades(
    s3_server: S3Server, bucket: str, tmp_path: Path, ws_transport: str
) -> None:
    """Part of the session conformance suite (tests/test_session_conformance.py): the capture
    of raw frames on each ``WS_TRANSPORT``."""
    with fake_exchange(tmp_path, rate="1500", symbols="BTCUSDT,ETHUSDT") as fx:
        env = fake_stream_env(
            s3_server.env(), fx.url, bucket, "live/", "4", WS_TRANSPORT=ws_transport
        )
        proc = start_stream(env, "--capture")
        out, err = proc.communicate(timeout=60)
        fx.stop()
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    client = s3_server.client()
    live = stored_trades(client, bucket, "live/")
    raw_keys = s3_server.keys(bucket, "live/raw/")
    assert live and raw_keys
    assert all(k.startswith("live/raw/exchange=binance/date=") for k in raw_keys)
    manifest = read_manifest(client, bucket, "live/")
    assert manifest["config"]["ws_transport"] == ws_transport
    assert set(raw_keys) <= {o["key"] for o in manifest["objects"]}
    assert run_verify(s3_server.env(), bucket, "live/").returncode == 0

    result = replay(
        base_env(**s3_server.env()),
        f"s3://{bucket}/live/raw/",
        "--speed",
        "max",
        "--out",
        f"s3://{bucket}/other/",
    )
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    replayed = stored_trades(client, bucket, "other/")
    assert by_identity(replayed) == by_identity(live)  # field for field, ts_recv included
    again = read_manifest(client, bucket, "other/")
    assert again["status"] == "complete"
    assert again["counters"]["parsed"] == len(live)
    verified = run_verify(s3_server.env(), bucket, "other/")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def expected_trades(path: Path) -> list[tuple[str, str, str, int]]:
    """(trade id, price, size, ts_recv) of every trade message in a cryptofeed capture, read
    independently of feedvault's parsers."""
    from connectors.recording import epoch_text_to_ns

    out = []
    for line in path.read_text().splitlines():
        if not line[:1].isdigit():
            continue
        epoch, _, text = line.partition(": ")
        msg = json.loads(text)
        data = msg.get("data", msg)
        if data.get("e") == "aggTrade":
            out.append((str(data["a"]), data["p"], data["q"], epoch_text_to_ns(epoch)))
        elif data.get("type") in ("match", "last_match"):
            out.append(
                (str(data["trade_id"]), data["price"], data["size"], epoch_text_to_ns(epoch))
            )
    return sorted(out)


def stored_local(root: Path) -> list[dict[str, Any]]:
    from tests.harness import decode_object

    trades: list[dict[str, Any]] = []
    for path in sorted((root / "trades").rglob("*.ndjson.*")):
        trades += decode_object(path.read_bytes(), path.name)
    return trades


@pytest.mark.parametrize(
    ("name", "exchange", "speed"),
    [
        ("BINANCE.ws.1.0", "binance", "max"),
        ("BINANCE.ws.1.0", "binance", "10"),
        ("COINBASE.ws.28.0", "coinbase", "max"),
    ],
)
def test_real_recordings_replay_exactly_their_trades(
    tmp_path: Path, name: str, exchange: str, speed: str
) -> None:
    source = RECORDINGS / name
    recording = tmp_path / f"{name}.jsonl.zst"
    convert(source, recording, exchange)
    out = tmp_path / "out"
    started = time.monotonic()
    result = replay(base_env(), str(recording), "--speed", speed, "--out", f"file://{out}/")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    stored = stored_local(out)
    got = sorted((t["trade_id"], t["price"], t["size"], t["ts_recv"]) for t in stored)
    assert got == expected_trades(source)
    assert {t["exchange"] for t in stored} == {exchange}
    verified = run_feedvault(base_env(), "verify", f"file://{out}/")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    if speed != "max":
        from connectors.recording import iter_records

        received = [f.ts for f in iter_records([recording]) if f.dir == "in"]
        span = (received[-1] - received[0]) / 1e9
        assert span > 20  # the recording spans ~30 s; paced at 10x the replay takes ~3 s
        assert span / float(speed) * 0.9 <= took < span / float(speed) + 30


def test_missing_input_exits_2_naming_it(tmp_path: Path) -> None:
    result = replay(base_env(), str(tmp_path / "nope.jsonl"), "--out", f"file://{tmp_path}/o/")
    assert result.returncode == 2
    assert "FILE" in result.stderr and "nope.jsonl" in result.stderr
    assert not (tmp_path / "o").exists()


def test_missing_destination_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = replay(base_env(), str(tmp_path))
    assert result.returncode == 2 and "S3_BUCKET" in result.stderr
