"""``feedvault recording convert``: turn other capture formats into feedvault recordings.

See docs/recording-and-replay.md#converting-other-captures.

::

    feedvault recording convert --from cryptofeed --exchange binance IN OUT

OUT's suffix chooses its compression (``.gz``, ``.zst``, else plain). The output is written to a
temporary file beside OUT and renamed into place when complete, so OUT is never half written.
Prints one JSON summary line (``{"event":"converted","frames":N,"in":..,"out":..,...}``).
Exit 0; 1 when IN cannot be read or converted (one line on stderr naming ``IN:LINE``); 2 for a
bad flag.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from connectors.recording import DIR_IN, RecordingWriter, convert_cryptofeed
from connectors.registry import PROTOCOLS
from engine.errors import RecordingError

FORMATS = ("cryptofeed",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``recording`` sub-commands (``convert``) to ``parser``."""
    sub = parser.add_subparsers(dest="recording_command", required=True)
    convert = sub.add_parser(
        "convert",
        help="convert a capture in another format into a feedvault recording",
        description="Convert a capture file into feedvault's recording format "
        "(docs/recording-and-replay.md).",
    )
    convert.add_argument(
        "--from", dest="source_format", required=True, choices=FORMATS, help="input format"
    )
    convert.add_argument(
        "--exchange",
        required=True,
        help="exchange the capture came from: " + ", ".join(PROTOCOLS),
    )
    convert.add_argument("input", metavar="IN", help="capture file (plain, .gz or .zst)")
    convert.add_argument("output", metavar="OUT", help="recording to write (.zst, .gz or plain)")


def convert(source: str | Path, target: str | Path, exchange: str) -> dict[str, int]:
    """Convert cryptofeed capture ``source`` into recording ``target``; return frame counts.

    Atomic: ``target`` appears only when complete. Raises :class:`RecordingError` on bad input
    (naming ``source:line``) or an unwritable target.
    """
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial{target.suffix}")
    counts = {"frames": 0, "in": 0, "out": 0}
    try:
        with RecordingWriter(partial) as writer:
            for frame in convert_cryptofeed(source, exchange):
                writer.write(frame)
                counts["in" if frame.dir == DIR_IN else "out"] += 1
        counts["frames"] = writer.count
        os.replace(partial, target)
    except OSError as exc:
        raise RecordingError(f"{target}: cannot write: {exc.strerror or exc}") from exc
    finally:
        if partial.exists():
            partial.unlink()
    return counts


def main(args: argparse.Namespace) -> int:
    """Run ``feedvault recording SUBCOMMAND``; return the exit status."""
    if args.exchange not in PROTOCOLS:
        known = ", ".join(PROTOCOLS)
        print(f"--exchange: unknown exchange {args.exchange!r} (known: {known})", file=sys.stderr)
        return 2
    try:
        counts = convert(args.input, args.output, args.exchange)
    except RecordingError as exc:
        print(f"feedvault recording convert: {exc}", file=sys.stderr)
        return 1
    summary = {"event": "converted", **counts, "input": args.input, "output": args.output}
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return 0
