"""``feedvault replay FILE... [--speed 1|N|max] [--out URL]`` (docs: recording-and-replay.md).

Runs the streaming pipeline of :class:`~feedvault.runner.StreamRun` (bounded queue, windowed sink,
manifest, stop sequence, signals) with one :class:`~connectors.replay.ReplaySource` in place of
the WebSocket sessions, and a :class:`~engine.clock.ReplayClock` so the sink keys and closes
windows by recorded time. The trades it writes equal those of the recorded live run, field for
field (``ts_recv`` is the recorded receive time).

Configuration, environment first (docs: configuration.md): the destination from
``S3_BUCKET``/``S3_PREFIX`` or ``--out``; ``REPLAY_SPEED`` or ``--speed`` (``max`` default, or a
positive factor); ``MAX_RUNTIME_SECONDS`` optional (real seconds; unset = no deadline); ``RUN_ID``,
the window, format, queue, stop-grace, spill and log settings as for ``stream``. ``OVERFLOW`` does
not apply: a replay never drops, the source waits for the sink. Bad settings, and inputs that do not
exist, exit 2 before anything is written (variable ``FILE`` for inputs).

Stop: the end of the input stops the run with reason :data:`END_OF_INPUT` (``end``);
SIGTERM/SIGINT stop it with ``signal``, a second signal
aborts as in ``stream``. An input found unreadable midway (a bad line, a failed S3 read) stops
the run: what was read is written, the manifest records the error, exit 1.

The manifest's ``started_at``/``stopped_at`` are recorded times (the replay clock's).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from connectors.recording import RecordedFrame
from connectors.recording_input import open_recording
from connectors.replay import Pause, ReplaySource, pause_until_stop
from connectors.session import InvalidFrameLog
from engine.batchqueue import BatchQueue
from engine.clock import SYSTEM_CLOCK, Clock, ReplayClock
from engine.errors import ConfigError, FeedvaultError
from engine.lifecycle import StopController, StopReason
from engine.logs import get_logger, log_event
from engine.settings import RANGES, Env, new_run_id, runtime_settings
from feedvault.channels import BOOK, DEFAULT_CHANNELS, TRADES, replay_channels
from feedvault.config import DEFAULT_QUEUE_MAXSIZE, StreamConfig, sink_settings
from feedvault.ecs import DEFAULT_LOOKUP, EcsLookup
from feedvault.runner import StreamRun
from feedvault.sessions import CountingSource
from sinks.manifest import BookResync, book_resync
from sinks.s3 import S3Writer
from sinks.s3security import s3_security
from sinks.writer import ObjectWriter, parse_destination, s3_destination

END_OF_INPUT: Final[StopReason] = "end"
"""The manifest's stop reason when the input ends (to become ``"end"``)."""

log = get_logger("replay")
_RUN_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """Everything ``feedvault replay`` needs: the run's settings, the inputs and the speed
    (None = as fast as possible)."""

    stream: StreamConfig
    inputs: tuple[str, ...]
    speed: float | None
    channels: Mapping[str | None, tuple[str, ...]] = field(
        default_factory=lambda: {None: (TRADES,)}
    )
    """``CHANNELS`` per exchange (None: every exchange not named), :func:`replay_channels`."""

    def wants(self, channel: str) -> Callable[[str], bool]:
        """Whether an exchange's ``channel`` is replayed."""
        channels = self.channels

        def wanted(exchange: str) -> bool:
            return channel in channels.get(exchange, channels[None])

        return wanted

    @property
    def books(self) -> bool:
        """True when some exchange's book is replayed."""
        return any(BOOK in channels for channels in self.channels.values())


def parse_speed(text: str, variable: str = "--speed") -> float | None:
    """``max`` -> None; a number in ``REPLAY_SPEED``'s range (:data:`feedvault.config.RANGES`,
    0.001 .. 1000000 times the recorded pace) -> itself; else :class:`ConfigError` naming the
    range."""
    if text.strip().lower() == "max":
        return None
    bounds = RANGES["REPLAY_SPEED"]
    try:
        speed = float(text)
    except ValueError:
        speed = math.nan
    if not math.isfinite(speed) or not bounds.holds(speed):
        raise ConfigError(variable, f"must be 'max' or a number {bounds.describe()}, got {text!r}")
    return speed


def load_replay_config(
    environ: Mapping[str, str],
    inputs: Sequence[str],
    *,
    out: str | None = None,
    speed: str | None = None,
    is_tty: bool = False,
) -> ReplayConfig:
    """Validate the replay's configuration; :class:`ConfigError` naming the variable."""
    env = Env(environ)
    if not inputs:
        raise ConfigError("FILE", "no recording given")
    destination = (
        parse_destination(out) if out is not None else s3_destination(env, "S3_BUCKET", "S3_PREFIX")
    )
    if speed is not None:
        replay_speed = parse_speed(speed)
    else:
        replay_speed = parse_speed(env.raw("REPLAY_SPEED") or "max", "REPLAY_SPEED")
    max_runtime = env.number("MAX_RUNTIME_SECONDS", math.inf)
    run_id = env.raw("RUN_ID") or new_run_id()
    if not _RUN_ID.fullmatch(run_id):
        raise ConfigError("RUN_ID", "may only hold letters, digits, '.', '_' and '-'")
    stream = StreamConfig(
        destination=destination,
        max_runtime_seconds=max_runtime,
        streams=(),
        run_id=run_id,
        sink=sink_settings(env),
        runtime=runtime_settings(env, is_tty=is_tty),
        queue_maxsize=env.integer("QUEUE_MAXSIZE", DEFAULT_QUEUE_MAXSIZE),
        overflow="block",
        run_id_generated=env.raw("RUN_ID") is None,
        s3=s3_security(environ),
        channels=env.raw("CHANNELS") or DEFAULT_CHANNELS,
    )
    return ReplayConfig(
        stream=stream,
        inputs=tuple(inputs),
        speed=replay_speed,
        channels=replay_channels(stream.channels),
    )


