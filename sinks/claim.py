"""A run's first write: its ``running`` manifest, created only if the run id is new.

Before anything connects, a run (stream, replay, batch) stores its manifest with ``status:
running`` through :meth:`~sinks.writer.ObjectWriter.create` (S3 ``If-None-Match: *``, an
exclusive file on ``file://``). That one write proves, before any data is at stake, that:

- the destination exists and the run may write to it. A refusal no retry fixes (no such bucket,
  access denied, invalid or missing credentials, a read-only or missing directory:
  :class:`~engine.errors.StorageRefused`) is a configuration error naming the destination's
  variable (exit 2, nothing else written);
- the run id is new at this destination (an existing manifest: configuration error naming
  ``RUN_ID`` and the manifest), so a second run can never overwrite a first one's objects;
- the store answers. A transient failure (timeouts, 5xx, refused connections) is retried with
  capped backoff for ``retry_seconds``; past that budget the run ends with
  :class:`~engine.errors.DestinationUnavailable` (exit 1).

A run killed after this point leaves its ``running`` manifest behind: ``feedvault verify`` and
``feedvault runs`` report it as a run that never finished. The final manifest replaces it.

The retries are :func:`engine.retry.retry` under :data:`START_RETRY` (what is retried: a
:class:`~engine.errors.StorageError` other than a refusal or an existing manifest); each wait
is interruptible by the run's stop request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from functools import partial
from random import Random
from typing import Final

from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import (
    AlreadyExists,
    ConfigError,
    DestinationUnavailable,
    StorageError,
    StorageRefused,
)
from engine.logs import get_logger, log_event
from engine.retry import AtBudget, Jitter, RetryEvent, RetryPolicy, retry
from engine.text import plural
from sinks.manifest import Manifest, manifest_key
from sinks.writer import Destination, ObjectWriter, StoredObject, sha256_hex

log = get_logger("claim")

FIRST_DELAY_SECONDS: Final = 0.5
MAX_DELAY_SECONDS: Final = 8.0
START_RETRY: Final = RetryPolicy(
    initial=FIRST_DELAY_SECONDS, cap=MAX_DELAY_SECONDS, jitter=Jitter.FULL, at_budget=AtBudget.CUT
)
"""The first write's retries (its budget is the run's ``retry_seconds``): full jitter, as many
tasks may start against one store at once; the last wait is cut to end at the budget, for one
last attempt there."""
MIN_ATTEMPT_SECONDS: Final = 5.0
"""An attempt is given the budget left, and never less than this."""


async def claim_run(
    writer: ObjectWriter,
    destination: Destination,
    manifest: Manifest,
    *,
    retry_seconds: float,
    clock: Clock = SYSTEM_CLOCK,
    rng: Random | None = None,
    stop: asyncio.Event | None = None,
    stop_grace_seconds: float = MIN_ATTEMPT_SECONDS,
) -> StoredObject:
    """Create ``manifest`` (``status: running``) at its key under ``destination``.

    Raises :class:`~engine.errors.ConfigError` (the destination refused, or the run id is
    taken) or :class:`~engine.errors.DestinationUnavailable` (transient failures for longer
    than ``retry_seconds``, or ``stop`` set while the store did not answer).

    An ``AlreadyExists`` answer is read back: when the manifest there is this very body, an
    earlier attempt of this claim landed although its answer was lost (a timeout, a dropped
    connection, the SDK's own retry), and the claim has succeeded.

    ``stop`` (the run's stop request, a signal): no further attempt is made; the attempt in
    flight is given ``stop_grace_seconds`` more to finish, so a signal during a start-up that
    is going well still ends in a normal stop. Cancel-safe: a cancelled create may or may not
    have stored the manifest, which is only ever the same running manifest."""
    key = manifest_key(destination.prefix, manifest.run_id)
    body = manifest.to_json()
    policy = replace(START_RETRY, budget=retry_seconds).using(rng)
    started = clock.monotonic()
    deadline = started + retry_seconds
    attempts = 0
    bound = MIN_ATTEMPT_SECONDS

    async def create() -> StoredObject:
        nonlocal attempts, bound
        attempts += 1
        # Each attempt is bounded (real time: an injected clock may stand still), so a store
        # that accepts connections and never answers is a failing store.
        bound = max(deadline - clock.monotonic(), MIN_ATTEMPT_SECONDS)
        return await _attempt(writer, key, body, bound, stop, stop_grace_seconds)

    def retrying(event: RetryEvent) -> None:
        log_event(
            log,
            logging.WARNING,
            "destination_retry",
            destination=destination.url,
            **event.log_fields(),
        )

    try:
        return await retry(
            create,
            policy,
            retry_on=(StorageError,),
            # No retry fixes these; and a stop request ends the start-up.
            unless=lambda exc: (
                isinstance(exc, (AlreadyExists, StorageRefused))
                or (stop is not None and stop.is_set())
            ),
            clock=clock,
            sleep=partial(_pause, stop=stop),
            on_retry=retrying,
            started=started,
        )
    except TimeoutError as exc:  # the attempt had all the budget left (or the minimum)
        raise DestinationUnavailable(
            f"{destination.variable}: {destination.url} did not answer "
            f"({_attempts(attempts)} in {retry_seconds:g} s; the last got no answer "
            f"within {bound:.3g} s{_stopped(stop)})"
        ) from exc
    except AlreadyExists as exc:
        if await _holds(writer, key, body):
            return StoredObject(key=key, bytes=len(body), sha256=sha256_hex(body))
        raise ConfigError(
            "RUN_ID",
            f"run id {manifest.run_id!r} is already used at {destination.url}: "
            f"{_where(destination, key)} exists (choose a new RUN_ID, or leave it unset)",
        ) from exc
    except StorageRefused as exc:
        raise ConfigError(destination.variable, _refusal(destination, exc)) from exc
    except StorageError as exc:  # past the budget, or asked to stop
        raise DestinationUnavailable(
            f"{destination.variable}: {destination.url} did not answer "
            f"({_attempts(attempts)} in {retry_seconds:g} s{_stopped(stop)}): {exc}"
        ) from exc


async def _attempt(
    writer: ObjectWriter,
    key: str,
    body: bytes,
    bound: float,
    stop: asyncio.Event | None,
    stop_grace_seconds: float,
) -> StoredObject:
    """One create within ``bound`` seconds, cut to ``stop_grace_seconds`` once ``stop`` is
    set (TimeoutError either way)."""
    async with asyncio.timeout(bound) as scope:
        if stop is None:
            return await writer.create(key, body)
        create = asyncio.ensure_future(writer.create(key, body))
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({create, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not create.done():
                loop = asyncio.get_running_loop()
                when = scope.when()
                cut = loop.time() + stop_grace_seconds
                scope.reschedule(cut if when is None else min(when, cut))
            return await create
        finally:
            waiter.cancel()
            create.cancel()


async def _pause(seconds: float, *, stop: asyncio.Event | None) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def _holds(writer: ObjectWriter, key: str, body: bytes) -> bool:
    """Whether the object at ``key`` is ``body`` (a create of ours that landed unanswered)."""
    try:
        async with asyncio.timeout(MIN_ATTEMPT_SECONDS):
            return await writer.get(key) == body
    except (StorageError, TimeoutError):
        return False


def _stopped(stop: asyncio.Event | None) -> str:
    return "; the run was asked to stop" if stop is not None and stop.is_set() else ""


def _attempts(count: int) -> str:
    return plural(count, "attempt")


def _where(destination: Destination, key: str) -> str:
    if destination.scheme == "s3":
        return f"s3://{destination.bucket}/{key}"
    return f"{destination.root}/{key}"


def _refusal(destination: Destination, exc: StorageRefused) -> str:
    """The one-line reason: the store's own words for a missing bucket (they name it and
    the code), else the destination and the store's message."""
    if exc.code == "NoSuchBucket":
        return f"bucket {destination.bucket!r} does not exist (NoSuchBucket)"
    return f"{destination.url} refused the run's first write: {exc}"
