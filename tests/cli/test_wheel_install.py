"""A plain install works: build the wheel, install it with ``constraints.txt`` and no extras into a
fresh virtual environment (pip's own configuration, as ``make install`` uses it), and run commands
that import the whole CLI. Catches a module the code imports but ``pyproject.toml`` does not declare
(``click`` once arrived only through ray)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=540, cwd=cwd, env=env)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_installs_and_runs_in_a_fresh_venv_without_extras(tmp_path):
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    built = _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("transferlab-*.whl")
    created = _run(sys.executable, "-m", "venv", venv)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    installed = _run(python, "-m", "pip", "install", "-q", "--no-compile", "-c", ROOT / "constraints.txt", wheel)
    assert installed.returncode == 0, installed.stderr[-2000:]
    # only what pyproject declares: no click, no extras
    absent = _run(python, "-c", "import importlib.util as u; print([m for m in ('click', 'ray', 'pyarrow') "
                                "if u.find_spec(m)])")
    assert absent.stdout.strip() == "[]", absent.stdout

    script = venv / "bin" / "transferlab"
    listed = _run(script, "experiments", cwd=tmp_path)
    assert listed.returncode == 0 and "toy" in listed.stdout and "fate" in listed.stdout, listed.stderr
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((50, 4)))
    np.save(tmp_path / "b.npy", rng.standard_normal((50, 4)))
    measured = _run(script, "measure", "cka_linear", "a.npy", "b.npy", cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    assert 0.0 <= float(measured.stdout) <= 1.0
    usage = _run(script, "run", cwd=tmp_path)
    assert usage.returncode == 2 and usage.stderr.startswith("error: ") and usage.stderr.count("\n") == 1
