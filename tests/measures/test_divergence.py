"""Divergences: POT and scipy references, Gaussian closed forms, estimator unbiasedness."""

from __future__ import annotations

import numpy as np
import pytest
from measures_testdata import random_orthogonal, two_samples
from scipy import stats

from transferlab.measures import (
    bures_wasserstein_distance,
    energy_distance,
    gaussian_kl,
    gaussian_kl_from_moments,
    knn_kl,
    linear_gaussian_kl,
    mmd2,
    sliced_wasserstein_distance,
    wasserstein_distance,
)


def exact_moments(rng, n, mean, cov):
    """A sample whose sample mean and unbiased sample covariance equal ``mean`` and ``cov`` exactly."""
    d = len(mean)
    z = rng.standard_normal((n, d))
    z -= z.mean(0)
    w = np.linalg.cholesky(np.cov(z, rowvar=False))
    z = np.linalg.solve(w, z.T).T  # sample covariance I
    return z @ np.linalg.cholesky(cov).T + mean


@pytest.mark.parametrize("p", [1, 2])
def test_exact_wasserstein_matches_pot(rng, p):
    ot = pytest.importorskip("ot")
    x, y = two_samples(rng, 40, 3)
    cost = ot.dist(x, y, metric="euclidean") ** p
    ref = ot.emd2(np.full(40, 1 / 40), np.full(40, 1 / 40), cost) ** (1 / p)
    # Both solvers are exact LP optima; agreement to roundoff of a 40-term mean.
    assert wasserstein_distance(x, y, p=p) == pytest.approx(ref, rel=1e-9)


def test_exact_wasserstein_matches_brute_force_permutations(rng):
    from itertools import permutations

    x, y = rng.standard_normal((6, 2)), rng.standard_normal((6, 2)) + 1
    cost = np.linalg.norm(x[:, None] - y[None], axis=2)
    ref = min(cost[np.arange(6), list(perm)].mean() for perm in permutations(range(6)))
    assert wasserstein_distance(x, y) == pytest.approx(ref, rel=1e-12)


def test_one_dimensional_wasserstein_and_energy_match_scipy(rng):
    u, v = rng.standard_normal(37), 2.0 * rng.standard_normal(23) + 0.5
    assert wasserstein_distance(u, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-10)
    assert energy_distance(u, v) == pytest.approx(stats.energy_distance(u, v), rel=1e-9)
    w2_ref = pytest.importorskip("ot").wasserstein_1d(u, v, p=2) ** 0.5
    assert wasserstein_distance(u, v, p=2) == pytest.approx(w2_ref, rel=1e-9)


def test_sliced_wasserstein_matches_pot_with_the_same_directions(rng):
    ot = pytest.importorskip("ot")
    x, y = two_samples(rng, 30, 3)
    theta = np.random.default_rng(7).standard_normal((3, 50))
    theta /= np.linalg.norm(theta, axis=0)
    ref = np.mean([ot.wasserstein_1d(x @ t, y @ t, p=1) for t in theta.T])
    assert sliced_wasserstein_distance(x, y, n_projections=50, seed=7) == pytest.approx(ref, rel=1e-9)
    # Unequal sizes go through the quantile path.
    assert sliced_wasserstein_distance(x, y[:21], n_projections=50, seed=7) == pytest.approx(
        np.mean([stats.wasserstein_distance(x @ t, y[:21] @ t) for t in theta.T]), rel=1e-9
    )


def test_sliced_wasserstein_lower_bounds_w1(rng):
    x, y = two_samples(rng, 40, 3)
    assert sliced_wasserstein_distance(x, y) <= wasserstein_distance(x, y)


