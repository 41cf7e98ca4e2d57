"""Speed of the ``defrost`` kind's stacked path (issue 10's benchmark) and the cost of the full grid.

One (q, n_t) group of ``src/transferlab/specs/defrost_full.toml`` (default q = 0.5, n_t = 500): the cells
a sweep of that spec sends to one ``run_batch`` -- freeze k = 0..L with the source weights kept, times the
spec's replicates, ``instances`` seeds each (``--variants all`` adds the redrawn k = 1..L-1 and scratch,
the stack ``reproduce`` would form if they were one sweep) -- trained three ways:

a. stacked: ``DefrostExperiment().run_batch(cells)``: every network of every cell in ONE BlockNet
   (``stack_instances``), one ``fit`` with per-cell permutation groups and per-instance frozen blocks
   (the staged forward: each instance's frozen prefix cached, each block run on the instances that train it);
b. per cell: ``_run_cell`` for each cell: the cell's ``instances`` networks as one program, with
   frozen-prefix caching (the path before the stack existed);
c. one network at a time: for each cell and each instance, the same protocol (``protocol_row``) on a
   one-instance network and that instance's target samples: training each network separately.

All three include what a cell's computation includes (target samples drawn, networks built, trained,
tested); the source networks are trained (or loaded from the cache) once beforehand, untimed.

Two workloads (``--mode``): ``fixed`` (default) sets ``val_size = 0``, so no early stopping: every network
trains exactly max_steps (rounded up to whole epochs) in all three methods -- equal work, the ratio is
batching alone; ``early`` keeps the spec's validation split and early stopping, the sweep's real workload
(the stack runs until its last instance stops, separate networks stop on their own: the ratio is lower).
Both print the times, the ratios (target: a over c >= 5x) and, for ``fixed``, the FLOP rate of each
method's training steps (matmul FLOPs of one step counted by ``torch.utils.flop_counter``, times the
steps; evaluation not counted) against a float32 matmul ceiling measured in the same run. The stacked
and per-cell rows must agree (test errors within 2 test samples per instance, see the check below).

Full-grid estimate (``--estimate``): every batch of one (q, n_t) group in every sweep of the full
reproduction (kept and redrawn freeze stacks, scratch, probe, defrosting) is timed in the spec's real
workload at a few n_t (``--estimate-sizes``; one q: q changes the task, not the cost), interpolated in
log n_t to the other sizes, and the full reproduction's time on 2 worker processes is extrapolated
(printed with its assumptions).

Run (never beside another benchmark; other agents share the cores):
    flock /tmp/transferlab-bench.lock .venv/bin/python benchmarks/bench_defrost.py
    .venv/bin/python benchmarks/bench_defrost.py --quick      # seconds: a tiny network, a few steps
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

import transferlab.experiments.defrost as dx
from transferlab.experiments import get_experiment
from transferlab.experiments.base import Cell
from transferlab.experiments.transfer import _settings, protocol_row
from transferlab.nets import mlp
from transferlab.protocols.transfer import TargetData
from transferlab.sweep import load_spec
from transferlab.sweep.spec import cell_key
from _ceiling import matmul_ceiling  # benchmarks/_ceiling.py (the script's folder is on sys.path)

SPEC = Path(__file__).resolve().parent.parent / "src" / "transferlab" / "specs" / "defrost_full.toml"


def make_cells(params: dict[str, Any], q: float, n_t: int, variants: str, replicates: int, seed: int) -> list[Cell]:
    """The cells of one (q, n_t) group, keyed as a sweep keys them."""
    kind = get_experiment("defrost")
    L = params["depth"]
    points = [{"protocol": "freeze", "k": k, "reinit_unfrozen": False} for k in range(L + 1)]
    if variants == "all":
        points += [{"protocol": "freeze", "k": k, "reinit_unfrozen": True} for k in range(1, L)]
        points.append({"protocol": "scratch"})
    cells = []
    for point in points:
        config = dx.DefrostConfig(**{**params, "q": q, "n_t": n_t, **point})
        config_json = config.model_dump(mode="json")
        cells += [Cell(cell_key(kind, config_json, seed, r), config, seed, r) for r in range(replicates)]
    return cells


def prepare_sources(cells: list[Cell]) -> None:
    """Train (or load) every replicate's source network, untimed."""
    for cell in cells:
        dx._reference(cell, cell.config, dx._pair(cell, cell.config), "source")


