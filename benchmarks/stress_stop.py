"""The stop under load, for `make bench` (issue 12): the stop-moment and backpressure tests,
again and again, while CPU burners keep every core busy.

A graceful stop must read every socket to the peer's close frame and store every trade the
fake exchange sent, however loaded the machine: the reads, the drain of the queue and the
uploads then all run late, which is what broke the backpressure test on a loaded 2-core machine
(the stop's close timeout expired while the reader waited on a full queue). This script starts
``--burners`` processes that spin on a core each (7 by default: the load the failure was
reproduced with on 2 cores), then runs pytest on the tests below ``--repetitions`` times (20 by
default), one repetition after the other; every one of those tests checks that each trade of the
fake exchange's ledger is stored exactly once (zero missing), and the stop tests that the stop
finished within its grace. The burners are stopped (by their process ids) at the end, whatever
happens.

Tests: the session's stop and keepalive against the fake exchange, on both transports (from
``tests/test_session_conformance.py``),
``tests/test_backpressure.py`` (its 45 s keepalive run only with ``--with-held``) and the stop
moments of ``tests/test_stop_moments.py`` (seeds 0 and 1 of each kind, 10 runs; all 20 with
``--all-moments``). One repetition takes two to four minutes on a loaded 2-core machine.

Each repetition's outcome (exit status, duration, failed tests) is printed as it ends and all
of them are written to ``DIR/stress-stop.json`` (``--report``, default ``bench-output/``); exit
0 when every repetition passed, 1 otherwise.

Usage: ``python -m benchmarks.stress_stop [--repetitions 20] [--burners 7] [--all-moments]
[--with-held] [--report DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_SESSION = "tests/test_session_conformance.py::"
TESTS = (
    *(
        _SESSION + name
        for name in (
            "test_a_connection_silent_for_stale_seconds_is_replaced",
            "test_a_connection_is_replaced_before_its_maximum_age",
            "test_a_stop_while_backpressured_reads_the_socket_to_the_end",
            "test_a_close_not_answered_by_the_drain_deadline_is_an_unclean_close",
            "test_a_slow_sink_backpressures_the_exchange_and_keeps_the_connection",
            "test_a_stop_does_not_wait_for_a_connection_still_opening",
        )
    ),
    "tests/test_backpressure.py",
    "tests/test_stop_moments.py::test_sigterm_at_a_moment_stores_every_trade_once",
)
BURN = "while True:\n    pass\n"
"""A burner's program: one core busy until it is killed."""


REPETITION_TIMEOUT_SECONDS = 1800
"""One repetition's bound: a hung pytest (and its servers) is killed, the repetition failed."""


def start_burners(count: int, into: list[subprocess.Popen[bytes]]) -> None:
    """Start ``count`` processes spinning on a core each into ``into`` (appended one by one, so
    the caller can stop those started if a later one fails). Lowest priority is not asked for:
    the load must compete with the tests, as colleagues' work does."""
    for _ in range(count):
        into.append(subprocess.Popen([sys.executable, "-c", BURN]))


def stop_burners(burners: list[subprocess.Popen[bytes]]) -> None:
    """Kill the burners this script started, each by its own process id."""
    for burner in burners:
        if burner.poll() is None:
            burner.kill()
    for burner in burners:
        burner.wait(timeout=10)


def failed_tests(output: str) -> list[str]:
    """The ``FAILED``/``ERROR`` lines of pytest's short summary."""
    return [line.strip() for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]


def run_once(env: dict[str, str]) -> dict[str, Any]:
    """One repetition: pytest on :data:`TESTS` (no worker processes, no cache)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # its servers too can be killed as one group
    )
    try:
        stdout, _ = proc.communicate(timeout=REPETITION_TIMEOUT_SECONDS)
        returncode = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
        stdout += f"\nERROR repetition killed after {REPETITION_TIMEOUT_SECONDS} s\n"
        returncode = -signal.SIGKILL
    tail = stdout.strip().splitlines()[-1:] or [""]
    return {
        "returncode": returncode,
        "seconds": round(time.monotonic() - started, 1),
        "failed": failed_tests(stdout),
        "summary": tail[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stress_stop")
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--burners", type=int, default=7, help="CPU-burning processes")
    parser.add_argument("--all-moments", action="store_true", help="all 20 stop moments")
    parser.add_argument(
        "--with-held", action="store_true", help="also the 45 s S3 hold (FEEDVAULT_BENCH=1)"
    )
    parser.add_argument("--report", type=Path, default=Path("bench-output"))
    args = parser.parse_args(argv)
    if args.repetitions < 1 or args.burners < 0:
        parser.error("--repetitions must be at least 1 and --burners not negative")
    env = dict(os.environ)
    if args.all_moments:
        env["FEEDVAULT_STOP_MOMENTS"] = "all"
    if args.with_held:
        env["FEEDVAULT_BENCH"] = "1"
    results: list[dict[str, Any]] = []
    burners: list[subprocess.Popen[bytes]] = []
    # SIGTERM (a cancelled CI job) unwinds like Ctrl-C, so the burners are always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        start_burners(args.burners, burners)
        for number in range(1, args.repetitions + 1):
            result = run_once(env)
            results.append(result)
            verdict = "ok" if result["returncode"] == 0 else "FAILED"
            print(
                f"repetition {number}/{args.repetitions}: {verdict} in {result['seconds']} s"
                f" ({result['summary']})",
                flush=True,
            )
            for line in result["failed"]:
                print(f"  {line}", flush=True)
    finally:
        stop_burners(burners)
    passed = sum(1 for result in results if result["returncode"] == 0)
    report = {
        "repetitions": args.repetitions,
        "burners": args.burners,
        "cpus": os.cpu_count(),
        "tests": list(TESTS),
        "all_moments": args.all_moments,
        "passed": passed,
        "results": results,
    }
    args.report.mkdir(parents=True, exist_ok=True)
    path = args.report / "stress-stop.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"stop under load: {passed} of {args.repetitions} repetitions passed ({path})")
    return 0 if passed == args.repetitions else 1


if __name__ == "__main__":
    sys.exit(main())
