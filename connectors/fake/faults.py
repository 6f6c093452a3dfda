"""Faults the fake exchange injects on demand (docs: testing.md), parsed from a CLI string.

``disconnect-every=5,stall=3@10,malformed=0.01,shutdown-notice-every=30,reject-unknown``:

- ``disconnect-every=N``: close each connection N s after it opened (close code 1001);
- ``stall=S@E``: every E s of a connection's age, send nothing for S s while keeping the socket
  open (trades generated meanwhile are never delivered to that connection); with S >= E the
  connection goes silent for good once it is E s old;
- ``malformed=P``: replace a fraction P of trade frames by malformed text (deterministic from the
  seed; the replaced trades are not in the ledger);
- ``shutdown-notice-every=N``: send ``serverShutdown`` every N s of a connection's age;
- ``reject-unknown``: answer a subscription to a symbol the server does not trade with an error
  and close (instead of Binance's behaviour: accept it and send nothing);
- ``oversized=P``: replace a fraction P of trade frames by a frame larger than a client's 1 MiB
  frame limit (the replaced trades are not in the ledger);
- ``hostile=P``: replace a fraction P of trade frames by hostile input a client must reject
  without crashing, in turn (:func:`connectors.fake.hostile.hostile_frame`): invalid UTF-8,
  JSON nested 100,000 deep, a number far beyond the float range, and trades whose symbol holds
  ``/``, ``..`` or NUL (the replaced trades are not in the ledger);
- ``drop-pongs``: never answer the client's application-level pings (OKX ``ping``, Bybit
  ``op: ping``, Bitstamp ``bts:heartbeat``, Kraken ``method: ping``);
- ``restart-ids=N``: when connection N (N >= 2, counted from 1 in accept order) opens, every
  symbol's trade ids start again at 1, once, as an exchange that restarted its sequence (a
  market started at a high ``--first-id`` makes that a jump back well beyond a client's reorder
  window; a recording played ignores it).

Order-book faults (docs: testing.md#order-books-on-the-fake-exchange). ``N`` counts a symbol's
book messages sent (all connections together); ``once@N`` applies to the Nth only:

- ``book-gap=N`` (or ``once@N``): every Nth book update is not sent (its update id is skipped:
  Binance's ``U``, OKX's ``prevSeqId``, Bybit's ``u`` no longer follow; Kraken's next checksum
  fails; Coinbase and Bitstamp carry no sequence, so they are left alone);
- ``book-checksum=N`` (or ``once@N``): Kraken's Nth book update carries a wrong checksum;
- ``late-snapshot=S``: a REST snapshot is answered S s (at most 5) after it was asked for, by
  the server's clock, holding the book of when it was asked;
- ``stale-snapshot=N`` (or ``once@N``): the Nth REST snapshot holds the book from before the
  latest subscription to the symbol's diffs (older than every diff that connection was sent);
- ``book-restart=S``: every S s of the server's age, every symbol's book restarts (Bybit's
  ``u=1``): changed without a diff, then sent as a snapshot numbered 1 on the in-band channels
  (on Binance's diff stream it shows as a gap in update ids; Bitstamp is left alone).

All times are seconds on the server's (injectable) monotonic clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stall:
    """No data for ``seconds`` every ``every`` seconds of connection age."""

    seconds: float
    every: float

    def active(self, age: float) -> bool:
        """True while a connection of this age is stalled (windows ``[kE, kE+S)``, k >= 1)."""
        if age < self.every:
            return False
        return age - math.floor(age / self.every) * self.every < self.seconds


@dataclass(frozen=True, slots=True)
class Count:
    """Every ``every``-th event (1-based), or only that one when ``once``."""

    every: int
    once: bool = False

    def hits(self, n: int) -> bool:
        """True when the ``n``-th event (from 1) is one of them."""
        return n == self.every if self.once else n % self.every == 0

    def __str__(self) -> str:
        return f"once@{self.every}" if self.once else str(self.every)


LATE_SNAPSHOT_LIMIT = 5.0
"""Seconds a REST snapshot may be held back at most (below websockets' opening timeout)."""


@dataclass(frozen=True, slots=True)
class Faults:
    """The faults of one fake exchange; the default injects none."""

    disconnect_every: float | None = None
    stall: Stall | None = None
    malformed: float = 0.0
    shutdown_notice_every: float | None = None
    reject_unknown: bool = False
    oversized: float = 0.0
    drop_pongs: bool = False
    hostile: float = 0.0
    restart_ids: int | None = None
    book_gap: Count | None = None
    book_checksum: Count | None = None
    late_snapshot: float | None = None
    stale_snapshot: Count | None = None
    book_restart: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> Faults:
        """Parse ``name=value,...``; raise ValueError naming the bad item."""
        if text is None or not text.strip():
            return cls()
        values: dict[str, object] = {}
        for item in text.split(","):
            name, _, value = item.strip().partition("=")
            if not name:
                continue
            parsed = _parse_item(name, value.strip())
            field = name.replace("-", "_")
            if field in values:
                raise ValueError(f"fault {name!r} given twice")
            values[field] = parsed
        return cls(**values)  # type: ignore[arg-type]

    def __str__(self) -> str:
        parts = []
        if self.disconnect_every is not None:
            parts.append(f"disconnect-every={self.disconnect_every:g}")
        if self.stall is not None:
            parts.append(f"stall={self.stall.seconds:g}@{self.stall.every:g}")
        if self.malformed:
            parts.append(f"malformed={self.malformed:g}")
        if self.shutdown_notice_every is not None:
            parts.append(f"shutdown-notice-every={self.shutdown_notice_every:g}")
        if self.reject_unknown:
            parts.append("reject-unknown")
        if self.oversized:
            parts.append(f"oversized={self.oversized:g}")
        if self.drop_pongs:
            parts.append("drop-pongs")
        if self.hostile:
            parts.append(f"hostile={self.hostile:g}")
        if self.restart_ids is not None:
            parts.append(f"restart-ids={self.restart_ids}")
        for name, count in (
            ("book-gap", self.book_gap),
            ("book-checksum", self.book_checksum),
            ("stale-snapshot", self.stale_snapshot),
        ):
            if count is not None:
                parts.append(f"{name}={count}")
        if self.late_snapshot is not None:
            parts.append(f"late-snapshot={self.late_snapshot:g}")
        if self.book_restart is not None:
            parts.append(f"book-restart={self.book_restart:g}")
        return ",".join(parts)


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"fault {name}: {value!r} is not a number of seconds") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"fault {name}: must be a positive number of seconds")
    return seconds


