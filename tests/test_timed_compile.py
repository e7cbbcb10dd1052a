"""The timed compiler (formulation §8): slots of a run, allowed starts, rates, replicas, quanta and
the errors no plan can get around, with numbers derived by hand from the tiny horizon instances."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import RULES, Instance, Reason
from scheduler.compile import RangeError
from scheduler.io import read_instance
from scheduler.timed import compile_timed

TINY = Path(__file__).resolve().parent.parent / "instances" / "tiny"


def tiny(name: str) -> Instance:
    return read_instance(TINY / f"timed_{name}.json")


def tiny_dict(name: str) -> dict:
    return json.loads((TINY / f"timed_{name}.json").read_text())


def with_demand(name: str, **fields) -> Instance:
    """The tiny instance with its (first) demand's fields changed."""
    data = tiny_dict(name)
    data["demands"][0] = {**data["demands"][0], **fields}
    return Instance.model_validate(data)


def test_valley_job_costs_by_start():
    """6 kWh at 1.0 CNY/kWh costs 6, in the valley slot (0.2) 1.2; compute 6 GPU-h x 2 = 12."""
    problem = compile_timed(tiny("valley"))
    b = problem.batch
    # 21600 PFLOP / (1000 TFLOPS x 3600) = 6 GPU-hours = 600 quanta, one slot of 6 hours.
    assert b.units.tolist() == [600] and b.slots.tolist() == [1]
    assert (b.first.tolist(), b.last.tolist()) == ([0], [3])
    assert b.fixed_cost.tolist() == [12.0]
    assert b.kwh_last.tolist() == [6.0]  # the last (only) slot: 6 h x 1 kW x PUE 1
    starts, cost, co2, rate = problem.start_costs(0)
    assert starts.tolist() == [0, 1, 2, 3]
    assert cost.tolist() == pytest.approx([18.0, 13.2, 18.0, 18.0])
    assert co2.tolist() == [0.0] * 4 and rate.tolist() == [0] * 4


def test_a_run_over_part_of_a_slot_draws_the_rest_in_its_last_slot():
    """32400 PFLOP is 9 GPU-hours: two 6-hour slots, 6 kWh then 3 kWh; from slot 0 the energy is
    6 x 1.0 + 3 x 0.2 = 6.6, from slot 1 6 x 0.2 + 3 x 1.0 = 4.2, from slot 2 6 + 3 = 9."""
    problem = compile_timed(with_demand("valley", work_pflop=32400.0))
    b = problem.batch
    assert b.slots.tolist() == [2]
    assert (b.kwh_full.tolist(), b.kwh_last.tolist()) == ([6.0], [3.0])
    assert b.last.tolist() == [2]  # s + 2 <= 4
    starts, cost, _, _ = problem.start_costs(0)
    # compute 9 x 2 = 18
    assert cost.tolist() == pytest.approx([18 + 6.6, 18 + 4.2, 18 + 9.0])


def test_price_cap_applies_per_start():
    """The price is 12 + 6 at every start but the valley's 12 + 1.2: a cap of 14 allows only
    slot 1; a cap of 13 allows none (rule price_cap), and the job has no option."""
    capped = compile_timed(with_demand("valley", max_cost_cny=14.0, must_serve=False))
    assert (capped.batch.first.tolist(), capped.batch.last.tolist()) == ([1], [1])
    assert capped.start_costs(0)[0].tolist() == [1]
    none = compile_timed(with_demand("valley", max_cost_cny=13.0, must_serve=False))
    assert none.batch.n_options == 0
    assert RULES[int(none.batch.nearest_miss[0])] == Reason.PRICE_CAP


def test_remote_data_moves_before_the_start_at_the_slowest_rate():
    """450 GB is 3600 Gbit: over 1 slot (3600 s) 1 Gbps = 10^6 quanta, over 2 slots 500,000, over
    3 slots 333,333.3 -> 333,334 (rounded up). The link carries 0.5 Gbps = 500,000 quanta."""
    problem = compile_timed(tiny("remote_data"))
    b = problem.batch
    east, west = 0, 1
    assert b.route[east] == -1 and b.first[east] == 0  # at home: no data moves, no delay
    assert b.first[west] == 1  # delta = 1: the data needs a slot
    assert problem.route_regions[b.route[west]] == ("east", "west")
    assert problem.routes[b.route[west]].tolist() == [0]
    assert problem.bandwidth.tolist() == [[500_000] * 4]
    starts, cost, _, rate = problem.start_costs(west)
    assert starts.tolist() == [1, 2, 3]
    assert rate.tolist() == [1_000_000, 500_000, 333_334]
    assert cost.tolist() == pytest.approx([46.0] * 3)  # 1 GPU-h x 1 + 450 GB x 0.1


def test_best_starts_adds_slot_and_link_prices():
    """At 10 CNY per GPU-slot on the valley slot the valley job's best start moves off it (18 <
    13.2 + 10); a link price of 1e-5 per quantum in slot 0 adds rate x 1e-5: 10 from slot 1, 5
    from slot 2, 3.33334 from slot 3, so the west job starts at 3 for 49.33334."""
    valley = compile_timed(tiny("valley"))
    extra = np.zeros((1, 4))
    extra[0, 1] = 10.0
    cost, start = valley.best_starts(extra_pool_slot=extra)
    assert (cost.tolist(), start.tolist()) == (pytest.approx([18.0]), [0])
    remote = compile_timed(tiny("remote_data"))
    link = np.zeros((1, 4))
    link[0, 0] = 1e-5
    cost, start = remote.best_starts(extra_link_slot=link)
    assert start.tolist() == [0, 3]
    assert cost.tolist() == pytest.approx([100.0, 46.0 + 3.33334])


