"""Object body formats: NDJSON compressed with gzip or zstd, or Parquet (``FORMAT``, docs:
data-formats.md).

An :class:`Encoder` builds one object body incrementally: each :meth:`Encoder.write` encodes a
batch of records as NDJSON (``orjson``, exactly the record's field names) and compresses it in
one call, so only compressed bytes stay in memory. Per-record work is one ``orjson.dumps``
appended to a bytearray; compression and size accounting are per batch.

``ndjson.gz`` is a single gzip member (``zlib`` wbits 31), default level 1 (fast, ~3x the
throughput of level 6); ``ndjson.zst`` is one zstd frame, default level 1. ``parquet`` is one
Parquet file per object (:mod:`sinks.parquet`, docs: lake.md#formats), for the ``trades`` and
``book`` datasets; the raw capture dataset stays ``ndjson.zst`` (:func:`dataset_format`).
:func:`decode_object` decodes any of them into the same NDJSON-shaped records.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

import orjson
import zstandard

from engine.errors import ConfigError, IntegrityError
from engine.text import plural
from sinks import parquet
from sinks.keys import RAW_DATASET
from sinks.parquet import PARQUET

GZIP: Final = "ndjson.gz"
ZSTD: Final = "ndjson.zst"
NDJSON_FORMATS: Final = (GZIP, ZSTD)
FORMATS: Final = (GZIP, ZSTD, PARQUET)
DEFAULT_FORMAT: Final = GZIP
DEFAULT_LEVELS: Final = {GZIP: 1, ZSTD: 1, PARQUET: parquet.DEFAULT_LEVEL}
_LEVEL_RANGES: Final = {GZIP: range(0, 10), ZSTD: range(-7, 23), PARQUET: parquet.LEVELS}

_OPT: Final = orjson.OPT_APPEND_NEWLINE
_dumps = orjson.dumps


class ObjectEncoder(Protocol):
    """What the windower needs of an encoder (:class:`Encoder`, :class:`~sinks.parquet.
    ParquetEncoder`): ``write`` batches, ``finish`` into the body, and the sizes so far."""

    format: str
    compressed_size: int
    raw_size: int

    def write(self, records: Sequence[object]) -> None: ...
    def finish(self) -> bytes: ...


class _Compressor(Protocol):
    def compress(self, data: bytes | bytearray, /) -> bytes: ...
    def flush(self) -> bytes: ...


def check_format(format: str, variable: str = "FORMAT") -> str:
    """Return ``format`` if it is one of :data:`FORMATS`, else raise :class:`ConfigError`."""
    if format not in FORMATS:
        raise ConfigError(variable, f"unknown format {format!r} (expected one of {FORMATS})")
    return format


def extension(format: str) -> str:
    """The key extension of a format (without the dot): the format name itself."""
    return check_format(format)


def format_from_key(key: str) -> str:
    """The format of an object, from its key's extension; :class:`IntegrityError` if unknown."""
    for fmt in FORMATS:
        if key.endswith("." + fmt):
            return fmt
    raise IntegrityError(f"cannot tell the format of {key!r} from its extension")


def dataset_format(format: str, dataset: str) -> str:
    """The format a dataset's objects are written in: ``format``, except that the raw capture
    dataset (``{prefix}raw/``, frames, not records of a Parquet schema) is ``ndjson.zst`` when
    ``format`` is Parquet."""
    return ZSTD if format == PARQUET and dataset == RAW_DATASET else format


def _compressor(format: str, level: int) -> _Compressor:
    if format == GZIP:
        return zlib.compressobj(level, zlib.DEFLATED, 31)
    return zstandard.ZstdCompressor(level=level).compressobj()


