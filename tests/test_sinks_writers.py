"""FileWriter, MemoryWriter and destination URLs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from engine.errors import ConfigError, ObjectNotFound, StorageError
from sinks.local import FileWriter
from sinks.memory import MemoryWriter
from sinks.writer import Destination, ListedObject, ObjectWriter, open_writer, parse_destination


async def test_file_writer_round_trip(tmp_path: Path) -> None:
    writer: ObjectWriter = FileWriter(tmp_path / "out")
    stored = await writer.put("p/trades/a=1/x-000000.ndjson.gz", b"body")
    assert stored.sha256 == hashlib.sha256(b"body").hexdigest()
    assert stored.bytes == 4
    assert (tmp_path / "out/p/trades/a=1/x-000000.ndjson.gz").read_bytes() == b"body"
    assert await writer.get("p/trades/a=1/x-000000.ndjson.gz") == b"body"
    await writer.put("p/trades/a=1/x-000000.ndjson.gz", b"body")  # idempotent
    await writer.put("p/other", b"12345")
    await writer.put("q", b"")
    assert await writer.list("p/") == [
        ListedObject("p/other", 5),
        ListedObject("p/trades/a=1/x-000000.ndjson.gz", 4),
    ]
    assert [o.key for o in await writer.list("")] == [
        "p/other",
        "p/trades/a=1/x-000000.ndjson.gz",
        "q",
    ]
    await writer.delete("p/other")
    await writer.delete("p/other")
    with pytest.raises(ObjectNotFound):
        await writer.get("p/other")
    await writer.aclose()


async def test_file_writer_leaves_no_temp_files(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path)
    for n in range(5):
        await writer.put(f"d/k{n}", os.urandom(100))
    assert sorted(os.listdir(tmp_path / "d")) == [f"k{n}" for n in range(5)]


@pytest.mark.parametrize(
    "key",
    ["../escape", "a/../../escape", "/abs/key", "a//b", "a/./b", "", "a/\x00", "a\\..\\b", "a/"],
)
async def test_file_writer_refuses_keys_outside_root(tmp_path: Path, key: str) -> None:
    writer = FileWriter(tmp_path / "root")
    with pytest.raises(StorageError, match="refusing key"):
        await writer.put(key, b"x")
    assert not (tmp_path / "escape").exists()


async def test_file_writer_refuses_symlink_escape(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside")
    writer = FileWriter(tmp_path / "root")
    with pytest.raises(StorageError, match="outside"):
        await writer.put("link/x", b"x")
    assert list((tmp_path / "outside").iterdir()) == []


async def test_file_writer_maps_os_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    writer = FileWriter(tmp_path / "file")  # root is a file: cannot create directories in it
    with pytest.raises(StorageError) as info:
        await writer.put("a/b", b"x")
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(ObjectNotFound):
        await FileWriter(tmp_path / "missing").get("k")
    assert await FileWriter(tmp_path / "missing").list("") == []


async def test_memory_writer_fail_injection_and_hold() -> None:
    writer = MemoryWriter()
    writer.fail_next(2)
    for _ in range(2):
        with pytest.raises(StorageError, match="injected"):
            await writer.put("k", b"v")
    writer.fail_next(1, ObjectNotFound("gone"))
    with pytest.raises(ObjectNotFound):
        await writer.put("k", b"v")
    stored = await writer.put("k", b"v")
    assert stored.bytes == 1
    assert writer.put_attempts == 4
    assert writer.objects == {"k": b"v"}
    assert await writer.list("") == [ListedObject("k", 1)]
    await writer.delete("k")
    with pytest.raises(ObjectNotFound):
        await writer.get("k")
    await writer.aclose()
    with pytest.raises(StorageError, match="closed"):
        await writer.put("k", b"v")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://my-bucket/streaming/bnb/", Destination("s3", "streaming/bnb/", bucket="my-bucket")),
        ("s3://my-bucket/streaming/bnb", Destination("s3", "streaming/bnb/", bucket="my-bucket")),
        ("s3://my-bucket/", Destination("s3", "", bucket="my-bucket")),
        ("file:///tmp/out/", Destination("file", "", root=Path("/tmp/out"))),
        ("file:///tmp/out", Destination("file", "", root=Path("/tmp/out"))),
    ],
)
def test_parse_destination(url: str, expected: Destination) -> None:
    assert parse_destination(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/tmp/out",
        "http://x/y",
        "s3://",
        "s3://B/",
        "s3://my-bucket/../x/",
        "s3://my-bucket//x/",
        "s3://my-bucket/a?b=c",
        "file://relative/path",
        "file:",
    ],
)
def test_parse_destination_refuses(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_destination(url)
    assert info.value.variable == "--out"


def test_destination_url() -> None:
    assert parse_destination("s3://my-bucket/a/").url == "s3://my-bucket/a/"
    assert parse_destination("file:///tmp/x/").url == "file:///tmp/x/"


async def test_open_writer_for_file_destination(tmp_path: Path) -> None:
    destination = parse_destination(f"file://{tmp_path}/out/")
    async with open_writer(destination) as writer:
        await writer.put("k/v", b"1")
    assert (tmp_path / "out/k/v").read_bytes() == b"1"
