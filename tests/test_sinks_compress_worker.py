"""The compressing thread (sinks/compress_worker.py): the same object bodies as inline
compression, in order, bounded, and encoders that outlive it."""

from __future__ import annotations

import random

import pytest

from engine.records import Trade
from sinks.compress_worker import CompressWorker
from sinks.encoders import FORMATS, Encoder, decompress, make_encoder


def _batches(seed: int, count: int) -> list[list[Trade]]:
    rng = random.Random(seed)
    out: list[list[Trade]] = []
    tid = 0
    for _ in range(count):
        batch = []
        for _ in range(rng.randrange(1, 400)):
            tid += 1
            batch.append(
                Trade(
                    "binance",
                    "BTC-USDT",
                    "BTCUSDT",
                    str(tid),
                    f"{rng.randrange(1, 10**7) / 100:.2f}",
                    f"0.{rng.randrange(1, 10**8):08d}",
                    rng.choice(("buy", "sell")),
                    1_700_000_000_000_000 + tid,
                    1_700_000_000_000_000_123 + tid,
                )
            )
        out.append(batch)
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_bodies_are_byte_for_byte_those_of_inline_compression(fmt: str) -> None:
    """Three encoders interleaved on one worker with a small bound (so submits wait): each
    body equals the inline encoder's, and the sizes add up once finished."""
    worker = CompressWorker(max_pending_bytes=20_000)
    try:
        streams = [_batches(seed, 40) for seed in range(3)]
        threaded = [make_encoder(fmt, worker=worker) for _ in streams]
        inline = [make_encoder(fmt) for _ in streams]
        for step in range(40):
            for index, batches in enumerate(streams):
                threaded[index].write(batches[step])
                inline[index].write(batches[step])
                assert worker.pending_bytes <= worker.max_pending_bytes + threaded[index].raw_size
        for t, i, batches in zip(threaded, inline, streams, strict=True):
            assert t.raw_size == i.raw_size
            body = t.finish()
            assert body == i.finish()
            assert t.compressed_size == len(body)
            assert decompress(body, fmt).count(b"\n") == sum(len(b) for b in batches)
    finally:
        worker.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_encoder_outlives_its_closed_worker(fmt: str) -> None:
    """Closed midway (the run's stop), the worker finishes what it was given; the encoder
    compresses the rest inline, in order: the body is still the inline one."""
    batches = _batches(7, 30)
    worker = CompressWorker()
    threaded, inline = make_encoder(fmt, worker=worker), make_encoder(fmt)
    for index, batch in enumerate(batches):
        if index == 15:
            worker.close()
            worker.close()  # idempotent
        threaded.write(batch)
        inline.write(batch)
    assert worker.closed
    assert threaded.finish() == inline.finish()
    with pytest.raises(RuntimeError):
        worker.submit(bytes, b"")


def test_an_error_in_the_thread_reaches_the_encoder() -> None:
    """A compressor that fails on the thread fails the encoder's next collection, not
    silently: the window cannot be completed from a body with a hole in it."""

    class Failing:
        def compress(self, data: bytes | bytearray, /) -> bytes:
            raise ValueError("disk on fire")

        def flush(self) -> bytes:
            return b""

    worker = CompressWorker()
    try:
        encoder = Encoder("ndjson.zst", Failing(), worker)
        with pytest.raises(ValueError, match="disk on fire"):
            encoder.write(_batches(1, 1)[0])  # raised here when the thread was quick,
            encoder.finish()  # else here
    finally:
        worker.close()
