"""The S3 :class:`~sinks.writer.ObjectWriter` on aioboto3.

Open ONE :class:`S3Writer` per process with :meth:`S3Writer.open` and share it: it holds one
aioboto3 session and one client (one connection pool of ``max_pool_connections``).

- Endpoint: ``endpoint_url`` if given, else botocore's own resolution, which honours
  ``AWS_ENDPOINT_URL_S3`` (and ``AWS_ENDPOINT_URL``) natively in the pinned aiobotocore.
- Retries: botocore ``standard`` mode, ``max_attempts`` 5 (throttling and 5xx included),
  connect timeout 5 s, read timeout 10 s (botocore's: the wait for the response once the
  request is sent).
- Deadlines: every S3 call (one request and the SDK's retries of it) must finish within
  :func:`call_deadline`: ``deadline_floor_seconds`` (20 s) plus the bytes it sends or receives
  at ``min_bytes_per_second`` (1 MiB/s), so a 16 MiB PUT gets 36 s and an 8 MiB part 28 s. A
  call past its deadline is abandoned (its connection closed) and raises
  :class:`~engine.errors.StorageError`: an endpoint that accepts connections and never answers
  (or stops reading the body, which no read timeout covers) fails like one that refuses, and
  the sink's retry and spill take over (docs: operations.md#spill-and-recovery). A multipart
  put gives each part its own deadline (by the part's size), the create the floor and the
  completion the whole object's; a ``get`` gives the response the floor and then reading the
  body its deadline by ``ContentLength``; ``list`` gives each page the floor.
- Payload signing is off by default (``sign_payload``): botocore would otherwise hash every
  body again on the event loop for SigV4; the SHA-256 checksum header (over TLS) already
  protects the body end to end.
- Integrity: every PUT and every part carries ``ChecksumSHA256`` (with ``ChecksumAlgorithm``
  ``SHA256``, which S3 and moto need to store it); S3 rejects a body that does not match. A
  multipart object's S3 checksum is the composite ``<sha256 of part sums>-<parts>``; the
  :class:`~sinks.writer.StoredObject` always carries the hex SHA-256 of the whole body.
- Bodies above ``multipart_threshold`` go up as a multipart upload of ``part_size`` parts (S3
  requires >= 5 MiB for all parts but the last); on any failure or cancellation the upload is
  aborted (best effort: a lifecycle rule should also expire incomplete uploads).
- Credentials: botocore's own chain (environment, shared credentials file, profile, container,
  instance metadata). The values it resolved are registered with the redactor when the client
  opens and before each request is sent, so rotated ones are too (:mod:`engine.redact`).
- Security (:mod:`sinks.s3security`): ``S3_SSE``/``S3_SSE_KMS_KEY_ID`` go on ``PutObject``
  and ``CreateMultipartUpload`` (not on the parts or the completion, which S3 refuses), and
  ``S3_EXPECTED_BUCKET_OWNER`` on every request; read from the process environment when
  ``security`` is not given, so every writer of the process applies them.
- Errors: ``NoSuchKey``/404 -> :class:`~engine.errors.ObjectNotFound`; everything else,
  including a missing bucket, connection failures and timeouts ->
  :class:`~engine.errors.StorageError` with the operation, key and S3 error code (past a
  deadline: the deadline, and what the SDK's last attempt got, e.g. ``SlowDown``).

``put`` is durable when it returns and idempotent (same key and body -> one object). A cancelled
``put`` may or may not have stored the object.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import Any, Final, TypedDict, TypeVar

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from engine.errors import AlreadyExists, ObjectNotFound, StorageError, StorageRefused
from engine.logs import get_logger, log_event
from engine.redact import add_known_secrets, redact
from sinks.s3security import S3Security, s3_security
from sinks.writer import (
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    ListedObject,
    MiB,
    StoredObject,
)

log = get_logger("s3")

ABORT_SECONDS: Final = 3.0
"""Longest wait for AbortMultipartUpload after a failed or cancelled multipart put."""
DEADLINE_FLOOR_SECONDS: Final = 20.0
"""The deadline of an S3 call that moves no bytes; see :func:`call_deadline`."""
MIN_BYTES_PER_SECOND: Final = 1 * MiB
"""The slowest transfer an S3 call is allowed before it counts as hung; see
:func:`call_deadline`. Conservative: S3 from the same region moves 10-100 times as much per
connection."""

#: Bodies at least this large are hashed in a worker thread (hashlib releases the GIL).
_THREAD_HASH_BYTES: Final = 1 * MiB
_NOT_FOUND: Final = frozenset({"NoSuchKey", "404", "NotFound"})
_REFUSALS: Final = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "InvalidBucketName",
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "403",
        "Forbidden",
    }
)
"""S3 error codes no retry fixes (:class:`~engine.errors.StorageRefused`), besides
``NoSuchBucket``."""
_PRECONDITION_FAILED: Final = frozenset({"PreconditionFailed", "412"})
_T = TypeVar("_T")
_TRANSPORT_ERRORS: Final = (BotoCoreError, aiohttp.ClientError, OSError, asyncio.TimeoutError)


async def _redact_resolved_credentials(session: Any, client: Any) -> None:
    """Register the credentials botocore resolved for ``client`` with the redactor
    (:func:`engine.redact.add_known_secrets`), wherever they came from: environment, shared
    credentials file, container or instance metadata. Again before every request is sent, so
    refreshed credentials are known from the first request that uses them (the signer has just
    refreshed them; reading them again does not refresh). :class:`StorageError` when they cannot
    be resolved."""
    credentials = await session.get_credentials()  # the object the client signs with
    if credentials is None:
        return  # nothing to redact; every request fails with NoCredentialsError

    async def register(**_: Any) -> None:
        frozen = await credentials.get_frozen_credentials()
        add_known_secrets((frozen.access_key, frozen.secret_key, frozen.token))

    try:
        await register()
    except _TRANSPORT_ERRORS as exc:
        raise StorageError(
            redact(f"cannot resolve the S3 credentials: {type(exc).__name__}: {exc}")
        ) from exc
    client.meta.events.register("before-send.s3", register)


_LAST_ANSWER: ContextVar[str | None] = ContextVar("feedvault_s3_last_answer", default=None)
"""What the last attempt of the current task's S3 call got (an S3 error code, an HTTP status or
a transport exception's name), for the message of a call ended by its deadline."""


