"""Reading and writing instance, plan and parameter files: the only code that touches files.

Bad input is normal: every problem becomes an `InputError` whose message names the file, the
object (by id where it has one) and the field. Outputs are written atomically: a temporary file
in the same folder, flushed to disk, then renamed over the target, so a crash never leaves half a
file and an existing file stays intact until its replacement is complete.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from models import Demand, Instance, Offer, Plan
from scheduler.params import SolveParams

MAX_FILE_BYTES = 4 * 1024**3
"""Larger files are refused before they are read (a million-demand instance is about 0.5 GB)."""

STEPPED_READ_BYTES = 4 * 1024**2
"""Larger JSON files are decoded and validated in steps (`_parse_in_steps`), so that a signal
is handled within milliseconds while they are read."""

STEP_ITEMS = 1000  # list items validated per step (about 12 ms for demands)

Model = TypeVar("Model", bound=BaseModel)

_KINDS = {
    "regions": "region",
    "pools": "pool",
    "links": "link",
    "demands": "demand",
    "offers": "offer",
    "assignments": "assignment",
    "unserved": "unserved",
    "candidates": "candidate",
}


class InputError(ValueError):
    """A file that cannot be used, with messages that say where and why."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{self.path}: {problem}" for problem in problems))


def read_instance(path: str | os.PathLike) -> Instance:
    """Read and validate an instance file (JSON, or YAML read with the safe loader)."""
    return _read(path, Instance)


def read_plan(path: str | os.PathLike) -> Plan:
    """Read and validate a plan file."""
    return _read(path, Plan)


def read_params(path: str | os.PathLike) -> SolveParams:
    """Read solve parameters from a JSON or YAML file."""
    return _read(path, SolveParams)


