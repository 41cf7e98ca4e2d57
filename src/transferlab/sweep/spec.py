"""Experiment specs: TOML files (or dicts) validated into a :class:`Spec`, expanded into cells.

A spec::

    experiment = "fate"          # a registered kind
    seed = 0                     # root of every cell's randomness
    replicates = 1               # repetitions of every grid point (replicate index 0..R-1)
    [params]                     # fixed for every cell
    d = 100
    [grid]                       # the Cartesian product of these axes makes the cells
    theta = {linspace = [0.05, 1.0, 20], unit = "pi/2"}
    gamma = {logspace = [-1, 0.3, 10]}
    sigma = [0.0, 0.2]
    [run]                        # how to run (never part of a cell's identity)
    executor = "process"
    batch_size = 64
    max_cells = 100000           # refuse a larger expansion (counted before anything is expanded)

Axis forms: a list; a scalar (one value); or a table with exactly one of ``values = [...]``,
``linspace = [start, stop, num]``, ``logspace = [start_exp, stop_exp, num]`` (base 10),
``range = [start, stop, step]`` (integers, stop excluded), plus optional ``unit`` ("pi", "pi/2",
"deg" or a number) that multiplies every value.

Every error names the file and the key (``fate.toml: grid.theta: ...``) and is raised before any
store is touched.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from transferlab.errors import ConfigError
from transferlab.experiments import Cell, Experiment, get_experiment

__all__ = [
    "DEFAULT_MAX_CELLS", "PlannedCell", "RunOptions", "Spec", "load_spec", "spec_from_dict", "expand_cells", "cell_key",
    "axis_length", "parse_axis",
]

_UNITS = {"pi": math.pi, "pi/2": math.pi / 2, "deg": math.pi / 180}

#: The most cells a spec may expand to unless its ``[run] max_cells`` (or ``run --max-cells``) says more.
DEFAULT_MAX_CELLS = 100_000


class RunOptions(BaseModel):
    """The ``[run]`` table: how to execute; never part of a cell's identity."""

    model_config = ConfigDict(extra="forbid")

    executor: Literal["serial", "process", "ray"] = "process"
    jobs: StrictInt | None = Field(None, ge=1, description="workers (default: CPU count)")
    batch_size: StrictInt = Field(64, ge=1, description="most cells per run_batch call")
    max_cells: StrictInt = Field(DEFAULT_MAX_CELLS, ge=1, description="refuse a spec that expands to more cells")
    store: str | None = Field(None, description="store path (default: <spec stem>.db)")
    address: str | None = Field(None, description="Ray cluster address (default: start a local instance)")


class Spec(BaseModel):
    """A validated spec. ``source`` is the file it came from (None for a dict), ``text`` its text."""

    model_config = ConfigDict(extra="forbid")

    experiment: str
    seed: StrictInt = Field(0, ge=0)
    replicates: StrictInt = Field(1, ge=1)
    name: str | None = None
    description: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] = Field(default_factory=dict)
    run: RunOptions = Field(default_factory=RunOptions)
    source: str | None = Field(None, exclude=True)
    text: str | None = Field(None, exclude=True)

    @property
    def label(self) -> str:
        """How errors name this spec: its file name, or ``<spec>``."""
        return Path(self.source).name if self.source else "<spec>"

    def axes(self) -> dict[str, list[Any]]:
        """Each grid axis expanded to its list of values, in spec order (after :meth:`check_size`)."""
        self.check_size()
        return {name: parse_axis(value, f"{self.label}: grid.{name}") for name, value in self.grid.items()}

    def cell_count(self) -> int:
        """How many cells the spec expands to (grid points times replicates), counted without
        expanding any axis."""
        return math.prod(self._axis_lengths().values()) * self.replicates

    def _axis_lengths(self) -> dict[str, int]:
        return {name: axis_length(value, f"{self.label}: grid.{name}") for name, value in self.grid.items()}

    def check_size(self) -> None:
        """Refuse (:class:`ConfigError`) a spec of more than ``run.max_cells`` cells, before anything is
        expanded: a grid of 1000 x 1000 x 1000 values would take minutes and all memory to list."""
        count = self.cell_count()
        if count > self.run.max_cells:
            sizes = " x ".join(f"{n} {name}" for name, n in self._axis_lengths().items()) or "1 point"
            raise ConfigError(f"{self.label}: the spec expands to {count:,} cells ({sizes} x {self.replicates} "
                              f"replicates), more than max_cells = {self.run.max_cells:,}; shrink the grid, or "
                              "raise the limit with `run --max-cells N` or [run] max_cells")

    def default_store(self) -> Path:
        """``run.store`` if given, else ``<spec stem>.db`` in the working directory."""
        if self.run.store:
            return Path(self.run.store)
        stem = Path(self.source).stem if self.source else (self.name or self.experiment)
        return Path(f"{stem}.db")


