"""Device plumbing of the fate simulations: ``simulate_fate(device=...)``, ``FateConfig.device`` (not
part of a cell's identity) and ``transferlab run/reproduce --device`` through the real CLI. Without a
GPU, asking for CUDA is one clear error (exit 2); with one, CUDA must reproduce the CPU numbers."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from transferlab.errors import ConfigError
from transferlab.protocols import resolve_device, simulate_fate
from transferlab.sweep import expand_cells, spec_from_dict

from .conftest import generator

SCRIPT = Path(sys.executable).with_name("transferlab")
HAS_CUDA = torch.cuda.is_available()
KWARGS = dict(d=20, n=10, layers=2, thetas=np.array([math.pi / 4]), sigmas=np.array([0.2]), instances=3)
SPEC = """experiment = "fate"
[params]
d = 12
layers = 2
instances = 2
mode = "simulate"
theta = 0.5
gamma = 0.5
max_steps = 2000
"""


def test_explicit_cpu_device_gives_the_default_numbers() -> None:
    default = simulate_fate(generators=[generator(4)], **KWARGS)
    for device in ("cpu", torch.device("cpu")):
        explicit, training = simulate_fate(generators=[generator(4)], device=device, return_training=True, **KWARGS)
        for protocol, risks in default.items():
            # the same computation on the same device: equal to the last bit (tolerance for form's sake)
            np.testing.assert_allclose(explicit[protocol], risks, rtol=0, atol=1e-15)
        assert all(r.steps.device.type == "cpu" for r in training.values())


def test_resolve_device_names_what_is_wrong() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    for bad, fragment in (("tpu", "unknown device 'tpu'"), ("xla", "'xla' is not supported")):
        with pytest.raises(ConfigError, match=fragment):
            resolve_device(bad)
    if not HAS_CUDA:
        with pytest.raises(ConfigError, match="device 'cuda' requested, but no CUDA device is available"):
            resolve_device("cuda")
    else:
        assert resolve_device("cuda").type == "cuda"
        with pytest.raises(ConfigError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_device_is_not_part_of_a_cells_identity() -> None:
    raw = {"experiment": "fate", "params": {"d": 12, "mode": "simulate", "theta": 0.5, "gamma": 0.5}}
    keys = {p.cell.key for p in expand_cells(spec_from_dict(raw))}
    raw["params"]["device"] = "cpu"
    planned = expand_cells(spec_from_dict(raw))
    assert {p.cell.key for p in planned} == keys
    assert "device" not in planned[0].config_json


def _run(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


def _one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


def test_cli_device_flag(tmp_path: Path) -> None:
    """``run --device``: a bad name and (without a GPU) CUDA are one-line errors before any store is
    made; ``--device cpu`` runs; with a GPU, CUDA gives the CPU run's risks."""
    (tmp_path / "tiny.toml").write_text(SPEC)
    _one_line_error(_run("run", "tiny.toml", "--device", "tpu", cwd=tmp_path), "params.device")
    cpu = _run("run", "tiny.toml", "--store", "cpu.db", "--device", "cpu", cwd=tmp_path)
    assert cpu.returncode == 0, cpu.stderr
    if not HAS_CUDA:
        _one_line_error(_run("run", "tiny.toml", "--store", "gpu.db", "--device", "cuda", cwd=tmp_path),
                        "device 'cuda' requested, but no CUDA device is available")
        assert not (tmp_path / "gpu.db").exists()
        out = tmp_path / "reproduce"
        _one_line_error(_run("reproduce", "fate", "--quick", "--device", "cuda", "--out", out, cwd=tmp_path),
                        "no CUDA device")
        assert not (out / "fate.db").exists()  # failed before the first sweep
        return
    gpu = _run("run", "tiny.toml", "--store", "gpu.db", "--device", "cuda", cwd=tmp_path)
    assert gpu.returncode == 0, gpu.stderr
    from transferlab.sweep import load_table

    def risks(db: str) -> np.ndarray:
        rows = sorted(load_table(tmp_path / db)[1].rows, key=lambda r: r["key"])
        return np.array([[r["risk_scratch"], r["risk_finetune"], r["risk_linear_transfer"]] for r in rows])

    # float64 on both devices: the same GD up to rounding (stops may differ by a step at the threshold)
    np.testing.assert_allclose(risks("gpu.db"), risks("cpu.db"), rtol=1e-6, atol=1e-8)


def test_paper_scale_spec_is_the_papers_grid() -> None:
    """specs/fate_paper_d500.toml: 20 theta x 20 gamma at d = 500 with 20 instances; a device given on
    the command line (here cpu, the one every machine has) leaves the cells and their keys unchanged."""
    from transferlab.sweep import load_spec

    path = Path(__file__).resolve().parents[2] / "specs" / "fate_paper_d500.toml"
    planned = expand_cells(load_spec(path))
    configs = [p.cell.config for p in planned]
    assert len(planned) == 400
    assert {c.d for c in configs} == {500} and {c.instances for c in configs} == {20}
    assert len({c.theta for c in configs}) == 20 and len({c.gamma for c in configs}) == 20
    on_cpu = expand_cells(load_spec(path, overrides=["params.device=cpu"]))
    assert [p.cell.key for p in on_cpu] == [p.cell.key for p in planned]
