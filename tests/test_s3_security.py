"""S3_SSE, S3_SSE_KMS_KEY_ID and S3_EXPECTED_BUCKET_OWNER: checked up front, sent on every request.

The requests are recorded by the fault proxy (tests/faultproxy.py) in front of moto's S3
server, so the tests see the headers the real aioboto3 client put on the wire: the expected
bucket owner on every request, server-side encryption on the requests that create an object
(PutObject, CreateMultipartUpload) and on no other (S3 refuses it on UploadPart and
CompleteMultipartUpload).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from batch.config import load_batch_config
from engine.errors import ConfigError, StorageError
from feedvault.config import load_stream_config
from sinks.s3 import S3Writer
from sinks.s3security import S3Security, s3_security
from tests import faultproxy as fp
from tests.conftest import S3Server
from tests.harness import (
    base_env,
    fake_exchange,
    fake_stream_env,
    run_feedvault,
    run_stream,
    run_verify,
)

MiB = 1 << 20
OWNER = "123456789012"  # moto's default account
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:alias/feedvault-test"
SSE_HEADER = "x-amz-server-side-encryption"
KMS_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
OWNER_HEADER = "x-amz-expected-bucket-owner"

STREAM_ENV = {
    "S3_BUCKET": "b-bucket",
    "S3_PREFIX": "p/",
    "MAX_RUNTIME_SECONDS": "5",
    "STREAMS": "binance:BTCUSDT",
}


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[fp.FaultProxy]:
    with fp.FaultProxy(s3_server.endpoint) as running:
        yield running


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "variable", "problem"),
    [
        ({"S3_SSE": "aes256"}, "S3_SSE", "must be one of AES256, aws:kms"),
        ({"S3_SSE": "aws:kms:dsse"}, "S3_SSE", "must be one of AES256, aws:kms"),
        ({"S3_SSE_KMS_KEY_ID": "k"}, "S3_SSE_KMS_KEY_ID", "S3_SSE is not aws:kms"),
        (
            {"S3_SSE": "AES256", "S3_SSE_KMS_KEY_ID": "k"},
            "S3_SSE_KMS_KEY_ID",
            "S3_SSE is not aws:kms",
        ),
        (
            {"S3_SSE": "aws:kms", "S3_SSE_KMS_KEY_ID": "alias/a b"},
            "S3_SSE_KMS_KEY_ID",
            "must be a KMS key",
        ),
        ({"S3_EXPECTED_BUCKET_OWNER": "12345678901"}, "S3_EXPECTED_BUCKET_OWNER", "12-digit"),
        ({"S3_EXPECTED_BUCKET_OWNER": "12345678901a"}, "S3_EXPECTED_BUCKET_OWNER", "12-digit"),
    ],
)
def test_bad_settings_are_configuration_errors(
    settings: dict[str, str], variable: str, problem: str
) -> None:
    for load in (
        lambda env: load_stream_config({**STREAM_ENV, **env}),
        lambda env: load_batch_config(
            "computation",
            {"OUTPUT_BUCKET": "b-bucket", "OUTPUT_PREFIX": "p/", **env},
            needs_input=False,
        ),
    ):
        with pytest.raises(ConfigError) as caught:
            load(settings)
        assert caught.value.variable == variable
        assert problem in caught.value.problem


def test_good_settings_reach_the_public_configuration() -> None:
    env = {"S3_SSE": "aws:kms", "S3_SSE_KMS_KEY_ID": KMS_KEY, "S3_EXPECTED_BUCKET_OWNER": OWNER}
    config = load_stream_config({**STREAM_ENV, **env})
    assert config.s3 == S3Security("aws:kms", KMS_KEY, OWNER)
    public = config.public_dict()
    assert public["s3_sse"] == "aws:kms"
    assert public["s3_sse_kms_key_id"] == KMS_KEY
    assert public["s3_expected_bucket_owner"] == OWNER
    assert load_stream_config(STREAM_ENV).s3 == S3Security()
    assert s3_security({"S3_SSE": "AES256"}).encryption_args() == {"ServerSideEncryption": "AES256"}
    assert S3Security().owner_args() == {} and S3Security().encryption_args() == {}


def test_the_cli_exits_2_naming_the_variable(tmp_path: Any) -> None:
    env = base_env(**STREAM_ENV, S3_SSE="AES256", S3_SSE_KMS_KEY_ID="alias/x")
    done = run_stream(env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "feedvault stream: configuration error: S3_SSE_KMS_KEY_ID: is set but S3_SSE is not aws:kms"
    ]
    assert done.stdout == ""


# -- the requests on the wire ---------------------------------------------------------------------


def creates_object(request: fp.RecordedRequest) -> bool:
    """PutObject (a PUT of a key, not a part or a bucket) or CreateMultipartUpload."""
    is_key = request.path.strip("/").count("/") >= 1
    if request.method == "PUT":
        return is_key and "partNumber" not in request.query
    return request.method == "POST" and "uploads" in request.query


def check_requests(
    requests: Iterable[fp.RecordedRequest], *, sse: str | None, kms: str | None, owner: str
) -> dict[str, int]:
    """Every request names ``owner``; object creations carry ``sse``/``kms``, nothing else
    carries encryption headers. Returns counts per kind of request seen."""
    kinds: dict[str, int] = {}
    for request in requests:
        assert request.headers.get(OWNER_HEADER) == owner, request
        if creates_object(request):
            kind = "create"
            assert request.headers.get(SSE_HEADER) == sse, request
            assert request.headers.get(KMS_HEADER) == kms, request
        else:
            kind = request.method + ("-part" if "partNumber" in request.query else "")
            kind += "-complete" if request.method == "POST" else ""
            assert SSE_HEADER not in request.headers, request
            assert KMS_HEADER not in request.headers, request
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


async def test_every_writer_request_carries_the_settings(
    proxy: fp.FaultProxy, bucket: str, aws_env: dict[str, str], s3_server: S3Server
) -> None:
    security = S3Security("aws:kms", KMS_KEY, OWNER)
    async with S3Writer.open(
        bucket,
        endpoint_url=proxy.url,
        multipart_threshold=5 * MiB,
        part_size=5 * MiB,
        security=security,
    ) as s3:
        await s3.check()
        await s3.put("small", b"x" * 100)
        await s3.put("large", b"y" * (11 * MiB))  # CreateMultipartUpload, 3 parts, Complete
        assert await s3.get("small") == b"x" * 100
        assert (await s3.head("large")).size == 11 * MiB
        assert await s3.checksum("small") is not None
        assert [o.key for o in await s3.list("")] == ["large", "small"]
        await s3.delete("small")
    # A multipart upload whose second part fails (no SDK retry here) is aborted.
    async with S3Writer.open(
        bucket,
        endpoint_url=proxy.url,
        multipart_threshold=5 * MiB,
        part_size=5 * MiB,
        max_attempts=0,  # botocore counts retries: no retry
        security=security,
    ) as s3:
        proxy.schedule(fp.upload_part(2), fp.ERROR500)
        with pytest.raises(StorageError):
            await s3.put("aborted", b"z" * (11 * MiB))
    kinds = check_requests(proxy.requests, sse="aws:kms", kms=KMS_KEY, owner=OWNER)
    assert kinds["create"] == 3  # PutObject small, two CreateMultipartUpload
    assert kinds["PUT-part"] >= 4 and kinds["POST-complete"] == 1
    assert kinds["DELETE"] == 2  # DeleteObject and AbortMultipartUpload
    assert {"GET", "HEAD"} <= kinds.keys()
    head = s3_server.client().head_object(Bucket=bucket, Key="large")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == KMS_KEY


async def test_the_environment_is_the_default(
    proxy: fp.FaultProxy, bucket: str, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_SSE", "AES256")
    monkeypatch.setenv("S3_EXPECTED_BUCKET_OWNER", OWNER)
    async with S3Writer.open(bucket, endpoint_url=proxy.url) as s3:
        await s3.put("k", b"v")
        assert await s3.get("k") == b"v"
    kinds = check_requests(proxy.requests, sse="AES256", kms=None, owner=OWNER)
    assert kinds == {"create": 1, "GET": 1}, kinds  # the PutObject and the GetObject
    monkeypatch.setenv("S3_EXPECTED_BUCKET_OWNER", "nope")
    with pytest.raises(ConfigError, match="S3_EXPECTED_BUCKET_OWNER"):
        async with S3Writer.open(bucket, endpoint_url=proxy.url):
            pass


def test_a_stream_run_and_verify_send_them_on_every_request(
    proxy: fp.FaultProxy, s3_server: S3Server, bucket: str, tmp_path: Any
) -> None:
    settings = {"S3_SSE": "AES256", "S3_EXPECTED_BUCKET_OWNER": OWNER}
    with fake_exchange(tmp_path, symbols="BTCUSDT,ETHUSDT", rate="300") as fx:
        env = fake_stream_env(proxy.env(), fx.url, bucket, "sec/", "3", **settings)
        env["WINDOW_SECONDS"] = "1"
        done = run_stream(env)
    assert done.returncode == 0, done.stderr[-2000:]
    verified = run_verify({**proxy.env(), **settings}, bucket, "sec/")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    kinds = check_requests(proxy.requests, sse="AES256", kms=None, owner=OWNER)
    assert kinds["create"] >= 3 and kinds["GET"] >= 3, kinds
    client = s3_server.client()
    for key in s3_server.keys(bucket, "sec/"):
        assert client.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "AES256"


def test_a_batch_job_sends_them_on_every_request(
    proxy: fp.FaultProxy, s3_server: S3Server, bucket: str
) -> None:
    settings = {
        "S3_SSE": "aws:kms",
        "S3_SSE_KMS_KEY_ID": KMS_KEY,
        "S3_EXPECTED_BUCKET_OWNER": OWNER,
    }
    env = base_env(
        **proxy.env(),
        **settings,
        OUTPUT_BUCKET=bucket,
        OUTPUT_PREFIX="batch/",
        COMPUTATION_PATHS="1000",
        COMPUTATION_HORIZONS="1",
    )
    done = run_feedvault(env, "batch", "computation", timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    kinds = check_requests(proxy.requests, sse="aws:kms", kms=KMS_KEY, owner=OWNER)
    assert kinds["create"] >= 3, kinds  # two outputs and the manifest
    manifest_keys = s3_server.keys(bucket, "batch/_manifests/")
    body = s3_server.client().get_object(Bucket=bucket, Key=manifest_keys[0])["Body"].read()
    assert b'"s3_sse_kms_key_id": "' + KMS_KEY.encode() in body
