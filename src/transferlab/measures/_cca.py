"""Canonical correlations (CCA, SVCCA, PWCCA) and shape metrics (Procrustes, angular).

Canonical correlations of column-centered ``X_c (n, p)`` and ``Y_c (n, q)`` are the singular values
``rho_1 >= ... >= rho_m`` (``m = min(p, q)``) of ``Q_x^T Q_y``, where ``Q_x``, ``Q_y`` are orthonormal
bases of the column spaces (equivalently of ``Sxx^{-1/2} Sxy Syy^{-1/2}`` with covariances ``S``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from transferlab.errors import DataError
from transferlab.measures._geometry import center, orthonormal_basis
from transferlab.measures._validate import (
    as_matrix,
    check_choice,
    check_real,
    check_same_samples,
)

__all__ = [
    "canonical_correlations",
    "cca_similarity",
    "procrustes_distance",
    "angular_shape_distance",
]


def _whitened_basis(xc: np.ndarray, name: str, regularization: float) -> np.ndarray:
    """A matrix ``W (n, r)`` with ``W^T W = (shrunk) whitened`` so that canonical correlations are
    the singular values of ``W_x^T W_y``.

    Without regularization ``W`` is an orthonormal basis of ``col(X_c)`` (needs full column rank);
    with shrinkage ``eps`` the covariance ``S`` is replaced by ``(1 - eps) S + eps tr(S)/p I`` and
    ``W = U diag(s / sqrt((1 - eps) s^2 + eps mean(s^2)))`` from the SVD ``X_c = U diag(s) V^T``.
    """
    n, p = xc.shape
    u, s, rank = orthonormal_basis(xc, name)
    if regularization == 0.0:
        if n - 1 <= p:
            raise DataError(
                f"{name}: CCA needs n - 1 > p (n={n}, p={p}): after centering, {p} features span the whole "
                "sample space and every canonical correlation is 1. Pass regularization > 0 or reduce the features."
            )
        if rank < p:
            raise DataError(
                f"{name}: rank deficient (rank {rank} < {p} features; constant or collinear columns). "
                "Pass regularization > 0 or remove the redundant features."
            )
        return u[:, :p]
    s2 = s * s
    level = s2.sum() / p  # tr(X_c^T X_c) / p
    scale = s / np.sqrt((1.0 - regularization) * s2 + regularization * level)
    return u * scale


def _prepare(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x = as_matrix(x, "X")
    y = as_matrix(y, "Y")
    check_same_samples(x, y)
    return center(x), center(y)


def canonical_correlations(x: Any, y: Any, *, regularization: float = 0.0) -> np.ndarray:
    """Canonical correlations ``rho_1 >= ... >= rho_m`` (``m = min(p, q)``) of ``X (n, p)``, ``Y (n, q)``.

    ``regularization`` in ``[0, 1)`` shrinks each covariance toward ``tr(S)/p I`` (needed when
    ``n`` is near or below the number of features). Without it, ``n > max(p, q)`` and full column
    rank are required (else :class:`DataError`).
    """
    reg = check_real(regularization, "regularization", low=0.0, high=1.0, high_open=True)
    xc, yc = _prepare(x, y)
    return _canonical(xc, yc, reg)[0]


def _canonical(xc: np.ndarray, yc: np.ndarray, reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rho, hx, hy): correlations and the canonical variates of each side, ``(n, m)`` each."""
    wx = _whitened_basis(xc, "X", reg)
    wy = _whitened_basis(yc, "Y", reg)
    a, rho, bt = np.linalg.svd(wx.T @ wy, full_matrices=False)
    m = min(xc.shape[1], yc.shape[1])
    return np.clip(rho[:m], 0.0, 1.0), wx @ a[:, :m], wy @ bt[:m].T


def _svd_reduce(xc: np.ndarray, keep: float, name: str) -> np.ndarray:
    """Project ``X_c`` on its top singular directions explaining a ``keep`` fraction of variance."""
    u, s, rank = orthonormal_basis(xc, name)
    var = np.cumsum(s[:rank] ** 2) / np.sum(s[:rank] ** 2)
    k = int(np.searchsorted(var, keep - 1e-12) + 1)
    return u[:, :k] * s[:k]


