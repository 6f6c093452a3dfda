"""The run manifest (docs: data-formats.md): ``{prefix}_manifests/{run_id}.json``, written last.

The manifest is the run's proof of success: it lists every object the run made durable, the
counters, the trade-id gaps, what was left in the spill directory, and whether the run is
``complete``; a run on ECS also names its task (``ecs``, :class:`EcsTask`). A manifest rewritten
by a later run that uploaded this run's spilled windows (:mod:`sinks.recovery`) names them in
``recovered`` (:class:`Recovered`). It is serialized
with sorted keys and 2-space indentation (stable diffs); :meth:`Manifest.from_json` validates
every field and raises :class:`~engine.errors.IntegrityError` on anything malformed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypedDict, TypeVar, cast, get_type_hints

import orjson

from engine.errors import IntegrityError
from engine.lifecycle import StopReason
from sinks.windowing import ClosedWindow
from sinks.writer import ObjectWriter, StoredObject

MANIFEST_DIR: Final = "_manifests/"
STOP_REASONS: Final = ("deadline", "signal", "error", "end")
STATUSES: Final = ("complete", "incomplete", "running")
COUNTERS: Final = ("received", "parsed", "invalid", "dropped", "reconnects", "duplicates")
OUTPUT_KIND: Final = "output"
"""``StoredObjectEntry.kind`` of a batch job's output (checked by size and checksum only)."""
JSON_OPTIONS: Final = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
"""How a manifest is serialized (a spilled manifest is uploaded in the same form)."""

_T = TypeVar("_T")

Status = Literal["complete", "incomplete", "running"]
"""``running``: the manifest a run writes at its start (:func:`running_manifest`); a run that
was killed leaves it behind. Its ``stopped_at`` and ``stop_reason`` are ``null``."""


class Recovered(TypedDict):
    """A window this run left in the spill directory, uploaded later by run ``recovered_by``
    at ``recovered_at`` (ISO-8601 UTC); its object is also in ``objects``."""

    key: str
    recovered_at: str
    recovered_by: str


class StreamFigures(TypedDict):
    """What one configured stream (``exchange:symbol:channel``) did during the run.

    ``subscribed_seconds``: time with a live subscription; ``connected_seconds``: time with an
    open connection (subscribed or not); ``first_ts_event``/``last_ts_event``: the first and
    last record's event time (µs, like the records' ``ts_event``), ``None`` without
    records; ``last_error``: the last
    connection or subscription error, ``None`` if there was none."""

    records: int
    subscribed_seconds: float
    connected_seconds: float
    reconnects: int
    first_ts_event: int | None
    last_ts_event: int | None
    last_error: str | None


class Reset(TypedDict):
    """A symbol's trade ids jumped back from ``from_id`` to ``to_id`` (beyond the reorder
    window) at ``at`` (ISO-8601 UTC): the exchange restarted its sequence. Both are stored."""

    from_id: int
    to_id: int
    at: str


class BookResync(TypedDict):
    """One resync of a stream's order book (docs: order-books.md#what-a-resync-means-for-a-reader):
    ``at`` the receive time of the message that broke the book, ``done`` when the snapshot that
    repaired it was applied (None: still in progress when the run stopped), ``cause``
    (``sequence``, ``checksum``, ``reconnect``, ``restart``, ``stale-snapshot``), the last
    sequence applied before (``from_seq``) and the snapshot's (``to_seq``), ``superseded``
    messages the snapshot replaced."""

    at: str
    cause: str
    from_seq: str | None
    to_seq: str | None
    done: str | None
    superseded: int
    detail: str


class Lost(TypedDict):
    """A window that could be neither uploaded nor spilled: ``records`` records are gone."""

    key: str
    records: int
    reason: str


class Gap(TypedDict):
    """Trade ids ``from_id`` .. ``to_id`` (inclusive) of one symbol that never arrived."""

    from_id: int
    to_id: int
    missing: int


