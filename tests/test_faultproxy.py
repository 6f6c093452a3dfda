"""The fault-injecting proxy in front of moto's S3 server, driven by the real S3 writer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from engine.errors import StorageError
from sinks.s3 import S3Writer
from tests import faultproxy as fp
from tests.conftest import S3Server
from tests.stop_harness import WatchedProxy

MiB = 1 << 20


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[fp.FaultProxy]:
    with fp.FaultProxy(s3_server.endpoint) as running:
        yield running


def writer(proxy: fp.FaultProxy, bucket: str, **options: float) -> S3Writer:
    return S3Writer.open(  # type: ignore[return-value]
        bucket, endpoint_url=proxy.url, region="us-east-1", **options
    )


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


async def test_requests_pass_through_unchanged(proxy: fp.FaultProxy, bucket: str) -> None:
    async with writer(proxy, bucket) as s3:
        stored = await s3.put("a/b.txt", b"hello")
        assert await s3.get("a/b.txt") == b"hello"
        assert [o.key for o in await s3.list("a/")] == ["a/b.txt"]
    assert stored.bytes == 5
    assert proxy.outcomes("forwarded") == 3


@pytest.mark.parametrize("fault", [fp.SLOWDOWN, fp.ERROR500, fp.RESET, fp.slow(0.2)])
async def test_one_fault_is_retried_by_the_sdk(
    fault: fp.Fault, proxy: fp.FaultProxy, bucket: str, s3_server: S3Server
) -> None:
    proxy.schedule(fp.put_object("k1"), fault)
    async with writer(proxy, bucket) as s3:
        await s3.put("k1", b"x" * 100)
    assert proxy.pending() == 0 and proxy.outcomes(fault.kind) == 1
    assert s3_server.keys(bucket) == ["k1"]


async def test_a_held_request_times_out_and_is_retried(proxy: fp.FaultProxy, bucket: str) -> None:
    proxy.schedule(fp.put_object(), fp.timeout(10))
    async with writer(proxy, bucket, read_timeout=1) as s3:
        await s3.put("held", b"x")
    assert proxy.outcomes("timeout") == 1 and proxy.outcomes("forwarded") >= 1


async def _put_abandoned_once_applied(proxy: WatchedProxy, bucket: str, key: str) -> None:
    """PUT ``key``, and cancel the put once the proxy has applied its next fault to it."""
    applied = len(proxy.applied())
    async with writer(proxy, bucket, max_attempts=1) as s3:
        put = asyncio.create_task(s3.put(key, b"x" * 100))
        await asyncio.to_thread(proxy.wait_applied, applied + 1, 10)
        put.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await put


async def test_wait_settled_waits_for_a_request_whose_client_went_away(
    s3_server: S3Server, bucket: str
) -> None:
    """A slowed PUT read whole is forwarded after its client gave up (S3 may commit it so):
    once ``wait_settled`` returns, the bucket shows it. A held one never reaches S3."""
    with WatchedProxy(s3_server.endpoint) as proxy:
        proxy.schedule(fp.put_object("slowed"), fp.slow(1.0))
        await _put_abandoned_once_applied(proxy, bucket, "slowed")
        await asyncio.to_thread(proxy.wait_settled, 10)
        assert s3_server.keys(bucket) == ["slowed"]

        proxy.schedule(fp.put_object("held"), fp.timeout(60))
        await _put_abandoned_once_applied(proxy, bucket, "held")
        await asyncio.to_thread(proxy.wait_settled, 10)  # not held up by the 60 s hold
        assert s3_server.keys(bucket) == ["slowed"]


async def test_an_outage_fails_the_put_and_ends_when_cleared(
    proxy: fp.FaultProxy, bucket: str
) -> None:
    proxy.set_outage(fp.SLOWDOWN)
    async with writer(proxy, bucket, max_attempts=2) as s3:
        with pytest.raises(StorageError):
            await s3.put("down", b"x")
        proxy.set_outage(None)
        await s3.put("down", b"x")
    assert proxy.outcomes("slowdown") >= 2  # the SDK retried before giving up


async def test_multipart_part_and_completion_faults(
    proxy: fp.FaultProxy, bucket: str, s3_server: S3Server
) -> None:
    proxy.schedule(fp.upload_part(2), fp.ERROR500)
    proxy.schedule(fp.complete_multipart, fp.SLOWDOWN)
    body = bytes(range(256)) * (6 * MiB // 256 * 2)  # 12 MiB: three 5 MiB parts
    async with writer(proxy, bucket, multipart_threshold=5 * MiB, part_size=5 * MiB) as s3:
        stored = await s3.put("big.bin", body)
        assert await s3.get("big.bin") == body
    assert stored.bytes == len(body)
    assert proxy.pending() == 0
    assert proxy.outcomes("error500") == 1 and proxy.outcomes("slowdown") == 1
    assert s3_server.keys(bucket) == ["big.bin"]
