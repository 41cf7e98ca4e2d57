"""``transferlab reproduce PAPER``: run a paper's sweeps into one store and write its report.

``transferlab reproduce fate [--quick]`` runs two specs into ``<out>/fate.db``: the closed-form theory
on the paper's fine grid at d = 500 (``fate_theory.toml``), and the deep-linear-network simulations
(``fate_quick.toml``: d = 40 on a coarse grid; ``fate_full.toml``: the paper's 20 x 20 grid with 20
instances at d = 100). The specs ship inside the package (``transferlab/specs/``), so the command
works outside a source checkout. It writes the spec copies, the store, every figure as PNG and SVG
under ``<out>/figures`` and the self-contained ``<out>/report.html``. A rerun into the same ``--out``
skips the cells already stored.
"""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path
from typing import Optional

import typer

from transferlab.cli.app import app
from transferlab.errors import ConfigError

__all__ = ["SPEC_DIR", "SPECS", "reproduce_command"]

#: Where the reproduction specs live (package data).
SPEC_DIR = files("transferlab") / "specs"

#: paper -> mode -> spec files, run in order into one store.
SPECS: dict[str, dict[str, tuple[str, ...]]] = {
    "fate": {
        "quick": ("fate_theory.toml", "fate_quick.toml"),
        "full": ("fate_theory.toml", "fate_full.toml"),
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
    for filename in SPECS[paper]["quick" if quick else "full"]:
        path = out / filename
        path.write_text((SPEC_DIR / filename).read_text(encoding="utf-8"), encoding="utf-8")
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
