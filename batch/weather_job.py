"""``feedvault batch weather``: station observations -> daily summaries, anomalies (docs: batch.md).

Reads every input object (keys sorted; CSV or NDJSON, see :mod:`batch.weather`), validates and
normalizes them to SI units in one ``run_cpu`` call, then writes, under
``{OUTPUT_PREFIX}weather/``:

* ``observations.jsonl`` / ``observations/observations.parquet``: the valid observations, SI
  units, UTC;
* ``daily.jsonl`` / ``daily/daily.parquet``: one row per (station, UTC day);
* ``anomalies.jsonl`` / ``anomalies/anomalies.parquet``: anomalous (station, day) rows;
* ``quality.json``: the data-quality report (counts per file and rejection kind);
* ``rejected/rejected.csv``: every rejected row with its kind and reason.

A malformed file or a missing input fails the run (:class:`~batch.job.JobError`: incomplete
manifest, exit 1). Everything is computed before the first write.
"""

from __future__ import annotations

from typing import Final

from batch.csvutil import rejected_csv, table_outputs, to_json
from batch.job import FileJob, JobContext
from batch.jobinput import input_errors, read_inputs
from batch.weather import (
    ANOMALY_SCHEMA,
    DAILY_SCHEMA,
    OBSERVATION_SCHEMA,
    ParsedWeather,
    anomalies,
    daily_summaries,
    observation_rows,
    parse_weather,
    quality_report,
)

NAME: Final = "weather"


def render(parsed: ParsedWeather) -> list[tuple[str, bytes, int]]:
    """Every output as ``(relative key, body, records)`` (pure)."""
    outputs: list[tuple[str, bytes, int]] = []
    for stem, rows, schema in (
        ("observations", observation_rows(parsed.observations), OBSERVATION_SCHEMA),
        ("daily", daily_summaries(parsed.observations), DAILY_SCHEMA),
        ("anomalies", anomalies(parsed.observations), ANOMALY_SCHEMA),
    ):
        outputs += table_outputs(stem, rows, schema)
    outputs.append(("quality.json", to_json(quality_report(parsed)), 1))
    outputs.append(("rejected/rejected.csv", rejected_csv(parsed.rejected), len(parsed.rejected)))
    return outputs


class WeatherJob(FileJob):
    """The job object (:class:`batch.job.Job`, :class:`batch.job.SampleSource`)."""

    name = NAME

    async def run(self, ctx: JobContext) -> None:
        reader = ctx.require_input()
        files = await read_inputs(ctx)
        with input_errors(reader):
            parsed = await ctx.run_cpu(parse_weather, files)
        outputs = await ctx.run_cpu(render, parsed)
        await ctx.write_outputs(outputs)
