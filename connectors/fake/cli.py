"""``feedvault fake-exchange``: run the fake exchange server from the command line.

See docs/testing.md#the-fake-exchange.

On start it prints one JSON line to stdout, so a parent process can find the port::

    {"event":"listening","protocol":"binance","url":"ws://127.0.0.1:PORT","port":PORT}

It runs until SIGTERM/SIGINT or ``--duration`` seconds, then closes every connection, completes
the ``--ledger`` JSONL file (streamed while running) and prints a summary line
``{"event":"stopped",...}``. Exit 0; 2 for a bad flag (one line on stderr naming it).

With ``--recording FILE`` (repeatable: files play in order) it serves a recorded feed instead of
synthetic trades: every connection that subscribes gets the recording's received frames of
``--protocol``'s exchange, at the recorded pace times ``--speed`` (``max``: as fast as the socket
takes them), once or with ``--loop`` over and over. The files are read through once before
listening, so a bad one is refused (exit 2, ``--recording: FILE:LINE: problem``), and the
symbols traded in it are added to ``--symbols`` (exchanges such as Coinbase refuse subscriptions
to products the server does not list); the ``listening`` line then carries
``"recorded_frames"`` and ``"recorded_trades"`` (per pass).

Order books (docs: testing.md#order-books-on-the-fake-exchange) are served to whoever subscribes
to a book channel, ``--book-rate`` messages per second per symbol (``max``, with ``--rate max``:
as fast as the readers take them); ``--book-ledger FILE`` writes,
at the stop, the book each connection was served and each symbol's latest book (JSONL, levels
best first), and the ``stopped`` line counts the book messages sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

import orjson

from connectors.fake.adapters import ADAPTERS
from connectors.fake.book_market import DEFAULT_RATE
from connectors.fake.faults import Faults
from connectors.fake.ledger import Ledger
from connectors.fake.market import rate_from_text
from connectors.fake.recorded import RecordedFeed, Scan
from connectors.fake.server import TICK_SECONDS, FakeExchange
from engine.errors import ConfigError, RecordingError

CLI_BOOK_HISTORY = 20_000
"""Book messages of history kept per symbol (for ``--book-ledger``'s books: a long run keeps
the latest only)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the fake-exchange flags to ``parser``."""
    parser.add_argument(
        "--protocol",
        default="binance",
        help="exchange protocol to speak: " + ", ".join(ADAPTERS),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0: pick a free one)")
    parser.add_argument(
        "--rate", default="1000", help="trades per second across all symbols, or 'max'"
    )
    parser.add_argument("--symbols", default="BTCUSDT", help="comma list of the exchange's symbols")
    parser.add_argument(
        "--faults",
        default="",
        help="comma list of disconnect-every=N, stall=S@E, malformed=P, oversized=P, "
        "shutdown-notice-every=N, reject-unknown, drop-pongs, hostile=P, restart-ids=N, "
        "book-gap=N|once@N, book-checksum=N|once@N, late-snapshot=S, "
        "stale-snapshot=N|once@N, book-restart=S "
        "(e.g. disconnect-every=5,stall=3@10,malformed=0.01)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic market")
    parser.add_argument("--first-id", type=int, default=1, help="first trade id per symbol")
    parser.add_argument("--max-trades", type=int, default=None, help="stop producing after N")
    parser.add_argument("--ledger", default=None, help="write sent trades to this JSONL file")
    parser.add_argument(
        "--book-rate",
        default=str(DEFAULT_RATE),
        help="order-book messages per second per symbol (default %(default)s), or 'max' (with "
        "--rate max): made when a book reader has taken the last ones",
    )
    parser.add_argument(
        "--book-ledger",
        default=None,
        help="at the stop, write the order book each connection was served to this JSONL file",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    parser.add_argument(
        "--backlog-seconds",
        type=float,
        default=10.0,
        help="a connection's send backlog holds this many seconds of ticks; a reader further "
        "behind loses trades (counted as undelivered)",
    )
    parser.add_argument(
        "--recording",
        action="append",
        default=None,
        metavar="FILE",
        help="serve this recording's received frames instead of synthetic trades "
        "(repeat for several files, played in order; .gz/.zst/plain); --rate is then unused",
    )
    parser.add_argument(
        "--speed",
        default="1",
        help="with --recording: 1 = recorded pace, N = N times faster, 'max' = no pacing",
    )
    parser.add_argument(
        "--loop", action="store_true", help="with --recording: start again after the last frame"
    )


def _book_rate(text: str, rate: float | None) -> float | None:
    """``--book-rate``: messages per second in (0, 1000000], or None for ``max`` (any case;
    only with ``--rate max``). ConfigError naming the flag otherwise."""
    if text.lower() == "max":
        if rate is not None:
            raise ConfigError("--book-rate", "max needs --rate max")
        return None
    try:
        book_rate = float(text)
    except ValueError:
        raise ConfigError("--book-rate", f"{text!r} is not a number or 'max'") from None
    if not 0 < book_rate <= 1_000_000:
        raise ConfigError("--book-rate", "must be in (0, 1000000]")
    return book_rate


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the flags; raise ConfigError naming the first bad one."""
    if args.protocol not in ADAPTERS:
        raise ConfigError("--protocol", f"unknown protocol {args.protocol!r}")
    rate = rate_from_text(str(args.rate))
    symbols = [s.strip().upper() for s in str(args.symbols).split(",") if s.strip()]
    if not symbols:
        raise ConfigError("--symbols", "is empty")
    try:
        faults = Faults.parse(args.faults)
    except ValueError as exc:
        raise ConfigError("--faults", str(exc)) from None
    if not 0 <= args.port <= 65535:
        raise ConfigError("--port", "must be 0..65535")
    if args.duration is not None and not args.duration > 0:
        raise ConfigError("--duration", "must be positive")
    if args.max_trades is not None and args.max_trades < 0:
        raise ConfigError("--max-trades", "must not be negative")
    book_rate = _book_rate(str(args.book_rate), rate)
    if not 0 < args.backlog_seconds <= 3600:
        raise ConfigError("--backlog-seconds", "must be in (0, 3600]")
    feed, scan = _recording(args)
    if scan is not None:
        symbols += sorted(scan.symbols - set(symbols))
    return {
        "rate": rate,
        "symbols": symbols,
        "faults": faults,
        "recording": feed,
        "scan": scan,
        "book_rate": book_rate,
    }


