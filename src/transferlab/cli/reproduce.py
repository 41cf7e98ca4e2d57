"""``transferlab reproduce PAPER``: run a paper's sweeps into one store and write its report.

``transferlab reproduce fate [--quick]`` runs two specs into ``<out>/fate.db``: the closed-form theory
on the paper's fine grid at d = 500 (``fate_theory.toml``), and the deep-linear-network simulations
(``fate_quick.toml``: d = 40 on a coarse grid; ``fate_full.toml``: the paper's 20 x 20 grid with 20
instances at the width :data:`FULL_WIDTH`). It writes the spec copies, the store, every figure as PNG
and SVG under ``<out>/figures`` and the self-contained ``<out>/report.html``. A rerun into the same
``--out`` skips the cells already stored.

The spec texts below are the canonical ones; ``specs/fate_*.toml`` in the repository are identical
copies (a test keeps them in sync).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from transferlab.cli.app import app
from transferlab.errors import ConfigError

__all__ = ["FULL_WIDTH", "QUICK_WIDTH", "SPECS", "reproduce_command"]

#: Simulation width d of ``reproduce fate --quick`` and of the full version.
QUICK_WIDTH = 40
FULL_WIDTH = 100

_THEORY = """\
# Features are fate (paper 1): the closed forms on the paper's grid, exact at d = 500 (the paper's width).
# gamma steps by 0.05 and avoids gamma = 1, where the finite-size scratch risk does not exist.
experiment = "fate"
seed = 0
name = "fate-theory"
description = "closed-form transferability, d = 500, unregularised probe (eqs. 8, 10, 11, 15)"

[params]
d = 500
layers = 2
mode = "theory"
ridge = 0.0

[grid]
theta = {linspace = [0.05, 1.0, 20], unit = "pi/2"}
gamma = {linspace = [0.025, 1.975, 40]}
sigma = [0.0, 0.2]
"""

_QUICK = f"""\
# Features are fate (paper 1), quick: GD-trained deep linear networks at d = {QUICK_WIDTH} on a coarse grid,
# with the closed forms of the same cells alongside (mode = "both"). A few minutes on 2 cores.
experiment = "fate"
seed = 0
name = "fate-quick"
description = "GD simulations, d = {QUICK_WIDTH}, 8 x 7 grid, 10 instances, probe ridge 0.1"

[params]
d = {QUICK_WIDTH}
layers = 2
instances = 10
mode = "both"
ridge = 0.1
init_scale = 1e-3

[grid]
theta = {{linspace = [0.125, 1.0, 8], unit = "pi/2"}}
gamma = [0.2, 0.4, 0.6, 0.8, 1.25, 1.5, 2.0]
sigma = [0.2]
"""

_FULL = f"""\
# Features are fate (paper 1), full: the paper's grid (20 theta x 20 gamma, 20 instances, sigma = 0.2) with
# GD-trained deep linear networks at width d = {FULL_WIDTH} (the paper used d = 500 on a GPU), theory alongside.
experiment = "fate"
seed = 0
name = "fate-full"
description = "GD simulations, d = {FULL_WIDTH}, paper grid 20 x 20, 20 instances, probe ridge 0.1"

[params]
d = {FULL_WIDTH}
layers = 2
instances = 20
mode = "both"
ridge = 0.1
init_scale = 1e-3

[grid]
theta = {{linspace = [0.05, 1.0, 20], unit = "pi/2"}}
gamma = {{linspace = [0.1, 2.0, 20]}}
sigma = [0.2]
"""

#: paper -> ordered {spec file name: TOML text}; the first part of each is always run.
SPECS: dict[str, dict[str, dict[str, str]]] = {
    "fate": {
        "quick": {"fate_theory.toml": _THEORY, "fate_quick.toml": _QUICK},
        "full": {"fate_theory.toml": _THEORY, "fate_full.toml": _FULL},
    },
}


@app.command("reproduce")
def reproduce_command(
    paper: str = typer.Argument(..., help="Which paper: fate."),
    quick: bool = typer.Option(False, "--quick", help="Small simulations (a few minutes on 2 cores)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: reproduce-<paper>)."),
    executor: str = typer.Option("process", help="serial | process | ray."),
    jobs: Optional[int] = typer.Option(None, min=1, help="Worker processes (default: CPU count)."),
) -> None:
    """Reproduce a paper's figures: run its sweeps, then write figures (PNG+SVG) and report.html."""
    from transferlab.cli.sweep_commands import _Progress
    from transferlab.report import write_store_report
    from transferlab.sweep import load_spec, run_sweep

    if paper not in SPECS:
        raise ConfigError(f"unknown paper {paper!r}; known: {', '.join(sorted(SPECS))}")
    out = out or Path(f"reproduce-{paper}")
    out.mkdir(parents=True, exist_ok=True)
    store = out / f"{paper}.db"
    started = time.monotonic()
    failed = 0
    for filename, text in SPECS[paper]["quick" if quick else "full"].items():
        path = out / filename
        path.write_text(text, encoding="utf-8")
        spec = load_spec(path)
        with _Progress(spec.name or filename) as progress:
            # the closed forms take milliseconds: a worker pool would only add its start-up
            serial = spec.params.get("mode") == "theory"
            summary = run_sweep(spec, store=store, executor="serial" if serial else executor, jobs=jobs,
                                progress=progress)
        typer.echo(summary.line())
        failed += summary.failed_in_store
    report = write_store_report(store, out / "report.html", figures_dir=out / "figures")
    typer.echo(f"report: {report}  figures: {out / 'figures'}  ({time.monotonic() - started:.0f} s)")
    if failed:
        raise typer.Exit(1)
