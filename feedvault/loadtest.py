"""``feedvault loadtest`` (docs: load-testing.md): the engine against the fake exchange, measured.

One run, every piece in a process of its own (:mod:`feedvault.subproc`), so each one's CPU and
memory are its own:

1. S3: the bucket in ``S3_BUCKET`` (prefix ``S3_PREFIX``, else ``loadtest/<run id>/``) when the
   environment names one; otherwise a local S3 server (:mod:`feedvault.s3local`, moto) on loopback
   with the bucket ``feedvault-loadtest`` and the prefix ``loadtest/``, reached with random
   throwaway credentials (:func:`throwaway_credentials`).
2. ``feedvault fake-exchange --protocol P --rate R --symbols <K generated symbols> --ledger
   DIR/ledger.jsonl``: its ``listening`` line gives the URL.
3. ``feedvault stream``, configured by environment variables only (the parent's environment
   passes through, so ``WINDOW_SECONDS``, ``QUEUE_MAXSIZE``... tune the run; the loadtest sets
   ``S3_*``, ``STREAMS``, ``<EXCHANGE>_WS_URL``, ``MAX_RUNTIME_SECONDS``, ``RUN_ID``,
   ``STATS_INTERVAL_SECONDS=1``, ``LOG_FORMAT=json``, ``LOG_LEVEL=INFO`` and ``FORMAT`` when
   ``--format`` is given). Its JSON log lines are read live (progress, the stats series) and
   kept in ``DIR/engine.log``; it is reaped with ``os.wait4`` for its CPU time.
4. The fake exchange is stopped; its ledger, the run's manifest and every object it names are
   read back and compared (:mod:`feedvault.loadtest_check`).
5. ``DIR/loadtest.json`` (:mod:`feedvault.loadtest_report`) and its chart ``DIR/loadtest.png``
   (:mod:`feedvault.loadtest_chart`, matplotlib: the ``chart`` extra, checked before anything
   starts) are written and a summary table printed. Exit 0 when the run passed, 1 otherwise, 2
   for bad options or a missing extra.

Every wait is bounded; on any error or Ctrl-C the children are stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, Final, TextIO

import orjson

from connectors.fake.market import rate_from_text
from engine.errors import ConfigError, FeedvaultError, ObjectNotFound
from engine.settings import DEFAULT_STOP_GRACE_SECONDS, new_run_id
from engine.text import plural
from feedvault import loadtest_chart, s3local
from feedvault.config import DEFAULT_FORMAT
from feedvault.loadtest_check import ExactlyOnceCheck, iter_ndjson, iter_ndjson_file
from feedvault.loadtest_cli import DEFAULT_REPORT_DIR, PROTOCOLS
from feedvault.loadtest_report import (
    RunFacts,
    build_report,
    latency_series,
    latency_summary,
    summary_table,
)
from feedvault.progress import Progress
from feedvault.subproc import Child, ChildError
from sinks.encoders import FORMATS, NDJSON_FORMATS, decode_object, decompress, format_from_key
from sinks.manifest import Manifest, StoredObjectEntry, manifest_key
from sinks.writer import Destination, open_writer

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
LOCAL_BUCKET: Final = "feedvault-loadtest"
LOCAL_PREFIX: Final = "loadtest/"
START_TIMEOUT: Final = 30.0
"""Bound on a child's start-up line (and on the engine's start-up beyond its run time)."""
STOP_TIMEOUT: Final = 30.0
"""Bound on the fake exchange and the S3 server stopping."""
POLL_SECONDS: Final = 0.25
"""How often the progress display is refreshed while no log line arrives."""
GET_CONCURRENCY: Final = 8
MAX_SYMBOLS: Final = 1000

_BASES: Final = (
    "BTC", "ETH", "BNB", "SOL", "XRP", "DOGE", "ADA", "AVAX", "DOT", "LINK", "LTC", "BCH",
    "ETC", "XLM", "UNI", "TON",
)  # fmt: skip
SPELLING: Final = {
    "binance": "{}USDT",
    "binanceus": "{}USD",
    "bybit": "{}USDT",
    "bitstamp": "{}USD",
    "coinbase": "{}-USD",
    "okx": "{}-USDT",
    "kraken": "{}/USD",
}
"""How each exchange spells a pair, by the exchange's own symbol conventions (one entry for
each of :data:`~feedvault.loadtest_cli.PROTOCOLS`)."""


@dataclass(frozen=True, slots=True)
class LoadtestOptions:
    """The command's options (already validated by :func:`check_options`)."""

    protocol: str = "binance"
    rate: str = "max"
    symbols: int = 3
    duration: float = 30.0
    format: str | None = None
    report_dir: Path = Path(DEFAULT_REPORT_DIR)


