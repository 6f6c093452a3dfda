"""The naive baseline of SPEC §11/§12: json + a list + gzip (level 9) + boto3, per window.

What a first prototype does: parse every frame with `json`, keep dicts in a list, and at each
window end `gzip.compress` the whole window and `put_object` it with boto3, blocking the loop.

Usage: python -m benchmarks.naive URL SECONDS BUCKET WINDOW_SECONDS. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import time

import boto3
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


def main() -> None:
    url, seconds, bucket, window = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    result = asyncio.run(run(url, seconds, bucket, window))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