def cca_similarity(
    x: Any,
    y: Any,
    variant: Literal["mean", "svcca", "pwcca"] = "mean",
    *,
    regularization: float = 0.0,
    keep: float = 0.99,
) -> float:
    """Similarity from canonical correlations between representations ``X (n, p)`` and ``Y (n, q)``.

    - ``"mean"``: mean canonical correlation ``(1/m) sum_i rho_i``, ``m = min(p, q)``. Invariant to
      any invertible affine map of either argument.
    - ``"svcca"`` (Raghu et al. 2017): reduce each representation to the top singular directions
      explaining a ``keep`` fraction of its variance, then the mean canonical correlation.
      Invariant to orthogonal maps, isotropic scaling, translation; not to general linear maps.
    - ``"pwcca"`` (Morcos et al. 2018): ``sum_i alpha_i rho_i / sum_i alpha_i`` with
      ``alpha_i = sum_j |<h_i, z_j>|``, ``h_i`` the unit-norm canonical variates and ``z_j`` the
      centered columns of the side with fewer features (X when ``p == q``), as in the authors'
      reference code. Not symmetric when ``p == q`` and not rotation invariant.

    All values lie in ``[0, 1]``; 1 on equal inputs. ``regularization`` shrinks covariances (see
    :func:`canonical_correlations`).

    Raises:
        DataError: mismatched rows; ``n - 1 <= p`` (or ``q``) or rank-deficient X/Y without
            regularization.
    """
    variant = check_choice(variant, "variant", ("mean", "svcca", "pwcca"))
    reg = check_real(regularization, "regularization", low=0.0, high=1.0, high_open=True)
    keep = check_real(keep, "keep", low=0.0, high=1.0, low_open=True)
    xc, yc = _prepare(x, y)
    if variant == "svcca":
        xc, yc = _svd_reduce(xc, keep, "X"), _svd_reduce(yc, keep, "Y")
        return float(np.mean(_canonical(xc, yc, reg)[0]))
    rho, hx, hy = _canonical(xc, yc, reg)
    if variant == "mean":
        return float(np.mean(rho))
    # weights from the side with fewer features (X on ties), as in Morcos et al.'s reference code
    side, h = (xc, hx) if xc.shape[1] <= yc.shape[1] else (yc, hy)
    h = h / np.linalg.norm(h, axis=0, keepdims=True)
    alpha = np.abs(side.T @ h).sum(axis=0)
    return float(np.sum(alpha * rho) / np.sum(alpha))


def _shape_inputs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    xc, yc = _prepare(x, y)
    nx, ny = np.linalg.norm(xc), np.linalg.norm(yc)
    if nx == 0.0:
        raise DataError("X: all features are constant (zero norm after centering)")
    if ny == 0.0:
        raise DataError("Y: all features are constant (zero norm after centering)")
    return xc / nx, yc / ny


def _nuclear_cross(xc: np.ndarray, yc: np.ndarray) -> float:
    """``||X^T Y||_*`` computed in the smaller of feature space and sample space."""
    n, p = xc.shape
    q = yc.shape[1]
    if p * q <= n * n:
        return float(np.linalg.svd(xc.T @ yc, compute_uv=False).sum())
    # Same nonzero singular values: X^T Y = V_x S_x U_x^T U_y S_y V_y^T.
    ux, sx, _ = np.linalg.svd(xc, full_matrices=False)
    uy, sy, _ = np.linalg.svd(yc, full_matrices=False)
    return float(np.linalg.svd((sx[:, None] * (ux.T @ uy)) * sy[None, :], compute_uv=False).sum())


def procrustes_distance(x: Any, y: Any) -> float:
    """Orthogonal Procrustes shape distance (Williams et al. 2021) between ``X (n, p)`` and ``Y (n, q)``.

    After centering and scaling both to unit Frobenius norm (features padded with zeros to equal
    width), ``d(X, Y) = min_Q ||X - Y Q||_F = sqrt(2 - 2 ||X^T Y||_*)`` over orthogonal ``Q``.
    A metric on shapes, in ``[0, sqrt(2)]``: 0 iff equal up to rotation, translation and scale.
    """
    xc, yc = _shape_inputs(x, y)
    return float(np.sqrt(max(2.0 - 2.0 * _nuclear_cross(xc, yc), 0.0)))


def angular_shape_distance(x: Any, y: Any) -> float:
    """Angular shape metric (Williams et al. 2021): ``arccos ||X^T Y||_*`` for centered unit-norm
    ``X (n, p)``, ``Y (n, q)``; in ``[0, pi/2]``, a metric with the invariances of
    :func:`procrustes_distance`.
    """
    xc, yc = _shape_inputs(x, y)
    return float(np.arccos(np.clip(_nuclear_cross(xc, yc), -1.0, 1.0)))
