"""Three feature-based transferability predictors from the model-selection literature: NLEEP, GBC and
TransRate. Each takes target-data features ``F (n, d)`` of a pretrained model and target class labels
``y (n,)`` with ``C >= 2`` classes; larger is better for all three.

What is the papers' and what is ours: the formulas are the papers'. The default hyper-parameters
follow the reference setups: NLEEP keeps 80% of the variance by PCA and fits ``5 C`` full-covariance
Gaussians (Li et al. 2021, as run by Agostinelli et al. 2022); GBC uses spherical Gaussians on at
most 64 principal components (Pandy et al. 2022, same setup); TransRate takes the
authors' released parameterisation of ``eps``. Ours: the variance floors, the covariance ridge and
TransRate's default ``eps`` are relative to the data's variance (the reference code uses absolute
constants), so all three scores are invariant to isotropic scaling of the features by default; the
EM and its k-means++ seeding are our numpy implementation.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from transferlab.errors import DataError
from transferlab.measures._cca import _svd_reduce
from transferlab.measures._geometry import center, orthonormal_basis
from transferlab.measures._gmm import fit_gaussian_mixture
from transferlab.measures._validate import as_labels, as_matrix, check_choice, check_int, check_real
from transferlab.measures.transferability import leep_score

__all__ = ["nleep_score", "gbc_score", "transrate_score", "class_bhattacharyya_coefficients"]

#: Relative floor of a class's per-feature variance in GBC, as a fraction of the mean feature
#: variance: keeps ``log`` finite for a class that is constant along a direction.
_VAR_FLOOR = 1e-12

#: TransRate's default distortion per feature, relative to the mean feature variance.
_TRANSRATE_REL_EPS = 0.01


def _class_codes(labels: Any, n: int, measure: str, min_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes ``(n,)`` and class counts ``(C,)``; DataError for one class or small classes."""
    codes, n_classes = as_labels(labels, n)
    if n_classes < 2:
        raise DataError(f"labels: {measure} needs at least 2 classes, got {n_classes}")
    counts = np.bincount(codes, minlength=n_classes)
    if counts.min() < min_per_class:
        small = int(np.argmin(counts))
        raise DataError(
            f"labels: {measure} needs at least {min_per_class} samples per class; class index {small} "
            f"(in sorted label order) has {counts[small]}"
        )
    return codes, counts


# ----------------------------------------------------------------------------- NLEEP


def nleep_score(
    features: Any,
    labels: Any,
    *,
    n_components: int | None = None,
    variance_kept: float = 0.8,
    covariance: Literal["full", "diag"] = "full",
    seed: int = 0,
    reg_covar: float = 1e-6,
) -> float:
    """NLEEP (Li et al. 2021, "Ranking neural checkpoints"): LEEP with the source classifier replaced
    by a Gaussian mixture fitted to the target features.

    1. PCA: project the centred ``features (n, d)`` on the fewest principal directions explaining at
       least ``variance_kept`` of the variance, ``X (n, p)``.
    2. Fit a mixture of ``V`` Gaussians to ``X`` by EM (``V = n_components``, default ``5 C``);
       ``pi_iv = P(v | x_i)`` are its posteriors ``(n, V)``.
    3. ``NLEEP = LEEP(pi, y) = (1/n) sum_i log sum_v P(y_i | v) pi_iv`` with
       ``P(y, v) = (1/n) sum_i pi_iv 1[y_i = y]`` and ``P(y | v) = P(y, v) / sum_y' P(y', v)``.

    At most 0 (a mean log-probability): 0 when every component holds one class, near
    ``sum_y P(y) log P(y)`` (``log(1/C)`` for balanced classes) when the features carry no label
    information. The EM starts from
    k-means++/Lloyd labels drawn with ``seed``, so the value is a deterministic function of the
    inputs and ``seed``; ``reg_covar`` times the mean PCA variance is added to every covariance's
    diagonal (scikit-learn's ``reg_covar``, made scale free). Invariant to orthogonal maps, isotropic
    scaling, translation and permutation of the features (through the PCA), and to relabelling the
    classes.

    Raises:
        DataError: one class; fewer than ``2 V`` samples; constant features; fewer distinct points
            than components.
    """
    f = as_matrix(features, "features")
    n = f.shape[0]
    codes, counts = _class_codes(labels, n, "NLEEP", 1)
    v = check_int(n_components, "n_components", low=1, optional=True)
    v = 5 * counts.size if v is None else v
    keep = check_real(variance_kept, "variance_kept", low=0.0, high=1.0, low_open=True)
    covariance = check_choice(covariance, "covariance", ("full", "diag"))
    seed = check_int(seed, "seed", low=0)
    reg_covar = check_real(reg_covar, "reg_covar", low=0.0, low_open=True)
    if n < 2 * v:
        raise DataError(
            f"features: NLEEP fits {v} mixture components ({'5 per class' if n_components is None else 'n_components'}) "
            f"and needs at least 2 samples per component, i.e. n >= {2 * v}; got n = {n} (pass a smaller n_components)"
        )
    x = _svd_reduce(center(f), keep, "features")
    reg = reg_covar * float(np.mean(np.var(x, axis=0)))
    fit = fit_gaussian_mixture(x, v, covariance=covariance, seed=seed, reg=reg)
    return leep_score(fit.posteriors, codes)


