"""engine.text.plural, and the reports that use it saying "1 object", never "1 objects"."""

from __future__ import annotations

import pytest

from engine.text import plural
from sinks.manifest import write_manifest
from sinks.memory import MemoryWriter
from sinks.verify import verify_run
from tests.test_sinks_verify import PREFIX, make_run, trades


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, "0 problems"), (1, "1 problem"), (2, "2 problems"), (-1, "-1 problems")],
)
def test_plural(count: int, expected: str) -> None:
    assert plural(count, "problem") == expected


def test_irregular_plurals_verbs_and_grouping() -> None:
    assert plural(1, "entry", "entries") == "1 entry"
    assert plural(2, "entry", "entries") == "2 entries"
    assert plural(1, "window", verb=("was", "were")) == "1 window was"
    assert plural(3, "window", verb=("was", "were")) == "3 windows were"
    assert plural(12345, "trade", grouped=True) == "12,345 trades"


async def test_verify_says_one_object_one_record_one_problem() -> None:
    writer = MemoryWriter()
    manifest = await make_run(writer, batches=[trades("BTC-USDT", 1, 1)])
    manifest.spilled = [f"{PREFIX}trades/x.ndjson.gz"]
    await write_manifest(writer, PREFIX, manifest)
    report = await verify_run(writer, PREFIX, manifest.run_id)
    summary = report.summary()
    assert summary.splitlines()[0].endswith("(1 object, 1 record, 1 problem)"), summary
    assert f"1 window was left in the spill directory: {PREFIX}trades/x.ndjson.gz" in summary
