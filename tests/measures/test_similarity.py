"""Similarity measures: fast == slow forms, independent references (scipy, scikit-learn), closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from measures_testdata import paired_representations, random_orthogonal
from scipy import linalg, stats

from transferlab.errors import DataError
from transferlab.measures import (
    LinearCKAAccumulator,
    angular_shape_distance,
    canonical_correlations,
    cca_similarity,
    cka_similarity,
    hsic,
    hsic_gram,
    information_imbalance,
    knn_label_overlap,
    knn_overlap,
    procrustes_distance,
    rsa_similarity,
)

# Different but algebraically equal float64 evaluation orders on O(1) data: 1e-10 relative.
TIGHT = 1e-10


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_feature_form_equals_gram_form(rng, debiased):
    x, y = paired_representations(rng, 40)
    fast = cka_similarity(x, y, debiased=debiased, method="feature")
    slow = cka_similarity(x, y, debiased=debiased, method="gram")
    assert fast == pytest.approx(slow, rel=TIGHT)


@pytest.mark.parametrize("debiased", [False, True])
def test_hsic_gram_matches_explicit_matrix_formula(rng, debiased):
    x, y = paired_representations(rng, 12)
    n = x.shape[0]
    k, l = x @ x.T, y @ y.T
    if debiased:  # Song et al. (2012) written out with explicit loops over index tuples' sums
        kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
        one = np.ones(n)
        ref = (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
               - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))
    else:
        h = np.eye(n) - 1.0 / n
        ref = np.trace(k @ h @ l @ h) / (n - 1) ** 2
    assert hsic_gram(k, l, debiased=debiased) == pytest.approx(ref, rel=TIGHT)
    assert hsic(x, y, debiased=debiased) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
def test_streaming_equals_one_shot(rng, debiased):
    x, y = paired_representations(rng, 57)
    acc = LinearCKAAccumulator()
    for start in range(0, 57, 10):  # uneven last batch
        acc.update(x[start : start + 10], y[start : start + 10])
    assert acc.n_samples == 57
    assert acc.cka(debiased=debiased) == pytest.approx(cka_similarity(x, y, debiased=debiased), rel=TIGHT)
    assert acc.hsic(debiased=debiased) == pytest.approx(hsic(x, y, debiased=debiased), rel=1e-9)


def test_linear_cka_closed_form_and_bounds(rng):
    x = rng.standard_normal((50, 4))
    assert cka_similarity(x, 2.0 * x @ random_orthogonal(rng, 4) + 1.0) == pytest.approx(1.0, rel=TIGHT)
    # Orthogonal column blocks of one centered matrix have zero cross-covariance: CKA = 0 exactly.
    q, _ = np.linalg.qr(rng.standard_normal((50, 6)) - 0.0)
    q = q - q.mean(axis=0)
    u, _, _ = np.linalg.svd(q, full_matrices=False)
    assert cka_similarity(u[:, :3], u[:, 3:]) == pytest.approx(0.0, abs=1e-12)
    y = rng.standard_normal((50, 3))
    assert 0.0 <= cka_similarity(x, y) <= 1.0


def test_debiased_cka_near_zero_for_independent_data(rng):
    x, y = rng.standard_normal((100, 10)), rng.standard_normal((100, 10))
    # Biased linear CKA of independent isotropic data is ~ sqrt(p q) / n = 0.1 (finite-n bias);
    # debiased CKA is centered at 0 with sd ~ sqrt(2) / n ~ 0.014, so 0.05 is > 3 sd.
    assert cka_similarity(x, y) > 0.06
    assert abs(cka_similarity(x, y, debiased=True)) < 0.05


def test_rbf_cka_with_given_sigma_matches_gram(rng):
    x, y = paired_representations(rng, 30)
    from scipy.spatial.distance import cdist

    k = np.exp(-cdist(x, x, "sqeuclidean") / (2 * 1.5**2))
    l = np.exp(-cdist(y, y, "sqeuclidean") / (2 * 1.5**2))
    ref = hsic_gram(k, l) / np.sqrt(hsic_gram(k, k) * hsic_gram(l, l))
    assert cka_similarity(x, y, kernel="rbf", sigma=1.5) == pytest.approx(ref, rel=1e-9)


def test_cca_matches_scikit_learn(rng):
    from sklearn.cross_decomposition import CCA

    x, y = paired_representations(rng, 200)
    x, y = x[:, :3], y[:, :3]
    rho = canonical_correlations(x, y)
    u, v = CCA(n_components=3, scale=False, max_iter=5000, tol=1e-12).fit(x, y).transform(x, y)
    ref = np.array([abs(np.corrcoef(u[:, i], v[:, i])[0, 1]) for i in range(3)])
    # sklearn's iterative NIPALS converges to tol 1e-12; allow 1e-6 for deflation error.
    assert np.sort(rho) == pytest.approx(np.sort(ref), abs=1e-6)


def test_cca_closed_form_from_covariance(rng):
    x, y = paired_representations(rng, 100)
    s = np.cov(np.hstack([x, y]), rowvar=False)
    sxx, syy, sxy = s[:6, :6], s[6:, 6:], s[:6, 6:]
    m = linalg.inv(linalg.sqrtm(sxx)).real @ sxy @ linalg.inv(linalg.sqrtm(syy)).real
    ref = np.linalg.svd(m, compute_uv=False)
    assert canonical_correlations(x, y) == pytest.approx(ref, abs=1e-9)
    assert cca_similarity(x, y) == pytest.approx(ref.mean(), abs=1e-9)


def test_cca_regularization_allows_n_below_d_and_tends_to_plain(rng):
    x, y = paired_representations(rng, 60)
    assert cca_similarity(x, y, regularization=1e-9) == pytest.approx(cca_similarity(x, y), abs=1e-6)
    wide = rng.standard_normal((10, 30))
    value = cca_similarity(wide, wide[:, :20] + 0.1 * rng.standard_normal((10, 20)), regularization=0.5)
    assert 0.0 < value < 1.0


def test_svcca_with_full_variance_equals_cca(rng):
    x, y = paired_representations(rng, 80)
    assert cca_similarity(x, y, "svcca", keep=1.0) == pytest.approx(cca_similarity(x, y), rel=1e-9)
    assert cca_similarity(x, y, "svcca") != pytest.approx(cca_similarity(x, y), rel=1e-3)


def test_pwcca_weights_match_the_reference_definition(rng):
    """Morcos et al.'s reference: weights from the side with fewer neurons (here Y: q=5 < p=6),
    alpha_i = sum_j |<h_i, z_j>| with h_i that side's orthonormal canonical variates."""
    x, y = paired_representations(rng, 80)
    assert x.shape[1] > y.shape[1]
    xc, yc = x - x.mean(0), y - y.mean(0)
    qx, _ = np.linalg.qr(xc)
    qy, _ = np.linalg.qr(yc)
    _, rho, bt = np.linalg.svd(qx.T @ qy, full_matrices=False)
    h = qy @ bt[:5].T
    alpha = np.abs(yc.T @ h).sum(0)
    expected = np.sum(alpha * rho[:5]) / alpha.sum()
    assert cca_similarity(x, y, "pwcca") == pytest.approx(expected, rel=1e-9)
    assert cca_similarity(y, x, "pwcca") == pytest.approx(expected, rel=1e-9)  # same side either way


