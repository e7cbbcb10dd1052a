"""Tabu search alone (issue #10): moves per second and the best plan after a fixed number of
moves, this tree's `engines/tabu.py` against another revision's, back to back in one process.

    python benchmarks/tabu_moves.py d20400,d40400,e10400 2000 --against c18b569

Each problem (a Yagiura file under shared/benchmarks/gap/yagiura) starts from the same plan
(largest demand first on the pool with the most room left); the gap is to bks.csv's best-known.
The best plan after N moves is deterministic for the seed; the moves per second are not.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import SHARED  # noqa: E402

from scheduler import compile_options  # noqa: E402
from scheduler.engines import tabu  # noqa: E402
from scheduler.gap import gap_to_instance, read_gap  # noqa: E402

GAP = SHARED / "benchmarks" / "gap"


def start_plan(o) -> np.ndarray:
    """Each demand, largest first, on the pool with the most room left after it."""
    room = o.capacity.astype(float).copy()
    choice = np.full(o.n_demands, -1, dtype=np.int64)
    size = np.maximum.reduceat(o.units, o.start[:-1])
    for d in np.argsort(-size, kind="stable"):
        ks = np.arange(o.start[d], o.start[d + 1])
        k = int(ks[np.argmax(room[o.pool[ks]] - o.units[ks])])
        room[o.pool[k]] -= o.units[k]
        choice[d] = k
    return choice


def revision(rev: str):
    """`engines/tabu.py` as of git revision ``rev``, as a module."""
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:scheduler/engines/tabu.py"],
                          capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "tabu_at_rev.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("tabu_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names")
    parser.add_argument("moves", type=int)
    parser.add_argument("--against", default=None, help="git revision to compare with")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bks = {r["instance"]: float(r["best_known"]) for r in csv.DictReader(open(GAP / "bks.csv"))
           if r["objective_sense"] == "min"}
    versions = [("this", tabu)] + ([(args.against, revision(args.against))] if args.against else [])
    for name in args.names.split(","):
        o = compile_options(gap_to_instance(read_gap(GAP / "yagiura" / name)[0]))
        plan = start_plan(o)
        for tag, module in versions:
            search = module.TabuSearch(o, plan, args.seed)
            t0 = time.perf_counter()
            search.run(args.moves)
            dt = time.perf_counter() - t0
            gap = 100 * (search.best_cost - bks[name]) / bks[name]
            print(f"{name} {tag}: {args.moves} moves in {dt:.2f} s ({args.moves / dt:.0f}/s), "
                  f"best {search.best_cost:.0f}, {gap:.3f}% above best-known, {search.moves}",
                  flush=True)


if __name__ == "__main__":
    main()
