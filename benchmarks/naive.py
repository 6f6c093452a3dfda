"""The naive baseline of `make bench`: json + a list + gzip (level 9) + boto3, per window.

See docs/load-testing.md#make-bench.

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

from benchmarks.figures import Stopwatch, rates


class _Windows:
    """The naive window: trades as dicts in a list; :meth:`flush` gzips the whole list (level 9)
    and puts it with boto3, blocking, as ``{key_dir}/{seq:06d}.ndjson.gz``."""

    def __init__(self, bucket: str, key_dir: str) -> None:
        self.s3 = boto3.client("s3")
        self.bucket, self.key_dir = bucket, key_dir
        self.trades: list[dict[str, Any]] = []
        self.count = self.seq = 0

    def add(self, data: dict[str, Any], ts_recv: int) -> None:
        """Keep a Binance ``trade`` event (other events are passed over)."""
        if data.get("e") == "trade":
            self.trades.append(
                {
                    "exchange": "binance",
                    "symbol": data["s"],
                    "trade_id": str(data["t"]),
                    "price": data["p"],
                    "size": data["q"],
                    "side": "sell" if data["m"] else "buy",
                    "ts_event": data["T"] * 1000,
                    "ts_recv": ts_recv,
                }
            )
            self.count += 1

    def flush(self) -> None:
        if self.trades:
            body = gzip.compress("\n".join(json.dumps(t) for t in self.trades).encode())
            key = f"{self.key_dir}/{self.seq:06d}.ndjson.gz"
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
            self.seq += 1
            self.trades = []


async def run(url: str, seconds: float, bucket: str, window: float) -> dict[str, float]:
    windows = _Windows(bucket, "naive")
    async with connect(url, max_size=1 << 20) as ws:
        watch = Stopwatch()
        next_flush = watch.started + window
        end = watch.started + seconds
        async for frame in ws:
            msg = json.loads(frame)
            windows.add(msg.get("data", msg), time.time_ns())
            now = time.monotonic()
            if now >= next_flush:
                windows.flush()
                next_flush = now + window
            if now >= end:
                break
        windows.flush()
        elapsed, cpu = watch.read()
    return {"trades": windows.count, **rates(windows.count, elapsed, cpu)}


def run_file(path: str, bucket: str, window: float) -> dict[str, float]:
    """The naive pipeline over a recording (zstd or plain), read to its end; windows close
    every ``window`` seconds of wall time, as in :func:`run`."""
    windows = _Windows(bucket, "naive-replay")
    watch = Stopwatch()
    next_flush = watch.started + window
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
            windows.add(msg.get("data", msg), record["ts"])
            if windows.count & 1023 == 0 and time.monotonic() >= next_flush:
                windows.flush()
                next_flush = time.monotonic() + window
    windows.flush()
    elapsed, cpu = watch.read()
    return {"trades": windows.count, **rates(windows.count, elapsed, cpu)}


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
