"""The replay path's ceiling: read and parse a recording, nothing else (no queue, no sink).

``connectors.recording.iter_records`` + ``BinanceProtocol.parse`` for every received frame: the
least any replay of the file can cost.

Usage: ``python -m benchmarks.replay_ceiling FILE``. Prints one JSON line: frames, trades,
seconds, trades_per_s, cpu_us_per_trade, peak_rss_mb.
"""

from __future__ import annotations

import sys
import time

import orjson

from connectors.binance import BinanceProtocol
from connectors.recording import iter_records
from engine.stats import peak_rss_bytes


def read_and_parse(path: str) -> dict[str, float]:
    parse = BinanceProtocol().parse
    frames = trades = 0
    started = time.monotonic()
    cpu0 = time.process_time()
    for record in iter_records([path]):
        if record.dir == "in":
            frames += 1
            result = parse(record.frame, record.ts)
            if type(result) is tuple:
                trades += len(result)
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu0
    return {
        "frames": frames,
        "trades": trades,
        "seconds": round(elapsed, 3),
        "trades_per_s": round(trades / elapsed, 1),
        "cpu_us_per_trade": round(cpu / max(trades, 1) * 1e6, 3),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
    }


def main() -> None:
    sys.stdout.write(orjson.dumps(read_and_parse(sys.argv[1])).decode() + "\n")


if __name__ == "__main__":
    main()
