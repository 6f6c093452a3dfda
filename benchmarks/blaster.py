"""A bench-only load generator: Binance combined-stream trade frames, pre-framed, in batches.

See docs/load-testing.md#make-bench.

``feedvault fake-exchange --rate max`` used to build a :class:`~engine.records.Trade` per frame
(about 5 µs of CPU per frame); its fast path now works as this generator does, with a ledger, at
about the same cost (docs: load-testing.md#the-load-generator). This generator, kept for
comparison, does only what a throughput run needs: per
connection, frames for the symbols of the URL (``/stream?streams=btcusdt@trade/...``) in
round-robin, each symbol's trade ids counting up from 1 without a gap, the event time of the
batch, and price, size and side taken in turn from a short ring of realistic values per symbol
(made once by the fake exchange's market). A batch of frames is formatted, WebSocket-framed by
hand (server frames are unmasked; no compression is negotiated) and written in one piece inside
websockets' ``send_context`` (its write flow control: ``write_limit=0`` waits until the kernel
took the bytes). It keeps no ledger and answers no subscription message (the URL subscribes);
websockets answers pings.

Usage: ``python -m benchmarks.blaster [--port 0] [--batch 512]``. Prints
``{"event":"listening","url":"ws://127.0.0.1:PORT","port":PORT}`` and serves until SIGTERM or
SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from connectors.fake.fast import frame_header
from connectors.fake.market import Market
from engine import aio
from engine.records import SELL

RING = 64
"""Price/size/side values per symbol, taken in turn."""
BATCH = 512
"""Frames per write."""


def symbols_of(path: str) -> list[str]:
    """The raw symbols of a combined-stream path's ``@trade`` streams, upper case, in order
    (``/stream?streams=btcusdt@trade/ethusdt@trade`` -> ``["BTCUSDT", "ETHUSDT"]``)."""
    streams = parse_qs(urlsplit(path).query).get("streams", [""])[0]
    return [s.split("@")[0].upper() for s in streams.split("/") if s.endswith("@trade")]


class Symbol:
    """One symbol's frame pieces: the text around the event time and id, and the ring of
    ``,"p":...,"T":`` middles and ``,"m":...}}`` tails."""

    def __init__(self, raw: str, seed: int) -> None:
        self.head = f'{{"stream":"{raw.lower()}@trade","data":{{"e":"trade","E":'
        self.sym = f',"s":"{raw}","t":'
        trades = Market([raw], rate=None, seed=seed).take([raw], RING)
        self.ring = [
            (
                f',"p":"{t.price}","q":"{t.size}","T":',
                f',"m":{"true" if t.side == SELL else "false"},"M":true}}}}',
            )
            for t in trades
        ]
        self.next_id = 1


class Blast:
    """Frame batches for one connection: round-robin over its symbols, ids counting up."""

    def __init__(self, raw_symbols: Sequence[str]) -> None:
        self.symbols = [Symbol(raw, seed) for seed, raw in enumerate(raw_symbols, 1)]
        self.turn = 0

    def batch(self, count: int, ts_ms: int) -> bytes:
        """The next ``count`` frames, framed and joined, all with event time ``ts_ms``."""
        ms = str(ts_ms)
        symbols, width, turn = self.symbols, len(self.symbols), self.turn
        parts: list[bytes] = []
        append = parts.append
        for i in range(turn, turn + count):
            sym = symbols[i % width]
            tid = sym.next_id
            sym.next_id = tid + 1
            mid, tail = sym.ring[tid % RING]
            text = f"{sym.head}{ms}{sym.sym}{tid}{mid}{ms}{tail}".encode()
            append(frame_header(len(text)))
            append(text)
        self.turn = (turn + count) % width
        return b"".join(parts)


async def blast(ws: ServerConnection, batch: int = BATCH) -> None:
    """Send batches to ``ws`` until it closes; a path with no ``@trade`` stream gets none."""
    symbols = symbols_of(ws.request.path if ws.request is not None else "")
    if not symbols:
        await ws.wait_closed()
        return
    frames = Blast(symbols)
    transport = ws.transport
    try:
        while True:
            data = frames.batch(batch, time.time_ns() // 1_000_000)
            async with ws.send_context():
                transport.write(data)
            await asyncio.sleep(0)  # one yield per batch even when the socket never pushes back
    except ConnectionClosed:  # the client went away
        return


def print_line(event: dict[str, object]) -> None:
    """Print ``event`` as one JSON line on stdout."""
    sys.stdout.write(orjson.dumps(event).decode() + "\n")
    sys.stdout.flush()


async def run(
    host: str,
    port: int,
    batch: int,
    stop: asyncio.Event,
    on_listening: Callable[[dict[str, object]], None] = print_line,
) -> None:
    """Serve on ``host:port`` until ``stop``; hand the listening line (``event``, ``url``,
    ``port``) to ``on_listening`` first."""
    async with serve(
        lambda ws: blast(ws, batch),
        host,
        port,
        compression=None,
        write_limit=0,
        max_size=1 << 20,
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        on_listening({"event": "listening", "url": f"ws://{host}:{bound}", "port": bound})
        await stop.wait()


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(args.host, args.port, args.batch, stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.blaster")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--batch", type=int, default=BATCH, help="frames per write")
    aio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
