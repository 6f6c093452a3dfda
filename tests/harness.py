"""The tests' shared helpers. End to end: the real CLI as subprocesses talking over loopback
(the fake exchange, ``feedvault stream``/``verify``/any command, their logs, what they stored);
in process: a run driven past its deadline on a FakeClock, a test's Windower, a stream's
settings and environment."""

from __future__ import annotations

import asyncio
import collections
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zstandard

from engine.clock import Clock, FakeClock
from sinks.encoders import decode_object as stored_records
from sinks.keys import KeyTemplate
from sinks.windowing import Windower, WindowPolicy

if TYPE_CHECKING:
    from tests.conftest import S3Server

REPO = Path(__file__).resolve().parent.parent
FEEDVAULT = [sys.executable, "-m", "feedvault"]


def base_env(**extra: str) -> dict[str, str]:
    """A minimal environment, as an ECS task would have: no inherited AWS settings."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


@dataclass
class FakeExchangeProcess:
    proc: subprocess.Popen[str]
    url: str
    port: int
    ledger_path: Path

    summary: dict[str, Any] | None = None

    def stop(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Stop the server and return its ledger (every trade it sent); its closing summary
        line (``{"event":"stopped",...}``) is kept in :attr:`summary`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        for line in out.splitlines():
            if '"stopped"' in line:
                self.summary = json.loads(line)
        return read_ledger(self.ledger_path)


def read_ledger(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@contextmanager
def fake_exchange(
    tmp_path: Path,
    *,
    symbols: str = "BTCUSDT,ETHUSDT,BNBUSDT",
    rate: str = "2000",
    faults: str | None = None,
    protocol: str = "binance",
    name: str = "fake",
    first_id: int | None = None,
    args: Sequence[str] = (),
) -> Iterator[FakeExchangeProcess]:
    ledger = tmp_path / f"{name}-ledger.jsonl"
    cmd = [
        *FEEDVAULT,
        "fake-exchange",
        "--protocol",
        protocol,
        "--port",
        "0",
        "--rate",
        rate,
        "--symbols",
        symbols,
        "--ledger",
        str(ledger),
    ]
    if faults:
        cmd += ["--faults", faults]
    if first_id is not None:
        cmd += ["--first-id", str(first_id)]
    cmd += args  # any other flag, e.g. ("--backlog-seconds", "120")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=base_env()
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"fake exchange did not start: {proc.stderr.read() if proc.stderr else ''}"
            )
        info = json.loads(line)
        yield FakeExchangeProcess(proc, info["url"], int(info["port"]), ledger)
    finally:
        reap(proc)


async def until(ready: Callable[[], bool], limit: float = 30.0) -> None:
    """Wait until ``ready()`` holds, at most ``limit`` seconds: for state that has no event to
    wait on (a session's subscription, a fake's ledger, a spill a worker thread finishes). It
    yields to the loop between checks and never sleeps for a fixed time."""
    async with asyncio.timeout(limit):
        while not ready():  # noqa: ASYNC110 - nothing to wait on but the state itself
            await asyncio.sleep(0)


async def past_the_deadline(run: asyncio.Task[int], clock: FakeClock, seconds: float = 60) -> int:
    """Move an in-process run's ``clock`` ``seconds`` on (past its deadline) and return its exit
    code (30 s at most)."""
    clock.advance(seconds)
    async with asyncio.timeout(30):
        return await run


@asynccontextmanager
async def listening_process(
    *args: str, within: float = 10.0
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, Any]]]:
    """``python *args`` (a server that prints a JSON ``listening`` line first) started from the
    test's event loop, with that line (read within ``within`` s); killed on the way out if it
    still runs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(within):
            listening = json.loads(await proc.stdout.readline())
        yield proc, listening
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def sigterm_exits_0(proc: asyncio.subprocess.Process, within: float = 10.0) -> bytes:
    """SIGTERM ``proc``, assert it exits 0 within ``within`` s and return the rest of its
    stdout."""
    assert proc.stdout is not None
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(within):
        rest = await proc.stdout.read()
        assert await proc.wait() == 0
    return rest


