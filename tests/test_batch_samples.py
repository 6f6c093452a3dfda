"""Sample inputs: reproducible bytes, and the jobs reject exactly the planted bad rows."""

from __future__ import annotations

import pytest

from batch import samples
from batch.ecommerce import category_kpis, order_kpis, parse_orders
from batch.reconcile import parse_ledger, parse_processor, reconcile, summary
from batch.weather import anomalies, daily_summaries, parse_weather

SEEDS = (1, 2, 3)


@pytest.mark.parametrize("job", sorted(samples.SAMPLERS))
def test_same_seed_same_bytes(job: str) -> None:
    sampler = samples.SAMPLERS[job]
    assert sampler(7) == sampler(7)
    assert sampler(7) != sampler(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_ecommerce_rejects_exactly_the_planted_rows(seed: int) -> None:
    sample = samples.generate_ecommerce(seed)
    parsed = parse_orders(sample.files.items())
    assert {(r.source, r.row_number, r.kind) for r in parsed.rejected} == sample.planted
    assert len(parsed.orders) + len(parsed.rejected) == 3 * 200
    assert 0 < len(sample.planted) < 0.1 * 600
    assert order_kpis(parsed.orders) and category_kpis(parsed.orders)


@pytest.mark.parametrize("seed", SEEDS)
def test_weather_rejects_exactly_the_planted_rows(seed: int) -> None:
    sample = samples.generate_weather(seed)
    parsed = parse_weather(sample.files.items())
    assert {(r.source, r.row_number, r.kind) for r in parsed.rejected} == sample.planted
    found = [(row["station_id"], row["date"]) for row in anomalies(parsed.observations)]
    assert found == sample.expected["anomalies"]
    assert len(daily_summaries(parsed.observations)) == 4 * 30


@pytest.mark.parametrize("seed", SEEDS)
def test_reconcile_rejects_the_planted_rows_and_finds_the_planted_statuses(seed: int) -> None:
    sample = samples.generate_reconcile(seed)
    ledger = parse_ledger("ledger.csv", sample.files["ledger.csv"])
    processor = parse_processor("processor.csv", sample.files["processor.csv"])
    rejected = ledger.rejected + processor.rejected
    assert {(r.source, r.row_number, r.kind) for r in rejected} == sample.planted
    assert summary(reconcile(ledger, processor))["counts"] == sample.expected["counts"]


def test_every_bad_kind_is_planted_somewhere() -> None:
    kinds: dict[str, set[str]] = {"ecommerce": set(), "weather": set(), "reconcile": set()}
    for seed in SEEDS:
        kinds["ecommerce"] |= {k for _, _, k in samples.generate_ecommerce(seed).planted}
        kinds["weather"] |= {k for _, _, k in samples.generate_weather(seed).planted}
        kinds["reconcile"] |= {k for _, _, k in samples.generate_reconcile(seed).planted}
    assert kinds["ecommerce"] == set(samples.ECOMMERCE_BAD_KINDS)
    weather_extra = {"wrong-field-count", "bad-json", "bad-units"}
    assert kinds["weather"] == set(samples.WEATHER_BAD_KINDS) | weather_extra
    assert kinds["reconcile"] == set(samples.RECONCILE_BAD_KINDS)
    statuses = samples.generate_reconcile(1, rows=2000).expected["counts"]
    assert all(count > 0 for count in statuses.values()), statuses
