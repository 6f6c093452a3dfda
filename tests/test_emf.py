"""``METRICS=emf``: CloudWatch Embedded Metric Format stats lines, checked against the
specification (tests/emf_spec.py) on the formatter and on the lines of real in-process runs."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batch.progress import JobProgress
from connectors.fake.server import FakeExchange
from engine.clock import FakeClock, ReplayClock
from engine.errors import ConfigError
from feedvault.batch_progress import ProgressReporter
from feedvault.batch_run import BatchRun, prepare_batch
from feedvault.config import Env, load_stream_config
from feedvault.emf import (
    MAX_METRICS,
    Metric,
    RunTotals,
    StreamMetrics,
    emf_document,
    summary_values,
)
from feedvault.replay import ReplayRun, load_replay_config
from feedvault.runner import StreamRun
from sinks.memory import MemoryWriter
from sinks.writer import StoredObject
from tests.emf_spec import assert_valid_emf, emf_problems
from tests.harness import past_the_deadline, stream_settings
from tests.logcapture import Lines, captured_logs
from tests.test_runner import SYMBOLS, config

SPEC_EXAMPLE: dict[str, Any] = {
    "_aws": {
        "Timestamp": 1574109732004,
        "CloudWatchMetrics": [
            {
                "Namespace": "lambda-function-metrics",
                "Dimensions": [["functionVersion"]],
                "Metrics": [{"Name": "time", "Unit": "Milliseconds"}],
            }
        ],
    },
    "functionVersion": "$LATEST",
    "time": 100,
    "requestId": "989ffbf8-9ace-4817-a57c-e4dd734019ee",
}


def _mutated(change: Callable[[dict[str, Any]], None]) -> str:
    document = copy.deepcopy(SPEC_EXAMPLE)
    change(document)
    return json.dumps(document)


def _directive(doc: dict[str, Any]) -> dict[str, Any]:
    directive: dict[str, Any] = doc["_aws"]["CloudWatchMetrics"][0]
    return directive


def _many_dimensions(doc: dict[str, Any]) -> None:
    keys = [f"d{i}" for i in range(31)]
    doc.update(dict.fromkeys(keys, "x"))
    _directive(doc)["Dimensions"] = [keys]


def _many_metrics(doc: dict[str, Any]) -> None:
    doc.update({f"m{i}": i for i in range(101)})
    _directive(doc)["Metrics"] = [{"Name": f"m{i}"} for i in range(101)]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (_mutated(lambda d: d["_aws"].update(Timestamp=1574109732004.5)), "Timestamp"),
        (_mutated(lambda d: d["_aws"].update(Timestamp="1574109732004")), "Timestamp"),
        (_mutated(lambda d: d.pop("_aws")), "_aws"),
        (_mutated(lambda d: _directive(d).update(Namespace="")), "Namespace"),
        (_mutated(lambda d: _directive(d).update(Dimensions=[])), "Dimensions"),
        (_mutated(_many_dimensions), "at most 30"),
        (_mutated(lambda d: d.update(functionVersion=7)), "functionVersion"),
        (_mutated(lambda d: d.pop("functionVersion")), "functionVersion"),
        (_mutated(_many_metrics), "at most 100"),
        (_mutated(lambda d: d.pop("time")), "'time'"),
        (_mutated(lambda d: d.update(time="100")), "'time'"),
        (_mutated(lambda d: d.update(time=True)), "'time'"),
        (_mutated(lambda d: d.update(time=list(range(101)))), "'time'"),
        (_mutated(lambda d: d.update(time=[])), "'time'"),
        (_mutated(lambda d: _directive(d)["Metrics"][0].update(Unit="Millis")), "Unit"),
        (_mutated(lambda d: _directive(d)["Metrics"][0].update(Extra=1)), "does not define"),
        (json.dumps(SPEC_EXAMPLE).replace("100", "NaN"), "'time'"),
        (json.dumps(SPEC_EXAMPLE) + " trailing", "JSON"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_the_validator_rejects_what_the_specification_forbids(line: str, problem: str) -> None:
    assert emf_problems(json.dumps(SPEC_EXAMPLE)) == []
    problems = emf_problems(line)
    assert problems and any(problem in p for p in problems), problems


def test_a_document_is_valid_emf_with_values_dimensions_and_properties() -> None:
    document = emf_document(
        timestamp_ms=1_700_000_000_123,
        dimensions={"Command": "stream", "Exchange": "binance"},
        metrics=[
            Metric("TradesPerSecond", "Count/Second", 812.5),
            Metric("QueueDepth", "Count", 3),
            Metric("UploadLatency", "Milliseconds", [12.0, 40.5]),
        ],
        properties={"run_id": "r-1"},
    )
    parsed = assert_valid_emf(json.dumps(document))
    assert parsed["_aws"] == {
        "Timestamp": 1_700_000_000_123,
        "CloudWatchMetrics": [
            {
                "Namespace": "feedvault",
                "Dimensions": [["Command", "Exchange"]],
                "Metrics": [
                    {"Name": "TradesPerSecond", "Unit": "Count/Second"},
                    {"Name": "QueueDepth", "Unit": "Count"},
                    {"Name": "UploadLatency", "Unit": "Milliseconds"},
                ],
            }
        ],
    }
    assert (parsed["Command"], parsed["Exchange"], parsed["run_id"]) == ("stream", "binance", "r-1")
    assert (parsed["TradesPerSecond"], parsed["UploadLatency"]) == (812.5, [12.0, 40.5])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timestamp_ms": 1.5}, "Timestamp"),
        ({"metrics": []}, "metrics per directive"),
        ({"metrics": [Metric(f"m{i}", "Count", i) for i in range(MAX_METRICS + 1)]}, "metrics"),
        ({"dimensions": {f"d{i}": "x" for i in range(31)}}, "dimensions"),
        ({"dimensions": {"Command": ""}}, "Command"),
        ({"metrics": [Metric("A", "Millis", 1)]}, "unit"),
        ({"metrics": [Metric("A", "Count", float("nan"))]}, "finite"),
        ({"metrics": [Metric("A", "Count", True)]}, "number"),
        ({"metrics": [Metric("A", "Count", [1.0] * 101)]}, "values"),
        ({"metrics": [Metric("A", "Count", [])]}, "values"),
        ({"metrics": [Metric("A", "Count", "7")]}, "number"),
        ({"metrics": [Metric("Command", "Count", 1)]}, "twice"),
        ({"properties": {"A": "x"}}, "collides"),
        ({"properties": {"_aws": {}}}, "collides"),
        ({"metrics": [Metric("", "Count", 1)]}, "name"),
    ],
)
def test_a_document_that_would_break_the_specification_is_refused(
    change: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "timestamp_ms": 1,
        "dimensions": {"Command": "stream"},
        "metrics": [Metric("A", "Count", 1)],
    }
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        emf_document(**arguments)


def test_summary_values_keep_few_samples_and_stand_for_many() -> None:
    assert summary_values([3.0, 1.0]) == [3.0, 1.0]
    samples = [float(i) for i in range(1001)]
    summary = summary_values(samples)
    assert len(summary) == 100
    assert summary == sorted(summary)
    assert (summary[0], summary[-1]) == (0.0, 1000.0)
    assert abs(summary[49] - 500.0) <= 10.0  # the median stays the median


def test_stream_metrics_are_the_increments_of_each_interval() -> None:
    metrics = StreamMetrics(
        dimensions={"Command": "stream", "Exchange": "binance"},
        properties={"run_id": "r"},
        now=100.0,
    )
    first = metrics.document(
        now=110.0,
        wall_ns=1_700_000_000_999_999_999,
        totals=RunTotals(parsed=500, bytes_uploaded=4000, reconnects=1, gaps=2),
        queue_depth=7,
        upload_seconds=[],
    )
    second = metrics.document(
        now=115.0,
        wall_ns=1_700_000_005_000_000_000,
        totals=RunTotals(parsed=1000, bytes_uploaded=5000, reconnects=1, gaps=5, dropped=4),
        queue_depth=0,
        upload_seconds=[0.25, 0.0125],
    )
    for document in (first, second):
        assert_valid_emf(json.dumps(document))
    assert first["_aws"]["Timestamp"] == 1_700_000_000_999
    assert (first["TradesPerSecond"], first["BytesUploaded"], first["QueueDepth"]) == (50, 4000, 7)
    assert (first["Reconnects"], first["Gaps"]) == (1, 2)
    assert "UploadLatency" not in first  # no upload completed: no metric, no member
    assert "UploadLatency" not in [m["Name"] for m in _directive(first)["Metrics"]]
    assert (second["TradesPerSecond"], second["BytesUploaded"]) == (100, 1000)
    assert (second["Reconnects"], second["Gaps"], second["DroppedTrades"]) == (0, 3, 4)
    assert second["UploadLatency"] == [250.0, 12.5]


# -- lines of real runs ----------------------------------------------------------------------


@pytest.fixture
def capture_logs() -> Iterator[Callable[[str], Lines]]:
    """Start capturing feedvault's JSON logs at a level; restored after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda level: stack.enter_context(captured_logs(level))


