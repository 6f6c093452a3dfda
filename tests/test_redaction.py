"""Credentials never reach the logs or the manifest (issues 7 and 12).

Unit tests of :func:`engine.redact.redact` on the shapes botocore and HTTP put secrets in
(query strings, headers, requests botocore really signed), the log formatters, and two real
``feedvault stream`` runs with recognisable credentials in the environment (moto accepts any):
one that succeeds against moto's S3 server, one whose bucket does not exist. Every byte they
print and every object they store is searched for the values. Credentials that botocore
resolves elsewhere (a shared credentials file, a container credentials endpoint, rotated) are
redacted once the S3 writer has used them; short values are no secrets, so a load test keeps its
bucket and prefix names.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import subprocess
import threading
import warnings
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.logs import configure_logging, get_logger, log_event
from engine.redact import (
    MIN_SECRET_LENGTH,
    REDACTED,
    add_known_secrets,
    redact,
    set_known_secrets,
)
from feedvault.config import load_stream_config
from sinks.s3 import S3Writer
from tests.conftest import S3Server
from tests.faultproxy import ERROR500, FaultProxy, not_manifest
from tests.harness import (
    FEEDVAULT,
    base_env,
    fake_exchange,
    fake_stream_env,
    run_stream,
)

KEY_ID = "AKIAFEEDVAULT7EST2QZ"
SESSION_KEY_ID = "ASIAFEEDVAULT7EST2QZ"
SECRET = "fvSecret/Key+0123456789abcdefghijKLMNOPqrst"
TOKEN = "IQoJb3JpZ2luX2VjEFVAULTsessionTOKEN/+feedvault0123456789=="
SIGNATURE = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"


@pytest.fixture(autouse=True)
def _known_secrets() -> Any:
    set_known_secrets([SECRET, TOKEN])
    yield
    set_known_secrets([])


@pytest.mark.parametrize(
    "text",
    [
        f"credentials {KEY_ID} and {SESSION_KEY_ID}",
        f"aws_secret_access_key={SECRET}",
        f"[default]\naws_secret_access_key = {SECRET}\naws_session_token = {TOKEN}\n",
        f"{{'aws_secret_access_key': '{SECRET}'}}",
        "GET https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={KEY_ID}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Security-Token={TOKEN}&X-Amz-Signature={SIGNATURE} failed",
        f"Authorization: AWS4-HMAC-SHA256 Credential={KEY_ID}/20260101/us-east-1/s3/"
        f"aws4_request, SignedHeaders=host;x-amz-date, Signature={SIGNATURE}",
        f"headers={{'Authorization': 'AWS4-HMAC-SHA256 Credential=x, Signature={SIGNATURE}'}}",
        f"token {TOKEN} in free text",
        f"connect failed: wss://feeduser:{SECRET}@stream.example.com:9443/ws",
    ],
)
def test_known_shapes_are_redacted(text: str) -> None:
    out = redact(text)
    assert REDACTED in out
    for secret in (KEY_ID, SESSION_KEY_ID, SECRET, TOKEN, SIGNATURE):
        assert secret not in out, out


def test_ordinary_text_is_left_alone() -> None:
    text = 'S3 PutObject s3://b/p/k failed: SlowDown: Please reduce your request rate "x"'
    assert redact(text) == text


_plain = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40).map(
    lambda s: s.replace("\\", "").replace('"', "")
)


@given(_plain, _plain, st.sampled_from(["X-Amz-Signature=", "X-Amz-Security-Token="]))
def test_redaction_keeps_a_json_line_valid(before: str, after: str, name: str) -> None:
    """A line made by ``orjson.dumps`` stays JSON after redaction, with the value gone."""
    line = json.dumps({"event": "e", "error": f"{before} {name}{SIGNATURE}&x=1 {after}"})
    out = redact(line)
    assert SIGNATURE not in out
    json.loads(out)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_lines_are_redacted(fmt: str) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", fmt, stream)
    set_known_secrets([SECRET, TOKEN])
    log = get_logger("test")
    log_event(log, logging.WARNING, "s3_error", error=f"Authorization: AWS4 {SIGNATURE}")
    log_event(log, logging.INFO, "config", config={"key": KEY_ID, "token": TOKEN})
    try:
        raise RuntimeError(f"url ?X-Amz-Signature={SIGNATURE}&X-Amz-Security-Token={TOKEN}")
    except RuntimeError:
        log.exception("failed")
    output = stream.getvalue()
    assert output.count(REDACTED) >= 5
    for secret in (KEY_ID, SECRET, TOKEN, SIGNATURE):
        assert secret not in output
    if fmt == "json":
        docs = [json.loads(line) for line in output.splitlines()]
        (failed,) = [doc for doc in docs if doc["event"] == "failed"]
        assert "Traceback (most recent call last)" in failed["traceback"]  # a bug's only clue
    else:
        assert "Traceback (most recent call last)" in output


def test_a_url_password_is_not_in_the_public_configuration() -> None:
    url = f"wss://feeduser:{SECRET}@127.0.0.1:9443"
    env = {
        "S3_BUCKET": "b-bucket",
        "S3_PREFIX": "p/",
        "MAX_RUNTIME_SECONDS": "5",
        "STREAMS": "binance:BTCUSDT",
        "BINANCE_WS_URL": url,
    }
    config = load_stream_config(env)
    assert config.ws_urls["binance"] == url  # still what the session connects to
    assert config.public_dict()["ws_urls"] == {"binance": f"wss://{REDACTED}@127.0.0.1:9443"}


# -- real runs ------------------------------------------------------------------------------------


def _credentials(s3_server: S3Server) -> dict[str, str]:
    return {
        **s3_server.env(),
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "LOG_LEVEL": "DEBUG",
    }


def _assert_nowhere(texts: list[str | bytes]) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        for secret in (KEY_ID, SECRET, TOKEN):
            assert secret.encode() not in data, (secret, data[:2000])


def _files(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in directory.rglob("*") if p.is_file()]


def test_a_stream_run_prints_and_stores_no_credentials(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    with fake_exchange(tmp_path, symbols="BTCUSDT", rate="200") as fx:
        env = fake_stream_env(_credentials(s3_server), fx.url, bucket, "red/", "2", "BTCUSDT")
        done = run_stream(env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"event":"run_end"' in done.stdout
    client = s3_server.client()
    keys = s3_server.keys(bucket)
    stored = [client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]
    assert any(b'"config"' in body for body in stored)  # the manifest is among them
    _assert_nowhere([done.stdout, done.stderr, *stored])


def test_a_run_refused_by_its_destination_prints_no_credentials(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """The bucket does not exist: the run's first write is refused, one line says so."""
    env = fake_stream_env(
        _credentials(s3_server),
        "ws://127.0.0.1:1",
        "no-such-bucket-redaction",
        "red/",
        "2",
        "BTCUSDT",
    )
    done = run_stream(env, timeout=90)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no-such-bucket-redaction" in done.stderr
    _assert_nowhere([done.stdout, done.stderr])


