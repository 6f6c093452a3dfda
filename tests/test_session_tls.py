"""TLS certificate checks are always on for ``wss://`` (issue 7).

A local WebSocket server over TLS with a self-signed certificate (made here with the
``cryptography`` package, valid for 127.0.0.1): the session must refuse it (certificate not
trusted), log ``connect_failed`` and back off between attempts, and never reach the server's
handler. A client that trusts the certificate does reach it, so the refusal is the
certificate check and not a broken server. Plain ``ws://`` is only ever an override: every
exchange's default endpoint is ``wss://``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import random
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from connectors.binance import BinanceProtocol
from connectors.gaps import GapTracker
from connectors.registry import PROTOCOLS, get_protocol
from connectors.session import InvalidFrameLog, SessionSettings, WebSocketSession
from engine.batchqueue import BatchQueue
from engine.records import Trade
from engine.retry import RetryPolicy
from engine.stats import Counters
from tests.harness import REPO
from tests.logcapture import captured_logs


class _Ceiling(random.Random):
    """Full jitter at its ceiling, so each delay is the backoff's bound for that attempt."""

    def uniform(self, a: float, b: float) -> float:
        return b


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@asynccontextmanager
async def tls_server(cert: Path, key: Path, reached: list[str]) -> AsyncIterator[int]:
    """A WebSocket server over TLS on 127.0.0.1; ``reached`` gets each handled request path."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def handler(ws: ServerConnection) -> None:
        reached.append(ws.request.path if ws.request is not None else "?")
        await ws.close()

    async with serve(handler, "127.0.0.1", 0, ssl=context) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield port


async def test_a_self_signed_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    reached: list[str] = []
    async with tls_server(cert, key, reached) as port:
        # Control: a client that trusts this certificate gets through.
        trusting = ssl.create_default_context(cafile=str(cert))
        async with asyncio.timeout(10):
            async with connect(f"wss://127.0.0.1:{port}/control", ssl=trusting) as ws:
                await ws.wait_closed()
        assert reached == ["/control"]

        counters = Counters()
        session = WebSocketSession(
            BinanceProtocol(),
            f"wss://127.0.0.1:{port}",
            ["BTCUSDT"],
            BatchQueue[Trade](1000),
            counters=counters,
            gaps=GapTracker(),
            invalid_log=InvalidFrameLog(counters),
            settings=SessionSettings(open_timeout=5),
            backoff=RetryPolicy(initial=0.01, cap=0.04, rng=_Ceiling()),
        )
        stop = asyncio.Event()
        with captured_logs("INFO") as logs:
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(session.run(stop))
                await logs.wait_for(lambda: len(logs.raw("reconnecting")) >= 3)
                stop.set()
                async with asyncio.timeout(10):
                    await task
    assert reached == ["/control"]  # the session never got past the handshake
    assert session.connections == 0
    assert counters.reconnects >= 3
    failures = logs.docs("connect_failed")
    assert len(failures) >= 3
    for doc in failures:
        assert doc["exchange"] == "binance"
        assert doc["url"].startswith(f"wss://127.0.0.1:{port}/")
        assert "CERTIFICATE_VERIFY_FAILED" in doc["error"], doc
        assert "self-signed certificate" in doc["error"] or "self signed" in doc["error"], doc
    delays = [doc["delay_s"] for doc in logs.docs("reconnecting")]
    assert delays[:3] == [0.01, 0.02, 0.04], delays  # exponential backoff, capped


def test_every_default_endpoint_is_wss() -> None:
    for name in PROTOCOLS:
        assert get_protocol(name).default_url.startswith("wss://"), name


def test_no_code_turns_certificate_checks_off() -> None:
    """No unverified SSL context anywhere in the shipped packages."""
    forbidden = re.compile(
        r"CERT_NONE|check_hostname\s*=\s*False|_create_unverified_context|verify\s*=\s*False|"
        r"ssl\s*=\s*False"
    )
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for package in ("engine", "connectors", "sinks", "batch", "feedvault")
        for path in sorted((REPO / package).rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if forbidden.search(line)
    ]
    assert found == []
