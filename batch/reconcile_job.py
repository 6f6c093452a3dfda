"""``feedvault batch reconcile``: a ledger file against a processor file (docs: batch.md#reconcile).

The input is a prefix (``INPUT_PREFIX`` / ``--in s3://bucket/prefix/``) holding exactly two CSV
objects, told apart by file name (the last ``/`` segment, any case): ``ledger*.csv`` is the
ledger, ``processor*.csv`` the processor file (columns in :mod:`batch.reconcile`). A missing
side, two candidates for one side, or any other object under the prefix fails the run with a
:class:`~batch.job.JobError` naming them (incomplete manifest, exit 1), as does a malformed file.

Outputs, under ``{OUTPUT_PREFIX}reconcile/``, written after everything is computed:

* ``details.jsonl`` / ``details/details.parquet``: one row per key and per duplicate, with its
  status;
* ``summary.json`` and ``summary.md``: the counts, each side's rows, totals per currency;
* ``rejected.csv``: the rejected rows of both files with their reasons.
"""

from __future__ import annotations

from typing import Any, Final

from batch.csvutil import rejected_csv, table_outputs, to_json
from batch.job import FileJob, JobContext, JobError
from batch.jobinput import input_errors, read_inputs
from batch.reconcile import (
    DETAIL_SCHEMA,
    detail_rows,
    parse_ledger,
    parse_processor,
    reconcile,
    summary,
    summary_markdown,
)

NAME: Final = "reconcile"
SIDES: Final = ("ledger", "processor")


def split_sides(names: list[str]) -> dict[str, str]:
    """``{"ledger": name, "processor": name}`` from the input names; :class:`JobError` unless
    there is exactly one ``ledger*.csv`` and one ``processor*.csv`` and nothing else."""
    found: dict[str, list[str]] = {side: [] for side in SIDES}
    other: list[str] = []
    for name in names:
        base = name.rsplit("/", 1)[-1].lower()
        side = next((s for s in SIDES if base.startswith(s) and base.endswith(".csv")), None)
        (found[side] if side is not None else other).append(name)
    problems = [f"no {side}*.csv file" for side in SIDES if not found[side]]
    problems += [
        f"several {side}*.csv files ({', '.join(found[side])})"
        for side in SIDES
        if len(found[side]) > 1
    ]
    if other:
        problems.append(f"unexpected objects ({', '.join(other)})")
    if problems:
        raise JobError(
            "reconcile input must hold one ledger*.csv and one processor*.csv: "
            + "; ".join(problems)
        )
    return {side: found[side][0] for side in SIDES}


def compute(
    ledger: tuple[str, bytes], processor: tuple[str, bytes]
) -> list[tuple[str, bytes, int]]:
    """Parse both sides, reconcile, and render every output as ``(key, body, records)``.
    Pure; raises :class:`~batch.csvutil.InputError` for a malformed file."""
    rec = reconcile(parse_ledger(*ledger), parse_processor(*processor))
    details = detail_rows(rec)
    report = summary(rec)
    rejected = rec.ledger.rejected + rec.processor.rejected
    return [
        *table_outputs("details", details, DETAIL_SCHEMA),
        ("summary.json", to_json(report), 1),
        ("summary.md", summary_markdown(report).encode("utf-8"), 1),
        ("rejected.csv", rejected_csv(rejected), len(rejected)),
    ]


class ReconcileJob(FileJob):
    """The job object (:class:`batch.job.Job`, :class:`batch.job.SampleSource`)."""

    name = NAME

    def parameters(self) -> dict[str, Any]:
        return {"ledger_pattern": "ledger*.csv", "processor_pattern": "processor*.csv"}

    async def run(self, ctx: JobContext) -> None:
        reader = ctx.require_input()
        files = dict(await read_inputs(ctx))
        sides = split_sides(sorted(files))
        ledger, processor = sides["ledger"], sides["processor"]
        with input_errors(reader):
            outputs = await ctx.run_cpu(
                compute, (ledger, files[ledger]), (processor, files[processor])
            )
        await ctx.write_outputs(outputs)
