"""Configuration from the environment (SPEC §4), checked fully before anything connects.

Every setting is an environment variable; a CLI flag, where one exists, wins over it. Settings are
parsed into frozen dataclasses. Any missing or invalid setting raises :class:`ConfigError` naming
the variable; the CLI turns that into one line on stderr and exit status 2, before any socket is
opened or any object written. There is no silent default for a location (bucket, prefix).

Every numeric setting has a documented range (:data:`RANGES`, the README's configuration
table): a value outside it (``WINDOW_SECONDS=100000000000000000000``) is refused with a message
that names the variable and the range, rather than reaching code that cannot work with it.
``WINDOW_SECONDS`` must also keep each window inside one hour (or one day) of the key's
``date``/``hour`` partition: see :func:`check_window_seconds`.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from connectors.registry import PROTOCOLS
from engine.errors import ConfigError
from engine.redact import redact
from sinks.keys import KeyTemplate, validate_prefix
from sinks.s3security import S3Security, s3_security
from sinks.writer import (
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    Destination,
    parse_destination,
)

DEFAULT_WINDOW_SECONDS: Final = 60
DEFAULT_WINDOW_MAX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_WINDOW_MAX_RECORDS: Final = 1_000_000
DEFAULT_FORMAT: Final = "ndjson.gz"
STREAM_FORMATS: Final = ("ndjson.gz", "ndjson.zst")
DEFAULT_QUEUE_MAXSIZE: Final = 200_000
OVERFLOW_POLICIES: Final = ("block", "drop-oldest")
DEFAULT_STOP_GRACE_SECONDS: Final = 20.0
DEFAULT_STATS_INTERVAL_SECONDS: Final = 10.0
DEFAULT_STALE_SECONDS: Final = 60.0
DEFAULT_UPLOAD_CONCURRENCY: Final = 4
DEFAULT_UPLOAD_RETRY_SECONDS: Final = 60.0
DEFAULT_SPILL_DIR: Final = "/tmp/feedvault-spill"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS: Final = ("json", "text")
METRICS_MODES: Final = ("none", "emf")

MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB
DAY_SECONDS: Final = 86_400
MAX_SEED: Final = 2**63 - 1
"""The largest seed (``COMPUTATION_SEED``, ``SAMPLE_SEED``): a signed 64-bit integer, as the
manifest's JSON and every consumer of it can hold."""


@dataclass(frozen=True, slots=True)
class Range:
    """The accepted values of a numeric setting: ``low`` .. ``high`` inclusive, except that
    ``low`` itself is refused when ``low_open`` (a duration must be greater than 0)."""

    low: float
    high: float
    low_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self, unit: str = "") -> str:
        """``"greater than 0 and at most 3600 seconds"`` / ``"from 1 to 64"``."""
        tail = f" {unit}" if unit else ""
        if self.low_open:
            return f"greater than {_num(self.low)} and at most {_num(self.high)}{tail}"
        return f"from {_num(self.low)} to {_num(self.high)}{tail}"


def _num(value: float) -> str:
    """A bound as written in the README: an integral value without a fraction."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


RANGES: Final[Mapping[str, Range]] = {
    "MAX_RUNTIME_SECONDS": Range(0, 366 * DAY_SECONDS, low_open=True),
    "WINDOW_SECONDS": Range(1, DAY_SECONDS),
    "WINDOW_MAX_BYTES": Range(1024, GIB),
    "WINDOW_MAX_RECORDS": Range(1, 100_000_000),
    "QUEUE_MAXSIZE": Range(1, 10_000_000),
    "UPLOAD_CONCURRENCY": Range(1, 64),
    "UPLOAD_RETRY_SECONDS": Range(0, 3600, low_open=True),
    "S3_MULTIPART_THRESHOLD": Range(MIN_PART_SIZE, 5 * GIB),
    "STOP_GRACE_SECONDS": Range(0, 3600, low_open=True),
    "STATS_INTERVAL_SECONDS": Range(0, DAY_SECONDS, low_open=True),
    "STALE_SECONDS": Range(0, 7 * DAY_SECONDS, low_open=True),
    "BATCH_CPU_WORKERS": Range(1, 64),
    "COMPUTATION_SEED": Range(0, MAX_SEED),
    "SAMPLE_SEED": Range(0, MAX_SEED),
    "--seed": Range(0, MAX_SEED),
    "REPLAY_SPEED": Range(0.001, 1_000_000),
}
"""The range of every numeric setting read through :class:`Env` (the README's configuration
tables list them). :meth:`Env.integer` and :meth:`Env.number` check a listed variable against
its range; a variable not listed is checked against the caller's ``minimum`` only.

