"""``feedvault batch computation``: Monte Carlo risk of GBM price paths (docs: batch.md).

The model. One long position worth ``V0 = COMPUTATION_NOTIONAL`` in an asset priced
``S0 = COMPUTATION_S0`` follows geometric Brownian motion with annual drift ``mu`` and
volatility ``sigma``, simulated in daily steps (``dt = 1/252``, trading days)::

    log S(t+dt) = log S(t) + (mu - sigma**2 / 2) dt + sigma sqrt(dt) Z,   Z ~ N(0, 1)

The loss at horizon ``h`` days is ``L_h = V0 (1 - S_h / S0)`` (positive = money lost). For each
confidence ``a`` (e.g. 0.99), over ``n`` paths, with the tail size ``m = ceil((1 - a) n)``
(exact decimal arithmetic, at least 1):

* ``VaR_a(h)`` = the ``m``-th largest simulated loss (the empirical ``a``-quantile of ``L_h``);
* ``ES_a(h)``  = the mean of the ``m`` largest losses (expected shortfall: the mean loss beyond
  the VaR), summed exactly (``math.fsum``), so the order of summation cannot change a digit.

For reference the output also carries the closed forms (``S_h / S0`` is lognormal with
``m_h = (mu - sigma**2/2) h/252``, ``s_h = sigma sqrt(h/252)``, ``z = Phi^-1(1 - a)``)::

    VaR = V0 (1 - exp(m_h + s_h z))
    ES  = V0 (1 - exp(m_h + s_h**2 / 2) Phi(z - s_h) / (1 - a))

Reproducible: path chunk ``i`` (``CHUNK_PATHS`` paths) draws from
``Generator(PCG64(SeedSequence(seed, spawn_key=(i,))))``, and its losses go to fixed positions,
so the result depends on the parameters only, never on how many threads ran the chunks or in
which order they finished: the same seed gives byte-identical outputs (on the same numpy
build). Outputs, with sorted keys and values rounded to fixed decimals:

* ``{OUTPUT_PREFIX}computation/risk.json``: parameters, and per horizon the loss mean,
  standard deviation, probability of a loss, and per confidence VaR / ES (simulated and closed
  form) with the tail size;
* ``{OUTPUT_PREFIX}computation/risk.csv``: one row per (horizon, confidence).

Memory holds every path's loss at every horizon (8 bytes each; at most
``MAX_LOSS_VALUES``); the simulation runs in chunks of tens of milliseconds through
``ctx.run_cpu``, so a deadline or SIGTERM stops it promptly.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from statistics import NormalDist
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from batch.job import JobContext, ParametersJob
from engine.errors import ConfigError
from engine.settings import Env

NAME: Final = "computation"
_Item = TypeVar("_Item", int, Decimal)
TRADING_DAYS_PER_YEAR: Final = 252
CHUNK_PATHS: Final = 8192
"""Paths per ``run_cpu`` call (and per random stream). Part of the result's definition."""
DAY_BLOCK: Final = 64
"""Days of normals drawn at once per chunk (bounds a chunk's memory to ~4 MiB)."""
MAX_PATHS: Final = 10_000_000
MAX_HORIZON_DAYS: Final = 2520
MAX_HORIZONS: Final = 16
MAX_CONFIDENCES: Final = 8
MAX_LOSS_VALUES: Final = 50_000_000
"""Paths x horizons kept in memory (400 MB of float64)."""
MONEY_DECIMALS: Final = 4
PROBABILITY_DECIMALS: Final = 6

