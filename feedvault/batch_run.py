"""``feedvault batch JOB``: run one job, write its manifest last, exit (docs: batch.md).

:func:`run_batch` checks the whole configuration (the runner's settings of
:mod:`batch.config` and the job's own parameters) before touching storage: a problem exits 2
with one line on stderr naming the variable, and nothing is read or written. Then
:class:`BatchRun` opens one output writer (and a reader for the input), and runs the job in a
TaskGroup beside a guard and a progress reporter:

* the job ends normally: the manifest ``{OUTPUT_PREFIX}_manifests/{run_id}.json`` is written
  last with status ``complete`` and stop reason ``end``; exit 0;
* ``MAX_RUNTIME_SECONDS`` passes (reason ``deadline``), or the first SIGTERM/SIGINT arrives
  (reason ``signal``): the job is cancelled at once (CPU work runs off the loop, so the signal is
  handled promptly), the manifest is written ``incomplete``, exit 1. A batch job that did not
  finish is not a success, unlike a stream, whose work is done at any stop;
* the job raises (bad input, a storage failure, a bug): the manifest is written ``incomplete``
  with reason ``error`` naming the error, exit 1.

On ECS (``ECS_CONTAINER_METADATA_URI_V4``) the task's metadata is read first (bounded, never
fatal: :mod:`feedvault.ecs`): the manifest's ``ecs`` section names the task, and a generated run id
holds the task id.

An incomplete manifest lists the outputs that were written before the stop (durable, but not a
complete result); it never claims ``complete``. The manifest's ``counters`` are ``rows``,
``files``, ``outputs`` and the job's own (``ctx.count``), as they stood when the job ended.
There is no retry of a whole job: outputs have deterministic keys, so rerunning the same job on
the same input replaces them. The manifest write is bounded by ``STOP_GRACE_SECONDS``; a second
signal while it is written is logged and otherwise ignored (the write is already bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TextIO

from batch.config import BatchConfig, load_batch_config
from batch.job import InputReader, Job, JobContext
from batch.progress import JobProgress
from batch.registry import create_job, get_spec
from engine import aio
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import ConfigError, FeedvaultError, first_leaf
from engine.lifecycle import StopPolicy, StopReason
from engine.logs import configure_logging, get_logger, log_event
from engine.settings import Env
from feedvault.batch_progress import ProgressReporter
from feedvault.ecs import DEFAULT_LOOKUP, EcsLookup
from feedvault.run import ManifestRun
from sinks.writer import Destination, ObjectWriter, open_writer

log = get_logger("batch")

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
START_RETRY_SECONDS: Final = 30.0
"""How long a job retries its first write (the running manifest) while the store fails."""


@contextlib.contextmanager
def cpu_executor(workers: int) -> Iterator[ThreadPoolExecutor]:
    """The run's pool for ``ctx.run_cpu``. On exit queued calls are dropped and nothing is
    waited for: a call still running finishes its (short) chunk in the background."""
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="feedvault-cpu")
    try:
        yield executor
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


class BatchRun(ManifestRun[BatchConfig]):
    """One execution of a job. Create, then ``await run()`` for the exit status (0 or 1).

    ``output`` / ``input_store`` replace the writers opened from the configuration (the caller
    owns and closes them); ``clock`` drives the deadline and the manifest's times;
    ``progress_stream``/``is_tty`` choose where and how progress is shown (default: a bar on
    stderr when it is a TTY, log lines otherwise). ``MAX_RUNTIME_SECONDS`` is the job's own:
    it counts from the moment the job starts, after the first write.
    """

    stop_policy = StopPolicy.CANCEL
    program = "feedvault batch"
    cancel_event = "job_cancelled"
    deadline_level = logging.WARNING

    def __init__(
        self,
        config: BatchConfig,
        job: Job,
        *,
        env: Env,
        command: Sequence[str] = (),
        clock: Clock = SYSTEM_CLOCK,
        install_signal_handlers: bool = True,
        output: ObjectWriter | None = None,
        input_store: ObjectWriter | None = None,
        progress_stream: TextIO | None = None,
        is_tty: bool | None = None,
        ecs_lookup: EcsLookup = DEFAULT_LOOKUP,
    ) -> None:
        super().__init__(
            config,
            command=list(command) or ["feedvault", "batch", config.job],
            clock=clock,
            controller=None,
            install_signal_handlers=install_signal_handlers,
            max_runtime_seconds=config.max_runtime_seconds,
            ecs_lookup=ecs_lookup,
        )
        self.job = job
        self.env = env
        self._output = output
        self._input_store = input_store
        self._progress_stream = progress_stream
        self._is_tty = is_tty
        self.progress = JobProgress()
        self.completed = False
        self.error: BaseException | None = None

    @property
    def destination(self) -> Destination:
        return self.config.output

    async def execute(self) -> int:
        async with contextlib.AsyncExitStack() as stack:
            output = self._output
            if output is None:
                output = await stack.enter_async_context(
                    open_writer(self.config.output, security=self.config.s3)
                )
            # The input's client first (it reads nothing yet: a failure here leaves no running
            # manifest behind), then the first write, before any input is read.
            reader = await self._open_input(stack)
            await self.claim(
                output,
                retry_seconds=START_RETRY_SECONDS,
                stop_grace_seconds=self.config.runtime.stop_grace_seconds / 4,
            )
            executor = stack.enter_context(cpu_executor(self.config.cpu_workers))
            ctx = JobContext(
                job=self.job.name,
                run_id=self.config.run_id,
                env=self.env,
                output=output,
                output_prefix=self.config.output.prefix,
                executor=executor,
                cpu_workers=self.config.cpu_workers,
                clock=self.clock,
                input=reader,
                progress=self.progress,
            )
            self.start_deadline()
            await self._supervise(ctx)
            return await self._finish(output, ctx)

    def public_config(self) -> dict[str, Any]:
        """The runner's settings and the job's parameters (no secrets)."""
        return {**self.config.public_dict(), "parameters": self.job.parameters()}

    async def _open_input(self, stack: contextlib.AsyncExitStack) -> InputReader | None:
        location = self.config.input
        if location is None:
            return None
        store = self._input_store
        if store is None:
            store = await stack.enter_async_context(
                open_writer(location.store, security=self.config.s3)
            )
        return InputReader(store, location)

    async def _supervise(self, ctx: JobContext) -> None:
        reporter = ProgressReporter(
            self.progress,
            label=self.job.name,
            clock=self.clock,
            interval=self.config.runtime.stats_interval_seconds,
            is_tty=self._tty(),
            stream=self._progress_stream,
            emf=(
                {"Command": "batch", "Job": self.job.name}
                if self.config.runtime.metrics == "emf"
                else None
            ),
            emf_properties={"run_id": self.config.run_id},
        )
        try:
            async with asyncio.TaskGroup() as tg:
                job_task = tg.create_task(self._run_job(ctx), name=f"job-{self.job.name}")
                guard = tg.create_task(self.guard(job_task, abort_budget=0.0), name="guard")
                shower = tg.create_task(reporter.run(), name="progress")

                def _job_done(_: object) -> None:
                    guard.cancel()
                    shower.cancel()

                job_task.add_done_callback(_job_done)
        except* Exception as group:
            self.error = first_leaf(group)
            self._log_error(self.error)

    def _tty(self) -> bool:
        if self._is_tty is not None:
            return self._is_tty
        stream = self._progress_stream if self._progress_stream is not None else sys.stderr
        return stream.isatty()

    async def _run_job(self, ctx: JobContext) -> None:
        log_event(log, logging.INFO, "job_start", job=self.job.name, run_id=self.config.run_id)
        await self.job.run(ctx)
        self.completed = True

    def _log_error(self, exc: BaseException) -> None:
        log_event(log, logging.ERROR, "job_failed", job=self.job.name, error=_describe(exc))
        if not isinstance(exc, FeedvaultError):  # a bug: keep the traceback
            traceback.print_exception(exc, file=sys.stderr)

    async def _finish(self, output: ObjectWriter, ctx: JobContext) -> int:
        """Write the manifest (last) and decide the exit status."""
        complete = self.completed and self.error is None
        reason: StopReason = "end"
        if self.error is not None:
            reason = "error"
        elif not complete:
            reason = self.controller.reason or "error"
        counters = {
            "rows": self.progress.rows,
            "files": self.progress.files,
            "outputs": len(ctx.outputs),
            **ctx.counters,
        }
        if not complete and self.error is None:
            detail = {"deadline": "MAX_RUNTIME_SECONDS passed", "signal": "stopped by a signal"}
            error: str | None = f"job did not finish: {detail.get(reason, reason)}"
        else:
            error = _describe(self.error) if self.error is not None else None
        manifest = self.new_manifest(
            status="complete" if complete else "incomplete",
            stop_reason=reason,
            objects=ctx.outputs,
            counters=counters,
            error=error,
        )
        if not await self.write_final(output, manifest, self.config.runtime.stop_grace_seconds):
            return EXIT_FAILURE
        log_event(
            log,
            logging.INFO,
            "run_end",
            run_id=self.config.run_id,
            job=self.job.name,
            status=manifest.status,
            stop_reason=reason,
            outputs=len(manifest.objects),
            counters=counters,
            error=error,
            **self.real_figures(),
        )
        return EXIT_OK if complete else EXIT_FAILURE


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FeedvaultError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def prepare_batch(
    job_name: str,
    environ: Mapping[str, str],
    *,
    in_url: str | None = None,
    out_url: str | None = None,
    is_tty: bool = False,
) -> tuple[BatchConfig, Job]:
    """Validate everything ``feedvault batch`` needs; :class:`ConfigError` on the first
    problem (the job name, the locations, the runner's settings, then the job's parameters)."""
    spec = get_spec(job_name)
    config = load_batch_config(
        job_name,
        environ,
        needs_input=spec.needs_input,
        in_url=in_url,
        out_url=out_url,
        is_tty=is_tty,
    )
    return config, create_job(spec, Env(environ))


def run_batch(
    job_name: str,
    environ: Mapping[str, str],
    in_url: str | None = None,
    out_url: str | None = None,
    *,
    command: Sequence[str] = (),
) -> int:
    """``feedvault batch JOB``: the exit status. 2 = configuration error (one line on stderr
    naming the variable; nothing read or written); 1 = the job failed, was stopped by the
    deadline or a signal, or its manifest could not be written (a batch job that did not
    finish is not a success); 0 = the job completed and its manifest is written."""
    try:
        config, job = prepare_batch(
            job_name, environ, in_url=in_url, out_url=out_url, is_tty=sys.stdout.isatty()
        )
    except ConfigError as exc:
        print(f"feedvault batch: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.runtime.log_level, config.runtime.log_format)
    run = BatchRun(config, job, env=Env(environ), command=command)
    return aio.run(run.run())
