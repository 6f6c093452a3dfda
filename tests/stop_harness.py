"""Helpers for the stop-sequence tests (``tests/test_stop_*.py``, ``tests/test_backpressure*.py``):
a fault proxy that reports when a fault is applied, and one ``feedvault stream`` run against the
fake exchange through that proxy, stopped by signals at chosen moments.

Everything is real and on loopback: the engine and the fake exchange are subprocesses, S3 is
moto's server behind :class:`tests.faultproxy.FaultProxy`. Every wait is bounded.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faultproxy import Fault, FaultProxy, RequestInfo
from tests.harness import (
    fake_exchange,
    fake_stream_env,
    parse_logs,
    reap,
    start_stream,
    wait_for_log,
)

PREFIX = "streaming/stop/"
SYMBOLS = "BTCUSDT,ETHUSDT,BNBUSDT"
MiB = 1024 * 1024
MULTIPART: dict[str, str] = {
    "rate": "max",
    "symbols": "BTCUSDT",
    "WINDOW_SECONDS": "3600",
    "WINDOW_MAX_BYTES": str(5 * MiB + MiB // 2),
    "S3_MULTIPART_THRESHOLD": str(5 * MiB),
}
"""Options of :func:`run_with_signals` for one symbol as fast as the engine reads, in windows
that close at 5.5 MiB and go up as multipart uploads (a 5 MiB part and a smaller one)."""
GRACE = 20.0
"""STOP_GRACE_SECONDS of the runs (the product's default)."""
EXIT_TIMEOUT = GRACE + 40
"""Bound on waiting for a run to exit once its trigger has returned."""

_WINDOW_START = re.compile(r"/(\d{8}T\d{6}Z)-")


@dataclass(frozen=True, slots=True)
class Applied:
    """A fault the proxy applied: when (this process's monotonic clock), to what, which."""

    at: float
    request: RequestInfo
    fault: Fault


class WatchedProxy(FaultProxy):
    """A :class:`FaultProxy` that records every fault it applies, so a test can wait for the
    moment a chosen request is being held (instead of guessing when it happens)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._applied: list[Applied] = []
        self._changed = threading.Condition()

    def _fault_for(self, info: RequestInfo) -> Fault | None:
        fault = super()._fault_for(info)
        if fault is not None:
            with self._changed:
                self._applied.append(Applied(time.monotonic(), info, fault))
                self._changed.notify_all()
        return fault

    def __enter__(self) -> WatchedProxy:
        self.start()
        return self

    def applied(self) -> list[Applied]:
        with self._changed:
            return list(self._applied)

    def reset(self) -> None:
        """Clear faults, outage, the request log and the record of applied faults."""
        self.clear()
        self.log.clear()
        with self._changed:
            self._applied.clear()

    def wait_applied(self, count: int = 1, timeout: float = 30.0) -> list[Applied]:
        """Wait (at most ``timeout`` s) until ``count`` faults have been applied."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._applied) >= count, timeout):
                raise AssertionError(
                    f"{len(self._applied)} of {count} scheduled faults applied within {timeout}s"
                )
            return list(self._applied)


@dataclass
class StopRun:
    """What one stopped run left: exit status, time from the (first) signal to the exit, its
    log lines, the fake exchange's ledger and summary."""

    returncode: int
    took: float
    logs: list[dict[str, Any]]
    stderr: str
    ledger: list[dict[str, Any]]
    summary: dict[str, Any] | None
    signalled_at: list[float] = field(default_factory=list)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [doc for doc in self.logs if doc.get("event") == name]

    def describe(self) -> str:
        tail = [json.dumps(doc)[:300] for doc in self.logs[-8:]]
        return f"exit {self.returncode}; stderr: {self.stderr[-1500:]}\nlog tail:\n" + "\n".join(
            tail
        )


def window_start_of(key: str) -> str | None:
    """The ``%Y%m%dT%H%M%SZ`` window start in an object key of the default template."""
    found = _WINDOW_START.search(key)
    return found.group(1) if found else None


def stream_env(
    proxy: FaultProxy, bucket: str, url: str, tmp_path: Path, runtime: str, **extra: str
) -> dict[str, str]:
    """The run's environment: S3 through ``proxy``; ``extra`` overrides any variable."""
    settings = {"STOP_GRACE_SECONDS": str(GRACE), "SPILL_DIR": str(tmp_path / "spill"), **extra}
    return fake_stream_env(proxy.env(), url, bucket, PREFIX, runtime, SYMBOLS, **settings)


Trigger = Callable[[subprocess.Popen[str], list[dict[str, Any]]], list[float]]
"""Given the started engine (its ``run_start`` line read) and the list of its log lines read so
far (to extend with any it reads), send the signals and return the ``time.monotonic()`` of each
one."""


def two_sigterms_after_a_fault(
    proxy: WatchedProxy, rng: random.Random, *, wait: float, second_after: tuple[float, float]
) -> Trigger:
    """A trigger: once ``proxy`` has applied its first scheduled fault (within ``wait`` s), a
    SIGTERM a seeded 0.1-1.0 s later, then a second one a seeded ``second_after`` s after it."""

    def trigger(proc: subprocess.Popen[str], logs: list[dict[str, Any]]) -> list[float]:
        arrived = proxy.wait_applied(1, timeout=wait)[0].at
        sleep_until(arrived + rng.uniform(0.1, 1.0))
        first = send(proc)
        sleep_until(first + rng.uniform(*second_after))
        return [first, send(proc)]

    return trigger


def run_with_signals(
    proxy: FaultProxy,
    bucket: str,
    tmp_path: Path,
    trigger: Trigger,
    *,
    rate: str = "3000",
    symbols: str = "BTCUSDT,ETHUSDT,BNBUSDT",
    runtime: str = "60",
    faults: str | None = None,
    wait_start: bool = True,
    env: dict[str, str] | None = None,
    **extra: str,
) -> StopRun:
    """Run the engine against a fresh fake exchange through ``proxy``; ``trigger`` signals it
    (once its ``run_start`` line is read, or right after the spawn without ``wait_start``);
    wait (bounded) for the exit and for the requests it left on their way to S3; return what
    it left. ``env`` and ``extra``: engine settings."""
    streams = ",".join(f"binance:{symbol}" for symbol in symbols.split(","))
    with fake_exchange(tmp_path, rate=rate, symbols=symbols, faults=faults) as fx:
        settings = {**(env or {}), **extra}
        proc = start_stream(
            stream_env(proxy, bucket, fx.url, tmp_path, runtime, STREAMS=streams, **settings)
        )
        try:
            early = wait_for_log(proc, "run_start", timeout=30) if wait_start else []
            signalled = trigger(proc, early)
            out, err = proc.communicate(timeout=EXIT_TIMEOUT)
            ended = time.monotonic()
        finally:
            reap(proc)
        ledger = fx.stop()
    proxy.wait_settled()  # what the engine sent before it exited has reached S3
    return StopRun(
        returncode=proc.returncode,
        took=ended - signalled[0] if signalled else 0.0,
        logs=early + parse_logs(out),
        stderr=err,
        ledger=ledger,
        summary=fx.summary,
        signalled_at=signalled,
    )


def send(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> float:
    proc.send_signal(sig)
    return time.monotonic()


def sleep_until(at: float) -> None:
    """The scenario's (seeded) delay before a signal, never a synchronisation."""
    time.sleep(max(0.0, at - time.monotonic()))
