"""The batch job contract (docs: batch.md): what a job is, and what the runner gives it.

A job is an object satisfying :class:`Job`, built by its factory in :mod:`batch.registry` from
the environment (its parameters are validated there, before any storage is touched: a bad one
raises :class:`~engine.errors.ConfigError` naming the variable). The runner
(:mod:`feedvault.batch_run`) then awaits ``job.run(ctx)`` once, with a :class:`JobContext`:

* ``ctx.input`` (:class:`InputReader`, jobs with ``needs_input``): the input objects' keys
  (every object under ``INPUT_PREFIX``, or the one ``INPUT_KEY``) and their bytes;
* ``await ctx.write_output(relative_key, body)``: store one output at the deterministic key
  ``{OUTPUT_PREFIX}{job}/{relative_key}``. The same input and parameters give the same keys,
  so a rerun replaces its outputs instead of adding copies. Every output is recorded (size and
  SHA-256 from the writer) for the manifest;
* ``await ctx.run_cpu(fn, *args)``: run CPU-bound work off the event loop (see
  :meth:`JobContext.run_cpu`); the loop stays free for signals, the deadline and uploads;
* ``ctx.progress`` (:class:`~batch.progress.JobProgress`): rows read, files done;
* ``ctx.count(name, n)``: a job's own counter (``inputs_moved``, ...), written to the manifest's
  ``counters`` beside the runner's ``rows``, ``files`` and ``outputs``, whether the run completes
  or not;
* ``ctx.env`` (:class:`~engine.settings.Env`), ``ctx.run_id``, ``ctx.clock`` (injected time).

A job must not catch :class:`asyncio.CancelledError`: the runner cancels it on the deadline or
a signal, and the run is then incomplete. A job that finds bad input raises :class:`JobError`
(or any :class:`~engine.errors.FeedvaultError`) with a message naming the object and the
problem; the run is then incomplete with that error in the manifest, exit 1. A job should
compute everything before writing its outputs, so an interrupted run leaves the previous
outputs (of a completed run) in place rather than a mix.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import InitVar, dataclass, field
from typing import (
    Any,
    ClassVar,
    Final,
    Generic,
    Protocol,
    Self,
    TypeVar,
    cast,
    runtime_checkable,
)

from batch.config import InputLocation
from batch.progress import JobProgress
from engine.clock import Clock
from engine.errors import FeedvaultError
from engine.settings import Env
from sinks.manifest import OUTPUT_KIND, StoredObjectEntry
from sinks.writer import ObjectWriter, StoredObject

T = TypeVar("T")

RUNNER_COUNTERS: Final = ("rows", "files", "outputs")
"""The manifest counters the runner fills itself; a job's own counters take other names."""

_SEGMENT: Final = re.compile(r"[A-Za-z0-9._=-]+")


class JobError(FeedvaultError):
    """A job cannot finish: bad or missing input, inconsistent data. The message names the
    object and the problem; the run ends incomplete with it in the manifest (exit 1)."""


class Job(Protocol):
    """A batch job. ``name`` is its registry name (and its output directory);
    ``needs_input``: it reads ``INPUT_BUCKET``/``INPUT_PREFIX``|``INPUT_KEY``."""

    @property
    def name(self) -> str: ...

    @property
    def needs_input(self) -> bool: ...

    def parameters(self) -> dict[str, Any]:
        """The job's effective parameters (JSON-serializable, no secrets), for the manifest."""
        ...

    async def run(self, ctx: JobContext) -> None:
        """Do the work: read through ``ctx.input``, compute through ``ctx.run_cpu``, write
        through ``ctx.write_output``. Return normally only when every output is written."""
        ...


