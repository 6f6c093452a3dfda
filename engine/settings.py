"""Typed settings from the environment: the reads every layer shares (docs: configuration.md).

:class:`Env` reads a mapping of settings (the environment, flags laid over it); every failure is
a :class:`~engine.errors.ConfigError` naming the variable, which the command line turns into one
line on stderr and exit status 2 before anything connects or is written. :data:`RANGES` is the
accepted range of every numeric setting; :class:`RuntimeSettings` are the settings of the run
lifecycle itself (stop grace, logs, stats, metrics, spill directory), shared by stream, replay
and batch runs. The application's own settings (streams, sink tuning) are parsed on top of these
by :mod:`feedvault.config`.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from engine.errors import ConfigError

DEFAULT_STOP_GRACE_SECONDS: Final = 20.0
DEFAULT_STATS_INTERVAL_SECONDS: Final = 10.0
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
    """A bound as docs/configuration.md writes it: an integral value without a fraction."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


RANGES: Final[Mapping[str, Range]] = {
    "MAX_RUNTIME_SECONDS": Range(0, 366 * DAY_SECONDS, low_open=True),
    "WINDOW_SECONDS": Range(1, DAY_SECONDS),
    "WINDOW_MAX_BYTES": Range(1024, GIB),
    "WINDOW_MAX_RECORDS": Range(1, 100_000_000),
    "QUEUE_MAXSIZE": Range(1, 10_000_000),
    "UPLOAD_CONCURRENCY": Range(1, 64),
    "UPLOAD_RETRY_SECONDS": Range(0, 3600, low_open=True),
    "S3_MULTIPART_THRESHOLD": Range(5 * MIB, 5 * GIB),  # S3: smallest part .. largest PUT
    "STOP_GRACE_SECONDS": Range(0, 3600, low_open=True),
    "STATS_INTERVAL_SECONDS": Range(0, DAY_SECONDS, low_open=True),
    "STALE_SECONDS": Range(0, 7 * DAY_SECONDS, low_open=True),
    "BATCH_CPU_WORKERS": Range(1, 64),
    "COMPUTATION_SEED": Range(0, MAX_SEED),
    "SAMPLE_SEED": Range(0, MAX_SEED),
    "--seed": Range(0, MAX_SEED),
    "REPLAY_SPEED": Range(0.001, 1_000_000),
    "BOOK_SNAPSHOT_LEVELS": Range(0, 1000),
    "BOOK_SNAPSHOT_INTERVAL": Range(0.001, DAY_SECONDS),
}
"""The range of every numeric setting read through :class:`Env` (docs: configuration.md
lists them). :meth:`Env.integer` and :meth:`Env.number` check a listed variable against
its range; a variable not listed is checked against the caller's ``minimum`` only.

Why these bounds: a window is held in memory until uploaded (``WINDOW_MAX_BYTES`` at most
1 GiB) and must fit one S3 partition of time (``WINDOW_SECONDS``, :func:`check_window_seconds`);
a single PUT holds at most 5 GiB (``S3_MULTIPART_THRESHOLD``); the queue holds about half a
kilobyte per trade (``QUEUE_MAXSIZE`` at most 10 million, some 5 GB); the durations are bounded
where a longer one only hides a mistake (a stop grace of more than an hour, a run of more than
a year); seeds fit the 64-bit integers of the manifest's JSON."""


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


def new_run_id() -> str:
    """A sortable run id: UTC time to the second, then a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


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
