"""TLS certificate checks are always on for ``wss://`` (issue 7).

A local WebSocket server over TLS with a self-signed certificate (made here with the
``cryptography`` package, valid for 127.0.0.1): :func:`self_signed` and :func:`tls_server`. The
session's refusal of it (on both transports: ``connect_failed``, backoff, the server never
reached) is in tests/test_session_conformance.py, the transport's in
tests/test_transport_conformance.py. Here: plain ``ws://`` is only ever an override (every
exchange's default endpoint is ``wss://``), and no code turns the checks off.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import ServerConnection, serve

from connectors.registry import PROTOCOLS, get_protocol
from tests.harness import REPO


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
