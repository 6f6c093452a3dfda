"""A fault-injecting HTTP proxy in front of moto's S3 server, on loopback, for tests.

``FaultProxy(upstream).start()`` serves on ``127.0.0.1:<free port>`` from its own thread and
event loop (so it works beside subprocesses and in-process event loops alike) and forwards every
request to ``upstream`` unchanged, unless a fault applies:

* scheduled faults: ``proxy.schedule(matcher, fault, ...)`` gives the next matching requests one
  fault each, in order (``PUT`` of a key, one multipart part, ``CompleteMultipartUpload``...);
* an outage: ``proxy.set_outage(fault)`` applies ``fault`` to every request until
  ``proxy.set_outage(None)``; ``set_outage(fault, where=matcher)`` only to the requests
  ``matcher`` selects (e.g. everything but the manifests: ``where=not_manifest``).

Faults: ``slowdown`` (503 ``SlowDown``, as S3 throttles), ``error500`` (500 ``InternalError``),
``denied`` (403 ``AccessDenied``, a role without the permission),
``reset`` (the connection is dropped without a response), ``timeout`` (the request is held
without a response for ``seconds``, then dropped: the client's read timeout fires first),
``slow`` (forwarded after ``seconds``), ``hang`` (the connection is accepted and the request read
whole, and no answer ever comes: an S3 that hangs; the request is held until the proxy stops,
then dropped), ``lost-answer`` (forwarded to S3, which does it, and the connection is then
dropped without the answer: a PUT that landed although its client saw a failure). Every wait
is bounded, by the fault's seconds or the proxy's own lifetime:
``stop()`` drops held requests.
``proxy.log`` records ``(method, path, query, outcome)`` of the last requests (bounded);
``proxy.requests`` the same requests with their headers (:class:`RecordedRequest`, names in
lower case), so a test can check what a client sent on every request of a run.

A request the proxy has read whole is forwarded even if its client has gone (killed, or its
upload cancelled), as S3 may commit a PUT whose client went away (aiohttp's server does not
cancel a handler when its client disconnects: ``handler_cancellation`` is off by default):
``proxy.wait_settled()`` waits until every request that has reached the proxy's handler is
answered, dropped or held for good, so a test lists the bucket as it will stay. (Bytes a client
wrote just before it died that the proxy has not parsed yet are not counted: call it after the
client's exit has been observed, as :func:`tests.stop_harness.run_with_signals` does.)
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import web

_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}
)
_S3_ERROR: Final = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
)


def s3_env_for(endpoint: str) -> dict[str, str]:
    """``AWS_*`` variables pointing an SDK at the S3 endpoint ``endpoint`` with moto's fake
    credentials (a moto server's, or a fault proxy's in front of it)."""
    return {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in (
            "slowdown",
            "error500",
            "reset",
            "timeout",
            "slow",
            "hang",
            "lost-answer",
            "denied",
        ):
            raise ValueError(f"unknown fault {self.kind!r}")


SLOWDOWN: Final = Fault("slowdown")
ERROR500: Final = Fault("error500")
RESET: Final = Fault("reset")
HANG: Final = Fault("hang")
DENIED: Final = Fault("denied")
"""403 ``AccessDenied``, as S3 answers a role without the permission."""
LOST_ANSWER: Final = Fault("lost-answer")
"""The request reaches S3 and is done there; its answer is lost (the connection dropped)."""


def timeout(seconds: float = 20.0) -> Fault:
    return Fault("timeout", seconds)


def slow(seconds: float) -> Fault:
    return Fault("slow", seconds)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    method: str
    path: str
    query: dict[str, str]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the proxy received it: header names in lower case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    outcome: str


Matcher = Callable[[RequestInfo], bool]


def any_request(_: RequestInfo) -> bool:
    return True


def put_object(key_part: str = "") -> Matcher:
    """A single-request PUT (not a part) of a key containing ``key_part``."""
    return lambda r: r.method == "PUT" and "partNumber" not in r.query and key_part in r.path


def upload_part(number: int | None = None) -> Matcher:
    return lambda r: (
        r.method == "PUT"
        and "partNumber" in r.query
        and number in (None, int(r.query["partNumber"]))
    )


def complete_multipart(r: RequestInfo) -> bool:
    return r.method == "POST" and "uploadId" in r.query


def manifest_put(r: RequestInfo) -> bool:
    return r.method == "PUT" and "/_manifests/" in r.path


def final_manifest_put() -> Matcher:
    """The PUT of a run's final manifest: every manifest PUT after the first one the matcher
    sees (the running manifest a run creates at its start). One matcher per run."""
    seen = 0

    def match(r: RequestInfo) -> bool:
        nonlocal seen
        if not manifest_put(r):
            return False
        seen += 1
        return seen > 1

    return match


def not_manifest(r: RequestInfo) -> bool:
    """Every request but those on a run's manifests (any method, and listings of them)."""
    return "/_manifests/" not in r.path and "_manifests/" not in r.query.get("prefix", "")