class ReplayRun(StreamRun):
    """One execution of ``feedvault replay``: :class:`StreamRun` with a replay source.

    ``chunks`` are the recorded frames in order; ``clock`` must start at (or before) the first
    frame's ``ts``. ``pause`` replaces the real-time wait of paced replays (tests).
    """

    metrics_command = "replay"

    def __init__(
        self,
        config: ReplayConfig,
        chunks: AsyncIterator[Sequence[RecordedFrame]],
        *,
        clock: ReplayClock,
        command: Sequence[str] = ("feedvault", "replay"),
        controller: StopController | None = None,
        install_signal_handlers: bool = True,
        writer: ObjectWriter | None = None,
        pause: Pause = pause_until_stop,
        ecs_lookup: EcsLookup = DEFAULT_LOOKUP,
    ) -> None:
        super().__init__(
            config.stream,
            command=command,
            clock=clock,
            controller=controller,
            install_signal_handlers=install_signal_handlers,
            writer=writer,
            ecs_lookup=ecs_lookup,
        )
        self.replay = config
        self.replay_clock = clock
        self._chunks = chunks
        self._pause = pause
        self.source: ReplaySource | None = None
        if config.books and self.book_queue is None:
            self.book_queue = BatchQueue(config.stream.queue_maxsize, "block")

    def public_config(self) -> dict[str, Any]:
        config = self.config.public_dict()
        for name in ("streams", "stale_seconds", "ws_urls", "capture", "binance_stream"):
            config.pop(name, None)
        if math.isinf(self.config.max_runtime_seconds):
            config["max_runtime_seconds"] = None
        config["inputs"] = list(self.replay.inputs)
        config["speed"] = "max" if self.replay.speed is None else self.replay.speed
        return config

    def metrics_wall_ns(self) -> int:
        """The EMF ``Timestamp`` is real time (the replay clock's base): metrics describe the
        replay as it runs, and CloudWatch refuses timestamps more than two weeks old."""
        return self.replay_clock.base.time_ns()

    def build_sources(self) -> Sequence[CountingSource]:
        self.source = ReplaySource(
            self._chunks,
            self.queue,
            clock=self.replay_clock,
            window_seconds=self.config.sink.window_seconds,
            counters=self.counters,
            gaps=self.gaps,
            invalid_log=InvalidFrameLog(self.counters),
            speed=self.replay.speed,
            pause=self._pause,
            on_end=self._input_ended,
            on_error=self._input_failed,
            book_queue=self.book_queue,
            book_exchanges=self.replay.wants(BOOK),
            trade_exchanges=self.replay.wants(TRADES),
        )
        return [self.source]

    def book_figures(self) -> tuple[dict[str, list[BookResync]], dict[str, int]]:
        """The manifest's ``resyncs`` and ``crossed`` from the replayed book feeds (streams
        named ``exchange:RAW_SYMBOL:book``)."""
        resyncs: dict[str, list[BookResync]] = {}
        crossed: dict[str, int] = {}
        source = self.source
        if source is None:
            return resyncs, crossed
        for exchange, feed in source.feeds.items():
            unfinished = [s.resync for s in feed.books.values() if s.resync is not None]
            for resync in source.resyncs.get(exchange, []) + unfinished:
                name = f"{exchange}:{resync.raw_symbol}:{BOOK}"
                resyncs.setdefault(name, []).append(book_resync(resync))
            for symbol, state in feed.books.items():
                if state.crossed:
                    crossed[f"{exchange}:{symbol}:{BOOK}"] = state.crossed
        return resyncs, crossed

    def _input_ended(self) -> None:
        self.controller.request_stop(END_OF_INPUT)

    def _input_failed(self, exc: FeedvaultError) -> None:
        self.error = exc
        self.controller.request_stop("error")


async def _prepend(
    first: Sequence[RecordedFrame], rest: AsyncIterator[Sequence[RecordedFrame]]
) -> AsyncIterator[Sequence[RecordedFrame]]:
    yield first
    async for chunk in rest:
        yield chunk


async def run_replay(
    config: ReplayConfig,
    *,
    command: Sequence[str] = ("feedvault", "replay"),
    base: Clock = SYSTEM_CLOCK,
    install_signal_handlers: bool = True,
) -> int:
    """Resolve the inputs (:class:`ConfigError` if one does not exist, before anything is
    written), then replay them; return the exit status (0, or 1 on a failure)."""
    async with open_recording(config.inputs, S3Writer.open) as recording:
        chunks = recording.chunks()
        try:
            first = await anext(chunks, None)
            start_ns = first[0].ts if first else base.time_ns()
            log_event(
                log,
                logging.INFO,
                "replay_start",
                inputs=[item.name for item in recording.inputs],
                speed="max" if config.speed is None else config.speed,
            )
            run = ReplayRun(
                config,
                _prepend(first, chunks) if first else chunks,
                clock=ReplayClock(start_ns, base),
                command=command,
                install_signal_handlers=install_signal_handlers,
            )
            return await run.run()
        finally:
            await chunks.aclose()
