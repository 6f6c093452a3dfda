"""The ``feedvault`` command line (docs: configuration.md): environment first, flags override.

Exit statuses: 0 success, 1 runtime failure or data left undurable, 2 configuration or usage
error (one line on stderr naming the variable; nothing connected, nothing written).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from engine import __version__, aio, signals
from engine.errors import ConfigError
from engine.redact import redact

if TYPE_CHECKING:
    from sinks.writer import ObjectWriter

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line, like configuration errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from batch.registry import job_names, jobs_help

    jobs = ", ".join(job_names())
    parser = _Parser(
        prog="feedvault",
        description="Stream exchange trades into S3; batch jobs on the same sink.",
        epilog=f"batch jobs (feedvault batch JOB):\n{jobs_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"feedvault {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    stream = sub.add_parser(
        "stream",
        help="stream trades into S3 until MAX_RUNTIME_SECONDS or SIGTERM",
        description="Configured by environment variables (S3_BUCKET, S3_PREFIX, "
        "MAX_RUNTIME_SECONDS, STREAMS, ...); flags override them.",
    )
    stream.add_argument("--out", help="s3://bucket/prefix/ or file:///dir/ (instead of S3_*)")
    stream.add_argument("--streams", help="overrides STREAMS, e.g. binance:BTCUSDT,binance:ETHUSDT")
    stream.add_argument("--max-runtime", type=str, help="overrides MAX_RUNTIME_SECONDS")
    stream.add_argument("--run-id", help="overrides RUN_ID")
    stream.add_argument(
        "--capture",
        action="store_true",
        help="also write every raw frame (recording format) under {prefix}raw/ (env CAPTURE=1)",
    )

    replay = sub.add_parser(
        "replay",
        help="run the pipeline with a recording as the source",
        description="Replay recorded frames (files, file:// or s3:// objects or prefixes; "
        "plain, .gz or .zst) through the same protocols, queue, sink and manifest as stream. "
        "Destination from S3_BUCKET/S3_PREFIX or --out.",
    )
    replay.add_argument("inputs", nargs="+", metavar="FILE", help="recording file, dir or URL")
    replay.add_argument("--speed", help="1 (recorded pace), N (N times faster) or max (default)")
    replay.add_argument("--out", help="s3://bucket/prefix/ or file:///dir/ (instead of S3_*)")
    replay.add_argument("--max-runtime", type=str, help="overrides MAX_RUNTIME_SECONDS (optional)")
    replay.add_argument("--run-id", help="overrides RUN_ID")

    verify = sub.add_parser("verify", help="check a run against its manifest")
    verify.add_argument("location", help="s3://bucket/prefix/ or file:///dir/")
    verify.add_argument(
        "--run",
        dest="run_id",
        help="run id (default: the newest run, with or without a manifest)",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")

    runs = sub.add_parser(
        "runs",
        help="list the runs under a prefix, newest first",
        description="One line per run under the prefix (its manifests, and runs whose objects "
        "have none): id, status, stop reason, start, duration, objects, records, streams "
        "without data. Reads the manifests only; 'feedvault verify' checks a run's objects.",
    )
    runs.add_argument("location", help="s3://bucket/prefix/ or file:///dir/")
    runs.add_argument("--json", action="store_true", help="print the runs as JSON")

    query = sub.add_parser(
        "query",
        help="run SQL (DuckDB, embedded) over the datasets under a prefix (docs/lake.md)",
        description="Views named like the datasets found under URL (trades, book, manifests, "
        "bars_1m, book_snapshots, ...), pruned by exchange/symbol/date/hour; read with the "
        "project's own S3 settings; no DuckDB extension is downloaded. Needs the lake extra.",
    )
    query.add_argument("url", metavar="URL", help="s3://bucket/prefix/ or file:///dir/")
    query.add_argument(
        "sql", metavar="SQL", help='e.g. "SELECT symbol, count(*) FROM trades GROUP BY symbol"'
    )
    query.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="table (aligned text), csv, or json (JSON Lines); default table",
    )

    from connectors.fake import cli as fake_cli

    fake = sub.add_parser(
        "fake-exchange", help="serve an exchange's WebSocket protocol on 127.0.0.1"
    )
    fake_cli.add_arguments(fake)

    from connectors import recording_cli

    recording = sub.add_parser("recording", help="work with recordings (convert other formats)")
    recording_cli.add_arguments(recording)

    demo = sub.add_parser("demo", help="fake exchange + embedded S3 + engine + verify, locally")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to stream")
    demo.add_argument("--rate", type=float, default=300.0, help="trades/s from the fake exchange")
    demo.add_argument("--output", default="demo-output", help="where to copy the objects")

    from feedvault import loadtest_cli

    loadtest = sub.add_parser(
        "loadtest",
        help="run the engine against the fake exchange; check and measure it "
        "(docs/load-testing.md)",
        description=loadtest_cli.DESCRIPTION,
    )
    loadtest_cli.add_arguments(loadtest)

    batch = sub.add_parser(
        "batch",
        help=f"run a batch job (docs/batch.md): {jobs}",
        description=textwrap.fill(
            "Configured by environment variables (OUTPUT_BUCKET, OUTPUT_PREFIX; "
            "INPUT_BUCKET with INPUT_PREFIX or INPUT_KEY for jobs that read input; "
            "MAX_RUNTIME_SECONDS optional; the job's own parameters); flags override them. "
            "Exit 0 only when the job completed and its manifest is written.",
            width=78,
        ),
        epilog=f"jobs:\n{jobs_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("job", metavar="JOB", help=f"the job: one of {jobs} (below)")
    batch.add_argument(
        "--in", dest="in_url", help="s3://bucket/prefix/ | s3://bucket/key | file:///dir/"
    )
    batch.add_argument("--out", help="s3://bucket/prefix/ or file:///dir/ (instead of OUTPUT_*)")
    batch.add_argument("--max-runtime", type=str, help="overrides MAX_RUNTIME_SECONDS")
    batch.add_argument("--run-id", help="overrides RUN_ID")

    sample = sub.add_parser(
        "sample",
        help="write seeded, realistic input for a batch job that reads input",
        epilog=f"jobs that read input:\n{jobs_help(reading_input_only=True)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sample.add_argument("job", metavar="JOB", help="a job that reads input (below)")
    sample.add_argument("--out", required=True, help="s3://bucket/prefix/ or file:///dir/")
    sample.add_argument("--seed", help="the generator's seed (default SAMPLE_SEED, else 0)")
    return parser


def _run_environ(args: argparse.Namespace) -> dict[str, str]:
    """The environment with a run command's ``--max-runtime`` and ``--run-id`` applied."""
    environ = dict(os.environ)
    if args.max_runtime:
        environ["MAX_RUNTIME_SECONDS"] = args.max_runtime
    if args.run_id:
        environ["RUN_ID"] = args.run_id
    return environ


