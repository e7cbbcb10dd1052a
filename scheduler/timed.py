"""Horizon instances -> the time-expanded problem of docs/formulation.md §8, as arrays.

`TimedProblem` is what the timed engines (`engines/timed_exact.py`, `engines/timed_large.py`) and
the map back to a plan (`timed_decode.py`) read; `TimedChoice` is what they return. Batch options
are (demand, pool) pairs with their range of allowed starts: the (demand, pool, start) triples are
priced on demand (`TimedProblem.start_costs`), never stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class BatchOptions:
    """Eligible (batch demand, pool) pairs, grouped by demand: ``start[i]:start[i+1]`` (by pool)."""

    rows: np.ndarray  # int64 [batch]: index into Instance.demands
    start: np.ndarray  # int64 [batch + 1]
    pool: np.ndarray  # int32 [K]: pool index (order of Instance.pools())
    units: np.ndarray  # int64 [K]: usage in GPU-hour quanta (§2)
    slots: np.ndarray  # int32 [K]: n[d,p], slots the run holds
    first: np.ndarray  # int32 [K]: earliest allowed start
    last: np.ndarray  # int32 [K]: latest allowed start (inclusive), >= first
    fixed_cost: np.ndarray  # float64 [K]: weighted compute + transfer (start-independent)
    kwh_full: np.ndarray  # float64 [K]: kWh drawn in each full slot of the run
    kwh_last: np.ndarray  # float64 [K]: kWh drawn in the last slot of the run
    priced_energy: np.ndarray  # bool [K]: False for offers (energy in the quote, §2)
    route: np.ndarray  # int32 [K]: index into TimedProblem.routes when the data moves, else -1
    data_gb: np.ndarray  # float64 [K]: data moved (0 when it does not move)
    gang: np.ndarray  # int32 [batch]
    release: np.ndarray  # int32 [batch]
    penalty: np.ndarray  # float64 [batch]: pi[d]
    must_serve: np.ndarray  # bool [batch]
    nearest_miss: np.ndarray  # int8 [batch]: rule index reached furthest (compile.ELIGIBLE if any)


@dataclass(frozen=True, eq=False)
class ServiceOptions:
    """Eligible (service, pool) pairs, grouped by service: ``start[j]:start[j+1]``."""

    rows: np.ndarray  # int64 [services]: index into Instance.demands
    start: np.ndarray  # int64 [services + 1]
    pool: np.ndarray  # int32 [J]
    kappa: np.ndarray  # int64 [J]: load quanta one replica serves
    rent: np.ndarray  # float64 [J, S]: weighted cost of one replica in slot t (compute+energy+carbon)
    co2_kg: np.ndarray  # float64 [J, S]: emissions of one replica in slot t
    transfer_per_quantum: np.ndarray  # float64 [J]: weighted transfer cost of a served quantum
    tau: np.ndarray  # int64 [J]: bandwidth quanta per served quantum on each route link (0 at home)
    route: np.ndarray  # int32 [J]: index into TimedProblem.routes, -1 in the origin's region
    load: np.ndarray  # int64 [services, S]: Lq[d,t]
    penalty_per_quantum: np.ndarray  # float64 [services]: pi_load * Q * h
    gang: np.ndarray  # int32 [services]
    nearest_miss: np.ndarray  # int8 [services]


@dataclass(frozen=True, eq=False)
class TimedProblem:
    """The time-expanded problem of one horizon instance (docs/formulation.md §8)."""

    slots: int
    slot_hours: float
    batch: BatchOptions
    services: ServiceOptions
    avail: np.ndarray  # int64 [pools, S]: GPUs available
    bandwidth: np.ndarray  # int64 [links, S]: capacity in bandwidth quanta
    routes: tuple[np.ndarray, ...]  # link indices (order of Instance.links) of each route
    route_regions: tuple[tuple[str, ...], ...]  # region ids along each route, origin first
    price: np.ndarray  # float64 [pools, S]: weighted energy price of the pool's region (CNY/kWh)
    carbon: np.ndarray  # float64 [pools, S]: grid intensity of the pool's region (g/kWh)
    carbon_price: float  # weighted CNY per kg CO2
    carbon_cap_g: int | None  # the cap in grams, or None


@dataclass(frozen=True, eq=False)
class TimedChoice:
    """A solution: each batch demand's option and start (-1: unserved), each service placement's
    replicas and served quanta per slot."""

    option: np.ndarray  # int64 [batch]: index into BatchOptions (K), -1 unserved
    start_slot: np.ndarray  # int32 [batch]: chosen start, -1 unserved
    replicas: np.ndarray  # int64 [J, S]
    served: np.ndarray  # int64 [J, S]: load quanta served
