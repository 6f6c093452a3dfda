"""Credentials never reach the logs or the manifest (issue 7).

Unit tests of :func:`engine.redact.redact` on the shapes botocore and HTTP put secrets in, the
log formatters, and two real ``feedvault stream`` runs with recognisable credentials in the
environment (moto accepts any): one that succeeds against moto's S3 server, one whose bucket
does not exist. Every byte they print and every object they store is searched for the values.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import load_stream_config
from engine.logs import configure_logging, get_logger, log_event
from engine.redact import REDACTED, redact, set_known_secrets
from tests.conftest import S3Server
from tests.harness import exchange_stream_env, fake_exchange, run_stream

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
        env = exchange_stream_env(
            _credentials(s3_server),
            bucket=bucket,
            prefix="red/",
            streams="binance:BTCUSDT",
            url_variable="BINANCE_WS_URL",
            url=fx.url,
            runtime="2",
        )
        done = run_stream(env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"event":"run_end"' in done.stdout
    client = s3_server.client()
    keys = s3_server.keys(bucket)
    stored = [client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]
    assert any(b'"config"' in body for body in stored)  # the manifest is among them
    _assert_nowhere([done.stdout, done.stderr, *stored])


def test_a_failing_s3_run_prints_no_credentials(s3_server: S3Server, tmp_path: Path) -> None:
    """The bucket does not exist: every S3 request fails, errors are logged and recorded."""
    spill = tmp_path / "spill"
    with fake_exchange(tmp_path, symbols="BTCUSDT", rate="200") as fx:
        env = exchange_stream_env(
            _credentials(s3_server),
            bucket="no-such-bucket-redaction",
            prefix="red/",
            streams="binance:BTCUSDT",
            url_variable="BINANCE_WS_URL",
            url=fx.url,
            runtime="2",
            STOP_GRACE_SECONDS="6",
            UPLOAD_RETRY_SECONDS="1",
        )
        env["SPILL_DIR"] = str(spill)
        done = run_stream(env, timeout=90)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no-such-bucket-redaction" in done.stdout + done.stderr
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
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["an error"]
