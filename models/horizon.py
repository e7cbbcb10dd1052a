"""Time: the planning horizon in slots, and values that vary from slot to slot.

A *profile* is a tuple of values over the horizon, written compactly: one value per slot of a day
(``24 / slot_hours`` values, repeated every day) or one value per slot of the whole horizon.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from models.base import Frozen as _Frozen

BEIJING = timezone(timedelta(hours=8), "CST")
"""Beijing time (UTC+8), in which horizons start unless they say otherwise."""

MAX_SLOTS = 8784
"""The most slots a horizon may have: a leap year of hours."""

BANDWIDTH_QUANTUM_GBPS = 1e-6
"""Link load is counted in whole quanta of this many Gbps (1 kbit/s), each flow rounded up."""

TARIFF_PERIODS = "CPFVD"
"""Tariff period codes: C critical peak, P peak, F flat, V valley, D deep valley."""

PERIOD_NAMES = {"C": "critical", "P": "peak", "F": "flat", "V": "valley", "D": "deep_valley"}


class Horizon(_Frozen):
    """The planning window cut into equal slots; decisions are made per slot."""

    slots: int = Field(ge=1, le=MAX_SLOTS)
    slot_hours: float = Field(default=1.0, gt=0, le=MAX_SLOTS)
    start: AwareDatetime = Field(
        default=datetime(2025, 6, 2, tzinfo=BEIJING),
        description="When slot 0 begins (for display; Beijing time if written with +08:00).",
    )

    @property
    def hours(self) -> float:
        return self.slots * self.slot_hours

    @property
    def slots_per_day(self) -> int | None:
        """Slots in 24 hours, if a day is a whole number of slots."""
        per_day = 24.0 / self.slot_hours
        whole = round(per_day)
        return whole if whole >= 1 and math.isclose(per_day, whole, rel_tol=0, abs_tol=1e-9) else None

    def profile_lengths(self) -> tuple[int, ...]:
        """The lengths a profile over this horizon may have."""
        day = self.slots_per_day
        return tuple(sorted({self.slots} | ({day} if day else set())))

    def expand(self, profile):
        """The profile's value in every slot, as a tuple of `slots` values."""
        if len(profile) == self.slots:
            return tuple(profile)
        return tuple(profile[t % len(profile)] for t in range(self.slots))

    def slot_start(self, slot: int) -> datetime:
        return self.start + timedelta(hours=slot * self.slot_hours)


OutageKind = Literal["maintenance", "outage", "reserved"]


class Outage(_Frozen):
    """GPUs of a pool unavailable over a range of slots ``[start_slot, end_slot)``."""

    start_slot: int = Field(ge=0, lt=MAX_SLOTS)
    end_slot: int = Field(ge=1, le=MAX_SLOTS, description="First slot after the outage.")
    gpus: int = Field(ge=1, le=10_000_000)
    kind: OutageKind = "maintenance"


TariffPeriods = Annotated[str, Field(min_length=1, max_length=MAX_SLOTS, pattern=f"^[{TARIFF_PERIODS}]+$")]


def time_problems(inst) -> list[str]:
    """Every time rule an `Instance` breaks, each naming the object and the field.

    Without a horizon no time field may be set; with one, the file is schema version 2, profiles
    have a length the horizon allows, outages and job windows lie inside it, and services say what
    they serve.
    """
    out: list[str] = []
    h = inst.horizon
    if h is None:
        return _untimed_problems(inst)
    if inst.schema_version < 2:
        out.append("instance: field 'horizon' needs 'schema_version': 2")
    if not math.isclose(inst.window_hours, h.hours, rel_tol=1e-9):
        out.append(
            f"instance: field 'window_hours' is {inst.window_hours:g} but the horizon has "
            f"{h.slots} slots of {h.slot_hours:g} h ({h.hours:g} h); leave it out or make them agree"
        )
    lengths = h.profile_lengths()
    allowed = " or ".join(str(n) for n in lengths)

    def length(name: str, field: str, profile) -> None:
        if profile is not None and len(profile) not in lengths:
            out.append(f"{name}: field '{field}' has {len(profile)} values; the horizon takes {allowed}")

    for region in inst.regions:
        name = f"region '{region.id}'"
        length(name, "electricity_price_by_slot_cny_per_kwh", region.electricity_price_by_slot_cny_per_kwh)
        length(name, "tariff_periods", region.tariff_periods)
        length(name, "carbon_by_slot_g_co2_per_kwh", region.carbon_by_slot_g_co2_per_kwh)
        for pool in region.pools:
            out.extend(_outage_problems(pool, h.slots))
    for k, link in enumerate(inst.links):
        length(f"link {k} ({link.source}-{link.target})", "bandwidth_by_slot_gbps", link.bandwidth_by_slot_gbps)
    offered = {offer.demand for offer in inst.offers}
    for d in inst.demands:
        name = f"demand '{d.id}'"
        if d.kind == "service":
            out.extend(_service_problems(d, name, d.id in offered))
            length(name, "load_pflop_per_hour", d.load_pflop_per_hour)
            continue
        for field in ("load_pflop_per_hour", "traffic_gbps", "unserved_penalty_cny_per_pflop"):
            if getattr(d, field) is not None:
                out.append(f"{name}: field '{field}' applies to services only (set 'kind': 'service')")
        release = d.release_slot or 0
        deadline = h.slots if d.deadline_slot is None else d.deadline_slot
        if release >= h.slots:
            out.append(f"{name}: field 'release_slot' is {release}, at or after the horizon's end ({h.slots} slots)")
        elif deadline > h.slots:
            out.append(f"{name}: field 'deadline_slot' is {deadline}, after the horizon's end ({h.slots} slots)")
        elif deadline <= release:
            out.append(f"{name}: field 'deadline_slot' is {deadline}, not after its release slot {release}")
        if len(out) > 1000:
            break
    return out


