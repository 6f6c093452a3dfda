"""The book row of `make bench` (docs: load-testing.md#make-bench): the order-book path end to
end, beside the trade path of the same run.

* ``book`` - ``feedvault stream`` with ``CHANNELS=book`` (Binance, the bench's 3 symbols,
  ``FORMAT=ndjson.zst``, the same window and environment as the ``zst`` trade row) into the
  bench's moto server, against its own ``feedvault fake-exchange --rate max --book-rate max``:
  the fake makes the next book messages whenever the engine's connection has taken the last
  ones, so the engine, not a pace, sets the rate; the REST snapshots come from the same fake
  (``BINANCE_REST_URL``). A *level change* is a stored row with ``snapshot`` false (one price
  level set or removed by a diff); the snapshot rows (the REST snapshot each symbol starts
  from, every window's opening snapshot, any resync's) are counted apart and left out of the
  figures. Level changes/s is level changes over the run's seconds; CPU µs per level change is
  the engine process's user + system CPU (start-up included, as the trade rows count it) over
  them; peak RSS is the process's own (its ``run_end`` line).
* ``book-generator`` - such a fake read by the bare aiohttp receive loop (the fastest client
  there is), measured as the trade ``generator`` row is: the level changes/s it sustains, its
  own CPU µs per level change sent (``/proc/PID``), its peak RSS and the share of one core it
  used. The ``book`` row also carries its own fake's share of a core during the engine's run
  (``generator_cpu_share``: near 1, the generator, not the engine, set the rate).

The ratio lines (:func:`benchmarks.__main__.book_report`) state the book row's CPU per level
change against the ``zst`` row's CPU per trade (target: at most :data:`BOOK_CPU_TARGET` times)
and the generator's rate against the book row's.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import zstandard

PY = sys.executable
SYMBOLS = "BTCUSDT,ETHUSDT,BNBUSDT"
BOOK_CPU_TARGET = 1.5
"""The book row's CPU per level change must be at most this multiple of the ``zst`` row's CPU
per trade."""
SNAPSHOT_TRUE = b'"snapshot":true'
"""How a snapshot row's flag is written in the stored ND-JSON (compact, as the sink writes)."""


class _Host(Protocol):
    """What this module needs from the bench."""

    results: dict[str, dict[str, Any]]
    client: Any

    def env(self, repo: Path = ..., **extra: str) -> dict[str, str]: ...

    def manifest(self, prefix: str) -> dict[str, Any] | None: ...

    def child(self, cmd: list[str], timeout: float) -> dict[str, Any]: ...

    def engine(
        self,
        name: str,
        fmt: str,
        seconds: float,
        transport: str = ...,
        *,
        before: bool = ...,
        url: str | None = ...,
        **extra: str,
    ) -> None: ...


def count_rows(bodies: Iterable[bytes]) -> tuple[int, int]:
    """(rows, snapshot rows) of stored ``ndjson.zst`` book objects."""
    rows = snapshots = 0
    for body in bodies:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
            data = reader.read()
        rows += data.count(b"\n")
        snapshots += data.count(SNAPSHOT_TRUE)
    return rows, snapshots


def book_row(
    run: dict[str, Any], rows: int, snapshot_rows: int, resyncs: int, seconds: float
) -> dict[str, Any]:
    """The ``book`` row from the engine run's figures (:meth:`Bench.engine`'s row: its
    ``cpu_seconds``, ``peak_rss_mb``, ...) and the stored objects' row counts: level changes
    are the rows that are not snapshot rows."""
    changes = rows - snapshot_rows
    row = {k: v for k, v in run.items() if k not in ("trades", "trades_per_s", "cpu_us_per_trade")}
    row.update(
        {
            "level_changes": changes,
            "level_changes_per_s": round(changes / seconds, 1),
            "cpu_us_per_level_change": round(run["cpu_seconds"] / max(changes, 1) * 1e6, 3),
            "rows": rows,
            "snapshot_rows": snapshot_rows,
            "resyncs": resyncs,
        }
    )
    return row


def generator_row(
    changes_sent: int, cpu_seconds: float, peak_rss_mb: float, seconds: float
) -> dict[str, Any]:
    """The ``book-generator`` row: the fake's level changes sent over the ``seconds`` it was
    read, its CPU per level change sent, its peak RSS and its share of one core."""
    return {
        "level_changes_per_s": round(changes_sent / seconds, 1),
        "cpu_us_per_level_change": round(cpu_seconds / max(changes_sent, 1) * 1e6, 3),
        "peak_rss_mb": peak_rss_mb,
        "cpu_share": round(cpu_seconds / seconds, 3),
        "level_changes_sent": changes_sent,
    }


