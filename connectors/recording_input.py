"""Where a replay reads its recording from (``feedvault replay FILE...``).

See docs/recording-and-replay.md#replay.

Each ``FILE`` is one of

- a local path or ``file:///path``: a file, or a directory whose files (recursively) are read in
  the sorted order of their relative paths;
- ``s3://bucket/key``: that object, or, when no object has exactly that key, every object whose
  key starts with it (a prefix, e.g. the ``raw/`` objects of a ``--capture`` run), in key order.

Each file or object may be plain, gzip or zstd (told by its magic bytes). The inputs are read in
the order given, file after file, line after line.

:func:`open_recording` resolves every input *before* anything is read or written: a missing
file, an empty prefix or an S3 failure while listing raises :class:`~engine.errors.ConfigError`
(variable ``FILE``; the CLI exits 2). A bad line found while reading raises
:class:`~engine.errors.RecordingError` naming ``input:line``; an S3 failure while reading an
object raises :class:`~engine.errors.StorageError`.

Memory: a local file is streamed; an S3 object is fetched whole (a captured raw object is at most
``WINDOW_MAX_BYTES`` compressed) and decompressed as a stream. Reading a local file happens on
the event loop in chunks of :data:`CHUNK_FRAMES` lines, so one chunk bounds the time the loop is
held.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Final, Protocol
from urllib.parse import unquote, urlsplit

import zstandard

from connectors.recording import GZIP_MAGIC, ZSTD_MAGIC, RecordedFrame, iter_records, parse_line
from engine.errors import ConfigError, RecordingError, StorageError

CHUNK_FRAMES: Final = 1024
VARIABLE: Final = "FILE"


class ListedObject(Protocol):
    """One object of a listing: its key."""

    @property
    def key(self) -> str: ...


class BucketReader(Protocol):
    """What a replay needs of an object store (one bucket): list a prefix, get an object.

    The application hands one in (the S3 writer of the storage layer satisfies it); this
    module never imports the storage layer. Failures raise
    :class:`~engine.errors.StorageError`."""

    async def list(self, prefix: str) -> Sequence[ListedObject]: ...

    async def get(self, key: str) -> bytes: ...


OpenBucket = Callable[[str], AbstractAsyncContextManager[BucketReader]]
"""Opens a :class:`BucketReader` for a bucket name, closed when its context exits."""


@dataclass(frozen=True, slots=True)
class InputObject:
    """One file or S3 object to read: ``path`` for a local file, ``bucket``/``key`` for S3."""

    name: str
    path: Path | None = None
    bucket: str | None = None
    key: str | None = None


def _local(spec: str, text: str) -> list[InputObject]:
    path = Path(text)
    if path.is_file():
        return [InputObject(str(path), path=path)]
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).parts
        )
        if not files:
            raise ConfigError(VARIABLE, f"{spec}: the directory holds no files")
        return [InputObject(str(p), path=p) for p in files]
    raise ConfigError(VARIABLE, f"{spec}: no such file or directory")


async def _s3(spec: str, bucket: str, key: str, writer: BucketReader) -> list[InputObject]:
    try:
        listed = await writer.list(key)
    except StorageError as exc:
        raise ConfigError(VARIABLE, f"{spec}: cannot list: {exc}") from None
    keys = [obj.key for obj in listed]
    if key in keys:
        keys = [key]
    if not keys:
        raise ConfigError(VARIABLE, f"{spec}: no object has this key or prefix")
    return [InputObject(f"s3://{bucket}/{k}", bucket=bucket, key=k) for k in keys]


def _body_stream(body: bytes) -> IO[bytes]:
    raw = io.BytesIO(body)
    if body[:2] == GZIP_MAGIC:
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"))
    if body[:4] == ZSTD_MAGIC:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return io.BufferedReader(reader)
    return raw


def body_frames(body: bytes, name: str) -> Iterator[RecordedFrame]:
    """The frames of one object body (plain, gzip or zstd), streamed; blank lines skipped.
    Raises :class:`RecordingError` ``"name:line: problem"``."""
    number = 0
    try:
        with _body_stream(body) as stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    yield parse_line(line)
                except RecordingError as exc:
                    raise RecordingError(f"{name}:{number}: {exc}") from exc
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        raise RecordingError(f"{name}:{number + 1}: cannot decompress: {exc}") from exc


class Recording:
    """The resolved inputs of a replay; :meth:`chunks` reads them. Made by
    :func:`open_recording`, valid inside its ``async with``."""

    def __init__(self, inputs: Sequence[InputObject], writers: dict[str, BucketReader]) -> None:
        self.inputs = list(inputs)
        self._writers = writers

    async def chunks(self, size: int = CHUNK_FRAMES) -> AsyncGenerator[list[RecordedFrame], None]:
        """Every frame of every input, in order, in lists of at most ``size``."""
        for item in self.inputs:
            if item.path is not None:
                frames: Iterator[RecordedFrame] = iter_records([item.path])
            else:
                assert item.bucket is not None and item.key is not None
                body = await self._writers[item.bucket].get(item.key)
                frames = body_frames(body, item.name)
            while chunk := list(islice(frames, size)):
                yield chunk


@asynccontextmanager
async def open_recording(
    specs: Sequence[str], open_bucket: OpenBucket | None = None
) -> AsyncIterator[Recording]:
    """Resolve ``specs`` (see the module docstring) and yield the :class:`Recording`; the
    bucket readers ``open_bucket`` opens (one per bucket) are closed on exit. Without
    ``open_bucket`` an ``s3://`` input is a :class:`ConfigError`.
    Raises :class:`ConfigError` (variable ``FILE``) for an input that does not exist."""
    async with AsyncExitStack() as stack:
        writers: dict[str, BucketReader] = {}
        inputs: list[InputObject] = []
        for spec in specs:
            parts = urlsplit(spec)
            if parts.scheme == "s3":
                bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
                if not bucket:
                    raise ConfigError(VARIABLE, f"{spec}: no bucket")
                if open_bucket is None:
                    raise ConfigError(VARIABLE, f"{spec}: s3:// inputs are not available here")
                if bucket not in writers:
                    writers[bucket] = await stack.enter_async_context(open_bucket(bucket))
                inputs += await _s3(spec, bucket, key, writers[bucket])
            elif parts.scheme == "file":
                inputs += _local(spec, unquote(parts.path))
            elif parts.scheme == "":
                inputs += _local(spec, spec)
            else:
                raise ConfigError(VARIABLE, f"{spec}: expected a path, file:// or s3:// URL")
        yield Recording(inputs, writers)
