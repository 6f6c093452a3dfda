"""A hanging S3 is a failing S3 (issue 12, item 8): the S3 writer against moto's S3 server
behind the fault proxy in ``hang`` mode (connections accepted, requests read whole, never
answered), and ``feedvault stream`` end to end with S3 hanging mid-run.

Each S3 call is bounded by its deadline (:func:`sinks.s3.call_deadline`): past it the call
fails with :class:`~engine.errors.StorageError`, and the sink's retries and spill take over, so
windows spill and the run goes on reading. The writer tests use a 3 s deadline floor and a
botocore read timeout far above it, so it is the deadline that ends the call; they assert on the
error, never on the time it took.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.errors import StorageError
from engine.records import Trade
from sinks.encoders import decode_body
from sinks.memory import MemoryWriter
from sinks.s3 import DEADLINE_FLOOR_SECONDS, MIN_BYTES_PER_SECOND, S3Writer, call_deadline
from sinks.sink import WindowedSink
from sinks.spill import SpillDir, load_spilled
from sinks.writer import MiB, StoredObject
from tests import faultproxy as fp
from tests.conftest import S3Server
from tests.harness import (
    assert_stored_exactly_once,
    fake_exchange,
    fake_stream_env,
    make_windower,
    read_logs_until,
    read_manifest,
    reap,
    start_stream,
    stored_trades,
)
from tests.stop_harness import WatchedProxy

FLOOR = 3.0
"""The writer tests' deadline floor (seconds): each hung call waits it out, and the only calls
made under it that must succeed move no bytes (a multipart create)."""
READ_TIMEOUT = 120.0
"""Far above any deadline of these tests: botocore's read timeout never ends a call here."""


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[fp.FaultProxy]:
    with fp.FaultProxy(s3_server.endpoint) as running:
        yield running


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def writer(proxy: fp.FaultProxy, bucket: str, **options: Any) -> Any:
    return S3Writer.open(
        bucket,
        endpoint_url=proxy.url,
        region="us-east-1",
        read_timeout=READ_TIMEOUT,
        deadline_floor_seconds=FLOOR,
        **options,
    )


def assert_past_deadline(err: pytest.ExceptionInfo[StorageError], operation: str) -> None:
    message = str(err.value)
    assert f"S3 {operation} " in message and "deadline" in message, message


# -- the fault ------------------------------------------------------------------------------


async def test_a_hung_request_is_held_until_the_proxy_stops_then_dropped(
    s3_server: S3Server, bucket: str
) -> None:
    """``hang`` never answers, and lasts no longer than the proxy: its stop drops the
    connection, which the client sees as a dropped connection, well before its deadline."""
    with WatchedProxy(s3_server.endpoint) as proxy:
        proxy.set_outage(fp.HANG)
        async with S3Writer.open(
            bucket,
            endpoint_url=proxy.url,
            region="us-east-1",
            max_attempts=1,
            read_timeout=READ_TIMEOUT,
            deadline_floor_seconds=READ_TIMEOUT,
        ) as s3:
            put = asyncio.create_task(s3.put("held", b"x"))
            await asyncio.to_thread(proxy.wait_applied, 1, 30)
            assert not put.done()
            await asyncio.to_thread(proxy.stop)
            with pytest.raises(StorageError) as err:
                await put
    assert "deadline" not in str(err.value), err.value
    assert s3_server.keys(bucket) == []


# -- the deadline --------------------------------------------------------------------------


def test_the_deadline_is_a_floor_plus_the_bytes_at_a_minimum_throughput() -> None:
    assert call_deadline(0) == DEADLINE_FLOOR_SECONDS
    assert call_deadline(16 * MiB) == DEADLINE_FLOOR_SECONDS + 16 * MiB / MIN_BYTES_PER_SECOND
    assert call_deadline(3 * MiB, floor_seconds=2, min_bytes_per_second=MiB) == 5.0


# -- the writer against a hanging S3 ---------------------------------------------------------


async def test_a_put_to_a_hanging_s3_fails_with_a_storage_error_and_the_next_one_works(
    proxy: fp.FaultProxy, bucket: str, s3_server: S3Server
) -> None:
    async with writer(proxy, bucket) as s3:
        proxy.set_outage(fp.HANG)
        with pytest.raises(StorageError) as err:
            await s3.put("hung.txt", b"x" * 1000)
        assert_past_deadline(err, "PutObject")
        assert proxy.outcomes("hang") >= 1
        proxy.set_outage(None)
        s3.deadline_floor_seconds = DEADLINE_FLOOR_SECONDS  # the default: a loaded machine
        await s3.put("hung.txt", b"x" * 1000)  # the client is not left broken
    assert s3_server.keys(bucket) == ["hung.txt"]


