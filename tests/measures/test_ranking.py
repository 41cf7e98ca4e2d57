"""Evaluating predictors: weighted Kendall tau (against scipy, a slow reference of Vigna's hyperbolic
weighting, and hand-computed values), Pearson, and the stability report on a hand-computable table."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from transferlab.errors import ConfigError, DataError
from transferlab.measures import correlation_table, pearson_correlation, stability_report, weighted_kendall_tau


def ref_weighted_tau_one_order(x, y):
    """Vigna (2015) weighted tau, hyperbolic weight 1/(r+1), additive pair weights, ranks by decreasing
    lexicographic order of (x, y)."""
    m = len(x)
    order = sorted(range(m), key=lambda i: (x[i], y[i]), reverse=True)
    rank = {i: r for r, i in enumerate(order)}
    w = [1.0 / (rank[i] + 1) for i in range(m)]
    num = den_x = den_y = 0.0
    for i, j in itertools.combinations(range(m), 2):
        pair = w[i] + w[j]
        num += pair * np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
        den_x += pair * (x[i] != x[j])
        den_y += pair * (y[i] != y[j])
    return num / np.sqrt(den_x * den_y)


def ref_weighted_tau(x, y):
    """scipy's default: the average over the (x, y) and (y, x) rank orders."""
    return 0.5 * (ref_weighted_tau_one_order(x, y) + ref_weighted_tau_one_order(y, x))


def test_known_rankings():
    acc = [0.9, 0.8, 0.7, 0.6, 0.5]
    # 1 and -1 up to the roundoff of sums of five weights.
    assert weighted_kendall_tau([5, 4, 3, 2, 1], acc) == pytest.approx(1.0, abs=1e-12)
    assert weighted_kendall_tau([1, 2, 3, 4, 5], acc) == pytest.approx(-1.0, abs=1e-12)
    # By hand: weights 1, 1/2, 1/3 in both orders; pairs (0,1), (0,2) concordant, (1,2) discordant:
    # (3/2 + 4/3 - 5/6) / (3/2 + 4/3 + 5/6) = 2 / (11/3) = 6/11 (plain Kendall tau: 1/3).
    assert weighted_kendall_tau([3, 2, 1], [3, 1, 2]) == pytest.approx(6 / 11, rel=1e-12)
    # A swap among the best two costs more than a swap among the worst two.
    top_swap = weighted_kendall_tau([4, 5, 3, 2, 1], acc)
    bottom_swap = weighted_kendall_tau([5, 4, 3, 1, 2], acc)
    assert top_swap < bottom_swap < 1.0


@pytest.mark.parametrize("seed", range(4))
def test_weighted_tau_matches_slow_reference_and_scipy(seed):
    rng = np.random.default_rng(seed)
    m = 9
    x = rng.standard_normal(m)
    y = x + rng.standard_normal(m)
    if seed >= 2:  # ties in one or both
        x = np.round(x)
        y = np.round(y) if seed == 3 else y
    # Same sums in a different order: roundoff of ~36 terms.
    assert weighted_kendall_tau(x, y) == pytest.approx(ref_weighted_tau(list(x), list(y)), abs=1e-12)
    assert weighted_kendall_tau(x, y) == pytest.approx(stats.weightedtau(x, y).statistic, abs=1e-15)
    assert weighted_kendall_tau(y, x) == pytest.approx(weighted_kendall_tau(x, y), abs=1e-15)  # symmetric
    assert pearson_correlation(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)


