"""Transferability scores: how well pretrained features (or source predictions) suit a target task.

Inputs are target-data features ``F (n, d)`` from a pretrained model (or its source-class
probabilities ``P (n, Z)``) and target labels ``y (n,)`` (classification) or targets ``(n,)`` /
``(n, k)`` (regression). Larger is better for every score here except :func:`feature_overlap`,
which returns the fraction of the target OUTSIDE the feature span (0 = perfectly represented).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import linalg

from transferlab.errors import DataError
from transferlab.measures._validate import (
    _to_numpy,
    as_labels,
    as_matrix,
    as_targets,
    check_choice,
    check_real,
)

__all__ = [
    "logme_score",
    "leep_score",
    "nce_score",
    "h_score",
    "feature_overlap",
    "ledoit_wolf_shrinkage",
]

_TINY = 1e-300


def _one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((codes.size, n_classes))
    out[np.arange(codes.size), codes] = 1.0
    return out


def _targets(labels: Any, n: int, task: str) -> np.ndarray:
    if task == "classification":
        codes, n_classes = as_labels(labels, n, min_classes=2)
        return _one_hot(codes, n_classes)
    return as_targets(labels, n, "labels")


# ----------------------------------------------------------------------------- LogME


def _spectral(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues ``lam (r,)`` of ``F^T F`` (nonzero part), coordinates ``c (r, K)`` of ``y`` on the
    matching left singular vectors of ``F``, and ``|y_perp|^2 (K,)`` outside the column space."""
    n, d = f.shape
    if n > d:
        lam, v = linalg.eigh(f.T @ f, driver="evr")  # MRRR: fastest with eigenvectors
        keep = lam > lam.max() * d * np.finfo(float).eps
        lam, v = lam[keep], v[:, keep]
        c = (v.T @ (f.T @ y)) / np.sqrt(lam)[:, None]
    else:
        lam, u = linalg.eigh(f @ f.T, driver="evr")
        keep = lam > lam.max() * n * np.finfo(float).eps
        lam, u = lam[keep], u[:, keep]
        c = u.T @ y
    perp = np.maximum(np.sum(y * y, axis=0) - np.sum(c * c, axis=0), 0.0)
    return lam, c, perp


def _logme_evidence(
    f: np.ndarray, y: np.ndarray, max_iter: int = 1000, tol: float = 1e-10
) -> np.ndarray:
    """Maximised log evidence per sample, one value per target column ``y[:, k]``.

    Model: ``y = F w + eps``, ``w ~ N(0, alpha^-1 I)``, ``eps ~ N(0, beta^-1)``. With eigenvalues
    ``lam_i`` of ``F^T F`` and ``A = alpha I + beta F^T F``, ``m = beta A^-1 F^T y``, the evidence is
    ``n/2 log beta + d/2 log alpha - n/2 log 2pi - beta/2 |F m - y|^2 - alpha/2 |m|^2 - 1/2 log|A|``
    and its stationary point solves the fixed point (MacKay; You et al. 2021)
    ``gamma = sum_i beta lam_i / (alpha + beta lam_i)``, ``alpha = gamma / |m|^2``,
    ``beta = (n - gamma) / |F m - y|^2``.
    """
    n, d = f.shape
    lam, c, perp = _spectral(f, y)
    k = y.shape[1]
    scale = np.sum(y * y, axis=0)
    zero = np.flatnonzero(scale == 0)
    if zero.size:
        raise DataError(f"labels: target column {zero[0]} is all zero; LogME is undefined")
    if lam.size < n:  # the features do not span the samples, so an exact fit is degenerate
        exact = np.flatnonzero(perp <= 1e-10 * scale)
        if exact.size:
            raise DataError(
                f"features fit target column {exact[0]} exactly (zero residual): the evidence is unbounded "
                "and LogME undefined; the features encode the labels (e.g. one-hot features)"
            )
    alpha = np.ones(k)
    beta = np.ones(k)
    lam_c = lam[:, None]
    sq = np.sqrt(lam_c)
    for _ in range(max_iter):
        denom = alpha + beta * lam_c
        gamma = np.sum(beta * lam_c / denom, axis=0)
        m2 = np.maximum(np.sum((beta * sq * c / denom) ** 2, axis=0), 1e-12 * scale + _TINY)
        res2 = np.maximum(perp + np.sum((c * alpha / denom) ** 2, axis=0), 1e-12 * scale + _TINY)
        new_alpha = gamma / m2
        new_beta = np.maximum(n - gamma, _TINY) / res2
        done = np.all(np.abs(new_alpha - alpha) <= tol * np.abs(alpha)) and np.all(
            np.abs(new_beta - beta) <= tol * np.abs(beta)
        )
        alpha, beta = new_alpha, new_beta
        if done:
            break
    denom = alpha + beta * lam_c
    m2 = np.sum((beta * sq * c / denom) ** 2, axis=0)
    res2 = perp + np.sum((c * alpha / denom) ** 2, axis=0)
    logdet = np.sum(np.log(denom), axis=0) + (d - lam.size) * np.log(alpha)
    evidence = (
        0.5 * n * np.log(beta)
        + 0.5 * d * np.log(alpha)
        - 0.5 * n * np.log(2.0 * np.pi)
        - 0.5 * beta * res2
        - 0.5 * alpha * m2
        - 0.5 * logdet
    )
    return evidence / n