async def test_a_multipart_part_that_hangs_fails_the_put(
    proxy: fp.FaultProxy, bucket: str, s3_server: S3Server
) -> None:
    proxy.set_outage(fp.HANG, where=fp.upload_part(1))
    body = bytes(range(256)) * (11 * MiB // 256)  # three parts of 5 MiB (the last 1 MiB)
    async with writer(proxy, bucket, multipart_threshold=5 * MiB, part_size=5 * MiB) as s3:
        with pytest.raises(StorageError) as err:
            await s3.put("big.bin", body)
    assert_past_deadline(err, "UploadPart")
    assert s3_server.keys(bucket) == []
    assert proxy.outcomes("hang") >= 1


@pytest.mark.parametrize("operation", ["GetObject", "HeadObject", "ListObjectsV2", "DeleteObject"])
async def test_every_other_call_to_a_hanging_s3_fails_with_a_storage_error(
    operation: str, proxy: fp.FaultProxy, bucket: str, s3_server: S3Server
) -> None:
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=b"body")  # straight to S3
    async with writer(proxy, bucket) as s3:
        proxy.set_outage(fp.HANG)
        with pytest.raises(StorageError) as err:
            if operation == "GetObject":
                await s3.get("k")
            elif operation == "HeadObject":
                await s3.head("k")
            elif operation == "ListObjectsV2":
                await s3.list("")
            else:
                await s3.delete("k")
    assert_past_deadline(err, operation)


async def test_a_deadline_that_ends_the_sdk_retries_names_what_the_last_attempt_got(
    proxy: fp.FaultProxy, bucket: str
) -> None:
    """S3 throttles every request: the SDK's backoff between ten attempts outlasts the deadline,
    whose error still says why the call was being retried."""
    proxy.set_outage(fp.SLOWDOWN)
    async with writer(proxy, bucket, max_attempts=10) as s3:
        with pytest.raises(StorageError) as err:
            await s3.put("throttled", b"x")
    assert_past_deadline(err, "PutObject")
    assert "the last attempt before it: SlowDown" in str(err.value)


async def test_a_manifest_create_to_a_hanging_s3_fails_with_a_storage_error(
    proxy: fp.FaultProxy, bucket: str
) -> None:
    proxy.set_outage(fp.HANG)
    async with writer(proxy, bucket) as s3:
        with pytest.raises(StorageError) as err:
            await s3.create("p/_manifests/run.json", b"{}")
    assert_past_deadline(err, "PutObject")


# -- the sink: a window spills within UPLOAD_RETRY_SECONDS plus one attempt -----------------