def test_best_starts_prices_in_chunks_like_all_at_once(monkeypatch):
    """Chunks of one (option, start) pair at a time give the same best starts as one chunk."""
    import scheduler.timed as timed

    problem = compile_timed(with_demand("remote_data", release_slot=1))
    whole = problem.best_starts(carbon_weight=2.0)
    monkeypatch.setattr(timed, "CHUNK_ELEMENTS", 1)
    again = compile_timed(with_demand("remote_data", release_slot=1)).best_starts(carbon_weight=2.0)
    assert whole[0].tolist() == again[0].tolist() and whole[1].tolist() == again[1].tolist()


def test_service_replicas_rent_and_load_in_quanta():
    """1 GPU at 1 TFLOPS is 3.6 PFLOP/h: floor(3.6 / 1) = 3 quanta per replica; rent 1 and 2 CNY
    per slot; 10 PFLOP/h is 10 quanta; unserved load costs 5 x 1 PFLOP/h x 1 h = 5 per quantum."""
    problem = compile_timed(tiny("service_split"))
    sv = problem.services
    assert sv.kappa.tolist() == [3, 3]
    assert sv.rent.tolist() == [[1.0, 1.0], [2.0, 2.0]]
    assert sv.load.tolist() == [[10, 10]]
    assert sv.penalty_per_quantum.tolist() == [5.0]
    assert sv.tau.tolist() == [0, 0] and sv.route.tolist() == [-1, -1]  # at home: no traffic
    assert problem.batch.n_demands == 0


def test_outages_take_gpus_out_of_their_slots():
    """2 GPUs out in slots 0-1 of a 2-GPU pool: 0, 0, 2, 2 available."""
    assert compile_timed(tiny("outage")).avail.tolist() == [[0, 0, 2, 2]]


def test_carbon_cap_in_grams_and_co2_per_start():
    """0.0005 t is 500 g; 1 kWh emits 1 kg on coal, 0.1 kg on hydro."""
    problem = compile_timed(tiny("carbon_cap"))
    assert problem.carbon_cap_g == 500
    assert problem.start_costs(0)[2].tolist() == [1.0, 1.0]
    assert problem.start_costs(1)[2].tolist() == pytest.approx([0.1, 0.1])


def test_an_optional_job_whose_window_cannot_hold_its_run_is_left_with_reason_window():
    """9 GPU-hours take 2 slots of 6 h; slots 1..2 (release 1, deadline 2) hold one."""
    problem = compile_timed(with_demand("valley", work_pflop=32400.0, must_serve=False,
                                        release_slot=1, deadline_slot=2))
    assert problem.batch.n_options == 0
    assert RULES[int(problem.batch.nearest_miss[0])] == Reason.WINDOW


def test_a_must_serve_job_whose_window_cannot_hold_its_run_is_an_input_error():
    """The same job, must-serve: no plan exists, and the message names demand and field."""
    with pytest.raises(RangeError, match=r"demand 'train': field 'deadline_slot' \(2\)"):
        compile_timed(with_demand("valley", work_pflop=32400.0, release_slot=1, deadline_slot=2))


def test_the_window_counts_the_slot_the_data_needs():
    """A remote job of one slot with deadline 1 fits at home only: west needs slot 0 for its data."""
    problem = compile_timed(with_demand("remote_data", deadline_slot=1))
    b = problem.batch
    assert b.pool.tolist() == [0]  # east only
    assert (b.first.tolist(), b.last.tolist()) == ([0], [0])


def test_a_must_serve_job_whose_data_no_link_can_carry_is_an_input_error():
    """A remote-only job (no pool at home) whose route has 0 Gbps in every slot before its
    deadline cannot be served at all: an error naming the demand and the link's field."""
    data = tiny_dict("remote_data")
    data["regions"][0]["pools"] = []
    data["links"][0]["bandwidth_by_slot_gbps"] = [0.0, 0.0, 0.0, 1.0]
    inst = Instance.model_validate(data)
    with pytest.raises(RangeError, match=r"demand 'job': field 'data_gb'.*bandwidth_by_slot_gbps"):
        compile_timed(inst)
    # Released at slot 2, the data crosses in slot 2 at 1 Gbps (10^6 quanta) and the job starts at 3.
    data["links"][0]["bandwidth_by_slot_gbps"] = [0.0, 0.0, 1.0, 1.0]
    data["demands"][0]["release_slot"] = 2
    assert compile_timed(Instance.model_validate(data)).start_costs(0)[3].tolist() == [1_000_000]


def test_load_beyond_the_representable_quanta_is_refused():
    """10^15 PFLOP/h at a quantum of 10^-9 is 10^24 quanta, above MAX_QUANTA (10^15)."""
    data = tiny_dict("service_split")
    data["load_quantum_pflop_per_hour"] = 1e-9
    data["demands"][0]["load_pflop_per_hour"] = [1e15, 1.0]
    with pytest.raises(RangeError, match=r"demand 'chat': field 'load_pflop_per_hour'"):
        compile_timed(Instance.model_validate(data))


def test_validate_counts_timed_options_and_exits_2_on_a_window_no_plan_can_meet(tmp_path, capsys):
    """`eastwest validate` compiles the horizon model: the valley job has 4 allowed starts; the
    must-serve job of 2 slots released at slot 3 of 4 is refused with exit 2, naming the field."""
    from scheduler.cli import main

    assert main(["validate", str(TINY / "timed_valley.json")]) == 0
    assert "1 eligible (job, pool) options with 4 allowed starts" in capsys.readouterr().out
    data = tiny_dict("valley")
    data["demands"][0].update(release_slot=3, work_pflop=32400.0)
    path = tmp_path / "late.json"
    path.write_text(json.dumps(data))
    assert main(["validate", str(path)]) == 2
    assert "field 'deadline_slot'" in capsys.readouterr().err
