"""The ``defrost`` experiment kind: configs, seeding, the cached source, rows, analysis, figures, layerwise."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import transferlab.experiments.defrost as dx
from transferlab.cli import reproduce
from transferlab.errors import ConfigError
from transferlab.experiments import get_experiment
from transferlab.experiments.base import Cell, ResultTable
from transferlab.experiments.defrost import DefrostConfig, DefrostExperiment, layerwise_measures
from transferlab.sweep import expand_cells, load_spec

# tiny: a 2-block MLP of width 32 on D = 10, N = 30 tasks; the source trains on 1,000 samples
TINY = {"D": 10, "N": 30, "depth": 2, "width": 32, "n_source": 1000, "source_epochs": 5, "instances": 2,
        "val_size": 40, "test_size": 300, "max_steps": 40, "patience_steps": 20, "probe_size": 100}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    dx._LOADED.clear()
    yield tmp_path / "cache" / "sources"
    dx._LOADED.clear()


def _cell(i: int, replicate: int = 0, **fields: object) -> Cell:
    return Cell(key=f"{i:064x}", config=DefrostConfig(**{**TINY, **fields}), seed=0, replicate=replicate)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"protocol": "freeze", "n_t": 50}, "needs k"),
     ({"protocol": "scratch", "n_t": 50, "k": 1}, "k applies to protocol 'freeze' only"),
     ({"protocol": "finetune", "n_t": 50, "reinit_unfrozen": True}, "reinit_unfrozen applies"),
     ({"protocol": "freeze", "n_t": 50, "k": 3, "depth": 2}, "out of range"),
     ({"protocol": "scratch"}, "needs n_t"),
     ({"protocol": "layerwise", "n_t": 50}, "drop n_t"),
     ({"protocol": "layerwise", "probe_size": 500, "test_size": 300}, "exceeds test_size"),
     ({"protocol": "scratch", "n_t": 50, "q": 1.5}, "less than or equal"),
     ({"protocol": "scratch", "n_t": 50, "D": 4, "delta_D_max": -3}, "latent dimensions")],
)
def test_inconsistent_configs_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DefrostConfig(**{"q": 0.5, **fields})


def test_registered_and_the_quick_reproduction_validates(tmp_path: Path) -> None:
    assert isinstance(get_experiment("defrost"), DefrostExperiment)
    counts = []
    for run in [r for r in reproduce.SPECS["defrost"]["quick"] if not r.store]:  # real-data runs: test_real_analogue.py
        path = tmp_path / run.out_name
        path.write_text(run.text(), encoding="utf-8")
        cells = expand_cells(load_spec(path))
        counts.append(len(cells))
    assert counts == [32, 16, 24, 4]  # freeze k = 0..3; redrawn k = 1, 2; 3 baselines; layerwise (x 2 replicates)


def test_paired_target_samples_and_shared_test_set() -> None:
    cfg = DefrostConfig(q=0.5, protocol="scratch", n_t=30, **TINY)
    pair = dx._pair(_cell(0, q=0.5, protocol="scratch", n_t=30), cfg)
    data = dx._target_data(_cell(0, q=0.5, protocol="scratch", n_t=30), cfg, pair)
    assert data.x_train.shape == (2, 30, 30) and data.x_val.shape == (2, 40, 30) and data.x_test.shape == (300, 30)
    assert not torch.equal(data.x_train[0], data.x_train[1])
    other = DefrostConfig(q=0.5, protocol="freeze", k=1, n_t=30, **TINY)
    again = dx._target_data(_cell(7, q=0.5, protocol="freeze", k=1, n_t=30), other, pair)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_val, data.y_val)  # paired cells
    bigger = DefrostConfig(q=0.5, protocol="scratch", n_t=60, **TINY)
    assert torch.equal(dx._target_data(_cell(8, q=0.5, protocol="scratch", n_t=60), bigger, pair).x_test, data.x_test)
    replicate = dx._target_data(_cell(0, replicate=1, q=0.5, protocol="scratch", n_t=30), cfg, pair)
    assert not torch.equal(replicate.x_train, data.x_train)
    # every q of a replicate shares the source task (common random numbers)
    far = dx._pair(_cell(9, q=0.1, protocol="scratch", n_t=30), DefrostConfig(q=0.1, protocol="scratch", n_t=30, **TINY))
    assert torch.equal(far.source.features, pair.source.features)
    assert abs(far.feature_overlap - 0.1) < 1e-9 and abs(pair.feature_overlap - 0.5) < 1e-9


def test_source_is_trained_once_cached_and_reused(_cache: Path) -> None:
    exp = DefrostExperiment()
    exp.run_batch([_cell(1, q=0.3, protocol="freeze", k=1, n_t=30)])
    (first,) = list(_cache.glob("*.pt"))
    stamp = first.stat().st_mtime_ns
    dx._LOADED.clear()  # a new process: the file is loaded, not retrained
    exp.run_batch([_cell(2, q=0.8, protocol="scratch", n_t=30)])  # another q: the same source
    assert list(_cache.glob("*.pt")) == [first] and first.stat().st_mtime_ns == stamp
    state, facts = dx._LOADED[first.stem]
    assert facts["role"] == "source" and 0 <= facts["test_error"] < 0.5
    exp.run_batch([_cell(3, replicate=1, q=0.3, protocol="freeze", k=1, n_t=30)])  # another replicate: another pair
    assert len(list(_cache.glob("*.pt"))) == 2


def test_end_to_end_rows_analysis_and_figures() -> None:
    exp = DefrostExperiment()
    plan = [("scratch", None, False), ("freeze", 0, False), ("freeze", 1, False), ("freeze", 2, False),
            ("freeze", 1, True), ("linear_probe", None, False), ("defrost", None, False)]
    rows = []
    for i, (protocol, k, reinit) in enumerate(plan):
        cell = _cell(10 + i, q=0.6, protocol=protocol, k=k, n_t=40, reinit_unfrozen=reinit)
        row = exp.run_batch([cell])[0]
        assert row["n_blocks"] == 2 and len(row["test_error_instances"]) == 2
        assert 0 <= row["test_error"] <= 1 and isinstance(row["converged"], bool) and row["unconverged"] >= 0
        assert row["k"] == {"scratch": 0, "linear_probe": 2, "defrost": 0}.get(protocol, k)
        rows.append({**cell.config.model_dump(), **row, "replicate": 0, "key": cell.key})
    assert rows[-1]["stage_k"] == [2, 1, 0] and len(rows[-1]["stage_error"]) == 3
    layer_cell = _cell(30, q=0.6, protocol="layerwise")
    layer = exp.run_batch([layer_cell])[0]
    for name in ("cka", "knn_overlap", "ii_source_to_target", "ii_target_to_source", "twonn_source", "twonn_target"):
        assert len(layer[name]) == 2 and all(math.isfinite(v) for v in layer[name])
    assert all(0 <= v <= 1 + 1e-12 for v in layer["cka"] + layer["knn_overlap"])
    rows.append({**layer_cell.config.model_dump(), **layer, "replicate": 0, "key": layer_cell.key})

    results = exp.analyze(ResultTable(rows=rows))
    (setting,) = results.data["settings"]
    (best,) = setting["best"]
    # k* and the transferability recomputed from the rows
    kept = {r["k"]: np.mean(r["test_error_instances"]) for r in rows
            if r["protocol"] == "freeze" and not r["reinit_unfrozen"]}
    assert best["k_star"] == min(kept, key=kept.get)
    scratch = np.mean(rows[0]["test_error_instances"])
    transfers = [np.mean(r["test_error_instances"]) for r in rows
                 if r["protocol"] not in ("scratch", "layerwise") and not r["reinit_unfrozen"]]
    assert best["transferability"] == pytest.approx(scratch - min(transfers), abs=1e-12)
    head = min(kept[2], np.mean(next(r for r in rows if r["protocol"] == "linear_probe")["test_error_instances"]))
    assert best["head_margin"] == pytest.approx(head - kept[best["k_star"]], abs=1e-12)
    assert setting["layerwise"]["by_q"][0.6]["cka"] == pytest.approx(layer["cka"])
    figures = exp.figures(results)
    captions = exp.figure_captions(results)
    assert set(captions) == set(figures) == {"defrost_error_vs_k", "defrost_k_star", "defrost_transferability",
                                             "defrost_stages", "defrost_layerwise"}
    assert all(len(text) > 100 for text in captions.values())


def test_layerwise_measures_of_a_network_with_itself() -> None:
    g = torch.Generator().manual_seed(0)
    from transferlab.nets import mlp

    net = mlp((12,), [16, 16, 16], 2, generator=g)
    x = torch.randn(60, 12, generator=g)
    same = layerwise_measures(net, net, x, knn_k=5)
    assert all(len(v) == 3 for v in same.values())
    assert same["cka"] == pytest.approx([1.0] * 3, abs=1e-12)
    assert same["knn_overlap"] == pytest.approx([1.0] * 3)
    assert same["ii_source_to_target"] == pytest.approx([2 / 60] * 3)  # the minimum, 2/n
    assert same["twonn_source"] == same["twonn_target"]
    other = mlp((12,), [16, 16, 16], 2, generator=g)
    assert max(layerwise_measures(net, other, x, knn_k=5)["cka"]) < 1 - 1e-6
    with pytest.raises(Exception, match="differ in depth"):
        layerwise_measures(net, mlp((12,), [16, 16], 2, generator=g), x)


def _row(q: float, n_t: int, protocol: str, k: int, errors: list[float], replicate: int = 0, **extra: object) -> dict:
    cfg = DefrostConfig(q=q, n_t=n_t, protocol=protocol, k=k if protocol == "freeze" else None, depth=2, instances=4)
    return {**cfg.model_dump(), "k": k, "n_blocks": 2, "test_error": float(np.mean(errors)),
            "test_error_instances": errors, "converged": True, "unconverged": 0, "replicate": replicate, **extra}


def test_analysis_on_constructed_rows_head_margin_and_spearman() -> None:
    rows = []
    # k* = 0 at large n_t, 1 at small n_t and high q; head-only (k = 2) always worst by a known paired margin
    for q, n_t, k_star in ((0.2, 50, 0), (0.2, 500, 0), (0.5, 50, 1), (0.9, 50, 2), (0.9, 500, 1)):
        for k in range(3):
            base = 0.2 + 0.05 * abs(k - k_star)
            rows.append(_row(q, n_t, "freeze", k, [base + d for d in (0.0, 0.01, 0.02, 0.03)]))
        rows.append(_row(q, n_t, "scratch", 0, [0.3] * 4))
    for q, cka in ((0.2, [0.95, 0.5]), (0.5, [0.95, 0.8]), (0.9, [0.97, 0.96])):
        layer = {"cka": cka, "knn_overlap": [0.5, 0.2], "ii_source_to_target": [0.1, 0.5],
                 "ii_target_to_source": [0.1, 0.5], "twonn_source": [5.0, 4.0], "twonn_target": [5.0, 4.0]}
        cfg = DefrostConfig(q=q, protocol="layerwise", depth=2, instances=4)
        rows.append({**cfg.model_dump(), "k": None, "n_blocks": 2, "test_error": 0.05, "test_error_instances": [0.05],
                     "converged": True, "unconverged": 0, "replicate": 0, **layer})
    results = DefrostExperiment().analyze(ResultTable(rows=rows))
    (setting,) = results.data["settings"]
    best = {(r["q"], r["n_t"]): r for r in setting["best"]}
    assert best[(0.9, 50)]["k_star"] == 2 and best[(0.9, 50)]["head_margin"] == 0.0
    assert best[(0.2, 50)]["head_margin"] == pytest.approx(0.1)
    assert best[(0.2, 50)]["head_margin_in_se"] > 1e6  # every paired difference is 0.1 (to rounding)
    assert best[(0.2, 50)]["transferability"] == pytest.approx(0.3 - 0.215)
    lw = setting["layerwise"]
    assert [lw["by_q"][q]["drop_depth"] for q in (0.2, 0.5, 0.9)] == [2, 2, None]
    assert [lw["by_q"][q]["suggested_k"] for q in (0.2, 0.5, 0.9)] == [1, 1, 2]
    from scipy import stats

    expected = stats.spearmanr([1, 1, 1, 2, 2], [0, 0, 1, 2, 1]).statistic
    assert lw["spearman_points"] == 5 and lw["spearman"] == pytest.approx(expected)
    assert "Spearman" in " ".join(results.summary)
    assert set(DefrostExperiment().figures(results)) == {"defrost_error_vs_k", "defrost_k_star",
                                                         "defrost_transferability", "defrost_layerwise"}



def test_freezing_all_but_the_head_is_beaten_at_500_target_samples() -> None:
    """Gerace et al. (2023): freezing all but the head is often sub-optimal. Here at n_t = 500, q in {0.2, 0.9}
    (D = 20, N = 100, 3 x 128 ReLU, 5 instances), the better of freeze k = L and the probe is worse than k* by
    9.4 to 31.9 paired standard errors over spec seeds 0, 1, 2 (measured); the test asks for 4. At n_t = 50,
    q = 0.9 the margin was only 1.8 SE (10 runs), so small n_t is not asserted."""
    exp = DefrostExperiment()
    common = {"D": 20, "N": 100, "depth": 3, "width": 128, "n_source": 5000, "source_epochs": 20, "test_size": 1000,
              "max_steps": 1000, "patience_steps": 100, "instances": 5, "n_t": 500}
    rows = []
    for q in (0.2, 0.9):
        for protocol, k in (("freeze", 0), ("freeze", 3), ("linear_probe", None)):
            cell = Cell(key=f"{len(rows):064x}", config=DefrostConfig(q=q, protocol=protocol, k=k, **common), seed=0)
            rows.append({**cell.config.model_dump(), **exp.run_batch([cell])[0], "replicate": 0})
    for row in exp.analyze(ResultTable(rows=rows)).data["settings"][0]["best"]:
        assert row["k_star"] < 3 and row["head_margin"] > 0.02 and row["head_margin_in_se"] > 4, row
