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

from benchmarks.figures import Stopwatch, rates


async def receive(url: str, seconds: float) -> dict[str, float]:
    count = 0
    async with connect(url, max_size=1 << 20, max_queue=1024, compression=None) as ws:
        watch = Stopwatch()
        end = watch.started + seconds
        async for _ in ws:
            count += 1
            if count & 1023 == 0 and time.monotonic() >= end:
                break
        elapsed, cpu = watch.read()
    return {"messages": count, **rates(count, elapsed, cpu, unit="msg")}


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    result = asyncio.run(receive(url, seconds))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
