"""Intrinsic dimension of a point cloud ``X (n_samples, n_features)``: TwoNN and Levina-Bickel MLE.

TwoNN (Facco et al. 2017): with ``r_1(i) <= r_2(i)`` the distances of point ``i`` to its first and
second nearest neighbours, ``mu_i = r_2 / r_1`` follows the Pareto law ``P(mu) = d mu^{-d-1}``
(``F(mu) = 1 - mu^{-d}``) when the density is locally uniform on a ``d``-dimensional manifold.

Exact duplicate points make ``r_1 = 0``; by default they are removed first (and logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from transferlab.errors import DataError
from transferlab.measures._geometry import knn
from transferlab.measures._validate import as_matrix, check_choice, check_int, check_real

__all__ = ["twonn_dimension", "twonn_profile", "mle_dimension", "DimensionProfile"]

_log = logging.getLogger("transferlab.measures")


def _deduplicate(x: np.ndarray, duplicates: str, name: str = "X") -> np.ndarray:
    unique = np.unique(x, axis=0)
    removed = x.shape[0] - unique.shape[0]
    if removed:
        if duplicates == "raise":
            raise DataError(
                f"{name}: has {removed} duplicate rows; nearest-neighbour distances of 0 make the "
                "estimator undefined (pass duplicates='remove' to drop them)"
            )
        _log.info("%s: removed %d duplicate rows before estimating the intrinsic dimension", name, removed)
    return x if not removed else unique


def _twonn_from_mu(mu: np.ndarray, discard_fraction: float, method: str) -> float:
    n = mu.size
    log_mu = np.log(mu)
    if method == "mle":
        total = log_mu.sum()
        if not total > 0.0:
            raise DataError("all second/first neighbour distance ratios are 1; TwoNN dimension is undefined")
        return float((n - 1) / total)
    keep = min(int(np.floor(n * (1.0 - discard_fraction))), n - 1)  # F_emp = 1 at the last point
    if keep < 2:
        raise DataError(f"too few points ({n}) left after discarding a fraction {discard_fraction} of them")
    xs = np.sort(log_mu)[:keep]
    ys = -np.log1p(-np.arange(1, keep + 1) / n)  # -log(1 - F_emp)
    denom = xs @ xs
    if not denom > 0.0:
        raise DataError("all retained neighbour distance ratios are 1; TwoNN dimension is undefined")
    return float((xs @ ys) / denom)


def twonn_dimension(
    x: Any,
    *,
    discard_fraction: float = 0.1,
    method: Literal["lsq", "mle"] = "lsq",
    duplicates: Literal["remove", "raise"] = "remove",
) -> float:
    """TwoNN intrinsic dimension of ``X (n, p)``.

    ``method="lsq"`` (Facco et al.): sort ``mu_i``, drop the largest ``discard_fraction`` of them,
    and fit ``-log(1 - F_emp(mu_i)) = d log mu_i`` through the origin, ``F_emp(mu_(i)) = i / n``;
    ``method="mle"``: ``d = (n - 1) / sum_i log mu_i`` (all points, unbiased for the Pareto law).

    Cost: one exact 2-NN search, ``O(n^2 p)`` time in blocks, ``O(n)`` memory beyond ``X``.
    Invariant to orthogonal maps, isotropic scaling and translation.

    Raises:
        DataError: fewer than 3 distinct points, non-finite values, duplicates with
            ``duplicates="raise"``.
    """
    method = check_choice(method, "method", ("lsq", "mle"))
    duplicates = check_choice(duplicates, "duplicates", ("remove", "raise"))
    discard_fraction = check_real(discard_fraction, "discard_fraction", low=0.0, high=0.9)
    x = as_matrix(x, "X", min_samples=3)
    x = _deduplicate(x, duplicates)
    if x.shape[0] < 3:
        raise DataError(f"X: needs at least 3 distinct points, got {x.shape[0]}")
    dist, _ = knn(x, 2)
    return _twonn_from_mu(dist[:, 1] / dist[:, 0], discard_fraction, method)


@dataclass(frozen=True)
class DimensionProfile:
    """TwoNN estimates across scales (decimation): arrays of equal length, one entry per level.

    Attributes:
        n_points: points per subset at each level (``n / 2^level``).
        dimension: mean TwoNN estimate over the ``2^level`` disjoint subsets.
        std: standard deviation over the subsets (0 at level 0).
        scale: mean second-neighbour distance ``r_2`` (the length scale the estimate probes).
    """

    n_points: np.ndarray
    dimension: np.ndarray
    std: np.ndarray
    scale: np.ndarray


def twonn_profile(
    x: Any,
    *,
    levels: int | None = None,
    min_points: int = 20,
    discard_fraction: float = 0.1,
    method: Literal["lsq", "mle"] = "lsq",
    duplicates: Literal["remove", "raise"] = "remove",
    seed: int = 0,
) -> DimensionProfile:
    """TwoNN scale profile by decimation (Facco et al. 2017).

    At level ``l`` the rows of ``X (n, p)`` are split at random into ``2^l`` disjoint subsets; TwoNN
    is computed on each; fewer points probe larger length scales. A plateau of ``dimension``
    across levels indicates a well-defined intrinsic dimension. Levels run while a subset keeps at
    least ``min_points`` points (or up to ``levels``).
    """
    method = check_choice(method, "method", ("lsq", "mle"))
    duplicates = check_choice(duplicates, "duplicates", ("remove", "raise"))
    discard_fraction = check_real(discard_fraction, "discard_fraction", low=0.0, high=0.9)
    min_points = check_int(min_points, "min_points", low=3)
    x = as_matrix(x, "X", min_samples=3)
    x = _deduplicate(x, duplicates)
    n = x.shape[0]
    if n < min_points:
        raise DataError(f"X: has {n} distinct points, fewer than min_points={min_points}")
    max_levels = int(np.floor(np.log2(n / min_points))) + 1
    levels = max_levels if levels is None else check_int(levels, "levels", low=1, high=max_levels)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    sizes, dims, stds, scales = [], [], [], []
    for level in range(levels):
        parts = np.array_split(perm, 2**level)
        est, r2 = [], []
        for part in parts:
            dist, _ = knn(x[part], 2)
            est.append(_twonn_from_mu(dist[:, 1] / dist[:, 0], discard_fraction, method))
            r2.append(dist[:, 1].mean())
        sizes.append(min(p.size for p in parts))
        dims.append(np.mean(est))
        stds.append(np.std(est))
        scales.append(np.mean(r2))
    return DimensionProfile(np.array(sizes), np.array(dims), np.array(stds), np.array(scales))


def mle_dimension(
    x: Any,
    k: int = 20,
    *,
    duplicates: Literal["remove", "raise"] = "remove",
) -> float:
    """Levina-Bickel maximum-likelihood intrinsic dimension of ``X (n, p)``, pooled as in
    MacKay & Ghahramani (2005).

    With ``T_j(i)`` the distance from point ``i`` to its ``j``-th neighbour,
    ``1/m_i = (1/(k-1)) sum_{j<k} log(T_k(i) / T_j(i))`` and ``d = 1 / mean_i(1/m_i)``.
    """
    duplicates = check_choice(duplicates, "duplicates", ("remove", "raise"))
    x = as_matrix(x, "X", min_samples=3)
    x = _deduplicate(x, duplicates)
    k = check_int(k, "k", low=2, high=x.shape[0] - 1)
    dist, _ = knn(x, k)
    inv = np.mean(np.log(dist[:, -1:] / dist[:, :-1]), axis=1)
    mean_inv = inv.mean()
    if not mean_inv > 0.0:
        raise DataError("all neighbour distances are equal; the MLE dimension is undefined")
    return float(1.0 / mean_inv)
