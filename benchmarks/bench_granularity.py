"""Speed of the ``granularity`` kind's batched pretraining (issue 11's benchmark).

The label-alignment comparison of a shipped spec (``granularity_quick.toml`` by default, ``--spec full``
for ``granularity_full.toml``): aligned, global and random labels at 4 classes -- label variants with equal
tensor shapes, which a sweep sends to one ``run_batch`` -- with the spec's ``instances`` seeds each, run two ways:

a. batched: ``GranularityExperiment().run_batch(cells)``: all variants x seeds pretrained as ONE stacked
   patch network (one ``fit``), then each cell's probe and fine-tuning batched over its seeds;
b. one network at a time: the same cells with ``instances = 1``, one ``run_batch`` per (variant, seed):
   every network pretrained, probed and fine-tuned on its own.

Both do the same work per network (same sample sizes, steps and protocols; b's data are drawn per
one-instance cell, which costs the same). Printed: the times, the ratio b / a (target >= 5x) and the
seconds per cell of the batched path, and an estimate of the whole reproduction's time on 2 worker
processes: the batched seconds per pretraining class (the three cells have K = 4 each) times the sum of K
over every cell of ``transferlab reproduce granularity [--quick]`` (a cell's cost grows about linearly
with its K m neurons), halved for 2 workers -- an extrapolation, not a measurement.

Run (never beside another benchmark; other agents share the cores):
    flock /tmp/transferlab-bench.lock .venv/bin/python benchmarks/bench_granularity.py
    .venv/bin/python benchmarks/bench_granularity.py --tiny        # seconds: a tiny task
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from transferlab.cli import reproduce
from transferlab.experiments.base import Cell
from transferlab.experiments.granularity import GranularityConfig, GranularityExperiment
from transferlab.sweep import expand_cells, load_spec

SPECS = Path(__file__).resolve().parent.parent / "src" / "transferlab" / "specs"
VARIANTS = (("aligned", 4), ("global", 4), ("random", 4))


def _cells(params: dict, instances: int) -> list[Cell]:
    return [Cell(key=f"{i + 1:064x}", config=GranularityConfig(**{**params, "instances": instances, "labels": labels,
                                                                  "n_classes": n}))
            for i, (labels, n) in enumerate(VARIANTS)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", choices=("quick", "full"), default="quick")
    parser.add_argument("--tiny", action="store_true", help="a tiny task, to check the script runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = dict(load_spec(SPECS / f"granularity_{args.spec}.toml").params)
    if args.tiny:
        params.update(d=12, n_subclasses=3, patches=4, common_patches=1, fine_patches=1, n_pretrain=60, epochs=10,
                      checkpoints=2, n_target=40, target_epochs=5, test_size=50, instances=2)
    seeds = int(params.pop("instances"))
    exp = GranularityExperiment()
    exp.run_batch(_cells({**params, "epochs": 2, "checkpoints": 1, "target_epochs": 1}, 1))  # warm-up (imports)

    start = time.perf_counter()
    batched = exp.run_batch(_cells(params, seeds))
    t_batched = time.perf_counter() - start

    start = time.perf_counter()
    single = []
    for seed in range(seeds):
        cells = _cells(params, 1)
        single += [exp.run_batch([Cell(key=f"{seed:032x}{c.key[32:]}", config=c.config)])[0] for c in cells]
    t_single = time.perf_counter() - start

    networks = len(VARIANTS) * seeds
    print(f"granularity_{args.spec}: {len(VARIANTS)} label variants x {seeds} seeds = {networks} networks "
          f"(d = {params['d']}, P = {params['patches']}, K = 4 x {params['width']} neurons, n = {params['n_pretrain']}, "
          f"{params['epochs']} + {params['target_epochs']} steps)")
    print(f"  a. batched (one stacked pretraining)   {t_batched:8.2f} s   ({t_batched / len(VARIANTS):.2f} s per cell)")
    print(f"  b. one network at a time               {t_single:8.2f} s")
    print(f"  speed-up b / a: {t_single / t_batched:.1f}x (target >= 5x)")
    if not args.tiny:
        classes = 0
        for run in reproduce.SPECS["granularity"][args.spec]:
            path = Path(f"/tmp/bench_granularity_{run.out_name}")
            path.write_text(run.text(), encoding="utf-8")
            classes += sum(p.cell.config.pretrain_classes for p in expand_cells(load_spec(path)))
            path.unlink()
        estimate = t_batched / (4 * len(VARIANTS)) * classes / 2
        print(f"  estimated reproduce granularity{' --quick' if args.spec == 'quick' else ''}: {classes} pretraining "
              f"classes in all cells -> about {estimate / 60:.1f} min on 2 workers (extrapolated)")
    mean_batched = sum(r["probe_hard_error"] for r in batched) / len(batched)
    mean_single = sum(r["probe_hard_error"] for r in single) / len(single)
    print(f"  (sanity: mean probe hard error {mean_batched:.3f} batched, {mean_single:.3f} one at a time; "
          "different seeds, so equal only within noise)")


if __name__ == "__main__":
    main()
