"""Every log line's ``event`` is a fixed snake_case name (issue 12), so a CloudWatch filter such
as ``{ $.event = "upload_retry" }`` matches all lines of a kind and nothing else.

The formatter guarantees it for any line (another library's, a plain ``log.warning`` with free
text: the logger's name becomes ``event``, the text goes to ``message``); the real run below
checks feedvault's own lines through an S3 outage (fault proxy in front of moto's server), a
spill, a kill and the next run's recovery: the lines that carried free text in ``event``.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.logs import EVENT_NAME, configure_logging, get_logger, log_event
from sinks.spill import scan_spilled
from tests.conftest import S3Server
from tests.faultproxy import SLOWDOWN, FaultProxy
from tests.harness import (
    fake_exchange,
    fake_stream_env,
    parse_logs,
    run_stream,
    start_stream,
    wait_for_log,
)

PREFIX = "streaming/events/"


def _json_lines(fmt_level: str = "DEBUG") -> io.StringIO:
    out = io.StringIO()
    configure_logging(fmt_level, "json", stream=out)
    return out


def test_a_free_text_line_gets_its_loggers_name_as_event_and_keeps_the_text() -> None:
    out = _json_lines()
    get_logger("sink").warning("upload of %s failed (attempt %d), retrying in %.2fs", "k", 1, 0.34)
    logging.getLogger("botocore.endpoint").warning("Retry needed, retrying request")
    logging.getLogger("py.warnings").warning("%s", "DeprecationWarning: old")
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["event"], d["message"]) for d in docs] == [
        ("feedvault_sink", "upload of k failed (attempt 1), retrying in 0.34s"),
        ("botocore_endpoint", "Retry needed, retrying request"),
        ("py_warnings", "DeprecationWarning: old"),
    ]
    assert "logger" not in docs[0] and docs[1]["logger"] == "botocore.endpoint"


def test_a_fixed_name_stays_the_event_and_a_bad_one_never_becomes_it() -> None:
    out = _json_lines()
    log = get_logger("test")
    log_event(log, logging.INFO, "upload_retry", key="k", attempt=1, delay_s=0.34)
    log.info("ready")
    log_event(log, logging.INFO, "Upload Retry!", key="k")
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert docs[0]["event"] == "upload_retry" and "message" not in docs[0]
    assert (docs[0]["key"], docs[0]["attempt"], docs[0]["delay_s"]) == ("k", 1, 0.34)
    assert docs[1]["event"] == "ready" and "message" not in docs[1]
    assert (docs[2]["event"], docs[2]["message"], docs[2]["key"]) == (
        "feedvault_test",
        "Upload Retry!",
        "k",
    )


def test_log_event_with_exc_info_carries_the_error_and_its_traceback() -> None:
    out = _json_lines()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log_event(get_logger("sink"), logging.ERROR, "upload_error", key="k", exc_info=True)
    (doc,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (doc["event"], doc["key"], doc["error"]) == ("upload_error", "k", "RuntimeError: boom")
    assert "Traceback (most recent call last)" in doc["traceback"]


# -- a real run ------------------------------------------------------------------------------------


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as started:
        yield started


class _Reader:
    """Reads a process's stdout to its end on a thread (the pipe never fills while the test
    waits on something else)."""

    def __init__(self, proc: subprocess.Popen[str], until: str) -> None:
        assert proc.stdout is not None
        self.lines: list[str] = []
        self._stdout = proc.stdout
        self._until = until
        #: Set once a line with event ``until`` has been read.
        self.reached = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stdout:
            self.lines.append(line)
            if f'"event":"{self._until}"' in line.replace(" ", ""):
                self.reached.set()

    def join(self, timeout: float = 30.0) -> str:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "stdout still open"
        return "".join(self.lines)


def _bad_events(docs: list[dict[str, Any]]) -> list[object]:
    return [doc.get("event") for doc in docs if not EVENT_NAME.match(str(doc.get("event")))]


def test_every_event_of_a_run_through_an_s3_outage_and_its_recovery_is_a_fixed_name(
    s3_server: S3Server, bucket: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    spill_dir = tmp_path / "spill"
    killed = "20261206T000000Z-killed"
    with fake_exchange(tmp_path, rate="300") as fx:
        env = fake_stream_env(
            proxy.env(),
            fx.url,
            bucket,
            PREFIX,
            "300",
            # Counted from the first attempt, which fails within its 20 s S3 deadline: at least
            # one sink retry (backoff 0.25-0.5 s) follows, then the spill.
            UPLOAD_RETRY_SECONDS="25",
            RUN_ID=killed,
        )
        env.update(WINDOW_SECONDS="1", SPILL_DIR=str(spill_dir))
        # Run 1: S3 throttles every request once the run is connected; a window is retried,
        # spilled, and the run is killed with it on disk (no manifest of its own).
        proc = start_stream(env)
        try:
            first = wait_for_log(proc, "connected", timeout=60)
            proxy.set_outage(SLOWDOWN)
            # The sink logs window_spilled once the window's files are durable on disk.
            reader = _Reader(proc, until="window_spilled")
            assert reader.reached.wait(timeout=120), "nothing spilled within 120 s"
            assert scan_spilled(spill_dir, killed).entries
        finally:
            proc.kill()
            proc.wait(timeout=30)
        out1 = "".join(json.dumps(doc) + "\n" for doc in first) + reader.join()
        proxy.set_outage(None)
        proxy.wait_settled()
        # Run 2: S3 is back; it recovers run 1's spilled windows.
        env2 = dict(env, RUN_ID="20261206T000100Z-recovers", MAX_RUNTIME_SECONDS="3")
        done = run_stream(env2, timeout=90)
    out2 = done.stdout
    for out in (out1, out2):
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(parse_logs(out)) == len(lines), "every stdout line is a JSON object"
    docs1, docs2 = parse_logs(out1), parse_logs(out2)
    assert _bad_events(docs1 + docs2) == []
    by_event: dict[str, list[dict[str, Any]]] = {}
    for doc in docs1 + docs2:
        by_event.setdefault(doc["event"], []).append(doc)
    retry = by_event["upload_retry"][0]
    assert retry["key"].startswith(PREFIX + "trades/") and retry["attempt"] == 1
    assert 0 < retry["delay_s"] <= 1 and retry["error"]  # the first backoff: 0.25-0.5 s
    assert by_event["upload_failed"] and by_event["window_spilled"]
    spilled_keys = {doc["key"] for doc in by_event["window_spilled"]}
    recovered = [doc for doc in docs2 if doc["event"] == "recovery" and doc.get("uploaded")]
    assert recovered, out2[-3000:] + done.stderr[-2000:]
    assert spilled_keys <= set(s3_server.keys(bucket, PREFIX + "trades/"))
