"""The object-store interface every sink writes through, and destination URLs.

An :class:`ObjectWriter` stores whole objects under keys. Implementations: ``sinks.s3.S3Writer``
(aioboto3), ``sinks.local.FileWriter`` (a directory) and ``sinks.memory.MemoryWriter`` (tests).
All of them raise only :mod:`engine.errors` types: :class:`~engine.errors.ObjectNotFound` for a
missing key, :class:`~engine.errors.StorageError` for every other failure.

Destinations (``--out``): ``s3://bucket/prefix/`` or ``file:///directory/``. For ``file://`` the
whole path is the writer's root directory and the key prefix is empty.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol, Unpack
from urllib.parse import unquote, urlsplit

from engine.errors import ConfigError
from engine.settings import Env
from sinks.keys import validate_prefix

if TYPE_CHECKING:
    from sinks.s3 import S3Options

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

MiB: Final = 1024 * 1024
MIN_PART_SIZE: Final = 5 * MiB
"""S3's smallest multipart part (but the last)."""
DEFAULT_MULTIPART_THRESHOLD: Final = 16 * MiB
"""Bodies at least this large go up as multipart uploads."""
DEFAULT_PART_SIZE: Final = 8 * MiB


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A durable object: its key, size in bytes and hex SHA-256 of its body."""

    key: str
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ListedObject:
    """An object seen in a listing."""

    key: str
    size: int


class ObjectWriter(Protocol):
    """An object store. Methods are coroutines; none of them may be called after ``aclose``.

    ``put`` is durable when it returns and idempotent: putting the same key and body twice
    leaves one object. A ``put`` cancelled midway may or may not have stored the object; a
    retry with the same key and body is always safe.
    """

    async def put(self, key: str, body: bytes) -> StoredObject:
        """Store ``body`` under ``key``; return once durable."""
        ...

    async def create(self, key: str, body: bytes) -> StoredObject:
        """Store ``body`` under ``key`` only if no object is there (S3 ``If-None-Match: *``);
        :class:`~engine.errors.AlreadyExists` if one is. Durable when it returns."""
        ...

    async def get(self, key: str) -> bytes:
        """The body under ``key``; :class:`~engine.errors.ObjectNotFound` if none."""
        ...

    async def list(self, prefix: str) -> list[ListedObject]:
        """Every object whose key starts with ``prefix``, sorted by key."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def sha256_hex(body: bytes) -> str:
    """Hex SHA-256 of ``body`` (the checksum recorded in the manifest)."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class Destination:
    """A parsed ``--out`` URL. ``bucket`` is set for s3, ``root`` for file; ``prefix`` ends
    with ``/`` or is empty."""

    scheme: Literal["s3", "file"]
    prefix: str
    _: KW_ONLY
    bucket: str | None = None
    root: Path | None = None
    variable: str = field(default="--out", compare=False)
    """The setting the destination came from (``--out``, ``S3_BUCKET``, ``OUTPUT_BUCKET``):
    what an error about the destination names."""

    def __post_init__(self) -> None:
        if self.scheme == "s3" and not self.bucket:
            raise ValueError("an s3 destination needs a bucket")
        if self.scheme == "file" and self.root is None:
            raise ValueError("a file destination needs a root directory")

    @property
    def url(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}"
        return f"file://{self.root}/"


def parse_destination(url: str, variable: str = "--out") -> Destination:
    """Parse ``s3://bucket/prefix/`` or ``file:///dir/``; :class:`ConfigError` if invalid."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigError(variable, f"{url!r} must not have a query or fragment")
    if parts.scheme == "s3":
        bucket = parts.netloc
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ConfigError(variable, f"{url!r} does not name a valid S3 bucket")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        prefix = validate_prefix(unquote(path), variable)
        return Destination("s3", prefix, bucket=bucket, variable=variable)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                variable, f"{url!r}: a file URL needs an absolute path (file:///dir/)"
            )
        path = unquote(parts.path)
        if not path.startswith("/") or "\x00" in path:
            raise ConfigError(
                variable, f"{url!r}: a file URL needs an absolute path (file:///dir/)"
            )
        return Destination("file", "", root=Path(path), variable=variable)
    raise ConfigError(variable, f"{url!r} must start with s3:// or file://")


@asynccontextmanager
async def open_writer(
    destination: Destination, **s3_options: Unpack[S3Options]
) -> AsyncIterator[ObjectWriter]:
    """Open the writer for ``destination``; closed on exit. ``s3_options`` go to
    ``S3Writer.open`` (endpoint_url, region, multipart_threshold, ...)."""
    if destination.bucket is not None:
        from sinks.s3 import S3Writer

        async with S3Writer.open(destination.bucket, **s3_options) as s3:
            yield s3
        return
    from sinks.local import FileWriter

    if destination.root is None:
        raise ValueError(f"destination {destination!r} has neither a bucket nor a root")
    writer = FileWriter(destination.root)
    try:
        yield writer
    finally:
        await writer.aclose()


_BUCKET_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def s3_destination(env: Env, bucket_var: str, prefix_var: str) -> Destination:
    """Destination from a bucket variable and a prefix variable, both required: there is no
    silent default for a location."""
    bucket = env.required(bucket_var)
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ConfigError(bucket_var, f"{bucket!r} is not a valid S3 bucket name")
    prefix = validate_prefix(env.required(prefix_var), prefix_var)
    return Destination("s3", prefix, bucket=bucket, variable=bucket_var)
