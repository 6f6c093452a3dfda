"""The load test's exactly-once check and latency samples, in bounded memory per record.

Every trade is reduced to its identity (the record fields the exchange chose, docs:
data-formats.md#trade-records: exchange, symbol, trade id, exact price and size text, taker
side) and that identity to a 64-bit
fingerprint (``hash`` of the tuple; the same process hashes both sides, so the per-process
hash seed does not matter). The check compares the *multisets* of fingerprints of what the fake
exchange sent (its ledger) and of what was stored: equal multisets mean every sent trade was
stored exactly once and nothing else was. 8 bytes per trade and side, so a multi-million-trade
run is checked in a few hundred MB at most (during the sort). A fingerprint collision can only
hide an error if two different trades collide *and* one of them is the error (odds ~n/2^64).

Receive-to-durable latency: for each stored record, its object's ``stored_at`` (manifest, ns)
minus its ``ts_recv`` (ns), kept in an ``array('q')`` per second of ``ts_recv`` (the chart's
per-interval percentiles; :attr:`ExactlyOnceCheck.latencies_ns` joins them for the run's).
It is measured here, from what the run stored, not in the engine: the stream path pays nothing.

Inputs are NDJSON text; :func:`iter_ndjson` parses it in chunks (one ``orjson.loads`` per
chunk, not per line).
"""

from __future__ import annotations

import array
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Final

import orjson

from engine.errors import IntegrityError

Identity = tuple[str, str, str, str, str, str]
IDENTITY_FIELDS: Final = ("exchange", "symbol", "trade_id", "price", "size", "side")
CHUNK_BYTES: Final = 4 << 20
EXAMPLES: Final = 5
NS_PER_S: Final = 1_000_000_000


def identity(record: dict[str, Any]) -> Identity:
    """The fields that make a trade the same trade (KeyError if one is missing)."""
    return (
        record["exchange"],
        record["symbol"],
        record["trade_id"],
        record["price"],
        record["size"],
        record["side"],
    )


