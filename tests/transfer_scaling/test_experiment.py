"""The ``transfer_scaling`` kind: configs and the CLI's refusal of bad specs, the shipped specs, the analysis of a
synthetic store against the injected law, and a tiny real English -> Python sweep through the whole pipeline with
its resume property."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from transferlab.cli import reproduce
from transferlab.errors import ConfigError
from transferlab.experiments import get_experiment
from transferlab.experiments.base import ResultTable
from transferlab.experiments.transfer_scaling import (
    TransferScalingConfig,
    TransferScalingExperiment,
    analyze_table,
    parse_size,
)
from transferlab.nets.transformer import non_embedding_params
from transferlab.scaling import SyntheticSurface, TransferLaw, synthetic_losses
from transferlab.sweep import expand_cells, load_spec, load_table, run_sweep

# ---------------------------------------------------------------------------------------------- configs


def test_sizes_by_name_or_shape() -> None:
    assert parse_size("xs") == parse_size("d32L1H2")
    shape = parse_size("d12L1H2")
    # N = L (12 d^2 + 13 d) + 2 d, counted by hand for d = 12, L = 1
    assert shape.non_embedding_params == 12 * 144 + 13 * 12 + 2 * 12 == 1908


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"data_size": None}, "data_size must be an integer"),
     ({"regime": "pretrain", "data_size": 1000}, "takes none"),
     ({"regime": "finetune", "data_size": 64}, r"data_size must be an integer >= 65"),
     ({"size": "d30L1H4"}, "not divisible"),
     ({"size": "huge"}, "size must be one of"),
     ({"warmup_steps": 4000}, "warmup_steps must be an integer in 0..3999"),
     ({"pretrain_max_steps": 50}, "warmup_steps must be an integer in 0..49"),
     ({"patience": 0}, "patience"),
     ({"min_delta": -0.01}, "min_delta"),
     ({"regime": "transfer"}, "regime")],
)
def test_inconsistent_configs_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TransferScalingConfig(**{"regime": "scratch", "size": "d12L1H2", "data_size": 10_000, **fields})


@pytest.mark.parametrize(
    ("grid", "message"),
    [('regime = ["finetune"]\nsize = ["d12L1H2"]', "data_size must be an integer"),
     ('regime = ["scratch"]\nsize = ["d12L1H5"]\ndata_size = [5000]', "not divisible by n_heads"),
     ('regime = ["scratch"]\nsize = ["d12L1H2"]\ndata_size = [-5]', "data_size must be an integer >= 65")],
)
def test_a_bad_spec_through_the_cli_is_one_line_and_exit_2(tmp_path: Path, grid: str, message: str) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(f'experiment = "transfer_scaling"\n[grid]\n{grid}\n')
    done = subprocess.run([sys.executable, "-m", "transferlab.cli", "run", str(spec), "--store", str(tmp_path / "s.db")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "s.db").exists()


def test_shipped_specs_meet_the_protocol(tmp_path: Path) -> None:
    """The full reproduction has >= 5 sizes over >= 1.5 decades of N and >= 6 data sizes over >= 2 decades of D and
    of D_F; both modes pretrain every size first."""
    counts = {}
    for mode in ("quick", "full"):
        cells = []
        for run in reproduce.SPECS["transfer-scaling"][mode]:
            path = tmp_path / f"{mode}-{run.out_name}"
            path.write_text(run.text(), encoding="utf-8")
            cells.append([c.cell.config for c in expand_cells(load_spec(path))])
        counts[mode] = [len(c) for c in cells]
        pretrain, main = cells
        assert {c.regime for c in pretrain} == {"pretrain"} and {c.regime for c in main} == {"scratch", "finetune"}
        assert {c.size for c in pretrain} == {c.size for c in main}
        if mode == "full":
            sizes = sorted({non_embedding_params(parse_size(c.size)) for c in main})
            assert len(sizes) >= 5 and np.log10(sizes[-1] / sizes[0]) >= 1.5
            for regime in ("scratch", "finetune"):
                data = sorted({c.data_size for c in main if c.regime == regime})
                assert len(data) >= 6 and np.log10(data[-1] / data[0]) >= 2
    assert counts == {"quick": [3, 30], "full": [5, 60]}


# ---------------------------------------------------------------------------------------------- synthetic store

SIZES = (1e5, 1e6, 1e7, 1e8, 1e9)


def _synthetic_rows(noise: float, seed: int = 0) -> list[dict]:
    """Rows shaped like the kind's stored rows, with losses from the Kaplan surface and the injected law
    (transferlab.scaling.synthetic, independent of this kind)."""
    table = synthetic_losses(SyntheticSurface(model_sizes=SIZES, noise=noise), seed=seed)
    rows = []
    for i, (n, d, regime, loss) in enumerate(zip(table.model_size, table.data_size, table.regime, table.loss,
                                                 strict=True)):
        rows.append({"regime": str(regime), "size": f"N{n:g}", "data_size": float(d), "N": float(n), "replicate": 0,
                     "key": f"{i:064x}", "test_loss": float(loss), "best_val_loss": float(loss) * 1.01,
                     "best_step_instances": [100], "steps": 500, "epochs_to_best": 1.0, "converged": [True],
                     "unconverged": 0, "seconds": 1.0})
    return rows


def test_the_analysis_recovers_the_law_of_a_noise_free_synthetic_store() -> None:
    results = analyze_table(ResultTable(rows=_synthetic_rows(0.0)), n_boot=0)
    fit = results.data["analysis"].fit
    truth = TransferLaw(1.9e4, 0.18, 0.38)
    # noise-free Kaplan surface: the scratch curve contains it exactly, so only the fits' rounding remains
    # (scaling's own pipeline test recovers it to 1e-6 too)
    assert fit.k / truth.k - 1 == pytest.approx(0, abs=1e-6)
    assert fit.alpha == pytest.approx(truth.alpha, rel=1e-6) and fit.beta == pytest.approx(truth.beta, rel=1e-6)


def test_the_analysis_of_a_noisy_synthetic_store_covers_the_law_and_reports_the_claims() -> None:
    exp = get_experiment("transfer_scaling")
    assert isinstance(exp, TransferScalingExperiment)
    results = exp.analyze(ResultTable(rows=_synthetic_rows(0.002, seed=3)))
    fit = results.data["analysis"].fit
    # 0.2 % loss noise: over 20 noise seeds the direct fit scattered with SD 0.0031 (alpha), 0.0038 (beta) and
    # 0.026 (log10 k) around the truth; the tolerances are about 5 SD, and each interval must hold its estimate
    for name, value, tol in (("alpha", 0.18, 0.02), ("beta", 0.38, 0.02), ("log10_k", np.log10(1.9e4), 0.15)):
        estimate = getattr(fit, name)
        assert estimate == pytest.approx(value, abs=tol), name
        lo, hi = fit.intervals[name]
        assert lo <= estimate <= hi, (name, lo, hi)
    assert fit.intervals["beta"][0] > 0
    summary = results.summary
    assert results.data["cut"] == "paper's cut"  # 5 sizes x 13 D_F: the paper's cut leaves a determined fit
    assert summary["claim: beta > 0"].startswith("held")
    assert summary["claim: D_T > 0 in the low-data regime"].startswith("held")
    assert summary["claim: multiplier (D_F + D_T)/D_F falls with D_F"].startswith("held")
    assert summary["claim: ossification (fine-tuned worse than scratch at D = D_F)"].startswith("did not appear")
    assert "alpha = 0.18" in summary["paper (text -> Python, Table 1)"]
    law = {row["parameter"]: row for row in results.tables["transfer law"] if row["cut"] == "paper's cut"}
    assert {row["cut"] for row in results.tables["transfer law"]} == {"paper's cut", "no cut"}
    assert law["beta"]["fitted"] == pytest.approx(fit.beta, abs=0) and law["beta"]["paper (text -> Python)"] == 0.38
    figures, captions = exp.figures(results), exp.figure_captions(results)
    assert set(figures) == set(captions) == {"transferred_data", "fraction_vs_n", "loss_curves", "loss_vs_n"}
    assert all(len(text) > 100 for text in captions.values())
    (ax,) = figures["fraction_vs_n"].axes
    assert ax.get_xscale() == "log"
    # one fitted line per fine-tuning size D_F (markers are drawn without lines)
    lines = [line for line in ax.get_lines() if line.get_linestyle() not in ("None", "", " ")]
    assert len(lines) == len(SyntheticSurface().finetune_data_sizes)


# ---------------------------------------------------------------------------------------------- a real tiny sweep

TINY = textwrap.dedent("""
    experiment = "transfer_scaling"
    seed = 0
    [run]
    batch_size = 1
    [params]
    context = 16
    batch_size = 8
    max_steps = 150
    pretrain_max_steps = 150
    warmup_steps = 30
    finetune_lr_scale = 0.3
    eval_every = 10
    patience = 3
    val_tokens = 256
    test_tokens = 1024
    [grid]
    size = ["d8L1H2", "d16L1H2", "d24L1H2"]
    regime = {regime}
    data_size = [100, 300, 1000, 3000, 10000, 30000]
