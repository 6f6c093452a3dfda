"""Testing aids for code built on feedvault: a clock you move by hand, an object store in memory,
and the fake exchange running inside your test's event loop (docs: testing.md).

Everything here is the same code feedvault's own tests use; nothing is a mock of it.

- :class:`FakeClock` (from :mod:`engine.clock`): wall and monotonic time that move only when the
  test calls ``clock.advance(seconds)``. Hand it to the fake exchange (trade times, the pace of a
  timed market, time-based faults) and to a run (deadline, windows, stop grace), and a test
  drives both without sleeping.
- :class:`MemoryWriter` (from :mod:`sinks.memory`): an ``ObjectWriter`` that keeps objects in a
  dict (``writer.objects``: key -> body) instead of S3, and can fail puts on demand
  (``fail_next``) or hold them (``hold_puts``/``release_puts``). :func:`stored_trades` decodes
  the trades it holds.
- :func:`fake_exchange`: an ``async with`` that serves an exchange's WebSocket protocol on a
  free loopback port (``fake.url``) with a seeded synthetic market, and records every trade it
  sent in ``fake.ledger``. :func:`stream_env` gives the environment that points a stream run at
  it. ``fake.wait_ready(n)`` waits for ``n`` connections to have subscribed,
  ``fake.wait_tick()`` for the market to have seen the clock as it is now.

A run of ``feedvault stream`` in a test, from the socket to stored objects::

    import asyncio

    from feedvault.config import load_stream_config
    from feedvault.runner import StreamRun
    from feedvault.testing import FakeClock, MemoryWriter, fake_exchange, stored_trades, stream_env

    async def test_every_trade_sent_is_stored(tmp_path):
        clock, writer = FakeClock(), MemoryWriter()
        async with fake_exchange("binance", symbols=["BTCUSDT"], rate=1000, clock=clock) as fake:
            env = stream_env(fake, S3_BUCKET="unused", MAX_RUNTIME_SECONDS="60",
                             SPILL_DIR=str(tmp_path))
            run = StreamRun(load_stream_config(env), clock=clock, writer=writer,
                            install_signal_handlers=False)
            task = asyncio.create_task(run.run())
            await fake.wait_ready(1)
            clock.advance(0.5)       # half a second of trades ...
            await fake.wait_tick()   # ... generated and sent
            clock.advance(60)        # past the deadline: the run stops
            assert await task == 0
        assert {t.trade_id for t in stored_trades(writer)} == {
            t.trade_id for t in fake.ledger.trades()
        }

The symbols are the exchange's own spelling (``BTCUSDT`` on Binance and Bybit, ``BTC-USD`` on
Coinbase, ``BTC/USD`` on Kraken, ``BTCUSD`` on Bitstamp, ``BTC-USDT`` on OKX). ``rate=None``
sends trades as fast as the client reads them instead of at a rate (then the clock does not
pace the market). ``faults`` takes the ``--faults`` text of ``feedvault fake-exchange`` (e.g.
``"disconnect-every=2,malformed=0.01"``) or a :class:`Faults`; see docs/testing.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from connectors.fake.faults import Faults
from connectors.fake.ledger import Ledger
from connectors.fake.server import FakeExchange
from engine.clock import SYSTEM_CLOCK, Clock, FakeClock
from engine.records import Trade
from sinks.encoders import decode_object
from sinks.memory import MemoryWriter

__all__ = [
    "FakeClock",
    "FakeExchange",
    "Faults",
    "Ledger",
    "MemoryWriter",
    "fake_exchange",
    "stored_trades",
    "stream_env",
]


@asynccontextmanager
async def fake_exchange(
    protocol: str = "binance",
    *,
    symbols: Sequence[str] | str = ("BTCUSDT",),
    rate: float | None = 1000,
    faults: Faults | str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    seed: int = 1,
    first_id: int = 1,
    max_trades: int | None = None,
    book_rate: float = 10.0,
) -> AsyncIterator[FakeExchange]:
    """Serve ``protocol``'s fake exchange on a free loopback port for the ``async with`` block.

    ``symbols``: the raw symbols it trades (a sequence, or one comma-separated string).
    ``rate``: trades per second across all symbols, or None for as fast as the client reads.
    ``faults``: a :class:`Faults` or its text form (``"reject-unknown,drop-pongs"``).
    ``clock``: what drives trade times and the market's pace (a :class:`FakeClock` in tests).
    ``seed``/``first_id``: the market's randomness and first trade id (the same seed, the
    same trades). ``max_trades``: stop producing after this many. ``book_rate``: order-book
    messages per second per symbol (served to whoever subscribes to a book channel; see
    docs/testing.md#order-books-on-the-fake-exchange).

    Yields the running :class:`FakeExchange` (``url``, ``ledger``, ``wait_ready``,
    ``wait_tick``); leaving the block closes every connection. ValueError for an unknown
    protocol or bad fault text.
    """
    names = symbols.split(",") if isinstance(symbols, str) else symbols
    async with FakeExchange(
        protocol,
        rate=rate,
        symbols=[s.strip() for s in names if s.strip()],
        faults=Faults.parse(faults) if isinstance(faults, str) else faults,
        clock=clock,
        seed=seed,
        first_id=first_id,
        max_trades=max_trades,
        book_rate=book_rate,
    ) as fake:
        yield fake


def stream_env(fake: FakeExchange, **extra: str) -> dict[str, str]:
    """The environment of a stream run reading every symbol ``fake`` trades: ``STREAMS`` and
    the exchange's ``<EXCHANGE>_WS_URL`` override (and ``<EXCHANGE>_REST_URL`` where its book
    snapshots come over REST), with test-friendly defaults for the rest
    (``S3_PREFIX=test/``, ``RUN_ID=test-run``, ``STALE_SECONDS`` high enough that a paused
    fake clock never looks stale); ``extra`` adds to or overrides any of it (``S3_BUCKET``,
    ``MAX_RUNTIME_SECONDS``, ``SPILL_DIR`` ...). See docs/configuration.md."""
    env = {
        "STREAMS": ",".join(f"{fake.protocol}:{s}" for s in sorted(fake.symbols)),
        f"{fake.protocol.upper()}_WS_URL": fake.url,
        "S3_PREFIX": "test/",
        "RUN_ID": "test-run",
        "STALE_SECONDS": "100000",
    }
    if fake.serves_rest:
        env[f"{fake.protocol.upper()}_REST_URL"] = fake.http_url
    env.update(extra)
    return env


def stored_trades(writer: MemoryWriter) -> list[Trade]:
    """The trades in ``writer``'s trade objects (keys with ``/trades/``), object by object in
    key order, each object's in stored order."""
    trades: list[Trade] = []
    for key in sorted(writer.objects):
        if "/trades/" in key:
            body = writer.objects[key]
            trades += [Trade.from_dict(r) for r in decode_object(key, body)]
    return trades
