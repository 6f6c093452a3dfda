"""``feedvault sample JOB --out URL [--seed N]``: seeded, realistic job input (docs: batch.md).

Every job that reads input offers :meth:`~batch.job.SampleSource.sample`; its objects are
written under the ``--out`` prefix, which can then be the job's ``INPUT_PREFIX`` (or ``--in``).
The same seed gives byte-identical objects. The seed comes from ``--seed``, else
``SAMPLE_SEED``, else 0. A job that reads no input (``computation``) has nothing to sample:
exit 2. Storage failures exit 1.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

from batch.job import SampleSource
from batch.registry import create_job, get_spec
from engine import aio
from engine.errors import ConfigError, StorageError
from engine.settings import Env
from engine.text import plural
from sinks.writer import Destination, open_writer, parse_destination


def prepare_sample(
    job_name: str, environ: Mapping[str, str], out_url: str, seed: str | None
) -> tuple[SampleSource, Destination, int]:
    """Validate the command; :class:`ConfigError` naming the flag or variable."""
    spec = get_spec(job_name)
    if not spec.needs_input:
        raise ConfigError("JOB", f"job {job_name!r} reads no input; there is nothing to sample")
    destination = parse_destination(out_url, "--out")
    env = Env(environ)
    if seed is not None:
        number = Env({"--seed": seed}).integer("--seed", 0, minimum=0)
    else:
        number = env.integer("SAMPLE_SEED", 0, minimum=0)
    job = spec.sampler() if spec.sampler is not None else create_job(spec, env)
    if not isinstance(job, SampleSource):
        raise ConfigError("JOB", f"job {job_name!r} has no sample generator")
    return job, destination, number


@runtime_checkable
class PrefixedSampleSource(Protocol):
    """A sample whose objects name each other by full key (``compact``'s manifests list
    their objects), so it is generated for its destination prefix."""

    def sample_under(self, prefix: str, seed: int) -> Iterator[tuple[str, bytes]]:
        """``(full key, body)`` pairs under ``prefix``."""
        ...


async def write_sample(source: SampleSource, destination: Destination, seed: int) -> list[str]:
    """Write the sample under ``destination``; return the keys written."""
    if isinstance(source, PrefixedSampleSource):
        pairs = source.sample_under(destination.prefix, seed)
    else:
        pairs = ((destination.prefix + key, body) for key, body in source.sample(seed))
    keys: list[str] = []
    async with open_writer(destination) as writer:
        for key, body in pairs:
            stored = await writer.put(key, body)
            keys.append(stored.key)
    return keys


def run_sample(job_name: str, environ: Mapping[str, str], out_url: str, seed: str | None) -> int:
    """The exit status of ``feedvault sample``: 0 written, 1 storage failure, 2 usage error.
    Prints one line per object written, then a summary, on stdout."""
    try:
        source, destination, number = prepare_sample(job_name, environ, out_url, seed)
    except ConfigError as exc:
        print(f"feedvault sample: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        keys = aio.run(write_sample(source, destination, number))
    except StorageError as exc:
        print(f"feedvault sample: {exc}", file=sys.stderr)
        return 1
    for key in keys:
        print(key)
    print(f"wrote {plural(len(keys), 'object')} to {destination.url} (seed {number})")
    return 0
