"""Job names -> lazy factories (``feedvault batch JOB``, ``feedvault sample JOB``).

A :class:`JobSpec` says whether the job reads input without importing it; its ``factory``
imports the job's module only when called (numpy and friends load only for the job that runs)
and builds the job from the environment, raising :class:`~engine.errors.ConfigError` naming
the variable for a bad parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from batch.job import Job
from engine.errors import ConfigError
from engine.settings import Env


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A registered job: ``needs_input`` (reads ``INPUT_*``), a one-line ``summary``, and the
    lazy ``factory``."""

    name: str
    needs_input: bool
    summary: str
    factory: Callable[[Env], Job]
    sampler: Callable[[], object] | None = None
    """Builds the job's sample source when making a sample needs none of its parameters
    (default: the job itself, built by ``factory``)."""


def _computation(env: Env) -> Job:
    from batch.computation import ComputationJob

    return ComputationJob.from_env(env)


def _compact(env: Env) -> Job:
    from batch.compact_job import CompactJob

    return CompactJob.from_env(env)


def _compact_sampler() -> object:
    from batch.compact_job import CompactSample

    return CompactSample()


def _ecommerce(env: Env) -> Job:
    from batch.ecommerce_job import EcommerceJob

    return EcommerceJob.from_env(env)


def _reconcile(env: Env) -> Job:
    from batch.reconcile_job import ReconcileJob

    return ReconcileJob.from_env(env)


def _weather(env: Env) -> Job:
    from batch.weather_job import WeatherJob

    return WeatherJob.from_env(env)


JOBS: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec(
            "computation",
            needs_input=False,
            summary="Monte Carlo VaR / expected shortfall of GBM price paths (seeded)",
            factory=_computation,
        ),
        JobSpec(
            "compact",
            needs_input=True,
            summary="streamed trades and books of a date range -> Parquet, bars, book snapshots",
            factory=_compact,
            sampler=_compact_sampler,
        ),
        JobSpec(
            "ecommerce",
            needs_input=True,
            summary="order CSVs -> daily order KPIs, category KPIs and rejected rows",
            factory=_ecommerce,
        ),
        JobSpec(
            "reconcile",
            needs_input=True,
            summary="ledger*.csv vs processor*.csv -> per-transaction details and a summary",
            factory=_reconcile,
        ),
        JobSpec(
            "weather",
            needs_input=True,
            summary="station observations -> SI daily summaries, anomalies, quality report",
            factory=_weather,
        ),
    )
}


def job_names() -> list[str]:
    return sorted(JOBS)


def jobs_help(*, reading_input_only: bool = False) -> str:
    """Every job (or those that read input) on its own line with its one-line summary, in
    name order, for ``--help``: ``"  compact      streamed trades ..."``."""
    specs = [JOBS[name] for name in job_names()]
    if reading_input_only:
        specs = [spec for spec in specs if spec.needs_input]
    width = max(len(spec.name) for spec in specs)
    return "\n".join(f"  {spec.name:<{width}}  {spec.summary}" for spec in specs)


def get_spec(name: str) -> JobSpec:
    """The spec of ``name``; :class:`ConfigError` (variable ``JOB``) if unknown."""
    spec = JOBS.get(name)
    if spec is None:
        raise ConfigError("JOB", f"unknown job {name!r}; available: {', '.join(job_names())}")
    return spec


BATCH_LIBRARIES = ("numpy", "pyarrow")
"""What the ``batch`` extra installs for the jobs (``pip install 'feedvault[batch]'``)."""


def create_job(spec: JobSpec, env: Env) -> Job:
    """Build the job of ``spec`` from ``env`` (validating its parameters). :class:`ConfigError`
    naming the ``batch`` extra when a library of it is not installed."""
    try:
        job = spec.factory(env)
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in BATCH_LIBRARIES:
            raise
        raise ConfigError(
            missing, "is not installed; batch jobs need it: pip install 'feedvault[batch]'"
        ) from None
    if job.name != spec.name or job.needs_input != spec.needs_input:
        raise RuntimeError(f"job {spec.name!r} does not match its registry entry")
    return job
