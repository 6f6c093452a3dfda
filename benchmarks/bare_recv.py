"""The ceiling: a bare `websockets` receive loop, no parsing, against the blasting fake server.

Usage: python -m benchmarks.bare_recv URL SECONDS. Prints one JSON line: messages, seconds,
msgs_per_s, cpu_us_per_msg.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
from websockets.asyncio.client import connect

from engine.stats import peak_rss_bytes


async def receive(url: str, seconds: float) -> dict[str, float]:
    count = 0
    async with connect(url, max_size=1 << 20, max_queue=1024, compression=None) as ws:
        started = time.monotonic()
        cpu0 = time.process_time()
        end = started + seconds
        async for _ in ws:
            count += 1
            if count & 1023 == 0 and time.monotonic() >= end:
                break
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu0
    return {
        "messages": count,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(count / elapsed, 1),
        "cpu_us_per_msg": round(cpu / count * 1e6, 3),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
    }


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    result = asyncio.run(receive(url, seconds))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