def one_at_a_time(cells: list[Cell]) -> list[list[float]]:
    """Method c: every network alone (one-instance protocol runs); per cell its instances' test errors."""
    errors = []
    for cell in cells:
        cfg = cell.config
        pair = dx._pair(cell, cfg)
        state, _ = dx._reference(cell, cfg, pair, "source")
        data = dx._target_data(cell, cfg, pair)
        settings = _settings(cfg, cfg.n_t)
        out = []
        for i in range(cfg.instances):
            val = {} if data.x_val is None else {"x_val": data.x_val[i : i + 1], "y_val": data.y_val[i : i + 1]}
            single = TargetData(x_train=data.x_train[i : i + 1], y_train=data.y_train[i : i + 1], x_test=data.x_test,
                                y_test=data.y_test, n_classes=2, **val)
            row = protocol_row(cfg, dx._load(cfg, state, 1), single, settings, cell.torch_generator(stream=1 + i))
            out += row["test_error_instances"]
        errors.append(out)
    return errors


def step_flops(params: dict[str, Any], instances: int, k: int, batch: int) -> int:
    """Matmul FLOPs of one training step (forward from block k + backward) of ``instances`` stacked MLPs."""
    net = mlp((params["N"],), [params["width"]] * params["depth"], 2, instances=instances,
              activation=params.get("activation", "relu"), generator=torch.Generator().manual_seed(0))
    net.freeze_first(k)
    h = net.features(torch.zeros(batch, params["N"]), k).detach()
    y = torch.zeros(instances * batch, dtype=torch.int64)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(net.forward_from(h, k).flatten(0, 1), y).backward()
    return counter.get_total_flops()


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare(cells: list[Cell], params: dict[str, Any], mode: str, ceiling: float) -> float:
    """Time methods a, b, c on ``cells``; print the table; return the a-over-c ratio."""
    kind = get_experiment("defrost")
    stacked, t_a = timed(lambda: kind.run_batch(cells))
    per_cell, t_b = timed(lambda: [dx._run_cell(c) for c in cells])
    single, t_c = timed(lambda: one_at_a_time(cells))
    cfg = cells[0].config
    networks = sum(c.config.instances for c in cells)
    how = (f"no validation: every network trains {_settings(cfg, cfg.n_t).max_epochs} epochs" if mode == "fixed"
           else f"early stopping on {cfg.val_size} validation samples")
    print(f"\n## workload {mode!r}: {len(cells)} cells, {networks} networks ({how})")
    work: dict[str, float] = {}
    if mode == "fixed":
        settings = _settings(cfg, cfg.n_t)
        steps = settings.max_epochs * math.ceil(cfg.n_t / cfg.batch_size)
        ks = [c.config.k if c.config.protocol == "freeze" else 0 for c in cells]
        B = min(cfg.batch_size, cfg.n_t)
        # the stack's staged forward caches every instance's frozen prefix: the FLOPs of the cells apart
        work["b. per cell (instances batched)"] = steps * sum(step_flops(params, c.config.instances, k, B)
                                                              for c, k in zip(cells, ks, strict=True))
        work["a. stacked (one program)"] = work["b. per cell (instances batched)"]
        work["c. one network at a time"] = steps * sum(c.config.instances * step_flops(params, 1, k, B)
                                                       for c, k in zip(cells, ks, strict=True))
    times = {"a. stacked (one program)": t_a, "b. per cell (instances batched)": t_b, "c. one network at a time": t_c}
    print("\n| method | time (s) | speed-up vs c | speed-up vs b | training GFLOP/s (own FLOPs) | % of ceiling |")
    print("|---|---|---|---|---|---|")
    for name, t in times.items():
        rate = work[name] / t / 1e9 if name in work else math.nan
        print(f"| {name} | {t:.2f} | {t_c / t:.1f}x | {t_b / t:.1f}x | "
              f"{'-' if math.isnan(rate) else f'{rate:.2f}'} | {'-' if math.isnan(rate) else f'{100 * rate / ceiling:.1f}%'} |")
    if work:
        print(f"own FLOPs (training steps only, matmuls; all with frozen-prefix caching): a "
              f"{work['a. stacked (one program)'] / 1e9:.1f} G, b {work['b. per cell (instances batched)'] / 1e9:.1f} G, c "
              f"{work['c. one network at a time'] / 1e9:.1f} G")
    # agreement of a and b: the same networks, samples and minibatches; the stack recomputes the frozen
    # blocks on each minibatch where b caches them once, so float32 rounding differs (~1e-7 relative) and
    # Adam can amplify it along a training run: allow 2 of test_size samples per instance to change side
    diff = max(abs(x - y) for r, s in zip(stacked, per_cell, strict=True)
               for x, y in zip(r["test_error_instances"], s["test_error_instances"], strict=True))
    stops = sum(r["stop_epoch_instances"] != s["stop_epoch_instances"] for r, s in zip(stacked, per_cell, strict=True))
    print(f"a vs b: largest per-instance test-error difference {diff:.4f} (tolerance {2 / cfg.test_size:.4f}); cells "
          f"with different stop epochs: {stops} of {len(cells)}")
    mean_single = float(np.mean([e for errs in single for e in errs]))
    print(f"mean test error: a {np.mean([r['test_error'] for r in stacked]):.4f}, b "
          f"{np.mean([r['test_error'] for r in per_cell]):.4f}, c {mean_single:.4f} (c draws other initial heads and "
          "minibatches: equal in distribution only)")
    assert diff <= 2 / cfg.test_size + 1e-12, "the stacked and per-cell rows disagree"
    return t_c / t_a