Losses = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class RiskParameters:
    """The computation's parameters, validated (see :meth:`from_env`)."""

    seed: int = 0
    paths: int = 100_000
    s0: float = 100.0
    mu: float = 0.05
    sigma: float = 0.2
    notional: float = 1_000_000.0
    horizons: tuple[int, ...] = (1, 10, 20)
    confidence: tuple[Decimal, ...] = (Decimal("0.95"), Decimal("0.99"))

    @classmethod
    def from_env(cls, env: Env) -> RiskParameters:
        """``COMPUTATION_SEED`` (int >= 0, default 0), ``COMPUTATION_PATHS`` (100 .. 10^7,
        default 100000), ``COMPUTATION_S0`` (> 0, default 100), ``COMPUTATION_MU`` (annual
        drift, -5 .. 5, default 0.05), ``COMPUTATION_SIGMA`` (annual volatility, > 0 .. 5,
        default 0.2), ``COMPUTATION_NOTIONAL`` (position value, > 0, default 1e6),
        ``COMPUTATION_HORIZONS`` (trading days, comma list, default ``1,10,20``),
        ``COMPUTATION_CONFIDENCE`` (comma list in (0, 1), default ``0.95,0.99``).
        :class:`ConfigError` names the variable at fault."""
        paths = env.integer("COMPUTATION_PATHS", DEFAULTS.paths, minimum=100)
        if paths > MAX_PATHS:
            raise ConfigError("COMPUTATION_PATHS", f"must be at most {MAX_PATHS:,}, got {paths:,}")
        horizons = _horizons(env.raw("COMPUTATION_HORIZONS"), DEFAULTS.horizons)
        if paths * len(horizons) > MAX_LOSS_VALUES:
            raise ConfigError(
                "COMPUTATION_PATHS",
                f"{paths:,} paths x {len(horizons)} horizons exceeds {MAX_LOSS_VALUES:,} "
                "losses held in memory",
            )
        return cls(
            seed=env.integer("COMPUTATION_SEED", DEFAULTS.seed, minimum=0),
            paths=paths,
            s0=_real(env, "COMPUTATION_S0", DEFAULTS.s0, low=0.0, high=1e12),
            mu=_real(env, "COMPUTATION_MU", DEFAULTS.mu, low=-5.0, high=5.0, low_open=False),
            sigma=_real(env, "COMPUTATION_SIGMA", DEFAULTS.sigma, low=0.0, high=5.0),
            notional=_real(env, "COMPUTATION_NOTIONAL", DEFAULTS.notional, low=0.0, high=1e15),
            horizons=horizons,
            confidence=_confidence(env.raw("COMPUTATION_CONFIDENCE"), DEFAULTS.confidence),
        )

    def public_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "paths": self.paths,
            "s0": self.s0,
            "mu": self.mu,
            "sigma": self.sigma,
            "notional": self.notional,
            "horizons_days": list(self.horizons),
            "confidence": [float(c) for c in self.confidence],
            "days_per_year": TRADING_DAYS_PER_YEAR,
            "chunk_paths": CHUNK_PATHS,
            "model": "gbm-daily",
        }


DEFAULTS: Final = RiskParameters()


