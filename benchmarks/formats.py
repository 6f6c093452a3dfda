"""The ``formats`` lines of `make bench` (docs: load-testing.md#make-bench): what each ``FORMAT``
costs per trade, in CPU and in stored bytes.

Two measures, side by side:

* end to end: the `zst`, `gz` and `parquet` rows of the WebSocket half (``feedvault stream``
  into S3, the same generator): the process's CPU µs per trade and the stored object bytes per
  trade (the manifest's bytes over its records);
* the encoder alone (:func:`encoder_figures`): Binance-like trades (8-place prices and sizes,
  rising ids, microsecond times), written in batches of 100 as the windower writes them, into
  one object per format; the best of three passes, CPU µs and bytes per trade.
"""

from __future__ import annotations

import time
from typing import Any

from engine.records import Trade
from sinks.encoders import FORMATS, make_encoder

#: The WebSocket half's row of each format.
ROWS = {"ndjson.zst": "zst", "ndjson.gz": "gz", "parquet": "parquet"}


def sample_trades(count: int) -> list[Trade]:
    """``count`` Binance-like trades of one symbol: prices wandering around 43,000 with 8
    places, sizes of 1 to 5 significant digits, ids and times rising."""
    out = []
    for i in range(count):
        price = 4_300_000_000_000 + (i * 7919) % 2_000_000_000 - 1_000_000_000
        size = 10 ** (i % 5) * (1 + i % 7)
        out.append(
            Trade(
                "binance",
                "BTC-USDT",
                "BTCUSDT",
                str(4_000_000_000 + i),
                f"{price // 10**8}.{price % 10**8:08d}",
                f"{size // 10**8}.{size % 10**8:08d}",
                "buy" if (i * 31) % 3 else "sell",
                1_765_000_000_000_000 + i * 250,
                1_765_000_000_000_000_000 + i * 250_000 + 37_000,
            )
        )
    return out


def encoder_figures(count: int = 200_000, batch: int = 100) -> dict[str, dict[str, float]]:
    """Per format: ``cpu_us_per_trade`` (best of three passes) and ``bytes_per_trade`` of
    encoding :func:`sample_trades` in batches of ``batch``."""
    trades = sample_trades(count)
    partition = {"exchange": "binance", "symbol": "BTC-USDT"}
    out: dict[str, dict[str, float]] = {}
    for fmt in FORMATS:
        best, size = float("inf"), 0
        for _ in range(3):
            cpu0 = time.process_time()
            encoder = make_encoder(fmt, partition=partition)
            for start in range(0, count, batch):
                encoder.write(trades[start : start + batch])
            size = len(encoder.finish())
            best = min(best, time.process_time() - cpu0)
        out[fmt] = {
            "cpu_us_per_trade": round(best / count * 1e6, 3),
            "bytes_per_trade": round(size / count, 1),
        }
    return out


def formats_report(results: dict[str, dict[str, Any]]) -> list[str]:
    """The formats table: per format, end to end (its row of the WebSocket half, when it ran)
    and the encoder alone (``results["encoders"]``, when measured)."""
    encoders = results.get("encoders", {})
    if not encoders and not any(row in results for row in ROWS.values()):
        return []
    lines = [
        f"{'formats':<22} {'cpu us/trade':>13} {'bytes/trade':>12} "
        f"{'encoder us/trade':>17} {'encoder B/trade':>16}"
    ]
    for fmt, row in ROWS.items():
        stream = results.get(row, {})
        alone = encoders.get(fmt, {})
        if stream.get("trades"):
            cpu = f"{stream['cpu_us_per_trade']:.2f}"
            stored = f"{stream['bytes'] / stream['trades']:.1f}"
        else:
            cpu = stored = "-"
        enc_cpu = f"{alone['cpu_us_per_trade']:.2f}" if alone else "-"
        enc_bytes = f"{alone['bytes_per_trade']:.1f}" if alone else "-"
        lines.append(
            f"  {fmt + ' (' + row + ')':<20} {cpu:>13} {stored:>12} {enc_cpu:>17} {enc_bytes:>16}"
        )
    return lines