class HungWriter(MemoryWriter):
    """Every put fails after ``seconds`` of the fake clock: an S3 that hangs until the
    writer's deadline, as :class:`S3Writer` meets it (shown above), on the sink's own clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__()
        self.clock = clock
        self.seconds = seconds
        self.attempts_at: list[float] = []

    async def put(self, key: str, body: bytes) -> StoredObject:
        self.attempts_at.append(self.clock.monotonic())
        self.clock.advance(self.seconds)
        await asyncio.sleep(0)
        raise StorageError(f"S3 PutObject {key} failed: no answer within its deadline")


@pytest.mark.parametrize("seed", range(5))
async def test_a_window_spills_within_the_retry_budget_plus_one_attempt(
    seed: int, tmp_path: Path
) -> None:
    """``UPLOAD_RETRY_SECONDS`` counts from the start of the window's first attempt: the last
    attempt starts within it, so the window spills at most one attempt after it (with attempts
    of 20 s and a budget of 60 s: within 80 s of its upload's start, not 100)."""
    clock = FakeClock(start_ns=1_700_000_040 * 1_000_000_000)
    writer = HungWriter(clock, seconds=20.0)
    windower = make_windower(clock, 4)
    spill = SpillDir(tmp_path / "spill", "run1", "s3://b/p/")

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    sink = WindowedSink(
        windower,
        writer,
        clock=clock,
        retry_budget_seconds=60.0,
        spill=spill,
        sleep=sleep,
        rng=random.Random(seed),
    )
    async with sink:
        trades = [
            Trade("binance", "BTC-USDT", "BTCUSDT", str(n), "1", "1", "buy", 7, clock.time_ns())
            for n in range(4)
        ]
        await sink.write(trades)  # four records: the window closes and its upload starts
        # The spill is written in a worker thread: wait for it (bounded), however slow the
        # machine, never for a number of loop turns.
        async with asyncio.timeout(60):
            while not sink.windows_spilled:  # noqa: ASYNC110 - set from a worker thread's result
                await asyncio.sleep(0)
        spilled_at = clock.monotonic()
        sink.cancel_uploads()
    assert sink.windows_spilled == 1
    first = writer.attempts_at[0]
    assert writer.attempts_at[-1] - first <= 60.0  # the last attempt began within the budget
    assert spilled_at - first <= 60.0 + writer.seconds


# -- feedvault stream with S3 hanging mid-run -----------------------------------------------

PREFIX = "streaming/hang/"
RUN_ID = "20261206T000000Z-hang"
QUEUE_MAXSIZE = 5000
"""Small, so a sink stuck on S3 would fill the queue within seconds at the feed's rate."""


def is_stats(doc: dict[str, Any]) -> bool:
    return doc.get("event") == "stats"


def test_stream_with_s3_hanging_spills_windows_reads_on_and_exits_1(
    s3_server: S3Server, bucket: str, proxy: fp.FaultProxy, tmp_path: Path
) -> None:
    """S3 starts to hang once a window is stored; only the manifest requests still get through
    (so the run's proof can be read). Each window's upload fails at its deadline (one attempt:
    ``UPLOAD_RETRY_SECONDS`` 0.1) and spills; with upload slots for the windows of a deadline,
    the queue never fills: the stream is read all along. The stop's last windows spill too
    (the stop grace ends their uploads), the manifest is ``incomplete`` and names what is on
    disk, exit 1, and S3 plus the spill directory hold every trade sent, once."""
    spill_dir = tmp_path / "spill"
    seen: list[dict[str, Any]] = []
    with fake_exchange(tmp_path, symbols="BTCUSDT", rate="300") as fx:
        env = fake_stream_env(
            proxy.env(),
            fx.url,
            bucket,
            PREFIX,
            "600",  # stopped by SIGTERM below
            "BTCUSDT",
            RUN_ID=RUN_ID,
            UPLOAD_RETRY_SECONDS="0.1",
            # A window (2 s) holds a slot for one deadline (20 s) before it spills: 10 slots
            # in use at a time; 32 leave room, so a sink waiting on S3 never holds the reads.
            UPLOAD_CONCURRENCY="32",
            QUEUE_MAXSIZE=str(QUEUE_MAXSIZE),
            STOP_GRACE_SECONDS="10",
        )
        env["SPILL_DIR"] = str(spill_dir)
        proc = start_stream(env)
        try:
            read_logs_until(proc, lambda doc: is_stats(doc) and doc["objects"] >= 1, 60, seen)
            proxy.set_outage(fp.HANG, where=fp.not_manifest)
            hang_began = len(seen)
            # Before the fix no upload failed for 5 x 30 s: nothing spilled in this bound.
            read_logs_until(
                proc, lambda doc: is_stats(doc) and doc["upload_backlog"] >= 1, 75, seen
            )
            first_spill = len(seen)
            for _ in range(3):  # the stream is still read after windows spilled
                read_logs_until(proc, is_stats, 30, seen)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=90)
        finally:
            reap(proc)
        ledger = fx.stop()
    assert proc.returncode == 1, err[-3000:] + out[-3000:]
    assert proxy.outcomes("hang") > 0
    stats_after_spill = [doc for doc in seen[first_spill:] if is_stats(doc)]
    # Read on after windows spilled (summed over the lines: one line of a loaded machine may
    # see a stalled second, the stream as a whole may not stop).
    assert len(stats_after_spill) >= 3
    assert sum(doc["trades_per_s"] for doc in stats_after_spill[1:]) > 0, stats_after_spill
    stats_in_hang = [doc for doc in seen[hang_began:] if is_stats(doc)]
    assert max(doc["queue_high_water"] for doc in stats_in_hang) < QUEUE_MAXSIZE

    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "incomplete"
    spilled = load_spilled(spill_dir, RUN_ID)
    assert spilled, "nothing was spilled"
    assert sorted(manifest["spilled"]) == sorted(s.window.key for s in spilled)
    stored_keys = set(s3_server.keys(bucket, PREFIX + "trades/"))
    assert {o["key"] for o in manifest["objects"]} == stored_keys
    on_disk = [t for s in spilled for t in decode_body(s.window.body, s.window.format)]
    in_s3 = stored_trades(s3_server.client(), bucket, PREFIX)
    assert_stored_exactly_once(ledger, in_s3 + on_disk)
