"""A seeded streaming prefix for ``feedvault sample compact`` (pure, reproducible).

It holds what ``feedvault stream`` runs leave behind, built with the sink's own encoder, key
template and manifest, over the UTC days :data:`FIRST_DAY` and the day after (so
``COMPACT_FROM=2026-01-05 COMPACT_TO=2026-01-06``), for ``binance`` BTC-USDT and ETH-USDT
(sequenced trade ids) and ``bybit`` BTC-USDT (not sequenced), a trade every 5 to 40 s each:

* run ``A`` streams day 1 00:00-16:00 and run ``B`` day 1 12:00 to day 2 12:00, both complete:
  their four overlapping hours hold every trade twice (duplicates to remove); one ETH-USDT
  copy in ``B`` has a different size (a conflicting duplicate);
* ``B``'s manifest records two gaps of binance BTC-USDT: ids it missed at 13:30 that ``A`` has
  (recovered by compaction) and ids nobody received at 20:00 on day 1 (still missing);
* run ``C`` streams day 2 13:00-20:00 and was killed: its objects have no manifest. One of them
  holds two bad records (a price in exponent notation, a record without ``side``);
* nobody streams day 2 12:00-13:00 and after 20:00: uncovered time, and for binance a gap
  that no manifest recorded.

Windows are one hour; objects are ``ndjson.gz``. :func:`generate_compact` also returns what a
correct compaction finds (:class:`CompactExpectation`).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from batch.compact import US_PER_DAY, US_PER_HOUR
from batch.compact_plan import day_number
from sinks.encoders import GZIP, make_encoder
from sinks.keys import KeyTemplate
from sinks.manifest import COUNTERS, Gap, Manifest, StoredObjectEntry, iso_utc, manifest_key
from sinks.writer import sha256_hex

FIRST_DAY: Final = dt.date(2026, 1, 5)
_DAY0_US: Final = day_number(FIRST_DAY) * US_PER_DAY
_TEMPLATE: Final = KeyTemplate()

#: (exchange, symbol, raw symbol, start price, price places, size places)
SYMBOLS: Final = (
    ("binance", "BTC-USDT", "BTCUSDT", Decimal("43000"), 8, 8),
    ("binance", "ETH-USDT", "ETHUSDT", Decimal("2300"), 8, 8),
    ("bybit", "BTC-USDT", "BTCUSDT", Decimal("43000"), 2, 6),
)


@dataclass(frozen=True, slots=True)
class _Run:
    run_id: str
    start_us: int
    stop_us: int
    manifest: bool


def _hours(day: int, hour: int) -> int:
    return _DAY0_US + (day * 24 + hour) * US_PER_HOUR


RUNS: Final = (
    _Run("20260105T000000Z-a1a1a1a1", _hours(0, 0), _hours(0, 16), manifest=True),
    _Run("20260105T120000Z-b2b2b2b2", _hours(0, 12), _hours(1, 12), manifest=True),
    _Run("20260106T130000Z-c3c3c3c3", _hours(1, 13), _hours(1, 20), manifest=False),
)
RECOVERED_GAP_US: Final = (
    _hours(0, 13) + US_PER_HOUR // 2,
    _hours(0, 13) + US_PER_HOUR // 2 + 120_000_000,
)
LOST_GAP_US: Final = (_hours(0, 20), _hours(0, 20) + 90_000_000)


@dataclass(slots=True)
class CompactExpectation:
    """What compacting the sample must find."""

    trades: dict[str, int] = field(default_factory=dict)
    """Distinct trades per ``exchange:symbol`` within the two days, as received by some run."""
    duplicates: dict[str, int] = field(default_factory=dict)
    conflicts: int = 1
    rejected: dict[str, int] = field(default_factory=lambda: {"bad-decimal": 1, "missing-field": 1})
    recovered_gap_ids: tuple[int, int] = (0, 0)
    lost_gap_ids: tuple[int, int] = (0, 0)
    runs_without_manifest: list[str] = field(default_factory=list)


def _trades(rng: random.Random) -> list[dict[str, Any]]:
    """Every trade the exchanges made over the two days, in time order per symbol."""
    out: list[dict[str, Any]] = []
    end = _hours(2, 0)
    for exchange, symbol, raw, price, price_places, size_places in SYMBOLS:
        ts = _DAY0_US + rng.randrange(1_000_000, 30_000_000)
        trade_id = rng.randrange(1_000_000, 9_000_000)
        while ts < end:
            step = Decimal(rng.gauss(0, 0.0004)).quantize(Decimal("1e-6"))
            price = max(price * (1 + step), Decimal(1))
            size = Decimal(rng.randrange(1, 200_000)).scaleb(-5)
            trade_id += 1
            ident = str(trade_id) if exchange == "binance" else f"{rng.getrandbits(64):016x}"
            out.append(
                {
                    "exchange": exchange,
                    "symbol": symbol,
                    "raw_symbol": raw,
                    "trade_id": ident,
                    "price": f"{price:.{price_places}f}",
                    "size": f"{size:.{size_places}f}",
                    "side": "buy" if rng.random() < 0.5 else "sell",
                    "ts_event": ts,
                    "ts_recv": ts * 1000 + rng.randrange(1_000_000, 60_000_000),
                }
            )
            ts += rng.randrange(5_000_000, 40_000_000)
    return out


def _in(ts: int, window: tuple[int, int]) -> bool:
    return window[0] <= ts < window[1]


def _received(run: _Run, trades: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """What ``run`` received: its span, minus the gaps it suffered."""
    got = []
    for trade in trades:
        ts = trade["ts_event"]
        if not run.start_us <= ts < run.stop_us or _in(ts, LOST_GAP_US):
            continue
        if run is RUNS[1] and _in(ts, RECOVERED_GAP_US) and _is_gap_symbol(trade):
            continue
        copy = dict(trade)
        copy["ts_recv"] += RUNS.index(run) * 1_000_000  # each task has its own latency
        got.append(copy)
    return got


def _is_gap_symbol(trade: dict[str, Any]) -> bool:
    return bool(trade["exchange"] == "binance" and trade["symbol"] == "BTC-USDT")


def _gap_ids(trades: Iterable[dict[str, Any]], window: tuple[int, int]) -> tuple[int, int]:
    ids = [int(t["trade_id"]) for t in trades if _is_gap_symbol(t) and _in(t["ts_event"], window)]
    return (min(ids), max(ids))


def _windows(run: _Run, trades: list[dict[str, Any]]) -> dict[tuple[str, str, int], list[Any]]:
    groups: dict[tuple[str, str, int], list[Any]] = {}
    for trade in trades:
        hour = (trade["ts_recv"] // 1000 - _DAY0_US) // US_PER_HOUR
        window_start = _DAY0_US + hour * US_PER_HOUR
        groups.setdefault((trade["exchange"], trade["symbol"], window_start), []).append(trade)
    return dict(sorted(groups.items()))


def generate_compact(seed: int, prefix: str = "") -> tuple[dict[str, bytes], CompactExpectation]:
    """The objects and manifests (keys under ``prefix``) and what compaction must find."""
    rng = random.Random(seed)
    trades = _trades(rng)
    expect = CompactExpectation(
        recovered_gap_ids=_gap_ids(trades, RECOVERED_GAP_US),
        lost_gap_ids=_gap_ids(trades, LOST_GAP_US),
        runs_without_manifest=[run.run_id for run in RUNS if not run.manifest],
    )
    files: dict[str, bytes] = {}
    seen: dict[tuple[str, str, str], int] = {}
    for run in RUNS:
        received = _received(run, trades)
        if run is RUNS[1]:
            _plant_conflict(received)
        if not run.manifest:
            received += _bad_records(received[-1])
        entries = []
        for seq, ((exchange, symbol, start), records) in enumerate(_windows(run, received).items()):
            key = _TEMPLATE.render(
                prefix=prefix,
                dataset="trades",
                partition={"exchange": exchange, "symbol": symbol},
                window_start_ns=start * 1000,
                run_id=run.run_id,
                seq=seq,
                ext=GZIP,
            )
            encoder = make_encoder(GZIP)
            encoder.write(records)
            body = encoder.finish()
            files[key] = body
            valid = [r for r in records if "side" in r and "e" not in r["price"]]
            for record in valid:
                identity = (record["exchange"], record["symbol"], record["trade_id"])
                seen[identity] = seen.get(identity, 0) + 1
            entries.append(
                StoredObjectEntry(
                    key=key,
                    records=len(records),
                    bytes=len(body),
                    sha256=sha256_hex(body),
                    first_ts_event=records[0]["ts_event"],
                    last_ts_event=records[-1]["ts_event"],
                    symbols={f"{exchange}:{symbol}": (valid[0]["trade_id"], valid[-1]["trade_id"])},
                    stored_at=(start + US_PER_HOUR) * 1000,
                )
            )
        if run.manifest:
            manifest = _manifest(run, entries, expect, prefix)
            files[manifest_key(prefix, run.run_id)] = manifest.to_json()
    for (exchange, symbol, _), copies in seen.items():
        name = f"{exchange}:{symbol}"
        expect.trades[name] = expect.trades.get(name, 0) + 1
        expect.duplicates[name] = expect.duplicates.get(name, 0) + copies - 1
    return files, expect


def _plant_conflict(received: list[dict[str, Any]]) -> None:
    for trade in received:
        if trade["symbol"] == "ETH-USDT" and trade["ts_event"] >= _hours(0, 14):
            trade["size"] = f"{Decimal(trade['size']) * 2:.8f}"
            return


def _bad_records(last: dict[str, Any]) -> list[dict[str, Any]]:
    bad_price = {**last, "trade_id": "bad-1", "price": "4.3e4"}
    no_side = {k: v for k, v in last.items() if k != "side"} | {"trade_id": "bad-2"}
    return [bad_price, no_side]


def _manifest(
    run: _Run, entries: list[StoredObjectEntry], expect: CompactExpectation, prefix: str
) -> Manifest:
    gaps: dict[str, list[Gap]] = {}
    if run is RUNS[1]:
        gaps["binance:BTC-USDT"] = [
            Gap(from_id=low, to_id=high, missing=high - low + 1)
            for low, high in (expect.recovered_gap_ids, expect.lost_gap_ids)
        ]
    counters = dict.fromkeys(COUNTERS, 0)
    counters["received"] = counters["parsed"] = sum(entry.records for entry in entries)
    return Manifest(
        run_id=run.run_id,
        version="sample",
        command="feedvault stream",
        started_at=iso_utc(run.start_us * 1000),
        stopped_at=iso_utc(run.stop_us * 1000),
        stop_reason="deadline",
        status="complete",
        config={"prefix": prefix, "streams": [f"{e}:{r}" for e, _, r, *_ in SYMBOLS]},
        objects=entries,
        counters=counters,
        gaps=gaps,
    )


def sample_compact(seed: int, prefix: str = "") -> dict[str, bytes]:
    """The objects of :func:`generate_compact`."""
    return generate_compact(seed, prefix)[0]
