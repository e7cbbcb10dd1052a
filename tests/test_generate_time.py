"""The China generator's horizon (`hours`): the shipped week, tariffs, carbon, services, windows."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import pytest

from models import BEIJING, DemandKind, Instance, Sector
from scheduler.cli import main
from scheduler.generate import china_instance, china_time_data

INSTANCES = Path(__file__).resolve().parents[1] / "instances"
WEEK = INSTANCES / "china-2025-week.json"


@lru_cache(maxsize=1)
def week() -> Instance:
    return Instance.model_validate_json(WEEK.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def generated() -> Instance:
    """A fresh week from the generator (so that the checks below test the code, not only the file)."""
    return china_instance(demands=800, seed=11, hours=168)


@pytest.fixture(params=["shipped", "generated"])
def inst(request) -> Instance:
    return week() if request.param == "shipped" else generated()


def region(inst: Instance, region_id: str):
    return next(r for r in inst.regions if r.id == region_id)


def test_week_file_is_the_cli_output(tmp_path):
    """instances/china-2025-week.json is, byte for byte, `eastwest generate china --demands 3000
    --hours 168 --seed 2025`."""
    out = tmp_path / "week.json"
    assert main(["generate", "china", "--demands", "3000", "--hours", "168", "--seed", "2025",
                 "-o", str(out)]) == 0
    assert out.read_bytes() == WEEK.read_bytes()


def test_default_output_is_unchanged():
    """Without hours the generator writes exactly the shipped single-window file (no time field)."""
    shipped = (INSTANCES / "china-2025.json").read_text(encoding="utf-8")
    assert china_instance(demands=3000, seed=2025).model_dump_json(indent=1) + "\n" == shipped
    assert '"horizon"' not in shipped and '"schema_version": 1' in shipped


def test_week_shape():
    """The week: schema 2, 168 one-hour slots from Monday 2025-06-02 00:00 Beijing time, about
    3,000 demands of which a few percent are services, no carbon cap by default."""
    inst = week()
    assert inst.schema_version == 2 and inst.window_hours == 168
    assert (inst.horizon.slots, inst.horizon.slot_hours) == (168, 1.0)
    assert inst.horizon.start == datetime(2025, 6, 2, tzinfo=BEIJING)
    assert inst.horizon.start.weekday() == 0  # Monday
    services = [d for d in inst.demands if d.kind == DemandKind.SERVICE]
    assert len(inst.demands) == 3000
    assert 0.02 * 3000 < len(services) < 0.15 * 3000
    assert {d.sector for d in services} == {Sector.LLM_INFERENCE, Sector.SMART_CITY, Sector.FINANCE}
    assert inst.carbon_cap_t_co2 is None


def test_gansu_valley_is_midday(inst):
    """Gansu's June pattern (甘发改价格〔2024〕424号) puts the valley at hours 10-15, priced at the
    base 0.40 CNY/kWh x 0.5 = 0.20 (the 3:1 floor, symmetric); peaks at 0.40 x 1.5 = 0.60."""
    for region_id in ("gansu", "qingyang_cluster"):
        r = region(inst, region_id)
        valley = [h for h, c in enumerate(r.tariff_periods) if c == "V"]
        assert valley == [10, 11, 12, 13, 14, 15]
        prices = r.electricity_price_by_slot_cny_per_kwh
        assert len(prices) == 24 and len(r.tariff_periods) == 24
        assert {prices[h] for h in valley} == {0.2}
        assert {prices[h] for h, c in enumerate(r.tariff_periods) if c == "P"} == {0.6}
        assert {prices[h] for h, c in enumerate(r.tariff_periods) if c == "F"} == {0.4}


def test_price_is_base_times_ratio_of_the_season(inst):
    """Every region's price is its base price times its period's ratio in the start month's season
    (flat grids: the base in every hour)."""
    facts = china_time_data()
    tariff_of = {rid: t for t in facts["tariffs"] for rid in t["regions"]}
    for r in inst.regions:
        tariff = tariff_of.get(r.id)
        season = next((s for s in tariff["seasons"] if 6 in s["months"]), None) if tariff else None
        ratios = season["ratios"] if season else {"F": 1.0}
        assert r.tariff_periods == (season["pattern"] if season else "F" * 24), r.id
        expected = tuple(round(r.electricity_price_cny_per_kwh * ratios[c], 4) for c in r.tariff_periods)
        assert r.electricity_price_by_slot_cny_per_kwh == expected, r.id


def test_winter_start_takes_the_winter_season():
    """A January start gives Shanghai its Jan/Dec pattern with the critical peak at 19-20, priced
    0.68 x 2.25 = 1.53."""
    inst = china_instance(demands=100, seed=1, hours=24, start=datetime(2025, 1, 6, tzinfo=BEIJING))
    r = region(inst, "shanghai")
    assert r.tariff_periods == "VVVVVVFFPPPFFFFFFFPCCFVV"
    assert r.electricity_price_by_slot_cny_per_kwh[19] == pytest.approx(1.53)


def test_daily_carbon_mean_is_the_annual_figure(inst):
    """Every region's 24 hourly intensities average exactly its annual (MEE/NBS) figure."""
    for r in inst.regions:
        carbon = r.carbon_by_slot_g_co2_per_kwh
        assert len(carbon) == 24
        assert math.isclose(sum(carbon) / 24, r.carbon_g_co2_per_kwh, rel_tol=0, abs_tol=1e-9), r.id


