"""``transferlab reproduce PAPER``: run a paper's sweeps into one store and write its report.

``transferlab reproduce fate [--quick]`` runs two specs into ``<out>/fate.db``: the closed-form theory
on the paper's fine grid at d = 500 (``fate_theory.toml``), and the deep-linear-network simulations
(``fate_quick.toml``: d = 40 on a coarse grid; ``fate_full.toml``: the paper's 20 x 20 grid with 20
instances at d = 100). The specs ship inside the package (``transferlab/specs/``), so the command
works outside a source checkout.

``transferlab reproduce fate-relu [--quick]`` runs the ReLU section of the same paper (the ``fate_relu``
kind) into ``<out>/fate-relu.db``: linear transfer over (mu, n) from ``fate_relu_{quick,full}.toml`` and,
as a variant of the same file with ``protocol = ["scratch"]`` and no ``mu`` axis, the scratch baseline.

``transferlab reproduce transfer [--quick]`` runs the ``transfer`` kind into ``<out>/transfer.db``: a CNN
trained by transferlab on MNIST transferred to Fashion-MNIST and Animal-MNIST
(``transfer_cnn_{quick,full}.toml``) and MobileNetV2 with ImageNet weights transferred to Fashion-MNIST
(``transfer_mobilenet_{quick,full}.toml``), each with blocks 1..k frozen and, as a second sweep of the
same file with its protocol axis replaced (a :class:`SpecRun` variant), the baselines: scratch training
and the linear probe. It writes the spec copies, the store, every figure as PNG and SVG
under ``<out>/figures`` and the self-contained ``<out>/report.html``. A rerun into the same ``--out``
skips the cells already stored.

``transferlab reproduce defrost [--quick]`` runs the ``defrost`` kind (``defrost_quick.toml``, ``defrost_full.toml``:
freeze-k with kept and redrawn blocks, the baselines and the layerwise analysis on hidden-manifold tasks) into
``<out>/defrost.db``, and its real-data analogue with the ``transfer`` kind (``defrost_real_{quick,full}.toml``: a
CNN trained on MNIST or on Fashion-MNIST classes, transferred with every k to other Fashion-MNIST classes, and
to Animal-MNIST in the full grid) into ``<out>/defrost_real.db``, reported in ``<out>/report_real.html``.

``transferlab reproduce granularity [--quick]`` runs the ``granularity`` kind (``granularity_{quick,full}.toml``:
pretraining label functions on hierarchical multi-view data) into ``<out>/granularity.db``: the aligned,
global and random label functions, then as variants no, coarse and fine pretraining (``-main``), fine
classes split at random beyond the hierarchy (``-split``) and coarse vs fine over the fine-feature
probability (``-rarity``); and the real label hierarchies with the ``transfer`` kind
(``granularity_real_{quick,full}.toml``: a CNN pretrained on Fashion-MNIST with fine, coarse, k-means and random
labels, transferred to its 5 groups; the full run adds MNIST + Fashion + Animal as a variant, ``-mfa``) into
``<out>/granularity_real.db``, reported in ``<out>/report_real.html``.

``transferlab reproduce transferability [--quick]`` runs the ``transferability`` kind
(``transferability_{quick,full}.toml``: transferability predictors against measured transfer on a zoo of trained
sources and 4 targets) into ``<out>/transferability.db``, then as variants the pretrained networks
(``-pretrained``) and the advisor validation on held-out pairs (``-advise``: scratch and ``transferlab advise``).

``transferlab reproduce transfer-scaling [--quick]`` runs the ``transfer_scaling`` kind
(``transfer_scaling_{quick,full}.toml``: byte-level transformers trained on Python from scratch and fine-tuned
on Python after English pretraining) into ``<out>/transfer-scaling.db``: first the file with ``regime =
["pretrain"]`` and no ``data_size`` axis (``-pretrain``: one English pretraining per size, cached on disk), then
the file as it is (the scratch and fine-tuned runs, which load the cached sources).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

import typer

from transferlab.cli.app import app
from transferlab.errors import ConfigError

__all__ = ["SPEC_DIR", "SPECS", "SpecRun", "reproduce_command"]

#: Where the reproduction specs live (package data).
SPEC_DIR = files("transferlab") / "specs"

@dataclass(frozen=True)
class SpecRun:
    """One sweep of a reproduction: a packaged spec file, optionally as a variant whose grid axes are
    replaced (``None`` drops the axis) and whose name gets ``suffix``; the variant is written beside the
    original in the output folder, so the file there is exactly what ran. A sweep of another experiment
    kind than the paper's (a store holds one kind) names its own ``store``: ``<out>/<paper><store>.db``,
    reported in ``<out>/report<store>.html``."""

    filename: str
    grid: Mapping[str, list[Any] | None] = field(default_factory=dict)
    suffix: str = ""
    store: str = ""

    @property
    def out_name(self) -> str:
        stem, _, ext = self.filename.rpartition(".")
        return f"{stem}{self.suffix}.{ext}"

    def text(self) -> str:
        """The spec text, with this variant's grid lines replaced or removed."""
        text = (SPEC_DIR / self.filename).read_text(encoding="utf-8")
        for axis, values in self.grid.items():
            pattern = re.compile(rf"^{re.escape(axis)} = .*$\n?", re.MULTILINE)
            if not pattern.search(text):
                raise ConfigError(f"{self.filename} has no line '{axis} = ...' to replace")  # a packaging bug
            text = pattern.sub("" if values is None else f"{axis} = {json.dumps(values)}\n", text, count=1)
        if self.suffix:
            text = re.sub(r'^name = "(.*)"$', rf'name = "\1{self.suffix}"', text, count=1, flags=re.MULTILINE)
        return text


