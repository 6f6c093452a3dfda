"""Configuration from the environment (docs: configuration.md), checked before anything connects.

Every setting is an environment variable; a CLI flag, where one exists, wins over it. Settings are
parsed into frozen dataclasses. Any missing or invalid setting raises :class:`ConfigError` naming
the variable; the CLI turns that into one line on stderr and exit status 2, before any socket is
opened or any object written. There is no silent default for a location (bucket, prefix).

Every numeric setting has a documented range (:data:`RANGES`, docs: configuration.md): a value
outside it (``WINDOW_SECONDS=100000000000000000000``) is refused with a message that names the
variable and the range, rather than reaching code that cannot work with it.
``WINDOW_SECONDS`` must also keep each window inside one hour (or one day) of the key's
``date``/``hour`` partition: see :func:`check_window_seconds`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from connectors.registry import PROTOCOLS
from connectors.transports import DEFAULT_TRANSPORT, TRANSPORTS
from engine.errors import ConfigError
from engine.redact import redact
from engine.settings import (
    Env,
    RuntimeSettings,
    new_run_id,
    runtime_settings,
)
from feedvault.channels import DEFAULT_CHANNELS, TRADES, parse_channels
from sinks.keys import KeyTemplate
from sinks.parquet import PARQUET
from sinks.parquet import modules as parquet_modules
from sinks.s3security import S3Security, s3_security
from sinks.writer import (
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    Destination,
    parse_destination,
    s3_destination,
)

DEFAULT_WINDOW_SECONDS: Final = 60
DEFAULT_WINDOW_MAX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_WINDOW_MAX_RECORDS: Final = 1_000_000
DEFAULT_FORMAT: Final = "ndjson.gz"
STREAM_FORMATS: Final = ("ndjson.gz", "ndjson.zst", "parquet")
DEFAULT_QUEUE_MAXSIZE: Final = 200_000
OVERFLOW_POLICIES: Final = ("block", "drop-oldest")
DEFAULT_STALE_SECONDS: Final = 60.0
DEFAULT_UPLOAD_CONCURRENCY: Final = 4
DEFAULT_UPLOAD_RETRY_SECONDS: Final = 60.0

#: ``WINDOW_SECONDS`` of more than an hour: whole hours that divide a day.
_WINDOW_HOURS: Final = tuple(h * 3600 for h in (2, 3, 4, 6, 8, 12, 24))

_RUN_ID_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SYMBOL_RE: Final = re.compile(r"^[A-Za-z0-9._/-]{1,40}$")


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One ``exchange:SYMBOL`` entry of ``STREAMS``; ``symbol`` is the exchange's own spelling."""

    exchange: str
    symbol: str

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol}"


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """Windowing, encoding and upload tuning shared by streams and batch jobs."""

    window_seconds: int = DEFAULT_WINDOW_SECONDS
    window_max_bytes: int = DEFAULT_WINDOW_MAX_BYTES
    window_max_records: int = DEFAULT_WINDOW_MAX_RECORDS
    format: str = DEFAULT_FORMAT
    key_template: str | None = None
    upload_concurrency: int = DEFAULT_UPLOAD_CONCURRENCY
    upload_retry_seconds: float = DEFAULT_UPLOAD_RETRY_SECONDS
    """``UPLOAD_RETRY_SECONDS``: how long the sink retries a failing upload (with backoff, after
    the S3 client's own retries) before the window spills to ``SPILL_DIR`` and is retried in
    the background from there."""
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    """``S3_MULTIPART_THRESHOLD``: an object larger than this many bytes goes up as a multipart
    upload (at least 5 MiB, S3's smallest part)."""

    @property
    def part_size(self) -> int:
        """The multipart part size: 8 MiB, or the threshold when that is smaller."""
        return min(DEFAULT_PART_SIZE, self.multipart_threshold)


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """Everything ``feedvault stream`` needs, validated."""

    destination: Destination
    max_runtime_seconds: float
    streams: tuple[StreamSpec, ...]
    run_id: str
    sink: SinkSettings
    runtime: RuntimeSettings
    queue_maxsize: int = DEFAULT_QUEUE_MAXSIZE
    overflow: str = "block"
    stale_seconds: float = DEFAULT_STALE_SECONDS
    binance_stream: str = "trade"
    """``BINANCE_STREAM``: ``trade`` (every trade) or ``aggTrade`` (Binance's aggregated
    trades); applies to ``binance`` and ``binanceus``."""
    ws_urls: Mapping[str, str] = field(default_factory=dict)
    ws_transport: str = DEFAULT_TRANSPORT
    """``WS_TRANSPORT``: the WebSocket library the sessions use, ``aiohttp`` (the default) or
    ``websockets`` (docs: exchanges.md#websocket-transports)."""
    capture: bool = False
    """``CAPTURE``/``--capture``: also write every raw frame under ``{prefix}raw/``
    (docs: recording-and-replay.md#capture)."""
    run_id_generated: bool = False
    """True when ``RUN_ID`` was not given and ``run_id`` is :func:`new_run_id`'s: a run on ECS
    then puts its task id into it (:func:`feedvault.ecs.run_id_with_task`)."""
    s3: S3Security = field(default_factory=S3Security)
    """``S3_SSE``, ``S3_SSE_KMS_KEY_ID``, ``S3_EXPECTED_BUCKET_OWNER`` (checked here; the S3
    writer applies them to every request, :mod:`sinks.s3security`)."""
    channels: str = DEFAULT_CHANNELS
    """``CHANNELS`` as given (docs: order-books.md#choosing-channels)."""
    stream_channels: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    """Per ``(exchange, symbol)``, the channels it records (:func:`parse_channels`); a stream
    missing here records trades."""
    rest_urls: Mapping[str, str] = field(default_factory=dict)
    """``<EXCHANGE>_REST_URL`` overrides of the REST base URL book snapshots come from."""

    def streams_of(self, channel: str) -> tuple[StreamSpec, ...]:
        """The streams that record ``channel`` (``trades`` or ``book``)."""
        return tuple(
            spec
            for spec in self.streams
            if channel in self.stream_channels.get((spec.exchange, spec.symbol), (TRADES,))
        )

    def public_dict(self) -> dict[str, object]:
        """The effective configuration for the manifest and logs; holds no secrets (a
        user and password in a ``<EXCHANGE>_WS_URL`` are redacted)."""
        return {
            "destination": self.destination.url,
            "max_runtime_seconds": self.max_runtime_seconds,
            "streams": [str(s) for s in self.streams],
            "run_id": self.run_id,
            "window_seconds": self.sink.window_seconds,
            "window_max_bytes": self.sink.window_max_bytes,
            "window_max_records": self.sink.window_max_records,
            "format": self.sink.format,
            "key_template": self.sink.key_template,
            "upload_concurrency": self.sink.upload_concurrency,
            "upload_retry_seconds": self.sink.upload_retry_seconds,
            "multipart_threshold": self.sink.multipart_threshold,
            "queue_maxsize": self.queue_maxsize,
            "overflow": self.overflow,
            "stale_seconds": self.stale_seconds,
            "binance_stream": self.binance_stream,
            "ws_transport": self.ws_transport,
            "stop_grace_seconds": self.runtime.stop_grace_seconds,
            "stats_interval_seconds": self.runtime.stats_interval_seconds,
            "metrics": self.runtime.metrics,
            "spill_dir": self.runtime.spill_dir,
            "ws_urls": {name: redact(url) for name, url in self.ws_urls.items()},
            "capture": self.capture,
            "channels": self.channels,
            "rest_urls": {name: redact(url) for name, url in self.rest_urls.items()},
            **self.s3.public_dict(),
        }


