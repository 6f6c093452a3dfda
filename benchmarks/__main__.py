"""`make bench`: the figures of docs/load-testing.md#make-bench from one run, with ratios.

WebSocket path: the load generator blasts Binance trade frames as fast as a client takes them;
measured in the same run, one after the other against the same server:

* `bare`   - a bare `websockets` receive loop, no parsing (the ceiling of that transport);
* `bare-aiohttp` - a bare aiohttp receive loop, no parsing (the ceiling of that transport);
* `generator` - the load generator (``--generator``: the fake exchange at ``--rate max``, the
  default, or :mod:`benchmarks.blaster`'s pre-framed batches), measured during `bare-aiohttp`
  (the fastest client we have): the frames/s it sustains, its own CPU µs per frame and peak RSS
  (``/proc/PID``); the ratios state it against `stream`'s end-to-end rate (target: at least
  3x, so the generator is not what limits the engine's figure);
* `bare-orjson`, `bare-aiohttp-orjson` (``--parse-ceilings``) - the same loops with
  ``orjson.loads`` of each frame;
* `zst`    - `feedvault stream` end to end into S3 (moto's server on loopback), FORMAT=ndjson.zst,
  on the default transport (aiohttp);
* `gz`     - the same with the default FORMAT=ndjson.gz;
* `zst-websockets`, `gz-websockets` - the same two on ``WS_TRANSPORT=websockets``;
* `parquet` - the same with FORMAT=parquet (docs: lake.md#formats); the ``formats`` lines state
  each format's CPU µs and stored bytes per trade, end to end (the `zst`, `gz` and `parquet`
  rows) and for the encoder alone (:func:`benchmarks.formats.encoder_figures`);
* `zst-before` - the same as `zst` run by the code of ``--baseline`` (default: the commit before
  the transport work, :data:`BASELINE_REV`), checked out in a ``git worktree`` under
  bench-output/ and run from there with this environment, against the same generator;
* `naive`  - json + list + gzip level 9 + boto3 per window (the naive baseline);
* `zst-long` - a 3x longer zst run, to show peak RSS does not grow with run length.

``--repeat N`` runs each of `zst`, `zst-websockets` and `zst-before` N times, in turn (so the
machine's noise falls on all three alike), and keeps each one's median run; the rates of all
runs are in the row (``runs``). The same for `replay` and `replay-before`.

Replay path (:mod:`benchmarks.replay_path`): a synthetic recording of ``--replay-frames``
Binance trade frames (``.zst``, generated once per run), read by

* `replay-ceiling` - ``iter_records`` + ``BinanceProtocol.parse``, no sink (the ceiling);
* `replay` - ``feedvault replay FILE --speed max`` end to end into S3 (trades/s over the
  process's wall time; "not available" when the command is missing or leaves no manifest);
* `replay-before` - the same by the baseline's code;
* `replay-naive` - the naive baseline reading the same file.

Each half's ratios are against its own ceiling and naive baseline.

Book path (:mod:`benchmarks.book_path`; ``--skip-book`` leaves it out): `book`, `feedvault
stream` with ``CHANNELS=book`` against a fake exchange of its own serving books as fast as the
engine takes them (``--book-rate max``), and `book-generator`, that fake's own figures; the
ratio line states the CPU per level change against the `zst` row's CPU per trade (target: at
most 1.5x). ``--book-only`` runs just the `zst` row and the book row.

The engine runs use ``WINDOW_SECONDS=10`` (``--window-seconds``) so that both the short and the
long run close windows mid-run and reach their steady state: memory is bounded by configuration
(queue size, window bytes, uploads in flight), and the long run shows it does not grow with run
length. Peak RSS is each process's own high-water mark (``VmHWM``), which, unlike
``ru_maxrss``, does not inherit the size of the process that started it. Results are printed
as a table and written to bench-output/bench.json. Usage:
``python -m benchmarks [--seconds 30] [--long-seconds 90] [--window-seconds 10] [--skip-long]
[--skip-ws] [--skip-replay] [--skip-book | --book-only] [--replay-frames 2000000]
[--parse-ceilings]
[--generator fake|blaster] [--baseline REV | --no-baseline] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from benchmarks import book_path, replay_path
from benchmarks.book_path import BOOK_CPU_TARGET
from benchmarks.figures import last_json, median_row
from benchmarks.formats import encoder_figures, formats_report

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
SYMBOLS = "BTCUSDT,ETHUSDT,BNBUSDT"
BASELINE_REV = "cefcbc716921ef5318c5db77b9bc785bcf3c0fb4"
"""The commit before the WebSocket transport work: `stream` on websockets, the old hot path."""
STREAM_TARGET = 2.5
"""`stream` (zst) must do at least this multiple of the baseline's rate."""
CEILING_TARGET = 0.25
"""... and at least this share of the bare aiohttp receive loop."""
REPLAY_TARGET = 1.5
"""`replay` must do at least this multiple of the baseline's rate."""
RSS_BOUND_MB = 300.0
"""Peak RSS of the engine, short and long run."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (``/proc/PID/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_of(pid: int) -> int:
    """A running process's own peak RSS in bytes (``VmHWM`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_child(
    cmd: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None
) -> tuple[int, str, Any]:
    """Run a child to completion (in ``cwd``: where ``python -m`` finds its package); return
    (status, stdout, rusage of that child alone)."""
    with open(os.devnull, "w") as devnull:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=devnull, env=env, text=True, cwd=cwd or REPO
        )
        assert proc.stdout is not None
        out_lines: list[str] = []
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            out_lines.append(line)
            if time.monotonic() > deadline:
                proc.kill()
                break
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, "".join(out_lines), usage


