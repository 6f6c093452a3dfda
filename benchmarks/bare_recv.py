"""The ceilings: a bare WebSocket receive loop, no parsing, against the blasting fake server.

See docs/load-testing.md#make-bench.

Usage: ``python -m benchmarks.bare_recv URL SECONDS [--transport websockets|aiohttp]
[--parse]``. One connection to ``URL``, frames received for ``SECONDS`` and dropped (with
``--parse``: each one ``orjson.loads``-ed, the floor of any parser). Runs on the engine's event
loop (uvloop when installed, :func:`engine.aio.run`). Prints one JSON line: ``messages``,
``seconds``, ``msgs_per_s``, ``cpu_us_per_msg`` (this process's CPU time per frame) and
``peak_rss_mb`` (this process's ``VmHWM``), plus ``transport`` and ``parse``.

Transports: ``websockets`` (the engine's transport today; ``max_queue=1024``, no compression)
and ``aiohttp`` (its WebSocket client, frames read one ``receive()`` at a time, no compression,
autoping on). Both with a 1 MiB frame limit, as the engine's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import aiohttp
import orjson
from websockets.asyncio.client import connect

from benchmarks.figures import Stopwatch, rates
from engine import aio

TRANSPORTS = ("websockets", "aiohttp")
MAX_FRAME = 1 << 20
CHECK_EVERY = 1023
"""The clock is read once per 1024 frames (a mask)."""


def _sink(parse: bool) -> Callable[[str | bytes], object]:
    """What each frame goes through: ``orjson.loads`` with ``parse``, else nothing."""
    return orjson.loads if parse else (lambda frame: None)


async def receive_websockets(url: str, seconds: float, parse: bool = False) -> dict[str, float]:
    """``websockets``' client: frames for ``seconds``; the figures of :func:`rates`."""
    count, sink = 0, _sink(parse)
    # close_timeout: closing while the server still blasts, the full receive buffer keeps the
    # client from reading the server's close frame; the figures are taken by then.
    async with connect(
        url, max_size=MAX_FRAME, max_queue=1024, compression=None, close_timeout=0.5
    ) as ws:
        watch = Stopwatch()
        end = watch.started + seconds
        async for frame in ws:
            sink(frame)
            count += 1
            if count & CHECK_EVERY == 0 and time.monotonic() >= end:
                break
        elapsed, cpu = watch.read()
    return {"messages": count, **rates(count, elapsed, cpu, unit="msg")}


async def receive_aiohttp(url: str, seconds: float, parse: bool = False) -> dict[str, float]:
    """aiohttp's WebSocket client: frames for ``seconds``; the figures of :func:`rates`. Ends
    early (with what it counted) when the server closes the connection."""
    count, sink = 0, _sink(parse)
    text, binary = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, max_msg_size=MAX_FRAME, compress=0, autoping=True) as ws,
    ):
        watch = Stopwatch()
        end = watch.started + seconds
        receive = ws.receive
        while True:
            msg = await receive()
            if msg.type is not text and msg.type is not binary:
                break  # closed, closing or an error: the figures so far
            sink(msg.data)
            count += 1
            if count & CHECK_EVERY == 0 and time.monotonic() >= end:
                break
        elapsed, cpu = watch.read()
    return {"messages": count, **rates(count, elapsed, cpu, unit="msg")}


async def receive(
    url: str, seconds: float, transport: str = "websockets", parse: bool = False
) -> dict[str, float | str | bool]:
    """The bare loop of ``transport`` (one of :data:`TRANSPORTS`) against ``url``."""
    loop = receive_aiohttp if transport == "aiohttp" else receive_websockets
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}")
    result: dict[str, float | str | bool] = {
        "transport": transport,
        "parse": parse,
        **(await loop(url, seconds, parse)),
    }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_recv")
    parser.add_argument("url")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--transport", choices=TRANSPORTS, default="websockets")
    parser.add_argument("--parse", action="store_true", help="orjson.loads each frame")
    args = parser.parse_args(argv)
    result = aio.run(receive(args.url, args.seconds, args.transport, args.parse))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
