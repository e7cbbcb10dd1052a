"""One service cell (a service in one slot) covered at least cost in the room it has.

The cell: load ``L`` quanta, a penalty ``pen`` per quantum left unserved, and rows ``j`` (the
service's pools) with ``kappa[j]`` quanta per replica, ``rent[j]`` per replica, ``transfer[j]``
per quantum served and room for ``room[j]`` replicas. Choose whole replicas ``m_j <= room[j]``
and quanta ``u_j <= kappa[j] m_j`` with ``sum u_j <= L`` at least
``sum (rent[j] m_j + transfer[j] u_j) + pen (L - sum u_j)``.

Some optimum uses at most one replica that is not full: if two were not, moving quanta from
one to the other changes the cost linearly, so one direction does not raise it, until one of
them is full or empty (then its rent goes). So an optimum is a number of full replicas of
each size (a replica of row j saves ``(pen - transfer[j]) kappa[j] - rent[j]`` against the
penalty, whatever else is chosen) plus one replica on the row that best covers what is left.
`cell_cover` enumerates the counts of full replicas per replica size (the rows of one size
taken best saving first) and, for each, the best row for the rest. That is an optimum when the
rows of one size share a transfer price (then which of them holds the partial replica does not
change the sum); otherwise a row of cheap transfer may be better kept for the partial replica,
and the cover is the best of those it enumerates. The greedy rule that ranks
rows by cost per quantum of a full replica is not this: for a load a quarter of a large
replica's it rents the large replica where a small one costs half as much.
"""

from __future__ import annotations

MAX_COMBINATIONS = 64  # counts of full replicas tried per cell before giving up (None)


def cell_cover(load: int, pen: float, kappa: list[int], rent: list[float], transfer: list[float],
               room: list[int], max_combinations: int = MAX_COMBINATIONS):
    """The cell's cover as the module describes: ([(row, replicas, quanta)], cost), rows as
    indices into the lists; None when the counts of full replicas to try exceed
    ``max_combinations``."""
    L = int(load)
    if L <= 0:
        return [], 0.0
    usable = []  # rows where one replica pays for itself against the penalty
    by_size: dict[int, list[tuple[float, int]]] = {}  # rows where a full one does, by size
    for j, k in enumerate(kappa):
        if k <= 0 or room[j] <= 0:
            continue
        net = pen - transfer[j]
        if net * min(L, k) <= rent[j]:
            continue
        usable.append(j)
        if k <= L and net * k - rent[j] > 0:
            by_size.setdefault(k, []).append((rent[j] - net * k, j))
    if not usable:
        return [], pen * L
    if not by_size:  # no replica can be full: the one row that covers the load best
        j = max(usable, key=lambda r: (pen - transfer[r]) * min(L, kappa[r]) - rent[r])
        u = min(L, kappa[j])
        return [(j, 1, u)], rent[j] * 1 + transfer[j] * u + pen * (L - u)
    sizes = []  # (size, rows of its successive full replicas, their cumulative savings)
    for size in sorted(by_size, reverse=True):
        most = L // size
        units: list[int] = []
        savings = [0.0]
        for neg, j in sorted(by_size[size]):
            for _ in range(min(room[j], most - len(units))):
                units.append(j)
                savings.append(savings[-1] - neg)
            if len(units) >= most:
                break
        sizes.append((size, units, savings))

    best_saving, best = 0.0, None  # best: (counts, partial row and quanta)
    for tried, (counts, rem, saving) in enumerate(_counts(sizes, 0, L, 0.0)):
        if tried >= max_combinations:
            return None
        used: dict[int, int] = {}
        for (_, units, _), c in zip(sizes, counts):
            for j in units[:c]:
                used[j] = used.get(j, 0) + 1
        partial, extra = None, 0.0
        if rem > 0:
            for j in usable:
                if used.get(j, 0) < room[j]:
                    u = min(rem, kappa[j])
                    gain = (pen - transfer[j]) * u - rent[j]
                    if gain > extra:
                        partial, extra = (j, u), gain
        if saving + extra > best_saving:
            best_saving, best = saving + extra, (counts, partial)
    if best is None:
        return [], pen * L
    counts, partial = best
    replicas: dict[int, list[int]] = {}
    for (size, units, _), c in zip(sizes, counts):
        for j in units[:c]:
            m, u = replicas.get(j, [0, 0])
            replicas[j] = [m + 1, u + size]
    if partial is not None:
        j, u = partial
        m, uu = replicas.get(j, [0, 0])
        replicas[j] = [m + 1, uu + u]
    placed = sorted((j, m, u) for j, (m, u) in replicas.items())
    cost = sum(rent[j] * m + transfer[j] * u for j, m, u in placed)
    return placed, cost + pen * (L - sum(u for _, _, u in placed))


def _counts(sizes, at: int, rem: int, saving: float):
    """Every count of full replicas per size from ``at`` on that fits in ``rem`` quanta:
    (counts, quanta left, saving), the most replicas first."""
    if at == len(sizes):
        yield [], rem, saving
        return
    size, units, savings = sizes[at]
    for c in range(min(len(units), rem // size), -1, -1):
        for rest, left, total in _counts(sizes, at + 1, rem - c * size, saving + savings[c]):
            yield [c] + rest, left, total
