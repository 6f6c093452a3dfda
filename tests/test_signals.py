"""Stop signals that arrive before a run's event loop exists are held, then delivered."""

from __future__ import annotations

import asyncio
import os
import signal

from engine import signals


def test_a_signal_during_start_up_is_delivered_once_the_loop_handles_them() -> None:
    delivered: list[str] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        third = asyncio.Event()

        def on_signal(name: str) -> None:
            delivered.append(name)
            if len(delivered) == 3:
                third.set()

        signals.install_on_loop(loop, on_signal)
        try:
            assert delivered == ["SIGTERM", "SIGINT"]  # recorded before, in order
            os.kill(os.getpid(), signal.SIGTERM)  # handled on the loop from now on
            async with asyncio.timeout(5):
                await third.wait()
        finally:
            signals.remove_from_loop(loop)

    signals.hold_early()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        asyncio.run(run())
    finally:
        signals.release_early()
    assert delivered == ["SIGTERM", "SIGINT", "SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_release_puts_the_defaults_back() -> None:
    signals.hold_early()
    signals.release_early()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
