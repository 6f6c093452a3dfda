"""The REST snapshot client (connectors/rest.py) against a real aiohttp web server on
127.0.0.1: retries, the per-request timeout, 429/418 with Retry-After, the weight budget (an
injected clock and sleep: no test sleeps), error mapping, the body limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from connectors.rest import RestClient, WeightBudget, retry_after
from engine.clock import FakeClock
from engine.errors import FeedvaultError, SnapshotFetchFailed
from engine.retry import Jitter, RetryPolicy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FAST = RetryPolicy(initial=0.01, cap=0.01, jitter=Jitter.NONE, max_attempts=3)


@dataclass
class Server:
    base: str
    answers: list[Handler]
    hits: list[str] = field(default_factory=list)
    #: Set at teardown: handlers that hang wait on it (so the server stops at once).
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """Answers each request with the next handler of ``answers`` (the last one repeats)."""
    state = Server("", [])

    async def handle(request: web.Request) -> web.StreamResponse:
        state.hits.append(request.path_qs)
        index = min(len(state.hits), len(state.answers)) - 1
        return await state.answers[index](request)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.base = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


def body(text: str, status: int = 200, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text=text, status=status, headers=headers)

    return handler


class Sleeps:
    """An injected sleep that records each wait and moves the fake clock by it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


def client(clock: FakeClock, sleeps: Sleeps, per_minute: int = 6000, **kw: object) -> RestClient:
    return RestClient(per_minute, policy=FAST, clock=clock, sleep=sleeps, **kw)  # type: ignore[arg-type]


async def test_get_returns_status_body_and_receive_time(server: Server) -> None:
    server.answers = [body('{"lastUpdateId":1}')]
    clock = FakeClock()
    async with client(clock, Sleeps(clock)) as rest:
        fetched = await rest.get(f"{server.base}/api/v3/depth?symbol=BTCUSDT&limit=1000", 50)
    assert (fetched.status, fetched.body, fetched.ts_recv) == (
        200,
        b'{"lastUpdateId":1}',
        clock.time_ns(),
    )
    assert server.hits == ["/api/v3/depth?symbol=BTCUSDT&limit=1000"]


async def test_5xx_is_retried_then_succeeds(server: Server) -> None:
    server.answers = [body("down", 503), body("down", 502), body("ok")]
    clock = FakeClock()
    sleeps = Sleeps(clock)
    async with client(clock, sleeps) as rest:
        fetched = await rest.get(f"{server.base}/x")
        assert fetched.body == b"ok" and rest.retries == 2
    assert len(server.hits) == 3 and sleeps.waits == [0.01, 0.01]


async def test_retries_give_up_with_one_line_naming_url_and_cause(server: Server) -> None:
    server.answers = [body("down", 500)]
    clock = FakeClock()
    async with client(clock, Sleeps(clock)) as rest:
        with pytest.raises(SnapshotFetchFailed) as caught:
            await rest.get(f"{server.base}/x")
    assert len(server.hits) == 3  # max_attempts
    assert str(caught.value) == f"GET {server.base}/x: HTTP 500 Internal Server Error"
    assert caught.value.status == 500 and isinstance(caught.value, FeedvaultError)


async def test_4xx_is_not_retried(server: Server) -> None:
    server.answers = [body('{"code":-1121,"msg":"Invalid symbol."}', 400)]
    clock = FakeClock()
    async with client(clock, Sleeps(clock)) as rest:
        with pytest.raises(SnapshotFetchFailed) as caught:
            await rest.get(f"{server.base}/x")
    assert len(server.hits) == 1 and not caught.value.retryable and caught.value.status == 400


async def test_timeout_is_mapped_and_retried(server: Server) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await server.release.wait()
        return web.Response(text="released")

    server.answers = [hang, body("late but fine")]
    clock = FakeClock()
    async with client(clock, Sleeps(clock), timeout=0.2) as rest:
        fetched = await rest.get(f"{server.base}/x")
    assert fetched.body == b"late but fine" and len(server.hits) == 2

    server.hits.clear()
    server.answers = [hang]
    async with client(clock, Sleeps(clock), timeout=0.2) as rest:
        with pytest.raises(SnapshotFetchFailed) as caught:
            await rest.get(f"{server.base}/y")
    assert "no complete answer within 0.2 s" in str(caught.value) and caught.value.status is None


