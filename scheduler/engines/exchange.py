"""Cyclic and path exchanges found as negative cycles of an improvement graph.

A cyclic exchange moves demand j1 into the pool of j2, j2 into the pool of j3, ..., jk into the
pool of j1; a path exchange ends instead at a pool with room and starts at a pool that only loses
a demand. When the pools on the cycle are distinct, each pool gains one demand and loses at most
one, so feasibility is checked arc by arc:

    arc j1 -> j2   (j1 enters pool b = p(j2), which j2 leaves)
        allowed  if load[b] - u[j2, b] + u[j1, b] <= cap[b],   weight c[j1, b] - c[j1, p(j1)]
    arc root -> j  (j leaves, nothing enters its pool)            weight 0
    arc j -> end_b (j enters pool b, nobody leaves)  if load[b] + u[j, b] <= cap[b]
    arc end_b -> root                                              weight 0

A negative cycle with distinct pools is an improving exchange (Ahuja, Orlin and Sharma's
very large-scale neighbourhood for assignment problems). Negative cycles are searched with
label-correcting passes from a virtual source over the dense graph, so this is for instances with
up to a few thousand demands (GAP-sized); `MAX_DEMANDS` guards it.
"""

from __future__ import annotations

import numpy as np

from scheduler.compile import Options

MAX_DEMANDS = 3000