def check_window_seconds(seconds: int) -> int:
    """``WINDOW_SECONDS`` keeps every window inside one partition of time: it divides an hour
    (1 .. 3600: the window never crosses an ``hour=`` boundary) or is a whole number of hours
    that divides a day (2, 3, 4, 6, 8, 12 or 24 h: it never crosses a ``date=`` boundary).
    Windows start at wall-clock multiples of it (:mod:`sinks.windowing`), so any other value
    would put trades of the next hour or day under the key of the previous one."""
    if (seconds <= 3600 and 3600 % seconds == 0) or seconds in _WINDOW_HOURS:
        return seconds
    raise ConfigError(
        "WINDOW_SECONDS",
        "must divide an hour (1 .. 3600, e.g. 1, 5, 60, 300, 900, 3600) or be a whole number "
        f"of hours that divides a day (2, 3, 4, 6, 8, 12 or 24 h), got {seconds}",
    )


def _check_symbol(exchange: str, symbol: str, item: str, variable: str) -> None:
    """Ask the exchange's protocol whether it can subscribe to ``symbol`` and name it
    canonically, so a symbol it would refuse is a configuration error (exit 2), not a crash."""
    from connectors.registry import get_protocol
    from connectors.symbols import canonical_symbol

    protocol = get_protocol(exchange)
    try:
        protocol.connection_url(protocol.default_url, [symbol])
        protocol.subscribe_messages([symbol])
        canonical_symbol(symbol, exchange)
    except ValueError as exc:
        raise ConfigError(variable, f"{item!r}: {exc}") from None


def parse_streams(text: str, variable: str = "STREAMS") -> tuple[StreamSpec, ...]:
    """Parse ``binance:BTCUSDT,binance:ETHUSDT``; duplicates are an error."""
    specs: list[StreamSpec] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        exchange, sep, symbol = item.partition(":")
        exchange = exchange.strip().lower()
        symbol = symbol.strip()
        if not sep or not exchange or not symbol:
            raise ConfigError(variable, f"entry {item!r} is not of the form exchange:SYMBOL")
        if exchange not in PROTOCOLS:
            raise ConfigError(
                variable,
                f"unknown exchange {exchange!r} in {item!r}; supported: " + ", ".join(PROTOCOLS),
            )
        if not _SYMBOL_RE.match(symbol):
            raise ConfigError(variable, f"symbol {symbol!r} has characters no exchange uses")
        _check_symbol(exchange, symbol, item, variable)
        spec = StreamSpec(exchange, symbol)
        if spec in specs:
            raise ConfigError(variable, f"{item!r} is listed twice")
        specs.append(spec)
    if not specs:
        raise ConfigError(variable, "lists no streams")
    return tuple(specs)