@pytest.mark.parametrize("variant", ["mean", "svcca", "pwcca"])
def test_cca_refuses_n_minus_1_equal_to_features(rng, variant):
    """With n = p + 1 the centered X spans the whole sample space: every correlation would be 1."""
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    with pytest.raises(DataError, match="n - 1 > p"):
        cca_similarity(x, y, variant, keep=1.0)


def test_procrustes_matches_scipy_orthogonal_procrustes(rng):
    x, y = paired_representations(rng, 40)
    y = y[:, :5]
    xc = (x - x.mean(0)) / np.linalg.norm(x - x.mean(0))
    yc = np.hstack([(y - y.mean(0)) / np.linalg.norm(y - y.mean(0)), np.zeros((40, 1))])
    r, _ = linalg.orthogonal_procrustes(yc, xc)
    ref = np.linalg.norm(xc - yc @ r)
    assert procrustes_distance(x, y) == pytest.approx(ref, rel=1e-9)
    assert angular_shape_distance(x, y) == pytest.approx(np.arccos(1 - ref**2 / 2), rel=1e-9)


def test_procrustes_sample_space_path_equals_feature_space_path(rng):
    x = rng.standard_normal((8, 20))  # p q > n^2: sample-space formula
    y = rng.standard_normal((8, 15))
    xc = (x - x.mean(0)) / np.linalg.norm(x - x.mean(0))
    yc = (y - y.mean(0)) / np.linalg.norm(y - y.mean(0))
    ref = np.sqrt(2 - 2 * np.linalg.svd(xc.T @ yc, compute_uv=False).sum())
    assert procrustes_distance(x, y) == pytest.approx(ref, rel=1e-9)


