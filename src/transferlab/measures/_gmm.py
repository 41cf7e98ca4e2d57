"""Gaussian mixture by expectation-maximisation, seeded by k-means++ and Lloyd (numpy only).

Used by :func:`transferlab.measures.nleep_score`. The algorithm is the standard one (Dempster, Laird,
Rubin 1977) in the form scikit-learn's ``GaussianMixture`` runs it: hard k-means responsibilities
initialise the parameters, then E and M steps alternate until no posterior moves by ``tol``; a ridge ``reg`` is added to every covariance's diagonal. Unlike
scikit-learn's absolute ``reg_covar``, the callers here scale ``reg`` with the data's variance, so a
fit of ``c X`` is the fit of ``X`` scaled by ``c``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from transferlab._checks import check_int
from transferlab.errors import ConfigError, DataError
from transferlab.measures._geometry import sq_distances

__all__ = ["GaussianMixtureFit", "KMeansResult", "fit_gaussian_mixture", "kmeans", "mixture_log_densities"]

#: Added to every component's responsibility mass (as scikit-learn does), so an emptied component
#: divides by a tiny positive number instead of zero.
_MASS_FLOOR = 10.0 * np.finfo(float).eps


@dataclass(frozen=True)
class GaussianMixtureFit:
    """A fitted mixture of ``V`` Gaussians in ``p`` dimensions.

    Attributes:
        weights: ``(V,)`` mixing proportions, summing to 1.
        means: ``(V, p)`` component means.
        covariances: ``(V, p, p)`` (``"full"``) or ``(V, p)`` (``"diag"``, the variances).
        posteriors: ``(n, V)`` responsibilities ``P(v | x_i)`` of the fitted parameters.
        log_likelihood: mean log-likelihood per sample at the fitted parameters.
        n_iter: EM iterations run; ``converged``: whether the stopping rule was met.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    posteriors: np.ndarray
    log_likelihood: float
    n_iter: int
    converged: bool


@dataclass(frozen=True)
class KMeansResult:
    """A k-means clustering: ``centroids`` (K, q), ``labels`` (n,) int64, ``inertia`` (the sum of squared
    distances of the points to their centroids), ``iterations`` run and ``converged`` (the assignment
    stopped changing before ``max_iter``)."""

    centroids: np.ndarray
    labels: np.ndarray
    inertia: float
    iterations: int
    converged: bool


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, *, init: np.ndarray | None = None,
           max_iter: int = 300) -> KMeansResult:
    """Lloyd's k-means on ``x`` (n, q), from ``init`` (k, q) or k-means++ seeds (Arthur, Vassilvitskii 2007).

    Seeding: the first centre is a uniformly drawn point, each next one a point drawn with
    probability proportional to its squared distance to the nearest centre chosen so far. Lloyd
    iterations then alternate nearest-centre assignment and centre = mean of its points until the
    assignment repeats (a local minimum of the inertia sum_i |x_i - c_{l(i)}|^2); an emptied cluster
    takes the worst-fitted point of a cluster with more than one.

    Raises:
        DataError: fewer than ``k`` distinct points in ``x`` (no ``k`` distinct seeds exist).
        ConfigError: k < 1, or ``init`` not of shape (k, q).
    """
    x = np.asarray(x, dtype=np.float64)
    k = check_int(k, "k", low=1)
    n = x.shape[0]
    if n < k:
        raise DataError(f"k-means: {n} points cannot make {k} clusters")
    if init is not None and np.shape(init) != (k, x.shape[1]):
        raise ConfigError(f"k-means: init must have shape {(k, x.shape[1])}, got {np.shape(init)}")
    if init is None:
        centres = np.empty((k, x.shape[1]))
        centres[0] = x[int(rng.integers(n))]
        closest = sq_distances(x, centres[:1])[:, 0]
        for j in range(1, k):
            total = closest.sum()
            if total <= 0.0:
                raise DataError(f"k-means: fewer than {k} distinct points, too few for {k} clusters")
            pick = int(np.searchsorted(np.cumsum(closest), rng.uniform(0.0, total), side="right"))
            centres[j] = x[min(pick, n - 1)]
            closest = np.minimum(closest, sq_distances(x, centres[j : j + 1])[:, 0])
    else:
        centres = np.array(init, dtype=np.float64)
    labels = np.full(n, -1)
    converged, iterations = False, 0
    while iterations < max_iter:
        iterations += 1
        d2 = sq_distances(x, centres)
        new = np.argmin(d2, axis=1)
        if np.array_equal(new, labels):
            converged = True
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        own = d2[np.arange(n), labels]
        for j in np.flatnonzero(counts == 0):  # an emptied cluster takes the worst-fitted movable point
            far = int(np.argmax(np.where(counts[labels] > 1, own, -1.0)))
            counts[labels[far]] -= 1
            counts[j] = 1
            labels[far] = j
            own[far] = -1.0
        centres = np.eye(k)[labels].T @ x / counts[:, None]
    inertia = float(((x - centres[labels]) ** 2).sum())
    return KMeansResult(centroids=centres, labels=labels.astype(np.int64), inertia=inertia, iterations=iterations,
                        converged=converged)