def test_correlation_errors():
    with pytest.raises(DataError, match="accuracies: all 3 values are equal"):
        weighted_kendall_tau([1, 2, 3], [0.5, 0.5, 0.5])
    with pytest.raises(DataError, match="scores: all"):
        pearson_correlation([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="same number"):
        weighted_kendall_tau([1, 2, 3], [0.1, 0.2])
    with pytest.raises(DataError, match="at least 2"):
        weighted_kendall_tau([1], [0.1])


ACC = {"a": 0.9, "b": 0.8, "c": 0.7}
# Scores of predictors P and Q for candidates (a, b, c) in four setups (2 targets x 2 sizes):
# P: perfect, perfect, perfect, reversed -> tau 1, 1, 1, -1.
# Q: perfect, (3, 1, 2) -> 6/11, reversed, perfect -> tau 1, 6/11, -1, 1.
SCORES = {
    ("t1", 10): {"P": (3, 2, 1), "Q": (3, 2, 1)},
    ("t1", 20): {"P": (3, 2, 1), "Q": (3, 1, 2)},
    ("t2", 10): {"P": (3, 2, 1), "Q": (1, 2, 3)},
    ("t2", 20): {"P": (1, 2, 3), "Q": (3, 2, 1)},
}


def tiny_rows():
    rows = []
    for (target, size), scores in SCORES.items():
        for i, source in enumerate("abc"):
            rows.append({"target": target, "target_size": size, "source": source, "accuracy": ACC[source],
                         "P": scores["P"][i], "Q": scores["Q"][i]})
    return rows


def test_stability_report_on_a_hand_computable_table():
    report = stability_report(tiny_rows(), ["P", "Q"], group=("target", "target_size"))
    assert report.setups[1] == {"target": "t1", "target_size": 20}
    expected = np.array([[1, 1], [1, 6 / 11], [1, -1], [-1, 1]])
    assert np.allclose(report.values, expected, rtol=0, atol=1e-12)  # roundoff of 3-element sums
    # P: mean (1 + 1 + 1 - 1)/4 = 0.5, deviations (.5, .5, .5, -1.5): SD sqrt(3/3) = 1.
    assert report.mean == pytest.approx([0.5, (1 + 6 / 11) / 4], abs=1e-12)
    assert report.sd[0] == pytest.approx(1.0, abs=1e-12)
    q = dict(zip(report.quantile_levels, report.quantiles[:, 0], strict=True))
    # P sorted: (-1, 1, 1, 1); linear interpolation at 0.25 * 3 = 0.75 -> -1 + 0.75 * 2 = 0.5.
    assert q[0.25] == pytest.approx(0.5, abs=1e-12) and q[0.5] == pytest.approx(1.0, abs=1e-12)
    # Wins: setup 1 is a tie (half each), setup 2 and 3 go to P, setup 4 to Q.
    assert report.win_fraction == pytest.approx([2.5 / 4, 1.5 / 4], abs=1e-15)
    rows = report.rows()
    assert rows[0]["predictor"] == "P" and rows[0]["win_fraction"] == pytest.approx(0.625, abs=1e-15)
    assert set(rows[1]) == {"predictor", "mean", "sd", "q0.05", "q0.25", "q0.5", "q0.75", "q0.95", "win_fraction"}


def test_correlation_table_and_pearson_statistic():
    table = correlation_table(tiny_rows(), ["P", "Q"], group=("target", "target_size"))
    assert len(table) == 8 and table[3]["predictor"] == "Q" and table[3]["n_candidates"] == 3
    # Q in setup (t1, 20): scores (3, 1, 2) vs accuracies (.9, .8, .7). By hand, the centred
    # cross-product (1)(.1) + (-1)(0) + (0)(-.1) = .1 over sqrt(2 * .02) = .2 gives r = 0.5.
    assert table[3]["pearson"] == pytest.approx(0.5, abs=1e-12)
    assert table[3]["weighted_tau"] == pytest.approx(6 / 11, abs=1e-12)
    report = stability_report(tiny_rows(), ["P", "Q"], group=("target", "target_size"), statistic="pearson")
    assert report.values[1, 1] == pytest.approx(0.5, abs=1e-12)


def test_stability_report_errors():
    rows = tiny_rows()
    with pytest.raises(DataError, match="candidate 'a' appears twice"):
        stability_report(rows, ["P", "Q"], group=("target",))  # the two sizes collapse into one setup
    with pytest.raises(DataError, match="at least 2 setups"):
        stability_report(rows[:3], ["P"], group=("target", "target_size"))
    flat = [dict(r, accuracy=0.5) if r["target"] == "t2" and r["target_size"] == 10 else r for r in rows]
    with pytest.raises(DataError, match=r"setup \{'target': 't2', 'target_size': 10\}, predictor 'P': accuracies"):
        stability_report(flat, ["P"], group=("target", "target_size"))
    with pytest.raises(DataError, match="no column 'R'"):
        stability_report(rows, ["R"], group=("target", "target_size"))
    with pytest.raises(DataError, match="must be a finite number"):
        stability_report([dict(r, P=float("nan")) for r in rows], ["P"], group=("target", "target_size"))
    with pytest.raises(ConfigError, match="distinct"):
        stability_report(rows, ["P", "P"], group=("target", "target_size"))
    with pytest.raises(ConfigError, match="statistic"):
        stability_report(rows, ["P"], group=("target", "target_size"), statistic="spearman")
