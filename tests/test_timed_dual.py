"""The Lagrangian bound's evaluation (scheduler/engines/timed_dual.py) pinned against the plain
computation it replaced (issue #7): the same option prices, starts, service cells and L, bit
for bit, on small generated instances with data transfers, services and a binding carbon cap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scheduler.engines import timed_dual
from scheduler.engines.timed_dual import Multipliers, TimedRelaxation, prefix, service_cell_bound
from scheduler.generate import china_instance
from scheduler.timed import TimedProblem, compile_timed
from tests.test_timed_large import make_problem


# -- the computation before issue #7, kept plain ---------------------------------------------------
def reference_prices(relax: TimedRelaxation, mult: Multipliers) -> tuple[np.ndarray, np.ndarray]:
    """(reduced cost, start) of the best start of every option, all starts of one option padded
    to the widest, the window sums read from the prefix table per start."""
    pr = relax.pricer
    ks = np.arange(pr.K)
    mu_prefix = prefix(mult.pool)
    route_prefix = relax.routes.sums(prefix(mult.link))
    s, valid = pr.starts(ks)
    rc = pr.cost(ks, s)
    rc[~valid] = np.inf
    if mult.carbon:
        rc += mult.carbon * pr.grams(ks, s)
    if mu_prefix.any():
        flat = mu_prefix.ravel()
        at = pr.pool[ks, None] * (pr.S + 1) + s
        window = np.take(flat, at + pr.n[ks, None])
        window -= np.take(flat, at)
        window *= pr.gang[ks, None]
        rc += window
    if np.any(pr.moves) and route_prefix.any():
        r = np.maximum(pr.route[ks, None], 0)
        rc += pr.rate(ks, s) * (route_prefix[r, s] - route_prefix[r, pr.rel[ks, None]])
    j = np.argmin(rc, axis=1)
    return rc[np.arange(len(ks)), j], np.minimum(pr.first + j, pr.last)


def reference_cells(per_replica, per_quantum, kappa, start, load, penalty):
    """The service cells with every piece of every cell sorted per slot (terms, replicas,
    served, magnitude)."""
    J, S = per_replica.shape
    n_s = len(start) - 1
    counts = np.diff(start)
    owner = np.repeat(np.arange(n_s), counts)
    L = load[owner].astype(np.int64)
    kap = np.maximum(kappa.astype(np.int64), 1)[:, None]
    full = (L // kap) * kap
    rem = L - full
    gain = penalty[owner][:, None] - per_quantum
    usable = (kappa > 0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(usable, gain - per_replica / kap, -np.inf)
        beta = np.where(usable & (rem > 0), gain - per_replica / np.maximum(rem, 1), -np.inf)
    slope = np.concatenate([rho, beta])
    length = np.concatenate([np.where(rho > 0, full, 0), np.where(beta > 0, rem, 0)]).astype(np.float64)
    owner2 = np.concatenate([owner, owner])
    order = np.lexsort((-slope, np.broadcast_to(owner2[:, None], slope.shape)), axis=0)
    s_len = np.take_along_axis(length, order, axis=0)
    s_slope = np.take_along_axis(slope, order, axis=0)
    sorted_owner = np.repeat(np.arange(n_s), 2 * counts)
    before = np.cumsum(s_len, axis=0) - s_len
    seg = 2 * start[:-1]
    has = counts > 0
    base = np.zeros((n_s, S))
    base[has] = before[seg[has]]
    room = load[sorted_owner].astype(np.float64) - (before - base[sorted_owner])
    take = np.clip(room, 0.0, s_len)
    gain_piece = take * np.where(take > 0, s_slope, 0.0)
    saving = np.zeros((n_s, S))
    saving[has] = np.add.reduceat(gain_piece, seg[has], axis=0)
    taken = np.empty_like(take)
    np.put_along_axis(taken, order, take, axis=0)
    take_a, take_b = taken[:J], taken[J:]
    with np.errstate(divide="ignore", invalid="ignore"):
        replicas = take_a / kap + np.where(rem > 0, take_b / np.maximum(rem, 1), 0.0)
    served = take_a + take_b
    full_cost = load * penalty[:, None]
    magnitude = float(full_cost.sum() + np.abs(gain_piece).sum()
                      + (np.abs(per_replica) * replicas).sum() + (np.abs(per_quantum) * served).sum())
    return full_cost - saving, replicas, served, magnitude


def reference_value(relax: TimedRelaxation, mult: Multipliers) -> float:
    """L at ``mult`` from the reference prices and cells (the sum as `evaluate` takes it)."""
    pb = relax.problem
    b, sv = pb.batch, pb.services
    rc, _ = reference_prices(relax, mult)
    low = np.full(len(b.rows), np.inf)
    for d in range(len(b.rows)):
        if b.start[d + 1] > b.start[d]:
            low[d] = rc[b.start[d]: b.start[d + 1]].min()
    terms = np.where(low <= relax.alt, low, relax.alt)
    terms = np.where(np.isfinite(terms), terms, 0.0)
    per_replica, per_quantum = relax.service_prices(mult, np.arange(len(sv.pool)))
    cells = reference_cells(per_replica, per_quantum, sv.kappa, sv.start, sv.load,
                            sv.penalty_per_quantum)[0]
    priced = math.fsum((mult.pool * relax.avail).ravel()) + math.fsum((mult.link * relax.bandwidth).ravel())
    cap = float(pb.carbon_cap_g) if pb.carbon_cap_g is not None else 0.0
    return math.fsum(np.concatenate([terms, cells.ravel()])) - priced - mult.carbon * cap


# -- instances and multipliers -----------------------------------------------------------------
def generated(seed: int, capped: bool) -> TimedProblem:
    """A small China instance (batch jobs moving data, services); with ``capped`` a carbon cap
    at half the emissions of every job at its cheapest start (binding at zero multipliers)."""
    pb = compile_timed(china_instance(demands=70, seed=seed, hours=12))
    if not capped:
        return pb
    point = TimedRelaxation(pb).evaluate(Multipliers.zeros(pb))
    chosen = point.batch_option >= 0
    pricer = timed_dual.StartPricer(pb)
    used = pricer.grams(point.batch_option[chosen], point.batch_start[chosen][:, None]).sum()
    return compile_timed(china_instance(demands=70, seed=seed, hours=12,
                                        carbon_cap_t_co2=float(used) / 2e6))


def multipliers(pb: TimedProblem, rng: np.random.Generator, carbon: float) -> list[Multipliers]:
    """Zero, sparse and dense random multipliers (dense ones large enough to change choices)."""
    out = [Multipliers.zeros(pb)]
    for density in (0.1, 1.0):
        pool = rng.uniform(0, 30, pb.avail.shape) * (rng.random(pb.avail.shape) < density)
        link = rng.uniform(0, 5, pb.bandwidth.shape) * (rng.random(pb.bandwidth.shape) < density)
        out.append(Multipliers(pool, link, carbon * float(rng.uniform(0.5, 2))))
    return out


def assert_same(relax: TimedRelaxation, mult: Multipliers) -> None:
    point = relax.evaluate(mult)
    rc, start = reference_prices(relax, mult)
    chosen = point.batch_option >= 0
    assert np.array_equal(point.batch_start[chosen], start[point.batch_option[chosen]])
    b = relax.problem.batch
    for d in range(len(b.rows)):
        lo, hi = b.start[d], b.start[d + 1]
        assert point.batch_low[d] == (rc[lo:hi].min() if hi > lo else np.inf)
    assert point.value == reference_value(relax, mult)


@pytest.mark.parametrize("seed,capped", [(1, False), (2, True), (4, True)])
def test_evaluation_matches_the_plain_computation(seed, capped):
    """L, the relaxed choice and every demand's least reduced cost equal the plain computation's
    exactly, also with the kept start prices and with chunks too small to keep (afresh)."""
    pb = generated(seed, capped)
    assert np.any(pb.batch.data_gb > 0) and len(pb.services.rows)
    relax = TimedRelaxation(pb)
    if capped:
        assert relax.evaluate(Multipliers.zeros(pb)).carbon_excess > 0  # binding at zero
    rng = np.random.default_rng(seed)
    for mult in multipliers(pb, rng, carbon=0.002 if capped else 0.0) * 2:  # 2nd: kept prices
        assert_same(relax, mult)


@pytest.mark.parametrize("seed", range(4))
def test_evaluation_matches_on_gangs_and_a_cap(seed):
    """Hand-built problems with gangs of two, data on the link, services and a carbon cap."""
    pb = make_problem(seed, demands=12, pools=3, slots=8, services=2, carbon_cap=True)
    assert pb.batch.gang.max() > 1
    relax = TimedRelaxation(pb)
    for mult in multipliers(pb, np.random.default_rng(seed), carbon=0.01) * 2:
        assert_same(relax, mult)


def test_evaluation_without_kept_prices(monkeypatch):
    """Chunks of a few options, none kept between evaluations, no window table: the same L
    bit for bit."""
    pb = generated(2, True)
    rng = np.random.default_rng(5)
    mults = multipliers(pb, rng, carbon=0.002)
    kept = [TimedRelaxation(pb).evaluate(m) for m in mults]
    monkeypatch.setattr(timed_dual, "CHUNK_CELLS", 200)
    monkeypatch.setattr(timed_dual, "CACHED_CELLS", 0)
    monkeypatch.setattr(timed_dual, "WINDOW_CELLS", 0)  # the window sums start by start
    relax = TimedRelaxation(pb)
    assert len(relax.chunks()) > 5 and not relax.by_shape
    for m, want in zip(mults * 2, kept * 2):
        got = relax.evaluate(m)
        assert got.value == want.value and got.bound == want.bound
        assert np.array_equal(got.batch_option, want.batch_option)
        assert np.array_equal(got.batch_start, want.batch_start)
        assert np.array_equal(got.pool_excess, want.pool_excess)
        assert np.array_equal(got.link_excess, want.link_excess)
        assert got.carbon_excess == want.carbon_excess
    assert not relax._kept


@pytest.mark.parametrize("seed", range(6))
def test_service_cells_match_the_plain_computation(seed):
    """Random cells (several rows per service, loads above and below kappa, ties in slope,
    rows that cannot serve): terms, replicas and served equal; the float margin's magnitude
    agrees to 1e-12 (only its summation order changed)."""
    rng = np.random.default_rng(seed)
    n_s, S = 7, 9
    counts = rng.integers(0, 6, n_s)
    start = np.concatenate([[0], np.cumsum(counts)])
    J = int(start[-1])
    per_replica = np.round(rng.uniform(-2, 12, (J, S)), 0 if seed % 2 else 3)  # ties when rounded
    per_quantum = np.round(rng.uniform(0, 3, (J, S)), 1)
    kappa = rng.integers(0, 5, J)
    load = rng.integers(0, 12, (n_s, S))
    penalty = np.round(rng.uniform(1, 6, n_s), 1)
    got = service_cell_bound(per_replica, per_quantum, kappa, start, load, penalty)
    terms, replicas, served, magnitude = reference_cells(per_replica, per_quantum, kappa, start,
                                                         load, penalty)
    assert np.array_equal(got.terms, terms)
    assert np.array_equal(got.replicas, replicas)
    assert np.array_equal(got.served, served)
    assert got.magnitude == pytest.approx(magnitude, rel=1e-12)