def _generator(table: Mapping[str, Any], where: str) -> tuple[str, Any, Any]:
    """Validate a generator table (``{linspace = [0, 1, 5], unit = "pi"}``); return ``(form, args,
    unit)`` without expanding it."""
    table = dict(table)
    unit = table.pop("unit", None)
    forms = [k for k in ("values", "linspace", "logspace", "range") if k in table]
    extra = sorted(set(table) - {"values", "linspace", "logspace", "range"})
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)} (use values, linspace, logspace or range, and unit)")
    if len(forms) != 1:
        raise ConfigError(f"{where}: give exactly one of values, linspace, logspace, range")
    form = forms[0]
    args = table[form]
    if form == "values":
        return form, args, unit
    numbers = isinstance(args, list) and len(args) == 3
    if not numbers or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"{where}: {form} needs three numbers [start, stop, {'step' if form == 'range' else 'num'}]")
    if form == "range" and (not all(isinstance(a, int) for a in args) or args[2] == 0):
        raise ConfigError(f"{where}: range needs integers [start, stop, step] with step != 0")
    if form != "range" and (not isinstance(args[2], int) or args[2] < 1):
        raise ConfigError(f"{where}: {form} needs a positive integer count, got {args[2]!r}")
    return form, args, unit


def axis_length(value: Any, where: str) -> int:
    """How many values one grid axis has, without expanding it (O(1) for a generator table)."""
    if isinstance(value, list):
        return len(value)
    if not isinstance(value, dict):
        return 1
    form, args, _ = _generator(value, where)
    if form == "values":
        return len(args) if isinstance(args, list) else 1
    return len(range(*args)) if form == "range" else args[2]


def parse_axis(value: Any, where: str) -> list[Any]:
    """Expand one grid-axis value (list, scalar or generator table) to its list of values."""
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: the axis is empty")
        return list(value)
    if not isinstance(value, dict):
        return [value]
    form, args, unit = _generator(value, where)
    if form == "values":
        values = parse_axis(args if isinstance(args, list) else [args], where)
    elif form == "range":
        values = list(range(*args))
        if not values:
            raise ConfigError(f"{where}: the axis is empty")
    else:
        start, stop, num = args
        step = (stop - start) / (num - 1) if num > 1 else 0.0
        values = [start + i * step for i in range(num)]
        if form == "logspace":
            values = [10.0**v for v in values]
    if unit is not None:
        factor = _UNITS.get(unit) if isinstance(unit, str) else unit
        if not isinstance(factor, (int, float)) or isinstance(factor, bool):
            raise ConfigError(f"{where}: unknown unit {unit!r} (use {', '.join(_UNITS)} or a number)")
        values = [v * factor for v in values]
    return values


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read spec file ({exc})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: invalid TOML ({exc})") from None


def _apply_override(raw: dict[str, Any], assignment: str, label: str) -> None:
    """Apply ``a.b=value`` (value parsed as a TOML value, else taken as a string) to ``raw``."""
    path, sep, text = assignment.partition("=")
    if not sep or not path.strip():
        raise ConfigError(f"{label}: --set {assignment!r}: expected KEY=VALUE, e.g. params.d=200")
    value: Any = text
    if not text.strip().isalpha():  # bare words (nan, inf, true, names) stay strings; the kind's
        try:                        # config coerces "true" or "inf" where a bool or float is wanted
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            pass
    keys = [k.strip() for k in path.split(".")]
    node = raw
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{label}: --set {path}: {k!r} is not a table")
        node = child
    node[keys[-1]] = value