# ----------------------------------------------------------------------------- GBC


def class_bhattacharyya_coefficients(
    features: Any,
    labels: Any,
    *,
    gaussian: Literal["spherical", "diagonal"] = "spherical",
    pca_components: int | None = 64,
) -> np.ndarray:
    """Bhattacharyya coefficients ``BC (C, C)`` between per-class Gaussian fits of the features.

    Features are first projected on their top ``min(pca_components, rank)`` principal components
    (``None``: used as given). Class ``c`` is fitted by ``N(mu_c, S_c)`` with ``S_c`` diagonal (the
    per-feature variances, ``"diagonal"``) or ``s_c I`` (their mean, ``"spherical"``); with
    ``S = (S_i + S_j) / 2``, the Bhattacharyya distance and coefficient are

    ``D_B(i, j) = (1/8) (mu_i - mu_j)^T S^{-1} (mu_i - mu_j) + (1/2) log(det S / sqrt(det S_i det S_j))``,
    ``BC(i, j) = exp(-D_B(i, j))``, in ``(0, 1]``, symmetric, 1 on the diagonal.

    Variances (divisor ``n_c``) are floored at ``1e-12`` times the mean feature variance.
    """
    gaussian = check_choice(gaussian, "gaussian", ("spherical", "diagonal"))
    k = check_int(pca_components, "pca_components", low=1, optional=True)
    f = as_matrix(features, "features")
    codes, counts = _class_codes(labels, f.shape[0], "GBC", 2)
    if k is None:
        x = f
        if not np.any(np.var(f, axis=0) > 0.0):
            raise DataError("features: all features are constant (zero variance)")
    else:
        u, s, rank = orthonormal_basis(center(f), "features")
        k = min(k, rank)
        x = u[:, :k] * s[:k]
    onehot = np.eye(counts.size)[codes]
    means = onehot.T @ x / counts[:, None]  # (C, p)
    resid = x - means[codes]
    var = onehot.T @ (resid * resid) / counts[:, None]
    var = np.maximum(var, _VAR_FLOOR * float(np.mean(np.var(x, axis=0))))  # (C, p)
    p = x.shape[1]
    if gaussian == "spherical":
        var = np.repeat(var.mean(axis=1, keepdims=True), p, axis=1)
    avg = 0.5 * (var[:, None, :] + var[None, :, :])  # (C, C, p)
    diff = means[:, None, :] - means[None, :, :]
    log_var = np.log(var)
    dist = np.sum(diff * diff / avg, axis=2) / 8.0 + 0.5 * np.sum(
        np.log(avg) - 0.5 * (log_var[:, None, :] + log_var[None, :, :]), axis=2
    )
    return np.exp(-np.maximum(dist, 0.0))


