"""What the fake exchange actually sent, so a test can prove what arrived (docs: testing.md).

A trade is recorded only after the socket accepted its frame (``send`` returned without raising);
a malformed or oversized replacement frame, a trade skipped by a stall or dropped for a slow reader
is never recorded.

Memory: trade ids are kept per (connection, symbol) as runs of consecutive ids, so
:meth:`Ledger.sent_ids` stays exact however long the run; whole trades are kept in memory up to
``memory_limit`` (for :meth:`Ledger.trades` and :meth:`Ledger.write`). The fast path of max mode
records a batch as one :class:`~connectors.fake.fast.Run` (:meth:`Ledger.add_run`): kept as the
run (rings, first ids, count, event time), each trade regenerated exactly when read. With
``path`` the ledger also streams every sent trade to that JSONL file as it goes (buffered,
flushed every ~1 MiB and on :meth:`Ledger.close`), so a long run's file is complete even when
memory is not.

JSONL line: the fields of :class:`~engine.records.Trade` except ``ts_recv``, plus ``conn`` (the
connection number, from 1 in accept order)::

    {"exchange":"binance","symbol":"BTC-USDT","raw_symbol":"BTCUSDT","trade_id":"1",
     "price":"27123.45000000","size":"0.01234000","side":"buy","ts_event":1700000000000000,"conn":1}
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import IO, Any, Final

import orjson

from connectors.fake.book_ledger import HISTORY_LIMIT, BookLedger
from connectors.fake.fast import Ring, Run, Template, interleave
from engine.records import Trade

_FLUSH_BYTES: Final = 1 << 20


def ledger_line(connection: int, trade: Trade) -> bytes:
    """One JSONL line (with its newline) for a sent trade."""
    return orjson.dumps(
        {
            "exchange": trade.exchange,
            "symbol": trade.symbol,
            "raw_symbol": trade.raw_symbol,
            "trade_id": trade.trade_id,
            "price": trade.price,
            "size": trade.size,
            "side": trade.side,
            "ts_event": trade.ts_event,
            "conn": connection,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


class Ledger:
    """The record of sent trades; not thread-safe (one event loop)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        memory_limit: int = 1_000_000,
        book_history: int = HISTORY_LIMIT,
    ) -> None:
        self._runs: dict[tuple[int, str], list[list[int]]] = {}
        self._kept: list[tuple[int, Trade | Run]] = []
        self._kept_trades = 0
        self._line_templates: dict[tuple[int, str], Template | None] = {}
        self._memory_limit = memory_limit
        self.total = 0
        """Trades recorded."""
        self.malformed_sent = 0
        """Malformed frames sent in place of trades (not trades, not in the ledger)."""
        self.oversized_sent = 0
        """Oversized frames sent in place of trades (the ``oversized`` fault; not in the
        ledger: the client drops the connection on reading one)."""
        self.hostile_sent: dict[str, int] = {}
        """Hostile frames sent in place of trades, per kind (the ``hostile`` fault; not in the
        ledger)."""
        self.undelivered = 0
        """Trades generated for a connection but not sent (stall, slow reader, closing)."""
        self.send_backlog_peak = 0
        """Most trades waiting at once in one connection's send backlog, the batch being
        written included (timed mode only; 0 with ``rate=None`` or a recording). Well above a
        tick's worth, the client read slower than trades came due (its socket pushed back); a
        late tick alone brings all the trades due since the last one."""
        self._counts: dict[str, int] = {}
        self._canonical: dict[str, str] = {}
        self._unnumbered: dict[int, int] = {}
        self._file: IO[bytes] | None = open(path, "wb") if path is not None else None  # noqa: SIM115
        self.books = BookLedger(memory_limit=memory_limit, history_limit=book_history)
        """The order books the fake made and sent (:mod:`connectors.fake.book_ledger`)."""
        self._buffer = bytearray()

    # -- recording -------------------------------------------------------------------------------

    def record(self, trades: Iterable[Trade], connection: int = 0) -> None:
        """Record trades whose frames were handed to the socket of ``connection``."""
        for trade in trades:
            self.add(connection, trade)

    def add(self, connection: int, trade: Trade) -> None:
        """Record one sent trade (the hot path of the fake server)."""
        symbol = trade.raw_symbol
        try:
            tid = int(trade.trade_id)
        except ValueError:  # not a number (Bybit's UUIDs in a recording): no id runs
            self._add_unnumbered(connection, trade)
            return
        runs = self._runs.get((connection, symbol))
        if runs is None:
            self._runs[(connection, symbol)] = [[tid, tid]]
            self._canonical[symbol] = trade.symbol
        else:
            last = runs[-1]
            if last[1] + 1 == tid:
                last[1] = tid
            else:
                runs.append([tid, tid])
        self._count_and_keep(connection, trade)

    def _add_unnumbered(self, connection: int, trade: Trade) -> None:
        """Record a trade whose id is not a number: counted and kept, not in :meth:`sent_ids`."""
        self._canonical.setdefault(trade.raw_symbol, trade.symbol)
        self._unnumbered[connection] = self._unnumbered.get(connection, 0) + 1
        self._count_and_keep(connection, trade)

    def _count_and_keep(self, connection: int, trade: Trade) -> None:
        symbol = trade.raw_symbol
        self._counts[symbol] = self._counts.get(symbol, 0) + 1
        self.total += 1
        if self._kept_trades < self._memory_limit:
            self._kept.append((connection, trade))
            self._kept_trades += 1
        if self._file is not None:
            self._buffer += ledger_line(connection, trade)
            if len(self._buffer) >= _FLUSH_BYTES:
                self.flush()

    def add_run(self, connection: int, run: Run) -> None:
        """Record a run of trades sent to ``connection`` (the fast path's hot path: per run,
        not per trade, except for the lines of the streaming file)."""
        if run.count <= 0:
            return
        counts, all_runs = self._counts, self._runs
        for ring, first, count in run.shares():
            symbol = ring.raw_symbol
            counts[symbol] = counts.get(symbol, 0) + count
            runs = all_runs.get((connection, symbol))
            last_id = first + count - 1
            if runs is None:
                all_runs[(connection, symbol)] = [[first, last_id]]
                self._canonical[symbol] = ring.symbol
            elif runs[-1][1] + 1 == first:
                runs[-1][1] = last_id
            else:
                runs.append([first, last_id])
        self.total += run.count
        room = self._memory_limit - self._kept_trades
        if room > 0:
            kept = run if run.count <= room else run.head(room)
            self._kept.append((connection, kept))
            self._kept_trades += kept.count
        if self._file is not None:
            self._buffer += self._run_lines(connection, run)
            if len(self._buffer) >= _FLUSH_BYTES:
                self.flush()

    def _line_template(self, connection: int, ring: Ring) -> Template | None:
        key = (connection, ring.raw_symbol)
        if key not in self._line_templates:
            self._line_templates[key] = Template.of(
                ring, lambda t: ledger_line(connection, t).decode(), ascii_only=False
            )
        return self._line_templates[key]

    def _run_lines(self, connection: int, run: Run) -> bytes:
        """The JSONL lines of ``run``'s trades, in send order (as :func:`ledger_line` gives)."""
        templates = [self._line_template(connection, ring) for ring in run.rings]
        if any(t is None for t in templates):
            return b"".join(ledger_line(connection, trade) for trade in run.trades())
        parts = [
            t.texts(first, count, run.ts_ms)
            for t, (_ring, first, count) in zip(templates, run.shares(), strict=True)
            if t is not None
        ]
        return "".join(interleave(parts, run.count)).encode()

    # -- reading ---------------------------------------------------------------------------------

    @property
    def complete_in_memory(self) -> bool:
        """True when every recorded trade is still held for :meth:`trades`."""
        return self._kept_trades == self.total

    def connections(self) -> list[int]:
        """Connection numbers that were sent at least one trade, ascending."""
        return sorted({conn for conn, _ in self._runs} | set(self._unnumbered))

    def sent_ids(self, symbol: str, connection: int | None = None) -> list[int]:
        """Ids of ``symbol`` (raw ``BTCUSDT`` or canonical ``BTC-USDT``) in send order, per
        connection in connection order (two connections of one symbol may repeat ids)."""
        out: list[int] = []
        for (conn, sym), runs in sorted(self._runs.items()):
            if symbol not in (sym, self._canonical[sym]):
                continue
            if connection is None or conn == connection:
                for first, last in runs:
                    out.extend(range(first, last + 1))
        return out

    def trades(self, connection: int | None = None) -> Iterator[Trade]:
        """The recorded trades held in memory, in send order (see ``complete_in_memory``)."""
        for conn, kept in self._kept:
            if connection is None or conn == connection:
                if isinstance(kept, Run):
                    yield from kept.trades()
                else:
                    yield kept

    def _kept_lines(self) -> Iterator[bytes]:
        for conn, kept in self._kept:
            if isinstance(kept, Run):
                yield self._run_lines(conn, kept)
            else:
                yield ledger_line(conn, kept)

    def summary(self) -> dict[str, Any]:
        """Counts for a log line: total, per symbol, per connection, malformed, oversized,
        hostile, undelivered, and the send backlog's peak."""
        per_conn: dict[int, int] = {}
        for (conn, _sym), runs in self._runs.items():
            per_conn[conn] = per_conn.get(conn, 0) + sum(b - a + 1 for a, b in runs)
        for conn, count in self._unnumbered.items():
            per_conn[conn] = per_conn.get(conn, 0) + count
        return {
            "trades": self.total,
            "per_symbol": dict(sorted(self._counts.items())),
            "per_connection": {str(c): n for c, n in sorted(per_conn.items())},
            "malformed_sent": self.malformed_sent,
            "oversized_sent": self.oversized_sent,
            "hostile_sent": dict(sorted(self.hostile_sent.items())),
            "undelivered": self.undelivered,
            "send_backlog_peak": self.send_backlog_peak,
        }

    # -- files -----------------------------------------------------------------------------------

    def write(self, path: str | os.PathLike[str]) -> int:
        """Write the trades held in memory as JSONL; return the line count.

        Raises ValueError when some trades were not kept (beyond ``memory_limit``): use the
        streaming ``path`` of the constructor for such runs.
        """
        if not self.complete_in_memory:
            raise ValueError(
                f"ledger holds {self._kept_trades} of {self.total} trades; "
                "construct it with a path to stream long runs"
            )
        with open(path, "wb") as out:
            chunk = bytearray()
            for lines in self._kept_lines():
                chunk += lines
                if len(chunk) >= _FLUSH_BYTES:
                    out.write(chunk)
                    chunk.clear()
            out.write(chunk)
        return self._kept_trades

    def flush(self) -> None:
        """Write the buffered lines to the streaming file (no-op without one)."""
        if self._file is not None and self._buffer:
            self._file.write(self._buffer)
            self._buffer.clear()

    def close(self) -> None:
        """Flush and close the streaming file (idempotent)."""
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None