def logme_score(
    features: Any,
    labels: Any,
    *,
    task: Literal["classification", "regression"] = "classification",
) -> float:
    """LogME (You et al. 2021): mean over target columns of the maximised Bayesian linear-model log
    evidence per sample, ``(1/K) sum_k max_{alpha, beta} log p(y_k | F, alpha, beta) / n``.

    Args:
        features: ``(n, d)`` target-data features of a pretrained model (used as given, no bias).
        labels: ``(n,)`` class labels (one-hot encoded, ``K`` classes) or, for
            ``task="regression"``, ``(n,)`` / ``(n, K)`` real targets.

    Higher is better. ``O(n d^2 + d^3)`` (``O(n^2 d + n^3)`` when ``n <= d``), one eigendecomposition
    shared by all classes, then a vectorised fixed-point iteration. Invariant to orthogonal maps
    and isotropic scaling of the features; not to translation.
    """
    task = check_choice(task, "task", ("classification", "regression"))
    f = as_matrix(features, "features")
    y = _targets(labels, f.shape[0], task)
    if np.all(np.sum(y * y, axis=0) == 0.0):
        raise DataError("labels: all regression targets are zero; LogME is undefined")
    if not np.any(f):
        raise DataError("features: all zero; LogME is undefined")
    return float(np.mean(_logme_evidence(f, y)))


# ----------------------------------------------------------------------------- LEEP and NCE


def _probabilities(p: Any, n_name: str = "predictions") -> np.ndarray:
    p = as_matrix(p, n_name, min_samples=1)
    if np.any(p < 0.0) or not np.allclose(p.sum(axis=1), 1.0, rtol=0.0, atol=1e-6):
        raise DataError(f"{n_name}: rows must be probability vectors (non-negative, summing to 1 within 1e-6)")
    return p


def leep_score(predictions: Any, labels: Any) -> float:
    """LEEP (Nguyen et al. 2020) from source-model class probabilities ``theta (n, Z)`` on the target
    inputs and target labels ``y (n,)``:

    ``P(y, z) = (1/n) sum_i theta_iz 1[y_i = y]``, ``P(y | z) = P(y, z) / P(z)``,
    ``LEEP = (1/n) sum_i log sum_z P(y_i | z) theta_iz``, in ``[log min_y P(y), 0]`` roughly: 0 for
    predictions that determine the label, ``log(1/C)`` for uniform predictions and balanced classes.
    """
    theta = _probabilities(predictions)
    codes, n_classes = as_labels(labels, theta.shape[0])
    joint = _one_hot(codes, n_classes).T @ theta / theta.shape[0]  # (C, Z)
    pz = joint.sum(axis=0)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z)
    eep = np.sum(cond[codes] * theta, axis=1)
    return float(np.mean(np.log(eep)))