class Encoder:
    """One object body being built. Not thread-safe; unusable after :meth:`finish`.

    ``compressed_size`` counts the compressed bytes produced so far; it lags the input by what
    the compressor holds internally (up to ~128 KiB of input for zstd, less for gzip), so a
    size limit checked against it is approximate by that much.
    """

    __slots__ = ("_chunks", "_compressor", "compressed_size", "format", "raw_size")

    def __init__(self, format: str, compressor: _Compressor) -> None:
        self.format = format
        self._compressor: _Compressor | None = compressor
        self._chunks: list[bytes] = []
        self.compressed_size = 0
        self.raw_size = 0

    def write(self, records: Sequence[object]) -> None:
        """Encode ``records`` as NDJSON lines and compress them in one call."""
        compressor = self._compressor
        if compressor is None:
            raise RuntimeError("encoder already finished")
        buf = bytearray()
        dumps = _dumps
        for record in records:
            buf += dumps(record, option=_OPT)
        self.raw_size += len(buf)
        out = compressor.compress(buf)
        if out:
            self._chunks.append(out)
            self.compressed_size += len(out)

    def finish(self) -> bytes:
        """Flush the compressor and return the complete object body."""
        compressor = self._compressor
        if compressor is None:
            raise RuntimeError("encoder already finished")
        self._compressor = None
        self._chunks.append(compressor.flush())
        body = b"".join(self._chunks)
        self._chunks = []
        self.compressed_size = len(body)
        return body


def make_encoder(
    format: str,
    level: int | None = None,
    *,
    dataset: str = "trades",
    partition: Mapping[str, str] | None = None,
    max_bytes: int | None = None,
) -> ObjectEncoder:
    """A fresh encoder for ``format`` at ``level`` (default: :data:`DEFAULT_LEVELS`).

    For Parquet, ``dataset`` chooses the schema (book rows or trades), ``partition`` gives
    the fields the key renders as Hive segments (:attr:`~sinks.keys.KeyTemplate.hive_fields`)
    and their values for this object: those fields are left out of the columns and kept in
    the metadata; ``max_bytes``, the window's ``WINDOW_MAX_BYTES``, sizes its row groups
    (:func:`sinks.parquet.rows_per_group`). The NDJSON formats ignore all three. Parquet
    without pyarrow installed is a :class:`ConfigError` naming ``FORMAT``."""
    check_format(format)
    if level is None:
        level = DEFAULT_LEVELS[format]
    if level not in _LEVEL_RANGES[format]:
        raise ConfigError("COMPRESSION_LEVEL", f"level {level} is out of range for {format}")
    if format == PARQUET:
        return parquet.ParquetEncoder(
            kind=parquet.record_kind(dataset),
            partition=partition or {},
            level=level,
            max_bytes=max_bytes,
        )
    return Encoder(format, _compressor(format, level))


def decompress(body: bytes, format: str) -> bytes:
    """The NDJSON text of a body; :class:`IntegrityError` if corrupt or truncated."""
    if check_format(format) not in NDJSON_FORMATS:
        raise ValueError(f"{format} is not an NDJSON format (decode it with decode_object)")
    try:
        if format == GZIP:
            gz = zlib.decompressobj(31)
            text = gz.decompress(body) + gz.flush()
            complete, rest = gz.eof, gz.unused_data
        else:
            zs = zstandard.ZstdDecompressor().decompressobj()
            text = zs.decompress(body)
            complete, rest = zs.eof, zs.unused_data
    except (zlib.error, zstandard.ZstdError) as exc:
        raise IntegrityError(f"corrupt {format} data: {exc}") from exc
    if not complete:
        raise IntegrityError(f"truncated {format} data")
    if rest:
        trailing = plural(len(rest), "byte")
        raise IntegrityError(f"{trailing} of trailing data after the {format} stream")
    return text


def decode_body(body: bytes, format: str) -> list[dict[str, object]]:
    """Decode a whole NDJSON object body into its records (dicts), in order (any format,
    Parquet included: :func:`decode_object`).

    For verification and tests, not the hot path. Raises :class:`IntegrityError` when the
    compressed stream is corrupt or truncated or a line is not a JSON object.
    """
    text = decompress(body, format)
    records: list[dict[str, object]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise IntegrityError(f"line {number} is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise IntegrityError(f"line {number} is not a JSON object")
        records.append(obj)
    return records


def decode_object(key: str, body: bytes) -> list[dict[str, object]]:
    """Decode a stored object into its records (dicts shaped like NDJSON lines), in order, its
    format told by its key's extension (:func:`format_from_key`): a Parquet object's records
    have the same fields and values as an NDJSON object's (:func:`sinks.parquet.decode`).

    For verification, the batch jobs and tests, not the hot path. :class:`IntegrityError`
    when the extension is unknown or the body corrupt or truncated."""
    format = format_from_key(key)
    if format == PARQUET:
        return parquet.decode(body)
    return decode_body(body, format)