_BASELINES = {"protocol": ["scratch", "linear_probe"], "k": None}
#: the fate-relu scratch baseline: the same file with no mu axis (scratch training never sees the source)
_SCRATCH = {"protocol": ["scratch"], "mu": None}

#: the defrost paper's real-data analogue (the transfer kind, so a store of its own): near and far sources, every
#: k, then the baselines (scratch, linear probe); the full grid adds a relabelling source (Fashion-MNIST's coarse
#: labels) as a variant
_COARSE = {"source": ["trained:fashion_mnist"], "source_labels": ["coarse"]}
_REAL = {
    "quick": (SpecRun("defrost_real_quick.toml", store="_real"),
              SpecRun("defrost_real_quick.toml", _BASELINES, "-baselines", store="_real")),
    "full": (SpecRun("defrost_real_full.toml", store="_real"),
             SpecRun("defrost_real_full.toml", _BASELINES, "-baselines", store="_real"),
             SpecRun("defrost_real_full.toml", _COARSE, "-coarse", store="_real"),
             SpecRun("defrost_real_full.toml", {**_COARSE, **_BASELINES}, "-coarse-baselines", store="_real")),
}

#: the transfer-scaling pretraining sweep: English pretraining once per size, before the runs that load it
_PRETRAIN = {"regime": ["pretrain"], "data_size": None}

#: the transferability zoo's pretrained networks (the quick run: MobileNetV2 alone), and the advisor validation's
#: held-out pairs (their measured sweep is the main grid's, whose cells the variant finds done; it adds scratch and
#: advise; the quick run: the two pairs into Fashion-MNIST 5-9)
_ZOO_PRETRAINED = {"source": ["pretrained:mobilenet_v2", "pretrained:efficientnet_lite0"]}
_ADVISE_PAIRS = {"source": ["cnn:mnist[0,1,2,3,4]", "mlp:animal_mnist[0,1,2,3,4]"],
                 "target": ["fashion_mnist[5,6,7,8,9]", "animal_mnist[5,6,7,8,9]"],
                 "protocol": ["scratch", "linear_probe", "freeze_sweep", "finetune", "advise"]}