class TimedWriter(MemoryWriter):
    """A :class:`MemoryWriter` whose puts take ``seconds`` of the fake clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__()
        self.clock = clock
        self.seconds = seconds
        self.stored = 0
        self._changed = asyncio.Event()

    async def put(self, key: str, body: bytes) -> StoredObject:
        stored = await super().put(key, body)
        self.clock.advance(self.seconds)
        self.stored += 1
        self._changed.set()
        return stored

    async def wait_stored(self, count: int) -> None:
        async with asyncio.timeout(30):
            while self.stored < count:
                self._changed.clear()
                await self._changed.wait()


async def test_a_stream_run_with_metrics_emf_logs_valid_emf_stats_lines(
    tmp_path: Path, capture_logs: Callable[[str], Lines]
) -> None:
    lines = capture_logs("WARNING")  # EMF lines are logged whatever LOG_LEVEL says
    clock = FakeClock()
    started_ms = clock.time_ns() // 1_000_000
    writer = TimedWriter(clock, 0.05)  # every upload takes 50 ms of the fake clock
    async with FakeExchange("binance", rate=1000, symbols=SYMBOLS, clock=clock) as exchange:
        cfg = config(
            exchange.url,
            tmp_path,
            METRICS="emf",
            LOG_LEVEL="WARNING",
            STATS_INTERVAL_SECONDS="1",
            WINDOW_SECONDS="1",
        )
        run = StreamRun(cfg, clock=clock, writer=writer, install_signal_handlers=False)
        task = asyncio.create_task(run.run())
        await exchange.wait_ready(1)
        for _ in range(3):
            clock.advance(0.1)
            await exchange.wait_tick()
        for count in (1, 2, 3):  # three stats intervals, one second of the clock each
            clock.advance(1)
            await lines.wait_for(lambda n=count: len(lines.docs("stats")) >= n)
            if count == 2:  # the slots of the trades received so far have ended
                await writer.wait_stored(len(SYMBOLS))
        assert await past_the_deadline(task, clock) == 0
    raw = lines.raw("stats")
    assert len(raw) >= 2
    docs = [assert_valid_emf(line) for line in raw]
    for doc in docs:
        assert _directive(doc)["Namespace"] == "feedvault"
        assert _directive(doc)["Dimensions"] == [["Command", "Exchange"]]
        assert (doc["Command"], doc["Exchange"], doc["run_id"]) == ("stream", "binance", "test-run")
        assert doc["Reconnects"] == 0 and doc["Gaps"] == 0 and doc["DroppedTrades"] == 0
        assert doc["BytesUploaded"] >= 0 and doc["QueueDepth"] >= 0
        assert "queue_high_water" in doc  # still the stats line, with its usual fields
    stamps = [doc["_aws"]["Timestamp"] for doc in docs]
    assert stamps == sorted(stamps)
    assert started_ms < stamps[0] and stamps[-1] <= clock.time_ns() // 1_000_000
    assert any(doc["TradesPerSecond"] > 0 for doc in docs)
    latencies = [value for doc in docs for value in doc.get("UploadLatency", [])]
    assert len(latencies) >= len(SYMBOLS) and set(latencies) == {50.0}
    for doc in docs:  # the metric is declared exactly when some upload completed
        declared = "UploadLatency" in [m["Name"] for m in _directive(doc)["Metrics"]]
        assert declared == ("UploadLatency" in doc)
        assert declared == (doc["BytesUploaded"] > 0)
    stored_bytes = sum(len(body) for key, body in writer.objects.items() if "/trades/" in key)
    assert sum(doc["BytesUploaded"] for doc in docs) <= stored_bytes


async def test_with_metrics_none_the_stats_line_carries_no_emf(
    tmp_path: Path, capture_logs: Callable[[str], Lines]
) -> None:
    lines = capture_logs("INFO")
    clock = FakeClock()
    async with FakeExchange("binance", rate=1000, symbols=SYMBOLS, clock=clock) as exchange:
        cfg = config(exchange.url, tmp_path, STATS_INTERVAL_SECONDS="1")
        assert cfg.runtime.metrics == "none"
        run = StreamRun(cfg, clock=clock, writer=MemoryWriter(), install_signal_handlers=False)
        task = asyncio.create_task(run.run())
        await exchange.wait_ready(1)
        clock.advance(1.5)
        await lines.wait_for(lambda: len(lines.docs("stats")) >= 1)
        assert await past_the_deadline(task, clock) == 0
    for doc in lines.docs("stats"):
        assert "_aws" not in doc and "TradesPerSecond" not in doc and "run_id" not in doc
        assert {"trades_per_s", "queue_depth", "bytes_uploaded", "reconnects"} <= set(doc)
        # the interval's high-water mark, at least the depth sampled at its end
        assert doc["queue_depth_peak"] >= doc["queue_depth"]


def test_replay_metrics_have_command_replay_and_real_timestamps(tmp_path: Path) -> None:
    env = {"RUN_ID": "replay-run", "SPILL_DIR": str(tmp_path), "METRICS": "emf"}
    replay = load_replay_config(env, ["unused.jsonl"], out=f"file://{tmp_path}/")
    base = FakeClock(start_ns=1_800_000_000_000_000_000)

    async def nothing() -> Any:
        yield []

    run = ReplayRun(replay, nothing(), clock=ReplayClock(5 * 10**18 // 10, base))
    assert run.metric_dimensions() == {"Command": "replay"}
    assert run.metrics_wall_ns() == base.time_ns() != run.clock.time_ns()


def test_metrics_emf_configuration() -> None:
    base = stream_settings(S3_BUCKET="my-bucket", MAX_RUNTIME_SECONDS="60")
    emf = load_stream_config({**base, "METRICS": "emf"}, is_tty=True)
    assert (emf.runtime.metrics, emf.runtime.log_format) == ("emf", "json")
    assert emf.public_dict()["metrics"] == "emf"
    none = load_stream_config(base, is_tty=True)
    assert (none.runtime.metrics, none.runtime.log_format) == ("none", "text")
    with pytest.raises(ConfigError) as text:
        load_stream_config({**base, "METRICS": "emf", "LOG_FORMAT": "text"})
    assert text.value.variable == "METRICS" and "LOG_FORMAT=json" in text.value.problem
    with pytest.raises(ConfigError) as bad:
        load_stream_config({**base, "METRICS": "prometheus"})
    assert bad.value.variable == "METRICS" and "none, emf" in bad.value.problem


def test_batch_progress_lines_are_emf_when_asked(capture_logs: Callable[[str], Lines]) -> None:
    lines = capture_logs("INFO")
    clock = FakeClock()
    progress = JobProgress()
    reporter = ProgressReporter(
        progress,
        label="ecommerce",
        clock=clock,
        interval=10,
        is_tty=False,
        emf={"Command": "batch", "Job": "ecommerce"},
        emf_properties={"run_id": "b-1"},
    )
    progress.add_rows(500)
    progress.file_done()
    clock.advance(5)
    reporter.show()
    progress.add_rows(100)
    clock.advance(10)
    reporter.show()
    first, second = (assert_valid_emf(line) for line in lines.raw("progress"))
    assert _directive(first)["Dimensions"] == [["Command", "Job"]]
    assert (first["Command"], first["Job"], first["run_id"]) == ("batch", "ecommerce", "b-1")
    assert (first["Rows"], first["FilesDone"], first["RowsPerSecond"]) == (500, 1, 100)
    assert (second["Rows"], second["FilesDone"], second["RowsPerSecond"]) == (100, 0, 10)
    assert second["rows"] == 600  # the usual progress fields stay


async def test_a_batch_run_with_metrics_emf_ends_with_an_emf_progress_line(
    capture_logs: Callable[[str], Lines],
) -> None:
    lines = capture_logs("ERROR")
    env = {"LOG_FORMAT": "json", "METRICS": "emf", "COMPUTATION_PATHS": "2000"}
    cfg, job = prepare_batch("computation", env, out_url="file:///unused/")
    run = BatchRun(
        cfg, job, env=Env(env), install_signal_handlers=False, output=MemoryWriter(), is_tty=False
    )
    async with asyncio.timeout(60):
        assert await run.run() == 0
    docs = [assert_valid_emf(line) for line in lines.raw("progress")]
    assert docs and docs[-1]["Job"] == "computation" and docs[-1]["Command"] == "batch"
    assert sum(doc["Rows"] for doc in docs) == run.progress.rows