def book_resync(resync: Any) -> BookResync:
    """The manifest entry of a book feed's resync (a :class:`connectors.books.base.Resync`,
    duck-typed: sinks import no connector)."""
    return BookResync(
        at=iso_utc(resync.at_ns),
        cause=resync.cause,
        from_seq=resync.from_seq,
        to_seq=resync.to_seq,
        done=None if resync.done_ns is None else iso_utc(resync.done_ns),
        superseded=resync.superseded,
        detail=resync.detail,
    )


def manifest_key(prefix: str, run_id: str) -> str:
    """The key of a run's manifest."""
    return f"{prefix}{MANIFEST_DIR}{run_id}.json"


def iso_utc(ns: int) -> str:
    """``ns`` since the epoch as ISO-8601 UTC with microseconds: ``2024-05-01T12:00:00.000000Z``."""
    seconds, rest = divmod(ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class StoredObjectEntry:
    """One durable object of a run. ``symbols`` maps ``"exchange:symbol"`` to its (first, last)
    trade id in the object, in arrival order; ``sha256`` is hex of the whole body.

    ``stored_at`` is the wall time (int ns since the epoch, from the sink's clock) at which the
    upload became durable; ``None`` when unknown (manifests written before it existed, spilled
    objects). It is omitted from the JSON when ``None``, and optional when reading.

    ``kind`` is ``None`` for the sink's windows (trades, raw capture: the key tells which) and
    :data:`OUTPUT_KIND` for a batch job's output (any bytes: JSON, CSV, Parquet...; ``records``
    is the job's own count, the ``ts_event`` fields are 0 and ``symbols`` is empty). It is
    omitted from the JSON when ``None``, and optional when reading.
    """

    key: str
    records: int
    bytes: int
    sha256: str
    first_ts_event: int
    last_ts_event: int
    symbols: dict[str, tuple[str, str]]
    stored_at: int | None = None
    kind: str | None = None

    @classmethod
    def of(
        cls, window: ClosedWindow, stored: StoredObject, stored_at: int | None = None
    ) -> StoredObjectEntry:
        """The entry of ``window`` once stored (durable at wall time ``stored_at``, ns)."""
        return cls(
            key=stored.key,
            records=window.records,
            bytes=stored.bytes,
            sha256=stored.sha256,
            first_ts_event=window.first_ts_event,
            last_ts_event=window.last_ts_event,
            symbols=dict(window.symbols),
            stored_at=stored_at,
        )

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "key": self.key,
            "records": self.records,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "first_ts_event": self.first_ts_event,
            "last_ts_event": self.last_ts_event,
            "symbols": {
                name: {"first_trade_id": first, "last_trade_id": last}
                for name, (first, last) in self.symbols.items()
            },
        }
        if self.stored_at is not None:
            document["stored_at"] = self.stored_at
        if self.kind is not None:
            document["kind"] = self.kind
        return document

    @classmethod
    def from_dict(cls, obj: object) -> StoredObjectEntry:
        """Parse an entry; :class:`IntegrityError` if malformed."""
        data = _mapping(obj, "object entry")
        symbols: dict[str, tuple[str, str]] = {}
        for name, ids in _mapping(data.get("symbols"), "symbols").items():
            ids = _mapping(ids, f"symbols[{name!r}]")
            symbols[name] = (
                _typed(ids, "first_trade_id", str),
                _typed(ids, "last_trade_id", str),
            )
        stored_at = data.get("stored_at")
        if stored_at is not None:
            stored_at = _typed(data, "stored_at", int)
        kind = data.get("kind")
        if kind is not None:
            kind = _typed(data, "kind", str)
        return cls(
            key=_typed(data, "key", str),
            records=_typed(data, "records", int),
            bytes=_typed(data, "bytes", int),
            sha256=_typed(data, "sha256", str),
            first_ts_event=_typed(data, "first_ts_event", int),
            last_ts_event=_typed(data, "last_ts_event", int),
            symbols=symbols,
            stored_at=stored_at,
            kind=kind,
        )


