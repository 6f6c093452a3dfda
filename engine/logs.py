"""Structured logging: one JSON object per line on stdout (or readable text on a TTY).

Use :func:`log_event` with an event name and fields::

    log_event(log, logging.INFO, "connected", exchange="binance", url=url)

prints ``{"ts":"2026-11-22T12:00:00.123Z","level":"info","event":"connected","exchange":...}``.
Values are serialized with orjson; anything it cannot serialize is rendered with ``str``.

Every line is passed through :func:`engine.redact.redact` as the last step, so credentials
(AWS key ids, secret keys, session tokens in query or header form, SigV4 signatures,
``Authorization`` headers, and the exact values of this process's AWS credential variables and
of the credentials botocore resolved) never reach the output, whichever field or exception
message carried them.

``event`` is always a fixed snake_case name (``^[a-z][a-z0-9_]*$``), so a CloudWatch filter
such as ``{ $.event = "upload_retry" }`` matches every line of its kind: the formatter keeps the
name given to :func:`log_event`, and a line logged with a free-text message (another library's,
or a plain ``logger.warning("...")``) gets its logger's name as ``event`` (``botocore.endpoint``
-> ``botocore_endpoint``) with the text in ``message``.

Other libraries' warnings and errors (botocore, aiobotocore, websockets, asyncio, Python's
``warnings``) are not left to Python's plain-text fallback: :func:`configure_logging` gives the
root logger the same formatter at ``WARNING``, so they come out as the same redacted lines, with
a ``logger`` field naming their source.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any, TextIO

import orjson

from engine.redact import add_known_secrets, redact, secrets_of

LOGGER_NAME = "feedvault"
OTHER_LIBRARIES_LEVEL = logging.WARNING
"""The least severe line of another library's logger that is printed (or ``LOG_LEVEL``, if
that is more severe)."""
METRICS_LOGGER = "feedvault.metrics"
"""The logger of metric lines (``METRICS=emf``): kept at INFO whatever ``LOG_LEVEL`` says, so
raising the log level never silences the metrics."""


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
"""What every line's ``event`` matches: a fixed snake_case name."""
_NOT_NAME = re.compile(r"[^a-z0-9]+")


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log ``event`` (a fixed snake_case name, :data:`EVENT_NAME`) with structured ``fields``
    (kept apart from the name). ``exc_info=True``, a reserved field, adds the exception being
    handled instead (``error`` and ``traceback`` fields), as ``logger.exception`` does."""
    if logger.isEnabledFor(level):
        exc_info = bool(fields.pop("exc_info", False))
        logger.log(level, event, exc_info=exc_info, extra={"fields": fields})


def event_name(record: logging.LogRecord) -> tuple[str, str | None]:
    """``(event, message)`` of ``record``: its own message when that is a fixed name
    (:func:`log_event`'s, or a plain ``log.info("ready")``) and no message; otherwise the
    logger's name made a snake_case name (``feedvault.sink`` -> ``feedvault_sink``) and the
    free text as the message."""
    if isinstance(record.msg, str) and not record.args and EVENT_NAME.match(record.msg):
        return record.msg, None
    name = _NOT_NAME.sub("_", record.name.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = "log_" + name if name else "log"
    return name, record.getMessage()


def _iso(created: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created % 1 * 1000):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event, message = event_name(record)
        doc: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "event": event,
        }
        if message is not None:
            doc["message"] = message
        if not _ours(record):
            doc["logger"] = record.name
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            doc["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            # an unexpected error (ours logged with log.exception, or another library's): its
            # traceback is the only clue
            doc["traceback"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(doc, default=str).decode())


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        source = "" if _ours(record) else f"[{record.name}] "
        line = f"{_iso(record.created)} {record.levelname:<7} {source}{record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            tail += f" error={type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            tail += "\n" + self.formatException(record.exc_info)
        return redact(f"{line} {tail}".rstrip())


def _ours(record: logging.LogRecord) -> bool:
    return record.name == LOGGER_NAME or record.name.startswith(LOGGER_NAME + ".")


class OtherLibrariesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's handler for other libraries' lines (one is installed at a time)."""


def configure_logging(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Send feedvault's logs to ``stream`` (stdout by default) in ``fmt`` (json or text), and
    other libraries' lines of ``WARNING`` and above there too, formatted and redacted alike.

    The credential values of the environment are added here to the known secrets (those
    registered before, e.g. by an S3 writer already open, stay known). Calling it again
    replaces the handlers it installed; handlers installed by others are left alone."""
    add_known_secrets(secrets_of(os.environ))
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    ours = logging.getLogger(LOGGER_NAME)
    for old in list(ours.handlers):
        ours.removeHandler(old)
    ours.addHandler(handler)
    ours.setLevel(level)
    ours.propagate = False
    logging.getLogger(METRICS_LOGGER).setLevel(logging.INFO)

    others = OtherLibrariesHandler(stream or sys.stdout)
    others.setFormatter(formatter)
    others.setLevel(max(OTHER_LIBRARIES_LEVEL, ours.level))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, OtherLibrariesHandler):
            root.removeHandler(old)
    root.addHandler(others)
    if root.level > OTHER_LIBRARIES_LEVEL:
        root.setLevel(OTHER_LIBRARIES_LEVEL)
    logging.captureWarnings(True)
