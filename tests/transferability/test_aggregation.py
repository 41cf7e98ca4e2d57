"""The benchmark's aggregation on a hand-made tiny zoo: which accuracy each ground-truth protocol gets, the
weighted tau and Pearson per setup, the stability numbers, and the advisor's regret against the measured sweep,
each checked against a computation written here from the definitions (scipy's ``weightedtau`` and
``pearsonr`` called directly on hand-assembled arrays; mean, SD and wins by numpy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from transferlab.experiments.base import ResultTable
from transferlab.experiments.transferability import (
    FEATURE_PREDICTORS,
    PREDICTORS,
    TransferabilityExperiment,
    advisor_validation,
    ranking_rows,
)

#: Floats built by the same arithmetic (means of a few numbers) in two orders agree to roundoff.
TOL = 1e-12

SOURCES = ("cnn:mnist[0,1,2,3,4]", "mlp:mnist[0,1,2,3,4]", "cnn-8:digits", "pretrained:mobilenet_v2")
TARGETS = ("fashion_mnist[5,6,7,8,9]", "animal_mnist[5,6,7,8,9]")
INSTANCES = 3


def _zoo(rng: np.random.Generator) -> tuple[ResultTable, dict]:
    """Rows of a 4-source, 2-target, one-size sweep with random errors and scores; and the truth they encode."""
    rows, truth = [], {}
    for s, source in enumerate(SOURCES):
        for target in TARGETS:
            base = {"source": source, "target": target, "n": 50, "replicate": 0, "n_blocks": 3}
            scores = {p: rng.normal(size=INSTANCES).tolist() for p in PREDICTORS}
            if source.startswith("pretrained"):
                for p in ("LEEP", "NCE", "-KL", "-W1", "-MMD"):
                    scores[p] = None
            rows.append({**base, "protocol": "scores", **{f"score_{p}": v for p, v in scores.items()}})
            probe = rng.uniform(0.1, 0.5, INSTANCES)
            finetune = rng.uniform(0.1, 0.5, INSTANCES)
            sweep = rng.uniform(0.1, 0.5, (3, INSTANCES))  # k = 1, 2, 3
            scratch = rng.uniform(0.1, 0.5, INSTANCES)
            for protocol, err in (("linear_probe", probe), ("finetune", finetune), ("scratch", scratch)):
                rows.append({**base, "protocol": protocol, "test_error_instances": err.tolist(), "unconverged": 0})
            rows.append({**base, "protocol": "freeze_sweep", "k_values": [1, 2, 3],
                         "k_error_instances": sweep.tolist(), "unconverged": 0})
            truth[(source, target)] = {"scores": scores, "linear_probe": probe, "finetune": finetune,
                                       "freeze_best": sweep[int(np.argmin(sweep.mean(1)))], "sweep": sweep,
                                       "scratch": scratch}
    return ResultTable(rows=rows), truth


@pytest.fixture(scope="module")
def zoo() -> tuple[ResultTable, dict]:
    return _zoo(np.random.default_rng(7))


def test_ranking_rows_take_the_right_accuracy_and_score(zoo: tuple[ResultTable, dict]) -> None:
    table, truth = zoo
    per_seed, means = ranking_rows(table)
    assert len(per_seed) == len(SOURCES) * len(TARGETS) * 3 * INSTANCES
    for r in per_seed:
        t = truth[(r["source"], r["target"])]
        assert abs(r["accuracy"] - (1 - t[r["protocol"]][r["seed"]])) < TOL
        for p in PREDICTORS:
            if t["scores"][p] is None:
                assert p not in r  # undefined for this source: absent, never NaN
            else:
                assert abs(r[p] - t["scores"][p][r["seed"]]) < TOL
    for r in means:
        t = truth[(r["source"], r["target"])]
        assert abs(r["accuracy"] - (1 - t[r["protocol"]].mean())) < TOL


def test_panel_statistics_match_scipy_and_numpy(zoo: tuple[ResultTable, dict]) -> None:
    table, truth = zoo
    results = TransferabilityExperiment().analyze(table)
    panels = {p["name"]: p for p in results.data["panels"]}
    # all sources, feature predictors: tau per (target, protocol) on seed means, then the mean over targets
    panel = panels["all sources, feature predictors"]
    for p in FEATURE_PREDICTORS:
        row = next(r for r in panel["table"] if r["predictor"] == p)
        for protocol in ("linear_probe", "freeze_best", "finetune"):
            taus = []
            for target in TARGETS:
                acc = np.array([1 - truth[(s, target)][protocol].mean() for s in SOURCES])
                score = np.array([np.mean(truth[(s, target)]["scores"][p]) for s in SOURCES])
                taus.append(stats.weightedtau(score, acc).statistic)
            assert abs(row[f"tau_w {protocol}"] - np.mean(taus)) < TOL
    # stability over (target, protocol, seed): per-variation tau, then mean, SD (ddof 1) and win fractions
    values = np.array([[stats.weightedtau([truth[(s, target)]["scores"][p][i] for s in SOURCES],
                                          [1 - truth[(s, target)][protocol][i] for s in SOURCES]).statistic
                        for p in FEATURE_PREDICTORS]
                       for target in TARGETS for protocol in ("linear_probe", "freeze_best", "finetune")
                       for i in range(INSTANCES)])
    report = panel["report"]
    assert report.values.shape == values.shape == (len(TARGETS) * 3 * INSTANCES, len(FEATURE_PREDICTORS))
    assert [tuple(s.values()) for s in report.setups] == [(target, 50, protocol, i) for target in TARGETS
                                                          for protocol in ("linear_probe", "freeze_best", "finetune")
                                                          for i in range(INSTANCES)]
    assert np.allclose(report.values, values, atol=TOL, rtol=0)
    assert np.allclose(report.mean, values.mean(0), atol=TOL, rtol=0)
    assert np.allclose(report.sd, values.std(0, ddof=1), atol=TOL, rtol=0)
    winners = values >= values.max(1, keepdims=True) - 1e-12
    assert np.allclose(report.win_fraction, (winners / winners.sum(1, keepdims=True)).mean(0), atol=TOL, rtol=0)
    # the trained-sources panel ranks the 3 trained sources only, with every predictor
    trained = panels["trained sources, every predictor"]
    assert {r["sources"] for r in trained["table"]} == {3}
    row = next(r for r in trained["table"] if r["predictor"] == "-KL")
    acc = np.array([1 - truth[(s, TARGETS[0])]["finetune"].mean() for s in SOURCES[:3]])
    score = np.array([np.mean(truth[(s, TARGETS[0])]["scores"]["-KL"]) for s in SOURCES[:3]])
    pearson = [c["pearson"] for c in trained["correlations"]
               if c["predictor"] == "-KL" and c["target"] == TARGETS[0] and c["protocol"] == "finetune"]
    assert abs(pearson[0] - stats.pearsonr(score, acc).statistic) < TOL
    assert row["tau_w finetune"] is not None


def test_advisor_validation_regret_by_hand(zoo: tuple[ResultTable, dict]) -> None:
    table, truth = zoo
    source, target = SOURCES[0], TARGETS[1]
    t = truth[(source, target)]
    options = {"scratch": t["scratch"], "k=0": t["finetune"], **{f"k={k}": t["sweep"][k - 1] for k in (1, 2, 3)},
               "linear_probe": t["linear_probe"]}
    means = {k: v.mean() for k, v in options.items()}
    ses = {k: v.std(ddof=1) / np.sqrt(v.size) for k, v in options.items()}
    ks = [0, 1, 2, 3]
    oracle = min(sorted(ks, reverse=True), key=lambda k: means[f"k={k}"])
    within = [k for k in ks if means[f"k={k}"] - means[f"k={oracle}"]
              <= 2 * np.hypot(ses[f"k={k}"], ses[f"k={oracle}"])]
    advised = 2
    advise_row = {"source": source, "target": target, "n": 50, "replicate": 0, "protocol": "advise",
                  "n_blocks": 3, "k_star": advised, "k_star_set": [advised], "decision": "transfer",
                  "unconverged": 0}
    rows, notes = advisor_validation(ResultTable(rows=[*table.rows, advise_row]))
    assert notes == [] and len(rows) == 1
    row = rows[0]
    best = min(means.values())
    assert row["oracle k*"] == oracle and row["oracle k set"] == str(within)
    assert row["k* = oracle"] == (advised == oracle) and row["k* within oracle bars"] == (advised in within)
    assert abs(row["regret advise"] - (means[f"k={advised}"] - best)) < TOL
    assert abs(row["regret probe"] - (means["linear_probe"] - best)) < TOL
    assert abs(row["regret finetune"] - (means["k=0"] - best)) < TOL
    # a scratch verdict is scored by the scratch error
    rows, _ = advisor_validation(ResultTable(rows=[*table.rows, {**advise_row, "decision": "scratch"}]))
    assert abs(rows[0]["regret advise"] - (means["scratch"] - best)) < TOL


def test_advisor_validation_names_a_missing_depth(zoo: tuple[ResultTable, dict]) -> None:
    table, _ = zoo
    kept = [r for r in table.rows if not (r["source"] == SOURCES[0] and r["protocol"] == "scratch")]
    advise_row = {"source": SOURCES[0], "target": TARGETS[0], "n": 50, "replicate": 0, "protocol": "advise",
                  "n_blocks": 3, "k_star": 1, "k_star_set": [1], "decision": "transfer", "unconverged": 0}
    rows, notes = advisor_validation(ResultTable(rows=[*kept, advise_row]))
    assert rows == [] and len(notes) == 1 and "lacks scratch" in notes[0]