def _untimed_problems(inst) -> list[str]:
    out: list[str] = []

    def unset(name: str, obj, fields: tuple[str, ...]) -> None:
        for field in fields:
            value = getattr(obj, field)
            if value is not None and value != ():
                out.append(f"{name}: field '{field}' needs a horizon (set 'horizon' and 'schema_version': 2)")

    unset("instance", inst, ("carbon_cap_t_co2",))
    for region in inst.regions:
        unset(f"region '{region.id}'", region,
              ("electricity_price_by_slot_cny_per_kwh", "tariff_periods", "carbon_by_slot_g_co2_per_kwh"))
        for pool in region.pools:
            unset(f"pool '{pool.id}'", pool, ("outages",))
    for k, link in enumerate(inst.links):
        unset(f"link {k} ({link.source}-{link.target})", link, ("bandwidth_by_slot_gbps",))
    for d in inst.demands:
        name = f"demand '{d.id}'"
        if d.kind == "service":
            out.append(f"{name}: field 'kind' is 'service', which needs a horizon")
        unset(name, d, ("release_slot", "deadline_slot", "load_pflop_per_hour", "traffic_gbps",
                        "unserved_penalty_cny_per_pflop"))
        if len(out) > 1000:
            break
    return out


def _outage_problems(pool, slots: int) -> list[str]:
    out: list[str] = []
    events: dict[int, int] = {}
    for k, outage in enumerate(pool.outages):
        name = f"pool '{pool.id}' outage {k}"
        if outage.end_slot <= outage.start_slot:
            out.append(f"{name}: field 'end_slot' is {outage.end_slot}, not after 'start_slot' {outage.start_slot}")
        elif outage.end_slot > slots:
            out.append(f"{name}: field 'end_slot' is {outage.end_slot}, after the horizon's end ({slots} slots)")
        elif outage.gpus > pool.gpu_count:
            out.append(f"{name}: field 'gpus' is {outage.gpus} but the pool has {pool.gpu_count} GPUs")
        else:
            events[outage.start_slot] = events.get(outage.start_slot, 0) + outage.gpus
            events[outage.end_slot] = events.get(outage.end_slot, 0) - outage.gpus
    down = 0
    for slot in sorted(events):
        down += events[slot]
        if down > pool.gpu_count:
            out.append(
                f"pool '{pool.id}': field 'outages' takes {down} GPUs out from slot {slot} but the pool "
                f"has {pool.gpu_count}"
            )
            break
    return out


def _service_problems(d, name: str, has_offers: bool) -> list[str]:
    out: list[str] = []
    if d.load_pflop_per_hour is None:
        out.append(f"{name}: field 'load_pflop_per_hour' is missing (a service needs a load)")
    for field, why in (
        ("work_pflop", "a service's work is its load"),
        ("deadline_hours", "a service runs over the whole horizon"),
        ("release_slot", "a service runs over the whole horizon"),
        ("deadline_slot", "a service runs over the whole horizon"),
        ("max_cost_cny", "a service's cost is capped by its unserved penalty"),
    ):
        if getattr(d, field) is not None:
            out.append(f"{name}: field '{field}' does not apply to services ({why})")
    if d.must_serve:
        out.append(f"{name}: field 'must_serve' applies to batch demands only")
    if d.data_gb:
        out.append(f"{name}: field 'data_gb' applies to batch demands only (a service has 'traffic_gbps')")
    if d.unserved_penalty_cny:
        out.append(f"{name}: field 'unserved_penalty_cny' applies to batch demands; a service has "
                   "'unserved_penalty_cny_per_pflop'")
    if has_offers:
        out.append(f"{name}: a service cannot have offers")
    return out
