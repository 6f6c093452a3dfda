"""Configuration of ``feedvault batch JOB`` (docs: batch.md), checked fully before any storage.

The environment contract:

==========================  =================================================================
``OUTPUT_BUCKET``           required (or ``--out``): the bucket outputs and the manifest go to
``OUTPUT_PREFIX``           required (or ``--out``): key prefix, e.g. ``batch/``
``INPUT_BUCKET``            required for a job that reads input (or ``--in``)
``INPUT_PREFIX``            every object under this prefix is the input, or ...
``INPUT_KEY``               ... this one object (a full key); exactly one of the two
``MAX_RUNTIME_SECONDS``     optional (> 0 .. 366 days): a job still running then is stopped
                            (incomplete, exit 1)
``RUN_ID``                  optional (default: sortable time + random suffix)
``BATCH_CPU_WORKERS``       optional (1 .. 64): threads for CPU-bound work (default: CPUs
                            available)
==========================  =================================================================

plus the S3 security settings ``S3_SSE``, ``S3_SSE_KMS_KEY_ID`` and ``S3_EXPECTED_BUCKET_OWNER``
(:mod:`sinks.s3security`: they apply to the output and the input bucket alike), the shared
``LOG_LEVEL``, ``LOG_FORMAT``, ``STATS_INTERVAL_SECONDS`` (the interval of the
progress log lines), ``STOP_GRACE_SECONDS`` (bounds the manifest write) and the AWS variables.

``--out s3://bucket/prefix/`` or ``--out file:///dir/`` replaces ``OUTPUT_BUCKET`` and
``OUTPUT_PREFIX``. ``--in`` replaces the input variables: ``s3://bucket/prefix/`` (ends with
``/``, or the bucket alone) is a prefix, ``s3://bucket/key`` one object; ``file:///dir/`` a
directory, ``file:///dir/name.csv`` one file.

Every problem raises :class:`~engine.errors.ConfigError` naming the variable (or flag); the
CLI turns it into exit status 2 with one line on stderr, before anything is read or written.
Numeric settings are checked against their ranges in :data:`engine.settings.RANGES` (the job
parameters ``COMPUTATION_SEED`` and ``SAMPLE_SEED`` included), so the message names the range.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from engine.errors import ConfigError
from engine.settings import RANGES, Env, RuntimeSettings, new_run_id, runtime_settings
from sinks.keys import validate_prefix
from sinks.s3security import S3Security, s3_security
from sinks.writer import Destination, parse_destination, s3_destination

MAX_CPU_WORKERS: Final = int(RANGES["BATCH_CPU_WORKERS"].high)
_RUN_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")
_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True, slots=True)
class InputLocation:
    """Where a job reads: every object under ``store.prefix``, or the one object ``key``
    (a full key in ``store``'s bucket or directory) when set."""

    store: Destination
    key: str | None = None

    @property
    def url(self) -> str:
        """The location as a URL, for logs and the manifest."""
        if self.key is None:
            return self.store.url
        if self.store.scheme == "s3":
            return f"s3://{self.store.bucket}/{self.key}"
        return f"file://{self.store.root}/{self.key}"


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """Everything the batch runner needs apart from the job's own parameters."""

    job: str
    output: Destination
    input: InputLocation | None
    max_runtime_seconds: float | None
    run_id: str
    cpu_workers: int
    runtime: RuntimeSettings
    run_id_generated: bool = False
    """True when ``RUN_ID`` was not given: a run on ECS puts its task id into ``run_id``."""
    s3: S3Security = field(default_factory=S3Security)
    """The S3 security settings, checked here; every S3 writer applies them."""

    def public_dict(self) -> dict[str, Any]:
        """The effective configuration for the manifest and the start log line (no secrets)."""
        return {
            "job": self.job,
            "output": self.output.url,
            "input": self.input.url if self.input is not None else None,
            "max_runtime_seconds": self.max_runtime_seconds,
            "run_id": self.run_id,
            "cpu_workers": self.cpu_workers,
            "stop_grace_seconds": self.runtime.stop_grace_seconds,
            "stats_interval_seconds": self.runtime.stats_interval_seconds,
            **self.s3.public_dict(),
        }


def available_cpus() -> int:
    """CPUs this process may run on (the task's vCPUs on Fargate)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


def _check_key(key: str, variable: str) -> str:
    if key.startswith("/") or key.endswith("/") or "\x00" in key:
        raise ConfigError(variable, f"{key!r} is not an object key (no leading or trailing '/')")
    return key


def parse_input_url(url: str, variable: str = "--in") -> InputLocation:
    """``--in``: ``s3://bucket/prefix/`` | ``s3://bucket/key`` | ``file:///dir/`` |
    ``file:///dir/file``; :class:`ConfigError` naming ``variable`` if invalid."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.scheme == "s3":
        inner = path[1:] if path.startswith("/") else path
        if inner == "" or inner.endswith("/"):
            return InputLocation(parse_destination(url, variable))
        store = parse_destination(f"s3://{parts.netloc}/", variable)
        return InputLocation(store, _check_key(inner, variable))
    if parts.scheme == "file" and path and not path.endswith("/"):
        file = PurePosixPath(path)
        store = parse_destination(f"file://{file.parent}/", variable)
        return InputLocation(store, _check_key(file.name, variable))
    return InputLocation(parse_destination(url, variable))


def _bucket(env: Env, variable: str) -> str:
    bucket = env.required(variable)
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(variable, f"{bucket!r} is not a valid S3 bucket name")
    return bucket


def input_from_env(env: Env) -> InputLocation:
    """``INPUT_BUCKET`` with exactly one of ``INPUT_PREFIX`` / ``INPUT_KEY``."""
    bucket = _bucket(env, "INPUT_BUCKET")
    prefix = env.raw("INPUT_PREFIX")
    key = env.raw("INPUT_KEY")
    if prefix is not None and key is not None:
        raise ConfigError("INPUT_KEY", "set INPUT_PREFIX or INPUT_KEY, not both")
    if key is not None:
        return InputLocation(Destination("s3", "", bucket=bucket), _check_key(key, "INPUT_KEY"))
    if prefix is None:
        raise ConfigError("INPUT_PREFIX", "is required but not set (or INPUT_KEY for one object)")
    return InputLocation(Destination("s3", validate_prefix(prefix, "INPUT_PREFIX"), bucket=bucket))


def load_batch_config(
    job: str,
    environ: Mapping[str, str],
    *,
    needs_input: bool,
    in_url: str | None = None,
    out_url: str | None = None,
    is_tty: bool = False,
) -> BatchConfig:
    """Validate the runner's settings for ``job``; raise :class:`ConfigError` on the first
    problem. The input settings are read only when ``needs_input``; ``--in`` is refused for a
    job that reads none (so a mistaken command line is not silently accepted)."""
    env = Env(environ)
    if out_url is not None:
        output = parse_destination(out_url, "--out")
    else:
        output = s3_destination(env, "OUTPUT_BUCKET", "OUTPUT_PREFIX")
    location: InputLocation | None = None
    if needs_input:
        location = parse_input_url(in_url) if in_url is not None else input_from_env(env)
    elif in_url is not None:
        raise ConfigError("--in", f"job {job!r} reads no input")
    max_runtime = (
        env.number("MAX_RUNTIME_SECONDS", None) if env.raw("MAX_RUNTIME_SECONDS") else None
    )
    run_id = env.raw("RUN_ID") or new_run_id()
    if not _RUN_ID.fullmatch(run_id):
        raise ConfigError("RUN_ID", "may only hold letters, digits, '.', '_' and '-'")
    workers = env.integer("BATCH_CPU_WORKERS", min(available_cpus(), MAX_CPU_WORKERS))
    return BatchConfig(
        job=job,
        output=output,
        input=location,
        max_runtime_seconds=max_runtime,
        run_id=run_id,
        cpu_workers=workers,
        runtime=runtime_settings(env, is_tty=is_tty),
        run_id_generated=env.raw("RUN_ID") is None,
        s3=s3_security(environ),
    )