def iter_ndjson(text: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[list[dict[str, Any]]]:
    """The JSON objects of NDJSON ``text``, in order, in lists of about ``chunk_bytes`` of
    input. Blank lines are skipped; :class:`IntegrityError` if a line is not a JSON object."""
    start, size = 0, len(text)
    while start < size:
        end = text.find(b"\n", min(start + chunk_bytes, size))
        end = size if end < 0 else end + 1
        chunk = text[start:end].strip(b"\n")
        start = end
        if not chunk:
            continue
        lines = chunk.split(b"\n")
        try:
            records = orjson.loads(b"[" + b",".join(line for line in lines if line) + b"]")
        except orjson.JSONDecodeError as exc:
            raise IntegrityError(f"not NDJSON: {exc}") from None
        if not all(isinstance(record, dict) for record in records):
            raise IntegrityError("an NDJSON line is not a JSON object")
        yield records


def iter_ndjson_file(
    path: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[list[dict[str, Any]]]:
    """:func:`iter_ndjson` over a file, read ``chunk_bytes`` at a time (memory stays bounded
    by the chunk, however large the file)."""
    with open(path, "rb") as fh:
        rest = b""
        while block := fh.read(chunk_bytes):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            yield from iter_ndjson(block[:cut], chunk_bytes)
        if rest:
            yield from iter_ndjson(rest, chunk_bytes)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of :meth:`ExactlyOnceCheck.result`.

    ``missing``: sent trades not stored; ``duplicated``: extra stored copies of sent trades;
    ``unexpected``: stored trades never sent. ``problem_fingerprints`` names a few of each, for
    :meth:`ExactlyOnceCheck.examples`.
    """

    sent: int
    stored: int
    missing: int
    duplicated: int
    unexpected: int
    problem_fingerprints: frozenset[int] = frozenset()

    @property
    def passed(self) -> bool:
        return self.sent > 0 and self.missing == self.duplicated == self.unexpected == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "sent": self.sent,
            "stored": self.stored,
            "missing": self.missing,
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
        }


@dataclass
class ExactlyOnceCheck:
    """Collects sent and stored fingerprints, then compares them (see the module docstring)."""

    sent: array.array[int] = field(default_factory=lambda: array.array("q"))
    stored: array.array[int] = field(default_factory=lambda: array.array("q"))
    latency_by_second: dict[int, array.array[int]] = field(default_factory=dict)
    """Receive-to-durable latencies (ns) by the epoch second of the record's ``ts_recv``."""
    first_recv_ns: int | None = None
    last_recv_ns: int | None = None

    @property
    def latencies_ns(self) -> array.array[int]:
        """Every stored record's latency (ns), in receive-second order."""
        return array.array(
            "q",
            chain.from_iterable(self.latency_by_second[s] for s in sorted(self.latency_by_second)),
        )

    def add_sent(self, records: Iterable[dict[str, Any]]) -> None:
        """Ledger lines (each a sent trade)."""
        append = self.sent.append
        for r in records:
            append(
                hash((r["exchange"], r["symbol"], r["trade_id"], r["price"], r["size"], r["side"]))
            )

    def add_stored(self, records: list[dict[str, Any]], stored_at_ns: int | None) -> None:
        """Records of one stored object, durable at ``stored_at_ns`` (None: no latency)."""
        append = self.stored.append
        for r in records:
            append(
                hash((r["exchange"], r["symbol"], r["trade_id"], r["price"], r["size"], r["side"]))
            )
        if not records:
            return
        received = [r["ts_recv"] for r in records]
        low, high = min(received), max(received)
        if self.first_recv_ns is None or low < self.first_recv_ns:
            self.first_recv_ns = low
        if self.last_recv_ns is None or high > self.last_recv_ns:
            self.last_recv_ns = high
        if stored_at_ns is not None:
            buckets = self.latency_by_second
            for ts in received:
                second = ts // NS_PER_S
                bucket = buckets.get(second)
                if bucket is None:
                    bucket = buckets[second] = array.array("q")
                bucket.append(stored_at_ns - ts)

    @property
    def ingest_seconds(self) -> float:
        """First to last receive time over the stored records (0 without records)."""
        if self.first_recv_ns is None or self.last_recv_ns is None:
            return 0.0
        return (self.last_recv_ns - self.first_recv_ns) / 1e9

    def result(self) -> CheckResult:
        """Compare the multisets. Sorts copies of both sides (the arrays are kept)."""
        sent, stored = sorted(self.sent), sorted(self.stored)
        if sent == stored:
            return CheckResult(len(sent), len(stored), 0, 0, 0)
        return compare_sorted(sent, stored)

    def examples(self, result: CheckResult, records: Iterable[dict[str, Any]]) -> list[Identity]:
        """The identities among ``records`` whose fingerprints ``result`` names as problems
        (at most :data:`EXAMPLES` x 3, each once)."""
        found: dict[Identity, None] = {}
        for record in records:
            key = identity(record)
            if hash(key) in result.problem_fingerprints:
                found[key] = None
                if len(found) >= EXAMPLES * 3:
                    break
        return list(found)


def compare_sorted(sent: list[int], stored: list[int]) -> CheckResult:
    """Merge two sorted fingerprint lists into the counts of :class:`CheckResult`."""
    missing = duplicated = unexpected = 0
    problems: dict[str, list[int]] = {"missing": [], "duplicated": [], "unexpected": []}
    i = j = 0
    while i < len(sent) or j < len(stored):
        value = min(
            sent[i] if i < len(sent) else stored[j],
            stored[j] if j < len(stored) else sent[i],
        )
        n_sent = n_stored = 0
        while i < len(sent) and sent[i] == value:
            i, n_sent = i + 1, n_sent + 1
        while j < len(stored) and stored[j] == value:
            j, n_stored = j + 1, n_stored + 1
        kind = None
        if n_sent == 0:
            unexpected += n_stored
            kind = "unexpected"
        elif n_stored < n_sent:
            missing += n_sent - n_stored
            kind = "missing"
        elif n_stored > n_sent:
            duplicated += n_stored - n_sent
            kind = "duplicated"
        if kind is not None and len(problems[kind]) < EXAMPLES:
            problems[kind].append(value)
    return CheckResult(
        sent=len(sent),
        stored=len(stored),
        missing=missing,
        duplicated=duplicated,
        unexpected=unexpected,
        problem_fingerprints=frozenset(v for values in problems.values() for v in values),
    )
