"""Fits of the transfer law: exact recovery, noisy recovery, robustness, bootstrap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from transferlab.errors import ConfigError, DataError, FitError
from transferlab.scaling import (
    FIT_METHODS,
    ScalingWarning,
    TransferLaw,
    bootstrap_transfer_law,
    critical_model_size,
    fit_direct,
    fit_huber,
    fit_the_fits,
    fit_transfer_law,
)
from transferlab.scaling.fit import _batched_direct, _resample_counts

from .conftest import TRUE_ALPHA, TRUE_BETA, TRUE_K, TRUE_LOG10_K, surface_effective

TRUTH = {"alpha": TRUE_ALPHA, "beta": TRUE_BETA, "log10_k": TRUE_LOG10_K}


@pytest.mark.parametrize("method", FIT_METHODS)
def test_noise_free_surface_recovers_the_injected_law(method, clean_effective):
    """Full pipeline (scratch fit, inversion, filter, fit) on a noise-free Kaplan surface."""
    fit = fit_transfer_law(*clean_effective.points(), method=method)
    assert fit.status == "converged"
    assert fit.n_model_sizes == 9 and fit.n_points == 114
    for got, want in ((fit.k, TRUE_K), (fit.alpha, TRUE_ALPHA), (fit.beta, TRUE_BETA)):
        assert abs(got / want - 1) < 1e-6


def test_fit_the_fits_critical_sizes_follow_eq_c1(clean_effective):
    fit = fit_the_fits(*clean_effective.points())
    d_f = np.array(sorted(fit.critical_sizes))
    n_star = np.array([fit.critical_sizes[d] for d in d_f])
    np.testing.assert_allclose(n_star, critical_model_size(d_f, TransferLaw(TRUE_K, TRUE_ALPHA, TRUE_BETA)), rtol=1e-6)


def test_noisy_surface_recovery_at_0_2_percent_over_50_seeds():
    """0.2 % multiplicative loss noise, 50 seeded surfaces, all three methods.
    The issue's bounds are 0.02 / 0.02 / 0.15 (alpha / beta / log10 k; a single-seed check gave
    0.175 / 0.381 / 4.30); the worst errors are the documented 0.0056 / 0.0080 / 0.057."""
    worst = np.zeros(3)
    for seed in range(50):
        d_f, n, d_t = surface_effective(0.002, seed).points()
        assert d_f.size >= 100
        for method in FIT_METHODS:
            fit = fit_transfer_law(d_f, n, d_t, method=method)
            errors = [abs(fit.alpha - TRUE_ALPHA), abs(fit.beta - TRUE_BETA), abs(fit.log10_k - TRUE_LOG10_K)]
            worst = np.maximum(worst, errors)
    print(f"\nworst errors over 50 seeds: alpha {worst[0]:.4f}, beta {worst[1]:.4f}, log10 k {worst[2]:.3f}")
    assert np.all(worst < [0.02, 0.02, 0.15]), worst
    assert np.all(worst < [0.00565, 0.00805, 0.0575]), worst  # the documented 0.0056 / 0.0080 / 0.057


def test_huber_resists_gross_outliers_where_least_squares_does_not():
    rng = np.random.default_rng(3)
    d_f = 10 ** rng.uniform(4, 7, 60)
    n = 10 ** rng.choice(np.arange(5, 9.5, 0.5), 60)
    law = TransferLaw(TRUE_K, TRUE_ALPHA, TRUE_BETA)
    d_t = law.transferred_data(d_f, n) * np.exp(0.02 * rng.standard_normal(60))
    d_t[:4] *= 30.0  # four failed inversions
    direct, huber = fit_direct(d_f, n, d_t), fit_huber(d_f, n, d_t)
    assert abs(huber.alpha - TRUE_ALPHA) < 0.01 and abs(huber.beta - TRUE_BETA) < 0.01
    assert abs(huber.log10_k - TRUE_LOG10_K) < 0.1
    err_direct = max(abs(direct.alpha - TRUE_ALPHA), abs(direct.beta - TRUE_BETA), abs(direct.log10_k - TRUE_LOG10_K))
    assert err_direct > 0.03  # least squares is dragged; the check is not vacuous


def test_batched_bootstrap_equals_one_fit_per_resample():
    """The vectorised direct bootstrap (weighted normal equations) equals refitting each resample."""
    d_f, n, d_t = surface_effective(0.002, 0).points()
    counts = _resample_counts(np.random.default_rng(5), n, 15, "model_size")
    coef, ok = _batched_direct(d_f, n, d_t, counts)
    for c, row, good in zip(counts, coef, ok):
        if not good:
            continue
        idx = np.repeat(np.arange(n.size), c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = fit_direct(d_f[idx], n[idx], d_t[idx])
        np.testing.assert_allclose(row, [np.log(ref.k), ref.alpha, ref.beta], rtol=1e-9, atol=1e-12)


def test_model_size_resampling_draws_whole_sizes():
    n = np.repeat([1e5, 1e6, 1e7], [3, 4, 5])
    counts = _resample_counts(np.random.default_rng(0), n, 50, "model_size")
    for c in counts:
        for size in np.unique(n):
            assert np.unique(c[n == size]).size == 1  # all points of a size share the multiplicity
        assert c.sum() == sum(np.unique(c[n == s])[0] * np.sum(n == s) for s in np.unique(n))


@pytest.mark.parametrize("method", FIT_METHODS)
def test_bootstrap_interval_contains_estimate_and_is_reproducible(method):
    d_f, n, d_t = surface_effective(0.002, 1).points()
    a = bootstrap_transfer_law(d_f, n, d_t, method=method, n_boot=40, seed=3)
    b = bootstrap_transfer_law(d_f, n, d_t, method=method, n_boot=40, seed=3)
    assert a == b
    assert a.n_boot == 40 and a.level == 0.95 and a.resample == "model_size"  # the default
    for name, value in (("alpha", a.alpha), ("beta", a.beta), ("log10_k", a.log10_k)):
        lo, hi = a.intervals[name]
        assert lo < value < hi
    as_dict = a.to_dict()
    assert set(as_dict["intervals"]) == {"alpha", "beta", "log10_k"} and as_dict["log10_k"] == a.log10_k


def test_bootstrap_coverage_over_50_seeds():
    """95 % percentile intervals, 50 independent noisy surfaces (0.2 % noise), 200 resamples each.

    Measured when written (seeds 100-149): cluster (model-size) bootstrap covered alpha/beta/log10 k
    in 43/45/46 of 50 (0.86/0.90/0.92); point bootstrap 45/40/39 (0.90/0.80/0.78). The binomial standard error of a coverage estimate from 50 seeds
    is ~3 % at 0.95. Points of one model size share a fitted scratch curve, so their errors are
    correlated: resampling points ignores that and under-covers (~0.8 for beta); resampling the 9
    model sizes honours it but with few clusters percentile intervals are known to be a little
    narrow (~0.9). We assert >= 0.80 for the cluster bootstrap (nominal 0.95 minus the few-cluster
    shortfall of ~0.05 and ~3 SE) and >= 0.70 for the point bootstrap (its measured ~0.8 minus ~2 SE
    of 0.057), and print the measured values.
    """
    hits = {r: np.zeros(3) for r in ("model_size", "points")}
    n_seeds = 50
    for seed in range(n_seeds):
        d_f, n, d_t = surface_effective(0.002, 100 + seed).points()
        for resample in hits:
            fit = bootstrap_transfer_law(d_f, n, d_t, n_boot=200, resample=resample, seed=seed)
            hits[resample] += [fit.intervals[p][0] <= TRUTH[p] <= fit.intervals[p][1] for p in TRUTH]
    coverage = {r: dict(zip(TRUTH, h / n_seeds)) for r, h in hits.items()}
    print(f"\nbootstrap coverage of 95 % intervals over {n_seeds} seeds: {coverage}")
    assert min(coverage["model_size"].values()) >= 0.80, coverage
    assert min(coverage["points"].values()) >= 0.70, coverage
    # every draw is seeded: these are exactly the counts quoted in the README and fit.py's docstring
    assert hits["model_size"].tolist() == [43, 45, 46] and hits["points"].tolist() == [45, 40, 39], hits


def test_too_few_points_status_and_errors():
    law = TransferLaw(TRUE_K, TRUE_ALPHA, TRUE_BETA)
    d_f = np.array([1e4, 1e5, 1e4, 1e5, 1e6, 1e6])
    n = np.array([1e6, 1e6, 1e8, 1e8, 1e6, 1e8])
    with pytest.warns(ScalingWarning, match="only 6 points over 2 model sizes"):
        fit = fit_direct(d_f, n, law.transferred_data(d_f, n))
    assert fit.status == "too_few_points"
    assert fit.alpha == pytest.approx(TRUE_ALPHA)
    with pytest.raises(FitError, match=r"1 model size\(s\)"):
        fit_direct(d_f, np.full(6, 1e6), law.transferred_data(d_f, 1e6))
    with pytest.raises(FitError, match="need >= 4 points"):
        fit_direct(d_f[:3], n[:3], law.transferred_data(d_f[:3], n[:3]))
    with pytest.raises(DataError, match=r"D_T must be finite and > 0.*model size 1e\+08"):
        fit_direct(d_f, n, np.array([1.0, 1.0, -5.0, 1.0, 1.0, 1.0]))
    with pytest.raises(DataError, match="D_T must be finite"):
        fit_huber(d_f, n, np.array([1.0, np.nan, 1.0, 1.0, 1.0, 1.0]))


def test_fit_the_fits_needs_repeated_fine_tuning_sizes():
    rng = np.random.default_rng(0)
    d_f = 10 ** rng.uniform(4, 7, 12)  # every D_F distinct: no group spans two model sizes
    n = 10 ** rng.choice([5.0, 6.0, 7.0], 12)
    with pytest.raises(FitError, match="at least one fine-tuning size"):
        fit_the_fits(d_f, n, 1e6 * np.ones(12))


def test_bad_method_and_bootstrap_arguments():
    d_f, n, d_t = surface_effective(0.002, 0).points()
    with pytest.raises(ConfigError, match="unknown fit method 'ols'"):
        fit_transfer_law(d_f, n, d_t, method="ols")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_boot"):
        bootstrap_transfer_law(d_f, n, d_t, n_boot=5)
    with pytest.raises(ConfigError, match="resample"):
        bootstrap_transfer_law(d_f, n, d_t, resample="rows")  # type: ignore[arg-type]


def test_cluster_bootstrap_with_two_sizes_warns_about_unfit_resamples():
    law = TransferLaw(TRUE_K, TRUE_ALPHA, TRUE_BETA)
    d_f = np.tile(np.logspace(4, 6, 6), 2)
    n = np.repeat([1e6, 1e8], 6)
    d_t = law.transferred_data(d_f, n) * np.exp(0.01 * np.random.default_rng(0).standard_normal(12))
    with pytest.warns(ScalingWarning) as record:
        fit = bootstrap_transfer_law(d_f, n, d_t, n_boot=100, resample="model_size")
    messages = [str(w.message) for w in record]
    assert any("resamples (model_size) could not be fitted" in m for m in messages), messages
    assert any("only 12 points over 2 model sizes" in m for m in messages), messages
    assert 20 < fit.n_boot_failed < 80  # half the draws pick one size twice
    assert fit.status == "too_few_points"