class FileJob:
    """What the jobs over a prefix of input files share (``ecommerce``, ``weather``,
    ``reconcile``): they need input, take no parameter from the environment, report the
    :meth:`parameters` a subclass fixes (none by default) and make their sample input with
    their sampler in :data:`batch.samples.SAMPLERS`. A subclass sets ``name`` and writes
    :meth:`run` (a :class:`Job` and a :class:`SampleSource`)."""

    name: ClassVar[str]
    needs_input: ClassVar[bool] = True

    @classmethod
    def from_env(cls, env: Env) -> Self:
        return cls()

    def parameters(self) -> dict[str, Any]:
        return {}

    def sample(self, seed: int) -> Iterator[tuple[str, bytes]]:
        from batch.samples import SAMPLERS  # the samplers are for `feedvault sample` only

        yield from sorted(SAMPLERS[self.name](seed).items())


class JobParameters(Protocol):
    """A job's validated parameters (see :class:`ParametersJob`)."""

    @classmethod
    def from_env(cls, env: Env) -> Self:
        """The parameters from the environment; :class:`ConfigError` names the variable at
        fault."""
        ...

    def public_dict(self) -> dict[str, Any]:
        """The parameters as the manifest reports them (JSON-serializable, no secrets)."""
        ...


_Params = TypeVar("_Params", bound=JobParameters)


class ParametersJob(Generic[_Params]):
    """What the jobs configured by one parameters object share (``computation``, ``compact``):
    ``from_env`` reads their ``parameters_type`` into ``params``, and :meth:`parameters` reports
    its ``public_dict()``. A subclass sets ``name``, ``needs_input`` and ``parameters_type`` and
    writes :meth:`run` (a :class:`Job`)."""

    name: ClassVar[str]
    needs_input: ClassVar[bool]
    parameters_type: ClassVar[type[JobParameters]]

    def __init__(self, params: _Params) -> None:
        self.params = params

    @classmethod
    def from_env(cls, env: Env) -> Self:
        return cls(cast(_Params, cls.parameters_type.from_env(env)))

    def parameters(self) -> dict[str, Any]:
        return self.params.public_dict()


@runtime_checkable
class SampleSource(Protocol):
    """A job that reads input can also make a realistic sample of it
    (``feedvault sample JOB --out URL [--seed N]``)."""

    def sample(self, seed: int) -> Iterator[tuple[str, bytes]]:
        """``(relative_key, body)`` pairs of sample input; the same ``seed`` gives the same
        bytes. The CLI writes each under the ``--out`` prefix, ready to be ``INPUT_PREFIX``."""
        ...


def check_relative_key(relative_key: str) -> str:
    """``relative_key`` if it is a safe relative key (``/``-separated segments of
    ``[A-Za-z0-9._=-]``, none ``.`` or ``..``); else :class:`ValueError` (a job's bug)."""
    segments = relative_key.split("/")
    if not relative_key or any(
        not _SEGMENT.fullmatch(seg) or seg in (".", "..") for seg in segments
    ):
        raise ValueError(f"output key {relative_key!r} is not a safe relative key")
    return relative_key


class InputReader:
    """A job's input: every object under a prefix, or one object. Keys are full keys in the
    input store; :meth:`relative` strips the prefix for naming outputs."""

    def __init__(self, store: ObjectWriter, location: InputLocation) -> None:
        self.store = store
        self.location = location

    @property
    def url(self) -> str:
        return self.location.url

    @property
    def prefix(self) -> str:
        return self.location.store.prefix

    async def keys(self) -> list[str]:
        """The input objects' keys, sorted: the one ``INPUT_KEY``, or every object under the
        prefix (``.../`` folder markers excluded). Raises :class:`JobError` if there are none."""
        if self.location.key is not None:
            return [self.location.key]
        listed = await self.store.list(self.prefix)
        keys = [obj.key for obj in listed if not obj.key.endswith("/")]
        if not keys:
            raise JobError(f"no input objects under {self.url}")
        return keys

    async def read(self, key: str) -> bytes:
        """The bytes of ``key``; :class:`JobError` if it does not exist."""
        from engine.errors import ObjectNotFound

        try:
            return await self.store.get(key)
        except ObjectNotFound as exc:
            raise JobError(f"input object {key!r} not found in {self.url}") from exc

    def relative(self, key: str) -> str:
        """``key`` without the input prefix (the file name for a single ``INPUT_KEY``)."""
        if self.location.key is not None:
            return key.rsplit("/", 1)[-1]
        return key[len(self.prefix) :] if key.startswith(self.prefix) else key


