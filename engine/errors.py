"""The one exception tree of feedvault.

Every error feedvault raises on purpose derives from :class:`FeedvaultError`. Errors of the
libraries underneath (botocore, websockets, aiohttp, OSError, orjson) are mapped at the boundary
where they happen, with ``raise X from exc``, so callers never need to know which library
failed.

Exit statuses (docs: operations.md#exit-status): :class:`ConfigError` is exit 2; every other
error that ends a run is exit 1.
"""

from __future__ import annotations

from collections.abc import Sequence


class FeedvaultError(Exception):
    """Base of every error feedvault raises on purpose."""


class ConfigError(FeedvaultError):
    """A missing or invalid setting. ``variable`` names the environment variable (or flag).

    ``str(err)`` is one line: ``"S3_BUCKET: is required"``.
    """

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class ProtocolError(FeedvaultError):
    """An exchange frame that cannot be understood."""


class MalformedFrame(ProtocolError):
    """A frame that is not valid for the protocol. It is counted and skipped, never fatal.

    ``kind`` is a short stable label (``"json"``, ``"missing-field"``, ``"type"``, ...) used to
    log each kind of bad input once.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class SubscriptionRejected(FeedvaultError):
    """The exchange refused a subscription (for example an unknown symbol).

    A configuration error discovered at run time: the run flushes what it received, writes its
    manifest and exits 1 with the exchange's message. ``symbols`` are those refused, as
    ``STREAMS`` spells them (the ones the exchange named, else those of the connection it
    refused); ``streams`` the same as ``exchange:SYMBOL``, named in ``str(err)``:
    ``"kraken rejected the subscription to kraken:NOPE/USD: kraken subscribe failed ..."``.
    """

    def __init__(self, exchange: str, message: str, symbols: Sequence[str] = ()) -> None:
        self.exchange = exchange
        self.message = message
        self.symbols = tuple(symbols)
        self.streams = tuple(f"{exchange}:{symbol}" for symbol in self.symbols)
        named = f" to {', '.join(self.streams)}" if self.streams else ""
        super().__init__(f"{exchange} rejected the subscription{named}: {message}")


class ConnectError(FeedvaultError):
    """A WebSocket connection could not be opened or was lost; the session reconnects."""


class TransportError(ConnectError):
    """An error of the WebSocket transport seam (:mod:`connectors.transport`): what aiohttp or
    websockets raised, mapped at the seam (``raise X from exc``)."""


class ConnectFailed(TransportError):
    """The connection could not be opened: refused, unreachable, the open timeout passed, the
    handshake was refused, or the server's certificate failed verification (``wss://``)."""


class ConnectionEnded(TransportError):
    """The open connection ended (or had ended when it was used).

    ``code`` and ``reason`` are the peer's close frame's (1006 and ``""`` when no close frame
    was read: a reset, an abort, a deadline that passed); ``clean`` is True when the peer's close
    frame was read, so nothing the peer sent before it was lost on the way."""

    def __init__(self, code: int, reason: str = "", *, clean: bool) -> None:
        super().__init__(f"connection ended: code {code}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.reason = reason
        self.clean = clean


class FrameTooLarge(ConnectionEnded):
    """A frame over the connection's frame-size limit (``limit`` bytes): the client failed the
    connection with 1009 (message too big). Every frame before it was delivered."""

    def __init__(self, limit: int, *, clean: bool = False) -> None:
        super().__init__(1009, f"frame over {limit} bytes", clean=clean)
        self.limit = limit


class SnapshotFetchFailed(FeedvaultError):
    """A REST request for a book snapshot failed (:mod:`connectors.rest`, after its retries).

    ``url`` and ``cause`` are named in ``str(err)``, one line: ``"GET <url>: <cause>"``;
    ``status`` is the HTTP status when a response came (None for a timeout or a connection
    error); ``retryable`` is False for an answer no retry changes (a 4xx other than 429/418,
    a body over the size limit)."""

    def __init__(
        self, url: str, cause: str, *, status: int | None = None, retryable: bool = True
    ) -> None:
        super().__init__(f"GET {url}: {cause}")
        self.url = url
        self.cause = cause
        self.status = status
        self.retryable = retryable


class StorageError(FeedvaultError):
    """An object store operation failed (after the store's own retries)."""


class ObjectNotFound(StorageError):
    """The object (or bucket) does not exist."""


class StorageRefused(StorageError):
    """The store refused in a way no retry fixes: the bucket does not exist, access is denied,
    the credentials are invalid or missing, the directory is read-only or missing.

    ``code`` is the store's own name for the refusal (``NoSuchBucket``, ``AccessDenied``,
    ``EROFS``...). At a run's start it is a configuration error (exit 2); later, it is retried
    and spilled like any storage error."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class AlreadyExists(StorageError):
    """A conditional create found an object already at its key (``If-None-Match: *``)."""


class DestinationUnavailable(StorageError):
    """A run's destination kept failing (timeouts, 5xx, refused connections) for the whole
    start-up retry budget, before anything connected. One line: ``str(err)`` names the
    destination variable and the last error. Exit 1: the configuration may be right."""


class IntegrityError(StorageError):
    """Stored bytes do not match their recorded checksum or size."""


class VerifyError(FeedvaultError):
    """A run failed verification; ``problems`` lists each finding as one line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems) if problems else "verification failed")
        self.problems = problems


class RecordingError(FeedvaultError):
    """A recording file is unreadable or not in the recording format.

    See docs/recording-and-replay.md#the-recording-format.
    """


class MetadataError(FeedvaultError):
    """The ECS task metadata endpoint did not answer, or not with task metadata. Never fatal:
    the run goes on without the metadata (:mod:`feedvault.ecs`)."""


def first_leaf(error: BaseException) -> BaseException:
    """The first error that is not an exception group, looking into nested groups (a
    TaskGroup inside a TaskGroup raises a group holding a group): what a log line or a
    manifest should name."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error
