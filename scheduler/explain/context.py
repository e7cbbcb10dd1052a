"""The compiled instance, the plan as a choice, and the shadow prices, shared by the explanations."""

from __future__ import annotations

import numpy as np

from models import Instance, Plan
from scheduler.explain.prices import timed_multipliers, timed_prices, window_lambda, window_prices


class UnknownName(KeyError):
    """An id that the instance does not have; the message names the object and the option."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Context:
    """One instance and one plan, compiled once: options (or the horizon problem), the plan's choice
    and load, and the multipliers of the capacity rows (saved with the plan, or computed now)."""

    def __init__(self, instance: Instance, plan: Plan):
        self.instance = instance
        self.plan = plan
        self.pairs = instance.pools()
        self.demand_index = {d.id: k for k, d in enumerate(instance.demands)}
        self.pool_index = {pool.id: p for p, (_, pool) in enumerate(self.pairs)}
        self.assignment = {a.demand: a for a in plan.assignments}
        self.unserved = {u.demand: u for u in plan.unserved}
        self.usage = {u.pool: u for u in plan.pools}
        prices = plan.shadow_prices
        self.prices_saved = prices is not None
        self.timed = instance.timed
        if self.timed:
            from scheduler.engines.timed_dual import Multipliers
            from scheduler.timed import TimedLoad, compile_timed

            self.problem = compile_timed(instance)
            if prices is None:
                prices = timed_prices(instance, self.problem, None, plan.objective)
            self.mult = (timed_multipliers(prices, self.problem, instance) if prices is not None
                         else Multipliers.zeros(self.problem))
            self.batch_position = {int(r): k for k, r in enumerate(self.problem.batch.rows)}
            self.service_position = {int(r): k for k, r in enumerate(self.problem.services.rows)}
            self.choice = plan_choice(self)
            self.load = TimedLoad.of(self.problem, self.choice)
        else:
            from scheduler.compile import compile_options

            self.options = compile_options(instance)
            if prices is None and instance.policy is not None:
                from scheduler.policy import policy_prices

                prices = policy_prices(instance, self.options)
            elif prices is None:
                prices = window_prices(instance, self.options)
            self.lam = (window_lambda(prices, self.options, instance) if prices is not None
                        else np.zeros(self.options.n_pools))
        self.prices = prices

    def demand(self, demand_id: str) -> int:
        if demand_id not in self.demand_index:
            raise UnknownName(f"demand '{demand_id}': no such demand in instance '{self.instance.name}' "
                              "(option --demand)")
        return self.demand_index[demand_id]

    def pool(self, pool_id: str) -> int:
        if pool_id not in self.pool_index:
            raise UnknownName(f"pool '{pool_id}': no such pool in instance '{self.instance.name}' "
                              "(option --pool)")
        return self.pool_index[pool_id]

    def option_of(self, i: int, pool_id: str) -> int | None:
        """The option index of demand ``i`` on pool ``pool_id`` (single window or horizon batch)."""
        p = self.pool_index[pool_id]
        if self.timed:
            b = self.problem.batch
            bi = self.batch_position[i]
            ks = np.arange(b.start[bi], b.start[bi + 1])
        else:
            o = self.options
            ks = np.arange(o.start[i], o.start[i + 1])
            b = o
        hit = ks[b.pool[ks] == p]
        return int(hit[0]) if len(hit) else None


def plan_choice(ctx: Context):
    """The plan as a `timed.TimedChoice` of the compiled problem (a plan the verifier accepts maps
    onto it: each assignment is an option and start, each placement a service option)."""
    from scheduler.timed import TimedChoice

    pb, inst = ctx.problem, ctx.instance
    b, sv = pb.batch, pb.services
    option = np.full(b.n_demands, -1, dtype=np.int64)
    start = np.full(b.n_demands, -1, dtype=np.int32)
    for a in ctx.plan.assignments:
        i = ctx.demand_index[a.demand]
        k = ctx.option_of(i, a.pool)
        if k is not None and a.start_slot is not None:
            option[ctx.batch_position[i]] = k
            start[ctx.batch_position[i]] = a.start_slot
    replicas = np.zeros((sv.n_options, pb.slots), dtype=np.int64)
    served = np.zeros((sv.n_options, pb.slots), dtype=np.int64)
    quantum = inst.load_quantum_pflop_per_hour
    for plan in ctx.plan.services:
        j_of = ctx.service_position[ctx.demand_index[plan.demand]]
        js = np.arange(sv.start[j_of], sv.start[j_of + 1])
        for place in plan.placements:
            hit = js[sv.pool[js] == ctx.pool_index[place.pool]]
            if len(hit):
                replicas[hit[0]] = place.replicas
                served[hit[0]] = np.round(np.asarray(place.served_pflop_per_hour) / quantum).astype(np.int64)
    return TimedChoice(option, start, replicas, served)