def assert_prints_nothing(*command: str) -> None:
    """Run a checker's ``command`` (60 s at most): it exits 0 and prints nothing (a linter with
    nothing to say)."""
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it still runs (a test failed on the way) and reap it."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=10)


def start_stream(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*FEEDVAULT, "stream", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stop_after_connections(
    proc: subprocess.Popen[str], connections: int, timeout: float = 30.0
) -> tuple[str, str]:
    """SIGTERM a ``feedvault stream`` once it has logged ``connections`` ``connected`` lines
    (each within ``timeout`` s), however long its start and reconnects took on a loaded
    machine; wait (60 s at most) for it to exit and return the rest of its stdout and stderr.
    The process is killed if anything fails on the way. The stdout returned begins with the
    lines read before the signal."""
    seen: list[dict[str, Any]] = []
    try:
        for _ in range(connections):
            seen += wait_for_log(proc, "connected", timeout=timeout)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        return "".join(json.dumps(doc) + "\n" for doc in seen) + out, err
    finally:
        reap(proc)


def run_feedvault(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``feedvault *args`` to its end (``timeout`` s at most), its output captured."""
    return subprocess.run(
        [*FEEDVAULT, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def run_stream(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``feedvault stream`` to its end (``timeout`` s at most), its output captured."""
    return run_feedvault(env, "stream", timeout=timeout)


def log_doc(line: str) -> dict[str, Any] | None:
    """The JSON object on ``line`` (a log line), or None: not JSON, or not an object."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def parse_logs(text: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines of ``text`` (a run's output), in order."""
    return [doc for line in text.splitlines() if (doc := log_doc(line)) is not None]


def read_logs_until(
    proc: subprocess.Popen[str],
    until: Callable[[dict[str, Any]], bool],
    timeout: float,
    seen: list[dict[str, Any]],
) -> dict[str, Any]:
    """Read ``proc``'s JSON log lines into ``seen`` until one satisfies ``until`` (returned);
    fail after ``timeout`` s without one (the caller kills the process)."""
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        doc = log_doc(line)
        if doc is not None:
            seen.append(doc)
            if until(doc):
                return doc
    raise AssertionError(f"no such log line within {timeout}s; last lines: {seen[-5:]}")


def wait_for_log(proc: subprocess.Popen[str], event: str, timeout: float) -> list[dict[str, Any]]:
    """Read JSON log lines from ``proc`` until one has ``event``; return the lines read."""
    seen: list[dict[str, Any]] = []
    try:
        read_logs_until(proc, lambda doc: doc.get("event") == event, timeout, seen)
    except AssertionError:
        raise AssertionError(f"no {event!r} log line within {timeout}s; saw {seen[-5:]}") from None
    return seen


def decode_object(body: bytes, key: str) -> list[dict[str, Any]]:
    if key.endswith(".parquet"):
        return stored_records(key, body)
    if key.endswith(".gz"):
        body = gzip.decompress(body)
    elif key.endswith(".zst"):
        body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return [json.loads(line) for line in body.splitlines() if line]


def stored_objects(client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """The body of every trade object under ``prefix``, by key."""
    out: dict[str, bytes] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix + "trades/"):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def stored_trades(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every trade record in every trade object under ``prefix``."""
    objects = stored_objects(client, bucket, prefix)
    return [trade for key, body in objects.items() for trade in decode_object(body, key)]


def read_manifest(client: Any, bucket: str, prefix: str) -> dict[str, Any]:
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "_manifests/")
    keys = [obj["Key"] for obj in listing.get("Contents", [])]
    assert len(keys) == 1, keys
    doc: dict[str, Any] = json.loads(client.get_object(Bucket=bucket, Key=keys[0])["Body"].read())
    return doc


def trade_identity(t: dict[str, Any]) -> tuple[str, str, str, str, str, str]:
    return (t["exchange"], t["symbol"], t["trade_id"], t["price"], t["size"], t["side"])


def exchange_stream_env(
    s3_env: dict[str, str],
    *,
    bucket: str,
    prefix: str,
    streams: str,
    url_variable: str,
    url: str,
    runtime: str,
    **extra: str,
) -> dict[str, str]:
    """The environment of a ``feedvault stream`` task for any exchange: ``STREAMS``, its
    ``<EXCHANGE>_WS_URL`` override and the S3 settings ``s3_env`` (``S3Server.env()``)."""
    return base_env(
        S3_BUCKET=bucket,
        S3_PREFIX=prefix,
        MAX_RUNTIME_SECONDS=runtime,
        STREAMS=streams,
        STATS_INTERVAL_SECONDS="1",
        WINDOW_SECONDS="2",
        SPILL_DIR=str(Path("/tmp") / f"fv-spill-{bucket}"),
        **{url_variable: url},
        **s3_env,
        **extra,
    )


def make_windower(
    clock: Clock, max_records: int, prefix: str = "p/", run_id: str = "run1", fmt: str = "ndjson.gz"
) -> Windower:
    """A :class:`Windower` of 60 s windows of at most ``max_records`` records (and 1 GiB) under
    ``prefix`` for ``run_id``, in format ``fmt``, on ``clock``."""
    policy = WindowPolicy(60, 1 << 30, max_records)
    return Windower(policy, KeyTemplate(), prefix=prefix, run_id=run_id, format=fmt, clock=clock)


def make_book_windower(
    clock: Clock,
    *,
    seconds: int = 60,
    max_records: int = 1_000_000,
    template: str | None = None,
) -> Windower:
    """A :class:`Windower` of the ``book`` dataset (window-opening snapshots on) under ``p/``
    for run ``r``, ``ndjson.gz``, windows of ``seconds`` and at most ``max_records`` records,
    with the default key template (or ``template``)."""
    return Windower(
        WindowPolicy(seconds=seconds, max_records=max_records),
        KeyTemplate(template) if template else KeyTemplate(),
        prefix="p/",
        run_id="r",
        format="ndjson.gz",
        dataset="book",
        clock=clock,
        trade_ids=False,
    )


def stream_settings(**changes: str) -> dict[str, str]:
    """The four settings a stream run requires (a 5 s run of binance:BTCUSDT into
    s3://b-bucket/p/), with ``changes``; no process environment."""
    return {
        "S3_BUCKET": "b-bucket",
        "S3_PREFIX": "p/",
        "MAX_RUNTIME_SECONDS": "5",
        "STREAMS": "binance:BTCUSDT",
        **changes,
    }


def fake_stream_env(
    s3_env: dict[str, str],
    url: str,
    bucket: str,
    prefix: str,
    runtime: str,
    symbols: str = "BTCUSDT,ETHUSDT",
    exchange: str = "binance",
    **settings: str,
) -> dict[str, str]:
    """:func:`exchange_stream_env` for ``symbols`` (comma-separated) of ``exchange`` served at
    ``url``; ``settings`` are set last, so they may replace its defaults (``WINDOW_SECONDS``,
    ``SPILL_DIR``, ...)."""
    env = exchange_stream_env(
        s3_env,
        bucket=bucket,
        prefix=prefix,
        streams=",".join(f"{exchange}:{symbol}" for symbol in symbols.split(",")),
        url_variable=f"{exchange.upper()}_WS_URL",
        url=url,
        runtime=runtime,
    )
    env.update(settings)
    return env


@dataclass
class FakeExchangeRun:
    """What a ``feedvault stream`` run against the fake exchange left (:func:`run_against_fake`):
    its exit code and output, the fake's ledger and closing summary, and what it stored."""

    returncode: int | None
    out: str
    err: str
    ledger: list[dict[str, Any]]
    summary: dict[str, Any] | None
    client: Any
    bucket: str
    prefix: str

    def assert_exit(self, code: int = 0) -> None:
        assert self.returncode == code, self.err[-2000:] + self.out[-2000:]

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.client, self.bucket, self.prefix)

    def stored(self) -> list[dict[str, Any]]:
        return stored_trades(self.client, self.bucket, self.prefix)


def run_against_fake(
    s3: S3Server,
    tmp_path: Path,
    *,
    bucket: str,
    prefix: str,
    protocol: str,
    symbols: str,
    streams: str,
    url_variable: str,
    url_path: str = "",
    rate: str = "500",
    faults: str | None = None,
    runtime: str = "6",
    connections: int | None = None,
    **extra: str,
) -> FakeExchangeRun:
    """``feedvault stream`` on ``streams`` against ``feedvault fake-exchange --protocol
    protocol`` (trading ``symbols`` at ``rate``, with ``faults``), reached through
    ``url_variable`` (the fake's URL + ``url_path``), into ``s3``. Without ``connections``, the
    run ends by itself (60 s at most); with it, it is stopped by SIGTERM once it has connected
    that many times (:func:`stop_after_connections`). Nothing is asserted."""
    with fake_exchange(
        tmp_path, protocol=protocol, symbols=symbols, rate=rate, faults=faults
    ) as fx:
        env = exchange_stream_env(
            s3.env(),
            bucket=bucket,
            prefix=prefix,
            streams=streams,
            url_variable=url_variable,
            url=fx.url + url_path,
            runtime=runtime,
        )
        env.update(extra)
        proc = start_stream(env)
        if connections is None:
            out, err = proc.communicate(timeout=60)
        else:
            out, err = stop_after_connections(proc, connections)
        ledger = fx.stop()
    client = s3.client()
    return FakeExchangeRun(proc.returncode, out, err, ledger, fx.summary, client, bucket, prefix)


def assert_stored_exactly_once(ledger: list[dict[str, Any]], stored: list[dict[str, Any]]) -> None:
    """Every ledger trade is stored exactly once (same exchange, symbol, id, exact price and
    size text, taker side), and nothing else is stored."""
    sent = [trade_identity(t) for t in ledger]
    got = [trade_identity(t) for t in stored]
    assert sent, "the fake exchange sent nothing"
    seen: dict[tuple[str, ...], int] = {}
    for key in got:
        seen[key] = seen.get(key, 0) + 1
    dupes = [k for k, n in seen.items() if n > 1]
    assert not dupes, f"{len(dupes)} trades stored more than once, e.g. {dupes[:3]}"
    missing, extra = set(sent) - set(got), set(got) - set(sent)
    assert not missing, f"{len(missing)} ledger trades not stored, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} stored trades not in the ledger, e.g. {sorted(extra)[:3]}"


def run_verify(
    s3_env: dict[str, str], bucket: str, prefix: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``feedvault verify s3://bucket/prefix [args...]``."""
    return run_feedvault(base_env(**s3_env), "verify", f"s3://{bucket}/{prefix}", *args)


def ledger_missing_ids(ledger: list[dict[str, Any]]) -> dict[str, set[int]]:
    """Per ``exchange:symbol``, the ids between the first and last delivered that were never
    delivered (empty sets left out)."""
    ids: dict[str, set[int]] = collections.defaultdict(set)
    for t in ledger:
        ids[f"{t['exchange']}:{t['symbol']}"].add(int(t["trade_id"]))
    out = {key: set(range(min(got), max(got) + 1)) - got for key, got in ids.items()}
    return {key: missing for key, missing in out.items() if missing}


def manifest_gap_ids(manifest: dict[str, Any]) -> dict[str, set[int]]:
    """Per ``exchange:symbol``, the ids the manifest's gaps name (empty sets left out)."""
    out: dict[str, set[int]] = collections.defaultdict(set)
    for key, gaps in manifest["gaps"].items():
        for gap in gaps:
            out[key].update(range(gap["from_id"], gap["to_id"] + 1))
    return {key: ids for key, ids in out.items() if ids}


def damaged_parquet_page(body: bytes, column: str | None = None) -> bytes | None:
    """``body`` (a Parquet file) with one byte flipped inside the first data page of ``column``
    (default: the first column) such that the file still decodes, to other values: a damage
    only a page checksum can tell. None when no flip of that page decodes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = pq.read_table(pa.BufferReader(body))
    index = 0 if column is None else good.schema.get_field_index(column)
    chunk = pq.ParquetFile(pa.BufferReader(body)).metadata.row_group(0).column(index)
    start = chunk.data_page_offset
    for position in range(start, start + chunk.total_compressed_size):
        flipped = bytearray(body)
        flipped[position] ^= 0x01
        try:
            read = pq.read_table(pa.BufferReader(bytes(flipped)))
        except (pa.ArrowException, OSError):
            continue
        if not read.equals(good):
            return bytes(flipped)
    return None
