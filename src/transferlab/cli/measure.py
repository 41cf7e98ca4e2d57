"""``transferlab measure NAME A.npy [B.npy] [--labels y.npy] [--json]`` and ``transferlab measure --list``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from transferlab.cli.app import app
from transferlab.errors import ConfigError, DataError


def _load(path: Path, what: str):
    import numpy as np

    if not path.exists():
        raise DataError(f"{what}: file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for unreadable files
        raise DataError(f"{what}: cannot read {path} as a .npy array ({exc})") from exc


@app.command("measure")
def measure_command(
    name: str = typer.Argument(None, help="Measure name (see --list)."),
    a: Path = typer.Argument(None, help="First array (.npy): X, features or source predictions."),
    b: Path = typer.Argument(None, help="Second array (.npy) for two-array measures."),
    labels: Path = typer.Option(None, "--labels", help="Labels (.npy) for transferability / label measures."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of the bare value."),
    list_all: bool = typer.Option(False, "--list", help="List every measure, what it returns and its invariances."),
) -> None:
    """Compute one measure on arrays stored as .npy files and print the value."""
    from transferlab.measures import get_measure, list_measures

    if list_all:
        infos = list_measures()
        if as_json:
            typer.echo(json.dumps([
                {"name": i.name, "inputs": i.inputs, "returns": i.returns, "symmetric": i.symmetric,
                 "metric": i.metric, "invariances": dict(i.invariances)} for i in infos
            ], indent=2))
        else:
            for i in infos:
                sym = "" if i.symmetric is None else ("symmetric" if i.symmetric else "asymmetric")
                extra = ", ".join(x for x in (sym, "metric" if i.metric else "") if x)
                typer.echo(f"{i.name:28s} [{i.inputs}] {i.returns}" + (f" ({extra})" if extra else ""))
                typer.echo(f"{'':28s} invariant to: {i.invariance_text()}")
        raise typer.Exit(0)
    if name is None or a is None:
        raise ConfigError("usage: transferlab measure NAME A.npy [B.npy] [--labels y.npy] [--json]; see --list")
    info = get_measure(name)
    first = _load(a, "A")
    if info.inputs in ("pair", "samples"):
        if b is None:
            raise ConfigError(f"measure {info.name!r} compares two arrays: give A.npy and B.npy")
        value: float | dict[str, float] = (info.report or info.func)(first, _load(b, "B"))
    elif info.inputs == "single":
        value = info.func(first)
    else:
        if labels is None:
            raise ConfigError(f"measure {info.name!r} needs --labels y.npy")
        value = info.func(first, _load(labels, "labels"))
    if as_json:
        typer.echo(json.dumps({"measure": info.name, "value": value, "returns": info.returns}))
    elif isinstance(value, dict):
        typer.echo(" ".join(f"{k}={v:.10g}" for k, v in value.items()))
    else:
        typer.echo(f"{value:.10g}")
