"""Shared plumbing of the jobs that read input files (``ecommerce``, ``reconcile``, ``weather``).

:func:`read_inputs` reads every input object (or the keys a job chose), sorted by key, as
``(relative_name, bytes)`` pairs, counting files and lines in ``ctx.progress``;
:func:`input_errors` turns a :class:`~batch.csvutil.InputError` (a malformed, empty or non-UTF-8
file) raised by the pure parsers into the :class:`~batch.job.JobError` the runner reports
(incomplete manifest, exit 1), naming the input location and the file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from batch.csvutil import InputError
from batch.job import InputReader, JobContext, JobError


async def read_inputs(
    ctx: JobContext, keys: Sequence[str] | None = None
) -> list[tuple[str, bytes]]:
    """Every input object (or only ``keys``, full keys chosen by the job) as ``(relative name,
    bytes)``, in key order; :class:`JobError` when there is none or one is missing."""
    reader = ctx.require_input()
    keys = sorted(await reader.keys() if keys is None else keys)
    ctx.progress.set_totals(files=len(keys))
    files: list[tuple[str, bytes]] = []
    for key in keys:
        body = await reader.read(key)
        files.append((reader.relative(key), body))
        ctx.progress.add_rows(body.count(b"\n"))
        ctx.progress.file_done()
    return files


@contextlib.contextmanager
def input_errors(reader: InputReader) -> Iterator[None]:
    """Re-raise :class:`InputError` as :class:`JobError` naming ``reader.url``."""
    try:
        yield
    except InputError as exc:
        raise JobError(f"bad input in {reader.url}: {exc}") from exc
