"""The ``defrost`` kind's stacked path: every scratch / finetune / freeze cell of a (q, n_t) group trains
as one network (``batch_key`` + ``run_batch``), with the rows each cell gets alone.

Reference: ``_run_cell``, the per-cell path through ``protocol_row`` (the transfer protocols with
frozen-prefix caching). The stack builds the same networks from the same generators and replays each
cell's minibatches, so the only difference is float32 rounding: the stack recomputes the frozen blocks on
every minibatch (batched matmuls over more instances) where the per-cell path computes them once in
chunks. Rounding differences of ~1e-7 relative can move a test sample across the decision boundary only
when its margin is that small, and can shift a validation loss tie; we allow a per-instance test error
difference of at most 2 samples of the test set (2 / test_size) and require equal stop epochs (training
that starts from the same weights and sees the same minibatches stops at the same validated epoch unless
two validation losses tie to 1e-7, which these runs do not).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import transferlab.experiments.defrost as dx
from transferlab.cli import reproduce
from transferlab.errors import ConfigError
from transferlab.experiments.base import Cell
from transferlab.experiments.defrost import DefrostConfig, DefrostExperiment
from transferlab.sweep import expand_cells, iter_batches, load_spec

# the TINY setting of test_defrost.py: a 2-block MLP of width 32 on D = 10, N = 30 tasks
TINY = {"D": 10, "N": 30, "depth": 2, "width": 32, "n_source": 1000, "source_epochs": 5, "instances": 2,
        "val_size": 40, "test_size": 300, "max_steps": 40, "patience_steps": 20, "probe_size": 100}
VARIANTS = [{"protocol": "scratch"}, {"protocol": "finetune"}, {"protocol": "freeze", "k": 1},
            {"protocol": "freeze", "k": 2}, {"protocol": "freeze", "k": 1, "reinit_unfrozen": True}]
ERROR_TOL = 2 / TINY["test_size"]  # two test samples per instance (module docstring)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    dx._LOADED.clear()
    yield
    dx._LOADED.clear()


def _cells(replicates: tuple[int, ...] = (0, 1), q: float = 0.5, n_t: int = 30) -> list[Cell]:
    return [Cell(key=f"{100 * r + i:064x}", config=DefrostConfig(q=q, n_t=n_t, **TINY, **v), seed=0, replicate=r)
            for r in replicates for i, v in enumerate(VARIANTS)]


def _assert_rows_agree(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in ("k", "n_blocks", "stop_epoch_instances", "unconverged", "converged"):
        assert got[name] == want[name], name
    assert got["source_test_error"] == pytest.approx(want["source_test_error"], abs=1e-12)  # the same cached source
    assert got["test_error_instances"] == pytest.approx(want["test_error_instances"], abs=ERROR_TOL)
    assert got["test_error"] == pytest.approx(want["test_error"], abs=ERROR_TOL)
    # float32 test loss summed in float64 over 300 samples: rounding of ~1e-6 relative at most
    assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-4)


def test_one_group_shares_a_batch_key_and_other_protocols_do_not() -> None:
    kind = DefrostExperiment()
    cells = _cells()
    assert len({kind.batch_key(c.config) for c in cells}) == 1  # protocol, k, reinit and replicate vary inside
    other_q = kind.batch_key(_cells(q=0.6)[0].config)
    other_n = kind.batch_key(_cells(n_t=40)[0].config)
    other_lr = kind.batch_key(DefrostConfig(q=0.5, n_t=30, protocol="scratch", **{**TINY, "lr": 1e-2}))
    assert len({kind.batch_key(cells[0].config), other_q, other_n, other_lr}) == 4
    alone = [DefrostConfig(q=0.5, n_t=30, protocol=p, **TINY) for p in ("linear_probe", "defrost")]
    keys = {kind.batch_key(c) for c in alone}
    assert len(keys) == 2 and kind.batch_key(cells[0].config) not in keys


def test_stacked_rows_equal_per_cell_rows_and_do_not_depend_on_the_company() -> None:
    kind = DefrostExperiment()
    cells = _cells()
    stacked = kind.run_batch(cells)
    for cell, row in zip(cells, stacked, strict=True):
        _assert_rows_agree(row, dx._run_cell(cell))
    assert [r["k"] for r in stacked[:5]] == [0, 0, 1, 2, 1]
    # another company, another order: one replicate's cells reversed, with nothing else in the stack
    subset = cells[:5][::-1]
    for cell, row in zip(subset, kind.run_batch(subset), strict=True):
        _assert_rows_agree(row, stacked[cells.index(cell)])
    # a cell alone in its batch is the per-cell path itself (k_min = k: the same cached-prefix training)
    alone = kind.run_batch([cells[3]])[0]
    _assert_rows_agree(alone, dx._run_cell(cells[3]))


def test_cells_that_cannot_share_a_stack_are_refused() -> None:
    mixed = [_cells()[0], _cells(q=0.6)[0]]
    with pytest.raises(ConfigError, match="cannot share a stack"):
        dx._run_stacked(mixed)


def test_full_reproduction_validates_and_batches_each_q_n_t_group(tmp_path: Path) -> None:
    kind = DefrostExperiment()
    counts, batches, stacks = [], [], []
    for run in (r for r in reproduce.SPECS["defrost"]["full"] if r.filename == "defrost_full.toml"):
        path = tmp_path / run.out_name
        path.write_text(run.text(), encoding="utf-8")
        spec = load_spec(path)
        cells = expand_cells(spec)
        counts.append(len(cells))
        batches.append(len(list(iter_batches(kind, cells, spec.run.batch_size))))
        stacks.append(len(list(iter_batches(kind, cells, 64))))
    # 5 q x 6 n_t x (k = 0..4 | redrawn k = 1..3 | scratch, probe, defrost); layerwise: 5 q (one replicate)
    assert counts == [150, 90, 90, 5]
    # the shipped spec runs one cell per batch (stacking is slower on CPU, see its [run] comment) ...
    assert batches == counts
    # ... and with stacking allowed: one stack per (q, n_t) for the freeze sweeps; scratch stacks per
    # (q, n_t), probe and defrost per cell
    assert stacks == [30, 30, 30 + 60, 5]
