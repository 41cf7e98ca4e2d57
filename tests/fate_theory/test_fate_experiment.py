"""The ``fate`` experiment kind without the engine: config, batching, run_batch, analyze, figures."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from pydantic import ValidationError

from transferlab.errors import ConfigError
from transferlab.experiments import Cell, ResultTable, get_experiment
from transferlab.experiments.fate import FateConfig, FateExperiment, cell_theory
from transferlab.theory import fate as theory

KIND = get_experiment("fate")


def _cell(**values: Any) -> Cell:
    config = FateConfig(**values)
    return Cell(hashlib.sha256(config.model_dump_json().encode()).hexdigest(), config)


def _rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """What the engine would store: config fields + key + replicate + the result row."""
    return [
        {**c.config.model_dump(mode="json"), "key": c.key, "replicate": 0, **row}
        for c, row in zip(cells, KIND.run_batch(cells))
    ]


def test_registered_and_parameters_listed() -> None:
    assert isinstance(KIND, FateExperiment)
    names = [name for name, _, _ in KIND.parameters()]
    assert {"theta", "gamma", "sigma", "d", "mode", "ridge", "source_gamma"} <= set(names)


@pytest.mark.parametrize(
    "values",
    [
        {"theta": 0.3, "gamma": 0.5, "width": 3},  # unknown key
        {"theta": 0.3, "gamma": -0.5},
        {"theta": math.inf, "gamma": 0.5},
        {"theta": 0.3, "gamma": 0.5, "protocols": ["scratch", "scratch"]},
        {"theta": 0.3, "gamma": 0.5, "protocols": ["probe"]},
        {"theta": 0.3, "gamma": 0.5, "source_sigma": 0.2},  # noise without a finite source
        {"theta": 0.3, "gamma": 0.001, "d": 100},  # rounds to n = 0
        {"theta": 0.3, "gamma": 0.5, "mode": "guess"},
    ],
)
def test_invalid_configs_are_rejected(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FateConfig(**values)


def test_batch_key_groups_equal_shapes() -> None:
    a = FateConfig(theta=0.1, gamma=0.5, sigma=0.0)
    b = FateConfig(theta=1.2, gamma=0.5, sigma=0.2)
    c = FateConfig(theta=0.1, gamma=0.6)
    assert KIND.batch_key(a) == KIND.batch_key(b) != KIND.batch_key(c)
    hash(KIND.batch_key(a))
    t1, t2 = FateConfig(theta=0.1, gamma=0.5, mode="theory"), FateConfig(theta=0.4, gamma=1.7, d=7, mode="theory")
    assert KIND.batch_key(t1) == KIND.batch_key(t2) != KIND.batch_key(a)


def test_theory_rows_equal_the_closed_forms() -> None:
    cells = [_cell(theta=th, gamma=g, sigma=0.2, d=200, mode="theory") for th in (0.4, 1.0) for g in (0.5, 1.5)]
    rows = KIND.run_batch(cells)
    for cell, row in zip(cells, rows):
        cfg = cell.config
        g = cfg.n / cfg.d
        assert row["theory_risk_scratch"] == pytest.approx(float(theory.scratch_risk(g, 0.2, d=200)), rel=1e-12)
        assert row["theory_risk_linear_transfer"] == pytest.approx(
            float(theory.linear_transfer_risk(cfg.theta, cfg.n, 0.2, 0.1)), rel=1e-12
        )
        assert row["theory_T_finetune"] == pytest.approx(
            float(theory.finetune_transferability_corrected(cfg.theta, g, 0.2, d=200)), abs=1e-12
        )
        assert row["theory_T_finetune_eq15"] == pytest.approx(float(theory.finetune_transferability(cfg.theta, g)))
        assert row["theory_T_linear_transfer"] == pytest.approx(
            row["theory_risk_scratch"] - row["theory_risk_linear_transfer"], abs=1e-15
        )


def test_theory_mode_fails_a_cell_without_finite_theory() -> None:
    with pytest.raises(ConfigError, match="interpolation threshold|n - d"):
        KIND.run_batch([_cell(theta=0.4, gamma=1.0, d=50, mode="theory")])


def test_finite_source_theory() -> None:
    row = cell_theory(FateConfig(theta=math.pi / 4, gamma=0.5, d=300, source_gamma=1.5, source_sigma=0.2))
    expected = theory.finetune_transferability_finite_source(math.pi / 4, 0.5, 1.5, 0.2, d=300)
    assert row["theory_T_finetune"] == pytest.approx(float(expected), abs=1e-12)
    assert "theory_T_finetune_eq15" not in row


def test_simulate_and_both_modes_call_the_simulator() -> None:
    # tiny networks: a smoke test of the plumbing (agreement is tested through analyze below)
    cells = [_cell(theta=th, gamma=0.5, sigma=0.2, d=8, instances=3, mode="both", max_steps=300) for th in (0.3, 1.2)]
    both = KIND.run_batch(cells)
    assert all(len(r["risk_finetune_instances"]) == 3 and "theory_risk_finetune" in r for r in both)
    assert both[0]["risk_scratch"] == pytest.approx(np.mean(both[0]["risk_scratch_instances"]))
    sim = KIND.run_batch([_cell(theta=0.3, gamma=1.0, d=8, instances=2, mode="simulate", max_steps=50,
                                protocols=["scratch", "linear_transfer"])])[0]
    assert set(sim) == {"n", "converged", "risk_scratch", "risk_scratch_instances", "risk_linear_transfer",
                        "risk_linear_transfer_instances", "unconverged_pretrain", "steps_pretrain",
                        "unconverged_scratch", "steps_scratch"}
    note = KIND.run_batch([_cell(theta=0.3, gamma=1.0, d=8, instances=2, mode="both", max_steps=50)])[0]
    assert "theory_risk_scratch" not in note and note["theory_note"].startswith("no finite-size theory")


def test_theory_mode_end_to_end_analyze_and_figures() -> None:
    thetas = np.linspace(0.05, 1.0, 5) * math.pi / 2
    cells = [_cell(theta=th, gamma=g, sigma=0.2, d=100, mode="theory")
             for th in thetas for g in (0.2, 0.5, 0.8, 1.5, 2.0)]
    results = KIND.analyze(ResultTable(_rows(cells)))
    assert results.summary["parameter settings (grids of theta x gamma)"] == 1
    assert "simulation width d" not in results.summary
    (setting,) = results.data["settings"]
    assert setting["grids"]["T_lt_theory"].shape == (5, 5) and not setting["has_sim"]
    assert np.isfinite(setting["grids"]["T_lt_theory"]).all()
    assert len(results.tables["cells of theory_sigma0.2_d100"]) == 25
    figures = KIND.figures(results)
    assert set(figures) == {"fate_phase_lt", "fate_phase_ft", "fate_slices", "fate_ridge", "fate_finite_source",
                            "fate_divergence"}
    assert all(isinstance(f, Figure) for f in figures.values())


def test_analyze_pools_instances_and_measures_agreement() -> None:
    # synthetic simulated rows: theory + zero-mean noise per instance, shared across protocols
    rng = np.random.default_rng(0)
    rows = []
    for th in np.linspace(0.2, 1.4, 4):
        for g in (0.3, 0.6, 1.01, 1.5):
            cfg = FateConfig(theta=float(th), gamma=g, sigma=0.2, d=100, instances=30)
            row: dict[str, Any] = {**cfg.model_dump(mode="json"), "n": cfg.n, "replicate": 0, "key": "k",
                                   "converged": True}
            if abs(cfg.n - cfg.d) > 1:
                row.update(cell_theory(cfg))
            for p in cfg.protocols:
                mean = row.get(f"theory_risk_{p}", 1.0)
                values = mean + 0.05 * rng.standard_normal(cfg.instances)
                row[f"risk_{p}"], row[f"risk_{p}_instances"] = float(values.mean()), values.tolist()
            rows.append(row)
    results = KIND.analyze(ResultTable(rows))
    agreement = results.tables["agreement with theory (|n/d - 1| >= 0.05)"]
    assert {r["quantity"] for r in agreement} == {"risk_scratch", "risk_linear_transfer", "risk_finetune",
                                                  "T_lt", "T_ft"}
    for r in agreement:
        assert r["cells"] == 12  # the 1.01 column lies in the spike band
        assert abs(r["pooled_z"]) < 4 and r["mean_abs_diff"] < 0.05
    figures = KIND.figures(results)
    assert "fate_agreement" in figures and "fate_slices" in figures


def test_settings_differing_in_any_field_are_analyzed_apart() -> None:
    """Rows differing only in a training knob (weight decay) or in the protocol list are separate
    settings: never averaged together, never mis-paired."""
    kind = FateExperiment()
    cells = [
        _cell(theta=0.5, gamma=gamma, d=20, instances=2, mode="theory", weight_decay=wd)
        for gamma in (0.5, 1.5) for wd in (0.0, 0.1)
    ] + [
        _cell(theta=0.5, gamma=gamma, d=20, instances=2, mode="theory", protocols=("scratch",))
        for gamma in (0.5, 1.5)
    ]
    results = kind.analyze(ResultTable(rows=_rows(cells)))
    labels = [s["label"] for s in results.data["settings"]]
    assert len(labels) == 3 and len(set(labels)) == 3, labels
    assert any("weight_decay0.1" in label for label in labels)
    assert any("protocols" in label for label in labels)
    assert set(kind.figures(results)) >= {f"fate_phase_lt_{label}" for label in labels if "protocols" not in label}


def test_gradient_descent_that_never_converges_is_recorded_and_excluded() -> None:
    """lr = 1e-300 leaves every network at its init (risk ~ 1, no error): the row says converged false,
    with per-phase counts and stopping steps, and the analysis leaves the cell out and counts it."""
    stuck = _cell(theta=0.3, gamma=0.5, d=8, instances=3, mode="both", lr=1e-300, max_steps=20)
    fine = _cell(theta=0.3, gamma=1.5, d=8, instances=3, mode="both")
    rows = _rows([stuck]) + _rows([fine])  # two batches: their shapes and knobs differ
    assert rows[0]["converged"] is False and rows[1]["converged"] is True
    assert rows[0]["risk_scratch"] == pytest.approx(1.0, abs=0.05)  # untrained, yet finite: stored "ok"
    assert rows[0]["unconverged_scratch"] == 3 and rows[0]["unconverged_finetune"] == 3
    assert rows[0]["unconverged_pretrain"] == 1 and rows[0]["steps_pretrain"] == [20]
    assert rows[0]["steps_scratch"] == [20, 20, 20]
    assert rows[1]["unconverged_scratch"] == 0 and max(rows[1]["steps_scratch"]) < 20_000
    results = KIND.analyze(ResultTable(rows))
    assert results.summary["simulated cells excluded (gradient descent did not converge)"] == "1 of 2"
    stuck_setting, fine_setting = results.data["settings"]  # lr and max_steps differ: two settings
    assert stuck_setting["excluded"] == 1 and fine_setting["excluded"] == 0
    assert np.isnan(stuck_setting["grids"]["risk_scratch"]).all()
    assert np.isfinite(stuck_setting["grids"]["risk_scratch_theory"]).all(), "its theory is kept"
    assert np.isfinite(fine_setting["grids"]["risk_scratch"]).all()
    assert [r["excluded (not converged)"] for r in results.tables["settings"]] == [1, 0]
    caption = KIND.figure_captions(results)[f"fate_phase_lt_{stuck_setting['label']}"]
    assert "excluded and left blank: 1 of 1" in caption
