"""A thread that runs the compressor calls of a run's encoders.

See docs/architecture.md#the-hot-path.

zlib and zstandard release the GIL while they compress. With a :class:`CompressWorker`, an
:class:`~sinks.encoders.Encoder` hands each batch's NDJSON to this thread instead of compressing
it on the event loop's thread, so on a machine with a second core the encoding of the next batch
(orjson, which holds the GIL) overlaps the compression of the last one: compression is about a
tenth of `stream`'s CPU per trade, and it leaves the loop's thread. The total CPU is the same; on
one core nothing is gained (and a thread hand-off per batch is paid).

Written by hand rather than with ``loop.run_in_executor``: the encoders are synchronous (called
from the windower, between two awaits) and the results must be taken in submission order, per
encoder, without awaiting; a one-thread :class:`~concurrent.futures.ThreadPoolExecutor` gives the
order (one thread, first in first out) and this class the bound.

Contract:

- calls run one at a time, in the order they were submitted, so one encoder's compressor (not
  thread-safe) is only ever used by one thread at a time: by this thread while any of its calls
  is pending, by the caller once :meth:`Encoder.finish` has taken them all;
- bounded: at most :data:`MAX_PENDING_BYTES` of input wait (or run) at once; a submit beyond it
  blocks the caller until the oldest calls are done (the compressor is then the bottleneck, and
  the caller waits for it as it would have compressed inline);
- :meth:`close` waits for what is pending and stops the thread; submitting afterwards raises
  ``RuntimeError`` (encoders check :attr:`closed` and compress inline). Only the thread that
  owns the encoders (the event loop's) submits; :meth:`close` is idempotent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final

MAX_PENDING_BYTES: Final = 1 << 20
"""Input bytes at most waiting for (or in) the thread: a few batches, so the thread always has
the next one, and an encoder's ``compressed_size`` lags its input by little more than this."""


class CompressWorker:
    """The compressing thread of one sink; see the module docstring for the contract."""

    def __init__(self, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.max_pending_bytes = max_pending_bytes
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="feedvault-compress"
        )
        self._inflight: deque[tuple[Future[bytes], int]] = deque()
        self.pending_bytes = 0
        """Input bytes submitted and not yet known to be done (as of the last submit)."""

    @property
    def closed(self) -> bool:
        return self._executor is None

    def submit(
        self, compress: Callable[[bytes | bytearray], bytes], data: bytes | bytearray
    ) -> Future[bytes]:
        """Run ``compress(data)`` on the thread after every call submitted before; the caller
        must not change ``data`` afterwards. Blocks while the bound is exceeded."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("the compress worker is closed")
        inflight = self._inflight
        while inflight and (inflight[0][0].done() or self.pending_bytes > self.max_pending_bytes):
            future, size = inflight.popleft()
            future.exception()  # waits for it when not done; its error goes to its encoder
            self.pending_bytes -= size
        future = executor.submit(compress, data)
        inflight.append((future, len(data)))
        self.pending_bytes += len(data)
        return future

    def close(self) -> None:
        """Wait for the pending calls, then stop the thread."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._inflight.clear()
        self.pending_bytes = 0
