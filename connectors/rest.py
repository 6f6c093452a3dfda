"""The HTTP client of REST book snapshots (docs: order-books.md#rest-snapshots).

:class:`RestClient` GETs a URL and returns a :class:`~connectors.book_actions.Fetched` (status,
body, receive time), so its :meth:`RestClient.get` is a session's ``SnapshotFetcher``. What it
adds to aiohttp:

- a **timeout per request** (connect, send, whole body), and a body size limit;
- **retries** under a :class:`~engine.retry.RetryPolicy` for what a retry can change: a
  timeout, a connection error, a 5xx, a 429/418; not for other 4xx answers;
- a **request-weight budget** per rolling minute (:class:`WeightBudget`; Binance counts 6000
  weight a minute, a depth snapshot of 1000 levels costs 50): a request that would exceed it
  *waits* until enough of the last minute's weight has aged out, up to ``max_wait`` seconds,
  rather than being sent and refused;
- **429 and 418** (Binance's rate limit and its IP ban): the ``Retry-After`` seconds stop
  every request of this client until they have passed (a wait longer than ``max_wait`` fails
  at once instead);
- errors mapped to :class:`~engine.errors.SnapshotFetchFailed`, one line naming the URL and
  the cause.

Every wait goes through the injected ``sleep`` and every time through the injected
:class:`~engine.clock.Clock`, so tests drive the budget and the retries without sleeping.

Cancel-safe: cancelled while waiting for the budget it has taken nothing; cancelled during a
request, the request is abandoned (its connection closed by aiohttp) and the weight it took
stays counted (the exchange may have counted it too). Closing the client (``async with``)
closes its connections.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import aiohttp

from connectors.book_actions import Fetched
from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import SnapshotFetchFailed
from engine.retry import Jitter, RetryPolicy, Sleep, retry

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds a request may take in all (connect, send, read the whole body)."""
DEFAULT_POLICY: Final = RetryPolicy(initial=0.5, cap=8.0, jitter=Jitter.FULL, max_attempts=4)
"""Four attempts, waits drawn under 0.5, 1, 2 s: a snapshot fetch fails within about 45 s
(4 timeouts and the waits), and the session tries again later (connectors/book_actions.py)."""
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
"""The largest body accepted (a 5000-level Binance depth is about 300 kB)."""
DEFAULT_MAX_WAIT: Final = 60.0
"""The longest a request waits for the weight budget or a ``Retry-After``."""
WINDOW_SECONDS: Final = 60.0

WEIGHT_PER_MINUTE: Final[dict[str, int]] = {
    "binance": 6000,
    "binanceus": 1200,
    "bitstamp": 1000,
}
"""The request-weight budget per minute of each exchange with REST snapshots: Binance's
``REQUEST_WEIGHT`` limit per IP and minute (6000); for Binance.US, which publishes its own
limits, the lower 1200 that Binance itself used before 2023, so the feed's weight of 50 (Binance's
for 1000 levels) can only be conservative; Bitstamp's 10,000 requests per 10 minutes (weight 1
each)."""


@dataclass(slots=True)
class _Spent:
    at: float
    weight: int


