"""The ``granularity`` experiment kind: configs, labels, paired data, batch invariance, rows, analysis,
figures, the shipped specs and the CLI's refusal of bad configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from transferlab.cli import reproduce
from transferlab.experiments import get_experiment
from transferlab.experiments.base import Cell, ResultTable
from transferlab.experiments.granularity import (
    GranularityConfig,
    GranularityExperiment,
    _checkpoint_epochs,
    _draw,
    _run_stacked,
    _seq,
    pretraining_labels,
)
from transferlab.experiments.transfer import _PROBE_TOL
from transferlab.nets import neuron_feature_cosines, patch_cnn
from transferlab.protocols.transfer import TargetData, finetune, linear_probe_transfer
from transferlab.sweep import expand_cells, load_spec
from transferlab.tasks.multiview import label_map
from transferlab.train.loop import TrainSettings, evaluate, fit

# tiny: C = 2 x k = 3, d = 12, P = 4 patches, 2 instances, a few steps
TINY = {"n_subclasses": 3, "d": 12, "patches": 4, "common_patches": 1, "fine_patches": 1, "n_pretrain": 60,
        "width": 2, "epochs": 6, "checkpoints": 3, "n_target": 40, "target_epochs": 5, "test_size": 50,
        "instances": 2}


def _cell(i: int, replicate: int = 0, **fields: object) -> Cell:
    return Cell(key=f"{i:064x}", config=GranularityConfig(**{**TINY, **fields}), seed=0, replicate=replicate)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"labels": "aligned"}, "n_classes is required"),
     ({"labels": "none", "n_classes": 2}, "takes neither"),
     ({"labels": "coarse", "n_classes": 3}, "n_classes must be None or 2"),
     ({"labels": "aligned", "n_classes": 1}, "aligned classes"),
     ({"labels": "random", "n_classes": 7}, "n_classes"),
     ({"d": 7}, "orthonormal features"),
     ({"n_superclasses": 1}, "coarse"),
     ({"common_patches": 3, "fine_patches": 2}, "common_patches \\+ fine_patches"),
     ({"checkpoints": 7}, "checkpoints must be <= epochs"),
     ({"target_hard": 1.5}, "target_hard"),
     ({"lr": 0.0}, "lr")],
)
def test_inconsistent_configs_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GranularityConfig(**{**TINY, **fields})


def test_bad_config_through_the_cli_is_one_line_and_exit_2(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('experiment = "granularity"\n[params]\ninstances = 2\n[grid]\nlabels = ["aligned"]\n')
    done = subprocess.run([sys.executable, "-m", "transferlab.cli", "run", str(spec), "--store", str(tmp_path / "s.db")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "n_classes is required" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_pretraining_labels_and_the_random_split() -> None:
    fine = torch.arange(6).repeat(50)  # 300 samples, every fine class 50 times
    rng = np.random.default_rng(0)
    for labels, n in (("coarse", None), ("fine", None), ("aligned", 4), ("global", 2)):
        cfg = GranularityConfig(**TINY, labels=labels, n_classes=n)
        expected = label_map(labels, 2, 3, n_classes=n)(fine)
        assert torch.equal(pretraining_labels(cfg, fine, rng), expected)
    cfg = GranularityConfig(**TINY, labels="aligned", n_classes=4, split=3)
    y = pretraining_labels(cfg, fine, rng)
    assert cfg.pretrain_classes == 12 and int(y.min()) == 0 and int(y.max()) == 11
    assert torch.equal(y // 3, label_map("aligned", 2, 3, n_classes=4)(fine))  # a split refines its base class
    parts = torch.bincount(y % 3, minlength=3).double() / y.numel()
    # 300 uniform draws over 3 parts: SE of a frequency sqrt(2/9 / 300) = 0.027; 0.12 is 4.4 SE
    assert bool(((parts - 1 / 3).abs() < 0.12).all())


def test_label_variants_share_their_data_and_knobs_keep_common_random_numbers() -> None:
    _, a = _draw(_cell(1, labels="coarse"), GranularityConfig(**TINY, labels="coarse"))
    _, b = _draw(_cell(2, labels="random", n_classes=3), GranularityConfig(**TINY, labels="random", n_classes=3))
    for name in ("pretrain", "target", "easy", "hard"):
        assert torch.equal(a[name].x, b[name].x) and torch.equal(a[name].fine, b[name].fine)
    _, c = _draw(_cell(1), GranularityConfig(**TINY, fine_probability=0.5))
    assert torch.equal(a["pretrain"].fine, c["pretrain"].fine)  # same classes, fewer fine features
    assert bool(a["pretrain"].has_fine.all()) and not bool(c["pretrain"].has_fine.all())
    _, other = _draw(_cell(1, replicate=1), GranularityConfig(**TINY))
    assert not torch.equal(a["pretrain"].x, other["pretrain"].x)
    assert bool(a["hard"].is_hard.all()) and not bool(a["easy"].is_hard.any())


def test_a_cell_does_not_depend_on_its_batch() -> None:
    exp = GranularityExperiment()
    alone = exp.run_batch([_cell(3, labels="aligned", n_classes=4)])[0]
    cells = [_cell(4, replicate=1, labels="global", n_classes=4), _cell(3, labels="aligned", n_classes=4),
             _cell(5, labels="random", n_classes=4)]
    assert len({exp.batch_key(c.config) for c in cells}) == 1
    batched = exp.run_batch(cells)[1]
    # float32 training: the stacked run sums the same terms in another order (rounding ~1e-7 per step)
    for name in ("probe_hard_error_instances", "finetune_easy_error_instances", "pretrain_loss_instances"):
        assert np.allclose(alone[name], batched[name], rtol=0, atol=1e-4), name
    assert np.allclose(alone["align_fine"], batched["align_fine"], rtol=0, atol=1e-5)


def _per_network(cell: Cell) -> dict[str, list]:
    """One cell the generic way, in float64: patch_cnn trained by fit between the checkpoints, then
    protocols.transfer's linear_probe_transfer and finetune, errors by evaluate (the per-network path)."""
    cfg = cell.config
    assert isinstance(cfg, GranularityConfig)
    feats, data = _draw(cell, cfg)
    net = patch_cnn(cfg.patches, cfg.d, cfg.pretrain_classes, cfg.width, instances=cfg.instances,
                    bias=-cfg.threshold / cfg.d, generator=cell.torch_generator(0), dtype=torch.float64)
    x = data["pretrain"].x.double()
    y = pretraining_labels(cfg, data["pretrain"].fine,
                           np.random.default_rng(_seq(cell, {"role": "labels", **cfg.data_fields()})))
    align = [neuron_feature_cosines(net, feats.dictionary).amax(1)]
    epochs = _checkpoint_epochs(cfg)
    for start, stop in zip(epochs[:-1], epochs[1:], strict=True):
        record = fit(net, x, y, generator=torch.Generator(), settings=TrainSettings(
            optimizer="sgd", lr=cfg.lr, batch_size=cfg.n_pretrain, max_epochs=stop - start, patience=None))
        align.append(neuron_feature_cosines(net, feats.dictionary).amax(1))
    curves = torch.stack(align, 1)  # (I, T + 1, M)
    target = TargetData(x_train=data["target"].x.double(), y_train=data["target"].coarse,
                        x_test=data["easy"].x.double(), y_test=data["easy"].coarse, n_classes=cfg.n_superclasses)
    probe = linear_probe_transfer(net, target, l2=cfg.probe_l2, tol=_PROBE_TOL)
    tuned = finetune(net, target, generator=cell.torch_generator(1), settings=TrainSettings(
        optimizer="sgd", lr=cfg.target_lr, batch_size=cfg.n_target, max_epochs=cfg.target_epochs, patience=None))
    hard = (data["hard"].x.double(), data["hard"].coarse)
    C = cfg.n_superclasses
    return {"pretrain_loss_instances": record.train_loss.tolist(),
            "pretrain_error_instances": evaluate(net, x, y)["error"].tolist(),
            "probe_easy_error_instances": probe.test_error.tolist(),
            "probe_hard_error_instances": evaluate(probe.net, *hard)["error"].tolist(),
            "finetune_easy_error_instances": tuned.test_error.tolist(),
            "finetune_hard_error_instances": evaluate(tuned.net, *hard)["error"].tolist(),
            "align_common": curves[..., :C].mean((0, 2)).tolist(), "align_fine": curves[..., C:].mean((0, 2)).tolist(),
            "converged": (record.converged & probe.converged & tuned.converged).tolist()}


