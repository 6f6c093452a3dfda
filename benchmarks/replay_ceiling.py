"""The replay path's ceiling: read and parse a recording, nothing else (no queue, no sink).

``connectors.recording.iter_records`` + ``BinanceProtocol.parse`` for every received frame: the
least any replay of the file can cost.

Usage: ``python -m benchmarks.replay_ceiling FILE``. Prints one JSON line: frames, trades,
seconds, trades_per_s, cpu_us_per_trade, peak_rss_mb.
"""

from __future__ import annotations

import sys

import orjson

from benchmarks.figures import Stopwatch, rates
from connectors.binance import BinanceProtocol
from connectors.recording import iter_records


def read_and_parse(path: str) -> dict[str, float]:
    parse = BinanceProtocol().parse
    frames = trades = 0
    watch = Stopwatch()
    for record in iter_records([path]):
        if record.dir == "in":
            frames += 1
            result = parse(record.frame, record.ts)
            if type(result) is tuple:
                trades += len(result)
    elapsed, cpu = watch.read()
    return {"frames": frames, "trades": trades, **rates(trades, elapsed, cpu)}


def main() -> None:
    sys.stdout.write(orjson.dumps(read_and_parse(sys.argv[1])).decode() + "\n")


if __name__ == "__main__":
    main()