async def test_connection_refused_is_mapped() -> None:
    clock = FakeClock()
    async with client(clock, Sleeps(clock)) as rest:
        with pytest.raises(SnapshotFetchFailed) as caught:
            await rest.get("http://127.0.0.1:9/x")  # discard port: nothing listens
    assert caught.value.url == "http://127.0.0.1:9/x" and caught.value.status is None


async def test_429_retry_after_holds_every_request_until_it_passed(server: Server) -> None:
    server.answers = [body("slow down", 429, **{"Retry-After": "7"}), body("ok")]
    clock = FakeClock()
    sleeps = Sleeps(clock)
    async with client(clock, sleeps) as rest:
        start = clock.monotonic()
        fetched = await rest.get(f"{server.base}/x")
        assert fetched.body == b"ok"
        # the policy's own wait, then the rest of the Retry-After before the next request
        assert sleeps.waits == [0.01, pytest.approx(7 - 0.01)]
        assert clock.monotonic() - start == pytest.approx(7)


async def test_418_with_a_ban_longer_than_max_wait_fails_at_once(server: Server) -> None:
    server.answers = [body("banned", 418, **{"Retry-After": "3600"})]
    clock = FakeClock()
    sleeps = Sleeps(clock)
    async with client(clock, sleeps, max_wait=60.0) as rest:
        with pytest.raises(SnapshotFetchFailed) as caught:
            await rest.get(f"{server.base}/x")
        assert len(server.hits) == 1 and sleeps.waits == [0.01]
        assert "would wait 3600 s" in str(caught.value)
        with pytest.raises(SnapshotFetchFailed):  # still banned: no request is sent
            await rest.get(f"{server.base}/x")
    assert len(server.hits) == 1


async def test_body_over_the_limit_is_refused(server: Server) -> None:
    server.answers = [body("x" * 5000)]
    clock = FakeClock()
    async with client(clock, Sleeps(clock), max_body=1000) as rest:
        with pytest.raises(SnapshotFetchFailed) as caught:
            await rest.get(f"{server.base}/x")
    assert not caught.value.retryable and len(server.hits) == 1


async def test_weight_budget_waits_rather_than_exceeds(server: Server) -> None:
    server.answers = [body("ok")]
    clock = FakeClock()
    sleeps = Sleeps(clock)
    async with client(clock, sleeps, per_minute=120) as rest:
        for _ in range(2):
            await rest.get(f"{server.base}/x", 50)
            clock.advance(10)
        assert sleeps.waits == [] and rest.budget.used == 100
        await rest.get(f"{server.base}/x", 50)  # 150 > 120: wait until the first 50 age out
        assert sleeps.waits == [pytest.approx(40)]
        assert rest.budget.used == 100
    assert len(server.hits) == 3


async def test_weight_budget_bounds() -> None:
    clock = FakeClock()
    sleeps = Sleeps(clock)
    budget = WeightBudget(100, clock=clock, sleep=sleeps, max_wait=30)
    with pytest.raises(SnapshotFetchFailed, match="exceeds the budget"):
        await budget.take(101, "u")
    await budget.take(100, "u")
    with pytest.raises(SnapshotFetchFailed, match="would wait 60 s"):
        await budget.take(1, "u")
    clock.advance(31)
    await budget.take(1, "u")  # 29 s: within max_wait
    assert sleeps.waits == [pytest.approx(29)]


def test_retry_after_parsing() -> None:
    assert retry_after("12", 60) == 12
    assert retry_after(" 0 ", 60) == 0
    assert retry_after(None, 60) == 60
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 60) == 60
    assert retry_after("-1", 60) == 60
    assert retry_after("nan", 60) == 60


async def test_get_outside_the_context_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        await RestClient(10).get("http://127.0.0.1:9/")
