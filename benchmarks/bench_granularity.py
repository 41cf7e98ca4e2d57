"""Speed of the ``granularity`` kind's batched programs (issue 11's benchmark).

The label-alignment comparison of a shipped spec (``granularity_quick.toml`` and/or ``granularity_full.toml``):
aligned, global and random labels at 4 classes -- label variants with equal tensor shapes and the same data,
which a sweep sends to one ``run_batch`` -- with the spec's ``instances`` seeds each, run two ways in one process:

a. batched: ``GranularityExperiment().run_batch(cells)``: the 3 variants x seeds as one program (one data
   draw, one stacked pretraining with the 3 variants' neurons side by side on each seed's inputs, one
   probe fit, one stacked fine-tuning, one evaluation pass);
b. one network at a time: the same cells with ``instances = 1``, one ``run_batch`` per (variant, seed):
   every network draws its data and is pretrained, probed, fine-tuned and evaluated on its own, by the
   same code (``experiments/granularity.py``, ``nets/patch_cnn.py``).

Both do the same work per network (same sample sizes, steps and protocols); b also draws the shared test
sets once per network, which is what running networks one at a time costs. Printed per specification: the
wall time of a and b, the ratio b / a (target >= 5x), and where the time went in each (seconds in data
drawing, pretraining, fine-tuning, the probe, feature passes for evaluation, alignment checkpoints, and the
rest), timed by thin wrappers around those functions (a few calls per cell, so no measurable overhead).

``--reproduce full|quick`` also runs the synthetic part of ``transferlab reproduce granularity [--quick]`` (every
granularity-kind sweep of the reproduction, in one temporary store, 2 worker processes, no report) and
prints its wall time: the full run's cost.

Run (never beside another benchmark; other agents share the cores):
    flock /tmp/transferlab-bench.lock .venv/bin/python benchmarks/bench_granularity.py --spec both --reproduce full
    .venv/bin/python benchmarks/bench_granularity.py --tiny        # seconds: a tiny task
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from transferlab.cli import reproduce
from transferlab.experiments import granularity
from transferlab.experiments.base import Cell
from transferlab.experiments.granularity import GranularityConfig, GranularityExperiment
from transferlab.sweep import load_spec, run_sweep

SPECS = Path(__file__).resolve().parent.parent / "src" / "transferlab" / "specs"
VARIANTS = (("aligned", 4), ("global", 4), ("random", 4))
PHASES = ("data", "pretraining", "fine-tuning", "probe", "features", "alignment")


def _cells(params: dict, instances: int, seed: int = 0) -> list[Cell]:
    return [Cell(key=f"{seed:032x}{i + 1:032x}", config=GranularityConfig(**{**params, "instances": instances,
                                                                           "labels": labels, "n_classes": n}))
            for i, (labels, n) in enumerate(VARIANTS)]


@contextmanager
def _phases(totals: dict[str, float]) -> Iterator[None]:
    """Add the seconds spent in each phase's function to ``totals`` while inside the block."""
    patch_cnn = sys.modules["transferlab.nets.patch_cnn"]  # the module (transferlab.nets re-exports a function)
    protocols = sys.modules["transferlab.protocols"]
    targets: list[tuple[Any, str, Callable[[tuple, dict], str]]] = [
        (granularity, "_draw", lambda a, k: "data"),
        (patch_cnn, "patch_gd", lambda a, k: "fine-tuning" if k.get("head") is not None else "pretraining"),
        (protocols, "linear_probe", lambda a, k: "probe"),
        (patch_cnn, "patch_pool", lambda a, k: "features"),
        (patch_cnn, "neuron_feature_cosines", lambda a, k: "alignment"),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in targets]

    def timed(function: Callable[..., Any], phase: Callable[[tuple, dict], str]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[phase(args, kwargs)] += time.perf_counter() - start
        return wrapper

    try:
        for (module, name, function), (_, _, phase) in zip(saved, targets, strict=True):
            setattr(module, name, timed(function, phase))
        yield
    finally:
        for module, name, function in saved:
            setattr(module, name, function)


def _compare(spec: str, params: dict) -> None:
    seeds = int(params.pop("instances"))
    exp = GranularityExperiment()
    exp.run_batch(_cells({**params, "epochs": 2, "checkpoints": 1, "target_epochs": 1}, 1))  # warm-up (imports)
    phases: dict[str, dict[str, float]] = {"a": defaultdict(float), "b": defaultdict(float)}

    start = time.perf_counter()
    with _phases(phases["a"]):
        batched = exp.run_batch(_cells(params, seeds))
    t_batched = time.perf_counter() - start

    start = time.perf_counter()
    single = []
    with _phases(phases["b"]):
        for seed in range(seeds):
            single += [exp.run_batch([cell])[0] for cell in _cells(params, 1, seed)]
    t_single = time.perf_counter() - start

    networks = len(VARIANTS) * seeds
    print(f"granularity_{spec}: {len(VARIANTS)} label variants x {seeds} seeds = {networks} networks "
          f"(d = {params['d']}, P = {params['patches']}, K = 4 x {params['width']} neurons, "
          f"n = {params['n_pretrain']}, "
          f"{params['epochs']} + {params['target_epochs']} steps, probe on {params['n_target']}, "
          f"2 x {params['test_size']} test samples)")
    print(f"  a. batched (one program)         {t_batched:8.2f} s   ({1e3 * t_batched / networks:6.1f} ms per network)")
    print(f"  b. one network at a time         {t_single:8.2f} s   ({1e3 * t_single / networks:6.1f} ms per network)")
    print(f"  speed-up b / a: {t_single / t_batched:.1f}x (target >= 5x)")
    for path, total in (("a", t_batched), ("b", t_single)):
        parts = phases[path]
        shown = "  ".join(f"{name} {parts[name]:.2f}" for name in PHASES)
        print(f"  where {path}'s time went (s): {shown}  rest {total - sum(parts.values()):.2f}")
    mean_batched = sum(r["probe_hard_error"] for r in batched) / len(batched)
    mean_single = sum(r["probe_hard_error"] for r in single) / len(single)
    print(f"  (sanity: mean probe hard error {mean_batched:.3f} batched, {mean_single:.3f} one at a time; "
          "different data draws, so equal only within noise)")


def _reproduce(mode: str) -> None:
    """Wall time of every granularity-kind sweep of ``transferlab reproduce granularity`` (2 workers)."""
    runs = [run for run in reproduce.SPECS["granularity"][mode] if not run.store]  # the synthetic store
    with tempfile.TemporaryDirectory(prefix="bench_granularity_") as tmp:
        start = time.perf_counter()
        cells = failed = 0
        for run in runs:
            path = Path(tmp) / run.out_name
            path.write_text(run.text(), encoding="utf-8")
            summary = run_sweep(load_spec(path), store=Path(tmp) / "granularity.db", executor="process", jobs=2)
            cells += summary.cells
            failed += summary.failed
        wall = time.perf_counter() - start
    print(f"reproduce granularity{' --quick' if mode == 'quick' else ''}, synthetic part ({len(runs)} sweeps, "
          f"{cells} cells, {failed} failed, 2 worker processes, no report): {wall:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", choices=("quick", "full", "both"), default="quick")
    parser.add_argument("--tiny", action="store_true", help="a tiny task, to check the script runs")
    parser.add_argument("--reproduce", choices=("quick", "full"), help="also time the synthetic reproduction")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for spec in ("quick", "full") if args.spec == "both" else (args.spec,):
        params = dict(load_spec(SPECS / f"granularity_{spec}.toml").params)
        if args.tiny:
            params.update(d=12, n_subclasses=3, patches=4, common_patches=1, fine_patches=1, n_pretrain=60,
                          epochs=10, checkpoints=2, n_target=40, target_epochs=5, test_size=50, instances=2)
        _compare(spec, params)
    if args.reproduce and not args.tiny:
        _reproduce(args.reproduce)


if __name__ == "__main__":
    main()
