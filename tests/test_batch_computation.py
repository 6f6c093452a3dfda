"""The computation job's maths and parameters: closed-form sanity, exact tails, determinism."""

from __future__ import annotations

import math
from decimal import Decimal
from statistics import NormalDist

import numpy as np
import pytest

from batch.compact_job import CompactJob, CompactParameters
from batch.computation import (
    CHUNK_PATHS,
    TRADING_DAYS_PER_YEAR,
    ComputationJob,
    RiskParameters,
    compute_risk,
    horizon_risk,
    render_csv,
    render_json,
    simulate_chunk,
    tail_size,
)
from engine.errors import ConfigError
from engine.settings import Env


def _lognormal(params: RiskParameters, horizon: int) -> tuple[float, float]:
    t = horizon / TRADING_DAYS_PER_YEAR
    return (params.mu - params.sigma**2 / 2) * t, params.sigma * math.sqrt(t)


def test_var_and_es_match_the_lognormal_closed_form_within_monte_carlo_error() -> None:
    params = RiskParameters(
        seed=7, paths=200_000, mu=0.08, sigma=0.3, horizons=(1, 10, 60), notional=1e6
    )
    for risk in compute_risk(params):
        m, s = _lognormal(params, risk.horizon_days)
        for tail in risk.tails:
            alpha = float(tail.confidence)
            z = NormalDist().inv_cdf(1 - alpha)
            x = m + s * z  # the log-return at the loss quantile
            var_exact = params.notional * (1 - math.exp(x))
            # Standard error of an empirical quantile: sqrt(a(1-a)/n) / density of the loss.
            density = NormalDist(m, s).pdf(x) / (params.notional * math.exp(x))
            se = math.sqrt(alpha * (1 - alpha) / params.paths) / density
            assert abs(tail.var - var_exact) < 4 * se, (risk.horizon_days, alpha)
            es_exact = params.notional * (
                1 - math.exp(m + s * s / 2) * NormalDist().cdf(z - s) / (1 - alpha)
            )
            assert tail.expected_shortfall > tail.var
            assert abs(tail.expected_shortfall - es_exact) < 0.02 * es_exact
            assert tail.var_analytic == pytest.approx(var_exact, rel=1e-12)
            assert tail.expected_shortfall_analytic == pytest.approx(es_exact, rel=1e-9)
        # The mean loss: V0 (1 - E[S_h/S0]) = V0 (1 - exp(mu t)).
        t = risk.horizon_days / TRADING_DAYS_PER_YEAR
        mean_exact = params.notional * (1 - math.exp(params.mu * t))
        sd_exact = params.notional * math.exp(params.mu * t) * math.sqrt(math.expm1(s * s))
        assert abs(risk.mean_loss - mean_exact) < 4 * sd_exact / math.sqrt(params.paths)


def test_tail_size_is_exact_decimal_arithmetic() -> None:
    # (1 - 0.99) * 100000 is 1000.0000000000009 in floats; the tail is 1000 paths.
    assert tail_size(Decimal("0.99"), 100_000) == 1000
    assert tail_size(Decimal("0.975"), 1000) == 25
    assert tail_size(Decimal("0.999"), 100) == 1


def test_var_is_the_mth_largest_loss_and_es_the_mean_of_the_m_largest() -> None:
    params = RiskParameters(paths=1000, horizons=(1,), confidence=(Decimal("0.99"),))
    losses = np.arange(1000, dtype=np.float64)[::-1].copy()  # 999 .. 0
    risk = horizon_risk(params, 0, losses)
    (tail,) = risk.tails
    assert tail.tail_paths == 10
    assert tail.var == 990.0
    assert tail.expected_shortfall == sum(range(990, 1000)) / 10
    assert risk.prob_loss == 999 / 1000


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    params = RiskParameters(seed=11, paths=3 * CHUNK_PATHS + 5, horizons=(1, 5))
    first = compute_risk(params)
    again = compute_risk(params)
    assert render_json(params, first) == render_json(params, again)
    assert render_csv(first) == render_csv(again)
    other = RiskParameters(seed=12, paths=3 * CHUNK_PATHS + 5, horizons=(1, 5))
    assert render_csv(compute_risk(other)) != render_csv(first)


def test_chunks_are_independent_streams_of_fixed_size() -> None:
    params = RiskParameters(seed=3, paths=2 * CHUNK_PATHS + 10, horizons=(2,))
    assert simulate_chunk(params, 0).shape == (1, CHUNK_PATHS)
    assert simulate_chunk(params, 2).shape == (1, 10)
    assert not np.array_equal(simulate_chunk(params, 0), simulate_chunk(params, 1))
    np.testing.assert_array_equal(simulate_chunk(params, 1), simulate_chunk(params, 1))


def test_parameters_from_env_defaults_and_normalization() -> None:
    params = RiskParameters.from_env(
        Env(
            {
                "COMPUTATION_HORIZONS": "20, 1,10,1",
                "COMPUTATION_CONFIDENCE": "0.990,0.95",
                "COMPUTATION_MU": "-0.1",
            }
        )
    )
    assert params.horizons == (1, 10, 20)
    assert params.confidence == (Decimal("0.95"), Decimal("0.99"))
    assert params.mu == -0.1
    assert RiskParameters.from_env(Env({})) == RiskParameters()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("COMPUTATION_PATHS", "ten"),
        ("COMPUTATION_PATHS", "10"),
        ("COMPUTATION_PATHS", "20000000"),
        ("COMPUTATION_SEED", "-1"),
        ("COMPUTATION_S0", "0"),
        ("COMPUTATION_SIGMA", "nan"),
        ("COMPUTATION_MU", "9"),
        ("COMPUTATION_NOTIONAL", "-5"),
        ("COMPUTATION_HORIZONS", "1,x"),
        ("COMPUTATION_HORIZONS", "0"),
        ("COMPUTATION_HORIZONS", ","),
        ("COMPUTATION_CONFIDENCE", "1"),
        ("COMPUTATION_CONFIDENCE", "0.9,abc"),
    ],
)
def test_bad_parameters_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        RiskParameters.from_env(Env({variable: value}))
    assert info.value.variable == variable


def test_memory_bound_on_paths_times_horizons() -> None:
    env = Env({"COMPUTATION_PATHS": "10000000", "COMPUTATION_HORIZONS": "1,2,3,4,5,6"})
    with pytest.raises(ConfigError) as info:
        RiskParameters.from_env(env)
    assert info.value.variable == "COMPUTATION_PATHS"


def test_a_parameters_job_reads_its_parameters_and_reports_their_public_dict() -> None:
    env = Env({"COMPUTATION_SEED": "7", "COMPACT_FROM": "2024-05-01", "COMPACT_TO": "2024-05-02"})
    computation = ComputationJob.from_env(env)
    assert computation.params == RiskParameters.from_env(env)
    assert computation.parameters() == computation.params.public_dict()
    assert computation.parameters()["seed"] == 7
    compact = CompactJob.from_env(env)
    assert compact.params == CompactParameters.from_env(env)
    assert compact.parameters() == {
        "from": "2024-05-01",
        "to": "2024-05-02",
        "book_snapshot_levels": 25,
        "book_snapshot_interval": 1.0,
    }
