"""The command line through its real entry point (the installed ``transferlab`` script, a
subprocess): every usage error is one line ``error: ...`` and exit code 2; ``--version``; shell
completion; ``measure`` options, extra arrays and unreadable files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import transferlab

SCRIPT = Path(sys.executable).with_name("transferlab")


def transferlab_cli(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None
                    ) -> subprocess.CompletedProcess[str]:
    """Run the installed ``transferlab`` script; returns the finished process (text output)."""
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


USAGE_ERRORS = [  # one of each class typer raises: unknown option, unknown command, missing argument, bad value
    (["frobnicate"], "No such command 'frobnicate'"),
    (["run"], "Missing argument 'SPEC'"),
    (["run", "--bogus", "x"], "No such option: --bogus"),
    (["run", "x.toml", "--jobs", "0"], "Invalid value for '--jobs'"),
    (["run", "x.toml", "--threads", "0"], "Invalid value for '--threads'"),
    (["run", "x.toml", "--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["run", "x.toml", "--max-cells", "0"], "Invalid value for '--max-cells'"),
    (["fit-transfer", "x.csv", "--n-boot", "abc"], "Invalid value for '--n-boot'"),
    (["fit-transfer", "x.csv", "--n-boot", "-5"], "Invalid value for '--n-boot'"),
    (["status"], "Missing argument 'STORE'"),
    (["measure", "--lis"], "No such option: --lis"),
    (["export", "x.db", "--format"], "Option '--format' requires an argument"),
]


@pytest.mark.parametrize(("args", "fragment"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, args, fragment):
    proc = transferlab_cli(*args, cwd=tmp_path)
    assert_one_line_error(proc, fragment)
    assert "--help" in proc.stderr  # says where the usage is explained


def test_python_dash_m_is_the_same_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "transferlab.cli", "run"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert_one_line_error(proc, "Missing argument 'SPEC'")


def test_version_and_bare_command():
    proc = transferlab_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"transferlab {transferlab.__version__}"
    bare = transferlab_cli()
    assert bare.returncode == 0 and "Usage: transferlab" in bare.stdout and "measure" in bare.stdout


def test_shell_completion_is_enabled():
    assert "--install-completion" in transferlab_cli("--help").stdout
    script = transferlab_cli("--show-completion", "bash")
    assert script.returncode == 0 and "_TRANSFERLAB_COMPLETE" in script.stdout
    env = {**os.environ, "_TRANSFERLAB_COMPLETE": "complete_bash", "COMP_WORDS": "transferlab fit-tr", "COMP_CWORD": "1"}
    proc = transferlab_cli(env=env)
    assert proc.returncode == 0 and proc.stdout.split() == ["fit-transfer"]


@pytest.fixture
def arrays(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((60, 5)))
    np.save(tmp_path / "b.npy", rng.standard_normal((60, 5)))
    np.save(tmp_path / "y.npy", np.arange(60) % 3)
    np.savez(tmp_path / "one.npz", x=np.load(tmp_path / "a.npy"))
    np.savez(tmp_path / "two.npz", x=np.zeros((3, 3)), z=np.ones(3))
    np.save(tmp_path / "objects.npy", np.array([{}, 1], dtype=object), allow_pickle=True)
    (tmp_path / "text.npy").write_text("1 2 3\n4 5 6\n", encoding="utf-8")
    return tmp_path


def test_measure_takes_its_parameters(arrays):
    from transferlab.measures import knn_overlap, mle_dimension

    a, b = np.load(arrays / "a.npy"), np.load(arrays / "b.npy")
    proc = transferlab_cli("measure", "knn_overlap", "a.npy", "b.npy", "--param", "k=5", cwd=arrays)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) == pytest.approx(knn_overlap(a, b, k=5), rel=1e-9)
    assert float(proc.stdout) != pytest.approx(knn_overlap(a, b), rel=1e-9)  # the parameter took effect
    proc = transferlab_cli("measure", "mle_dimension", "a.npy", "-p", "k=8", "-p", "duplicates=raise", cwd=arrays)
    assert proc.returncode == 0 and float(proc.stdout) == pytest.approx(mle_dimension(a, k=8), rel=1e-9)
    listing = transferlab_cli("measure", "--list").stdout
    assert "--param: k=20" in listing


@pytest.mark.parametrize(("args", "fragment"), [
    (["twonn_dimension", "a.npy", "b.npy"], "takes one array A.npy and nothing else; got a second array b.npy"),
    (["twonn_dimension", "a.npy", "--labels", "y.npy"], "takes no --labels"),
    (["cka_linear", "a.npy", "b.npy", "--labels", "y.npy"], "takes no --labels"),
    (["logme_score", "a.npy", "b.npy", "--labels", "y.npy"], "got a second array b.npy"),
    (["knn_overlap", "a.npy", "b.npy", "--param", "q=3"], "has no parameter 'q'; its parameters: k"),
    (["cka_rbf", "a.npy", "b.npy", "--param", "kernel=linear"], "has no parameter 'kernel'"),
    (["knn_overlap", "a.npy", "b.npy", "--param", "k"], "expected NAME=VALUE"),
    (["knn_overlap", "a.npy", "b.npy", "--param", "k=abc"], "k must be an integer"),
    (["twonn_dimension", "text.npy"], "text.npy is not a NumPy .npy file"),
    (["twonn_dimension", "two.npz"], "two.npz is a .npz archive of 2 arrays (x, z)"),
    (["twonn_dimension", "objects.npy"], "objects.npy holds Python objects"),
])
def test_measure_refuses_what_it_would_ignore_or_misread(arrays, args, fragment):
    proc = transferlab_cli("measure", *args, cwd=arrays)
    assert_one_line_error(proc, fragment)
    assert "contains pickled" not in proc.stderr and "dtype <U" not in proc.stderr


def test_measure_reads_a_single_array_npz(arrays):
    npz = transferlab_cli("measure", "twonn_dimension", "one.npz", cwd=arrays)
    npy = transferlab_cli("measure", "twonn_dimension", "a.npy", cwd=arrays)
    assert npz.returncode == 0 and float(npz.stdout) == pytest.approx(float(npy.stdout), rel=1e-12)
