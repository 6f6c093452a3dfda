"""The ECS task a run runs in, from the task metadata endpoint (version 4).

On ECS (Fargate platform 1.4.0 and later, and EC2 with a recent agent) every container gets
``ECS_CONTAINER_METADATA_URI_V4``; ``${URI}/task`` answers the task's metadata (``Cluster``,
``TaskARN``, ``Family``, ``Revision``, ``AvailabilityZone``, ``Containers``) and ``${URI}``
this container's (``Name``, ``Image``, ``ImageID``). :func:`resolve_ecs_task` reads both once,
at the start of a run, into an :class:`~sinks.manifest.EcsTask` for the manifest's ``ecs``
section, and the run puts the task id into its default run id (:func:`run_id_with_task`).

Contract:

* unset variable: no request, ``None`` (not on ECS);
* both documents are fetched concurrently; each request is bounded by
  :attr:`EcsLookup.attempt_timeout` and retried (connection failures, timeouts, HTTP 5xx) up to
  :attr:`EcsLookup.attempts` times, and the whole lookup by :attr:`EcsLookup.budget` seconds, so
  a run starts at most that late;
* an answer that is not the task's metadata (HTTP 4xx, not JSON, a field missing or of the
  wrong type, over :data:`MAX_BODY_BYTES`) is not retried;
* never fatal: on failure one ``ecs_metadata_unavailable`` warning is logged and the result is
  ``None``; the run goes on without the metadata. A failure of the container document alone
  keeps the task's fields (image fields from the task's only application container, if
  there is exactly one) and logs one ``ecs_metadata_partial`` warning.

Errors of the HTTP client are mapped to :class:`~engine.errors.MetadataError` here.

The client is aiohttp (a dependency of aiobotocore, which the S3 writer already uses): its
requests are cancelled cleanly by a timeout, so nothing outlives the lookup. A blocking urllib
call in a thread could not be cancelled, its timeout bounds each socket operation but not the
whole request, and the event loop's shutdown waits for such a thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, TypeVar

import orjson

from engine.errors import MetadataError
from engine.logs import get_logger, log_event
from engine.retry import Jitter, RetryPolicy, Sleep, retry
from engine.text import plural
from sinks.manifest import EcsTask

if TYPE_CHECKING:
    import aiohttp

    from engine.settings import RuntimeSettings

METADATA_VARIABLE: Final = "ECS_CONTAINER_METADATA_URI_V4"
MAX_BODY_BYTES: Final = 1024 * 1024
"""A metadata document larger than this is refused (they are a few KiB)."""
MAX_TASK_ID_CHARS: Final = 64

log = get_logger("ecs")

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class EcsLookup:
    """Bounds of the metadata lookup (seconds): per request, attempts per document, in all;
    ``backoff`` is the wait before the second attempt, doubled before each later one."""

    attempt_timeout: float = 1.0
    attempts: int = 3
    budget: float = 3.0
    backoff: float = 0.1

    @property
    def policy(self) -> RetryPolicy:
        """The per-document retries: ``attempts`` in all, waits of ``backoff`` doubling, no
        jitter (one client of a local endpoint: nothing to spread out)."""
        return RetryPolicy(initial=self.backoff, jitter=Jitter.NONE, max_attempts=self.attempts)


DEFAULT_LOOKUP: Final = EcsLookup()


class _Retryable(MetadataError):
    """A failure worth another attempt (no connection, timeout, HTTP 5xx)."""


async def _get_json(session: aiohttp.ClientSession, url: str, limit: float) -> object:
    """One GET of ``url`` within ``limit`` seconds: the parsed JSON body, or
    :class:`MetadataError`."""
    import aiohttp

    try:
        async with asyncio.timeout(limit), session.get(url, allow_redirects=False) as response:
            if response.status >= 500:
                raise _Retryable(f"{url}: HTTP {response.status}")
            if response.status != 200:
                raise MetadataError(f"{url}: HTTP {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise MetadataError(f"{url}: answer larger than {MAX_BODY_BYTES} bytes")
    except TimeoutError as exc:
        raise _Retryable(f"{url}: no answer within {limit:g}s") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise _Retryable(f"{url}: {type(exc).__name__}: {exc}") from exc
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MetadataError(f"{url}: answer is not JSON: {exc}") from exc


async def _get_with_retry(
    session: aiohttp.ClientSession, url: str, lookup: EcsLookup, sleep: Sleep
) -> object:
    """GET ``url`` under :attr:`EcsLookup.policy`: a :class:`_Retryable` failure is retried,
    every wait through ``sleep``; after the last attempt it is raised as a
    :class:`MetadataError` naming the attempts. Any other :class:`MetadataError` is not
    retried. Cancel-safe (the lookup's overall timeout cancels it)."""
    try:
        return await retry(
            partial(_get_json, session, url, lookup.attempt_timeout),
            lookup.policy,
            retry_on=(_Retryable,),
            sleep=sleep,
        )
    except _Retryable as exc:
        raise MetadataError(f"{exc} (after {plural(lookup.attempts, 'attempt')})") from exc


def _string(doc: Mapping[str, Any], name: str, where: str) -> str:
    value = doc.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a Revision given as a number
    if not isinstance(value, str) or not value:
        raise MetadataError(f"{where}: {name} is missing or not a string")
    return value


def _optional(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) and value else None


def parse_task_metadata(task: object, container: object | None) -> EcsTask:
    """The :class:`EcsTask` of a task document (``${URI}/task``) and, when it was read, this
    container's document (``${URI}``); :class:`MetadataError` if the task document lacks
    ``TaskARN``, ``Cluster``, ``Family`` or ``Revision``."""
    if not isinstance(task, dict):
        raise MetadataError("task metadata is not a JSON object")
    task_arn = _string(task, "TaskARN", "task metadata")
    if not task_arn.startswith("arn:") or ":task/" not in task_arn:
        raise MetadataError(f"task metadata: TaskARN {task_arn!r} is not a task ARN")
    if isinstance(container, dict):
        own: Mapping[str, Any] = container
    else:  # no container document: the task's only application container, if one
        apps = [
            c
            for c in task.get("Containers") or []
            if isinstance(c, dict) and c.get("Type", "NORMAL") == "NORMAL"
        ]
        own = apps[0] if len(apps) == 1 else {}
    digest = _optional(own, "ImageID")
    return EcsTask(
        task_arn=task_arn,
        cluster=_string(task, "Cluster", "task metadata"),
        task_definition=(
            f"{_string(task, 'Family', 'task metadata')}:"
            f"{_string(task, 'Revision', 'task metadata')}"
        ),
        container=_optional(own, "Name"),
        image=_optional(own, "Image"),
        image_digest=digest if digest is not None and digest.startswith("sha256:") else None,
        availability_zone=_optional(task, "AvailabilityZone"),
    )


async def fetch_ecs_task(
    base_uri: str, lookup: EcsLookup = DEFAULT_LOOKUP, *, sleep: Sleep = asyncio.sleep
) -> tuple[EcsTask, MetadataError | None]:
    """Read the task and container documents under ``base_uri``: the task, and the error of the
    container document if it alone failed. :class:`MetadataError` when the task document
    cannot be read (within ``lookup``'s bounds) or is not task metadata."""
    base = base_uri.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise MetadataError(f"{METADATA_VARIABLE} {base_uri!r} is not an http:// URL")
    try:
        async with asyncio.timeout(lookup.budget):
            task_doc, container_doc = await _fetch_both(base, lookup, sleep)
    except TimeoutError as exc:
        raise MetadataError(f"no task metadata within {lookup.budget:g}s") from exc
    if isinstance(container_doc, MetadataError):
        return parse_task_metadata(task_doc, None), container_doc
    return parse_task_metadata(task_doc, container_doc), None


async def _fetch_both(base: str, lookup: EcsLookup, sleep: Sleep) -> tuple[object, object]:
    """The task document and the container document (or the container's MetadataError),
    fetched concurrently; :class:`MetadataError` if the task document failed."""
    import aiohttp

    async def own_container(session: aiohttp.ClientSession) -> object:
        try:
            return await _get_with_retry(session, base, lookup, sleep)
        except MetadataError as exc:
            return exc

    failure: MetadataError | None = None
    try:
        async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as tg:
            container = tg.create_task(own_container(session))
            task = tg.create_task(_get_with_retry(session, f"{base}/task", lookup, sleep))
    except* MetadataError as group:
        first = group.exceptions[0]
        failure = first if isinstance(first, MetadataError) else MetadataError(str(first))
    if failure is not None:
        raise failure
    return task.result(), container.result()


async def resolve_ecs_task(
    base_uri: str | None, lookup: EcsLookup = DEFAULT_LOOKUP, *, sleep: Sleep = asyncio.sleep
) -> EcsTask | None:
    """The run's ECS task, or ``None`` when ``base_uri`` (``ECS_CONTAINER_METADATA_URI_V4``) is
    unset or the lookup failed; never raises :class:`MetadataError` (see the module
    docstring for what is logged)."""
    if base_uri is None:
        return None
    try:
        task, container_error = await fetch_ecs_task(base_uri, lookup, sleep=sleep)
    except MetadataError as exc:
        log_event(
            log,
            logging.WARNING,
            "ecs_metadata_unavailable",
            error=str(exc),
            action="the run goes on without ECS task metadata",
        )
        return None
    if container_error is not None:
        log_event(log, logging.WARNING, "ecs_metadata_partial", error=str(container_error))
    log_event(log, logging.INFO, "ecs_metadata", **task.to_dict())
    return task


class RunConfig(Protocol):
    """A run's configuration (stream or batch), as :func:`identify_config` reads it."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def runtime(self) -> RuntimeSettings: ...

    @property
    def run_id(self) -> str: ...

    @property
    def run_id_generated(self) -> bool: ...


_Config = TypeVar("_Config", bound=RunConfig)


async def identify_config(
    config: _Config, lookup: EcsLookup = DEFAULT_LOOKUP
) -> tuple[EcsTask | None, _Config]:
    """The run's ECS task (:func:`resolve_ecs_task`), and its configuration with the run id
    that goes with it: a generated one gets the task id (:func:`run_id_with_task`), so runs of
    different tasks never share one; one the operator chose is kept."""
    task = await resolve_ecs_task(config.runtime.ecs_metadata_uri, lookup)
    if task is None or not config.run_id_generated:
        return task, config
    return task, dataclasses.replace(config, run_id=run_id_with_task(config.run_id, task.task_id))


def run_id_with_task(run_id: str, task_id: str) -> str:
    """A default run id (``{UTC time}-{random}``, :func:`engine.settings.new_run_id`) with the task
    id after its time: ``{UTC time}-{task id}-{random}``, still sortable by time. Characters a
    run id cannot hold become ``-``; the task id is cut to :data:`MAX_TASK_ID_CHARS`."""
    safe = _UNSAFE.sub("-", task_id)[:MAX_TASK_ID_CHARS].strip("-")
    if not safe:
        return run_id
    stamp, sep, suffix = run_id.partition("-")
    return f"{stamp}-{safe}-{suffix}" if sep else f"{run_id}-{safe}"
