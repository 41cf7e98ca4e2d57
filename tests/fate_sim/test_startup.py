"""Start-up cost of the command line: ``transferlab --help`` and ``run`` import no heavy library
(torch, matplotlib, scipy, pandas, ray) that the command does not need, and a tiny sweep runs without
a worker pool unless asked for one. Each case runs in a fresh interpreter (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from transferlab.sweep import open_store

HEAVY = ("torch", "matplotlib", "scipy", "pandas", "ray")
_PROBE = """
import json, sys
from transferlab.cli import main
code = main({args!r})
threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
print(json.dumps({{"code": code, "heavy": sorted({{m.split(".")[0] for m in sys.modules}} & {heavy!r}),
                  "threads": threads}}))
"""
FATE_SIMULATE = """experiment = "fate"
[params]
d = 10
instances = 2
mode = "simulate"
theta = 0.4
sigma = 0.1
max_steps = 3000
[grid]
gamma = [0.5, 1.5]
"""
TOY = """experiment = "toy"
[params]
n = 20
[grid]
mu = [0.0, 1.0, 2.0]
{extra}"""


def _probe(args: list[str], cwd: Path) -> dict:
    """Run ``transferlab ARGS`` in a fresh interpreter (no thread variables set): its exit code, the
    heavy top-level modules it imported and torch's thread count (None without torch)."""
    thread_vars = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in thread_vars}
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(args=args, heavy=set(HEAVY))], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _imports(args: list[str], cwd: Path) -> tuple[int, set[str]]:
    report = _probe(args, cwd)
    return report["code"], set(report["heavy"])


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["reproduce", "--help"]])
def test_help_imports_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    assert _imports(args, tmp_path)[1] == set()


def test_run_imports_only_what_the_cells_need(tmp_path: Path) -> None:
    (tmp_path / "toy.toml").write_text(TOY.format(extra=""))
    assert _imports(["run", "toy.toml"], tmp_path) == (0, set())
    (tmp_path / "fate.toml").write_text(FATE_SIMULATE)
    # simulations need torch; the closed forms (scipy), figures (matplotlib), pandas and ray stay unloaded;
    # a serial run keeps torch to --threads (default 1) threads, like a worker of the process executor
    report = _probe(["run", "fate.toml", "--store", "threads.db"], tmp_path)
    assert (report["code"], set(report["heavy"]), report["threads"]) == (0, {"torch"}, 1)
    report = _probe(["run", "fate.toml", "--store", "threads2.db", "--threads", "2"], tmp_path)
    assert report["threads"] == 2


def test_a_tiny_sweep_runs_without_a_worker_pool(tmp_path: Path) -> None:
    """At most 4 cells and no executor named: serial. A spec or flag naming one is obeyed, and so is a worker
    count (--jobs, or [run] jobs in the spec): it asks for a pool."""
    (tmp_path / "tiny.toml").write_text(TOY.format(extra=""))
    (tmp_path / "pool.toml").write_text(TOY.format(extra='[run]\nexecutor = "process"\njobs = 1\n'))
    (tmp_path / "jobs.toml").write_text(TOY.format(extra="[run]\njobs = 1\n"))
    script = Path(sys.executable).with_name("transferlab")
    for spec, extra in (("tiny.toml", []), ("pool.toml", []), ("tiny.toml", ["--executor", "process", "--jobs", "1",
                                                                           "--force"]),
                        ("tiny.toml", ["--jobs", "1", "--force"]), ("jobs.toml", ["--force"])):
        proc = subprocess.run([str(script), "run", spec, "--store", "runs.db", *extra], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    with open_store(tmp_path / "runs.db") as store:
        assert [r["executor"] for r in store.runs()] == ["serial", "process", "process", "process", "process"]