def test_a_failing_s3_run_prints_no_credentials(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Every upload but the manifest's fails (500, retried by botocore): windows are spilled."""
    spill = tmp_path / "spill"
    with (
        fake_exchange(tmp_path, symbols="BTCUSDT", rate="200") as fx,
        FaultProxy(s3_server.endpoint) as proxy,
    ):
        proxy.set_outage(ERROR500, where=not_manifest)
        env = fake_stream_env(
            {**_credentials(s3_server), "AWS_ENDPOINT_URL_S3": proxy.url},
            fx.url,
            bucket,
            "red/",
            "2",
            "BTCUSDT",
            STOP_GRACE_SECONDS="6",
            UPLOAD_RETRY_SECONDS="1",
        )
        env["SPILL_DIR"] = str(spill)
        done = run_stream(env, timeout=90)
        sent = [r.headers.get("x-amz-security-token") for r in proxy.requests]
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert TOKEN in sent  # the token did travel, and was logged nowhere
    spilled = _files(spill)
    assert spilled, "the run spilled nothing"
    _assert_nowhere([done.stdout, done.stderr, *spilled])


@pytest.mark.parametrize("module", ["sinks.sink", "sinks.recovery", "sinks.s3"])
def test_the_sink_modules_log_redacted_json_lines(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink, recovery and S3 modules log under feedvault's logger: JSON, redacted."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sink-secret-value-0123456789")
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    log = importlib.import_module(module).log
    secrets = "key sink-secret-value-0123456789 AKIAABCDEFGHIJKLMNOP"
    log.warning("upload of %s failed: %s", "k", secrets)
    (line,) = out.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["level"] == "warning"
    assert "logger" not in doc  # feedvault's own logger, not another library's line
    assert "sink-secret-value" not in line and "AKIAABCDEFGHIJKLMNOP" not in line


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_other_libraries_warnings_come_out_formatted_and_redacted(fmt: str) -> None:
    """botocore's warnings, an asyncio error and Python's ``warnings`` reach the same stream,
    in the same format, redacted and naming their logger; their INFO lines do not."""
    out = io.StringIO()
    configure_logging("INFO", fmt, stream=out)
    configure_logging("INFO", fmt, stream=out)  # again: still one handler, one line each
    set_known_secrets([SECRET, TOKEN])
    logging.getLogger("botocore.credentials").warning("found %s with %s", KEY_ID, SECRET)
    logging.getLogger("botocore.endpoint").info("sending %s", TOKEN)
    logging.getLogger("asyncio").error("Task exception was never retrieved: %s", TOKEN)
    try:
        raise ValueError(f"in a callback, token {TOKEN}")
    except ValueError:
        logging.getLogger("asyncio").exception("Exception in callback")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated, token {TOKEN}", UserWarning, stacklevel=1)
    get_logger("test").info("ours")
    lines = out.getvalue().splitlines()
    for secret in (KEY_ID, SECRET, TOKEN):
        assert secret not in out.getvalue()
    assert not any("sending" in line for line in lines)
    if fmt == "json":
        docs = [json.loads(line) for line in lines]
        by_logger: dict[str | None, list[dict[str, Any]]] = {}
        for doc in docs:
            by_logger.setdefault(doc.get("logger"), []).append(doc)
        assert [d["level"] for d in by_logger["botocore.credentials"]] == ["warning"]
        assert [d["level"] for d in by_logger["asyncio"]] == ["error", "error"]
        assert "traceback" in by_logger["asyncio"][1]  # another library's error: with its trace
        assert [d["level"] for d in by_logger["py.warnings"]] == ["warning"]
        assert [d["event"] for d in by_logger[None]] == ["ours"]  # ours name no logger
        assert "botocore.endpoint" not in by_logger
    else:
        assert "Traceback (most recent call last)" in out.getvalue()
        assert "[botocore.credentials] found" in out.getvalue()
        assert "[asyncio] Task exception" in out.getvalue()
        assert sum("ours" in line for line in lines) == 1


def test_a_log_level_above_warning_quiets_other_libraries_warnings_too() -> None:
    out = io.StringIO()
    configure_logging("ERROR", "json", stream=out)
    logging.getLogger("botocore.credentials").warning("a warning")
    logging.getLogger("asyncio").error("an error")
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(doc["event"], doc["message"]) for doc in docs] == [("asyncio", "an error")]


# -- issue 12: header forms, resolved credentials, only secrets -----------------------------------

UNKNOWN_TOKEN = "FwoGZXIvYXdzEHeaderFormTOKEN/+0123456789abcdefghij=="
"""A session token the redactor was never told about: only its shape can give it away."""


@pytest.mark.parametrize(
    "text",
    [
        f"X-Amz-Security-Token: {UNKNOWN_TOKEN}",
        f"x-amz-security-token:{UNKNOWN_TOKEN}\r\nhost: b.s3.amazonaws.com",
        f"GET /k?x-amz-security-token={UNKNOWN_TOKEN}&x-amz-signature={SIGNATURE} failed",
        f"headers={{'X-Amz-Security-Token': b'{UNKNOWN_TOKEN}', 'Authorization': b'AWS4-HMAC-"
        f"SHA256 Credential={KEY_ID}/20260101/us-east-1/s3/aws4_request, Signature={SIGNATURE}'}}",
        json.dumps({"error": f'headers {{"X-Amz-Security-Token": "{UNKNOWN_TOKEN}"}}'}),
        json.dumps({"error": f'{{"Authorization": "AWS4-HMAC-SHA256 Signature={SIGNATURE}"}}'}),
        f'{{"SecretAccessKey": "{SECRET}x", "SessionToken": "{UNKNOWN_TOKEN}"}}',
        f"('authorization', 'AWS4-HMAC-SHA256 Credential=fv/2026/s3, Signature={SIGNATURE}')",
    ],
)
def test_header_forms_of_tokens_and_signatures_are_redacted(text: str) -> None:
    out = redact(text)
    for secret in (UNKNOWN_TOKEN, SIGNATURE, KEY_ID, SECRET):
        assert secret not in out, out
    if text.startswith("{") and '"error"' in text:
        json.loads(out)  # a JSON line stays JSON


def _signed_request(key_id: str, secret: str, token: str) -> Any:
    """A PUT signed by botocore's SigV4 with a session token, prepared as botocore sends it."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="PUT", url="https://b.s3.amazonaws.com/k", data=b"x")
    S3SigV4Auth(Credentials(key_id, secret, token), "s3", "us-east-1").add_auth(request)
    return request.prepare()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_log_line_with_a_security_token_header_is_redacted(fmt: str) -> None:
    """Lines carrying a request botocore really signed, as ours and as another library's."""
    prepared = _signed_request("FVHEADERKEYID0123456", "fvHeaderSecret", UNKNOWN_TOKEN)
    signature = str(prepared.headers["Authorization"]).rsplit("Signature=", 1)[1]
    assert prepared.headers["X-Amz-Security-Token"] == UNKNOWN_TOKEN
    out = io.StringIO()
    configure_logging("INFO", fmt, stream=out)
    log_event(
        get_logger("test"),
        logging.WARNING,
        "upload_failed",
        error=f"X-Amz-Security-Token: {UNKNOWN_TOKEN}",
        headers=dict(prepared.headers),
    )
    logging.getLogger("botocore.endpoint").warning("Sending http request: %r", prepared)
    logging.getLogger("aiohttp.client").error("request headers: %s", prepared.headers)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    for secret in (UNKNOWN_TOKEN, signature):
        assert secret not in out.getvalue(), out.getvalue()
    assert all(REDACTED in line for line in lines)
    if fmt == "json":
        assert json.loads(lines[0])["event"] == "upload_failed"


@pytest.mark.parametrize("version", ["s3", "s3v4"])
def test_a_presigned_url_keeps_no_token(version: str) -> None:
    """URLs botocore presigns with a session token, in both query-string signing schemes."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="FVPRESIGNKEYID012345",
        aws_secret_access_key="fvPresignSecret",
        aws_session_token=UNKNOWN_TOKEN,
        config=Config(signature_version=version),
    )
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    assert "x-amz-security-token=" in url.lower()
    out = redact(f"GET {url} failed")
    assert "FwoGZXIvYXdzEHeaderFormTOKEN" not in out
    assert "FVPRESIGNKEYID012345" not in out
    assert "Signature=" in out and "Signature=[REDACTED]" in out.replace("X-Amz-", "")


def test_only_values_of_secret_length_are_known_secrets() -> None:
    """``loadtest``, ``testing``: short values would mangle bucket names and ordinary words."""
    text = "s3://feedvault-loadtest/loadtest/ testing 0123456789abcde"
    set_known_secrets(["loadtest", "testing", "0123456789abcde", None, ""])
    assert redact(text) == text
    add_known_secrets(["x" * (MIN_SECRET_LENGTH - 1)])
    assert redact(text) == text
    add_known_secrets(["feedvault-loadte"])  # 16 characters: a secret, whatever it looks like
    assert redact(text) == f"s3://{REDACTED}st/loadtest/ testing 0123456789abcde"


def test_configure_logging_keeps_the_secrets_registered_before() -> None:
    set_known_secrets([])
    add_known_secrets(["fvResolvedSecret0123456789"])
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    get_logger("test").warning("value %s", "fvResolvedSecret0123456789")
    assert "fvResolvedSecret" not in out.getvalue()


_NO_ENV_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


def _credentials_elsewhere(
    monkeypatch: pytest.MonkeyPatch, s3_server: S3Server, tmp_path: Path, **env: str
) -> None:
    """Point the SDK at moto with no credential variable: only ``env`` says where they are."""
    for name in _NO_ENV_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    set_known_secrets([])  # as a process starts: the environment holds no credential


def _leak_attempts(out: io.StringIO, values: list[str]) -> list[str]:
    """Log ``values`` as another library and as feedvault would; the lines printed."""
    logging.getLogger("botocore.credentials").warning("resolved %s", " ".join(values))
    log_event(get_logger("test"), logging.ERROR, "s3_failed", error=repr(values))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    return lines


async def test_credentials_from_a_shared_credentials_file_are_redacted(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id, secret = "fvfile-key-id-0123456789", "fvFileSecret/0123456789+abcdefghijKLMNOPqr"
    token = "FwoGZXIvYXdzEFileTOKEN/0123456789+abcdefghij=="
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
        f"aws_session_token = {token}\n"
    )
    _credentials_elsewhere(
        monkeypatch, s3_server, tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(credentials)
    )
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    async with S3Writer.open(bucket) as writer:
        await writer.put("red/file.txt", b"x")
    for line in _leak_attempts(out, [key_id, secret, token]):
        assert REDACTED in line
        for value in (key_id, secret, token):
            assert value not in line, line


class _CredentialsEndpoint:
    """A credentials endpoint on loopback serving version :attr:`version` of a credential set,
    as the ECS container endpoint does (any ``GET``: ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` =
    :attr:`url`) and as the instance metadata service does (IMDSv2: a token, the role's name,
    its credentials; ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` = :attr:`root`). Each set expires
    ``expires_in`` after it is served."""

    ROLE = "fv-role"

    def __init__(self, expires_in: timedelta) -> None:
        self.version = 1
        self.served: set[int] = set()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # IMDSv2's session token
                self._send(b"fv-imds-session-token", "text/plain")

            def do_GET(self) -> None:
                if self.path.endswith("/security-credentials/"):
                    self._send(endpoint.ROLE.encode(), "text/plain")
                    return
                endpoint.served.add(endpoint.version)
                expires = datetime.now(UTC) + expires_in
                document = {
                    "Code": "Success",
                    "Type": "AWS-HMAC",
                    **endpoint.values(endpoint.version),
                    "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                self._send(json.dumps(document).encode(), "application/json")

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.url = self.root + "creds"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def values(version: int) -> dict[str, str]:
        return {
            "AccessKeyId": f"fvendpoint-key-{version}-0123456789",
            "SecretAccessKey": f"fvEndpointSecret{version}/0123456789+abcdefghijKLM",
            "Token": f"IQoJendpointTOKEN{version}/0123456789+abcdefghijklmn==",
        }

    def __enter__(self) -> _CredentialsEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


async def test_container_credentials_are_redacted_also_once_rotated(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each set expires in 12 minutes: inside botocore's 15-minute advisory window, so it is
    fetched again before every use, as credentials about to rotate are."""
    with _CredentialsEndpoint(timedelta(minutes=12)) as endpoint:
        _credentials_elsewhere(
            monkeypatch, s3_server, tmp_path, AWS_CONTAINER_CREDENTIALS_FULL_URI=endpoint.url
        )
        out = io.StringIO()
        configure_logging("INFO", "json", stream=out)
        async with S3Writer.open(bucket) as writer:
            await writer.put("red/one.txt", b"1")
            endpoint.version = 2  # rotated: the next request signs with the new set
            await writer.put("red/two.txt", b"2")
        assert endpoint.served == {1, 2}
    values = [v for version in (1, 2) for v in endpoint.values(version).values()]
    for line in _leak_attempts(out, values):
        for value in values:
            assert value not in line, line


def test_the_loadtest_report_keeps_its_bucket_and_prefix(tmp_path: Path) -> None:
    """The local S3 server's throwaway credentials are random: the engine redacts them, and
    nothing else (they were ``loadtest``, which redacted ``feedvault-loadtest``, ``loadtest/``)."""
    report_dir = tmp_path / "report"
    done = subprocess.run(
        [*FEEDVAULT, "loadtest", "--rate", "200", "--symbols", "1", "--duration", "1",
         "--report", str(report_dir)],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    text = (report_dir / "loadtest.json").read_text()
    report = json.loads(text)
    config = report["settings"]["engine_config"]
    assert config["destination"] == "s3://feedvault-loadtest/loadtest/", done.stderr[-2000:]
    assert REDACTED not in text
    assert REDACTED not in (report_dir / "engine.log").read_text()


async def test_instance_metadata_credentials_are_redacted(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _CredentialsEndpoint(timedelta(hours=6)) as endpoint:
        _credentials_elsewhere(
            monkeypatch,
            s3_server,
            tmp_path,
            AWS_EC2_METADATA_DISABLED="false",
            AWS_EC2_METADATA_SERVICE_ENDPOINT=endpoint.root,
            AWS_METADATA_SERVICE_TIMEOUT="10",  # a loaded machine: not botocore's 1 s
            AWS_METADATA_SERVICE_NUM_ATTEMPTS="3",
        )
        out = io.StringIO()
        configure_logging("INFO", "json", stream=out)
        async with S3Writer.open(bucket) as writer:
            await writer.put("red/imds.txt", b"1")
        assert endpoint.served == {1}
    values = list(endpoint.values(1).values())
    for line in _leak_attempts(out, values):
        for value in values:
            assert value not in line, line


def test_a_configuration_error_on_stderr_echoes_no_password(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """The one stderr line of a rejected setting quotes the value, redacted."""
    env = base_env(
        **s3_server.env(),
        S3_BUCKET="redaction-bucket",
        S3_PREFIX="red/",
        STREAMS="binance:BTCUSDT",
        MAX_RUNTIME_SECONDS="1",
        BINANCE_WS_URL="https://feeduser:url-pass%2Fword-0123@stream.example.com/ws",
    )
    done = run_stream(env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "BINANCE_WS_URL" in done.stderr and "stream.example.com" in done.stderr
    assert "url-pass" not in done.stdout + done.stderr