Why these bounds: a window is held in memory until uploaded (``WINDOW_MAX_BYTES`` at most
1 GiB) and must fit one S3 partition of time (``WINDOW_SECONDS``, :func:`check_window_seconds`);
a single PUT holds at most 5 GiB (``S3_MULTIPART_THRESHOLD``); the queue holds about half a
kilobyte per trade (``QUEUE_MAXSIZE`` at most 10 million, some 5 GB); the durations are bounded
where a longer one only hides a mistake (a stop grace of more than an hour, a run of more than
a year); seeds fit the 64-bit integers of the manifest's JSON."""

#: ``WINDOW_SECONDS`` of more than an hour: whole hours that divide a day.
_WINDOW_HOURS: Final = tuple(h * 3600 for h in (2, 3, 4, 6, 8, 12, 24))

_RUN_ID_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_BUCKET_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
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
class RuntimeSettings:
    """Logging, stats and stop behaviour."""

    stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS
    log_level: str = "INFO"
    log_format: str = "json"
    stats_interval_seconds: float = DEFAULT_STATS_INTERVAL_SECONDS
    metrics: str = "none"
    spill_dir: str = DEFAULT_SPILL_DIR
    ecs_metadata_uri: str | None = None
    """``ECS_CONTAINER_METADATA_URI_V4`` (set by ECS in every container), read at the start of a
    run by :mod:`feedvault.ecs`; None outside ECS. Not validated here: a bad value is logged and
    the run goes on, as for any metadata failure."""


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
    capture: bool = False
    """``CAPTURE``/``--capture``: also write every raw frame under ``{prefix}raw/`` (SPEC §8)."""
    run_id_generated: bool = False
    """True when ``RUN_ID`` was not given and ``run_id`` is :func:`new_run_id`'s: a run on ECS
    then puts its task id into it (:func:`feedvault.ecs.run_id_with_task`)."""
    s3: S3Security = field(default_factory=S3Security)
    """``S3_SSE``, ``S3_SSE_KMS_KEY_ID``, ``S3_EXPECTED_BUCKET_OWNER`` (checked here; the S3
    writer applies them to every request, :mod:`sinks.s3security`)."""

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
            "stop_grace_seconds": self.runtime.stop_grace_seconds,
            "stats_interval_seconds": self.runtime.stats_interval_seconds,
            "metrics": self.runtime.metrics,
            "spill_dir": self.runtime.spill_dir,
            "ws_urls": {name: redact(url) for name, url in self.ws_urls.items()},
            "capture": self.capture,
            **self.s3.public_dict(),
        }