def test_the_stacked_program_equals_the_per_network_path() -> None:
    # replicate 0: three label variants on the same data (one input set, S = 3); replicate 1 and a rarer
    # fine feature on replicate 0: one cell each on data of their own (two input sets of S = 1, one program)
    cells = [_cell(20, labels="aligned", n_classes=4), _cell(21, labels="global", n_classes=4),
             _cell(22, labels="random", n_classes=4), _cell(23, replicate=1, labels="aligned", n_classes=4),
             _cell(24, labels="aligned", n_classes=4, fine_probability=0.5)]
    rows = _run_stacked(cells, dtype=torch.float64)
    for cell, row in zip(cells, rows, strict=True):
        expected = _per_network(cell)
        # float64 both ways: the same sums in another order (~1e-16 per operation, 6 steps and a probe
        # converged to 1e-7 whose iterates agree to rounding); 1e-10 fails on any real difference. Errors
        # are counts / 50 test samples: equal unless a logit margin were below ~1e-12 (none is).
        for name, values in expected.items():
            if name == "converged":
                assert row[name] == values
            else:
                assert np.allclose(row[name], values, rtol=0, atol=1e-10), name


def test_rows_analysis_and_figures() -> None:
    exp = get_experiment("granularity")
    assert isinstance(exp, GranularityExperiment)
    plan = [("none", None, 1), ("coarse", None, 1), ("fine", None, 1), ("aligned", 4, 1), ("global", 4, 1),
            ("random", 4, 1), ("fine", None, 2)]
    rows = []
    for i, (labels, n, split) in enumerate(plan):
        cell = _cell(10 + i, labels=labels, n_classes=n, split=split)
        row = exp.run_batch([cell])[0]
        rows.append({**cell.config.model_dump(), **row, "replicate": 0, "key": cell.key})
    for row in rows:
        assert len(row["probe_hard_error_instances"]) == 2 and len(row["converged"]) == 2
        assert all(0 <= row[name] <= 1 for name in ("probe_easy_error", "probe_hard_error",
                                                    "finetune_easy_error", "finetune_hard_error"))
        T = 1 if row["labels"] == "none" else 4
        assert row["checkpoint_epochs"] == ([0] if T == 1 else [0, 2, 3, 6])  # round(6^(t/3)), t = 1, 2, 3
        assert len(row["align_fine"]) == len(row["learned_fine"]) == T
        assert all(-1 <= a <= 1 for a in row["align_common"] + row["align_fine"])
        assert len(row["fine_learned_by_feature"]) == 6
    results = exp.analyze(ResultTable(rows=rows))
    (setting,) = results.data["settings"]
    coarse = setting["variants"][("coarse", None, 1)]
    pooled = [v for r in rows if r["labels"] == "coarse" for v in r["probe_hard_error_instances"]]
    assert coarse["probe_hard_error"][0] == pytest.approx(np.mean(pooled), abs=1e-12)
    assert coarse["probe_hard_error"][1] == pytest.approx(np.std(pooled, ddof=1) / np.sqrt(2), abs=1e-12)
    assert setting["variants"][("fine", None, 2)]["K"] == 12
    assert any(key.startswith("coarse - fine, probe hard") for key in results.summary)
    figures, captions = exp.figures(results), exp.figure_captions(results)
    assert set(figures) == set(captions) == {"easy_hard", "alignment", "classes"}
    assert all(len(text) > 100 for text in captions.values())


def test_shipped_specs_expand(tmp_path: Path) -> None:
    counts = {}
    for mode in ("quick", "full"):
        counts[mode] = []
        for run in reproduce.SPECS["granularity"][mode]:
            if run.store:  # the real label hierarchies: the transfer kind, in a store of their own
                continue
            path = tmp_path / f"{mode}-{run.out_name}"
            path.write_text(run.text(), encoding="utf-8")
            counts[mode].append(len(expand_cells(load_spec(path))))
    # {aligned, global, random} x 2 sizes; none, coarse, fine; 1 (full: 2) splits; {coarse, fine} x 2 probabilities
    assert counts["quick"] == [6, 3, 1, 4]
    assert counts["full"] == [12, 6, 4, 8]  # x 2 replicates