def check_options(options: LoadtestOptions) -> LoadtestOptions:
    """Return ``options`` if valid; :class:`ConfigError` naming the first bad flag."""
    if options.protocol not in SPELLING:
        raise ConfigError("--protocol", f"must be one of {', '.join(PROTOCOLS)}")
    rate_from_text(options.rate)
    if not 1 <= options.symbols <= MAX_SYMBOLS:
        raise ConfigError("--symbols", f"must be 1..{MAX_SYMBOLS}")
    if not 0 < options.duration <= 24 * 3600:
        raise ConfigError("--duration", "must be a positive number of seconds (at most a day)")
    if options.format is not None and options.format not in FORMATS:
        raise ConfigError("--format", f"must be one of {', '.join(FORMATS)}")
    return options


def generate_symbols(protocol: str, count: int) -> list[str]:
    """``count`` distinct symbols spelled the way ``protocol``'s exchange spells them: well-known
    bases first (``BTCUSDT``, ``ETHUSDT``, ...), then synthetic ones (``Q017USDT``)."""
    spelling = SPELLING[protocol]
    bases = list(_BASES[:count])
    bases += [f"Q{i:03d}" for i in range(count - len(bases))]
    return [spelling.format(base) for base in bases]


# -- S3 ----------------------------------------------------------------------------------------


@dataclass
class S3Target:
    """Where the engine writes: bucket, prefix, and the variables that reach that S3."""

    bucket: str
    prefix: str
    env: dict[str, str] = field(default_factory=dict)
    endpoint_url: str | None = None

    @property
    def description(self) -> str:
        where = f" (local S3 server {self.endpoint_url})" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"


def _s3_target(environ: Mapping[str, str], run_id: str, children: _Children) -> S3Target:
    bucket = environ.get("S3_BUCKET")
    if bucket:
        prefix = environ.get("S3_PREFIX") or f"{LOCAL_PREFIX}{run_id}/"
        return S3Target(bucket, prefix)
    if not s3local.available():
        raise ConfigError("S3_BUCKET", f"is not set and {s3local.INSTALL_HINT}")
    server = children.start(
        "s3-server",
        [sys.executable, "-m", "feedvault.s3local", "--bucket", LOCAL_BUCKET],
        _child_env(environ),
        keep_stdin=True,
    )
    url = str(server.wait_for_event("listening", START_TIMEOUT)["url"])
    env = {"AWS_ENDPOINT_URL_S3": url, **s3local.CREDENTIALS, **throwaway_credentials()}
    return S3Target(LOCAL_BUCKET, LOCAL_PREFIX, env, url)


def throwaway_credentials() -> dict[str, str]:
    """Fresh random credentials for the local S3 server (moto accepts any). The engine redacts
    its credentials' values wherever they appear; random ones never match the bucket or the
    prefix, as a fixed word such as ``loadtest`` did."""
    return {
        "AWS_ACCESS_KEY_ID": secrets.token_hex(10).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
    }