def _note_answer(
    response: tuple[Any, dict[str, Any]] | None = None,
    caught_exception: BaseException | None = None,
    **_: Any,
) -> None:
    """A ``needs-retry`` handler (the SDK emits it after every attempt, in the calling task):
    remember the attempt's outcome in :data:`_LAST_ANSWER`. Returns None: it never decides a
    retry."""
    if caught_exception is not None:
        _LAST_ANSWER.set(type(caught_exception).__name__)
    elif response is not None:
        http, parsed = response
        code = parsed.get("Error", {}).get("Code") if isinstance(parsed, dict) else None
        _LAST_ANSWER.set(str(code) if code else f"HTTP {http.status_code}")


def call_deadline(
    nbytes: int,
    floor_seconds: float = DEADLINE_FLOOR_SECONDS,
    min_bytes_per_second: float = MIN_BYTES_PER_SECOND,
) -> float:
    """Seconds an S3 call moving ``nbytes`` (body sent or received) may take in all, the SDK's
    own retries included: ``floor_seconds + nbytes / min_bytes_per_second``."""
    return floor_seconds + nbytes / min_bytes_per_second


class S3Options(TypedDict, total=False):
    """Keyword options of :meth:`S3Writer.open` (also accepted by ``open_writer``)."""

    endpoint_url: str | None
    region: str | None
    multipart_threshold: int
    part_size: int
    max_pool_connections: int
    max_attempts: int
    connect_timeout: float
    read_timeout: float
    deadline_floor_seconds: float
    min_bytes_per_second: float
    sign_payload: bool
    security: S3Security | None


