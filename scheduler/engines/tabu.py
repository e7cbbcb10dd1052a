"""Tabu search with penalized capacities and ejection chains, for GAP-like instances.

In the style of Yagiura, Ibaraki and Glover (2004): the search walks through plans that may
overfill pools, scored by

    cost(x) + sum_p w[p] * max(0, load_p(x) - cap[p])

with adaptive weights w (raised on the pools that are over capacity, lowered while the plan
fits), so it crosses the infeasible region between feasible plans that no feasible-only move
connects. Every iteration scores, with dense numpy tables over the demands, every shift
(demand j to pool q: an n x P table), every swap (j and k exchange pools: n x n) and every
ejection chain of length two (j enters the pool of k, which k leaves for its best third pool:
n x n), and takes the best move that is not tabu. Moving j back into a pool it left within the
tenure is tabu unless the move gives a feasible plan cheaper than the best one (aspiration). The
best feasible plan seen is kept; the caller offers it to the engine's incumbent, so it goes
through the normal checks. See docs/large-engine.md.

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
ROWS = 400  # swap and chain tables: at most this many first demands per iteration (rows x n)
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
    """The search state: the current plan (as pools), the loads, the weights and the best plan."""

    def __init__(self, o: Options, choice: np.ndarray, seed: int, lam: np.ndarray | None = None):
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
        # The n x n tables are float32 (half the memory traffic); costs are summed from C.
        self.Cf, self.Uf = self.C.astype(np.float32), self.U.astype(np.float32)
        self.rng = np.random.default_rng(seed)
        finite = np.isfinite(self.C)
        per_unit = self.C[finite] / np.maximum(self.U[finite], 1.0)
        self.base = float(np.mean(np.abs(per_unit))) + 1e-9
        w = np.full(P, self.base)
        if lam is not None:
            w = np.maximum(w, np.asarray(lam, dtype=np.float64))
        self.w = w
        self.tabu = np.zeros((n, P), dtype=np.int64)
        self.iteration = 0
        self.tenure = TENURE
        self.set_plan(choice)
        self.best_cost = self.cost
        self.best_at = self.at.copy()
        self.since_best = 0
        self.moves = {"shift": 0, "swap": 0, "chain": 0}

    # -- plans ---------------------------------------------------------------------------------
    def set_plan(self, choice: np.ndarray) -> None:
        """Start from ``choice`` (a complete plan of option indices)."""
        self.at = self.o.pool[np.asarray(choice)].astype(np.int64)
        rows = np.arange(self.n)
        self.load = np.bincount(self.at, weights=self.U[rows, self.at], minlength=self.P)
        self.cost = float(self.C[rows, self.at].sum())
        # Column k of these tables: every demand's cost, usage and tabu end on the pool of k.
        self.C_at = self.Cf[:, self.at]
        self.U_at = self.Uf[:, self.at]
        self.T_at = np.ascontiguousarray(self.tabu[:, self.at])

    def adopt(self, choice: np.ndarray) -> None:
        """Take a better plan found elsewhere as the current and best one."""
        self.set_plan(choice)
        self.best_cost, self.best_at = self.cost, self.at.copy()
        self.since_best = 0

    def choice_of(self, at: np.ndarray) -> np.ndarray:
        return self.option[np.arange(self.n), at]

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
        at, load = self.at, self.load
        it = self.iteration
        rows = np.arange(n)
        own = C[rows, at]
        uown = U[rows, at]
        over = np.maximum(load - cap, 0.0)
        total_over = float(over.sum())
        check = int(np.count_nonzero(over)) <= 2
        # Shifts: j leaves at[j] (overflow change dl[j]) and enters q (de[j, q]).
        dl = np.maximum(load[at] - uown - cap[at], 0.0) - over[at]
        de = np.maximum(load + U - cap, 0.0) - over
        cost_shift = C - own[:, None]
        cost_shift[rows, at] = np.inf
        G = C + w * de  # k's penalized price of entering q (before it leaves its own pool)
        G[rows, at] = np.inf
        shift = cost_shift + w * de + (w[at] * dl)[:, None]
        tabu = self.tabu > it

        # Swaps and chains: rows j (all, or a sample when n > ROWS), columns k; float32.
        full = n <= ROWS
        first = rows if full else np.sort(self.rng.choice(n, ROWS, replace=False))
        sel = slice(None) if full else first
        a = at[first]
        f = np.float32
        own_f = own.astype(f)
        # db[j, k]: overflow change on the pool of k when j enters it and k leaves.
        db = self.U_at[sel] + (load[at] - uown - cap[at]).astype(f)[None, :]
        np.maximum(db, 0.0, out=db)
        db -= over[at].astype(f)[None, :]
        cost_j = self.C_at[sel] - own_f[first][:, None]  # j moves to the pool of k
        X = cost_j + w[at].astype(f)[None, :] * db
        if full:
            da, cost_k, Y = db.T, cost_j.T, X.T
        else:  # ... the pool of j, when k enters it and j leaves
            da = self.U_at[:, first].T + (load[a] - uown[first] - cap[a]).astype(f)[:, None]
            np.maximum(da, 0.0, out=da)
            da -= over[a].astype(f)[:, None]
            cost_k = self.C_at[:, first].T - own_f[None, :]
            Y = cost_k + w[a].astype(f)[:, None] * da
        same = a[:, None] == at[None, :]
        swap = X + Y
        swap[same] = np.inf
        tabu_jk = self.T_at[sel] > it  # j may not enter the pool of k
        swap_tabu = tabu_jk | (self.T_at[:, sel].T > it)
        # Chain: k leaves for its best non-tabu pool other than a[j] (and its own); j's pool
        # only loses j.
        G_free = np.where(tabu, np.inf, G)
        two = np.argsort(G_free, axis=1)[:, :2] if P <= 3 else np.argpartition(G_free, 1, axis=1)[:, :2]
        g2 = G_free[rows[:, None], two]
        flip = g2[:, 1] < g2[:, 0]
        two[flip] = two[flip][:, ::-1]
        g2[flip] = g2[flip][:, ::-1]
        second = a[:, None] == two[None, :, 0]
        gain = (g2 - own[:, None]).astype(f)
        chain = X + np.where(second, gain[None, :, 1], gain[None, :, 0])
        chain += (w[a] * dl[first]).astype(f)[:, None]
        chain[same] = np.inf

        if check:
            cost_swap = cost_j + cost_k
            cost_swap[same] = np.inf
            de2 = de[rows[:, None], two].astype(f)
            c2 = (C[rows[:, None], two] - own[:, None]).astype(f)
            cost_chain = cost_j + np.where(second, c2[None, :, 1], c2[None, :, 0])
            cost_chain[same] = np.inf
            over_chain = db + np.where(second, de2[None, :, 1], de2[None, :, 0])
            over_chain += dl[first].astype(f)[:, None]
            found = self._best_feasible(total_over, (
                ("shift", cost_shift, de + dl[:, None]), ("swap", cost_swap, db + da),
                ("chain", cost_chain, over_chain)), first, two, second)
            if found:
                self.iteration += 1
                self._adapt()
                return True

        # The best non-tabu move.
        best = (math.inf, "", 0)
        for kind, table, mask in (("shift", shift, tabu), ("swap", swap, swap_tabu),
                                  ("chain", chain, tabu_jk)):
            free = np.where(mask, np.inf, table)
            flat = int(np.argmin(free))
            if free.flat[flat] < best[0]:
                best = (float(free.flat[flat]), kind, flat)
        self.iteration += 1
        value, kind, flat = best
        if not math.isfinite(value):
            return False
        self._apply(self._spec(kind, flat, first, two, second))
        self.moves[kind] += 1
        self._adapt()
        return self._record()

    def _best_feasible(self, total_over: float, tables, first, two, second) -> bool:
        """Take the cheapest scored neighbour that fits, if it beats the best feasible plan."""
        best_value, best = self.best_cost - self.cost - 1e-9, None
        for kind, cost, dover in tables:
            masked = np.where(dover <= 1e-9 - total_over, cost, np.inf)
            flat = int(np.argmin(masked))
            if masked.flat[flat] < best_value:
                best_value, best = float(masked.flat[flat]), (kind, flat)
        if best is None:
            return False
        kind, flat = best
        self._apply(self._spec(kind, flat, first, two, second))
        self.moves[kind] += 1
        return self._record()

    def _spec(self, kind: str, flat: int, first, two, second) -> list:
        """The move as (demand, new pool) pairs."""
        if kind == "shift":
            j, q = divmod(flat, self.P)
            return [(j, q)]
        r, k = divmod(flat, self.n)
        j = int(first[r])
        if kind == "swap":
            return [(j, int(self.at[k])), (k, int(self.at[j]))]
        return [(j, int(self.at[k])), (k, int(two[k, 1] if second[r, k] else two[k, 0]))]

    def _apply(self, spec: list) -> None:
        lo, hi = self.tenure
        moves = [(j, int(self.at[j]), q) for j, q in spec]
        for j, p, q in moves:
            self.load[p] -= self.U[j, p]
            self.load[q] += self.U[j, q]
            self.cost += self.C[j, q] - self.C[j, p]
            self.at[j] = q
            until = self.iteration + int(self.rng.integers(lo, hi + 1))
            self.tabu[j, p] = until
        for j, p, q in moves:
            self.C_at[:, j] = self.Cf[:, q]
            self.U_at[:, j] = self.Uf[:, q]
            self.T_at[:, j] = self.tabu[:, q]
        for j, p, q in moves:
            self.T_at[j, self.at == p] = self.tabu[j, p]

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
            rows = np.arange(self.n)
            self.cost = float(self.C[rows, self.at].sum())  # no drift from the running sum
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