def _count(name: str, value: str) -> Count:
    once, at, number = value.partition("@")
    if at and once != "once":
        raise ValueError(f"fault {name}: expected N or once@N, e.g. {name}=50")
    text = number if at else value
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"fault {name}: expected N or once@N with N >= 1, e.g. {name}=50")
    return Count(int(text), once=bool(at))


def _parse_item(name: str, value: str) -> object:
    if name in ("book-gap", "book-checksum", "stale-snapshot"):
        return _count(name, value)
    if name == "late-snapshot":
        late = _seconds(name, value)
        if late > LATE_SNAPSHOT_LIMIT:
            raise ValueError(f"fault {name}: at most {LATE_SNAPSHOT_LIMIT:g} s")
        return late
    if name == "book-restart":
        return _seconds(name, value)
    if name == "disconnect-every":
        return _seconds(name, value)
    if name == "shutdown-notice-every":
        return _seconds(name, value)
    if name == "stall":
        seconds, at, every = value.partition("@")
        if not at:
            raise ValueError("fault stall: expected S@E, e.g. stall=3@10")
        return Stall(_seconds(name, seconds), _seconds(name, every))
    if name in ("malformed", "oversized", "hostile"):
        try:
            fraction = float(value)
        except ValueError:
            raise ValueError(f"fault {name}: {value!r} is not a fraction") from None
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fault {name}: must be between 0 and 1")
        return fraction
    if name == "restart-ids":
        if not value.isdigit() or int(value) < 2:
            raise ValueError(f"fault {name}: expected a connection number >= 2, e.g. {name}=2")
        return int(value)
    if name in ("reject-unknown", "drop-pongs"):
        if value not in ("", "1", "true", "yes"):
            raise ValueError(f"fault {name} takes no value")
        return True
    raise ValueError(
        f"unknown fault {name!r} (known: disconnect-every, stall, malformed, oversized, "
        "shutdown-notice-every, reject-unknown, drop-pongs, hostile, restart-ids, book-gap, "
        "book-checksum, late-snapshot, stale-snapshot, book-restart)"
    )
