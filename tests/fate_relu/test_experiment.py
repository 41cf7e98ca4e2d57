"""The ``fate_relu`` kind end to end through the real CLI on a tiny grid, its analysis and figures, and bad
config values refused with one clear line (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from transferlab.experiments import get_experiment
from transferlab.experiments.fate_relu import KERNEL_AGREEMENT_THRESHOLD
from transferlab.sweep import load_table

SCRIPT = Path(sys.executable).with_name("transferlab")

TINY = """experiment = "fate_relu"
seed = 2
name = "tiny"

[params]
d = 8
m_star = 8
m = 48
instances = 2
pretrain_steps = 3000
scratch_steps = 2000
probe_size = 100
{extra}
[grid]
{grid}
"""


def run_cli(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_tiny_grid_end_to_end(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    for grid in ('protocol = ["transfer"]\nmu = [0.0, 0.5]\nn = [8, 32]', 'protocol = ["scratch"]\nn = [8, 16, 32]'):
        (tmp_path / "spec.toml").write_text(TINY.format(extra="", grid=grid))
        proc = run_cli("run", "spec.toml", "--store", store, "--executor", "serial", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    exp, table = load_table(store)
    assert len(table.rows) == 7 and not table.failed
    results = exp.analyze(table)
    (s,) = results.data["settings"]
    # every flag counted; at this size pretraining on a uniform-weight teacher can stall on a plateau
    # (docs/models/fate_relu.md), so the count is checked against the flags, not assumed zero
    flags = {p: [ok for r in table.rows if r["protocol"] == p for ok in r["converged"]]
             for p in ("transfer", "scratch")}
    assert s["dropped"] == {p: flags[p].count(False) for p in flags}
    assert s["total"] == {p: len(flags[p]) for p in flags}
    # the power law is fitted to the three scratch means; error falls with n
    fit = s["fit"]
    assert fit["n"] == [8, 16, 32] and fit["b"] > 0 and fit["b_low"] <= fit["b"] <= fit["b_high"]
    assert np.all(np.diff(fit["mean"]) < 0)
    # the scratch table's local exponents: between each n and the previous one, from the same means; none first
    local = {r["n"]: r.get("local_b") for r in s["scratch_table"]}
    means = dict(zip(fit["n"], fit["mean"], strict=True))
    assert local[8] is None
    for lo, hi in ((8, 16), (16, 32)):
        assert local[hi] == pytest.approx(-np.log(means[hi] / means[lo]) / np.log(hi / lo), rel=1e-12)
    # floors: zero at mu = 0 (source = target), positive at mu = 0.5; boundary only where the floor is positive
    k0, k5 = s["kernel"]
    assert k0["floor"] == pytest.approx(0.0, abs=1e-12) and k0["n_star"] is None
    assert k5["floor"] > 0 and k5["n_star"] == pytest.approx((fit["A"] / k5["floor"]) ** (1 / fit["b"]), rel=1e-12)
    # T is paired per instance: R_sc(n) - R_transfer(mu, n) over the (replicate, instance) converged in both
    t = next(r for r in s["transfer_table"] if (r["mu"], r["n"]) == (0.5, 32))
    sc = next(r for r in table.rows if r["protocol"] == "scratch" and r["n"] == 32)
    tr = next(r for r in table.rows if r["protocol"] == "transfer" and (r["mu"], r["n"]) == (0.5, 32))
    both = np.array(sc["converged"]) & np.array(tr["converged"])
    assert both.any() and t["paired_instances"] == both.sum()
    diff = np.subtract(sc["risk_scratch_instances"], tr["risk_transfer_instances"])[both]
    assert t["T"] == pytest.approx(diff.mean(), rel=1e-12)  # the same float64 numbers averaged
    cka = np.array(tr["kernel_cka_instances"])[np.array(tr["converged"])]
    assert k5["cka"] == pytest.approx(cka.mean(), rel=1e-12)
    assert k5["agrees"] == (cka.mean() >= KERNEL_AGREEMENT_THRESHOLD)
    figures, captions = exp.figures(results), exp.figure_captions(results)
    assert set(figures) == set(captions) == {"fate_relu_errors", "fate_relu_phase", "fate_relu_gram", "fate_relu_floor"}
    assert all(len(c) > 100 for c in captions.values())


def test_unconverged_instances_are_dropped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(TINY.format(extra="pretrain_steps = 3\n", grid="mu = [0.5]\nn = [8]")
                                        .replace("pretrain_steps = 3000\n", ""))
    proc = run_cli("run", "spec.toml", "--store", tmp_path / "s.db", "--executor", "serial", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    exp, table = load_table(tmp_path / "s.db")
    assert table.rows[0]["converged"] == [False, False] and table.rows[0]["risk_transfer"] is None
    results = exp.analyze(table)
    (s,) = results.data["settings"]
    assert s["dropped"]["transfer"] == 2 and s["transfer_table"][0]["instances"] == 0
    # no converged pretraining, so no kernel agreement: None and said in words, never a NaN in the report
    (kernel,) = s["kernel"]
    assert kernel["cka"] is None and kernel["cka_se"] is None and kernel["agrees"] is False
    assert "n/a (no pretraining converged)" in results.summary["kernel agreement at mu = 0.5"]
    assert "nan" not in str(results.summary).lower()
    assert "fate_relu_gram" in exp.figures(results)  # the figure still draws, with the agreement marked n/a


@pytest.mark.parametrize(("params", "grid", "fragment"), [
    ("", 'protocol = ["transfer"]\nn = [8]', "protocol 'transfer' needs mu"),
    ("", 'protocol = ["scratch"]\nmu = [0.5]\nn = [8]', "protocol 'scratch' never sees the source: drop mu"),
    ("", "mu = [0.95]\nn = [8]", "removes all m_star = 8 teacher neurons"),
    ("", "mu = [1.5]\nn = [8]", "less than 1"),
    ("lr = -1.0\n", "mu = [0.5]\nn = [8]", "lr"),
    ("", "mu = [0.5]\nn = [0]", "greater than or equal to 1"),
    ('teacher_weights = "gauss"\n', "mu = [0.5]\nn = [8]", "teacher_weights"),
])
def test_bad_config_values_are_refused_with_one_line(tmp_path: Path, params: str, grid: str, fragment: str) -> None:
    (tmp_path / "spec.toml").write_text(TINY.format(extra=params, grid=grid))
    proc = run_cli("run", "spec.toml", "--store", tmp_path / "s.db", "--executor", "serial", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_kind_is_registered() -> None:
    assert get_experiment("fate_relu").name == "fate_relu"


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_shipped_specs_expand_with_their_scratch_variant(mode: str, tmp_path: Path) -> None:
    from transferlab.cli.reproduce import SPECS
    from transferlab.sweep import expand_cells, load_spec

    counts = []
    for run in SPECS["fate-relu"][mode]:
        (tmp_path / run.out_name).write_text(run.text())
        cells = expand_cells(load_spec(tmp_path / run.out_name))
        assert {c.cell.config.protocol for c in cells} == {"scratch" if run.suffix else "transfer"}
        counts.append(len(cells))
    assert counts == ([15, 5] if mode == "quick" else [30, 6])
