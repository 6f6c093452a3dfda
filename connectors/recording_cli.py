"""``feedvault recording convert``: turn other capture formats into feedvault recordings.

See docs/recording-and-replay.md#converting-other-captures.

::

    feedvault recording convert --from cryptofeed --exchange binance IN OUT
        [--http FILE ...] [--no-http]

The REST responses of the capture (cryptofeed's ``*.http.*`` files: the order-book snapshots
the client fetched) are merged in by time as ``http`` lines: by default every ``PREFIX.http.*``
beside an IN named ``PREFIX.ws.*``; ``--http FILE`` (repeatable) names them instead,
``--no-http`` leaves them out.

OUT's suffix chooses its compression (``.gz``, ``.zst``, else plain). The output is written to a
temporary file beside OUT and renamed into place when complete, so OUT is never half written.
Prints one JSON summary line (``{"event":"converted","frames":N,"in":..,"out":..,"http":..,
"http_files":[..],...}``).
Exit 0; 1 when IN cannot be read or converted (one line on stderr naming ``IN:LINE``); 2 for a
bad flag.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from connectors.recording import DIR_IN, RecordingWriter, convert_cryptofeed, http_siblings
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
    convert.add_argument(
        "--http",
        metavar="FILE",
        action="append",
        default=None,
        help="a cryptofeed *.http.* capture of the same session to merge in by time "
        "(repeatable; default: every PREFIX.http.* beside an IN named PREFIX.ws.*)",
    )
    convert.add_argument("--no-http", action="store_true", help="do not merge any *.http.* file in")


def convert(
    source: str | Path,
    target: str | Path,
    exchange: str,
    http: Sequence[str | Path] | None = None,
) -> dict[str, int]:
    """Convert cryptofeed capture ``source`` into recording ``target``; return frame counts
    (``http``: the REST response lines among the ``in`` ones).

    ``http``: the ``*.http.*`` captures to merge in by time; None: the siblings of ``source``
    (:func:`~connectors.recording.http_siblings`). Atomic: ``target`` appears only when
    complete. Raises :class:`RecordingError` on bad input (naming ``file:line``) or an
    unwritable target.
    """
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial{target.suffix}")
    counts = {"frames": 0, "in": 0, "out": 0, "http": 0}
    responses = http_siblings(source) if http is None else list(http)
    try:
        with RecordingWriter(partial) as writer:
            for frame in convert_cryptofeed(source, exchange, http=responses):
                writer.write(frame)
                counts["in" if frame.dir == DIR_IN else "out"] += 1
                counts["http"] += frame.http is not None
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
    http: list[str | Path] | None = [] if args.no_http else args.http
    if http is None:
        http = list(http_siblings(args.input))
    try:
        counts = convert(args.input, args.output, args.exchange, http)
    except RecordingError as exc:
        print(f"feedvault recording convert: {exc}", file=sys.stderr)
        return 1
    summary = {
        "event": "converted",
        **counts,
        "input": args.input,
        "http_files": [str(path) for path in http],
        "output": args.output,
    }
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return 0
