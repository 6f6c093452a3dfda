"""The batch runner in-process: configuration, the job contract, failures, deadline, progress,
verification of batch outputs, and ``feedvault sample``."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batch import registry
from batch.config import load_batch_config, parse_input_url
from batch.job import JobContext, JobError, check_relative_key
from batch.registry import JobSpec
from batch.sample_cli import run_sample
from engine.errors import ConfigError
from engine.settings import Env
from feedvault.batch_run import BatchRun, prepare_batch, run_batch
from sinks.manifest import Manifest, StoredObjectEntry
from sinks.memory import MemoryWriter
from sinks.verify import VerifyReport, verify_run
from sinks.writer import open_writer, parse_destination


class CopyJob:
    """Reads every input object and writes its upper-cased bytes (a stand-in for the real
    input jobs). ``COPY_FAIL_ON`` names an input that is 'bad'."""

    name = "copy"
    needs_input = True

    def __init__(self, env: Env) -> None:
        self.fail_on = env.raw("COPY_FAIL_ON")

    def parameters(self) -> dict[str, Any]:
        return {"fail_on": self.fail_on}

    async def run(self, ctx: JobContext) -> None:
        reader = ctx.require_input()
        keys = await reader.keys()
        ctx.progress.set_totals(files=len(keys))
        for key in keys:
            body = await reader.read(key)
            if reader.relative(key) == self.fail_on:
                raise JobError(f"{key}: line 1: not a valid order")
            upper = await ctx.run_cpu(bytes.upper, body)
            ctx.progress.add_rows(body.count(b"\n"))
            await ctx.write_output(f"out/{reader.relative(key)}", upper, records=1)
            ctx.progress.file_done()

    def sample(self, seed: int) -> Iterator[tuple[str, bytes]]:
        for i in range(3):
            yield f"in/part-{i}.csv", f"seed={seed},part={i}\n".encode()


class StuckJob:
    """Never finishes on its own."""

    name = "stuck"
    needs_input = False

    def __init__(self, env: Env) -> None:
        self.started = asyncio.Event()

    def parameters(self) -> dict[str, Any]:
        return {}

    async def run(self, ctx: JobContext) -> None:
        ctx.progress.set_totals(rows=10)
        ctx.progress.add_rows(3)
        self.started.set()
        await asyncio.Event().wait()


class BuggyJob(StuckJob):
    name = "buggy"

    async def run(self, ctx: JobContext) -> None:
        await ctx.write_output("partial.json", b"{}")
        raise ValueError("division by zero somewhere")


@pytest.fixture(autouse=True)
def fake_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = dict(registry.JOBS)
    jobs["copy"] = JobSpec("copy", True, "test job", CopyJob)
    jobs["stuck"] = JobSpec("stuck", False, "test job", StuckJob)
    jobs["buggy"] = JobSpec("buggy", False, "test job", BuggyJob)
    monkeypatch.setattr(registry, "JOBS", jobs)


def _manifests(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_bytes()) for p in sorted((root / "_manifests").glob("*.json"))]


ENV = {"LOG_FORMAT": "json", "STATS_INTERVAL_SECONDS": "0.05"}


@pytest.mark.parametrize(
    ("job", "environ", "variable"),
    [
        ("computation", {"OUTPUT_PREFIX": "batch/"}, "OUTPUT_BUCKET"),
        ("computation", {"OUTPUT_BUCKET": "my-bucket"}, "OUTPUT_PREFIX"),
        ("computation", {"OUTPUT_BUCKET": "Bad_Bucket", "OUTPUT_PREFIX": "b/"}, "OUTPUT_BUCKET"),
        ("nope", {"OUTPUT_BUCKET": "my-bucket", "OUTPUT_PREFIX": "b/"}, "JOB"),
        (
            "computation",
            {"OUTPUT_BUCKET": "my-bucket", "OUTPUT_PREFIX": "b/", "COMPUTATION_PATHS": "x"},
            "COMPUTATION_PATHS",
        ),
        (
            "computation",
            {"OUTPUT_BUCKET": "my-bucket", "OUTPUT_PREFIX": "b/", "MAX_RUNTIME_SECONDS": "-1"},
            "MAX_RUNTIME_SECONDS",
        ),
        ("copy", {"OUTPUT_BUCKET": "my-bucket", "OUTPUT_PREFIX": "b/"}, "INPUT_BUCKET"),
        (
            "copy",
            {"OUTPUT_BUCKET": "my-bucket", "OUTPUT_PREFIX": "b/", "INPUT_BUCKET": "in-bucket"},
            "INPUT_PREFIX",
        ),
        (
            "copy",
            {
                "OUTPUT_BUCKET": "my-bucket",
                "OUTPUT_PREFIX": "b/",
                "INPUT_BUCKET": "in-bucket",
                "INPUT_PREFIX": "orders/",
                "INPUT_KEY": "orders/a.csv",
            },
            "INPUT_KEY",
        ),
    ],
)
def test_configuration_errors_exit_2_naming_the_variable(
    job: str,
    environ: dict[str, str],
    variable: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_batch(job, {**ENV, **environ}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"feedvault batch: configuration error: {variable}: "), err


def test_bad_parameter_with_file_output_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**ENV, "COMPUTATION_HORIZONS": "0"}
    assert run_batch("computation", env, out_url=f"file://{out}/") == 2
    assert not out.exists()


def test_in_flag_refused_for_a_job_without_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_batch("computation", ENV, "s3://in-bucket/x/", "s3://out-bucket/b/") == 2
    assert "--in: job 'computation' reads no input" in capsys.readouterr().err


def test_input_urls() -> None:
    prefix = parse_input_url("s3://in-bucket/orders/")
    assert (prefix.store.bucket, prefix.store.prefix, prefix.key) == ("in-bucket", "orders/", None)
    one = parse_input_url("s3://in-bucket/orders/2024-05-01.csv")
    assert (one.store.prefix, one.key) == ("", "orders/2024-05-01.csv")
    assert one.url == "s3://in-bucket/orders/2024-05-01.csv"
    local = parse_input_url("file:///data/orders.csv")
    assert (str(local.store.root), local.key) == ("/data", "orders.csv")
    with pytest.raises(ConfigError, match="--in"):
        parse_input_url("http://example.com/x")
    config = load_batch_config(
        "copy",
        {"OUTPUT_BUCKET": "out-b", "OUTPUT_PREFIX": "b", "INPUT_BUCKET": "in-b", "INPUT_KEY": "k"},
        needs_input=True,
    )
    assert config.output.prefix == "b/"
    assert config.input is not None and config.input.url == "s3://in-b/k"


def test_output_keys_must_be_safe_relative_keys() -> None:
    assert check_relative_key("daily/date=2024-05-01/kpis.csv")
    for bad in ("", "/abs", "a//b", "../up", "a/./b", "sp ace.csv", "a/"):
        with pytest.raises(ValueError):
            check_relative_key(bad)


def _write_inputs(root: Path) -> None:
    (root / "orders").mkdir(parents=True)
    (root / "orders" / "a.csv").write_bytes(b"x,1\ny,2\n")
    (root / "orders" / "b.csv").write_bytes(b"z,3\n")


def test_input_job_reads_a_prefix_writes_deterministic_keys_and_a_manifest(
    tmp_path: Path,
) -> None:
    _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    status = run_batch(
        "copy", {**ENV, "RUN_ID": "r1"}, f"file://{tmp_path}/in/orders/", f"file://{out}/"
    )
    assert status == 0
    assert (out / "copy" / "out" / "a.csv").read_bytes() == b"X,1\nY,2\n"
    (manifest,) = _manifests(out)
    assert manifest["status"] == "complete" and manifest["stop_reason"] == "end"
    assert [o["key"] for o in manifest["objects"]] == ["copy/out/a.csv", "copy/out/b.csv"]
    assert all(o["kind"] == "output" for o in manifest["objects"])
    assert manifest["counters"] == {"rows": 3, "files": 2, "outputs": 2}
    assert manifest["config"]["input"] == f"file://{tmp_path}/in/orders/"
    assert manifest["error"] is None
    # A rerun replaces the outputs (same keys), adding only its own manifest.
    assert (
        run_batch(
            "copy", {**ENV, "RUN_ID": "r2"}, f"file://{tmp_path}/in/orders/", f"file://{out}/"
        )
        == 0
    )
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["_manifests/r1.json", "_manifests/r2.json", "copy/out/a.csv", "copy/out/b.csv"]


def test_single_input_file(tmp_path: Path) -> None:
    _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert run_batch("copy", ENV, f"file://{tmp_path}/in/orders/b.csv", f"file://{out}/") == 0
    assert (out / "copy" / "out" / "b.csv").read_bytes() == b"Z,3\n"
    assert not (out / "copy" / "out" / "a.csv").exists()


def test_bad_input_ends_incomplete_naming_the_error(tmp_path: Path) -> None:
    _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    env = {**ENV, "COPY_FAIL_ON": "b.csv"}
    assert run_batch("copy", env, f"file://{tmp_path}/in/orders/", f"file://{out}/") == 1
    (manifest,) = _manifests(out)
    assert manifest["status"] == "incomplete" and manifest["stop_reason"] == "error"
    assert manifest["error"] == "b.csv: line 1: not a valid order"
    # What was written before the failure is listed, under an incomplete manifest.
    assert [o["key"] for o in manifest["objects"]] == ["copy/out/a.csv"]


def test_empty_input_prefix_is_a_job_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    assert run_batch("copy", ENV, f"file://{tmp_path}/in/", f"file://{out}/") == 1
    (manifest,) = _manifests(out)
    assert manifest["error"] == f"no input objects under file://{tmp_path}/in/"


def test_a_bug_in_a_job_ends_incomplete_with_its_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert run_batch("buggy", ENV, out_url=f"file://{out}/") == 1
    (manifest,) = _manifests(out)
    assert manifest["status"] == "incomplete"
    assert manifest["error"] == "ValueError: division by zero somewhere"
    assert "Traceback" in capsys.readouterr().err


def test_deadline_cancels_the_job_incomplete_exit_1(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**ENV, "MAX_RUNTIME_SECONDS": "0.3"}
    assert run_batch("stuck", env, out_url=f"file://{out}/") == 1
    (manifest,) = _manifests(out)
    assert manifest["status"] == "incomplete" and manifest["stop_reason"] == "deadline"
    assert manifest["error"] == "job did not finish: MAX_RUNTIME_SECONDS passed"
    assert manifest["counters"]["rows"] == 3


async def test_signal_stop_cancels_the_job() -> None:
    config, job = prepare_batch("stuck", ENV, out_url="file:///unused/")
    writer = MemoryWriter()
    run = BatchRun(
        config, job, env=Env(ENV), install_signal_handlers=False, output=writer, is_tty=False
    )
    assert isinstance(job, StuckJob)
    task = asyncio.create_task(run.run())
    async with asyncio.timeout(5):
        await job.started.wait()
    run.controller.on_signal("SIGTERM")
    async with asyncio.timeout(5):
        assert await task == 1
    assert run.manifest is not None
    assert (run.manifest.status, run.manifest.stop_reason) == ("incomplete", "signal")


async def test_progress_bar_on_a_tty() -> None:
    config, job = prepare_batch(
        "computation", {**ENV, "COMPUTATION_PATHS": "50000"}, out_url="file:///unused/"
    )
    stream = io.StringIO()
    writer = MemoryWriter()
    run = BatchRun(
        config,
        job,
        env=Env(ENV),
        install_signal_handlers=False,
        output=writer,
        progress_stream=stream,
        is_tty=True,
    )
    assert await run.run() == 0
    text = stream.getvalue()
    assert "[##############################] computation  50,000/50,000 paths" in text
    assert text.endswith("\n")
    assert sorted(writer.objects)[-2:] == ["computation/risk.csv", "computation/risk.json"]


def test_verify_checks_batch_outputs_by_size_and_checksum(tmp_path: Path) -> None:
    _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert run_batch("copy", ENV, f"file://{tmp_path}/in/orders/", f"file://{out}/") == 0

    async def verify() -> VerifyReport:
        async with open_writer(parse_destination(f"file://{out}/")) as writer:
            return await verify_run(writer, "")

    report = asyncio.run(verify())
    assert report.ok, report.problems
    assert (report.objects, report.records) == (2, 2)
    (out / "copy" / "out" / "a.csv").write_bytes(b"tampered!")
    report = asyncio.run(verify())
    assert not report.ok
    assert any("copy/out/a.csv: size is 9 bytes" in p for p in report.problems)


def test_manifest_entry_kind_round_trips_and_stays_optional() -> None:
    entry = StoredObjectEntry("k", 1, 2, "ab", 0, 0, {}, kind="output")
    assert StoredObjectEntry.from_dict(entry.to_dict()) == entry
    plain = StoredObjectEntry("k", 1, 2, "ab", 0, 0, {})
    assert "kind" not in plain.to_dict()
    manifest = Manifest("r", "0", "c", "s", "t", "end", "complete", objects=[entry, plain])
    assert Manifest.from_json(manifest.to_json()).objects == [entry, plain]


def test_sample_refuses_a_job_without_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_sample("computation", {}, "file:///tmp/unused/", None) == 2
    err = capsys.readouterr().err
    assert err == (
        "feedvault sample: configuration error: JOB: job 'computation' reads no input; "
        "there is nothing to sample\n"
    )


def test_sample_writes_seeded_input_under_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_sample("copy", {}, f"file://{tmp_path}/s/", "5") == 0
    assert (tmp_path / "s" / "in" / "part-1.csv").read_bytes() == b"seed=5,part=1\n"
    assert "wrote 3 objects" in capsys.readouterr().out
    assert run_sample("copy", {"SAMPLE_SEED": "9"}, f"file://{tmp_path}/t/", None) == 0
    assert (tmp_path / "t" / "in" / "part-0.csv").read_bytes() == b"seed=9,part=0\n"
    assert run_sample("copy", {}, f"file://{tmp_path}/u/", "-3") == 2
