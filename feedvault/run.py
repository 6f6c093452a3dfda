"""What every feedvault run does with its manifest (docs: data-formats.md#the-manifest).

:class:`ManifestRun` is the :class:`~engine.lifecycle.RunLifecycle` of the application, shared by
``stream``, ``replay`` (:mod:`feedvault.runner`, :mod:`feedvault.replay`) and ``batch``
(:mod:`feedvault.batch_run`):

* **identify**: on ECS (``ECS_CONTAINER_METADATA_URI_V4``) the task's metadata is read (bounded,
  never fatal: :mod:`feedvault.ecs`); a generated run id gets the task id;
* **claim**: the first write, before anything connects or is read, is the manifest with
  ``status: running`` (:func:`~sinks.claim.claim_run`): the destination takes it, the run id is
  new (a :class:`~engine.errors.ConfigError`, exit 2, otherwise), and a killed run stays
  visible;
* **finish**: the manifest is written last, bounded in time; when it cannot be written the
  run's :meth:`ManifestRun.manifest_not_written` keeps it where it can (a stream spills it) and
  the exit status is 1: the run's proof is not in the store.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from engine import __version__
from engine.clock import Clock
from engine.errors import StorageError
from engine.lifecycle import RunLifecycle, StopController, StopReason
from engine.logs import get_logger, log_event
from feedvault.ecs import DEFAULT_LOOKUP, EcsLookup, RunConfig, identify_config
from sinks.claim import claim_run
from sinks.manifest import EcsTask, Manifest, Status, StoredObjectEntry, iso_utc, write_manifest
from sinks.writer import Destination, ObjectWriter

log = get_logger("run")


C = TypeVar("C", bound=RunConfig)


class ManifestRun(RunLifecycle, Generic[C]):
    """A run whose proof is its manifest; see the module docstring. Subclasses supply
    :attr:`destination`, :meth:`public_config` and :meth:`execute`."""

    def __init__(
        self,
        config: C,
        *,
        command: Sequence[str],
        clock: Clock,
        controller: StopController | None,
        install_signal_handlers: bool,
        max_runtime_seconds: float | None,
        ecs_lookup: EcsLookup = DEFAULT_LOOKUP,
    ) -> None:
        super().__init__(
            clock=clock,
            controller=controller,
            install_signal_handlers=install_signal_handlers,
            max_runtime_seconds=max_runtime_seconds,
        )
        self.config = config
        self.command = list(command)
        self.ecs_lookup = ecs_lookup
        #: The ECS task the run runs in (read at the start of :meth:`run`), else None.
        self.ecs: EcsTask | None = None
        self.manifest: Manifest | None = None

    @property
    @abstractmethod
    def destination(self) -> Destination:
        """Where the run's objects and manifest go."""

    @abstractmethod
    def public_config(self) -> dict[str, Any]:
        """The effective configuration for the manifest and the start line (no secrets)."""

    async def identify(self) -> None:
        self.ecs, self.config = await identify_config(self.config, self.ecs_lookup)

    def start_fields(self) -> dict[str, Any]:
        return {
            "run_id": self.config.run_id,
            "version": __version__,
            "config": self.public_config(),
            "ecs": self.ecs.to_dict() if self.ecs is not None else None,
        }

    def new_manifest(
        self,
        *,
        status: Status,
        stop_reason: StopReason,
        objects: list[StoredObjectEntry],
        counters: dict[str, int],
        error: str | None,
        **fields: Any,
    ) -> Manifest:
        """The run's final manifest: the fields every run has, and ``fields``."""
        return Manifest(
            run_id=self.config.run_id,
            version=__version__,
            command=" ".join(self.command),
            started_at=iso_utc(self.started_ns),
            stopped_at=iso_utc(self.clock.time_ns()),
            stop_reason=stop_reason,
            status=status,
            config=self.public_config(),
            objects=objects,
            counters=counters,
            error=error,
            ecs=self.ecs,
            destination=self.destination.url,
            prefix=self.destination.prefix,
            **fields,
        )

    def running_manifest(self) -> Manifest:
        """The manifest written at the start (:mod:`sinks.claim`): ``status: running``."""
        return Manifest.running(
            run_id=self.config.run_id,
            version=__version__,
            command=" ".join(self.command),
            started_at=iso_utc(self.started_ns),
            config=self.public_config(),
            ecs=self.ecs,
            destination=self.destination.url,
            prefix=self.destination.prefix,
        )

    async def claim(
        self, writer: ObjectWriter, *, retry_seconds: float, stop_grace_seconds: float
    ) -> None:
        """The first write (see the module docstring); ``stop_grace_seconds``: how long a stop
        requested meanwhile still lets it try."""
        await claim_run(
            writer,
            self.destination,
            self.running_manifest(),
            retry_seconds=retry_seconds,
            clock=self.clock,
            stop=self.controller.stop,
            stop_grace_seconds=stop_grace_seconds,
        )

    async def write_final(self, writer: ObjectWriter, manifest: Manifest, seconds: float) -> bool:
        """Write ``manifest`` (last), within ``seconds``. False when it could not be written
        (logged ``manifest_failed``; :meth:`manifest_not_written` was called)."""
        self.controller.finishing = True
        self.manifest = manifest
        try:
            async with asyncio.timeout(seconds):
                await write_manifest(writer, self.destination.prefix, manifest)
        except (StorageError, TimeoutError) as exc:
            log_event(log, logging.ERROR, "manifest_failed", error=f"{type(exc).__name__}: {exc}")
            self.manifest_not_written(manifest)
            return False
        return True

    def manifest_not_written(self, manifest: Manifest) -> None:
        """Called when the final manifest could not be written; by default nothing more."""
