"""``feedvault batch ecommerce``: order CSVs -> daily and category KPIs (docs: batch.md#ecommerce).

Reads every *new* input object (keys sorted; each must be an order CSV, see
:mod:`batch.ecommerce`): everything under ``INPUT_PREFIX`` except ``{INPUT_PREFIX}processed/``,
or the one ``INPUT_KEY``. Validates them in one ``run_cpu`` call, then writes, under
``{OUTPUT_PREFIX}ecommerce/``:

* ``orders_kpis.jsonl`` / ``orders_kpis/orders_kpis.parquet``: one row per ``order_date``;
* ``category_kpis.jsonl`` / ``category_kpis/category_kpis.parquet``: one row per (category,
  order_date);
* ``rejected/rejected.csv``: every rejected row with its kind and reason.

Once every output is durable, the inputs move under ``processed/`` (:mod:`batch.processed`:
``{INPUT_PREFIX}processed/{rel}``, or ``processed/`` beside a single ``INPUT_KEY``), copy first
and delete after; the manifest counter ``inputs_moved`` and one ``input_moved`` log line per
object record it. The runner writes the manifest after that. So the outputs of each run cover
the inputs that were new to it, and replace those of the previous run (same keys).

The run fails (:class:`~batch.job.JobError`: incomplete manifest, exit 1) with nothing written
and nothing moved when: there is no new input (the outputs of the last run are left as they
are; the error says how many objects are already under ``processed/``) and ``NO_NEW_INPUT`` is
``fail`` (the default), a file is malformed
(empty, not UTF-8, wrong header, broken quoting), or an input's ``processed/`` key already holds
a different object. Everything is computed before the first write. It fails after its outputs
are written, with the moves undone, when moving an input fails (the error names it).

With ``NO_NEW_INPUT=succeed`` a run that finds every input already under ``processed/``
completes having done nothing: no output written or replaced, nothing moved, the manifest
``complete`` with the counter ``no_new_input`` 1 and ``outputs`` 0, and a ``no_new_input`` log
line. That is for runs started per uploaded object (docs: lake.md#event-driven-e-commerce-batch),
where the runs started by the same batch of files, and by the job's own moves under
``processed/``, find what an earlier run already took. An input that another run moves between
this run's listing and its read is left out (``input_taken`` log line); when that leaves
nothing, the run ends the same way. (With ``fail`` that input fails the run, as any missing
input does.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final, Self

from batch.csvutil import rejected_csv, table_outputs
from batch.ecommerce import (
    CATEGORY_KPI_SCHEMA,
    ORDER_KPI_SCHEMA,
    ParsedOrders,
    category_kpis,
    order_kpis,
    parse_orders,
)
from batch.job import FileJob, JobContext
from batch.jobinput import input_errors
from batch.processed import (
    MOVED_COUNTER,
    NothingNew,
    check_targets,
    move_to_processed,
    new_inputs,
    read_new_inputs,
)
from engine.logs import get_logger, log_event
from engine.settings import Env

NAME: Final = "ecommerce"
NO_NEW_INPUT_CHOICES: Final = ("fail", "succeed")
"""``NO_NEW_INPUT``: what a run that finds nothing new does (fail: exit 1; succeed: exit 0)."""
NO_NEW_COUNTER: Final = "no_new_input"

log = get_logger("batch.ecommerce")


def render(parsed: ParsedOrders) -> list[tuple[str, bytes, int]]:
    """Every output as ``(relative key, body, records)`` (pure)."""
    orders = order_kpis(parsed.orders)
    categories = category_kpis(parsed.orders)
    return [
        *table_outputs("orders_kpis", orders, ORDER_KPI_SCHEMA),
        *table_outputs("category_kpis", categories, CATEGORY_KPI_SCHEMA),
        ("rejected/rejected.csv", rejected_csv(parsed.rejected), len(parsed.rejected)),
    ]


@dataclass(frozen=True, slots=True)
class EcommerceJob(FileJob):
    """The job object (:class:`batch.job.Job`, :class:`batch.job.SampleSource`).
    ``no_new_input`` is ``NO_NEW_INPUT`` (see the module docstring)."""

    name = NAME
    no_new_input: str = "fail"

    @classmethod
    def from_env(cls, env: Env) -> Self:
        return cls(env.choice("NO_NEW_INPUT", "fail", NO_NEW_INPUT_CHOICES))

    def parameters(self) -> dict[str, Any]:
        return {"no_new_input": self.no_new_input}

    @staticmethod
    def _nothing_new(ctx: JobContext, url: str, detail: str) -> None:
        ctx.count(NO_NEW_COUNTER, 1)
        log_event(log, logging.INFO, "no_new_input", input=url, detail=detail)

    async def run(self, ctx: JobContext) -> None:
        reader = ctx.require_input()
        ctx.count(MOVED_COUNTER, 0)
        succeed = self.no_new_input == "succeed"
        try:
            found = await new_inputs(reader)
        except NothingNew as exc:
            if not succeed:
                raise
            self._nothing_new(ctx, reader.url, str(exc))
            return
        inputs = await read_new_inputs(ctx, reader, found.keys, skip_taken=succeed)
        if not inputs:
            self._nothing_new(ctx, reader.url, "every new input was taken by another run")
            return
        files = [(reader.relative(key), body) for key, body in inputs]
        await check_targets(reader, inputs, found.archived)
        with input_errors(reader):
            parsed = await ctx.run_cpu(parse_orders, files)
        outputs = await ctx.run_cpu(render, parsed)
        await ctx.write_outputs(outputs)
        await move_to_processed(ctx, inputs)