def mixture_log_densities(
    x: np.ndarray, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, covariance: str
) -> np.ndarray:
    """``log(w_v N(x_i | mu_v, Sigma_v))``, shape ``(n, V)``; via Cholesky factors for ``"full"``."""
    n, p = x.shape
    out = np.empty((n, weights.size))
    if covariance == "full":
        chol = np.linalg.cholesky(covariances)  # (V, p, p), batched
        inv_chol = np.linalg.inv(chol)
        logdet = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)
    else:
        logdet = np.sum(np.log(covariances), axis=1)
    for v in range(weights.size):
        diff = x - means[v]
        if covariance == "full":
            z = diff @ inv_chol[v].T
            maha = np.einsum("ij,ij->i", z, z)
        else:
            maha = np.sum(diff * diff / covariances[v], axis=1)
        out[:, v] = np.log(weights[v]) - 0.5 * (p * np.log(2.0 * np.pi) + logdet[v] + maha)
    return out


def _log_normaliser(logp: np.ndarray) -> np.ndarray:
    """``log sum_v exp(logp_iv)``, shape ``(n,)`` (max-shifted)."""
    top = logp.max(axis=1)
    return top + np.log(np.sum(np.exp(logp - top[:, None]), axis=1))


def _m_step(
    x: np.ndarray, resp: np.ndarray, covariance: str, reg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights ``(V,)``, means ``(V, p)`` and covariances maximising the expected log-likelihood."""
    mass = resp.sum(axis=0) + _MASS_FLOOR
    means = resp.T @ x / mass[:, None]
    p = x.shape[1]
    if covariance == "full":
        cov = np.empty((mass.size, p, p))
        for v in range(mass.size):
            diff = x - means[v]
            cov[v] = (resp[:, v, None] * diff).T @ diff / mass[v] + reg * np.eye(p)
    else:
        cov = np.stack([resp[:, v] @ (x - means[v]) ** 2 / mass[v] for v in range(mass.size)]) + reg
    return mass / x.shape[0], means, cov


def fit_gaussian_mixture(
    x: np.ndarray,
    n_components: int,
    *,
    covariance: Literal["full", "diag"] = "full",
    seed: int = 0,
    reg: float = 0.0,
    tol: float = 1e-9,
    max_iter: int = 5000,
) -> GaussianMixtureFit:
    """Maximum-likelihood mixture of ``n_components`` Gaussians for ``x (n, p)`` by EM.

    E step: ``r_iv = w_v N(x_i | mu_v, S_v) / sum_u w_u N(x_i | mu_u, S_u)``. M step, with
    ``m_v = sum_i r_iv``: ``w_v = m_v / n``, ``mu_v = sum_i r_iv x_i / m_v``,
    ``S_v = sum_i r_iv (x_i - mu_v)(x_i - mu_v)^T / m_v + reg I`` (diagonal part only for ``"diag"``).
    Initial responsibilities are the one-hot labels of :func:`kmeans` with
    ``numpy.random.default_rng(seed)``, so the fit is a deterministic
    function of ``(x, seed)``. Stops when no posterior ``r_iv`` moved by ``tol`` or more in one
    iteration (a rule on the posteriors rather than on the log-likelihood, whose changes are
    quadratically small near the optimum: two fits that stop one iteration apart, e.g. on inputs
    that differ by roundoff, then give posteriors within ``tol``); otherwise, after ``max_iter``
    iterations, warns (``RuntimeWarning``) and returns the last parameters with ``converged=False``.
    """
    resp = np.eye(n_components)[kmeans(x, n_components, np.random.default_rng(seed)).labels]
    weights, means, cov = _m_step(x, resp, covariance, reg)
    change = np.inf
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        logp = mixture_log_densities(x, weights, means, cov, covariance)
        new = np.exp(logp - _log_normaliser(logp)[:, None])
        weights, means, cov = _m_step(x, new, covariance, reg)
        change = float(np.max(np.abs(new - resp)))
        resp = new
        if change < tol:
            break
    converged = change < tol
    if not converged:
        warnings.warn(
            f"Gaussian mixture EM did not converge in {max_iter} iterations (last change of a posterior "
            f"{change:.3g} >= tol {tol:g}); the result uses the last parameters",
            RuntimeWarning,
            stacklevel=3,
        )
    logp = mixture_log_densities(x, weights, means, cov, covariance)
    norm = _log_normaliser(logp)
    return GaussianMixtureFit(
        weights, means, cov, np.exp(logp - norm[:, None]), float(np.mean(norm)), n_iter, converged
    )