@dataclass(eq=False, repr=False, kw_only=True)
class JobContext:
    """What the runner gives a job; see the module docstring. No generated ``repr``: ``env``
    may hold secrets."""

    job: str
    run_id: str
    env: Env
    output: InitVar[ObjectWriter]
    output_prefix: InitVar[str]
    executor: InitVar[Executor]
    cpu_workers: int
    """How many ``run_cpu`` calls can run at once (``BATCH_CPU_WORKERS``)."""
    clock: Clock
    input: InputReader | None = None
    progress: JobProgress = field(default_factory=JobProgress)

    def __post_init__(self, output: ObjectWriter, output_prefix: str, executor: Executor) -> None:
        self._output = output
        self._output_prefix = output_prefix
        self._executor = executor
        self._outputs: dict[str, StoredObjectEntry] = {}
        self._counters: dict[str, int] = {}

    @property
    def counters(self) -> dict[str, int]:
        """The job's own counters so far (a copy), in the order first counted."""
        return dict(self._counters)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the job's counter ``name`` (``n=0`` makes it appear in the manifest
        at 0). :class:`ValueError` for a name of :data:`RUNNER_COUNTERS` (a job's bug)."""
        if name in RUNNER_COUNTERS:
            raise ValueError(f"counter {name!r} is the runner's own")
        self._counters[name] = self._counters.get(name, 0) + n

    @property
    def output_root(self) -> str:
        """``{OUTPUT_PREFIX}{job}/``: every output key starts with it."""
        return f"{self._output_prefix}{self.job}/"

    def output_key(self, relative_key: str) -> str:
        """The full, deterministic key of an output."""
        return self.output_root + check_relative_key(relative_key)

    @property
    def outputs(self) -> list[StoredObjectEntry]:
        """Every output written so far, in key order (one entry per key)."""
        return [self._outputs[key] for key in sorted(self._outputs)]

    def require_input(self) -> InputReader:
        """``self.input``; a job declaring ``needs_input`` always has one."""
        if self.input is None:
            raise RuntimeError(f"job {self.job!r} has no input (needs_input is False)")
        return self.input

    async def write_output(
        self, relative_key: str, body: bytes, *, records: int = 0
    ) -> StoredObject:
        """Store ``body`` at :meth:`output_key` (durable on return) and record it for the
        manifest with ``records`` (the job's row count). Writing a key again replaces it."""
        key = self.output_key(relative_key)
        stored = await self._output.put(key, body)
        self._outputs[key] = StoredObjectEntry(
            key=stored.key,
            records=records,
            bytes=stored.bytes,
            sha256=stored.sha256,
            first_ts_event=0,
            last_ts_event=0,
            symbols={},
            stored_at=self.clock.time_ns(),
            kind=OUTPUT_KIND,
        )
        return stored

    async def write_outputs(self, outputs: Iterable[tuple[str, bytes, int]]) -> None:
        """:meth:`write_output` each ``(relative_key, body, records)`` of ``outputs``, in order."""
        for relative_key, body, records in outputs:
            await self.write_output(relative_key, body, records=records)

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread of the run's pool (``BATCH_CPU_WORKERS`` threads).

        Threads, not processes: the heavy work is numpy (and compression, hashing), which
        releases the GIL, so threads use every core without pickling inputs and results or
        paying a process start (~0.3 s to import numpy), and they share the job's arrays.
        Pure-Python work still holds the GIL in turns (every 5 ms), so the loop stays
        responsive either way.

        Cancellable at the await: on the deadline or a signal the awaiting coroutine gets
        :class:`asyncio.CancelledError` at once; the thread cannot be interrupted and finishes
        the call in the background, its result discarded. So split work into calls of well
        under a second each (chunks): that bounds how long a stopped job keeps a core busy
        and delays the exit.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
