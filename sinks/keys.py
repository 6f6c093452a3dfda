"""Object keys (docs: data-formats.md#object-keys): the key template, and sanitizing key values.

A key is ``prefix`` + the rendered template. The prefix is the operator's (checked once by
:func:`validate_prefix`); every other value (dataset, exchange, symbol, run id, extension) is
passed through :func:`sanitize`, so a symbol read from a feed (``../../etc``, ``A/B``, NUL,
unicode) can never leave the prefix or form a ``..`` path segment.

Rendering happens once per window, never per record.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final

from engine.errors import ConfigError

DEFAULT_KEY_TEMPLATE: Final = (
    "{prefix}{dataset}/exchange={exchange}/symbol={symbol}/date={date}/hour={hour}/"
    "{window_start}-{run_id}-{seq:06d}.{ext}"
)

#: The dataset of raw captured frames (``--capture``, docs: recording-and-replay.md#capture) and
#: its fixed key template: raw frames are partitioned by exchange only (a frame may carry many
#: symbols, or none).
RAW_DATASET: Final = "raw"
RAW_KEY_TEMPLATE: Final = (
    "{prefix}{dataset}/exchange={exchange}/date={date}/hour={hour}/"
    "{window_start}-{run_id}-{seq:06d}.{ext}"
)

#: Fields a template may use. ``date`` is ``YYYY-MM-DD``, ``hour``/``minute`` two digits,
#: ``year``/``month``/``day`` zero-padded, ``window_start`` ``%Y%m%dT%H%M%SZ`` (UTC).
TEMPLATE_FIELDS: Final = frozenset(
    {
        "prefix",
        "dataset",
        "exchange",
        "symbol",
        "date",
        "year",
        "month",
        "day",
        "hour",
        "minute",
        "window_start",
        "run_id",
        "seq",
        "ext",
    }
)

#: The record fields a template can partition by, in this order.
PARTITION_FIELDS: Final = ("exchange", "symbol")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SEQ_SPEC = re.compile(r"(0[1-9][0-9]?)?d")
_LITERAL_OK = re.compile(r"[A-Za-z0-9._=/-]*")
_SEGMENT_OK = re.compile(r"[A-Za-z0-9._=-]+")
_VARIABLE = "KEY_TEMPLATE"


def is_raw_key(prefix: str, key: str) -> bool:
    """True for an object of the raw capture dataset (``{prefix}raw/...``)."""
    return key.startswith(f"{prefix}{RAW_DATASET}/")


@lru_cache(maxsize=4096)
def sanitize(value: str) -> str:
    """Map every character outside ``[A-Za-z0-9._-]`` to ``_``.

    A value that is empty or only dots becomes underscores of the same length (at least one),
    so the result is never ``""``, ``.`` or ``..`` and is always one safe path segment.
    """
    out = _UNSAFE.sub("_", value)
    if not out.strip("."):
        return "_" * max(len(out), 1)
    return out


def validate_prefix(prefix: str, variable: str = "S3_PREFIX") -> str:
    """Check an operator's key prefix and return it normalized to end with ``/``.

    The empty prefix is allowed (it means the bucket root). Otherwise every ``/``-separated
    segment must be non-empty, made of ``[A-Za-z0-9._=-]`` and not ``.`` or ``..``; a leading
    ``/`` is refused. Raises :class:`ConfigError` naming ``variable``.
    """
    if not prefix:
        return ""
    body = prefix[:-1] if prefix.endswith("/") else prefix
    if prefix.startswith("/"):
        raise ConfigError(variable, f"prefix {prefix!r} must not start with '/'")
    for segment in body.split("/"):
        if not _SEGMENT_OK.fullmatch(segment) or segment in (".", ".."):
            raise ConfigError(
                variable,
                f"prefix {prefix!r} has an invalid segment {segment!r} "
                "(allowed: non-empty A-Z a-z 0-9 . _ = -, not '.' or '..')",
            )
    return body + "/"


class KeyTemplate:
    """A validated key template (``KEY_TEMPLATE``, default :data:`DEFAULT_KEY_TEMPLATE`).

    Rules, checked at construction (:class:`ConfigError` with variable ``KEY_TEMPLATE``): it
    starts with ``{prefix}``; it uses only :data:`TEMPLATE_FIELDS`, without conversions,
    indexing or format specs (except an integer spec on ``seq`` such as ``06d``); it contains
    ``{run_id}`` and ``{seq}`` (so keys are unique per run) and ends with ``.{ext}`` (so a key
    tells its format); its literal text is made of ``[A-Za-z0-9._=/-]`` with no ``.``/``..``
    segment and no empty segment.

    ``partition_fields`` are the record fields the template uses (:data:`PARTITION_FIELDS`
    order); ``hive_fields`` those of them it renders as a whole Hive path segment
    ``name={name}`` (``exchange={exchange}``), from which a Hive-partitioned reader takes the
    field: a Parquet file leaves exactly these out of its columns (docs: lake.md#formats).
    """

    __slots__ = ("_fields", "hive_fields", "partition_fields", "template")

    def __init__(self, template: str = DEFAULT_KEY_TEMPLATE) -> None:
        self.template = template
        fields: list[str] = []
        skeleton: list[str] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ConfigError(_VARIABLE, f"cannot parse {template!r}: {exc}") from exc
        for literal, name, spec, conversion in parsed:
            if not _LITERAL_OK.fullmatch(literal):
                raise ConfigError(
                    _VARIABLE, f"literal text {literal!r} has characters outside A-Z a-z 0-9 ._=/-"
                )
            skeleton.append(literal)
            if name is None:
                continue
            if name not in TEMPLATE_FIELDS:
                allowed = ", ".join(sorted(TEMPLATE_FIELDS))
                raise ConfigError(_VARIABLE, f"unknown field {{{name}}} (allowed: {allowed})")
            if conversion is not None:
                raise ConfigError(_VARIABLE, f"field {{{name}}} may not use a conversion")
            if spec and not (name == "seq" and _SEQ_SPEC.fullmatch(spec)):
                raise ConfigError(_VARIABLE, f"field {{{name}}} may not use format spec {spec!r}")
            fields.append(name)
            skeleton.append("x" if name != "prefix" else "")
        if not template.startswith("{prefix}"):
            raise ConfigError(_VARIABLE, "must start with {prefix}")
        if fields.count("prefix") != 1:
            raise ConfigError(_VARIABLE, "must use {prefix} exactly once")
        for required in ("run_id", "seq"):
            if required not in fields:
                raise ConfigError(_VARIABLE, f"must contain {{{required}}} so keys are unique")
        if not template.endswith(".{ext}"):
            raise ConfigError(_VARIABLE, "must end with .{ext}")
        for segment in "".join(skeleton).split("/"):
            if segment in ("", ".", ".."):
                raise ConfigError(_VARIABLE, f"has an empty, '.' or '..' path segment: {template}")
        self._fields = frozenset(fields)
        self.partition_fields: tuple[str, ...] = tuple(
            f for f in PARTITION_FIELDS if f in self._fields
        )
        segments = set(template.removeprefix("{prefix}").split("/"))
        self.hive_fields: tuple[str, ...] = tuple(
            f for f in self.partition_fields if f"{f}={{{f}}}" in segments
        )

    def __repr__(self) -> str:
        return f"KeyTemplate({self.template!r})"

    def render(
        self,
        *,
        prefix: str,
        dataset: str,
        partition: Mapping[str, str],
        window_start_ns: int,
        run_id: str,
        seq: int,
        ext: str,
    ) -> str:
        """The key of one window. ``partition`` must hold every field of ``partition_fields``.

        Every value except ``prefix`` is sanitized; the result always starts with ``prefix``.
        """
        start = datetime.fromtimestamp(window_start_ns // 1_000_000_000, tz=UTC)
        values: dict[str, object] = {
            "prefix": prefix,
            "dataset": sanitize(dataset),
            "date": start.strftime("%Y-%m-%d"),
            "year": f"{start.year:04d}",
            "month": f"{start.month:02d}",
            "day": f"{start.day:02d}",
            "hour": f"{start.hour:02d}",
            "minute": f"{start.minute:02d}",
            "window_start": start.strftime("%Y%m%dT%H%M%SZ"),
            "run_id": sanitize(run_id),
            "seq": seq,
            "ext": sanitize(ext),
        }
        for name in self.partition_fields:
            values[name] = sanitize(partition[name])
        return self.template.format_map(values)