@dataclass(frozen=True, slots=True)
class EcsTask:
    """The ECS task a run ran in (from the task metadata endpoint, :mod:`feedvault.ecs`): the
    manifest's ``ecs`` section. ``task_definition`` is ``family:revision``; ``image_digest`` is
    the container image's ``sha256:...`` id. The optional fields are ``null`` when unknown."""

    task_arn: str
    cluster: str
    task_definition: str
    container: str | None = None
    image: str | None = None
    image_digest: str | None = None
    availability_zone: str | None = None

    @property
    def task_id(self) -> str:
        """The task's id: the last segment of its ARN."""
        return self.task_arn.rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: object) -> EcsTask:
        """Parse the section; :class:`IntegrityError` if malformed (unknown members ignored)."""
        data = _mapping(obj, "ecs")
        optional: dict[str, str | None] = {}
        for name in ("container", "image", "image_digest", "availability_zone"):
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise IntegrityError(f"manifest field 'ecs.{name}' is not a string or null")
            optional[name] = value
        return cls(
            task_arn=_typed(data, "task_arn", str),
            cluster=_typed(data, "cluster", str),
            task_definition=_typed(data, "task_definition", str),
            **optional,
        )


@dataclass(slots=True)
class Manifest:
    """A run's manifest. ``config`` must already exclude secrets (the caller's duty).

    ``ecs`` (the task the run ran in) is omitted from the JSON when ``None`` and optional when
    reading, so manifests of runs outside ECS, and older ones, stay valid. ``recovered`` is
    likewise omitted when empty and optional when reading."""

    run_id: str
    version: str
    command: str
    started_at: str
    stopped_at: str | None
    stop_reason: StopReason | None
    status: Status
    config: dict[str, Any] = field(default_factory=dict)
    objects: list[StoredObjectEntry] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    gaps: dict[str, list[Gap]] = field(default_factory=dict)
    spilled: list[str] = field(default_factory=list)
    error: str | None = None
    ecs: EcsTask | None = None
    recovered: list[Recovered] = field(default_factory=list)
    streams: dict[str, StreamFigures] = field(default_factory=dict)
    resets: dict[str, list[Reset]] = field(default_factory=dict)
    resyncs: dict[str, list[BookResync]] = field(default_factory=dict)
    """Per book stream (``exchange:SYMBOL:book``), its resyncs in order."""
    crossed: dict[str, int] = field(default_factory=dict)
    """Per book stream, how many messages left its book crossed (best bid >= best ask)."""
    lost: list[Lost] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Things a reader should know that do not make the run incomplete (a stream subscribed
    the whole run that saw no trade)."""
    destination: str | None = None
    """The destination URL the run wrote to (its prefix included); ``None`` in older
    manifests. ``verify`` checks every object key lies under :attr:`prefix`."""
    prefix: str | None = None
    """The key prefix of the destination (``""`` for ``file://``); ``None`` in older ones."""

    @classmethod
    def running(
        cls,
        *,
        run_id: str,
        command: str,
        started_at: str,
        config: dict[str, Any],
        destination: str,
        prefix: str,
        ecs: EcsTask | None = None,
        version: str,
    ) -> Manifest:
        """The manifest a run writes first (:mod:`sinks.claim`): ``status: running``, no stop
        time nor reason, no objects yet."""
        return cls(
            run_id=run_id,
            version=version,
            command=command,
            started_at=started_at,
            stopped_at=None,
            stop_reason=None,
            status="running",
            config=config,
            ecs=ecs,
            destination=destination,
            prefix=prefix,
        )

    @property
    def records(self) -> int:
        """Records in the run's objects (raw capture and batch outputs included)."""
        return sum(entry.records for entry in self.objects)

    def to_json(self) -> bytes:
        """The manifest as indented JSON with sorted keys."""
        document: dict[str, Any] = {
            "run_id": self.run_id,
            "version": self.version,
            "command": self.command,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "stop_reason": self.stop_reason,
            "status": self.status,
            "config": self.config,
            "objects": [entry.to_dict() for entry in self.objects],
            "counters": self.counters,
            "gaps": self.gaps,
            "spilled": self.spilled,
            "error": self.error,
        }
        if self.ecs is not None:
            document["ecs"] = self.ecs.to_dict()
        if self.recovered:
            document["recovered"] = self.recovered
        for name in ("streams", "resets", "resyncs", "crossed", "lost", "warnings"):
            value = getattr(self, name)
            if value:
                document[name] = value
        if self.destination is not None:
            document["destination"] = self.destination
        if self.prefix is not None:
            document["prefix"] = self.prefix
        try:
            return orjson.dumps(document, option=JSON_OPTIONS)
        except TypeError as exc:
            raise ValueError(f"manifest is not serializable: {exc}") from exc

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and validate a manifest; :class:`IntegrityError` if it is not one."""
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise IntegrityError(f"manifest is not valid JSON: {exc}") from exc
        doc = _mapping(document, "manifest")
        status = _typed(doc, "status", str)
        if status not in STATUSES:
            raise IntegrityError(f"manifest status {status!r} is not one of {STATUSES}")
        stop_reason: str | None = None
        stopped_at: str | None = None
        if status != "running" or doc.get("stop_reason") is not None:
            stop_reason = _typed(doc, "stop_reason", str)
            if stop_reason not in STOP_REASONS:
                raise IntegrityError(
                    f"manifest stop_reason {stop_reason!r} is not one of {STOP_REASONS}"
                )
        if status != "running" or doc.get("stopped_at") is not None:
            stopped_at = _typed(doc, "stopped_at", str)
        objects = doc.get("objects")
        if not isinstance(objects, list):
            raise IntegrityError("manifest field 'objects' is not a list")
        counters = _mapping(doc.get("counters"), "counters")
        for name, value in counters.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise IntegrityError(f"manifest counter {name!r} is not an integer")
        gaps: dict[str, list[Gap]] = {}
        for name, items in _mapping(doc.get("gaps"), "gaps").items():
            if not isinstance(items, list):
                raise IntegrityError(f"manifest gaps[{name!r}] is not a list")
            gaps[name] = [_gap(item, name) for item in items]
        spilled = doc.get("spilled")
        if not isinstance(spilled, list) or not all(isinstance(k, str) for k in spilled):
            raise IntegrityError("manifest field 'spilled' is not a list of keys")
        error = doc.get("error")
        if error is not None and not isinstance(error, str):
            raise IntegrityError("manifest field 'error' is not a string or null")
        ecs = doc.get("ecs")
        recovered = doc.get("recovered", [])
        if not isinstance(recovered, list):
            raise IntegrityError("manifest field 'recovered' is not a list")
        return cls(
            run_id=_typed(doc, "run_id", str),
            version=_typed(doc, "version", str),
            command=_typed(doc, "command", str),
            started_at=_typed(doc, "started_at", str),
            stopped_at=stopped_at,
            stop_reason=cast("StopReason | None", stop_reason),
            status=cast(Status, status),
            config=dict(_mapping(doc.get("config"), "config")),
            objects=[StoredObjectEntry.from_dict(obj) for obj in objects],
            counters=cast(dict[str, int], dict(counters)),
            gaps=gaps,
            spilled=list(spilled),
            error=error,
            ecs=EcsTask.from_dict(ecs) if ecs is not None else None,
            recovered=[_recovered(item) for item in recovered],
            streams={
                name: _stream(item, name)
                for name, item in _mapping(doc.get("streams", {}), "streams").items()
            },
            resets={
                name: [_reset(item, name) for item in _list(items, f"resets[{name!r}]")]
                for name, items in _mapping(doc.get("resets", {}), "resets").items()
            },
            resyncs={
                name: [_resync(item, name) for item in _list(items, f"resyncs[{name!r}]")]
                for name, items in _mapping(doc.get("resyncs", {}), "resyncs").items()
            },
            crossed={
                name: _counted(value, f"crossed[{name!r}]")
                for name, value in _mapping(doc.get("crossed", {}), "crossed").items()
            },
            lost=[_lost(item) for item in _list(doc.get("lost", []), "lost")],
            warnings=[
                _text(item, "warnings") for item in _list(doc.get("warnings", []), "warnings")
            ],
            destination=_optional(doc, "destination", str),
            prefix=_optional(doc, "prefix", str),
        )


async def write_manifest(writer: ObjectWriter, prefix: str, manifest: Manifest) -> StoredObject:
    """Store ``manifest`` at :func:`manifest_key`; durable when this returns."""
    return await writer.put(manifest_key(prefix, manifest.run_id), manifest.to_json())


def _mapping(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise IntegrityError(f"manifest {what} is not a JSON object")
    return cast(dict[str, Any], value)


def _typed(data: dict[str, Any], name: str, kind: type[_T]) -> _T:
    value = data.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise IntegrityError(f"manifest field {name!r} is missing or not a {kind.__name__}")
    return value


def _optional(data: dict[str, Any], name: str, kind: type[_T]) -> _T | None:
    if data.get(name) is None:
        return None
    return _typed(data, name, kind)


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise IntegrityError(f"manifest field {what} is not a list")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise IntegrityError(f"manifest field {what} holds a non-string")
    return value


def _number(data: dict[str, Any], name: str) -> float:
    value = data.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise IntegrityError(f"manifest field {name!r} is missing or not a number")
    return float(value)


def _stream(item: object, name: str) -> StreamFigures:
    data = _mapping(item, f"streams[{name!r}]")
    return StreamFigures(
        records=_typed(data, "records", int),
        subscribed_seconds=_number(data, "subscribed_seconds"),
        connected_seconds=_number(data, "connected_seconds"),
        reconnects=_typed(data, "reconnects", int),
        first_ts_event=_optional(data, "first_ts_event", int),
        last_ts_event=_optional(data, "last_ts_event", int),
        last_error=_optional(data, "last_error", str),
    )


def _entry(item: object, what: str, kinds: dict[str, type]) -> dict[str, Any]:
    """The manifest entry ``item`` with each field of ``kinds`` checked by :func:`_typed`, in
    that order (an entry TypedDict's own ``get_type_hints``: the check cannot drift from it)."""
    data = _mapping(item, what)
    return {name: _typed(data, name, kind) for name, kind in kinds.items()}


_RESET_KINDS: Final = get_type_hints(Reset)
_LOST_KINDS: Final = get_type_hints(Lost)
_RECOVERED_KINDS: Final = get_type_hints(Recovered)
_GAP_KINDS: Final = get_type_hints(Gap)


def _reset(item: object, name: str) -> Reset:
    return cast(Reset, _entry(item, f"reset of {name!r}", _RESET_KINDS))


def _resync(item: object, name: str) -> BookResync:
    data = _mapping(item, f"resync of {name!r}")
    return BookResync(
        at=_typed(data, "at", str),
        cause=_typed(data, "cause", str),
        from_seq=_optional(data, "from_seq", str),
        to_seq=_optional(data, "to_seq", str),
        done=_optional(data, "done", str),
        superseded=_typed(data, "superseded", int),
        detail=_typed(data, "detail", str),
    )


def _counted(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise IntegrityError(f"manifest {what} is not a count")
    return value


def _lost(item: object) -> Lost:
    return cast(Lost, _entry(item, "lost entry", _LOST_KINDS))


def _recovered(item: object) -> Recovered:
    return cast(Recovered, _entry(item, "recovered entry", _RECOVERED_KINDS))


def _gap(item: object, name: str) -> Gap:
    return cast(Gap, _entry(item, f"gap of {name!r}", _GAP_KINDS))
