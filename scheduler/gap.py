"""Generalized assignment (GAP) literature files: read them, map them onto `models.Instance`.

Two formats, both plain whitespace-separated integers (line breaks mean nothing):

* Yagiura single-problem files: ``m n``, then m*n costs c[i][j], m*n uses a[i][j] (both
  agent-major) and m capacities b[i]; exactly ``2 + 2*m*n + m`` integers.
* OR-Library multi-problem files: the number of problems P, then P such blocks back to back.

A file is single-problem exactly when its token count is ``2 + 2*m*n + m`` for its first two tokens;
otherwise it is read as multi-problem. The mapping onto the model is `docs/formulation.md` §6.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.instance import AcceleratorPool, Demand, Instance, Offer, Precision, Region
from scheduler.io import write_instance

MAX_FILE_BYTES = 64 * 1024 * 1024
"""Largest GAP file read (the largest literature file is about 1.3 MB)."""

MAX_CELLS = 50_000_000
"""Largest m*n accepted for one problem."""

MAX_TOKEN_DIGITS = 12
"""Longest integer token accepted (literature values have at most 6 digits)."""

MAX_POOL_GPUS = 10_000_000
"""Largest capacity `gap_to_instance` can express (`AcceleratorPool.gpu_count` caps at this)."""

REGION_ID = "gap"

IntMatrix = npt.NDArray[np.int64]


class GapFormatError(ValueError):
    """A GAP file that cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True, eq=False)
class GapProblem:
    """One GAP problem: cost[i][j] and use[i][j] of job j at agent i, capacity[i] of agent i."""

    name: str
    m: int
    n: int
    cost: IntMatrix
    use: IntMatrix
    capacity: IntMatrix
    source: str = ""

    def same_data(self, other: GapProblem) -> bool:
        """Whether both problems hold the same numbers (names and sources aside)."""
        return (
            self.m == other.m
            and self.n == other.n
            and np.array_equal(self.cost, other.cost)
            and np.array_equal(self.use, other.use)
            and np.array_equal(self.capacity, other.capacity)
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GapProblem):
            return NotImplemented
        return self.name == other.name and self.source == other.source and self.same_data(other)

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------------
# Reading


