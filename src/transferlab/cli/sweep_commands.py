"""Commands of the sweep engine: run, status, export, report, experiments."""

from __future__ import annotations

import typer

from transferlab.cli.app import app


@app.command("experiments")
def experiments_command() -> None:
    """List the registered experiment kinds and their parameters."""
    from rich.console import Console
    from rich.table import Table

    from transferlab.experiments import available_experiments, get_experiment

    console = Console()
    for name in available_experiments():
        kind = get_experiment(name)
        table = Table(title=f"{name} (version {kind.version}): {kind.description}", title_justify="left")
        table.add_column("parameter")
        table.add_column("type")
        table.add_column("default")
        for pname, ptype, default in kind.parameters():
            table.add_row(pname, ptype, repr(default))
        console.print(table)
    raise typer.Exit(0)
