"""Shadow prices: the multipliers of the capacity rows at a proven Lagrangian bound.

One window: one multiplier per pool on its GPU-hour row, from the large engine's bundle method
or, for plans of the exact engine, from the same routine run after the solve
(`lagrangian.smoothed_ascent` then `lagrangian.DualAscent`, whose maximum is the LP relaxation's
value). A horizon: one multiplier per (pool, slot) GPU row, per (link, slot) bandwidth row and on
the carbon cap, from the horizon engine's ascent or a Polyak ascent after the solve. Either way
the bound they prove, L(u), is evaluated again at exactly the saved values and stored with them,
so that ``opt(cap + d) >= bound - u . d`` holds for every capacity change ``d``
(docs/formulation.md §9).
"""

from __future__ import annotations

import time

import numpy as np

from models import BANDWIDTH_QUANTUM_GBPS, Instance, LinkPrice, PoolPrice, ShadowPrices
from scheduler.compile import Options

WINDOW_SECONDS = 2.0
"""The most time the single-window dual may take after an exact solve (it converges in well under
a second on the exact engine's sizes, up to 600 options: docs/explain.md)."""

TIMED_STEPS = 300
"""Polyak steps after an exact horizon solve (a subgradient method: the saved bound says how
close the prices came)."""

TIMED_SECONDS = 2.0
"""The most time those steps may take."""

ZERO = 1e-9
"""Multipliers below this share of the largest are noise of the ascent and saved as 0."""


def _clean(values: np.ndarray) -> np.ndarray:
    values = np.maximum(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0), 0.0)
    top = float(values.max(initial=0.0))
    values[values <= ZERO * top] = 0.0
    return values


def window_prices(instance: Instance, options: Options, lam: np.ndarray | None = None,
                  seconds: float = WINDOW_SECONDS) -> ShadowPrices | None:
    """Shadow prices of a single-window instance: the engine's ``lam`` (CNY per quantum, one per
    pool) or, without it, the Lagrangian dual maximized now. None when no bound exists (a
    must-serve demand without any option)."""
    from scheduler.engines.lagrangian import CapacityRelaxation, DualAscent, smoothed_ascent

    if options.stranded_must_serve:
        return None
    relax = CapacityRelaxation(options)
    method = "large engine: bundle method on the capacity rows"
    if lam is None:
        deadline = time.perf_counter() + seconds
        smoothed = smoothed_ascent(relax, time.perf_counter() + 0.5 * seconds)
        dual = DualAscent(relax, lam0=smoothed.lam)
        dual.delta = 1e-2 * dual.scale
        dual.run(max_steps=10 * options.n_pools + 200, deadline=deadline)
        lam = dual.best.lam
        method = "after the solve: bundle method on the capacity rows" + (
            " (stopped at its time limit)" if time.perf_counter() >= deadline else "")
    lam = _clean(lam)
    bound = relax.evaluate(lam).bound
    per_hour = lam / options.quantum
    pools = tuple(PoolPrice(region=region.id, pool=pool.id, cny_per_gpu_hour=float(per_hour[p]))
                  for p, (region, pool) in enumerate(instance.pools()))
    return ShadowPrices(method=method, bound_cny=float(bound), pools=pools)


def timed_prices(instance: Instance, problem, multipliers=None, target: float | None = None,
                 steps: int = TIMED_STEPS, seconds: float = TIMED_SECONDS) -> ShadowPrices | None:
    """Shadow prices of a horizon instance: the engine's `timed_dual.Multipliers` or, without
    them, ``steps`` Polyak steps towards ``target`` (the plan's objective)."""
    from scheduler.engines.timed_dual import Multipliers, PolyakAscent, TimedRelaxation

    b = problem.batch
    if np.any(b.must_serve & (np.diff(b.start) == 0)) or (b.n_demands and not b.n_options):
        return None  # no bound; or no batch option at all, which TimedRelaxation does not take
    relax = TimedRelaxation(problem)
    method = "horizon engine: Polyak ascent on the pool-slot, link-slot and carbon rows"
    if multipliers is None:
        ascent = PolyakAscent(relax)
        deadline = time.perf_counter() + seconds
        while ascent.steps < steps and not ascent.converged and time.perf_counter() < deadline:
            ascent.step(target)
        multipliers = ascent.best.multipliers
        method = f"after the solve: {ascent.steps} Polyak steps on the pool-slot, link-slot and carbon rows"
    mult = Multipliers(_clean(multipliers.pool), _clean(multipliers.link),
                       max(float(multipliers.carbon), 0.0))
    bound = relax.evaluate(mult).bound
    h = problem.slot_hours
    pools = []
    for p, (region, pool) in enumerate(instance.pools()):
        per_hour = mult.pool[p] / h
        pools.append(PoolPrice(region=region.id, pool=pool.id, cny_per_gpu_hour=float(per_hour.mean()),
                               by_slot_cny_per_gpu_hour=tuple(per_hour.tolist())))
    links = tuple(
        LinkPrice(source=link.source, target=link.target,
                  by_slot_cny_per_gbps_hour=tuple((mult.link[k] / BANDWIDTH_QUANTUM_GBPS / h).tolist()))
        for k, link in enumerate(instance.links) if mult.link[k].any())
    carbon = mult.carbon * 1e6 if problem.carbon_cap_g is not None else None
    return ShadowPrices(method=method, bound_cny=float(bound), pools=tuple(pools), links=links,
                        carbon_cny_per_t_co2=carbon)


def window_lambda(prices: ShadowPrices, options: Options, instance: Instance) -> np.ndarray:
    """The saved prices as multipliers per quantum, one per pool (order of Instance.pools())."""
    by_id = {price.pool: price.cny_per_gpu_hour for price in prices.pools}
    return np.array([by_id.get(pool.id, 0.0) for _, pool in instance.pools()]) * options.quantum


def timed_multipliers(prices: ShadowPrices, problem, instance: Instance):
    """The saved prices as `timed_dual.Multipliers` (per GPU-slot, bandwidth quantum-slot, gram)."""
    from scheduler.engines.timed_dual import Multipliers

    h = problem.slot_hours
    pool = np.zeros(problem.avail.shape)
    by_id = {price.pool: price for price in prices.pools}
    for p, (_, spec) in enumerate(instance.pools()):
        price = by_id.get(spec.id)
        if price is not None and price.by_slot_cny_per_gpu_hour:
            pool[p] = np.asarray(price.by_slot_cny_per_gpu_hour) * h
    link = np.zeros(problem.bandwidth.shape)
    index = {frozenset((l.source, l.target)): k for k, l in enumerate(instance.links)}
    for price in prices.links:
        k = index.get(frozenset((price.source, price.target)))
        if k is not None:
            link[k] = np.asarray(price.by_slot_cny_per_gbps_hour) * BANDWIDTH_QUANTUM_GBPS * h
    return Multipliers(pool, link, (prices.carbon_cny_per_t_co2 or 0.0) / 1e6)
