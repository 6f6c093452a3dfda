"""Child processes with bounded waits, live stdout lines and their own CPU accounting.

A :class:`Child` starts a command in its own session (so a Ctrl-C at the terminal reaches only
the parent, which then stops its children in order), reads its stdout in a daemon thread into a
queue (:meth:`Child.read_line` with a timeout), sends its stderr to a file, and is reaped with
``os.wait4`` so the caller gets the child's own resource usage (CPU time). Every wait has a
time limit; :meth:`Child.stop` escalates from SIGTERM to SIGKILL and never leaves a process
behind. Used by ``feedvault loadtest``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

import orjson

KILL_WAIT_SECONDS: Final = 5.0
_EOF: Final = None


class ChildError(RuntimeError):
    """A child did not start, said something unexpected, or did not stop in time."""


class Child:
    """One running child process. See the module docstring.

    ``keep_stdin`` gives the child a pipe as stdin that stays open while this object lives:
    a child that exits on stdin EOF then also ends when the parent dies.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        *,
        stderr_path: Path,
        keep_stdin: bool = False,
    ) -> None:
        self.name = name
        self.stderr_path = stderr_path
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._eof = False
        self.exit_status: int | None = None
        self.rusage: Any = None
        with open(stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                list(command),
                stdin=subprocess.PIPE if keep_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=dict(env),
                start_new_session=True,
            )
        assert self.proc.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.proc.stdout,), name=f"{name}-stdout", daemon=True
        )
        self._reader.start()

    def _read(self, stdout: IO[bytes]) -> None:
        try:
            for raw in stdout:
                self._lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        finally:
            self._lines.put(_EOF)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.exit_status is None

    def read_line(self, timeout: float) -> str | None:
        """The next stdout line; None once stdout is closed; TimeoutError after ``timeout``."""
        if self._eof:
            return None
        try:
            line = self._lines.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no output within {timeout:.1f}s") from None
        if line is None:
            self._eof = True
        return line

    def wait_for_event(self, event: str, timeout: float) -> dict[str, Any]:
        """Read JSON stdout lines until one has ``"event": event``; return it.

        ChildError if stdout closes first or ``timeout`` passes (naming the stderr file)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.read_line(deadline - time.monotonic())
            except TimeoutError:
                raise ChildError(
                    f"{self.name} sent no {event!r} line within {timeout:g}s"
                ) from None
            if line is None:
                raise ChildError(f"{self.name} exited before {event!r}: {self.stderr_tail()}")
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(line)
                if isinstance(doc, dict) and doc.get("event") == event:
                    return doc

    def stderr_tail(self, lines: int = 3) -> str:
        """The last ``lines`` lines of the child's stderr (for error messages)."""
        try:
            text = self.stderr_path.read_text("utf-8", "replace").strip()
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:]) or f"(see {self.stderr_path})"

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` if the child has not been reaped."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    def wait(self, timeout: float) -> bool:
        """Reap the child within ``timeout`` seconds (``os.wait4``: sets :attr:`exit_status`
        and :attr:`rusage`). False if it is still running then."""
        if not self.running:
            return True
        if not _wait_readable(self.proc.pid, timeout):
            return False
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.exit_status = os.waitstatus_to_exitcode(status)
        self.rusage = usage
        self.proc.returncode = self.exit_status
        return True

    def stop(self, timeout: float, signum: int = signal.SIGTERM) -> int | None:
        """Send ``signum``, wait up to ``timeout``, then SIGKILL and wait again; return the
        exit status (None only if even SIGKILL did not end it in time). Idempotent."""
        try:
            self.send_signal(signum)
            if not self.wait(timeout):
                self.send_signal(signal.SIGKILL)
                self.wait(KILL_WAIT_SECONDS)
        finally:
            if self.running:  # interrupted while waiting: never leave it behind
                self.send_signal(signal.SIGKILL)
            self._close_pipes()
        return self.exit_status

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin,):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _wait_readable(pid: int, timeout: float) -> bool:
    """True once process ``pid`` (our child) has exited, within ``timeout`` seconds."""
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
                return bool(ready)
            finally:
                os.close(fd)
    # No pidfd (not Linux): poll without reaping.
    deadline = time.monotonic() + timeout
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
