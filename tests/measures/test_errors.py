"""Degenerate input gets one clear DataError / ConfigError (never a NaN)."""

from __future__ import annotations

import numpy as np
import pytest

import transferlab.measures as M
from transferlab.errors import ConfigError, DataError


@pytest.fixture
def xy(rng):
    return rng.standard_normal((30, 4)), rng.standard_normal((30, 3))


@pytest.mark.parametrize("fn", [M.cka_similarity, M.cca_similarity, M.procrustes_distance, M.rsa_similarity,
                                M.knn_overlap, M.information_imbalance])
def test_mismatched_sample_counts(fn, xy):
    x, y = xy
    with pytest.raises(DataError, match="same number of samples"):
        fn(x, y[:20])


@pytest.mark.parametrize("fn", [M.gaussian_kl, M.mmd2, M.wasserstein_distance, M.energy_distance,
                                M.bures_wasserstein_distance, M.sliced_wasserstein_distance, M.knn_kl])
def test_mismatched_feature_counts(fn, xy):
    with pytest.raises(DataError, match="same number of features"):
        fn(*xy)


@pytest.mark.parametrize("fn", [M.cka_similarity, M.cca_similarity, M.procrustes_distance, M.rsa_similarity])
def test_non_finite_input_named(fn, xy):
    x, y = xy
    x = x.copy()
    x[3, 1] = np.nan
    with pytest.raises(DataError, match="X: contains 1 NaN"):
        fn(x, y)


def test_too_few_samples():
    one = np.ones((1, 3))
    for fn in (M.cka_similarity, M.cca_similarity, M.procrustes_distance):
        with pytest.raises(DataError, match="at least 2 samples"):
            fn(one, one)
    with pytest.raises(DataError, match="at least 4 samples"):
        M.cka_similarity(np.eye(3), np.eye(3), debiased=True)
    with pytest.raises(DataError, match="at least 3"):
        M.twonn_dimension(np.eye(2))


def test_wrong_dimensionality():
    with pytest.raises(DataError, match="2-D"):
        M.cka_similarity(np.zeros((2, 3, 4)), np.zeros((2, 3)))


def test_constant_features(rng):
    const = np.ones((30, 3))
    x = rng.standard_normal((30, 3))
    with pytest.raises(DataError, match="constant"):
        M.cka_similarity(const, x)
    with pytest.raises(DataError, match="constant"):
        M.procrustes_distance(x, const)
    partly = np.hstack([x, np.ones((30, 1))])
    assert np.isfinite(M.cka_similarity(partly, x))  # a constant column is harmless for CKA
    with pytest.raises(DataError, match="rank deficient"):
        M.cca_similarity(partly, x)
    assert np.isfinite(M.cca_similarity(partly, x, regularization=0.1))
    with pytest.raises(DataError, match="singular"):
        M.gaussian_kl(partly, partly + 1)
    with pytest.raises(DataError, match="singular"):
        M.h_score(partly, np.arange(30) % 2)
    assert np.isfinite(M.h_score(partly, np.arange(30) % 2, shrinkage="ledoit-wolf"))
    with pytest.raises(DataError, match="constant"):
        M.feature_overlap(x, np.ones(30))


def test_cca_needs_more_samples_than_features(rng):
    x, y = rng.standard_normal((5, 8)), rng.standard_normal((5, 3))
    with pytest.raises(DataError, match="n - 1 > p"):
        M.cca_similarity(x, y)
    with pytest.raises(DataError, match="interpolates"):
        M.feature_overlap(x, rng.standard_normal(5))


def test_duplicate_points(rng):
    x = rng.standard_normal((20, 2))
    dup = np.vstack([x, x[:3]])
    with pytest.raises(DataError, match="duplicate"):
        M.knn_kl(dup, rng.standard_normal((20, 2)))
    with pytest.raises(DataError, match="share points"):
        M.knn_kl(x, x[:10])
    assert M.twonn_dimension(dup) == pytest.approx(M.twonn_dimension(x), rel=1e-12)  # duplicates dropped
    assert M.knn_overlap(dup, dup.copy(), k=3) == 1.0  # tied distances are broken the same way in both


def test_identical_rows_have_no_neighbourhoods(rng):
    same, y = np.ones((10, 2)), rng.standard_normal((10, 3))
    for call in (lambda: M.knn_overlap(same, y, k=3), lambda: M.information_imbalance(same, y),
                 lambda: M.knn_label_overlap(same, np.arange(10) % 2, k=3)):
        with pytest.raises(DataError, match="all rows are identical"):
            call()


def test_logme_refuses_exactly_fitted_and_zero_targets(rng):
    x = rng.standard_normal((50, 4))
    with pytest.raises(DataError, match="exactly"):
        M.logme_score(x, x @ np.array([1.0, 2.0, 3.0, 4.0]), task="regression")
    labels = rng.integers(0, 5, 50)
    with pytest.raises(DataError, match="exactly"):
        M.logme_score(np.eye(5)[labels], labels)  # features that encode the labels
    with pytest.raises(DataError, match="all zero"):
        M.logme_score(x, np.c_[rng.standard_normal(50), np.zeros(50)], task="regression")


def test_gaussian_kl_from_moments_needs_symmetric_covariances():
    with pytest.raises(DataError, match="symmetric"):
        M.gaussian_kl_from_moments([0, 0], [[1, 5], [0, 1]], [0, 0], np.eye(2))


def test_unequal_sizes_for_exact_wasserstein(rng):
    with pytest.raises(DataError, match="equal sample sizes"):
        M.wasserstein_distance(rng.standard_normal((10, 2)), rng.standard_normal((12, 2)))


def test_bad_options(xy):
    x, y = xy
    with pytest.raises(ConfigError, match="kernel"):
        M.cka_similarity(x, y, kernel="poly")
    with pytest.raises(ConfigError, match="variant"):
        M.cca_similarity(x, y, variant="max")
    with pytest.raises(ConfigError, match="k must be"):
        M.knn_overlap(x, y, k=30)
    with pytest.raises(DataError, match="probability"):
        M.leep_score(np.ones((30, 2)), np.arange(30) % 2)
    with pytest.raises(DataError, match="labels"):
        M.logme_score(x, np.arange(29) % 2)
    with pytest.raises(ConfigError, match="unknown measure"):
        M.get_measure("nope")


@pytest.mark.parametrize("call", [
    lambda x: M.mmd2(x, x + 1, sigma="1"),
    lambda x: M.wasserstein_distance(x, x, p="2"),
    lambda x: M.sliced_wasserstein_distance(x, x, p=0.5),
    lambda x: M.cka_similarity(x, x, kernel="rbf", sigma=-1.0),
    lambda x: M.cka_similarity(x, x, debiased="yes"),
])
def test_bad_option_types_are_config_errors(rng, call):
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError):
        call(rng.standard_normal((12, 3)))
