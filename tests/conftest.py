"""Shared fixtures: a real S3-compatible server (moto's server mode) on loopback."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
import pytest
from moto.server import ThreadedMotoServer

from engine.logs import OtherLibrariesHandler

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
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

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