def test_carbon_is_lowest_in_the_solar_hours_in_the_northwest(inst):
    """Gansu's grid is cleanest at midday (solar) and dirtiest in the evening; its lowest hour is
    35% below its highest (the northwest swing carried in china-time.json)."""
    carbon = region(inst, "gansu").carbon_by_slot_g_co2_per_kwh
    assert min(range(24), key=carbon.__getitem__) in (12, 13)
    assert max(range(24), key=carbon.__getitem__) in range(18, 23)
    assert 1 - min(carbon) / max(carbon) == pytest.approx(0.35, abs=0.002)  # tenths-of-a-gram rounding


def test_services_have_day_loads(inst):
    """Services carry 24 loads that follow one of the two inference day shapes, traffic, a penalty
    per PFLOP and a latency bound, and none of the batch fields."""
    shapes = china_time_data()["inference_load_shapes"]
    relative = {key: tuple(v / max(shapes[key]["value"]) for v in shapes[key]["value"])
                for key in ("consumer_chat", "api_enterprise")}
    services = [d for d in inst.demands if d.kind == DemandKind.SERVICE]
    for d in services:
        load = d.load_pflop_per_hour
        assert len(load) == 24 and min(load) > 0
        scaled = tuple(v / max(load) for v in load)
        # loads are rounded to 0.01 PFLOP/h on peaks of hundreds: shapes agree to 1e-3
        assert any(max(abs(a - b) for a, b in zip(scaled, shape)) < 1e-3 for shape in relative.values()), d.id
        assert d.traffic_gbps > 0 and d.unserved_penalty_cny_per_pflop > 0
        assert d.max_latency_ms is not None
        assert d.work_pflop is None and d.release_slot is None and d.deadline_slot is None
        assert not d.must_serve and d.data_gb == 0


def test_batch_windows_are_valid_and_spread(inst):
    """Every batch window lies in the horizon; windows start all over the week; medical imaging and
    finance windows are shorter than training and education ones (median)."""
    batch = [d for d in inst.demands if d.kind == DemandKind.BATCH]
    assert all(0 <= d.release_slot < d.deadline_slot <= 168 for d in batch)
    assert all(d.deadline_hours is None and d.work_pflop > 0 for d in batch)
    releases = sorted(d.release_slot for d in batch)
    assert releases[len(releases) // 10] < 24 and releases[-len(releases) // 10] > 100

    def median_window(sector: Sector) -> float:
        lengths = sorted(d.deadline_slot - d.release_slot for d in batch if d.sector == sector)
        return lengths[len(lengths) // 2]

    urgent = max(median_window(Sector.MEDICAL_IMAGING), median_window(Sector.FINANCE))
    assert urgent < min(median_window(Sector.LLM_TRAINING), median_window(Sector.EDUCATION))


def test_outages_are_inside_the_horizon_and_the_pool(inst):
    """Some pools have maintenance windows of 2-6 h and there are reserved blocks; none takes more
    GPUs than the pool has or leaves the horizon."""
    kinds = []
    for _, pool in inst.pools():
        for o in pool.outages:
            assert 0 <= o.start_slot < o.end_slot <= 168 and 1 <= o.gpus <= pool.gpu_count
            if o.kind == "maintenance":
                assert o.end_slot - o.start_slot <= 6
            kinds.append(o.kind)
    assert kinds.count("maintenance") >= 5 and "reserved" in kinds


def test_same_seed_same_bytes():
    """A seed fixes the timed instance, byte for byte; another seed draws another."""
    a = china_instance(demands=300, seed=9, hours=48).model_dump_json(indent=1)
    b = china_instance(demands=300, seed=9, hours=48).model_dump_json(indent=1)
    c = china_instance(demands=300, seed=10, hours=48).model_dump_json(indent=1)
    assert a == b and a != c


def test_short_horizon_is_valid():
    """A 12-hour horizon still has 24-value day profiles and windows inside its 12 slots."""
    inst = china_instance(demands=200, seed=2, hours=12)
    assert inst.horizon.slots == 12
    assert all(len(r.electricity_price_by_slot_cny_per_kwh) == 24 for r in inst.regions)
    assert all(d.deadline_slot <= 12 for d in inst.demands if d.kind == DemandKind.BATCH)


def test_carbon_cap_is_passed_through(tmp_path):
    """--carbon-cap sets the instance's cap with --hours and is refused without it (exit 2)."""
    out = tmp_path / "capped.json"
    assert main(["generate", "china", "--demands", "50", "--hours", "24", "--carbon-cap", "12.5",
                 "-o", str(out)]) == 0
    assert json.loads(out.read_text())["carbon_cap_t_co2"] == 12.5
    assert main(["generate", "china", "--demands", "50", "--carbon-cap", "1", "-o", str(out)]) == 2


def test_bad_hours_are_refused():
    """hours outside [1, 8784] or with a different window_hours is a clear ValueError."""
    with pytest.raises(ValueError, match="hours"):
        china_instance(demands=10, hours=0)
    with pytest.raises(ValueError, match="window_hours"):
        china_instance(demands=10, hours=24, window_hours=48.0)


def test_time_facts_are_sourced():
    """Every pattern in china-time.json has 24 letters with a ratio for each, no month twice per
    grid, and every number-carrying entry names its source and whether it is an estimate."""
    facts = china_time_data()
    for tariff in facts["tariffs"]:
        months = [m for s in tariff["seasons"] for m in s["months"]]
        assert len(months) == len(set(months)), tariff["id"]
        for season in tariff["seasons"]:
            assert len(season["pattern"]) == 24 and set(season["pattern"]) <= set(season["ratios"])
            assert season["ref"] and isinstance(season["estimate"], bool)

    refs: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if "value" in node:
                assert "ref" in node and "estimate" in node, node
            refs.update(re.findall(r"\bT\d+\b", str(node.get("ref") or "")))
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(facts)
    assert refs and refs <= set(facts["sources"]), refs - set(facts["sources"])