def _stream_environ(args: argparse.Namespace) -> dict[str, str]:
    environ = _run_environ(args)
    if args.streams:
        environ["STREAMS"] = args.streams
    if getattr(args, "capture", False):
        environ["CAPTURE"] = "1"
    return environ


def cmd_stream(args: argparse.Namespace) -> int:
    from engine.logs import configure_logging
    from feedvault.config import load_stream_config
    from feedvault.runner import StreamRun

    config = load_stream_config(_stream_environ(args), out=args.out, is_tty=sys.stdout.isatty())
    configure_logging(config.runtime.log_level, config.runtime.log_format)
    aio.tune_gc_for_throughput()
    command = (
        ["feedvault", *sys.argv[1:]] if sys.argv[1:2] == ["stream"] else ["feedvault", "stream"]
    )
    return aio.run(StreamRun(config, command=command).run())


class _Report(Protocol):
    """What ``verify`` and ``runs`` print: a report with a verdict."""

    @property
    def ok(self) -> bool: ...

    def to_dict(self) -> dict[str, Any]: ...


_R = TypeVar("_R", bound=_Report)


async def _read_report(
    command: str,
    location: str,
    as_json: bool,
    build: Callable[[ObjectWriter, str], Awaitable[_R]],
    text: Callable[[_R], str],
) -> int:
    """``feedvault verify``/``runs``: open ``location``, build its report, print it (text or
    JSON); exit 0 when the report is OK, 1 otherwise or on a storage error (one stderr line)."""
    import orjson

    from engine.errors import StorageError
    from sinks.writer import open_writer, parse_destination

    destination = parse_destination(location, "location")
    try:
        async with open_writer(destination) as writer:
            report = await build(writer, destination.prefix)
    except StorageError as exc:
        print(f"feedvault {command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if as_json:
        print(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(text(report))
    return EXIT_OK if report.ok else EXIT_FAILURE


def cmd_replay(args: argparse.Namespace) -> int:
    from engine.errors import FeedvaultError
    from engine.logs import configure_logging
    from feedvault.replay import load_replay_config, run_replay

    config = load_replay_config(
        _run_environ(args), args.inputs, out=args.out, speed=args.speed, is_tty=sys.stdout.isatty()
    )
    configure_logging(config.stream.runtime.log_level, config.stream.runtime.log_format)
    aio.tune_gc_for_throughput()
    try:
        return aio.run(run_replay(config, command=["feedvault", *sys.argv[1:]]))
    except ConfigError:
        raise
    except FeedvaultError as exc:  # the first chunk of the input is unreadable
        print(f"feedvault replay: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_verify(args: argparse.Namespace) -> int:
    from sinks.verify import VerifyReport, verify_run

    async def build(writer: ObjectWriter, prefix: str) -> VerifyReport:
        return await verify_run(writer, prefix, args.run_id)

    return aio.run(_read_report("verify", args.location, args.json, build, VerifyReport.summary))


def cmd_runs(args: argparse.Namespace) -> int:
    from sinks.runs import RunsReport, list_runs

    return aio.run(_read_report("runs", args.location, args.json, list_runs, RunsReport.table))


def cmd_query(args: argparse.Namespace) -> int:
    from feedvault.query import run

    return run(args.url, args.sql, args.format)


def cmd_fake_exchange(args: argparse.Namespace) -> int:
    from connectors.fake import cli as fake_cli

    return fake_cli.main(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from feedvault.demo import run_demo

    return run_demo(seconds=args.seconds, rate=args.rate, output=args.output)


def cmd_recording(args: argparse.Namespace) -> int:
    from connectors import recording_cli

    return recording_cli.main(args)


def cmd_loadtest(args: argparse.Namespace) -> int:
    from feedvault import loadtest_cli

    return loadtest_cli.main(args)


def cmd_batch(args: argparse.Namespace) -> int:
    from feedvault.batch_run import run_batch

    environ = _run_environ(args)
    return run_batch(args.job, environ, args.in_url, args.out, command=["feedvault", *sys.argv[1:]])


def cmd_sample(args: argparse.Namespace) -> int:
    from batch.sample_cli import run_sample

    return run_sample(args.job, os.environ, args.out, args.seed)


SIGNAL_HANDLING_COMMANDS = frozenset({"stream", "replay", "batch"})
"""Commands whose runs handle SIGTERM/SIGINT themselves (:mod:`engine.signals`)."""

COMMANDS = {
    "stream": cmd_stream,
    "replay": cmd_replay,
    "verify": cmd_verify,
    "runs": cmd_runs,
    "query": cmd_query,
    "fake-exchange": cmd_fake_exchange,
    "demo": cmd_demo,
    "recording": cmd_recording,
    "loadtest": cmd_loadtest,
    "batch": cmd_batch,
    "sample": cmd_sample,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    held = args.command in SIGNAL_HANDLING_COMMANDS
    if held:
        signals.hold_early()  # a container's PID 1 would lose a SIGTERM during start-up
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        # a value echoed back (a URL's password, a pasted secret) is redacted like a log line
        print(redact(f"feedvault {args.command}: configuration error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    finally:
        if held:
            signals.release_early()
