"""``transferlab measure NAME A.npy [B.npy] [--labels y.npy] [--param k=10] [--json]`` and
``transferlab measure --list``."""

from __future__ import annotations

import inspect
import json
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from transferlab.cli.app import app
from transferlab.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from transferlab.measures import MeasureInfo

#: The first bytes of every ``.npy`` file (``numpy.save``) and of a zip archive (``numpy.savez``).
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"

#: How many leading array arguments a measure of each input kind takes.
_N_ARRAYS = {"pair": 2, "samples": 2, "single": 1, "features_labels": 2, "predictions_labels": 2}


def _load(path: Path, what: str) -> Any:
    """The array in ``path``: a ``.npy`` file, or a ``.npz`` archive holding exactly one array.

    Raises :class:`DataError` naming ``what`` and the real problem (missing file, not a NumPy file,
    an archive of several arrays, Python objects that would need unpickling, a damaged file).
    """
    import numpy as np

    if not path.is_file():
        raise DataError(f"{what}: file not found: {path}" if not path.exists() else f"{what}: {path} is not a file")
    with path.open("rb") as fh:
        head = fh.read(len(_NPY_MAGIC))
    if not head.startswith(_ZIP_MAGIC) and head != _NPY_MAGIC:
        raise DataError(f"{what}: {path} is not a NumPy .npy file (it lacks the .npy header); "
                        "write arrays with numpy.save")
    kind = ".npz archive" if head.startswith(_ZIP_MAGIC) else ".npy file"
    try:
        loaded = np.load(path, allow_pickle=False)
        if kind == ".npy file":
            return loaded
        with loaded as archive:
            names = list(archive.files)
            array = archive[names[0]] if len(names) == 1 else None
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # numpy's refusal to unpickle an object array
            raise DataError(f"{what}: {path} holds Python objects (dtype object), which are never unpickled; "
                            "save a numeric array") from None
        raise DataError(f"{what}: cannot read {path} as a {kind} ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{what}: cannot read {path} as a {kind} ({exc})") from None
    if array is None:
        raise DataError(f"{what}: {path} is a .npz archive of {len(names)} arrays ({', '.join(names) or 'none'}); "
                        "save the one to measure as .npy")
    return array


def _parameters(info: MeasureInfo) -> dict[str, Any]:
    """The ``--param`` names of a measure with their defaults: the parameters of the function the
    CLI calls after its arrays, less those the registry entry fixes (``cka_rbf``'s kernel)."""
    func = info.report or info.func
    fixed = set(getattr(func, "keywords", {}) or {})
    params = list(inspect.signature(func).parameters.values())[_N_ARRAYS[info.inputs]:]
    return {p.name: p.default for p in params if p.name not in fixed}


def _parse_params(assignments: Sequence[str], info: MeasureInfo) -> dict[str, Any]:
    """``["k=10", "method=mle"]`` as keyword arguments of the measure; values are TOML values (``10``,
    ``0.5``, ``true``, ``"text"``), else plain strings. An unknown name is a :class:`ConfigError`
    listing the parameters the measure takes."""
    accepted = _parameters(info)
    params: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--param {assignment!r}: expected NAME=VALUE, e.g. --param k=10")
        if name not in accepted:
            known = ", ".join(accepted) if accepted else "none"
            raise ConfigError(f"measure {info.name!r} has no parameter {name!r}; its parameters: {known}")
        try:
            params[name] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            params[name] = text
    return params


@app.command("measure")
def measure_command(
    name: str = typer.Argument(None, help="Measure name (see --list)."),
    a: Path = typer.Argument(None, help="First array (.npy): X, features or source predictions."),
    b: Path = typer.Argument(None, help="Second array (.npy) for two-array measures (pair and samples)."),
    labels: Path = typer.Option(None, "--labels", help="Labels (.npy) for transferability / label measures."),
    param: list[str] = typer.Option([], "--param", "-p",
                                    help="A parameter of the measure: --param k=10 (repeatable; see --list)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of the bare value."),
    list_all: bool = typer.Option(False, "--list", help="List every measure, what it returns, its parameters "
                                                         "and its invariances."),
) -> None:
    """Compute one measure on arrays stored as .npy files and print the value."""
    from transferlab.measures import get_measure, list_measures

    if list_all:
        infos = list_measures()
        if as_json:
            typer.echo(json.dumps([
                {"name": i.name, "inputs": i.inputs, "returns": i.returns, "symmetric": i.symmetric,
                 "metric": i.metric, "invariances": dict(i.invariances), "parameters": _parameters(i)}
                for i in infos
            ], indent=2))
        else:
            for i in infos:
                sym = "" if i.symmetric is None else ("symmetric" if i.symmetric else "asymmetric")
                extra = ", ".join(x for x in (sym, "metric" if i.metric else "") if x)
                typer.echo(f"{i.name:28s} [{i.inputs}] {i.returns}" + (f" ({extra})" if extra else ""))
                typer.echo(f"{'':28s} invariant to: {i.invariance_text()}")
                params = _parameters(i)
                if params:
                    typer.echo(f"{'':28s} --param: " + ", ".join(
                        f"{k}={'(none)' if v is None else json.dumps(v)}" for k, v in params.items()))
        raise typer.Exit(0)
    if name is None or a is None:
        raise ConfigError("usage: transferlab measure NAME A.npy [B.npy] [--labels y.npy] [--param k=10] [--json]; "
                          "see --list")
    info = get_measure(name)
    func = info.report or info.func
    kwargs = _parse_params(param, info)
    if info.inputs in ("pair", "samples"):
        if b is None:
            raise ConfigError(f"measure {info.name!r} compares two arrays: give A.npy and B.npy")
        if labels is not None:
            raise ConfigError(f"measure {info.name!r} takes no --labels; it compares A.npy and B.npy")
        value: float | dict[str, float] = func(_load(a, "A"), _load(b, "B"), **kwargs)
    else:
        if b is not None:
            where = "--labels y.npy" if info.inputs != "single" else "nothing else"
            raise ConfigError(f"measure {info.name!r} takes one array A.npy and {where}; got a second array {b}")
        if info.inputs == "single":
            if labels is not None:
                raise ConfigError(f"measure {info.name!r} takes no --labels; it measures A.npy alone")
            value = func(_load(a, "A"), **kwargs)
        elif labels is None:
            raise ConfigError(f"measure {info.name!r} needs --labels y.npy")
        else:
            value = func(_load(a, "A"), _load(labels, "labels"), **kwargs)
    if as_json:
        typer.echo(json.dumps({"measure": info.name, "value": value, "returns": info.returns}))
    elif isinstance(value, dict):
        typer.echo(" ".join(f"{k}={v:.10g}" for k, v in value.items()))
    else:
        typer.echo(f"{value:.10g}")