def spec_from_dict(raw: Mapping[str, Any], *, source: str | None = None, text: str | None = None,
                   overrides: Sequence[str] = ()) -> Spec:
    """Validate a raw spec mapping (plus ``--set`` overrides) into a :class:`Spec`."""
    label = Path(source).name if source else "<spec>"
    data = copy.deepcopy(dict(raw))
    for assignment in overrides:
        _apply_override(data, assignment, label)
    _check_plain(data, label, "")
    try:
        spec = Spec.model_validate({**data, "source": source, "text": text})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, label, prefix="")) from None
    get_experiment(spec.experiment)  # unknown kind -> ConfigError naming the known ones
    spec.axes()  # too many cells, malformed axes -> ConfigError now, not later
    return spec


def _check_plain(value: Any, label: str, where: str) -> None:
    """Spec values must be finite numbers, strings, booleans, lists and tables (no dates, NaN, inf)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(item, label, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, label, where)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{label}: {where}: non-finite value {value} is not allowed in a spec")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise ConfigError(f"{label}: {where}: unsupported value {value!r} ({type(value).__name__}); "
                          "use numbers, strings, booleans, lists or tables")


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> Spec:
    """Read and validate a TOML spec file; ``overrides`` are ``"a.b=value"`` strings."""
    path = Path(path)
    raw, text = _read_toml(path)
    return spec_from_dict(raw, source=str(path), text=text, overrides=overrides)


def _describe(exc: ValidationError, label: str, prefix: str, origin: Mapping[str, str] | None = None) -> str:
    """One line naming the first failing key: ``file: section.key: message``."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    if origin is not None and loc:
        loc = [origin.get(loc[0], prefix.rstrip(".")), *loc]
    key = ".".join(loc) or "(top level)"
    message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    more = len(exc.errors()) - 1
    return f"{label}: {key}: {message}" + (f" (and {more} more error{'s' * (more > 1)})" if more else "")


def cell_key(kind: Experiment, config_json: Mapping[str, Any], seed: int, replicate: int) -> str:
    """32 hex digits of SHA-256 over the canonical JSON of (kind, version, config, seed, replicate)."""
    payload = json.dumps(
        {"experiment": kind.name, "version": kind.version, "config": config_json, "seed": seed, "replicate": replicate},
        sort_keys=True, separators=(",", ":"), allow_nan=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class PlannedCell:
    """A cell together with its canonical config JSON (what the store records)."""

    cell: Cell
    config_json: dict[str, Any]


def expand_cells(spec: Spec) -> list[PlannedCell]:
    """Every cell of the spec, validated against the kind's config, in grid order.

    Raises :class:`ConfigError` naming the file and key of the first invalid value, and for a key in
    both ``[params]`` and ``[grid]``.
    """
    kind = get_experiment(spec.experiment)
    axes = spec.axes()
    clash = sorted(set(axes) & set(spec.params))
    if clash:
        raise ConfigError(f"{spec.label}: {clash[0]!r} is both in [params] and [grid]; keep it in one")
    origin = {**{k: "params" for k in spec.params}, **{k: "grid" for k in axes}}
    names = list(axes)
    planned: list[PlannedCell] = []
    seen: dict[str, dict[str, Any]] = {}
    for point in itertools.product(*axes.values()):
        values = {**spec.params, **dict(zip(names, point))}
        try:
            config = kind.Config.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, spec.label, prefix="params.", origin=origin)) from None
        config_json = config.model_dump(mode="json")
        canonical = json.dumps(config_json, sort_keys=True)
        if canonical in seen:  # each product point is visited once, so a repeat is a duplicate value
            raise ConfigError(f"{spec.label}: grid points {seen[canonical]} and {dict(zip(names, point))} are the "
                              "same cell; remove the duplicate axis value")
        seen[canonical] = dict(zip(names, point))
        for replicate in range(spec.replicates):
            key = cell_key(kind, config_json, spec.seed, replicate)
            planned.append(PlannedCell(Cell(key, config, spec.seed, replicate), config_json))
    return planned
