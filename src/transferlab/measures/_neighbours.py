"""Neighbourhood and geometry-of-distances similarities: k-NN overlap, information imbalance, RSA.

Neighbours are Euclidean, exclude the point itself, and ties are broken by the smaller index
(deterministic; exact duplicate points are therefore allowed). With many exactly tied distances
(quantised or ReLU-sparse data) the values depend on row order, and invariances hold only up to
such ties. All-identical rows have no neighbourhoods and raise :class:`DataError`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import stats

from transferlab.errors import DataError
from transferlab.measures._geometry import BLOCK_ROWS, knn, sq_distances
from transferlab.measures._validate import (
    as_labels,
    as_matrix,
    check_choice,
    check_int,
    check_same_samples,
)

__all__ = ["knn_overlap", "knn_label_overlap", "information_imbalance", "rsa_similarity"]


def _distinct(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` unchanged, or :class:`DataError` when all its rows are equal (no neighbourhoods exist)."""
    if np.all(x == x[0]):
        raise DataError(f"{name}: all rows are identical, so nearest neighbours are undefined")
    return x


def _pair(x: Any, y: Any, min_samples: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x = _distinct(as_matrix(x, "X", min_samples=min_samples), "X")
    y = _distinct(as_matrix(y, "Y", min_samples=min_samples), "Y")
    check_same_samples(x, y)
    return x, y


def knn_overlap(x: Any, y: Any, k: int = 10) -> float:
    """Neighbourhood overlap (Doimo et al. 2020) of two representations ``X (n, p)``, ``Y (n, q)``.

    ``chi_k = (1/n) sum_i |NN_k^X(i) & NN_k^Y(i)| / k`` in ``[0, 1]``; 1 when every point has the
    same k nearest neighbours in both spaces. Invariant to anything that preserves distance ranks
    (orthogonal maps, isotropic scaling, translation); not to general linear maps.
    """
    x, y = _pair(x, y)
    k = check_int(k, "k", low=1, high=x.shape[0] - 1)
    _, ix = knn(x, k)
    _, iy = knn(y, k)
    # no index repeats within a row of ix or of iy, so adjacent equal entries of the sorted
    # concatenation are exactly the shared neighbours
    both = np.sort(np.concatenate([ix, iy], axis=1), axis=1)
    shared = np.count_nonzero(both[:, 1:] == both[:, :-1])
    return float(shared / (k * x.shape[0]))


def knn_label_overlap(x: Any, labels: Any, k: int = 10) -> float:
    """Overlap of a representation ``X (n, p)`` with ground-truth labels (Doimo et al. 2020).

    ``chi_k^gt = (1/n) sum_i (1/k) sum_{j in NN_k(i)} 1[y_j = y_i]`` in ``[0, 1]``.
    """
    x = _distinct(as_matrix(x, "X"), "X")
    codes, _ = as_labels(labels, x.shape[0])
    k = check_int(k, "k", low=1, high=x.shape[0] - 1)
    _, idx = knn(x, k)
    return float(np.mean(codes[idx] == codes[:, None]))


def _imbalance(a: np.ndarray, b: np.ndarray) -> float:
    """``Delta(A -> B) = (2 / n^2) sum_i r^B_{i, nn_A(i)}`` with 1-based distance ranks."""
    n = a.shape[0]
    _, nn_a = knn(a, 1)
    nn_a = nn_a[:, 0]
    total = 0
    for start in range(0, n, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, n)
        rows = np.arange(start, stop)
        d2 = sq_distances(b[start:stop], b)
        target = d2[np.arange(stop - start), nn_a[start:stop]]
        d2[np.arange(stop - start), rows] = np.inf  # a point is not its own neighbour
        # rank = 1 + #points strictly closer, plus #equally close points with a smaller index
        closer = np.count_nonzero(d2 < target[:, None], axis=1)
        cols = np.arange(n)[None, :]
        ties = np.count_nonzero((d2 == target[:, None]) & (cols < nn_a[start:stop, None]), axis=1)
        total += int(np.sum(closer + ties + 1))
    return 2.0 * total / (n * n)


def information_imbalance(x: Any, y: Any) -> tuple[float, float]:
    """Information imbalance in both directions (Glielmo et al. 2022): ``(Delta(X->Y), Delta(Y->X))``.

    ``Delta(A -> B) = (2/n^2) sum_i r^B_{i, nn_A(i)}``, where ``nn_A(i)`` is the nearest neighbour of
    ``i`` in A and ``r^B_{ij}`` is the distance rank of ``j`` among the neighbours of ``i`` in B (1 =
    nearest). About ``2/n`` (its minimum) when A predicts B's neighbourhoods, about 1 when A carries
    no information on B. Asymmetric; ``O(n^2)`` time, ``O(n * block)`` memory.

    Args:
        x, y: ``(n, p)`` and ``(n, q)`` arrays with paired rows, ``n >= 3``.
    """
    x, y = _pair(x, y, min_samples=3)
    return _imbalance(x, y), _imbalance(y, x)


def _rdm(x: np.ndarray, rdm: str, name: str) -> np.ndarray:
    if rdm == "euclidean":
        d = np.sqrt(sq_distances(x))
    else:
        xc = x - x.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(xc, axis=1)
        if np.any(norms == 0.0):
            bad = int(np.flatnonzero(norms == 0.0)[0])
            raise DataError(
                f"{name}: row {bad} is constant across features, so its correlation distance is "
                "undefined; use rdm='euclidean'"
            )
        xc /= norms[:, None]
        d = 1.0 - xc @ xc.T
    iu = np.triu_indices(x.shape[0], k=1)
    return d[iu]


def rsa_similarity(
    x: Any,
    y: Any,
    *,
    method: Literal["spearman", "pearson"] = "spearman",
    rdm: Literal["correlation", "euclidean"] = "correlation",
) -> float:
    """Representational similarity analysis (Kriegeskorte et al. 2008) of ``X (n, p)`` and ``Y (n, q)``.

    Builds each representation's dissimilarity matrix over the ``n`` inputs (``rdm="correlation"``:
    ``1 - pearson(x_i, x_j)`` across features; ``"euclidean"``: ``|x_i - x_j|``), then returns the
    Spearman (default) or Pearson correlation of their upper triangles, in ``[-1, 1]``.

    Raises:
        DataError: fewer than 3 samples, mismatched rows, a constant row (correlation RDM), or a
            constant RDM (all inputs equidistant).
    """
    method = check_choice(method, "method", ("spearman", "pearson"))
    rdm = check_choice(rdm, "rdm", ("correlation", "euclidean"))
    x, y = _pair(x, y, min_samples=3)
    if rdm == "correlation" and (x.shape[1] < 2 or y.shape[1] < 2):
        raise DataError("rdm='correlation' needs at least 2 features in X and Y; use rdm='euclidean'")
    dx, dy = _rdm(x, rdm, "X"), _rdm(y, rdm, "Y")
    for d, name in ((dx, "X"), (dy, "Y")):
        if np.ptp(d) == 0.0:
            raise DataError(f"{name}: all pairwise dissimilarities are equal; RSA correlation is undefined")
    if method == "spearman":
        return float(stats.spearmanr(dx, dy)[0])
    return float(np.corrcoef(dx, dy)[0, 1])