def test_rsa_matches_scipy(rng):
    x, y = paired_representations(rng, 25)
    from scipy.spatial.distance import pdist

    ref = stats.spearmanr(pdist(x, "correlation"), pdist(y, "correlation"))[0]
    assert rsa_similarity(x, y) == pytest.approx(ref, rel=1e-9)
    ref_p = stats.pearsonr(pdist(x), pdist(y))[0]
    assert rsa_similarity(x, y, method="pearson", rdm="euclidean") == pytest.approx(ref_p, rel=1e-9)


def _sk_neighbours(x, k):
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[1][:, 1:]


def test_knn_overlap_matches_scikit_learn_neighbours(rng):
    x, y = paired_representations(rng, 70)
    k = 7
    nx, ny = _sk_neighbours(x, k), _sk_neighbours(y, k)
    ref = np.mean([len(set(a) & set(b)) / k for a, b in zip(nx, ny, strict=True)])
    assert knn_overlap(x, y, k=k) == pytest.approx(ref, rel=TIGHT)
    labels = (np.arange(70) % 3)
    ref_l = np.mean(labels[nx] == labels[:, None])
    assert knn_label_overlap(x, labels, k=k) == pytest.approx(ref_l, rel=TIGHT)


def test_information_imbalance_brute_force_and_bounds(rng):
    x, y = paired_representations(rng, 30)
    from scipy.spatial.distance import cdist

    def brute(a, b):
        da, db = cdist(a, a), cdist(b, b)
        np.fill_diagonal(da, np.inf)
        np.fill_diagonal(db, np.inf)
        total = 0
        for i in range(len(a)):
            j = np.argmin(da[i])
            total += 1 + np.sum(db[i] < db[i, j])
        return 2 * total / len(a) ** 2

    xy, yx = information_imbalance(x, y)
    assert xy == pytest.approx(brute(x, y), rel=TIGHT)
    assert yx == pytest.approx(brute(y, x), rel=TIGHT)
    # A representation predicts a noisy copy of itself far better than independent noise does.
    z = rng.standard_normal((30, 4))
    assert information_imbalance(x, x + 1e-3 * rng.standard_normal(x.shape))[0] < 0.2
    assert information_imbalance(x, z)[0] > 0.5


@pytest.mark.parametrize("debiased", [False, True])
def test_float32_inputs_match_float64_within_float32_rounding(rng, debiased):
    """float32 inputs take float32 block products (accumulated in float64). The float64 reference
    on the *same* float32 values differs only by product rounding: <= sqrt(8192) * 6e-8 ~ 5e-6
    relative per block, so 2e-5 on CKA is a safe bound that a float32 accumulation over all
    20,000 rows (error ~ n * 6e-8 ~ 1e-3 worst case) would not guarantee."""
    x = rng.standard_normal((20_000, 48)).astype(np.float32)
    y = (x[:, :32] @ rng.standard_normal((32, 40)) + rng.standard_normal((20_000, 40))).astype(np.float32)
    fast = cka_similarity(x, y, debiased=debiased, method="feature")
    exact = cka_similarity(x.astype(np.float64), y.astype(np.float64), debiased=debiased, method="feature")
    assert 0.1 < exact < 0.9
    assert fast == pytest.approx(exact, rel=2e-5)
