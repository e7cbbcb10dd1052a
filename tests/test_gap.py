"""GAP files: both formats, bad files, the §6 mapping, and the literature files."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from models import QUANTUM_SLACK, Instance
from scheduler import compile_options
from scheduler.gap import (
    GapFormatError,
    GapProblem,
    convert_gap_file,
    gap_to_instance,
    load_bks,
    read_gap,
)
from tests import reference
from tests.brute import brute_force

GAP_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "benchmarks" / "gap"

# m=2 agents, n=4 jobs.
COST = [[9, 2, 7, 4], [3, 8, 1, 6]]
USE = [[3, 4, 2, 5], [4, 2, 3, 3]]
CAP = [8, 7]


def _tokens(cost, use, cap) -> list[int]:
    m, n = len(cost), len(cost[0])
    return [m, n, *itertools.chain(*cost), *itertools.chain(*use), *cap]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _wrapped(values: list[int], width: int) -> str:
    return "\n".join(
        " " + " ".join(map(str, values[k : k + width])) for k in range(0, len(values), width)
    ) + "\n"


def _rows(cost, use, cap) -> str:
    m, n = len(cost), len(cost[0])
    rows = [[m, n], *cost, *use, cap]
    return "\n".join(" ".join(map(str, row)) for row in rows) + "\n"


def _problem(cost=COST, use=USE, cap=CAP) -> GapProblem:
    return GapProblem(
        name="tiny", m=len(cost), n=len(cost[0]), cost=np.array(cost), use=np.array(use),
        capacity=np.array(cap),
    )


# --------------------------------------------------------------------------------------------------
# Parsing


def test_formats_parse_identically(tmp_path):
    tokens = _tokens(COST, USE, CAP)
    single_rows = read_gap(_write(tmp_path, "rows", _rows(COST, USE, CAP)))
    single_wrapped = read_gap(_write(tmp_path, "wrapped", _wrapped(tokens, 3)))
    single_line = read_gap(_write(tmp_path, "oneline", " ".join(map(str, tokens))))
    other = _tokens([[1, 1, 1, 1], [2, 2, 2, 2]], [[1, 2, 3, 4], [4, 3, 2, 1]], [5, 6])
    multi = read_gap(_write(tmp_path, "multi.txt", _wrapped([2, *tokens, *other], 5)))

    expected = _problem()
    for problems in (single_rows, single_wrapped, single_line):
        assert len(problems) == 1
        assert problems[0].same_data(expected)
    assert single_rows[0].name == "rows"
    assert [p.name for p in multi] == ["multi-1", "multi-2"]
    assert [p.source for p in multi] == ["multi.txt#1", "multi.txt#2"]
    assert multi[0].same_data(expected)
    assert multi[1].capacity.tolist() == [5, 6]
    assert multi[1].use[1].tolist() == [4, 3, 2, 1]
    assert not multi[1].same_data(expected)
    with pytest.raises(ValueError):
        multi[0].cost[0, 0] = 5  # read-only arrays


def test_tabs_and_crlf_are_whitespace(tmp_path):
    text = "\t".join(map(str, _tokens(COST, USE, CAP))).replace("\t8\t", "\r\n8\r\n", 1)
    assert read_gap(_write(tmp_path, "tabs", text))[0].same_data(_problem())


GOOD = _tokens(COST, USE, CAP)  # 2 + 8 + 8 + 2 = 20 tokens; cost at 2..9, use at 10..17, cap 18..19


def _replace(index: int, value: str) -> str:
    tokens = [str(t) for t in GOOD]
    tokens[index] = value
    return " ".join(tokens)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param(_replace(5, "7.5"), "token 5 ('7.5') is not an integer", id="float"),
        pytest.param(_replace(5, "x"), "is not an integer", id="letter"),
        pytest.param(_replace(5, "1e3"), "is not an integer", id="exponent"),
        pytest.param(_replace(5, "+3"), "is not an integer", id="plus"),
        pytest.param(_replace(5, "1_000"), "is not an integer", id="underscore"),
        pytest.param(_replace(5, "٣"), "is not an integer", id="unicode-digit"),
        pytest.param(_replace(5, "9" * 40), "more than 12 digits", id="long"),
        pytest.param(_replace(5, "-3"), "cost c[0][3] (token 5) is -3", id="negative-cost"),
        pytest.param(_replace(11, "-1"), "use a[0][1] (token 11) is -1", id="negative-use"),
        pytest.param(_replace(13, "0"), "use a[0][3] (token 13) is 0", id="zero-use"),
        pytest.param(_replace(19, "0"), "capacity b[1] (token 19) is 0", id="zero-capacity"),
        pytest.param(_replace(18, "-2"), "capacity b[0] (token 18) is -2", id="negative-capacity"),
        pytest.param(" ".join(map(str, GOOD[:-1])), "short or truncated", id="short"),
        pytest.param(
            " ".join(map(str, GOOD + [7])), "read as a multi-problem file", id="trailing-integer"
        ),
        pytest.param(" ".join(map(str, GOOD)) + " end", "token 20 ('end')", id="trailing-word"),
        pytest.param("", "holds 0 integer(s)", id="empty"),
        pytest.param("5", "holds 1 integer(s)", id="one-token"),
        pytest.param("0 4 1 2", "first integer is 0", id="zero-m"),
        pytest.param("100000 100000 1 2 3", "above the limit", id="huge-single-header"),
        pytest.param("1 10000 10000 1 2 3", "exceeds the limit", id="huge-multi-header"),
        pytest.param("3 " + " ".join(map(str, GOOD)), "ends after problem 1", id="few-problems"),
        pytest.param("1 2 0 1 1 1", "n (token 2) is 0", id="zero-n"),
        pytest.param("\x00\xff binary", "is not an integer", id="binary"),
    ],
)
def test_malformed_files_raise_naming_the_file(tmp_path, text, fragment):
    path = _write(tmp_path, "bad-file.gap", text)
    with pytest.raises(GapFormatError) as caught:
        read_gap(path)
    message = str(caught.value)
    assert str(path) in message
    assert fragment in message


def test_oversized_file_is_refused_before_parsing(tmp_path):
    path = _write(tmp_path, "big", " ".join(map(str, GOOD)))
    with pytest.raises(GapFormatError, match="larger than 10 bytes"):
        read_gap(path, max_bytes=10)


def test_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(GapFormatError, match="cannot read"):
        read_gap(tmp_path / "absent")


def test_gap_format_error_is_a_value_error():
    assert issubclass(GapFormatError, ValueError)


# --------------------------------------------------------------------------------------------------
# Mapping (formulation §6)


def _feasible_assignments(problem: GapProblem):
    """Every assignment (agent of each job) within capacity, by direct enumeration."""
    for agents in itertools.product(range(problem.m), repeat=problem.n):
        load = [0] * problem.m
        for j, i in enumerate(agents):
            load[i] += int(problem.use[i][j])
        if all(load[i] <= problem.capacity[i] for i in range(problem.m)):
            yield agents


def _instance_costs(instance: Instance) -> dict[tuple[int, ...], float]:
    """Total price of every capacity-feasible assignment, read off the instance's own data.

    Usage and capacity are in quanta exactly as formulation §2 counts them.
    """
    q = instance.gpu_hour_quantum
    pools = [p for _, p in instance.pools()]
    cap = {p.id: math.floor(p.gpu_count * instance.window_hours / q + QUANTUM_SLACK) for p in pools}
    offers = {(o.demand, o.pool): o for o in instance.offers}
    out: dict[tuple[int, ...], float] = {}
    for agents in itertools.product(range(len(pools)), repeat=len(instance.demands)):
        load = dict.fromkeys(cap, 0)
        total = 0.0
        for demand, i in zip(instance.demands, agents, strict=True):
            offer = offers[(demand.id, pools[i].id)]
            load[offer.pool] += max(1, math.ceil(offer.gpu_hours / q - QUANTUM_SLACK))
            total += offer.price_cny
        if all(load[p] <= cap[p] for p in cap):
            out[agents] = total
    return out


def test_mapping_preserves_every_assignment_and_its_cost():
    problem = _problem()
    instance = gap_to_instance(problem, "tiny-gap")
    direct = {
        agents: sum(int(problem.cost[i][j]) for j, i in enumerate(agents))
        for agents in _feasible_assignments(problem)
    }
    assert direct  # the tiny problem is feasible but capacity binds
    assert len(direct) < 2**4
    assert _instance_costs(instance) == direct
    unconstrained = int(problem.cost.min(axis=0).sum())  # 10, but agent 1 would carry 9 > 8
    assert min(direct.values()) == 18 > unconstrained
    assert brute_force(compile_options(instance)) == min(direct.values())
    assert reference.optimum(instance) == min(direct.values())  # from the instance alone


def test_mapping_fields():
    instance = gap_to_instance(_problem(), "tiny-gap")
    assert instance.name == "tiny-gap"
    assert instance.window_hours == 1 and instance.gpu_hour_quantum == 1
    (region,) = instance.regions
    assert region.pue == 1 and region.electricity_price_cny_per_kwh == 0
    assert [p.id for p in region.pools] == ["agent-1", "agent-2"]
    assert [p.gpu_count for p in region.pools] == CAP
    assert all(p.power_kw_per_gpu == 0 and p.price_cny_per_gpu_hour == 0 for p in region.pools)
    assert [d.id for d in instance.demands] == ["job-1", "job-2", "job-3", "job-4"]
    for demand in instance.demands:
        assert demand.must_serve and demand.work_pflop is None and demand.origin == region.id
    offers = {(o.demand, o.pool): (o.gpu_hours, o.price_cny) for o in instance.offers}
    assert len(offers) == 8
    assert offers[("job-3", "agent-2")] == (3.0, 1.0)
    assert not instance.links
    assert gap_to_instance(_problem()).name == "tiny"
    Instance.model_validate_json(instance.model_dump_json())  # round-trips


def test_maximize_recovers_the_maximum():
    problem = _problem()
    instance = gap_to_instance(problem, "tiny-max", maximize=True)
    top = int(problem.cost.max())
    assert f"K = max c = {top}" in instance.description
    assert f"{problem.n * top} - objective" in instance.description
    direct_max = max(
        sum(int(problem.cost[i][j]) for j, i in enumerate(agents))
        for agents in _feasible_assignments(problem)
    )
    minimized = min(_instance_costs(instance).values())
    assert problem.n * top - minimized == direct_max
    assert all(o.price_cny >= 0 for o in instance.offers)


def test_capacity_beyond_the_model_is_refused():
    with pytest.raises(ValueError, match="gpu_count"):
        gap_to_instance(_problem(cap=[8, 20_000_000]))


# --------------------------------------------------------------------------------------------------
# Converting


def test_convert_writes_one_file_per_problem(tmp_path):
    source = _write(tmp_path, "pair.txt", "2 " + " ".join(map(str, GOOD + GOOD)))
    out = tmp_path / "new" / "folder"
    written = convert_gap_file(source, out)
    assert written == [out / "pair-1.json", out / "pair-2.json"]
    first = Instance.model_validate_json(written[0].read_text())
    assert first.name == "pair-1"
    assert "pair.txt#1" in first.description
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    single = convert_gap_file(_write(tmp_path, "solo", " ".join(map(str, GOOD))), out)
    assert single == [out / "solo-1.json"]


def test_convert_never_overwrites_its_input(tmp_path):
    text = " ".join(map(str, GOOD))
    source = _write(tmp_path, "solo", text)
    out = tmp_path / "out"
    out.mkdir()
    (out / "solo-1.json").symlink_to(source)  # the output path leads back to the input
    with pytest.raises(ValueError, match="overwrite the input"):
        convert_gap_file(source, out)
    assert source.read_text() == text


def test_bad_file_writes_nothing(tmp_path):
    source = _write(tmp_path, "two", "2 " + " ".join(map(str, GOOD)) + " 4 4")
    with pytest.raises(GapFormatError):
        convert_gap_file(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_load_bks_rejects_duplicates_and_bad_sense(tmp_path):
    header = (
        "instance,m,n,objective_sense,best_known,proven_optimal,source,lower_bound,confidence,file\n"
    )
    row = "t,2,4,min,10,yes,here,10,high,t\n"
    rows = load_bks(_write(tmp_path, "ok.csv", header + row))
    assert rows[("t", "min")].best_known == 10 and rows[("t", "min")].proven_optimal
    with pytest.raises(ValueError, match="duplicate"):
        load_bks(_write(tmp_path, "dup.csv", header + row + row))
    with pytest.raises(ValueError, match="objective_sense"):
        load_bks(_write(tmp_path, "sense.csv", header + row.replace("min", "best")))
    with pytest.raises(ValueError, match="missing column"):
        load_bks(_write(tmp_path, "cols.csv", "instance,m\nt,2\n"))


# --------------------------------------------------------------------------------------------------
# The literature files (../shared/benchmarks/gap; skipped where absent)


@pytest.fixture(scope="module")
def literature():
    if not GAP_DIR.is_dir():
        pytest.skip("../shared/benchmarks/gap is not present")
    problems = {}
    for path in sorted([*(GAP_DIR / "orlib").iterdir(), *(GAP_DIR / "yagiura").iterdir()]):
        for problem in read_gap(path):
            problems[problem.name] = problem
    return problems


def test_every_literature_file_parses_and_matches_bks(literature):
    bks = load_bks(GAP_DIR / "bks.csv")
    assert len(bks) == 177
    assert len(literature) == 60 + 24 + 57
    names = {instance for instance, _ in bks}
    assert names <= set(literature)
    for (instance, sense), row in bks.items():
        problem = literature[instance]
        assert (problem.m, problem.n) == (row.m, row.n), instance
        assert sense == "max" or sense == "min"
    senses = {sense for instance, sense in bks if instance.startswith("gap1-")}
    assert senses == {"max", "min"}


def test_orlib_a_to_d_equal_their_yagiura_twins(literature):
    order = ["05100", "05200", "10100", "10200", "20100", "20200"]
    for letter in "abcd":
        for k, suffix in enumerate(order, start=1):
            assert literature[f"gap{letter}-{k}"].same_data(literature[f"{letter}{suffix}"])


def test_convert_gap1(literature, tmp_path):
    written = convert_gap_file(GAP_DIR / "orlib" / "gap1.txt", tmp_path)
    assert [p.name for p in written] == [f"gap1-{k}.json" for k in range(1, 6)]
    for k, path in enumerate(written, start=1):
        instance = Instance.model_validate_json(path.read_text())
        assert instance.name == f"gap1-{k}"
        assert len(instance.offers) == 5 * 15


def test_gap1_1_maximize_description(literature):
    instance = gap_to_instance(literature["gap1-1"], maximize=True)
    assert "K = max c = 25" in instance.description
    assert "375 - objective" in instance.description