def _recording(args: argparse.Namespace) -> tuple[RecordedFeed | None, Scan | None]:
    """The recorded feed of ``--recording``/``--speed``/``--loop`` and what a pass sends, read
    through once to refuse a bad file early; ``(None, None)`` without ``--recording``. Raises
    ConfigError naming the flag."""
    paths = getattr(args, "recording", None)
    if not paths:
        return None, None
    speed: float | None
    text = str(args.speed).lower()
    try:
        speed = None if text == "max" else float(text)
        feed = RecordedFeed.of(paths, args.protocol, speed=speed, loop=args.loop)
    except ValueError:
        raise ConfigError("--speed", f"{args.speed!r} is not a positive number or 'max'") from None
    try:
        scan = feed.scan()
    except RecordingError as exc:
        raise ConfigError("--recording", str(exc)) from None
    return feed, scan


def _print(event: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(event).decode() + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> int:
    """Serve until a signal or ``--duration``; return the exit status."""
    try:
        config = _config(args)
        ledger = Ledger(args.ledger, memory_limit=0, book_history=CLI_BOOK_HISTORY)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"--ledger: cannot write: {exc.strerror}", file=sys.stderr)
        return 2
    scan: Scan | None = config["scan"]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        fake = FakeExchange(
            args.protocol,
            host=args.host,
            port=args.port,
            rate=config["rate"],
            symbols=config["symbols"],
            faults=config["faults"],
            seed=args.seed,
            first_id=args.first_id,
            ledger=ledger,
            max_trades=args.max_trades,
            recording=config["recording"],
            queue_batches=max(1, round(args.backlog_seconds / TICK_SECONDS)),
            book_rate=config["book_rate"],
        )
        async with fake:
            _print(
                {
                    "event": "listening",
                    "protocol": args.protocol,
                    "url": fake.url,
                    "port": fake.port,
                    **(
                        {"recorded_frames": scan.frames, "recorded_trades": scan.trades}
                        if scan is not None
                        else {}
                    ),
                }
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.duration):
                    await stop.wait()
    except OSError as exc:
        print(f"--port: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        ledger.close()
    if args.book_ledger:
        try:
            ledger.books.write(args.book_ledger)
        except OSError as exc:
            print(f"--book-ledger: cannot write: {exc.strerror}", file=sys.stderr)
            return 2
    summary: dict[str, Any] = {
        "event": "stopped",
        "ledger": args.ledger,
        **ledger.summary(),
        **ledger.books.summary(),
    }
    if config["recording"] is not None:
        summary["recorded_frames_sent"] = fake.recorded_frames_sent
        summary["recorded_passes"] = fake.recorded_passes
    _print(summary)
    return 0


def main(args: argparse.Namespace) -> int:
    """Synchronous entry point for the main CLI: ``run`` in a fresh event loop."""
    return asyncio.run(run(args))


if __name__ == "__main__":  # pragma: no cover
    _parser = argparse.ArgumentParser(prog="feedvault fake-exchange")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
