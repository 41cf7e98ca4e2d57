"""Divergences and distances between two samples ``X (n, d)`` and ``Y (m, d)`` in the same space.

Gaussian-fit KL, k-NN KL estimator, MMD^2 (unbiased / biased / linear-time, RBF kernel), exact
Wasserstein W_p for equal-size samples (and any sizes in 1-D), sliced Wasserstein, Bures-Wasserstein
between Gaussian fits, energy distance, and the analytic KL of the linear-Gaussian task family.
Definitions and sources: each docstring (bibliography: ``docs/references.md``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import linalg, optimize
from scipy.spatial.distance import cdist

from transferlab.errors import DataError
from transferlab.measures._geometry import knn, median_distance, pairwise_sum
from transferlab.measures._validate import (
    as_matrix,
    check_choice,
    check_int,
    check_real,
    check_same_features,
)

__all__ = [
    "gaussian_kl",
    "gaussian_kl_from_moments",
    "knn_kl",
    "mmd2",
    "wasserstein_distance",
    "sliced_wasserstein_distance",
    "bures_wasserstein_distance",
    "energy_distance",
    "linear_gaussian_kl",
]


def _samples(x: Any, y: Any, min_samples: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x = as_matrix(x, "X", min_samples=min_samples)
    y = as_matrix(y, "Y", min_samples=min_samples)
    check_same_features(x, y)
    return x, y


# ----------------------------------------------------------------------------- Gaussian KL


def _cholesky(cov: np.ndarray, name: str) -> np.ndarray:
    if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12 * float(np.max(np.abs(cov), initial=0.0))):
        raise DataError(f"{name}: a covariance matrix must be symmetric")
    try:
        chol = linalg.cholesky(cov, lower=True)
    except linalg.LinAlgError:
        chol = None
    if chol is None or np.min(np.diag(chol)) <= np.sqrt(np.finfo(float).eps) * np.sqrt(np.max(np.diag(cov))):
        raise DataError(
            f"{name}: covariance is singular (constant or collinear features, or n <= d); "
            "the Gaussian KL is infinite/undefined (for fitted covariances, pass regularization > 0 or reduce "
            "the features)"
        )
    return chol


def gaussian_kl_from_moments(mean_p: Any, cov_p: Any, mean_q: Any, cov_q: Any) -> float:
    """``KL(N(mu_p, S_p) || N(mu_q, S_q))`` in nats:
    ``1/2 [tr(S_q^{-1} S_p) + (mu_q - mu_p)^T S_q^{-1} (mu_q - mu_p) - d + log det S_q - log det S_p]``.
    """
    mean_p = as_matrix(mean_p, "mean_p", min_samples=1)[:, 0]
    mean_q = as_matrix(mean_q, "mean_q", min_samples=1)[:, 0]
    cov_p = as_matrix(cov_p, "cov_p", min_samples=1, allow_1d=False)
    cov_q = as_matrix(cov_q, "cov_q", min_samples=1, allow_1d=False)
    d = mean_p.size
    if mean_q.size != d or cov_p.shape != (d, d) or cov_q.shape != (d, d):
        raise DataError(
            f"inconsistent moments: mean_p {mean_p.shape}, cov_p {cov_p.shape}, mean_q {mean_q.shape}, cov_q {cov_q.shape}"
        )
    lp = _cholesky(cov_p, "cov_p")
    lq = _cholesky(cov_q, "cov_q")
    a = linalg.solve_triangular(lq, lp, lower=True)  # L_q^{-1} L_p: tr(S_q^-1 S_p) = ||a||_F^2
    b = linalg.solve_triangular(lq, mean_q - mean_p, lower=True)
    logdet = 2.0 * (np.sum(np.log(np.diag(lq))) - np.sum(np.log(np.diag(lp))))
    return float(max(0.5 * (np.sum(a * a) + b @ b - d + logdet), 0.0))


def _shrunk_cov(x: np.ndarray, regularization: float) -> np.ndarray:
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    if regularization:
        d = cov.shape[0]
        cov = (1.0 - regularization) * cov + regularization * np.trace(cov) / d * np.eye(d)
    return cov


def gaussian_kl(x: Any, y: Any, *, regularization: float = 0.0) -> float:
    """``KL(N_X || N_Y)`` between Gaussians fitted (mean, unbiased covariance) to ``X (n, d)``, ``Y (m, d)``.

    ``regularization`` in ``[0, 1)`` shrinks each covariance toward ``tr(S)/d I``. Invariant to any
    invertible affine map applied to both samples; not symmetric.

    Raises:
        DataError: singular fitted covariance (``n <= d``, constant or collinear features).
    """
    reg = check_real(regularization, "regularization", low=0.0, high=1.0, high_open=True)
    x, y = _samples(x, y)
    return gaussian_kl_from_moments(x.mean(axis=0), _shrunk_cov(x, reg), y.mean(axis=0), _shrunk_cov(y, reg))


def linear_gaussian_kl(beta_s: Any, beta_t: Any, sigma: float) -> float:
    """Analytic KL between the tasks ``p_s(x, y) = p(x) N(y; x.beta_s, sigma^2)`` and ``p_t`` for
    ``x ~ N(0, I)``: ``KL(p_s || p_t) = ||beta_s - beta_t||^2 / (2 sigma^2)`` (paper 1, App. A). For
    unit-norm teachers at angle ``theta`` this is :func:`transferlab.theory.fate.task_kl`.
    """
    bs = as_matrix(beta_s, "beta_s", min_samples=1)[:, 0]
    bt = as_matrix(beta_t, "beta_t", min_samples=1)[:, 0]
    if bs.shape != bt.shape:
        raise DataError(f"beta_s and beta_t must have the same length; got {bs.shape} and {bt.shape}")
    sigma = check_real(sigma, "sigma", low=0.0, low_open=True)
    diff = bs - bt
    return float(diff @ diff / (2.0 * sigma * sigma))


# ----------------------------------------------------------------------------- k-NN KL


def knn_kl(x: Any, y: Any, k: int = 1) -> float:
    """k-NN estimator of ``KL(P || Q)`` from ``X ~ P (n, d)`` and ``Y ~ Q (m, d)`` (Wang, Kulkarni,
    Verdu 2009): ``(d/n) sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1))``, with ``rho_k(i)`` the
    distance from ``x_i`` to its k-th neighbour in ``X \\ {x_i}`` and ``nu_k(i)`` to its k-th
    neighbour in ``Y``. Consistent, not unbiased; may be slightly negative for ``P = Q``.

    Raises:
        DataError: a zero distance (duplicate points in X, or a point of X that also lies in Y).
    """
    x, y = _samples(x, y)
    k = check_int(k, "k", low=1, high=min(x.shape[0] - 1, y.shape[0]))
    n, d = x.shape
    m = y.shape[0]
    rho = knn(x, k)[0][:, -1]
    nu = knn(x, k, reference=y)[0][:, -1]
    if np.any(rho == 0.0):
        raise DataError(f"X: has duplicate points (a {k}-th neighbour distance is 0); the k-NN KL is undefined")
    if np.any(nu == 0.0):
        raise DataError("X and Y share points (a neighbour distance to Y is 0); the k-NN KL is undefined")
    return float(d * np.mean(np.log(nu / rho)) + np.log(m / (n - 1)))


# ----------------------------------------------------------------------------- MMD


def mmd2(
    x: Any,
    y: Any,
    *,
    sigma: float | None = None,
    estimator: Literal["unbiased", "biased", "linear"] = "unbiased",
) -> float:
    """Squared maximum mean discrepancy with the RBF kernel ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))``.

    ``MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)`` (Gretton et al. 2012) estimated from
    ``X (n, d)`` and ``Y (m, d)``:

    - ``"unbiased"``: U-statistic, ``i != j`` in the within-sample sums (may be slightly negative);
    - ``"biased"``: V-statistic (all pairs), always ``>= 0``; its square root is a metric;
    - ``"linear"``: linear-time ``(1/P) sum_p h_p`` over ``P = floor(min(n, m)/2)`` disjoint pairs,
      ``h_p = k(x_{2p}, x_{2p+1}) + k(y_{2p}, y_{2p+1}) - k(x_{2p}, y_{2p+1}) - k(x_{2p+1}, y_{2p})``;
      unbiased, higher variance, ``O(n)`` time; uses the rows in the order given.

    ``sigma=None`` takes the median pairwise distance of the pooled sample, computed on evenly spaced
    rows (1000-2000 of each sample, at most 2000 pooled). Quadratic estimators use
    ``O(block * (n + m))`` memory.
    """
    estimator = check_choice(estimator, "estimator", ("unbiased", "biased", "linear"))
    x, y = _samples(x, y)
    if sigma is None:
        sigma = median_distance(np.vstack([x[:: max(1, x.shape[0] // 1000)], y[:: max(1, y.shape[0] // 1000)]]))
    else:
        sigma = check_real(sigma, "sigma", low=0.0, low_open=True)
    gamma = 1.0 / (2.0 * float(sigma) ** 2)
    n, m = x.shape[0], y.shape[0]
    if estimator == "linear":
        pairs = min(n, m) // 2
        if pairs < 1:
            raise DataError("linear-time MMD needs at least 2 samples in X and Y")
        x1, x2 = x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2]
        y1, y2 = y[0 : 2 * pairs : 2], y[1 : 2 * pairs : 2]

        def k(a, b):
            diff = a - b
            return np.exp(-gamma * np.einsum("ij,ij->i", diff, diff))

        return float(np.mean(k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)))
    def kernel(d2: np.ndarray) -> np.ndarray:
        return np.exp(-gamma * d2)

    kxx = pairwise_sum(x, None, kernel)
    kyy = pairwise_sum(y, None, kernel)
    kxy = pairwise_sum(x, y, kernel)
    if estimator == "biased":
        return float(max(kxx / n**2 + kyy / m**2 - 2.0 * kxy / (n * m), 0.0))
    return float((kxx - n) / (n * (n - 1)) + (kyy - m) / (m * (m - 1)) - 2.0 * kxy / (n * m))


# ----------------------------------------------------------------------------- Wasserstein


def _wasserstein_1d(u: np.ndarray, v: np.ndarray, p: float) -> float:
    """``W_p^p`` between the empirical laws of 1-D samples ``u (n,)`` and ``v (m,)`` via quantiles:
    ``int_0^1 |F_u^{-1}(t) - F_v^{-1}(t)|^p dt`` (exact for any sizes)."""
    u = np.sort(u)
    v = np.sort(v)
    n, m = u.size, v.size
    if n == m:
        return float(np.mean(np.abs(u - v) ** p))
    t = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    t[-1] = 1.0
    widths = np.diff(np.concatenate([[0.0], t]))
    mids = t - widths / 2.0
    iu = np.minimum(np.floor(mids * n).astype(np.intp), n - 1)
    iv = np.minimum(np.floor(mids * m).astype(np.intp), m - 1)
    return float(np.sum(widths * np.abs(u[iu] - v[iv]) ** p))


def wasserstein_distance(x: Any, y: Any, p: float = 1) -> float:
    """Exact Wasserstein distance ``W_p`` (Euclidean ground metric) between empirical distributions.

    For equal sizes ``X (n, d)``, ``Y (n, d)`` an optimal coupling is a permutation (Birkhoff), so
    ``W_p^p = min_sigma (1/n) sum_i |x_i - y_sigma(i)|^p``, solved exactly by the Jonker-Volgenant
    assignment (``scipy.optimize.linear_sum_assignment``), ``O(n^3)`` time, ``O(n^2)`` memory.
    One-dimensional samples of any sizes use the quantile formula. Other unequal sizes raise
    :class:`DataError` (use :func:`sliced_wasserstein_distance` or POT's ``ot.emd2``).
    A metric; scales linearly with isotropic scaling.
    """
    p = check_real(p, "p", low=1.0)
    x, y = _samples(x, y, min_samples=1)
    if x.shape[1] == 1:
        return float(_wasserstein_1d(x[:, 0], y[:, 0], p) ** (1.0 / p))
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"exact W_{p} in d > 1 needs equal sample sizes (got {x.shape[0]} and {y.shape[0]}); "
            "subsample to equal sizes or use sliced_wasserstein_distance"
        )
    cost = cdist(x, y)
    if p != 1:
        cost **= p
    rows, cols = optimize.linear_sum_assignment(cost)
    return float(np.mean(cost[rows, cols]) ** (1.0 / p))


def sliced_wasserstein_distance(
    x: Any,
    y: Any,
    *,
    n_projections: int = 256,
    p: float = 1,
    seed: int = 0,
) -> float:
    """Monte-Carlo sliced Wasserstein distance ``SW_p = (mean_theta W_p^p(X theta, Y theta))^{1/p}``.

    ``n_projections`` directions ``theta`` uniform on the unit sphere, drawn from ``seed`` (same seed,
    same directions: then it is an exact pseudo-metric, triangle inequality included). Each 1-D
    ``W_p`` is exact (sorting). ``O(L (n + m) (d + log n))`` for ``L`` projections; any sample sizes.
    """
    p = check_real(p, "p", low=1.0)
    n_projections = check_int(n_projections, "n_projections", low=1)
    x, y = _samples(x, y, min_samples=1)
    d = x.shape[1]
    theta = np.random.default_rng(seed).standard_normal((d, n_projections))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    px, py = x @ theta, y @ theta
    if px.shape[0] == py.shape[0]:
        wpp = np.mean(np.abs(np.sort(px, axis=0) - np.sort(py, axis=0)) ** p, axis=0)
    else:
        wpp = np.array([_wasserstein_1d(px[:, j], py[:, j], p) for j in range(n_projections)])
    return float(np.mean(wpp) ** (1.0 / p))


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def bures_wasserstein_distance(x: Any, y: Any) -> float:
    """``W_2`` between Gaussians fitted to ``X (n, d)`` and ``Y (m, d)`` (mean, unbiased covariance):

    ``W_2^2 = |mu_x - mu_y|^2 + tr(S_x) + tr(S_y) - 2 tr((S_x^{1/2} S_y S_x^{1/2})^{1/2})``.
    Well defined for singular covariances. A metric on Gaussians; ``O((n + m) d^2 + d^3)``.
    """
    x, y = _samples(x, y)
    sx = np.atleast_2d(np.cov(x, rowvar=False))
    sy = np.atleast_2d(np.cov(y, rowvar=False))
    r = _psd_sqrt(sx)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ sy @ r), 0.0, None)).sum()
    diff = x.mean(axis=0) - y.mean(axis=0)
    return float(np.sqrt(max(diff @ diff + np.trace(sx) + np.trace(sy) - 2.0 * cross, 0.0)))


# ----------------------------------------------------------------------------- energy


def energy_distance(x: Any, y: Any) -> float:
    """Energy distance (Szekely & Rizzo) between the empirical laws of ``X (n, d)`` and ``Y (m, d)``:

    ``sqrt(2 E|X - Y| - E|X - X'| - E|Y - Y'|)`` with all pairs averaged (V-statistic; equals
    ``scipy.stats.energy_distance`` in 1-D). A metric; ``O(nm d)`` time in row blocks.
    """
    x, y = _samples(x, y, min_samples=1)
    n, m = x.shape[0], y.shape[0]
    exy = pairwise_sum(x, y, np.sqrt, exact=True)
    exx = pairwise_sum(x, None, np.sqrt, exact=True)
    eyy = pairwise_sum(y, None, np.sqrt, exact=True)
    value = 2.0 * exy / (n * m) - exx / n**2 - eyy / m**2
    return float(np.sqrt(max(value, 0.0)))