def read_gap(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> list[GapProblem]:
    """Every problem in an OR-Library or Yagiura GAP file, in file order.

    Problems are named ``<stem>-<k>`` (k from 1) in multi-problem files and ``<stem>`` in
    single-problem files, matching the `instance` column of ``bks.csv``. Raises `GapFormatError`.
    """
    path = Path(path)
    label = str(path)
    values = _read_integers(path, label, max_bytes)
    count = len(values)
    if count < 2:
        raise GapFormatError(f"{label}: holds {count} integer(s); a GAP file has at least two")
    first, second = int(values[0]), int(values[1])
    if first * second > MAX_CELLS:
        raise GapFormatError(
            f"{label}: header '{first} {second}' means m*n = {first * second}, above the limit of "
            f"{MAX_CELLS}; refusing it"
        )
    if first >= 1 and second >= 1 and count == _block_length(first, second):
        return [_parse_block(values, 0, label, path.stem, path.name, problem_label="")]

    if first < 1:
        raise GapFormatError(
            f"{label}: first integer is {first}; expected the problem count P >= 1 (multi-problem "
            f"file) or m >= 1 (single-problem file)"
        )
    try:
        return _parse_multi(values, label, path, first)
    except GapFormatError as exc:
        if second < 1:
            raise
        note = (
            f" (read as a multi-problem file with P={first}: its {count} integers are not the "
            f"{_block_length(first, second)} of a single problem with m={first}, n={second})"
        )
        raise GapFormatError(str(exc) + note) from None


def _parse_multi(values: IntMatrix, label: str, path: Path, first: int) -> list[GapProblem]:
    """The P blocks of an OR-Library file; P = `first` is token 0."""
    count = len(values)
    problems: list[GapProblem] = []
    position = 1
    for k in range(1, first + 1):
        if position >= count:
            raise GapFormatError(
                f"{label}: declares {first} problems but ends after problem {k - 1} "
                f"(token count {count})"
            )
        problem = _parse_block(
            values,
            position,
            label,
            f"{path.stem}-{k}",
            f"{path.name}#{k}",
            problem_label=f"problem {k}: ",
        )
        problems.append(problem)
        position += _block_length(problem.m, problem.n)
    if position != count:
        raise GapFormatError(
            f"{label}: {count - position} trailing integer(s) after the last of the {first} "
            f"declared problems (starting at token {position})"
        )
    return problems


def _block_length(m: int, n: int) -> int:
    return 2 + 2 * m * n + m


def _read_integers(path: Path, label: str, max_bytes: int) -> IntMatrix:
    """Every whitespace-separated token as an integer (negatives are kept for later checks)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise GapFormatError(f"{label}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise GapFormatError(f"{label}: larger than {max_bytes} bytes; refusing to read it")
    tokens = data.split()
    plain = not data.translate(None, b"0123456789 \t\n\r\x0b\x0c")
    if not plain or max(map(len, tokens), default=0) > MAX_TOKEN_DIGITS:
        for index, token in enumerate(tokens):
            if not _INTEGER.fullmatch(token):
                problem = _token_problem(token)
                raise GapFormatError(f"{label}: token {index} {_show(token)} {problem}")
    if not tokens:
        return np.zeros(0, dtype=np.int64)
    return np.array(tokens, dtype=np.bytes_).astype(np.int64)


_INTEGER = re.compile(rb"-?[0-9]{1,%d}" % MAX_TOKEN_DIGITS)


def _token_problem(token: bytes) -> str:
    digits = token.removeprefix(b"-")
    if digits.isdigit():
        return f"has more than {MAX_TOKEN_DIGITS} digits"
    return "is not an integer"


def _show(token: bytes) -> str:
    text = token[:24].decode("ascii", "backslashreplace")
    return f"('{text}...')" if len(token) > 24 else f"('{text}')"


def _parse_block(
    values: IntMatrix, start: int, label: str, name: str, source: str, *, problem_label: str
) -> GapProblem:
    """The problem whose ``m n`` header sits at token `start`."""
    where = f"{label}: {problem_label}"
    count = len(values)
    if start + 2 > count:
        raise GapFormatError(f"{where}file ends inside the 'm n' header (token {start})")
    m, n = int(values[start]), int(values[start + 1])
    if m < 1:
        raise GapFormatError(f"{where}m (token {start}) is {m}; need at least one agent")
    if n < 1:
        raise GapFormatError(f"{where}n (token {start + 1}) is {n}; need at least one job")
    if m * n > MAX_CELLS:
        raise GapFormatError(
            f"{where}m*n = {m}*{n} = {m * n} exceeds the limit of {MAX_CELLS}; refusing it"
        )
    needed = _block_length(m, n)
    if start + needed > count:
        raise GapFormatError(
            f"{where}m={m}, n={n} needs {needed} integers from token {start}, but the file has "
            f"only {count - start} left (a short or truncated file)"
        )
    cells = m * n
    base = start + 2
    cost = values[base : base + cells].reshape(m, n).copy()
    use = values[base + cells : base + 2 * cells].reshape(m, n).copy()
    capacity = values[base + 2 * cells : base + 2 * cells + m].copy()

    for label_of, array, offset in (("cost c", cost, base), ("use a", use, base + cells)):
        bad = np.argwhere(array < 0)
        if bad.size:
            i, j = (int(x) for x in bad[0])
            raise GapFormatError(
                f"{where}{label_of}[{i}][{j}] (token {offset + i * n + j}) is {int(array[i, j])}; "
                f"values must be non-negative"
            )
    zero_use = np.argwhere(use == 0)
    if zero_use.size:
        i, j = (int(x) for x in zero_use[0])
        raise GapFormatError(
            f"{where}use a[{i}][{j}] (token {base + cells + i * n + j}) is 0; zero use cannot be "
            f"mapped exactly (formulation §6 would raise it to one quantum), so the file is "
            f"rejected"
        )
    bad_capacity = np.flatnonzero(capacity <= 0)
    if bad_capacity.size:
        i = int(bad_capacity[0])
        raise GapFormatError(
            f"{where}capacity b[{i}] (token {base + 2 * cells + i}) is {int(capacity[i])}; "
            f"capacities must be positive"
        )
    for array in (cost, use, capacity):
        array.setflags(write=False)
    return GapProblem(name=name, m=m, n=n, cost=cost, use=use, capacity=capacity, source=source)


# --------------------------------------------------------------------------------------------------
# Mapping onto the model (formulation §6)


def gap_to_instance(
    problem: GapProblem, name: str | None = None, maximize: bool = False
) -> Instance:
    """The instance of formulation §6: one region, a pool per agent, a must-serve demand per job.

    With ``maximize=True`` the costs c are treated as profits and each price becomes ``K - c[i][j]``
    with ``K = max c``. Every job is assigned exactly once, so for any plan
    ``maximized_value = n*K - objective``; K and n are recorded in the description.
    """
    name = problem.name if name is None else name
    too_big = np.flatnonzero(problem.capacity > MAX_POOL_GPUS)
    if too_big.size:
        i = int(too_big[0])
        raise ValueError(
            f"GAP problem {problem.name}: capacity b[{i}] = {int(problem.capacity[i])} exceeds "
            f"the largest pool the model allows (gpu_count <= {MAX_POOL_GPUS})"
        )
    top = int(problem.cost.max())
    prices = (top - problem.cost) if maximize else problem.cost

    pools = tuple(
        AcceleratorPool(
            id=_agent_id(i),
            accelerator="agent",
            gpu_count=int(problem.capacity[i]),
            memory_gb_per_gpu=1.0,
            tflops_by_precision={Precision.BF16: 1.0},
            power_kw_per_gpu=0.0,
            price_cny_per_gpu_hour=0.0,
        )
        for i in range(problem.m)
    )
    region = Region(
        id=REGION_ID,
        name="GAP agents",
        jurisdiction=REGION_ID,
        lat=0.0,
        lon=0.0,
        electricity_price_cny_per_kwh=0.0,
        pue=1.0,
        carbon_g_co2_per_kwh=0.0,
        pools=pools,
    )
    demands = tuple(
        Demand(id=_job_id(j), origin=REGION_ID, must_serve=True) for j in range(problem.n)
    )
    use = problem.use.tolist()
    price = prices.tolist()
    offers = tuple(
        Offer(
            demand=_job_id(j),
            pool=_agent_id(i),
            gpu_hours=float(use[i][j]),
            price_cny=float(price[i][j]),
        )
        for j in range(problem.n)
        for i in range(problem.m)
    )
    return Instance(
        name=name,
        description=_description(problem, maximize, top),
        window_hours=1.0,
        gpu_hour_quantum=1.0,
        regions=(region,),
        demands=demands,
        offers=offers,
    )


def _agent_id(i: int) -> str:
    return f"agent-{i + 1}"


def _job_id(j: int) -> str:
    return f"job-{j + 1}"


def _description(problem: GapProblem, maximize: bool, top: int) -> str:
    source = f" from {problem.source}" if problem.source else ""
    text = (
        f"Generalized assignment problem {problem.name}{source}: m={problem.m} agents "
        f"(pools agent-1..agent-{problem.m}, gpu_count = capacity b[i]), n={problem.n} jobs "
        f"(must-serve demands job-1..job-{problem.n}); offer (job j, agent i) has gpu_hours = "
        f"use a[i][j] and "
    )
    if not maximize:
        return text + "price_cny = cost c[i][j]. Objective sense: minimize (formulation §6)."
    return text + (
        f"price_cny = K - c[i][j] with K = max c = {top}. The original problem maximizes "
        f"sum c; recover it as maximized_value = n*K - objective = {problem.n * top} - objective "
        f"(n={problem.n}, K={top})."
    )


# --------------------------------------------------------------------------------------------------
# Converting files


def convert_gap_file(
    path: str | os.PathLike[str], out_dir: str | os.PathLike[str], maximize: bool = False
) -> list[Path]:
    """Write one native instance JSON per problem, ``<stem>-<k>.json`` (k from 1), atomically.

    The whole file is read and mapped before anything is written; existing outputs are replaced,
    the input file never. Instance names are the problem names (the ``bks.csv`` keys).
    """
    path = Path(path)
    out = Path(out_dir)
    problems = read_gap(path)
    targets = [out / f"{path.stem}-{k}.json" for k in range(1, len(problems) + 1)]
    source = path.resolve()
    for target in targets:
        if target.resolve() == source:
            raise ValueError(f"{path}: refusing to overwrite the input file with {target}")
    instances = [gap_to_instance(p, maximize=maximize) for p in problems]
    out.mkdir(parents=True, exist_ok=True)
    for target, instance in zip(targets, instances, strict=True):
        write_instance(instance, target, protect=(path,))
    return targets


# --------------------------------------------------------------------------------------------------
# Best known solutions


@dataclass(frozen=True)
class BksRow:
    """One row of ``bks.csv``: the best known value of a problem for one objective sense."""

    instance: str
    m: int
    n: int
    objective_sense: str
    best_known: int
    proven_optimal: bool
    lower_bound: int | None
    confidence: str
    source: str
    files: tuple[str, ...]


BKS_COLUMNS = (
    "instance", "m", "n", "objective_sense", "best_known", "proven_optimal", "source",
    "lower_bound", "confidence", "file",
)


def load_bks(
    path: str | os.PathLike[str], *, max_bytes: int = 4 * 1024 * 1024
) -> dict[tuple[str, str], BksRow]:
    """The rows of ``bks.csv`` keyed by (instance, objective_sense). Raises `ValueError`."""
    path = Path(path)
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes} bytes; refusing to read it")
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    missing = [c for c in BKS_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    rows: dict[tuple[str, str], BksRow] = {}
    for line, raw in enumerate(reader, start=2):
        try:
            row = _bks_row(raw)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: line {line}: {exc}") from exc
        key = (row.instance, row.objective_sense)
        if key in rows:
            raise ValueError(f"{path}: line {line}: duplicate row for {key}")
        rows[key] = row
    return rows


def _bks_row(raw: dict[str, str]) -> BksRow:
    sense = raw["objective_sense"].strip()
    if sense not in ("min", "max"):
        raise ValueError(f"objective_sense is '{sense}', expected 'min' or 'max'")
    proven = raw["proven_optimal"].strip()
    if proven not in ("yes", "no"):
        raise ValueError(f"proven_optimal is '{proven}', expected 'yes' or 'no'")
    bound = raw["lower_bound"].strip()
    return BksRow(
        instance=raw["instance"].strip(),
        m=int(raw["m"]),
        n=int(raw["n"]),
        objective_sense=sense,
        best_known=int(raw["best_known"]),
        proven_optimal=proven == "yes",
        lower_bound=int(bound) if bound else None,
        confidence=raw["confidence"].strip(),
        source=raw["source"].strip(),
        files=tuple(f.strip() for f in raw["file"].split(";") if f.strip()),
    )


__all__ = [
    "MAX_CELLS",
    "MAX_FILE_BYTES",
    "BksRow",
    "GapFormatError",
    "GapProblem",
    "convert_gap_file",
    "gap_to_instance",
    "load_bks",
    "read_gap",
]
