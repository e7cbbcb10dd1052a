"""Lagrangian relaxation of the time-expanded problem (docs/formulation.md §8.5).

With multipliers mu[p,t] >= 0 on the pool-slot rows, lam[l,t] >= 0 on the link-slot rows and
nu >= 0 (per gram) on the carbon row, every demand is priced on its own:

* a batch demand takes min(pi[d], min over (pool, start) of the start's cost plus
  gang * sum_{k<n} mu[p, s+k] + rate(s) * sum_{l in route} sum_{rel<=t<s} lam[l,t] + nu * grams);
  `StartPricer` prices all starts of many options at once from prefix sums over the slots, in
  chunks, so the (demand, pool, start) triples are never stored;
* a service, slot by slot, at a bound on its sub-problem with whole replicas
  (`service_cell_bound`: a fractional knapsack over the concave envelopes of each pool's saving
  against the penalty; exact when the slot's load is below one replica's, never below the LP
  relaxation with fractional replicas).

L(mu, lam, nu) = sum of those minima - mu.avail - lam.bandwidth - nu * cap is a lower bound for
any non-negative multipliers; `PolyakAscent` raises it by projected, row-scaled subgradient steps.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from models import BANDWIDTH_QUANTUM_GBPS, QUANTUM_SLACK
from scheduler.timed import TimedProblem

BOUND_SAFETY = 1e-12
"""Relative margin taken off the sum of the per-demand terms (their own rounding)."""
EPS = float(np.finfo(np.float64).eps)
CHUNK_CELLS = 1 << 20  # (option, start) cells priced at once
CACHED_CELLS = 1 << 25
"""Start prices kept between evaluations (12-20 bytes each, 8 more where the data moves: about
0.4-0.9 GB at most); the starts past it are priced afresh at every evaluation."""
WINDOW_CELLS = 1 << 23
"""The most entries of the window table (8 bytes each); with more (pool, slots, gang) shapes
than fit, the window sums are read from the prefix table start by start."""


def prefix(values: np.ndarray) -> np.ndarray:
    """Row-wise prefix sums with a leading zero: out[:, t] = sum(values[:, :t])."""
    out = np.zeros((values.shape[0], values.shape[1] + 1), dtype=np.float64)
    np.cumsum(values, axis=1, out=out[:, 1:])
    return out


@dataclass
class Multipliers:
    """mu[p,t] (pool-slot rows), lam[l,t] (link-slot rows), nu (carbon row, per gram)."""

    pool: np.ndarray  # float64 [pools, S]
    link: np.ndarray  # float64 [links, S]
    carbon: float = 0.0

    @classmethod
    def zeros(cls, problem: TimedProblem) -> Multipliers:
        return cls(np.zeros(problem.avail.shape), np.zeros(problem.bandwidth.shape), 0.0)

    def copy(self) -> Multipliers:
        return Multipliers(self.pool.copy(), self.link.copy(), self.carbon)


class Routes:
    """Route-link incidence: a route's sums and minima over its links, per slot."""

    def __init__(self, problem: TimedProblem):
        n_links = problem.bandwidth.shape[0]
        self.count = len(problem.routes)
        self.incidence = np.zeros((self.count, n_links), dtype=np.float64)
        for r, links in enumerate(problem.routes):
            self.incidence[r, np.asarray(links, dtype=np.int64)] = 1.0
        self.links = [np.asarray(links, dtype=np.int64) for links in problem.routes]
        self.of_link = [np.flatnonzero(self.incidence[:, l]) for l in range(n_links)]
        # Each route's links, padded with the index n_links (a row of unlimited room).
        width = max((len(x) for x in self.links), default=0)
        self.padded = np.full((self.count, max(width, 1)), n_links, dtype=np.int64)
        for r, links in enumerate(self.links):
            self.padded[r, : len(links)] = links

    def sums(self, per_link: np.ndarray) -> np.ndarray:
        """[routes, ...]: the sum over each route's links."""
        if not self.count:
            return np.zeros((0,) + per_link.shape[1:])
        return self.incidence @ per_link

    def minima(self, per_link: np.ndarray, routes: np.ndarray | None = None) -> np.ndarray:
        """[routes, S]: the least value over each route's links (huge for an empty route)."""
        rows = np.arange(self.count) if routes is None else np.asarray(routes, dtype=np.int64)
        huge = np.full((1, per_link.shape[1]), np.iinfo(np.int64).max // 4, dtype=np.int64)
        table = np.concatenate([per_link.astype(np.int64), huge])
        return table[self.padded[rows]].min(axis=1)


class StartPricer:
    """Prices every allowed start of batch options in vectorized chunks (nothing per triple kept).

    For option k (pool p, n slots) and start s:
        cost = fixed + [priced] (kwh_full (EP[s+n-1] - EP[s]) + kwh_last price[s+n-1])
               + carbon_price * grams / 1000
        grams = kwh_full (CP[s+n-1] - CP[s]) + kwh_last carbon[s+n-1]
    with EP, CP the prefix sums of the pool's weighted energy price and grid intensity.
    """

    def __init__(self, problem: TimedProblem):
        b = problem.batch
        self.problem = problem
        self.S = problem.slots
        self.n_batch = len(b.rows)
        self.K = len(b.pool)
        self.owner = np.repeat(np.arange(self.n_batch), np.diff(b.start))  # option -> batch demand
        self.pool = b.pool.astype(np.int64)
        self.n = b.slots.astype(np.int64)
        self.first = b.first.astype(np.int64)
        self.last = b.last.astype(np.int64)
        self.gang = b.gang.astype(np.int64)[self.owner]
        self.rel = b.release.astype(np.int64)[self.owner]
        self.route = b.route.astype(np.int64)
        self.moves = (self.route >= 0) & (b.data_gb > 0)
        self.bits = 8.0 * b.data_gb
        self.energy_prefix = prefix(problem.price)
        self.carbon_prefix = prefix(problem.carbon)
        max_price = getattr(b, "max_price", None)
        self.capped = (np.isfinite(max_price) if max_price is not None
                       else np.zeros(self.K, dtype=bool))
        self.raw_prefix = prefix(problem.raw_price) if np.any(self.capped) else None
        self.width = (self.last - self.first + 1).clip(min=0)
        # One table of per-slot cost per kWh: rows 0..P-1 priced energy plus carbon, rows
        # P..2P-1 carbon only (offers); flat, so that a start's cost is three gathers.
        P, S = problem.price.shape
        per_kwh = problem.carbon * (problem.carbon_price / 1000.0)
        table = np.concatenate([problem.price + per_kwh, per_kwh])
        self.kwh_table = table.ravel()
        self.kwh_prefix = prefix(table).ravel()
        self.table_row = self.pool + P * (~b.priced_energy).astype(np.int64)
        self.bits_per_slot = self.bits / (problem.slot_hours * 3600.0)
        self.fit_tables = None  # timed_large.FitTables, built by the first plan state

    def chunks(self, ks: np.ndarray):
        """Split option indices so that each chunk prices at most CHUNK_CELLS starts."""
        if not len(ks):
            return
        cells = np.cumsum(self.width[ks])
        lo = 0
        while lo < len(ks):
            base = cells[lo - 1] if lo else 0
            hi = int(np.searchsorted(cells, base + CHUNK_CELLS, side="right"))
            hi = max(hi, lo + 1)
            yield ks[lo:hi]
            lo = hi

    def starts(self, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(s [m, W], valid [m, W]): the allowed starts of options ``ks``, padded."""
        width = int(self.width[ks].max(initial=1))
        s = self.first[ks, None] + np.arange(width)[None, :]
        valid = s <= self.last[ks, None]
        np.minimum(s, self.last[ks, None], out=s)
        capped = self.capped[ks]
        if np.any(capped):  # rule 10 per start: the raw price within the demand's cap
            valid[capped] &= self.raw_price(ks[capped], s[capped]) <= self.problem.batch.max_price[ks[capped], None]
        return s, valid

    def raw_price(self, ks: np.ndarray, s: np.ndarray) -> np.ndarray:
        """What the customer pays for each start (rule 10): raw compute + transfer + energy."""
        b, pr = self.problem.batch, self.problem
        p = self.pool[ks, None]
        end = s + self.n[ks, None] - 1
        rp = self.raw_prefix
        raw = b.kwh_full[ks, None] * (rp[p, end] - rp[p, s]) + b.kwh_last[ks, None] * pr.raw_price[p, end]
        return b.price_fixed[ks, None] + raw * b.priced_energy[ks, None]

    def grams(self, ks: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Emissions in grams (unrounded) of each start."""
        b = self.problem.batch
        p = self.pool[ks, None]
        end = s + self.n[ks, None] - 1
        cp = self.carbon_prefix
        return (b.kwh_full[ks, None] * (cp[p, end] - cp[p, s])
                + b.kwh_last[ks, None] * self.problem.carbon[p, end])

    def cost(self, ks: np.ndarray, s: np.ndarray, grams: np.ndarray | None = None) -> np.ndarray:
        """The objective contribution c[d,p,s] of each start (``grams`` is not needed: the
        energy price and the carbon price per kWh are summed in one table)."""
        b = self.problem.batch
        row = self.table_row[ks, None]
        last = row * self.S + (s + self.n[ks, None] - 1)
        i0 = row * (self.S + 1) + s
        i1 = i0 + self.n[ks, None] - 1
        vp = self.kwh_prefix
        out = np.take(vp, i1)
        out -= np.take(vp, i0)
        out *= b.kwh_full[ks, None]
        out += b.kwh_last[ks, None] * np.take(self.kwh_table, last)
        out += b.fixed_cost[ks, None]
        return out

    def rate(self, ks: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Bandwidth quanta on each route link while the data moves (0 when it does not)."""
        h = self.problem.slot_hours
        moving = self.moves[ks]
        out = np.zeros(s.shape, dtype=np.int64)
        if not np.any(moving):
            return out
        gap = np.maximum(s[moving] - self.rel[ks[moving], None], 1)
        raw = self.bits[ks[moving], None] / (gap * h * 3600.0) / BANDWIDTH_QUANTUM_GBPS - QUANTUM_SLACK
        out[moving] = np.maximum(np.ceil(raw), 0)
        return out

    def magnitude(self, ks: np.ndarray, mu_prefix: np.ndarray, route_prefix: np.ndarray,
                  nu: float) -> np.ndarray:
        """Per option, a bound on the absolute size of every prefix sum its price reads: the
        float error of a price is below (S + 4) * EPS times this."""
        b, pr = self.problem.batch, self.problem
        p = self.pool[ks]
        kwh = np.abs(b.kwh_full[ks]) + np.abs(b.kwh_last[ks])
        out = np.abs(b.fixed_cost[ks]) + kwh * (
            np.abs(self.energy_prefix[p, -1]) + np.abs(pr.price[p]).max(axis=1)
            + (pr.carbon_price + nu) * (self.carbon_prefix[p, -1] + pr.carbon[p].max(axis=1)))
        out += self.gang[ks] * mu_prefix[p, -1]
        has = self.moves[ks]
        if np.any(has):
            first_rate = self.rate(ks[has], self.first[ks[has], None])[:, 0]
            out[has] += first_rate * route_prefix[self.route[ks[has]], -1]
        return out


@dataclass(frozen=True, eq=False)
class DualPoint:
    """L at one set of multipliers: its value, the proven bound, the relaxed choice, the
    supergradient (row usage minus capacity)."""

    multipliers: Multipliers
    value: float
    bound: float
    batch_option: np.ndarray  # int64 [batch]: relaxed option, -1 unserved
    batch_start: np.ndarray  # int64 [batch]
    pool_excess: np.ndarray  # float64 [pools, S]: usage - avail
    link_excess: np.ndarray  # float64 [links, S]
    carbon_excess: float  # grams - cap (0 without a cap)
    batch_low: np.ndarray  # float64 [batch]: least reduced cost over the starts (inf: no option)


@dataclass(frozen=True, eq=False)
class StartCosts:
    """The part of a chunk's start prices that no multiplier changes: c[d,p,s] (inf at starts
    that are not allowed), the flat index ``shape * (S + 1) + s`` of each start into the
    evaluation's window table (`TimedRelaxation.window_table`; ``pool * (S + 1) + s`` into the
    pools' prefix table when there are too many shapes for it), the grams when there is a carbon
    cap, and for the options whose data moves (rows ``moving`` of the chunk) the bandwidth
    quanta of each start and the flat indices ``route * (S + 1) + s`` and
    ``route * (S + 1) + release`` into the route prefix table."""

    cost: np.ndarray  # float64 [m, W]
    at: np.ndarray  # int32 [m, W]
    grams: np.ndarray | None  # float64 [m, W]
    moving: np.ndarray  # int64 [v]: rows of the chunk whose data moves
    rate: np.ndarray  # float32 or float64 [v, W]: quanta per link (whole numbers)
    route_at: np.ndarray  # int32 [v, W]
    release_at: np.ndarray  # int64 [v]


def flow_prices(static: StartCosts, route_prefix: np.ndarray) -> np.ndarray:
    """[v, W]: the link price of each start's data transfer, ``rate (R[s] - R[release])`` with R
    the route's prefix of link prices, for the rows ``static.moving`` of a chunk."""
    flat = route_prefix.ravel()
    flow = np.take(flat, static.route_at)
    flow -= np.take(flat, static.release_at)[:, None]
    flow *= static.rate
    return flow


class TimedRelaxation:
    """Evaluates L(mu, lam, nu) of §8.5; memory: a few floats per option and per service row."""

    def __init__(self, problem: TimedProblem, pricer: StartPricer | None = None,
                 routes: Routes | None = None):
        self.problem = problem
        self.pricer = pricer or StartPricer(problem)
        self.routes = routes or Routes(problem)
        b, sv = problem.batch, problem.services
        self.n_batch = len(b.rows)
        self.alt = np.where(b.must_serve, np.inf, b.penalty).astype(np.float64)
        self.service_owner = np.repeat(np.arange(len(sv.rows)), np.diff(sv.start))
        self.cap_g = problem.carbon_cap_g
        self.evaluations = 0
        self.avail = problem.avail.astype(np.float64)
        self.bandwidth = problem.bandwidth.astype(np.float64)
        self._kept: dict[int, tuple[np.ndarray, StartCosts]] = {}  # chunk -> (its options, costs)
        self._kept_cells = 0
        pr = self.pricer
        # Options with the same (pool, slots, gang) read the same window sums of mu: one row
        # of the evaluation's window table per such shape.
        key = (pr.pool * (int(pr.n.max(initial=0)) + 1) + pr.n) * (int(pr.gang.max(initial=0)) + 1) + pr.gang
        shapes, self.shape_of = np.unique(key, return_index=True, return_inverse=True)[1:]
        pairs, pair_of = np.unique(pr.pool[shapes] * (int(pr.n.max(initial=0)) + 1) + pr.n[shapes],
                                   return_index=True, return_inverse=True)[1:]
        self.shape_pair = pair_of  # shape -> its (pool, slots) pair
        self.shape_gang = pr.gang[shapes].astype(np.float64)[:, None]
        S = problem.slots
        self.by_shape = len(shapes) * (S + 1) <= WINDOW_CELLS
        s = np.arange(S + 1)[None, :] if self.by_shape else np.zeros((1, 0), dtype=np.int64)
        pair_pool, pair_n = pr.pool[shapes[pairs], None], pr.n[shapes[pairs], None]
        self.pair_from = pair_pool * (S + 1) + s  # flat mu_prefix index of each pair's start
        self.pair_to = pair_pool * (S + 1) + np.minimum(s + pair_n, S)
        self._service_shape: ServiceShape | None = None
        self._chunks: list[np.ndarray] | None = None

    # -- batch -------------------------------------------------------------------------------
    def chunk_costs(self, index: int, ks: np.ndarray) -> StartCosts:
        """The multiplier-free part of chunk ``index`` (options ``ks``), kept while the kept
        chunks hold at most `CACHED_CELLS` starts."""
        kept = self._kept.get(index) if index >= 0 else None
        if kept is not None:
            if kept[0] is ks or np.array_equal(kept[0], ks):
                return kept[1]
            raise ValueError(f"chunk {index} was kept for other options")  # a caller's bug
        pr = self.pricer
        S = pr.S
        s, valid = pr.starts(ks)
        cost = pr.cost(ks, s)
        cost[~valid] = np.inf
        row = self.shape_of[ks, None] if self.by_shape else pr.pool[ks, None]
        at = (row * (S + 1) + s).astype(np.int32)
        grams = pr.grams(ks, s) if self.cap_g is not None else None
        moving = np.flatnonzero(pr.moves[ks])
        mk, ms = ks[moving], s[moving]
        rate = pr.rate(mk, ms)
        rate = rate.astype(np.float32 if rate.max(initial=0) < (1 << 24) else np.float64)
        r = pr.route[mk, None]
        route_at = (r * (S + 1) + ms).astype(np.int32)
        release_at = (r[:, 0] * (S + 1) + pr.rel[mk]).astype(np.int64)
        out = StartCosts(cost, at, grams, moving, rate, route_at, release_at)
        if index >= 0 and self._kept_cells + cost.size <= CACHED_CELLS:
            self._kept[index] = (ks, out)
            self._kept_cells += cost.size
        return out

    def chunks(self) -> list[np.ndarray]:
        """The options in chunks of at most `CHUNK_CELLS` padded starts, each of options whose
        numbers of starts are within 10% of each other (little of a chunk is padding)."""
        if self._chunks is None:
            width = np.maximum(self.pricer.width, 1)
            order = np.argsort(width, kind="stable")
            w = width[order]
            bins = np.floor(np.log(w) / np.log(1.1)).astype(np.int64)
            cuts = np.flatnonzero(np.diff(bins)) + 1
            out = []
            for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(order)]])):
                lo = int(a)
                while lo < b:
                    hi = bisect.bisect_right(range(lo + 1, int(b) + 1), CHUNK_CELLS,
                                             key=lambda h: (h - lo) * int(w[h - 1])) + lo
                    hi = max(hi, lo + 1)
                    out.append(order[lo:hi])
                    lo = hi
            self._chunks = out
        return self._chunks

    def window_table(self, mu_prefix: np.ndarray) -> np.ndarray:
        """Flat [shapes * (S + 1)]: gang * (mu_prefix[p, s + n] - mu_prefix[p, s]) of each
        (pool, slots, gang) shape and start s (the end clipped at the horizon's, where no
        allowed start reads it)."""
        flat = mu_prefix.ravel()
        pair = np.take(flat, self.pair_to)
        pair -= np.take(flat, self.pair_from)
        table = pair[self.shape_pair]
        table *= self.shape_gang
        return table.ravel()

    def price_batch(self, mult: Multipliers, mu_prefix: np.ndarray, route_prefix: np.ndarray,
                    ks: np.ndarray, index: int = -1, window: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(reduced cost, start) of the best start of each option in ``ks`` (chunk ``index`` of
        `TimedRelaxation.chunks`, -1: not a chunk, nothing kept); ``window``: `window_table` of
        ``mu_prefix`` (built here when not given)."""
        pr = self.pricer
        static = self.chunk_costs(index, ks)
        rc = None
        if mult.carbon:
            grams = static.grams if static.grams is not None else pr.grams(ks, pr.starts(ks)[0])
            rc = np.multiply(grams, mult.carbon)
            rc += static.cost  # (the same sum as cost + carbon * grams)
        if mu_prefix.any() and self.by_shape:
            if window is None:
                window = self.window_table(mu_prefix)
            if rc is None:
                rc = np.take(window, static.at)
                rc += static.cost  # (the same sum as cost + window)
            else:
                rc += np.take(window, static.at)
        if rc is None:
            rc = static.cost.copy()
        if mu_prefix.any() and not self.by_shape:
            # ``at`` indexes the pool's row of the prefix table
            flat = mu_prefix.ravel()
            sums = np.take(flat, static.at + pr.n[ks, None])
            sums -= np.take(flat, static.at)
            sums *= pr.gang[ks, None]
            rc += sums
        if len(static.moving) and route_prefix.any():  # no link price: the flows cost nothing
            rc[static.moving] += flow_prices(static, route_prefix)
        j = np.argmin(rc, axis=1)
        rows = np.arange(len(ks))
        return rc[rows, j], np.minimum(pr.first[ks] + j, pr.last[ks])

    def evaluate(self, mult: Multipliers) -> DualPoint:
        """L at ``mult`` (projected onto the non-negative orthant first)."""
        self.evaluations += 1
        pb, pr = self.problem, self.pricer
        mult = Multipliers(np.maximum(mult.pool, 0.0), np.maximum(mult.link, 0.0),
                           max(float(mult.carbon), 0.0))
        mu_prefix = prefix(mult.pool)
        route_prefix = self.routes.sums(prefix(mult.link))
        S = pb.slots
        # Batch demands: best start of each option, then best option (or unserved) per demand.
        option_rc = np.empty(pr.K)
        option_start = np.zeros(pr.K, dtype=np.int64)
        window = self.window_table(mu_prefix) if mu_prefix.any() and self.by_shape else None
        for index, ks in enumerate(self.chunks()):
            option_rc[ks], option_start[ks] = self.price_batch(mult, mu_prefix, route_prefix, ks,
                                                               index, window)
        b = pb.batch
        counts = np.diff(b.start)
        has = counts > 0
        low = np.full(self.n_batch, np.inf)
        pick = np.full(self.n_batch, -1, dtype=np.int64)
        if pr.K:
            seg = b.start[:-1][has]
            low[has] = np.minimum.reduceat(option_rc, seg)
            at_min = np.flatnonzero(option_rc == np.repeat(low[has], counts[has]))
            first = np.ones(len(at_min), dtype=bool)
            first[1:] = pr.owner[at_min[1:]] != pr.owner[at_min[:-1]]
            pick[pr.owner[at_min[first]]] = at_min[first]
        serve = low <= self.alt
        batch_option = np.where(serve, pick, -1)
        starts = option_start[np.maximum(pick, 0)] if pr.K else np.zeros(self.n_batch, dtype=np.int64)
        batch_start = np.where(serve, starts, -1)
        terms = np.where(serve, low, self.alt)
        if np.any(~np.isfinite(terms)):  # a must-serve demand without any option
            terms = np.where(np.isfinite(terms), terms, 0.0)
        chosen = batch_option[batch_option >= 0]
        magnitude = float(pr.magnitude(chosen, mu_prefix, route_prefix, mult.carbon).sum()) if len(chosen) else 0.0
        # Relaxed usage of the rows.
        pool_use = np.zeros((pb.avail.shape[0], S + 1))
        link_route_use = np.zeros((self.routes.count, S + 1))
        grams_total = 0.0
        if len(chosen):
            st = option_start[chosen]
            p = pr.pool[chosen]
            np.add.at(pool_use, (p, st), pr.gang[chosen])
            np.add.at(pool_use, (p, st + pr.n[chosen]), -pr.gang[chosen])
            grams_total = float(np.ceil(pr.grams(chosen, st[:, None])[:, 0]).sum())
            mv = pr.moves[chosen]
            if np.any(mv):
                c, s_ = chosen[mv], st[mv]
                rate = pr.rate(c, s_[:, None])[:, 0].astype(np.float64)
                np.add.at(link_route_use, (pr.route[c], pr.rel[c]), rate)
                np.add.at(link_route_use, (pr.route[c], s_), -rate)
        pool_use = np.cumsum(pool_use, axis=1)[:, :S]
        # Services: per slot, each quantum at its cheapest pool (fractional replicas).
        service_terms, service_gpus, service_route_load, service_grams, service_size = self._services(mult)
        pool_use += service_gpus
        link_use = self.routes.incidence.T @ np.cumsum(link_route_use, axis=1)[:, :S] if self.routes.count else np.zeros(pb.bandwidth.shape)
        link_use = link_use + service_route_load
        all_terms = np.concatenate([terms, service_terms])
        priced = math.fsum((mult.pool * self.avail).ravel()) + math.fsum((mult.link * self.bandwidth).ravel())
        cap = float(self.cap_g) if self.cap_g is not None else 0.0
        value = math.fsum(all_terms) - priced - mult.carbon * cap
        margin = (BOUND_SAFETY * (float(np.abs(all_terms).sum()) + priced + mult.carbon * cap)
                  + (S + 4) * EPS * 8 * magnitude + 64 * EPS * service_size + 1e-300)
        carbon_excess = (grams_total + service_grams - cap) if self.cap_g is not None else 0.0
        return DualPoint(mult, value, value - margin, batch_option, batch_start,
                         pool_use - self.avail, link_use - self.bandwidth, carbon_excess, low)

    # -- services ----------------------------------------------------------------------------
    def service_unit_costs(self, mult: Multipliers, rows: np.ndarray, prices=None) -> np.ndarray:
        """[rows, S]: reduced cost of one load quantum served by service row J in slot t with
        full replicas (rent / kappa + per-quantum cost): how the plans rank the pools.
        ``prices``: `service_prices` of those rows, if already at hand."""
        per_replica, per_quantum = self.service_prices(mult, rows) if prices is None else prices
        kappa = self.problem.services.kappa[rows].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            unit = per_replica / kappa[:, None]
        unit[kappa <= 0] = np.inf
        return unit + per_quantum

    def service_prices(self, mult: Multipliers, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([rows, S], [rows, S]): reduced cost of one replica, and of one served quantum besides
        the replica (transfer plus the link prices of its traffic), of service rows J per slot."""
        sv = self.problem.services
        p = sv.pool[rows].astype(np.int64)
        gang = sv.gang[self.service_owner[rows]].astype(np.float64)
        per_replica = sv.rent[rows] + gang[:, None] * mult.pool[p]
        if mult.carbon:
            per_replica = per_replica + mult.carbon * 1000.0 * sv.co2_kg[rows]
        per_quantum = np.repeat(sv.transfer_per_quantum[rows, None], self.problem.slots, axis=1)
        routed = (sv.route[rows] >= 0) & (sv.tau[rows] > 0)
        if np.any(routed) and self.routes.count:
            lam_route = self.routes.sums(mult.link)  # [routes, S]
            per_quantum[routed] += sv.tau[rows[routed], None] * lam_route[sv.route[rows[routed]]]
        return per_replica, per_quantum

    def _services(self, mult: Multipliers):
        pb = self.problem
        sv = pb.services
        gpus = np.zeros(pb.avail.shape)
        route_load = np.zeros(pb.bandwidth.shape)
        if not len(sv.rows):
            return np.zeros(0), gpus, route_load, 0.0, 0.0
        per_replica, per_quantum = self.service_prices(mult, np.arange(len(sv.pool)))
        if self._service_shape is None:
            self._service_shape = ServiceShape(sv.kappa, sv.start, sv.load, sv.penalty_per_quantum)
        cells = service_cell_bound(per_replica, per_quantum, sv.kappa, sv.start, sv.load,
                                   sv.penalty_per_quantum, self._service_shape)
        np.add.at(gpus, sv.pool.astype(np.int64),
                  cells.replicas * sv.gang[self.service_owner][:, None])
        grams = float((cells.replicas * sv.co2_kg).sum() * 1000.0)
        routed = np.flatnonzero((sv.route >= 0) & (sv.tau > 0))
        if len(routed) and self.routes.count:
            per_route = np.zeros((self.routes.count, pb.slots))
            np.add.at(per_route, sv.route[routed], sv.tau[routed, None] * cells.served[routed])
            route_load = self.routes.incidence.T @ per_route
        return cells.terms.ravel(), gpus, route_load, grams, cells.magnitude


@dataclass(frozen=True, eq=False)
class ServiceCells:
    """The bound of every (service, slot) sub-problem and the fractional choice that attains it."""

    terms: np.ndarray  # float64 [services, S]: lower bound on the cell's cost
    replicas: np.ndarray  # float64 [J, S]: replicas of the bound's choice (fractional)
    served: np.ndarray  # float64 [J, S]: quanta served
    magnitude: float  # a bound on the size of the sums behind ``terms`` (for the float margin)


class ServiceShape:
    """What `service_cell_bound` reads of the instance alone (no multiplier): each row's
    service, the cells' loads, whole-replica pieces and penalty costs."""

    def __init__(self, kappa: np.ndarray, start: np.ndarray, load: np.ndarray,
                 penalty: np.ndarray):
        n_s = len(start) - 1
        self.counts = np.diff(start)
        self.owner = np.repeat(np.arange(n_s), self.counts)
        L = load[self.owner].astype(np.int64)  # [J, S]
        self.kap = np.maximum(kappa.astype(np.int64), 1)[:, None]
        self.full = (L // self.kap) * self.kap
        self.rem = L - self.full
        self.usable = (kappa > 0)[:, None]
        self.rem_usable = self.usable & (self.rem > 0)
        self.long_a = self.usable & (self.full > 0)
        self.rem_div = np.maximum(self.rem, 1)
        self.penalty_row = penalty[self.owner][:, None]
        self.load = load.astype(np.float64)
        self.full_cost = load * penalty[:, None]
        self.full_cost_sum = self.full_cost.sum()


def service_cell_bound(per_replica: np.ndarray, per_quantum: np.ndarray, kappa: np.ndarray,
                       start: np.ndarray, load: np.ndarray, penalty: np.ndarray,
                       shape: ServiceShape | None = None) -> ServiceCells:
    """A lower bound on each (service, slot) cell with whole replicas (docs/large-engine.md,
    "Service cells"): the cell serves ``u_j <= kappa_j m_j`` quanta on row j with ``m_j`` whole
    replicas, ``sum u_j <= L``, at cost ``sum c_j m_j + e_j u_j + pi (L - sum u_j)``.

    The saving of row j against the penalty, ``h_j(u) = (pi - e_j) u - c_j ceil(u / kappa_j)``,
    lies below its concave envelope on [0, L]: slope ``rho_j = pi - e_j - c_j / kappa_j`` up to
    ``a_j = floor(L / kappa_j) kappa_j``, then ``beta_j = pi - e_j - c_j / (L - a_j)`` up to L.
    The greatest sum of envelopes with ``sum u_j <= L`` is a fractional knapsack over those
    pieces. Exact when L is below every row's kappa (one replica, the usual case), the LP
    relaxation (rent / kappa per quantum) never beats it.

    Only the pieces of positive length (and so positive slope) take part: they are sorted
    once, all cells together, by (cell, steepest first, row), and each cell's saving is summed
    piece by piece in that order. ``shape``: `ServiceShape` of the other arguments (built here
    when not given).
    """
    J, S = per_replica.shape
    n_s = len(start) - 1
    sh = shape or ServiceShape(kappa, start, load, penalty)
    kap, full, rem = sh.kap, sh.full, sh.rem
    gain = sh.penalty_row - per_quantum
    rho = gain - per_replica / kap  # (read only where the row can serve and the piece is long)
    beta = gain - per_replica / sh.rem_div
    # The pieces of positive length, in the order of the rows of [A pieces; B pieces] and then
    # of the slots: flat index i * S + t with i = j (piece A of row j) or J + j (piece B).
    pos_a = np.flatnonzero((sh.long_a & (rho > 0)).ravel())
    pos_b = np.flatnonzero((sh.rem_usable & (beta > 0)).ravel())
    row = np.concatenate([pos_a // S, pos_b // S])
    slot = np.concatenate([pos_a % S, pos_b % S])
    slope = np.concatenate([rho.ravel()[pos_a], beta.ravel()[pos_b]])
    length = np.concatenate([full.ravel()[pos_a], rem.ravel()[pos_b]]).astype(np.float64)
    cell = sh.owner[row] * S + slot  # flat index into [services, S]
    order = np.lexsort((-slope, cell))  # stable: by row (A before B) within a tie
    cell, slope, length = cell[order], slope[order], length[order]
    n = len(cell)
    first = np.ones(n, dtype=bool)
    first[1:] = cell[1:] != cell[:-1]
    heads = np.flatnonzero(first)
    before = np.cumsum(length) - length  # whole numbers: exact
    seg = np.cumsum(first) - 1
    before -= before[heads][seg]
    take = np.clip(sh.load.ravel()[cell] - before, 0.0, length)
    gain_piece = take * slope
    # Each cell's saving, piece by piece in order (the steepest first).
    saving = np.zeros(n_s * S)
    rank = np.arange(n) - heads[seg]
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max(initial=-1)) + 2))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        at = by_rank[lo:hi]
        saving[cell[at]] += gain_piece[at]
    take_in = np.empty(n)  # each piece's take, in the order of pos_a then pos_b
    take_in[order] = take
    na = len(pos_a)
    take_a, take_b, replicas, part_b = (np.zeros(J * S) for _ in range(4))
    take_a[pos_a], take_b[pos_b] = take_in[:na], take_in[na:]
    replicas[pos_a] = take_in[:na] / kap[row[:na], 0]
    part_b[pos_b] = take_in[na:] / sh.rem_div.ravel()[pos_b]
    replicas += part_b  # take_a / kappa + take_b / rem, zero where nothing is taken
    replicas, served = replicas.reshape(J, S), (take_a + take_b).reshape(J, S)
    terms = sh.full_cost - saving.reshape(n_s, S)
    magnitude = float(sh.full_cost_sum + np.abs(gain_piece).sum()
                      + (np.abs(per_replica) * replicas).sum() + (np.abs(per_quantum) * served).sum())
    return ServiceCells(terms, replicas, served, magnitude)


class PolyakAscent:
    """Projected subgradient ascent with Polyak steps, scaled per row by its capacity.

    In the variables y = mu * c (c the row's capacity, at least 1) a step is
    theta (target - L) / |g / c|^2 along g / c; theta halves after ``patience`` steps without a
    better bound. The target is the incumbent's objective when there is one, else 5% above L.
    """

    def __init__(self, relax: TimedRelaxation, patience: int = 6, theta: float = 1.0):
        self.relax = relax
        pb = relax.problem
        self.pool_scale = np.maximum(relax.avail, 1.0) ** 2
        self.link_scale = np.maximum(relax.bandwidth, 1.0) ** 2
        self.carbon_scale = max(float(pb.carbon_cap_g or 0), 1.0) ** 2
        self.theta = theta
        self.patience = patience
        self.quiet = 0
        self.steps = 0
        self.current = relax.evaluate(Multipliers.zeros(pb))
        self.best = self.current
        self.at_zero = self.current  # L(0): every demand at its cheapest start on its own

    def step(self, target: float | None) -> DualPoint:
        """One step from the current point; returns the new evaluation."""
        cur = self.current
        m = cur.multipliers
        # Projected direction: a negative component at a zero multiplier cannot move.
        gp = np.where((m.pool <= 0) & (cur.pool_excess < 0), 0.0, cur.pool_excess)
        gl = np.where((m.link <= 0) & (cur.link_excess < 0), 0.0, cur.link_excess)
        gc = 0.0 if (m.carbon <= 0 and cur.carbon_excess < 0) else cur.carbon_excess
        norm = float((gp * gp / self.pool_scale).sum() + (gl * gl / self.link_scale).sum()
                     + gc * gc / self.carbon_scale)
        self.steps += 1
        if norm <= 0.0:
            return cur  # the relaxed choice fits every row: L is at its maximum here
        goal = target if target is not None and math.isfinite(target) and target > cur.value else (
            cur.value + 0.05 * max(abs(cur.value), 1.0))
        t = self.theta * (goal - cur.value) / norm
        nxt = Multipliers(np.maximum(m.pool + t * gp / self.pool_scale, 0.0),
                          np.maximum(m.link + t * gl / self.link_scale, 0.0),
                          max(m.carbon + t * gc / self.carbon_scale, 0.0))
        point = self.relax.evaluate(nxt)
        self.current = point
        if point.bound > self.best.bound:
            self.best = point
            self.quiet = 0
        else:
            self.quiet += 1
            if self.quiet >= self.patience:
                self.theta *= 0.5
                self.quiet = 0
                self.current = self.best  # restart from the best point with a shorter step
        return point

    @property
    def converged(self) -> bool:
        return self.theta < 1e-6
