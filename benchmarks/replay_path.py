"""The replay half of `make bench` (docs: load-testing.md): one synthetic recording, three readers.

* ``replay-ceiling`` - ``iter_records`` + ``BinanceProtocol.parse`` and nothing else;
* ``replay``         - ``feedvault replay FILE --speed max --out s3://bench/replay/`` end to end
  into the bench's moto server: trades (from its manifest) per second of the run's own time,
  CPU µs per trade (the run's own CPU time), both from its ``run_end`` line (from the start of
  the run to the manifest written: interpreter start-up and imports are left out, as the
  baselines leave them out), and peak RSS (same line);
* ``replay-naive``   - json + list + gzip level 9 + boto3 per window, over the same file.

The recording (``bench-output/replay-bench.jsonl.zst``) is generated once per bench run. When
``engine/replay.py`` is not there (or the run leaves no manifest), the ``replay`` row says so
instead of stopping the bench.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from benchmarks.figures import last_json, median_row

PY = sys.executable


class _Host(Protocol):
    """What this module needs from the bench: S3 env, manifests, child runs, results."""

    window_seconds: int
    results: dict[str, dict[str, Any]]
    baseline_repo: Path | None

    def env(self, repo: Path = ..., **extra: str) -> dict[str, str]: ...

    def manifest(self, prefix: str) -> dict[str, Any] | None: ...


class RunChild(Protocol):
    """:func:`benchmarks.__main__.run_child`."""

    def __call__(
        self, cmd: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None
    ) -> tuple[int, str, Any]: ...


def replay_available() -> bool:
    """True when the ``feedvault replay`` command exists (engine/replay.py)."""
    return importlib.util.find_spec("feedvault.replay") is not None


def generate(bench: _Host, run_child: RunChild, path: Path, frames: int) -> dict[str, Any]:
    """Write the bench's recording; return the generator's line (frames, bytes, seconds)."""
    cmd = [PY, "-m", "benchmarks.recording_gen", str(path), str(frames)]
    status, out, _ = run_child(cmd, bench.env(), 600)
    if status != 0:
        raise SystemExit(f"bench: generating the recording failed (exit {status})")
    return last_json(out)


def _child_row(bench: _Host, run_child: RunChild, cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run a child benchmark; its row: trades, trades/s, CPU per trade, peak RSS."""
    _, out, _ = run_child(cmd, bench.env(), timeout)
    doc = last_json(out)
    return {k: doc[k] for k in ("trades", "trades_per_s", "cpu_us_per_trade", "peak_rss_mb")}


def ceiling(bench: _Host, run_child: RunChild, path: Path) -> None:
    cmd = [PY, "-m", "benchmarks.replay_ceiling", str(path)]
    bench.results["replay-ceiling"] = _child_row(bench, run_child, cmd, 600)


def replay(
    bench: _Host,
    run_child: RunChild,
    path: Path,
    frames: int,
    out_dir: Path,
    name: str = "replay",
    repo: Path | None = None,
) -> None:
    """Run ``feedvault replay`` on ``path`` as row ``name``, by this checkout's code or by the
    code in ``repo`` (the baseline worktree); record its row (or why there is none)."""
    if repo is None and not replay_available():
        bench.results[name] = {"available": False, "note": "engine/replay.py not present"}
        return
    env = bench.env(
        *([repo] if repo is not None else []),
        WINDOW_SECONDS=str(bench.window_seconds),
        FORMAT="ndjson.zst",
        STATS_INTERVAL_SECONDS="5",
        LOG_FORMAT="json",
        MAX_RUNTIME_SECONDS="900",
        SPILL_DIR=str(out_dir / "spill"),
    )
    cmd = [
        PY,
        "-m",
        "feedvault",
        "replay",
        str(path),
        "--speed",
        "max",
        "--out",
        f"s3://bench/{name}/",
    ]
    started = time.monotonic()
    status, out, usage = run_child(cmd, env, 120 + frames / 10_000, cwd=repo)
    wall = time.monotonic() - started
    (out_dir / f"{name}.log").write_text(out)
    manifest = bench.manifest(f"{name}/")
    if manifest is None:
        tail = " | ".join(out.splitlines()[-3:])[-300:]
        bench.results[name] = {
            "available": False,
            "note": f"exit {status}, no manifest under {name}/_manifests/: {tail}",
        }
        return
    trades = sum(o["records"] for o in manifest["objects"])
    cpu = usage.ru_utime + usage.ru_stime
    peak_rss_mb, queue_hw, elapsed, cpu = 0.0, 0, wall, cpu
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        if doc.get("event") == "stats":
            queue_hw = max(queue_hw, int(doc.get("queue_high_water", 0)))
        if doc.get("event") == "run_end":
            # The run's own time and CPU, from the start of the run to the manifest written:
            # interpreter start-up and imports are left out, as the baselines leave them out.
            peak_rss_mb = float(doc.get("peak_rss_mb", 0.0))
            elapsed = float(doc.get("elapsed_s", wall))
            cpu = float(doc.get("cpu_s", cpu))
    bench.results[name] = {
        "exit": status,
        "status": manifest["status"],
        "trades": trades,
        "complete": trades == frames,
        "seconds": round(elapsed, 2),
        "process_seconds": round(wall, 2),
        "trades_per_s": round(trades / elapsed, 1),
        "cpu_us_per_trade": round(cpu / max(trades, 1) * 1e6, 3),
        "peak_rss_mb": peak_rss_mb,
        "queue_high_water": queue_hw,
        "objects": len(manifest["objects"]),
        "bytes": sum(o["bytes"] for o in manifest["objects"]),
    }


def naive(bench: _Host, run_child: RunChild, path: Path) -> None:
    window = str(bench.window_seconds)
    cmd = [PY, "-m", "benchmarks.naive", "--file", str(path), "bench", window]
    bench.results["replay-naive"] = _child_row(bench, run_child, cmd, 900)


def run_all(bench: _Host, run_child: RunChild, out_dir: Path, frames: int, repeat: int = 1) -> None:
    """Generate the recording, then the ceiling, the replay (and the baseline's, in turn with
    it, ``repeat`` times each: the medians are kept) and the naive baseline on it."""
    path = out_dir / "replay-bench.jsonl.zst"
    made = generate(bench, run_child, path, frames)
    print(
        f"bench: replay path on {frames:,} Binance trade frames "
        f"({made['bytes'] / 2**20:.1f} MiB zstd, generated in {made['seconds']:.1f} s)",
        flush=True,
    )
    ceiling(bench, run_child, path)
    runs: dict[str, list[dict[str, Any]]] = {"replay": [], "replay-before": []}
    for attempt in range(max(repeat, 1)):
        for name, repo in (("replay", None), ("replay-before", bench.baseline_repo)):
            if name == "replay-before" and repo is None:
                continue
            key = f"{name}-{attempt}"
            replay(bench, run_child, path, frames, out_dir, key, repo)
            runs[name].append(bench.results.pop(key))
    for name, rows in runs.items():
        if rows:
            bench.results[name] = median_row(rows)
    naive(bench, run_child, path)