def nce_score(source_labels: Any, labels: Any) -> float:
    """Negative conditional entropy (Tran et al. 2019) ``NCE = -H(Y | Z) = sum_{y,z} P(y, z) log P(y | z)``
    of target labels ``y (n,)`` given source labels ``z (n,)`` (or source probabilities ``(n, Z)``,
    reduced to their argmax). In ``[-H(Y), 0]``; 0 when ``z`` determines ``y``.
    """
    arr = _to_numpy(source_labels, "source_labels")
    if arr.ndim == 2 and arr.shape[1] > 1:
        z = np.argmax(_probabilities(arr, "source_labels"), axis=1)
    else:
        z = arr
    zc, nz = as_labels(z, np.shape(z)[0], "source_labels")
    yc, ny = as_labels(labels, zc.size)
    joint = np.zeros((ny, nz))
    np.add.at(joint, (yc, zc), 1.0)
    joint /= zc.size
    pz = joint.sum(axis=0, keepdims=True)
    mask = joint > 0
    return float(np.sum(joint[mask] * np.log((joint / pz)[mask])))


# ----------------------------------------------------------------------------- H-score


def ledoit_wolf_shrinkage(features: Any) -> float:
    """Ledoit-Wolf (2004) optimal shrinkage ``a`` in ``[0, 1]`` for ``(1 - a) S + a tr(S)/d I`` with
    ``S = F_c^T F_c / n`` the (biased) covariance of ``features (n, d)``."""
    f = as_matrix(features, "features")
    fc = f - f.mean(axis=0)
    return _ledoit_wolf(fc, fc.T @ fc / fc.shape[0])


def _ledoit_wolf(fc: np.ndarray, s: np.ndarray) -> float:
    """Shrinkage for centred ``fc (n, d)`` with its biased covariance ``s`` already computed."""
    n, d = fc.shape
    mu = np.trace(s) / d
    # delta = ||S - mu I||_F^2 / d ; beta = (1/(n^2 d)) sum_i ||x_i x_i^T - S||_F^2, capped at delta.
    delta = (np.sum(s * s) - d * mu * mu) / d
    row_norms = np.einsum("ij,ij->i", fc, fc)
    beta = (np.sum(row_norms**2) / n - np.sum(s * s)) / (n * d)
    beta = min(beta, delta)
    return 0.0 if delta <= 0.0 else float(max(beta, 0.0) / delta)


