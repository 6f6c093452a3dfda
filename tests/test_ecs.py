"""ECS task metadata (``ECS_CONTAINER_METADATA_URI_V4``): read from a real HTTP endpoint on
127.0.0.1 serving documents of the shape ECS (Fargate, endpoint version 4) answers, into the
run id and the manifest's ``ecs`` section of stream, replay and batch runs; and an endpoint that
is down, slow, or answers garbage never stops a run."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.fake.server import FakeExchange
from engine.clock import FakeClock, ReplayClock
from engine.errors import IntegrityError, MetadataError
from engine.settings import Env
from feedvault.batch_run import BatchRun, prepare_batch
from feedvault.ecs import EcsLookup, fetch_ecs_task, parse_task_metadata, run_id_with_task
from feedvault.replay import ReplayRun
from feedvault.runner import StreamRun
from sinks.manifest import EcsTask, Manifest, manifest_key
from sinks.memory import MemoryWriter
from tests.conftest import free_port
from tests.harness import past_the_deadline
from tests.logcapture import Lines, captured_logs
from tests.test_capture_replay import T0, chunked, recording, replay_config
from tests.test_runner import SYMBOLS, config

TASK_ID = "9781c2480edd4cdb9a93f63cb662a5d3"
TASK_ARN = f"arn:aws:ecs:us-east-1:111122223333:task/feedvault/{TASK_ID}"
CLUSTER = "arn:aws:ecs:us-east-1:111122223333:cluster/feedvault"
IMAGE = "111122223333.dkr.ecr.us-east-1.amazonaws.com/feedvault:0.1.0"
DIGEST = "sha256:d691691e9652791a60114e67b365688d20d19940dde7c4736ea30e660d8d3553"
LABELS = {
    "com.amazonaws.ecs.cluster": CLUSTER,
    "com.amazonaws.ecs.container-name": "feedvault",
    "com.amazonaws.ecs.task-arn": TASK_ARN,
    "com.amazonaws.ecs.task-definition-family": "feedvault-stream",
    "com.amazonaws.ecs.task-definition-version": "7",
}
CONTAINER_DOC: dict[str, Any] = {
    "DockerId": f"{TASK_ID}-2287429378",
    "Name": "feedvault",
    "DockerName": "feedvault",
    "Image": IMAGE,
    "ImageID": DIGEST,
    "Labels": LABELS,
    "DesiredStatus": "RUNNING",
    "KnownStatus": "RUNNING",
    "Limits": {"CPU": 2},
    "CreatedAt": "2026-11-22T12:00:01.123456789Z",
    "StartedAt": "2026-11-22T12:00:02.123456789Z",
    "Type": "NORMAL",
    "LogDriver": "awslogs",
    "LogOptions": {
        "awslogs-group": "/ecs/feedvault",
        "awslogs-region": "us-east-1",
        "awslogs-stream": f"stream/feedvault/{TASK_ID}",
    },
    "ContainerARN": "arn:aws:ecs:us-east-1:111122223333:container/feedvault/"
    f"{TASK_ID}/5a7b9c3e-8f21-4d6a-b0e4-1c2d3e4f5a6b",
    "Networks": [
        {
            "NetworkMode": "awsvpc",
            "IPv4Addresses": ["10.0.1.42"],
            "AttachmentIndex": 0,
            "MACAddress": "0a:1b:2c:3d:4e:5f",
            "IPv4SubnetCIDRBlock": "10.0.1.0/24",
            "PrivateDNSName": "ip-10-0-1-42.ec2.internal",
            "SubnetGatewayIpv4Address": "10.0.1.1/24",
        }
    ],
    "Snapshotter": "overlayfs",
}
TASK_DOC: dict[str, Any] = {
    "Cluster": CLUSTER,
    "TaskARN": TASK_ARN,
    "Family": "feedvault-stream",
    "Revision": "7",
    "DesiredStatus": "RUNNING",
    "KnownStatus": "RUNNING",
    "Limits": {"CPU": 1, "Memory": 2048},
    "PullStartedAt": "2026-11-22T11:59:50.123456789Z",
    "PullStoppedAt": "2026-11-22T12:00:00.123456789Z",
    "AvailabilityZone": "us-east-1a",
    "LaunchType": "FARGATE",
    "Containers": [CONTAINER_DOC],
    "ClockDrift": {
        "ClockErrorBound": 0.4,
        "ReferenceTimestamp": "2026-11-22T12:00:00Z",
        "ClockSynchronizationStatus": "SYNCHRONIZED",
    },
    "EphemeralStorageMetrics": {"Utilized": 261, "Reserved": 20496},
}
EXPECTED = EcsTask(
    task_arn=TASK_ARN,
    cluster=CLUSTER,
    task_definition="feedvault-stream:7",
    container="feedvault",
    image=IMAGE,
    image_digest=DIGEST,
    availability_zone="us-east-1a",
)
FAST = EcsLookup(attempt_timeout=0.2, attempts=2, budget=2.0, backoff=0.01)
"""Short bounds, for the tests of an endpoint that does not answer (slow, down): the timeouts
themselves are what those tests run into."""
GENEROUS = EcsLookup(attempt_timeout=5.0, attempts=2, budget=10.0, backoff=0.01)
"""Bounds no loaded machine reaches on loopback, for an endpoint that answers: a request the
machine merely stalls is not retried (the exact request lists hold) nor given up."""
GENERATED = re.compile(rf"^\d{{8}}T\d{{6}}Z-{TASK_ID}-[0-9a-f]{{8}}$")


class MetadataEndpoint:
    """A task metadata endpoint (version 4) on 127.0.0.1. ``mode``: ``ok`` serves the documents
    (after answering HTTP 500 to the first ``fail_first`` requests); ``slow`` never answers;
    ``garbage`` answers 200 with HTML; ``not-found`` answers 404; ``wrong-shape`` serves a task
    document without ``TaskARN``; ``no-container`` answers 404 for the container document."""

    def __init__(self, mode: str = "ok", *, fail_first: int = 0) -> None:
        self.mode = mode
        self.fail_first = fail_first
        self.requests: list[str] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.uri = ""

    async def __aenter__(self) -> MetadataEndpoint:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.uri = f"http://127.0.0.1:{port}/v4/{TASK_ID}-2287429378"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def _answer(self, path: str) -> tuple[int, bytes]:
        base = self.uri.split("127.0.0.1", 1)[1].split("/", 1)[1]
        if self.fail_first > 0:
            self.fail_first -= 1
            return 500, b"internal error"
        if self.mode == "garbage":
            return 200, b"<html>metadata</html>"
        if self.mode == "not-found":
            return 404, b"404 page not found"
        if path == f"/{base}/task":
            if self.mode == "wrong-shape":
                return 200, orjson.dumps({k: v for k, v in TASK_DOC.items() if k != "TaskARN"})
            return 200, orjson.dumps(TASK_DOC)
        if path == f"/{base}" and self.mode != "no-container":
            return 200, orjson.dumps(CONTAINER_DOC)
        return 404, b"404 page not found"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            self.requests.append(path)
            if self.mode == "slow":
                await asyncio.Event().wait()  # until the endpoint closes
            status, body = self._answer(path)
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)


@pytest.fixture
def lines() -> Iterator[Lines]:
    with captured_logs("INFO") as captured:
        yield captured


def closed_port_uri() -> str:
    return f"http://127.0.0.1:{free_port()}/v4/{TASK_ID}"


# -- the lookup --------------------------------------------------------------------------------


async def test_the_task_and_container_documents_are_read_into_the_task() -> None:
    async with MetadataEndpoint() as endpoint:
        task, container_error = await fetch_ecs_task(endpoint.uri, GENEROUS)
    assert (task, container_error) == (EXPECTED, None)
    assert task.task_id == TASK_ID
    base = endpoint.uri.split("127.0.0.1", 1)[1].split("/", 1)[1]
    assert sorted(endpoint.requests) == [f"/{base}", f"/{base}/task"]


async def test_server_errors_are_retried_within_the_bounds() -> None:
    async with MetadataEndpoint(fail_first=2) as endpoint:
        task, _ = await fetch_ecs_task(endpoint.uri, dataclasses.replace(GENEROUS, attempts=3))
    assert task == EXPECTED
    assert len(endpoint.requests) == 4  # two answered 500, then each document once


async def test_a_slow_endpoint_is_given_up_after_the_attempts() -> None:
    async with MetadataEndpoint("slow") as endpoint:
        with pytest.raises(MetadataError, match="after 2 attempts"):
            await fetch_ecs_task(endpoint.uri, FAST)
    assert len(endpoint.requests) == 4  # each document: two attempts, then no more


def test_task_documents_without_the_task_are_refused() -> None:
    assert parse_task_metadata(TASK_DOC, CONTAINER_DOC) == EXPECTED
    for bad in (
        [],
        {**TASK_DOC, "TaskARN": 7},
        {**TASK_DOC, "TaskARN": "not-an-arn"},
        {k: v for k, v in TASK_DOC.items() if k != "Family"},
    ):
        with pytest.raises(MetadataError):
            parse_task_metadata(bad, CONTAINER_DOC)
    revision_number = parse_task_metadata({**TASK_DOC, "Revision": 7}, CONTAINER_DOC)
    assert revision_number.task_definition == "feedvault-stream:7"


def test_without_the_container_document_the_only_application_container_is_used() -> None:
    pause = {**CONTAINER_DOC, "Name": "~internal~ecs~pause", "Type": "CNI_PAUSE", "ImageID": ""}
    task_doc = {**TASK_DOC, "Containers": [pause, CONTAINER_DOC]}
    assert parse_task_metadata(task_doc, None) == EXPECTED
    sidecar = {**CONTAINER_DOC, "Name": "log-router"}
    two = parse_task_metadata({**TASK_DOC, "Containers": [CONTAINER_DOC, sidecar]}, None)
    assert (two.container, two.image, two.image_digest) == (None, None, None)
    assert two.task_definition == EXPECTED.task_definition


def test_a_generated_run_id_gets_the_task_id_after_its_time() -> None:
    assert run_id_with_task("20261122T120000Z-1a2b3c4d", TASK_ID) == (
        f"20261122T120000Z-{TASK_ID}-1a2b3c4d"
    )
    assert run_id_with_task("20261122T120000Z-1a2b3c4d", "a/b:c") == (
        "20261122T120000Z-a-b-c-1a2b3c4d"
    )
    assert run_id_with_task("20261122T120000Z-1a2b3c4d", "") == "20261122T120000Z-1a2b3c4d"
    long = run_id_with_task("20261122T120000Z-1a2b3c4d", "x" * 500)
    assert len(long) <= 128


def test_the_manifest_section_is_optional_and_round_trips() -> None:
    base = Manifest("r", "0.1.0", "feedvault stream", "a", "b", "deadline", "complete")
    old = json.loads(base.to_json())
    assert "ecs" not in old and Manifest.from_json(base.to_json()).ecs is None
    base.ecs = EXPECTED
    document = json.loads(base.to_json())
    assert document["ecs"] == {
        "task_arn": TASK_ARN,
        "cluster": CLUSTER,
        "task_definition": "feedvault-stream:7",
        "container": "feedvault",
        "image": IMAGE,
        "image_digest": DIGEST,
        "availability_zone": "us-east-1a",
    }
    assert Manifest.from_json(base.to_json()).ecs == EXPECTED
    partial = {**document, "ecs": {**document["ecs"], "image": None, "later_field": 1}}
    assert Manifest.from_json(orjson.dumps(partial)).ecs == EcsTask(
        TASK_ARN, CLUSTER, "feedvault-stream:7", "feedvault", None, DIGEST, "us-east-1a"
    )
    for bad in ({"task_arn": TASK_ARN}, {**document["ecs"], "image": 3}, "arn"):
        with pytest.raises(IntegrityError):
            Manifest.from_json(orjson.dumps({**document, "ecs": bad}))


# -- runs ----------------------------------------------------------------------------------------


async def stream_run(
    tmp_path: Path, lookup: EcsLookup = GENEROUS, **env: str
) -> tuple[StreamRun, MemoryWriter, Manifest]:
    """A short in-process stream run (fake exchange, fake clock, memory writer)."""
    clock = FakeClock()
    writer = MemoryWriter()
    async with FakeExchange("binance", rate=1000, symbols=SYMBOLS, clock=clock) as exchange:
        cfg = config(exchange.url, tmp_path, **env)
        run = StreamRun(
            cfg, clock=clock, writer=writer, install_signal_handlers=False, ecs_lookup=lookup
        )
        task = asyncio.create_task(run.run())
        await exchange.wait_ready(1)
        clock.advance(0.3)
        await exchange.wait_tick()
        assert await past_the_deadline(task, clock) == 0
    key = manifest_key("streaming/test/", run.config.run_id)
    return run, writer, Manifest.from_json(writer.objects[key])


async def test_a_stream_run_on_ecs_names_its_task_in_the_run_id_and_manifest(
    tmp_path: Path, lines: Lines
) -> None:
    async with MetadataEndpoint() as endpoint:
        run, writer, manifest = await stream_run(
            tmp_path, RUN_ID="", ECS_CONTAINER_METADATA_URI_V4=endpoint.uri
        )
    assert GENERATED.match(run.config.run_id), run.config.run_id
    assert manifest.run_id == run.config.run_id == manifest.config["run_id"]
    assert manifest.ecs == EXPECTED
    trade_keys = [key for key in writer.objects if "/trades/" in key]
    assert trade_keys and all(f"-{run.config.run_id}-" in key for key in trade_keys)
    (start,) = lines.docs("run_start")
    assert start["run_id"] == run.config.run_id and start["ecs"]["task_arn"] == TASK_ARN
    assert not lines.docs("ecs_metadata_unavailable")


async def test_an_explicit_run_id_is_kept_on_ecs(tmp_path: Path) -> None:
    async with MetadataEndpoint() as endpoint:
        run, _, manifest = await stream_run(tmp_path, ECS_CONTAINER_METADATA_URI_V4=endpoint.uri)
    assert run.config.run_id == manifest.run_id == "test-run"
    assert manifest.ecs == EXPECTED


@pytest.mark.parametrize("mode", ["down", "slow", "garbage", "not-found", "wrong-shape"])
async def test_a_failing_endpoint_is_logged_once_and_the_run_goes_on(
    tmp_path: Path, lines: Lines, mode: str
) -> None:
    async with MetadataEndpoint("ok" if mode == "down" else mode) as endpoint:
        uri = closed_port_uri() if mode == "down" else endpoint.uri
        lookup = FAST if mode in ("down", "slow") else GENEROUS  # no answer: run into the bounds
        run, writer, manifest = await stream_run(
            tmp_path, lookup, RUN_ID="", ECS_CONTAINER_METADATA_URI_V4=uri
        )
    assert manifest.status == "complete" and manifest.ecs is None
    assert "ecs" not in json.loads(
        writer.objects[manifest_key("streaming/test/", run.config.run_id)]
    )
    assert TASK_ID not in run.config.run_id
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", run.config.run_id)
    (warning,) = lines.docs("ecs_metadata_unavailable")
    assert warning["level"] == "warning" and warning["error"]


async def test_without_the_container_document_the_run_keeps_the_task(
    tmp_path: Path, lines: Lines
) -> None:
    async with MetadataEndpoint("no-container") as endpoint:
        _, _, manifest = await stream_run(tmp_path, ECS_CONTAINER_METADATA_URI_V4=endpoint.uri)
    assert manifest.ecs == EXPECTED  # image fields from the task's only application container
    assert len(lines.docs("ecs_metadata_partial")) == 1


async def test_outside_ecs_no_request_is_made_and_the_manifest_has_no_section(
    tmp_path: Path,
) -> None:
    async with MetadataEndpoint() as endpoint:
        run, _, manifest = await stream_run(tmp_path)
    assert endpoint.requests == [] and run.ecs is None and manifest.ecs is None
    assert run.config.runtime.ecs_metadata_uri is None


async def test_a_replay_on_ecs_carries_the_task(tmp_path: Path) -> None:
    writer = MemoryWriter()
    async with MetadataEndpoint() as endpoint:
        run = ReplayRun(
            replay_config(tmp_path, ECS_CONTAINER_METADATA_URI_V4=endpoint.uri),
            chunked(recording([(1.0, 1), (2.0, 2)])),
            clock=ReplayClock(T0, FakeClock()),
            writer=writer,
            install_signal_handlers=False,
            ecs_lookup=GENEROUS,
        )
        async with asyncio.timeout(30):
            assert await run.run() == 0
    manifest = Manifest.from_json(writer.objects[manifest_key("replayed/", "replay-run")])
    assert manifest.ecs == EXPECTED and manifest.counters["parsed"] == 2


async def test_a_batch_run_on_ecs_names_its_task_in_the_run_id_and_manifest() -> None:
    env = {"COMPUTATION_PATHS": "1000"}
    async with MetadataEndpoint() as endpoint:
        env["ECS_CONTAINER_METADATA_URI_V4"] = endpoint.uri
        cfg, job = prepare_batch("computation", env, out_url="file:///unused/")
        writer = MemoryWriter()
        run = BatchRun(
            cfg,
            job,
            env=Env(env),
            install_signal_handlers=False,
            output=writer,
            is_tty=False,
            ecs_lookup=GENEROUS,
        )
        async with asyncio.timeout(60):
            assert await run.run() == 0
    assert GENERATED.match(run.config.run_id), run.config.run_id
    manifest = Manifest.from_json(writer.objects[manifest_key("", run.config.run_id)])
    assert manifest.ecs == EXPECTED and manifest.status == "complete"
