"""Re-planning (scheduler/replan.py, docs/replan.md): hand-derived re-plans, the brute force of
tests/timed_reference.py, properties over random horizon instances, and the command's exit codes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from models import Instance, Status
from scheduler import read_instance, solve, verify
from scheduler.cli import main
from scheduler.params import SolveParams
from scheduler.replan import (
    CapacityEvent,
    Events,
    OutageEvent,
    ReplanError,
    apply_events,
    parse_outage,
    replan,
)
from scheduler.strategies import timed_instances
from tests import timed_reference

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "instances" / "tiny"
EXACT = SolveParams(time_limit_s=20, engine="exact", workers=1)


def solved(instance):
    return solve(instance, EXACT).plan


def test_outage_moves_the_remote_job_home_with_its_move_and_resent_data():
    """timed_remote_data: the job waits for its data and runs in the west at slot 3 (1 + 45 = 46).
    With the west out from slot 2, re-planned at slot 1, it runs in the east at once: 100 for the
    GPU-hour, 5 to move it, and 15 for the third of its data (slots 0 of 0-2) already sent west."""
    instance = read_instance(TINY / "timed_remote_data.json")
    old = solved(instance)
    assert [(a.pool, a.start_slot) for a in old.assignments] == [("west-a", 3)]
    result = replan(instance, old, now_slot=1, migration_cost_cny=5.0, params=EXACT,
                    events=Events(outages=(OutageEvent(target="west", from_slot=2, to_slot=4),)))
    assert [(a.pool, a.start_slot) for a in result.plan.assignments] == [("east-a", 1)]
    assert math.isclose(result.plan.costs.migration_cny, 20.0)
    assert math.isclose(result.plan.objective, 120.0) and result.plan.status == Status.OPTIMAL
    assert verify(result.instance, result.plan).ok
    (change,) = result.change.changes
    assert change.kind == "moved" and "east-west" in change.reason and math.isclose(change.cost_delta_cny, 74.0)


def two_pools(deadline: int = 2) -> Instance:
    """One region, a cheap pool (1 CNY per GPU-hour) and a dear one (3), one GPU each, 4 slots;
    one job of 7200 PFLOP at 1000 TFLOPS: 2 GPU-hours, 2 slots, penalty 100, due by ``deadline``."""
    pool = {"accelerator": "H800", "gpu_count": 1, "memory_gb_per_gpu": 80.0,
            "tflops_by_precision": {"bf16": 1000.0}, "power_kw_per_gpu": 0.0}
    return Instance.model_validate({
        "schema_version": 2, "name": "two_pools", "horizon": {"slots": 4},
        "regions": [{"id": "east", "jurisdiction": "cn", "lat": 30, "lon": 110,
                     "electricity_price_cny_per_kwh": 0.0, "pue": 1.0, "carbon_g_co2_per_kwh": 0.0,
                     "pools": [{**pool, "id": "cheap", "price_cny_per_gpu_hour": 1.0},
                               {**pool, "id": "dear", "price_cny_per_gpu_hour": 3.0}]}],
        "demands": [{"id": "job", "origin": "east", "work_pflop": 7200.0, "unserved_penalty_cny": 100.0,
                     "deadline_slot": deadline}],
    })


def test_a_started_job_on_a_failed_pool_restarts_elsewhere_with_its_progress_lost():
    """The job runs on the cheap pool in slots 0-1 (cost 2). The cheap pool fails from slot 1;
    re-planned at slot 1 the job (due by slot 3) restarts on the dear pool at slot 1 for 3 x 2 = 6, its progress
    lost, with no move cost (its old spot is gone, not given up); the job is no longer pinned."""
    instance = two_pools(deadline=3)
    old = solved(instance.model_copy(update={"demands": (instance.demands[0].model_copy(
        update={"deadline_slot": 2}),)})).model_copy()
    old = old.model_copy(update={"instance": instance.name})
    assert [(a.pool, a.start_slot, a.end_slot) for a in old.assignments] == [("cheap", 0, 2)]
    result = replan(instance, old, now_slot=1, migration_cost_cny=1e6, params=EXACT,
                    events=Events(outages=(OutageEvent(target="cheap", from_slot=1, to_slot=4),)))
    assert [(a.pool, a.start_slot) for a in result.plan.assignments] == [("dear", 1)]
    assert math.isclose(result.plan.objective, 6.0) and result.plan.costs.migration_cny == 0.0
    (change,) = result.change.changes
    assert change.kind == "restarted" and "progress lost" in change.reason
    assert result.change.pinned == 0 and result.change.planned_on_lost_capacity == 1


def test_a_started_job_stays_put_when_its_pool_keeps_its_gpus():
    """The same job, the dear pool failing instead: the job started before slot 1 keeps the cheap
    pool and slot 0 (pinned); the verifier refuses a plan that moves it."""
    instance = two_pools()
    old = solved(instance)
    result = replan(instance, old, now_slot=1, params=EXACT,
                    events=Events(outages=(OutageEvent(target="dear", from_slot=1, to_slot=4),)))
    assert [(a.pool, a.start_slot) for a in result.plan.assignments] == [("cheap", 0)]
    assert result.change.pinned == 1 and not result.change.changes
    moved = result.plan.assignments[0].model_copy(update={"start_slot": 1, "end_slot": 3})
    bad = result.plan.model_copy(update={"assignments": (moved,)})
    assert "moved_pinned" in {v.code for v in verify(result.instance, bad).violations}


def test_apply_events_turns_capacity_into_outages_from_now():
    """A capacity cut from 4 to 1 GPUs at slot 2 is an outage of 3 GPUs over slots 2-3; the
    verifier's availability (4, 4, 1, 1) follows from the instance alone."""
    instance = read_instance(TINY / "timed_valley.json")
    old = solved(instance)
    modified = apply_events(instance, old, 2, Events(capacity=(CapacityEvent(pool="east-a", gpus=1),)))
    pool = modified.instance.regions[0].pools[0]
    assert [(o.start_slot, o.end_slot, o.gpus) for o in pool.outages] == [(2, 4, 3)]
    grown = apply_events(instance, old, 2, Events(capacity=(CapacityEvent(pool="east-a", gpus=6),)))
    pool = grown.instance.regions[0].pools[0]
    assert pool.gpu_count == 6 and [(o.start_slot, o.end_slot, o.gpus) for o in pool.outages] == [(0, 2, 2)]


