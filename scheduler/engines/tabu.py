"""Tabu search with penalized capacities and ejection chains, for GAP-like instances.

In the style of Yagiura, Ibaraki and Glover (2004): the search walks through plans that may
overfill pools, scored by

    cost(x) + sum_p w[p] * max(0, load_p(x) - cap[p])

with adaptive weights w (raised on the pools that are over capacity, lowered while the plan
fits), so it crosses the infeasible region between feasible plans that no feasible-only move
connects. Every iteration scores, with numpy tables, every shift (demand j to pool q: an n x P
table) and, over candidate lists, every swap (j and k exchange pools) and every ejection chain
of length two (j enters the pool of k, which k leaves for its best third pool): each pool lists
the m demands that suit it best (about `CANDIDATES` lists per demand), and j only enters the
pool of k if it is listed there (n x m float32 tables, in buffers kept between moves). It takes
the best move that is not tabu. Moving j back into a pool it left within the tenure is tabu
unless the move gives a feasible plan cheaper than the best one (aspiration). The best feasible
plan seen is kept; the caller offers it to the engine's incumbent, so it goes through the normal
checks. See docs/large-engine.md.

It applies (`applies`) where every demand is must-serve and has options on distinct pools, and
the dense tables are small; the search is deterministic for a seed and a number of iterations.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np

from scheduler.compile import Options

MAX_DEMANDS = 3000
MAX_CELLS = 2_000_000  # demands x pools of the dense tables
CANDIDATES = 6  # swaps and chains: each demand is listed on about this many pools it suits
MIN_LISTED = 400  # ... and each pool lists at least this many demands (all of them, up to it)
TENURE = (2, 5)  # moves (drawn in this range) before a demand may re-enter a pool it left
RAISE = 1.02  # a pool's weight is multiplied by this while it is over capacity
LOWER = 0.98  # every weight is multiplied by this while the plan fits
CHECK_EVERY = 8  # moves between looks at the clock and the stop request
RESTART = 3000  # iterations without a new best feasible plan before returning to the best


def applies(o: Options) -> bool:
    """Whether the tabu search applies: every demand must-serve with an option, small tables."""
    n, P = o.n_demands, o.n_pools
    if n < 2 or P < 2 or n > MAX_DEMANDS or n * P > MAX_CELLS:
        return False
    if not (o.must_serve.all() and np.all(np.diff(o.start) > 0)):
        return False
    pairs = o.demand.astype(np.int64) * P + o.pool
    return len(np.unique(pairs)) == len(pairs)  # one option per (demand, pool)


class TabuSearch:
    """The search state: the current plan (as pools), the loads, the weights, the candidate
    lists and the best plan."""

    def __init__(self, o: Options, choice: np.ndarray, seed: int, lam: np.ndarray | None = None,
                 candidates: float = CANDIDATES, min_listed: int = MIN_LISTED):
        self.o = o
        n, P = o.n_demands, o.n_pools
        self.n, self.P = n, P
        self.C = np.full((n, P), np.inf)
        self.U = np.zeros((n, P))
        self.option = np.full((n, P), -1, dtype=np.int64)
        d = o.demand
        self.C[d, o.pool] = o.cost
        self.U[d, o.pool] = o.units
        self.option[d, o.pool] = np.arange(o.n_options)
        self.cap = o.capacity.astype(np.float64)
        self.rng = np.random.default_rng(seed)
        finite = np.isfinite(self.C)
        per_unit = self.C[finite] / np.maximum(self.U[finite], 1.0)
        self.base = float(np.mean(np.abs(per_unit))) + 1e-9
        w = np.full(P, self.base)
        if lam is not None:
            w = np.maximum(w, np.asarray(lam, dtype=np.float64))
        self.w = w
        self._candidate_lists(candidates, min_listed)
        self.rows = np.arange(n)
        self.tabu = np.zeros((n, P), dtype=np.int64)
        self.iteration = 0
        self.tenure = TENURE
        self.set_plan(choice)
        self.best_cost = self.cost
        self.best_at = self.at.copy()
        self.since_best = 0
        self.moves = {"shift": 0, "swap": 0, "chain": 0}

    def _candidate_lists(self, candidates: float, min_listed: int) -> None:
        """Per pool b, the m demands that suit b best (``cand[b]``): the least regret of cost
        plus the starting weight times usage against the demand's best pool, m so that each
        demand is on about ``candidates`` lists, and at least ``min_listed`` (at most n). Swaps
        and chains only move a listed demand into the pool of another demand."""
        n, P = self.n, self.P
        price = self.C + self.w * self.U
        regret = price - price.min(axis=1, keepdims=True)
        m = max(1, min(n, max(min_listed, math.ceil(candidates * n / P))))
        order = np.argsort(regret, axis=0, kind="stable")[:m]  # m x P
        self.cand = np.ascontiguousarray(order.T)  # P x m demand indices
        b = np.arange(P)[:, None]
        self.cand_C = self.C[self.cand, b]  # P x m: the listed demand's cost on b
        self.cand_U = self.U[self.cand, b].astype(np.float32)
        self.m = m
        self.pools = b
        self.C32 = self.C.astype(np.float32).ravel()  # the n x m tables are float32
        self.U32 = self.U.astype(np.float32).ravel()
        self.rowsP = (np.arange(n) * P)[:, None]
        shapes = dict(a=np.int64, flat=np.int64, same=bool, tabu_j=bool, swap_tabu=bool,
                      second=bool, cost_j=np.float32, db=np.float32, X=np.float32,
                      cost_k=np.float32, da=np.float32, swap=np.float32, chain=np.float32,
                      tmp=np.float32, cost_swap=np.float32, cost_chain=np.float32,
                      over_swap=np.float32, over_chain=np.float32)
        self.work = {k: np.empty((n, m), dtype=t) for k, t in shapes.items()}

    # -- plans ---------------------------------------------------------------------------------
    def set_plan(self, choice: np.ndarray) -> None:
        """Start from ``choice`` (a complete plan of option indices)."""
        self.at = self.o.pool[np.asarray(choice)].astype(np.int64)
        rows = self.rows
        self.own = self.C[rows, self.at]
        self.uown = self.U[rows, self.at]
        self.load = np.bincount(self.at, weights=self.uown, minlength=self.P)
        self.cost = float(self.own.sum())

    def adopt(self, choice: np.ndarray) -> None:
        """Take a better plan found elsewhere as the current and best one."""
        self.set_plan(choice)
        self.best_cost, self.best_at = self.cost, self.at.copy()
        self.since_best = 0

    def choice_of(self, at: np.ndarray) -> np.ndarray:
        return self.option[self.rows, at]

    def best_choice(self) -> np.ndarray:
        return self.choice_of(self.best_at)

    # -- the search ----------------------------------------------------------------------------
    def run(self, iterations: int, deadline: float = math.inf,
            stop: Callable[[], bool] | None = None) -> bool:
        """Make up to ``iterations`` moves (fewer at the deadline or on ``stop``, checked every
        few moves); whether the best feasible plan improved."""
        improved = False
        for i in range(iterations):
            if i % CHECK_EVERY == 0 and (
                    time.perf_counter() >= deadline or (stop is not None and stop())):
                break
            improved |= self.step()
        return improved

    def step(self) -> bool:
        """One move: the best non-tabu shift, swap or chain by penalized cost. When few pools are
        over capacity, every plan the tables score is also checked for a new best feasible plan
        (the walk hovers near the capacity boundary, so many of its neighbours fit); the
        cheapest such plan is taken at once (this is also the aspiration of tabu moves)."""
        n, P, C, U, cap, w = self.n, self.P, self.C, self.U, self.cap, self.w
        at, load, own, uown = self.at, self.load, self.own, self.uown
        it = self.iteration
        rows = self.rows
        over = np.maximum(load - cap, 0.0)
        total_over = float(over.sum())
        check = int(np.count_nonzero(over)) <= 2
        # Shifts: j leaves at[j] (overflow change dl[j]) and enters q (de[j, q]).
        left = load[at] - uown - cap[at]  # room short on j's pool once j has left it
        over_at = over[at]
        dl = np.maximum(left, 0.0) - over_at
        de = np.maximum(load + U - cap, 0.0) - over
        cost_shift = C - own[:, None]
        cost_shift[rows, at] = np.inf
        wde = w * de
        G = C + wde  # k's penalized price of entering q (before it leaves its own pool)
        G[rows, at] = np.inf
        w_at = w[at]
        shift = cost_shift + wde
        shift += (w_at * dl)[:, None]
        tabu = self.tabu > it

        # Swaps and chains, one row per demand k (which leaves its pool b = at[k]) and one
        # column per listed demand j of b (which enters b): n x m float32 tables in buffers of
        # their own (no allocation per move), gathered row by row from P x m tables of the
        # listed demands.
        f = np.float32
        cand, z = self.cand, self.work
        a_l = at[cand]  # P x m: the listed demand's pool
        a = a_l.take(at, axis=0, out=z["a"])  # n x m: the pool j leaves
        same = np.equal(a, at[:, None], out=z["same"])
        cost_j = (self.cand_C - own[cand]).astype(f).take(at, axis=0, out=z["cost_j"])
        # db[k, i]: overflow change on b when j enters it and k leaves.
        db = self.cand_U.take(at, axis=0, out=z["db"])
        db += left.astype(f)[:, None]
        np.maximum(db, 0.0, out=db)
        db -= over_at.astype(f)[:, None]
        X = np.multiply(w_at.astype(f)[:, None], db, out=z["X"])
        X += cost_j
        # ... and on a, when k enters it and j leaves (swap).
        flat = np.add(a, self.rowsP, out=z["flat"])
        cost_k = self.C32.take(flat, out=z["cost_k"])
        cost_k -= own.astype(f)[:, None]
        da = self.U32.take(flat, out=z["da"])
        da += (load[a_l] - uown[cand] - cap[a_l]).astype(f).take(at, axis=0, out=z["tmp"])
        np.maximum(da, 0.0, out=da)
        da -= over[a_l].astype(f).take(at, axis=0, out=z["tmp"])
        swap = w[a_l].astype(f).take(at, axis=0, out=z["swap"])
        swap *= da
        swap += cost_k
        swap += X
        tabu_j = (self.tabu[cand, self.pools] > it).take(at, axis=0, out=z["tabu_j"])
        tabu_j |= same
        swap_tabu = tabu.ravel().take(flat, out=z["swap_tabu"])
        swap_tabu |= tabu_j
        # Chain: k leaves for its best non-tabu pool other than a (and its own); a only loses j.
        G_free = np.where(tabu, np.inf, G)
        two = np.empty((n, 2), dtype=np.int64)
        g2 = np.empty((n, 2))
        two[:, 0] = G_free.argmin(axis=1)
        g2[:, 0] = G_free[rows, two[:, 0]]
        G_free[rows, two[:, 0]] = np.inf
        two[:, 1] = G_free.argmin(axis=1)
        g2[:, 1] = G_free[rows, two[:, 1]]
        second = np.equal(a, two[:, :1], out=z["second"])
        gain = (g2 - own[:, None]).astype(f)
        chain = z["chain"]
        chain[...] = gain[:, :1]
        np.copyto(chain, gain[:, 1:], where=second)
        chain += X
        chain += (w[a_l] * dl[cand]).astype(f).take(at, axis=0, out=z["tmp"])

        if check:
            cost_swap = np.add(cost_j, cost_k, out=z["cost_swap"])
            np.copyto(cost_swap, np.inf, where=same)
            de2 = de[rows[:, None], two].astype(f)
            c2 = (C[rows[:, None], two] - own[:, None]).astype(f)
            cost_chain = z["cost_chain"]
            cost_chain[...] = c2[:, :1]
            np.copyto(cost_chain, c2[:, 1:], where=second)
            cost_chain += cost_j
            np.copyto(cost_chain, np.inf, where=same)
            over_chain = z["over_chain"]
            over_chain[...] = de2[:, :1]
            np.copyto(over_chain, de2[:, 1:], where=second)
            over_chain += db
            over_chain += dl[cand].astype(f).take(at, axis=0, out=z["tmp"])
            found = self._best_feasible(total_over, (
                ("shift", cost_shift, de + dl[:, None]),
                ("swap", cost_swap, np.add(db, da, out=z["over_swap"])),
                ("chain", cost_chain, over_chain)), two, second)
            if found:
                self.iteration += 1
                self._adapt()
                return True

        # The best non-tabu move.
        best = (math.inf, "", 0)
        for kind, table, mask in (("shift", shift, tabu), ("swap", swap, swap_tabu),
                                  ("chain", chain, tabu_j)):
            np.copyto(table, np.inf, where=mask)
            flat = int(np.argmin(table))
            if table.flat[flat] < best[0]:
                best = (float(table.flat[flat]), kind, flat)
        self.iteration += 1
        value, kind, flat = best
        if not math.isfinite(value):
            return False
        self._apply(self._spec(kind, flat, two, second))
        self.moves[kind] += 1
        self._adapt()
        return self._record()

    def _best_feasible(self, total_over: float, tables, two, second) -> bool:
        """Take the cheapest scored neighbour that fits, if it beats the best feasible plan."""
        best_value, best = self.best_cost - self.cost - 1e-9, None
        for kind, cost, dover in tables:
            np.copyto(cost, np.inf, where=dover > 1e-9 - total_over)
            flat = int(np.argmin(cost))
            if cost.flat[flat] < best_value:
                best_value, best = float(cost.flat[flat]), (kind, flat)
        if best is None:
            return False
        kind, flat = best
        self._apply(self._spec(kind, flat, two, second))
        self.moves[kind] += 1
        return self._record()

    def _spec(self, kind: str, flat: int, two, second) -> list:
        """The move as (demand, new pool) pairs."""
        if kind == "shift":
            j, q = divmod(flat, self.P)
            return [(j, q)]
        k, i = divmod(flat, self.m)
        b = int(self.at[k])
        j = int(self.cand[b, i])
        if kind == "swap":
            return [(j, b), (k, int(self.at[j]))]
        return [(j, b), (k, int(two[k, 1] if second[k, i] else two[k, 0]))]

    def _apply(self, spec: list) -> None:
        lo, hi = self.tenure
        moves = [(j, int(self.at[j]), q) for j, q in spec]
        for j, p, q in moves:
            self.load[p] -= self.U[j, p]
            self.load[q] += self.U[j, q]
            self.cost += self.C[j, q] - self.C[j, p]
            self.at[j] = q
            self.own[j] = self.C[j, q]
            self.uown[j] = self.U[j, q]
            until = self.iteration + int(self.rng.integers(lo, hi + 1))
            self.tabu[j, p] = until

    def _adapt(self) -> None:
        over = self.load > self.cap
        if over.any():
            self.w[over] *= RAISE
        else:
            self.w *= LOWER
        np.maximum(self.w, 1e-3 * self.base, out=self.w)

    def _record(self) -> bool:
        """Keep the plan if it fits and beats the best; return to the best after a while."""
        if np.all(self.load <= self.cap):
            self.cost = float(self.own.sum())  # no drift from the running sum
            if self.cost < self.best_cost - 1e-9:
                self.best_cost, self.best_at = self.cost, self.at.copy()
                self.since_best = 0
                return True
        self.since_best += 1
        if self.since_best >= RESTART:
            self.set_plan(self.best_choice())
            self.since_best = 0
        return False


class Companion:
    """A `TabuSearch` beside the engine's search: run inline in chunks (``chunk``), or in its own
    thread (``start`` / ``halt``). Plans cross over in both directions at chunk boundaries: the
    engine ``take``s the tabu's new best feasible plan, and ``suggest``s its own incumbent, which
    the tabu adopts when it beats the tabu's best."""

    def __init__(self, o: Options, choice: np.ndarray, seed: int, lam: np.ndarray | None = None):
        self.search = TabuSearch(o, choice, seed, lam)
        self.lock = threading.Lock()
        self.found: np.ndarray | None = None
        self.suggested: tuple[float, np.ndarray] | None = None
        self.adopted = 0  # engine plans the tabu took over
        self.thread: threading.Thread | None = None
        self.halted = threading.Event()

    def chunk(self, iterations: int, deadline: float, stop: Callable[[], bool]) -> None:
        """Adopt a suggested plan if it is better, then make up to ``iterations`` moves."""
        s = self.search
        with self.lock:
            suggested, self.suggested = self.suggested, None
        if suggested is not None and suggested[0] < s.best_cost - 1e-9 * max(1.0, abs(s.best_cost)):
            s.adopt(suggested[1])
            self.adopted += 1
        if s.run(iterations, deadline, stop):
            best = s.best_choice()
            with self.lock:
                self.found = best

    def take(self) -> np.ndarray | None:
        """The tabu's best feasible plan if it improved since the last take, else None."""
        with self.lock:
            found, self.found = self.found, None
        return found

    def suggest(self, choice: np.ndarray, cost: float) -> None:
        with self.lock:
            self.suggested = (cost, choice.copy())

    def start(self, iterations: int, deadline: float, stop: Callable[[], bool]) -> None:
        """Run chunks in a thread until ``halt``, the deadline or ``stop``."""
        def loop() -> None:
            def done() -> bool:
                return self.halted.is_set() or stop()

            while not done() and time.perf_counter() < deadline:
                self.chunk(iterations, deadline, done)

        self.thread = threading.Thread(target=loop, name="tabu", daemon=True)
        self.thread.start()

    def halt(self) -> None:
        self.halted.set()
        if self.thread is not None:
            self.thread.join()

    def details(self) -> dict[str, int]:
        s = self.search
        return {"tabu_iterations": s.iteration, "tabu_adopted": self.adopted,
                **{f"tabu_{kind}s": count for kind, count in s.moves.items()}}
