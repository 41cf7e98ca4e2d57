"""``transferlab advise --model MODEL --data DATA [--target-size N] [--budget MINUTES] [--json PATH]
[--html PATH] [--seed S]``: should I transfer, and how deep? (:func:`transferlab.advise.advise`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from transferlab.cli.app import app


@app.command("advise")
def advise_command(
    model: str = typer.Option(..., "--model", help="pretrained:<name> | trained:<data set> | module:<pkg.mod>:<function>"),
    data: str = typer.Option(..., "--data", help="A packaged data set name, or npz:<path> with x_train, y_train, "
                                                 "x_test, y_test."),
    target_size: int | None = typer.Option(None, "--target-size", help="N, your training examples (default: "
                                           "min(1000, what the training split allows))."),
    budget: float = typer.Option(5.0, "--budget", help="Minutes for the whole sweep; the step budget is fitted to it."),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps per training run, fixed: no timed "
                                        "pilots and no --budget, so the advice is the same on every machine."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the full advice as JSON here."),
    html_path: Path | None = typer.Option(None, "--html", help="Write an HTML page with the curves here."),
    seed: int = typer.Option(0, "--seed", help="Seed of every subset and initialisation."),
    seeds: int = typer.Option(2, "--seeds", help="Runs per sweep cell (>= 2)."),
    target_labels: str = typer.Option("fine", "--target-labels", help="fine | coarse (packaged data sets)."),
    architecture: str = typer.Option("cnn", "--architecture", help="cnn | mlp: the network of a trained: source."),
    source_size: int = typer.Option(10000, "--source-size", help="Training images of a trained: source."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate on the target."),
) -> None:
    """Should I transfer from MODEL to DATA, and how many blocks should I freeze? Runs the cheap predictors
    and a budgeted defrosting sweep, then prints a verdict (progress on stderr)."""
    from transferlab.advise import advise, write_advice_html

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    advice = advise(model, data, target_size=target_size, budget_minutes=budget, seed=seed, seeds=seeds,
                    target_labels=target_labels, architecture=architecture, source_size=source_size, lr=lr, steps=steps,
                    on_progress=progress)
    print(f"transferlab advise: {model} -> {data} (N = {advice.target_size}, {advice.n_classes} classes, "
          f"{advice.n_blocks} blocks: {', '.join(advice.block_names)})")
    print(advice.verdict())
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(advice.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        print(f"wrote {json_path}")
    if html_path is not None:
        print(f"wrote {write_advice_html(advice, html_path)}")