class Env:
    """Typed reads of a mapping of settings; every failure names the variable."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def raw(self, name: str) -> str | None:
        value = self._values.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def required(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            raise ConfigError(name, "is required but not set")
        return value

    def integer(
        self, name: str, default: int, *, minimum: int = 1, maximum: int | None = None
    ) -> int:
        """``name`` as an integer (``default`` when unset) within its range: :data:`RANGES`'s
        entry for ``name`` if it has one, else ``minimum`` .. ``maximum`` (no upper bound when
        None). A refusal names the variable and the range."""
        value = self.raw(name)
        if value is None:
            return default
        bounds = RANGES.get(name) or Range(minimum, math.inf if maximum is None else maximum)
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not bounds.holds(number):
            if math.isinf(bounds.high):
                accepted = f"an integer of at least {_num(bounds.low)}"
            else:
                accepted = f"an integer {bounds.describe()}"
            raise ConfigError(name, f"must be {accepted}, got {_shown(value)}")
        return number

    def number(
        self, name: str, default: float | None, *, minimum: float = 0.0, strict: bool = True
    ) -> float:
        """``name`` as a finite number of seconds (``default`` when unset; required when
        ``default`` is None) within its range: :data:`RANGES`'s entry for ``name`` if it has
        one, else greater than ``minimum`` (at least ``minimum`` when not ``strict``). A
        refusal names the variable and the range."""
        value = self.raw(name)
        if value is None:
            if default is None:
                raise ConfigError(name, "is required but not set")
            return default
        bounds = RANGES.get(name) or Range(minimum, math.inf, low_open=strict)
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or not bounds.holds(number):
            if math.isinf(bounds.high):
                bound = "greater than" if bounds.low_open else "at least"
                accepted = f"a finite number of seconds {bound} {_num(bounds.low)}"
            else:
                accepted = f"a number of seconds {bounds.describe()}"
            raise ConfigError(name, f"must be {accepted}, got {_shown(value)}")
        return number

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``."""
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"must be 1/true/yes/on or 0/false/no/off, got {value!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}; got {value!r}")
        return value


def _shown(value: str) -> str:
    """A refused value as quoted in the one-line message (a pasted megabyte stays short)."""
    return repr(value if len(value) <= 40 else value[:37] + "...")


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


def new_run_id() -> str:
    """A sortable run id: UTC time to the second, then a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


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


def s3_destination(env: Env, bucket_var: str, prefix_var: str) -> Destination:
    """Destination from a bucket variable and a prefix variable, both required: there is no
    silent default for a location."""
    bucket = env.required(bucket_var)
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ConfigError(bucket_var, f"{bucket!r} is not a valid S3 bucket name")
    prefix = validate_prefix(env.required(prefix_var), prefix_var)
    return Destination("s3", prefix, bucket=bucket, variable=bucket_var)


def sink_settings(env: Env) -> SinkSettings:
    template = env.raw("KEY_TEMPLATE")
    if template is not None:
        KeyTemplate(template)  # raises ConfigError("KEY_TEMPLATE", ...)
    fmt = env.raw("FORMAT") or DEFAULT_FORMAT
    if fmt not in STREAM_FORMATS:
        raise ConfigError(
            "FORMAT", f"must be one of {', '.join(STREAM_FORMATS)} for streams; got {fmt!r}"
        )
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


def runtime_settings(env: Env, *, is_tty: bool) -> RuntimeSettings:
    level = (env.raw("LOG_LEVEL") or "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigError("LOG_LEVEL", f"must be one of {', '.join(LOG_LEVELS)}; got {level!r}")
    metrics = env.choice("METRICS", "none", METRICS_MODES)
    # EMF documents are JSON log lines: METRICS=emf makes JSON the default even on a TTY, and
    # refuses an explicit LOG_FORMAT=text (its stats lines would carry no metrics).
    log_format = env.choice(
        "LOG_FORMAT", "text" if is_tty and metrics != "emf" else "json", LOG_FORMATS
    )
    if metrics == "emf" and log_format != "json":
        raise ConfigError("METRICS", "emf needs LOG_FORMAT=json (EMF documents are JSON lines)")
    return RuntimeSettings(
        stop_grace_seconds=env.number("STOP_GRACE_SECONDS", DEFAULT_STOP_GRACE_SECONDS),
        log_level=level,
        log_format=log_format,
        stats_interval_seconds=env.number("STATS_INTERVAL_SECONDS", DEFAULT_STATS_INTERVAL_SECONDS),
        metrics=metrics,
        spill_dir=env.raw("SPILL_DIR") or DEFAULT_SPILL_DIR,
        ecs_metadata_uri=env.raw("ECS_CONTAINER_METADATA_URI_V4"),
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
        capture=env.flag("CAPTURE"),
        run_id_generated=env.raw("RUN_ID") is None,
        s3=s3_security(environ),
    )