class S3Writer:
    """Objects in one S3 bucket. Create with :meth:`S3Writer.open`."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        security: S3Security | None = None,
        deadline_floor_seconds: float = DEADLINE_FLOOR_SECONDS,
        min_bytes_per_second: float = MIN_BYTES_PER_SECOND,
    ) -> None:
        if deadline_floor_seconds <= 0 or min_bytes_per_second <= 0:
            raise ValueError("deadline_floor_seconds and min_bytes_per_second must be positive")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        if multipart_threshold < part_size:
            raise ValueError("multipart_threshold must be at least part_size")
        self._client = client
        self.bucket = bucket
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.security = security or S3Security()
        self._owner = self.security.owner_args()
        self._encryption = self.security.encryption_args()
        self.deadline_floor_seconds = deadline_floor_seconds
        self.min_bytes_per_second = min_bytes_per_second

    def __repr__(self) -> str:
        return f"S3Writer(bucket={self.bucket!r})"

    @classmethod
    def open(
        cls,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        max_pool_connections: int = 16,
        max_attempts: int = 5,
        connect_timeout: float = 5,
        read_timeout: float = 10,
        deadline_floor_seconds: float = DEADLINE_FLOOR_SECONDS,
        min_bytes_per_second: float = MIN_BYTES_PER_SECOND,
        sign_payload: bool = False,
        security: S3Security | None = None,
    ) -> AbstractAsyncContextManager[S3Writer]:
        """An async context manager yielding a writer on its own session and client.

        ``security`` None: read ``S3_SSE``, ``S3_SSE_KMS_KEY_ID`` and
        ``S3_EXPECTED_BUCKET_OWNER`` from the environment (a bad value raises
        :class:`~engine.errors.ConfigError`, before any client is created).
        ``deadline_floor_seconds`` and ``min_bytes_per_second``: every call's deadline
        (:func:`call_deadline`; the defaults suit S3, no setting exposes them)."""
        if security is None:
            security = s3_security(os.environ)
        config = Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            s3={"payload_signing_enabled": sign_payload},
        )

        @asynccontextmanager
        async def opened() -> AsyncIterator[S3Writer]:
            session = aioboto3.Session()
            kwargs: dict[str, Any] = {"config": config}
            if endpoint_url:
                kwargs["endpoint_url"] = endpoint_url
            if region:
                kwargs["region_name"] = region
            try:
                client_cm = session.client("s3", **kwargs)
                client = await client_cm.__aenter__()
            except (BotoCoreError, ClientError, ValueError) as exc:
                raise StorageError(redact(f"cannot create an S3 client: {exc}")) from exc
            try:
                await _redact_resolved_credentials(session, client)
                client.meta.events.register("needs-retry.s3", _note_answer)
                yield cls(
                    client,
                    bucket,
                    multipart_threshold=multipart_threshold,
                    part_size=part_size,
                    security=security,
                    deadline_floor_seconds=deadline_floor_seconds,
                    min_bytes_per_second=min_bytes_per_second,
                )
            finally:
                await client_cm.__aexit__(None, None, None)

        return opened()

    @property
    def endpoint_url(self) -> str:
        """The endpoint the client talks to (after env/config resolution)."""
        url: str = self._client.meta.endpoint_url
        return url

    def deadline(self, nbytes: int = 0) -> float:
        """This writer's :func:`call_deadline` for a call moving ``nbytes``."""
        return call_deadline(nbytes, self.deadline_floor_seconds, self.min_bytes_per_second)

    async def _call(self, operation: str, key: str, call: Awaitable[_T], nbytes: int = 0) -> _T:
        """Await ``call`` (an SDK call) within :meth:`deadline` of ``nbytes``, mapping every
        failure to :class:`StorageError` (past the deadline too)."""
        seconds = self.deadline(nbytes)
        deadline = asyncio.timeout(seconds)
        _LAST_ANSWER.set(None)
        try:
            async with deadline:
                return await call
        except ClientError as exc:
            raise self._map_error(operation, key, exc) from exc
        except NoCredentialsError as exc:
            raise StorageRefused(
                f"S3 {operation} s3://{self.bucket}/{key}: no AWS credentials found "
                "(environment, shared files, container or instance role)",
                "NoCredentials",
            ) from exc
        except _TRANSPORT_ERRORS as exc:
            if deadline.expired():
                moved = f" for {nbytes} bytes" if nbytes else ""
                last = _LAST_ANSWER.get()
                before = f" (the last attempt before it: {last})" if last else ""
                raise StorageError(
                    f"S3 {operation} s3://{self.bucket}/{key} failed: no answer within its "
                    f"deadline of {seconds:g} s{moved}{before}"
                ) from exc
            raise StorageError(
                redact(
                    f"S3 {operation} s3://{self.bucket}/{key} failed: {type(exc).__name__}: {exc}"
                )
            ) from exc

    def _map_error(self, operation: str, key: str, exc: ClientError) -> StorageError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", "")) or str(exc)
        where = f"s3://{self.bucket}/{key}"
        if code == "NoSuchBucket":
            return StorageRefused(
                f"bucket {self.bucket!r} does not exist (NoSuchBucket; S3 {operation} {where})",
                code,
            )
        if code in _NOT_FOUND:
            return ObjectNotFound(f"S3 {operation} {where}: no such object")
        if code in _PRECONDITION_FAILED:
            return AlreadyExists(f"S3 {operation} {where}: an object already exists there")
        if code in _REFUSALS:
            return StorageRefused(
                redact(f"S3 {operation} {where} refused: {message} ({code})"), code
            )
        return StorageError(redact(f"S3 {operation} {where} failed: {code}: {message}"))

    def _request(self, **params: Any) -> dict[str, Any]:
        """A request's parameters: the bucket, ``params``, and the expected bucket owner, which
        every request carries (see docs/security.md)."""
        return {"Bucket": self.bucket, **params, **self._owner}

    async def check(self) -> None:
        """Fail early (:class:`StorageError`) if the bucket is missing or not accessible.

        Needs ``s3:ListBucket``; a write-only role should skip it.
        """
        await self._call("HeadBucket", "", self._client.head_bucket(**self._request()))

    async def put(self, key: str, body: bytes) -> StoredObject:
        if len(body) >= _THREAD_HASH_BYTES:
            digest = await asyncio.to_thread(_sha256, body)
        else:
            digest = _sha256(body)
        if len(body) > self.multipart_threshold:
            await self._put_multipart(key, body)
        else:
            await self._put_object(key, body, digest)
        return StoredObject(key=key, bytes=len(body), sha256=digest.hex())

    async def create(self, key: str, body: bytes) -> StoredObject:
        """One ``PutObject`` with ``If-None-Match: *``: :class:`AlreadyExists` if ``key`` has
        an object. Meant for small bodies (a manifest): never multipart."""
        digest = _sha256(body)
        await self._put_object(key, body, digest, IfNoneMatch="*")
        return StoredObject(key=key, bytes=len(body), sha256=digest.hex())

    async def _put_object(self, key: str, body: bytes, digest: bytes, **extra: str) -> None:
        """One ``PutObject`` with the body's SHA-256, the encryption and owner settings, and
        ``extra`` request parameters."""
        await self._call(
            "PutObject",
            key,
            self._client.put_object(
                **self._request(
                    Key=key,
                    Body=body,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=base64.b64encode(digest).decode("ascii"),
                    **extra,
                    **self._encryption,
                ),
            ),
            nbytes=len(body),
        )

    async def _put_multipart(self, key: str, body: bytes) -> None:
        created = await self._call(
            "CreateMultipartUpload",
            key,
            self._client.create_multipart_upload(
                **self._request(
                    Key=key,
                    ChecksumAlgorithm="SHA256",
                    **self._encryption,
                ),
            ),
        )
        upload_id: str = created["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            view = memoryview(body)
            for number, offset in enumerate(range(0, len(body), self.part_size), start=1):
                chunk = bytes(view[offset : offset + self.part_size])
                checksum = base64.b64encode(await asyncio.to_thread(_sha256, chunk)).decode()
                response = await self._call(
                    "UploadPart",
                    key,
                    self._client.upload_part(
                        **self._request(
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=number,
                            Body=chunk,
                            ChecksumAlgorithm="SHA256",
                            ChecksumSHA256=checksum,
                        ),
                    ),
                    nbytes=len(chunk),
                )
                parts.append(
                    {"ETag": response["ETag"], "PartNumber": number, "ChecksumSHA256": checksum}
                )
            await self._call(
                "CompleteMultipartUpload",
                key,
                self._client.complete_multipart_upload(
                    **self._request(
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    ),
                ),
                nbytes=len(body),  # S3 takes longer to assemble a larger object
            )
        except BaseException:
            await self._abort_multipart(key, upload_id)
            raise

    async def _abort_multipart(self, key: str, upload_id: str) -> None:
        """Best effort, and bounded by :data:`ABORT_SECONDS`: it runs while a failed or
        cancelled put unwinds (an abort of the stop sequence among them), which must not wait
        on the SDK's full retry policy against an S3 that is away. An upload left behind holds
        no object and is removed by the bucket's ``AbortIncompleteMultipartUpload`` lifecycle
        rule."""
        try:
            async with asyncio.timeout(ABORT_SECONDS):
                await self._call(
                    "AbortMultipartUpload",
                    key,
                    self._client.abort_multipart_upload(
                        **self._request(Key=key, UploadId=upload_id)
                    ),
                )
        except (StorageError, TimeoutError) as exc:
            log_event(
                log,
                logging.WARNING,
                "multipart_abort_failed",
                key=key,
                upload_id=upload_id,
                error=repr(exc),
            )

    async def get(self, key: str) -> bytes:
        response = await self._call(
            "GetObject", key, self._client.get_object(**self._request(Key=key))
        )
        length = int(response.get("ContentLength", 0))
        async with response["Body"] as stream:
            data: bytes = await self._call("GetObject", key, stream.read(), nbytes=length)
        return data

    async def head(self, key: str) -> ListedObject:
        """Size of ``key``; :class:`ObjectNotFound` if missing."""
        response = await self._call(
            "HeadObject", key, self._client.head_object(**self._request(Key=key))
        )
        return ListedObject(key, int(response["ContentLength"]))

    async def checksum(self, key: str) -> str | None:
        """The base64 ``ChecksumSHA256`` S3 stored for ``key`` (composite ``...-N`` for a
        multipart object), or ``None`` if it has none."""
        response = await self._call(
            "HeadObject",
            key,
            self._client.head_object(**self._request(Key=key, ChecksumMode="ENABLED")),
        )
        value: str | None = response.get("ChecksumSHA256")
        return value

    async def list(self, prefix: str) -> list[ListedObject]:
        found: list[ListedObject] = []
        paginator = self._client.get_paginator("list_objects_v2")
        pages = aiter(paginator.paginate(**self._request(Prefix=prefix)))
        while (page := await self._call("ListObjectsV2", prefix, anext(pages, None))) is not None:
            found.extend(
                ListedObject(obj["Key"], int(obj["Size"])) for obj in page.get("Contents", [])
            )
        found.sort(key=lambda obj: obj.key)
        return found

    async def delete(self, key: str) -> None:
        await self._call(
            "DeleteObject",
            key,
            self._client.delete_object(**self._request(Key=key)),
        )

    async def aclose(self) -> None:
        """No-op: the client is closed when the :meth:`open` context exits."""
        return None


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
