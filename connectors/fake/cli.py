"""``feedvault fake-exchange``: run the fake exchange server from the command line (SPEC §7).

On start it prints one JSON line to stdout, so a parent process can find the port::

    {"event":"listening","protocol":"binance","url":"ws://127.0.0.1:PORT","port":PORT}

It runs until SIGTERM/SIGINT or ``--duration`` seconds, then closes every connection, completes
the ``--ledger`` JSONL file (streamed while running) and prints a summary line
``{"event":"stopped",...}``. Exit 0; 2 for a bad flag (one line on stderr naming it).
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
from connectors.fake.faults import Faults
from connectors.fake.ledger import Ledger
from connectors.fake.server import FakeExchange
from engine.errors import ConfigError


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
        "shutdown-notice-every=N, reject-unknown, drop-pongs "
        "(e.g. disconnect-every=5,stall=3@10,malformed=0.01)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic market")
    parser.add_argument("--first-id", type=int, default=1, help="first trade id per symbol")
    parser.add_argument("--max-trades", type=int, default=None, help="stop producing after N")
    parser.add_argument("--ledger", default=None, help="write sent trades to this JSONL file")
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the flags; raise ConfigError naming the first bad one."""
    if args.protocol not in ADAPTERS:
        raise ConfigError("--protocol", f"unknown protocol {args.protocol!r}")
    rate: float | None
    if str(args.rate).lower() == "max":
        rate = None
    else:
        try:
            rate = float(args.rate)
        except ValueError:
            raise ConfigError("--rate", f"{args.rate!r} is not a number or 'max'") from None
        if not 0 < rate < float("inf"):
            raise ConfigError("--rate", "must be positive")
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
    return {"rate": rate, "symbols": symbols, "faults": faults}


def _print(event: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(event).decode() + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> int:
    """Serve until a signal or ``--duration``; return the exit status."""
    try:
        config = _config(args)
        ledger = Ledger(args.ledger, memory_limit=0) if args.ledger else Ledger(memory_limit=0)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"--ledger: cannot write: {exc.strerror}", file=sys.stderr)
        return 2
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
        )
        async with fake:
            _print(
                {
                    "event": "listening",
                    "protocol": args.protocol,
                    "url": fake.url,
                    "port": fake.port,
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
    _print({"event": "stopped", "ledger": args.ledger, **ledger.summary()})
    return 0


def main(args: argparse.Namespace) -> int:
    """Synchronous entry point for the main CLI: ``run`` in a fresh event loop."""
    return asyncio.run(run(args))


if __name__ == "__main__":  # pragma: no cover
    _parser = argparse.ArgumentParser(prog="feedvault fake-exchange")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