def _real(
    env: Env, name: str, default: float, *, low: float, high: float, low_open: bool = True
) -> float:
    text = env.raw(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {text!r}") from None
    if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
        bound = "greater than" if low_open else "at least"
        raise ConfigError(name, f"must be {bound} {low:g} and at most {high:g}, got {text!r}")
    return value


def _horizons(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if text is None:
        return default
    return _distinct(text, "COMPUTATION_HORIZONS", _horizon, "horizons", MAX_HORIZONS)


def _horizon(item: str) -> int:
    try:
        day = int(item)
    except ValueError:
        raise ConfigError(
            "COMPUTATION_HORIZONS", f"{item!r} is not a whole number of days"
        ) from None
    if not 1 <= day <= MAX_HORIZON_DAYS:
        raise ConfigError("COMPUTATION_HORIZONS", f"{day} is outside 1..{MAX_HORIZON_DAYS} days")
    return day


def _confidence(text: str | None, default: tuple[Decimal, ...]) -> tuple[Decimal, ...]:
    if text is None:
        return default
    return _distinct(
        text, "COMPUTATION_CONFIDENCE", _level, "confidence levels", MAX_CONFIDENCES, "levels"
    )


def _level(item: str) -> Decimal:
    try:
        level = Decimal(item)
    except InvalidOperation:
        raise ConfigError("COMPUTATION_CONFIDENCE", f"{item!r} is not a number") from None
    if not level.is_finite() or not 0 < level < 1:
        raise ConfigError(
            "COMPUTATION_CONFIDENCE", f"{item!r} must be strictly between 0 and 1 (e.g. 0.99)"
        )
    return level.normalize()


def _distinct(
    text: str,
    name: str,
    parse: Callable[[str], _Item],
    what: str,
    most: int,
    unit: str | None = None,
) -> tuple[_Item, ...]:
    """The distinct ``parse(item)`` of the comma list ``text`` (blank items skipped), sorted.
    :class:`ConfigError` for ``name`` when it lists no ``what`` or more than ``most`` (counted
    in ``unit``, ``what`` by default); ``parse`` raises it for a bad item."""
    items = {parse(item) for item in map(str.strip, text.split(",")) if item}
    if not items:
        raise ConfigError(name, f"lists no {what}")
    if len(items) > most:
        raise ConfigError(name, f"lists {len(items)} {unit or what}; at most {most}")
    return tuple(sorted(items))


def tail_size(confidence: Decimal, paths: int) -> int:
    """``m = ceil((1 - a) n)``, exactly (no float rounding), at least 1."""
    return max(1, math.ceil(Fraction(1 - confidence) * paths))


def chunk_count(paths: int) -> int:
    return -(-paths // CHUNK_PATHS)


def simulate_chunk(params: RiskParameters, chunk: int) -> Losses:
    """Losses of chunk ``chunk``'s paths at every horizon: shape ``(horizons, count)``.
    Pure and thread-safe (its own generator); deterministic in ``(params, chunk)``."""
    start = chunk * CHUNK_PATHS
    count = min(CHUNK_PATHS, params.paths - start)
    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(params.seed, spawn_key=(chunk,)))
    )
    dt = 1.0 / TRADING_DAYS_PER_YEAR
    drift = (params.mu - 0.5 * params.sigma**2) * dt
    vol = params.sigma * math.sqrt(dt)
    log_return = np.zeros(count)
    losses = np.empty((len(params.horizons), count))
    day = 0
    for index, horizon in enumerate(params.horizons):
        while day < horizon:
            block = min(DAY_BLOCK, horizon - day)
            shocks = rng.standard_normal((block, count))
            log_return += drift * block + vol * shocks.sum(axis=0)
            day += block
        losses[index] = -params.notional * np.expm1(log_return)
    return losses


@dataclass(frozen=True, slots=True)
class TailRisk:
    """VaR and ES at one confidence, simulated and closed-form."""

    confidence: Decimal
    tail_paths: int
    var: float
    expected_shortfall: float
    var_analytic: float
    expected_shortfall_analytic: float


@dataclass(frozen=True, slots=True)
class HorizonRisk:
    """The loss distribution's summary at one horizon."""

    horizon_days: int
    mean_loss: float
    std_loss: float
    prob_loss: float
    tails: tuple[TailRisk, ...]


def analytic_var_es(
    params: RiskParameters, horizon: int, confidence: Decimal
) -> tuple[float, float]:
    """Closed-form VaR and ES of ``L_h`` under GBM (see the module docstring)."""
    t = horizon / TRADING_DAYS_PER_YEAR
    m = (params.mu - 0.5 * params.sigma**2) * t
    s = params.sigma * math.sqrt(t)
    alpha = float(confidence)
    z = NormalDist().inv_cdf(1 - alpha)
    var = -params.notional * math.expm1(m + s * z)
    es = params.notional * (1 - math.exp(m + s * s / 2) * NormalDist().cdf(z - s) / (1 - alpha))
    return var, es


def horizon_risk(params: RiskParameters, index: int, losses: Losses) -> HorizonRisk:
    """Summarize ``losses`` (every path's loss at ``params.horizons[index]``).
    Pure; reads ``losses`` without changing it."""
    n = losses.shape[0]
    horizon = params.horizons[index]
    sizes = [tail_size(c, n) for c in params.confidence]
    ranks = sorted({n - m for m in sizes})
    ordered = np.partition(losses, ranks)
    tails = []
    for confidence, m in zip(params.confidence, sizes, strict=True):
        var_a, es_a = analytic_var_es(params, horizon, confidence)
        tail = ordered[n - m :]
        tails.append(
            TailRisk(
                confidence=confidence,
                tail_paths=m,
                var=float(ordered[n - m]),
                expected_shortfall=math.fsum(tail.tolist()) / m,
                var_analytic=var_a,
                expected_shortfall_analytic=es_a,
            )
        )
    return HorizonRisk(
        horizon_days=horizon,
        mean_loss=float(np.mean(losses)),
        std_loss=float(np.std(losses)),
        prob_loss=int(np.count_nonzero(losses > 0)) / n,
        tails=tuple(tails),
    )


def compute_risk(params: RiskParameters) -> list[HorizonRisk]:
    """The whole computation in the calling thread (for tests and notebooks); the job runs
    the same pieces through ``run_cpu``."""
    losses = np.empty((len(params.horizons), params.paths))
    for chunk in range(chunk_count(params.paths)):
        start = chunk * CHUNK_PATHS
        block = simulate_chunk(params, chunk)
        losses[:, start : start + block.shape[1]] = block
    return [horizon_risk(params, i, losses[i]) for i in range(len(params.horizons))]


def _money(value: float) -> float:
    return round(value, MONEY_DECIMALS)


def render_json(params: RiskParameters, risks: Sequence[HorizonRisk]) -> bytes:
    """``risk.json``: sorted keys, 2-space indent, rounded values; no run id or time, so
    the same parameters give the same bytes."""
    document = {
        "job": NAME,
        "parameters": params.public_dict(),
        "horizons": [
            {
                "horizon_days": r.horizon_days,
                "mean_loss": _money(r.mean_loss),
                "std_loss": _money(r.std_loss),
                "prob_loss": round(r.prob_loss, PROBABILITY_DECIMALS),
                "tails": [
                    {
                        "confidence": float(t.confidence),
                        "tail_paths": t.tail_paths,
                        "var": _money(t.var),
                        "expected_shortfall": _money(t.expected_shortfall),
                        "var_analytic": _money(t.var_analytic),
                        "expected_shortfall_analytic": _money(t.expected_shortfall_analytic),
                    }
                    for t in r.tails
                ],
            }
            for r in risks
        ],
    }
    return orjson.dumps(
        document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    )


CSV_HEADER: Final = (
    "horizon_days,confidence,var,expected_shortfall,var_analytic,expected_shortfall_analytic,"
    "tail_paths,mean_loss,std_loss,prob_loss"
)


def render_csv(risks: Sequence[HorizonRisk]) -> bytes:
    """``risk.csv``: one row per (horizon, confidence), fixed decimals."""
    money = f".{MONEY_DECIMALS}f"
    lines = [CSV_HEADER]
    for r in risks:
        for t in r.tails:
            lines.append(
                f"{r.horizon_days},{t.confidence},{t.var:{money}},"
                f"{t.expected_shortfall:{money}},{t.var_analytic:{money}},"
                f"{t.expected_shortfall_analytic:{money}},{t.tail_paths},"
                f"{r.mean_loss:{money}},{r.std_loss:{money}},"
                f"{r.prob_loss:.{PROBABILITY_DECIMALS}f}"
            )
    return ("\n".join(lines) + "\n").encode()


class ComputationJob(ParametersJob[RiskParameters]):
    """The job object (:class:`batch.job.Job`)."""

    name = NAME
    needs_input = False
    parameters_type = RiskParameters

    async def run(self, ctx: JobContext) -> None:
        """Simulate every chunk (``ctx.cpu_workers`` at a time), summarize each horizon, then
        write ``risk.json`` and ``risk.csv``; nothing is written before the end."""
        params = self.params
        ctx.progress.unit = "paths"
        ctx.progress.set_totals(rows=params.paths)
        losses = np.empty((len(params.horizons), params.paths))
        chunks = iter(range(chunk_count(params.paths)))

        async def worker() -> None:
            for chunk in chunks:  # shared: each worker takes the next chunk
                block = await ctx.run_cpu(simulate_chunk, params, chunk)
                start = chunk * CHUNK_PATHS
                losses[:, start : start + block.shape[1]] = block
                ctx.progress.add_rows(block.shape[1])

        async with asyncio.TaskGroup() as tg:
            for _ in range(min(ctx.cpu_workers, chunk_count(params.paths))):
                tg.create_task(worker())
        risks = [
            await ctx.run_cpu(horizon_risk, params, index, losses[index])
            for index in range(len(params.horizons))
        ]
        rows = sum(len(r.tails) for r in risks)
        await ctx.write_output("risk.json", render_json(params, risks), records=rows)
        await ctx.write_output("risk.csv", render_csv(risks), records=rows)