class FaultProxy:
    """See the module docstring."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = 0
        self.log: collections.deque[tuple[str, str, dict[str, str], str]] = collections.deque(
            maxlen=10_000
        )
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=10_000)
        self._scheduled: list[tuple[Matcher, collections.deque[Fault]]] = []
        self._outage: Fault | None = None
        self._outage_where: Matcher = any_request
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._forwarding = 0
        self._settled = threading.Condition(self._lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """``AWS_*`` variables pointing an SDK at the proxy (moto's fake credentials)."""
        return s3_env_for(self.url)

    # --- control (any thread) ---------------------------------------------------------------

    def schedule(self, matcher: Matcher, *faults: Fault) -> None:
        with self._lock:
            self._scheduled.append((matcher, collections.deque(faults)))

    def set_outage(self, fault: Fault | None, where: Matcher = any_request) -> None:
        """Apply ``fault`` to every request ``where`` selects (after the scheduled faults);
        ``None`` ends the outage."""
        with self._lock:
            self._outage = fault
            self._outage_where = where

    def clear(self) -> None:
        with self._lock:
            self._scheduled.clear()
            self._outage = None
            self._outage_where = any_request

    def pending(self) -> int:
        """Scheduled faults not yet used."""
        with self._lock:
            return sum(len(faults) for _, faults in self._scheduled)

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Wait (at most ``timeout`` s) until no request is being forwarded or delayed
        (``slow``) on its way to S3; requests held by ``timeout`` faults are never forwarded."""
        with self._settled:
            if not self._settled.wait_for(lambda: self._forwarding == 0, timeout):
                raise AssertionError(
                    f"{self._forwarding} requests still going to S3 after {timeout}s"
                )

    def outcomes(self, outcome: str) -> int:
        return sum(1 for *_, seen in list(self.log) if seen == outcome)

    def _fault_for(self, info: RequestInfo) -> Fault | None:
        with self._lock:
            for matcher, faults in self._scheduled:
                if faults and matcher(info):
                    return faults.popleft()
            return self._outage if self._outage_where(info) else None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fault proxy did not start within 10 s")
        return self

    def stop(self) -> None:
        """Drop held requests and stop serving; again, it does nothing."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(15)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        timeout_config = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout_config, auto_decompress=False) as client:
            self._client = client
            app = web.Application(client_max_size=1 << 30)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self.port)
            await site.start()
            self._started.set()
            try:
                await self._stopping.wait()
            finally:
                await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._count_forwarding(+1)  # from its headers: it may reach S3 (see wait_settled)
        counted = True
        try:
            info = RequestInfo(request.method, request.path, dict(request.query))
            body = await request.read()
            fault = self._fault_for(info)
            outcome = "forwarded" if fault is None else fault.kind
            self.log.append((info.method, info.path, info.query, outcome))
            headers = {name.lower(): value for name, value in request.headers.items()}
            self.requests.append(
                RecordedRequest(info.method, info.path, info.query, headers, outcome)
            )
            if fault is None:
                return await self._forward(request, body)
            if fault.kind in ("slowdown", "error500", "denied"):
                status, code = {
                    "slowdown": (503, "SlowDown"),
                    "error500": (500, "InternalError"),
                    "denied": (403, "AccessDenied"),
                }[fault.kind]
                text = _S3_ERROR.format(code=code, message=f"injected {fault.kind}")
                return web.Response(status=status, text=text, content_type="application/xml")
            if fault.kind == "reset":
                _drop(request)
                raise asyncio.CancelledError
            if fault.kind == "lost-answer":
                await self._forward(request, body)
                _drop(request)
                raise asyncio.CancelledError
            if fault.kind in ("timeout", "hang"):
                counted = False  # held, then dropped: it never reaches S3
                self._count_forwarding(-1)
                assert self._stopping is not None
                try:  # "hang": until the proxy stops (bounded by its lifetime)
                    async with asyncio.timeout(fault.seconds if fault.kind == "timeout" else None):
                        await self._stopping.wait()
                except TimeoutError:
                    pass
                _drop(request)
                raise asyncio.CancelledError
            await asyncio.sleep(fault.seconds)  # "slow": the response is late, not lost
            return await self._forward(request, body)
        finally:
            if counted:
                self._count_forwarding(-1)

    def _count_forwarding(self, change: int) -> None:
        with self._settled:
            self._forwarding += change
            self._settled.notify_all()

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._client.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out_headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
            }
            if request.method == "HEAD" and "Content-Length" in upstream.headers:
                # A HEAD answer has no body: pass the object's length on as it was.
                head = web.StreamResponse(status=upstream.status, headers=out_headers)
                head.content_length = int(upstream.headers["Content-Length"])
                await head.prepare(request)
                await head.write_eof()
                return head
            return web.Response(status=upstream.status, body=payload, headers=out_headers)


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:  # RST rather than FIN: a reset, as a dying load balancer sends
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        transport.close()