#: the granularity paper's real label hierarchies (the transfer kind, so a store of its own): Fashion-MNIST, and in
#: the full run MNIST + Fashion + Animal (30 classes) -> its six "halves" groups as a variant
_MFA = {"source": ["trained:mnist_fashion_animal"], "target": ["mnist_fashion_animal"], "target_labels": ["coarse:halves"],
        "source_labels": ["fine", "coarse"] + [f"kmeans-aligned:{k}:halves" for k in (6, 12, 30)]
        + [f"kmeans:{k}" for k in (6, 30)] + ["random:30"]}
_GRANULARITY_REAL = {"quick": (SpecRun("granularity_real_quick.toml", store="_real"),),
                     "full": (SpecRun("granularity_real_full.toml", store="_real"),
                              SpecRun("granularity_real_full.toml", _MFA, "-mfa", store="_real"))}

#: paper -> mode -> sweeps, run in order into one store (or the run's own ``store``).
SPECS: dict[str, dict[str, tuple[SpecRun, ...]]] = {
    "fate": {
        "quick": (SpecRun("fate_theory.toml"), SpecRun("fate_quick.toml")),
        "full": (SpecRun("fate_theory.toml"), SpecRun("fate_full.toml")),
    },
    "fate-relu": {
        "quick": (SpecRun("fate_relu_quick.toml"), SpecRun("fate_relu_quick.toml", _SCRATCH, "-scratch")),
        "full": (SpecRun("fate_relu_full.toml"), SpecRun("fate_relu_full.toml", _SCRATCH, "-scratch")),
    },
    "transfer": {
        "quick": (SpecRun("transfer_cnn_quick.toml"), SpecRun("transfer_cnn_quick.toml", _BASELINES, "-baselines"),
                  SpecRun("transfer_mobilenet_quick.toml"),
                  SpecRun("transfer_mobilenet_quick.toml", {"protocol": ["linear_probe"], "k": None}, "-baselines")),
        "full": (SpecRun("transfer_cnn_full.toml"), SpecRun("transfer_cnn_full.toml", _BASELINES, "-baselines"),
                 SpecRun("transfer_mobilenet_full.toml"),
                 SpecRun("transfer_mobilenet_full.toml", _BASELINES, "-baselines")),
    },
    "defrost": {
        "quick": (SpecRun("defrost_quick.toml"),
                  SpecRun("defrost_quick.toml", {"reinit_unfrozen": [True], "k": [1, 2]}, "-reinit"),
                  SpecRun("defrost_quick.toml", {"protocol": ["scratch", "linear_probe", "defrost"], "k": None,
                                                 "reinit_unfrozen": None}, "-baselines"),
                  SpecRun("defrost_quick.toml", {"protocol": ["layerwise"], "k": None, "n_t": None,
                                                 "reinit_unfrozen": None}, "-layerwise"),
                  *_REAL["quick"]),
        "full": (SpecRun("defrost_full.toml"),
                 SpecRun("defrost_full.toml", {"reinit_unfrozen": [True], "k": [1, 2, 3]}, "-reinit"),
                 SpecRun("defrost_full.toml", {"protocol": ["scratch", "linear_probe", "defrost"], "k": None,
                                               "reinit_unfrozen": None}, "-baselines"),
                 SpecRun("defrost_full.toml", {"protocol": ["layerwise"], "k": None, "n_t": None,
                                               "reinit_unfrozen": None}, "-layerwise"),
                 *_REAL["full"]),
    },
    "granularity": {mode: (SpecRun(f"granularity_{mode}.toml"),
                           SpecRun(f"granularity_{mode}.toml", {"labels": ["none", "coarse", "fine"], "n_classes": None},
                                   "-main"),
                           SpecRun(f"granularity_{mode}.toml", {"labels": ["fine"], "n_classes": None,
                                                                 "split": splits}, "-split"),
                           SpecRun(f"granularity_{mode}.toml", {"labels": ["coarse", "fine"], "n_classes": None,
                                                                 "fine_probability": [0.25, 0.5]}, "-rarity"),
                           *_GRANULARITY_REAL[mode])
                    for mode, splits in (("quick", [2]), ("full", [2, 4]))},
    "transfer-scaling": {mode: (SpecRun(f"transfer_scaling_{mode}.toml", _PRETRAIN, "-pretrain"),
                                SpecRun(f"transfer_scaling_{mode}.toml"))
                         for mode in ("quick", "full")},
    "transferability": {mode: (SpecRun(f"transferability_{mode}.toml"),
                               SpecRun(f"transferability_{mode}.toml", pretrained, "-pretrained"),
                               SpecRun(f"transferability_{mode}.toml", {**_ADVISE_PAIRS, **advise}, "-advise"))
                        for mode, pretrained, advise in (
                            ("quick", {"source": _ZOO_PRETRAINED["source"][:1], "n": [50],
                                       "protocol": ["scores", "linear_probe"]},
                             {"n": [150], "target": _ADVISE_PAIRS["target"][:1]}),
                            ("full", {**_ZOO_PRETRAINED, "lr": [1e-4], "max_steps": [60]}, {"n": [500]}))},
}