def gbc_score(
    features: Any,
    labels: Any,
    *,
    gaussian: Literal["spherical", "diagonal"] = "spherical",
    pca_components: int | None = 64,
) -> float:
    """GBC (Pandy et al. 2022): ``-sum_{i != j} BC(i, j)`` over ordered pairs of target classes, with
    ``BC`` the Bhattacharyya coefficient of per-class Gaussian fits of ``features (n, d)``
    (:func:`class_bhattacharyya_coefficients`; ``labels (n,)``, ``C`` classes).

    In ``[-C (C - 1), 0)``: near 0 when the classes are well separated, ``-C (C - 1)`` when their
    Gaussians coincide. Invariant to isotropic scaling, translation, feature permutation and class
    relabelling; with the PCA step (the default) also to orthogonal maps, for either ``gaussian``.
    The spherical variant uses the exact ``d``-dimensional determinant, ``(d / 2) log`` of the
    variance ratio (the reference code takes that log once, not ``d`` times).

    Raises:
        DataError: one class, a class with fewer than 2 samples, or constant features.
    """
    bc = class_bhattacharyya_coefficients(features, labels, gaussian=gaussian, pca_components=pca_components)
    return float(-(np.sum(bc) - np.trace(bc)))


# ----------------------------------------------------------------------------- TransRate


def _coding_rate(z: np.ndarray, eps: float) -> float:
    """``R(Z, eps) = (1/2) log det(I_d + Z^T Z / (m eps))`` for ``z (m, d)``, from its singular values."""
    s = np.linalg.svd(z, compute_uv=False)
    return 0.5 * float(np.sum(np.log1p(s * s / (z.shape[0] * eps))))


def transrate_score(
    features: Any,
    labels: Any,
    *,
    eps: float | None = None,
    class_weights: Literal["proportional", "uniform"] = "proportional",
) -> float:
    """TransRate (Huang et al. 2022): the coding-rate estimate of the mutual information between the
    features and the labels, ``TrR = R(Z, eps) - R(Z, eps | Y)``, in nats.

    ``Z (n, d)`` are the centred ``features``, ``Z_c (n_c, d)`` the rows of class ``c`` (not
    re-centred, as in the paper), ``R(Z, eps) = (1/2) log det(I_d + Z^T Z / (n eps))`` and
    ``R(Z, eps | Y) = sum_c w_c R(Z_c, eps)`` with ``w_c = n_c / n`` (``"proportional"``: the
    conditional entropy ``H(Z | Y) = sum_c P(c) H(Z | c)``; then ``TrR >= 0`` by concavity of
    ``log det``) or ``w_c = 1 / C`` (``"uniform"``: the authors' released code; the two agree for
    balanced classes).

    ``eps`` is the squared distortion per feature, the authors' code's parameterisation (their
    formula's ``d / eps'^2`` is ``1 / eps`` here); ``eps=1e-4`` is their setting. The default
    ``None`` (ours) takes ``eps = 0.01 * tr(Z^T Z) / (n d)``, 1% of the mean feature variance: with a
    fixed tiny ``eps`` and fewer samples per class than features, ``TrR`` tends to
    ``(1/2) log(1/eps) (rank Z - sum_c w_c rank Z_c)``, a count of ranks that hardly depends on the
    features' quality, and its value depends on the features' units.

    Larger = more label information in the features. Invariant to orthogonal maps, translation and
    permutation of the features and to class relabelling; with the default ``eps`` also to
    isotropic scaling, while a fixed ``eps`` gives ``TrR(c F, eps) = TrR(F, eps / c^2)``.

    Raises:
        DataError: one class, a class with fewer than 2 samples, or constant features.
    """
    eps = check_real(eps, "eps", low=0.0, low_open=True, optional=True)
    class_weights = check_choice(class_weights, "class_weights", ("proportional", "uniform"))
    f = as_matrix(features, "features")
    codes, counts = _class_codes(labels, f.shape[0], "TransRate", 2)
    z = center(f)
    if eps is None:
        scale = float(np.sum(z * z)) / z.size
        if scale == 0.0:
            raise DataError("features: all features are constant (zero variance); TransRate is undefined")
        eps = _TRANSRATE_REL_EPS * scale
    weights = counts / counts.sum() if class_weights == "proportional" else np.full(counts.size, 1.0 / counts.size)
    conditional = sum(w * _coding_rate(z[codes == c], eps) for c, w in enumerate(weights))
    return _coding_rate(z, eps) - float(conditional)
