"""Processed inputs move under ``processed/`` (the ``ecommerce`` job, docs: batch.md#ecommerce).

Where an input goes: ``{INPUT_PREFIX}{rel}`` -> ``{INPUT_PREFIX}processed/{rel}`` (the same
relative key, so sub-directories are kept); a single ``INPUT_KEY`` ``dir/name`` ->
``dir/processed/name``, beside it. The same for ``file://`` inputs (the directory, or the file's
own directory).

What is new: :func:`new_inputs` lists the input without what is already under ``processed/``
(objects under ``{INPUT_PREFIX}processed/`` are never input again). When nothing new is left it
raises :class:`~batch.job.JobError` before anything is written, so a rerun does not replace the
last outputs with empty ones: ``no input objects under URL`` when the prefix is empty, ``no new
input under URL: all N ...`` when every object is already under ``processed/``. A single
``INPUT_KEY`` that is itself in a ``processed/`` directory is refused; one that is gone but whose
``processed/`` copy exists is reported as already processed. The two "already processed" cases
raise :class:`NothingNew` (a :class:`~batch.job.JobError`), which a job may treat as a run with
nothing to do (``NO_NEW_INPUT=succeed``, docs: lake.md#event-driven-e-commerce-batch).

No archive is replaced: :func:`check_targets` refuses (before anything is written) a new input
whose ``processed/`` key already holds *different* bytes, e.g. a new file with the name of one
processed by an earlier run. Identical bytes (a copy left by an interrupted run) are fine.

When: :func:`move_to_processed` runs after every output is durable and before the runner
writes the manifest. It copies first (a put of the bytes that were read, so ``processed/`` holds
exactly what the outputs were computed from), every input, then deletes the originals: an input
is never deleted before its copy is durable. Each finished move is a log line ``input_moved``
(``source``, ``target``) and one more in the job counter ``inputs_moved`` of the manifest.

A storage failure while moving fails the run (:class:`~batch.job.JobError` naming the object
and the step: incomplete manifest, exit 1) after undoing the moves made so far: the originals
deleted are put back, then the copies whose original is in place are deleted. When the undo
succeeds every input is where it was and nothing of this run is under ``processed/``, so a rerun
processes the same inputs again; what the undo could not do is named in the error (an input
then lives only under ``processed/``: never lost). A run stopped by the deadline or a signal while
moving is not undone (it must stop promptly): each input is then at its key, under
``processed/``, or both, and ``inputs_moved`` counts the moves that finished.

Inputs must not be rewritten while the job runs: the copy is of the bytes that were read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

from batch.config import InputLocation
from batch.job import InputReader, JobContext, JobError
from engine.errors import FeedvaultError, ObjectNotFound
from engine.logs import get_logger, log_event
from engine.text import plural
from sinks.writer import ObjectWriter

PROCESSED_DIR: Final = "processed/"
MOVED_COUNTER: Final = "inputs_moved"
"""The manifest counter of the inputs moved under ``processed/`` by the run."""

log = get_logger("batch.processed")


class NothingNew(JobError):
    """Every input object is already under ``processed/``: nothing is new. Raised before
    anything is written, so the outputs of the last run are left as they are."""


def object_url(location: InputLocation, key: str) -> str:
    """``key`` of the input store as a URL (``s3://bucket/key``, ``file:///dir/key``)."""
    return InputLocation(location.store, key).url


def processed_key(location: InputLocation, key: str) -> str:
    """Where the input object ``key`` moves (see the module docstring)."""
    if location.key is not None:
        head, sep, name = key.rpartition("/")
        return f"{head}{sep}{PROCESSED_DIR}{name}"
    prefix = location.store.prefix
    return prefix + PROCESSED_DIR + key.removeprefix(prefix)


@dataclass(frozen=True, slots=True)
class NewInputs:
    """The input keys to process (sorted) and the keys already under ``processed/``."""

    keys: list[str]
    archived: frozenset[str]


async def _exists(store: ObjectWriter, key: str) -> bool:
    return any(obj.key == key for obj in await store.list(key))


async def new_inputs(reader: InputReader) -> NewInputs:
    """The input objects not yet processed; :class:`JobError` when there is none (see the
    module docstring for the messages)."""
    location = reader.location
    if location.key is not None:
        return await _new_single(reader, location.key)
    done = reader.prefix + PROCESSED_DIR
    keys = await reader.keys()  # JobError "no input objects under URL" when there is none
    fresh = sorted(key for key in keys if not key.startswith(done))
    archived = frozenset(key for key in keys if key.startswith(done))
    if not fresh:
        raise NothingNew(
            f"no new input under {reader.url}: {'the' if len(archived) == 1 else 'all'} "
            f"{plural(len(archived), 'input object', verb=('is', 'are'))} "
            f"already under {object_url(location, done)} (processed by earlier runs); "
            "the outputs of the last run are left as they are"
        )
    return NewInputs(fresh, archived)


async def _new_single(reader: InputReader, key: str) -> NewInputs:
    location = reader.location
    directory = PurePosixPath(key).parent
    if directory == PurePosixPath(".") and location.store.root is not None:
        directory = PurePosixPath(location.store.root)  # file://dir/name: the key is the name
    if directory.name == PROCESSED_DIR.rstrip("/"):
        raise JobError(
            f"input {location.url} is already under processed/ (processed by an earlier run); "
            "copy it out of processed/ to process it again"
        )
    target = processed_key(location, key)
    archived = frozenset([target]) if await _exists(reader.store, target) else frozenset()
    if not await _exists(reader.store, key):
        if archived:
            raise NothingNew(
                f"no new input: {location.url} was already processed and moved to "
                f"{object_url(location, target)}; the outputs of the last run are left as they are"
            )
        raise JobError(f"input object {key!r} not found in {reader.url}")
    return NewInputs([key], archived)


async def read_new_inputs(
    ctx: JobContext, reader: InputReader, keys: Sequence[str], *, skip_taken: bool
) -> list[tuple[str, bytes]]:
    """``(key, bytes)`` of each of ``keys`` (from :func:`new_inputs`), in order.

    An input gone since the listing is :class:`~batch.job.JobError`, except with
    ``skip_taken`` when its ``processed/`` copy exists: another run, started by the same files,
    took it between this run's listing and its read (``NO_NEW_INPUT=succeed``); it is then left
    out (one ``input_taken`` log line), not counted as a file read, and the run goes on with the
    rest, which may be none."""
    ctx.progress.set_totals(files=len(keys))
    read: list[tuple[str, bytes]] = []
    for key in keys:
        try:
            body = await reader.store.get(key)
        except ObjectNotFound:
            target = processed_key(reader.location, key)
            if not (skip_taken and await _exists(reader.store, target)):
                raise JobError(f"input object {key!r} not found in {reader.url}") from None
            log_event(
                log,
                logging.INFO,
                "input_taken",
                source=object_url(reader.location, key),
                target=object_url(reader.location, target),
            )
            continue
        read.append((key, body))
        ctx.progress.add_rows(body.count(b"\n"))
        ctx.progress.file_done()
    return read


async def check_targets(
    reader: InputReader, inputs: Sequence[tuple[str, bytes]], archived: frozenset[str]
) -> None:
    """:class:`JobError` if moving one of ``inputs`` (``(key, bytes)``) would replace a
    different object under ``processed/`` (``archived``: the keys there)."""
    location = reader.location
    for key, body in inputs:
        target = processed_key(location, key)
        if target not in archived:
            continue
        try:
            existing = await reader.store.get(target)
        except ObjectNotFound:
            continue
        if existing != body:
            raise JobError(
                f"input {object_url(location, key)} cannot move to "
                f"{object_url(location, target)}: that key already holds a different object "
                "(an input of the same name processed by an earlier run); rename the new input "
                "or move the old one away"
            )


async def move_to_processed(ctx: JobContext, inputs: Sequence[tuple[str, bytes]]) -> None:
    """Move every input ``(key, bytes read)`` under ``processed/``: copy all, then delete the
    originals; undo and raise :class:`JobError` on a storage failure (module docstring)."""
    reader = ctx.require_input()
    store, location = reader.store, reader.location
    bodies = dict(inputs)
    targets = {key: processed_key(location, key) for key in bodies}
    copied: list[str] = []  # a put of its copy was started
    removed: list[str] = []  # a delete of the original was started
    moved: set[str] = set()  # deleted: counted in inputs_moved
    step, current = "copy", ""
    try:
        for key, body in inputs:
            current = key
            copied.append(key)
            await store.put(targets[key], body)
        step = "delete of the original"
        for key, _ in inputs:
            current = key
            removed.append(key)
            await store.delete(key)
            moved.add(key)
            ctx.count(MOVED_COUNTER)
            log_event(
                log,
                logging.INFO,
                "input_moved",
                source=object_url(location, key),
                target=object_url(location, targets[key]),
            )
    except FeedvaultError as exc:
        problems = await _undo(ctx, store, location, bodies, targets, copied, removed, moved)
        outcome = (
            "undone: every input is back in place and nothing of this run is under processed/"
            if not problems
            else "not fully undone: " + "; ".join(problems)
        )
        target = object_url(location, targets[current])
        raise JobError(
            f"cannot move input {object_url(location, current)} to {target} "
            f"({step} failed: {exc}); the move was {outcome}"
        ) from exc


async def _undo(
    ctx: JobContext,
    store: ObjectWriter,
    location: InputLocation,
    bodies: dict[str, bytes],
    targets: dict[str, str],
    copied: list[str],
    removed: list[str],
    moved: set[str],
) -> list[str]:
    """Put back the originals in ``removed`` (uncounting those in ``moved``), then delete the
    copies of ``copied`` (at ``targets[key]``) whose original is in place; the problems met,
    one line each (empty: fully undone)."""
    problems: list[str] = []
    in_place = set(bodies) - set(removed)
    for key in removed:
        target = object_url(location, targets[key])
        try:
            await store.put(key, bodies[key])
        except FeedvaultError as exc:
            problems.append(f"{object_url(location, key)} is only at {target} ({exc})")
            continue
        in_place.add(key)
        if key in moved:
            ctx.count(MOVED_COUNTER, -1)
    for key in copied:
        if key not in in_place:
            continue
        target = object_url(location, targets[key])
        try:
            await store.delete(targets[key])
        except FeedvaultError as exc:
            problems.append(f"a copy of {object_url(location, key)} is left at {target} ({exc})")
    return problems
