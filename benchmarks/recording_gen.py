"""A synthetic Binance recording for the replay bench: N trade frames in a ``.zst`` recording.

Frames are combined-stream ``trade`` events (``connectors.binance.encode_trade``) for three
symbols in turn, per-symbol ids from 1, recorded 10 µs apart (a 100k frames/s feed), so a replay
at ``--speed max`` is bounded by the engine, not by the recording. Deterministic: the same N
gives the same file.

Usage: ``python -m benchmarks.recording_gen OUT N``; prints one JSON line (frames, bytes,
seconds).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import orjson

from connectors.binance import encode_trade
from connectors.recording import RecordingWriter
from engine.records import BUY, SELL, Trade

SYMBOLS = (
    ("BTCUSDT", "BTC-USDT", 27_000_00),
    ("ETHUSDT", "ETH-USDT", 1_800_00),
    ("BNBUSDT", "BNB-USDT", 240_00),
)
START_NS = 1_700_000_000_000_000_000
STEP_NS = 10_000


def generate(path: Path, frames: int) -> int:
    """Write ``frames`` trade frames to ``path`` (compression by suffix); return its size."""
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    with RecordingWriter(path, level=1) as writer:
        write = writer.write_line
        for i in range(frames):
            raw, symbol, cents = SYMBOLS[i % 3]
            ts = START_NS + i * STEP_NS
            price = cents + (i * 7919) % 5000
            trade = Trade(
                "binance",
                symbol,
                raw,
                str(i // 3 + 1),
                f"{price // 100}.{price % 100:02d}000000",
                f"0.{(i * 104729) % 99999 + 1:05d}000",
                SELL if i & 1 else BUY,
                ts // 1000,
                0,
            )
            text = encode_trade(trade, combined=True)
            write(
                dumps({"ts": ts, "exchange": "binance", "dir": "in", "frame": text}, option=option)
            )
    return path.stat().st_size


def main() -> None:
    out, frames = Path(sys.argv[1]), int(sys.argv[2])
    started = time.monotonic()
    size = generate(out, frames)
    doc = {"frames": frames, "bytes": size, "seconds": round(time.monotonic() - started, 2)}
    sys.stdout.write(json.dumps(doc) + "\n")


if __name__ == "__main__":
    main()
