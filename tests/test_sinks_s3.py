"""S3Writer against moto's S3 server on loopback."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import pytest

from engine.errors import ObjectNotFound, StorageError
from sinks.s3 import MiB, S3Writer
from sinks.writer import ListedObject, open_writer, parse_destination

pytestmark = pytest.mark.usefixtures("aws_env")


def b64sha(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


async def test_endpoint_comes_from_aws_endpoint_url_s3(s3_server: Any, bucket: str) -> None:
    assert os.environ["AWS_ENDPOINT_URL_S3"] == s3_server.endpoint
    async with S3Writer.open(bucket) as writer:
        assert writer.endpoint_url == s3_server.endpoint
        await writer.check()


async def test_put_get_round_trip_with_checksum(s3_server: Any, bucket: str) -> None:
    body = b'{"a":1}\n' * 1000
    async with S3Writer.open(bucket, endpoint_url=s3_server.endpoint) as writer:
        stored = await writer.put("p/trades/x-000000.ndjson.gz", body)
        assert stored.key == "p/trades/x-000000.ndjson.gz"
        assert stored.bytes == len(body)
        assert stored.sha256 == hashlib.sha256(body).hexdigest()
        assert await writer.get(stored.key) == body
        assert await writer.head(stored.key) == ListedObject(stored.key, len(body))
        assert await writer.checksum(stored.key) == b64sha(body)
    response = s3_server.client().get_object(Bucket=bucket, Key=stored.key, ChecksumMode="ENABLED")
    assert response["ChecksumSHA256"] == b64sha(body)


async def test_put_is_idempotent(s3_server: Any, bucket: str) -> None:
    async with S3Writer.open(bucket) as writer:
        await writer.put("k/a.ndjson.gz", b"same")
        await writer.put("k/a.ndjson.gz", b"same")
        assert await writer.list("k/") == [ListedObject("k/a.ndjson.gz", 4)]
    assert s3_server.keys(bucket) == ["k/a.ndjson.gz"]


async def test_multipart_upload_with_part_checksums(s3_server: Any, bucket: str) -> None:
    body = os.urandom(11 * MiB)
    async with S3Writer.open(bucket, multipart_threshold=5 * MiB, part_size=5 * MiB) as writer:
        stored = await writer.put("big/object.ndjson.zst", body)
        assert stored.sha256 == hashlib.sha256(body).hexdigest()
        assert stored.bytes == len(body)
        assert await writer.get("big/object.ndjson.zst") == body
        assert await writer.checksum("big/object.ndjson.zst") is not None
    parts = [body[i : i + 5 * MiB] for i in range(0, len(body), 5 * MiB)]
    composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    response = s3_server.client().get_object(
        Bucket=bucket, Key="big/object.ndjson.zst", ChecksumMode="ENABLED"
    )
    assert response["ChecksumSHA256"] == base64.b64encode(composite).decode() + "-3"
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_failed_multipart_upload_is_aborted(s3_server: Any, bucket: str) -> None:
    async with S3Writer.open(bucket, multipart_threshold=5 * MiB, part_size=5 * MiB) as writer:
        writer.part_size = 1 * MiB  # below S3's 5 MiB minimum: CompleteMultipartUpload fails
        with pytest.raises(StorageError, match="EntityTooSmall"):
            await writer.put("big/fails.ndjson.gz", os.urandom(6 * MiB))
    assert s3_server.keys(bucket) == []
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_missing_object_and_bucket(bucket: str) -> None:
    async with S3Writer.open(bucket) as writer:
        with pytest.raises(ObjectNotFound):
            await writer.get("nope.ndjson.gz")
        with pytest.raises(ObjectNotFound):
            await writer.head("nope.ndjson.gz")
        await writer.delete("nope.ndjson.gz")  # deleting a missing key is fine
    async with S3Writer.open("no-such-bucket-feedvault") as writer:
        for call in (writer.put("k", b"x"), writer.get("k"), writer.list(""), writer.check()):
            with pytest.raises(StorageError) as info:
                await call
            assert not isinstance(info.value, ObjectNotFound) or "bucket" in str(info.value)
            assert "no-such-bucket-feedvault" in str(info.value)


async def test_missing_bucket_message_is_clear(bucket: str) -> None:
    async with S3Writer.open("no-such-bucket-feedvault") as writer:
        with pytest.raises(StorageError, match="bucket 'no-such-bucket-feedvault' does not exist"):
            await writer.put("k", b"x")


async def test_unreachable_endpoint_is_storage_error(bucket: str) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with S3Writer.open(
        bucket, endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1, connect_timeout=1
    ) as writer:
        with pytest.raises(StorageError, match="PutObject"):
            await writer.put("k", b"x")


async def test_list_and_delete(bucket: str) -> None:
    async with S3Writer.open(bucket) as writer:
        for key in ("a/2", "a/1", "b/1"):
            await writer.put(key, key.encode())
        assert [obj.key for obj in await writer.list("a/")] == ["a/1", "a/2"]
        await writer.delete("a/1")
        assert [obj.key for obj in await writer.list("")] == ["a/2", "b/1"]


async def test_open_writer_for_s3_destination(s3_server: Any, bucket: str) -> None:
    destination = parse_destination(f"s3://{bucket}/streaming/x/")
    async with open_writer(destination) as writer:
        await writer.put(destination.prefix + "k", b"v")
    assert s3_server.keys(bucket) == ["streaming/x/k"]


def test_part_size_floor() -> None:
    with pytest.raises(ValueError):
        S3Writer(object(), "b", part_size=MiB)
