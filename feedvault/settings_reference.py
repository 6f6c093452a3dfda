"""The configuration reference: one entry per environment variable (docs: configuration.md).

``docs/configuration.md`` holds a marker that the site's build hook (``docs/hooks/
configuration.py``) replaces with :func:`render_markdown`'s tables, so the page is generated
from this module and cannot drift from the code:

* every default is taken from the definition the loaders use (the ``DEFAULT_*`` constants of
  :mod:`engine.settings` and :mod:`feedvault.config`, the dataclass field defaults of
  :class:`~feedvault.config.StreamConfig` and :class:`~batch.computation.RiskParameters`), never
  retyped here;
* every numeric range is :data:`engine.settings.RANGES`' own :meth:`~engine.settings.Range.
  describe`, and every list of choices the tuple the loader checks against;
* ``tests/test_settings_reference.py`` proves the list complete both ways: every variable the
  packages read is here, every entry here is read somewhere, and each default equals the value
  a loader yields when the variable is unset.

Entries whose ``reader`` is ``"aws-sdk"`` are read by botocore (the S3 client), not by
feedvault's own code; they are listed because a deployment sets them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Final

from batch.compact_book import DEFAULT_SNAPSHOT_INTERVAL as COMPACT_SNAPSHOT_INTERVAL
from batch.compact_book import DEFAULT_SNAPSHOT_LEVELS as COMPACT_SNAPSHOT_LEVELS
from batch.compact_job import MAX_DAYS as COMPACT_MAX_DAYS
from batch.computation import (
    DEFAULTS as RISK_DEFAULTS,
)
from batch.computation import (
    MAX_CONFIDENCES,
    MAX_HORIZON_DAYS,
    MAX_HORIZONS,
    MAX_LOSS_VALUES,
    MAX_PATHS,
)
from batch.config import MAX_CPU_WORKERS
from connectors.registry import PROTOCOLS
from connectors.transports import TRANSPORTS
from engine.settings import (
    DEFAULT_SPILL_DIR,
    DEFAULT_STATS_INTERVAL_SECONDS,
    DEFAULT_STOP_GRACE_SECONDS,
    LOG_FORMATS,
    LOG_LEVELS,
    METRICS_MODES,
    RANGES,
    RuntimeSettings,
)
from feedvault.config import (
    DEFAULT_FORMAT,
    DEFAULT_QUEUE_MAXSIZE,
    DEFAULT_STALE_SECONDS,
    DEFAULT_UPLOAD_CONCURRENCY,
    DEFAULT_UPLOAD_RETRY_SECONDS,
    DEFAULT_WINDOW_MAX_BYTES,
    DEFAULT_WINDOW_MAX_RECORDS,
    DEFAULT_WINDOW_SECONDS,
    OVERFLOW_POLICIES,
    STREAM_FORMATS,
    StreamConfig,
)
from sinks.keys import DEFAULT_KEY_TEMPLATE
from sinks.s3security import SSE_ALGORITHMS
from sinks.writer import DEFAULT_MULTIPART_THRESHOLD

STREAM: Final = "stream"
REPLAY: Final = "replay"
BATCH: Final = "batch"
LOADTEST: Final = "loadtest"
SAMPLE: Final = "sample"
VERIFY: Final = "verify"
RUNS: Final = "runs"

RUNS_OF_DATA: Final = (STREAM, REPLAY, BATCH)
"""The commands that run the lifecycle (first write, manifest, stop grace, logs, stats)."""
S3_CLIENTS: Final = (STREAM, REPLAY, BATCH, LOADTEST, SAMPLE, VERIFY, RUNS)
"""Every command that opens an S3 client (the S3 writer applies the security settings)."""

WS_URL_FAMILY: Final = "<EXCHANGE>_WS_URL"
"""The per-exchange endpoint overrides: ``BINANCE_WS_URL``, ``COINBASE_WS_URL``, ..."""
REST_URL_FAMILY: Final = "<EXCHANGE>_REST_URL"
"""The REST base URL overrides of the exchanges whose books need REST snapshots."""
REST_SNAPSHOT_EXCHANGES: Final = ("binance", "binanceus", "bitstamp")
"""The exchanges whose book feeds fetch REST snapshots (docs: order-books.md#rest-snapshots)."""

_MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: who reads it, its default, what it accepts and means.

    ``default`` is the value the loader uses when the variable is unset (None: no default; then
    ``default_text`` says what happens, e.g. ``required``); ``unit`` shapes how it is shown."""

    name: str
    section: str
    commands: tuple[str, ...]
    meaning: str
    accepted: str
    default: object = None
    default_text: str = ""
    unit: str = ""
    reader: str = "feedvault"

    @property
    def shown_default(self) -> str:
        """The default as the reference shows it (rendered from :attr:`default`)."""
        if self.default is None:
            return self.default_text
        return render_value(self.default, self.unit)


def render_value(value: object, unit: str = "") -> str:
    """``64 MiB``, ``20 s``, ``200,000``, ``ndjson.gz``, ``1,10,20``: a default as shown."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if unit == "bytes" and isinstance(value, int):
        if value % _MIB == 0:
            return f"{value // _MIB} MiB ({value})"
        return f"{value} bytes"
    if isinstance(value, int):
        text = f"{value:,}" if abs(value) >= 10_000 else str(value)
        return f"{text} s" if unit == "s" else text
    if isinstance(value, float):
        return f"{value:g} s" if unit == "s" else f"{value:g}"
    return str(value)


def _field_default(cls: type, name: str) -> object:
    """The default of dataclass ``cls``'s field ``name`` (its definition, not a copy)."""
    for f in fields(cls):
        if f.name == name:
            if f.default is MISSING:
                raise LookupError(f"{cls.__name__}.{name} has no plain default")
            return f.default
    raise LookupError(f"{cls.__name__} has no field {name}")


def _range(name: str, unit: str = "", extra: str = "") -> str:
    text = RANGES[name].describe(unit)
    return f"{text}{extra}"


def _one_of(choices: Iterable[str]) -> str:
    return "one of " + ", ".join(f"`{c}`" for c in choices)


_SEC: Final = "seconds"

SETTINGS: Final[tuple[Setting, ...]] = (
    # -- where data goes, what is streamed, how long ----------------------------------------
    Setting(
        "S3_BUCKET",
        "Destination and run",
        (STREAM, REPLAY, LOADTEST),
        "the destination bucket (`--out s3://bucket/prefix/` or `--out file:///dir/` replaces "
        "`S3_BUCKET` and `S3_PREFIX`); for `loadtest`: use this bucket instead of a local S3 "
        "server",
        "an S3 bucket name",
        default_text="required (or `--out`)",
    ),
    Setting(
        "S3_PREFIX",
        "Destination and run",
        (STREAM, REPLAY, LOADTEST),
        "the key prefix every object and the manifest go under, e.g. `streaming/bnbusd/`",
        "a key prefix ending with `/`",
        default_text="required (or `--out`)",
    ),
    Setting(
        "STREAMS",
        "Destination and run",
        (STREAM,),
        "what to stream: `exchange:SYMBOL` entries, each symbol spelled the exchange's way "
        "(flag `--streams`)",
        "a comma list of `exchange:SYMBOL`; exchanges: " + ", ".join(PROTOCOLS),
        default_text="required",
    ),
    Setting(
        "CHANNELS",
        "Destination and run",
        (STREAM, REPLAY),
        "what each stream records: `trades`, `book` (level-2 order book), or both; an entry "
        "`channel@exchange` or `channel@exchange:SYMBOL` is for those streams only "
        "(docs: order-books.md#choosing-channels)",
        "a comma list of `trades`, `book`, each optionally `@exchange[:SYMBOL]`",
        default=_field_default(StreamConfig, "channels"),
    ),
    Setting(
        "MAX_RUNTIME_SECONDS",
        "Destination and run",
        (STREAM, REPLAY, BATCH),
        "ingest stops this long after the start (flag `--max-runtime`); the process exits by "
        "this plus `STOP_GRACE_SECONDS`. Optional for `replay` (real seconds) and `batch` (from "
        "the start of the job's work; a job still running then is stopped: incomplete, exit 1)",
        _range("MAX_RUNTIME_SECONDS", _SEC),
        default_text="required for `stream`; unset: no limit",
    ),
    Setting(
        "RUN_ID",
        "Destination and run",
        RUNS_OF_DATA,
        "names the run's objects and manifest; a run id already used at the destination is "
        "refused (flag `--run-id`)",
        "1 to 128 of `A-Z a-z 0-9 . _ -`",
        default_text="UTC time + random suffix (+ the ECS task id on ECS)",
    ),
    Setting(
        "CAPTURE",
        "Destination and run",
        (STREAM,),
        "also write every raw frame sent and received under `{prefix}raw/` (flag `--capture`)",
        "`1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`",
        default=_field_default(StreamConfig, "capture"),
    ),
    Setting(
        "REPLAY_SPEED",
        "Destination and run",
        (REPLAY,),
        "the pace of a replay: `max` as fast as the sink takes it, `1` the recorded pace, `N` "
        "N times faster (flag `--speed`)",
        "`max` or a number " + _range("REPLAY_SPEED"),
        default_text="`max`",
    ),
    # -- windows, objects and uploads --------------------------------------------------------
    Setting(
        "WINDOW_SECONDS",
        "Windows, objects and uploads",
        (STREAM, REPLAY),
        "windows close at wall-clock multiples of this",
        "an integer "
        + _range("WINDOW_SECONDS", _SEC)
        + " that divides an hour (1, 5, 60, 300, 900, 3600, ...) or is 2, 3, 4, 6, 8, 12 or 24 "
        "hours, so a window never crosses an `hour=`/`date=` partition",
        default=DEFAULT_WINDOW_SECONDS,
        unit="s",
    ),
    Setting(
        "WINDOW_MAX_BYTES",
        "Windows, objects and uploads",
        (STREAM, REPLAY),
        "... or when the compressed object reaches this size (a window is held in memory)",
        "an integer " + _range("WINDOW_MAX_BYTES", "bytes"),
        default=DEFAULT_WINDOW_MAX_BYTES,
        unit="bytes",
    ),
    Setting(
        "WINDOW_MAX_RECORDS",
        "Windows, objects and uploads",
        (STREAM, REPLAY),
        "... or when it holds this many records",
        "an integer " + _range("WINDOW_MAX_RECORDS"),
        default=DEFAULT_WINDOW_MAX_RECORDS,
    ),
    Setting(
        "FORMAT",
        "Windows, objects and uploads",
        (STREAM, REPLAY, LOADTEST),
        "the encoding of trade and book objects: NDJSON (gzip, zstd) or Parquet (needs "
        "pyarrow, the `lake` extra; raw capture objects are `ndjson.zst` then; see "
        "[The lake](lake.md#formats))",
        _one_of(STREAM_FORMATS),
        default=DEFAULT_FORMAT,
    ),
    Setting(
        "KEY_TEMPLATE",
        "Windows, objects and uploads",
        (STREAM, REPLAY),
        "the object key layout of trade objects; windows are grouped by the fields it uses "
        "(see [Data formats](data-formats.md#object-keys))",
        "a template of `{prefix}`, `{dataset}`, `{exchange}`, `{symbol}`, `{date}`, ...",
        default_text="`" + DEFAULT_KEY_TEMPLATE + "`",
    ),
    Setting(
        "UPLOAD_CONCURRENCY",
        "Windows, objects and uploads",
        (STREAM, REPLAY),
        "uploads in flight at most",
        "an integer " + _range("UPLOAD_CONCURRENCY"),
        default=DEFAULT_UPLOAD_CONCURRENCY,
    ),
    Setting(
        "UPLOAD_RETRY_SECONDS",
        "Windows, objects and uploads",
        (STREAM, REPLAY),
        "how long a failing upload is retried (capped exponential backoff with jitter, on top "
        "of the S3 client's own retries) before its window spills to `SPILL_DIR`",
        _range("UPLOAD_RETRY_SECONDS", _SEC),
        default=DEFAULT_UPLOAD_RETRY_SECONDS,
        unit="s",
    ),
    Setting(
        "S3_MULTIPART_THRESHOLD",
        "Windows, objects and uploads",
        (STREAM, REPLAY),
        "objects above this size go up as multipart uploads (parts of 8 MiB, or the threshold "
        "if smaller)",
        "an integer " + _range("S3_MULTIPART_THRESHOLD", "bytes"),
        default=DEFAULT_MULTIPART_THRESHOLD,
        unit="bytes",
    ),
    Setting(
        "SPILL_DIR",
        "Windows, objects and uploads",
        (STREAM, REPLAY),
        "where windows (and a manifest) go that could not be uploaded; uploaded from there in "
        "the background, at the stop, and by the next run with the same `SPILL_DIR`",
        "a directory (on ECS, an EFS mount for spills to outlive the task)",
        default=DEFAULT_SPILL_DIR,
    ),
    # -- the queue and the connections -------------------------------------------------------
    Setting(
        "QUEUE_MAXSIZE",
        "Queue and connections",
        (STREAM, REPLAY),
        "records the queue holds at most (about half a kilobyte each)",
        "an integer " + _range("QUEUE_MAXSIZE"),
        default=DEFAULT_QUEUE_MAXSIZE,
    ),
    Setting(
        "OVERFLOW",
        "Queue and connections",
        (STREAM,),
        "`block` stops reading the sockets while the queue is full (TCP backpressure); "
        "`drop-oldest` keeps reading and counts what it drops (trades only: a book's queue always "
        "blocks, a dropped update would corrupt the book). A replay always blocks",
        _one_of(OVERFLOW_POLICIES),
        default=_field_default(StreamConfig, "overflow"),
    ),
    Setting(
        "STALE_SECONDS",
        "Queue and connections",
        (STREAM,),
        "a connection with no frame for this long is replaced",
        _range("STALE_SECONDS", _SEC),
        default=DEFAULT_STALE_SECONDS,
        unit="s",
    ),
    Setting(
        "BINANCE_STREAM",
        "Queue and connections",
        (STREAM,),
        "`aggTrade` for Binance's aggregated trades (`binance`, `binanceus`)",
        _one_of(("trade", "aggTrade")),
        default=_field_default(StreamConfig, "binance_stream"),
    ),
    Setting(
        "WS_TRANSPORT",
        "Queue and connections",
        (STREAM,),
        "the WebSocket library: `aiohttp` moves a frame in about a fifth of the CPU `websockets` "
        "needs; both pass the same session tests (docs: exchanges.md#websocket-transports)",
        _one_of(sorted(TRANSPORTS)),
        default=_field_default(StreamConfig, "ws_transport"),
    ),
    Setting(
        WS_URL_FAMILY,
        "Queue and connections",
        (STREAM,),
        "an exchange's endpoint override, e.g. `BINANCE_WS_URL=ws://127.0.0.1:9001`; one per "
        "exchange: " + ", ".join(f"`{e.upper()}_WS_URL`" for e in PROTOCOLS),
        "a `ws://` or `wss://` URL",
        default_text="the exchange's public `wss://` endpoint",
    ),
    Setting(
        REST_URL_FAMILY,
        "Queue and connections",
        (STREAM,),
        "the REST base URL book snapshots are fetched from, e.g. "
        "`BINANCE_REST_URL=http://127.0.0.1:9001`; for the exchanges whose books need one: "
        + ", ".join(f"`{e.upper()}_REST_URL`" for e in REST_SNAPSHOT_EXCHANGES)
        + " (docs: order-books.md#rest-snapshots)",
        "an `http://` or `https://` URL",
        default_text="the exchange's public `https://` API",
    ),
    # -- the run lifecycle -------------------------------------------------------------------
    Setting(
        "STOP_GRACE_SECONDS",
        "Stop, logs and metrics",
        (*RUNS_OF_DATA, LOADTEST),
        "the stop sequence must finish within this (below ECS's default 30 s stopTimeout); "
        "for `batch` it bounds the manifest write",
        _range("STOP_GRACE_SECONDS", _SEC),
        default=DEFAULT_STOP_GRACE_SECONDS,
        unit="s",
    ),
    Setting(
        "STATS_INTERVAL_SECONDS",
        "Stop, logs and metrics",
        RUNS_OF_DATA,
        "one stats line (for `batch`: one progress line) this often",
        _range("STATS_INTERVAL_SECONDS", _SEC),
        default=DEFAULT_STATS_INTERVAL_SECONDS,
        unit="s",
    ),
    Setting(
        "METRICS",
        "Stop, logs and metrics",
        RUNS_OF_DATA,
        "`emf`: the stats and progress lines are also CloudWatch Embedded Metric Format "
        "documents (needs `LOG_FORMAT=json`)",
        _one_of(METRICS_MODES),
        default=_field_default(RuntimeSettings, "metrics"),
    ),
    Setting(
        "LOG_LEVEL",
        "Stop, logs and metrics",
        RUNS_OF_DATA,
        "the lowest level logged (EMF lines are logged whatever it is)",
        _one_of(LOG_LEVELS) + " (any case)",
        default=_field_default(RuntimeSettings, "log_level"),
    ),
    Setting(
        "LOG_FORMAT",
        "Stop, logs and metrics",
        RUNS_OF_DATA,
        "one JSON object per line, or text for people",
        _one_of(LOG_FORMATS),
        default_text="`json` (`text` on a TTY unless `METRICS=emf`)",
    ),
    Setting(
        "ECS_CONTAINER_METADATA_URI_V4",
        "Stop, logs and metrics",
        RUNS_OF_DATA,
        "set by ECS in every container: the run reads its task's metadata (task id in the run "
        "id, the manifest's `ecs` section)",
        "a URL (a failure to read it is logged and ignored)",
        default_text="unset outside ECS",
    ),
    # -- S3 security ---------------------------------------------------------------------------
    Setting(
        "S3_SSE",
        "S3 security",
        S3_CLIENTS,
        "server-side encryption on every `PutObject` and `CreateMultipartUpload`",
        _one_of(SSE_ALGORITHMS),
        default_text="unset: the bucket's default encryption",
    ),
    Setting(
        "S3_SSE_KMS_KEY_ID",
        "S3 security",
        S3_CLIENTS,
        "the KMS key for `S3_SSE=aws:kms`",
        "a KMS key id, key ARN, alias name or alias ARN; only with `S3_SSE=aws:kms`",
        default_text="unset: the account's AWS managed key",
    ),
    Setting(
        "S3_EXPECTED_BUCKET_OWNER",
        "S3 security",
        S3_CLIENTS,
        "the account that must own every bucket touched (`ExpectedBucketOwner` on every request)",
        "a 12-digit AWS account id",
        default_text="unset",
    ),
    # -- batch ---------------------------------------------------------------------------------
    Setting(
        "OUTPUT_BUCKET",
        "Batch jobs",
        (BATCH,),
        "the bucket outputs and the manifest go to (`--out` replaces `OUTPUT_BUCKET` and "
        "`OUTPUT_PREFIX`)",
        "an S3 bucket name",
        default_text="required (or `--out`)",
    ),
    Setting(
        "OUTPUT_PREFIX",
        "Batch jobs",
        (BATCH,),
        "the key prefix of the outputs (`{OUTPUT_PREFIX}{JOB}/...`) and the manifest",
        "a key prefix ending with `/`",
        default_text="required (or `--out`)",
    ),
    Setting(
        "INPUT_BUCKET",
        "Batch jobs",
        (BATCH,),
        "the bucket a job that reads input reads from (`--in` replaces the input variables)",
        "an S3 bucket name",
        default_text="required for a job that reads input (or `--in`)",
    ),
    Setting(
        "INPUT_PREFIX",
        "Batch jobs",
        (BATCH,),
        "every object under this prefix is the input ...",
        "a key prefix; not with `INPUT_KEY`",
        default_text="one of `INPUT_PREFIX`/`INPUT_KEY` is required",
    ),
    Setting(
        "INPUT_KEY",
        "Batch jobs",
        (BATCH,),
        "... or this one object (a full key); `compact` reads a prefix only",
        "an object key; not with `INPUT_PREFIX`",
        default_text="one of `INPUT_PREFIX`/`INPUT_KEY` is required",
    ),
    Setting(
        "NO_NEW_INPUT",
        "Batch jobs",
        (BATCH,),
        "`ecommerce`: what a run does when every input is already under `processed/`: `fail` "
        "(exit 1) or `succeed` (exit 0, nothing written or moved, counter `no_new_input`; for "
        "runs started per uploaded object, see "
        "[The lake](lake.md#event-driven-e-commerce-batch))",
        _one_of(("fail", "succeed")),
        default="fail",
    ),
    Setting(
        "BATCH_CPU_WORKERS",
        "Batch jobs",
        (BATCH,),
        "threads for CPU-bound work",
        "an integer " + _range("BATCH_CPU_WORKERS"),
        default_text=f"the CPUs available (at most {MAX_CPU_WORKERS})",
    ),
    Setting(
        "SAMPLE_SEED",
        "Batch jobs",
        (SAMPLE,),
        "the seed of `feedvault sample` (flag `--seed`): the same seed writes the same bytes",
        "an integer " + _range("SAMPLE_SEED"),
        default=0,
    ),
    Setting(
        "COMPACT_FROM",
        "Batch jobs",
        (BATCH,),
        "`compact`: the first UTC day",
        "`YYYY-MM-DD`, `today` or `yesterday`",
        default_text="required for `compact`",
    ),
    Setting(
        "COMPACT_TO",
        "Batch jobs",
        (BATCH,),
        "`compact`: the last UTC day, inclusive",
        f"as `COMPACT_FROM`, not before it; at most {COMPACT_MAX_DAYS} days in all",
        default_text="`COMPACT_FROM`",
    ),
    Setting(
        "BOOK_SNAPSHOT_LEVELS",
        "Batch jobs",
        (BATCH,),
        "`compact`: levels of each side in the book snapshots; 0 writes no snapshots",
        "an integer " + _range("BOOK_SNAPSHOT_LEVELS"),
        default=COMPACT_SNAPSHOT_LEVELS,
    ),
    Setting(
        "BOOK_SNAPSHOT_INTERVAL",
        "Batch jobs",
        (BATCH,),
        "`compact`: seconds between two book snapshots, on the receive clock from midnight UTC",
        _range(
            "BOOK_SNAPSHOT_INTERVAL",
            _SEC,
            ", a whole number of milliseconds that divides a day (`0.1`, `1`, `60`)",
        ),
        default=COMPACT_SNAPSHOT_INTERVAL,
        unit="s",
    ),
    Setting(
        "COMPUTATION_SEED",
        "Batch jobs",
        (BATCH,),
        "`computation`: the seed; the same seed gives byte-identical outputs",
        "an integer " + _range("COMPUTATION_SEED"),
        default=RISK_DEFAULTS.seed,
    ),
    Setting(
        "COMPUTATION_PATHS",
        "Batch jobs",
        (BATCH,),
        "`computation`: simulated paths",
        f"an integer from 100 to {MAX_PATHS:,}; paths x horizons at most {MAX_LOSS_VALUES:,}",
        default=RISK_DEFAULTS.paths,
    ),
    Setting(
        "COMPUTATION_S0",
        "Batch jobs",
        (BATCH,),
        "`computation`: the price at the start",
        "a number greater than 0",
        default=RISK_DEFAULTS.s0,
    ),
    Setting(
        "COMPUTATION_MU",
        "Batch jobs",
        (BATCH,),
        "`computation`: the annual drift",
        "a number from -5 to 5",
        default=RISK_DEFAULTS.mu,
    ),
    Setting(
        "COMPUTATION_SIGMA",
        "Batch jobs",
        (BATCH,),
        "`computation`: the annual volatility",
        "a number greater than 0 and at most 5",
        default=RISK_DEFAULTS.sigma,
    ),
    Setting(
        "COMPUTATION_NOTIONAL",
        "Batch jobs",
        (BATCH,),
        "`computation`: the value of the position at the start",
        "a number greater than 0",
        default=RISK_DEFAULTS.notional,
    ),
    Setting(
        "COMPUTATION_HORIZONS",
        "Batch jobs",
        (BATCH,),
        "`computation`: the horizons in trading days",
        f"a comma list of whole days from 1 to {MAX_HORIZON_DAYS}, at most {MAX_HORIZONS}",
        default=RISK_DEFAULTS.horizons,
    ),
    Setting(
        "COMPUTATION_CONFIDENCE",
        "Batch jobs",
        (BATCH,),
        "`computation`: the confidence levels of VaR and expected shortfall",
        f"a comma list of numbers between 0 and 1 (exclusive), at most {MAX_CONFIDENCES}",
        default=RISK_DEFAULTS.confidence,
    ),
    # -- read by the AWS SDK -------------------------------------------------------------------
    Setting(
        "AWS_REGION",
        "AWS SDK",
        S3_CLIENTS,
        "the region of the S3 client",
        "an AWS region",
        default_text="the SDK's (on ECS: the task's region)",
        reader="aws-sdk",
    ),
    Setting(
        "AWS_ENDPOINT_URL_S3",
        "AWS SDK",
        S3_CLIENTS,
        "an S3-compatible endpoint instead of AWS's (the demo's and load test's local server)",
        "a URL",
        default_text="AWS's S3 endpoint",
        reader="aws-sdk",
    ),
    Setting(
        "AWS_ACCESS_KEY_ID",
        "AWS SDK",
        S3_CLIENTS,
        "credentials, with `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, or any other "
        "source of the SDK's credentials chain (on ECS: the task role); their values are "
        "redacted from every log line",
        "AWS credentials",
        default_text="the SDK's credentials chain",
        reader="aws-sdk",
    ),
)
"""Every environment variable, grouped by section in the order the page shows them."""

SECTIONS: Final = tuple(dict.fromkeys(s.section for s in SETTINGS))
"""The page's sections, in order."""


def by_name() -> dict[str, Setting]:
    """The entries by variable name (``<EXCHANGE>_WS_URL`` and ``<EXCHANGE>_REST_URL`` for the
    endpoint families)."""
    return {s.name: s for s in SETTINGS}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(settings: Sequence[Setting]) -> str:
    """One Markdown table: variable, commands, default, accepted values, meaning."""
    lines = [
        "| variable | read by | default | accepted | meaning |",
        "|---|---|---|---|---|",
    ]
    for s in settings:
        commands = ", ".join(f"`{c}`" for c in s.commands)
        default = s.shown_default
        if s.default is not None:
            default = f"`{default}`"
        lines.append(
            f"| `{s.name}` | {commands} | {_cell(default)} | {_cell(s.accepted)} "
            f"| {_cell(s.meaning)} |"
        )
    return "\n".join(lines)


def render_markdown() -> str:
    """The reference as Markdown: one ``###`` section and table per :data:`SECTIONS` entry."""
    parts: list[str] = []
    for section in SECTIONS:
        parts.append(f"### {section}\n")
        parts.append(render_table([s for s in SETTINGS if s.section == section]) + "\n")
    return "\n".join(parts)
