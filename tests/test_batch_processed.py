"""``ecommerce`` inputs moving under ``processed/`` (batch/processed.py), in-process on real
stores: ``file://`` directories (failures are real filesystem errors, or injected by a store
that fails named keys, as a store failing after its retries) and moto's S3 server."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from batch.job import JobContext
from engine.clock import SYSTEM_CLOCK
from engine.errors import StorageError
from engine.settings import Env
from feedvault.batch_run import BatchRun, prepare_batch, run_batch
from sinks.local import FileWriter
from sinks.memory import MemoryWriter
from sinks.writer import StoredObject
from tests.conftest import S3Server

ENV = {"LOG_FORMAT": "json", "STATS_INTERVAL_SECONDS": "60"}
HEADER = "order_id,customer_id,order_date,category,product_id,quantity,unit_price,returned\n"
A_CSV = (HEADER + "A1,C1,2024-05-01,books,B1,2,12.50,false\n").encode()
B_CSV = (HEADER + "B1,C2,2024-05-01,games,G1,1,3.00,true\n").encode()
OUTPUTS = [
    "ecommerce/category_kpis.jsonl",
    "ecommerce/category_kpis/category_kpis.parquet",
    "ecommerce/orders_kpis.jsonl",
    "ecommerce/orders_kpis/orders_kpis.parquet",
    "ecommerce/rejected/rejected.csv",
]


class FaultyStore(FileWriter):
    """The real file store, except that a put or delete of a key named in ``fail_put`` /
    ``fail_delete`` raises :class:`StorageError`."""

    def __init__(
        self, root: Path, *, fail_put: frozenset[str] = frozenset(), fail_delete: frozenset[str]
    ) -> None:
        super().__init__(root)
        self.fail_put = fail_put
        self.fail_delete = fail_delete

    async def put(self, key: str, body: bytes) -> StoredObject:
        if key in self.fail_put:
            raise StorageError(f"injected: cannot put {key!r}")
        return await super().put(key, body)

    async def delete(self, key: str) -> None:
        if key in self.fail_delete:
            raise StorageError(f"injected: cannot delete {key!r}")
        await super().delete(key)


def write_inputs(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.csv").write_bytes(A_CSV)
    (root / "sub" / "b.csv").write_bytes(B_CSV)


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def manifest(out: Path, run_id: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / "_manifests" / f"{run_id}.json").read_bytes())
    return loaded


def outputs(out: Path) -> dict[str, bytes]:
    return {k: v for k, v in files(out).items() if not k.startswith("_manifests/")}


def test_inputs_move_under_processed_and_a_rerun_finds_nothing_new(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    env = {**ENV, "RUN_ID": "r1"}
    assert run_batch("ecommerce", env, f"file://{src}/", f"file://{out}/") == 0
    assert files(src) == {"processed/a.csv": A_CSV, "processed/sub/b.csv": B_CSV}
    doc = manifest(out, "r1")
    assert doc["status"] == "complete" and [o["key"] for o in doc["objects"]] == OUTPUTS
    assert doc["counters"] == {"rows": 4, "files": 2, "outputs": 5, "inputs_moved": 2}
    before = outputs(out)

    assert run_batch("ecommerce", {**ENV, "RUN_ID": "r2"}, f"file://{src}/", f"file://{out}/") == 1
    doc = manifest(out, "r2")
    assert doc["status"] == "incomplete" and doc["objects"] == []
    assert doc["error"].startswith(
        f"no new input under file://{src}/: all 2 input objects are already under "
        f"file://{src}/processed/"
    )
    assert outputs(out) == before and files(src)["processed/a.csv"] == A_CSV


def test_no_new_input_succeed_completes_a_run_that_finds_nothing_new(tmp_path: Path) -> None:
    """``NO_NEW_INPUT=succeed`` (runs started per uploaded object): a run that finds every
    input under ``processed/`` completes having written and moved nothing, and says so."""
    src, out = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    env = {**ENV, "NO_NEW_INPUT": "succeed"}
    assert run_batch("ecommerce", {**env, "RUN_ID": "r1"}, f"file://{src}/", f"file://{out}/") == 0
    assert manifest(out, "r1")["counters"]["inputs_moved"] == 2
    before, inputs = outputs(out), files(src)

    assert run_batch("ecommerce", {**env, "RUN_ID": "r2"}, f"file://{src}/", f"file://{out}/") == 0
    doc = manifest(out, "r2")
    assert doc["status"] == "complete" and doc["objects"] == []
    assert doc["config"]["parameters"] == {"no_new_input": "succeed"}
    assert doc["counters"] == {
        "rows": 0,
        "files": 0,
        "outputs": 0,
        "inputs_moved": 0,
        "no_new_input": 1,
    }
    assert outputs(out) == before and files(src) == inputs


class TakenOnRead(FileWriter):
    """The real file store, where another run (simulated) moves each key of ``take`` under
    ``processed/`` just before this run reads it: after this run listed it."""

    def __init__(self, root: Path, take: frozenset[str]) -> None:
        super().__init__(root)
        self.take = take

    async def get(self, key: str) -> bytes:
        if key in self.take:
            body = await super().get(key)
            await super().put("processed/" + key, body)
            await super().delete(key)
        return await super().get(key)


@pytest.mark.parametrize("taken", [frozenset({"a.csv"}), frozenset({"a.csv", "sub/b.csv"})])
async def test_an_input_taken_by_another_run_after_the_listing_is_left_out(
    tmp_path: Path, taken: frozenset[str]
) -> None:
    """Two runs started by the same files: this one listed ``a.csv`` (and ``sub/b.csv``) as new,
    the other moved it before this one read it. With ``NO_NEW_INPUT=succeed`` this run goes on
    with what is left, or completes doing nothing; with ``fail`` it fails naming the input."""
    src, out = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    assert await run_with_store(src, out, TakenOnRead(src, taken), NO_NEW_INPUT="succeed") == 0
    doc = manifest(out, "r1")
    assert doc["status"] == "complete"
    if len(taken) == 2:
        assert doc["objects"] == [] and outputs(out) == {}
        assert doc["counters"] == {
            "rows": 0,
            "files": 0,
            "outputs": 0,
            "inputs_moved": 0,
            "no_new_input": 1,
        }
    else:  # only sub/b.csv was this run's: its outputs hold B1 alone, and it moved b alone
        assert doc["counters"]["files"] == 1 and doc["counters"]["inputs_moved"] == 1
        kpis = json.loads(outputs(out)["ecommerce/orders_kpis.jsonl"].splitlines()[0])
        assert kpis["total_orders"] == 1
    assert files(src) == {"processed/a.csv": A_CSV, "processed/sub/b.csv": B_CSV}


async def test_with_fail_an_input_taken_after_the_listing_fails_the_run(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    assert await run_with_store(src, out, TakenOnRead(src, frozenset({"a.csv"}))) == 1
    assert manifest(out, "r1")["error"] == f"input object 'a.csv' not found in file://{src}/"


def test_no_new_input_succeed_still_fails_a_malformed_input(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "bad.csv").write_bytes(b"not,the,header\n")
    env = {**ENV, "NO_NEW_INPUT": "succeed", "RUN_ID": "r1"}
    assert run_batch("ecommerce", env, f"file://{src}/", f"file://{out}/") == 1
    assert manifest(out, "r1")["status"] == "incomplete"
    assert files(src) == {"bad.csv": b"not,the,header\n"}


def test_a_single_input_moves_beside_itself_once(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    env = {**ENV, "RUN_ID": "r1"}
    assert run_batch("ecommerce", env, f"file://{src}/sub/b.csv", f"file://{out}/") == 0
    assert files(src) == {"a.csv": A_CSV, "sub/processed/b.csv": B_CSV}
    assert manifest(out, "r1")["counters"]["inputs_moved"] == 1

    env = {**ENV, "RUN_ID": "r2"}
    assert run_batch("ecommerce", env, f"file://{src}/sub/b.csv", f"file://{out}/") == 1
    assert manifest(out, "r2")["error"] == (
        f"no new input: file://{src}/sub/b.csv was already processed and moved to "
        f"file://{src}/sub/processed/b.csv; the outputs of the last run are left as they are"
    )
    env = {**ENV, "RUN_ID": "r3"}
    url = f"file://{src}/sub/processed/b.csv"
    assert run_batch("ecommerce", env, url, f"file://{out}/") == 1
    assert manifest(out, "r3")["error"].startswith(f"input {url} is already under processed/")
    assert files(src) == {"a.csv": A_CSV, "sub/processed/b.csv": B_CSV}


def test_a_single_s3_input_key_moves_beside_itself(
    s3_server: S3Server, bucket: str, aws_env: dict[str, str]
) -> None:
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="drop/2024/a.csv", Body=A_CSV)
    client.put_object(Bucket=bucket, Key="drop/2024/b.csv", Body=B_CSV)
    env = {
        **ENV,
        "RUN_ID": "r1",
        "OUTPUT_BUCKET": bucket,
        "OUTPUT_PREFIX": "batch/",
        "INPUT_BUCKET": bucket,
        "INPUT_KEY": "drop/2024/a.csv",
    }
    assert run_batch("ecommerce", env) == 0
    assert s3_server.keys(bucket, "drop/") == ["drop/2024/b.csv", "drop/2024/processed/a.csv"]
    body = client.get_object(Bucket=bucket, Key="drop/2024/processed/a.csv")["Body"].read()
    assert body == A_CSV
    # The archived object is not input again.
    env |= {"RUN_ID": "r2", "INPUT_KEY": "drop/2024/processed/a.csv"}
    assert run_batch("ecommerce", env) == 1
    doc = json.loads(
        client.get_object(Bucket=bucket, Key="batch/_manifests/r2.json")["Body"].read()
    )
    assert doc["error"].startswith(
        f"input s3://{bucket}/drop/2024/processed/a.csv is already under processed/"
    )


def test_a_failed_copy_is_undone_and_names_the_input(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    # A real filesystem failure: processed/sub is a file, so processed/sub/b.csv cannot be
    # written (after processed/a.csv was).
    (src / "processed").mkdir()
    (src / "processed" / "sub").write_bytes(b"in the way")
    assert run_batch("ecommerce", {**ENV, "RUN_ID": "r1"}, f"file://{src}/", f"file://{out}/") == 1
    doc = manifest(out, "r1")
    assert (doc["status"], doc["stop_reason"]) == ("incomplete", "error")
    assert doc["error"].startswith(
        f"cannot move input file://{src}/sub/b.csv to file://{src}/processed/sub/b.csv "
        "(copy failed: cannot write 'processed/sub/b.csv'"
    )
    assert doc["error"].endswith(
        "; the move was undone: every input is back in place and nothing of this run is "
        "under processed/"
    )
    # The outputs are durable (listed in the incomplete manifest); no input moved.
    assert [o["key"] for o in doc["objects"]] == OUTPUTS
    assert doc["counters"]["inputs_moved"] == 0
    assert files(src) == {"a.csv": A_CSV, "processed/sub": b"in the way", "sub/b.csv": B_CSV}


async def run_with_store(src: Path, out: Path, store: FileWriter, **extra: str) -> int:
    """The ``ecommerce`` job, run ``r1`` (and ``extra`` variables), reading through ``store``."""
    env = {**ENV, "RUN_ID": "r1", **extra}
    config, job = prepare_batch("ecommerce", env, in_url=f"file://{src}/", out_url=f"file://{out}/")
    run = BatchRun(
        config, job, env=Env(env), install_signal_handlers=False, input_store=store, is_tty=False
    )
    return await run.run()


async def test_a_failed_delete_puts_the_moved_inputs_back(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    # a.csv is copied and deleted, then deleting sub/b.csv fails: a.csv is put back and both
    # copies are deleted.
    store = FaultyStore(src, fail_delete=frozenset({"sub/b.csv"}))
    assert await run_with_store(src, out, store) == 1
    doc = manifest(out, "r1")
    assert doc["error"] == (
        f"cannot move input file://{src}/sub/b.csv to file://{src}/processed/sub/b.csv "
        "(delete of the original failed: injected: cannot delete 'sub/b.csv'); the move was "
        "undone: every input is back in place and nothing of this run is under processed/"
    )
    assert doc["counters"]["inputs_moved"] == 0
    assert files(src) == {"a.csv": A_CSV, "sub/b.csv": B_CSV}


async def test_an_undo_that_fails_keeps_the_only_copy_and_says_where(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    store = FaultyStore(src, fail_put=frozenset({"a.csv"}), fail_delete=frozenset({"sub/b.csv"}))
    assert await run_with_store(src, out, store) == 1
    doc = manifest(out, "r1")
    assert doc["error"].endswith(
        "; the move was not fully undone: "
        f"file://{src}/a.csv is only at file://{src}/processed/a.csv "
        "(injected: cannot put 'a.csv')"
    )
    # a.csv stays moved (counted); sub/b.csv is in place and its copy is gone.
    assert doc["counters"]["inputs_moved"] == 1
    assert files(src) == {"processed/a.csv": A_CSV, "sub/b.csv": B_CSV}


def test_an_archived_input_is_never_replaced_by_a_different_one(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write_inputs(src)
    (src / "processed").mkdir()
    (src / "processed" / "a.csv").write_bytes(B_CSV)  # an earlier a.csv, other bytes
    assert run_batch("ecommerce", {**ENV, "RUN_ID": "r1"}, f"file://{src}/", f"file://{out}/") == 1
    doc = manifest(out, "r1")
    assert doc["error"].startswith(
        f"input file://{src}/a.csv cannot move to file://{src}/processed/a.csv: that key "
        "already holds a different object"
    )
    assert doc["objects"] == [] and outputs(out) == {}  # refused before anything is written
    assert files(src) == {"a.csv": A_CSV, "processed/a.csv": B_CSV, "sub/b.csv": B_CSV}

    # The same bytes (a copy left by an interrupted run) are no obstacle.
    (src / "processed" / "a.csv").write_bytes(A_CSV)
    assert run_batch("ecommerce", {**ENV, "RUN_ID": "r2"}, f"file://{src}/", f"file://{out}/") == 0
    assert files(src) == {"processed/a.csv": A_CSV, "processed/sub/b.csv": B_CSV}


def test_job_counters_add_up_and_keep_off_the_runners_names() -> None:
    with ThreadPoolExecutor(1) as executor:
        ctx = JobContext(
            job="ecommerce",
            run_id="r1",
            env=Env({}),
            output=MemoryWriter(),
            output_prefix="",
            executor=executor,
            cpu_workers=1,
            clock=SYSTEM_CLOCK,
        )
        ctx.count("inputs_moved", 0)
        ctx.count("inputs_moved")
        ctx.count("inputs_moved", 2)
        assert ctx.counters == {"inputs_moved": 3}
        with pytest.raises(ValueError, match="runner's own"):
            ctx.count("rows")


async def test_file_store_delete_of_a_key_under_a_file_is_a_missing_key(tmp_path: Path) -> None:
    (tmp_path / "processed").write_bytes(b"a file")
    store = FileWriter(tmp_path)
    await store.delete("processed/a.csv")  # like S3: deleting a missing key is not an error
    assert files(tmp_path) == {"processed": b"a file"}