@contextlib.contextmanager
def _environ(extra: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` set, restored afterwards (the SDK reads it)."""
    saved = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- children ----------------------------------------------------------------------------------


class _Children:
    """The run's child processes; on exit, every one still running is stopped, last first."""

    def __init__(self, report_dir: Path) -> None:
        self.report_dir = report_dir
        self._stack = ExitStack()

    def start(
        self, name: str, command: list[str], env: Mapping[str, str], *, keep_stdin: bool = False
    ) -> Child:
        child = Child(
            name,
            command,
            env,
            stderr_path=self.report_dir / f"{name}.stderr",
            keep_stdin=keep_stdin,
        )
        self._stack.callback(child.stop, 10.0)
        return child

    def __enter__(self) -> _Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def _child_env(environ: Mapping[str, str], **extra: str) -> dict[str, str]:
    env = dict(environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


def _start_fake(
    children: _Children, options: LoadtestOptions, symbols: list[str], environ: Mapping[str, str]
) -> tuple[Child, str]:
    # --duration is a safety net only (the parent stops it): it outlives the engine's worst case.
    safety = options.duration + _stop_grace(environ) + 4 * START_TIMEOUT
    fake = children.start(
        "fake-exchange",
        [
            sys.executable, "-m", "feedvault", "fake-exchange",
            "--protocol", options.protocol,
            "--port", "0",
            "--rate", options.rate,
            "--symbols", ",".join(symbols),
            "--ledger", str(options.report_dir / "ledger.jsonl"),
            "--duration", f"{safety:g}",
        ],
        _child_env(environ),
    )  # fmt: skip
    url = str(fake.wait_for_event("listening", START_TIMEOUT)["url"])
    return fake, url


def _stop_grace(environ: Mapping[str, str]) -> float:
    try:
        return float(environ.get("STOP_GRACE_SECONDS") or DEFAULT_STOP_GRACE_SECONDS)
    except ValueError:
        return DEFAULT_STOP_GRACE_SECONDS  # the engine itself reports the bad value


def _stop_fake(fake: Child) -> dict[str, Any] | None:
    """SIGTERM the fake exchange; its ``stopped`` summary line, or None."""
    fake.send_signal(signal.SIGTERM)
    try:
        return fake.wait_for_event("stopped", STOP_TIMEOUT)
    except ChildError:
        return None
    finally:
        fake.stop(STOP_TIMEOUT)


# -- the engine --------------------------------------------------------------------------------


@dataclass
class EngineRun:
    """What the engine process produced."""

    exit_status: int | None = None
    cpu_seconds: float | None = None
    stats: list[dict[str, Any]] = field(default_factory=list)
    run_start: dict[str, Any] | None = None
    run_end: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def _log_time(doc: dict[str, Any]) -> float | None:
    """A log line's ``ts`` as epoch seconds."""
    try:
        stamp = datetime.strptime(str(doc["ts"]), "%Y-%m-%dT%H:%M:%S.%fZ")
    except (KeyError, ValueError):
        return None
    return stamp.replace(tzinfo=UTC).timestamp()


def _progress_detail(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "starting"
    return (
        f"{float(stats.get('trades_per_s', 0)):>9,.0f} trades/s  "
        f"queue {int(stats.get('queue_depth', 0)):,}  rss {float(stats.get('rss_mb', 0)):.0f} MB"
    )


def follow_engine(engine: Child, *, limit: float, progress: Progress, log: TextIO) -> EngineRun:
    """Read the engine's log lines until it closes stdout (or ``limit`` seconds pass: then it is
    stopped), then reap it. Stats lines get ``t``: seconds since its ``run_start`` line."""
    run = EngineRun()
    started = time.monotonic()
    origin: float | None = None
    latest: dict[str, Any] | None = None
    while True:
        elapsed = time.monotonic() - started
        if elapsed > limit:
            run.problems.append(f"the engine did not finish within {limit:g}s; stopped it")
            engine.stop(10.0)
            break
        try:
            line = engine.read_line(min(POLL_SECONDS, limit - elapsed))
        except TimeoutError:
            progress.update(elapsed, _progress_detail(latest))
            continue
        if line is None:
            break
        log.write(line + "\n")
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict):
            continue
        event = doc.get("event")
        if event == "run_start":
            run.run_start = doc
            origin = _log_time(doc)
        elif event == "stats":
            at = _log_time(doc)
            doc["t"] = round(at - origin, 3) if at is not None and origin is not None else None
            run.stats.append(doc)
            latest = doc
        elif event == "run_end":
            run.run_end = doc
        progress.update(elapsed, _progress_detail(latest))
    progress.finish()
    if not engine.wait(10.0):
        run.problems.append("the engine did not exit after closing its output; killed it")
        engine.stop(1.0, signal.SIGKILL)
    run.exit_status = engine.exit_status
    if engine.rusage is not None:
        run.cpu_seconds = engine.rusage.ru_utime + engine.rusage.ru_stime
    if run.exit_status not in (0, None) and run.run_end is None:
        run.problems.append(f"engine stderr: {engine.stderr_tail()}")
    return run


# -- reading the run back ----------------------------------------------------------------------


@dataclass
class Readback:
    """The run as stored, and the exactly-once comparison with the ledger."""

    check: ExactlyOnceCheck = field(default_factory=ExactlyOnceCheck)
    manifest: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


async def read_stored(target: S3Target, run_id: str, readback: Readback) -> None:
    """Read the run's manifest and every object it names; feed their records to the check."""
    destination = Destination("s3", target.prefix, bucket=target.bucket)
    async with open_writer(destination, endpoint_url=target.endpoint_url) as writer:
        try:
            data = await writer.get(manifest_key(target.prefix, run_id))
        except ObjectNotFound:
            return  # the report names the missing manifest
        manifest = Manifest.from_json(data)
        readback.manifest = orjson.loads(data)
        listed = {
            item.key
            for item in await writer.list(target.prefix)
            if run_id in item.key and not item.key.startswith(f"{target.prefix}_manifests/")
        }
        named = {entry.key for entry in manifest.objects}
        if listed - named:
            readback.problems.append(
                f"{plural(len(listed - named), 'object')} of the run not in its manifest"
            )
        # Fetch ahead at most GET_CONCURRENCY objects, in manifest order: bodies are held only
        # until they are checked, so memory does not grow with the size of the run.
        entries = iter(manifest.objects)
        try:
            async with asyncio.TaskGroup() as group:
                ahead: deque[tuple[StoredObjectEntry, asyncio.Task[bytes]]] = deque(
                    (entry, group.create_task(writer.get(entry.key)))
                    for entry in islice(entries, GET_CONCURRENCY)
                )
                while ahead:
                    entry, fetch = ahead.popleft()
                    body = await fetch
                    following = next(entries, None)
                    if following is not None:
                        ahead.append((following, group.create_task(writer.get(following.key))))
                    if hashlib.sha256(body).hexdigest() != entry.sha256:
                        readback.problems.append(f"{entry.key}: checksum differs from the manifest")
                    fmt = format_from_key(entry.key)
                    if fmt not in NDJSON_FORMATS:  # Parquet: decoded whole
                        readback.check.add_stored(decode_object(entry.key, body), entry.stored_at)
                        continue
                    text = decompress(body, fmt)
                    del body
                    for records in iter_ndjson(text):
                        readback.check.add_stored(records, entry.stored_at)
        except* FeedvaultError as group_error:
            raise group_error.exceptions[0] from None


def read_back(target: S3Target, run_id: str, ledger: Path) -> Readback:
    """Stored records and ledger into one :class:`ExactlyOnceCheck` (and the manifest)."""
    readback = Readback()
    try:
        with _environ(target.env):
            asyncio.run(read_stored(target, run_id, readback))
    except (FeedvaultError, KeyError, TypeError) as exc:
        readback.problems.append(f"reading the stored run failed: {type(exc).__name__}: {exc}")
    try:
        for records in iter_ndjson_file(ledger):
            readback.check.add_sent(records)
    except (OSError, FeedvaultError, KeyError) as exc:
        readback.problems.append(f"reading the ledger failed: {type(exc).__name__}: {exc}")
    return readback


# -- the command -------------------------------------------------------------------------------


def run_loadtest(
    options: LoadtestOptions,
    environ: Mapping[str, str] | None = None,
    *,
    out: TextIO | None = None,
    progress_stream: TextIO | None = None,
) -> int:
    """Run the load test; write the report; print the summary to ``out``. Exit 0 pass, 1 fail.

    :class:`ConfigError` for bad options, a missing local S3 server or a missing ``chart``
    extra (the CLI exits 2)."""
    check_options(options)
    loadtest_chart.require()
    environ = dict(os.environ if environ is None else environ)
    out = out if out is not None else sys.stdout
    report_dir = options.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    run_id = new_run_id()
    symbols = generate_symbols(options.protocol, options.symbols)
    progress = Progress(options.duration, label="loadtest", stream=progress_stream)
    ledger = report_dir / "ledger.jsonl"
    with _Children(report_dir) as children:
        target = _s3_target(environ, run_id, children)
        progress.note(f"S3: {target.description}")
        fake, url = _start_fake(children, options, symbols, environ)
        shown = ", ".join(symbols[:5]) + (", ..." if len(symbols) > 5 else "")
        progress.note(
            f"fake {options.protocol} exchange on {url}: rate {options.rate}, "
            f"{plural(len(symbols), 'symbol')} ({shown})"
        )
        engine_env = _child_env(
            environ,
            **target.env,
            S3_BUCKET=target.bucket,
            S3_PREFIX=target.prefix,
            STREAMS=",".join(f"{options.protocol}:{s}" for s in symbols),
            **{f"{options.protocol.upper()}_WS_URL": url},
            MAX_RUNTIME_SECONDS=f"{options.duration:g}",
            RUN_ID=run_id,
            STATS_INTERVAL_SECONDS="1",
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            **({"FORMAT": options.format} if options.format else {}),
        )
        engine_env.setdefault("SPILL_DIR", str(report_dir / "spill"))
        progress.note(f"engine: feedvault stream for {options.duration:g} s, run {run_id}")
        engine = children.start("engine", [sys.executable, "-m", "feedvault", "stream"], engine_env)
        limit = options.duration + _stop_grace(environ) + START_TIMEOUT
        with open(report_dir / "engine.log", "w", encoding="utf-8") as log:
            run = follow_engine(engine, limit=limit, progress=progress, log=log)
        fake_summary = _stop_fake(fake)
        progress.note("reading the run back from S3 and the ledger ...")
        readback = read_back(target, run_id, ledger)
    fallback_format = environ.get("FORMAT") or DEFAULT_FORMAT
    facts = _facts(
        options, symbols, target, run_id, run, fake_summary, readback, ledger, fallback_format
    )
    report = build_report(facts)
    (report_dir / "loadtest.json").write_bytes(
        orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    )
    loadtest_chart.write_chart(report, report_dir / "loadtest.png")
    out.write(summary_table(report) + "\n")
    out.write(f"report: {report_dir / 'loadtest.json'}, chart: {report_dir / 'loadtest.png'}\n")
    out.flush()
    return 0 if report["passed"] else 1


def _facts(
    options: LoadtestOptions,
    symbols: list[str],
    target: S3Target,
    run_id: str,
    run: EngineRun,
    fake_summary: dict[str, Any] | None,
    readback: Readback,
    ledger: Path,
    fallback_format: str,
) -> RunFacts:
    check = readback.check
    result = check.result()
    examples = []
    if not result.passed and result.problem_fingerprints and ledger.exists():
        examples = check.examples(
            result, (record for chunk in iter_ndjson_file(ledger) for record in chunk)
        )
    config = (run.run_start or {}).get("config", {})
    origin = _log_time(run.run_start) if run.run_start is not None else None
    return RunFacts(
        settings={
            "protocol": options.protocol,
            "rate": options.rate,
            "symbols": symbols,
            "duration_s": options.duration,
            "format": config.get("format") or options.format or fallback_format,
            "s3": target.description,
            "engine_config": config,
        },
        run_id=run_id,
        engine_exit=run.exit_status,
        cpu_seconds=run.cpu_seconds,
        stats=run.stats,
        run_end=run.run_end,
        manifest=readback.manifest,
        check=result,
        ingest_seconds=check.ingest_seconds,
        latency=latency_summary(check.latencies_ns),
        fake_exchange=fake_summary,
        problems=run.problems + readback.problems,
        examples=examples,
        latency_series=latency_series(check.latency_by_second, origin),
        started_at=(readback.manifest or {}).get("started_at") or (run.run_start or {}).get("ts"),
    )
