"""Engine overhead and parallel speed-up (issue 2's benchmark).

1. Per-cell driver overhead: a 10,000-cell sweep of the trivial ``toy`` kind, serial executor, store
   writes included, against the bare cost of calling ``run_batch`` on the same cells in the same run.
   Target: < 2 ms per cell.
2. Speed-up of the ``process`` executor with 2 workers over ``serial`` on a CPU-bound toy sweep
   (each cell does ``work`` 64x64 matrix products). Target: >= 1.8x on 2 cores.

Run: ``.venv/bin/python benchmarks/bench_engine.py`` (never beside another benchmark).
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread everywhere, set before numpy loads: the serial baseline then uses one core,
# as each process worker does, and the ratio measures parallelism, not BLAS threading.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from transferlab.experiments import get_experiment  # noqa: E402
from transferlab.sweep import expand_cells, run_sweep, spec_from_dict  # noqa: E402


def overhead(cells: int, workdir: Path) -> dict[str, float]:
    spec = spec_from_dict({"experiment": "toy", "params": {"n": 2}, "grid": {"mu": {"range": [0, cells, 1]}}})
    kind = get_experiment("toy")
    planned = expand_cells(spec)
    start = time.perf_counter()
    for i in range(0, len(planned), 64):
        kind.run_batch([p.cell for p in planned[i : i + 64]])
    bare = time.perf_counter() - start
    start = time.perf_counter()
    summary = run_sweep(spec, workdir / "overhead.db", executor="serial")
    engine = time.perf_counter() - start
    assert summary.ok == cells, summary
    start = time.perf_counter()
    resumed = run_sweep(spec, workdir / "overhead.db", executor="serial")
    resume = time.perf_counter() - start
    assert resumed.skipped == cells
    return {"cells": cells, "bare_s": bare, "engine_s": engine, "resume_s": resume,
            "overhead_ms_per_cell": 1e3 * (engine - bare) / cells, "resume_ms_per_cell": 1e3 * resume / cells}


def speedup(cells: int, work: int, workdir: Path) -> dict[str, float]:
    spec = spec_from_dict({"experiment": "toy", "params": {"n": 10, "work": work},
                           "grid": {"mu": {"range": [0, cells, 1]}}, "run": {"batch_size": 4}})
    times = {}
    for executor in ("serial", "process"):
        start = time.perf_counter()
        summary = run_sweep(spec, workdir / f"speedup-{executor}.db", executor=executor, jobs=2)
        times[executor] = time.perf_counter() - start
        assert summary.ok == cells, summary
    return {"cells": cells, "work": work, "serial_s": times["serial"], "process_s": times["process"],
            "speedup": times["serial"] / times["process"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--cpu-cells", type=int, default=120)
    parser.add_argument("--work", type=int, default=1500, help="64x64 products per CPU-bound cell")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"overhead": overhead(args.cells, Path(tmp)), "speedup": speedup(args.cpu_cells, args.work, Path(tmp))}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    o, s = result["overhead"], result["speedup"]
    print(f"driver overhead: {o['cells']} cells, engine {o['engine_s']:.2f} s vs bare run_batch {o['bare_s']:.2f} s "
          f"-> {o['overhead_ms_per_cell']:.3f} ms/cell (target < 2); resume of a finished sweep "
          f"{o['resume_ms_per_cell']:.3f} ms/cell")
    print(f"process x2 vs serial: {s['cells']} CPU-bound cells, serial {s['serial_s']:.2f} s, "
          f"process {s['process_s']:.2f} s -> speed-up {s['speedup']:.2f}x (target >= 1.8)")


if __name__ == "__main__":
    main()