class DemandFile(BaseModel):
    """Demands to add to an instance (``eastwest replan --add``): the instance format's
    ``demands``, and optionally ``offers`` for them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    demands: tuple[Demand, ...] = Field(min_length=1)
    offers: tuple[Offer, ...] = ()


def read_demands(path: str | os.PathLike) -> DemandFile:
    """Read a file of demands to add (JSON, or YAML read with the safe loader)."""
    return _read(path, DemandFile)


def write_plan(
    plan: Plan, path: str | os.PathLike, *, protect: tuple[str | os.PathLike | None, ...] = ()
) -> None:
    """Write a plan as JSON, atomically; refuse to write over any path in ``protect``."""
    write_text(plan.model_dump_json(indent=1), path, protect=protect)


def write_instance(
    instance: Instance, path: str | os.PathLike, *, protect: tuple[str | os.PathLike, ...] = ()
) -> None:
    """Write an instance as JSON, atomically."""
    write_text(instance.model_dump_json(indent=1), path, protect=protect)


def check_writable(path: str | os.PathLike, *, protect: tuple[str | os.PathLike | None, ...] = ()) -> None:
    """Raise InputError unless ``path`` can take an output file that no protected path is."""
    target = Path(path)
    for other in protect:
        if other is not None and _same_file(target, Path(other)):
            raise InputError(target, [f"refusing to overwrite the input file '{other}'"])
    if target.is_dir():
        raise InputError(target, ["is a folder, not a file"])
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(target, [f"the folder '{folder}' does not exist"])


def write_text(
    text: str, path: str | os.PathLike, *, protect: tuple[str | os.PathLike | None, ...] = ()
) -> None:
    """Write ``text`` to ``path`` atomically, never over a protected (input) file."""
    check_writable(path, protect=protect)
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            if not text.endswith("\n"):
                out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, _file_mode(target))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _file_mode(target: Path) -> int:
    """Keep an existing file's permissions; a new file gets the usual ones (0666 less umask)."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def read_raw(path: str | os.PathLike) -> tuple[Path, bytes]:
    """The bytes of an input file, or an InputError naming it (missing, a folder, too large,
    unreadable, empty)."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if not file.is_file():
            raise InputError(file, ["is not a regular file"])
        if size > MAX_FILE_BYTES:
            raise InputError(file, [f"is {size:,} bytes; the limit is {MAX_FILE_BYTES:,}"])
        raw = file.read_bytes()
    except FileNotFoundError:
        raise InputError(file, ["no such file"]) from None
    except IsADirectoryError:
        raise InputError(file, ["is a folder, not a file"]) from None
    except PermissionError:
        raise InputError(file, ["permission denied"]) from None
    except OSError as error:
        raise InputError(file, [f"cannot be read ({error.strerror or error})"]) from None
    if not raw.strip():
        raise InputError(file, ["is empty"])
    return file, raw


def _read(path: str | os.PathLike, model: type[Model]) -> Model:
    file, raw = read_raw(path)
    if file.suffix.lower() in (".yaml", ".yml"):
        return _validate(file, model, _load_yaml(file, raw))
    if len(raw) > STEPPED_READ_BYTES:
        try:
            return _validate_in_steps(model, _parse_in_steps(raw))
        except (ValueError, TypeError, RecursionError):
            pass  # read it again the plain way below, for the exact message
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        if any(e["type"] == "json_invalid" for e in error.errors()):
            _load_json(file, raw)  # raises with the line and column
        data = _load_json(file, raw)
        raise InputError(file, _describe(error, data)) from None


_SPACE = re.compile(r"[ \t\n\r]*")


def _parse_in_steps(raw: bytes) -> dict:
    """``json.loads`` for a top-level object, but its arrays are decoded one element at a time.

    One C call on a large file holds the interpreter lock for seconds (0.7 s per 100,000
    demands), and no signal handler can run meanwhile; element by element, the lock changes
    hands every few milliseconds. Raises ValueError on anything unexpected (the caller then
    reads the file the plain way, which reports the error precisely).
    """
    text = raw.decode("utf-8")
    decode = json.JSONDecoder(parse_constant=_reject_constant).raw_decode
    space = _SPACE.match

    def skip(i: int) -> int:
        return space(text, i).end()

    i = skip(0)
    if text[i : i + 1] != "{":
        raise ValueError("not an object")
    i = skip(i + 1)
    out: dict = {}
    if text[i : i + 1] == "}":
        return out if skip(i + 1) == len(text) else _bad()
    while True:
        key, i = decode(text, i)
        if not isinstance(key, str):
            raise ValueError("key is not a string")
        i = skip(i)
        if text[i : i + 1] != ":":
            raise ValueError("':' expected")
        i = skip(i + 1)
        if text[i : i + 1] == "[":
            items: list = []
            i = skip(i + 1)
            if text[i : i + 1] == "]":
                i += 1
            else:
                while True:
                    item, i = decode(text, i)
                    items.append(item)
                    i = skip(i)
                    mark = text[i : i + 1]
                    i = skip(i + 1)
                    if mark == "]":
                        break
                    if mark != ",":
                        raise ValueError("',' or ']' expected")
            out[key] = items
        else:
            out[key], i = decode(text, i)
        i = skip(i)
        mark = text[i : i + 1]
        i = skip(i + 1)
        if mark == "}":
            return out if i == len(text) else _bad()
        if mark != ",":
            raise ValueError("',' or '}' expected")


def _bad() -> dict:
    raise ValueError("trailing text")


def _validate_in_steps(model: type[Model], data: dict) -> Model:
    """``model.model_validate(data)``, its long tuple fields validated a slice at a time (for
    the same reason as `_parse_in_steps`); the result is the same model."""
    data = dict(data)
    for name, field in model.model_fields.items():
        items = data.get(name)
        args = get_args(field.annotation)
        if (not isinstance(items, list) or len(items) <= STEP_ITEMS
                or get_origin(field.annotation) is not tuple or len(args) != 2
                or args[1] is not Ellipsis):
            continue
        adapter = _adapter(field.annotation)
        validated: list = []
        for k in range(0, len(items), STEP_ITEMS):
            validated.extend(adapter.validate_python(items[k : k + STEP_ITEMS]))
        data[name] = tuple(validated)
    return model.model_validate(data)


@functools.cache
def _adapter(annotation) -> TypeAdapter:
    return TypeAdapter(annotation)


def _validate(file: Path, model: type[Model], data: object) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InputError(file, _describe(error, data)) from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"'{name}' is not a number JSON allows")


def _load_json(file: Path, raw: bytes) -> object:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(file, [f"is not UTF-8 text (byte {error.start})"]) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise InputError(
            file, [f"is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"]
        ) from None
    except ValueError as error:
        raise InputError(file, [f"is not valid JSON: {error}"]) from None
    except RecursionError:
        raise InputError(file, ["is not valid JSON: nested too deeply"]) from None


def _load_yaml(file: Path, raw: bytes) -> object:
    try:
        import yaml
    except ImportError:
        raise InputError(file, ["is YAML; install PyYAML to read it, or use JSON"]) from None
    class Loader(yaml.SafeLoader):
        """The safe loader without anchors and aliases (no 'billion laughs' expansion)."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.get_event()
                raise yaml.composer.ComposerError(
                    None, None, "anchors and aliases are not allowed", event.start_mark
                )
            return super().compose_node(parent, index)

    try:
        return yaml.load(raw, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise InputError(file, [f"is not valid YAML: {error}"]) from None
    except RecursionError:
        raise InputError(file, ["is not valid YAML: nested too deeply"]) from None


def field_message(item: dict) -> str:
    """One pydantic error's message in the words of every input file's messages."""
    return {"extra_forbidden": "is not a known field", "missing": "is required"}.get(
        item["type"], item["msg"])


def _describe(error: ValidationError, data: object) -> list[str]:
    """Turn pydantic's errors into 'object: field: message' lines, naming objects by their id."""
    lines = []
    for item in error.errors(include_url=False):
        obj, field = _locate(item["loc"], data)
        if item["type"] == "value_error" and not field:
            # The instance's own cross-reference checks already name the object and field.
            lines.extend(item["msg"].removeprefix("Value error, ").splitlines())
            continue
        message = field_message(item)
        lines.append(f"{obj}: field '{field}': {message}" if field else f"{obj}: {message}")
    return lines[:50] + ([f"(and {len(lines) - 50} more)"] if len(lines) > 50 else [])


def _locate(loc: tuple, data: object) -> tuple[str, str]:
    """The object (with its id, if it has one) and the field a pydantic error location points at."""
    obj = "instance"
    node = data
    rest: list[str] = []
    k = 0
    while k < len(loc):
        key = loc[k]
        if (
            isinstance(key, str)
            and key in _KINDS
            and k + 1 < len(loc)
            and isinstance(loc[k + 1], int)
        ):
            index = loc[k + 1]
            item = _child(_child(node, key), index)
            ident = item.get("id") if isinstance(item, dict) else None
            label = f"'{ident}'" if isinstance(ident, str) and len(ident) <= 128 else f"#{index}"
            obj = f"{_KINDS[key]} {label}"
            node = item
            rest = []
            k += 2
            continue
        rest.append(str(key))
        node = _child(node, key)
        k += 1
    return obj, ".".join(rest)


def _child(node: object, key: object) -> object:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return None