""")


def _run(tmp_path: Path, store: Path) -> list:
    summaries = []
    for name, regime, drop in (("pretrain", '["pretrain"]', True), ("main", '["scratch", "finetune"]', False)):
        text = TINY.format(regime=regime)
        if drop:
            text = text.replace("data_size = [100, 300, 1000, 3000, 10000, 30000]\n", "")
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        summaries.append(run_sweep(load_spec(path), store, executor="serial"))
    return summaries


def test_a_tiny_real_sweep_runs_the_pipeline_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "ts.db"
    first = _run(tmp_path, store)
    assert [(s.ok, s.failed) for s in first] == [(3, 0), (36, 0)]
    sources = sorted((tmp_path / "cache" / "sources").glob("*.pt"))
    assert len(sources) == 3  # one English pretraining per size, cached
    _, table = load_table(store)
    rows = {r["key"]: r for r in table.rows}
    for row in rows.values():
        if row["regime"] == "pretrain":
            assert np.isfinite(row["english_val_loss"]) and row["english_val_loss"] > 0
            continue
        assert row["N"] == non_embedding_params(parse_size(row["size"]))
        assert 0 < row["test_loss"] < np.log(256) + 1.5  # bytes: a uniform guess is log 256 = 5.55 nats
        assert row["tokens_seen_instances"] == [row["stop_step_instances"][0] * 8 * 16]
        assert row["best_step_instances"][0] <= row["stop_step_instances"][0] <= row["steps"] <= 150
        if row["regime"] == "finetune":  # fine-tuning starts from the source's zero-shot loss
            assert row["initial_val_loss"] == pytest.approx(row["source_python_val_loss"], rel=1e-12)

    # the pipeline from trained losses to (k, alpha, beta); 40-step runs are far from the paper's regime, so every
    # fine-tuned point is kept (no low-data cut) and inversions may reach one decade past the scratch runs
    results = analyze_table(table, n_boot=50, low_data_fraction=1.0, extrapolation_decades=1.0)
    analysis = results.data["analysis"]
    assert analysis is not None, results.summary
    assert np.isfinite([analysis.fit.k, analysis.fit.alpha, analysis.fit.beta]).all()
    assert analysis.fit.n_points >= 4 and set(analysis.fit.intervals) == {"alpha", "beta", "log10_k"}

    # resume: forget two scratch and two fine-tuned cells and the cached sources; a rerun computes those four only
    with sqlite3.connect(store) as conn:
        before = dict(conn.execute("SELECT key, finished FROM cells").fetchall())
        gone = [k for k, r in sorted(rows.items()) if r["regime"] == "scratch"][:2] + \
               [k for k, r in sorted(rows.items()) if r["regime"] == "finetune"][:2]
        conn.executemany("DELETE FROM cells WHERE key = ?", [(k,) for k in gone])
    for path in sources:
        path.unlink()
    second = _run(tmp_path, store)
    assert [(s.ok, s.skipped) for s in second] == [(0, 3), (4, 32)]
    with sqlite3.connect(store) as conn:
        after = dict(conn.execute("SELECT key, finished FROM cells").fetchall())
    assert {k for k in after if after[k] != before.get(k)} == set(gone)
    _, again = load_table(store)
    for row in again.rows:
        if row["key"] in gone:  # recomputed (the source retrained from its seed): the same numbers
            for name in ("test_loss", "best_val_loss"):
                # same machine, same single-threaded kernels: identical up to float64 summation of float32 losses
                assert row[name] == pytest.approx(rows[row["key"]][name], rel=1e-9), name
            assert json.dumps(row["best_step_instances"]) == json.dumps(rows[row["key"]]["best_step_instances"])


def test_bad_loss_column_is_refused() -> None:
    with pytest.raises(ConfigError, match="loss must be one of"):
        analyze_table(ResultTable(rows=_synthetic_rows(0.0)), loss="train_loss")


def test_instances_train_as_one_program_each_with_its_own_windows(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from transferlab.experiments.base import Cell

    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    small = {"size": "d8L1H2", "context": 16, "batch_size": 4, "max_steps": 20, "pretrain_max_steps": 10,
             "warmup_steps": 2, "eval_every": 5, "patience": 2, "val_tokens": 128, "test_tokens": 256, "instances": 2}
    exp = TransferScalingExperiment()
    for i, regime in enumerate(("scratch", "finetune")):
        cell = Cell(key=f"{i + 100:064x}", config=TransferScalingConfig(regime=regime, data_size=2000, **small))
        row = exp.run_batch([cell])[0]
        tests = row["test_loss_instances"]
        assert len(tests) == len(row["converged"]) == len(row["val_history_instances"]) == 2
        assert row["test_loss"] == pytest.approx(sum(tests) / 2, rel=1e-12)  # the row's loss is the mean
        # scratch: two initial draws; finetune: one source, two window streams -- either way two trajectories
        assert abs(tests[0] - tests[1]) > 1e-6, regime
        histories = row["val_history_instances"]
        if regime == "finetune":  # both instances start from the same pretrained weights
            assert histories[0][0] == pytest.approx(histories[1][0], rel=1e-6)
