"""Stop signals (SIGTERM, SIGINT) from process start to the end of a run.

In a container, the engine is PID 1, and the kernel drops a signal sent to PID 1 while it has
no handler for it: a SIGTERM that ECS sends while the process is still importing and checking
its configuration would be lost, and the task SIGKILLed at its ``stopTimeout`` with no
manifest. So the CLI calls :func:`hold_early` first thing for the commands whose runs handle
stop signals (``stream``, ``replay``, ``batch``): from then on a signal is recorded, not lost.
:func:`install_on_loop` moves handling onto the run's event loop and delivers what was
recorded, in order; :func:`remove_from_loop` restores the default handlers when the run ends.
The window left is the interpreter's own start-up and the import of the CLI (tens of ms).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType
from typing import Final

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)

_pending: list[str] = []


def _record(signum: int, _frame: FrameType | None) -> None:
    _pending.append(signal.Signals(signum).name)


def hold_early() -> None:
    """Record SIGTERM and SIGINT until :func:`install_on_loop` (main thread only)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _record)


def release_early() -> None:
    """Put the default handlers back where :func:`hold_early`'s are still installed (a run
    that ended before reaching its loop, e.g. on a configuration error)."""
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is _record:
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, default)


def install_on_loop(loop: asyncio.AbstractEventLoop, on_signal: Callable[[str], None]) -> None:
    """Call ``on_signal(name)`` on ``loop`` for each stop signal from now on, after calling it
    for each signal recorded since :func:`hold_early` (in arrival order)."""
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig.name)
    while _pending:
        on_signal(_pending.pop(0))


def remove_from_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Undo :func:`install_on_loop` (the default handlers are back)."""
    for sig in STOP_SIGNALS:
        loop.remove_signal_handler(sig)