def sink_settings(env: Env) -> SinkSettings:
    template = env.raw("KEY_TEMPLATE")
    if template is not None:
        KeyTemplate(template)  # raises ConfigError("KEY_TEMPLATE", ...)
    fmt = env.raw("FORMAT") or DEFAULT_FORMAT
    if fmt not in STREAM_FORMATS:
        raise ConfigError(
            "FORMAT", f"must be one of {', '.join(STREAM_FORMATS)} for streams; got {fmt!r}"
        )
    if fmt == PARQUET:
        parquet_modules()  # ConfigError naming FORMAT, with the install hint, without pyarrow
    return SinkSettings(
        window_seconds=check_window_seconds(env.integer("WINDOW_SECONDS", DEFAULT_WINDOW_SECONDS)),
        window_max_bytes=env.integer("WINDOW_MAX_BYTES", DEFAULT_WINDOW_MAX_BYTES),
        window_max_records=env.integer("WINDOW_MAX_RECORDS", DEFAULT_WINDOW_MAX_RECORDS),
        format=fmt,
        key_template=template,
        upload_concurrency=env.integer("UPLOAD_CONCURRENCY", DEFAULT_UPLOAD_CONCURRENCY),
        upload_retry_seconds=env.number("UPLOAD_RETRY_SECONDS", DEFAULT_UPLOAD_RETRY_SECONDS),
        multipart_threshold=env.integer("S3_MULTIPART_THRESHOLD", DEFAULT_MULTIPART_THRESHOLD),
    )


def load_stream_config(
    environ: Mapping[str, str], *, out: str | None = None, is_tty: bool = False
) -> StreamConfig:
    """Build and validate the streaming configuration; raise :class:`ConfigError` on the
    first problem. ``out`` is the ``--out`` flag, which replaces ``S3_BUCKET``/``S3_PREFIX``."""
    env = Env(environ)
    if out is not None:
        destination = parse_destination(out)
    else:
        destination = s3_destination(env, "S3_BUCKET", "S3_PREFIX")
    max_runtime = env.number("MAX_RUNTIME_SECONDS", None)
    streams = parse_streams(env.required("STREAMS"))
    run_id = env.raw("RUN_ID") or new_run_id()
    if not _RUN_ID_RE.match(run_id):
        raise ConfigError("RUN_ID", "may only hold letters, digits, '.', '_' and '-'")
    ws_urls: dict[str, str] = {}
    for exchange in sorted({s.exchange for s in streams}):
        variable = f"{exchange.upper()}_WS_URL"
        url = env.raw(variable)
        if url is not None:
            if not url.startswith(("ws://", "wss://")):
                raise ConfigError(variable, f"must be a ws:// or wss:// URL, got {url!r}")
            ws_urls[exchange] = url.rstrip("/")
    channels = env.raw("CHANNELS") or DEFAULT_CHANNELS
    return StreamConfig(
        destination=destination,
        max_runtime_seconds=max_runtime,
        streams=streams,
        run_id=run_id,
        sink=sink_settings(env),
        runtime=runtime_settings(env, is_tty=is_tty),
        queue_maxsize=env.integer("QUEUE_MAXSIZE", DEFAULT_QUEUE_MAXSIZE),
        overflow=env.choice("OVERFLOW", "block", OVERFLOW_POLICIES),
        stale_seconds=env.number("STALE_SECONDS", DEFAULT_STALE_SECONDS),
        binance_stream=env.choice("BINANCE_STREAM", "trade", ("trade", "aggTrade")),
        ws_urls=ws_urls,
        ws_transport=env.choice("WS_TRANSPORT", DEFAULT_TRANSPORT, tuple(sorted(TRANSPORTS))),
        capture=env.flag("CAPTURE"),
        run_id_generated=env.raw("RUN_ID") is None,
        s3=s3_security(environ),
        channels=channels,
        stream_channels=parse_channels(channels, [(s.exchange, s.symbol) for s in streams]),
        rest_urls=rest_urls(env, streams),
    )


def rest_urls(env: Env, streams: Sequence[StreamSpec]) -> dict[str, str]:
    """``<EXCHANGE>_REST_URL`` of every exchange streamed: an ``http://`` or ``https://`` base
    URL (docs: order-books.md#rest-snapshots)."""
    urls: dict[str, str] = {}
    for exchange in sorted({s.exchange for s in streams}):
        variable = f"{exchange.upper()}_REST_URL"
        url = env.raw(variable)
        if url is not None:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(variable, f"must be an http:// or https:// URL, got {url!r}")
            urls[exchange] = url.rstrip("/")
    return urls