def test_gaussian_closed_forms_with_exact_sample_moments(rng):
    d = 3
    m1, m2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, 0.0])
    a = rng.standard_normal((d, d))
    c1, c2 = a @ a.T + np.eye(d), np.diag([1.0, 2.0, 0.5])
    x, y = exact_moments(rng, 20, m1, c1), exact_moments(rng, 30, m2, c2)
    ic2 = np.linalg.inv(c2)
    kl = 0.5 * (np.trace(ic2 @ c1) + (m2 - m1) @ ic2 @ (m2 - m1) - d + np.log(np.linalg.det(c2) / np.linalg.det(c1)))
    assert gaussian_kl(x, y) == pytest.approx(kl, rel=1e-9)
    assert gaussian_kl_from_moments(m1, c1, m2, c2) == pytest.approx(kl, rel=1e-12)
    from scipy.linalg import sqrtm

    r = sqrtm(c1).real
    w2 = np.sqrt(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * sqrtm(r @ c2 @ r).real))
    assert bures_wasserstein_distance(x, y) == pytest.approx(w2, rel=1e-9)
    # Isotropic closed form: W2(N(m1, s1^2 I), N(m2, s2^2 I))^2 = |m1 - m2|^2 + d (s1 - s2)^2.
    xi, yi = exact_moments(rng, 15, m1, 4.0 * np.eye(d)), exact_moments(rng, 15, m2, 0.25 * np.eye(d))
    assert bures_wasserstein_distance(xi, yi) == pytest.approx(np.sqrt(np.sum((m1 - m2) ** 2) + d * 1.5**2), rel=1e-9)


def test_bures_matches_pot(rng):
    ot = pytest.importorskip("ot")
    x, y = two_samples(rng, 50, 4)
    ref = ot.gaussian.bures_wasserstein_distance(x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False))
    assert bures_wasserstein_distance(x, y) == pytest.approx(float(ref), rel=1e-7)


def test_knn_kl_converges_to_gaussian_kl():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 2))
    y = rng.standard_normal((2000, 2)) * np.array([1.0, 2.0]) + np.array([1.0, 0.0])
    truth = gaussian_kl_from_moments(np.zeros(2), np.eye(2), np.array([1.0, 0.0]), np.diag([1.0, 4.0]))
    # truth = 0.5 * (1 + 0.25 + 1 - 2 + log 4) = 0.818; k-NN KL at n = 2000 has sd ~ 0.05 here (MC error).
    assert knn_kl(x, y, k=5) == pytest.approx(truth, abs=0.15)


def test_mmd_estimators_against_explicit_sums(rng):
    x, y = two_samples(rng, 20, 3)
    sigma = 1.3
    from scipy.spatial.distance import cdist

    def k(a, b):
        return np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n = 20
    unbiased = (kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - n) / (n * (n - 1)) - 2 * kxy.mean()
    biased = kxx.mean() + kyy.mean() - 2 * kxy.mean()
    assert mmd2(x, y, sigma=sigma) == pytest.approx(unbiased, rel=1e-10)
    assert mmd2(x, y, sigma=sigma, estimator="biased") == pytest.approx(biased, rel=1e-10)
    assert mmd2(x, x, sigma=sigma, estimator="biased") == pytest.approx(0.0, abs=1e-12)


def test_linear_time_mmd_is_unbiased_around_the_quadratic_estimator(rng):
    x, y = two_samples(rng, 40, 3)
    sigma = 1.5
    target = mmd2(x, y, sigma=sigma)
    reps = 2000
    vals = np.array([
        mmd2(x[rng.permutation(40)], y[rng.permutation(40)], sigma=sigma, estimator="linear") for _ in range(reps)
    ])
    # Over uniformly random orderings, E[linear estimate] equals the U-statistic exactly; 5 standard
    # errors of the Monte-Carlo mean is the tolerance.
    assert vals.mean() == pytest.approx(target, abs=5 * vals.std() / np.sqrt(reps))


def test_energy_distance_brute_force(rng):
    x, y = two_samples(rng, 15, 3)
    from scipy.spatial.distance import cdist

    ref = np.sqrt(2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean())
    assert energy_distance(x, y) == pytest.approx(ref, rel=1e-10)


def test_linear_gaussian_task_kl_numbers():
    # KL = (1 - cos theta)/sigma^2 (Tahir et al. 2024, App. A):
    # 0 / 7.32 / 25 / 50 at theta = 0, pi/4, pi/2, pi with sigma = 0.2,
    # from unit teachers built at those angles (the angle form is transferlab.theory.fate.task_kl).
    q = random_orthogonal(np.random.default_rng(1), 5)
    vals = [linear_gaussian_kl(q[:, 0], np.cos(t) * q[:, 0] + np.sin(t) * q[:, 1], 0.2)
            for t in (0, np.pi / 4, np.pi / 2, np.pi)]
    assert vals == pytest.approx([0.0, 7.3223, 25.0, 50.0], abs=1e-4)