class Bench:
    def __init__(self, seconds: float, long_seconds: float, window_seconds: int) -> None:
        self.window_seconds = window_seconds
        self.seconds = seconds
        self.long_seconds = long_seconds
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request
        port = free_port()
        self.s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.s3.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.aws_env = {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        self.client.create_bucket(Bucket="bench")
        self.results: dict[str, dict[str, Any]] = {}
        self.fake: subprocess.Popen[str] | None = None
        self.generator = "fake"
        self.url = ""
        self.baseline_repo: Path | None = None

    def start_fake(self, generator: str = "fake") -> None:
        """Start the WebSocket half's load generator: the fake exchange at ``--rate max``
        (``fake``), or :mod:`benchmarks.blaster` (``blaster``)."""
        self.generator = generator
        fake_cmd = ["feedvault", "fake-exchange", "--protocol", "binance", "--port", "0"]
        fake_cmd += ["--rate", "max", "--symbols", SYMBOLS]
        self.fake = subprocess.Popen(
            [PY, "-m", *(fake_cmd if generator == "fake" else ["benchmarks.blaster"])],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.env(),
        )
        assert self.fake.stdout is not None
        self.url = json.loads(self.fake.stdout.readline())["url"]

    def baseline(self, rev: str) -> Path | None:
        """A ``git worktree`` of ``rev`` under bench-output/ (made once, reused); None when
        this is not a git checkout or ``rev`` is not in it."""
        path = REPO / "bench-output" / f"baseline-{rev[:12]}"
        if (path / "feedvault").is_dir():
            self.baseline_repo = path
            return path
        made = subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--force", "--detach", str(path), rev],
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            print(f"bench: no baseline ({made.stderr.strip()[-200:]})", flush=True)
            return None
        self.baseline_repo = path
        return path

    def env(self, repo: Path = REPO, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(repo),
            "HOME": os.environ.get("HOME", "/tmp"),
        }
        env.update(self.aws_env)
        env.update(extra)
        return env

    def close(self) -> None:
        if self.fake is not None:
            self.fake.terminate()
            self.fake.wait(timeout=20)
        self.s3.stop()

    def bare(self, transport: str = "websockets", parse: bool = False) -> None:
        """A bare receive loop of ``transport`` (:mod:`benchmarks.bare_recv`; ``parse``: with
        ``orjson.loads`` of each frame) for ``seconds``, as row ``bare[-aiohttp][-orjson]``.
        The aiohttp loop without parsing also yields the ``generator`` row: the fake
        exchange's own CPU time and peak RSS over the same seconds (one frame is one trade)."""
        stream_url = f"{self.url}/stream?streams=" + "/".join(
            f"{s.lower()}@trade" for s in SYMBOLS.split(",")
        )
        name = "bare" + ("-aiohttp" if transport == "aiohttp" else "")
        name += "-orjson" if parse else ""
        cmd = [PY, "-m", "benchmarks.bare_recv", stream_url, str(self.seconds)]
        cmd += ["--transport", transport] + (["--parse"] if parse else [])
        generator = transport == "aiohttp" and not parse and self.fake is not None
        cpu0 = process_cpu_seconds(self.fake.pid) if generator and self.fake else None
        doc = self.child(cmd, self.seconds + 60)
        self.results[name] = {
            "trades_per_s": doc["msgs_per_s"],
            "cpu_us_per_trade": doc["cpu_us_per_msg"],
            "peak_rss_mb": doc["peak_rss_mb"],
        }
        if cpu0 is not None and self.fake is not None and doc["messages"]:
            cpu = process_cpu_seconds(self.fake.pid) - cpu0
            self.results["generator"] = {
                "source": self.generator,
                "trades_per_s": doc["msgs_per_s"],
                "cpu_us_per_trade": round(cpu / doc["messages"] * 1e6, 3),
                "peak_rss_mb": round(peak_rss_of(self.fake.pid) / 2**20, 1),
            }

    def engines(self, names: list[str], repeat: int) -> None:
        """Run each engine row of ``names`` (see :data:`ENGINE_ROWS`) ``repeat`` times, in
        turn, and keep each one's median run (by trades/s) with the rates of all its runs."""
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for attempt in range(repeat):
            for name in names:
                fmt, transport, before = ENGINE_ROWS[name]
                if before and self.baseline_repo is None:
                    continue
                key = name if repeat == 1 else f"{name}-{attempt}"
                self.engine(key, fmt, self.seconds, transport, before=before)
                runs[name].append(self.results.pop(key))
        for name, rows in runs.items():
            if not rows:
                self.results[name] = {"note": "no baseline worktree (see --baseline)"}
                continue
            self.results[name] = median_row(rows)

    def engine(
        self,
        name: str,
        fmt: str,
        seconds: float,
        transport: str = "aiohttp",
        *,
        before: bool = False,
        url: str | None = None,
        **extra: str,
    ) -> None:
        """`feedvault stream` for ``seconds`` as row ``name``: this checkout's code on
        ``transport``, or (``before``) the baseline worktree's; against ``url`` (default: the
        bench's generator), with ``extra`` environment (the book row's ``CHANNELS``)."""
        prefix = f"bench/{name}/"
        repo = self.baseline_repo if before and self.baseline_repo is not None else REPO
        env = self.env(
            repo,
            WS_TRANSPORT=transport,
            S3_BUCKET="bench",
            S3_PREFIX=prefix,
            MAX_RUNTIME_SECONDS=str(seconds),
            STREAMS=",".join(f"binance:{s}" for s in SYMBOLS.split(",")),
            BINANCE_WS_URL=url or self.url,
            WINDOW_SECONDS=str(self.window_seconds),
            FORMAT=fmt,
            STATS_INTERVAL_SECONDS="5",
            LOG_FORMAT="json",
            SPILL_DIR=str(REPO / "bench-output" / "spill"),
            **extra,
        )
        started = time.monotonic()
        status, out, usage = run_child(
            [PY, "-m", "feedvault", "stream"], env, seconds + 120, cwd=repo
        )
        wall = time.monotonic() - started
        (REPO / "bench-output" / f"{name}.log").write_text(out)
        manifest = self.manifest(prefix)
        if manifest is None:
            tail = "\n".join(out.splitlines()[-5:])
            raise SystemExit(f"bench: the {name} run (exit {status}) wrote no manifest:\n{tail}")
        trades = sum(o["records"] for o in manifest["objects"])
        cpu = usage.ru_utime + usage.ru_stime
        queue_hw, peak_rss_mb = 0, 0.0
        for line in out.splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == "stats":
                queue_hw = max(queue_hw, int(doc.get("queue_high_water", 0)))
            if doc.get("event") == "run_end":
                peak_rss_mb = float(doc["peak_rss_mb"])
        self.results[name] = {
            "exit": status,
            "status": manifest["status"],
            "trades": trades,
            "trades_per_s": round(trades / seconds, 1),
            "cpu_us_per_trade": round(cpu / max(trades, 1) * 1e6, 3),
            "cpu_seconds": round(cpu, 3),
            "peak_rss_mb": peak_rss_mb,
            "queue_high_water": queue_hw,
            "stop_seconds": round(wall - seconds, 2),
            "objects": len(manifest["objects"]),
            "bytes": sum(o["bytes"] for o in manifest["objects"]),
        }

    def naive(self) -> None:
        window = str(max(self.seconds / 3, 1))
        url = f"{self.url}/stream?streams=btcusdt@trade/ethusdt@trade/bnbusdt@trade"
        cmd = [PY, "-m", "benchmarks.naive", url, str(self.seconds), "bench", window]
        doc = self.child(cmd, self.seconds + 120)
        self.results["naive"] = {
            "trades_per_s": doc["trades_per_s"],
            "cpu_us_per_trade": doc["cpu_us_per_trade"],
            "peak_rss_mb": doc["peak_rss_mb"],
        }

    def child(self, cmd: list[str], timeout: float) -> dict[str, Any]:
        """Run a child benchmark with the bench's environment; the line it printed."""
        _, out, _ = run_child(cmd, self.env(), timeout)
        return last_json(out)

    def manifest(self, prefix: str) -> dict[str, Any] | None:
        listing = self.client.list_objects_v2(Bucket="bench", Prefix=prefix + "_manifests/")
        if not listing.get("Contents"):
            return None
        key = listing["Contents"][0]["Key"]
        doc: dict[str, Any] = json.loads(
            self.client.get_object(Bucket="bench", Key=key)["Body"].read()
        )
        return doc


ENGINE_ROWS: dict[str, tuple[str, str, bool]] = {
    "zst": ("ndjson.zst", "aiohttp", False),
    "gz": ("ndjson.gz", "aiohttp", False),
    "zst-websockets": ("ndjson.zst", "websockets", False),
    "gz-websockets": ("ndjson.gz", "websockets", False),
    "zst-before": ("ndjson.zst", "websockets", True),
    "parquet": ("parquet", "aiohttp", False),
}
"""Each `stream` row: its FORMAT, its WS_TRANSPORT, and whether the baseline's code runs it."""

HALVES = (
    (
        "WebSocket path",
        "bare-aiohttp",
        "naive",
        (
            "bare",
            "bare-aiohttp",
            "bare-orjson",
            "bare-aiohttp-orjson",
            "generator",
            "zst",
            "gz",
            "zst-websockets",
            "gz-websockets",
            "zst-before",
            "parquet",
            "naive",
            "zst-long",
        ),
    ),
    (
        "replay path",
        "replay-ceiling",
        "replay-naive",
        ("replay-ceiling", "replay", "replay-before", "replay-naive"),
    ),
)


GENERATOR_TARGET = 3.0
"""The generator must sustain at least this multiple of the engine's end-to-end rate."""


def ws_ratios(results: dict[str, dict[str, Any]]) -> list[str]:
    """The WebSocket half's ratio lines: `stream` (zst) against each bare loop (the ceilings of
    the two transports), and the generator against `stream` (target: :data:`GENERATOR_TARGET`)."""
    lines: list[str] = []
    engine = results.get("zst", {}).get("trades_per_s")
    if not engine:
        return lines
    before = results.get("zst-before", {}).get("trades_per_s")
    if before:
        lines.append(target_line("stream (zst) vs before", engine / before, STREAM_TARGET))
    for name, label in (("bare", "websockets"), ("bare-aiohttp", "aiohttp")):
        ceiling = results.get(name, {}).get("trades_per_s")
        if ceiling:
            share = engine / ceiling
            line = f"stream (zst) vs bare {label} loop: {share:.0%}"
            if name == "bare-aiohttp":
                verdict = "met" if share >= CEILING_TARGET else "NOT met"
                line += f" (target >= {CEILING_TARGET:.0%}: {verdict})"
            lines.append(line)
    websockets = results.get("zst-websockets", {}).get("trades_per_s")
    if websockets:
        lines.append(f"stream (zst), aiohttp vs websockets transport: {engine / websockets:.2f}x")
    generator = results.get("generator", {}).get("trades_per_s")
    if generator:
        lines.append(target_line("generator vs engine", generator / engine, GENERATOR_TARGET, 1))
    return lines


def target_line(
    label: str, ratio: float, target: float, digits: int = 2, *, at_most: bool = False
) -> str:
    """``label: 2.37x (target >= 2.5x: NOT met)``; ``at_most``: the target is a ceiling
    (``label: 1.62x (target <= 1.5x: NOT met)``)."""
    met = ratio <= target if at_most else ratio >= target
    verdict = "met" if met else "NOT met"
    bound = "<=" if at_most else ">="
    return f"{label}: {ratio:.{digits}f}x (target {bound} {target:g}x: {verdict})"


def book_report(results: dict[str, dict[str, Any]]) -> list[str]:
    """The book path's table (the ``book`` row and its generator; see :mod:`benchmarks.book_path`
    for what is counted) and its ratio lines: the CPU per level change against the ``zst`` trade
    row's CPU per trade of the same run (target: at most :data:`BOOK_CPU_TARGET` times), the
    generator's rate against the book row's (target: :data:`GENERATOR_TARGET`) and the
    generator's share of a core during the book run."""
    rows = [name for name in ("book", "book-generator") if name in results]
    if not rows:
        return []
    lines = [
        f"{'book path':<22} {'level chg/s':>12} {'cpu us/chg':>13} {'peak RSS MB':>12} "
        f"{'snapshot rows':>14} {'resyncs':>8}"
    ]
    for name in rows:
        r = results[name]
        snapshots = f"{r['snapshot_rows']:,}" if "snapshot_rows" in r else "-"
        resyncs = str(r["resyncs"]) if "resyncs" in r else "-"
        lines.append(
            f"  {name:<20} {r['level_changes_per_s']:>12,.0f} "
            f"{r['cpu_us_per_level_change']:>13.2f} {r['peak_rss_mb']:>12.1f} "
            f"{snapshots:>14} {resyncs:>8}"
        )
    book = results.get("book", {}).get("cpu_us_per_level_change")
    trade = results.get("zst", {}).get("cpu_us_per_trade")
    if book and trade:
        label = "book CPU per level change vs trade CPU per trade"
        lines.append(target_line(label, book / trade, BOOK_CPU_TARGET, at_most=True))
    engine = results.get("book", {}).get("level_changes_per_s")
    generator = results.get("book-generator", {}).get("level_changes_per_s")
    if engine and generator:
        ratio = generator / engine
        lines.append(target_line("book generator vs engine", ratio, GENERATOR_TARGET, 1))
    share = results.get("book", {}).get("generator_cpu_share")
    if share is not None:
        lines.append(
            f"book generator during the book run: {share:.0%} of one core "
            "(near 100%: it, not the engine, set the rate)"
        )
    return lines


def report(results: dict[str, dict[str, Any]]) -> str:
    """The table: per half, each row's figures and its ratios to that half's ceiling and naive
    baseline; a row that could not run says why."""
    lines = []
    for title, ceiling_name, naive_name, names in HALVES:
        rows = [name for name in names if name in results]
        if not rows:
            continue
        ceiling = results.get(ceiling_name, {}).get("trades_per_s")
        naive = results.get(naive_name, {}).get("trades_per_s")
        lines.append(
            f"{title:<22} {'trades/s':>12} {'cpu us/trade':>13} {'peak RSS MB':>12} "
            f"{'vs ceiling':>11} {'vs naive':>9}"
        )
        for name in rows:
            r = results[name]
            if "trades_per_s" not in r:
                lines.append(f"  {name:<20} not available: {r.get('note', '')}")
                continue
            ratio_ceiling = f"{r['trades_per_s'] / ceiling:.0%}" if ceiling else "-"
            ratio_naive = f"{r['trades_per_s'] / naive:.2f}x" if naive else "-"
            lines.append(
                f"  {name:<20} {r['trades_per_s']:>12,.0f} {r['cpu_us_per_trade']:>13.2f} "
                f"{r['peak_rss_mb']:>12.1f} {ratio_ceiling:>11} {ratio_naive:>9}"
            )
    if "peak_rss_mb" in results.get("zst", {}) and "peak_rss_mb" in results.get("zst-long", {}):
        short, long = results["zst"]["peak_rss_mb"], results["zst-long"]["peak_rss_mb"]
        verdict = "met" if max(short, long) < RSS_BOUND_MB else "NOT met"
        lines.append(
            f"peak RSS, long run vs short run: {long / short:.2f}x "
            f"({short:.0f} MB, {long:.0f} MB; bound {RSS_BOUND_MB:.0f} MB: {verdict})"
        )
    lines += ws_ratios(results)
    replay = results.get("replay", {})
    before = results.get("replay-before", {}).get("trades_per_s")
    if "trades_per_s" in replay and before:
        lines.append(
            target_line("replay vs before", replay["trades_per_s"] / before, REPLAY_TARGET)
        )
    naive = results.get("replay-naive", {}).get("trades_per_s")
    if "trades_per_s" in replay and naive:
        lines.append(target_line("replay vs naive", replay["trades_per_s"] / naive, 4.0))
    lines += formats_report(results)
    lines += book_report(results)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--long-seconds", type=float, default=90.0)
    parser.add_argument("--window-seconds", type=int, default=10)
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--skip-ws", action="store_true", help="skip the WebSocket half")
    parser.add_argument("--skip-replay", action="store_true", help="skip the replay half")
    parser.add_argument("--skip-book", action="store_true", help="skip the book row")
    parser.add_argument(
        "--book-only",
        action="store_true",
        help="run only the zst trade row and the book row (the book ratio's two rows)",
    )
    parser.add_argument(
        "--generator",
        choices=("fake", "blaster"),
        default="fake",
        help="the WebSocket half's load generator: feedvault fake-exchange --rate max, or "
        "benchmarks.blaster (pre-framed batches)",
    )
    parser.add_argument(
        "--parse-ceilings",
        action="store_true",
        help="also run both bare loops with orjson.loads of each frame",
    )
    parser.add_argument(
        "--replay-frames", type=int, default=2_000_000, help="frames in the replay recording"
    )
    parser.add_argument(
        "--baseline",
        default=BASELINE_REV,
        metavar="REV",
        help="the commit whose code runs the `zst-before` and `replay-before` rows",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline rows")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each compared row (median kept)"
    )
    args = parser.parse_args()
    out_dir = REPO / "bench-output"
    out_dir.mkdir(exist_ok=True)
    bench = Bench(args.seconds, args.long_seconds, args.window_seconds)
    if not args.no_baseline:
        bench.baseline(args.baseline)
    try:
        if args.book_only:
            bench.start_fake(args.generator)
            bench.engines(["zst"], max(args.repeat, 1))
        elif not args.skip_ws:
            bench.start_fake(args.generator)
            print(
                f"bench: {args.generator} blasting at {bench.url}; {args.seconds:.0f} s per path",
                flush=True,
            )
            bench.bare()
            bench.bare("aiohttp")
            if args.parse_ceilings:
                bench.bare(parse=True)
                bench.bare("aiohttp", parse=True)
            compared = ["zst", "zst-websockets"]
            if not args.no_baseline:
                compared.append("zst-before")
            bench.engines(compared, max(args.repeat, 1))
            bench.engines(["gz", "gz-websockets", "parquet"], 1)
            bench.results["encoders"] = encoder_figures()
            bench.naive()
            if not args.skip_long:
                bench.engine("zst-long", "ndjson.zst", args.long_seconds)
        if not args.skip_replay and not args.book_only:
            replay_path.run_all(bench, run_child, out_dir, args.replay_frames, args.repeat)
        if not args.skip_book or args.book_only:
            book_path.run(bench, args.seconds, args.repeat, process_cpu_seconds, peak_rss_of)
    finally:
        bench.close()
    (out_dir / "bench.json").write_text(json.dumps(bench.results, indent=2))
    print(json.dumps(bench.results, indent=2))
    print(report(bench.results))


if __name__ == "__main__":
    main()
