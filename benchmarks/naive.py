"""The naive baseline of SPEC §11/§12: json + a list + gzip (level 9) + boto3, per window.

What a first prototype does: parse every frame with `json`, keep dicts in a list, and at each
window end `gzip.compress` the whole window and `put_object` it with boto3, blocking the loop.

Usage: ``python -m benchmarks.naive URL SECONDS BUCKET WINDOW_SECONDS`` (a WebSocket feed), or
``python -m benchmarks.naive --file RECORDING BUCKET WINDOW_SECONDS`` (the replay baseline: read
a ``.zst`` recording to its end with ``json`` per line and per frame, same list, same gzip, same
boto3). Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import sys
import time
from typing import Any

import boto3
import zstandard
from websockets.asyncio.client import connect

from engine.stats import peak_rss_bytes


async def run(url: str, seconds: float, bucket: str, window: float) -> dict[str, float]:
    s3 = boto3.client("s3")
    trades: list[dict[str, object]] = []
    count = 0
    seq = 0

    def flush() -> None:
        nonlocal trades, seq
        if trades:
            body = gzip.compress("\n".join(json.dumps(t) for t in trades).encode())
            s3.put_object(Bucket=bucket, Key=f"naive/{seq:06d}.ndjson.gz", Body=body)
            seq += 1
            trades = []

    async with connect(url, max_size=1 << 20) as ws:
        started = time.monotonic()
        cpu0 = time.process_time()
        next_flush = started + window
        end = started + seconds
        async for frame in ws:
            msg = json.loads(frame)
            data = msg.get("data", msg)
            if data.get("e") == "trade":
                trades.append(
                    {
                        "exchange": "binance",
                        "symbol": data["s"],
                        "trade_id": str(data["t"]),
                        "price": data["p"],
                        "size": data["q"],
                        "side": "sell" if data["m"] else "buy",
                        "ts_event": data["T"] * 1000,
                        "ts_recv": time.time_ns(),
                    }
                )
                count += 1
            now = time.monotonic()
            if now >= next_flush:
                flush()
                next_flush = now + window
            if now >= end:
                break
        flush()
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu0
    return {
        "trades": count,
        "seconds": round(elapsed, 3),
        "trades_per_s": round(count / elapsed, 1),
        "cpu_us_per_trade": round(cpu / max(count, 1) * 1e6, 3),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
    }


def run_file(path: str, bucket: str, window: float) -> dict[str, float]:
    """The naive pipeline over a recording (zstd or plain), read to its end; windows close
    every ``window`` seconds of wall time, as in :func:`run`."""
    s3 = boto3.client("s3")
    trades: list[dict[str, Any]] = []
    count = seq = 0

    def flush() -> None:
        nonlocal trades, seq
        if trades:
            body = gzip.compress("\n".join(json.dumps(t) for t in trades).encode())
            s3.put_object(Bucket=bucket, Key=f"naive-replay/{seq:06d}.ndjson.gz", Body=body)
            seq += 1
            trades = []

    started = time.monotonic()
    cpu0 = time.process_time()
    next_flush = started + window
    with open(path, "rb") as raw:
        binary: Any = raw
        if raw.read(4) == b"\x28\xb5\x2f\xfd":
            raw.seek(0)
            binary = zstandard.ZstdDecompressor().stream_reader(raw)
        else:
            raw.seek(0)
        for line in io.TextIOWrapper(binary, encoding="utf-8"):
            record = json.loads(line)
            if record["dir"] != "in":
                continue
            msg = json.loads(record["frame"])
            data = msg.get("data", msg)
            if data.get("e") == "trade":
                trades.append(
                    {
                        "exchange": "binance",
                        "symbol": data["s"],
                        "trade_id": str(data["t"]),
                        "price": data["p"],
                        "size": data["q"],
                        "side": "sell" if data["m"] else "buy",
                        "ts_event": data["T"] * 1000,
                        "ts_recv": record["ts"],
                    }
                )
                count += 1
            if count & 1023 == 0 and time.monotonic() >= next_flush:
                flush()
                next_flush = time.monotonic() + window
    flush()
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu0
    return {
        "trades": count,
        "seconds": round(elapsed, 3),
        "trades_per_s": round(count / elapsed, 1),
        "cpu_us_per_trade": round(cpu / max(count, 1) * 1e6, 3),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
    }


def main() -> None:
    if sys.argv[1] == "--file":
        path, bucket, window = sys.argv[2], sys.argv[3], float(sys.argv[4])
        sys.stdout.write(json.dumps(run_file(path, bucket, window)) + "\n")
        return
    url, seconds, bucket, window = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    result = asyncio.run(run(url, seconds, bucket, window))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