class WeightBudget:
    """Request weight per rolling :data:`WINDOW_SECONDS` (see the module docstring).

    :meth:`take` waits (through ``sleep``) until ``weight`` fits, then counts it. Requests take
    their turn in order (a lock): a heavy request is not overtaken forever by light ones.
    :meth:`block` stops every request until a time (``Retry-After``).
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Sleep = asyncio.sleep,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.clock = clock
        self.sleep = sleep
        self.max_wait = max_wait
        self._spent: deque[_Spent] = deque()
        self._used = 0
        self._blocked_until = -math.inf
        self._turn = asyncio.Lock()

    @property
    def used(self) -> int:
        """Weight counted in the last minute (as of the last :meth:`take`)."""
        return self._used

    def block(self, seconds: float) -> None:
        """No request may start within ``seconds`` from now (a 429's or 418's
        ``Retry-After``)."""
        self._blocked_until = max(self._blocked_until, self.clock.monotonic() + seconds)

    def _expire(self, now: float) -> None:
        spent = self._spent
        while spent and spent[0].at <= now - WINDOW_SECONDS:
            self._used -= spent.popleft().weight

    def wait_for(self, weight: int) -> float:
        """Seconds until ``weight`` fits now (0: at once)."""
        now = self.clock.monotonic()
        self._expire(now)
        wait = max(0.0, self._blocked_until - now)
        used = self._used
        for item in self._spent:
            if used + weight <= self.per_minute:
                break
            used -= item.weight
            wait = max(wait, item.at + WINDOW_SECONDS - now)
        return wait

    async def take(self, weight: int, url: str) -> None:
        """Wait until ``weight`` fits, then count it. :class:`SnapshotFetchFailed` (not
        retryable) when ``weight`` exceeds the whole budget or the wait would be longer than
        ``max_wait``."""
        if weight > self.per_minute:
            raise SnapshotFetchFailed(
                url, f"weight {weight} exceeds the budget of {self.per_minute}", retryable=False
            )
        async with self._turn:
            while (wait := self.wait_for(weight)) > 0:
                if wait > self.max_wait:
                    raise SnapshotFetchFailed(
                        url,
                        f"rate limit: would wait {wait:.0f} s for the weight budget "
                        f"(more than {self.max_wait:.0f} s)",
                        retryable=False,
                    )
                await self.sleep(wait)
            self._spent.append(_Spent(self.clock.monotonic(), weight))
            self._used += weight


def retry_after(value: str | None, default: float) -> float:
    """The seconds of a ``Retry-After`` header (delta seconds; an HTTP date or anything else
    gives ``default``)."""
    if value is None:
        return default
    try:
        seconds = float(value.strip())
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds >= 0 else default


class RestClient:
    """GET with a timeout, retries, a weight budget and ``Retry-After`` (module docstring).

    ``per_minute``: the budget of weight per minute (see :data:`WEIGHT_PER_MINUTE`); one client
    per exchange (the budget is the exchange's, per IP). Use ``async with RestClient(...)``;
    :meth:`get` outside it raises RuntimeError.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        policy: RetryPolicy = DEFAULT_POLICY,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Sleep = asyncio.sleep,
        max_wait: float = DEFAULT_MAX_WAIT,
        max_body: int = MAX_BODY_BYTES,
        user_agent: str = "feedvault",
    ) -> None:
        self.timeout = timeout
        self.policy = policy
        self.clock = clock
        self.sleep = sleep
        self.max_body = max_body
        self.budget = WeightBudget(per_minute, clock=clock, sleep=sleep, max_wait=max_wait)
        self._headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self._http: aiohttp.ClientSession | None = None
        #: Attempts that failed and were retried (for the run's counters).
        self.retries = 0

    async def __aenter__(self) -> RestClient:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout), headers=self._headers
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections (idempotent)."""
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def get(self, url: str, weight: int = 1) -> Fetched:
        """GET ``url`` (``weight``: its cost in the budget); the 2xx response. Retries under
        the policy; raises :class:`SnapshotFetchFailed` naming the URL and the last cause."""

        def count(_: object) -> None:
            self.retries += 1

        return await retry(
            lambda: self._attempt(url, weight),
            self.policy,
            retry_on=(SnapshotFetchFailed,),
            unless=lambda exc: not getattr(exc, "retryable", False),
            clock=self.clock,
            sleep=self.sleep,
            on_retry=count,
        )

    async def _attempt(self, url: str, weight: int) -> Fetched:
        http = self._http
        if http is None:
            raise RuntimeError("RestClient used outside 'async with'")
        await self.budget.take(weight, url)
        try:
            async with http.get(url, allow_redirects=False) as response:
                status = response.status
                if status in (429, 418):
                    wait = retry_after(response.headers.get("Retry-After"), 60.0)
                    self.budget.block(wait)
                    what = "rate limited" if status == 429 else "IP banned"
                    raise SnapshotFetchFailed(
                        url, f"HTTP {status} ({what}), Retry-After {wait:g} s", status=status
                    )
                if status >= 300:
                    raise SnapshotFetchFailed(
                        url,
                        f"HTTP {status} {response.reason or ''}".rstrip(),
                        status=status,
                        retryable=status >= 500,
                    )
                body = await self._body(response, url)
        except TimeoutError:
            raise SnapshotFetchFailed(
                url, f"no complete answer within {self.timeout:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise SnapshotFetchFailed(url, f"{type(exc).__name__}: {exc}"[:200]) from exc
        except OSError as exc:
            raise SnapshotFetchFailed(url, f"{exc.strerror or exc}") from exc
        return Fetched(status, body, self.clock.time_ns())

    async def _body(self, response: aiohttp.ClientResponse, url: str) -> bytes:
        length = response.content_length
        if length is not None and length > self.max_body:
            raise SnapshotFetchFailed(
                url, f"body of {length} bytes over {self.max_body}", retryable=False
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > self.max_body:
                raise SnapshotFetchFailed(url, f"body over {self.max_body} bytes", retryable=False)
            chunks.append(chunk)
        return b"".join(chunks)