def h_score(features: Any, labels: Any, *, shrinkage: None | str | float = None) -> float:
    """H-score (Bao et al. 2019): ``tr(cov(F)^{-1} cov(E[F | y]))`` for ``features (n, d)``, labels ``(n,)``.

    ``cov(E[F | y])`` is the covariance of each sample's class-mean feature vector. In
    ``[0, min(d, C - 1)]``; larger = more discriminative features. Invariant to invertible affine
    maps of the features.

    ``shrinkage`` (Ibrahim et al. 2022, "regularised H-score"): ``"ledoit-wolf"`` or a float ``a`` in
    ``[0, 1]`` gives ``tr(S_a^{-1} (1 - a) cov(E[F|y]))`` with ``S_a = (1 - a) S + a tr(S)/d I``;
    needed when ``n`` is near ``d`` or features are collinear.

    Raises:
        DataError: singular feature covariance without shrinkage (constant or collinear features,
            ``n <= d``).
    """
    f = as_matrix(features, "features")
    codes, n_classes = as_labels(labels, f.shape[0], min_classes=2)
    n, d = f.shape
    fc = f - f.mean(axis=0)
    cov = fc.T @ fc / n
    counts = np.bincount(codes, minlength=n_classes)
    means = (np.eye(n_classes)[codes].T @ fc) / counts[:, None]  # (C, d) class means
    cov_g = (means.T * counts) @ means / n  # = sum_c n_c m_c m_c^T / n, the covariance of E[F | y]
    if shrinkage is None:
        a = 0.0
    elif isinstance(shrinkage, str):
        check_choice(shrinkage, "shrinkage", ("ledoit-wolf",))
        a = _ledoit_wolf(fc, cov)
    else:
        a = check_real(shrinkage, "shrinkage", low=0.0, high=1.0)
    if a > 0.0:
        cov = (1.0 - a) * cov + a * np.trace(cov) / d * np.eye(d)
        cov_g = (1.0 - a) * cov_g
    try:
        chol = linalg.cho_factor(cov, lower=True)
        ok = np.min(np.diag(chol[0])) > np.sqrt(d * np.finfo(float).eps * np.max(np.diag(cov)))
    except linalg.LinAlgError:
        ok = False
    if not ok:
        raise DataError(
            "features: covariance is singular (constant or collinear features, or n <= d); "
            "pass shrinkage='ledoit-wolf'"
        )
    return float(np.trace(linalg.cho_solve(chol, cov_g)))


# ----------------------------------------------------------------------------- feature overlap


def feature_overlap(
    features: Any,
    labels: Any,
    *,
    task: Literal["regression", "classification"] = "regression",
    ridge: float = 0.0,
    fit_intercept: bool = True,
) -> float:
    """Fraction of the target outside the span of the pretrained features (paper 1, ``||P_perp f||^2 / ||f||^2``).

    ``(sum_k |y_k - yhat_k|^2) / (sum_k |y_k|^2)`` where ``yhat = F w`` is the ridge fit
    ``w = (F^T F + lambda I)^{-1} F^T y`` with ``lambda = ridge * tr(F^T F) / d`` (scale free); with
    ``fit_intercept`` features and targets are centered first. Classification labels are one-hot
    encoded. In ``[0, 1]``: 0 when the target lies in the feature span (transfer by refitting the
    head is perfect), 1 when it is orthogonal to it. Lower is better. In-sample residual: with
    ``ridge=0`` it needs ``n > d + 1`` (else the fit interpolates and the value is trivially 0).

    Args:
        features: ``(n, d)`` pretrained features of the target inputs.
        labels: ``(n,)`` / ``(n, k)`` regression targets, or ``(n,)`` class labels with
            ``task="classification"``.
    """
    task = check_choice(task, "task", ("regression", "classification"))
    ridge = check_real(ridge, "ridge", low=0.0)
    f = as_matrix(features, "features")
    y = _targets(labels, f.shape[0], task)
    n, d = f.shape
    if fit_intercept:
        f = f - f.mean(axis=0)
        y = y - y.mean(axis=0)
    total = float(np.sum(y * y))
    if total == 0.0:
        raise DataError("labels: the target is constant; the residual fraction is undefined")
    if ridge == 0.0 and n <= d + int(fit_intercept):
        raise DataError(
            f"features: n={n} samples <= d={d} features{' + 1 (intercept)' if fit_intercept else ''}: "
            "the least-squares fit interpolates and the residual is trivially 0; pass ridge > 0"
        )
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return 1.0
    coef = u.T @ y
    if ridge == 0.0:
        keep = s > s[0] * max(n, d) * np.finfo(float).eps
        shrink = keep.astype(float)
    else:
        lam = ridge * np.sum(s * s) / d
        shrink = s * s / (s * s + lam)
    fitted = u @ (shrink[:, None] * coef)
    resid = y - fitted
    return float(np.clip(np.sum(resid * resid) / total, 0.0, 1.0))

