"""Hong et al. (2024)'s theorems, as statements about our reconstruction of their model, with enough seeds
that they are not noise.

Setting: C = 2 superclasses x k = 8 subclasses, d = 32, P = 8 patches (2 common, 2 fine), noise RMS 0.5,
the patch ReLU network with 5 neurons per class and threshold b = -1.3 / d, pretrained on 500 easy samples
(150 full-batch steps), downstream on 300 easy coarse-labelled samples; 12 seeds (instances), each with
its own data and initial weights. The coarse and fine cells see the same data (paired runs).

Claims (paraphrased from the paper's Theorems; docs/models/granularity.md):
1. after coarse pretraining the downstream error on easy samples is ~0 but on hard samples (common
   feature removed) it stays high;
2. after fine pretraining both are low;
3. neurons align with the fine features only under fine pretraining (the common features under both).
Each test states its margin in standard errors (SE over the 12 seeds) on top of an absolute gap.
"""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.experiments.base import Cell
from transferlab.experiments.defrost import paired_difference
from transferlab.experiments.granularity import GranularityConfig, GranularityExperiment
from transferlab.report.plots import mean_se

SEEDS = 12


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    exp = GranularityExperiment()
    out = {}
    for i, labels in enumerate(("coarse", "fine")):
        cell = Cell(key=f"{i + 1:064x}", config=GranularityConfig(labels=labels, instances=SEEDS), seed=7)
        out[labels] = exp.run_batch([cell])[0]
    return out


def _stats(row: dict, name: str) -> tuple[float, float]:
    mean, se = mean_se(np.asarray(row[f"{name}_instances"], dtype=float))
    assert se is not None
    return mean, se


def _runs(row: dict, name: str) -> dict[tuple[int, int], float]:
    return {(0, i): v for i, v in enumerate(row[f"{name}_instances"])}


def test_pretraining_fits_its_labels(rows: dict[str, dict]) -> None:
    for labels, row in rows.items():
        assert max(row["pretrain_error_instances"]) <= 0.01, labels  # easy pretraining samples are fitted
        assert row["unconverged"] == 0, labels


def test_coarse_pretraining_learns_easy_samples_but_not_hard_ones(rows: dict[str, dict]) -> None:
    row = rows["coarse"]
    for protocol in ("probe", "finetune"):
        easy, easy_se = _stats(row, f"{protocol}_easy_error")
        hard, hard_se = _stats(row, f"{protocol}_hard_error")
        assert easy <= 0.02, protocol
        # hard samples: far from solved -- at least 0.2 error with the mean 3 SE above 0.15
        assert hard >= 0.2 and hard - 3 * hard_se > 0.15, (protocol, hard, hard_se)


def test_fine_pretraining_learns_both(rows: dict[str, dict]) -> None:
    row = rows["fine"]
    easy, _ = _stats(row, "probe_easy_error")
    hard, hard_se = _stats(row, "probe_hard_error")
    assert easy <= 0.02
    assert hard + 3 * hard_se < 0.12, (hard, hard_se)  # the mean is 3 SE below 0.12
    ft_hard, ft_se = _stats(row, "finetune_hard_error")
    assert ft_hard + 3 * ft_se < 0.2, (ft_hard, ft_se)


def test_fine_beats_coarse_on_hard_samples_in_paired_runs(rows: dict[str, dict]) -> None:
    for protocol, gap in (("probe", 0.2), ("finetune", 0.1)):
        name = f"{protocol}_hard_error"
        mean, se, pairs = paired_difference(_runs(rows["coarse"], name), _runs(rows["fine"], name))
        assert pairs == SEEDS and se is not None
        assert mean > gap and mean > 5 * se, (protocol, mean, se)  # a gap of > 5 paired SE


def test_neurons_align_with_fine_features_only_under_fine_pretraining(rows: dict[str, dict]) -> None:
    coarse, fine = rows["coarse"], rows["fine"]
    # alignment A(v) = max over neurons of cos(w, v), averaged over features and seeds, at init and at the end
    assert fine["align_fine"][-1] >= 0.8 and fine["learned_fine"][-1] >= 0.9
    assert fine["align_fine"][-1] - fine["align_fine"][0] >= 0.4
    assert coarse["learned_fine"][-1] <= 0.1
    assert coarse["align_fine"][-1] - coarse["align_fine"][0] <= 0.15  # stays near its initial value
    for row in (coarse, fine):  # the common features are learned under both
        assert row["align_common"][-1] >= 0.8
    a, a_se = mean_se(np.asarray(fine["align_fine_instances"]))
    b, b_se = mean_se(np.asarray(coarse["align_fine_instances"]))
    assert a - b > 5 * np.hypot(a_se, b_se)  # per-seed final fine alignment: > 5 SE apart