class Exchanger:
    """Dense cost and usage tables of the served demands, and the exchange search on them."""

    def __init__(self, options: Options):
        o = options
        self.o = o
        n, P = o.n_demands, o.n_pools
        self.cost = np.full((n, P), np.inf)
        self.use = np.full((n, P), np.iinfo(np.int64).max // 4, dtype=np.int64)
        self.option = np.full((n, P), -1, dtype=np.int64)
        d = o.demand
        self.cost[d, o.pool] = o.cost
        self.use[d, o.pool] = o.units
        self.option[d, o.pool] = np.arange(o.n_options)

    def improve(self, choice: np.ndarray, load: np.ndarray, rng: np.random.Generator,
                locked_pools: np.ndarray | None = None, locked_demands: np.ndarray | None = None,
                passes: int = 10, length: int = 10) -> int:
        """Apply improving exchanges to ``choice`` and ``load`` in place; returns how many."""
        o = self.o
        P = o.n_pools
        applied = 0
        for _ in range(passes):
            nodes = np.flatnonzero(choice >= 0)
            if locked_demands is not None:
                nodes = nodes[~locked_demands[nodes]]
            if len(nodes) < 2:
                break
            nodes = rng.permutation(nodes)
            at = o.pool[choice[nodes]]
            n = len(nodes)
            cost, use = self.cost[nodes], self.use[nodes]
            here = cost[np.arange(n), at]
            cap = o.capacity
            closed = np.zeros(P, dtype=bool) if locked_pools is None else locked_pools
            # Arc weights among demand nodes: row j1, column j2 (j1 enters p(j2)).
            W = cost[:, at] - here[:, None]
            room = (cap - load)[at] + use[np.arange(n), at]  # room in p(j2) once j2 leaves
            W[use[:, at] > room[None, :]] = np.inf
            W[at[:, None] == at[None, :]] = np.inf
            W[:, closed[at]] = np.inf
            # End arcs: j enters a pool with room, nobody leaves.
            E = cost - here[:, None]
            E[use > (cap - load)[None, :]] = np.inf
            E[:, closed] = np.inf
            E[np.arange(n), at] = np.inf
            moved = False
            for _attempt in range(8):
                cycle = _negative_cycle(W, E, length)
                if cycle is None:
                    break
                moved = self._apply(cycle, nodes, at, choice, load)
                if moved:
                    break
                # Pools repeat on this cycle: forbid its first arc and look again.
                jobs, end = cycle
                if len(jobs) > 1:
                    W[jobs[0], jobs[1]] = np.inf
                else:
                    E[jobs[0], end] = np.inf
            if not moved:
                break
            applied += 1
        return applied

    def _apply(self, cycle, nodes, at, choice, load) -> bool:
        """Carry out one exchange if its pools are distinct and it still improves and fits."""
        o = self.o
        jobs, end = cycle  # demand-node positions in order; end pool or -1 for a closed cycle
        targets = [at[jobs[(i + 1) % len(jobs)]] for i in range(len(jobs))]
        if end >= 0:
            targets[-1] = end
        pools = [at[j] for j in jobs] + ([end] if end >= 0 else [])
        if len(set(pools)) != len(pools):
            return False
        ds = nodes[jobs]
        new = np.array([self.option[d, t] for d, t in zip(ds, targets)])
        if np.any(new < 0):
            return False
        old = choice[ds]
        gain = float(o.cost[old].sum() - o.cost[new].sum())
        if not gain > 1e-9 * max(1.0, float(abs(o.cost[old]).sum())):
            return False
        trial = load.copy()
        np.subtract.at(trial, o.pool[old], o.units[old])
        np.add.at(trial, o.pool[new], o.units[new])
        if np.any(trial > o.capacity):
            return False
        choice[ds] = new
        load[:] = trial
        return True


def _negative_cycle(W: np.ndarray, E: np.ndarray, length: int):
    """A negative cycle in the improvement graph, as (demand positions, end pool or -1).

    Label correcting from a virtual source (every node at distance 0): after each relaxation the
    predecessor graph is searched for a cycle. The end nodes and the root are folded in: a path
    j1 .. jk that ends in pool b closes through the root, with value dist(jk) + E[jk, b].
    """
    n = W.shape[0]
    dist = np.zeros(n)
    pred = np.full(n, -1, dtype=np.int64)
    best_path = None
    for _ in range(length):
        cand = dist[:, None] + W
        arg = np.argmin(cand, axis=0)
        new = cand[arg, np.arange(n)]
        better = new < dist - 1e-9
        if not better.any():
            break
        dist[better] = new[better]
        pred[better] = arg[better]
        found = _find_cycle(pred, dist)
        if found is not None:
            return found, -1
        # Path exchanges: the best node to end in a pool with room.
        ends = dist[:, None] + E
        j, b = np.unravel_index(np.argmin(ends), ends.shape)
        if ends[j, b] < -1e-9:
            path = _walk_back(pred, int(j))
            if path is not None:
                best_path = (path, int(b))
    if best_path is None:
        # Single shifts: a node at distance 0 that ends in a pool with room.
        j, b = np.unravel_index(np.argmin(E), E.shape)
        if E[j, b] < -1e-9:
            return [int(j)], int(b)
        return None
    return best_path


def _find_cycle(pred: np.ndarray, dist: np.ndarray):
    """A cycle of the predecessor graph (which is then negative), or None."""
    n = len(pred)
    state = np.zeros(n, dtype=np.int8)  # 0 unseen, 1 on the current walk, 2 done
    for start in np.argsort(dist)[: min(n, 64)]:
        walk = []
        j = int(start)
        while j >= 0 and state[j] == 0:
            state[j] = 1
            walk.append(j)
            j = int(pred[j])
        if j >= 0 and state[j] == 1:
            cycle = walk[walk.index(j):]
            for k in walk:
                state[k] = 2
            cycle.reverse()  # pred points backwards: reverse to follow the arcs
            return cycle
        for k in walk:
            state[k] = 2
    return None


def _walk_back(pred: np.ndarray, j: int):
    """The path root -> ... -> j along predecessors, or None if it loops."""
    path = [j]
    seen = {j}
    while pred[path[-1]] >= 0:
        k = int(pred[path[-1]])
        if k in seen:
            return None
        seen.add(k)
        path.append(k)
    path.reverse()
    return path


def perturb(o: Options, choice: np.ndarray, load: np.ndarray, rng: np.random.Generator,
            moves: int, locked_pools: np.ndarray | None = None,
            locked_demands: np.ndarray | None = None) -> int:
    """Random feasible shifts and swaps, whatever they cost (the kick of an iterated search)."""
    made = 0
    served = np.flatnonzero(choice >= 0)
    if locked_demands is not None:
        served = served[~locked_demands[served]]
    if len(served) < 2:
        return 0
    closed = np.zeros(o.n_pools, dtype=bool) if locked_pools is None else locked_pools
    on_pool = o.pool[np.maximum(choice, 0)]
    for _ in range(20 * moves):
        if made >= moves:
            break
        j = int(rng.choice(served))
        lo, hi = int(o.start[j]), int(o.start[j + 1])
        k = int(rng.integers(lo, hi))
        a, b = int(o.pool[choice[j]]), int(o.pool[k])
        if a == b or closed[b]:
            continue
        if load[b] + o.units[k] <= o.capacity[b]:  # shift j to b
            load[a] -= o.units[choice[j]]
            load[b] += o.units[k]
            choice[j] = k
            on_pool[j] = b
            made += 1
            continue
        # swap with a demand now on b that has an option on a and fits there
        there = served[(on_pool[served] == b) & (choice[served] >= 0)]
        if not len(there):
            continue
        j2 = int(rng.choice(there))
        lo2, hi2 = int(o.start[j2]), int(o.start[j2 + 1])
        back = lo2 + np.flatnonzero(o.pool[lo2:hi2] == a)
        if not len(back) or closed[a]:
            continue
        k2 = int(back[0])
        new_a = load[a] - o.units[choice[j]] + o.units[k2]
        new_b = load[b] - o.units[choice[j2]] + o.units[k]
        if new_a <= o.capacity[a] and new_b <= o.capacity[b]:
            load[a], load[b] = new_a, new_b
            choice[j], choice[j2] = k, k2
            on_pool[j], on_pool[j2] = b, a
            made += 1
    return made