def run(
    bench: _Host,
    seconds: float,
    repeat: int,
    cpu_of: Callable[[int], float],
    rss_of: Callable[[int], int],
) -> None:
    """The ``book-generator`` row once, then the ``book`` row ``repeat`` times (each against a
    fake of its own); keep the run with the median level changes/s, with every run's rate."""
    bench.results["book-generator"] = _generator(bench, seconds, cpu_of, rss_of)
    runs = [
        _once(bench, "book" if repeat <= 1 else f"book-{attempt}", seconds, cpu_of, rss_of)
        for attempt in range(max(repeat, 1))
    ]
    order = sorted(range(len(runs)), key=lambda i: runs[i]["level_changes_per_s"])
    middle = order[(len(order) - 1) // 2]  # the lower middle, as median_row keeps
    bench.results["book"] = {
        **runs[middle],
        "runs": [runs[i]["level_changes_per_s"] for i in order],
    }


@contextlib.contextmanager
def _book_fake(bench: _Host) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """A ``feedvault fake-exchange --rate max --book-rate max`` of its own: (the process, its
    ``listening`` line); on leaving, stopped and its ``stopped`` line put in the second item
    under ``"stopped"``."""
    cmd = ["-m", "feedvault", "fake-exchange", "--protocol", "binance", "--port", "0"]
    cmd += ["--rate", "max", "--book-rate", "max", "--symbols", SYMBOLS]
    fake = subprocess.Popen(
        [PY, *cmd], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=bench.env()
    )
    doc: dict[str, Any] = {}
    try:
        assert fake.stdout is not None
        doc.update(json.loads(fake.stdout.readline()))
        yield fake, doc
    finally:
        fake.terminate()
        out, _ = fake.communicate(timeout=60)
    doc["stopped"] = json.loads(out.strip().splitlines()[-1])


def _generator(
    bench: _Host,
    seconds: float,
    cpu_of: Callable[[int], float],
    rss_of: Callable[[int], int],
) -> dict[str, Any]:
    """The book fake read by the bare aiohttp receive loop (the fastest client there is), as
    the trade generator row is measured: what it sustains and its own CPU per level change."""
    with _book_fake(bench) as (fake, listening):
        url = f"{listening['url']}/stream?streams=" + "/".join(
            f"{s.lower()}@depth@100ms" for s in SYMBOLS.split(",")
        )
        cpu0 = cpu_of(fake.pid)
        cmd = [PY, "-m", "benchmarks.bare_recv", url, str(seconds), "--transport", "aiohttp"]
        doc = bench.child(cmd, seconds + 60)
        cpu = cpu_of(fake.pid) - cpu0
        rss = round(rss_of(fake.pid) / 2**20, 1)
    sent = int(listening["stopped"].get("book_changes", 0))
    return generator_row(sent, cpu, rss, float(doc["seconds"]))


def _once(
    bench: _Host,
    name: str,
    seconds: float,
    cpu_of: Callable[[int], float],
    rss_of: Callable[[int], int],
) -> dict[str, Any]:
    with _book_fake(bench) as (fake, listening):
        cpu0 = cpu_of(fake.pid)
        bench.engine(
            name,
            "ndjson.zst",
            seconds,
            url=listening["url"],
            CHANNELS="book",
            BINANCE_REST_URL=f"http://127.0.0.1:{listening['port']}",
        )
        cpu = cpu_of(fake.pid) - cpu0
    engine_row = bench.results.pop(name)
    manifest = bench.manifest(f"bench/{name}/")
    assert manifest is not None  # engine() stops the bench without one
    keys = [o["key"] for o in manifest["objects"] if "/book/" in f"/{o['key']}"]
    rows, snapshots = count_rows(
        bench.client.get_object(Bucket="bench", Key=key)["Body"].read() for key in keys
    )
    resyncs = sum(len(v) for v in manifest.get("resyncs", {}).values())
    row = book_row(engine_row, rows, snapshots, resyncs, seconds)
    row["generator_cpu_share"] = round(cpu / seconds, 3)
    return row