@pytest.mark.parametrize("name", ["timed_valley", "timed_outage", "timed_remote_data",
                                  "timed_service_split", "timed_carbon_cap"])
def test_no_events_and_no_migration_cost_keep_the_optimum(name):
    """Re-planned at slot 0 with no events and no move cost, an optimal plan's cost is the
    optimum again (the brute force of tests/timed_reference.py says what it is)."""
    instance = read_instance(TINY / f"{name}.json")
    old = solved(instance)
    result = replan(instance, old, now_slot=0, migration_cost_cny=0.0, params=EXACT)
    expected = timed_reference.optimum(instance)
    assert math.isclose(result.plan.objective, expected, rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(result.plan.objective, old.objective, rel_tol=1e-9, abs_tol=1e-6)


SMALL = dict(max_regions=2, max_demands=4, max_slots=5, max_pools_per_region=2, services=False,
             offers=False, carbon_cap=False, connected=True)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(instance=timed_instances(**SMALL), data=st.data())
def test_outages_at_slot_zero_without_move_cost_match_the_brute_force(instance, data):
    """At slot 0 with no move cost a re-plan is a fresh solve of the modified instance: its
    objective is the enumerated optimum of that instance (facts only, `replanning` dropped)."""
    try:
        old = solved(instance)
    except Exception:  # noqa: BLE001 - instances the compiler refuses (RangeError) say nothing here
        assume(False)
    assume(old.status == Status.OPTIMAL)
    pool = data.draw(st.sampled_from([p.id for _, p in instance.pools()]))
    lo = data.draw(st.integers(0, instance.horizon.slots - 1))
    hi = data.draw(st.integers(lo + 1, instance.horizon.slots))
    result = replan(instance, old, now_slot=0, migration_cost_cny=0.0, params=EXACT,
                    events=Events(outages=(OutageEvent(target=pool, from_slot=lo, to_slot=hi),)))
    facts = result.instance.model_copy(update={"replanning": None})
    expected = timed_reference.optimum(facts)
    if expected is None:
        assert result.plan.status in (Status.INFEASIBLE, Status.UNKNOWN)
        return
    assert result.plan.status == Status.OPTIMAL
    assert math.isclose(result.plan.objective, expected, rel_tol=1e-9, abs_tol=1e-6)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(instance=timed_instances(max_regions=2, max_demands=5, max_slots=6, connected=True, carbon_cap=False),
       data=st.data())
def test_with_a_high_move_cost_nothing_moves_unless_forced_and_started_jobs_stay(instance, data):
    """No events, a move cost of 1e6 (above any saving these instances allow; at 1e9 the integer
    scaling's rounding bound, 1e-4 CNY, kept a zero-cost plan from being proven optimal): the old
    optimal plan stays feasible, every other plan costs at least as much before moves, so the re-plan has the old cost and moves nothing; jobs that
    started before now keep their pool and start (the verifier checks it too: `moved_pinned`)."""
    try:
        old = solved(instance)
    except Exception:  # noqa: BLE001
        assume(False)
    assume(old.status == Status.OPTIMAL)
    now = data.draw(st.integers(0, instance.horizon.slots - 1))
    result = replan(instance, old, now_slot=now, migration_cost_cny=1e6, params=EXACT)
    assert result.plan.status == Status.OPTIMAL
    assert math.isclose(result.plan.objective, old.objective, rel_tol=1e-9, abs_tol=1e-6)
    assert not [c for c in result.change.changes if c.kind in ("moved", "retimed", "restarted")]
    new = {a.demand: (a.pool, a.start_slot) for a in result.plan.assignments}
    for a in old.assignments:
        if a.start_slot < now:
            assert new[a.demand] == (a.pool, a.start_slot)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(instance=timed_instances(max_regions=2, max_demands=5, max_slots=6, connected=True, carbon_cap=False),
       data=st.data())
def test_jobs_on_a_failed_pool_are_moved_or_unserved_with_a_reason(instance, data):
    """A pool out from now to the end: no job of the new plan holds it from now on; every job the
    old plan ran there from now on is restarted, moved, retimed or newly unserved, with a reason;
    started jobs elsewhere stay put."""
    try:
        old = solved(instance)
    except Exception:  # noqa: BLE001
        assume(False)
    assume(old.status == Status.OPTIMAL)
    S = instance.horizon.slots
    now = data.draw(st.integers(0, S - 1))
    pool = data.draw(st.sampled_from([p.id for _, p in instance.pools()]))
    result = replan(instance, old, now_slot=now, migration_cost_cny=10.0, params=EXACT,
                    events=Events(outages=(OutageEvent(target=pool, from_slot=now, to_slot=S),)))
    assume(result.plan.status in (Status.OPTIMAL, Status.FEASIBLE))
    assert verify(result.instance, result.plan).ok
    for a in result.plan.assignments:
        assert a.pool != pool or a.end_slot <= now
    changes = {c.demand: c for c in result.change.changes}
    for a in old.assignments:
        if a.pool == pool and a.end_slot > now:
            assert changes[a.demand].kind in ("restarted", "moved", "retimed", "newly_unserved")
            assert changes[a.demand].reason
        elif a.start_slot < now:
            assert a.demand not in changes


def test_parse_outage_takes_the_last_at_sign():
    """Ids may hold '@' and '-': the range is what follows the last '@'."""
    event = parse_outage("a@b-c@3-7")
    assert (event.target, event.from_slot, event.to_slot) == ("a@b-c", 3, 7)
    with pytest.raises(ReplanError, match="ID@FROM-TO"):
        parse_outage("pool@3")


# -- the command ---------------------------------------------------------------------------------


@pytest.fixture
def planned(tmp_path):
    instance = TINY / "timed_remote_data.json"
    plan = tmp_path / "old.json"
    assert main(["solve", str(instance), "-o", str(plan), "-q", "--engine", "exact"]) == 0
    return instance, plan


def test_replan_command_writes_a_verified_plan_and_the_modified_instance(planned, tmp_path, capsys):
    """The new plan verifies against the modified instance the command writes; the table names
    the move and its reason; the old plan file is unchanged."""
    instance, plan = planned
    before = plan.read_bytes()
    new, mod, change = tmp_path / "new.json", tmp_path / "mod.json", tmp_path / "change.json"
    code = main(["replan", str(instance), str(plan), "--now", "1", "--outage", "west-a@2-4",
                 "--migration-cost", "5", "-o", str(new), "--instance-out", str(mod),
                 "--change-out", str(change)])
    out = capsys.readouterr().out
    assert code == 0 and "moved" in out and "120.00" in out
    assert plan.read_bytes() == before
    assert main(["verify", str(mod), str(new)]) == 0
    assert json.loads(change.read_text())["changes"][0]["kind"] == "moved"


def test_replan_command_adds_and_cancels(planned, tmp_path, capsys):
    """--add appends demands from a file (served when worth it), --cancel drops one."""
    instance, plan = planned
    data = json.loads(instance.read_text())
    extra = {**data["demands"][0], "id": "extra", "data_gb": 0.0}
    demands = tmp_path / "add.json"
    demands.write_text(json.dumps({"demands": [extra]}))
    new = tmp_path / "new.json"
    code = main(["replan", str(instance), str(plan), "--now", "1", "--add", str(demands),
                 "--cancel", "job", "-o", str(new), "-q"])
    assert code == 0
    written = json.loads(new.read_text())
    assert [a["demand"] for a in written["assignments"]] == ["extra"]


@pytest.mark.parametrize("args,message", [
    (["--now", "9"], "--now: slot 9 is outside the horizon"),
    (["--now", "-1"], "outside the horizon"),
    (["--now", "1", "--outage", "nowhere@2-4"], "field 'target' names no region, pool or link"),
    (["--now", "1", "--outage", "west-a@3-2"], "field 'to_slot' 2 is not after 'from_slot' 3"),
    (["--now", "1", "--outage", "west-a@1-3", "--outage", "west-a@2-4"], "overlaps west-a@1-3"),
    (["--now", "1", "--outage", "west-a@2-9"], "field 'to_slot' 9 is after the horizon's end"),
    (["--now", "1", "--capacity", "nopool=2"], "field 'pool' names unknown pool 'nopool'"),
    (["--now", "1", "--capacity", "west-a=x"], "expected POOL=GPUS"),
    (["--now", "1", "--cancel", "job,nobody"], "--cancel 'nobody': field 'demand' names unknown demand"),
])
def test_bad_events_exit_2_naming_the_object_and_field(planned, tmp_path, capsys, args, message):
    """Unknown ids, ranges outside the horizon, reversed or overlapping ranges: exit 2, one
    message naming the event and the field, nothing written, the old plan untouched."""
    instance, plan = planned
    before = plan.read_bytes()
    new = tmp_path / "new.json"
    assert main(["replan", str(instance), str(plan), *args, "-o", str(new)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not new.exists() and plan.read_bytes() == before


def test_a_plan_of_another_instance_exits_2_naming_the_plan_file(planned, tmp_path, capsys):
    """The verifier's verdict: the plan names demands and pools the instance lacks."""
    _, plan = planned
    code = main(["replan", str(TINY / "timed_valley.json"), str(plan), "--now", "1",
                 "-o", str(tmp_path / "new.json")])
    err = capsys.readouterr().err
    assert code == 2 and f"{plan}: plan: does not belong to the instance" in err


def test_the_old_plan_is_never_the_output(planned, capsys):
    """-o naming the input plan is refused before anything runs."""
    instance, plan = planned
    before = plan.read_bytes()
    assert main(["replan", str(instance), str(plan), "--now", "1", "-o", str(plan)]) == 2
    assert "refusing to overwrite the input file" in capsys.readouterr().err
    assert plan.read_bytes() == before


def test_added_demands_clashing_with_the_instance_exit_2_naming_the_file(planned, tmp_path, capsys):
    """An added demand whose id the instance already uses: exit 2, the file, the demand, 'id'."""
    instance, plan = planned
    data = json.loads(instance.read_text())
    demands = tmp_path / "add.json"
    demands.write_text(json.dumps({"demands": [data["demands"][0]]}))
    code = main(["replan", str(instance), str(plan), "--now", "1", "--add", str(demands),
                 "-o", str(tmp_path / "new.json")])
    err = capsys.readouterr().err
    assert code == 2 and f"{demands}: demand 'job': field 'id' is already used" in err


def test_an_instance_without_a_horizon_exits_2(tmp_path, capsys):
    """Without slots there is no 'now': re-planning a single-window plan is refused."""
    instance = TINY / "two_regions.json"
    plan = TINY / "two_regions.plan.json"
    code = main(["replan", str(instance), str(plan), "--now", "0", "-o", str(tmp_path / "n.json")])
    assert code == 2 and "re-planning needs a horizon" in capsys.readouterr().err


def test_the_verifier_recomputes_the_migration_term_from_the_instance():
    """The move costs live in the modified instance (`replanning`): a plan that reports another
    migration figure, or an instance without them, fails the verifier."""
    instance = read_instance(TINY / "timed_remote_data.json")
    result = replan(instance, solved(instance), now_slot=1, migration_cost_cny=5.0, params=EXACT,
                    events=Events(outages=(OutageEvent(target="west-a", from_slot=2, to_slot=4),)))
    costs = result.plan.costs.model_copy(update={"migration_cny": 0.0})
    wrong = result.plan.model_copy(update={"costs": costs})
    assert "mismatch:costs.migration_cny" in {v.code for v in verify(result.instance, wrong).violations}
    bare = result.instance.model_copy(update={"replanning": None})
    assert "mismatch:objective" in {v.code for v in verify(bare, result.plan).violations}


@pytest.mark.slow
def test_replan_benchmark_smoke(tmp_path):
    """`benchmarks/run.py replan --smoke`: 200 demands x 24 slots, two events, two solvers; the
    protocol heads the report, every plan is verified, and the move ratio is moves / lost."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's scheduler, installed or not
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "replan", "--smoke", "--now", "12",
         "--events", "hub-cut,new-demands", "--solvers", "replan,scratch", "--time-limit", "1",
         "--base-limit", "2", "--workers", "1", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = tmp_path.glob("replan-*.md")
    text = report.read_text()
    for line in ("- Suite: replan", "- Time limit(s): ", "- Seeds: ", "- Cores (os.cpu_count): ",
                 "- Git commit: ", "- Events: "):
        assert line in text
    (raw,) = tmp_path.glob("replan-*.json")
    results = json.loads(raw.read_text())["results"]
    assert [r["event"] for r in results] == ["hub-cut", "new-demands"]
    for r in results:
        assert set(r["solvers"]) == {"replan", "scratch"}
        for s in r["solvers"].values():
            assert s["verified"] is True
            lost = s["planned_on_lost_capacity"]
            assert s["move_ratio"] == (pytest.approx(s["moves"] / lost) if lost else None)
            assert all(v is not None and v >= 0 for v in s["phases"].values()), s["phases"]
            assert s["search_budget_s"] is not None
    assert results[1]["solvers"]["replan"]["newly_served"] > 0
    assert "## Phases" in text and "verify old" in text and "- Load: load average" in text


def test_a_job_whose_window_closed_before_now_is_unserved_for_its_window():
    """Found by Hypothesis: a job with no allowed start at all (its price cap) and a window that
    closes by now is unserved for its window, as the verifier reads it (not for its price cap)."""
    from scheduler import SolveParams, solve
    from scheduler.replan import Events, OutageEvent, replan

    instance = Instance.model_validate({
        "schema_version": 2, "name": "window-closed", "horizon": {"slots": 2, "slot_hours": 0.5},
        "regions": [{"id": "r0", "jurisdiction": "north", "lat": 20, "lon": 100,
                     "electricity_price_cny_per_kwh": 0, "pue": 1.1, "carbon_g_co2_per_kwh": 100,
                     "pools": [{"id": "p0-0", "accelerator": "H800", "gpu_count": 2, "memory_gb_per_gpu": 24,
                                "tflops_by_precision": {"fp64": 100}, "power_kw_per_gpu": 0,
                                "price_cny_per_gpu_hour": 0.01,
                                "outages": [{"start_slot": 0, "end_slot": 1, "gpus": 2}]}]}],
        "demands": [{"id": "d0", "origin": "r0", "work_pflop": 1, "precision": "fp64", "max_cost_cny": 0,
                     "release_slot": 0, "deadline_slot": 1, "unserved_penalty_cny": 0}]})
    plan = solve(instance, SolveParams(time_limit_s=5, workers=1)).plan
    result = replan(instance, plan, now_slot=1, events=Events(outages=(OutageEvent(target="p0-0", from_slot=1, to_slot=2),)),
                    migration_cost_cny=0.0, params=SolveParams(time_limit_s=5, workers=1))
    assert result.verification.ok
    assert [u.reason.value for u in result.plan.unserved] == ["window"]


# -- the disruption cost: a job no event displaced moves only when that pays for it too ------------


def cheap_pool_grows() -> tuple[Instance, object]:
    """`two_pools` with the cheap pool's GPU out for the whole horizon (maintenance): the plan
    runs the job on the dear pool at slot 0 for 3 x 2 = 6. A capacity event at slot 0 gives the
    cheap pool a second GPU, where the job would cost 2."""
    base = two_pools()
    regions = [r.model_copy(update={"pools": tuple(
        p.model_copy(update={"outages": ({"start_slot": 0, "end_slot": 4, "gpus": 1},)}) if p.id == "cheap" else p
        for p in r.pools)}) for r in base.regions]
    instance = Instance.model_validate({**base.model_dump(exclude={"regions"}),
                                        "regions": [r.model_dump() for r in regions]})
    old = solved(instance)
    assert [(a.pool, a.start_slot) for a in old.assignments] == [("dear", 0)]
    assert math.isclose(old.objective, 6.0)
    return instance, old


@pytest.mark.parametrize("disruption, moves", [(0.0, True), (2.0, True), (3.5, False), (None, False)])
def test_a_job_no_event_displaced_moves_only_when_it_saves_its_move_and_disruption_cost(disruption, moves):
    """Moving to the grown cheap pool saves 6 - 2 = 4 against a move cost of 1 plus the
    disruption cost: 0 or 2 (it moves: 2 + 1 + 0 = 3, 2 + 1 + 2 = 5 < 6), 3.5 (it stays:
    6.5 > 6), or, by default, the job's own cost in the old plan, 6 (it stays: 9 > 6; with that
    default a job the events left alone never moves only to run cheaper)."""
    instance, old = cheap_pool_grows()
    result = replan(instance, old, now_slot=0, migration_cost_cny=1.0, disruption_cost_cny=disruption,
                    params=EXACT, events=Events(capacity=(CapacityEvent(pool="cheap", gpus=2),)))
    assert result.plan.status == Status.OPTIMAL and verify(result.instance, result.plan).ok
    (base,) = result.instance.replanning.baseline
    assert math.isclose(base.move_cost_cny, 1.0 + (6.0 if disruption is None else disruption))
    if moves:
        assert [(a.pool, a.start_slot) for a in result.plan.assignments] == [("cheap", 0)]
        assert math.isclose(result.plan.objective, 2.0 + base.move_cost_cny)
        (change,) = result.change.changes
        assert change.kind == "moved" and change.reason.startswith("cheaper by")
        assert math.isclose(result.change.disruption_cny, disruption)
        assert math.isclose(result.plan.costs.migration_cny, base.move_cost_cny)
    else:
        assert [(a.pool, a.start_slot) for a in result.plan.assignments] == [("dear", 0)]
        assert math.isclose(result.plan.objective, 6.0)
        assert not result.change.changes and result.change.disruption_cny == 0.0


def two_jobs_on_the_cheap_pool(penalty: float = 100.0) -> tuple[Instance, object]:
    """`two_pools` with two GPUs on the cheap pool and two jobs there at slot 0 (due by slot
    2): 'job' (optional, penalty ``penalty``) and 'other' (must-serve)."""
    base = two_pools()
    regions = [r.model_copy(update={"pools": tuple(
        p.model_copy(update={"gpu_count": 2}) if p.id == "cheap" else p for p in r.pools)})
        for r in base.regions]
    job = base.demands[0]
    instance = Instance.model_validate({
        **base.model_dump(exclude={"regions", "demands"}), "regions": [r.model_dump() for r in regions],
        "demands": [job.model_copy(update={"unserved_penalty_cny": penalty}).model_dump(),
                    job.model_copy(update={"id": "other", "must_serve": True}).model_dump()]})
    old = solved(instance)
    assert sorted((a.demand, a.pool, a.start_slot) for a in old.assignments) == [
        ("job", "cheap", 0), ("other", "cheap", 0)]
    return instance, old


def test_a_job_an_event_displaced_pays_no_disruption_cost():
    """Cut to one GPU at slot 0, the cheap pool keeps 'job' (the first by start, then id) and
    blocks 'other': 'other' pays the move cost M = 10 only, 'job' M plus the disruption cost
    (by default its own cost, 2), which is added to its penalty too (100 + 2)."""
    instance, old = two_jobs_on_the_cheap_pool()
    events = Events(capacity=(CapacityEvent(pool="cheap", gpus=1),))
    for disruption, extra in ((None, 2.0), (0.0, 0.0), (7.0, 7.0)):
        modified = apply_events(instance, old, 0, events, 10.0, disruption_cost_cny=disruption)
        assert set(modified.blocked) == {"other"}
        moves = {b.demand: b.move_cost_cny for b in modified.instance.replanning.baseline}
        assert math.isclose(moves["other"], 10.0) and math.isclose(moves["job"], 10.0 + extra)
        assert modified.disruption == {"job": extra}
        penalty = {d.id: d.unserved_penalty_cny for d in modified.instance.demands}
        assert math.isclose(penalty["job"], 100.0 + extra)
    result = replan(instance, old, now_slot=0, events=events, migration_cost_cny=10.0, params=EXACT)
    assert {(a.demand, a.pool) for a in result.plan.assignments} == {("job", "cheap"), ("other", "dear")}
    assert math.isclose(result.plan.objective, 2.0 + 6.0 + 10.0) and result.change.disruption_cny == 0.0


@pytest.mark.parametrize("disruption, dropped", [(0.0, "job"), (None, "job"), (200.0, "other")])
def test_a_job_no_event_displaced_is_dropped_only_when_that_saves_its_penalty_and_disruption(
        disruption, dropped):
    """The dear pool out and the cheap one cut to one GPU: one job runs. 'other' (blocked,
    must-serve, so optional now at penalty max(100, 10 x 2)) against 'job' (optional, penalty
    5): dropping 'job' costs 5 plus its disruption cost (0: 7 in all; by default its own cost
    2: 9; 200: 207, dearer than dropping 'other', 100 + 2)."""
    instance, old = two_jobs_on_the_cheap_pool(penalty=5.0)
    events = Events(capacity=(CapacityEvent(pool="cheap", gpus=1),),
                    outages=(OutageEvent(target="dear", from_slot=0, to_slot=4),))
    result = replan(instance, old, now_slot=0, events=events, migration_cost_cny=10.0,
                    disruption_cost_cny=disruption, params=EXACT)
    assert result.plan.status == Status.OPTIMAL and verify(result.instance, result.plan).ok
    assert [u.demand for u in result.plan.unserved] == [dropped]
    extra = 0.0 if dropped == "other" else (2.0 if disruption is None else disruption)
    expected = {"job": 5.0 + extra + 2.0, "other": 100.0 + 2.0}[dropped]
    assert math.isclose(result.plan.objective, expected)
    assert math.isclose(result.change.disruption_cny, extra)


def test_a_disruption_cost_out_of_range_is_refused():
    instance, old = cheap_pool_grows()
    with pytest.raises(ReplanError, match="--disruption-cost: -1 CNY is not between 0 and 1e15"):
        replan(instance, old, now_slot=0, disruption_cost_cny=-1.0, params=EXACT)