def estimate(params: dict[str, Any], spec: Any, q: float, measured: list[int]) -> None:
    """Time of one (q, n_t) group's batches at the ``measured`` n_t (real workload), interpolated linearly in
    log n_t to the spec's other n_t, and the full reproduction's estimate."""
    axes = spec.axes()
    sizes, qs, L = axes["n_t"], axes["q"], params["depth"]
    print(f"\n## full-grid estimate ({spec.label}: q x n_t = {len(qs)} x {len(sizes)}, L = {L}, {spec.replicates} "
          "replicate(s), early stopping as in the spec)")
    print("\n| n_t | kept k = 0..L stack (s) | redrawn k = 1..L-1 stack (s) | scratch (s) | linear probe (s) | "
          "defrost (s) |")
    print("|---|---|---|---|---|---|")
    kind = get_experiment("defrost")
    costs: dict[int, float] = {}
    for n_t in measured:
        kept = make_cells(params, q, n_t, "kept", spec.replicates, spec.seed)
        every = make_cells(params, q, n_t, "all", spec.replicates, spec.seed)
        redrawn = [c for c in every if c.config.reinit_unfrozen]
        scratch = [c for c in every if c.config.protocol == "scratch"]
        base = {**params, "q": q, "n_t": n_t}
        probe = [Cell(f"{r:064x}", dx.DefrostConfig(**base, protocol="linear_probe"), spec.seed, r)
                 for r in range(spec.replicates)]
        defrost = [Cell(f"{r:064x}", dx.DefrostConfig(**base, protocol="defrost"), spec.seed, r)
                   for r in range(spec.replicates)]
        row = [timed(lambda cs=cs: kind.run_batch(cs))[1] for cs in (kept, redrawn, scratch)]
        row += [timed(lambda cs=cs: [dx._run_cell(c) for c in cs])[1] for cs in (probe, defrost)]
        costs[n_t] = sum(row)
        print(f"| {n_t} | " + " | ".join(f"{t:.1f}" for t in row) + " |")
    logs = np.log(sorted(costs))
    per_size = {n: float(np.interp(np.log(n), logs, [costs[m] for m in sorted(costs)])) for n in sizes}
    print("\nper (q, n_t) group, all sweeps (s; interpolated in log n_t where not measured): "
          + ", ".join(f"n_t = {n}: {t:.0f}{'' if n in costs else '*'}" for n, t in per_size.items()))
    total = len(qs) * sum(per_size.values())
    # a reference network (the source, and per q the layerwise kind's target-scratch one: same size and
    # training) trained afresh, and the layerwise measures once that reference is cached
    layer = Cell("f" * 64, dx.DefrostConfig(**{**params, "q": q, "protocol": "layerwise"}), spec.seed, 0)
    pair = dx._pair(layer, layer.config)
    t_reference = timed(lambda: dx._train_reference(layer, layer.config, pair, "source", layer.key))[1]
    dx._reference(layer, layer.config, pair, "target")
    t_measures = timed(lambda: kind.run_batch([layer]))[1]
    total += spec.replicates * (t_reference + len(qs) * (t_reference + t_measures))
    print(f"\nreference network (source per replicate; target-scratch per q and replicate): {t_reference:.1f} s; "
          f"layerwise measures: {t_measures:.1f} s per q and replicate")
    print(f"sum over the full reproduction: {total / 60:.1f} min of one core; on 2 worker processes (1 thread each) "
          f"about {total / 120:.1f} min if the groups share out evenly (the largest group, {max(sizes)} samples, "
          "bounds the tail). Measured on a shared machine: a load-free run is faster.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--q", type=float, default=0.5)
    parser.add_argument("--n-t", type=int, default=500)
    parser.add_argument("--variants", choices=("kept", "all"), default="kept")
    parser.add_argument("--mode", choices=("fixed", "early", "both"), default="both")
    parser.add_argument("--estimate", action="store_true", help="also time whole groups and estimate the full grid")
    parser.add_argument("--estimate-sizes", default="50,500,5000", help="n_t at which --estimate times the groups")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (sweep workers run 1 each)")
    parser.add_argument("--quick", action="store_true", help="a tiny network and step budget (a smoke test)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_spec(args.spec)
    params = dict(spec.params)
    if args.quick:
        params.update(D=10, N=30, depth=2, width=32, n_source=1000, source_epochs=3, instances=2, val_size=40,
                      test_size=300, max_steps=30, patience_steps=10, probe_size=100)
        args.n_t = 60
    ceiling = matmul_ceiling(torch.float32)
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], fused=True)  # untimed: the first one imports torch._dynamo
    print(f"# defrost benchmark: {spec.label}, q = {args.q}, n_t = {args.n_t}, L = {params['depth']} x {params['width']} "
          f"{params.get('activation', 'relu')}, D = {params['D']}, N = {params['N']}, {params['instances']} instances x "
          f"{spec.replicates} replicate(s), variants {args.variants!r}, float32, {args.threads} thread(s)")
    print(f"matmul ceiling (float32, 2000^3, {args.threads} thread(s)): {ceiling:.1f} GFLOP/s")
    modes = ("fixed", "early") if args.mode == "both" else (args.mode,)
    for mode in modes:
        run = {**params, "val_size": 0} if mode == "fixed" else params
        cells = make_cells(run, args.q, args.n_t, args.variants, spec.replicates, spec.seed)
        prepare_sources(cells)
        ratio = compare(cells, run, mode, ceiling)
        print(f"stacked over one network at a time ({mode}): {ratio:.1f}x (target >= 5x)")
    if args.estimate:
        estimate(params, spec, args.q, [int(n) for n in args.estimate_sizes.split(",")])


if __name__ == "__main__":
    main()
