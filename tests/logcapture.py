"""feedvault's JSON log lines captured in-process, with waiting on them instead of sleeping."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from engine.logs import LOGGER_NAME, configure_logging


class Lines(io.TextIOBase):
    """Where the log handler writes: keeps each line and wakes whoever waits for one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._pending = ""
        self._changed = asyncio.Event()

    def write(self, text: str) -> int:
        self._pending += text
        *done, self._pending = self._pending.split("\n")
        self.lines += [line for line in done if line]
        self._changed.set()
        return len(text)

    def raw(self, event: str) -> list[str]:
        """The lines (as written) whose ``event`` is ``event``."""
        return [line for line in self.lines if json.loads(line).get("event") == event]

    def docs(self, event: str) -> list[dict[str, Any]]:
        """The lines whose ``event`` is ``event``, parsed."""
        return [json.loads(line) for line in self.raw(event)]

    async def wait_for(self, ready: Callable[[], bool]) -> None:
        """Return once ``ready()`` holds (checked after each line); TimeoutError after 30 s."""
        async with asyncio.timeout(30):
            while not ready():
                self._changed.clear()
                await self._changed.wait()


@contextmanager
def captured_logs(level: str) -> Iterator[Lines]:
    """Send feedvault's JSON logs at ``level`` (and other libraries' warnings) into a
    :class:`Lines`; restore the handlers of both loggers after."""
    ours, root = logging.getLogger(LOGGER_NAME), logging.getLogger()
    saved = (list(ours.handlers), ours.level, ours.propagate)
    saved_root = (list(root.handlers), root.level)
    lines = Lines()
    configure_logging(level, "json", stream=lines)  # type: ignore[arg-type]
    try:
        yield lines
    finally:
        ours.handlers[:] = saved[0]
        ours.setLevel(saved[1])
        ours.propagate = saved[2]
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        logging.captureWarnings(False)
