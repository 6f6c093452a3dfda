"""Shared fixtures (a real S3-compatible server, moto's server mode, on loopback) and the
test tiers.

Tiers (markers registered in pyproject.toml; ``make test-unit``, ``make test-integration``,
``make test-e2e``, or ``pytest -m unit`` etc.). Every test is in exactly one, given at
collection by this rule, first match wins:

1. a tier marker the test or its module sets by hand (``pytest.mark.e2e``), or its module's
   entry in :data:`TIER_BY_MODULE` (for modules the rule below cannot tell);
2. ``e2e``: the test starts a process (in practice ``python -m feedvault``; also
   ``lint-imports`` and ``bash -n``): its code, the code of the test-module and ``tests.*``
   helpers it calls (transitively, by the names the code refers to), or one of its fixtures,
   names one of :data:`E2E_NAMES` (``subprocess``, ``create_subprocess_exec``, the harness's
   ``FEEDVAULT`` command, ``sys.executable``);
3. ``integration``: the test uses a real server on loopback, in-process: it requests one of
   :data:`INTEGRATION_FIXTURES` (moto's S3 server, a bucket, the fault proxy), or its code
   (followed as above) names one of :data:`INTEGRATION_NAMES` (the fake exchange, a websockets
   or asyncio server, a fault proxy, an HTTP server);
4. ``unit``: everything else.

A test with two tier markers fails the collection.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from engine.logs import OtherLibrariesHandler
from tests.faultproxy import s3_env_for

if TYPE_CHECKING:
    from tests.stop_harness import WatchedProxy

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
FIXTURES = os.path.join(SHARED, "fixtures")


@pytest.fixture(autouse=True)
def _other_libraries_logging_left_as_found() -> Iterator[None]:
    """An in-process run's ``configure_logging`` gives the root logger a handler on that
    test's stream (perhaps a capture that is closed after it), may lower the root logger's level
    and captures ``warnings``: undo all three after each test."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if isinstance(handler, OtherLibrariesHandler):
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class S3Server:
    endpoint: str
    port: int

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def env(self) -> dict[str, str]:
        """Environment variables that point an AWS SDK at this server."""
        return s3_env_for(self.endpoint)

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        out: list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            out.extend(obj["Key"] for obj in page.get("Contents", []))
        return out


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto server for the whole session; tests use their own bucket names."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(endpoint=f"http://127.0.0.1:{port}", port=port)
    finally:
        server.stop()


_bucket_counter = 0


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the shared moto server."""
    global _bucket_counter
    _bucket_counter += 1
    return s3_server.make_bucket(f"test-bucket-{os.getpid()}-{_bucket_counter}")


@pytest.fixture
def aws_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process's AWS SDKs at the moto server."""
    env = s3_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture(scope="module")
def watched_proxy(s3_server: S3Server) -> Iterator[WatchedProxy]:
    """A fault proxy in front of the S3 server that records the faults it applies, one per
    test module (tests/stop_harness.py)."""
    from tests.stop_harness import WatchedProxy

    with WatchedProxy(s3_server.endpoint) as started:
        yield started


@pytest.fixture
def watched(watched_proxy: WatchedProxy) -> Iterator[WatchedProxy]:
    """:func:`watched_proxy`, with no fault scheduled and an empty record."""
    watched_proxy.reset()
    yield watched_proxy
    watched_proxy.reset()


# -- tiers ----------------------------------------------------------------------------------------

TIERS = ("unit", "integration", "e2e")

TIER_BY_MODULE: dict[str, str] = {}
"""Test module name -> tier, for modules whose tests the rule cannot tell (none so far)."""

E2E_NAMES = frozenset({"subprocess", "create_subprocess_exec", "FEEDVAULT", "executable"})
INTEGRATION_FIXTURES = frozenset({"s3_server", "bucket", "aws_env", "watched", "watched_proxy"})
INTEGRATION_NAMES = frozenset(
    {
        "FakeExchange",
        "ThreadedMotoServer",
        "serve",
        "start_server",
        "create_server",
        "HTTPServer",
        "ThreadingHTTPServer",
        "FaultProxy",
        "WatchedProxy",
    }
)
_TESTS_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_FOLLOWED_MODULES = ("feedvault.testing",)
_names_cache: dict[Any, frozenset[str]] = {}


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _functions(obj: Any) -> list[types.FunctionType]:
    """The plain functions behind ``obj`` (a function, a hypothesis or decorator wrapper, a
    class's methods)."""
    if isinstance(obj, type):
        found = []
        for member in vars(obj).values():
            member = getattr(member, "__func__", member)
            if isinstance(member, property):
                member = member.fget
            found += _functions(member)
        return found
    inner = getattr(getattr(obj, "hypothesis", None), "inner_test", None)
    if inner is not None:
        obj = inner
    obj = inspect.unwrap(obj) if callable(obj) else obj
    return [obj] if isinstance(obj, types.FunctionType) else []


def _followed(obj: Any) -> bool:
    """Whether ``obj`` is a function (perhaps decorated) or class of the tests (or of the
    testing aids)."""
    obj = inspect.unwrap(obj) if inspect.isfunction(obj) else obj
    if not (inspect.isfunction(obj) or isinstance(obj, type)):
        return False
    if (getattr(obj, "__module__", None) or "").startswith(_FOLLOWED_MODULES):
        return True
    try:
        return os.path.abspath(inspect.getfile(obj)).startswith(_TESTS_DIR)
    except TypeError:  # a built-in class
        return False


def reached_names(obj: Any) -> frozenset[str]:
    """Every name the code of ``obj`` refers to, with the names of the test-module and
    ``tests.*`` helpers (functions and classes) it refers to, transitively."""
    functions = _functions(obj)
    key = tuple(func.__code__ for func in functions)
    if key in _names_cache:
        return _names_cache[key]
    _names_cache[key] = frozenset()  # a recursion stops here
    names: set[str] = set()
    for func in functions:
        own = _code_names(func.__code__)
        names |= own
        for name in own:
            target = func.__globals__.get(name)
            if _followed(target):
                names |= reached_names(target)
    _names_cache[key] = frozenset(names)
    return _names_cache[key]


def tier_of(item: pytest.Item) -> str:
    """The tier of ``item`` by the rule of this module's docstring."""
    marked = [name for name in TIERS if item.get_closest_marker(name) is not None]
    if len(marked) > 1:
        raise pytest.UsageError(f"{item.nodeid}: more than one tier marker {marked}")
    if marked:
        return marked[0]
    module = item.module.__name__ if isinstance(item, pytest.Function) and item.module else ""
    if module.rpartition(".")[2] in TIER_BY_MODULE:
        return TIER_BY_MODULE[module.rpartition(".")[2]]
    names: set[str] = set(reached_names(getattr(item, "obj", None)))
    info = getattr(item, "_fixtureinfo", None)
    fixtures = set(getattr(item, "fixturenames", ()))
    for defs in info.name2fixturedefs.values() if info is not None else ():
        for fixturedef in defs:
            if _followed(inspect.unwrap(fixturedef.func)):
                names |= reached_names(fixturedef.func)
    if names & E2E_NAMES:
        return "e2e"
    if fixtures & INTEGRATION_FIXTURES or names & INTEGRATION_NAMES:
        return "integration"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every collected test its tier marker; fail the collection if one would have none
    or two."""
    for item in items:
        item.add_marker(tier_of(item))
    for item in items:
        tiers = [name for name in TIERS if item.get_closest_marker(name) is not None]
        if len(tiers) != 1:
            raise pytest.UsageError(f"{item.nodeid}: tiers {tiers}, expected exactly one")