@app.command("reproduce")
def reproduce_command(
    paper: str = typer.Argument(..., help="Which paper: fate, fate-relu, transfer, defrost, granularity, transfer-scaling, transferability."),
    quick: bool = typer.Option(False, "--quick", help="Small simulations (a few minutes on 2 cores)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: reproduce-<paper>)."),
    executor: str = typer.Option("process", help="serial | process | ray."),
    jobs: Optional[int] = typer.Option(None, min=1, help="Worker processes (default: CPU count)."),
    device: Optional[str] = typer.Option(None, help="fate only: where the simulations run, cpu | cuda | cuda:k."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Recompute cells stored as failed."),
) -> None:
    """Reproduce a paper's figures: run its sweeps, then write figures (PNG+SVG) and report.html."""
    from transferlab.cli.sweep_commands import _Progress
    from transferlab.report import write_store_report
    from transferlab.sweep import load_spec, run_sweep

    if paper not in SPECS:
        raise ConfigError(f"unknown paper {paper!r}; known: {', '.join(sorted(SPECS))}")
    out = out or Path(f"reproduce-{paper}")
    out.mkdir(parents=True, exist_ok=True)
    stores: dict[Path, Path] = {}  # store -> its report
    started = time.monotonic()
    failed = 0
    mode = "quick" if quick else "full"
    if mode not in SPECS[paper]:
        raise ConfigError(f"{paper} has no {mode} reproduction yet; run it with --quick")
    if device is not None and paper != "fate":
        raise ConfigError(f"--device applies to reproduce fate only, not {paper}")
    overrides = [] if device is None else [f"params.device={device}"]
    if device is not None:  # before any sweep runs, not at the first simulation spec
        from transferlab.protocols import resolve_device

        resolve_device(device)
    for run in SPECS[paper][mode]:
        path = out / run.out_name
        path.write_text(run.text(), encoding="utf-8")
        spec = load_spec(path, overrides=overrides)
        store = out / f"{paper}{run.store}.db"
        stores.setdefault(store, out / f"report{run.store}.html")
        with _Progress(spec.name or run.out_name) as progress:
            # the closed forms take milliseconds: a worker pool would only add its start-up
            serial = spec.params.get("mode") == "theory"
            summary = run_sweep(spec, store=store, executor="serial" if serial else executor, jobs=jobs,
                                retry_failed=retry_failed, progress=progress)
        typer.echo(summary.line())
        failed += summary.failed_in_store
    reports = [write_store_report(store, html, figures_dir=out / "figures") for store, html in stores.items()]
    if paper == "transferability":  # its tables also as CSV and markdown
        from transferlab.experiments.transferability import write_tables

        write_tables(out / "transferability.db", out)
    typer.echo(f"report: {'  '.join(map(str, reports))}  figures: {out / 'figures'}  "
               f"({time.monotonic() - started:.0f} s)")
    if failed:
        raise typer.Exit(1)
